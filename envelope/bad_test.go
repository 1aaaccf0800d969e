package envelope

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/hato-go/hato/internal/testpb"
)

var errRejected = errors.New("test: rejected")

func rejectAll(any) error { return errRejected }

// badCase is one bad input: Parse(body, dst(), opts) must fail with want.
type badCase struct {
	name string
	body []byte
	dst  func() any
	opts Options
	want error
}

func anyDst() any   { return new(any) }
func bytesDst() any { return new([]byte) }

func runBad(t *testing.T, env Envelope, cases []badCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dst := anyDst
			if c.dst != nil {
				dst = c.dst
			}
			_, err := env.Parse(c.body, dst(), c.opts)
			wantKind(t, err, c.want, false)
		})
	}
}

func bigJSONBody(n int) []byte {
	return jsonBody("raw", `"`+strings.Repeat("x", n)+`"`)
}

func TestJSONParseBadInput(t *testing.T) { runBad(t, JSON, jsonBadCases()) }

// jsonBadCases are bad inputs for the JSON envelope (also fuzz seeds).
func jsonBadCases() []badCase {
	b64z := func(s string) string { return `"` + base64.StdEncoding.EncodeToString(zlibOf([]byte(s))) + `"` }
	return []badCase{
		{name: "empty body", body: nil, want: ErrMalformed},
		{name: "only white space", body: []byte("  \n"), want: ErrMalformed},
		{name: "not JSON", body: []byte("hello"), want: ErrMalformed},
		{name: "truncated", body: jsonBody("raw", `{"a": 1}`)[:40], want: ErrMalformed},
		{name: "trailing data", body: append(jsonBody("raw", "1"), " x"...), want: ErrMalformed},
		{name: "two objects", body: append(jsonBody("raw", "1"), jsonBody("raw", "1")...), want: ErrMalformed},
		{name: "top-level array", body: []byte(`[{"metadata": {}}]`), want: ErrMalformed},
		{name: "top-level string", body: []byte(`"raw"`), want: ErrMalformed},
		{name: "metadata not an object", body: []byte(`{"metadata": 1, "data": 1}`), want: ErrMalformed},
		{name: "metadata null", body: []byte(`{"metadata": null, "data": 1}`), want: ErrMalformed},
		{name: "service not an object", body: []byte(`{"service": [], "metadata": {"data_encoding": "raw"}}`), want: ErrMalformed},
		{name: "service name a number", body: []byte(`{"service": {"name": 1}, "metadata": {"data_encoding": "raw"}}`), want: ErrMalformed},
		{name: "topic an object", body: []byte(`{"metadata": {"topic": {}, "data_encoding": "raw"}}`), want: ErrMalformed},
		{name: "timestamp a string", body: []byte(`{"metadata": {"timestamp": "1", "data_encoding": "raw"}}`), want: ErrMalformed},
		{name: "data_encoding a number", body: []byte(`{"metadata": {"data_encoding": 1}}`), want: ErrMalformed},
		{name: "invalid UTF-8", body: jsonBody("raw", "\"\xff\xfe\""), want: ErrMalformed},
		{name: "invalid UTF-8 in a key", body: []byte("{\"\xc3\": 1, \"metadata\": {\"data_encoding\": \"raw\"}}"), want: ErrMalformed},
		{name: "UTF-8 BOM", body: append([]byte("\xef\xbb\xbf"), jsonBody("raw", "1")...), want: ErrMalformed},
		{name: "NaN data", body: jsonBody("raw", "NaN"), want: ErrMalformed},
		{name: "single quotes", body: []byte(`{'metadata': {}}`), want: ErrMalformed},
		{name: "control character in string", body: jsonBody("raw", "\"a\tb\""), want: ErrMalformed},
		{name: "nesting too deep", body: jsonBody("raw", deep(maxJSONDepth+10)), want: ErrMalformed},
		{name: "unknown data_encoding", body: jsonBody("base64_gzip_xml", "1"), want: ErrUnknownEncoding},
		{name: "empty data_encoding", body: jsonBody("", "1"), want: ErrUnknownEncoding},
		{name: "missing data_encoding", body: []byte(`{"metadata": {"topic": "t"}, "data": 1}`), want: ErrUnknownEncoding},
		{name: "null data_encoding", body: []byte(`{"metadata": {"data_encoding": null}, "data": 1}`), want: ErrUnknownEncoding},
		{name: "missing metadata", body: []byte(`{"data": 1}`), want: ErrUnknownEncoding},
		{name: "protobuf encoding in JSON", body: jsonBody("proto", `"CgIxMg=="`), want: ErrUnknownEncoding},
		{name: "gzip data not a string", body: jsonBody("base64_gzip_json", "[1]"), want: ErrMalformed},
		{name: "gzip data missing", body: []byte(`{"metadata": {"data_encoding": "base64_gzip_json"}}`), want: ErrMalformed},
		{name: "gzip data not base64", body: jsonBody("base64_gzip_json", `"!!notbase64!!"`), want: ErrMalformed},
		{name: "gzip data not zlib", body: jsonBody("base64_gzip_json", `"aGVsbG8="`), want: ErrMalformed},
		{name: "gzip data truncated", body: jsonBody("base64_gzip_json", `"`+base64.StdEncoding.EncodeToString(zlibOf([]byte(`[1,2,3]`))[:6])+`"`), want: ErrMalformed},
		{name: "gzip data not JSON", body: jsonBody("base64_gzip_json", b64z("{nope")), want: ErrMalformed},
		{name: "gzip data not UTF-8", body: jsonBody("base64_gzip_json", b64z("\"\xff\"")), want: ErrMalformed},
		{name: "gzip data two values", body: jsonBody("base64_gzip_json", b64z("1 2")), want: ErrMalformed},
		{name: "zlib bomb", body: jsonBody("base64_gzip_json", `"`+base64.StdEncoding.EncodeToString(zlibBomb())+`"`), want: ErrTooLarge},
		{name: "decompressed over a lower limit", body: jsonBody("base64_gzip_json", b64z(`"`+strings.Repeat("a", 5000)+`"`)), opts: Options{MaxDecompressedSize: 1000}, want: ErrTooLarge},
		{name: "16 MiB body over a lower limit", body: bigJSONBody(16 << 20), opts: Options{MaxBodySize: 1 << 20}, want: ErrTooLarge},
		{name: "body one byte over", body: jsonBody("raw", "1"), opts: Options{MaxBodySize: int64(len(jsonBody("raw", "1")) - 1)}, want: ErrTooLarge},
		{name: "string into int", body: jsonBody("raw", `"hello"`), dst: func() any { return new(int) }, want: ErrPayloadType},
		{name: "object into slice", body: jsonBody("raw", `{"a": 1}`), dst: func() any { return new([]string) }, want: ErrPayloadType},
		{name: "float into int", body: jsonBody("raw", `1.5`), dst: func() any { return new(int64) }, want: ErrPayloadType},
		{name: "int overflow", body: jsonBody("raw", `300`), dst: func() any { return new(int8) }, want: ErrPayloadType},
		{name: "nil destination", body: jsonBody("raw", "1"), dst: func() any { return nil }, want: ErrPayloadType},
		{name: "non-pointer destination", body: jsonBody("raw", "1"), dst: func() any { return 0 }, want: ErrPayloadType},
		{name: "nil pointer destination", body: jsonBody("raw", "1"), dst: func() any { return (*int)(nil) }, want: ErrPayloadType},
		{name: "nil *any destination", body: jsonBody("raw", "1"), dst: func() any { return (*any)(nil) }, want: ErrPayloadType},
		{name: "nil *json.RawMessage destination", body: jsonBody("raw", "1"), dst: func() any { return (*json.RawMessage)(nil) }, want: ErrPayloadType},
		{name: "validator rejects untyped", body: jsonBody("raw", "1"), opts: Options{Validator: rejectAll}, want: ErrValidation},
		{name: "validator rejects typed", body: jsonBody("raw", "1"), dst: func() any { return new(int) }, opts: Options{Validator: rejectAll}, want: ErrValidation},
	}
}

