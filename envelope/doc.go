// Package envelope builds and parses message bodies: the codecs between a
// handler's payload and the bytes a broker carries. It has no AMQP and no
// actors; the broker and the runtime call it.
//
// # Envelopes
//
// An [Envelope] wraps a payload with its sender ([Service]) and [Metadata]
// (message uuid, protocol version, timestamp, topic, data encoding): the
// contract of tomodachi's message_envelope (build_message / parse_message).
// Build turns a payload into a body; Parse decodes a body, filling a
// destination the caller passes and returning a [Message] with the sender
// and metadata. Three envelopes ship, each a ready-to-use, stateless value:
//
//   - [JSON] ([JSONEnvelope]): tomodachi's JsonBase,
//     protocol tomodachi-json-base--1.0.0, content type application/json.
//   - [Protobuf] ([ProtobufEnvelope]): tomodachi's ProtobufBase,
//     protocol tomodachi-protobuf-base--1.0.0, content type
//     "application/x-protobuf; encoding=base64".
//   - [Raw] ([RawEnvelope]): no envelope; the body is the payload
//     (application/octet-stream).
//
// They are wire-compatible with tomodachi in both directions: hato parses
// what tomodachi publishes, and tomodachi parses what hato builds. For the
// same inputs (and, for JSON objects, the same key order) both build bodies
// byte-identical to tomodachi's, except that compressed data comes from Go's
// zlib rather than CPython's (any inflater reads both). Tests check this
// against vectors tomodachi produced (testdata/tomodachi).
//
// # Wire formats
//
// JSON: {"service": {"name", "uuid"}, "metadata": {"message_uuid",
// "protocol_version", "compatible_protocol_versions": ["json_base-wip"],
// "timestamp", "topic", "data_encoding"}, "data"}, written as CPython's
// json.dumps writes it (", " and ": " separators, ASCII only with lowercase
// \u escapes, floats as Python's repr). data_encoding is "raw" (data is the
// JSON value) or "base64_gzip_json" (data is a string: base64 of the zlib
// compression of the data's JSON text), used when that text has
// [JSONCompressThreshold] characters or more. An empty service name or uuid
// is written as null.
//
// Protobuf: standard padded base64 of a serialized SNSSQSMessage{Service
// service = 1; Metadata metadata = 2; bytes data = 3}. data_encoding is
// "proto" (data is the serialized payload) or "gzip_proto" (zlib of it) over
// [ProtobufCompressThreshold] bytes; Parse also reads the deprecated "base64"
// and "base64_gzip_proto", and "raw".
//
// Both write message_uuid as "<service uuid>.<random uuid4>" unless
// [Build].MessageUUID is set, with "None" for an empty service uuid, as
// tomodachi formats Python's None; and the timestamp as float unix seconds
// from [Build].Time (or now).
//
// # Destinations
//
// Parse's dst is always a non-nil pointer. What each envelope accepts:
//
//   - JSON: *any gets the untyped form (map[string]any, []any, string,
//     json.Number, bool, nil), numbers exact as json.Number;
//     *json.RawMessage gets the data's JSON text (decompressed if it was
//     compressed); any other pointer is filled by encoding/json's Unmarshal.
//   - Protobuf: a proto.Message is filled in place; a pointer to a message
//     pointer (**pb.Person) gets a new message when nil; *[]byte gets the
//     serialized payload (decompressed); *any gets the data field as
//     carried, as tomodachi hands it to a handler without a proto_class.
//   - Raw: *[]byte, *json.RawMessage, *string, or *any (a []byte).
//
// Parse never keeps body, and what it stores in dst never aliases it.
//
// # Options and validation
//
// [Options] carry per-route and per-publish settings: Go's answer to the
// keyword arguments tomodachi passes from a decorator to parse_message. The
// zero value means defaults. Options.Validator runs on the decoded payload
// (its error is wrapped in [ErrValidation]); Options.Values carries settings
// for custom envelopes, by name.
//
// Envelopes that implement [Checker] can reject a route at registration,
// before any message arrives: [ProtobufEnvelope.Check] requires a message
// type (or *[]byte / *any, which get bytes), as tomodachi's validate()
// requires a proto_class; the JSON and raw envelopes check their
// destination kinds too.
//
// # Limits
//
// Parse refuses a body longer than Options.MaxBodySize before decoding it,
// and stops inflating compressed data as soon as it would exceed
// Options.MaxDecompressedSize, so a decompression bomb costs at most about
// twice the limit in allocation. They default to 8 MiB and 32 MiB
// ([DefaultMaxBodySize], [DefaultMaxDecompressedSize]); a negative value
// means no limit. JSON nesting is limited to 10000 levels, as in
// encoding/json.
//
// # Errors
//
// Every error an envelope returns is a [*ParseError] or [*BuildError] that
// matches exactly one sentinel with errors.Is: [ErrMalformed] (not a
// well-formed message: bad JSON, UTF-8 or base64, truncated protobuf,
// corrupt compressed data, an empty body), [ErrUnknownEncoding] (a
// data_encoding the envelope does not know, or none), [ErrTooLarge] (a limit
// was hit), [ErrPayloadType] (the payload does not fit the destination, or
// Build got data it cannot encode) and [ErrValidation] (the validator said
// no). errors.As reaches the underlying cause. Envelopes never panic on any
// input. On a payload error (unknown encoding, too large data, type
// mismatch, validation) Parse still returns the Message it read, for logs
// and dead-lettering.
//
// # Custom envelopes
//
// Any type implementing [Envelope] can stand in for the shipped ones; it
// must be safe for concurrent use, never panic, and report failures with
// the sentinels above. It may read its own per-route settings from
// Options.Values (see the custom envelope example). Package envelopetest
// checks all of this: run envelopetest.Run on it from a test, as this
// package does on JSON, Protobuf, Raw and the example.
//
// # Concurrency and cost
//
// The shipped envelopes are stateless and safe for concurrent use. Build
// allocates the body (and, for JSON, encoding/json's marshalled text);
// Parse allocates what it stores in dst, plus a decoded copy of the body for
// protobuf and the inflated data for compressed messages. The JSON
// envelope reads a body in one validating pass and re-formats data to
// Python's style in one linear pass.
package envelope
