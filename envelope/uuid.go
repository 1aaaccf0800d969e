package envelope

import (
	"crypto/rand"
	"math"
	"time"
)

// noneUUID is what tomodachi writes in place of a missing service uuid when
// it formats a message uuid: Python's str(None).
const noneUUID = "None"

// NewUUID4 returns a random (version 4, RFC 9562) UUID in its canonical
// lowercase 8-4-4-4-12 form, from crypto/rand.
func NewUUID4() string {
	var u [16]byte
	_, _ = rand.Read(u[:]) // never fails (crypto/rand.Read crashes the program instead)
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	const hex = "0123456789abcdef"
	var s [36]byte
	j := 0
	for i, c := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			s[j] = '-'
			j++
		}
		s[j], s[j+1] = hex[c>>4], hex[c&0x0f]
		j += 2
	}
	return string(s[:])
}

// messageUUID is b.MessageUUID, or "<service uuid>.<uuid4>" as tomodachi
// makes it; a missing service uuid is written "None", as tomodachi does.
func (b Build) messageUUID() string {
	if b.MessageUUID != "" {
		return b.MessageUUID
	}
	svc := b.Service.UUID
	if svc == "" {
		svc = noneUUID
	}
	return svc + "." + NewUUID4()
}

// timestamp is b.Time (or now) in unix seconds, as tomodachi's time.time().
// It is computed as seconds + nanoseconds/1e9, so a Time made from a
// timestamp by Metadata.Time gives back the same float64.
func (b Build) timestamp() float64 {
	t := b.Time
	if t.IsZero() {
		t = time.Now()
	}
	return float64(t.Unix()) + float64(t.Nanosecond())/1e9
}

// finite reports whether f is neither NaN nor an infinity.
func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }
