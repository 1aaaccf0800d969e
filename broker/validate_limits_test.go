package broker

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// nest is a header table with depth tables nested below it.
func nest(depth int) amqp.Table {
	inner := amqp.Table{"leaf": "x"}
	for i := 1; i < depth; i++ {
		inner = amqp.Table{"a": inner}
	}
	return amqp.Table{"nest": inner}
}

func wideTable(n int) amqp.Table {
	h := make(amqp.Table, n)
	for i := range n {
		h[fmt.Sprint(i)] = int32(i)
	}
	return h
}

func nestArrays(depth int) amqp.Table {
	var v any = "x"
	for i := 0; i < depth; i++ {
		v = []any{v}
	}
	return amqp.Table{"a": v}
}

// Issue 17: headers amqp091-go writes but cannot read back are refused
// at once (before, ValidateHeaders took them).
func TestValidateHeadersRefusesWhatAmqp091CannotRead(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    amqp.Table
		ok   bool
	}{
		{"nested 32", nest(32), true},
		{"nested 33", nest(33), false},
		{"nested 40", nest(40), false},
		{"arrays nested 32", nestArrays(32), true},
		{"arrays nested 33", nestArrays(33), false},
		{"8192 entries", wideTable(MaxHeaderElements), true},
		{"8193 entries", wideTable(MaxHeaderElements + 1), false},
		{"9000 entries nested", amqp.Table{"t": wideTable(9000)}, false},
		{"array of 8193", amqp.Table{"a": make([]any, MaxHeaderElements+1)}, false},
		{"uint16 and uint32", amqp.Table{"u": uint16(1), "i": uint32(2)}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateHeaders(tc.h)
			if tc.ok != (err == nil) {
				t.Fatalf("ValidateHeaders = %v, want ok=%v", err, tc.ok)
			}
			var ve *ValidationError
			if err != nil && (!errors.Is(err, ErrInvalidHeaders) || !errors.Is(err, ErrInvalidArgument) || !errors.As(err, &ve)) {
				t.Fatalf("error %v does not match its sentinels", err)
			}
		})
	}
}

func TestPropertiesSize(t *testing.T) {
	m := amqp.Publishing{ContentType: "a", Headers: amqp.Table{"k": "v"}}
	if got, want := PropertiesSize(&m), 14+2+4+(1+1+5+1); got != want {
		t.Fatalf("PropertiesSize = %d, want %d", got, want)
	}
	m = amqp.Publishing{DeliveryMode: 2, Priority: 1, Timestamp: time.Unix(1, 0),
		Headers: amqp.Table{"a": []any{int16(1), amqp.Table{"b": nil}}, "c": []byte("xy")}}
	want := 14 + 1 + 1 + 8 + 4 + (1 + 1 + 5 + 3 + (5 + 1 + 1 + 1)) + (1 + 1 + 5 + 2)
	if got := PropertiesSize(&m); got != want {
		t.Fatalf("PropertiesSize = %d, want %d", got, want)
	}
}

// Issue 17: properties that do not fit one frame are refused at once
// (before, the broker closed the connection).
func TestValidateRequestRefusesPropertiesOverFrameMax(t *testing.T) {
	r := &Request{Exchange: "amq.topic", RoutingKey: "k", Msg: amqp.Publishing{
		Headers: amqp.Table{"big": strings.Repeat("x", DefaultFrameMax)},
	}}
	err := ValidateRequest(r)
	if !errors.Is(err, ErrPropertiesTooLarge) || !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("ValidateRequest = %v, want ErrPropertiesTooLarge", err)
	}
	r.Msg.Headers["big"] = strings.Repeat("x", DefaultFrameMax-PropertiesMargin-100)
	if err := ValidateRequest(r); err != nil {
		t.Fatalf("ValidateRequest of properties that fit = %v", err)
	}
	if err := CheckPropertiesSize(&r.Msg, 64<<10); !errors.Is(err, ErrPropertiesTooLarge) {
		t.Fatalf("CheckPropertiesSize for a 64 KiB frame_max = %v", err)
	}
}
