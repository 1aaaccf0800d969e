package clustertest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Timeouts of the script's commands.
const (
	StartTimeout = 3 * time.Minute  // scripts/cluster.sh start
	NodeTimeout  = 2 * time.Minute  // start-node, stop-node, kill
	CtlTimeout   = 60 * time.Second // one rabbitmqctl call
	LockTimeout  = 10 * time.Minute // waiting for another process's cluster
	WaitTimeout  = 60 * time.Second // WaitRunning
)

// EnvDir overrides the cluster's base directory (see scripts/cluster.sh).
const EnvDir = "HATO_CLUSTER_DIR"

// Cluster is a running cluster started by [Start]. Its methods may be called
// from the test goroutine only (they call t.Fatal).
type Cluster struct {
	t      testing.TB
	script string
	dir    string
	names  []string // node names, index = node number
	urls   []string // AMQP URLs (guest/guest, vhost /)

	stopOnce sync.Once
	stopErr  error
}

// Start starts a fresh cluster (removing any leftover of an earlier run)
// and registers its removal with t.Cleanup. It fails the test, with the
// script's output, if RabbitMQ is not installed or the cluster does not
// start. It waits while another process's cluster runs (see the package
// documentation).
func Start(t testing.TB) *Cluster {
	t.Helper()
	script, err := findScript()
	if err != nil {
		t.Fatalf("clustertest: %v", err)
	}
	dir := os.Getenv(EnvDir)
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "hato-cluster")
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		t.Fatalf("clustertest: %s: %v", EnvDir, err)
	}
	c := &Cluster{t: t, script: script, dir: dir}

	ctx, cancel := context.WithTimeout(context.Background(), LockTimeout)
	defer cancel()
	lock, err := lockFile(ctx, dir+".lock", func() {
		t.Logf("clustertest: waiting for another test process's cluster (lock %s.lock)", dir)
	})
	if err != nil {
		t.Fatalf("clustertest: cluster lock: %v", err)
	}
	t.Cleanup(func() { _ = lock.Close() }) // runs last: after Stop

	// Last resort against a killed test binary: stop the cluster once this
	// process is gone (the watchdog takes the lock first).
	watchdog := exec.Command(script, "reap-after", fmt.Sprint(os.Getpid()))
	watchdog.Env = c.env()
	detach(watchdog)
	if err := watchdog.Start(); err != nil {
		t.Fatalf("clustertest: start watchdog: %v", err)
	}
	t.Cleanup(func() {
		killGroup(watchdog)
		_ = watchdog.Wait()
	})
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("clustertest: %v", err)
		}
	})

	// We hold the lock, so whatever runs in dir is a leftover: start afresh.
	if out, err := c.run(NodeTimeout, "stop"); err != nil {
		t.Fatalf("clustertest: scripts/cluster.sh stop: %v\n%s", err, out)
	}
	began := time.Now()
	out, err := c.run(StartTimeout, "start")
	if err != nil {
		t.Fatalf("clustertest: scripts/cluster.sh start failed (RabbitMQ 3.10+ must be installed: apt-get install rabbitmq-server): %v\n%s", err, out)
	}
	if err := c.parseStatus(out); err != nil {
		t.Fatalf("clustertest: %v\n%s", err, out)
	}
	t.Logf("clustertest: %d-node cluster up in %v: %s", len(c.names), time.Since(began).Round(100*time.Millisecond), strings.Join(c.names, ", "))
	return c
}

// findScript looks for scripts/cluster.sh in the module root above the
// working directory (go test runs in the package directory).
func findScript() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			script := filepath.Join(dir, "scripts", "cluster.sh")
			if _, err := os.Stat(script); err != nil {
				return "", fmt.Errorf("module root %s has no scripts/cluster.sh: %w", dir, err)
			}
			return script, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("scripts/cluster.sh not found: no go.mod above the working directory")
		}
		dir = parent
	}
}

func (c *Cluster) env() []string { return append(os.Environ(), EnvDir+"="+c.dir) }

// run runs scripts/cluster.sh args... and returns its combined output.
func (c *Cluster) run(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.script, args...)
	cmd.Env = c.env()
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	// rabbitmqctl forks an Erlang VM; do not hang on a grandchild that keeps
	// the output pipe open after a timeout kill.
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v", timeout)
	}
	if err != nil {
		return out.String(), fmt.Errorf("scripts/cluster.sh %s: %w", strings.Join(args, " "), err)
	}
	return out.String(), nil
}

