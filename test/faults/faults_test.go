//go:build faults

package faults

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/test/brokertest"
)

// TestFaults runs every scenario in turn and prints the table.
func TestFaults(t *testing.T) {
	defer printTable()
	t.Run("handler panics and a killed actor", scenarioPanicsAndKills)
	t.Run("poison messages", scenarioPoison)
	t.Run("broker closes connections", scenarioCloseConnections)
	t.Run("50 routes reconnect", scenarioFiftyRoutes)
	t.Run("broker restart", scenarioBrokerRestart)
	t.Run("network cut", scenarioNetworkCut)
	t.Run("node SIGTERM and restart", scenarioNodeRestart)
	t.Run("memory alarm", scenarioMemoryAlarm)
}

// 1. Handlers panic on some messages; the route's actor is stopped, then
// poisoned, from outside.
func scenarioPanicsAndKills(t *testing.T) {
	r := newRun(t, "handler panics + actor stopped/poisoned", N)
	var seen sync.Map
	var events testutil.SupervisorEvents
	svc := r.consumer("faults-panics", func(ctx context.Context, id string) error {
		// Every 1000th message panics the first time it is handled.
		if strings.HasSuffix(id, "500") {
			if _, again := seen.LoadOrStore(id, true); !again {
				panic("injected handler panic on " + id)
			}
		}
		return nil
	}, []hato.Option{fastSupervision, hato.WithSupervisorEvents(func(e hato.SupervisorEvent) { events.Add(e); r.onEvent(e) })}, hato.Concurrency(4))
	testutil.Start(t, svc)
	p := r.publisher("faults-panics-pub")
	done := r.PublishAll(p, r.key, 0)

	pid := svc.Routes()[0].Actor
	r.WaitConfirmed(0.3)
	r.faultStart = time.Now()
	svc.ActorSystem().Root.Stop(pid)
	r.WaitConfirmed(0.6)
	svc.ActorSystem().Root.Poison(pid)
	r.WaitPublished(done)
	r.Settle(time.Minute)
	testutil.Stop(t, svc)
	res := r.finish(r.leftInQueues(svc.Routes()[0].Queue), r.sinceFault(firstTime(events.FirstAfter(hato.EventRespawned, r.faultStart))),
		fmt.Sprintf("%d panics, %d restarts, %d respawns", events.Count(hato.EventFailed),
			events.Count(hato.EventRestarted), events.Count(hato.EventRespawned)))
	if events.Count(hato.EventFailed) < 10 || events.Count(hato.EventRespawned) < 2 {
		t.Errorf("supervision events: %s", res.notes)
	}
}

// 2. Some messages always fail (error), some always panic: the good ones
// are all handled, the poison ends in the dead-letter queue with its
// reason, nothing loops.
func scenarioPoison(t *testing.T) {
	r := newRun(t, "poison messages", N)
	failing := map[string]bool{"m-17": true, "m-2500": true, "m-5000": true, "m-7777": true, "m-9999": true}
	panicking := map[string]bool{"m-42": true, "m-6000": true, "m-8888": true}
	var attempts sync.Map
	var dl testutil.DeliveryEvents
	svc := r.consumer("faults-poison", func(ctx context.Context, id string) error {
		n, _ := attempts.LoadOrStore(id, new(atomic.Int32))
		n.(*atomic.Int32).Add(1)
		switch {
		case failing[id]:
			return errors.New("injected permanent failure")
		case panicking[id]:
			panic("injected permanent panic")
		}
		return nil
	}, []hato.Option{fastSupervision, hato.WithDeliveryEvents(dl.Add),
		hato.FailureHandling(hato.FailurePolicy{MaxAttempts: 3, MaxRedeliveries: 3})})
	testutil.Start(t, svc)
	p := r.publisher("faults-poison-pub")
	r.WaitPublished(r.PublishAll(p, r.key, 0))
	// The poison is never "handled" (the handler fails before recording).
	for id := range failing {
		r.Forget(id)
	}
	for id := range panicking {
		r.Forget(id)
	}
	r.Settle(time.Minute)
	brokertest.WaitFor(t, time.Minute, func() bool { return dl.Len() == len(failing)+len(panicking) }, "poison dead-lettered")
	route := svc.Routes()[0]
	testutil.Stop(t, svc)

	for id := range failing {
		if n, _ := attempts.Load(id); n.(*atomic.Int32).Load() != 3 {
			t.Errorf("%s ran %d times, want exactly MaxAttempts=3", id, n.(*atomic.Int32).Load())
		}
	}
	for id := range panicking {
		if n, _ := attempts.Load(id); n.(*atomic.Int32).Load() > 5 {
			t.Errorf("%s crashed its handler %d times: poison detection must stop it", id, n.(*atomic.Int32).Load())
		}
	}
	conn := amqpDial(t, r.url)
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	inDLQ, distinct := 0, map[string]bool{}
	for {
		d, ok, err := ch.Get(route.DeadLetterQueue, true)
		if err != nil || !ok {
			break
		}
		inDLQ++
		distinct[d.MessageId] = true
		if reason, _ := d.Headers["x-hato-reason"].(string); reason == "" {
			t.Errorf("dead-lettered message without a reason: %v", d.Headers)
		}
	}
	// At least once: a crash between a dead-letter confirm and the ack of
	// the original can (rarely) dead-letter it twice.
	if len(distinct) != len(failing)+len(panicking) {
		t.Errorf("dead-letter queue holds %d messages, %d distinct; want all %d poison messages",
			inDLQ, len(distinct), len(failing)+len(panicking))
	}
	r.finish(r.leftInQueues(route.Queue), 0, fmt.Sprintf("all %d poison (%d failing, %d panicking) in the DLQ with reason (%d copies)",
		len(distinct), len(failing), len(panicking), inDLQ))
}

