package brokertest

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// EnvLock names the environment variable that disables the cross-process
// broker lock when set to "off".
const EnvLock = "HATO_TEST_BROKER_LOCK"

// EnvLockDir names the environment variable that overrides the directory of
// the lock files (default os.TempDir()). All test processes sharing a
// broker must agree on it.
const EnvLockDir = "HATO_TEST_BROKER_LOCK_DIR"

// WatchdogDelay is how long after StopApp / SetMemoryWatermark a detached
// watchdog process restores the broker if the test binary died before its
// cleanup ran. Fault tests must restore the broker well before that.
const WatchdogDelay = 2 * time.Minute

// sharedLockTimeout bounds how long an ordinary test process waits while a
// fault test of another process holds the broker; after that it proceeds
// without the lock (with a warning) rather than failing.
const sharedLockTimeout = 10 * time.Minute

// exclusiveLockTimeout bounds how long a fault helper waits for the other
// test processes when the test has no deadline.
const exclusiveLockTimeout = 10 * time.Minute

const (
	lockNone = iota
	lockShared
	lockExclusive
)

var brokerLock struct {
	mu     sync.Mutex
	files  *lockFiles
	state  int
	exRefs int
	broken bool // opening or waiting failed: run unlocked
}

func lockDisabled() bool { return strings.EqualFold(os.Getenv(EnvLock), "off") }

// lockFilesLocked opens the lock files once; brokerLock.mu must be held.
func lockFilesLocked() *lockFiles {
	if brokerLock.files == nil && !brokerLock.broken {
		f, err := openLockFiles()
		if err != nil {
			brokerLock.broken = true
			fmt.Fprintf(os.Stderr, "brokertest: cross-process broker lock unavailable (%v); fault tests may disturb concurrent test processes\n", err)
			return nil
		}
		brokerLock.files = f
	}
	return brokerLock.files
}

// acquireShared makes this process hold the shared broker lock (until it
// exits). It is a no-op if the process already holds a lock.
func acquireShared() {
	if lockDisabled() {
		return
	}
	brokerLock.mu.Lock()
	defer brokerLock.mu.Unlock()
	if brokerLock.state != lockNone {
		return
	}
	f := lockFilesLocked()
	if f == nil {
		return
	}
	err := f.shared(time.Now().Add(sharedLockTimeout), func() {
		fmt.Fprintln(os.Stderr, "brokertest: waiting for a fault-injection test in another process to release the broker...")
	})
	if err != nil {
		brokerLock.broken = true
		fmt.Fprintf(os.Stderr, "brokertest: could not take the shared broker lock (%v); continuing without it\n", err)
		return
	}
	brokerLock.state = lockShared
}

// acquireExclusive waits (bounded by timeout) until no other process uses
// the broker through this package and returns the function that gives the
// exclusive lock back (downgrading to shared).
func acquireExclusive(timeout time.Duration) (release func(), err error) {
	noop := func() {}
	if lockDisabled() {
		return noop, nil
	}
	brokerLock.mu.Lock()
	defer brokerLock.mu.Unlock()
	f := lockFilesLocked()
	if f == nil {
		return noop, nil
	}
	if brokerLock.state != lockExclusive {
		started := time.Now()
		err := f.exclusive(started.Add(timeout), func() {
			fmt.Fprintln(os.Stderr, "brokertest: waiting for exclusive use of the broker (other test processes are using it)...")
		})
		if err != nil {
			brokerLock.state = lockNone
			return nil, err
		}
		brokerLock.state = lockExclusive
	}
	brokerLock.exRefs++
	var once sync.Once
	return func() { once.Do(releaseExclusive) }, nil
}

func releaseExclusive() {
	brokerLock.mu.Lock()
	defer brokerLock.mu.Unlock()
	brokerLock.exRefs--
	if brokerLock.exRefs > 0 || brokerLock.state != lockExclusive {
		return
	}
	brokerLock.state = lockNone
	if err := brokerLock.files.unlock(); err != nil {
		fmt.Fprintf(os.Stderr, "brokertest: releasing broker lock: %v\n", err)
	}
	// Later broker use by this process re-takes the shared lock lazily
	// (acquireShared), queueing politely behind any waiting fault test.
}

// exclusive takes the exclusive broker lock for the rest of test t.
func exclusive(t testing.TB, what string) (release func()) {
	t.Helper()
	timeout := exclusiveLockTimeout
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if deadline, ok := d.Deadline(); ok {
			timeout = max(time.Until(deadline)-30*time.Second, time.Second)
		}
	}
	release, err := acquireExclusive(timeout)
	if err != nil {
		t.Fatalf("%s: could not get exclusive use of the broker within %v (%v): other test processes keep using it; "+
			"run fault tests on their own or with `go test -p 1`", what, timeout, err)
	}
	return release
}

// Exclusive waits for exclusive use of the broker (see the package
// documentation) and holds it until t ends. A fault scenario whose timing
// matters calls it before it starts its load, so that the fault helpers it
// calls later (which take the same lock, nested) do not wait for other test
// processes while the load runs.
func Exclusive(t testing.TB) {
	t.Helper()
	t.Cleanup(exclusive(t, "Exclusive"))
}

