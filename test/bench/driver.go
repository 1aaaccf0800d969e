package main

import (
	"context"
	"errors"
	"fmt"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato/envelope"
)

// pubWindow bounds unconfirmed publishes per driver publishing channel.
const pubWindow = 2000

// driver publishes to the service's input key and consumes its output key,
// on connections of its own: two publishing connections (one channel in
// confirm mode each, so two goroutines publish in parallel) and one
// consuming connection.
type driver struct {
	url           string
	brokerVersion string
	pubs          []*pubChan
	sub           *amqp.Connection
	errs          *connErrors
	t0            time.Time
	uuid          string
}

// connErrors records the first error reported by any NotifyClose.
type connErrors struct {
	mu  sync.Mutex
	err error
}

func (c *connErrors) set(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
}

func (c *connErrors) get() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// watchClose drains a NotifyClose channel (buffered, drained until closed)
// and records an unexpected close.
func (c *connErrors) watchClose(what string, ch chan *amqp.Error) {
	go func() {
		for e := range ch {
			if e != nil {
				c.set(fmt.Errorf("%s closed: %w", what, e))
			}
		}
	}()
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

func newDriver(url string) (*driver, error) {
	d := &driver{url: url, errs: &connErrors{}, t0: time.Now(), uuid: newUUID4()}
	ok := false
	defer func() {
		if !ok {
			d.close()
		}
	}()
	for i := range 2 {
		conn, err := dial(url, fmt.Sprintf("bench-driver-pub%d", i))
		if err != nil {
			return nil, err
		}
		d.errs.watchClose("driver publishing connection", conn.NotifyClose(make(chan *amqp.Error, 1)))
		if v, ok := conn.Properties["version"].(string); ok {
			d.brokerVersion = v
		}
		p, err := newPubChan(conn, d.errs)
		if err != nil {
			_ = conn.Close()
			return nil, err
		}
		d.pubs = append(d.pubs, p)
	}
	sub, err := dial(url, "bench-driver-sub")
	if err != nil {
		return nil, err
	}
	d.errs.watchClose("driver consuming connection", sub.NotifyClose(make(chan *amqp.Error, 1)))
	d.sub = sub
	ok = true
	return d, nil
}

func (d *driver) close() {
	for _, p := range d.pubs {
		_ = p.conn.Close()
	}
	if d.sub != nil {
		_ = d.sub.Close()
	}
}

// now is the driver's clock: monotonic nanoseconds since it started.
func (d *driver) now() int64 { return int64(time.Since(d.t0)) }

// pubChan is one publishing channel in confirm mode. Publishes are
// pipelined: a window of pubWindow unconfirmed messages, released by a
// goroutine draining the (buffered) confirm channel.
type pubChan struct {
	conn    *amqp.Connection
	ch      *amqp.Channel
	slots   chan struct{}
	nacks   atomic.Int64
	gone    chan struct{} // closed when the confirm channel closed
	headers amqp.Table    // set per session, before publishing (see traceHeaders)
}

func newPubChan(conn *amqp.Connection, errs *connErrors) (*pubChan, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, err
	}
	errs.watchClose("driver publishing channel", ch.NotifyClose(make(chan *amqp.Error, 1)))
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, pubWindow+1))
	if err := ch.Confirm(false); err != nil {
		return nil, err
	}
	p := &pubChan{conn: conn, ch: ch, slots: make(chan struct{}, pubWindow), gone: make(chan struct{})}
	go func() {
		defer close(p.gone)
		for c := range confirms {
			if !c.Ack {
				p.nacks.Add(1)
			}
			<-p.slots
		}
	}()
	return p, nil
}

func (p *pubChan) publish(key string, body []byte) error {
	select {
	case p.slots <- struct{}{}:
	case <-p.gone:
		return errors.New("driver publishing channel closed")
	}
	return p.ch.Publish("amq.topic", key, false, false, amqp.Publishing{
		ContentType: "application/json",
		// The driver's own messages are transient (tomodachi's default):
		// the broker's disk work is then the forwarded messages', which
		// both implementations publish persistent.
		DeliveryMode: amqp.Transient,
		Headers:      p.headers,
		Body:         body,
	})
}

// flush waits until every publish so far is confirmed.
func (p *pubChan) flush(timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	n := 0
	defer func() {
		for range n {
			<-p.slots
		}
	}()
	for n < pubWindow {
		select {
		case p.slots <- struct{}{}:
			n++
		case <-p.gone:
			return errors.New("driver publishing channel closed")
		case <-t.C:
			return fmt.Errorf("driver publishes unconfirmed after %s", timeout)
		}
	}
	if k := p.nacks.Swap(0); k > 0 {
		return fmt.Errorf("broker nacked %d driver publishes", k)
	}
	return nil
}

