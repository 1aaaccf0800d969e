package envelope

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// vectorDir holds the vectors tomodachi produced (see its README.md).
const vectorDir = "testdata/tomodachi"

// vectorMeta is a vector's expect.metadata.
type vectorMeta struct {
	MessageUUID     string      `json:"message_uuid"`
	ProtocolVersion string      `json:"protocol_version"`
	Timestamp       json.Number `json:"timestamp"`
	Topic           string      `json:"topic"`
	DataEncoding    string      `json:"data_encoding"`
}

type vectorService struct {
	Name *string `json:"name"`
	UUID *string `json:"uuid"`
}

// jsonVector is one line of json_envelope.jsonl.
type jsonVector struct {
	Case    string `json:"case"`
	Payload string `json:"payload"`
	Expect  struct {
		Service  vectorService   `json:"service"`
		Metadata vectorMeta      `json:"metadata"`
		Data     json.RawMessage `json:"data"` // Python's json.dumps text, key order kept
	} `json:"expect"`
	MessageUUID string      `json:"message_uuid"`
	Timestamp   json.Number `json:"timestamp"`
}

// protobufVector is one line of protobuf_envelope.jsonl.
type protobufVector struct {
	Case    string `json:"case"`
	Payload string `json:"payload"`
	Expect  struct {
		Service  vectorService `json:"service"`
		Metadata vectorMeta    `json:"metadata"`
		Data     struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		} `json:"data"`
	} `json:"expect"`
	RawDataBase64 string      `json:"raw_data_base64"`
	MessageUUID   string      `json:"message_uuid"`
	Timestamp     json.Number `json:"timestamp"`
}

// kind is the data kind of a vector's case ("dict/vector-service" → "dict").
func kind(c string) string { k, _, _ := strings.Cut(c, "/"); return k }

func readVectors[T any](t testing.TB, name string) []T {
	t.Helper()
	f, err := os.Open(filepath.Join(vectorDir, name))
	if err != nil {
		t.Fatalf("open vectors (see %s/README.md): %v", vectorDir, err)
	}
	defer f.Close()
	var out []T
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var v T
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatalf("%s line %d: %v", name, len(out)+1, err)
		}
		out = append(out, v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatalf("%s: no vectors", name)
	}
	return out
}

func jsonVectors(t testing.TB) []jsonVector { return readVectors[jsonVector](t, "json_envelope.jsonl") }
func protobufVectors(t testing.TB) []protobufVector {
	return readVectors[protobufVector](t, "protobuf_envelope.jsonl")
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func mustFloat(t testing.TB, n json.Number) float64 {
	t.Helper()
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// wantMessage is the Message a vector's expect describes.
func wantMessage(t testing.TB, s vectorService, m vectorMeta) Message {
	return Message{
		Service: Service{Name: deref(s.Name), UUID: deref(s.UUID)},
		Metadata: Metadata{
			MessageUUID:     m.MessageUUID,
			ProtocolVersion: m.ProtocolVersion,
			Timestamp:       mustFloat(t, m.Timestamp),
			Topic:           m.Topic,
			DataEncoding:    m.DataEncoding,
		},
	}
}

// sameMessage compares everything but CompatibleProtocolVersions.
func sameMessage(t testing.TB, got, want Message) {
	t.Helper()
	got.Metadata.CompatibleProtocolVersions = nil
	want.Metadata.CompatibleProtocolVersions = nil
	if got.Service != want.Service || got.Metadata.MessageUUID != want.Metadata.MessageUUID ||
		got.Metadata.ProtocolVersion != want.Metadata.ProtocolVersion ||
		got.Metadata.Timestamp != want.Metadata.Timestamp || got.Metadata.Topic != want.Metadata.Topic ||
		got.Metadata.DataEncoding != want.Metadata.DataEncoding {
		t.Errorf("message:\n got %+v\nwant %+v", got, want)
	}
}

// buildInput is the Build a vector was made with.
func buildInput(t testing.TB, s vectorService, m vectorMeta) Build {
	return Build{
		Service:     Service{Name: deref(s.Name), UUID: deref(s.UUID)},
		Topic:       m.Topic,
		MessageUUID: m.MessageUUID,
		Time:        Metadata{Timestamp: mustFloat(t, m.Timestamp)}.Time(),
	}
}

// decodeNumber decodes JSON text to the untyped form with json.Number.
func decodeNumber(t testing.TB, text []byte) any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(text))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("decode %.80q: %v", text, err)
	}
	return v
}

func b64(t testing.TB, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVectorTimestampsRoundTripThroughTime(t *testing.T) {
	for _, v := range jsonVectors(t) {
		ts := mustFloat(t, v.Timestamp)
		if got := (Build{Time: Metadata{Timestamp: ts}.Time()}).timestamp(); got != ts {
			t.Errorf("%s: %v → Time → %v", v.Case, ts, got)
		}
	}
	if got := (Build{Time: time.Unix(-2, 5e8)}).timestamp(); got != -1.5 {
		t.Errorf("negative: got %v", got)
	}
}
