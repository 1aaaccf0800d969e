package envelope

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestJSONParseShapes(t *testing.T) {
	for _, c := range []struct {
		name     string
		body     string
		wantMsg  Message
		wantData any
	}{
		{
			name:     "null service fields and timestamp",
			body:     `{"service": {"name": null, "uuid": null}, "metadata": {"message_uuid": null, "timestamp": null, "topic": "t", "data_encoding": "raw"}, "data": 1}`,
			wantMsg:  Message{Metadata: Metadata{Topic: "t", DataEncoding: "raw"}},
			wantData: json.Number("1"),
		},
		{
			name:     "missing service and data",
			body:     `{"metadata": {"data_encoding": "raw"}}`,
			wantMsg:  Message{Metadata: Metadata{DataEncoding: "raw"}},
			wantData: nil,
		},
		{
			name:     "compact, reordered, extra keys",
			body:     `{"data":[1,{"a":null}],"x":{"y":[]},"metadata":{"data_encoding":"raw","extra":true,"topic":"a.b"},"service":{"uuid":"u","name":"n","z":0}}`,
			wantMsg:  Message{Service: Service{Name: "n", UUID: "u"}, Metadata: Metadata{Topic: "a.b", DataEncoding: "raw"}},
			wantData: []any{json.Number("1"), map[string]any{"a": nil}},
		},
		{
			name:     "pretty-printed",
			body:     "{\n  \"metadata\" : {\n    \"data_encoding\" : \"raw\",\n    \"timestamp\" : 1e3\n  },\n  \"data\" : \"x\"\n}\n",
			wantMsg:  Message{Metadata: Metadata{DataEncoding: "raw", Timestamp: 1000}},
			wantData: "x",
		},
		{
			name:     "escaped keys and values",
			body:     `{"servic\u0065": {"name": "\u00e5\ud83d\udc07"}, "metadata": {"data_encoding": "r\u0061w"}, "d\u0061ta": "\ud800"}`,
			wantMsg:  Message{Service: Service{Name: "å🐇"}, Metadata: Metadata{DataEncoding: "raw"}},
			wantData: "\ufffd",
		},
		{
			name:     "repeated keys: last wins, whole objects replaced",
			body:     `{"service": {"name": "a", "uuid": "u"}, "service": {"name": "b"}, "metadata": {"data_encoding": "nope"}, "metadata": {"data_encoding": "raw"}, "data": 1, "data": 2}`,
			wantMsg:  Message{Service: Service{Name: "b"}, Metadata: Metadata{DataEncoding: "raw"}},
			wantData: json.Number("2"),
		},
		{
			name:     "data_encoding then metadata replaced without it",
			body:     `{"metadata": {"data_encoding": "raw"}, "metadata": {"topic": "t"}, "data": 1}`,
			wantMsg:  Message{Metadata: Metadata{Topic: "t"}},
			wantData: "unknown encoding",
		},
		{
			name:     "case matters in keys",
			body:     `{"Metadata": {"data_encoding": "x"}, "metadata": {"data_encoding": "raw", "Topic": "T"}, "Data": 1, "data": 2}`,
			wantMsg:  Message{Metadata: Metadata{DataEncoding: "raw"}},
			wantData: json.Number("2"),
		},
		{
			name:     "compatible_protocol_versions of another shape is ignored",
			body:     `{"metadata": {"compatible_protocol_versions": [1, "x"], "data_encoding": "raw"}, "data": true}`,
			wantMsg:  Message{Metadata: Metadata{DataEncoding: "raw"}},
			wantData: true,
		},
		{
			name:     "big numbers stay exact",
			body:     `{"metadata": {"data_encoding": "raw"}, "data": [123456789012345678901234567890, 1.000000000000000000001, -0]}`,
			wantMsg:  Message{Metadata: Metadata{DataEncoding: "raw"}},
			wantData: []any{json.Number("123456789012345678901234567890"), json.Number("1.000000000000000000001"), json.Number("-0")},
		},
		{
			name:     "timestamp beyond float64",
			body:     `{"metadata": {"data_encoding": "raw", "timestamp": 1e400}}`,
			wantMsg:  Message{Metadata: Metadata{DataEncoding: "raw", Timestamp: math.Inf(1)}},
			wantData: nil,
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			var got any
			msg, err := JSON.Parse([]byte(c.body), &got, Options{})
			if c.wantData == "unknown encoding" {
				wantKind(t, err, ErrUnknownEncoding, false)
			} else if err != nil {
				t.Fatal(err)
			} else if !reflect.DeepEqual(got, c.wantData) {
				t.Errorf("data: got %#v, want %#v", got, c.wantData)
			}
			if !reflect.DeepEqual(msg, c.wantMsg) {
				t.Errorf("message:\n got %+v\nwant %+v", msg, c.wantMsg)
			}
		})
	}
}

