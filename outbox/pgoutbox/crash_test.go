//go:build integration

package pgoutbox_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/test/brokertest"
)

// Two relay processes drain one table; one is killed with SIGKILL
// mid-stream. Every committed message arrives; duplicates are at most the
// killed relay's batch in flight (50).
func TestRelayCrash(t *testing.T) {
	_, url := brokertest.NewVhost(t)
	pool, sch := schema(t)
	recv := consumer(t, url, "order.created")
	ob := newOutbox(t, pool, sch)
	writer, err := hato.New("outbox-writer", hato.WithURL(url)) // Encode needs no connection
	if err != nil {
		t.Fatal(err)
	}
	ids := write(t, pool, ob, writer, "order.created", 3000, 100)

	bin := filepath.Join(t.TempDir(), "relaynode")
	if out, err := exec.Command("go", "build", "-race", "-o", bin, "./internal/relaynode").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	env := append(os.Environ(), "HATO_RELAY_AMQP_URL="+url, "HATO_TEST_PG_URL="+brokertest.PostgresURL(), "HATO_RELAY_TABLE="+sch+".outbox")
	nodes := []*exec.Cmd{relayNode(t, bin, env), relayNode(t, bin, env)}
	brokertest.WaitFor(t, 60*time.Second, func() bool { return recv.n() >= 600 }, "relaying under way")
	if err := nodes[0].Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = nodes[0].Wait()
	killedAt := recv.n()
	brokertest.WaitFor(t, 90*time.Second, func() bool { return recv.n() >= len(ids) }, "every message")
	brokertest.WaitFor(t, 10*time.Second, func() bool { return backlog(t, pool, sch) == 0 }, "an empty outbox")
	_ = nodes[1].Process.Signal(syscall.SIGTERM)
	if err := nodes[1].Wait(); err != nil {
		t.Errorf("relay stop: %v", err)
	}
	recv.mu.Lock()
	defer recv.mu.Unlock()
	lost, dups := 0, 0
	for _, id := range ids {
		switch n := recv.count[id]; {
		case n == 0:
			lost++
		case n > 1:
			dups += n - 1
		}
	}
	t.Logf("%d messages, two relay processes, one killed with %d received: %d lost, %d duplicates (batch 50)",
		len(ids), killedAt, lost, dups)
	if lost > 0 || dups > 50 {
		t.Fatalf("%d lost, %d duplicates", lost, dups)
	}
}

func relayNode(t *testing.T, bin string, env []string) *exec.Cmd {
	cmd := exec.Command(bin)
	cmd.Env = env
	cmd.Stderr = os.Stderr
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
	})
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) == "ready" {
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(60 * time.Second):
		t.Fatal("relay node not ready")
	}
	return cmd
}
