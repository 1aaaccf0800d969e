// Package rawamqp reads AMQP 0-9-1 content headers without amqp091-go and
// rewrites, before amqp091-go sees them, the ones amqp091-go's parser
// would refuse: tables nested deeper than 32, containers of more than 8 192
// elements, unknown field types, lengths that do not fit. amqp091-go
// answers such a frame by dropping the whole connection, and the broker
// redelivers the message on every reconnect; see Conn.
//
// The parser is tolerant where amqp091-go is not: it skips the headers
// table by its length prefix, so the other properties survive a table it
// cannot read. It is strict where amqp091-go is lax: whatever it does not
// accept is rewritten, never passed on, so the worst a disagreement can do
// is quarantine a malformed message amqp091-go might have read.
package rawamqp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Limits of amqp091-go v1.16's table reader (read.go maxFieldDepth,
// maxContainerElements): a table or array nested deeper, or holding more
// elements, fails the whole frame.
const (
	MaxDepth    = 32
	MaxElements = 8192
)

// Headers a rewritten content header carries instead of what could not be
// read. Their values are plain AMQP types every client reads.
const (
	// HeaderUnparseable: why the properties could not be read (string).
	HeaderUnparseable = "x-hato-unparseable"
	// HeaderRawHeaders: the headers table as sent, its field-table bytes
	// without the 4-byte length prefix (byte array, 'x').
	HeaderRawHeaders = "x-hato-raw-headers"
	// HeaderRawProperties: every property byte after the property flags,
	// when more than the table was unreadable (byte array, 'x').
	HeaderRawProperties = "x-hato-raw-properties"
)

// Property flags of class basic, in wire order.
const (
	flagContentType     = 0x8000
	flagContentEncoding = 0x4000
	flagHeaders         = 0x2000
	flagDeliveryMode    = 0x1000
	flagPriority        = 0x0800
	flagCorrelationID   = 0x0400
	flagReplyTo         = 0x0200
	flagExpiration      = 0x0100
	flagMessageID       = 0x0080
	flagTimestamp       = 0x0040
	flagType            = 0x0020
	flagUserID          = 0x0010
	flagAppID           = 0x0008
	flagReserved1       = 0x0004
)

// fixedPart is class id, weight, body size and property flags.
const fixedPart = 2 + 2 + 8 + 2

// Errors of the parser. A CheckHeader error wraps one of them.
var (
	// ErrTruncated: a length or value runs past the end of its container.
	ErrTruncated = errors.New("rawamqp: truncated")
	// ErrDepth: tables or arrays nested deeper than MaxDepth.
	ErrDepth = errors.New("rawamqp: nested deeper than 32")
	// ErrElements: a table or array of more than MaxElements elements.
	ErrElements = errors.New("rawamqp: more than 8192 elements")
	// ErrFieldType: a field type amqp091-go does not know.
	ErrFieldType = errors.New("rawamqp: unknown field type")
	// ErrLength: a negative or oversized length prefix.
	ErrLength = errors.New("rawamqp: invalid length")
)

// Header is where the parts of a content header payload are.
type Header struct {
	BodySize uint64
	Flags    uint16
	// TableStart and TableEnd delimit the headers table, length prefix
	// included; both are 0 when the header has no table or the table's
	// length does not fit the payload.
	TableStart, TableEnd int
	// TableErr is why the table cannot be read (nil: it can).
	TableErr error
	// Err is why the properties outside the table cannot be read.
	Err error
}

