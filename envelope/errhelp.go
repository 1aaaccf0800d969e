package envelope

import (
	"reflect"
	"strconv"
)

// parseErr builds the *ParseError every Parse failure is.
func parseErr(env string, kind error, detail string, cause error) error {
	return &ParseError{Envelope: env, Kind: kind, Detail: detail, Err: cause}
}

// buildErr builds the *BuildError every Build failure is.
func buildErr(env string, kind error, detail string, cause error) error {
	return &BuildError{Envelope: env, Kind: kind, Detail: detail, Err: cause}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// typeName names a destination's type for error details.
func typeName(v any) string {
	if v == nil {
		return "nil"
	}
	return reflect.TypeOf(v).String()
}

// quoteDetail quotes a value read from a message for an error detail,
// shortened so a hostile message cannot flood logs.
func quoteDetail(s string) string {
	const max = 64
	if len(s) > max {
		return strconv.Quote(s[:max]) + "…"
	}
	return strconv.Quote(s)
}
