package envelope

import (
	"errors"
	"math"
	"strconv"
	"unicode/utf8"
)

// This file writes JSON the way CPython's json.dumps does with its defaults
// (ensure_ascii=True, separators (", ", ": ")), which is what tomodachi's
// JsonBase publishes. Matching it byte for byte keeps hato's bodies, and the
// 60000-character compression threshold computed on them, identical to
// tomodachi's.

const lowerHex = "0123456789abcdef"

// errNumberRange: a number Python would read as a float overflows float64;
// Python would write it as Infinity, which is not JSON.
var errNumberRange = errors.New("number out of float64 range")

// pySafe reports whether Python writes byte c as is in a string: printable
// ASCII except '"' and '\'.
func pySafe(c byte) bool { return c >= ' ' && c <= '~' && c != '"' && c != '\\' }

// appendPyUnit appends one UTF-16 code unit (u < 0x10000) as Python's
// ensure_ascii encoder writes it.
func appendPyUnit(dst []byte, u rune) []byte {
	if u < utf8.RuneSelf && pySafe(byte(u)) {
		return append(dst, byte(u))
	}
	switch u {
	case '"':
		return append(dst, '\\', '"')
	case '\\':
		return append(dst, '\\', '\\')
	case '\n':
		return append(dst, '\\', 'n')
	case '\r':
		return append(dst, '\\', 'r')
	case '\t':
		return append(dst, '\\', 't')
	case '\b':
		return append(dst, '\\', 'b')
	case '\f':
		return append(dst, '\\', 'f')
	}
	return append(dst, '\\', 'u', lowerHex[u>>12&0xf], lowerHex[u>>8&0xf], lowerHex[u>>4&0xf], lowerHex[u&0xf])
}

// appendPyRune appends a code point: astral ones as a surrogate pair.
func appendPyRune(dst []byte, r rune) []byte {
	if r < 0x10000 {
		return appendPyUnit(dst, r)
	}
	r -= 0x10000
	dst = appendPyUnit(dst, 0xd800+(r>>10)&0x3ff)
	return appendPyUnit(dst, 0xdc00+r&0x3ff)
}

// appendPyString appends s as a Python JSON string literal. Invalid UTF-8
// (which a Python str cannot hold) is written as U+FFFD.
func appendPyString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			j := i
			for j < len(s) && pySafe(s[j]) {
				j++
			}
			if j > i {
				dst = append(dst, s[i:j]...)
				i = j
				continue
			}
			dst = appendPyUnit(dst, rune(c))
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		dst = appendPyRune(dst, r)
		i += n
	}
	return append(dst, '"')
}

// appendPyFloat appends f as Python's repr(float) writes it: the shortest
// digits that round-trip, in positional notation when the decimal exponent
// is in [-4, 16) (with ".0" for integral values), else as d.ddde±XX.
// f must be finite.
func appendPyFloat(dst []byte, f float64) []byte {
	if f == 0 {
		if math.Signbit(f) {
			return append(dst, "-0.0"...)
		}
		return append(dst, "0.0"...)
	}
	var buf [32]byte
	e := strconv.AppendFloat(buf[:0], f, 'e', -1, 64) // [-]d[.ddd]e±XX
	neg := e[0] == '-'
	if neg {
		e = e[1:]
	}
	var digits [24]byte
	nd := 0
	k := 0
	for ; e[k] != 'e'; k++ {
		if e[k] != '.' {
			digits[nd] = e[k]
			nd++
		}
	}
	exp, _ := strconv.Atoi(string(e[k+1:])) // well-formed by construction
	return appendPyDigits(dst, neg, digits[:nd], exp+1)
}

// appendPyDigits writes the float 0.d × 10^decpt (d: significant digits, no
// leading or trailing zeros, at least one) as Python's repr does.
func appendPyDigits(dst []byte, neg bool, d []byte, decpt int) []byte {
	if neg {
		dst = append(dst, '-')
	}
	nd := len(d)
	switch {
	case decpt <= -4 || decpt > 16:
		dst = append(dst, d[0])
		if nd > 1 {
			dst = append(dst, '.')
			dst = append(dst, d[1:]...)
		}
		dst = append(dst, 'e')
		exp := decpt - 1
		if exp < 0 {
			dst = append(dst, '-')
			exp = -exp
		} else {
			dst = append(dst, '+')
		}
		if exp < 10 {
			dst = append(dst, '0')
		}
		return strconv.AppendInt(dst, int64(exp), 10)
	case decpt <= 0:
		dst = append(dst, '0', '.')
		for ; decpt < 0; decpt++ {
			dst = append(dst, '0')
		}
		return append(dst, d...)
	case decpt >= nd:
		dst = append(dst, d...)
		for ; decpt > nd; decpt-- {
			dst = append(dst, '0')
		}
		return append(dst, '.', '0')
	default:
		dst = append(dst, d[:decpt]...)
		dst = append(dst, '.')
		return append(dst, d[decpt:]...)
	}
}

