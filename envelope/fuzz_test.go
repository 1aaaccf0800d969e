package envelope

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/hato-go/hato/internal/testpb"
)

// Fuzz properties, for every parser: no panic; every error is a *ParseError
// matching exactly one sentinel; a success re-builds and re-parses to equal
// values. Decompression is capped low so bombs stay cheap.
var fuzzOpts = Options{MaxDecompressedSize: 1 << 20}

const maxSeed = 128 << 10

func addSeeds(f *testing.F, bodies ...[]byte) {
	for _, b := range bodies {
		if len(b) <= maxSeed {
			f.Add(b)
		}
	}
}

func seedJSON(f *testing.F) {
	for _, v := range jsonVectors(f) {
		addSeeds(f, []byte(v.Payload))
	}
	for _, c := range jsonBadCases() {
		addSeeds(f, c.body)
	}
}

func seedProtobuf(f *testing.F) {
	for _, v := range protobufVectors(f) {
		addSeeds(f, []byte(v.Payload))
	}
	for _, c := range protobufBadCases(f) {
		addSeeds(f, c.body)
	}
}

// checkErr fails unless err is a *ParseError matching exactly one sentinel.
func checkErr(t *testing.T, err error) {
	t.Helper()
	var pe *ParseError
	if sentinelOf(err) == nil || !errors.As(err, &pe) {
		t.Fatalf("error %q (%T) does not match exactly one sentinel", err, err)
	}
}

// rebuildInput is the Build that reproduces msg, as far as Build can.
func rebuildInput(msg Message) (Build, bool) {
	ts := msg.Metadata.Timestamp
	b := Build{Service: msg.Service, Topic: msg.Metadata.Topic, MessageUUID: msg.Metadata.MessageUUID}
	sane := finite(ts) && math.Abs(ts) < 1e12
	if sane {
		b.Time = Metadata{Timestamp: ts}.Time()
	}
	return b, sane && b.timestamp() == ts && !b.Time.IsZero()
}

func sameRebuilt(t *testing.T, got, orig Message, tsKept bool) {
	t.Helper()
	valid := func(s string) string { return string(bytes.ToValidUTF8([]byte(s), []byte("\uFFFD"))) }
	if got.Service.Name != valid(orig.Service.Name) || got.Service.UUID != valid(orig.Service.UUID) ||
		got.Metadata.Topic != valid(orig.Metadata.Topic) ||
		orig.Metadata.MessageUUID != "" && got.Metadata.MessageUUID != valid(orig.Metadata.MessageUUID) ||
		tsKept && got.Metadata.Timestamp != orig.Metadata.Timestamp {
		t.Fatalf("rebuilt message differs:\n got %+v\nwant %+v", got, orig)
	}
}

