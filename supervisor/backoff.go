package supervisor

import (
	"math"
	"math/rand/v2"
	"time"
)

// Backoff is a capped exponential backoff with jitter:
//
//	delay(n) = min(Max, Initial × Multiplier^(n-1)) × (1 ± Jitter)
//
// The zero value is usable and means DefaultBackoff. Package hato exports
// it as hato.Backoff (WithReconnectBackoff, FailurePolicy.Backoff,
// RestartPolicy.Backoff), where a zero FailurePolicy.Backoff has a default
// of its own.
type Backoff struct {
	// Initial is the first delay. Zero means 100 ms.
	Initial time.Duration
	// Max caps every delay. Zero means 30 s.
	Max time.Duration
	// Multiplier grows the delay per attempt. Zero means 2.
	Multiplier float64
	// Jitter is the fraction of random spread around each delay, in [0, 1].
	// Zero means 0.2; use a negative value for none.
	Jitter float64
}

// DefaultBackoff is what a zero Backoff means.
var DefaultBackoff = Backoff{Initial: 100 * time.Millisecond, Max: 30 * time.Second, Multiplier: 2, Jitter: 0.2}

func (b Backoff) withDefaults() Backoff {
	if b.Initial <= 0 {
		b.Initial = DefaultBackoff.Initial
	}
	if b.Max <= 0 {
		b.Max = DefaultBackoff.Max
	}
	if b.Max < b.Initial {
		b.Max = b.Initial
	}
	if b.Multiplier < 1 {
		b.Multiplier = DefaultBackoff.Multiplier
	}
	switch {
	case b.Jitter == 0:
		b.Jitter = DefaultBackoff.Jitter
	case b.Jitter > 1:
		b.Jitter = 1
	}
	// A negative jitter stays negative ("none"), so withDefaults is
	// idempotent.
	return b
}

// Delay returns the delay before attempt n (n ≥ 1; smaller n count as 1).
// It never exceeds Max × (1 + Jitter) and is never negative.
func (b Backoff) Delay(n int) time.Duration {
	b = b.withDefaults()
	if n < 1 {
		n = 1
	}
	d := float64(b.Initial) * math.Pow(b.Multiplier, float64(n-1))
	if d > float64(b.Max) || math.IsInf(d, 0) || math.IsNaN(d) {
		d = float64(b.Max)
	}
	if b.Jitter > 0 {
		d *= 1 + b.Jitter*(2*rand.Float64()-1)
	}
	if d < 0 {
		d = 0
	}
	return time.Duration(d)
}
