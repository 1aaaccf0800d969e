package rawamqp

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"sync/atomic"
)

// Frame layout: type (1), channel (2), payload size (4), payload, end (1).
const (
	frameHeaderLen = 7
	frameHeader    = 2
	frameEnd       = 0xCE
	// MinFrameMax is the smallest frame_max AMQP allows: the limit until
	// SetFrameMax is called.
	MinFrameMax = 4096
	// keptBuf is the size of the buffer a Conn keeps for header frames.
	keptBuf = 4096
)

// Conn is a net.Conn whose reads pass every frame through unchanged except
// content header frames amqp091-go could not read, which it rewrites (see
// Rewrite). Writes, deadlines and Close are the wrapped connection's.
//
// Read must be called from one goroutine at a time (amqp091-go's reader is
// the only one); SetFrameMax may be called from any goroutine. A header
// frame is held until it is whole, so Read blocks until the whole frame
// arrived (as amqp091-go does anyway). A header frame larger than the
// frame_max passes through unchanged: amqp091-go refuses it on its size
// before parsing it.
type Conn struct {
	net.Conn
	r        *bufio.Reader
	left     int64  // bytes of the current passed-through frame not read yet
	out      []byte // a header frame (rewritten or not) not read yet
	buf      []byte // reused for header frames
	frameMax atomic.Uint32
}

// NewConn wraps c.
func NewConn(c net.Conn) *Conn {
	w := &Conn{Conn: c, r: bufio.NewReaderSize(c, 32<<10)}
	w.frameMax.Store(MinFrameMax)
	return w
}

// SetFrameMax sets the negotiated frame_max (frame bytes, framing
// included), the limit of a rewritten frame.
func (c *Conn) SetFrameMax(n uint32) {
	if n >= MinFrameMax {
		c.frameMax.Store(n)
	}
}

// Read reads the frame stream.
func (c *Conn) Read(p []byte) (int, error) {
	if len(c.out) > 0 {
		n := copy(p, c.out)
		c.out = c.out[n:]
		return n, nil
	}
	if c.left == 0 {
		if err := c.next(); err != nil {
			return 0, err
		}
		if len(c.out) > 0 {
			return c.Read(p)
		}
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.r.Read(p)
	c.left -= int64(n)
	return n, err
}

// next starts the next frame: a header frame is read whole into out
// (rewritten if need be), any other is passed through (left).
func (c *Conn) next() error {
	h, err := c.r.Peek(frameHeaderLen)
	if err != nil {
		if len(h) > 0 {
			c.left = int64(len(h)) // hand out what came before the error
			return nil
		}
		return err
	}
	size := binary.BigEndian.Uint32(h[3:7])
	total := int64(frameHeaderLen) + int64(size) + 1
	max := c.frameMax.Load()
	if h[0] != frameHeader || int64(size) > int64(max)-8 {
		c.left = total
		return nil
	}
	var frame []byte
	if total <= keptBuf {
		if c.buf == nil {
			c.buf = make([]byte, keptBuf)
		}
		frame = c.buf[:total]
	} else {
		frame = make([]byte, total) // not kept: a large frame is rare
	}
	if _, err := io.ReadFull(c.r, frame); err != nil {
		return err
	}
	c.out = c.rewrite(frame, int(max))
	return nil
}

// rewrite returns the frame to hand out for the header frame f.
func (c *Conn) rewrite(f []byte, max int) []byte {
	payload := f[frameHeaderLen : len(f)-1]
	if f[len(f)-1] != frameEnd {
		return f // amqp091-go refuses it on its end octet anyway
	}
	np, changed := Rewrite(payload, max-8)
	if !changed {
		return f
	}
	out := make([]byte, 0, frameHeaderLen+len(np)+1)
	out = append(out, f[:3]...)
	out = binary.BigEndian.AppendUint32(out, uint32(len(np)))
	out = append(out, np...)
	return append(out, frameEnd)
}
