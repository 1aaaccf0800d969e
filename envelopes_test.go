//go:build integration

package hato_test

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/protobuf/proto"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/envelope"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/test/brokertest"
	"github.com/hato-go/hato/test/testpb"
)

func TestJSONEnvelopeKeepsLargeIntegersAndCompressesLargeData(t *testing.T) {
	key := testutil.Key(t, "json")
	var mu sync.Mutex
	got := map[string]*hato.Message[any]{}
	svc := newService(t, "json-route")
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[any]) error {
		data := m.Data.(map[string]any)
		mu.Lock()
		got[data["kind"].(string)] = m
		mu.Unlock()
		return nil
	})
	testutil.Start(t, svc)
	p := publisher(t)
	ctx := context.Background()
	if err := p.Publish(ctx, map[string]any{"kind": "id", "id": json.Number("12345678901234567890")}, key); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, map[string]any{"kind": "large", "blob": strings.Repeat("x", 70000)}, key); err != nil {
		t.Fatal(err)
	}
	brokertest.WaitFor(t, 10*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 2 }, "both")
	if id := got["id"].Data.(map[string]any)["id"]; id != json.Number("12345678901234567890") {
		t.Errorf("large integer arrived as %#v, want it exact", id)
	}
	large := got["large"]
	if large.Metadata.DataEncoding != envelope.EncodingBase64GzipJSON {
		t.Errorf("70000-character data sent as %q, want base64_gzip_json", large.Metadata.DataEncoding)
	}
	if blob := large.Data.(map[string]any)["blob"].(string); len(blob) != 70000 {
		t.Errorf("large data decoded to %d characters", len(blob))
	}
}

func TestProtobufRawAndCustomEnvelopesThroughTheBroker(t *testing.T) {
	protoKey, rawKey, customKey := testutil.Key(t, "proto"), testutil.Key(t, "raw"), testutil.Key(t, "custom")
	var mu sync.Mutex
	var person *testpb.Person
	var personMeta envelope.Metadata
	var protoBytes, rawBody []byte
	var custom string
	done := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return person != nil && protoBytes != nil && rawBody != nil && custom != ""
	}

	svc := newService(t, "envelopes")
	mustSubscribe(t, svc, protoKey, func(ctx context.Context, m *hato.Message[*testpb.Person]) error {
		mu.Lock()
		person, personMeta = m.Data, m.Metadata
		mu.Unlock()
		return nil
	}, hato.Envelope(envelope.Protobuf), hato.HandlerName("typed"))
	mustSubscribe(t, svc, protoKey, func(ctx context.Context, m *hato.Message[[]byte]) error {
		mu.Lock()
		protoBytes = m.Data
		mu.Unlock()
		return nil
	}, hato.Envelope(envelope.Protobuf), hato.NotCompeting(), hato.HandlerName("untyped"))
	mustSubscribe(t, svc, rawKey, func(ctx context.Context, m *hato.Message[[]byte]) error {
		mu.Lock()
		rawBody = m.Data
		mu.Unlock()
		return nil
	}, hato.Envelope(envelope.Raw))
	mustSubscribe(t, svc, customKey, func(ctx context.Context, m *hato.Message[string]) error {
		mu.Lock()
		custom = m.Data
		mu.Unlock()
		return nil
	}, hato.Envelope(textEnvelope{}), hato.EnvelopeOptions(envelope.Options{Values: map[string]any{"text.upper": true}}))
	testutil.Start(t, svc)

	p := publisher(t)
	ctx := context.Background()
	want := &testpb.Person{Id: "12", Name: "John Doe åäö"}
	if err := p.Publish(ctx, want, protoKey, hato.Envelope(envelope.Protobuf)); err != nil {
		t.Fatal(err)
	}
	raw := []byte{0xff, 0x00, 'r', 'a', 'w', 0xfe}
	if err := p.Publish(ctx, raw, rawKey, hato.Envelope(envelope.Raw)); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, "hello", customKey, hato.Envelope(textEnvelope{})); err != nil {
		t.Fatal(err)
	}
	brokertest.WaitFor(t, 10*time.Second, done, "all four routes")
	if !proto.Equal(person, want) {
		t.Errorf("typed protobuf payload %v, want %v", person, want)
	}
	if personMeta.ProtocolVersion != envelope.ProtobufProtocolVersion || personMeta.Topic != protoKey {
		t.Errorf("protobuf metadata %+v", personMeta)
	}
	var back testpb.Person
	if err := proto.Unmarshal(protoBytes, &back); err != nil || !proto.Equal(&back, want) {
		t.Errorf("untyped protobuf route got %x (%v)", protoBytes, err)
	}
	if !bytes.Equal(rawBody, raw) {
		t.Errorf("raw route got %x, want %x untouched", rawBody, raw)
	}
	if custom != "HELLO" {
		t.Errorf("custom envelope with its route option gave %q, want HELLO", custom)
	}
}

