package brokertest

import (
	"fmt"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

// NestedHeaders is a header table with tables nested depth deep below it:
// {"nest": {"a": {"a": ... {"leaf": "x"}}}}. amqp091-go v1.16 writes any
// depth but reads at most 32 (deeper costs the reading connection);
// RabbitMQ routes it.
func NestedHeaders(depth int) amqp.Table {
	inner := amqp.Table{"leaf": "x"}
	for i := 1; i < depth; i++ {
		inner = amqp.Table{"a": inner}
	}
	return amqp.Table{"nest": inner}
}

// WideHeaders is a header table of n entries. amqp091-go v1.16 reads at
// most 8 192.
func WideHeaders(n int) amqp.Table {
	h := make(amqp.Table, n)
	for i := range n {
		h[fmt.Sprintf("h%05d", i)] = int32(i)
	}
	return h
}

// UnreadableHeaders are the header tables amqp091-go v1.16 cannot read,
// each with the text its read error (and so hato's quarantine reason)
// holds: the cases of every test of the frame guard and quarantine.
func UnreadableHeaders() []UnreadableCase {
	return []UnreadableCase{
		{"nested 40", NestedHeaders(40), "nested deeper than 32"},
		{"9000 entries", WideHeaders(9000), "more than 8192 elements"},
	}
}

// UnreadableCase is one of UnreadableHeaders.
type UnreadableCase struct {
	Name    string
	Headers amqp.Table
	Reason  string // in the read error
}

// PublishHostile publishes msg to exchange with routing key key on a
// connection of its own, as another client would: amqp091-go's writer
// takes tables its own reader refuses, so this is how a test sends them.
// It waits for the broker's confirm and fails the test on any error.
func PublishHostile(t testing.TB, rawURL, exchange, key string, msg amqp.Publishing) {
	t.Helper()
	conn := DialWith(t, rawURL, "hato-brokertest-hostile", amqp.Config{})
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	conf, err := ch.PublishWithDeferredConfirmWithContext(t.Context(), exchange, key, false, false, msg)
	if err != nil {
		t.Fatalf("publish hostile message: %v", err)
	}
	if ok, err := conf.WaitContext(t.Context()); err != nil || !ok {
		t.Fatalf("hostile message not confirmed: ok=%v err=%v", ok, err)
	}
}
