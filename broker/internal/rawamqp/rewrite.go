package rawamqp

import (
	"encoding/binary"
	"fmt"
)

// Rewrite returns the payload to hand amqp091-go instead of p, a basic
// content header payload: p itself when amqp091-go can read it, otherwise a
// header it can read that keeps the class, weight and body size and says
// what was wrong.
//
//   - An unreadable headers table is replaced by a table of two entries:
//     HeaderUnparseable (the parser's error) and HeaderRawHeaders (the
//     table's bytes). The other properties are kept as they were.
//   - When a property outside the table cannot be read, every property is
//     replaced by such a table, with HeaderRawProperties holding the
//     property bytes.
//
// The result is at most max bytes (the connection's frame_max less the
// frame's 8 bytes of framing): raw bytes that do not fit are cut, and
// HeaderUnparseable says so. changed is false when p is returned as it is:
// readable, or shorter than its fixed part (there is no body size to keep).
func Rewrite(p []byte, max int) (out []byte, changed bool) {
	h, ok := ParseHeader(p)
	if !ok || (h.Err == nil && h.TableErr == nil) {
		return p, false
	}
	if h.Err == nil {
		// Only the table: keep everything around it.
		prefix, suffix := p[:h.TableStart], p[h.TableEnd:]
		room := max - len(prefix) - len(suffix)
		table := quarantineTable(h.TableErr, HeaderRawHeaders, p[h.TableStart+4:h.TableEnd], room)
		out = make([]byte, 0, len(prefix)+len(table)+len(suffix))
		return append(append(append(out, prefix...), table...), suffix...), true
	}
	out = make([]byte, fixedPart, max)
	copy(out, p[:12])
	binary.BigEndian.PutUint16(out[12:14], flagHeaders)
	return append(out, quarantineTable(h.Err, HeaderRawProperties, p[fixedPart:], max-fixedPart)...), true
}

// quarantineTable encodes, with its length prefix, the table
// {HeaderUnparseable: why, rawName: raw}, in at most room bytes: raw is cut
// to fit (and why says so).
func quarantineTable(why error, rawName string, raw []byte, room int) []byte {
	reason := why.Error()
	if len(reason) > 1024 {
		reason = reason[:1024]
	}
	// Entries: name (1+n), type (1), length (4), value.
	fixed := 4 + (1 + len(HeaderUnparseable) + 1 + 4) + (1 + len(rawName) + 1 + 4)
	const note = 64 // room kept for the note on a cut
	if keep := room - fixed - len(reason) - note; len(raw) > keep {
		if keep < 0 {
			keep = 0
		}
		reason = fmt.Sprintf("%s (%s cut to %d of %d bytes)", reason, rawName, keep, len(raw))
		raw = raw[:keep]
	}
	out := make([]byte, 4, fixed+len(reason)+len(raw))
	out = appendLong(appendName(out, HeaderUnparseable), 'S', []byte(reason))
	out = appendLong(appendName(out, rawName), 'x', raw)
	binary.BigEndian.PutUint32(out[:4], uint32(len(out)-4))
	return out
}

func appendName(b []byte, name string) []byte {
	return append(append(b, byte(len(name))), name...)
}

func appendLong(b []byte, typ byte, v []byte) []byte {
	b = append(b, typ)
	b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}
