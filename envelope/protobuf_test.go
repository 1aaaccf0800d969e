package envelope

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hato-go/hato/internal/testpb"
)

func TestProtobufParseEncodings(t *testing.T) {
	p := &testpb.Person{Id: "12", Name: "John Doe"}
	ser, _ := proto.Marshal(p)
	b64 := []byte(base64.StdEncoding.EncodeToString(ser))
	for _, c := range []struct {
		enc  string
		data []byte
	}{
		{EncodingProto, ser},
		{EncodingGzipProto, zlibOf(ser)},
		{EncodingBase64, b64},
		{EncodingBase64GzipProto, []byte(base64.StdEncoding.EncodeToString(zlibOf(ser)))},
	} {
		t.Run(c.enc, func(t *testing.T) {
			body := pbBody(c.enc, c.data)
			got := &testpb.Person{Id: "stale", Name: "stale"}
			if _, err := Protobuf.Parse(body, got, Options{}); err != nil || !proto.Equal(got, p) {
				t.Fatalf("message: %v %v", got, err)
			}
			var b []byte
			if _, err := Protobuf.Parse(body, &b, Options{}); err != nil || !bytes.Equal(b, ser) {
				t.Fatalf("bytes: %x %v", b, err)
			}
			var a any
			if _, err := Protobuf.Parse(body, &a, Options{}); err != nil || !bytes.Equal(a.([]byte), c.data) {
				t.Fatalf("any: %x %v", a, err)
			}
		})
	}
	t.Run("raw", func(t *testing.T) {
		body := pbBody(EncodingRaw, []byte("plain bytes"))
		var b []byte
		if _, err := Protobuf.Parse(body, &b, Options{}); err != nil || string(b) != "plain bytes" {
			t.Fatalf("bytes: %q %v", b, err)
		}
		var a any
		if _, err := Protobuf.Parse(body, &a, Options{}); err != nil || string(a.([]byte)) != "plain bytes" {
			t.Fatalf("any: %q %v", a, err)
		}
	})
	t.Run("empty data is an empty, non-nil slice", func(t *testing.T) {
		var a any
		var b []byte
		if _, err := Protobuf.Parse(pbBody(EncodingProto, nil), &a, Options{}); err != nil || a.([]byte) == nil {
			t.Fatalf("any: %#v %v", a, err)
		}
		if _, err := Protobuf.Parse(pbBody(EncodingProto, nil), &b, Options{}); err != nil || b == nil {
			t.Fatalf("bytes: %#v %v", b, err)
		}
	})
}

func TestProtobufParseDestinations(t *testing.T) {
	body, err := Protobuf.Build(Build{Topic: "t"}, &testpb.Person{Id: "1", Name: "n"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("existing pointer is filled in place", func(t *testing.T) {
		p := &testpb.Person{Name: "old"}
		pp := p
		if _, err := Protobuf.Parse(body, &pp, Options{}); err != nil {
			t.Fatal(err)
		}
		if pp != p || p.Id != "1" || p.Name != "n" {
			t.Errorf("got %v (same pointer %v)", pp, pp == p)
		}
	})
	t.Run("nil pointer stays nil on failure", func(t *testing.T) {
		var pp *testpb.Person
		_, err := Protobuf.Parse(pbBody(EncodingProto, []byte{0xff}), &pp, Options{})
		wantKind(t, err, ErrPayloadType, false)
		if pp != nil {
			t.Errorf("dst set on failure: %v", pp)
		}
	})
	t.Run("validator gets the message", func(t *testing.T) {
		var pp *testpb.Person
		var seen any
		_, err := Protobuf.Parse(body, &pp, Options{Validator: func(p any) error { seen = p; return nil }})
		if err != nil || seen != any(pp) {
			t.Errorf("validator saw %v, dst %v, %v", seen, pp, err)
		}
	})
	t.Run("message returned with payload errors", func(t *testing.T) {
		msg, err := Protobuf.Parse(body, &testpb.Person{}, Options{Validator: rejectAll})
		wantKind(t, err, ErrValidation, false)
		if msg.Metadata.Topic != "t" || msg.Metadata.MessageUUID == "" {
			t.Errorf("message not returned: %+v", msg)
		}
	})
}

func TestProtobufBuild(t *testing.T) {
	t.Run("threshold", func(t *testing.T) {
		for _, c := range []struct {
			size int
			want string
		}{{60000, EncodingProto}, {60001, EncodingGzipProto}} {
			data := bytes.Repeat([]byte{'x'}, c.size)
			body, err := Protobuf.Build(Build{}, data, Options{})
			if err != nil {
				t.Fatal(err)
			}
			var b []byte
			msg, err := Protobuf.Parse(body, &b, Options{})
			if err != nil || msg.Metadata.DataEncoding != c.want || !bytes.Equal(b, data) {
				t.Errorf("%d bytes: encoding %q, %v", c.size, msg.Metadata.DataEncoding, err)
			}
		}
	})
	t.Run("defaults", func(t *testing.T) {
		before := time.Now()
		body, err := Protobuf.Build(Build{}, &testpb.Person{}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		var p testpb.Person
		msg, err := Protobuf.Parse(body, &p, Options{})
		if err != nil {
			t.Fatal(err)
		}
		svc, rnd, _ := strings.Cut(msg.Metadata.MessageUUID, ".")
		if svc != "None" || !uuid4RE.MatchString(rnd) {
			t.Errorf("message_uuid %q", msg.Metadata.MessageUUID)
		}
		if msg.Metadata.Time().Before(before.Add(-time.Millisecond)) || msg.Metadata.ProtocolVersion != ProtobufProtocolVersion {
			t.Errorf("metadata %+v", msg.Metadata)
		}
	})
	t.Run("invalid UTF-8 strings are repaired", func(t *testing.T) {
		body, err := Protobuf.Build(Build{Topic: "a\xffb", Service: Service{Name: "\xc3"}}, []byte{}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		var a any
		msg, err := Protobuf.Parse(body, &a, Options{})
		if err != nil || msg.Metadata.Topic != "a\uFFFDb" || msg.Service.Name != "\uFFFD" {
			t.Errorf("%+v %v", msg, err)
		}
	})
	t.Run("errors", func(t *testing.T) {
		for _, data := range []any{nil, "string", 1, new(testpb.Person).ProtoReflect, &testpb.Person{Name: "\xff"}} {
			_, err := Protobuf.Build(Build{}, data, Options{})
			wantKind(t, err, ErrPayloadType, true)
		}
	})
}

func TestProtobufCheck(t *testing.T) {
	var m proto.Message = &testpb.Person{}
	for _, ok := range []any{&testpb.Person{}, new(*testpb.Person), &m, new([]byte), new(any)} {
		if err := Protobuf.Check(ok, Options{}); err != nil {
			t.Errorf("Check(%T): %v", ok, err)
		}
	}
	for _, bad := range []any{nil, new(string), new(map[string]any), new(proto.Message), (*testpb.Person)(nil), new(testpb.Person).ProtoReflect()} {
		wantKind(t, Protobuf.Check(bad, Options{}), ErrPayloadType, false)
	}
}
