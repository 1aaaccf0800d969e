package broker

import (
	"slices"
	"testing"
)

func TestSplitURLs(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"amqp://guest:guest@127.0.0.1:5672/", []string{"amqp://guest:guest@127.0.0.1:5672/"}},
		{"amqp://u:p@h1:5672/,amqps://v:q@h2:5671/x", []string{"amqp://u:p@h1:5672/", "amqps://v:q@h2:5671/x"}},
		{" amqp://h1 , amqp://h2 ,", []string{"amqp://h1", "amqp://h2"}},
		{"amqp://u:p,a@h1/,amqp://u:p,b@h2/", []string{"amqp://u:p,a@h1/", "amqp://u:p,b@h2/"}},
		{"", nil},
	} {
		if got := SplitURLs(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("SplitURLs(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestNode(t *testing.T) {
	for in, want := range map[string]string{
		"amqp://u:secret@rabbit-1:5681/vh": "rabbit-1:5681",
		"amqps://u:secret@rabbit-2/":       "rabbit-2:5671",
		"amqp://[::1]:5672/":               "[::1]:5672",
		"http://u:secret@x/":               "http://u:xxxxx@x/",
	} {
		if got := Node(in); got != want {
			t.Errorf("Node(%q) = %q, want %q", in, got, want)
		}
	}
}
