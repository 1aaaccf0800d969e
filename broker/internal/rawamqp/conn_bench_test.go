package rawamqp

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"testing"
)

// streamConn serves a fixed frame stream over and over.
type streamConn struct {
	net.Conn
	r *bytes.Reader
	b []byte
}

func (s *streamConn) Read(p []byte) (int, error) {
	if s.r.Len() == 0 {
		s.r.Reset(s.b)
	}
	return s.r.Read(p)
}

// deliveryStream is one delivery's frames: basic.deliver, a content header
// with a small table, a 200-byte body.
func deliveryStream() []byte {
	return bytes.Join([][]byte{
		frame(1, append([]byte{0, 60, 0, 60}, bytes.Repeat([]byte{1}, 60)...)),
		frame(frameHeader, header(entry("k", strField("v")), 200)),
		frame(3, bytes.Repeat([]byte("x"), 200)),
	}, nil)
}

// BenchmarkRead reads deliveries as amqp091-go does (through a 4 KiB
// bufio.Reader), through the guard and without it.
func BenchmarkRead(b *testing.B) {
	stream := deliveryStream()
	for _, guarded := range []bool{false, true} {
		name := "plain"
		if guarded {
			name = "guarded"
		}
		b.Run(name, func(b *testing.B) {
			var c io.Reader = &streamConn{r: bytes.NewReader(stream), b: stream}
			if guarded {
				g := NewConn(c.(net.Conn))
				g.SetFrameMax(1 << 17)
				c = g
			}
			r := bufio.NewReaderSize(c, 4096)
			buf := make([]byte, len(stream))
			b.SetBytes(int64(len(stream)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := io.ReadFull(r, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
