package rawamqp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
)

// Test encoders: enough of AMQP's table encoding to build hostile tables.

func long(b []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...)
}

func entry(name string, field []byte) []byte {
	return append(append([]byte{byte(len(name))}, name...), field...)
}

func tableField(entries ...[]byte) []byte {
	return append([]byte{'F'}, long(bytes.Join(entries, nil))...)
}

func arrayField(fields ...[]byte) []byte {
	return append([]byte{'A'}, long(bytes.Join(fields, nil))...)
}

func strField(s string) []byte { return append([]byte{'S'}, long([]byte(s))...) }

// nested is a table's contents with n tables nested below it.
func nested(n int) []byte {
	inner := entry("leaf", strField("x"))
	for i := 0; i < n; i++ {
		inner = entry("a", tableField(inner))
	}
	return inner
}

// wide is a table's contents with n entries.
func wide(n int) []byte {
	var b []byte
	for i := 0; i < n; i++ {
		b = append(b, entry("k"+strings.Repeat("x", i%3)+string(rune('a'+i%26)), []byte{'I', 0, 0, 0, 1})...)
	}
	return b
}

// header is a content header payload: content type, the table (nil: none),
// delivery mode and message id.
func header(table []byte, bodySize uint64) []byte {
	flags := uint16(flagContentType | flagDeliveryMode | flagMessageID)
	if table != nil {
		flags |= flagHeaders
	}
	p := []byte{0, 60, 0, 0}
	p = binary.BigEndian.AppendUint64(p, bodySize)
	p = binary.BigEndian.AppendUint16(p, flags)
	p = append(p, 16)
	p = append(p, "application/json"...)
	if table != nil {
		p = append(p, long(table)...)
	}
	p = append(p, 2, 3)
	return append(p, "m-1"...)
}

