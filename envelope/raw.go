package envelope

import (
	"encoding/json"
)

// Raw is the raw envelope: a ready-to-use [RawEnvelope].
var Raw = RawEnvelope{}

// RawEnvelope passes bodies through untouched: tomodachi's mode without a
// message envelope, where a handler gets the body itself. Content type
// application/octet-stream. There is no service or metadata on the wire, so
// Parse returns an empty Message apart from Metadata.DataEncoding "raw". The
// zero value is ready to use and safe for concurrent use; [Raw] is one.
type RawEnvelope struct{}

var (
	_ Envelope = RawEnvelope{}
	_ Checker  = RawEnvelope{}
)

const rawName = "raw"

// Name returns "raw".
func (RawEnvelope) Name() string { return rawName }

// ContentType returns "application/octet-stream".
func (RawEnvelope) ContentType() string { return "application/octet-stream" }

// Build returns a copy of data, which must be a []byte, a string or a
// json.RawMessage (ErrPayloadType otherwise). b and opts are not used: the
// raw envelope carries no service or metadata.
func (RawEnvelope) Build(_ Build, data any, _ Options) ([]byte, error) {
	switch d := data.(type) {
	case []byte:
		return append([]byte{}, d...), nil
	case string:
		return []byte(d), nil
	case json.RawMessage:
		return append([]byte{}, d...), nil
	}
	return nil, buildErr(rawName, ErrPayloadType, "data must be []byte, string or json.RawMessage, got "+typeName(data), nil)
}

// Parse stores the body in dst: a *[]byte or *json.RawMessage (a copy), a
// *string, or a *any (a []byte copy). Any other destination is
// ErrPayloadType. An empty body is valid. A body over opts.MaxBodySize is
// ErrTooLarge. opts.Validator, when set, gets the []byte for *any and dst
// otherwise; its error is wrapped in ErrValidation.
func (RawEnvelope) Parse(body []byte, dst any, opts Options) (Message, error) {
	msg := Message{Metadata: Metadata{DataEncoding: EncodingRaw}}
	if err := checkBody(rawName, body, opts); err != nil {
		return Message{}, err
	}
	if err := checkRawDst(dst); err != nil {
		return Message{}, err
	}
	payload := dst
	switch d := dst.(type) {
	case *[]byte:
		*d = append([]byte{}, body...)
	case *json.RawMessage:
		*d = append(json.RawMessage{}, body...)
	case *string:
		*d = string(body)
	case *any:
		b := append([]byte{}, body...)
		*d = b
		payload = b
	}
	if opts.Validator != nil {
		if err := opts.Validator(payload); err != nil {
			return msg, parseErr(rawName, ErrValidation, "", err)
		}
	}
	return msg, nil
}

// Check accepts the destinations Parse can fill: non-nil *[]byte,
// *json.RawMessage, *string and *any.
func (RawEnvelope) Check(dst any, _ Options) error { return checkRawDst(dst) }

func checkRawDst(dst any) error {
	ok := false
	switch d := dst.(type) {
	case *[]byte:
		ok = d != nil
	case *json.RawMessage:
		ok = d != nil
	case *string:
		ok = d != nil
	case *any:
		ok = d != nil
	}
	if !ok {
		return parseErr(rawName, ErrPayloadType, "destination must be *[]byte, *json.RawMessage, *string or *any, got "+typeName(dst), nil)
	}
	return nil
}
