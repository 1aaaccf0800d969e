package envelope

import (
	"bytes"
	"errors"
	"runtime"
	"testing"
	"time"
)

func TestZlibZerosIsValid(t *testing.T) {
	for _, n := range []int{2, 5} {
		out, err := inflate(zlibZeros(n), -1)
		if err != nil {
			t.Fatal(err)
		}
		if len(out) != n<<20 || !bytes.Equal(out, make([]byte, n<<20)) {
			t.Fatalf("got %d bytes", len(out))
		}
	}
}

func TestInflate(t *testing.T) {
	data := bytes.Repeat([]byte("hato "), 1000)
	z := zlibOf(data)
	for _, c := range []struct {
		name  string
		in    []byte
		limit int64
		want  error // nil: ok; errInflateTooLarge; errCorrupt for any other
	}{
		{"unlimited", z, -1, nil},
		{"exact limit", z, int64(len(data)), nil},
		{"one over", z, int64(len(data)) - 1, errInflateTooLarge},
		{"tiny limit", z, 1, errInflateTooLarge},
		{"truncated", z[:len(z)-5], -1, errCorrupt},
		{"bad checksum", append(bytes.Clone(z[:len(z)-1]), z[len(z)-1]^1), -1, errCorrupt},
		{"not zlib", []byte("hello"), -1, errCorrupt},
		{"empty", nil, -1, errCorrupt},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, err := inflate(c.in, c.limit)
			switch {
			case c.want == nil && (err != nil || !bytes.Equal(out, data)):
				t.Fatalf("got %d bytes, %v", len(out), err)
			case errors.Is(c.want, errInflateTooLarge) && !errors.Is(err, errInflateTooLarge):
				t.Fatalf("got %v, want too large", err)
			case errors.Is(c.want, errCorrupt) && (err == nil || errors.Is(err, errInflateTooLarge)):
				t.Fatalf("got %v, want a corruption error", err)
			}
		})
	}
}

// errCorrupt stands for "any error but errInflateTooLarge" in TestInflate.
var errCorrupt = errors.New("test: any corruption error")

// TestZlibBombIsBounded inflates 1 GiB of zeros under a limit and checks it
// fails fast and allocates about the limit, not the gigabyte.
func TestZlibBombIsBounded(t *testing.T) {
	bomb := zlibBomb()
	for _, c := range []struct {
		name     string
		limit    int64
		maxAlloc uint64
	}{
		{"1 MiB limit", 1 << 20, 16 << 20},
		{"default limit", DefaultMaxDecompressedSize, 3 * uint64(DefaultMaxDecompressedSize)},
	} {
		t.Run(c.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			start := time.Now()
			_, err := inflate(bomb, c.limit)
			elapsed := time.Since(start)
			runtime.ReadMemStats(&after)
			if !errors.Is(err, errInflateTooLarge) {
				t.Fatalf("got %v, want too large", err)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > c.maxAlloc {
				t.Errorf("allocated %d bytes for a limit of %d", alloc, c.limit)
			}
			t.Logf("failed after %v", elapsed)
		})
	}
}