func TestProtobufParseBadInput(t *testing.T) { runBad(t, Protobuf, protobufBadCases(t)) }

// protobufBadCases are bad inputs for the protobuf envelope (also fuzz seeds).
func protobufBadCases(t testing.TB) []badCase {
	person := func() any { return &testpb.Person{} }
	personPtr := func() any { return new(*testpb.Person) }
	valid := pbBody("proto", []byte("\x0a\x0212"))
	rawValid := b64(t, string(valid))
	b64of := func(b []byte) []byte { return []byte(base64.StdEncoding.EncodeToString(b)) }
	cases := []badCase{
		{name: "empty body", body: nil, want: ErrMalformed},
		{name: "not base64", body: []byte("!!!!"), want: ErrMalformed},
		{name: "unpadded base64", body: []byte(strings.TrimRight(string(pbBody("proto", []byte("x"))), "=") + "A"), want: ErrMalformed},
		{name: "base64 with junk", body: append([]byte("$"), valid...), want: ErrMalformed},
		{name: "truncated protobuf", body: b64of(rawValid[:len(rawValid)-3]), want: ErrMalformed},
		{name: "garbage protobuf", body: b64of([]byte{0xff, 0xff, 0xff, 0xff}), want: ErrMalformed},
		{name: "JSON body", body: jsonBody("raw", "1"), want: ErrMalformed},
		{name: "invalid UTF-8 in a string field", body: b64of([]byte("\x0a\x03\x0a\x01\xff")), want: ErrMalformed},
		{name: "unknown data_encoding", body: pbBody("zstd_proto", []byte("x")), want: ErrUnknownEncoding},
		{name: "unknown data_encoding typed", body: pbBody("json", []byte("x")), dst: person, want: ErrUnknownEncoding},
		{name: "missing data_encoding", body: b64of([]byte("\x1a\x01x")), dst: person, want: ErrUnknownEncoding},
		{name: "gzip_proto not zlib", body: pbBody("gzip_proto", []byte("hello")), dst: person, want: ErrMalformed},
		{name: "base64 data not base64", body: pbBody("base64", []byte("***")), dst: person, want: ErrMalformed},
		{name: "base64_gzip_proto not zlib", body: pbBody("base64_gzip_proto", b64of([]byte("hello"))), dst: bytesDst, want: ErrMalformed},
		{name: "zlib bomb", body: pbBody("gzip_proto", zlibBomb()), dst: person, want: ErrTooLarge},
		{name: "zlib bomb into bytes", body: pbBody("gzip_proto", zlibBomb()), dst: bytesDst, want: ErrTooLarge},
		{name: "deprecated zlib bomb", body: pbBody("base64_gzip_proto", b64of(zlibZeros(3))), opts: Options{MaxDecompressedSize: 1 << 20}, dst: personPtr, want: ErrTooLarge},
		{name: "16 MiB body over a lower limit", body: pbBody("proto", make([]byte, 16<<20)), opts: Options{MaxBodySize: 1 << 20}, want: ErrTooLarge},
		{name: "payload not a Person", body: pbBody("proto", []byte{0xff, 0xff, 0xff}), dst: person, want: ErrPayloadType},
		{name: "payload with invalid UTF-8 string", body: pbBody("proto", []byte("\x0a\x01\xff")), dst: personPtr, want: ErrPayloadType},
		{name: "raw data into a message", body: pbBody("raw", []byte("\x0a\x0212")), dst: person, want: ErrPayloadType},
		{name: "string destination", body: valid, dst: func() any { return new(string) }, want: ErrPayloadType},
		{name: "struct destination", body: valid, dst: func() any { return &struct{ ID string }{} }, want: ErrPayloadType},
		{name: "nil destination", body: valid, dst: func() any { return nil }, want: ErrPayloadType},
		{name: "nil *Person destination", body: valid, dst: func() any { return (*testpb.Person)(nil) }, want: ErrPayloadType},
		{name: "nil **Person destination", body: valid, dst: func() any { return (**testpb.Person)(nil) }, want: ErrPayloadType},
		{name: "nil *[]byte destination", body: valid, dst: func() any { return (*[]byte)(nil) }, want: ErrPayloadType},
		{name: "nil proto.Message in interface", body: valid, dst: func() any { return new(proto.Message) }, want: ErrPayloadType},
		{name: "validator rejects typed", body: valid, dst: person, opts: Options{Validator: rejectAll}, want: ErrValidation},
		{name: "validator rejects untyped", body: valid, opts: Options{Validator: rejectAll}, want: ErrValidation},
	}
	return cases
}

