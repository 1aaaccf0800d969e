package broker

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"unicode/utf8"
)

// safeRoutingKeyByte reports whether tomodachi leaves b unencoded in a
// routing key: a-z A-Z 0-9 and _ * # , ; . : < > ! " % & / ( ) [ ] { } \ = ? ' ^ ` ~ + | @ $ space -.
func safeRoutingKeyByte(b byte) bool {
	switch {
	case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9':
		return true
	}
	return strings.IndexByte("_*#,;.:<>!\"%&/()[]{}\\=?'^`~+|@$ -", b) >= 0
}

// EncodeRoutingKey encodes a routing key exactly as tomodachi does: every
// character outside the safe set becomes "___" + the lowercase hex of its
// UTF-8 bytes + "_". Bytes that are not valid UTF-8 are encoded one by one.
func EncodeRoutingKey(key string) string {
	i := 0
	for i < len(key) && safeRoutingKeyByte(key[i]) {
		i++
	}
	if i == len(key) {
		return key
	}
	var b strings.Builder
	b.Grow(len(key) + 16)
	b.WriteString(key[:i])
	for i < len(key) {
		c := key[i]
		if safeRoutingKeyByte(c) {
			b.WriteByte(c)
			i++
			continue
		}
		_, size := utf8.DecodeRuneInString(key[i:])
		b.WriteString("___")
		var buf [8]byte
		n := hex.Encode(buf[:], []byte(key[i:i+size]))
		b.Write(buf[:n])
		b.WriteByte('_')
		i += size
	}
	return b.String()
}

// DecodeRoutingKey reverses EncodeRoutingKey as tomodachi does: every
// "___" + 2, 4, 6 or 8 lowercase hex digits + "_" is replaced by the bytes
// the hex spells. A sequence whose bytes are not valid UTF-8 is left as it is
// (tomodachi would raise), so decoding never fails.
func DecodeRoutingKey(key string) string {
	if !strings.Contains(key, "___") {
		return key
	}
	var b strings.Builder
	b.Grow(len(key))
	i := 0
	for i < len(key) {
		if strings.HasPrefix(key[i:], "___") {
			if n, decoded, ok := decodeEscape(key[i+3:]); ok {
				b.WriteString(decoded)
				i += 3 + n
				continue
			}
		}
		b.WriteByte(key[i])
		i++
	}
	return b.String()
}

// decodeEscape matches tomodachi's regexp alternation
// ([a-f0-9]{2}|[a-f0-9]{4}|[a-f0-9]{6}|[a-f0-9]{8})_ at the start of s,
// trying the shorter lengths first. It returns the number of bytes consumed
// (hex digits and the closing underscore) and the decoded text.
func decodeEscape(s string) (int, string, bool) {
	for _, n := range [...]int{2, 4, 6, 8} {
		if len(s) <= n || s[n] != '_' || !lowerHex(s[:n]) {
			continue
		}
		raw, err := hex.DecodeString(s[:n])
		if err != nil || !utf8.Valid(raw) {
			return 0, "", false
		}
		return n + 1, string(raw), true
	}
	return 0, "", false
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// BindingKey is the key a queue is bound with and a message is published
// with: the prefix and the routing key, then encoded.
func BindingKey(prefix, routingKey string) string {
	return EncodeRoutingKey(prefix + routingKey)
}

// StripPrefix removes prefix from a delivered routing key, as tomodachi's
// get_routing_key_without_prefix does (only when the key starts with it).
func StripPrefix(prefix, routingKey string) string {
	if prefix != "" && strings.HasPrefix(routingKey, prefix) {
		return routingKey[len(prefix):]
	}
	return routingKey
}

// QueueName is the queue tomodachi declares for a subscription without an
// explicit queue name. routingKey is the subscription's key without the
// routing-key prefix, not yet encoded. Competing subscriptions share
// sha256(encoded key); a non-competing one gets
// sha256(encoded key + handler name + service uuid). The queue-name prefix is
// prepended to the hash.
func QueueName(routingKey, handlerName, serviceUUID string, competing bool, prefix string) string {
	encoded := EncodeRoutingKey(routingKey)
	var sum [sha256.Size]byte
	if competing {
		sum = sha256.Sum256([]byte(encoded))
	} else {
		sum = sha256.Sum256([]byte(encoded + handlerName + serviceUUID))
	}
	return prefix + hex.EncodeToString(sum[:])
}

// FixedQueueName is the queue declared for a subscription with an explicit
// queue name: the queue-name prefix and the name, no hashing.
func FixedQueueName(name, prefix string) string {
	return prefix + name
}

// DeadLetterQueueName is the dead-letter queue of a route: its queue name
// and ".dlq", except for a non-competing route without an explicit queue
// name, whose queue belongs to one service instance (its name holds the
// random service uuid). Dead letters belong to the route, not to the
// instance, so every instance of the service shares that route's
// dead-letter queue: the queue-name prefix, then
// sha256(encoded key + handler name + service name) in hex, then ".dlq"
// (tomodachi's non-competing queue name with the service name in place of
// the uuid; at most len(prefix)+68 bytes).
func DeadLetterQueueName(queue, routingKey, handlerName, serviceName string, perInstance bool, prefix string) string {
	if !perInstance {
		return queue + ".dlq"
	}
	sum := sha256.Sum256([]byte(EncodeRoutingKey(routingKey) + handlerName + serviceName))
	return prefix + hex.EncodeToString(sum[:]) + ".dlq"
}
