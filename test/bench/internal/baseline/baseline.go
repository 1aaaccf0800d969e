// Package baseline is the forwarding service written by hand on amqp091-go,
// the yardstick of hato's benchmarks (test/bench, in-process, and
// test/bench/cmd/baseline-node, in its own process).
package baseline

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato/envelope"
)

// Forwarder is the forwarding service written by hand on amqp091-go, the way
// a careful engineer would for throughput, with hato's guarantees:
//
//   - a consuming connection (one channel: QoS 100 per consumer and 400
//     global, as tomodachi; the durable queue with x-expires 86400000 bound
//     to amq.topic; manual acks) and a separate publishing connection (one
//     channel in confirm mode), so flow control on publishing never stalls
//     deliveries;
//   - one handler goroutine (hato's concurrency 1): decode the JSON
//     envelope, build the forward with envelope.JSON, publish it persistent,
//     and go on to the next delivery at once;
//   - one acker goroutine that owns the consuming channel: confirms arrive
//     in publish order (amqp091-go resequences them), so a FIFO of delivery
//     tags, pushed by the handler before each publish, matches each confirm
//     to its delivery, which is acked (nacked with requeue on a broker
//     nack) only then. Undecodable deliveries go through the same FIFO and
//     are rejected without requeue.
//
// Every Notify channel is buffered for every possible outstanding message
// and drained until closed; each AMQP channel has one owner.
type Forwarder struct {
	sub, pub  *amqp.Connection
	subCh     *amqp.Channel // owned by the acker once consuming
	pubCh     *amqp.Channel // owned by the handler goroutine
	queue     string
	quit      chan struct{}
	ackerDone chan struct{}

	mu  sync.Mutex
	err error

	// Gaps, when set, records the handler goroutine's busy time per
	// delivery (from decoded to published), for the benchmark's analysis.
	Gaps interface {
		Enter()
		Exit()
	}
}

// settle is one FIFO entry: a delivery waiting for its forward's confirm
// (confirm=true) or to be rejected.
type settle struct {
	tag     uint64
	confirm bool
}

const (
	basePrefetch       = 100
	baseGlobalPrefetch = 400
)

// Name is "baseline".
func (b *Forwarder) Name() string { return "baseline" }

// Queues is the queue it declared.
func (b *Forwarder) Queues() []string { return []string{b.queue} }

func (b *Forwarder) fail(err error) {
	b.mu.Lock()
	if b.err == nil {
		b.err = err
	}
	b.mu.Unlock()
}

// Err reports a failure of the running service (nil while healthy).
func (b *Forwarder) Err() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

func (b *Forwarder) watch(what string, ch chan *amqp.Error) {
	go func() {
		for e := range ch {
			if e != nil {
				b.fail(fmt.Errorf("%s closed: %w", what, e))
			}
		}
	}()
}

// Start connects, declares the queue bench-<tag>-in bound to in, and
// returns once it consumes, forwarding to out.
func (b *Forwarder) Start(ctx context.Context, url, tag, in, out string) (err error) {
	defer func() {
		if err != nil {
			b.closeConns()
		}
	}()
	if b.sub, err = dial(url, "bench-baseline-sub"); err != nil {
		return err
	}
	b.watch("consuming connection", b.sub.NotifyClose(make(chan *amqp.Error, 1)))
	if b.pub, err = dial(url, "bench-baseline-pub"); err != nil {
		return err
	}
	b.watch("publishing connection", b.pub.NotifyClose(make(chan *amqp.Error, 1)))

	if b.pubCh, err = b.pub.Channel(); err != nil {
		return err
	}
	b.watch("publishing channel", b.pubCh.NotifyClose(make(chan *amqp.Error, 1)))
	// At most baseGlobalPrefetch forwards are unconfirmed (each holds an
	// unacked delivery), so this buffer never fills.
	confirms := b.pubCh.NotifyPublish(make(chan amqp.Confirmation, baseGlobalPrefetch+1))
	if err := b.pubCh.Confirm(false); err != nil {
		return fmt.Errorf("confirm.select: %w", err)
	}

	if b.subCh, err = b.sub.Channel(); err != nil {
		return err
	}
	b.watch("consuming channel", b.subCh.NotifyClose(make(chan *amqp.Error, 1)))
	cancels := b.subCh.NotifyCancel(make(chan string, 1))
	go func() {
		for t := range cancels {
			b.fail(fmt.Errorf("consumer %s cancelled by the broker", t))
		}
	}()
	if err := b.subCh.Qos(basePrefetch, 0, false); err != nil {
		return err
	}
	if err := b.subCh.Qos(baseGlobalPrefetch, 0, true); err != nil {
		return err
	}
	b.queue = "bench-" + tag + "-in"
	if _, err := b.subCh.QueueDeclare(b.queue, true, false, false, false, amqp.Table{"x-expires": int64(86400000)}); err != nil {
		return err
	}
	if err := b.subCh.QueueBind(b.queue, in, "amq.topic", false, nil); err != nil {
		return err
	}
	deliveries, err := b.subCh.Consume(b.queue, "bench-baseline", false, false, false, false, nil)
	if err != nil {
		return err
	}

	// The FIFO holds every unsettled delivery: at most the prefetch.
	fifo := make(chan settle, baseGlobalPrefetch+1)
	b.quit = make(chan struct{})
	b.ackerDone = make(chan struct{})
	svcUUID := newUUID4()
	go b.handle(deliveries, fifo, svcUUID, out)
	go b.ack(fifo, confirms)
	return nil
}

