package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hato-go/hato/test/brokertest"
)

// binaries are the node programs the process, routes and soak modes run,
// built once per run into a temporary directory.
type binaries struct {
	dir                                 string
	example, hatoNode, baseline, routes string
	refExamples                         map[string]string // implementation (hato@REV) → examples/amqp-example at REV
}

// refImpl names the implementation that runs examples/amqp-example as
// built from git revision ref.
func refImpl(ref string) string { return "hato@" + ref }

// buildBinaries builds examples/amqp-example and the bench's node commands,
// and examples/amqp-example at each git revision of refs.
func buildBinaries(refs ...string) (*binaries, error) {
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "hato-bench-bin-")
	if err != nil {
		return nil, err
	}
	b := &binaries{dir: dir, refExamples: map[string]string{}}
	for _, t := range []struct {
		dst *string
		pkg string
	}{
		{&b.example, "./examples/amqp-example"},
		{&b.hatoNode, "./test/bench/cmd/hato-node"},
		{&b.baseline, "./test/bench/cmd/baseline-node"},
		{&b.routes, "./test/bench/cmd/routes-node"},
	} {
		*t.dst = filepath.Join(dir, filepath.Base(t.pkg))
		cmd := exec.Command("go", "build", "-o", *t.dst, t.pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			_ = os.RemoveAll(dir)
			return nil, fmt.Errorf("go build %s: %w\n%s", t.pkg, err, out)
		}
	}
	for i, ref := range refs {
		dst := filepath.Join(dir, fmt.Sprintf("amqp-example-ref%d", i))
		if err := buildAtRevision(root, ref, "./examples/amqp-example", dst); err != nil {
			b.remove()
			return nil, err
		}
		b.refExamples[refImpl(ref)] = dst
	}
	return b, nil
}

// buildAtRevision builds package pkg of the module at git revision ref (a
// `git archive` of it, extracted into a temporary directory) into dst.
func buildAtRevision(root, ref, pkg, dst string) error {
	src, err := os.MkdirTemp("", "hato-bench-ref-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(src) }()
	archive := exec.Command("git", "archive", "--format=tar", ref)
	archive.Dir = root
	extract := exec.Command("tar", "-x", "-C", src)
	pipe, err := archive.StdoutPipe()
	if err != nil {
		return err
	}
	extract.Stdin = pipe
	var stderr strings.Builder
	archive.Stderr = &stderr
	if err := extract.Start(); err != nil {
		return err
	}
	if err := archive.Run(); err != nil {
		_ = extract.Wait()
		return fmt.Errorf("git archive %s: %w: %s", ref, err, stderr.String())
	}
	if err := extract.Wait(); err != nil {
		return fmt.Errorf("extract %s: %w", ref, err)
	}
	cmd := exec.Command("go", "build", "-o", dst, pkg)
	cmd.Dir = src
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s at %s: %w\n%s", pkg, ref, err, out)
	}
	return nil
}

func (b *binaries) remove() { _ = os.RemoveAll(b.dir) }

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run the benchmark inside the hato module")
	}
	return filepath.Dir(mod), nil
}

// node is a node program running as a child process. It is ready when a
// line of its stderr contains readyLine.
type node struct {
	name    string
	cmd     *exec.Cmd
	started time.Time
	ready   chan struct{}
	exited  chan struct{}

	mu       sync.Mutex
	readyAt  time.Time
	waitErr  error
	stopping bool
	tail     []string
}

func startNode(name, bin string, args, env []string, readyLine, logPath string) (*node, error) {
	n := &node{name: name, ready: make(chan struct{}), exited: make(chan struct{})}
	n.cmd = exec.Command(bin, args...)
	n.cmd.Env = append(os.Environ(), env...)
	stderr, err := n.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	var log *os.File
	if logPath != "" {
		if log, err = os.Create(logPath); err != nil {
			return nil, err
		}
	}
	n.started = time.Now()
	if err := n.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		var once sync.Once
		for sc.Scan() {
			line := sc.Text()
			if log != nil {
				_, _ = fmt.Fprintln(log, line)
			}
			if strings.Contains(line, readyLine) {
				once.Do(func() {
					n.mu.Lock()
					n.readyAt = time.Now()
					n.mu.Unlock()
					close(n.ready)
				})
			}
			n.mu.Lock()
			n.tail = append(n.tail, line)
			if len(n.tail) > 8 {
				n.tail = n.tail[1:]
			}
			n.mu.Unlock()
		}
	}()
	go func() {
		<-scanned
		err := n.cmd.Wait()
		if log != nil {
			_ = log.Close()
		}
		n.mu.Lock()
		n.waitErr = err
		n.mu.Unlock()
		close(n.exited)
	}()
	return n, nil
}

// waitReady waits for the ready line, the process's exit or the timeout.
func (n *node) waitReady(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-n.ready:
		n.mu.Lock()
		defer n.mu.Unlock()
		return n.readyAt.Sub(n.started), nil
	case <-n.exited:
		return 0, fmt.Errorf("%s exited before it was ready: %v\n%s", n.name, n.exitErr(), n.lastLines())
	case <-t.C:
		return 0, fmt.Errorf("%s not ready after %s; last stderr lines:\n%s", n.name, timeout, n.lastLines())
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (n *node) exitErr() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.waitErr
}

func (n *node) lastLines() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return "  " + strings.Join(n.tail, "\n  ")
}

// err reports an exit the driver did not ask for.
func (n *node) err() error {
	select {
	case <-n.exited:
		n.mu.Lock()
		stopping := n.stopping
		n.mu.Unlock()
		if !stopping {
			return fmt.Errorf("%s exited: %v\n%s", n.name, n.exitErr(), n.lastLines())
		}
	default:
	}
	return nil
}