// pyEqual compares untyped JSON values, numbers by the value Python reads.
func pyEqual(a, b any) bool {
	switch a := a.(type) {
	case json.Number:
		bn, ok := b.(json.Number)
		if !ok {
			return false
		}
		pa, errA := pyNumber(a)
		pb, errB := pyNumber(bn)
		return errA == nil && errB == nil && pa == pb
	case map[string]any:
		bm, ok := b.(map[string]any)
		if !ok || len(a) != len(bm) {
			return false
		}
		for k, v := range a {
			if w, ok := bm[k]; !ok || !pyEqual(v, w) {
				return false
			}
		}
		return true
	case []any:
		ba, ok := b.([]any)
		if !ok || len(a) != len(ba) {
			return false
		}
		for i := range a {
			if !pyEqual(a[i], ba[i]) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a, b)
}

func pyNumber(n json.Number) (string, error) {
	s := scanner{b: []byte(n)}
	isFloat, err := s.skipNumber()
	if err != nil {
		return "", err
	}
	out, err := appendPyNumber(nil, []byte(n), isFloat)
	return string(out), err
}

type fuzzTyped struct {
	A int               `json:"a"`
	B []string          `json:"b"`
	C map[string]string `json:"c"`
}

func FuzzJSONParse(f *testing.F) {
	seedJSON(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		var v any
		msg, err := JSON.Parse(body, &v, fuzzOpts)
		var typed fuzzTyped
		_, errTyped := JSON.Parse(body, &typed, fuzzOpts)
		if err != nil {
			checkErr(t, err)
			if errTyped == nil || sentinelOf(errTyped) != sentinelOf(err) { //nolint:errorlint // sentinels compared as values
				t.Fatalf("untyped failed with %v, typed with %v", err, errTyped)
			}
			return
		}
		if errTyped != nil {
			checkErr(t, errTyped)
			if !errors.Is(errTyped, ErrPayloadType) {
				t.Fatalf("untyped succeeded, typed failed with %v", errTyped)
			}
		}
		if !json.Valid(body) || !utf8.Valid(body) {
			t.Fatalf("accepted a body encoding/json rejects")
		}
		var raw json.RawMessage
		if _, err := JSON.Parse(body, &raw, fuzzOpts); err != nil {
			t.Fatalf("untyped succeeded, RawMessage failed: %v", err)
		}
		var viaStd any
		d := json.NewDecoder(bytes.NewReader(raw))
		d.UseNumber()
		if err := d.Decode(&viaStd); err != nil || !reflect.DeepEqual(viaStd, v) {
			t.Fatalf("untyped form differs from encoding/json's: %#v vs %#v (%v)", v, viaStd, err)
		}

		in, tsKept := rebuildInput(msg)
		rebuilt, err := JSON.Build(in, v, Options{})
		if err != nil {
			// Only a float Python would read as infinite cannot be rebuilt.
			if !errors.Is(err, ErrPayloadType) || !errors.Is(err, errNumberRange) {
				t.Fatalf("rebuild: %v", err)
			}
			return
		}
		var v2 any
		msg2, err := JSON.Parse(rebuilt, &v2, Options{})
		if err != nil {
			t.Fatalf("re-parse: %v\n%s", err, rebuilt)
		}
		sameRebuilt(t, msg2, msg, tsKept)
		if !pyEqual(v, v2) {
			t.Fatalf("data differs after rebuild:\n got %#v\nwant %#v", v2, v)
		}
	})
}

func FuzzProtobufParseTyped(f *testing.F) {
	seedProtobuf(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		var p *testpb.Person
		msg, err := Protobuf.Parse(body, &p, fuzzOpts)
		if err != nil {
			checkErr(t, err)
			if p != nil {
				t.Fatalf("dst set on error %v", err)
			}
			return
		}
		in, tsKept := rebuildInput(msg)
		rebuilt, err := Protobuf.Build(in, p, Options{})
		if err != nil {
			t.Fatalf("rebuild: %v", err)
		}
		var p2 *testpb.Person
		msg2, err := Protobuf.Parse(rebuilt, &p2, Options{})
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		sameRebuilt(t, msg2, msg, tsKept)
		if !proto.Equal(p, p2) {
			t.Fatalf("data differs after rebuild: %v vs %v", p2, p)
		}
	})
}

func FuzzProtobufParseUntyped(f *testing.F) {
	seedProtobuf(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		var a any
		msg, err := Protobuf.Parse(body, &a, fuzzOpts)
		if err != nil {
			checkErr(t, err)
			return
		}
		if _, ok := a.([]byte); !ok {
			t.Fatalf("untyped data is %T", a)
		}
		var b []byte
		if _, err := Protobuf.Parse(body, &b, fuzzOpts); err != nil {
			checkErr(t, err)
			if errors.Is(err, ErrPayloadType) || errors.Is(err, ErrUnknownEncoding) {
				t.Fatalf("*any succeeded, *[]byte failed with %v", err)
			}
			return // corrupt or too large compressed data: *any does not decompress
		}
		in, tsKept := rebuildInput(msg)
		rebuilt, err := Protobuf.Build(in, b, Options{})
		if err != nil {
			t.Fatalf("rebuild: %v", err)
		}
		var b2 []byte
		msg2, err := Protobuf.Parse(rebuilt, &b2, Options{MaxDecompressedSize: -1})
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		sameRebuilt(t, msg2, msg, tsKept)
		if !bytes.Equal(b, b2) {
			t.Fatalf("data differs after rebuild")
		}
	})
}

