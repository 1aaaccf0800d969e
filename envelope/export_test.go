package envelope

import "testing"

// BadInput exports a bad-input case of bad_test.go to the external tests
// (conformance_test.go runs them through envelopetest).
type BadInput struct {
	Name string
	Body []byte
	New  func() any
	Opts Options
	Want error
}

func exportBad(cases []badCase) []BadInput {
	out := make([]BadInput, 0, len(cases))
	for _, c := range cases {
		dst := c.dst
		if dst == nil {
			dst = anyDst
		}
		out = append(out, BadInput{Name: c.name, Body: c.body, New: dst, Opts: c.opts, Want: c.want})
	}
	return out
}

// JSONBadInputs are the JSON envelope's bad inputs.
func JSONBadInputs() []BadInput { return exportBad(jsonBadCases()) }

// ProtobufBadInputs are the protobuf envelope's bad inputs.
func ProtobufBadInputs(t testing.TB) []BadInput { return exportBad(protobufBadCases(t)) }
