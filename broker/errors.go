package broker

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Sentinel errors of the broker package.
var (
	// ErrInvalidURL: the AMQP URL does not parse.
	ErrInvalidURL = errors.New("hato/broker: invalid AMQP URL")
	// ErrTLS: the TLS handshake failed for a reason retrying cannot mend:
	// the server's certificate is not trusted or names another host, the
	// server is not speaking TLS, or it refused the client's.
	ErrTLS = errors.New("hato/broker: TLS handshake failed")
	// ErrDial: a connection could not be opened.
	ErrDial = errors.New("hato/broker: dial failed")
	// ErrClosed: the session (channel) is closed.
	ErrClosed = errors.New("hato/broker: closed")
	// ErrNacked: the broker refused a publish (basic.nack).
	ErrNacked = errors.New("hato/broker: publish nacked by broker")
	// ErrUnroutable: a mandatory publish matched no queue (basic.return).
	ErrUnroutable = errors.New("hato/broker: mandatory publish unroutable")
	// ErrExchangeNotFound: a publish named an exchange that does not exist.
	ErrExchangeNotFound = errors.New("hato/broker: exchange not found")
	// ErrAccessRefused: the broker refused access to an exchange or queue.
	ErrAccessRefused = errors.New("hato/broker: access refused")
	// ErrPreconditionFailed: a declaration conflicts with what exists (for
	// example a queue with other arguments).
	ErrPreconditionFailed = errors.New("hato/broker: precondition failed")
	// ErrTooManyConsumers: a non-competing queue already has a consumer.
	ErrTooManyConsumers = errors.New("hato/broker: queue already has a consumer")
	// ErrConsumerCancelled: the broker cancelled the consumer (queue deleted).
	ErrConsumerCancelled = errors.New("hato/broker: consumer cancelled by broker")
)

// classifyDial is classify for dial errors, which may also be TLS errors
// (see ErrTLS). A connection reset or EOF during the handshake is not: a
// node that is restarting does that.
func classifyDial(op string, err error) error {
	if tlsFailure(err) {
		return fmt.Errorf("%s: %w: %w", op, ErrTLS, err)
	}
	return classify(op, err)
}

// tlsFailure reports whether err is a TLS handshake failure that a retry
// cannot mend.
func tlsFailure(err error) bool {
	var (
		verr  *tls.CertificateVerificationError
		rerr  tls.RecordHeaderError
		aerr  tls.AlertError
		uaerr x509.UnknownAuthorityError
		herr  x509.HostnameError
		cerr  x509.CertificateInvalidError
	)
	if errors.As(err, &verr) || errors.As(err, &rerr) || errors.As(err, &aerr) ||
		errors.As(err, &uaerr) || errors.As(err, &herr) || errors.As(err, &cerr) {
		return true
	}
	// An alert from the server (it refused our version, ciphers or missing
	// client certificate) comes as a net.OpError "remote error" around an
	// unexported type.
	var oerr *net.OpError
	return errors.As(err, &oerr) && oerr.Op == "remote error"
}

// classify wraps an amqp091 error with the sentinel its reply code maps to,
// keeping the original for errors.As.
func classify(op string, err error) error {
	if err == nil {
		return nil
	}
	var ae *amqp.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case amqp.NotFound:
			if strings.Contains(ae.Reason, "no exchange") {
				return fmt.Errorf("%s: %w: %w", op, ErrExchangeNotFound, err)
			}
		case amqp.AccessRefused, amqp.NotAllowed:
			return fmt.Errorf("%s: %w: %w", op, ErrAccessRefused, err)
		case amqp.PreconditionFailed:
			return fmt.Errorf("%s: %w: %w", op, ErrPreconditionFailed, err)
		}
	}
	return fmt.Errorf("%s: %w", op, err)
}

// Permanent reports whether retrying the operation that returned err cannot
// help without a change to configuration or topology: a conflicting
// declaration, refused access, a missing exchange, a TLS handshake that
// failed (ErrTLS).
func Permanent(err error) bool {
	return errors.Is(err, ErrPreconditionFailed) ||
		errors.Is(err, ErrAccessRefused) ||
		errors.Is(err, ErrExchangeNotFound) ||
		errors.Is(err, ErrInvalidURL) ||
		errors.Is(err, ErrTLS)
}