// parseStatus reads node names and URLs from the lines of `cluster.sh
// status`: "NAME URL dist=PORT STATE...".
func (c *Cluster) parseStatus(out string) error {
	c.names, c.urls = nil, nil
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && strings.Contains(f[0], "@") && strings.HasPrefix(f[1], "amqp://") && strings.HasPrefix(f[2], "dist=") {
			c.names = append(c.names, f[0])
			c.urls = append(c.urls, f[1])
		}
	}
	if len(c.names) == 0 {
		return errors.New("no nodes in the output of scripts/cluster.sh")
	}
	return nil
}

// N is the number of nodes.
func (c *Cluster) N() int { return len(c.names) }

// Name is node i's Erlang node name (e.g. hato-c1@localhost for i = 0).
func (c *Cluster) Name(i int) string { c.check(i); return c.names[i] }

// Names are the node names, index = node number.
func (c *Cluster) Names() []string { return slices.Clone(c.names) }

// URL is node i's AMQP URL (guest/guest, vhost "/").
func (c *Cluster) URL(i int) string { c.check(i); return c.urls[i] }

// URLs are the AMQP URLs of all nodes, index = node number.
func (c *Cluster) URLs() []string { return slices.Clone(c.urls) }

func (c *Cluster) check(i int) {
	if i < 0 || i >= len(c.names) {
		c.t.Helper()
		c.t.Fatalf("clustertest: no node %d (the cluster has nodes 0..%d)", i, len(c.names)-1)
	}
}

// node is the script's name for node i.
func (c *Cluster) node(i int) string { c.check(i); return c.names[i] }

// Kill kill -9s node i's Erlang VM and returns once it is gone.
func (c *Cluster) Kill(i int) {
	c.t.Helper()
	if out, err := c.run(NodeTimeout, "kill", c.node(i)); err != nil {
		c.t.Fatalf("clustertest: %v\n%s", err, out)
	}
}

// StopNode stops node i gracefully (rabbitmqctl stop) and returns once its
// VM has exited.
func (c *Cluster) StopNode(i int) {
	c.t.Helper()
	if out, err := c.run(NodeTimeout, "stop-node", c.node(i)); err != nil {
		c.t.Fatalf("clustertest: %v\n%s", err, out)
	}
}

// StartNode starts node i again (after Kill or StopNode) and returns once
// its rabbit app runs; a cluster member rejoins the cluster as it boots.
func (c *Cluster) StartNode(i int) {
	c.t.Helper()
	if out, err := c.run(NodeTimeout, "start-node", c.node(i)); err != nil {
		c.t.Fatalf("clustertest: %v\n%s", err, out)
	}
}

// Ctl runs `rabbitmqctl -n <node i> args...` and returns its combined
// output; a failure (including a node that is down) is an error that
// includes the output.
func (c *Cluster) Ctl(i int, args ...string) (string, error) {
	out, err := c.run(CtlTimeout, append([]string{"ctl", c.node(i)}, args...)...)
	if err != nil {
		return out, fmt.Errorf("%w; output:\n%s", err, strings.TrimSpace(out))
	}
	return out, nil
}

// Queues runs `rabbitmq-queues -n <node i> args...` like Ctl.
func (c *Cluster) Queues(i int, args ...string) (string, error) {
	out, err := c.run(CtlTimeout, append([]string{"queues", c.node(i)}, args...)...)
	if err != nil {
		return out, fmt.Errorf("%w; output:\n%s", err, strings.TrimSpace(out))
	}
	return out, nil
}

// RunningNodes are the running cluster members as node i sees them
// (rabbitmqctl cluster_status), sorted.
func (c *Cluster) RunningNodes(i int) ([]string, error) {
	out, err := c.Ctl(i, "-q", "cluster_status", "--formatter", "json")
	if err != nil {
		return nil, err
	}
	var st struct {
		RunningNodes []string `json:"running_nodes"`
	}
	if err := json.Unmarshal([]byte(jsonPart(out)), &st); err != nil {
		return nil, fmt.Errorf("clustertest: cluster_status: %w; output:\n%s", err, out)
	}
	slices.Sort(st.RunningNodes)
	return st.RunningNodes, nil
}