func TestRawParseBadInput(t *testing.T) {
	runBad(t, Raw, []badCase{
		{name: "int destination", body: []byte("x"), dst: func() any { return new(int) }, want: ErrPayloadType},
		{name: "nil destination", body: []byte("x"), dst: func() any { return nil }, want: ErrPayloadType},
		{name: "nil *[]byte", body: []byte("x"), dst: func() any { return (*[]byte)(nil) }, want: ErrPayloadType},
		{name: "over the limit", body: make([]byte, 2<<20), opts: Options{MaxBodySize: 1 << 20}, want: ErrTooLarge},
		{name: "validator", body: []byte("x"), opts: Options{Validator: rejectAll}, want: ErrValidation},
	})
}

func TestValidatorCauseIsReachable(t *testing.T) {
	for _, env := range []Envelope{JSON, Protobuf, Raw} {
		body, err := env.Build(Build{}, []byte{}, Options{})
		if env == JSON {
			body, err = env.Build(Build{}, 1, Options{})
		}
		if err != nil {
			t.Fatal(err)
		}
		_, err = env.Parse(body, new(any), Options{Validator: rejectAll})
		if !errors.Is(err, ErrValidation) || !errors.Is(err, errRejected) {
			t.Errorf("%s: %v does not wrap both ErrValidation and the validator's error", env.Name(), err)
		}
	}
}