// appendPyFloatToken writes a validated JSON float token as Python's repr
// of its value without converting it to binary, when that is exact: a
// decimal of at most 15 significant digits within float64's normal range
// is the shortest representation of the float nearest to it (any two such
// decimals map to distinct float64s), so Python prints those very digits.
// ok is false for other tokens, which need the slow path.
func appendPyFloatToken(dst, tok []byte) (out []byte, ok bool) {
	var sig pyDigits
	neg := tok[0] == '-'
	i := 0
	if neg {
		i++
	}
	i, ok = sig.addRun(tok, i)
	if !ok {
		return dst, false
	}
	intLen := sig.seen
	if i < len(tok) && tok[i] == '.' {
		if i, ok = sig.addRun(tok, i+1); !ok {
			return dst, false
		}
	}
	exp := 0
	if i < len(tok) { // exponent
		if exp, ok = tokenExponent(tok[i+1:]); !ok {
			return dst, false
		}
	}
	if sig.nd == 0 { // zero
		if neg {
			return append(dst, "-0.0"...), true
		}
		return append(dst, "0.0"...), true
	}
	decpt := intLen - sig.lead + exp
	if decpt < -300 || decpt > 300 {
		return dst, false
	}
	return appendPyDigits(dst, neg, sig.digits[:sig.nd], decpt), true
}

// pyMaxDigits is the most significant digits appendPyFloatToken handles.
const pyMaxDigits = 15

// pyDigits collects the significant digits of a float token.
type pyDigits struct {
	digits   [pyMaxDigits]byte
	nd       int // digits stored
	seen     int // digits added, zeros included
	lead     int // leading zeros of int+frac digits
	trailing int // zeros seen after the last nonzero digit, not yet stored
}

// add adds one digit; it is false beyond pyMaxDigits significant digits.
func (p *pyDigits) add(c byte) bool {
	p.seen++
	switch {
	case c == '0' && p.nd == 0:
		p.lead++
	case c == '0':
		p.trailing++
	default:
		if p.nd+p.trailing+1 > pyMaxDigits {
			return false
		}
		for ; p.trailing > 0; p.trailing-- {
			p.digits[p.nd] = '0'
			p.nd++
		}
		p.digits[p.nd] = c
		p.nd++
	}
	return true
}

// addRun adds the digits at tok[i:] and returns the index after them.
func (p *pyDigits) addRun(tok []byte, i int) (next int, ok bool) {
	for ; i < len(tok) && isDigit(tok[i]); i++ {
		if !p.add(tok[i]) {
			return i, false
		}
	}
	return i, true
}

// tokenExponent reads a validated exponent (after the 'e'); ok is false
// beyond 10000 in magnitude.
func tokenExponent(e []byte) (exp int, ok bool) {
	neg := e[0] == '-'
	if e[0] == '+' || e[0] == '-' {
		e = e[1:]
	}
	for _, c := range e {
		if exp = exp*10 + int(c-'0'); exp > 10000 {
			return 0, false
		}
	}
	if neg {
		exp = -exp
	}
	return exp, true
}

// appendPyNumber appends a validated JSON number token as Python writes the
// int or float json.loads makes of it: ints keep their digits ("-0" becomes
// "0"); floats are re-printed with appendPyFloat ("1E2" becomes "100.0").
func appendPyNumber(dst, tok []byte, isFloat bool) ([]byte, error) {
	if !isFloat {
		if len(tok) == 2 && tok[0] == '-' && tok[1] == '0' {
			return append(dst, '0'), nil
		}
		return append(dst, tok...), nil
	}
	if out, ok := appendPyFloatToken(dst, tok); ok {
		return out, nil
	}
	f, err := strconv.ParseFloat(string(tok), 64)
	if err != nil { // only ErrRange: syntax was validated
		if math.IsInf(f, 0) {
			return dst, errNumberRange
		}
		// Underflow to zero (or a denormal): Python reads the same value.
	}
	return appendPyFloat(dst, f), nil
}

// appendPython re-formats src, which must be one JSON value (white space
// around and inside allowed), as Python's json.dumps writes the value
// json.loads reads from it, and appends that to dst. It validates src as it
// goes, in a single linear pass; it allocates only to grow dst. Objects keep
// their members in order, duplicates included (Python's json.loads would
// keep the last value at the first key's position; readers see the same
// value either way).
func appendPython(dst, src []byte) ([]byte, error) {
	s := scanner{b: src}
	dst, err := s.python(dst)
	if err != nil {
		return dst, err
	}
	return dst, s.end()
}

