//go:build integration

// Package e2e runs the example nodes as processes against the real broker.
package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/test/brokertest"
)

// pkgVhost is this package's vhost on the test broker (every test here
// needs it).
var pkgVhost = brokertest.NewPackageVhost("e2e")

func TestMain(m *testing.M) {
	brokertest.Main(m, pkgVhost, nil)
}

// build compiles a package of this module into the test's temp dir.
func build(t *testing.T, pkg string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", bin, pkg)
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// node is a running example node.
type node struct {
	cmd  *exec.Cmd
	done chan error
	log  *syncBuilder
}

type syncBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuilder) WriteString(v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.WriteString(v)
}

func (s *syncBuilder) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startNode(t *testing.T, bin string, env ...string) *node {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), env...)
	logs := &syncBuilder{}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n := &node{cmd: cmd, done: make(chan error, 1), log: logs}
	lines := make(chan string, 1024)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	go func() {
		for l := range lines {
			logs.WriteString(l + "\n")
		}
		n.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			t.Logf("node log:\n%s", logs.String())
		}
	})
	return n
}

func (n *node) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case err := <-n.done:
		if err == nil {
			return 0
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		t.Fatalf("wait: %v", err)
	case <-time.After(timeout):
		t.Fatalf("node did not exit within %s", timeout)
	}
	return -1
}

// terminate sends the node SIGTERM and fails the test unless it exits with
// hato.ExitOK within 30 s.
func (n *node) terminate(t *testing.T) {
	t.Helper()
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	if code := n.wait(t, 30*time.Second); code != hato.ExitOK {
		t.Fatalf("exit code after SIGTERM = %d, want %d", code, hato.ExitOK)
	}
}

// jsonVector returns the payload of a tomodachi JSON envelope vector.
func jsonVector(t *testing.T, name string) (payload string, data any) {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "envelope", "testdata", "tomodachi", "json_envelope.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var v struct {
			Case    string `json:"case"`
			Payload string `json:"payload"`
			Expect  struct {
				Data any `json:"data"`
			} `json:"expect"`
		}
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatal(err)
		}
		if v.Case == name {
			return v.Payload, v.Expect.Data
		}
	}
	t.Fatalf("vector %s not found", name)
	return "", nil
}

func TestExampleNodeForwardsTomodachiMessages(t *testing.T) {
	bin := build(t, "./examples/amqp-example")
	n := startNode(t, bin, "AMQP_URL="+pkgVhost.URL(t))

	conn := brokertest.Dial(t, pkgVhost.URL(t), "e2e-driver")
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	// A tomodachi-style listener on example.response (exclusive queue).
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q.Name, "example.response", "amq.topic", false, nil); err != nil {
		t.Fatal(err)
	}
	responses, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}

	// Publish exactly what tomodachi publishes (no properties, transient),
	// once the node's queue is bound.
	payload, want := jsonVector(t, "dict/amqp-example")
	publish := func() error {
		return ch.PublishWithContext(context.Background(), "amq.topic", "example.topic", true, false,
			amqp.Publishing{Body: []byte(payload)})
	}
	returns := ch.NotifyReturn(make(chan amqp.Return, 16))
	deadline := time.Now().Add(20 * time.Second)
	for {
		if err := publish(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-returns: // not bound yet
			if time.Now().After(deadline) {
				t.Fatal("the node never bound example.topic")
			}
			time.Sleep(50 * time.Millisecond) // retry pacing for an external process
			continue
		case d := <-responses:
			var env struct {
				Service  map[string]any `json:"service"`
				Metadata map[string]any `json:"metadata"`
				Data     any            `json:"data"`
			}
			if err := json.Unmarshal(d.Body, &env); err != nil {
				t.Fatalf("response is not a JSON envelope: %v\n%s", err, d.Body)
			}
			if env.Service["name"] != "amqp-example" || env.Metadata["topic"] != "example.response" ||
				env.Metadata["protocol_version"] != "tomodachi-json-base--1.0.0" {
				t.Errorf("response envelope %s", d.Body)
			}
			gotData, _ := json.Marshal(env.Data)
			wantData, _ := json.Marshal(want)
			if string(gotData) != string(wantData) {
				t.Errorf("forwarded data %s, want %s", gotData, wantData)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("no response on example.response")
		}
		break
	}

	n.terminate(t)
}

func TestExampleNodeExitsWithStartFailedOnRefusedCredentials(t *testing.T) {
	bin := build(t, "./examples/amqp-example")
	bad := strings.Replace(pkgVhost.URL(t), "guest:guest@", "guest:wrong-password@", 1)
	if bad == pkgVhost.URL(t) {
		t.Fatalf("cannot derive a bad URL from %s", brokertest.Redact(pkgVhost.URL(t)))
	}
	n := startNode(t, bin, "AMQP_URL="+bad)
	if code := n.wait(t, 60*time.Second); code != hato.ExitStartFailed {
		t.Fatalf("exit code = %d, want %d (start failed)", code, hato.ExitStartFailed)
	}
	if strings.Contains(n.log.String(), "wrong-password") {
		t.Error("the password appears in the node's output")
	}
}
