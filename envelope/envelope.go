package envelope

import (
	"time"
)

// Service identifies the service that built an envelope: tomodachi's
// `service` block. Either field may be empty (tomodachi writes null in JSON
// and "" in protobuf for a service without a name or uuid).
type Service struct {
	Name string
	UUID string
}

// Metadata is an envelope's `metadata` block.
type Metadata struct {
	// MessageUUID is "<service uuid>.<uuid4>" for messages built by tomodachi
	// or hato.
	MessageUUID string
	// ProtocolVersion is the envelope's protocol, e.g. "tomodachi-json-base--1.0.0".
	ProtocolVersion string
	// CompatibleProtocolVersions is JSON-only and deprecated upstream; kept
	// for wire parity.
	CompatibleProtocolVersions []string
	// Timestamp is the build time in unix seconds, as tomodachi writes it.
	Timestamp float64
	// Topic is the routing key the message was published with, without the
	// routing-key prefix.
	Topic string
	// DataEncoding says how `data` is stored ("raw", "base64_gzip_json",
	// "proto", "gzip_proto", ...).
	DataEncoding string
}

// Time returns Timestamp as a time.Time.
func (m Metadata) Time() time.Time {
	sec := int64(m.Timestamp)
	nsec := int64((m.Timestamp - float64(sec)) * 1e9)
	return time.Unix(sec, nsec)
}

// Message is what Parse returns besides the payload: the sender and the
// metadata. The payload itself is decoded into the destination given to Parse.
type Message struct {
	Service  Service
	Metadata Metadata
}

// Build is the input to Envelope.Build besides the data.
type Build struct {
	// Service is the publishing service.
	Service Service
	// Topic is the routing key without its prefix (tomodachi's `topic`).
	Topic string
	// MessageUUID, when set, is used as is; otherwise the envelope makes
	// "<Service.UUID>.<random uuid4>", with "None" for an empty
	// Service.UUID, as tomodachi formats Python's None.
	MessageUUID string
	// Time, when non-zero, is the timestamp written; otherwise time.Now().
	// It is written as float unix seconds (seconds + nanoseconds/1e9), so a
	// Time made by Metadata.Time from a parsed timestamp is written back
	// as the same float64.
	Time time.Time
}

// Options carries per-route or per-publish settings to an envelope: Go's
// answer to the keyword arguments tomodachi passes from a decorator to
// parse_message. The zero value is valid and means "defaults".
type Options struct {
	// Validator, when set, runs on the decoded payload (the value Parse
	// decoded into, e.g. a proto.Message or a *T). An error it returns is
	// wrapped in ErrValidation.
	Validator func(payload any) error
	// MaxBodySize bounds the body Parse accepts, in bytes. Zero means
	// DefaultMaxBodySize; negative means no limit.
	MaxBodySize int64
	// MaxDecompressedSize bounds the decompressed size of compressed data.
	// Zero means DefaultMaxDecompressedSize; negative means no limit.
	MaxDecompressedSize int64
	// Values holds options for custom envelopes, by name.
	Values map[string]any
}

// Default limits, applied when Options leaves them zero. Pub/sub messages
// are small (tomodachi compresses anything over 60000 characters); a body
// beyond these is far more likely a mistake or an attack than an event, and
// is refused with ErrTooLarge. Raise them per route with Options.
const (
	DefaultMaxBodySize         int64 = 8 << 20  // 8 MiB
	DefaultMaxDecompressedSize int64 = 32 << 20 // 32 MiB
)

// Envelope builds message bodies and parses them back: tomodachi's
// `message_envelope` contract (build_message / parse_message).
//
// Implementations must be safe for concurrent use and must never panic on any
// input: every failure is an error that matches one of this package's
// sentinels with errors.Is.
type Envelope interface {
	// Name identifies the envelope in logs and errors.
	Name() string
	// ContentType is the AMQP content type set on messages this envelope
	// builds. Parse never requires it.
	ContentType() string
	// Build encodes data as a message body.
	Build(b Build, data any, opts Options) ([]byte, error)
	// Parse decodes body. It decodes the payload into dst, which must be a
	// non-nil pointer of a type the envelope supports (see each envelope's
	// documentation; *any always works and gives the untyped form), and
	// returns the sender and metadata.
	Parse(body []byte, dst any, opts Options) (Message, error)
}

// Checker is implemented by envelopes that can check, once, at route
// registration, that a destination type and options are usable: tomodachi's
// `validate(**kwargs)` (a protobuf envelope requires a payload type).
// dst is a pointer to a zero value of the route's payload type.
type Checker interface {
	Check(dst any, opts Options) error
}