func (s *scanner) python(dst []byte) ([]byte, error) {
	switch c := s.peek(); {
	case c == '{':
		return s.pyObject(dst)
	case c == '[':
		return s.pyArray(dst)
	case c == '"':
		return s.pyString(dst)
	case c == '-' || c >= '0' && c <= '9':
		start := s.i
		isFloat, err := s.skipNumber()
		if err != nil {
			return dst, err
		}
		return appendPyNumber(dst, s.b[start:s.i], isFloat)
	}
	start := s.i
	if err := s.skipValue(); err != nil { // literals, and every error
		return dst, err
	}
	return append(dst, s.b[start:s.i]...), nil
}

// pyOpen enters the object or array at s.i, writing its opening bracket.
// empty reports that it closed at once (written too).
func (s *scanner) pyOpen(dst []byte, opening, closing byte) (out []byte, empty bool, err error) {
	s.i++
	if s.depth++; s.depth > maxJSONDepth {
		return dst, false, s.fail("nesting too deep")
	}
	dst = append(dst, opening)
	if s.peek() == closing {
		s.i++
		s.depth--
		return append(dst, closing), true, nil
	}
	return dst, false, nil
}

// pyNext moves past the ',' between two members or elements (writing ", ")
// or the closing bracket (writing it; done is true).
func (s *scanner) pyNext(dst []byte, closing byte, msg string) (out []byte, done bool, err error) {
	switch s.peek() {
	case ',':
		s.i++
		return append(dst, ',', ' '), false, nil
	case closing:
		s.i++
		s.depth--
		return append(dst, closing), true, nil
	}
	return dst, false, s.fail(msg)
}

func (s *scanner) pyObject(dst []byte) ([]byte, error) {
	dst, done, err := s.pyOpen(dst, '{', '}')
	for !done && err == nil {
		if s.peek() != '"' {
			return dst, s.fail("expected a string key")
		}
		if dst, err = s.pyString(dst); err != nil {
			return dst, err
		}
		if err = s.expect(':'); err != nil {
			return dst, err
		}
		dst = append(dst, ':', ' ')
		if dst, err = s.python(dst); err != nil {
			return dst, err
		}
		dst, done, err = s.pyNext(dst, '}', "expected ',' or '}'")
	}
	return dst, err
}

func (s *scanner) pyArray(dst []byte) ([]byte, error) {
	dst, done, err := s.pyOpen(dst, '[', ']')
	for !done && err == nil {
		if dst, err = s.python(dst); err != nil {
			return dst, err
		}
		dst, done, err = s.pyNext(dst, ']', "expected ',' or ']'")
	}
	return dst, err
}

// pyString validates the string at s.i (a '"') and appends it as Python
// writes the str json.loads makes of it, in the same pass: every escape is
// normalised ("\/" and "\u0041" become "/" and "A", "\u00E5" becomes
// "\u00e5"); \u escapes of surrogates are written as they came, like Python,
// which keeps lone surrogates; non-ASCII characters become \u escapes
// (invalid UTF-8 becomes \ufffd).
func (s *scanner) pyString(dst []byte) ([]byte, error) {
	b := s.b
	i := s.i + 1
	dst = append(dst, '"')
	for i < len(b) {
		j := i
		for j < len(b) && pySafe(b[j]) {
			j++
		}
		dst = append(dst, b[i:j]...)
		if i = j; i >= len(b) {
			break
		}
		switch c := b[i]; {
		case c == '"':
			s.i = i + 1
			return append(dst, '"'), nil
		case c == '\\':
			if i+1 >= len(b) {
				s.i = i + 1
				return dst, s.fail("unexpected end of input in string")
			}
			switch e := b[i+1]; e {
			case 'u':
				if len(b)-i < 6 || !isHex4(b[i+2:i+6]) {
					s.i = i
					return dst, s.fail("invalid \\u escape")
				}
				dst = appendPyUnit(dst, hex4(b[i+2:]))
				i += 6
			case 'b', 'f', 'n', 'r', 't':
				dst = append(dst, '\\', e)
				i += 2
			case '"', '\\', '/':
				dst = appendPyUnit(dst, rune(e))
				i += 2
			default:
				s.i = i
				return dst, s.fail("invalid escape")
			}
		case c < 0x20:
			s.i = i
			return dst, s.fail("control character in string")
		case c < utf8.RuneSelf: // DEL
			dst = appendPyUnit(dst, rune(c))
			i++
		default:
			r, n := utf8.DecodeRune(b[i:])
			dst = appendPyRune(dst, r)
			i += n
		}
	}
	s.i = i
	return dst, s.fail("unexpected end of input in string")
}
