package broker

import (
	"errors"
	"strings"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

func TestWireRoutingKeyLimits(t *testing.T) {
	cases := []struct {
		prefix, key string
		ok          bool
	}{
		{"", strings.Repeat("k", 255), true},
		{"", strings.Repeat("k", 256), false},
		{"p.", strings.Repeat("k", 253), true},
		{"p.", strings.Repeat("k", 254), false},
		{"", strings.Repeat("é", 31), true},  // 31 × "___c3a9_" = 248 bytes
		{"", strings.Repeat("é", 32), false}, // 256 bytes on the wire
		{"", "a.*.#", true},
		{"", "a.\xff", false},
		{"\xff", "a", false},
		{"", "", true},
	}
	for _, c := range cases {
		wire, err := WireRoutingKey(c.prefix, c.key)
		if c.ok != (err == nil) {
			t.Errorf("WireRoutingKey(%q, %q) = %v, want ok=%v", c.prefix, c.key, err, c.ok)
			continue
		}
		if err != nil && (!errors.Is(err, ErrInvalidRoutingKey) || !errors.Is(err, ErrInvalidArgument)) {
			t.Errorf("WireRoutingKey(%q, %q) error %v does not match its sentinels", c.prefix, c.key, err)
		}
		if err == nil && wire != BindingKey(c.prefix, c.key) {
			t.Errorf("WireRoutingKey(%q, %q) = %q, want BindingKey's %q", c.prefix, c.key, wire, BindingKey(c.prefix, c.key))
		}
	}
}

func TestValidateRequest(t *testing.T) {
	long := strings.Repeat("x", 256)
	ok := func() *Request {
		return &Request{Exchange: "amq.topic", RoutingKey: "k", Msg: amqp.Publishing{Headers: amqp.Table{"a": int64(1)}}}
	}
	cases := []struct {
		name string
		edit func(r *Request)
		want error
	}{
		{"valid", func(*Request) {}, nil},
		{"255-byte names", func(r *Request) { r.Exchange, r.RoutingKey = long[:255], long[:255] }, nil},
		{"long exchange", func(r *Request) { r.Exchange = long }, ErrInvalidName},
		{"long routing key", func(r *Request) { r.RoutingKey = long }, ErrInvalidRoutingKey},
		{"header type", func(r *Request) { r.Msg.Headers = amqp.Table{"u": uint64(1)} }, ErrInvalidHeaders},
		{"header name", func(r *Request) { r.Msg.Headers = amqp.Table{long: 1} }, ErrInvalidHeaders},
		{"nested header name", func(r *Request) { r.Msg.Headers = amqp.Table{"a": []any{amqp.Table{long: 1}}} }, ErrInvalidHeaders},
		{"header name in a table", func(r *Request) { r.Msg.Headers = amqp.Table{"a": amqp.Table{"b": amqp.Table{long: 1}}} }, ErrInvalidHeaders},
		{"long message id", func(r *Request) { r.Msg.MessageId = long }, ErrInvalidProperty},
		{"long app id", func(r *Request) { r.Msg.AppId = long }, ErrInvalidProperty},
		{"long content type", func(r *Request) { r.Msg.ContentType = long }, ErrInvalidProperty},
	}
	for _, c := range cases {
		r := ok()
		c.edit(r)
		err := ValidateRequest(r)
		if c.want == nil {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		if !errors.Is(err, c.want) || !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
		if err != nil && len(err.Error()) > 400 {
			t.Errorf("%s: error quotes the whole value: %d bytes", c.name, len(err.Error()))
		}
	}
}

// A publish's validation allocates nothing for headers without nested
// tables (a traceparent), go test -bench ValidateRequest -benchmem.
func BenchmarkValidateRequest(b *testing.B) {
	r := &Request{Exchange: "amq.topic", RoutingKey: "k", Msg: amqp.Publishing{MessageId: "m", AppId: "a",
		Headers: amqp.Table{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}}
	b.ReportAllocs()
	for b.Loop() {
		if err := ValidateRequest(r); err != nil {
			b.Fatal(err)
		}
	}
}
