package actors

import (
	"math"
	"testing"
)

func TestSubName(t *testing.T) {
	for i, want := range map[int]string{1: "svc-sub", 2: "svc-sub-2", 3: "svc-sub-3", 12: "svc-sub-12"} {
		if got := subName("svc-sub", i); got != want {
			t.Errorf("subName(svc-sub, %d) = %q, want %q", i, got, want)
		}
	}
}

func TestChannelMax(t *testing.T) {
	for perConn, want := range map[int]uint16{-1: 0, 0: 0, 3: 3, 2047: 2047, math.MaxUint16: math.MaxUint16, 1 << 20: math.MaxUint16} {
		if got := channelMax(perConn); got != want {
			t.Errorf("channelMax(%d) = %d, want %d", perConn, got, want)
		}
	}
}

// openOn with no connection has nowhere to open: full.
func TestOpenOnNone(t *testing.T) {
	if _, _, full := openOn(nil); !full {
		t.Fatal("openOn(nil) not full")
	}
}
