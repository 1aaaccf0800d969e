//go:build !unit

package hato_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/test/brokertest"
	"github.com/hato-go/hato/test/hatotest"
)

// A dead-lettered copy outlives the original's TTL and a broker restart:
// no expiration (kept in a header), persistent.
func TestDeadLetterCopyDoesNotExpireAndIsPersistent(t *testing.T) {
	key := hatotest.Key(t, "dl-ttl")
	evs := &hatotest.DeliveryEvents{}
	svc := newService(t, "dl-ttl", hato.WithDeliveryEvents(evs.Add))
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error { return nil })
	hatotest.Start(t, svc)
	dlq := svc.Routes()[0].DeadLetterQueue

	conn := brokertest.Dial(t, brokerURL(t), "test-dl-ttl")
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	const n = 3
	for i := range n {
		dc, err := ch.PublishWithDeferredConfirmWithContext(context.Background(), "amq.topic", key, false, false,
			amqp.Publishing{Body: []byte("not an envelope"), MessageId: fmt.Sprintf("undecodable-%d", i),
				Expiration: "500", DeliveryMode: amqp.Transient})
		if err != nil || !dc.Wait() {
			t.Fatalf("publish: %v", err)
		}
	}
	brokertest.WaitFor(t, 30*time.Second, func() bool { return evs.Len() >= n }, "%d messages dead-lettered", n)
	// Three times the original's TTL later (a copy that inherited it would
	// be gone by then), the copies are all still there.
	deadline := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) {
		if m, _ := brokertest.Inspect(t, conn, dlq); m != n {
			t.Fatalf("dead-letter queue %s holds %d messages, want %d: the copies expire", dlq, m, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for range n {
		d, ok, err := ch.Get(dlq, true)
		if err != nil || !ok {
			t.Fatalf("get from %s: ok=%v %v", dlq, ok, err)
		}
		if d.Expiration != "" {
			t.Errorf("dead-letter copy has expiration %q, want none", d.Expiration)
		}
		if d.DeliveryMode != amqp.Persistent {
			t.Errorf("dead-letter copy delivery mode %d, want persistent", d.DeliveryMode)
		}
		if got := d.Headers["x-hato-original-expiration"]; got != "500" {
			t.Errorf("x-hato-original-expiration = %v, want \"500\"", got)
		}
	}
}