// ParseHeader parses a basic content header frame's payload. ok is false
// when the payload is shorter than its fixed part (no body size).
func ParseHeader(p []byte) (h Header, ok bool) {
	if len(p) < fixedPart {
		return h, false
	}
	h.BodySize = binary.BigEndian.Uint64(p[4:12])
	h.Flags = binary.BigEndian.Uint16(p[12:14])
	i := fixedPart
	for _, f := range [...]uint16{
		flagContentType, flagContentEncoding, flagHeaders, flagDeliveryMode,
		flagPriority, flagCorrelationID, flagReplyTo, flagExpiration, flagMessageID,
		flagTimestamp, flagType, flagUserID, flagAppID, flagReserved1,
	} {
		if h.Flags&f == 0 {
			continue
		}
		n, err := propertyLen(f, p[i:])
		if err != nil {
			h.Err = fmt.Errorf("property %#04x: %w", f, err)
			return h, true
		}
		if f == flagHeaders {
			h.TableStart, h.TableEnd = i, i+n
			h.TableErr = CheckTable(p[i+4 : i+n])
		}
		i += n
	}
	return h, true
}

// propertyLen is the length on the wire of the property with flag f at the
// start of b.
func propertyLen(f uint16, b []byte) (int, error) {
	switch f {
	case flagDeliveryMode, flagPriority:
		return need(b, 1)
	case flagTimestamp:
		return need(b, 8)
	case flagHeaders:
		return longLen(b)
	}
	if len(b) < 1 {
		return 0, ErrTruncated
	}
	return need(b, 1+int(b[0]))
}

func need(b []byte, n int) (int, error) {
	if len(b) < n {
		return 0, ErrTruncated
	}
	return n, nil
}

// longLen is the length of the long string (or table) at the start of b,
// its 4-byte prefix included.
func longLen(b []byte) (int, error) {
	if len(b) < 4 {
		return 0, ErrTruncated
	}
	n := binary.BigEndian.Uint32(b)
	if n > math.MaxInt32 {
		return 0, ErrLength
	}
	return need(b, 4+int(n))
}

// CheckTable reports whether amqp091-go can read the field table whose
// bytes (without the length prefix) are b.
func CheckTable(b []byte) error {
	_, err := checkTable(b, 0)
	return err
}

// checkTable checks the entries of a table at depth and returns how many
// bytes they took (all of b).
func checkTable(b []byte, depth int) (int, error) {
	if depth > MaxDepth {
		return 0, ErrDepth
	}
	for i, n := 0, 0; i < len(b); n++ {
		if n >= MaxElements {
			return 0, ErrElements
		}
		if b[i] > 0 && len(b)-i-1 < int(b[i]) {
			return 0, fmt.Errorf("field name: %w", ErrTruncated)
		}
		i += 1 + int(b[i])
		k, err := checkField(b[i:], depth)
		if err != nil {
			return 0, err
		}
		i += k
	}
	return len(b), nil
}

// checkArray checks the elements of an array at depth.
func checkArray(b []byte, depth int) error {
	if depth > MaxDepth {
		return ErrDepth
	}
	for i, n := 0, 0; i < len(b); n++ {
		if n >= MaxElements {
			return ErrElements
		}
		k, err := checkField(b[i:], depth)
		if err != nil {
			return err
		}
		i += k
	}
	return nil
}

// fixedSize is the value size of the fixed-size field types.
var fixedSize = [256]int8{
	't': 1, 'B': 1, 'b': 1, 's': 2, 'u': 2, 'I': 4, 'i': 4, 'f': 4,
	'l': 8, 'd': 8, 'T': 8, 'D': 5,
}

// checkField checks the field (type octet and value) at the start of b,
// inside a container at depth, and returns its length.
func checkField(b []byte, depth int) (int, error) {
	if len(b) == 0 {
		return 0, ErrTruncated
	}
	typ := b[0]
	if n := int(fixedSize[typ]); n > 0 {
		return need(b, 1+n)
	}
	switch typ {
	case 'V':
		return 1, nil
	case 'S', 'x':
		n, err := longLen(b[1:])
		return 1 + n, err
	case 'F', 'A':
		n, err := longLen(b[1:])
		if err != nil {
			return 0, err
		}
		inner := b[5 : 1+n]
		if typ == 'F' {
			_, err = checkTable(inner, depth+1)
		} else {
			err = checkArray(inner, depth+1)
		}
		return 1 + n, err
	}
	return 0, fmt.Errorf("%w %q", ErrFieldType, typ)
}
