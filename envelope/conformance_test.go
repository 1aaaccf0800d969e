package envelope_test

import (
	"math"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/hato-go/hato/envelope"
	"github.com/hato-go/hato/envelope/envelopetest"
	"github.com/hato-go/hato/internal/testpb"
)

// The conformance suite (envelopetest) on every envelope of this package and
// on the custom envelope of the example.

// large is past tomodachi's compression threshold (60000 characters).
var large = strings.Repeat("x", 70000)

const unicode = "Åsa 東京 🙂 \u2028 \"quoted\" \\ tab\t"

func bad(in []envelope.BadInput) []envelopetest.Bad {
	out := make([]envelopetest.Bad, 0, len(in))
	for _, b := range in {
		out = append(out, envelopetest.Bad(b))
	}
	return out
}

func newString() any { return new(string) }
func newInt() any    { return new(int) }
func newBytes() any  { return new([]byte) }

func TestConformanceJSON(t *testing.T) {
	type order struct {
		OrderID  int64    `json:"order_id"`
		Customer string   `json:"customer"`
		Items    []string `json:"items"`
		Note     *string  `json:"note"`
	}
	newOrder := func() any { return new(order) }
	envelopetest.Run(t, envelope.JSON, envelopetest.Features{
		Cases: []envelopetest.Case{
			{Name: "object", Data: order{OrderID: math.MaxInt64, Customer: "Åsa", Items: []string{"a", "b"}}, New: newOrder},
			{Name: "empty object", Data: map[string]any{}, New: func() any { return new(map[string]any) }},
			{Name: "empty string", Data: "", New: newString},
			{Name: "unicode", Data: unicode, New: newString},
			{Name: "null", Data: nil, New: func() any { return new(any) }},
			{Name: "large", Data: large, New: newString, Compressed: true},
		},
		Metadata:          true,
		Limits:            true,
		Validator:         true,
		Bad:               bad(envelope.JSONBadInputs()),
		Unbuildable:       []any{make(chan int), func() {}, math.NaN()},
		WrongDestinations: []func() any{newInt, newString},
	})
}

func TestConformanceProtobuf(t *testing.T) {
	newPerson := func() any { return new(*testpb.Person) }
	samePerson := func(got, want any) bool { return proto.Equal(got.(*testpb.Person), want.(*testpb.Person)) }
	envelopetest.Run(t, envelope.Protobuf, envelopetest.Features{
		Cases: []envelopetest.Case{
			{Name: "person", Data: &testpb.Person{Id: "12", Name: "John Doe"}, New: newPerson, Equal: samePerson},
			{Name: "empty", Data: &testpb.Person{}, New: newPerson, Equal: samePerson},
			{Name: "unicode", Data: &testpb.Person{Id: "ü", Name: unicode}, New: newPerson, Equal: samePerson},
			{Name: "large", Data: &testpb.Person{Id: "1", Name: large}, New: newPerson, Equal: samePerson, Compressed: true},
		},
		Metadata:          true,
		Limits:            true,
		Validator:         true,
		Bad:               bad(envelope.ProtobufBadInputs(t)),
		Unbuildable:       []any{"not a message", 42, nil},
		WrongDestinations: []func() any{newString, newInt},
	})
}

func TestConformanceRaw(t *testing.T) {
	envelopetest.Run(t, envelope.Raw, envelopetest.Features{
		Cases: []envelopetest.Case{
			{Name: "bytes", Data: []byte("hello"), New: newBytes},
			{Name: "empty", Data: []byte{}, New: newBytes},
			{Name: "binary", Data: []byte{0, 0xff, 0xfe, '\n'}, New: newBytes},
			{Name: "unicode", Data: unicode, New: newString},
			{Name: "large", Data: large + large, New: newString},
		},
		Limits:            true,
		Validator:         true,
		Unbuildable:       []any{42, nil, map[string]any{}},
		WrongDestinations: []func() any{newInt},
	})
}

func TestConformanceCustomEnvelopeExample(t *testing.T) {
	envelopetest.Run(t, textEnvelope{}, envelopetest.Features{
		Cases: []envelopetest.Case{
			{Name: "text", Data: "hello, world", New: newString},
			{Name: "empty", Data: "", New: newString},
			{Name: "unicode", Data: unicode + "\nsecond line", New: newString},
			{Name: "large", Data: large, New: newString},
		},
		Topic: true,
		Bad: []envelopetest.Bad{
			{Name: "no topic line", Body: []byte("just text"), Want: envelope.ErrMalformed},
			{Name: "empty body", Body: nil, Want: envelope.ErrMalformed},
		},
		Unbuildable:       []any{42, []byte("bytes"), nil},
		WrongDestinations: []func() any{newInt, newBytes},
	})
}