// handle is the single handler goroutine: decode, forward, next.
func (b *Forwarder) handle(deliveries <-chan amqp.Delivery, fifo chan<- settle, svcUUID, out string) {
	defer close(fifo)
	for {
		var d amqp.Delivery
		var ok bool
		select {
		case d, ok = <-deliveries:
			if !ok {
				return
			}
		case <-b.quit:
			return
		}
		var data any
		if _, err := envelope.JSON.Parse(d.Body, &data, envelope.Options{}); err != nil {
			// Never requeue what cannot be decoded.
			fifo <- settle{tag: d.DeliveryTag}
			continue
		}
		if b.Gaps != nil {
			b.Gaps.Enter()
		}
		now := time.Now()
		msgUUID := svcUUID + "." + newUUID4()
		body, err := envelope.JSON.Build(envelope.Build{
			Service:     envelope.Service{Name: "bench-baseline", UUID: svcUUID},
			Topic:       out,
			MessageUUID: msgUUID,
			Time:        now,
		}, data, envelope.Options{})
		if err != nil {
			fifo <- settle{tag: d.DeliveryTag}
			continue
		}
		// The tag goes in before the publish: its confirm cannot come
		// earlier.
		fifo <- settle{tag: d.DeliveryTag, confirm: true}
		if err := b.pubCh.Publish("amq.topic", out, false, false, amqp.Publishing{
			ContentType:  "application/json",
			DeliveryMode: amqp.Persistent,
			MessageId:    msgUUID,
			Timestamp:    now,
			AppId:        "bench-baseline",
			Body:         body,
		}); err != nil {
			b.fail(fmt.Errorf("publish: %w", err))
			return
		}
		if b.Gaps != nil {
			b.Gaps.Exit()
		}
	}
}

// ack owns the consuming channel: it settles each delivery in FIFO order,
// a forwarded one when its confirm arrives.
func (b *Forwarder) ack(fifo <-chan settle, confirms <-chan amqp.Confirmation) {
	defer close(b.ackerDone)
	for s := range fifo {
		if !s.confirm {
			if err := b.subCh.Reject(s.tag, false); err != nil {
				b.fail(err)
				return
			}
			continue
		}
		c, ok := <-confirms
		if !ok {
			b.fail(errors.New("publishing channel closed with forwards unconfirmed"))
			return
		}
		var err error
		if c.Ack {
			err = b.subCh.Ack(s.tag, false)
		} else {
			err = b.subCh.Nack(s.tag, false, true)
		}
		if err != nil {
			b.fail(err)
			return
		}
	}
}

// Stop stops taking deliveries, waits until every forward in flight is
// confirmed and its delivery acked, then closes both connections (the
// broker requeues deliveries not handled yet).
func (b *Forwarder) Stop(ctx context.Context) error {
	if b.quit == nil {
		b.closeConns()
		return nil
	}
	close(b.quit)
	var err error
	select {
	case <-b.ackerDone:
	case <-ctx.Done():
		err = fmt.Errorf("baseline drain: %w", ctx.Err())
	}
	b.closeConns()
	return errors.Join(err, b.Err())
}

func (b *Forwarder) closeConns() {
	if b.sub != nil {
		_ = b.sub.Close()
	}
	if b.pub != nil {
		_ = b.pub.Close()
	}
}

func dial(url, name string) (*amqp.Connection, error) {
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(name)
	conn, err := amqp.DialConfig(url, amqp.Config{
		Heartbeat:  10 * time.Second,
		Properties: props,
		Locale:     "en_US",
		Dial:       amqp.DefaultDial(10 * time.Second),
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", name, err)
	}
	return conn, nil
}

func newUUID4() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
