package envelope

import (
	"strconv"
)

// jsonShapeError is the cause of an ErrMalformed for valid JSON that is not
// shaped like a JsonBase message.
type jsonShapeError struct{ msg string }

func (e *jsonShapeError) Error() string { return e.msg }

// jsonWire is what the JSON envelope reads from a body in one pass: the
// sender and metadata, and where the data is.
type jsonWire struct {
	msg    Message
	hasEnc bool   // metadata.data_encoding present and not null
	data   []byte // the data value's text (aliases the body); nil if absent
}

// parse walks body, which must be valid UTF-8, checking the whole of it is
// JSON and picking out the fields tomodachi reads. Keys match exactly (case
// sensitive); for a repeated key the last one wins, as in Python's dict.
// Fields tomodachi reads must have the type it writes (strings, or null; a
// number, or null, for the timestamp; objects for service and metadata);
// other members only need to be valid JSON.
func (w *jsonWire) parse(body []byte) error {
	s := scanner{b: body}
	if s.peek() != '{' {
		if err := s.skipValue(); err != nil {
			return err
		}
		return &jsonShapeError{"the message is not a JSON object"}
	}
	err := s.object(func(key []byte, esc bool) error {
		switch keyOf(key, esc) {
		case "service":
			w.msg.Service = Service{}
			return w.service(&s)
		case "metadata":
			w.msg.Metadata = Metadata{}
			w.hasEnc = false
			return w.metadata(&s)
		case "data":
			span, err := s.valueSpan()
			w.data = span
			return err
		}
		return s.skipValue()
	})
	if err != nil {
		return err
	}
	return s.end()
}

// keyOf returns a key's value; unescaped keys are compared without a copy
// by the caller's switch.
func keyOf(key []byte, esc bool) string {
	if esc {
		return unquote(key, true)
	}
	return string(key) // the compiler does not allocate for a switch on this
}

func (w *jsonWire) service(s *scanner) error {
	if s.peek() != '{' {
		return wrongType(s, "service is not an object")
	}
	return s.object(func(key []byte, esc bool) error {
		var err error
		switch keyOf(key, esc) {
		case "name":
			w.msg.Service.Name, err = s.stringOrNull("service.name")
		case "uuid":
			w.msg.Service.UUID, err = s.stringOrNull("service.uuid")
		default:
			err = s.skipValue()
		}
		return err
	})
}

func (w *jsonWire) metadata(s *scanner) error {
	if s.peek() != '{' {
		return wrongType(s, "metadata is not an object")
	}
	md := &w.msg.Metadata
	return s.object(func(key []byte, esc bool) error {
		var err error
		switch keyOf(key, esc) {
		case "message_uuid":
			md.MessageUUID, err = s.stringOrNull("metadata.message_uuid")
		case "protocol_version":
			md.ProtocolVersion, err = s.stringOrNull("metadata.protocol_version")
		case "compatible_protocol_versions":
			md.CompatibleProtocolVersions, err = s.stringsLenient()
		case "timestamp":
			md.Timestamp, err = s.numberOrNull("metadata.timestamp")
		case "topic":
			md.Topic, err = s.stringOrNull("metadata.topic")
		case "data_encoding":
			w.hasEnc = s.peek() != 'n'
			md.DataEncoding, err = s.stringOrNull("metadata.data_encoding")
		default:
			err = s.skipValue()
		}
		return err
	})
}

// wrongType skips the value at s (reporting a syntax error first, if any)
// and returns a shape error.
func wrongType(s *scanner, msg string) error {
	if err := s.skipValue(); err != nil {
		return err
	}
	return &jsonShapeError{msg}
}

// stringOrNull reads a string, or null as "".
func (s *scanner) stringOrNull(field string) (string, error) {
	switch s.peek() {
	case '"':
		start := s.i
		esc, err := s.skipString()
		if err != nil {
			return "", err
		}
		return internString(s.b[start+1:s.i-1], esc), nil
	case 'n':
		return "", s.skipLiteral("null")
	}
	return "", wrongType(s, field+" is not a string")
}

// internString is unquote, without allocating for the constant values
// every message carries.
func internString(raw []byte, esc bool) string {
	if !esc {
		switch string(raw) {
		case EncodingRaw:
			return EncodingRaw
		case EncodingBase64GzipJSON:
			return EncodingBase64GzipJSON
		case JSONProtocolVersion:
			return JSONProtocolVersion
		case jsonCompatibleVersion:
			return jsonCompatibleVersion
		}
	}
	return unquote(raw, esc)
}

// numberOrNull reads a number as float64, or null as 0. A number beyond
// float64's range reads as ±Inf, as in Python.
func (s *scanner) numberOrNull(field string) (float64, error) {
	switch c := s.peek(); {
	case c == '-' || c >= '0' && c <= '9':
		start := s.i
		if _, err := s.skipNumber(); err != nil {
			return 0, err
		}
		f, _ := strconv.ParseFloat(string(s.b[start:s.i]), 64) // only ErrRange: ±Inf or 0, kept
		return f, nil
	case c == 'n':
		return 0, s.skipLiteral("null")
	}
	return 0, wrongType(s, field+" is not a number")
}

// stringsLenient reads an array of strings; any other valid value (tomodachi
// never reads this deprecated field) reads as nil.
func (s *scanner) stringsLenient() ([]string, error) {
	if s.peek() != '[' {
		return nil, s.skipValue()
	}
	out := []string{}
	ok := true
	err := s.array(func() error {
		if s.peek() != '"' {
			ok = false
			return s.skipValue()
		}
		start := s.i
		esc, err := s.skipString()
		if err == nil {
			out = append(out, internString(s.b[start+1:s.i-1], esc))
		}
		return err
	})
	if !ok {
		out = nil
	}
	return out, err
}
