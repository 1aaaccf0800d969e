package broker

import (
	"errors"
	"net/url"
	"strings"
)

// redactedPassword replaces every password Redact finds.
const redactedPassword = "xxxxx"

// Redact returns s with every password of a user:password@ it contains
// replaced, for logs and errors. s need not be one URL, nor parse at all:
// for every '@' in s, the text between the first ':' after the last "://"
// before that '@' (or after the start of s, when there is none) and the '@'
// is masked. So "amqp://u:p@h1,amqp://u:q@h2" keeps neither p nor q, and a
// password with unescaped '/', '@', ':' or spaces is masked whole. It may
// mask more than a password (a host:port followed by an '@' further on),
// never less, unless the password itself holds "://".
func Redact(s string) string {
	if strings.IndexByte(s, '@') < 0 {
		return s
	}
	masked := make([]bool, len(s))
	hit := false
	for j := 0; j < len(s); j++ {
		if s[j] != '@' {
			continue
		}
		start := 0
		if k := strings.LastIndex(s[:j], "://"); k >= 0 {
			start = k + 3
		}
		colon := strings.IndexByte(s[start:j], ':')
		if colon < 0 {
			continue
		}
		for i := start + colon + 1; i < j; i++ {
			masked[i], hit = true, true
		}
	}
	if !hit {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		if !masked[i] {
			b.WriteByte(s[i])
			i++
			continue
		}
		for i < len(s) && masked[i] {
			i++
		}
		b.WriteString(redactedPassword)
	}
	return b.String()
}

// scrubURLError keeps the reason of a URL parse error without the URL or
// any part of it: the reasons of net/url quote the piece they stumbled on
// (`invalid port ":secret" after host` for a password holding a '/'), so
// quoted text is dropped too.
func scrubURLError(err error) string {
	msg := err.Error()
	var ue *url.Error
	if errors.As(err, &ue) {
		msg = ue.Err.Error()
	} else if strings.Contains(msg, "://") {
		return "malformed URL"
	}
	return Redact(dropQuoted(msg))
}

// dropQuoted replaces the contents of every double-quoted part of s by "…";
// an unterminated quote runs to the end.
func dropQuoted(s string) string {
	if strings.IndexByte(s, '"') < 0 {
		return s
	}
	var b strings.Builder
	in := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' && !in:
			b.WriteString(`"…`)
			in = true
		case c == '"' && in:
			b.WriteByte('"')
			in = false
		case !in:
			b.WriteByte(c)
		}
	}
	if in {
		b.WriteByte('"')
	}
	return b.String()
}
