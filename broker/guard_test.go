//go:build integration

package broker

import (
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato/test/brokertest"
)

// TestDialGuardsAgainstUnreadableHeaders: a message whose headers
// amqp091-go cannot read (nested 40 deep, 9 000 entries) reaches a
// consumer on a Dial'd connection rewritten, with the reason and the raw
// table in headers and its other properties kept, and the connection
// stays up for the message behind it. Before the guard, the connection
// died with a frame error at the first one.
func TestDialGuardsAgainstUnreadableHeaders(t *testing.T) {
	for _, tc := range brokertest.UnreadableHeaders() {
		t.Run(tc.Name, func(t *testing.T) {
			conn := dial(t, "broker-test-guard")
			queue, _ := queueWith(t, conn, 0)
			brokertest.PublishHostile(t, brokerURL(t), "", queue, amqp.Publishing{
				Headers: tc.Headers, MessageId: "bad-1", ContentType: "application/json", Body: []byte("bad body"),
			})
			brokertest.PublishHostile(t, brokerURL(t), "", queue, amqp.Publishing{MessageId: "good-1", Body: []byte("good")})

			ch := channel(t, conn)
			var got []amqp.Delivery
			for len(got) < 2 {
				d, ok, err := ch.Get(queue, true)
				if err != nil {
					t.Fatalf("get after %d messages: %v (connection closed: %v)", len(got), err, conn.IsClosed())
				}
				if ok {
					got = append(got, d)
				}
			}
			bad := got[0]
			why, _ := bad.Headers[HeaderUnparseable].(string)
			raw, _ := bad.Headers[HeaderRawHeaders].([]byte)
			if !strings.Contains(why, tc.Reason) || len(raw) == 0 {
				t.Fatalf("rewritten headers: reason %q, %d raw bytes", why, len(raw))
			}
			if bad.MessageId != "bad-1" || bad.ContentType != "application/json" || string(bad.Body) != "bad body" {
				t.Fatalf("properties or body lost: %+v", bad)
			}
			if got[1].MessageId != "good-1" || conn.IsClosed() {
				t.Fatalf("the message behind it: %q, connection closed %v", got[1].MessageId, conn.IsClosed())
			}
		})
	}
}

// TestDialReadsUnsignedFieldTypes: headers of field types 'u' (uint16)
// and 'i' (uint32), which other clients write, read back as such.
func TestDialReadsUnsignedFieldTypes(t *testing.T) {
	conn := dial(t, "broker-test-guard-ui")
	queue, _ := queueWith(t, conn, 0)
	brokertest.PublishHostile(t, brokerURL(t), "", queue, amqp.Publishing{
		Headers: amqp.Table{"u": uint16(7), "i": uint32(70000), "nested": amqp.Table{"u": uint16(1)}},
	})
	ch := channel(t, conn)
	var d amqp.Delivery
	brokertest.WaitFor(t, 10*time.Second, func() bool {
		var ok bool
		var err error
		d, ok, err = ch.Get(queue, true)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}, "the message")
	if d.Headers["u"] != uint16(7) || d.Headers["i"] != uint32(70000) {
		t.Fatalf("headers: %#v", d.Headers)
	}
	if _, bad := d.Headers[HeaderUnparseable]; bad {
		t.Fatalf("readable headers were quarantined: %v", d.Headers)
	}
}
