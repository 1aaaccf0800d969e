package netproxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// silence is how long a test waits to conclude that nothing arrives. It is a
// lower bound for "not delivered", never an assertion about speed.
const silence = 200 * time.Millisecond

// long bounds waits for things that must happen.
const long = 5 * time.Second

// server is a loopback TCP server whose accepted connections the test can
// observe. By default it echoes; with echo=false it only hands connections
// to the test.
type server struct {
	ln       net.Listener
	echo     bool
	accepted chan net.Conn
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    []net.Conn
}

func newServer(t *testing.T, echo bool) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{ln: ln, echo: echo, accepted: make(chan net.Conn, 16)}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.accepted <- c
			if s.echo {
				s.wg.Add(1)
				go func() {
					defer s.wg.Done()
					_, _ = io.Copy(c, c)
					if tc, ok := c.(*net.TCPConn); ok {
						_ = tc.CloseWrite()
					}
				}()
			}
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			_ = c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *server) addr() string { return s.ln.Addr().String() }

// nextConn returns the next connection the server accepted.
func (s *server) nextConn(t *testing.T) net.Conn {
	t.Helper()
	select {
	case c := <-s.accepted:
		return c
	case <-time.After(long):
		t.Fatal("server accepted no connection")
		return nil
	}
}

// noConn asserts the server accepts no connection within the silence window.
func (s *server) noConn(t *testing.T) {
	t.Helper()
	select {
	case <-s.accepted:
		t.Fatal("server unexpectedly accepted a connection")
	case <-time.After(silence):
	}
}

func newProxy(t *testing.T, target string) *Proxy {
	t.Helper()
	p, err := New(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, long)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func write(t *testing.T, c net.Conn, s string) {
	t.Helper()
	_ = c.SetWriteDeadline(time.Now().Add(long))
	if _, err := c.Write([]byte(s)); err != nil {
		t.Fatalf("write %q: %v", s, err)
	}
}

// expect reads exactly len(want) bytes and compares.
func expect(t *testing.T, c net.Conn, want string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(long))
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("reading %q: got %q, err %v", want, got, err)
	}
	if string(got) != want {
		t.Fatalf("read %q, want %q", got, want)
	}
}

// expectNothing asserts that no byte and no EOF/error arrives within the
// silence window (the read must end with a deadline timeout).
func expectNothing(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(silence))
	var b [64]byte
	n, err := c.Read(b[:])
	if n > 0 {
		t.Fatalf("received %q while nothing should be delivered", b[:n])
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read ended with %v while the connection should look silent", err)
	}
}

// expectClosed asserts that reading c ends with EOF or a reset soon.
func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(long))
	b, err := io.ReadAll(c)
	if len(b) > 0 {
		t.Fatalf("unexpected data %q before close", b)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("connection was not closed")
	}
}

