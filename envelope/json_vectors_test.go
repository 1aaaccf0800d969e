package envelope

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

type vectorOrder struct {
	OrderID int64    `json:"order_id"`
	Items   []string `json:"items"`
	Total   float64  `json:"total"`
	Paid    bool     `json:"paid"`
	Note    *string  `json:"note"`
}

type vectorBlob struct {
	Blob string `json:"blob"`
}

// typedJSON maps a vector's data kind to the Go type a typed route would use.
var typedJSON = map[string]reflect.Type{
	"dict":       reflect.TypeFor[vectorOrder](),
	"string":     reflect.TypeFor[string](),
	"unicode":    reflect.TypeFor[map[string]string](),
	"list":       reflect.TypeFor[[]any](),
	"int":        reflect.TypeFor[int64](),
	"float":      reflect.TypeFor[float64](),
	"bool":       reflect.TypeFor[bool](),
	"null":       reflect.TypeFor[*string](),
	"empty_dict": reflect.TypeFor[map[string]any](),
	"nested":     reflect.TypeFor[map[string]map[string]map[string]map[string][]map[string]string](),
	"large":      reflect.TypeFor[vectorBlob](),
	"just_below": reflect.TypeFor[vectorBlob](),
}

func TestJSONVectorsParse(t *testing.T) {
	for _, v := range jsonVectors(t) {
		t.Run(v.Case, func(t *testing.T) {
			want := wantMessage(t, v.Expect.Service, v.Expect.Metadata)
			body := []byte(v.Payload)

			t.Run("untyped", func(t *testing.T) {
				var got any
				msg, err := JSON.Parse(body, &got, Options{})
				if err != nil {
					t.Fatal(err)
				}
				sameMessage(t, msg, want)
				if msg.Metadata.MessageUUID != v.MessageUUID || msg.Metadata.Timestamp != mustFloat(t, v.Timestamp) {
					t.Errorf("message_uuid/timestamp: got %q %v", msg.Metadata.MessageUUID, msg.Metadata.Timestamp)
				}
				if cpv := msg.Metadata.CompatibleProtocolVersions; len(cpv) != 1 || cpv[0] != "json_base-wip" {
					t.Errorf("compatible_protocol_versions: %q", cpv)
				}
				if exp := decodeNumber(t, v.Expect.Data); !reflect.DeepEqual(got, exp) {
					t.Errorf("data:\n got %.200v\nwant %.200v", got, exp)
				}
				if kind(v.Case) == "int" && got != json.Number("12345678901234") {
					t.Errorf("int data not exact: %#v", got)
				}
			})

			t.Run("typed", func(t *testing.T) {
				typ := typedJSON[kind(v.Case)]
				if typ == nil {
					t.Fatalf("no typed destination for kind %q", kind(v.Case))
				}
				got, exp := reflect.New(typ), reflect.New(typ)
				msg, err := JSON.Parse(body, got.Interface(), Options{})
				if err != nil {
					t.Fatal(err)
				}
				sameMessage(t, msg, want)
				if err := json.Unmarshal(v.Expect.Data, exp.Interface()); err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got.Interface(), exp.Interface()) {
					t.Errorf("data:\n got %.200v\nwant %.200v", got.Elem(), exp.Elem())
				}
				if kind(v.Case) == "int" && got.Elem().Int() != 12345678901234 {
					t.Errorf("int data not exact: %v", got.Elem())
				}
			})

			t.Run("raw message", func(t *testing.T) {
				var got json.RawMessage
				if _, err := JSON.Parse(body, &got, Options{}); err != nil {
					t.Fatal(err)
				}
				// The payload's data text is Python's, as is the vector's.
				if !bytes.Equal(got, v.Expect.Data) {
					t.Errorf("data text:\n got %.200s\nwant %.200s", got, v.Expect.Data)
				}
			})
		})
	}
}

func TestJSONVectorsBuild(t *testing.T) {
	for _, v := range jsonVectors(t) {
		t.Run(v.Case, func(t *testing.T) {
			in := buildInput(t, v.Expect.Service, v.Expect.Metadata)
			body, err := JSON.Build(in, v.Expect.Data, Options{})
			if err != nil {
				t.Fatal(err)
			}
			compressed := v.Expect.Metadata.DataEncoding == EncodingBase64GzipJSON
			if !compressed && !bytes.Equal(body, []byte(v.Payload)) {
				t.Fatalf("body is not byte-identical to tomodachi's:\n got %.400s\nwant %.400s", body, v.Payload)
			}
			// What tomodachi's parser reads: same keys, types and values once
			// the data is decoded.
			if got, want := tomodachiView(t, body), tomodachiView(t, []byte(v.Payload)); !reflect.DeepEqual(got, want) {
				t.Errorf("tomodachi's view differs:\n got %.300v\nwant %.300v", got, want)
			}

			// Parse back to the same values.
			var back any
			msg, err := JSON.Parse(body, &back, Options{})
			if err != nil {
				t.Fatal(err)
			}
			sameMessage(t, msg, wantMessage(t, v.Expect.Service, v.Expect.Metadata))
			if exp := decodeNumber(t, v.Expect.Data); !reflect.DeepEqual(back, exp) {
				t.Errorf("data back:\n got %.200v\nwant %.200v", back, exp)
			}

			// Building from the untyped value (not a RawMessage) gives the
			// same body: Go's map key order is sorted, so only where the
			// vector's keys are sorted too.
			if kind(v.Case) != "dict" && kind(v.Case) != "unicode" {
				body2, err := JSON.Build(in, back, Options{})
				if err != nil {
					t.Fatal(err)
				}
				if !compressed && !bytes.Equal(body2, body) {
					t.Errorf("from untyped value:\n got %.300s\nwant %.300s", body2, body)
				}
			}
		})
	}
}

// tomodachiView decodes a JsonBase body as tomodachi's parse_message sees it:
// the whole message with data decoded (decompressed when needed).
func tomodachiView(t *testing.T, body []byte) map[string]any {
	t.Helper()
	m, ok := decodeNumber(t, body).(map[string]any)
	if !ok {
		t.Fatalf("body is not an object: %.100s", body)
	}
	md := m["metadata"].(map[string]any)
	if md["data_encoding"] == EncodingBase64GzipJSON {
		z := b64(t, m["data"].(string))
		text, err := inflate(z, -1)
		if err != nil {
			t.Fatal(err)
		}
		m["data"] = decodeNumber(t, text)
	}
	return m
}
