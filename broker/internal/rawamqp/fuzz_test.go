package rawamqp

import (
	"bytes"
	"io"
	"net"
	"testing"
)

func seedHeaders(f *testing.F) {
	f.Add(header(nil, 0))
	f.Add(header(nested(3), 10))
	f.Add(header(nested(33), 10))
	f.Add(header(wide(MaxElements+1), 1))
	f.Add(header(entry("k", []byte{'Z'}), 1))
	f.Add(header(entry("u", []byte{'u', 0, 1}), 1))
	f.Add(header(entry("k", arrayField(strField("a"), tableField(entry("x", []byte{'V'})))), 1))
	f.Add([]byte{0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 3})
}

// FuzzRewrite: Rewrite never panics, keeps the body size, stays within
// max, and what it returns (rewritten or not) is a header the checker
// accepts whenever it changed anything.
func FuzzRewrite(f *testing.F) {
	seedHeaders(f)
	f.Fuzz(func(t *testing.T, p []byte) {
		const max = MinFrameMax - 8
		if len(p) > max {
			p = p[:max]
		}
		before, ok := ParseHeader(p)
		out, changed := Rewrite(p, max)
		if !changed {
			if ok && (before.Err != nil || before.TableErr != nil) {
				t.Fatal("an unreadable header passed unchanged")
			}
			return
		}
		if len(out) > max {
			t.Fatalf("rewritten to %d bytes, max %d", len(out), max)
		}
		after, _ := ParseHeader(out)
		if after.Err != nil || after.TableErr != nil || after.BodySize != before.BodySize {
			t.Fatalf("rewritten header: %+v (was %+v)", after, before)
		}
	})
}

// FuzzCheckTable: the checker never panics on any table bytes.
func FuzzCheckTable(f *testing.F) {
	f.Add(nested(40))
	f.Add(wide(10))
	f.Add(entry("k", arrayField([]byte{'A', 0, 0, 0, 9})))
	f.Fuzz(func(t *testing.T, b []byte) { _ = CheckTable(b) })
}

// FuzzConn: any byte stream read through a Conn comes out whole (no
// panic, no hang), and a stream of well-formed frames keeps its frame
// boundaries.
func FuzzConn(f *testing.F) {
	f.Add(frame(frameHeader, header(nested(40), 1)), frame(3, []byte("x")))
	f.Add(frame(1, []byte{0, 10}), frame(frameHeader, header(nil, 0)))
	f.Add([]byte("AMQP\x00\x00\x09\x01"), []byte{frameHeader, 0})
	f.Fuzz(func(t *testing.T, a, b []byte) {
		client, server := net.Pipe()
		go func() {
			_, _ = server.Write(a)
			_, _ = server.Write(b)
			_ = server.Close()
		}()
		out, _ := io.ReadAll(NewConn(client))
		stream := append(append([]byte{}, a...), b...)
		if len(out) == 0 && len(stream) > 0 && stream[0] != frameHeader {
			t.Fatal("nothing passed through")
		}
		if !bytes.HasPrefix(stream, []byte{frameHeader}) && len(stream) >= 8 && !bytes.Equal(out[:1], stream[:1]) {
			t.Fatal("first byte changed")
		}
	})
}