func TestJSONParseMatchesEncodingJSON(t *testing.T) {
	// The untyped form is exactly what encoding/json gives with UseNumber.
	for _, data := range []string{
		`{"a": [1, 2.5e-3, "x", {"b": null}], "c": {}, "d": [], "e": "\u00e5\ud83d\udc07\ud800\/\n"}`,
		`"\ud83d\u0041"`, `[[[[1]]]]`, `-12.5E+7`, `{"k": 1, "k": 2}`,
	} {
		var got any
		if _, err := JSON.Parse(jsonBody("raw", data), &got, Options{}); err != nil {
			t.Fatal(err)
		}
		if want := decodeNumber(t, []byte(data)); !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %#v\nwant %#v", data, got, want)
		}
	}
}

func TestJSONParseRawMessageDoesNotAliasBody(t *testing.T) {
	body := jsonBody("raw", `{"a": 1}`)
	var got json.RawMessage
	if _, err := JSON.Parse(body, &got, Options{}); err != nil {
		t.Fatal(err)
	}
	for i := range body {
		body[i] = 'x'
	}
	if string(got) != `{"a": 1}` {
		t.Errorf("got %s", got)
	}
}

func TestJSONValidatorGetsThePayload(t *testing.T) {
	body := jsonBody("raw", `{"n": 7}`)
	t.Run("untyped gets the value", func(t *testing.T) {
		var seen any
		var got any
		if _, err := JSON.Parse(body, &got, Options{Validator: func(p any) error { seen = p; return nil }}); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(seen, map[string]any{"n": json.Number("7")}) {
			t.Errorf("validator saw %#v", seen)
		}
	})
	t.Run("typed gets the pointer", func(t *testing.T) {
		type T struct{ N int }
		var seen any
		got := &T{}
		if _, err := JSON.Parse(body, got, Options{Validator: func(p any) error { seen = p; return nil }}); err != nil {
			t.Fatal(err)
		}
		if seen != any(got) || got.N != 7 {
			t.Errorf("validator saw %#v, dst %+v", seen, got)
		}
	})
}

