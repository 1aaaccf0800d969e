package broker

import (
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato/broker/internal/rawamqp"
)

// Limits of what amqp091-go v1.16 reads back. A header table beyond them
// is written and routed, but every amqp091-go consumer of it (hato's
// included) cannot read the message.
const (
	// MaxHeaderDepth: tables and arrays nest at most this deep below the
	// headers table.
	MaxHeaderDepth = rawamqp.MaxDepth
	// MaxHeaderElements: a table or array holds at most this many entries.
	MaxHeaderElements = rawamqp.MaxElements
	// DefaultFrameMax is the frame_max amqp091-go asks for and RabbitMQ's
	// default: the limit ValidateRequest checks properties against.
	DefaultFrameMax = 131072
	// PropertiesMargin is kept free in a content header frame for what
	// hato adds after validation (the return tag of a mandatory publish,
	// trace headers).
	PropertiesMargin = 1024
)

// ErrPropertiesTooLarge: the properties (headers included) do not fit one
// content header frame of the connection's frame_max less
// PropertiesMargin; the broker would close the connection. It matches
// ErrInvalidArgument too.
var ErrPropertiesTooLarge = fmt.Errorf("%w: properties larger than a frame", ErrInvalidHeaders)

// checkLimits checks the depth and element counts of v, a header value at
// depth (the headers table is at 0). It stops at the first container too
// deep, so its own recursion is bounded too.
func checkLimits(path string, v any, depth int) error {
	var n int
	var elems func(yield func(string, any) bool)
	switch v := v.(type) {
	case amqp.Table:
		n = len(v)
		elems = func(yield func(string, any) bool) {
			for k, f := range v {
				if !yield(path+k+".", f) {
					return
				}
			}
		}
	case []any:
		n = len(v)
		elems = func(yield func(string, any) bool) {
			for _, f := range v {
				if !yield(path, f) {
					return
				}
			}
		}
	default:
		return nil
	}
	if depth > MaxHeaderDepth {
		return invalidArg(ErrInvalidHeaders, "header", path,
			fmt.Sprintf("nested more than %d deep: amqp091-go reads at most %d", MaxHeaderDepth, MaxHeaderDepth))
	}
	if n > MaxHeaderElements {
		return invalidArg(ErrInvalidHeaders, "header", path,
			fmt.Sprintf("%d elements: amqp091-go reads at most %d", n, MaxHeaderElements))
	}
	for p, f := range elems {
		if err := checkLimits(p, f, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// PropertiesSize is the size in bytes of m's content header payload: what
// must fit a frame of frame_max less 8 bytes of framing.
func PropertiesSize(m *amqp.Publishing) int {
	n := 14 // class, weight, body size, flags
	for _, s := range [...]string{m.ContentType, m.ContentEncoding, m.CorrelationId, m.ReplyTo,
		m.Expiration, m.MessageId, m.Type, m.UserId, m.AppId} {
		if s != "" {
			n += 1 + len(s)
		}
	}
	if m.Headers != nil {
		n += 4 + tableSize(m.Headers)
	}
	if m.DeliveryMode != 0 {
		n++
	}
	if m.Priority != 0 {
		n++
	}
	if !m.Timestamp.IsZero() {
		n += 8
	}
	return n
}

// CheckPropertiesSize checks that m's properties fit a content header frame
// of frameMax (DefaultFrameMax when zero) less PropertiesMargin.
func CheckPropertiesSize(m *amqp.Publishing, frameMax int) error {
	if frameMax <= 0 {
		frameMax = DefaultFrameMax
	}
	if n, max := PropertiesSize(m), frameMax-8-PropertiesMargin; n > max {
		return &ValidationError{Kind: ErrPropertiesTooLarge, What: "properties",
			Reason: fmt.Sprintf("%d bytes encoded, at most %d fit a frame of frame_max %d", n, max, frameMax)}
	}
	return nil
}

// tableSize is the size of t's field-table bytes (no length prefix).
func tableSize(t amqp.Table) int {
	n := 0
	for k, v := range t {
		n += 1 + len(k) + fieldSize(v)
	}
	return n
}

// fieldSize is the size of v as amqp091-go writes it, type octet included.
func fieldSize(v any) int {
	switch v := v.(type) {
	case bool, byte, int8:
		return 2
	case int16, uint16:
		return 3
	case int, int32, uint32, float32:
		return 5
	case int64, float64, time.Time:
		return 9
	case amqp.Decimal:
		return 6
	case string:
		return 5 + len(v)
	case []byte:
		return 5 + len(v)
	case amqp.Table:
		return 5 + tableSize(v)
	case []any:
		n := 5
		for _, f := range v {
			n += fieldSize(f)
		}
		return n
	}
	return 1 // nil
}
