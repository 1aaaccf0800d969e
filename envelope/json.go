package envelope

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"reflect"
	"unicode/utf8"
)

// jsonCompatibleVersion is the deprecated compatible_protocol_versions entry
// tomodachi writes.
const jsonCompatibleVersion = "json_base-wip"

// JSON is the JSON envelope, tomodachi's JsonBase: a ready-to-use
// [JSONEnvelope].
var JSON = JSONEnvelope{}

// JSONEnvelope is tomodachi's JsonBase envelope (protocol
// tomodachi-json-base--1.0.0, content type application/json). The zero value
// is ready to use and safe for concurrent use; [JSON] is one.
//
// See the package documentation for the wire format and the destinations
// Parse accepts.
type JSONEnvelope struct{}

var (
	_ Envelope = JSONEnvelope{}
	_ Checker  = JSONEnvelope{}
)

const jsonName = "json"

// Name returns "json".
func (JSONEnvelope) Name() string { return jsonName }

// ContentType returns "application/json".
func (JSONEnvelope) ContentType() string { return "application/json" }

// Build returns the body tomodachi's JsonBase.build_message would publish for
// data: byte for byte the text of CPython's json.dumps (key order, ", " and
// ": " separators, every non-ASCII character as a lowercase \u escape, floats
// as Python's repr).
//
// data is encoded with encoding/json's Marshal rules (json.RawMessage and
// json.Number are taken as written, then normalised to Python's style), so a
// Go float with an integral value is written as an int (1, not 1.0), as
// encoding/json does. When the Python-style text of data has
// [JSONCompressThreshold] or more characters it is written as base64 of its
// zlib compression, with data_encoding base64_gzip_json.
//
// Errors: ErrPayloadType when data cannot be marshalled (a channel, NaN,
// invalid JSON in a json.RawMessage, a number Python would read as an
// infinite float). opts is not used.
func (JSONEnvelope) Build(b Build, data any, opts Options) ([]byte, error) {
	var text []byte
	if raw, ok := data.(json.RawMessage); ok {
		text = raw
		if raw == nil {
			text = []byte("null")
		}
	} else {
		var err error
		if text, err = json.Marshal(data); err != nil {
			return nil, buildErr(jsonName, ErrPayloadType, "cannot marshal the data as JSON", err)
		}
	}
	muuid, ts := b.messageUUID(), b.timestamp()

	out := make([]byte, 0, 320+len(b.Service.Name)+len(b.Service.UUID)+len(muuid)+len(b.Topic)+len(text)+len(text)/8)
	out = appendJSONHeader(out, b, muuid, ts, EncodingRaw)
	start := len(out)
	out, err := appendPython(out, text)
	if err != nil {
		return nil, buildErr(jsonName, ErrPayloadType, "the data is not valid JSON", err)
	}
	if n := len(out) - start; n >= JSONCompressThreshold {
		z := deflate(out[start:])
		out = make([]byte, 0, start+base64.StdEncoding.EncodedLen(len(z))+3)
		out = appendJSONHeader(out, b, muuid, ts, EncodingBase64GzipJSON)
		out = append(out, '"')
		out = base64.StdEncoding.AppendEncode(out, z)
		out = append(out, '"')
	}
	return append(out, '}'), nil
}

// appendJSONHeader writes the message up to and including `"data": `.
func appendJSONHeader(out []byte, b Build, muuid string, ts float64, enc string) []byte {
	out = append(out, `{"service": {"name": `...)
	out = appendPyStringOrNull(out, b.Service.Name)
	out = append(out, `, "uuid": `...)
	out = appendPyStringOrNull(out, b.Service.UUID)
	out = append(out, `}, "metadata": {"message_uuid": `...)
	out = appendPyString(out, muuid)
	out = append(out, `, "protocol_version": "`+JSONProtocolVersion+
		`", "compatible_protocol_versions": ["`+jsonCompatibleVersion+`"], "timestamp": `...)
	out = appendPyFloat(out, ts)
	out = append(out, `, "topic": `...)
	out = appendPyString(out, b.Topic)
	out = append(out, `, "data_encoding": "`...)
	out = append(out, enc...)
	return append(out, `"}, "data": `...)
}

// appendPyStringOrNull writes "" as null, as tomodachi writes a missing
// service name or uuid (None).
func appendPyStringOrNull(out []byte, s string) []byte {
	if s == "" {
		return append(out, "null"...)
	}
	return appendPyString(out, s)
}