var uuid4RE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestJSONBuildDefaults(t *testing.T) {
	before := time.Now()
	body, err := JSON.Build(Build{Service: Service{Name: "svc", UUID: "5d0b530f-5c44-4981-b01f-342801bd48f5"}, Topic: "t"}, map[string]int{"a": 1}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var got any
	msg, err := JSON.Parse(body, &got, Options{})
	if err != nil {
		t.Fatal(err)
	}
	uuid, rnd, _ := strings.Cut(msg.Metadata.MessageUUID, ".")
	if uuid != "5d0b530f-5c44-4981-b01f-342801bd48f5" || !uuid4RE.MatchString(rnd) || len(msg.Metadata.MessageUUID) != 73 {
		t.Errorf("message_uuid %q", msg.Metadata.MessageUUID)
	}
	if ts := msg.Metadata.Time(); ts.Before(before.Add(-time.Millisecond)) || ts.After(time.Now().Add(time.Millisecond)) {
		t.Errorf("timestamp %v not now", ts)
	}
	if msg.Metadata.ProtocolVersion != JSONProtocolVersion || msg.Metadata.DataEncoding != EncodingRaw {
		t.Errorf("metadata %+v", msg.Metadata)
	}

	// No service: nulls, and "None" in the message uuid as tomodachi writes it.
	body, err = JSON.Build(Build{Topic: "t", Time: time.Unix(1, 0)}, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(body, []byte(`{"service": {"name": null, "uuid": null}, "metadata": {"message_uuid": "None.`)) ||
		!bytes.Contains(body, []byte(`"timestamp": 1.0, "topic": "t", "data_encoding": "raw"}, "data": null}`)) {
		t.Errorf("body %s", body)
	}
}

func TestJSONBuildPythonFormatting(t *testing.T) {
	type inner struct {
		HTML  string  `json:"html"`
		F     float64 `json:"f"`
		Small float64 `json:"small"`
		Big   float64 `json:"big"`
	}
	b := Build{Service: Service{Name: "åäö", UUID: "u"}, Topic: "a\"b", MessageUUID: "u.1", Time: time.Unix(1795629630, 877235700)}
	body, err := JSON.Build(b, []any{inner{"<a href='x'>&</a>", 0.1, 1e-7, 1e21}, json.Number("1E2"), json.RawMessage(`{"k" : [ 1 , 2 ] }`), "\u2028🐇\x7f"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"service": {"name": "\u00e5\u00e4\u00f6", "uuid": "u"}, "metadata": {"message_uuid": "u.1", "protocol_version": "tomodachi-json-base--1.0.0", "compatible_protocol_versions": ["json_base-wip"], "timestamp": 1795629630.8772357, "topic": "a\"b", "data_encoding": "raw"}, ` +
		`"data": [{"html": "<a href='x'>&</a>", "f": 0.1, "small": 1e-07, "big": 1e+21}, 100.0, {"k": [1, 2]}, "\u2028\ud83d\udc07\u007f"]}`
	if string(body) != want {
		t.Errorf("\n got %s\nwant %s", body, want)
	}
}

func TestJSONBuildCompressionThreshold(t *testing.T) {
	// The threshold is on Python's ensure_ascii text: "å" counts as 6
	// characters (\u00e5), quotes count too.
	for _, c := range []struct {
		name string
		data string
		want string
	}{
		{"59999 characters", strings.Repeat("a", 59997), EncodingRaw},
		{"60000 characters", strings.Repeat("a", 59998), EncodingBase64GzipJSON},
		{"59996 escaped", strings.Repeat("å", 9999), EncodingRaw},
		{"60002 escaped", strings.Repeat("å", 10000), EncodingBase64GzipJSON},
	} {
		t.Run(c.name, func(t *testing.T) {
			body, err := JSON.Build(Build{}, c.data, Options{})
			if err != nil {
				t.Fatal(err)
			}
			var got string
			msg, err := JSON.Parse(body, &got, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if msg.Metadata.DataEncoding != c.want || got != c.data {
				t.Errorf("encoding %q, data intact %v", msg.Metadata.DataEncoding, got == c.data)
			}
		})
	}
}

func TestJSONBuildErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		data any
	}{
		{"channel", make(chan int)},
		{"NaN", math.NaN()},
		{"infinity", math.Inf(1)},
		{"invalid RawMessage", json.RawMessage(`{"a":`)},
		{"RawMessage with trailing data", json.RawMessage(`1 2`)},
		{"RawMessage overflowing float64", json.RawMessage(`[1e400]`)},
		{"nested RawMessage overflowing float64", map[string]any{"x": json.RawMessage(`1e999`)}},
		{"invalid json.Number", json.Number("12abc")},
		{"func", func() {}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := JSON.Build(Build{}, c.data, Options{})
			wantKind(t, err, ErrPayloadType, true)
		})
	}
}

func TestJSONBuildNilRawMessage(t *testing.T) {
	body, err := JSON.Build(Build{}, json.RawMessage(nil), Options{})
	if err != nil || !bytes.HasSuffix(body, []byte(`"data": null}`)) {
		t.Fatalf("%s %v", body, err)
	}
}

func TestJSONCheck(t *testing.T) {
	var s struct{}
	for _, ok := range []any{new(any), new(json.RawMessage), &s, new(map[string]any), new(*int)} {
		if err := JSON.Check(ok, Options{}); err != nil {
			t.Errorf("Check(%T): %v", ok, err)
		}
	}
	for _, bad := range []any{nil, s, 1, (*int)(nil), (*any)(nil)} {
		wantKind(t, JSON.Check(bad, Options{}), ErrPayloadType, false)
	}
}