// stop sends SIGTERM (the node drains) and waits for the exit; on ctx's
// end it kills the process.
func (n *node) stop(ctx context.Context) error {
	n.mu.Lock()
	n.stopping = true
	n.mu.Unlock()
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
	case <-ctx.Done():
		_ = n.cmd.Process.Kill()
		<-n.exited
		return fmt.Errorf("%s did not stop in time: killed", n.name)
	}
	if err := n.exitErr(); err != nil {
		return fmt.Errorf("%s: %w\n%s", n.name, err, n.lastLines())
	}
	return nil
}

func (n *node) pid() int { return n.cmd.Process.Pid }

// rssKB is a process's resident set (VmRSS), in KiB; 0 when unknown.
func rssKB(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb
			}
		}
	}
	return 0
}

// procImpl is a forwarding node in its own process consuming example.topic
// and forwarding to example.response; it implements impl for the driver's
// session.
type procImpl struct {
	name, bin, readyLine string
	env                  []string
	logPath              string
	n                    *node
	// straceOut, when set, is where `strace -c -f` attached to the node
	// from ready to stop writes its syscall counts.
	straceOut string
	strace    *exec.Cmd
}

func (p *procImpl) Name() string           { return p.name }
func (p *procImpl) Queues() []string       { return nil } // the session's vhost goes
func (p *procImpl) Keys() (in, out string) { return "example.topic", "example.response" }
func (p *procImpl) PID() int               { return p.n.pid() }
func (p *procImpl) Stop(ctx context.Context) error {
	if p.strace != nil {
		// Detach first: strace writes its summary on SIGINT.
		_ = p.strace.Process.Signal(os.Interrupt)
		_ = p.strace.Wait()
		p.strace = nil
	}
	return p.n.stop(ctx)
}

func (p *procImpl) Err() error {
	if p.n == nil {
		return nil
	}
	return p.n.err()
}

func (p *procImpl) Start(ctx context.Context, url, _, _, _ string) error {
	n, err := startNode(p.name, p.bin, nil, append([]string{"AMQP_URL=" + url}, p.env...), p.readyLine, p.logPath)
	if err != nil {
		return err
	}
	p.n = n
	if _, err := n.waitReady(ctx, 60*time.Second); err != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = n.stop(sctx)
		return err
	}
	if p.straceOut != "" {
		p.strace = exec.Command("strace", "-c", "-f", "-o", p.straceOut, "-p", strconv.Itoa(n.pid()))
		if err := p.strace.Start(); err != nil {
			p.strace = nil
			return fmt.Errorf("strace: %w", err)
		}
		time.Sleep(500 * time.Millisecond) // attached to every thread
	}
	return nil
}

// measureProcess is -mode process: every session runs its node (hato:
// examples/amqp-example; baseline: cmd/baseline-node) as a separate
// process against a fresh throw-away vhost, driven from this process;
// implementations interleaved, round after round.
func measureProcess(ctx context.Context, o options) (*report, error) {
	rep := &report{Options: o, Started: time.Now(), LoadStart: loadavg()}
	defer func() { rep.LoadEnd = loadavg() }()
	logf("building the node binaries")
	bins, err := buildBinaries(o.refs...)
	if err != nil {
		return rep, err
	}
	defer bins.remove()
	for round := 1; round <= o.rounds; round++ {
		order := slices.Clone(o.impls)
		if round%2 == 0 {
			slices.Reverse(order)
		}
		for _, name := range order {
			if err := ctx.Err(); err != nil {
				return rep, err
			}
			logf("round %d/%d: %s (own process), load %s", round, o.rounds, name, loadavg())
			res, err := processSession(ctx, newProcImpl(bins, name, round, o), round, o, rep)
			rep.Results = append(rep.Results, res)
			if err != nil {
				return rep, fmt.Errorf("%s round %d: %w", name, round, err)
			}
		}
	}
	return rep, nil
}

func processSession(ctx context.Context, p *procImpl, round int, o options, rep *report) (result, error) {
	url, cleanup, err := brokertest.SetupVhost("bench-proc")
	if err != nil {
		return result{Impl: p.name, Round: round}, err
	}
	defer cleanup()
	d, err := newDriver(url)
	if err != nil {
		return result{Impl: p.name, Round: round}, err
	}
	defer d.close()
	rep.Broker = d.brokerVersion
	return d.session(ctx, p, round, o)
}

func newProcImpl(bins *binaries, name string, round int, o options) *procImpl {
	p := &procImpl{name: name}
	switch name {
	case "baseline":
		p.bin, p.readyLine = bins.baseline, "ready"
	default: // hato, or hato@REV
		p.bin, p.readyLine = bins.example, "service started"
		if ref, ok := bins.refExamples[name]; ok {
			p.bin = ref
			break
		}
		if o.profileDir != "" {
			p.bin = bins.hatoNode
		}
	}
	if o.profileDir != "" {
		base := filepath.Join(o.profileDir, fmt.Sprintf("%s-r%d", name, round))
		p.env = []string{"HATO_CPUPROFILE=" + base + ".cpu", "HATO_BLOCKPROFILE=" + base + ".block", "HATO_MUTEXPROFILE=" + base + ".mutex"}
		p.env = append(p.env, fmt.Sprintf("HATO_GAPS=%d", o.warmup+o.n))
		if o.trace {
			p.env = append(p.env, "HATO_TRACE="+base+".trace")
		}
		p.logPath = base + ".log"
	}
	if o.straceDir != "" {
		p.straceOut = filepath.Join(o.straceDir, fmt.Sprintf("%s-r%d.strace", name, round))
	}
	return p
}
