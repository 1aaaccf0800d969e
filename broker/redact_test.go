package broker

import (
	"context"
	"strings"
	"testing"
)

func TestRedactMasksEveryPassword(t *testing.T) {
	cases := []struct{ in, want string }{
		{"amqp://guest:guest@localhost:5672/", "amqp://guest:xxxxx@localhost:5672/"},
		{"amqp://localhost:5672/vh", "amqp://localhost:5672/vh"},
		{"amqp://user@localhost/", "amqp://user@localhost/"},
		{"", ""},
		// Two URLs: the one in the path used to survive.
		{"amqp://u:p1@h1,amqp://u:p2@h2", "amqp://u:xxxxx@h1,amqp://u:xxxxx@h2"},
		{"amqp://u:p1@h1 amqp://u:p2@h2", "amqp://u:xxxxx@h1 amqp://u:xxxxx@h2"},
		{"amqp://u:p1@h1/v amqp://x:p3@h", "amqp://u:xxxxx@h1/v amqp://x:xxxxx@h"},
		// Unescaped '/', '@', ' ' in the password.
		{"amqp://u:se/cret@h", "amqp://u:xxxxx@h"},
		{"amqp://u:p@ss@h/", "amqp://u:xxxxx@h/"},
		{"amqp://u:pa ss@h/", "amqp://u:xxxxx@h/"},
		// No scheme at all.
		{"u:secret@h", "u:xxxxx@h"},
		{"AMQP_URL=amqps://u:%40secret@h:5671/%2F", "AMQP_URL=amqps://u:xxxxx@h:5671/%2F"},
		// Issue 19: a password starting with "//" (found by fuzzing).
		{"amqp://u://secret@h/", "amqp://u:xxxxx@h/"},
		{"amqp://u://se:cret@h/", "amqp://u:xxxxx@h/"},
		{"amqp://a:b@h1,amqps://u://secret@h2/", "amqp://a:xxxxx@h1,amqps://u:xxxxx@h2/"},
	}
	for _, c := range cases {
		if got := Redact(c.in); got != c.want {
			t.Errorf("Redact(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// Dial's error for a URL that does not parse (or parses to a host that
// does not resolve) quotes no password, wherever it sits.
func TestDialErrorsCarryNoPassword(t *testing.T) {
	for _, u := range []string{
		"amqp://u:p1secret@h1.invalid,amqp://u:p2secret@h2.invalid",
		"amqp://u:p1secret@h1 amqp://u:p2secret@h2",
		"amqp://u:se/cretsecret@h.invalid",
		"amqp://u:p1secret@h1/v amqp://x:p3secret@h",
		"amqp://u:p1secret@h1.invalid:notaport/",
		"amqpx://u:p1secret@h1.invalid/",
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5e9)
		_, err := Dial(ctx, Config{URL: u, DialTimeout: 2e9})
		cancel()
		if err == nil {
			t.Fatalf("Dial(%q) succeeded", u)
		}
		for _, leak := range []string{"secret", "cret", ":se"} {
			if strings.Contains(err.Error(), leak) {
				t.Errorf("Dial(%q) error quotes %q: %v", u, leak, err)
			}
		}
	}
}

// FuzzRedact: a password written as user:password@ anywhere in any text
// never survives Redact. The password is marked so the check cannot be
// fooled by the surrounding text; it may hold anything but "://".
func FuzzRedact(f *testing.F) {
	f.Add("amqp://", "guest", "pw", "localhost:5672/")
	f.Add("x amqp://a:b@c,amqp://", "u", "p/q@r s", "h2/vh")
	f.Add("", "", ":::", "@@@")
	f.Add("amqps://h:1/", "u:v", "\x00\xff", "amqp://z:y@w")
	f.Add("", "u", "//x", "h/")
	const mark = "S3CR3T"
	f.Fuzz(func(t *testing.T, prefix, user, password, suffix string) {
		password = mark + password
		if strings.Contains(password, "://") || strings.Contains(prefix, mark) || strings.Contains(suffix, mark) {
			return // outside the property's domain
		}
		in := prefix + user + ":" + password + "@" + suffix
		if out := Redact(in); strings.Contains(out, mark) {
			t.Fatalf("Redact(%q) = %q keeps the password", in, out)
		}
		// A URL whose password starts with "//" (issue 19): the "://"
		// it makes with the user's ':' is not the scheme's.
		if strings.ContainsAny(prefix+user, "@:") || strings.Contains(prefix+user, "://") {
			return
		}
		in = prefix + "amqp://" + user + "://" + password + "@" + suffix
		if out := Redact(in); strings.Contains(out, mark) {
			t.Fatalf("Redact(%q) = %q keeps the password", in, out)
		}
	})
}
