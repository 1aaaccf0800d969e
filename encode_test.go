package hato_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/envelope"
)

// Encode builds what Publish sends, without a connection.
func TestEncode(t *testing.T) {
	svc, err := hato.New("enc", hato.RoutingKeyPrefix("pfx."))
	if err != nil {
		t.Fatal(err)
	}
	m, err := svc.Encode(map[string]int{"n": 1}, "order.created", hato.Mandatory())
	if err != nil {
		t.Fatal(err)
	}
	if m.Topic != "order.created" || m.RoutingKey != "pfx.order.created" || !m.Mandatory || m.Exchange != "amq.topic" {
		t.Fatalf("message %+v", m)
	}
	if !strings.HasPrefix(m.Publishing.MessageId, svc.UUID()+".") || m.Publishing.DeliveryMode != 2 {
		t.Fatalf("id %q mode %d", m.Publishing.MessageId, m.Publishing.DeliveryMode)
	}
	var data map[string]int
	dec, err := envelope.JSON.Parse(m.Publishing.Body, &data, envelope.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if dec.Metadata.MessageUUID != m.Publishing.MessageId || dec.Metadata.Topic != "order.created" || data["n"] != 1 {
		t.Fatalf("envelope %+v", dec)
	}
	if _, err := svc.Encode(func() {}, "k"); !errors.Is(err, hato.ErrInvalidPayload) {
		t.Fatalf("bad payload: %v", err)
	}
}

func TestWithComponentNil(t *testing.T) {
	if _, err := hato.New("x", hato.WithComponent(nil)); !errors.Is(err, hato.ErrInvalidOption) {
		t.Fatalf("nil component: %v", err)
	}
}
