// Package netproxy is a small TCP proxy for network-fault tests on loopback.
//
// A Proxy listens on 127.0.0.1:<random port> and forwards every accepted
// connection to a fixed target address (typically the RabbitMQ broker). Tests
// point the code under test at Proxy.Addr() instead of the broker and then
// inject faults:
//
//   - Pause / Resume: a "black hole". While paused nothing at all is
//     delivered in either direction: no data, and no connection close
//     (FIN/RST) either, exactly like a cut cable or a silently dropping
//     firewall. Data is HELD, not dropped: the proxy keeps at most one read
//     buffer per direction per connection, the rest stays in the kernel
//     socket buffers (TCP flow control then stalls the sender). On Resume
//     everything held is delivered in order, followed by any close that
//     happened meanwhile. This is the right tool to make AMQP heartbeats time
//     out. Connections accepted while paused are not forwarded (the target is
//     not even dialled) until Resume.
//   - CutAll: closes every current connection abruptly (RST to both sides, as
//     after a network failure that the OS noticed).
//   - SetRefuse: new connections are accepted by the kernel but immediately
//     reset, so clients see "connection reset"/EOF; existing connections are
//     unaffected.
//
// Close stops the proxy and waits for all of its goroutines, so tests using
// go.uber.org/goleak stay clean.
package netproxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// DialTimeout bounds how long the proxy waits when dialling the target for a
// newly accepted connection.
const DialTimeout = 5 * time.Second

const bufSize = 32 * 1024

// Stats is a snapshot of a Proxy's counters.
type Stats struct {
	Accepted        int64 // connections accepted by the listener (including refused ones)
	Refused         int64 // connections reset immediately because of SetRefuse(true)
	DialErrors      int64 // connections closed because the target could not be dialled
	Active          int   // connections currently tracked (forwarding, held or being set up)
	BytesToTarget   int64 // bytes written from clients to the target
	BytesFromTarget int64 // bytes written from the target back to clients
}

// Proxy forwards TCP connections from a loopback listener to a target and
// lets tests pause, cut and refuse them. All methods are safe for concurrent
// use.
type Proxy struct {
	target string
	ln     net.Listener

	mu     sync.Mutex
	cond   *sync.Cond // broadcast on Resume and whenever a link or the proxy closes
	paused bool
	closed bool
	links  map[*link]struct{}

	refuse atomic.Bool
	wg     sync.WaitGroup

	accepted, refused, dialErrors  atomic.Int64
	bytesToTarget, bytesFromTarget atomic.Int64
}

// link is one proxied connection: client <-> proxy <-> server.
type link struct {
	client net.Conn
	server net.Conn // nil until dialled; guarded by Proxy.mu
	closed bool     // guarded by Proxy.mu
}

// New starts a proxy listening on 127.0.0.1:0 that forwards to target
// ("host:port"). The target is dialled lazily, once per accepted connection,
// so it does not have to be up yet.
func New(target string) (*Proxy, error) {
	if _, _, err := net.SplitHostPort(target); err != nil {
		return nil, fmt.Errorf("netproxy: invalid target %q: %w", target, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("netproxy: listen: %w", err)
	}
	p := &Proxy{target: target, ln: ln, links: make(map[*link]struct{})}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr returns the proxy's listening address ("127.0.0.1:port").
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target returns the address connections are forwarded to.
func (p *Proxy) Target() string { return p.target }

// Pause stops forwarding in both directions without closing anything (see
// the package documentation for the exact semantics). No read buffer is
// handed to the destination socket after Pause returns; a single Write that
// was already in progress when Pause was called may still complete. Pause is
// idempotent.
func (p *Proxy) Pause() {
	p.mu.Lock()
	p.paused = true
	p.mu.Unlock()
}

// Resume undoes Pause: held data (and held closes) are delivered and
// forwarding continues. Resume is idempotent.
func (p *Proxy) Resume() {
	p.mu.Lock()
	p.paused = false
	p.cond.Broadcast()
	p.mu.Unlock()
}

// Paused reports whether the proxy is currently paused.
func (p *Proxy) Paused() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.paused
}

// SetRefuse controls whether newly accepted connections are reset
// immediately (true) or forwarded (false). Existing connections are not
// affected; use CutAll for those.
func (p *Proxy) SetRefuse(refuse bool) { p.refuse.Store(refuse) }

// CutAll abruptly closes every current connection (both the client side and
// the target side are reset, even while paused) and returns how many were
// cut. The sockets are closed when CutAll returns; the forwarding goroutines
// exit shortly after (watch Stats().Active if a test needs to wait for that).
// The proxy keeps accepting new connections.
func (p *Proxy) CutAll() int {
	p.mu.Lock()
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	p.mu.Unlock()
	n := 0
	for _, l := range links {
		if p.closeLink(l, true) {
			n++
		}
	}
	return n
}

// Stats returns a snapshot of the proxy's counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	active := len(p.links)
	p.mu.Unlock()
	return Stats{
		Accepted:        p.accepted.Load(),
		Refused:         p.refused.Load(),
		DialErrors:      p.dialErrors.Load(),
		Active:          active,
		BytesToTarget:   p.bytesToTarget.Load(),
		BytesFromTarget: p.bytesFromTarget.Load(),
	}
}