// StopApp stops the RabbitMQ application (`rabbitmqctl stop_app`; the Erlang
// node keeps running, every client connection is dropped and the AMQP port
// is closed). t.Cleanup starts it again and waits until it accepts AMQP
// connections, also when the test fails or panics; a detached watchdog does
// the same after WatchdogDelay should the test binary die first.
//
// StopApp first waits for exclusive use of the broker (see the package
// documentation). Do not call it from parallel tests.
func StopApp(t testing.TB) {
	t.Helper()
	release := exclusive(t, "StopApp")
	cancelWatchdog := startWatchdog(t, "start_app")
	t.Cleanup(func() {
		if err := startApp(); err != nil {
			// Keep the watchdog: it is the next chance to recover.
			t.Errorf("restoring broker after StopApp: %v; %s", err, Hint)
			release()
			return
		}
		cancelWatchdog()
		release()
	})
	if out, err := Rabbitmqctl("stop_app"); err != nil {
		t.Fatalf("StopApp: %v\n%s", err, out)
	}
}

// StartApp starts the RabbitMQ application again (`rabbitmqctl start_app`,
// then `await_startup`) and waits until it accepts AMQP connections. Calling
// it is optional after StopApp, whose cleanup does the same.
func StartApp(t testing.TB) {
	t.Helper()
	if err := startApp(); err != nil {
		t.Fatalf("StartApp: %v; %s", err, Hint)
	}
}

func startApp() error {
	if _, err := Rabbitmqctl("start_app"); err != nil {
		return err
	}
	if _, err := Rabbitmqctl("await_startup", "--timeout", "90"); err != nil {
		return err
	}
	var lastErr error
	if err := Eventually(30*time.Second, func() bool {
		lastErr = Ping(BaseURL())
		return lastErr == nil
	}); err != nil {
		return fmt.Errorf("broker started but AMQP is not reachable at %s: %w", Redact(BaseURL()), lastErr)
	}
	return nil
}

// startWatchdog spawns the delayed `rabbitmqctl args...` safety net and
// returns its cancel function (a no-op if it could not be started, which is
// logged but not fatal).
func startWatchdog(t testing.TB, args ...string) (cancel func()) {
	t.Helper()
	path, err := rabbitmqctlPath()
	if err == nil {
		var c func()
		if c, err = spawnDelayed(WatchdogDelay, path, args...); err == nil {
			return c
		}
	}
	t.Logf("brokertest: no watchdog for `rabbitmqctl %s` (%v); the broker is restored by t.Cleanup only", strings.Join(args, " "), err)
	return func() {}
}

// MemoryWatermark returns the current vm_memory_high_watermark as the
// argument list `rabbitmqctl set_vm_memory_high_watermark` accepts, e.g.
// ["0.4"] or ["absolute", "1073741824"].
func MemoryWatermark() ([]string, error) {
	out, err := Rabbitmqctl("eval", "vm_memory_monitor:get_vm_memory_high_watermark().")
	if err != nil {
		return nil, err
	}
	return parseWatermark(out)
}

func parseWatermark(out string) ([]string, error) {
	s := strings.TrimSpace(out)
	if strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") {
		kind, val, ok := strings.Cut(strings.Trim(s, "{}"), ",")
		kind, val = strings.TrimSpace(kind), strings.TrimSpace(val)
		switch {
		case ok && kind == "absolute":
			return []string{"absolute", val}, nil
		case ok && kind == "relative":
			return []string{val}, nil
		}
		return nil, fmt.Errorf("unexpected memory watermark %q", s)
	}
	if s == "" || strings.ContainsAny(s, " \n\t") {
		return nil, fmt.Errorf("unexpected memory watermark %q", s)
	}
	return []string{s}, nil
}

// SetMemoryWatermark sets the broker's memory high watermark
// (`rabbitmqctl set_vm_memory_high_watermark <value>`; value is a fraction
// such as "0.000001", which raises the memory alarm at once and blocks all
// publishing connections, or "absolute <bytes|50MB>"). The original value is
// read first and restored in t.Cleanup (and by a watchdog after
// WatchdogDelay should the test binary die). Waits for exclusive use of the
// broker first, like StopApp.
func SetMemoryWatermark(t testing.TB, value string) {
	t.Helper()
	args := strings.Fields(value)
	if len(args) == 0 {
		t.Fatalf("SetMemoryWatermark: empty value")
	}
	release := exclusive(t, "SetMemoryWatermark")
	orig, err := MemoryWatermark()
	if err != nil {
		release()
		t.Fatalf("SetMemoryWatermark: reading current watermark: %v", err)
	}
	restore := append([]string{"set_vm_memory_high_watermark"}, orig...)
	cancelWatchdog := startWatchdog(t, restore...)
	t.Cleanup(func() {
		defer release()
		if _, err := Rabbitmqctl(restore...); err != nil {
			t.Errorf("restoring memory watermark %v: %v", orig, err)
			return
		}
		cancelWatchdog()
	})
	if _, err := Rabbitmqctl(append([]string{"set_vm_memory_high_watermark"}, args...)...); err != nil {
		t.Fatalf("SetMemoryWatermark(%q): %v", value, err)
	}
}

// MemoryAlarm reports whether the broker's memory alarm is currently raised
// (`rabbitmqctl eval 'rabbit_alarm:get_alarms().'`, which prints e.g.
// [{{resource_limit,memory,rabbit@localhost},[]}] when it is).
func MemoryAlarm() (bool, error) {
	out, err := Rabbitmqctl("eval", "rabbit_alarm:get_alarms().")
	if err != nil {
		return false, err
	}
	return strings.Contains(out, "resource_limit,memory"), nil
}
