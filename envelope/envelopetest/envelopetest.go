// Package envelopetest is a conformance suite for envelope.Envelope
// implementations, hato's own and custom ones: a round trip of
// representative payloads, every bad input mapped to its sentinel error,
// and no panic on garbage. Run it from a test of the package that defines
// the envelope:
//
//	func TestMyEnvelope(t *testing.T) {
//		envelopetest.Run(t, myEnvelope{}, envelopetest.Features{
//			Cases: []envelopetest.Case{
//				{Name: "text", Data: "hello", New: func() any { return new(string) }},
//			},
//			Topic: true,
//		})
//	}
//
// Features says what the envelope supports; the suite only asserts what is
// declared, and always asserts the contract every envelope has (see
// envelope.Envelope): safe for concurrent use, never a panic, every error
// matches exactly one of envelope's sentinels and is (or wraps) a
// *envelope.ParseError or *envelope.BuildError.
package envelopetest

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hato-go/hato/envelope"
)

// Case is one payload the envelope must carry unchanged.
type Case struct {
	// Name labels the subtests.
	Name string
	// Data is passed to Build.
	Data any
	// New returns a fresh destination for Parse (a non-nil pointer).
	New func() any
	// Equal reports whether got, the value the destination points to after
	// Parse, equals Data. Nil means reflect.DeepEqual.
	Equal func(got, want any) bool
	// Compressed: the envelope compresses this payload (it is past the
	// compression threshold). With Features.Limits, parsing it under a
	// small MaxDecompressedSize must fail with ErrTooLarge.
	Compressed bool
}

// Bad is one bad input: Parse(Body, New(), Opts) must fail with an error
// matching Want.
type Bad struct {
	Name string
	Body []byte
	// New returns the destination; nil means the first Case's.
	New  func() any
	Opts envelope.Options
	Want error
}

// Features says what the envelope supports.
type Features struct {
	// Cases are the payloads of the round trip (at least one). Include the
	// edge cases the envelope handles: empty, unicode, large.
	Cases []Case
	// Metadata: the envelope carries the service, topic, message uuid and
	// timestamp given to Build (JSON, Protobuf).
	Metadata bool
	// Topic: the envelope carries the topic (implied by Metadata).
	Topic bool
	// Limits: Parse enforces Options.MaxBodySize (and, on Compressed cases,
	// MaxDecompressedSize) with ErrTooLarge.
	Limits bool
	// Validator: Parse runs Options.Validator on the decoded payload and
	// wraps its error in ErrValidation.
	Validator bool
	// Bad lists envelope-specific bad inputs (malformed bodies, unknown
	// encodings, ...), each with the sentinel it must map to.
	Bad []Bad
	// Unbuildable are values Build must refuse with ErrPayloadType.
	Unbuildable []any
	// WrongDestinations return destinations Parse must refuse, for the
	// first Case's body, with ErrPayloadType. A nil destination is always
	// tried.
	WrongDestinations []func() any
}

// Sentinels are the errors every envelope error must match exactly one of.
var Sentinels = []error{
	envelope.ErrMalformed, envelope.ErrUnknownEncoding, envelope.ErrTooLarge,
	envelope.ErrPayloadType, envelope.ErrValidation,
}

// Run runs the conformance suite on env as subtests of t.
func Run(t *testing.T, env envelope.Envelope, f Features) {
	t.Helper()
	if len(f.Cases) == 0 {
		t.Fatal("envelopetest: Features.Cases is empty")
	}
	if env.Name() == "" {
		t.Error("Name is empty")
	}
	if env.ContentType() == "" {
		t.Error("ContentType is empty")
	}
	t.Run("RoundTrip", func(t *testing.T) { roundTrip(t, env, f) })
	t.Run("Concurrent", func(t *testing.T) { concurrent(t, env, f) })
	t.Run("BadInput", func(t *testing.T) { badInput(t, env, f) })
	t.Run("NeverPanics", func(t *testing.T) { neverPanics(t, env, f) })
}

// buildInput is what every round trip builds with.
var buildInput = envelope.Build{
	Service:     envelope.Service{Name: "envelopetest-svc", UUID: "0f0e4b43-2a9e-4c5c-9d7e-00000000abcd"},
	Topic:       "envelopetest.topic.åäö",
	MessageUUID: "0f0e4b43-2a9e-4c5c-9d7e-00000000abcd.1",
	Time:        time.Unix(1795629630, 877235000),
}