func FuzzRawParse(f *testing.F) {
	seedJSON(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		var b []byte
		var s string
		var a any
		for _, dst := range []any{&b, &s, &a} {
			if _, err := Raw.Parse(body, dst, Options{}); err != nil {
				t.Fatalf("raw parse: %v", err)
			}
		}
		if !bytes.Equal(b, body) || s != string(body) || !bytes.Equal(a.([]byte), body) {
			t.Fatal("raw data differs from the body")
		}
		if rebuilt, err := Raw.Build(Build{}, b, Options{}); err != nil || !bytes.Equal(rebuilt, body) {
			t.Fatalf("rebuild: %v", err)
		}
		if len(body) > 0 {
			_, err := Raw.Parse(body, &b, Options{MaxBodySize: int64(len(body) - 1)})
			if len(body) > 1 && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("limit not applied: %v", err)
			}
		}
	})
}

// FuzzPythonJSON checks the Python-style formatter against encoding/json:
// it accepts exactly the valid JSON (but for floats Python would read as
// infinite), writes ASCII JSON of the same value, and is idempotent.
func FuzzPythonJSON(f *testing.F) {
	for _, v := range jsonVectors(f) {
		addSeeds(f, v.Expect.Data, []byte(v.Payload))
	}
	for _, s := range []string{`{"a":1,"b":[1,2.5,"x"],"c":{}}`, `1E2`, `-0`, `"\ud83d\udc07\ud800\/"`, "\"\xff\u2028<>&\x7f\"", `[1e-7, 1e16, 1e400, 5e-324]`, `{"k":1,"k":2}`, `0.000123`, `-12.50e+3`, `1234567.89012345e-7`, "  [ ]  ", `[`, `"\u12"`, `01`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, text []byte) {
		out, err := appendPython(nil, text)
		valid := json.Valid(text)
		if err != nil {
			if valid && !errors.Is(err, errNumberRange) {
				t.Fatalf("rejected valid JSON: %v", err)
			}
		} else {
			if !valid {
				t.Fatalf("accepted invalid JSON: %s", out)
			}
			for _, c := range out {
				if c >= utf8.RuneSelf {
					t.Fatalf("non-ASCII output %q", out)
				}
			}
			again, err := appendPython(nil, out)
			if err != nil || !bytes.Equal(again, out) {
				t.Fatalf("not idempotent: %s → %s (%v)", out, again, err)
			}
			var a, b any
			da, db := json.NewDecoder(bytes.NewReader(text)), json.NewDecoder(bytes.NewReader(out))
			da.UseNumber()
			db.UseNumber()
			if da.Decode(&a) != nil || db.Decode(&b) != nil || !pyEqual(a, b) {
				t.Fatalf("value changed:\n in %s\nout %s", text, out)
			}
		}

		// A float token: the fast path agrees with ParseFloat + repr.
		if sc := (scanner{b: text}); len(text) > 0 && (text[0] == '-' || isDigit(text[0])) {
			if isFloat, err := sc.skipNumber(); err == nil && isFloat && sc.i == len(text) {
				if fast, ok := appendPyFloatToken(nil, text); ok {
					if slow, ok := slowPyFloat(text); !ok || string(fast) != slow {
						t.Fatalf("float %s: fast path %s, slow path %s", text, fast, slow)
					}
				}
			}
		}

		// A Go string is written as encoding/json would, re-formatted.
		s := string(text)
		m, _ := json.Marshal(s)
		want, err := appendPython(nil, m)
		if got := appendPyString(nil, s); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("appendPyString(%q) = %s, want %s (%v)", s, got, want, err)
		}
	})
}
