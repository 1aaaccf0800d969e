//go:build integration

package brokertest

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/url"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato/internal/netproxy"
)

// ctlWait bounds waits whose every poll runs rabbitmqctl: each call starts
// an Erlang VM, ~1 s normally but 5-15 s on a loaded 2-CPU machine.
const ctlWait = 90 * time.Second

func TestRequire(t *testing.T) {
	Require(t)
	Require(t) // cached
}

func TestRabbitmqctlErrorIncludesOutput(t *testing.T) {
	_, err := Rabbitmqctl("no_such_command_hato")
	if err == nil || !strings.Contains(err.Error(), "no_such_command_hato") {
		t.Fatalf("err = %v", err)
	}
	t.Setenv(EnvRabbitmqctl, "/nonexistent/rabbitmqctl")
	if _, err := Rabbitmqctl("status"); err == nil || !strings.Contains(err.Error(), EnvRabbitmqctl) {
		t.Fatalf("err = %v", err)
	}
}

func TestNewVhostCreatesAndDeletes(t *testing.T) {
	var vhost string
	t.Run("inner", func(t *testing.T) {
		var url string
		vhost, url = NewVhost(t)
		if !strings.HasPrefix(vhost, VhostPrefix+"TestNewVhostCreatesAndDeletes-inner-") {
			t.Errorf("vhost name %q", vhost)
		}
		vhosts, err := ListVhosts()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(vhosts, vhost) {
			t.Fatalf("vhost %q not in %q", vhost, vhosts)
		}
		// The BaseURL user can use it.
		conn := Dial(t, url, "hato-bt-newvhost")
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ch.QueueDeclare("q", false, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		queues, err := ListQueues(vhost)
		if err != nil || len(queues) != 1 || queues[0].Name != "q" {
			t.Fatalf("ListQueues = %+v, %v", queues, err)
		}
	})
	vhosts, err := ListVhosts()
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(vhosts, vhost) {
		t.Fatalf("vhost %q still exists after cleanup", vhost)
	}
}

func TestListQueuesAndExchangesShowArguments(t *testing.T) {
	conn := Dial(t, pkg.URL(t), UniqueName("hato-bt-", t.Name()))
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	qname := UniqueName("q-", t.Name())
	xname := UniqueName("x-", t.Name())
	if _, err := ch.QueueDeclare(qname, true, false, false, false, amqp.Table{
		"x-expires":              int32(60_000),
		"x-dead-letter-exchange": "dlx",
		"x-max-length":           int64(5),
	}); err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDeclare(xname, "topic", false, true, false, false, amqp.Table{"alternate-exchange": "ae"}); err != nil {
		t.Fatal(err)
	}
	if err := ch.Publish("", qname, false, false, amqp.Publishing{Body: []byte("m")}); err != nil {
		t.Fatal(err)
	}
	// Wait for the publish to land (fast path, no rabbitmqctl in the loop).
	WaitFor(t, 5*time.Second, func() bool { n, _ := Inspect(t, conn, qname); return n == 1 }, "message in %s", qname)

	q, ok, err := FindQueue(pkg.Name(t), qname)
	if err != nil || !ok {
		t.Fatalf("FindQueue = %v, %v", ok, err)
	}
	want := Queue{
		Name: qname, Durable: true, Type: "classic",
		Arguments: map[string]any{"x-expires": int64(60_000), "x-dead-letter-exchange": "dlx", "x-max-length": int64(5)},
		Messages:  1, MessagesReady: 1,
	}
	if !reflect.DeepEqual(q, want) {
		t.Fatalf("queue:\n got %#v\nwant %#v", q, want)
	}
	if _, ok, err := FindQueue(pkg.Name(t), "no-such-queue"); ok || err != nil {
		t.Fatalf("FindQueue(missing) = %v, %v", ok, err)
	}

	exchanges, err := ListExchanges(pkg.Name(t))
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(exchanges, func(e Exchange) bool { return e.Name == xname })
	if i < 0 {
		t.Fatalf("exchange %s not listed in %+v", xname, exchanges)
	}
	wantX := Exchange{Name: xname, Type: "topic", AutoDelete: true, Arguments: map[string]any{"alternate-exchange": "ae"}}
	if !reflect.DeepEqual(exchanges[i], wantX) {
		t.Fatalf("exchange:\n got %#v\nwant %#v", exchanges[i], wantX)
	}
}

func TestConnectionsListCloseAndWait(t *testing.T) {
	prefix := UniqueName("hato-bt-conn-", "") + "-"
	c1 := Dial(t, pkg.URL(t), prefix+"one")
	c2 := Dial(t, pkg.URL(t), prefix+"two")
	other := Dial(t, pkg.URL(t), UniqueName("hato-bt-bystander-", "")) // must survive
	closed1 := c1.NotifyClose(make(chan *amqp.Error, 1))
	closed2 := c2.NotifyClose(make(chan *amqp.Error, 1))

	conns := WaitConnections(t, NamePrefix(prefix), 2, ctlWait)
	names := []string{conns[0].Name, conns[1].Name}
	slices.Sort(names)
	if !reflect.DeepEqual(names, []string{prefix + "one", prefix + "two"}) {
		t.Fatalf("names %q", names)
	}
	for _, c := range conns {
		if !strings.HasPrefix(c.PID, "<") || c.VHost != pkg.Name(t) || c.User != brokerUser() || c.State != "running" || !strings.Contains(c.Addr, " -> ") {
			t.Fatalf("connection %#v", c)
		}
	}

	n, err := CloseConnections(NamePrefix(prefix), "brokertest says bye")
	if err != nil || n != 2 {
		t.Fatalf("CloseConnections = %d, %v", n, err)
	}
	for _, ch := range []chan *amqp.Error{closed1, closed2} {
		select {
		case e := <-ch:
			if e == nil || e.Code != amqp.ConnectionForced || !strings.Contains(e.Reason, "brokertest says bye") {
				t.Fatalf("NotifyClose got %#v", e)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("NotifyClose did not fire")
		}
	}
	WaitConnections(t, NamePrefix(prefix), 0, ctlWait)
	if other.IsClosed() {
		t.Fatal("a connection that did not match was closed")
	}
}

func TestInspect(t *testing.T) {
	conn := Dial(t, pkg.URL(t), UniqueName("hato-bt-", t.Name()))
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q := UniqueName("q-", t.Name())
	if _, err := ch.QueueDeclare(q, false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		dc, err := ch.PublishWithDeferredConfirmWithContext(context.Background(), "", q, false, false, amqp.Publishing{Body: []byte("x")})
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := dc.WaitContext(context.Background()); !ok || err != nil {
			t.Fatalf("confirm: %v %v", ok, err)
		}
	}
	WaitFor(t, 5*time.Second, func() bool { m, _ := Inspect(t, conn, q); return m == 3 }, "3 messages in %s", q)

	cch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := cch.Qos(1, 0, false); err != nil {
		t.Fatal(err)
	}
	if _, err := cch.Consume(q, "", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	WaitFor(t, 5*time.Second, func() bool {
		m, c := Inspect(t, conn, q)
		return c == 1 && m == 2 // one delivered (unacked), two ready
	}, "1 consumer and 2 ready messages")

	// Missing queue: reported as ErrQueueNotFound, the connection survives.
	if _, _, err := InspectQueue(conn, "no-such-queue"); !errors.Is(err, ErrQueueNotFound) {
		t.Fatalf("InspectQueue(missing) = %v", err)
	}
	if QueueExists(t, conn, "no-such-queue") || !QueueExists(t, conn, q) {
		t.Fatal("QueueExists wrong")
	}
	if conn.IsClosed() {
		t.Fatal("connection closed by a passive declare of a missing queue")
	}
	f := runFake(t, func(tb testing.TB) { Inspect(tb, conn, "no-such-queue") })
	if !f.failed || !strings.Contains(f.messages[0], "no-such-queue") {
		t.Fatalf("Inspect(missing): failed=%v %q", f.failed, f.messages)
	}
}

// The watermark values used here are harmless (far above the broker's
// memory use), so this never raises an alarm on a shared broker; raising it
// with "0.000001" was verified manually (MemoryAlarm reports true at once).
func TestSetMemoryWatermarkRestores(t *testing.T) {
	orig, err := MemoryWatermark()
	if err != nil {
		t.Fatal(err)
	}
	t.Run("relative", func(t *testing.T) {
		SetMemoryWatermark(t, "0.39")
		if got, err := MemoryWatermark(); err != nil || !reflect.DeepEqual(got, []string{"0.39"}) {
			t.Fatalf("watermark = %v, %v", got, err)
		}
		t.Run("nested absolute", func(t *testing.T) {
			SetMemoryWatermark(t, "absolute 3000000000")
			if got, err := MemoryWatermark(); err != nil || !reflect.DeepEqual(got, []string{"absolute", "3000000000"}) {
				t.Fatalf("watermark = %v, %v", got, err)
			}
		})
		if got, err := MemoryWatermark(); err != nil || !reflect.DeepEqual(got, []string{"0.39"}) {
			t.Fatalf("after nested cleanup: watermark = %v, %v", got, err)
		}
		if alarm, err := MemoryAlarm(); err != nil || alarm {
			t.Fatalf("MemoryAlarm = %v, %v", alarm, err)
		}
	})
	if got, err := MemoryWatermark(); err != nil || !reflect.DeepEqual(got, orig) {
		t.Fatalf("watermark not restored: %v (want %v), %v", got, orig, err)
	}
}

// TestCrossProcessLock checks that a fault helper waits for other test
// processes holding the shared lock. It uses a private lock directory so it
// neither waits for nor blocks other test processes using the real broker.
func TestCrossProcessLock(t *testing.T) {
	if lockDisabled() {
		t.Fatalf("%s=off: this test needs the lock", EnvLock)
	}
	t.Setenv(EnvLockDir, t.TempDir())
	brokerLock.mu.Lock()
	savedFiles, savedState, savedRefs, savedBroken := brokerLock.files, brokerLock.state, brokerLock.exRefs, brokerLock.broken
	brokerLock.files, brokerLock.state, brokerLock.exRefs, brokerLock.broken = nil, lockNone, 0, false
	brokerLock.mu.Unlock()
	defer func() {
		brokerLock.mu.Lock()
		if f := brokerLock.files; f != nil {
			f.close()
		}
		brokerLock.files, brokerLock.state, brokerLock.exRefs, brokerLock.broken = savedFiles, savedState, savedRefs, savedBroken
		brokerLock.mu.Unlock()
	}()

	acquireShared()
	if brokerLock.state != lockShared {
		t.Fatalf("state %d after acquireShared", brokerLock.state)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), lockHolderEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "locked\n" {
		t.Fatalf("lock holder said %q, %v", line, err)
	}

	if _, err := acquireExclusive(300 * time.Millisecond); err == nil {
		t.Fatal("got the exclusive lock while another process holds the shared one")
	}
	_ = stdin.Close() // the holder exits, releasing its lock
	release, err := acquireExclusive(30 * time.Second)
	if err != nil {
		t.Fatalf("exclusive lock after the holder exited: %v", err)
	}
	if brokerLock.state != lockExclusive {
		t.Fatalf("state %d", brokerLock.state)
	}
	// Nested use keeps it until the last release.
	release2, err := acquireExclusive(time.Second)
	if err != nil {
		t.Fatal(err)
	}
	release()
	release() // idempotent
	if brokerLock.state != lockExclusive {
		t.Fatalf("state %d after inner release", brokerLock.state)
	}
	release2()
	if brokerLock.state != lockNone {
		t.Fatalf("state %d after last release", brokerLock.state)
	}
	acquireShared()
	if brokerLock.state != lockShared {
		t.Fatalf("state %d after release+acquireShared", brokerLock.state)
	}
}

// TestNetproxyAMQP shows the two network faults of internal/netproxy on a real
// AMQP connection: a paused proxy makes heartbeats time out, CutAll drops
// the connection at once.
func TestNetproxyAMQP(t *testing.T) {
	uri, err := amqp.ParseURI(pkg.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	p, err := netproxy.New(net.JoinHostPort(uri.Host, strconv.Itoa(uri.Port)))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	u, err := url.Parse(pkg.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	u.Host = p.Addr()
	proxied := u.String()

	t.Run("pause makes heartbeats time out", func(t *testing.T) {
		conn := DialWith(t, proxied, UniqueName("hato-bt-proxy-", "pause"), amqp.Config{Heartbeat: time.Second})
		closed := conn.NotifyClose(make(chan *amqp.Error, 1))
		// amqp091 arms its heartbeat read deadline only when a frame is
		// read, and clears it at the end of the handshake. A black hole
		// right after Dial would therefore never be detected; one round
		// trip after Dial arms it.
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		if err := ch.Close(); err != nil {
			t.Fatal(err)
		}
		p.Pause()
		defer p.Resume()
		select {
		case e := <-closed:
			if e == nil {
				t.Fatal("connection closed without error")
			}
			t.Logf("closed after pause: %v", e)
		case <-time.After(15 * time.Second):
			t.Fatal("heartbeat timeout not detected while the proxy was paused")
		}
	})
	t.Run("cut drops the connection", func(t *testing.T) {
		conn := DialWith(t, proxied, UniqueName("hato-bt-proxy-", "cut"), amqp.Config{})
		closed := conn.NotifyClose(make(chan *amqp.Error, 1))
		if n := p.CutAll(); n < 1 {
			t.Fatalf("CutAll = %d", n)
		}
		select {
		case e := <-closed:
			if e == nil {
				t.Fatal("connection closed without error")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("cut not detected")
		}
	})
}
