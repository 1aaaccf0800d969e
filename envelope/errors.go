package envelope

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error an Envelope returns matches exactly one of
// these with errors.Is, and is (or wraps) a *ParseError or *BuildError that
// says which envelope failed and why.
var (
	// ErrMalformed: the body is not a well-formed message of this envelope
	// (invalid JSON or UTF-8, wrong shape, bad base64, truncated protobuf,
	// corrupt compressed data, empty body).
	ErrMalformed = errors.New("envelope: malformed message")
	// ErrUnknownEncoding: metadata.data_encoding names an encoding the
	// envelope does not know.
	ErrUnknownEncoding = errors.New("envelope: unknown data encoding")
	// ErrTooLarge: the body, or the data once decompressed, exceeds the
	// configured limit.
	ErrTooLarge = errors.New("envelope: message too large")
	// ErrPayloadType: the payload does not fit the destination type (or, on
	// Build, the data is of a type the envelope cannot encode).
	ErrPayloadType = errors.New("envelope: payload type mismatch")
	// ErrValidation: the validator in Options rejected the payload.
	ErrValidation = errors.New("envelope: payload rejected by validator")
)

// ParseError is returned by Parse. It wraps one of the sentinels (Kind) and
// the underlying cause, if any.
type ParseError struct {
	Envelope string // Envelope.Name()
	Kind     error  // one of the sentinels above
	Detail   string // human-readable detail, never the whole body
	Err      error  // underlying cause, may be nil
}

func (e *ParseError) Error() string {
	msg := fmt.Sprintf("%s: %s", e.Envelope, e.Kind.Error())
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns both the sentinel and the cause, so errors.Is matches the
// sentinel and errors.As reaches the cause.
func (e *ParseError) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// BuildError is returned by Build.
type BuildError struct {
	Envelope string
	Kind     error
	Detail   string
	Err      error
}

func (e *BuildError) Error() string {
	msg := fmt.Sprintf("%s: build: %s", e.Envelope, e.Kind.Error())
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the sentinel and the cause.
func (e *BuildError) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}
