//go:build integration

package actors

import (
	"strconv"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/test/brokertest"
)

// Issue 17 (3d): publishes one caller makes one after another reach the
// queue in that order although the first ones go through the actor's
// mailbox (the publishing channel is not open yet) and the later ones
// directly: none handed over directly overtakes one still in the mailbox.
func TestDirectPublishKeepsOrderWithTheMailbox(t *testing.T) {
	_, url := brokertest.NewVhost(t)
	conn := brokertest.Dial(t, url, brokertest.UniqueName("hato-test-", t.Name()))
	setup, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q, err := setup.QueueDeclare("direct-order", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	var d DirectPublish
	h := startConn(t, url, func(c *ConnectionConfig) { c.Direct = &d; c.PublishBuffer = 1 << 20 })
	const limit = 200000
	outcomes := make(chan error, limit)
	sent, direct := 0, 0
	send := func() {
		r := &broker.Request{RoutingKey: q.Name, Msg: amqp.Publishing{Body: []byte(strconv.Itoa(sent))},
			Done: func(err error) { outcomes <- err }}
		sent++
		if d.Send(h.sys.Root, h.pid, r) {
			direct++
		}
	}
	// Publish while the channel opens: the first publishes go through the
	// mailbox, which falls behind, and go on until after it opened.
	for sent < limit/2 && d.pub.Load() == nil {
		send()
	}
	waitFor(t, "the publishing channel open", func() bool { return d.pub.Load() != nil })
	for range 2000 {
		send()
	}
	h.status(t) // the mailbox caught up: publishes go directly again
	for range 500 {
		send()
	}
	if direct == 0 {
		t.Fatalf("none of %d publishes went directly", sent)
	}
	for range sent {
		if err := recv(t, outcomes); err != nil {
			t.Fatal(err)
		}
	}
	deliveries, err := setup.Consume(q.Name, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	inversions, last := 0, -1
	for range sent {
		select {
		case m := <-deliveries:
			n, _ := strconv.Atoi(string(m.Body))
			if n < last {
				inversions++
			}
			last = n
		case <-time.After(waitLimit):
			t.Fatal("a confirmed publish is missing from the queue")
		}
	}
	if inversions > 0 {
		t.Errorf("%d of %d publishes reached the queue after a later one (%d went directly)", inversions, sent, direct)
	}
}
