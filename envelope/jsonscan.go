package envelope

import (
	"encoding/json"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// maxJSONDepth bounds the nesting of arrays and objects the scanner accepts,
// as encoding/json does, so hostile input cannot exhaust the stack.
const maxJSONDepth = 10000

// jsonSyntaxError is the cause of an ErrMalformed for text that is not JSON.
type jsonSyntaxError struct {
	Offset int
	Msg    string
}

func (e *jsonSyntaxError) Error() string {
	return "invalid JSON at offset " + strconv.Itoa(e.Offset) + ": " + e.Msg
}

// scanner is a validating, allocation-free JSON (RFC 8259) scanner over one
// byte slice: each skip method checks the grammar of one value and moves
// past it, so a caller can walk the parts it wants and only note the spans
// of the rest. It does not check UTF-8 (callers do, once, on the whole
// input). A scanner is used by one goroutine.
type scanner struct {
	b     []byte
	i     int
	depth int
}

func (s *scanner) fail(msg string) error { return &jsonSyntaxError{Offset: s.i, Msg: msg} }

func (s *scanner) skipWS() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek returns the next byte after white space, or 0 at the end.
func (s *scanner) peek() byte {
	s.skipWS()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

// expect consumes byte c after white space.
func (s *scanner) expect(c byte) error {
	if s.peek() != c {
		if s.i >= len(s.b) {
			return s.fail("unexpected end of input")
		}
		return s.fail("expected " + strconv.QuoteRune(rune(c)))
	}
	s.i++
	return nil
}

// end checks that only white space is left.
func (s *scanner) end() error {
	s.skipWS()
	if s.i != len(s.b) {
		return s.fail("unexpected data after the top-level value")
	}
	return nil
}

// skipValue validates and skips one value (after white space).
func (s *scanner) skipValue() error {
	switch c := s.peek(); {
	case c == '{':
		return s.object(func([]byte, bool) error { return s.skipValue() })
	case c == '[':
		return s.array(s.skipValue)
	case c == '"':
		_, err := s.skipString()
		return err
	case c == '-' || c >= '0' && c <= '9':
		_, err := s.skipNumber()
		return err
	case c == 't':
		return s.skipLiteral("true")
	case c == 'f':
		return s.skipLiteral("false")
	case c == 'n':
		return s.skipLiteral("null")
	case c == 0 && s.i >= len(s.b):
		return s.fail("unexpected end of input")
	}
	return s.fail("invalid character")
}

// valueSpan skips one value and returns its text (no surrounding space).
func (s *scanner) valueSpan() ([]byte, error) {
	s.skipWS()
	start := s.i
	if err := s.skipValue(); err != nil {
		return nil, err
	}
	return s.b[start:s.i], nil
}

func (s *scanner) skipLiteral(lit string) error {
	if len(s.b)-s.i < len(lit) || string(s.b[s.i:s.i+len(lit)]) != lit {
		return s.fail("invalid literal")
	}
	s.i += len(lit)
	return nil
}

// object walks the object at s.i: for each member it calls member with the
// key's raw text (between the quotes) and whether it has escapes, with the
// scanner positioned at the value, which member must consume.
func (s *scanner) object(member func(key []byte, esc bool) error) error {
	if err := s.expect('{'); err != nil {
		return err
	}
	if s.depth++; s.depth > maxJSONDepth {
		return s.fail("nesting too deep")
	}
	if s.peek() == '}' {
		s.i++
		s.depth--
		return nil
	}
	for {
		if s.peek() != '"' {
			return s.fail("expected a string key")
		}
		start := s.i
		esc, err := s.skipString()
		if err != nil {
			return err
		}
		key := s.b[start+1 : s.i-1]
		if err := s.expect(':'); err != nil {
			return err
		}
		if err := member(key, esc); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			s.depth--
			return nil
		default:
			return s.fail("expected ',' or '}'")
		}
	}
}

// array walks the array at s.i, calling elem for each element with the
// scanner positioned at it; elem must consume it.
func (s *scanner) array(elem func() error) error {
	if err := s.expect('['); err != nil {
		return err
	}
	if s.depth++; s.depth > maxJSONDepth {
		return s.fail("nesting too deep")
	}
	if s.peek() == ']' {
		s.i++
		s.depth--
		return nil
	}
	for {
		if err := elem(); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.i++
		case ']':
			s.i++
			s.depth--
			return nil
		default:
			return s.fail("expected ',' or ']'")
		}
	}
}

