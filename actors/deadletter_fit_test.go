package actors

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato/broker"
)

func dlRoute() *Route {
	return &Route{Name: "route", Service: "svc", Topology: broker.Topology{Queue: "q"}}
}

// Issue 17: a message whose headers were just under frame_max (or held
// 8 192 entries) can still be dead-lettered: the copy, with hato's headers
// added, fits, says which of the original's headers it had to drop, and
// keeps hato's. Before, the copy was over frame_max and the broker closed
// the publishing connection at every attempt.
func TestDeadLetterCopyFitsOneFrame(t *testing.T) {
	for _, tc := range []struct {
		name    string
		headers amqp.Table
	}{
		{"headers just under frame_max", amqp.Table{
			"big": strings.Repeat("x", 130_900-200), "small": "kept", "x-hato-raw-headers": []byte("r"),
		}},
		{"8192 headers", func() amqp.Table {
			h := make(amqp.Table, broker.MaxHeaderElements)
			for i := range broker.MaxHeaderElements {
				h[fmt.Sprintf("h%05d", i)] = int32(i)
			}
			return h
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &broker.Delivery{Delivery: amqp.Delivery{
				Headers: tc.headers, MessageId: "m", Exchange: "amq.topic", RoutingKey: "k", Body: []byte("body"),
			}}
			req := deadLetterRequest(d, "dlq", dlRoute(), 3, errors.New(strings.Repeat("why ", 2000)))
			if err := broker.ValidateRequest(req); err != nil {
				t.Fatalf("dead-letter copy refused: %v", err)
			}
			h := req.Msg.Headers
			note, _ := h[HeaderDroppedHeaders].(string)
			if !strings.Contains(note, "headers dropped to fit one frame") {
				t.Fatalf("%s = %q", HeaderDroppedHeaders, note)
			}
			for _, k := range hatoHeaders[:6] {
				if _, ok := h[k]; !ok {
					t.Errorf("hato's header %s dropped", k)
				}
			}
			if _, big := tc.headers["big"]; big && (h["small"] != "kept" || h["big"] != nil || !strings.Contains(note, "big")) {
				t.Errorf("dropped the wrong headers: small=%v big kept=%v note %q", h["small"], h["big"] != nil, note)
			}
			if string(req.Msg.Body) != "body" || req.Msg.MessageId != "m" {
				t.Error("body or properties changed")
			}
		})
	}
}

// A copy that fits is left alone: no note.
func TestDeadLetterCopyThatFitsIsUnchanged(t *testing.T) {
	d := &broker.Delivery{Delivery: amqp.Delivery{Headers: amqp.Table{"a": "b"}}}
	req := deadLetterRequest(d, "dlq", dlRoute(), 1, errors.New("x"))
	if _, noted := req.Msg.Headers[HeaderDroppedHeaders]; noted || req.Msg.Headers["a"] != "b" {
		t.Fatalf("headers: %v", req.Msg.Headers)
	}
}
