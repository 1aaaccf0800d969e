package dedupetest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/test/brokertest"
)

// Environment of a crash-test node (set by Crash for RunNode).
const (
	EnvAMQPURL = "HATO_CRASH_AMQP_URL"
	EnvRoute   = "HATO_CRASH_ROUTE"
)

// CrashService is the service name of every crash-test node: one competing
// queue.
const CrashService = "dedupe-crash"

// CrashLease is the nodes' claim lease: how long a killed node's claims
// hold its messages back.
const CrashLease = 2 * time.Second

// RunNode is a crash-test node's main: a service on $HATO_CRASH_AMQP_URL
// with one competing route on $HATO_CRASH_ROUTE, Dedupe over store, whose
// handler runs effect with the message's dedupe key (hato.DedupeKey). It
// prints "ready" once consuming and stops on SIGTERM. It exits the process.
//
// With $HATO_CRASH_PLAIN set, the store is used as a plain DedupeStore (no
// claim step), as hato did before DedupeClaimer: the crash test then shows
// double effects.
func RunNode(store hato.DedupeStore, effect func(ctx context.Context, key string, window time.Duration) error) {
	if os.Getenv("HATO_CRASH_PLAIN") != "" {
		store = plainStore{store}
	}
	svc, err := hato.New(CrashService, hato.WithURL(os.Getenv(EnvAMQPURL)),
		hato.Dedupe(time.Hour, store).Lease(CrashLease), hato.Prefetch(8, 0))
	if err == nil {
		err = hato.Subscribe(svc, os.Getenv(EnvRoute), func(ctx context.Context, m *hato.Message[map[string]int]) error {
			key, window, ok := hato.DedupeKey(ctx)
			if !ok {
				return fmt.Errorf("no dedupe key")
			}
			time.Sleep(5 * time.Millisecond) // a handler that takes a while: kills land mid-stream
			return effect(ctx, key, window)
		}, hato.Concurrency(4))
	}
	if err == nil {
		err = svc.Start(context.Background())
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash node:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := svc.Stop(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "crash node stop:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

type plainStore struct{ hato.DedupeStore }

// CrashConfig is one crash test.
type CrashConfig struct {
	// Node is the package of the node's main (it calls RunNode), built
	// with go build from the test's directory.
	Node string
	// Env is added to the nodes' environment (the store's address,
	// prefix, schema...).
	Env []string
	// Messages is how many distinct messages are published, each twice
	// (same uuid), as a publisher retrying would.
	Messages int
	// Effects reads every message's handler effect: how many times it
	// happened, by dedupe key's message uuid (the part after the last
	// "/").
	Effects func(ctx context.Context) (map[string]int, error)
}

// Crash runs three node processes on one competing queue sharing one store,
// kills one with SIGKILL once a third of the messages took effect, and
// checks that every message's effect happened exactly once.
func Crash(t *testing.T, cfg CrashConfig) {
	_, url := brokertest.NewVhost(t)
	route := "crash.test"
	bin := filepath.Join(t.TempDir(), "node")
	if out, err := exec.Command("go", "build", "-race", "-o", bin, cfg.Node).CombinedOutput(); err != nil {
		t.Fatalf("build node: %v\n%s", err, out)
	}
	env := append(os.Environ(), EnvAMQPURL+"="+url, EnvRoute+"="+route)
	env = append(env, cfg.Env...)
	nodes := make([]*exec.Cmd, 3)
	for i := range nodes {
		nodes[i] = startNode(t, bin, env, i)
	}
	type published struct {
		ids []string
		err error
	}
	pubDone := make(chan published, 1)
	go func() { // while the nodes consume
		ids, err := publishTwice(url, route, cfg.Messages)
		pubDone <- published{ids, err}
	}()

	count := func() map[string]int {
		m, err := cfg.Effects(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	brokertest.WaitFor(t, 60*time.Second, func() bool { return len(count()) >= cfg.Messages/3 }, "a third of the effects")
	if err := nodes[0].Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = nodes[0].Wait()
	t.Logf("killed node 0 with %d of %d messages in effect", len(count()), cfg.Messages)
	brokertest.WaitFor(t, 90*time.Second, func() bool { return len(count()) >= cfg.Messages }, "every message's effect")
	for _, n := range nodes[1:] { // drain: every copy is handled or dropped as a duplicate
		_ = n.Process.Signal(syscall.SIGTERM)
		if err := n.Wait(); err != nil {
			t.Errorf("node stop: %v", err)
		}
	}
	p := <-pubDone
	if p.err != nil {
		t.Fatal(p.err)
	}
	checkOnce(t, p.ids, count())
}

func checkOnce(t *testing.T, ids []string, effects map[string]int) {
	t.Helper()
	lost, double := 0, 0
	for _, id := range ids {
		switch n := effects[id]; {
		case n == 0:
			lost++
		case n > 1:
			double++
			t.Errorf("message %s took effect %d times", id, n)
		}
	}
	t.Logf("%d messages, each published twice, one node killed: %d lost, %d double effects", len(ids), lost, double)
	if lost > 0 || double > 0 || len(effects) != len(ids) {
		t.Fatalf("%d lost, %d double effects, %d effects for %d messages", lost, double, len(effects), len(ids))
	}
}

func startNode(t *testing.T, bin string, env []string, i int) *exec.Cmd {
	cmd := exec.Command(bin)
	cmd.Env = env
	logf, err := os.Create(filepath.Join(t.TempDir(), fmt.Sprintf("node%d.log", i)))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("node %d stderr:\n%s", i, b)
		}
	})
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		ok := false
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) == "ready" && !ok {
				ok = true
				ready <- true
			}
		}
		if !ok {
			ready <- false
		}
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("node %d exited before it was ready", i)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("node %d not ready within 60s", i)
	}
	return cmd
}

// publishTwice publishes n messages to route, each twice with the same
// uuid (8 publishers at once), and returns the uuids.
func publishTwice(url, route string, n int) ([]string, error) {
	pub, err := hato.New("dedupe-crash-publisher", hato.WithURL(url))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := pub.Start(ctx); err != nil {
		return nil, err
	}
	defer func() { _ = pub.Stop(context.Background()) }()
	ids := make([]string, n)
	msgs := make([]*hato.Outgoing, n)
	for i := range n {
		m, err := pub.Encode(map[string]int{"i": i}, route, hato.Mandatory())
		if err != nil {
			return nil, err
		}
		ids[i], msgs[i] = m.Publishing.MessageId, m
	}
	errs := make(chan error, 8)
	for w := range 8 {
		go func() {
			for i := w; i < n; i += 8 {
				for range 2 {
					if err := pub.PublishEncoded(ctx, msgs[i]); err != nil {
						errs <- err
						return
					}
				}
			}
			errs <- nil
		}()
	}
	var first error
	for range 8 {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return ids, first
}