func deref(dst any) any {
	v := reflect.ValueOf(dst)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return dst
	}
	return v.Elem().Interface()
}

func equal(c Case, got any) bool {
	if c.Equal != nil {
		return c.Equal(got, c.Data)
	}
	return reflect.DeepEqual(got, c.Data)
}

func roundTrip(t *testing.T, env envelope.Envelope, f Features) {
	for _, c := range f.Cases {
		t.Run(c.Name, func(t *testing.T) {
			body := mustBuild(t, env, c.Data)
			if checker, ok := env.(envelope.Checker); ok {
				if err := checker.Check(c.New(), envelope.Options{}); err != nil {
					t.Errorf("Check(destination) = %v, want nil", err)
				}
			}
			dst := c.New()
			msg, err := env.Parse(body, dst, envelope.Options{})
			if err != nil {
				t.Fatalf("Parse of what Build made: %v", err)
			}
			if got := deref(dst); !equal(c, got) {
				t.Errorf("payload came back as %s, want %s", short(got), short(c.Data))
			}
			checkMetadata(t, f, msg)
			if f.Validator {
				var seen any
				if _, err := env.Parse(body, c.New(), envelope.Options{Validator: func(p any) error { seen = p; return nil }}); err != nil {
					t.Errorf("Parse with an accepting validator: %v", err)
				}
				if seen == nil && c.Data != nil {
					t.Error("the validator was not called with the payload")
				}
			}
		})
	}
}

func checkMetadata(t *testing.T, f Features, msg envelope.Message) {
	t.Helper()
	if (f.Metadata || f.Topic) && msg.Metadata.Topic != buildInput.Topic {
		t.Errorf("topic %q, want %q", msg.Metadata.Topic, buildInput.Topic)
	}
	if !f.Metadata {
		return
	}
	if msg.Service != buildInput.Service {
		t.Errorf("service %+v, want %+v", msg.Service, buildInput.Service)
	}
	if msg.Metadata.MessageUUID != buildInput.MessageUUID {
		t.Errorf("message uuid %q, want %q", msg.Metadata.MessageUUID, buildInput.MessageUUID)
	}
	if d := msg.Metadata.Time().Sub(buildInput.Time); d < -time.Millisecond || d > time.Millisecond {
		t.Errorf("timestamp %v, want %v", msg.Metadata.Time(), buildInput.Time)
	}
	if msg.Metadata.ProtocolVersion == "" || msg.Metadata.DataEncoding == "" {
		t.Errorf("protocol version %q, data encoding %q: both must be set", msg.Metadata.ProtocolVersion, msg.Metadata.DataEncoding)
	}
}