// Parse reads a JsonBase body and decodes its data into dst, which must be a
// non-nil pointer:
//   - *any: the untyped form (map[string]any, []any, string, json.Number,
//     bool, nil); numbers keep their exact text.
//   - *json.RawMessage: a copy of the data's JSON text as sent (decompressed
//     when it was compressed).
//   - any other pointer: encoding/json's Unmarshal into it; a payload that
//     does not fit the type is ErrPayloadType.
//
// The body must be UTF-8 JSON shaped like a JsonBase message: an object whose
// "service" and "metadata", when present, are objects, with string (or null)
// fields and a number (or null) timestamp. A null service name or uuid reads
// as "". metadata.data_encoding must be "raw" or "base64_gzip_json"
// (ErrUnknownEncoding otherwise, also when it is missing: tomodachi would
// hand the handler None instead, silently dropping the data). A missing
// "data" with encoding "raw" reads as null.
//
// Limits: a body over opts.MaxBodySize is ErrTooLarge before any parsing;
// compressed data that inflates beyond opts.MaxDecompressedSize is
// ErrTooLarge, found while inflating.
//
// opts.Validator, when set, gets the decoded value for a *any destination
// and dst itself otherwise; its error is wrapped in ErrValidation.
//
// On error, the returned Message holds what was read before the failure
// (zero when the body itself is unreadable), for logs and dead-lettering.
// dst is left untouched when the envelope itself cannot be read or its
// encoding is unknown. Parse never retains body or aliases it from dst.
func (JSONEnvelope) Parse(body []byte, dst any, opts Options) (Message, error) {
	if err := checkBody(jsonName, body, opts); err != nil {
		return Message{}, err
	}
	if err := checkJSONDst(dst); err != nil {
		return Message{}, err
	}
	if len(body) == 0 {
		return Message{}, parseErr(jsonName, ErrMalformed, "empty body", nil)
	}
	if !utf8.Valid(body) {
		return Message{}, parseErr(jsonName, ErrMalformed, "body is not valid UTF-8", nil)
	}
	var w jsonWire
	if err := w.parse(body); err != nil {
		return Message{}, parseErr(jsonName, ErrMalformed, "", err)
	}
	text, err := w.dataText(opts)
	if err != nil {
		return w.msg, err
	}
	payload, err := decodeJSONData(text, dst)
	if err != nil {
		return w.msg, err
	}
	if opts.Validator != nil {
		if err := opts.Validator(payload); err != nil {
			return w.msg, parseErr(jsonName, ErrValidation, "", err)
		}
	}
	return w.msg, nil
}

// Check reports, at route registration, whether Parse can decode into dst:
// any non-nil pointer can (encoding/json decides at Parse time whether a
// payload fits). It returns ErrPayloadType otherwise.
func (JSONEnvelope) Check(dst any, _ Options) error { return checkJSONDst(dst) }

func checkJSONDst(dst any) error {
	switch d := dst.(type) {
	case *any:
		if d != nil {
			return nil
		}
	case *json.RawMessage:
		if d != nil {
			return nil
		}
	default:
		if rv := reflect.ValueOf(dst); rv.Kind() == reflect.Pointer && !rv.IsNil() {
			return nil
		}
	}
	return parseErr(jsonName, ErrPayloadType, "destination must be a non-nil pointer, got "+typeName(dst), nil)
}

// dataText returns the data's JSON text by data_encoding: the span in the
// body for raw, the inflated (bounded) and validated text for
// base64_gzip_json.
func (w *jsonWire) dataText(opts Options) ([]byte, error) {
	enc := w.msg.Metadata.DataEncoding
	switch {
	case !w.hasEnc:
		return nil, parseErr(jsonName, ErrUnknownEncoding, "metadata.data_encoding is missing", nil)
	case enc == EncodingRaw:
		if w.data == nil {
			return []byte("null"), nil
		}
		return w.data, nil
	case enc != EncodingBase64GzipJSON:
		return nil, parseErr(jsonName, ErrUnknownEncoding, "metadata.data_encoding "+quoteDetail(enc), nil)
	}
	if len(w.data) < 2 || w.data[0] != '"' {
		return nil, parseErr(jsonName, ErrMalformed, "base64_gzip_json data is not a string", nil)
	}
	b64 := w.data[1 : len(w.data)-1]
	var s []byte
	for _, c := range b64 { // base64 never needs escapes; accept them anyway
		if c == '\\' {
			s = []byte(unquote(b64, true))
			break
		}
	}
	if s == nil {
		s = b64
	}
	z := make([]byte, base64.StdEncoding.DecodedLen(len(s)))
	n, err := base64.StdEncoding.Decode(z, s)
	if err != nil {
		return nil, parseErr(jsonName, ErrMalformed, "base64_gzip_json data is not base64", err)
	}
	text, err := inflate(z[:n], opts.maxDecompressed())
	if errors.Is(err, errInflateTooLarge) {
		return nil, parseErr(jsonName, ErrTooLarge, "decompressed data exceeds the limit of "+itoa(opts.maxDecompressed())+" bytes", nil)
	}
	if err != nil {
		return nil, parseErr(jsonName, ErrMalformed, "base64_gzip_json data is not zlib data", err)
	}
	if !utf8.Valid(text) {
		return nil, parseErr(jsonName, ErrMalformed, "decompressed data is not valid UTF-8", nil)
	}
	span, err := validJSON(text)
	if err != nil {
		return nil, parseErr(jsonName, ErrMalformed, "decompressed data is not JSON", err)
	}
	return span, nil
}

// decodeJSONData decodes validated JSON text into dst and returns what the
// validator gets.
func decodeJSONData(text []byte, dst any) (any, error) {
	switch d := dst.(type) {
	case *any:
		s := scanner{b: text}
		v, err := s.decodeAny()
		if err != nil { // cannot happen: text was validated
			return nil, parseErr(jsonName, ErrMalformed, "", err)
		}
		*d = v
		return v, nil
	case *json.RawMessage:
		*d = append(json.RawMessage(nil), text...)
		return d, nil
	}
	if err := json.Unmarshal(text, dst); err != nil {
		return nil, parseErr(jsonName, ErrPayloadType, "data does not fit "+typeName(dst), err)
	}
	return dst, nil
}