// Close stops listening, closes all connections and waits until every
// goroutine of the proxy has exited. It is idempotent; later calls return nil.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.wg.Wait()
		return nil
	}
	p.closed = true
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	p.cond.Broadcast()
	p.mu.Unlock()

	err := p.ln.Close()
	for _, l := range links {
		p.closeLink(l, false)
	}
	p.wg.Wait()
	return err
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || p.isClosed() {
				return
			}
			// Transient error (e.g. EMFILE): back off briefly and retry.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		p.accepted.Add(1)
		if p.refuse.Load() {
			p.refused.Add(1)
			abort(c)
			continue
		}
		p.wg.Add(1)
		go p.handle(c)
	}
}

func (p *Proxy) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

func (p *Proxy) handle(c net.Conn) {
	defer p.wg.Done()
	l := &link{client: c}

	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		abort(c)
		return
	}
	p.links[l] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.links, l)
		p.mu.Unlock()
	}()

	// While paused, do not even dial: a new connection behaves as if the
	// SYN had reached a host that then went silent.
	if !p.waitRunning(l) {
		return
	}
	s, err := net.DialTimeout("tcp", p.target, DialTimeout)
	if err != nil {
		p.dialErrors.Add(1)
		p.closeLink(l, false)
		return
	}
	p.mu.Lock()
	if l.closed {
		p.mu.Unlock()
		abort(s)
		return
	}
	l.server = s
	p.mu.Unlock()

	var pipes sync.WaitGroup
	pipes.Add(1)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer pipes.Done()
		p.pipe(l, c, s, &p.bytesToTarget)
	}()
	p.pipe(l, s, c, &p.bytesFromTarget)
	pipes.Wait()
	p.closeLink(l, false)
}

// pipe copies src to dst until an error, honouring Pause for data and for
// end-of-stream alike.
func (p *Proxy) pipe(l *link, src, dst net.Conn, counter *atomic.Int64) {
	buf := make([]byte, bufSize)
	for {
		n, err := src.Read(buf)
		if !p.waitRunning(l) {
			return
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				p.closeLink(l, true)
				return
			}
			counter.Add(int64(n))
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				// Orderly end of one direction: propagate as a half-close.
				if cw, ok := dst.(interface{ CloseWrite() error }); ok {
					if cw.CloseWrite() == nil {
						return
					}
				}
				p.closeLink(l, false)
				return
			}
			// Reset or other failure: propagate abruptly.
			p.closeLink(l, true)
			return
		}
	}
}

// waitRunning blocks while the proxy is paused. It returns false if the link
// or the proxy got closed (the caller must stop).
func (p *Proxy) waitRunning(l *link) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.paused && !p.closed && !l.closed {
		p.cond.Wait()
	}
	return !p.closed && !l.closed
}

// closeLink closes both sides of l once; abrupt closes send RST. It reports
// whether this call did the closing.
func (p *Proxy) closeLink(l *link, abrupt bool) bool {
	p.mu.Lock()
	if l.closed {
		p.mu.Unlock()
		return false
	}
	l.closed = true
	s := l.server
	p.cond.Broadcast()
	p.mu.Unlock()

	if abrupt {
		abort(l.client)
		if s != nil {
			abort(s)
		}
		return true
	}
	_ = l.client.Close()
	if s != nil {
		_ = s.Close()
	}
	return true
}

// abort closes c with SO_LINGER=0 so the peer gets a RST instead of a FIN.
func abort(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}
