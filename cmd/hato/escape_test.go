package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Issue 19: broker-controlled text reached the terminal raw, so an ESC
// sequence in a message id, reason, service name, routing key or header
// cleared the screen or faked output. Text output escapes it; --json
// stays exact.
func TestTextOutputEscapesControlCharacters(t *testing.T) {
	const evil = "x\x1b[2J\rFAKE\nLINE\u202e\xff"
	dl := deadLetter{Queue: "q", MessageID: evil, Reason: evil, Service: evil, Route: evil,
		OriginalExchange: evil, OriginalRoutingKey: evil, OriginalQueue: evil, DeadLetteredAt: evil, hasOrigin: true}
	dec := decoded{Envelope: "json", Service: evil, MessageUUID: evil, Timestamp: evil, Data: json.RawMessage(`"a\u001bb\rc"`), DataFormat: "text"}
	texts := map[string]string{
		"dlq show":       shownMessage{deadLetter: dl, Data: dec}.text(time.Now()),
		"dlq replay":     replayed{Action: "would-replay", deadLetter: dl, Exchange: evil, RoutingKey: evil}.text(),
		"dlq list":       dlqInfo{Queue: evil, Messages: 1, Reasons: []reasonCount{{Reason: evil, Count: 1}}}.text(),
		"dlq list error": dlqInfo{Queue: evil, Error: evil}.text(),
		"tail":           tailRecord{RoutingKey: evil, Headers: amqp.Table{"h": evil}, decoded: dec}.text(),
		"undecodable":    decoded{Envelope: "none", Error: evil, Data: json.RawMessage(`"b"`), DataFormat: "text"}.text(),
	}
	for name, text := range texts {
		var buf bytes.Buffer
		(&printer{w: &buf}).record(nil, text)
		out := buf.String()
		for _, bad := range []string{"\x1b", "\r", "\u202e", "\xff", "FAKE\nLINE"} {
			if strings.Contains(out, bad) {
				t.Errorf("%s: text output %q holds %q", name, out, bad)
			}
		}
	}
	var buf bytes.Buffer
	(&printer{w: &buf, json: true}).record(map[string]string{"id": evil}, "")
	var back map[string]string
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil || back["id"] != strings.ToValidUTF8(evil, "\ufffd") {
		t.Errorf("--json: %q (%v), want the id exact", buf.String(), err)
	}
}
