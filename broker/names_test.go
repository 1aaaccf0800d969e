package broker

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"unicode/utf8"
)

// compatDir holds the vectors tomodachi produced (see its README.md).
var compatDir = filepath.Join("testdata", "tomodachi")

func readJSONL[T any](t *testing.T, name string) []T {
	t.Helper()
	f, err := os.Open(filepath.Join(compatDir, name))
	if err != nil {
		t.Fatalf("open vectors: %v", err)
	}
	defer f.Close()
	var out []T
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 1<<20), 16<<20)
	for sc.Scan() {
		var v T
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatalf("%s: %v", name, err)
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

func TestRoutingKeyVectors(t *testing.T) {
	type vector struct {
		RoutingKey       string `json:"routing_key"`
		RoutingKeyPrefix string `json:"routing_key_prefix"`
		Encoded          string `json:"encoded"`
		BoundKey         string `json:"bound_key"`
		DecodedBack      string `json:"decoded_back"`
	}
	for _, v := range readJSONL[vector](t, "routing_keys.jsonl") {
		t.Run(v.RoutingKeyPrefix+v.RoutingKey, func(t *testing.T) {
			if got := EncodeRoutingKey(v.RoutingKey); got != v.Encoded {
				t.Errorf("EncodeRoutingKey(%q) = %q, want %q", v.RoutingKey, got, v.Encoded)
			}
			if got := BindingKey(v.RoutingKeyPrefix, v.RoutingKey); got != v.BoundKey {
				t.Errorf("BindingKey(%q, %q) = %q, want %q", v.RoutingKeyPrefix, v.RoutingKey, got, v.BoundKey)
			}
			if got := DecodeRoutingKey(v.Encoded); got != v.DecodedBack {
				t.Errorf("DecodeRoutingKey(%q) = %q, want %q", v.Encoded, got, v.DecodedBack)
			}
			if got := StripPrefix(v.RoutingKeyPrefix, DecodeRoutingKey(v.BoundKey)); got != v.RoutingKey {
				t.Errorf("prefix strip of decoded %q = %q, want %q", v.BoundKey, got, v.RoutingKey)
			}
		})
	}
}

func TestQueueNameVectors(t *testing.T) {
	type vector struct {
		RoutingKey      string `json:"routing_key"`
		FuncName        string `json:"func_name"`
		UUID            string `json:"uuid"`
		Competing       bool   `json:"competing"`
		QueueNamePrefix string `json:"queue_name_prefix"`
		Expect          string `json:"expect"`
	}
	for _, v := range readJSONL[vector](t, "queue_names.jsonl") {
		got := QueueName(v.RoutingKey, v.FuncName, v.UUID, v.Competing, v.QueueNamePrefix)
		if got != v.Expect {
			t.Errorf("QueueName(%q, %q, %q, %v, %q) = %q, want %q",
				v.RoutingKey, v.FuncName, v.UUID, v.Competing, v.QueueNamePrefix, got, v.Expect)
		}
	}
}

func TestDecodeRoutingKeyEdges(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain", "plain"},
		{"___", "___"},
		{"___c3_", "___c3_"},     // one byte of a two-byte rune: not UTF-8, left alone
		{"____c3a4_", "_ä"},      // leading underscore, then an escape
		{"___C3A4_", "___C3A4_"}, // upper-case hex is not tomodachi's
		{"___41_", "A"},          // any valid UTF-8 decodes
		{"___f09f9087_x", "\U0001F407x"},
		{"a___09__b", "a\t_b"},
	} {
		if got := DecodeRoutingKey(tc.in); got != tc.want {
			t.Errorf("DecodeRoutingKey(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := EncodeRoutingKey("a\xffb"); got != "a___ff_b" {
		t.Errorf("invalid UTF-8 byte: got %q", got)
	}
}

func FuzzRoutingKeyRoundTrip(f *testing.F) {
	for _, s := range []string{"test.topic", "åäö.topic", "emoji.\U0001F407", "tab\tkey", "a.*.#", "___41_", "x\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		enc := EncodeRoutingKey(key)
		for i := 0; i < len(enc); i++ {
			if !safeRoutingKeyByte(enc[i]) {
				t.Fatalf("encoded %q has unsafe byte %q", enc, enc[i])
			}
		}
		dec := DecodeRoutingKey(enc)
		// Keys that already contain escape-like text ("___41_") are not
		// injective under tomodachi's scheme; everything else round-trips.
		if utf8.ValidString(key) && !containsEscapeLike(key) && dec != key {
			t.Fatalf("round trip %q -> %q -> %q", key, enc, dec)
		}
		_ = DecodeRoutingKey(key) // never panics
	})
}

func containsEscapeLike(s string) bool {
	for i := 0; i+3 <= len(s); i++ {
		if s[i:i+3] == "___" {
			return true
		}
	}
	return false
}
