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

// encodable reports why amqp091-go could not encode r, if it could not.
// amqp091-go finds an over-long short string only while writing the frame,
// and then closes the whole connection; checking first keeps the connection
// (and every consumer channel on it) alive. It is the backstop for requests
// that did not pass through ValidateRequest (sent to the connection actor
// directly by an embedding program), and checks the properties against
// the connection's frameMax (0: DefaultFrameMax).
func encodable(r *Request, frameMax int) error {
	err := ValidateRequest(r)
	if err == nil {
		err = CheckPropertiesSize(&r.Msg, frameMax)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnencodable, err)
	}
	return nil
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
