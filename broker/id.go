package broker

import (
	"crypto/rand"
	"encoding/hex"
)

// RandomID returns 16 random hex characters, for consumer tags and names.
func RandomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