func concurrent(t *testing.T, env envelope.Envelope, f Features) {
	var wg sync.WaitGroup
	errs := make(chan error, 8*len(f.Cases))
	for range 8 {
		for _, c := range f.Cases {
			wg.Go(func() {
				body, err := env.Build(buildInput, c.Data, envelope.Options{})
				if err != nil {
					errs <- fmt.Errorf("%s: Build: %w", c.Name, err)
					return
				}
				dst := c.New()
				if _, err := env.Parse(body, dst, envelope.Options{}); err != nil {
					errs <- fmt.Errorf("%s: Parse: %w", c.Name, err)
				} else if !equal(c, deref(dst)) {
					errs <- fmt.Errorf("%s: payload changed under concurrency", c.Name)
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func badInput(t *testing.T, env envelope.Envelope, f Features) {
	body := mustBuild(t, env, f.Cases[0].Data)
	badBodies(t, env, f)
	wrongDestinations(t, env, f, body)
	unbuildable(t, env, f)
	if f.Limits {
		limits(t, env, f, body)
	}
	if f.Validator {
		validatorRejects(t, env, f, body)
	}
}

// badBodies: every Features.Bad body fails to parse with its error.
func badBodies(t *testing.T, env envelope.Envelope, f Features) {
	first := f.Cases[0]
	for _, b := range f.Bad {
		t.Run(b.Name, func(t *testing.T) {
			newDst := b.New
			if newDst == nil {
				newDst = first.New
			}
			_, err := env.Parse(b.Body, newDst(), b.Opts)
			wantParseErr(t, err, b.Want)
		})
	}
}

// wrongDestinations: a good body parsed into nil or a destination of the
// wrong type fails with ErrPayloadType.
func wrongDestinations(t *testing.T, env envelope.Envelope, f Features, body []byte) {
	t.Run("nil destination", func(t *testing.T) {
		_, err := env.Parse(body, nil, envelope.Options{})
		wantParseErr(t, err, envelope.ErrPayloadType)
	})
	for i, w := range f.WrongDestinations {
		t.Run(fmt.Sprintf("wrong destination %d %T", i, w()), func(t *testing.T) {
			_, err := env.Parse(body, w(), envelope.Options{})
			wantParseErr(t, err, envelope.ErrPayloadType)
		})
	}
}

// unbuildable: Build refuses every Features.Unbuildable payload with a
// *envelope.BuildError matching ErrPayloadType.
func unbuildable(t *testing.T, env envelope.Envelope, f Features) {
	for i, d := range f.Unbuildable {
		t.Run(fmt.Sprintf("unbuildable %d %T", i, d), func(t *testing.T) {
			_, err := env.Build(buildInput, d, envelope.Options{})
			wantErr(t, "Build", err, envelope.ErrPayloadType)
			var be *envelope.BuildError
			if err != nil && !errors.As(err, &be) {
				t.Errorf("Build error %v is not a *envelope.BuildError", err)
			}
		})
	}
}

// limits: MaxBodySize and MaxDecompressedSize are enforced (ErrTooLarge).
func limits(t *testing.T, env envelope.Envelope, f Features, body []byte) {
	first := f.Cases[0]
	t.Run("body over MaxBodySize", func(t *testing.T) {
		_, err := env.Parse(body, first.New(), envelope.Options{MaxBodySize: int64(len(body)) - 1})
		wantParseErr(t, err, envelope.ErrTooLarge)
		if _, err := env.Parse(body, first.New(), envelope.Options{MaxBodySize: int64(len(body))}); err != nil {
			t.Errorf("a body exactly at MaxBodySize: %v", err)
		}
	})
	for _, c := range f.Cases {
		if !c.Compressed {
			continue
		}
		t.Run("decompressed over MaxDecompressedSize/"+c.Name, func(t *testing.T) {
			body := mustBuild(t, env, c.Data)
			_, err := env.Parse(body, c.New(), envelope.Options{MaxDecompressedSize: 1024})
			wantParseErr(t, err, envelope.ErrTooLarge)
		})
	}
}

// validatorRejects: a validator's error fails Parse with ErrValidation,
// wrapping it.
func validatorRejects(t *testing.T, env envelope.Envelope, f Features, body []byte) {
	t.Run("validator rejects", func(t *testing.T) {
		cause := errors.New("envelopetest: rejected")
		_, err := env.Parse(body, f.Cases[0].New(), envelope.Options{Validator: func(any) error { return cause }})
		wantParseErr(t, err, envelope.ErrValidation)
		if !errors.Is(err, cause) {
			t.Errorf("%v does not wrap the validator's error", err)
		}
	})
}

// wantParseErr checks a Parse error: it matches want, only want, and is a
// *envelope.ParseError.
func wantParseErr(t *testing.T, err, want error) {
	t.Helper()
	wantErr(t, "Parse", err, want)
	var pe *envelope.ParseError
	if err != nil && !errors.As(err, &pe) {
		t.Errorf("Parse error %v is not a *envelope.ParseError", err)
	}
}

func wantErr(t *testing.T, op string, err, want error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s succeeded, want %v", op, want)
	}
	if !errors.Is(err, want) {
		t.Errorf("%s error %v does not match %v", op, err, want)
	}
	if n := matches(err); n != 1 {
		t.Errorf("%s error %v matches %d sentinels, want exactly one", op, err, n)
	}
}

func matches(err error) int {
	n := 0
	for _, s := range Sentinels {
		if errors.Is(err, s) {
			n++
		}
	}
	return n
}

func neverPanics(t *testing.T, env envelope.Envelope, f Features) {
	dsts := garbageDestinations(f)
	opts := []envelope.Options{{MaxBodySize: 16, MaxDecompressedSize: 16}, {Validator: func(any) error { return errors.New("no") }}}
	check := func(i int, body []byte, dst any, o envelope.Options) {
		err := parseNoPanic(t, env, body, dst, o)
		if err != nil && matches(err) != 1 {
			t.Errorf("garbage body %d (%s): error %v matches %d sentinels, want exactly one", i, short(body), err, matches(err))
		}
	}
	for i, body := range garbageBodies(env, f) {
		for _, newDst := range dsts {
			check(i, body, newDst(), envelope.Options{})
		}
		for _, o := range opts {
			check(i, body, f.Cases[0].New(), o)
		}
	}
	for _, d := range []any{nil, make(chan int), func() {}, math.NaN(), math.Inf(1), complex(1, 2),
		map[any]any{1: 2}, struct{ C chan int }{}, new(any), []any{nil, "x"}} {
		err := buildNoPanic(t, env, d)
		if err != nil && matches(err) != 1 {
			t.Errorf("Build(%T): error %v matches %d sentinels, want exactly one", d, err, matches(err))
		}
	}
}

// garbageBodies are fixed odd bodies, the damaged forms of every case's
// body (see damaged) and random bytes, from a fixed seed.
func garbageBodies(env envelope.Envelope, f Features) [][]byte {
	bodies := [][]byte{nil, []byte{}, []byte("\x00"), []byte("{}"), []byte("null"), []byte("\n"),
		[]byte("\xff\xfe\xfd"), []byte(strings.Repeat("[", 10000)), []byte(strings.Repeat("A", 4097))}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, c := range f.Cases {
		body, err := env.Build(buildInput, c.Data, envelope.Options{})
		if err != nil {
			continue // reported by RoundTrip
		}
		bodies = append(bodies, damaged(body, rng)...)
	}
	for range 256 {
		b := make([]byte, rng.IntN(512))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		bodies = append(bodies, b)
	}
	return bodies
}

// damaged returns truncations of body (every length of a small body, a
// sample of a large one), single-byte corruptions and trailing garbage.
func damaged(body []byte, rng *rand.Rand) [][]byte {
	var out [][]byte
	step := max(1, len(body)/64)
	for n := 0; n < len(body); n += step {
		out = append(out, body[:n])
	}
	for range 16 {
		if len(body) == 0 {
			break
		}
		mut := append([]byte(nil), body...)
		mut[rng.IntN(len(mut))] ^= byte(1 + rng.IntN(255))
		out = append(out, mut)
	}
	return append(out, append(append([]byte(nil), body...), "\x00garbage"...))
}

// garbageDestinations are the destinations garbage is parsed into:
// generic ones, every case's and the wrong ones.
func garbageDestinations(f Features) []func() any {
	dsts := []func() any{
		func() any { return nil },
		func() any { return new(any) },
		func() any { return new([]byte) },
		func() any { return new(string) },
		func() any { return new(int) },
	}
	for _, c := range f.Cases {
		dsts = append(dsts, c.New)
	}
	return append(dsts, f.WrongDestinations...)
}

func parseNoPanic(t *testing.T, env envelope.Envelope, body []byte, dst any, o envelope.Options) (err error) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Errorf("Parse(%s, %T) panicked: %v", short(body), dst, r)
			err = nil
		}
	}()
	_, err = env.Parse(body, dst, o)
	return err
}

func buildNoPanic(t *testing.T, env envelope.Envelope, data any) (err error) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Errorf("Build(%T) panicked: %v", data, r)
			err = nil
		}
	}()
	_, err = env.Build(buildInput, data, envelope.Options{})
	return err
}

func mustBuild(t *testing.T, env envelope.Envelope, data any) []byte {
	t.Helper()
	body, err := env.Build(buildInput, data, envelope.Options{})
	if err != nil {
		t.Fatalf("Build(%s): %v", short(data), err)
	}
	return body
}

// short formats v for a failure message, cut to 120 characters.
func short(v any) string {
	var s string
	if b, ok := v.([]byte); ok {
		s = fmt.Sprintf("%q", b)
	} else {
		s = fmt.Sprintf("%#v", v)
	}
	if len(s) > 120 {
		s = s[:120] + fmt.Sprintf("... (%d characters)", len(s))
	}
	return s
}