// skipString validates the string at s.i (which is '"') and moves past its
// closing quote. esc reports whether it contains escapes.
func (s *scanner) skipString() (esc bool, err error) {
	s.i++
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return esc, nil
		case c == '\\':
			esc = true
			if s.i+1 >= len(s.b) {
				s.i++
				return esc, s.fail("unexpected end of input in string")
			}
			switch s.b[s.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i += 2
			case 'u':
				if len(s.b)-s.i < 6 || !isHex4(s.b[s.i+2:s.i+6]) {
					return esc, s.fail("invalid \\u escape")
				}
				s.i += 6
			default:
				return esc, s.fail("invalid escape")
			}
		case c < 0x20:
			return esc, s.fail("control character in string")
		default:
			s.i++
		}
	}
	return esc, s.fail("unexpected end of input in string")
}

// skipNumber validates the number at s.i and moves past it. isFloat reports
// a fraction or an exponent (a float for Python's json, an int otherwise).
func (s *scanner) skipNumber() (isFloat bool, err error) {
	b, i := s.b, s.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	i, ok := skipInt(b, i)
	if !ok {
		s.i = i
		return false, s.fail("invalid number")
	}
	if i < len(b) && b[i] == '.' {
		isFloat = true
		if i, ok = skipDigits(b, i+1); !ok {
			s.i = i
			return false, s.fail("invalid number: no digit after '.'")
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		isFloat = true
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i, ok = skipDigits(b, i); !ok {
			s.i = i
			return false, s.fail("invalid number: no digit in exponent")
		}
	}
	s.i = i
	return isFloat, nil
}

// skipInt moves past the integer part of a number at b[i:]: a 0, or digits
// not starting with 0. ok is false, with i unchanged, when there is none.
func skipInt(b []byte, i int) (next int, ok bool) {
	switch {
	case i < len(b) && b[i] == '0':
		return i + 1, true
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		return skipDigits(b, i)
	}
	return i, false
}

// skipDigits moves past one or more digits at b[i:]. ok is false, with i
// unchanged, when there is none.
func skipDigits(b []byte, i int) (next int, ok bool) {
	if i >= len(b) || !isDigit(b[i]) {
		return i, false
	}
	for i < len(b) && isDigit(b[i]) {
		i++
	}
	return i, true
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isHex4(b []byte) bool {
	for _, c := range b[:4] {
		if hexVal(c) < 0 {
			return false
		}
	}
	return true
}

func hexVal(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// hex4 decodes 4 hex digits (validated by the scanner).
func hex4(b []byte) rune {
	return rune(hexVal(b[0])<<12 | hexVal(b[1])<<8 | hexVal(b[2])<<4 | hexVal(b[3]))
}

// unquote returns the value of a validated JSON string's raw text (between
// the quotes), as encoding/json decodes it: a \u escape of a lone surrogate
// becomes U+FFFD.
func unquote(raw []byte, esc bool) string {
	if !esc {
		return string(raw)
	}
	out := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			out = append(out, c)
			i++
			continue
		}
		switch raw[i+1] {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r := hex4(raw[i+2:])
			i += 6
			if utf16.IsSurrogate(r) {
				if i+6 <= len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
					if r2 := utf16.DecodeRune(r, hex4(raw[i+2:])); r2 != utf8.RuneError {
						r = r2
						i += 6
					} else {
						r = utf8.RuneError
					}
				} else {
					r = utf8.RuneError
				}
			}
			out = utf8.AppendRune(out, r)
			continue
		default: // '"', '\\', '/'
			out = append(out, raw[i+1])
		}
		i += 2
	}
	return string(out)
}

// decodeAny decodes the value at s.i to the untyped form encoding/json's
// Decoder gives with UseNumber: map[string]any, []any, string, json.Number,
// bool or nil. Numbers keep their exact text.
func (s *scanner) decodeAny() (any, error) {
	switch c := s.peek(); {
	case c == '{':
		m := map[string]any{}
		err := s.object(func(key []byte, esc bool) error {
			v, err := s.decodeAny()
			m[unquote(key, esc)] = v
			return err
		})
		return m, err
	case c == '[':
		a := []any{}
		err := s.array(func() error {
			v, err := s.decodeAny()
			a = append(a, v)
			return err
		})
		return a, err
	case c == '"':
		start := s.i
		esc, err := s.skipString()
		if err != nil {
			return nil, err
		}
		return unquote(s.b[start+1:s.i-1], esc), nil
	case c == '-' || c >= '0' && c <= '9':
		start := s.i
		if _, err := s.skipNumber(); err != nil {
			return nil, err
		}
		return json.Number(s.b[start:s.i]), nil
	case c == 't':
		return true, s.skipLiteral("true")
	case c == 'f':
		return false, s.skipLiteral("false")
	case c == 'n':
		return nil, s.skipLiteral("null")
	}
	return nil, s.skipValue() // reports the error
}

// validJSON reports whether text is exactly one JSON value (white space
// around it allowed); it returns the value's span without the white space.
func validJSON(text []byte) ([]byte, error) {
	s := scanner{b: text}
	span, err := s.valueSpan()
	if err != nil {
		return nil, err
	}
	return span, s.end()
}