func waitActive(t *testing.T, p *Proxy, n int) {
	t.Helper()
	deadline := time.Now().Add(long)
	for p.Stats().Active != n {
		if time.Now().After(deadline) {
			t.Fatalf("Active = %d, want %d", p.Stats().Active, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestNewRejectsBadTarget(t *testing.T) {
	if _, err := New("no-port"); err == nil {
		t.Fatal("New accepted a target without port")
	}
}

func TestEcho(t *testing.T) {
	srv := newServer(t, true)
	p := newProxy(t, srv.addr())
	if p.Target() != srv.addr() {
		t.Fatalf("Target() = %q", p.Target())
	}
	c := dial(t, p.Addr())
	for _, msg := range []string{"hello", "world", string(bytes.Repeat([]byte("x"), 100_000))} {
		write(t, c, msg)
		expect(t, c, msg)
	}
	st := p.Stats()
	if st.Accepted != 1 || st.Active != 1 || st.Refused != 0 || st.DialErrors != 0 {
		t.Fatalf("stats %+v", st)
	}
	// Counters are bumped right after each Write returns, so the last echo
	// may be read by the client a moment before it is counted.
	want := int64(len("hello") + len("world") + 100_000)
	deadline := time.Now().Add(long)
	for {
		st = p.Stats()
		if st.BytesToTarget == want && st.BytesFromTarget == want {
			break
		}
		if time.Now().After(deadline) || st.BytesToTarget > want || st.BytesFromTarget > want {
			t.Fatalf("bytes to/from target = %d/%d, want %d", st.BytesToTarget, st.BytesFromTarget, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPauseHoldsDataAndResumeDeliversIt(t *testing.T) {
	srv := newServer(t, true)
	p := newProxy(t, srv.addr())
	c := dial(t, p.Addr())
	write(t, c, "a")
	expect(t, c, "a")

	p.Pause()
	if !p.Paused() {
		t.Fatal("Paused() = false after Pause")
	}
	write(t, c, "b")
	expectNothing(t, c)
	before := p.Stats().BytesToTarget
	write(t, c, "c")
	expectNothing(t, c)
	if got := p.Stats().BytesToTarget; got != before {
		t.Fatalf("bytes forwarded while paused: %d -> %d", before, got)
	}

	p.Resume()
	if p.Paused() {
		t.Fatal("Paused() = true after Resume")
	}
	expect(t, c, "bc")
	write(t, c, "d")
	expect(t, c, "d")
}

func TestPauseBlocksServerToClient(t *testing.T) {
	srv := newServer(t, false)
	p := newProxy(t, srv.addr())
	c := dial(t, p.Addr())
	sc := srv.nextConn(t)

	p.Pause()
	write(t, sc, "from-server")
	expectNothing(t, c)
	p.Resume()
	expect(t, c, "from-server")
}

// A close on one side must not leak through while paused (a cut cable does
// not deliver FIN/RST); it is delivered after Resume.
func TestPauseHoldsClose(t *testing.T) {
	srv := newServer(t, false)
	p := newProxy(t, srv.addr())
	c := dial(t, p.Addr())
	sc := srv.nextConn(t)
	write(t, c, "x")
	expect(t, sc, "x")

	p.Pause()
	_ = sc.Close()
	expectNothing(t, c)
	p.Resume()
	expectClosed(t, c)
}

func TestPauseDefersNewConnections(t *testing.T) {
	srv := newServer(t, true)
	p := newProxy(t, srv.addr())
	p.Pause()
	c := dial(t, p.Addr()) // the kernel completes the handshake with the proxy
	write(t, c, "early")
	srv.noConn(t)
	expectNothing(t, c)

	p.Resume()
	srv.nextConn(t)
	expect(t, c, "early")
}

func TestCutAll(t *testing.T) {
	srv := newServer(t, false)
	p := newProxy(t, srv.addr())
	c1 := dial(t, p.Addr())
	s1 := srv.nextConn(t)
	c2 := dial(t, p.Addr())
	s2 := srv.nextConn(t)
	write(t, c1, "1")
	expect(t, s1, "1")
	write(t, c2, "2")
	expect(t, s2, "2")

	if n := p.CutAll(); n != 2 {
		t.Fatalf("CutAll() = %d, want 2", n)
	}
	for _, c := range []net.Conn{c1, c2, s1, s2} {
		expectClosed(t, c)
	}
	waitActive(t, p, 0)

	// The proxy keeps working for new connections.
	c3 := dial(t, p.Addr())
	s3 := srv.nextConn(t)
	write(t, c3, "3")
	expect(t, s3, "3")
	if n := p.CutAll(); n != 1 {
		t.Fatalf("second CutAll() = %d, want 1", n)
	}
}

// CutAll works while paused too, and the cut is not held by the pause.
func TestCutAllWhilePaused(t *testing.T) {
	srv := newServer(t, false)
	p := newProxy(t, srv.addr())
	c := dial(t, p.Addr())
	s := srv.nextConn(t)
	p.Pause()
	write(t, c, "held")
	if n := p.CutAll(); n != 1 {
		t.Fatalf("CutAll() = %d, want 1", n)
	}
	expectClosed(t, c)
	expectClosed(t, s)
	waitActive(t, p, 0)
}

func TestRefuse(t *testing.T) {
	srv := newServer(t, true)
	p := newProxy(t, srv.addr())
	existing := dial(t, p.Addr())
	srv.nextConn(t)

	p.SetRefuse(true)
	// On loopback the reset may already be seen by connect(2) itself, or
	// only by the first read; both mean "refused".
	if c, err := net.DialTimeout("tcp", p.Addr(), long); err == nil {
		expectClosed(t, c)
		_ = c.Close()
	}
	srv.noConn(t)
	if st := p.Stats(); st.Refused != 1 || st.Accepted != 2 {
		t.Fatalf("stats %+v", st)
	}
	// Existing connections are unaffected.
	write(t, existing, "still")
	expect(t, existing, "still")

	p.SetRefuse(false)
	c := dial(t, p.Addr())
	write(t, c, "ok")
	expect(t, c, "ok")
}

func TestDialError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	_ = ln.Close()

	p := newProxy(t, dead)
	c := dial(t, p.Addr())
	expectClosed(t, c)
	waitActive(t, p, 0)
	if st := p.Stats(); st.DialErrors != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestHalfClose(t *testing.T) {
	srv := newServer(t, true)
	p := newProxy(t, srv.addr())
	c := dial(t, p.Addr())
	write(t, c, "half")
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	// The echo server sees EOF, then closes its write side: we get the echo
	// followed by EOF.
	_ = c.SetReadDeadline(time.Now().Add(long))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "half" {
		t.Fatalf("ReadAll = %q, %v", got, err)
	}
	waitActive(t, p, 0)
}

func TestCloseClosesConnectionsAndIsIdempotent(t *testing.T) {
	srv := newServer(t, true)
	p, err := New(srv.addr())
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, p.Addr())
	write(t, c, "x")
	expect(t, c, "x")
	p.Pause() // Close must not hang on paused connections.
	write(t, c, "y")

	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, c)
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if st := p.Stats(); st.Active != 0 {
		t.Fatalf("stats after Close %+v", st)
	}
	if c2, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		_ = c2.Close()
		t.Fatal("proxy still accepts after Close")
	}
}

func TestConcurrentUse(t *testing.T) {
	srv := newServer(t, true)
	p := newProxy(t, srv.addr())
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", p.Addr(), long)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(long))
			msg := bytes.Repeat([]byte("z"), 64*1024)
			done := make(chan struct{})
			go func() {
				defer close(done)
				_, _ = c.Write(msg)
			}()
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(c, got); err != nil {
				t.Error(err)
			}
			<-done
		}()
	}
	// Toggle fault knobs concurrently to shake out races.
	for i := 0; i < 20; i++ {
		p.Pause()
		p.Resume()
		_ = p.Stats()
	}
	wg.Wait()
}
