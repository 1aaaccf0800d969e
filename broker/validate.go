package broker

import (
	"errors"
	"fmt"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"
)

// MaxShortString is the longest AMQP short string, in bytes: the limit of
// routing keys, binding keys, exchange and queue names, header names and
// most basic properties. amqp091-go cannot write a longer one, and the
// failed write costs the whole connection.
const MaxShortString = 255

// Sentinels of the values AMQP cannot carry. Every error of this file
// matches ErrInvalidArgument and one of the others (errors.Is).
var (
	// ErrInvalidArgument: a value AMQP cannot carry; checked before any
	// frame is written.
	ErrInvalidArgument = errors.New("hato/broker: invalid argument")
	// ErrInvalidRoutingKey: a routing key or binding pattern over 255
	// bytes on the wire (prefix and encoding included) or not UTF-8.
	ErrInvalidRoutingKey = errors.New("hato/broker: invalid routing key")
	// ErrInvalidName: an exchange or queue name over 255 bytes or not UTF-8.
	ErrInvalidName = errors.New("hato/broker: invalid name")
	// ErrInvalidHeaders: a header table with a value type AMQP cannot
	// encode or a field name over 255 bytes.
	ErrInvalidHeaders = errors.New("hato/broker: invalid headers")
	// ErrInvalidProperty: a basic property (message id, app id, content
	// type, ...) over 255 bytes.
	ErrInvalidProperty = errors.New("hato/broker: invalid message property")
)

// ValidationError says which value AMQP cannot carry and why. It matches
// its Kind (ErrInvalidRoutingKey, ErrInvalidName, ErrInvalidHeaders,
// ErrInvalidProperty) and ErrInvalidArgument.
type ValidationError struct {
	Kind   error
	What   string // "routing key", "exchange name", "header", ...
	Value  string // the value, cut to 64 bytes
	Reason string
}

func (e *ValidationError) Error() string {
	return fmt.Sprintf("%v: %s %q: %s", e.Kind, e.What, e.Value, e.Reason)
}

// Unwrap returns the kind and ErrInvalidArgument.
func (e *ValidationError) Unwrap() []error { return []error{e.Kind, ErrInvalidArgument} }

func invalidArg(kind error, what, value, reason string) error {
	if len(value) > 64 {
		value = value[:64] + "…"
	}
	return &ValidationError{Kind: kind, What: what, Value: value, Reason: reason}
}

// checkShortString checks s against the limits of a short string that
// must also be UTF-8 text.
func checkShortString(kind error, what, s string) error {
	if len(s) > MaxShortString {
		return invalidArg(kind, what, s, fmt.Sprintf("%d bytes, AMQP allows %d", len(s), MaxShortString))
	}
	if !utf8.ValidString(s) {
		return invalidArg(kind, what, s, "not valid UTF-8")
	}
	return nil
}

// WireRoutingKey is BindingKey(prefix, routingKey), checked: the key (with
// its prefix) must be UTF-8 text, as tomodachi's keys are, and the key on
// the wire (prefixed and encoded, so a non-ASCII character counts up to 12
// bytes) at most 255 bytes.
func WireRoutingKey(prefix, routingKey string) (string, error) {
	if !utf8.ValidString(prefix) {
		return "", invalidArg(ErrInvalidRoutingKey, "routing-key prefix", prefix, "not valid UTF-8")
	}
	if !utf8.ValidString(routingKey) {
		return "", invalidArg(ErrInvalidRoutingKey, "routing key", routingKey, "not valid UTF-8")
	}
	wire := BindingKey(prefix, routingKey)
	if len(wire) > MaxShortString {
		return "", invalidArg(ErrInvalidRoutingKey, "routing key", routingKey,
			fmt.Sprintf("%d bytes on the wire (prefixed and encoded), AMQP allows %d", len(wire), MaxShortString))
	}
	return wire, nil
}

// ValidateName checks an exchange or queue name (what says which).
func ValidateName(what, name string) error {
	return checkShortString(ErrInvalidName, what, name)
}

// ValidateHeaders checks that amqp091-go can encode h and read it back:
// supported value types (amqp.Table.Validate), field names of at most 255
// bytes, tables and arrays nested at most MaxHeaderDepth deep below h and
// holding at most MaxHeaderElements entries each.
func ValidateHeaders(h amqp.Table) error {
	if err := h.Validate(); err != nil {
		return invalidArg(ErrInvalidHeaders, "headers", "", err.Error())
	}
	if err := checkLimits("", h, 0); err != nil {
		return err
	}
	return checkFieldNames("", h)
}

func checkFieldNames(path string, v any) error {
	switch v := v.(type) {
	case amqp.Table:
		for k, f := range v {
			if len(k) > MaxShortString {
				return invalidArg(ErrInvalidHeaders, "header name", path+k,
					fmt.Sprintf("%d bytes, AMQP allows %d", len(k), MaxShortString))
			}
			switch f.(type) {
			case amqp.Table, []any: // only those have names (no path built for others)
				if err := checkFieldNames(path+k+".", f); err != nil {
					return err
				}
			}
		}
	case []any:
		for _, f := range v {
			if err := checkFieldNames(path, f); err != nil {
				return err
			}
		}
	}
	return nil
}

// ValidateRequest checks everything of a publish that AMQP limits: the
// exchange name, the routing key as it will be sent, the headers, the
// short-string properties, and the size of the properties against
// DefaultFrameMax (see CheckPropertiesSize; a Publisher checks them again
// against its connection's frame_max). A request that passes cannot make
// amqp091-go fail to write its frames, nor an amqp091-go consumer fail to
// read them.
func ValidateRequest(r *Request) error {
	if err := ValidateName("exchange name", r.Exchange); err != nil {
		return err
	}
	if err := checkShortString(ErrInvalidRoutingKey, "routing key", r.RoutingKey); err != nil {
		return err
	}
	m := &r.Msg
	if err := ValidateHeaders(m.Headers); err != nil {
		return err
	}
	for _, p := range [...]struct{ name, v string }{
		{"content type", m.ContentType}, {"content encoding", m.ContentEncoding},
		{"correlation id", m.CorrelationId}, {"reply-to", m.ReplyTo},
		{"expiration", m.Expiration}, {"message id", m.MessageId},
		{"type", m.Type}, {"user id", m.UserId}, {"app id", m.AppId},
	} {
		if len(p.v) > MaxShortString {
			return invalidArg(ErrInvalidProperty, p.name, p.v, fmt.Sprintf("%d bytes, AMQP allows %d", len(p.v), MaxShortString))
		}
	}
	return CheckPropertiesSize(m, DefaultFrameMax)
}
