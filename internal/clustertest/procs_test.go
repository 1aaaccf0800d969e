//go:build cluster

package clustertest_test

import (
	"bufio"
	"context"
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
	"github.com/hato-go/hato/internal/clustertest"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/test/brokertest"
)

// worker is one hato process (cmd/worker) of a scenario.
type worker struct {
	redelivered atomic.Int64 // redeliveries it handled
	cmd         *exec.Cmd
	ready       chan struct{}
	done        chan struct{} // closed once its stdout is read to the end
	stderr      testutil.LockedBuffer
}

// buildWorker builds cmd/worker once per test binary.
var buildWorker = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "hato-cluster-worker")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "worker")
	out, err := exec.Command("go", "build", "-o", bin, "./cmd/worker").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build ./cmd/worker: %w\n%s", err, out)
	}
	return bin, nil
})

// startWorkers starts k hato processes of service svcName consuming key,
// each handler taking work, and waits until all are ready. Every id they
// report handled goes to handled. t.Cleanup stops them (SIGKILL if they do
// not stop on SIGTERM within 30 s).
func startWorkers(t *testing.T, c *clustertest.Cluster, k int, svcName, key string, work time.Duration, concurrency int, handled *testutil.Collector) []*worker {
	t.Helper()
	bin, err := buildWorker()
	if err != nil {
		t.Fatal(err)
	}
	ws := make([]*worker, k)
	for i := range ws {
		w := &worker{ready: make(chan struct{}), done: make(chan struct{})}
		w.cmd = exec.Command(bin, "-service", svcName, "-key", key, "-work", work.String(), "-concurrency", fmt.Sprint(concurrency))
		w.cmd.Env = append(os.Environ(), "AMQP_URL="+strings.Join(c.URLs(), ","))
		w.cmd.Stderr = &w.stderr
		out, err := w.cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := w.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go w.read(out, handled)
		t.Cleanup(func() { w.stop(t) })
		ws[i] = w
	}
	for i, w := range ws {
		select {
		case <-w.ready:
		case <-w.done:
			t.Fatalf("worker %d exited before it was ready: %s", i, w.stderr.String())
		case <-time.After(time.Minute):
			t.Fatalf("worker %d not ready after a minute: %s", i, w.stderr.String())
		}
	}
	return ws
}

func (w *worker) read(out interface{ Read([]byte) (int, error) }, handled *testutil.Collector) {
	defer close(w.done)
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "ready":
			close(w.ready)
		case strings.HasPrefix(line, "handled "):
			id, again := strings.CutSuffix(strings.TrimPrefix(line, "handled "), " redelivered")
			handled.Add(id)
			if again {
				w.redelivered.Add(1)
			}
		}
	}
}

// stop stops the worker gracefully (or kills it) and reaps it.
func (w *worker) stop(t *testing.T) {
	if w.cmd.ProcessState == nil {
		_ = w.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-w.done:
		case <-time.After(30 * time.Second):
			t.Errorf("worker did not stop on SIGTERM; killing it")
			_ = w.cmd.Process.Kill()
			<-w.done
		}
		_ = w.cmd.Wait()
	}
}

// kill SIGKILLs the worker mid-stream and reaps it.
func (w *worker) kill() {
	_ = w.cmd.Process.Kill()
	<-w.done
	_ = w.cmd.Wait()
}

// 9. Several hato processes of one service share a competing quorum
// queue: the throughput with 1, 2 and 3 processes, then one of three is
// killed (SIGKILL) mid-stream and its unacked deliveries go to the others.
func scenarioHatoProcesses(t *testing.T, c *clustertest.Cluster) {
	const (
		msgs = 600
		work = 20 * time.Millisecond
		conc = 2 // handlers per process: at most 100 messages/s each
	)
	for k := 1; k <= 3; k++ {
		s := newScenario(t, c, fmt.Sprintf("throughput with %d hato processes", k), msgs, 0)
		ws := startWorkers(t, c, k, s.svcName, s.key, work, conc, s.Handled)
		p := s.publisher()
		begin := time.Now()
		s.WaitPublished(s.PublishAll(p, s.key, s.rate))
		brokertest.WaitFor(t, 2*time.Minute, func() bool { return s.Handled.Distinct() >= msgs }, "%d messages handled", msgs)
		took := time.Since(begin)
		throughput.Add(k, msgs, took.Round(10*time.Millisecond), fmt.Sprintf("%.0f msg/s", float64(msgs)/took.Seconds()))
		for _, w := range ws {
			w.stop(t)
		}
	}

	s := newScenario(t, c, "one of three hato processes killed", n, rate)
	// Slower handlers than publishes: a backlog builds up, so every process
	// holds a full prefetch of unacked deliveries when one is killed.
	ws := startWorkers(t, c, 3, s.svcName, s.key, work, conc, s.Handled)
	p := s.publisher()
	done := s.PublishAll(p, s.key, s.rate)
	brokertest.WaitFor(t, time.Minute, func() bool { return s.Handled.Distinct() >= n*3/10 }, "30%% handled")
	s.faultStart = time.Now()
	ws[0].kill()
	s.WaitPublished(done)
	s.Settle(2 * time.Minute)
	for _, w := range ws[1:] {
		w.stop(t)
	}
	taken := ws[1].redelivered.Load() + ws[2].redelivered.Load()
	if taken == 0 {
		t.Error("the surviving processes handled no redelivery: the killed one held no unacked delivery")
	}
	s.finish(s.leftInQueueNamed(), 0, fmt.Sprintf("SIGKILL of 1 of 3 processes at 30 %%; the other two took over its %d unacked deliveries", taken))
}

// publisher starts a publishing-only service for the scenario.
func (s *scenario) publisher() *hato.Service {
	s.t.Helper()
	p, err := hato.New(s.svcName+"-pub", s.options(s.c.URLs())...)
	if err != nil {
		s.t.Fatal(err)
	}
	testutil.Start(s.t, p)
	return p
}

// leftInQueueNamed counts what is left in the workers' queue, whose name
// comes from a route of the same service and key.
func (s *scenario) leftInQueueNamed() int {
	s.t.Helper()
	probe, err := hato.New(s.svcName, s.options(s.c.URLs())...)
	if err != nil {
		s.t.Fatal(err)
	}
	if err := hato.Subscribe(probe, s.key, func(_ context.Context, _ *hato.Message[map[string]string]) error { return nil }, s.routeOptions(nil)...); err != nil {
		s.t.Fatal(err)
	}
	return s.leftInQueue(probe.Routes()[0].Queue)
}