// textEnvelope is a custom envelope: "<topic>\n<text>"; the route option
// "text.upper" upper-cases the text on parse.
type textEnvelope struct{}

func (textEnvelope) Name() string        { return "text" }
func (textEnvelope) ContentType() string { return "text/plain; charset=utf-8" }
func (textEnvelope) Build(b envelope.Build, data any, _ envelope.Options) ([]byte, error) {
	s, ok := data.(string)
	if !ok {
		return nil, &envelope.BuildError{Envelope: "text", Kind: envelope.ErrPayloadType}
	}
	return []byte(b.Topic + "\n" + s), nil
}
func (textEnvelope) Parse(body []byte, dst any, opts envelope.Options) (envelope.Message, error) {
	topic, text, ok := bytes.Cut(body, []byte("\n"))
	if !ok {
		return envelope.Message{}, &envelope.ParseError{Envelope: "text", Kind: envelope.ErrMalformed, Detail: "no topic line"}
	}
	p, ok := dst.(*string)
	if !ok {
		return envelope.Message{}, &envelope.ParseError{Envelope: "text", Kind: envelope.ErrPayloadType}
	}
	if upper, _ := opts.Values["text.upper"].(bool); upper {
		text = bytes.ToUpper(text)
	}
	*p = string(text)
	return envelope.Message{Metadata: envelope.Metadata{Topic: string(topic)}}, nil
}

func jsonBody(encoding, data string) []byte {
	return []byte(`{"service": {"name": "bad", "uuid": null}, "metadata": {"message_uuid": "None.x", ` +
		`"protocol_version": "tomodachi-json-base--1.0.0", "timestamp": 1.5, "topic": "t", "data_encoding": "` +
		encoding + `"}, "data": ` + data + `}`)
}

func zlibBomb(t *testing.T) []byte {
	var buf bytes.Buffer
	w, _ := zlib.NewWriterLevel(&buf, zlib.BestCompression)
	zeros := make([]byte, 1<<20)
	for i := 0; i < 256; i++ { // 256 MiB of zeros, far over the 32 MiB limit
		if _, err := w.Write(zeros); err != nil {
			t.Fatal(err)
		}
	}
	_ = w.Close()
	return jsonBody("base64_gzip_json", `"`+base64.StdEncoding.EncodeToString(buf.Bytes())+`"`)
}