// payload is the data of each message.
type payload struct {
	ID  int64  `json:"id"`
	TS  int64  `json:"ts"`
	Pad string `json:"pad"`
}

// received is what the driver reads back from each forwarded message.
type received struct {
	ID int64 `json:"id"`
}

// tracking records, per message id of one session, when it was sent and
// received and how often it arrived.
type tracking struct {
	sent  []atomic.Int64
	recv  []atomic.Int64
	count []atomic.Int32
	stray atomic.Int64 // ids out of range or unreadable bodies
	cur   atomic.Pointer[phase]
}

// phase is a range of ids being waited for.
type phase struct {
	lo, hi int
	left   atomic.Int64
	done   chan struct{}
}

func newPhase(lo, hi int) *phase {
	p := &phase{lo: lo, hi: hi, done: make(chan struct{})}
	p.left.Store(int64(hi - lo))
	if hi == lo {
		close(p.done)
	}
	return p
}

// consume reads the output queue (auto-ack) until deliveries closes.
func (d *driver) consume(tr *tracking, deliveries <-chan amqp.Delivery, done chan<- struct{}) {
	defer close(done)
	var r received
	for m := range deliveries {
		now := d.now()
		r.ID = -1
		if _, err := envelope.JSON.Parse(m.Body, &r, envelope.Options{}); err != nil || r.ID < 0 || r.ID >= int64(len(tr.count)) {
			tr.stray.Add(1)
			continue
		}
		id := int(r.ID)
		if tr.count[id].Add(1) != 1 {
			continue
		}
		tr.recv[id].Store(now)
		if p := tr.cur.Load(); p != nil && id >= p.lo && id < p.hi {
			if p.left.Add(-1) == 0 {
				close(p.done)
			}
		}
	}
}

// wait waits for every message of p, failing when none arrives for stall or
// the service or a driver connection fails.
func (d *driver) wait(ctx context.Context, p *phase, svc impl, stall time.Duration) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	last, since := p.left.Load(), time.Now()
	for {
		select {
		case <-p.done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		if err := svc.Err(); err != nil {
			return fmt.Errorf("service failed: %w", err)
		}
		if err := d.errs.get(); err != nil {
			return err
		}
		if left := p.left.Load(); left != last {
			last, since = left, time.Now()
		} else if time.Since(since) > stall {
			return fmt.Errorf("%w: %d of %d messages not forwarded (no message for %s)", errLost, left, p.hi-p.lo, stall)
		}
	}
}

var errLost = errors.New("messages lost")

// build makes the envelope of message id.
func (d *driver) build(in string, id int, pad string) []byte {
	now := time.Now()
	body, err := envelope.JSON.Build(envelope.Build{
		Service: envelope.Service{Name: "bench-driver", UUID: d.uuid},
		Topic:   in,
		Time:    now,
	}, payload{ID: int64(id), TS: now.UnixNano(), Pad: pad}, envelope.Options{})
	if err != nil {
		panic(err) // a fixed struct always marshals
	}
	return body
}