// 3. The broker closes hato's connections (consumer's and publisher's) mid-stream, twice.
func scenarioCloseConnections(t *testing.T) {
	r := newRun(t, "broker closes hato's connections", N)
	svc := r.consumer("faults-close", nil, []hato.Option{hato.WithConnectionName("faults-close-consumer")}, hato.Concurrency(4))
	testutil.Start(t, svc)
	p := r.publisher("faults-close-pub", hato.WithConnectionName("faults-close-publisher"))
	done := r.PublishAll(p, r.key, 0)
	ours := brokertest.NamePrefix("faults-close-")
	closed := 0
	for i, at := range []float64{0.3, 0.6} {
		r.WaitConfirmed(at)
		if i == 0 {
			r.faultStart = time.Now()
		}
		n, err := brokertest.CloseConnections(ours, "hato fault test")
		if err != nil {
			t.Fatal(err)
		}
		closed += n
	}
	r.WaitPublished(done)
	r.Settle(time.Minute)
	testutil.Stop(t, svc)
	r.faultStart = r.lostAt(r.faultStart) // when the first close hit, not when rabbitmqctl started
	r.finish(r.leftInQueues(svc.Routes()[0].Queue), r.reconnected(1), fmt.Sprintf("%d connections closed in 2 rounds; recovery = channel lost to consuming again", closed))
	if closed < 4 {
		t.Errorf("closed only %d connections", closed)
	}
}