func TestBadInputIsDeadLetteredWithItsTypedErrorAndNothingElseIsLost(t *testing.T) {
	jsonKey, protoKey := testutil.Key(t, "json"), testutil.Key(t, "proto")
	evs := &testutil.DeliveryEvents{}
	good := testutil.NewCollector()
	svc := newService(t, "hardened", hato.WithDeliveryEvents(evs.Add))
	mustSubscribe(t, svc, jsonKey, func(ctx context.Context, m *hato.Message[payload]) error {
		good.Add(idOf(m))
		return nil
	})
	mustSubscribe(t, svc, protoKey, func(ctx context.Context, m *hato.Message[*testpb.Person]) error {
		good.Add(m.Data.Id)
		return nil
	}, hato.Envelope(envelope.Protobuf))
	testutil.Start(t, svc)
	routes := svc.Routes()

	validProto, err := envelope.Protobuf.Build(envelope.Build{Topic: protoKey}, &testpb.Person{Id: "p", Name: "n"}, envelope.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rawProto, _ := base64.StdEncoding.DecodeString(string(validProto))
	bad := []struct {
		name, key string
		body      []byte
		want      error
	}{
		{"invalid json", jsonKey, []byte(`{"service": {`), envelope.ErrMalformed},
		{"wrong shape", jsonKey, []byte(`[1, 2, 3]`), envelope.ErrMalformed},
		{"metadata not an object", jsonKey, []byte(`{"service": {}, "metadata": 7, "data": 1}`), envelope.ErrMalformed},
		{"unknown data_encoding", jsonKey, jsonBody("rot13", `"x"`), envelope.ErrUnknownEncoding},
		{"zlib bomb", jsonKey, zlibBomb(t), envelope.ErrTooLarge},
		{"non-utf8", jsonKey, append(jsonBody("raw", `"`), 0xff, 0xfe, '"', '}'), envelope.ErrMalformed},
		{"empty body", jsonKey, nil, envelope.ErrMalformed},
		{"16 MiB body", jsonKey, jsonBody("raw", `"`+strings.Repeat("a", 16<<20)+`"`), envelope.ErrTooLarge},
		{"payload type mismatch", jsonKey, jsonBody("raw", `{"id": 42}`), envelope.ErrPayloadType},
		{"invalid base64", protoKey, []byte("!!!not base64!!!"), envelope.ErrMalformed},
		{"truncated protobuf", protoKey, []byte(base64.StdEncoding.EncodeToString(rawProto[:len(rawProto)/2])), envelope.ErrMalformed},
	}

	conn := brokertest.Dial(t, brokerURL(t), "test-bad-input")
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	p := publisher(t)
	var goodIDs []string
	for i, b := range bad {
		id := fmt.Sprintf("good-%d", i)
		goodIDs = append(goodIDs, id)
		if b.key == jsonKey {
			publishN(t, p, jsonKey, []string{id})
		} else if err := p.Publish(ctx, &testpb.Person{Id: id}, protoKey, hato.Envelope(envelope.Protobuf)); err != nil {
			t.Fatal(err)
		}
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "amq.topic", b.key, false, false,
			amqp.Publishing{Body: b.body, MessageId: b.name})
		if err != nil || !dc.Wait() {
			t.Fatalf("publish %s: %v", b.name, err)
		}
	}
	publishN(t, p, jsonKey, []string{"good-last"})
	goodIDs = append(goodIDs, "good-last")

	good.WaitDistinct(t, len(goodIDs), 60*time.Second)
	if missing := good.Missing(goodIDs); len(missing) > 0 {
		t.Fatalf("good messages lost around bad ones: %v", missing)
	}
	brokertest.WaitFor(t, 30*time.Second, func() bool { return len(evs.Snapshot()) >= len(bad) }, "every bad message dead-lettered")
	byID := map[string]hato.DeliveryEvent{}
	for _, e := range evs.Snapshot() {
		byID[e.MessageID] = e
	}
	for _, b := range bad {
		e, ok := byID[b.name]
		if !ok {
			t.Errorf("%s: no dead-letter event", b.name)
			continue
		}
		if !errorsIs(e.Err, b.want) || e.Attempts > 1 {
			t.Errorf("%s: dead-lettered after %d attempts with %v, want at once with %v", b.name, e.Attempts, e.Err, b.want)
		}
	}
	// They are in the dead-letter queues, with the reason; the main queues
	// are empty (nothing requeued, nothing looping).
	total := 0
	for _, r := range routes {
		n, _ := brokertest.Inspect(t, conn, r.DeadLetterQueue)
		total += n
		if m, _ := brokertest.Inspect(t, conn, r.Queue); m != 0 {
			t.Errorf("queue %s still holds %d messages", r.Queue, m)
		}
	}
	if total != len(bad) {
		t.Errorf("dead-letter queues hold %d messages, want %d", total, len(bad))
	}
	dch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	d, ok, err := dch.Get(routes[0].DeadLetterQueue, true)
	if err != nil || !ok {
		t.Fatalf("get from the dead-letter queue: ok=%v %v", ok, err)
	}
	if reason, _ := d.Headers["x-hato-reason"].(string); !strings.Contains(reason, "envelope:") {
		t.Errorf("dead-lettered message reason header %q", reason)
	}
	if d.Headers["x-hato-original-queue"] != routes[0].Queue || d.Headers["x-hato-original-routing-key"] != jsonKey {
		t.Errorf("dead-letter headers %v", d.Headers)
	}
}