// blast publishes ids [lo, hi) from prebuilt bodies, as fast as the broker
// confirms, split over the driver's publishing channels, and waits for
// every confirm.
func (d *driver) blast(tr *tracking, in string, lo int, bodies [][]byte) error {
	var wg sync.WaitGroup
	errs := make([]error, len(d.pubs))
	for g, p := range d.pubs {
		wg.Go(func() {
			for i := g; i < len(bodies); i += len(d.pubs) {
				tr.sent[lo+i].Store(d.now())
				if err := p.publish(in, bodies[i]); err != nil {
					errs[g] = err
					return
				}
			}
			errs[g] = p.flush(30 * time.Second)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// paced publishes ids [lo, hi) at rate msg/s, building each message when it
// is due, message id with routing key keyOf(id).
func (d *driver) paced(ctx context.Context, tr *tracking, keyOf func(id int) string, lo, hi, rate int, pad string) error {
	p := d.pubs[0]
	start := time.Now()
	next := lo
	for next < hi {
		if err := ctx.Err(); err != nil {
			return err
		}
		due := lo + int(time.Since(start).Seconds()*float64(rate)) + 1
		for ; next < hi && next < due; next++ {
			in := keyOf(next)
			body := d.build(in, next, pad)
			tr.sent[next].Store(d.now())
			if err := p.publish(in, body); err != nil {
				return err
			}
		}
		if next < hi {
			at := start.Add(time.Duration(float64(next-lo) / float64(rate) * float64(time.Second)))
			time.Sleep(time.Until(at))
		}
	}
	return p.flush(30 * time.Second)
}

// cpuTimes is CPU seconds used by this process, by the broker and by the
// whole host.
type cpuTimes struct{ self, broker, host float64 }

func readCPU(brokerPID int) cpuTimes {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	t := cpuTimes{self: tv(ru.Utime) + tv(ru.Stime), host: hostBusy()}
	if brokerPID > 0 {
		t.broker = procCPU(brokerPID)
	}
	return t
}

// svcCPU is the CPU seconds of a service in its own process (0 for one in
// this process, whose CPU is counted in this process's).
func svcCPU(svc impl) float64 {
	if p, ok := svc.(interface{ PID() int }); ok {
		return procCPU(p.PID())
	}
	return 0
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

// session measures one implementation once: warm-up, throughput, latency at
// a fixed rate, then the exactly-once check over every id it published.
func (d *driver) session(ctx context.Context, svc impl, round int, o options) (result, error) {
	res := result{Impl: svc.Name(), Round: round}
	tag := fmt.Sprintf("%s-r%d-%s", strings.ReplaceAll(svc.Name(), "/", "-"), round, newUUID4()[:8])
	in, out := "bench."+tag+".in", "bench."+tag+".out"
	if k, ok := svc.(interface{ Keys() (string, string) }); ok {
		// A node in its own process has its keys built in.
		in, out = k.Keys()
	}
	res.Load = loadavg()
	latN := int(o.duration.Seconds() * float64(o.rate))
	total := o.warmup + o.n + latN
	tr := &tracking{sent: make([]atomic.Int64, total), recv: make([]atomic.Int64, total), count: make([]atomic.Int32, total)}
	pad := strings.Repeat("x", o.pad)

	// The driver's output queue exists before anything is published.
	ch, err := d.sub.Channel()
	if err != nil {
		return res, fmt.Errorf("driver channel: %w", err)
	}
	d.errs.watchClose("driver consuming channel", ch.NotifyClose(make(chan *amqp.Error, 1)))
	outQ := "bench-" + tag + "-out"
	queues := []string{outQ}
	defer func() { d.deleteQueues(queues) }()
	if _, err := ch.QueueDeclare(outQ, true, false, false, false, amqp.Table{"x-expires": int64(600000)}); err != nil {
		return res, fmt.Errorf("declare %s: %w", outQ, err)
	}
	if err := ch.QueueBind(outQ, out, "amq.topic", false, nil); err != nil {
		return res, fmt.Errorf("bind %s: %w", outQ, err)
	}
	deliveries, err := ch.Consume(outQ, "bench-driver", true, false, false, false, nil)
	if err != nil {
		return res, fmt.Errorf("consume %s: %w", outQ, err)
	}
	consumed := make(chan struct{})
	go d.consume(tr, deliveries, consumed)
	consuming := true
	stopConsuming := func() {
		if consuming {
			consuming = false
			_ = ch.Close()
			<-consumed
		}
	}
	defer stopConsuming()

	// Every goroutine the service starts carries the label role=svc-<impl>
	// (the driver's carry role=driver), so a CPU profile separates them:
	// go tool pprof -tagfocus role=svc-hato ...
	startCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	pprof.Do(startCtx, pprof.Labels("role", "svc-"+svc.Name()), func(ctx context.Context) {
		err = svc.Start(ctx, d.url, tag, in, out)
	})
	cancel()
	queues = append(queues, svc.Queues()...)
	if err != nil {
		return res, fmt.Errorf("start: %w", err)
	}
	for _, p := range d.pubs {
		p.headers = traceHeaders(svc)
	}
	running := true
	stopSvc := func() error {
		if !running {
			return nil
		}
		running = false
		sctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		return svc.Stop(sctx)
	}
	defer func() { _ = stopSvc() }()

	// Warm-up: connections, JIT-free but caches, pools and the broker's
	// queue processes; discarded.
	if o.warmup > 0 {
		ph := newPhase(0, o.warmup)
		tr.cur.Store(ph)
		if err := d.blast(tr, in, 0, d.buildAll(in, 0, o.warmup, pad)); err != nil {
			return res, fmt.Errorf("warm-up publish: %w", err)
		}
		if err := d.wait(ctx, ph, svc, o.stall); err != nil {
			return res, fmt.Errorf("warm-up: %w", err)
		}
	}

	// Throughput: publish N as fast as the broker confirms; time from the
	// first publish to the last forwarded message received.
	lo, hi := o.warmup, o.warmup+o.n
	bodies := d.buildAll(in, lo, hi, pad)
	ph := newPhase(lo, hi)
	tr.cur.Store(ph)
	cpu0 := readCPU(brokerPID)
	svcCPU0 := svcCPU(svc)
	start := d.now()
	if err := d.blast(tr, in, lo, bodies); err != nil {
		return res, fmt.Errorf("throughput publish: %w", err)
	}
	pubEnd := d.now()
	if err := d.wait(ctx, ph, svc, o.stall); err != nil {
		res.Missing = int(ph.left.Load())
		return res, fmt.Errorf("throughput: %w", err)
	}
	cpu1 := readCPU(brokerPID)
	svcCPU1 := svcCPU(svc)
	end := start
	for i := lo; i < hi; i++ {
		end = max(end, tr.recv[i].Load())
	}
	secs := time.Duration(end - start).Seconds()
	res.Throughput = float64(o.n) / secs
	res.ThroughputSeconds = secs
	res.PublishRate = float64(o.n) / time.Duration(pubEnd-start).Seconds()
	res.CPUSelfUsPerMsg = (cpu1.self - cpu0.self) / float64(o.n) * 1e6
	res.CPUServiceUsPerMsg = (svcCPU1 - svcCPU0) / float64(o.n) * 1e6
	if brokerPID > 0 {
		res.CPUBrokerUsPerMsg = (cpu1.broker - cpu0.broker) / float64(o.n) * 1e6
		// Whatever else ran on the host meanwhile (other tests, builds):
		// the noise indicator.
		res.OtherLoad = max(0, (cpu1.host-cpu0.host)-(cpu1.self-cpu0.self)-(cpu1.broker-cpu0.broker)-(svcCPU1-svcCPU0)) / secs
	}
	logf("  throughput %.0f msg/s (%d msgs in %.2fs; driver published at %.0f msg/s)", res.Throughput, o.n, secs, res.PublishRate)

	// Latency at a fixed rate.
	lo, hi = hi, hi+latN
	ph = newPhase(lo, hi)
	tr.cur.Store(ph)
	pstart := time.Now()
	if err := d.paced(ctx, tr, func(int) string { return in }, lo, hi, o.rate, pad); err != nil {
		return res, fmt.Errorf("latency publish: %w", err)
	}
	res.Latency.AchievedRate = float64(latN) / time.Since(pstart).Seconds()
	if err := d.wait(ctx, ph, svc, o.stall); err != nil {
		res.Missing = int(ph.left.Load())
		return res, fmt.Errorf("latency: %w", err)
	}
	lats := make([]time.Duration, 0, latN)
	for i := lo; i < hi; i++ {
		lats = append(lats, time.Duration(tr.recv[i].Load()-tr.sent[i].Load()))
	}
	res.Latency.fill(lats)
	logf("  latency at %d/s: p50 %s p99 %s p99.9 %s max %s", o.rate, fmtDur(res.Latency.P50), fmtDur(res.Latency.P99), fmtDur(res.Latency.P999), fmtDur(res.Latency.Max))

	// Exactly once: stop the service (it drains), give late duplicates a
	// moment, then count.
	if err := stopSvc(); err != nil {
		return res, fmt.Errorf("stop: %w", err)
	}
	time.Sleep(200 * time.Millisecond)
	stopConsuming()
	for i := range tr.count {
		switch n := tr.count[i].Load(); {
		case n == 0:
			res.Missing++
		case n > 1:
			res.Duplicates += int(n - 1)
		}
	}
	res.Stray = int(tr.stray.Load())
	res.Published = total
	if res.Missing > 0 || res.Duplicates > 0 || res.Stray > 0 {
		return res, fmt.Errorf("%w: %d published, %d missing, %d duplicated, %d stray", errLost, total, res.Missing, res.Duplicates, res.Stray)
	}
	if err := d.errs.get(); err != nil {
		return res, err
	}
	return res, nil
}

func (d *driver) buildAll(in string, lo, hi int, pad string) [][]byte {
	bodies := make([][]byte, 0, hi-lo)
	for id := lo; id < hi; id++ {
		bodies = append(bodies, d.build(in, id, pad))
	}
	return bodies
}

// deleteQueues removes a session's queues (the vhost goes at the end too).
func (d *driver) deleteQueues(names []string) {
	ch, err := d.sub.Channel()
	if err != nil {
		return
	}
	defer func() { _ = ch.Close() }()
	for _, q := range names {
		if q == "" {
			continue
		}
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			// A failed delete closes the channel; open another.
			_ = ch.Close()
			if ch, err = d.sub.Channel(); err != nil {
				return
			}
		}
	}
}

// traceHeaders are the headers the driver's messages carry for svc: a
// W3C traceparent (as tomodachi writes it) for an implementation measured
// with trace context, none otherwise.
func traceHeaders(svc impl) amqp.Table {
	if t, ok := svc.(interface{ Traced() bool }); ok && t.Traced() {
		return amqp.Table{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	}
	return nil
}