// QuorumLeader returns the number of the node that leads quorum queue
// queue in vhost, asking the nodes in turn until one answers (so it works
// while some are down). The leader may be stale right after a node died:
// poll if it must be a running node.
func (c *Cluster) QuorumLeader(vhost, queue string) (int, error) {
	var errs []error
	for i := range c.names {
		out, err := c.Ctl(i, "-q", "list_queues", "-p", vhost, "name", "type", "leader", "--formatter", "json")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		var rows []struct {
			Name   string `json:"name"`
			Type   string `json:"type"`
			Leader string `json:"leader"`
		}
		if err := json.Unmarshal([]byte(jsonPart(out)), &rows); err != nil {
			return -1, fmt.Errorf("clustertest: list_queues: %w; output:\n%s", err, out)
		}
		for _, r := range rows {
			if r.Name != queue {
				continue
			}
			if r.Type != "quorum" {
				return -1, fmt.Errorf("clustertest: queue %q in vhost %q is a %s queue, not a quorum queue", queue, vhost, r.Type)
			}
			if n := slices.Index(c.names, r.Leader); n >= 0 {
				return n, nil
			}
			return -1, fmt.Errorf("clustertest: quorum queue %q has leader %q, not a node of this cluster (%v)", queue, r.Leader, c.names)
		}
		return -1, fmt.Errorf("clustertest: no queue %q in vhost %q on %s", queue, vhost, c.names[i])
	}
	return -1, fmt.Errorf("clustertest: no node answered list_queues: %w", errors.Join(errs...))
}

// jsonPart drops anything rabbitmqctl printed before the JSON document
// (warnings), which starts at the first '[' or '{'.
func jsonPart(out string) string {
	if i := strings.IndexAny(out, "[{"); i > 0 {
		return out[i:]
	}
	return out
}

// WaitRunning polls until node i accepts AMQP connections and its rabbit
// app reports it has started, failing the test after WaitTimeout.
func (c *Cluster) WaitRunning(i int) {
	c.t.Helper()
	url := c.URL(i)
	deadline := time.Now().Add(WaitTimeout)
	var last error
	for time.Now().Before(deadline) {
		last = ping(url)
		if last == nil {
			_, last = c.Ctl(i, "-q", "await_startup", "--timeout", "30")
			if last == nil {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.t.Fatalf("clustertest: node %s not running after %v: %v", c.names[i], WaitTimeout, last)
}

// ping opens and closes one AMQP connection to url.
func ping(url string) error {
	conn, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(2 * time.Second)})
	if err != nil {
		return err
	}
	return conn.Close()
}

// Stop kills every node and removes the cluster's files. It is idempotent
// (Start registers it with t.Cleanup); later calls return the first result.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		if out, err := c.run(NodeTimeout, "stop"); err != nil {
			c.stopErr = fmt.Errorf("%w\n%s", err, out)
		}
	})
	return c.stopErr
}

// Status returns the output of `scripts/cluster.sh status` (nodes, ports,
// pids) and whether every node runs.
func (c *Cluster) Status() (string, bool) {
	out, err := c.run(CtlTimeout, "status")
	return out, err == nil
}

// Running reports whether node i's VM runs and accepts AMQP connections
// (per `scripts/cluster.sh status`).
func (c *Cluster) Running(i int) bool {
	out, _ := c.Status()
	name := c.node(i)
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && f[0] == name {
			return f[3] == "running"
		}
	}
	return false
}

// Restore starts every node that is down again and waits until all of them
// run and every node sees the whole cluster: tests call it after a scenario
// that took nodes down, so that the next one starts whole.
func (c *Cluster) Restore() {
	c.t.Helper()
	for i := range c.names {
		if !c.Running(i) {
			c.StartNode(i)
		}
		c.WaitRunning(i)
	}
	all := c.Names()
	slices.Sort(all)
	deadline := time.Now().Add(WaitTimeout)
	for i := range c.names {
		for {
			running, err := c.RunningNodes(i)
			if err == nil && slices.Equal(running, all) {
				break
			}
			if time.Now().After(deadline) {
				c.t.Fatalf("clustertest: %s sees running nodes %v (%v), want %v", c.names[i], running, err, all)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

// NodeOf returns the number of the node whose AMQP address is hostPort
// ("127.0.0.1:5681", as hato's Status reports it), or -1.
func (c *Cluster) NodeOf(hostPort string) int {
	for i, u := range c.urls {
		if strings.Contains(u, "@"+hostPort+"/") {
			return i
		}
	}
	return -1
}
