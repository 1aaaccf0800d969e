package envelope

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/hato-go/hato/envelope/internal/pb"
	"github.com/hato-go/hato/internal/testpb"
)

func TestProtobufVectorsParse(t *testing.T) {
	for _, v := range protobufVectors(t) {
		t.Run(v.Case, func(t *testing.T) {
			want := wantMessage(t, v.Expect.Service, v.Expect.Metadata)
			body := []byte(v.Payload)
			wantPerson := &testpb.Person{Id: v.Expect.Data.ID, Name: v.Expect.Data.Name}
			raw := b64(t, v.RawDataBase64)

			check := func(t *testing.T, msg Message, err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
				sameMessage(t, msg, want)
				if msg.Metadata.MessageUUID != v.MessageUUID || msg.Metadata.Timestamp != mustFloat(t, v.Timestamp) {
					t.Errorf("message_uuid/timestamp: got %q %v", msg.Metadata.MessageUUID, msg.Metadata.Timestamp)
				}
			}

			t.Run("typed message", func(t *testing.T) {
				got := &testpb.Person{}
				msg, err := Protobuf.Parse(body, got, Options{})
				check(t, msg, err)
				if !proto.Equal(got, wantPerson) {
					t.Errorf("data: got %v, want %v", got, wantPerson)
				}
			})
			t.Run("typed pointer", func(t *testing.T) {
				var got *testpb.Person
				msg, err := Protobuf.Parse(body, &got, Options{})
				check(t, msg, err)
				if got == nil || !proto.Equal(got, wantPerson) {
					t.Errorf("data: got %v, want %v", got, wantPerson)
				}
			})
			t.Run("proto.Message interface", func(t *testing.T) {
				var got proto.Message = &testpb.Person{}
				msg, err := Protobuf.Parse(body, &got, Options{})
				check(t, msg, err)
				if !proto.Equal(got, wantPerson) {
					t.Errorf("data: got %v, want %v", got, wantPerson)
				}
			})
			t.Run("untyped", func(t *testing.T) {
				var got any
				msg, err := Protobuf.Parse(body, &got, Options{})
				check(t, msg, err)
				if b, ok := got.([]byte); !ok || !bytes.Equal(b, raw) {
					t.Errorf("data: got %T %.40x, want tomodachi's raw data %.40x", got, got, raw)
				}
			})
			t.Run("bytes", func(t *testing.T) {
				var got []byte
				msg, err := Protobuf.Parse(body, &got, Options{})
				check(t, msg, err)
				serialized := raw
				if v.Expect.Metadata.DataEncoding == EncodingGzipProto {
					var err error
					if serialized, err = inflate(raw, -1); err != nil {
						t.Fatal(err)
					}
				}
				if !bytes.Equal(got, serialized) {
					t.Errorf("data: got %.40x, want %.40x", got, serialized)
				}
				var p testpb.Person
				if err := proto.Unmarshal(got, &p); err != nil || !proto.Equal(&p, wantPerson) {
					t.Errorf("bytes do not unmarshal to the person: %v %v", &p, err)
				}
			})
		})
	}
}

func TestProtobufVectorsBuild(t *testing.T) {
	for _, v := range protobufVectors(t) {
		t.Run(v.Case, func(t *testing.T) {
			in := buildInput(t, v.Expect.Service, v.Expect.Metadata)
			person := &testpb.Person{Id: v.Expect.Data.ID, Name: v.Expect.Data.Name}
			body, err := Protobuf.Build(in, person, Options{})
			if err != nil {
				t.Fatal(err)
			}
			compressed := v.Expect.Metadata.DataEncoding == EncodingGzipProto
			if !compressed && string(body) != v.Payload {
				t.Fatalf("body is not byte-identical to tomodachi's:\n got %s\nwant %s", body, v.Payload)
			}
			// What tomodachi's parser reads: the same SNSSQSMessage once data
			// is decompressed (zlib implementations differ in their bytes).
			got, want := decodeSNSSQS(t, body), decodeSNSSQS(t, []byte(v.Payload))
			if !proto.Equal(got, want) {
				t.Errorf("envelope differs:\n got %v\nwant %v", got.Metadata, want.Metadata)
			}

			var back *testpb.Person
			msg, err := Protobuf.Parse(body, &back, Options{})
			if err != nil {
				t.Fatal(err)
			}
			sameMessage(t, msg, wantMessage(t, v.Expect.Service, v.Expect.Metadata))
			if !proto.Equal(back, person) {
				t.Errorf("data back: got %v, want %v", back, person)
			}

			// An already serialized payload builds the same body.
			serialized, _ := proto.MarshalOptions{Deterministic: true}.Marshal(person)
			body2, err := Protobuf.Build(in, serialized, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(body2, body) {
				t.Errorf("from []byte: body differs")
			}
		})
	}
}

// decodeSNSSQS decodes a ProtobufBase body with data decompressed.
func decodeSNSSQS(t *testing.T, body []byte) *pb.SNSSQSMessage {
	t.Helper()
	var m pb.SNSSQSMessage
	if err := proto.Unmarshal(b64(t, string(body)), &m); err != nil {
		t.Fatal(err)
	}
	if m.GetMetadata().GetDataEncoding() == EncodingGzipProto {
		d, err := inflate(m.Data, -1)
		if err != nil {
			t.Fatal(err)
		}
		m.Data = d
	}
	return &m
}
