package broker

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	amqp "github.com/rabbitmq/amqp091-go"
)

// ErrUnencodable: a publish that cannot be sent as AMQP frames (a short
// string over 255 bytes, a header value of an unsupported type). It fails
// that publish only and is never sent again.
var ErrUnencodable = errors.New("hato/broker: publish cannot be encoded")

// maxShortStr is the longest AMQP short string, in bytes.
const maxShortStr = 255

// encodable reports why amqp091-go could not encode r, if it could not.
// amqp091-go finds an over-long short string only while writing the frame,
// and then closes the whole connection; checking first keeps the connection
// (and every consumer channel on it) alive.
func encodable(r *Request) error {
	m := &r.Msg
	short := []struct{ name, s string }{
		{"exchange", r.Exchange}, {"routing key", r.RoutingKey},
		{"content type", m.ContentType}, {"content encoding", m.ContentEncoding},
		{"correlation id", m.CorrelationId}, {"reply to", m.ReplyTo},
		{"expiration", m.Expiration}, {"message id", m.MessageId},
		{"type", m.Type}, {"user id", m.UserId}, {"app id", m.AppId},
	}
	for _, f := range short {
		if len(f.s) > maxShortStr {
			return unencodable("%s is %d bytes; AMQP short strings hold at most %d", f.name, len(f.s), maxShortStr)
		}
	}
	if err := m.Headers.Validate(); err != nil {
		return fmt.Errorf("%w: headers: %w", ErrUnencodable, err)
	}
	return headerKeys(m.Headers)
}

// headerKeys checks that every key of t and of the tables nested in it fits
// a short string.
func headerKeys(t amqp.Table) error {
	for k, v := range t {
		if len(k) > maxShortStr {
			return unencodable("header name of %d bytes; AMQP short strings hold at most %d", len(k), maxShortStr)
		}
		if err := nestedKeys(v); err != nil {
			return err
		}
	}
	return nil
}

func nestedKeys(v any) error {
	switch v := v.(type) {
	case amqp.Table:
		return headerKeys(v)
	case []any:
		for _, e := range v {
			if err := nestedKeys(e); err != nil {
				return err
			}
		}
	}
	return nil
}

func unencodable(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUnencodable, fmt.Sprintf(format, args...))
}

// brokenLink reports whether a publish error says the channel or the network
// is gone (the request may be sent again elsewhere) rather than that
// amqp091-go refused this request (it must fail, never be resent).
func brokenLink(err error) bool {
	var ae *amqp.Error
	var ne net.Error
	return errors.As(err, &ae) || errors.As(err, &ne) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, io.ErrClosedPipe) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}