func TestLargeBodies(t *testing.T) {
	// 16 MiB is over the default body limit: refused, typed, for each
	// envelope; with a raised limit it parses.
	raised := Options{MaxBodySize: 32 << 20, MaxDecompressedSize: 32 << 20}
	t.Run("json 16 MiB", func(t *testing.T) {
		var s string
		if _, err := JSON.Parse(bigJSONBody(16<<20), &s, Options{}); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("default limit: %v, want ErrTooLarge", err)
		}
		if _, err := JSON.Parse(bigJSONBody(16<<20), &s, raised); err != nil || len(s) != 16<<20 {
			t.Fatalf("raised limit: len %d, %v", len(s), err)
		}
	})
	t.Run("protobuf 16 MiB", func(t *testing.T) {
		var b []byte
		if _, err := Protobuf.Parse(pbBody("proto", make([]byte, 16<<20)), &b, Options{}); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("default limit: %v, want ErrTooLarge", err)
		}
		if _, err := Protobuf.Parse(pbBody("proto", make([]byte, 16<<20)), &b, raised); err != nil || len(b) != 16<<20 {
			t.Fatalf("raised limit: len %d, %v", len(b), err)
		}
	})
	t.Run("raw 16 MiB", func(t *testing.T) {
		var b []byte
		if _, err := Raw.Parse(make([]byte, 16<<20), &b, Options{}); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("default limit: %v, want ErrTooLarge", err)
		}
		if _, err := Raw.Parse(make([]byte, 16<<20), &b, raised); err != nil || len(b) != 16<<20 {
			t.Fatalf("raised limit: len %d, %v", len(b), err)
		}
	})
	t.Run("no limit", func(t *testing.T) {
		var b []byte
		if _, err := Raw.Parse(make([]byte, 9<<20), &b, Options{MaxBodySize: -1}); err != nil {
			t.Fatal(err)
		}
	})
}
