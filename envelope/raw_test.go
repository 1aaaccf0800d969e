package envelope

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestRawRoundTrip(t *testing.T) {
	for _, data := range []any{[]byte("bytes \x00\xff"), "string åäö", json.RawMessage(`{"a":1}`), []byte{}, ""} {
		body, err := Raw.Build(Build{Topic: "ignored"}, data, Options{})
		if err != nil {
			t.Fatal(err)
		}
		var b []byte
		var s string
		var r json.RawMessage
		var a any
		for _, dst := range []any{&b, &s, &r, &a} {
			msg, err := Raw.Parse(body, dst, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if msg.Metadata.DataEncoding != EncodingRaw || msg.Service != (Service{}) || msg.Metadata.Topic != "" {
				t.Errorf("message %+v", msg)
			}
		}
		if !bytes.Equal(b, body) || s != string(body) || !bytes.Equal(r, body) || !bytes.Equal(a.([]byte), body) {
			t.Errorf("%q: got %q %q %q %q", body, b, s, r, a)
		}
		if b == nil || a.([]byte) == nil {
			t.Errorf("empty body gave a nil slice")
		}
	}
}

func TestRawCopies(t *testing.T) {
	in := []byte("abc")
	body, _ := Raw.Build(Build{}, in, Options{})
	in[0] = 'X'
	var out []byte
	if _, err := Raw.Parse(body, &out, Options{}); err != nil {
		t.Fatal(err)
	}
	body[1] = 'Y'
	if string(out) != "abc" {
		t.Errorf("aliasing: %q", out)
	}
}

func TestRawBuildErrors(t *testing.T) {
	for _, data := range []any{nil, 1, map[string]any{}, new([]byte)} {
		_, err := Raw.Build(Build{}, data, Options{})
		wantKind(t, err, ErrPayloadType, true)
	}
}

func TestRawCheck(t *testing.T) {
	for _, ok := range []any{new([]byte), new(string), new(any), new(json.RawMessage)} {
		if err := Raw.Check(ok, Options{}); err != nil {
			t.Errorf("Check(%T): %v", ok, err)
		}
	}
	for _, bad := range []any{nil, new(int), []byte{}, (*string)(nil)} {
		wantKind(t, Raw.Check(bad, Options{}), ErrPayloadType, false)
	}
}

func TestEnvelopeNames(t *testing.T) {
	for _, c := range []struct {
		env         Envelope
		name, ctype string
	}{
		{JSON, "json", "application/json"},
		{Protobuf, "protobuf", "application/x-protobuf; encoding=base64"},
		{Raw, "raw", "application/octet-stream"},
	} {
		if c.env.Name() != c.name || c.env.ContentType() != c.ctype {
			t.Errorf("%s: %q", c.env.Name(), c.env.ContentType())
		}
	}
}
