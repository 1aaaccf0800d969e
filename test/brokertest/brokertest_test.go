package brokertest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/hato-go/hato/test/netproxy"
)

// pkgURL is the AMQP URL of the vhost shared by the tests of this package.
var pkgURL string

// pkgVhost is its name.
var pkgVhost string

const lockHolderEnv = "HATO_BROKERTEST_LOCK_HOLDER"

// ctlWait bounds waits whose every poll runs rabbitmqctl: each call starts
// an Erlang VM, ~1 s normally but 5-15 s on a loaded 2-CPU machine.
const ctlWait = 90 * time.Second

func TestMain(m *testing.M) {
	if os.Getenv(lockHolderEnv) == "1" {
		lockHolderMain()
		return
	}
	vhost, url, del, err := setupVhost("brokertest")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pkgVhost, pkgURL = vhost, url
	code := m.Run()
	if err := del(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		code = 1
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// lockHolderMain runs in a child process (TestCrossProcessLock): it takes
// the shared broker lock, reports it, and holds it until stdin is closed.
func lockHolderMain() {
	acquireShared()
	fmt.Println("locked")
	_, _ = io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

func TestRequire(t *testing.T) {
	Require(t)
	Require(t) // cached
}

func TestURLs(t *testing.T) {
	t.Setenv(EnvURL, "")
	if BaseURL() != DefaultURL {
		t.Fatalf("BaseURL() = %q", BaseURL())
	}
	t.Setenv(EnvURL, "amqp://u:secret@example.test:5673/x")
	if BaseURL() != "amqp://u:secret@example.test:5673/x" {
		t.Fatalf("BaseURL() = %q", BaseURL())
	}
	u, err := VhostURL("a/b c")
	if err != nil || u != "amqp://u:secret@example.test:5673/a%2Fb%20c" {
		t.Fatalf("VhostURL = %q, %v", u, err)
	}
	uri, err := amqp.ParseURI(u)
	if err != nil || uri.Vhost != "a/b c" || uri.Username != "u" {
		t.Fatalf("amqp091 parses %q as %+v, %v", u, uri, err)
	}
	if r := Redact(u); strings.Contains(r, "secret") {
		t.Fatalf("Redact = %q", r)
	}
	if brokerUser() != "u" || brokerHostPort() != "example.test:5673" {
		t.Fatalf("user %q hostport %q", brokerUser(), brokerHostPort())
	}
}

// fakeTB records Fatalf instead of failing the real test. Only the methods
// the helpers use are overridden; the rest go to the embedded real T.
type fakeTB struct {
	testing.TB
	mu       sync.Mutex
	failed   bool
	messages []string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.failed = true
	f.messages = append(f.messages, fmt.Sprintf(format, args...))
	f.mu.Unlock()
	runtime.Goexit()
}

func (f *fakeTB) Errorf(format string, args ...any) {
	f.mu.Lock()
	f.failed = true
	f.messages = append(f.messages, fmt.Sprintf(format, args...))
	f.mu.Unlock()
}

// runFake runs fn with a fake TB on its own goroutine (Fatalf calls
// runtime.Goexit, like the real FailNow) and returns the fake afterwards.
func runFake(t *testing.T, fn func(tb testing.TB)) *fakeTB {
	f := &fakeTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	return f
}

func TestWaitForFailsWithMessage(t *testing.T) {
	calls := 0
	f := runFake(t, func(tb testing.TB) {
		WaitFor(tb, 50*time.Millisecond, func() bool { calls++; return false }, "queue %q to drain", "q1")
		t.Error("WaitFor returned although the condition never held")
	})
	if !f.failed || len(f.messages) != 1 {
		t.Fatalf("fake: failed=%v messages=%q", f.failed, f.messages)
	}
	if want := `timed out after 50ms waiting for queue "q1" to drain`; f.messages[0] != want {
		t.Fatalf("message %q, want %q", f.messages[0], want)
	}
	if calls < 2 {
		t.Fatalf("condition evaluated %d times; WaitFor must poll", calls)
	}
}

func TestWaitForSucceeds(t *testing.T) {
	n := 0
	f := runFake(t, func(tb testing.TB) {
		WaitFor(tb, 5*time.Second, func() bool { n++; return n == 3 }, "n to reach 3")
	})
	if f.failed || n != 3 {
		t.Fatalf("failed=%v n=%d messages=%q", f.failed, n, f.messages)
	}
}

func TestEventuallyAndPoll(t *testing.T) {
	if err := Eventually(20*time.Millisecond, func() bool { return false }); err == nil || !strings.Contains(err.Error(), "20ms") {
		t.Fatalf("Eventually = %v", err)
	}
	if err := Eventually(time.Second, func() bool { return true }); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Poll(ctx, func() bool { return false }); !errors.Is(err, context.Canceled) {
		t.Fatalf("Poll = %v", err)
	}
}

func TestRequireFailsLoudly(t *testing.T) {
	t.Setenv(EnvURL, "amqp://guest:guest@127.0.0.1:1/")
	f := runFake(t, func(tb testing.TB) {
		_ = Dial(tb, BaseURL(), "unreachable")
	})
	if !f.failed || !strings.Contains(f.messages[0], "scripts/rabbitmq.sh ensure") {
		t.Fatalf("failed=%v messages=%q", f.failed, f.messages)
	}
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
	conn := Dial(t, pkgURL, UniqueName("hato-bt-", t.Name()))
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

	q, ok, err := FindQueue(pkgVhost, qname)
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
	if _, ok, err := FindQueue(pkgVhost, "no-such-queue"); ok || err != nil {
		t.Fatalf("FindQueue(missing) = %v, %v", ok, err)
	}

	exchanges, err := ListExchanges(pkgVhost)
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
	c1 := Dial(t, pkgURL, prefix+"one")
	c2 := Dial(t, pkgURL, prefix+"two")
	other := Dial(t, pkgURL, UniqueName("hato-bt-bystander-", "")) // must survive
	closed1 := c1.NotifyClose(make(chan *amqp.Error, 1))
	closed2 := c2.NotifyClose(make(chan *amqp.Error, 1))

	conns := WaitConnections(t, NamePrefix(prefix), 2, ctlWait)
	names := []string{conns[0].Name, conns[1].Name}
	slices.Sort(names)
	if !reflect.DeepEqual(names, []string{prefix + "one", prefix + "two"}) {
		t.Fatalf("names %q", names)
	}
	for _, c := range conns {
		if !strings.HasPrefix(c.PID, "<") || c.VHost != pkgVhost || c.User != brokerUser() || c.State != "running" || !strings.Contains(c.Addr, " -> ") {
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
	conn := Dial(t, pkgURL, UniqueName("hato-bt-", t.Name()))
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

func TestSpawnDelayed(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "fired")
	cancel, err := spawnDelayed(time.Second, "touch", marker)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	WaitFor(t, 10*time.Second, func() bool { _, err := os.Stat(marker); return err == nil }, "watchdog to run")

	never := filepath.Join(t.TempDir(), "never")
	cancel2, err := spawnDelayed(time.Second, "touch", never)
	if err != nil {
		t.Fatal(err)
	}
	cancel2() // kills the sleeping shell and its sleep
	if err := Eventually(1500*time.Millisecond, func() bool { _, err := os.Stat(never); return err == nil }); err == nil {
		t.Fatal("cancelled watchdog ran anyway")
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

// TestNetproxyAMQP shows the two network faults of test/netproxy on a real
// AMQP connection: a paused proxy makes heartbeats time out, CutAll drops
// the connection at once.
func TestNetproxyAMQP(t *testing.T) {
	uri, err := amqp.ParseURI(pkgURL)
	if err != nil {
		t.Fatal(err)
	}
	p, err := netproxy.New(net.JoinHostPort(uri.Host, strconv.Itoa(uri.Port)))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	u, err := url.Parse(pkgURL)
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
