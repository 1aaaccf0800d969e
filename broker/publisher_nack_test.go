//go:build integration

package broker

import (
	"errors"
	"fmt"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato/test/brokertest"
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

// Issue 17 (3c): a nack stops the writer, but the channel is closed only
// once every publish in flight has its confirm, so the publishes the broker
// routed are not handed back and sent twice: only the nacked ones (and
// those never written) are.
func TestPublisherNackHandsBackNoRoutedPublish(t *testing.T) {
	conn := dial(t, "broker-test-nack-no-dup")
	setup := channel(t, conn)
	full, err := setup.QueueDeclare("", false, true, true, false,
		amqp.Table{"x-max-length": int32(1), "x-overflow": "reject-publish"})
	if err != nil {
		t.Fatal(err)
	}
	other, err := setup.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	const perBatch, batches = 1000, 1
	done := make(chan error, 1+batches*(perBatch+1))
	reqs := []*Request{request("", full.Name, "fill", done)}
	for b := range batches {
		reqs = append(reqs, request("", full.Name, fmt.Sprint("refused ", b), done))
		for i := range perBatch {
			reqs = append(reqs, request("", other.Name, fmt.Sprint(b, " ", i), done))
		}
	}
	// Publish on channel after channel until every request has an outcome,
	// handing each channel what the previous one handed back.
	pending := reqs
	for round := 0; len(pending) > 0; round++ {
		if round > 2*MaxNacks*batches {
			t.Fatalf("still %d requests without an outcome after %d channels", len(pending), round)
		}
		closed := newClosedResult()
		p, err := NewPublisher(channel(t, conn), PublisherConfig{Closed: closed.fn})
		if err != nil {
			t.Fatal(err)
		}
		p.Submit(pending...)
		brokertest.WaitFor(t, 10*time.Second, func() bool {
			return p.Outstanding() == 0
		}, "every request confirmed or handed back")
		p.Close()
		<-closed.called
		closed.mu.Lock()
		pending = closed.unfinished
		closed.mu.Unlock()
	}
	var nacked, ok int
	for range reqs {
		switch err := <-done; {
		case err == nil:
			ok++
		case errors.Is(err, ErrNacked):
			nacked++
		default:
			t.Fatalf("outcome %v", err)
		}
	}
	// The full queue refuses most of its publishes, though not always all
	// (RabbitMQ 3.10 let one in at times): each is either in it or nacked.
	if n, _ := brokertest.Inspect(t, conn, full.Name); ok+nacked != len(reqs) || n+nacked != 1+batches || nacked == 0 {
		t.Errorf("%d confirmed and %d nacked of %d; %d in the full queue", ok, nacked, len(reqs), n)
	}
	if n, _ := brokertest.Inspect(t, conn, other.Name); n != perBatch*batches {
		t.Errorf("%d messages in the unrelated queue, want %d (%d duplicates)", n, perBatch*batches, n-perBatch*batches)
	}
}
