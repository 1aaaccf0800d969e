package hatotest

import "testing"

func TestTopicMatch(t *testing.T) {
	for _, c := range []struct {
		binding, key string
		want         bool
	}{
		{"a.b", "a.b", true},
		{"a.b", "a.c", false},
		{"a.b", "a.b.c", false},
		{"a.*", "a.b", true},
		{"a.*", "a", false},
		{"a.*", "a.b.c", false},
		{"*.b", "a.b", true},
		{"*", "a", true},
		{"*", "", false},
		{"*", "a.b", false},
		{"#", "", true},
		{"#", "a", true},
		{"#", "a.b.c", true},
		{"a.#", "a", true},
		{"a.#", "a.b", true},
		{"a.#", "a.b.c", true},
		{"a.#", "b.a", false},
		{"#.c", "c", true},
		{"#.c", "a.b.c", true},
		{"#.c", "a.b.c.d", false},
		{"a.#.b", "a.b", true},
		{"a.#.b", "a.x.b", true},
		{"a.#.b", "a.x.y.b", true},
		{"a.#.b", "a.b.b", true},
		{"a.#.b", "a.b.c", false},
		{"a.*.#", "a", false},
		{"a.*.#", "a.b", true},
		{"a.*.#", "a.b.c.d", true},
		{"#.#", "", true},
		{"#.*", "", false},
		{"#.*", "a.b", true},
		{"a.#.#.b", "a.b", true},
		{"a*", "ab", false},
		{"a*", "a*", true},
		{"", "", true},
		{"", "a", false},
		{"a.", "a.", true},
		{"a.", "a", false},
		{"a.*", "a.", true},
		{"*.*", ".", true},
	} {
		if got := topicMatch(c.binding, c.key); got != c.want {
			t.Errorf("topicMatch(%q, %q) = %v, want %v", c.binding, c.key, got, c.want)
		}
	}
}
