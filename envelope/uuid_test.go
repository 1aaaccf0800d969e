package envelope

import (
	"testing"
	"time"
)

func TestNewUUID4(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		u := NewUUID4()
		if !uuid4RE.MatchString(u) || seen[u] {
			t.Fatalf("bad or repeated uuid %q", u)
		}
		seen[u] = true
	}
}

func TestMetadataTime(t *testing.T) {
	for _, c := range []struct {
		ts   float64
		want time.Time
	}{
		{0, time.Unix(0, 0)},
		{1.5, time.Unix(1, 5e8)},
		{-1.5, time.Unix(-2, 5e8)},
		{1795629630.8772357, time.Unix(1795629630, 877235651)},
	} {
		if got := (Metadata{Timestamp: c.ts}).Time(); !got.Equal(c.want) {
			t.Errorf("%v: got %v, want %v", c.ts, got.UnixNano(), c.want.UnixNano())
		}
	}
}
