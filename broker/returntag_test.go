package broker

import (
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Issue 19: the return tag went on the wire as an integer header, which a
// Watermill consumer with its default marshaler rejected (and hot-looped
// on). It is a string now, and a return is matched by it.
func TestReturnTagIsAStringHeader(t *testing.T) {
	h := withReturnTag(amqp.Table{"a": "b"}, 42)
	if v, ok := h[ReturnTagHeader].(string); !ok || v != "42" {
		t.Fatalf("%s = %#v, want the string \"42\"", ReturnTagHeader, h[ReturnTagHeader])
	}
	if tag, ok := returnTag(amqp.Return{Headers: h}); !ok || tag != 42 {
		t.Errorf("returnTag = %d %v, want 42", tag, ok)
	}
	for _, v := range []any{int64(42), "x", "0", nil} {
		if _, ok := returnTag(amqp.Return{Headers: amqp.Table{ReturnTagHeader: v}}); ok {
			t.Errorf("returnTag matched %#v", v)
		}
	}
}
