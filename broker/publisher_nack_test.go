//go:build !unit

package broker

import (
	"errors"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Issue 9: a basic.nack is not final. A channel opened on a node right after
// a quorum queue's leader node died nacks every publish to that queue for
// good (RabbitMQ 3.10), while a fresh channel a moment later works. The
// publisher hands a nacked request back, unfinished, and closes its channel
// so that the request is sent again on a new one; only after MaxNacks nacks
// does the request fail with ErrNacked.
func TestPublisherHandsBackANackedRequestOnANewChannel(t *testing.T) {
	conn := dial(t, "broker-test-nack")
	q, err := channel(t, conn).QueueDeclare("", false, true, true, false,
		amqp.Table{"x-max-length": int32(1), "x-overflow": "reject-publish"})
	if err != nil {
		t.Fatal(err)
	}
	closed := newClosedResult()
	p, err := NewPublisher(channel(t, conn), PublisherConfig{Closed: closed.fn})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 2)
	p.Submit(request("", q.Name, "first", done))
	if err := <-done; err != nil {
		t.Fatalf("first publish: %v", err)
	}
	second := request("", q.Name, "second", done)
	p.Submit(second)
	select {
	case <-closed.called:
	case err := <-done:
		t.Fatalf("the nacked publish finished with %v; want it handed back for a new channel", err)
	case <-time.After(10 * time.Second):
		t.Fatal("neither an outcome nor Closed")
	}
	closed.mu.Lock()
	defer closed.mu.Unlock()
	if len(closed.unfinished) != 1 || closed.unfinished[0] != second {
		t.Fatalf("handed back %d requests, want the nacked one", len(closed.unfinished))
	}
	var ne *NackedError
	if !errors.As(closed.err, &ne) || ne.Nacks != 1 || !errors.Is(closed.err, ErrNacked) {
		t.Fatalf("Closed with %v, want a NackedError with 1 nack", closed.err)
	}

	// Nacked MaxNacks times, it fails.
	for i := 2; i <= MaxNacks; i++ {
		again := newClosedResult()
		p2, err := NewPublisher(channel(t, conn), PublisherConfig{Closed: again.fn})
		if err != nil {
			t.Fatal(err)
		}
		p2.Submit(second)
		select {
		case <-again.called:
			if i == MaxNacks {
				t.Fatalf("nack %d handed the request back again", i)
			}
		case err := <-done:
			if i < MaxNacks || !errors.Is(err, ErrNacked) {
				t.Fatalf("nack %d finished the request with %v", i, err)
			}
			p2.Close()
			<-p2.Done()
		case <-time.After(10 * time.Second):
			t.Fatalf("nack %d: neither an outcome nor Closed", i)
		}
	}
}
