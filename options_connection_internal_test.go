package hato

import (
	"crypto/tls"
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestSeveralBrokerURLs(t *testing.T) {
	a, b := "amqp://u:pa@h1:5681/v", "amqps://w:pb@h2:5682/"
	for name, tc := range map[string]struct {
		opts []Option
		env  string
		want []string
	}{
		"one URL":           {opts: []Option{WithURL(a)}, want: []string{a}},
		"WithURL list":      {opts: []Option{WithURL(a + ", " + b)}, want: []string{a, b}},
		"WithURLs":          {opts: []Option{WithURLs(a, b)}, want: []string{a, b}},
		"AMQP_URL list":     {env: a + "," + b, want: []string{a, b}},
		"AMQP_URL one":      {env: a, want: []string{a}},
		"defaults":          {want: []string{"amqp://guest:guest@127.0.0.1:5672/"}},
		"WithHost list":     {opts: []Option{WithHost("h1,h2:5682"), WithPort(5681)}, want: []string{"amqp://guest:guest@h1:5681/", "amqp://guest:guest@h2:5682/"}},
		"WithHost one":      {opts: []Option{WithHost("h1")}, want: []string{"amqp://guest:guest@h1:5672/"}},
		"WithHost over env": {opts: []Option{WithHost("h1")}, env: b, want: []string{"amqp://guest:guest@h1:5672/"}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Setenv("AMQP_URL", tc.env)
			s, err := New("svc", tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(s.cfg.urls, tc.want) {
				t.Errorf("urls = %q, want %q", s.cfg.urls, tc.want)
			}
			if got := s.dialConfig("pub").URL; got != tc.want[0] {
				t.Errorf("dial config URL = %q, want %q", got, tc.want[0])
			}
			sh := shuffled(s.cfg.urls)
			slices.Sort(sh)
			want := slices.Sorted(slices.Values(tc.want))
			if !slices.Equal(sh, want) {
				t.Errorf("shuffled = %q, want a permutation of %q", sh, tc.want)
			}
		})
	}
}

func TestBadURLInAListIsRedacted(t *testing.T) {
	for name, opt := range map[string]Option{
		"WithURL":  WithURL("amqp://u:first@h1/,amqp://u:s3cret@h2:5672/%zz"),
		"WithURLs": WithURLs("amqp://u:first@h1/", "http://u:s3cret@h2/"),
		"no URL":   WithURLs(),
		"host":     WithHost("h1,,h2"),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := New("svc", opt)
			if err == nil || strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "first") {
				t.Fatalf("error %v must exist and show no password", err)
			}
		})
	}
	t.Setenv("AMQP_URL", "amqp://u:first@h1/,amqp://u:s3cret@h2:5672/%zz")
	if _, err := New("svc"); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("AMQP_URL error %v must exist and show no password", err)
	}
	if _, err := New("svc", WithHost("h1:99999")); err == nil {
		t.Fatal("a host with port 99999 was accepted")
	}
}

// Issue 19: WithTLS with an amqp:// URL connected in plaintext without a
// word, and WithTLS made hato ignore AMQP_URL.
func TestWithTLSAndURLs(t *testing.T) {
	tlsOpt := WithTLS(&tls.Config{MinVersion: tls.VersionTLS12})
	for name, tc := range map[string]struct {
		opts    []Option
		env     string
		want    []string
		wantErr bool
	}{
		"amqp URL refused":       {opts: []Option{WithURL("amqp://u:p@h1:5671/"), tlsOpt}, wantErr: true},
		"one amqp URL in list":   {opts: []Option{WithURLs("amqps://u:p@h1:5671/", "amqp://u:p@h2:5672/"), tlsOpt}, wantErr: true},
		"amqps URL":              {opts: []Option{WithURL("amqps://u:p@h1:5671/"), tlsOpt}, want: []string{"amqps://u:p@h1:5671/"}},
		"AMQP_URL used":          {opts: []Option{tlsOpt}, env: "amqps://u:p@h3:5671/", want: []string{"amqps://u:p@h3:5671/"}},
		"plain AMQP_URL refused": {opts: []Option{tlsOpt}, env: "amqp://u:p@h3:5672/", wantErr: true},
		"parts":                  {opts: []Option{WithHost("h4"), WithPort(5671), tlsOpt}, env: "amqp://u:p@h3/", want: []string{"amqps://guest:guest@h4:5671/"}},
		"defaults":               {opts: []Option{tlsOpt}, want: []string{"amqps://guest:guest@127.0.0.1:5672/"}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Setenv("AMQP_URL", tc.env)
			s, err := New("svc", tc.opts...)
			if tc.wantErr {
				if !errors.Is(err, ErrInvalidOption) || strings.Contains(err.Error(), ":p@") {
					t.Fatalf("New: %v, want ErrInvalidOption without the password", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(s.cfg.urls, tc.want) {
				t.Errorf("urls = %q, want %q", s.cfg.urls, tc.want)
			}
		})
	}
}