func TestCheckTable(t *testing.T) {
	for _, tc := range []struct {
		name  string
		table []byte
		want  error
	}{
		{"empty", nil, nil},
		{"all types", bytes.Join([][]byte{
			entry("t", []byte{'t', 1}), entry("B", []byte{'B', 1}), entry("b", []byte{'b', 1}),
			entry("s", []byte{'s', 0, 1}), entry("u", []byte{'u', 0, 1}), entry("I", []byte{'I', 0, 0, 0, 1}),
			entry("i", []byte{'i', 0, 0, 0, 1}), entry("f", []byte{'f', 0, 0, 0, 1}),
			entry("l", []byte{'l', 0, 0, 0, 0, 0, 0, 0, 1}), entry("d", []byte{'d', 0, 0, 0, 0, 0, 0, 0, 1}),
			entry("T", []byte{'T', 0, 0, 0, 0, 0, 0, 0, 1}), entry("D", []byte{'D', 2, 0, 0, 0, 1}),
			entry("V", []byte{'V'}), entry("S", strField("s")), entry("x", append([]byte{'x'}, long([]byte{1, 2})...)),
			entry("A", arrayField([]byte{'I', 0, 0, 0, 1}, strField("a"))), entry("F", tableField(entry("k", []byte{'V'}))),
		}, nil), nil},
		{"nested 32", nested(32), nil},
		{"nested 33", nested(33), ErrDepth},
		{"nested 40", nested(40), ErrDepth},
		{"arrays nested 33", entry("a", func() []byte {
			f := []byte{'V'}
			for i := 0; i < 33; i++ {
				f = arrayField(f)
			}
			return f
		}()), ErrDepth},
		{"8192 entries", wide(MaxElements), nil},
		{"8193 entries", wide(MaxElements + 1), ErrElements},
		{"array of 8193", entry("a", arrayField(bytes.Repeat([]byte{'V'}, MaxElements+1))), ErrElements},
		{"array of 8192", entry("a", arrayField(bytes.Repeat([]byte{'V'}, MaxElements))), nil},
		{"unknown type", entry("k", []byte{'Z', 1}), ErrFieldType},
		{"truncated value", entry("k", []byte{'I', 0, 0}), ErrTruncated},
		{"truncated name", []byte{5, 'a'}, ErrTruncated},
		{"string past the end", entry("k", []byte{'S', 0, 0, 0, 9, 'a'}), ErrTruncated},
		{"negative bytes", entry("k", []byte{'x', 0x80, 0, 0, 0}), ErrLength},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckTable(tc.table)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("CheckTable = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestRewriteKeepsReadableHeader(t *testing.T) {
	p := header(nested(3), 42)
	out, changed := Rewrite(p, 1<<17)
	if changed || !bytes.Equal(out, p) {
		t.Fatal("a readable header was rewritten")
	}
}

func TestRewriteReplacesTheTable(t *testing.T) {
	raw := nested(40)
	p := header(raw, 42)
	out, changed := Rewrite(p, 1<<17)
	if !changed {
		t.Fatal("not rewritten")
	}
	h, _ := ParseHeader(out)
	if h.Err != nil || h.TableErr != nil || h.BodySize != 42 {
		t.Fatalf("rewritten header: %+v", h)
	}
	// The other properties are kept byte for byte around the new table.
	if !bytes.Equal(out[:h.TableStart], p[:h.TableStart]) || !bytes.HasSuffix(out, []byte{2, 3, 'm', '-', '1'}) {
		t.Fatalf("properties around the table changed: %x", out)
	}
	table := out[h.TableStart+4 : h.TableEnd]
	if !bytes.Contains(table, entry(HeaderRawHeaders, append([]byte{'x'}, long(raw)...))) {
		t.Fatal("raw table not carried whole")
	}
	if !bytes.Contains(table, []byte(HeaderUnparseable)) || !bytes.Contains(table, []byte("nested deeper than 32")) {
		t.Fatalf("no reason in %q", table)
	}
}

func TestRewriteReplacesBrokenProperties(t *testing.T) {
	p := header(nil, 7)
	p = p[:len(p)-2] // message id cut short
	out, changed := Rewrite(p, 1<<17)
	h, _ := ParseHeader(out)
	if !changed || h.Err != nil || h.TableErr != nil || h.BodySize != 7 || h.Flags != flagHeaders {
		t.Fatalf("rewritten header: %+v", h)
	}
	if !bytes.Contains(out, entry(HeaderRawProperties, append([]byte{'x'}, long(p[fixedPart:])...))) {
		t.Fatal("raw properties not carried")
	}
}

func TestRewriteCutsToFrameMax(t *testing.T) {
	raw := append(nested(40), wide(3000)...)
	p := header(raw, 1)
	const max = 4096 - 8
	out, changed := Rewrite(p, max)
	if !changed || len(out) > max {
		t.Fatalf("changed %v, %d bytes, max %d", changed, len(out), max)
	}
	h, _ := ParseHeader(out)
	if h.Err != nil || h.TableErr != nil {
		t.Fatalf("rewritten header: %+v", h)
	}
	if !bytes.Contains(out, []byte("cut to")) {
		t.Fatal("the cut is not noted")
	}
}

// frame is a whole frame of type typ on channel 1.
func frame(typ byte, payload []byte) []byte {
	f := []byte{typ, 0, 1}
	f = binary.BigEndian.AppendUint32(f, uint32(len(payload)))
	return append(append(f, payload...), frameEnd)
}

// readFrames splits a frame stream.
func readFrames(t *testing.T, b []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for len(b) > 0 {
		size := int(binary.BigEndian.Uint32(b[3:7]))
		out = append(out, b[:frameHeaderLen+size+1])
		b = b[frameHeaderLen+size+1:]
	}
	return out
}

func TestConnRewritesOnlyBadHeaderFrames(t *testing.T) {
	good := frame(frameHeader, header(nested(2), 3))
	bad := frame(frameHeader, header(nested(40), 3))
	method := frame(1, []byte{0, 60, 0, 60, 1, 2, 3})
	body := frame(3, []byte("abc"))
	stream := bytes.Join([][]byte{method, good, body, method, bad, body, method}, nil)

	client, server := net.Pipe()
	go func() {
		// Dribble the stream in small writes, so frames straddle reads.
		for b := stream; len(b) > 0; {
			n := min(len(b), 5)
			_, _ = server.Write(b[:n])
			b = b[n:]
		}
		_ = server.Close()
	}()
	c := NewConn(client)
	c.SetFrameMax(1 << 17)
	got, err := io.ReadAll(iotest{c})
	if err != nil {
		t.Fatal(err)
	}
	frames := readFrames(t, got)
	if len(frames) != 7 {
		t.Fatalf("%d frames, want 7", len(frames))
	}
	for i, want := range [][]byte{method, good, body, method, nil, body, method} {
		if want != nil && !bytes.Equal(frames[i], want) {
			t.Fatalf("frame %d changed", i)
		}
	}
	h, _ := ParseHeader(frames[4][frameHeaderLen : len(frames[4])-1])
	if h.TableErr != nil || h.Err != nil || h.BodySize != 3 {
		t.Fatalf("bad frame not rewritten: %+v", h)
	}
}

// iotest reads in 3-byte slices, as a stingy caller would.
type iotest struct{ r io.Reader }

func (s iotest) Read(p []byte) (int, error) { return s.r.Read(p[:min(len(p), 3)]) }
