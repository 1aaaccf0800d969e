package brokertest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"
)

// pkg is the vhost shared by the tests of this package, created when the
// first test asks for it (parse_test.go's tests need no broker).
var pkg = NewPackageVhost("brokertest")

const lockHolderEnv = "HATO_BROKERTEST_LOCK_HOLDER"

func TestMain(m *testing.M) {
	if os.Getenv(lockHolderEnv) == "1" {
		lockHolderMain()
		return
	}
	code := m.Run()
	if err := pkg.Delete(); err != nil {
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

func TestRequireFailsLoudly(t *testing.T) {
	t.Setenv(EnvURL, "amqp://guest:guest@127.0.0.1:1/")
	f := runFake(t, func(tb testing.TB) {
		_ = Dial(tb, BaseURL(), "unreachable")
	})
	if !f.failed || !strings.Contains(f.messages[0], "scripts/rabbitmq.sh ensure") {
		t.Fatalf("failed=%v messages=%q", f.failed, f.messages)
	}
}

func TestPackageVhostFailsEveryCallerWithoutABroker(t *testing.T) {
	t.Setenv(EnvURL, "amqp://guest:guest@127.0.0.1:1/")
	pv := NewPackageVhost("unreachable")
	for i := range 2 {
		f := runFake(t, func(tb testing.TB) { _ = pv.URL(tb) })
		if !f.failed || len(f.messages) != 1 || !strings.Contains(f.messages[0], "this test needs the broker") ||
			!strings.Contains(f.messages[0], "scripts/rabbitmq.sh ensure") {
			t.Fatalf("call %d: failed=%v messages=%q", i, f.failed, f.messages)
		}
	}
	if err := pv.Delete(); err != nil {
		t.Fatalf("Delete of a vhost never created: %v", err)
	}
}

func TestPackageVhostUnusedContactsNothing(t *testing.T) {
	t.Setenv(EnvRabbitmqctl, filepath.Join(t.TempDir(), "no-such-rabbitmqctl"))
	if err := NewPackageVhost("unused").Delete(); err != nil {
		t.Fatal(err)
	}
}