// 3b. A service with 50 routes loses its connections: every route
// re-declares and resumes.
func scenarioFiftyRoutes(t *testing.T) {
	const routes = 50
	r := newRun(t, "50 routes, connections closed", routes*20)
	svc, err := hato.New("faults-fifty", r.opts(hato.WithConnectionName("faults-fifty"), hato.WithSupervisorEvents(r.onEvent))...)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < routes; i++ {
		key := fmt.Sprintf("fifty.%d", i)
		if err := hato.Subscribe(svc, key, func(ctx context.Context, m *hato.Message[map[string]string]) error {
			r.started()
			r.Handled.Add(m.Data["id"])
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	testutil.Start(t, svc)
	r.faultStart = time.Now()
	if _, err := brokertest.CloseConnections(brokertest.NamePrefix("faults-fifty-"), "hato fault test"); err != nil {
		t.Fatal(err)
	}
	// Every route must be consuming again: one consumer per queue.
	conn := amqpDial(t, r.url)
	brokertest.WaitFor(t, time.Minute, func() bool {
		for _, rt := range svc.Routes() {
			if _, c, err := brokertest.InspectQueue(conn, rt.Queue); err != nil || c != 1 {
				return false
			}
		}
		return true
	}, "every route consuming again")
	r.faultStart = r.lostAt(r.faultStart)
	p := r.publisher("faults-fifty-pub")
	for i, id := range r.IDs {
		if err := r.Publish(p, fmt.Sprintf("fifty.%d", i%routes), id); err != nil {
			t.Fatal(err)
		}
	}
	r.Settle(time.Minute)
	queues := make([]string, 0, routes)
	for _, rt := range svc.Routes() {
		queues = append(queues, rt.Queue)
	}
	testutil.Stop(t, svc)
	r.finish(r.leftInQueues(queues...), r.reconnected(routes), "from the first route losing its channel to all 50 consuming again; each then got its messages")
}

// 4. The broker application restarts mid-stream (durable queues,
// persistent messages).
func scenarioBrokerRestart(t *testing.T) {
	r := newRun(t, "broker restart (stop_app/start_app)", N)
	svc := r.consumer("faults-restart", nil, nil, hato.Concurrency(4))
	testutil.Start(t, svc)
	p := r.publisher("faults-restart-pub")
	done := r.PublishAll(p, r.key, 0)
	r.WaitConfirmed(0.3)
	t.Run("stop_app for 3s", func(t *testing.T) {
		r.faultStart = time.Now()
		brokertest.StopApp(t)
		time.Sleep(3 * time.Second) // the outage itself
		brokertest.StartApp(t)
		r.faultEnd = time.Now()
	})
	r.WaitPublished(done)
	r.Settle(2 * time.Minute)
	testutil.Stop(t, svc)
	r.faultStart = r.lostAt(r.faultStart) // when the connections dropped
	r.finish(r.leftInQueues(svc.Routes()[0].Queue), r.reconnected(1), fmt.Sprintf("app down 3s + restart; recovery = channel lost to consuming again; %d publish errors", r.Failed()))
}

// 5. The network goes silent for several seconds (a proxy stops
// forwarding); heartbeats detect it; traffic resumes.
func scenarioNetworkCut(t *testing.T) {
	r := newRun(t, "network cut (proxy paused 8s)", N)
	proxy, viaProxy := brokertest.Proxy(t, r.url)
	svc := r.consumer("faults-netcut", nil, []hato.Option{hato.WithURL(viaProxy), hato.WithHeartbeat(2 * time.Second)}, hato.Concurrency(4))
	testutil.Start(t, svc)
	p := r.publisher("faults-netcut-pub", hato.WithURL(viaProxy), hato.WithHeartbeat(2*time.Second))
	done := r.PublishAll(p, r.key, 0)
	r.WaitConfirmed(0.3)
	r.faultStart = time.Now()
	proxy.Pause()
	time.Sleep(8 * time.Second) // the cut itself: longer than heartbeat detection (3 × 2s)
	proxy.Resume()
	r.faultEnd = time.Now()
	r.WaitPublished(done)
	r.Settle(2 * time.Minute)
	testutil.Stop(t, svc)
	st := proxy.Stats()
	detected := r.lostAt(r.faultStart).Sub(r.faultStart).Round(10 * time.Millisecond)
	r.finish(r.leftInQueues(svc.Routes()[0].Queue), r.reconnected(1), fmt.Sprintf("8s black hole, heartbeat 2s: loss detected after %s; recovery from the cut's start; %d proxied connections", detected, st.Accepted))
	if st.Accepted <= 4 {
		t.Errorf("only %d connections through the proxy: the cut was not detected", st.Accepted)
	}
}

// 6. The example node gets SIGTERM mid-stream and is started again.
func scenarioNodeRestart(t *testing.T) {
	r := newRun(t, "example node SIGTERM + restart", N)
	bin := buildExample(t)
	// The responses are the handled messages.
	collector, err := hato.New("faults-node-collector", r.opts()...)
	if err != nil {
		t.Fatal(err)
	}
	if err := hato.Subscribe(collector, "example.response", func(ctx context.Context, m *hato.Message[map[string]string]) error {
		r.started()
		r.Handled.Add(m.Data["id"])
		return nil
	}, hato.Concurrency(4)); err != nil {
		t.Fatal(err)
	}
	testutil.Start(t, collector)

	node := startNode(t, bin, r.url)
	waitBound(t, r.url)
	p := r.publisher("faults-node-pub")
	done := r.PublishAll(p, "example.topic", 0)
	r.WaitConfirmed(0.3)
	r.faultStart = time.Now()
	if err := node.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code := waitExit(t, node, 60*time.Second)
	node = startNode(t, bin, r.url)
	r.faultEnd = time.Now()
	r.WaitPublished(done)
	r.Settle(2 * time.Minute)
	_ = node.Process.Signal(syscall.SIGTERM)
	code2 := waitExit(t, node, 60*time.Second)
	testutil.Stop(t, collector)
	queue := "6db12a9d302beb382083af15edb16743a71606430dccfd286ab4dd577289d175" // sha256("example.topic")
	r.finish(r.leftInQueues(queue, collector.Routes()[0].Queue), r.handledAfterFault(), fmt.Sprintf("exit codes %d and %d after SIGTERM", code, code2))
	if code != hato.ExitOK || code2 != hato.ExitOK {
		t.Errorf("exit codes %d, %d; want %d", code, code2, hato.ExitOK)
	}
}

// 7. The broker's memory alarm blocks publishers, then clears; consumers
// keep consuming meanwhile.
func scenarioMemoryAlarm(t *testing.T) {
	// The lock first: waiting for it after the load started would let the
	// consumer drain the backlog before the alarm.
	brokertest.Exclusive(t)
	r := newRun(t, "memory alarm blocks publishers", N)
	// A slow consumer that waits for the alarm, so a backlog exists when
	// the alarm starts however long raising it takes (the broker-wide fault
	// lock may wait for another process).
	alarmOn := make(chan struct{})
	var openOnce sync.Once
	open := func() { openOnce.Do(func() { close(alarmOn) }) }
	t.Cleanup(open)
	svc := r.consumer("faults-alarm", func(ctx context.Context, id string) error {
		select {
		case <-alarmOn:
		case <-ctx.Done():
			return ctx.Err()
		}
		time.Sleep(time.Millisecond) // a handler doing some work
		return nil
	}, nil)
	testutil.Start(t, svc)
	p := r.publisher("faults-alarm-pub")
	done := r.PublishAll(p, r.key, 0)
	r.WaitConfirmed(0.5)
	var confirmedDuring, handledDuring int64
	t.Run("alarm for 5s", func(t *testing.T) {
		brokertest.SetMemoryWatermark(t, "0.000001")
		brokertest.WaitFor(t, time.Minute, func() bool { a, _ := brokertest.MemoryAlarm(); return a }, "memory alarm")
		r.faultStart = time.Now()
		c0, h0 := r.Confirmed(), int64(r.Handled.Total())
		open()
		time.Sleep(5 * time.Second)
		confirmedDuring, handledDuring = r.Confirmed()-c0, int64(r.Handled.Total())-h0
	}) // the cleanup restores the watermark
	r.faultEnd = time.Now()
	r.WaitPublished(done)
	r.Settle(2 * time.Minute)
	testutil.Stop(t, svc)
	r.finish(r.leftInQueues(svc.Routes()[0].Queue), r.confirmedAfterFault(),
		fmt.Sprintf("5s alarm: %d publishes confirmed, %d messages handled meanwhile", confirmedDuring, handledDuring))
	if handledDuring == 0 {
		t.Error("consumers stalled during the memory alarm")
	}
}

func buildExample(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "amqp-example")
	cmd := exec.Command("go", "build", "-o", bin, "./examples/amqp-example")
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

func startNode(t *testing.T, bin, url string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "AMQP_URL="+url)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_, _ = cmd.Process.Wait()
		}
	})
	return cmd
}

func waitExit(t *testing.T, cmd *exec.Cmd, timeout time.Duration) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(timeout):
		_ = cmd.Process.Kill()
		t.Fatalf("node did not exit within %s", timeout)
		return -1
	}
}

// waitBound waits until the node has bound example.topic.
func waitBound(t *testing.T, url string) {
	conn := amqpDial(t, url)
	brokertest.WaitFor(t, time.Minute, func() bool {
		_, consumers, err := brokertest.InspectQueue(conn, "6db12a9d302beb382083af15edb16743a71606430dccfd286ab4dd577289d175")
		return err == nil && consumers == 1
	}, "the example node consuming")
}

func firstTime(t time.Time, _ bool) time.Time { return t }
