//go:build integration

package broker

import (
	"context"
	"errors"
	"fmt"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato/internal/netproxy"
	"github.com/hato-go/hato/test/brokertest"
)

// brokerURL is the AMQP URL of this package's vhost; it fails the test if
// the broker is unavailable.
func brokerURL(t testing.TB) string {
	t.Helper()
	return pkgVhost.URL(t)
}

// viaProxy returns a netproxy in front of the test broker and the test
// vhost's URL through it.
func viaProxy(t *testing.T) (*netproxy.Proxy, string) {
	t.Helper()
	return brokertest.Proxy(t, brokerURL(t))
}

func dial(t *testing.T, name string) *amqp.Connection {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := Dial(ctx, Config{URL: brokerURL(t), ConnectionName: name, Heartbeat: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func channel(t *testing.T, conn *amqp.Connection) *amqp.Channel {
	t.Helper()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// closedResult captures a Publisher's Closed callback.
type closedResult struct {
	mu         sync.Mutex
	err        error
	unfinished []*Request
	called     chan struct{}
}

func newClosedResult() *closedResult { return &closedResult{called: make(chan struct{})} }

func (c *closedResult) fn(_ *Publisher, err error, unfinished []*Request) {
	c.mu.Lock()
	c.err, c.unfinished = err, unfinished
	c.mu.Unlock()
	close(c.called)
}

func request(exchange, key string, body string, done chan error) *Request {
	return &Request{
		Exchange: exchange, RoutingKey: key,
		Msg:  amqp.Publishing{Body: []byte(body), DeliveryMode: amqp.Persistent},
		Done: func(err error) { done <- err },
	}
}

func TestPublisherConfirmsReturnsAndMissingExchange(t *testing.T) {
	conn := dial(t, "broker-test-publisher")
	setup := channel(t, conn)
	q, err := setup.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	closed := newClosedResult()
	p, err := NewPublisher(channel(t, conn), PublisherConfig{MaxInFlight: 8, Closed: closed.fn})
	if err != nil {
		t.Fatal(err)
	}

	// Confirmed publishes, more than MaxInFlight at once.
	done := make(chan error, 100)
	for i := 0; i < 100; i++ {
		p.Submit(request("", q.Name, fmt.Sprint(i), done))
	}
	for i := 0; i < 100; i++ {
		if err := <-done; err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	brokertest.WaitFor(t, 5*time.Second, func() bool {
		n, _ := brokertest.Inspect(t, conn, q.Name)
		return n == 100
	}, "100 messages in the queue")
	if p.Outstanding() != 0 {
		t.Errorf("outstanding %d after every confirm", p.Outstanding())
	}

	// A mandatory publish that no queue takes comes back as ErrUnroutable;
	// the same publish, routable, succeeds.
	unroutable := request("amq.topic", "no.such.binding", "x", done)
	unroutable.Mandatory = true
	routable := request("", q.Name, "y", done)
	routable.Mandatory = true
	p.Submit(unroutable, routable)
	if err := <-done; !errors.Is(err, ErrUnroutable) {
		t.Fatalf("unroutable mandatory publish: %v, want ErrUnroutable", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("routable mandatory publish: %v", err)
	}

	// A publish to a missing exchange fails with ErrExchangeNotFound and
	// kills the channel; requests queued behind it come back unfinished, to
	// be sent elsewhere.
	p.SetPaused(true)
	bad := request("no.such.exchange", "k", "z", done)
	behind := request("", q.Name, "behind", done)
	p.Submit(bad, behind)
	p.SetPaused(false)
	if err := <-done; !errors.Is(err, ErrExchangeNotFound) {
		t.Fatalf("publish to a missing exchange: %v, want ErrExchangeNotFound", err)
	}
	select {
	case <-closed.called:
	case <-time.After(5 * time.Second):
		t.Fatal("Closed never called")
	}
	closed.mu.Lock()
	defer closed.mu.Unlock()
	if !errors.Is(closed.err, ErrExchangeNotFound) {
		t.Errorf("close error %v", closed.err)
	}
	for _, r := range closed.unfinished {
		if r.Finished() {
			t.Errorf("a finished request was handed back")
		}
	}
	if p.Submit(request("", q.Name, "late", done)) {
		t.Error("Submit accepted a request after close")
	}
	<-p.Done()
}

func TestPublisherHandsBackWhatTheChannelTookWithIt(t *testing.T) {
	conn := dial(t, "broker-test-handback")
	closed := newClosedResult()
	p, err := NewPublisher(channel(t, conn), PublisherConfig{Closed: closed.fn})
	if err != nil {
		t.Fatal(err)
	}
	p.SetPaused(true)
	done := make(chan error, 10)
	reqs := []*Request{request("", "q1", "1", done), request("", "q2", "2", done)}
	p.Submit(reqs...)
	abandoned := request("", "q3", "3", done)
	p.Submit(abandoned)
	if !abandoned.Abandon(context.Canceled) {
		t.Fatal("a queued request must be abandonable")
	}
	if err := <-done; !errors.Is(err, context.Canceled) { // the abandoned one
		t.Fatalf("abandoned request finished with %v", err)
	}
	_ = conn.Close()
	select {
	case <-closed.called:
	case <-time.After(5 * time.Second):
		t.Fatal("Closed never called")
	}
	closed.mu.Lock()
	defer closed.mu.Unlock()
	if len(closed.unfinished) != 2 || closed.unfinished[0] != reqs[0] || closed.unfinished[1] != reqs[1] {
		t.Fatalf("handed back %d requests, want the two unfinished ones in order", len(closed.unfinished))
	}
	select {
	case err := <-done:
		t.Fatalf("a handed-back request was finished: %v", err)
	default:
	}
}

// queueWith declares a fresh queue (deleted on cleanup) holding n messages,
// bodies "0" … "n-1".
func queueWith(t *testing.T, conn *amqp.Connection, n int) (string, Topology) {
	t.Helper()
	setup := channel(t, conn)
	queue := "broker-test-" + RandomID()
	topo := Topology{Queue: queue, BindingKey: queue, QueueTTL: time.Minute}
	t.Cleanup(func() { _, _ = channel(t, conn).QueueDelete(queue, false, false, false) })
	if _, err := topo.Declare(setup); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := setup.Publish("", queue, false, false, amqp.Publishing{Body: []byte(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	return queue, topo
}

func TestConsumerSettlesOnItsOwnChannelAndRequeuesOnClose(t *testing.T) {
	conn := dial(t, "broker-test-consumer")
	queue, topo := queueWith(t, conn, 10)
	deliveries := make(chan *Delivery, 100)
	ended := make(chan error, 1)
	c, q, err := StartSession(channel(t, conn), SessionConfig{
		Topology: topo, Prefetch: 4,
		Deliver: func(d *Delivery) { deliveries <- d },
		Closed:  func(err error) { ended <- err },
	})
	if err != nil {
		t.Fatal(err)
	}
	if q.Name != queue {
		t.Fatalf("queue %q", q.Name)
	}
	// Prefetch 4: four arrive; ack two, reject one, keep one.
	var held []*Delivery
	for i := 0; i < 4; i++ {
		select {
		case d := <-deliveries:
			held = append(held, d)
		case <-time.After(5 * time.Second):
			t.Fatal("no delivery")
		}
	}
	held[0].Ack()
	held[1].Ack()
	held[2].Reject(false)
	// Two more arrive once three are settled... then close: everything
	// unsettled goes back to the queue.
	for i := 0; i < 3; i++ {
		<-deliveries
	}
	c.Close()
	select {
	case err := <-ended:
		if err != nil {
			t.Fatalf("graceful close reported %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Closed never called")
	}
	held[3].Ack() // after close: dropped, never sent on another channel
	n, consumers := brokertest.Inspect(t, conn, queue)
	if n != 7 || consumers != 0 {
		t.Fatalf("queue has %d messages and %d consumers, want 7 (10 - 2 acked - 1 rejected) and 0", n, consumers)
	}
}

// goroutinesIn counts the goroutines whose stack holds fn.
func goroutinesIn(fn string) int {
	var b strings.Builder
	_ = pprof.Lookup("goroutine").WriteTo(&b, 2)
	n := 0
	for _, g := range strings.Split(b.String(), "\n\n") {
		if strings.Contains(g, fn) {
			n++
		}
	}
	return n
}

func TestConsumerAcksFromAnyGoroutineOnAFlusherThatDoesNotStay(t *testing.T) {
	conn := dial(t, "broker-test-flusher")
	const n = 200
	queue, topo := queueWith(t, conn, n)
	deliveries := make(chan *Delivery, n)
	ended := make(chan error, 1)
	before := liveConsumers.Load()
	c, _, err := StartSession(channel(t, conn), SessionConfig{
		Topology: topo, Prefetch: n,
		Deliver: func(d *Delivery) { deliveries <- d },
		Closed:  func(err error) { ended <- err },
	})
	if err != nil {
		t.Fatal(err)
	}
	if live := liveConsumers.Load(); live != before+1 {
		t.Fatalf("%d consumers running, want %d", live, before+1)
	}
	// Acked from 8 goroutines at once, in no particular order.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range n / 8 {
				(<-deliveries).Ack()
			}
		})
	}
	wg.Wait()
	brokertest.WaitFor(t, 5*time.Second, func() bool { return goroutinesIn("broker.(*Session).flush") == 0 },
		"the flusher to go once every ack was sent")
	if g := goroutinesIn("broker.(*Session).run"); g != 1 {
		t.Fatalf("%d session goroutines, want 1", g)
	}
	c.Close()
	if err := <-ended; err != nil {
		t.Fatalf("graceful close reported %v", err)
	}
	if live := liveConsumers.Load(); live != before {
		t.Fatalf("%d consumers running after Closed, want %d", live, before)
	}
	if left, _ := brokertest.Inspect(t, conn, queue); left != 0 {
		t.Fatalf("%d of %d messages back in the queue: acks were lost", left, n)
	}
}

func TestConsumerReportsBrokerCancel(t *testing.T) {
	conn := dial(t, "broker-test-cancel")
	queue := "broker-test-" + RandomID()
	topo := Topology{Queue: queue, BindingKey: queue}
	ended := make(chan error, 1)
	_, _, err := StartSession(channel(t, conn), SessionConfig{
		Topology: topo, Prefetch: 1,
		Deliver: func(*Delivery) {},
		Closed:  func(err error) { ended <- err },
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := channel(t, conn).QueueDelete(queue, false, false, false); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ended:
		if !errors.Is(err, ErrConsumerCancelled) {
			t.Fatalf("ended with %v, want ErrConsumerCancelled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a deleted queue must end the session")
	}
}

func TestDialRedactsAndClassifies(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u, err := amqp.ParseURI(brokerURL(t))
	if err != nil {
		t.Fatal(err)
	}
	u.Password = "not-the-password"
	_, err = Dial(ctx, Config{URL: u.String()})
	if !errors.Is(err, ErrAccessRefused) || !Permanent(err) {
		t.Fatalf("bad password: %v, want a permanent ErrAccessRefused", err)
	}
	if contains(err.Error(), "not-the-password") {
		t.Fatalf("password in error: %v", err)
	}
	_, err = Dial(ctx, Config{URL: "amqp://u:secret@[::1"})
	if !errors.Is(err, ErrInvalidURL) || contains(err.Error(), "secret") {
		t.Fatalf("invalid URL: %v", err)
	}
	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	if _, err := Dial(cctx, Config{URL: brokerURL(t)}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled dial: %v", err)
	}
}

func TestDialDetectsANetworkThatDiesRightAfterTheHandshake(t *testing.T) {
	proxy, url := viaProxy(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := Dial(ctx, Config{URL: url, Heartbeat: time.Second, ConnectionName: "broker-test-dead-net"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	proxy.Pause() // not a single frame after the handshake
	select {
	case err := <-closed:
		t.Logf("closed: %v", err)
	case <-time.After(15 * time.Second):
		proxy.CutAll() // so the deferred Close does not hang as well
		t.Fatal("a connection whose network died right after the handshake was never closed")
	}
	proxy.Resume()
}

func TestPublisherHandsBackRequestsWhenTheConnectionIsReset(t *testing.T) {
	proxy, url := viaProxy(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := Dial(ctx, Config{URL: url, ConnectionName: "broker-test-reset"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	closed := newClosedResult()
	p, err := NewPublisher(ch, PublisherConfig{Closed: closed.fn})
	if err != nil {
		t.Fatal(err)
	}
	const n = 2000
	var mu sync.Mutex
	var failed []error
	var finished int
	for i := 0; i < n; i++ {
		p.Submit(&Request{Exchange: "", RoutingKey: "nowhere", Msg: amqp.Publishing{Body: make([]byte, 4096)},
			Done: func(err error) {
				mu.Lock()
				finished++
				if err != nil {
					failed = append(failed, err)
				}
				mu.Unlock()
			}})
	}
	proxy.CutAll() // mid-stream: writes fail with a reset
	select {
	case <-closed.called:
	case <-time.After(15 * time.Second):
		t.Fatal("Closed never called after the reset")
	}
	closed.mu.Lock()
	handedBack := len(closed.unfinished)
	closed.mu.Unlock()
	mu.Lock()
	defer mu.Unlock()
	if len(failed) > 0 {
		t.Fatalf("%d requests failed with %v: a connection reset must hand them back, not fail them", len(failed), failed[0])
	}
	if finished+handedBack != n {
		t.Fatalf("%d confirmed + %d handed back != %d submitted", finished, handedBack, n)
	}
	t.Logf("%d confirmed before the reset, %d handed back", finished, handedBack)
}
