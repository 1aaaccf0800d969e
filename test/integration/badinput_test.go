//go:build integration

package integration_test

import (
	"bytes"
	"compress/zlib"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/actors"
	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/envelope"
	"github.com/hato-go/hato/internal/testpb"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/test/brokertest"
	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/protobuf/proto"
)

// The bad-input rows that need the broker's answer (see the README's Bad
// input table); the rows hato refuses up front are below
// (TestBadPublishInputFailsAtOnceAndHarmsNothing, TestBadSubscribeInputFailsAtRegistration).

// TestPublishOverMaxMessageSizeFailsAtOnce: a body over WithMaxMessageSize
// (after envelope encoding) fails at once with ErrMessageTooLarge; nothing
// is sent, the connection stays up and good messages around it arrive.
func TestPublishOverMaxMessageSizeFailsAtOnce(t *testing.T) {
	const limit = 4096
	key := testutil.Key(t, "sized")
	sup := &testutil.SupervisorEvents{}
	got := startWatched(t, "max-size", key).got
	p := publisher(t, hato.WithMaxMessageSize(limit), hato.WithSupervisorEvents(sup.Add))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	err := p.Publish(ctx, map[string]any{"id": "big", "pad": strings.Repeat("x", limit)}, key)
	if !errors.Is(err, hato.ErrMessageTooLarge) || !errors.Is(err, hato.ErrInvalidArgument) {
		t.Fatalf("Publish of a body over the limit = %v, want ErrMessageTooLarge, ErrInvalidArgument", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Publish took %s, want at once", d)
	}
	// Under the limit, with the envelope: sent.
	if err := p.Publish(ctx, map[string]any{"id": "fits", "pad": strings.Repeat("x", limit/2)}, key); err != nil {
		t.Fatalf("Publish under the limit: %v", err)
	}
	publishN(t, p, key, []string{"after"})
	got.WaitDistinct(t, 2, 30*time.Second)
	if got.Count("big") != 0 {
		t.Error("the refused message was delivered")
	}
	if n := sup.Count(hato.EventUnavailable); n != 0 {
		t.Errorf("%d unavailable events: the refused publish cost a channel", n)
	}
}

// TestPublishToMissingExchangeFailsThatPublishOnly: the broker answers a
// publish to a missing exchange by closing the publish channel (404);
// that publish fails with ErrExchangeNotFound, the channel is reopened and
// good publishes in flight at the same time are sent again: none is lost.
func TestPublishToMissingExchangeFailsThatPublishOnly(t *testing.T) {
	key := testutil.Key(t, "around-missing-exchange")
	got := startWatched(t, "missing-exchange-consumer", key).got
	sup := &testutil.SupervisorEvents{}
	p := publisher(t, hato.WithSupervisorEvents(sup.Add))

	ids := fmtIDs("good", 200)
	done := publishAsync(p, key, ids)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := p.Publish(ctx, "x", "k", hato.Exchange("hato.no.such.exchange."+broker.RandomID()))
	if !errors.Is(err, hato.ErrExchangeNotFound) {
		t.Fatalf("publish to a missing exchange: %v, want ErrExchangeNotFound", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("good publishes around it: %v", err)
	}
	got.WaitDistinct(t, len(ids), 30*time.Second)
	t.Logf("publish channel losses reported: %d", sup.Count(hato.EventUnavailable))
	if n := sup.Count(hato.EventGaveUp); n != 0 {
		t.Errorf("%d gave-up events: the service did not keep running", n)
	}
	select {
	case <-p.Done():
		t.Fatal("the publisher stopped")
	default:
	}
}

// TestConflictingQueueLeavesTheOwnersQueueAlone complements
// TestConflictingQueueDeclarationFailsStart: the refused service neither
// changes nor empties the queue someone else declared, and other services
// on the vhost keep working.
func TestConflictingQueueLeavesTheOwnersQueueAlone(t *testing.T) {
	key := testutil.Key(t, "conflict")
	probe := newService(t, "conflicting")
	mustSubscribe(t, probe, key, func(ctx context.Context, m *hato.Message[any]) error { return nil })
	queue := probe.Routes()[0].Queue
	conn := brokertest.Dial(t, brokerURL(t), "test-conflict-owner")
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(queue, false, false, false, false, amqp.Table{"x-max-length": int32(10)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = ch.QueueDelete(queue, false, false, false) })
	if err := ch.Publish("", queue, false, false, amqp.Publishing{Body: []byte("owned")}); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := probe.Start(ctx); !errors.Is(err, hato.ErrPreconditionFailed) || ctx.Err() != nil {
		_ = probe.Stop(context.Background())
		t.Fatalf("Start = %v (deadline passed: %v), want ErrPreconditionFailed at once", err, ctx.Err() != nil)
	}
	q, ok, err := brokertest.FindQueue(brokerVhost(t), queue)
	if err != nil || !ok {
		t.Fatalf("the owner's queue: found=%v err=%v", ok, err)
	}
	if q.Durable || toInt(q.Arguments["x-max-length"]) != 10 || len(q.Arguments) != 1 {
		t.Errorf("the owner's queue changed: durable=%v arguments=%v", q.Durable, q.Arguments)
	}
	if n, _ := brokertest.Inspect(t, conn, queue); n != 1 {
		t.Errorf("the owner's queue holds %d messages, want its 1", n)
	}
	other := testutil.Key(t, "other")
	got := startWatched(t, "unaffected", other).got
	publishN(t, publisher(t), other, []string{"ok"})
	got.WaitDistinct(t, 1, 30*time.Second)
}

// TestUserWithoutPermissionFailsStartAtOnce: a user the vhost refuses
// (no permissions there: the broker refuses the connection), or one that
// may not declare the route's queue (403 on the declaration), makes Start
// fail with ErrAccessRefused at once, not after the start timeout.
func TestUserWithoutPermissionFailsStartAtOnce(t *testing.T) {
	cases := []struct {
		name  string
		perms []string // configure, write, read; nil: none in the vhost
		route bool
	}{
		{"no permission in the vhost", nil, false},
		{"no configure permission for the queue", []string{"", ".*", ".*"}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			u := throwawayUser(t, c.perms)
			svc, err := hato.New("refused", append(testutil.Options(t, u), hato.WithStartTimeout(time.Minute))...)
			if err != nil {
				t.Fatal(err)
			}
			if c.route {
				mustSubscribe(t, svc, testutil.Key(t, "refused"), func(context.Context, *hato.Message[any]) error { return nil })
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			start := time.Now()
			err = svc.Start(ctx)
			if err == nil {
				_ = svc.Stop(context.Background())
				t.Fatal("Start succeeded without permission")
			}
			if !errors.Is(err, hato.ErrAccessRefused) {
				t.Fatalf("Start = %v, want ErrAccessRefused", err)
			}
			t.Logf("Start failed after %s: %v", time.Since(start).Round(time.Millisecond), err)
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("Start failed after %s, want at once", d)
			}
		})
	}
}

// TestPublishToForbiddenExchangeFailsThatPublishOnly: a publish to an
// exchange the user may not write fails with ErrAccessRefused (the broker
// closes the publish channel, 403); the same service's other publishes,
// before, around and after it, arrive.
func TestPublishToForbiddenExchangeFailsThatPublishOnly(t *testing.T) {
	forbidden := "hato.forbidden." + broker.RandomID()
	admin := brokertest.Dial(t, brokerURL(t), "test-forbidden-exchange")
	ch, err := admin.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDeclare(forbidden, "topic", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	key := testutil.Key(t, "allowed")
	got := startWatched(t, "forbidden-consumer", key).got

	// May write anything but the hato.forbidden.* exchanges.
	u := throwawayUser(t, []string{".*", "^(?!hato[.]forbidden).*", ".*"})
	sup := &testutil.SupervisorEvents{}
	p, err := hato.New("limited", append(testutil.Options(t, u), hato.WithSupervisorEvents(sup.Add))...)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Start(t, p)
	publishN(t, p, key, []string{"before"})
	ids := fmtIDs("around", 200)
	done := publishAsync(p, key, ids)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = p.Publish(ctx, "x", "k", hato.Exchange(forbidden))
	if !errors.Is(err, hato.ErrAccessRefused) {
		t.Fatalf("publish to a forbidden exchange: %v, want ErrAccessRefused", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("good publishes around it: %v", err)
	}
	publishN(t, p, key, []string{"after"})
	got.WaitDistinct(t, len(ids)+2, 30*time.Second)
	t.Logf("publish channel losses reported: %d", sup.Count(hato.EventUnavailable))
	if n := sup.Count(hato.EventGaveUp); n != 0 {
		t.Errorf("%d gave-up events: the service did not keep running", n)
	}
}

// throwawayUser creates a user with perms (configure, write, read regular
// expressions; nil for none) in this package's vhost, deleted at cleanup,
// and returns its URL.
func throwawayUser(t *testing.T, perms []string) string {
	t.Helper()
	vhost := brokerVhost(t)
	name, password := brokertest.UniqueName("hato-test-user-", t.Name()), broker.RandomID()
	if out, err := brokertest.Rabbitmqctl("add_user", name, password); err != nil {
		t.Fatalf("add_user: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := brokertest.Rabbitmqctl("delete_user", name); err != nil {
			t.Errorf("delete_user %s: %v\n%s", name, err, out)
		}
	})
	if perms != nil {
		args := append([]string{"set_permissions", "-p", vhost, name}, perms...)
		if out, err := brokertest.Rabbitmqctl(args...); err != nil {
			t.Fatalf("set_permissions: %v\n%s", err, out)
		}
	}
	u, err := url.Parse(brokerURL(t))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(name, password)
	return u.String()
}

// badPublishes is the bad-input table of Publish: each fails at once with
// its typed error, and the service never sees the frame.
func badPublishes() []struct {
	name string
	data any
	key  string
	opts []hato.PublishOption
	want []error
} {
	long := strings.Repeat("k", 300)
	return []struct {
		name string
		data any
		key  string
		opts []hato.PublishOption
		want []error
	}{
		{"routing key of 300 bytes", "x", long, nil, []error{hato.ErrInvalidRoutingKey, hato.ErrInvalidArgument}},
		{"routing key of 256 bytes once prefixed", "x", strings.Repeat("k", 250), []hato.PublishOption{hato.RoutingKeyPrefix("prefix")}, []error{hato.ErrInvalidRoutingKey}},
		{"routing key of 64 bytes, 256 once encoded", "x", strings.Repeat("é", 32), nil, []error{hato.ErrInvalidRoutingKey}},
		{"routing key not UTF-8", "x", "a.\xff.b", nil, []error{hato.ErrInvalidRoutingKey}},
		{"exchange name of 300 bytes", "x", "k", []hato.PublishOption{hato.Exchange(long)}, []error{hato.ErrInvalidName, hato.ErrInvalidArgument}},
		{"exchange name not UTF-8", "x", "k", []hato.PublishOption{hato.Exchange("ex\xfe")}, []error{hato.ErrInvalidName}},
		{"header of an unsupported type", "x", "k", []hato.PublishOption{hato.Headers(amqp.Table{"h": struct{}{}})}, []error{hato.ErrInvalidHeaders, hato.ErrInvalidArgument}},
		{"header nested in a table of an unsupported type", "x", "k", []hato.PublishOption{hato.Headers(amqp.Table{"t": amqp.Table{"u": uint64(1)}})}, []error{hato.ErrInvalidHeaders}},
		{"header name of 300 bytes", "x", "k", []hato.PublishOption{hato.Headers(amqp.Table{long: "v"})}, []error{hato.ErrInvalidHeaders}},
		{"nested header name of 300 bytes", "x", "k", []hato.PublishOption{hato.Headers(amqp.Table{"t": []any{amqp.Table{long: "v"}}})}, []error{hato.ErrInvalidHeaders}},
		{"headers nested 40 deep (issue 17)", "x", "k", []hato.PublishOption{hato.Headers(brokertest.NestedHeaders(40))}, []error{hato.ErrInvalidHeaders, hato.ErrInvalidArgument}},
		{"headers of 9000 entries (issue 17)", "x", "k", []hato.PublishOption{hato.Headers(brokertest.WideHeaders(9000))}, []error{hato.ErrInvalidHeaders, hato.ErrInvalidArgument}},
		{"headers over frame_max (issue 17)", "x", "k", []hato.PublishOption{hato.Headers(amqp.Table{"big": strings.Repeat("x", 131000)})}, []error{hato.ErrPropertiesTooLarge, hato.ErrInvalidHeaders, hato.ErrInvalidArgument}},
		{"payload JSON cannot encode", make(chan int), "k", nil, []error{hato.ErrInvalidPayload, envelope.ErrPayloadType, hato.ErrInvalidArgument}},
		{"nil payload with the protobuf envelope", nil, "k", []hato.PublishOption{hato.Envelope(envelope.Protobuf)}, []error{hato.ErrInvalidPayload, envelope.ErrPayloadType}},
	}
}

// TestBadPublishInputFailsAtOnceAndHarmsNothing: every bad publish, from
// outside and from inside a handler, fails at once with its typed error,
// the connection is never lost, and every good message published around
// the bad ones arrives.
func TestBadPublishInputFailsAtOnceAndHarmsNothing(t *testing.T) {
	key := testutil.Key(t, "good")
	relay := testutil.Key(t, "relay")
	w := watchService(t, "bad-publish", nil, key)
	svc, good, sup := w.svc, w.got, w.sup
	inHandler := make(chan error, 100)
	mustSubscribe(t, svc, relay, func(ctx context.Context, m *hato.Message[payload]) error {
		// The handler: forwards every message, one in ten to a bad key.
		for _, b := range badPublishes() {
			start := time.Now()
			err := svc.Publish(ctx, b.data, b.key, b.opts...)
			if !isAll(err, b.want) || time.Since(start) > time.Second {
				inHandler <- fmt.Errorf("in handler, %s: %v after %s, want %v at once", b.name, err, time.Since(start), b.want)
			}
		}
		return svc.Publish(ctx, map[string]any{"id": "relayed-" + m.Data.ID}, key)
	})
	testutil.Start(t, svc)
	p := publisher(t)

	var want []string
	for i, b := range badPublishes() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		start := time.Now()
		err := p.Publish(ctx, b.data, b.key, b.opts...)
		cancel()
		if !isAll(err, b.want) {
			t.Errorf("%s: Publish = %v, want errors.Is %v", b.name, err, b.want)
		} else if d := time.Since(start); d > time.Second {
			t.Errorf("%s: Publish took %s, want at once", b.name, d)
		}
		id := fmt.Sprintf("good-%d", i)
		want = append(want, id, "relayed-"+id)
		publishN(t, p, key, []string{id})
		publishN(t, p, relay, []string{id})
	}
	good.WaitDistinct(t, len(want), 60*time.Second)
	if missing := good.Missing(want); len(missing) > 0 {
		t.Fatalf("good messages lost around bad ones: %v", missing)
	}
	close(inHandler)
	for err := range inHandler {
		t.Error(err)
	}
	if n := sup.Count(hato.EventUnavailable); n != 0 {
		t.Errorf("%d unavailable events: a bad publish cost a connection or channel", n)
	}
}

// TestBadSubscribeInputFailsAtRegistration: a binding key, queue name or
// exchange name AMQP cannot carry is refused by Subscribe and Start, and
// the broker never sees it.
func TestBadSubscribeInputFailsAtRegistration(t *testing.T) {
	long := strings.Repeat("q", 300)
	h := func(context.Context, *hato.Message[any]) error { return nil }
	cases := []struct {
		name string
		key  string
		svc  []hato.Option
		opts []hato.RouteOption
		want error
	}{
		{"binding key of 300 bytes", long, nil, nil, hato.ErrInvalidRoutingKey},
		{"binding key of 256 bytes once prefixed", strings.Repeat("k", 250), []hato.Option{hato.RoutingKeyPrefix("prefix")}, nil, hato.ErrInvalidRoutingKey},
		{"binding pattern not UTF-8", "a.*.\xff", nil, nil, hato.ErrInvalidRoutingKey},
		{"queue name of 300 bytes", "k", nil, []hato.RouteOption{hato.QueueName(long)}, hato.ErrInvalidName},
		{"dead-letter queue name over 255 bytes", "k", nil, []hato.RouteOption{hato.QueueName(strings.Repeat("q", 253))}, hato.ErrInvalidName},
		{"queue name prefix of 300 bytes", "k", []hato.Option{hato.WithQueueNamePrefix(long)}, nil, hato.ErrInvalidName},
		{"route exchange of 300 bytes", "k", nil, []hato.RouteOption{hato.Exchange(long)}, hato.ErrInvalidName},
		{"service exchange not UTF-8", "k", []hato.Option{hato.Exchange("ex\xff")}, nil, hato.ErrInvalidName},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			svc := newService(t, "bad-subscribe", c.svc...)
			if err := hato.Subscribe(svc, c.key, h, c.opts...); !errors.Is(err, c.want) || !errors.Is(err, hato.ErrInvalidArgument) {
				t.Fatalf("Subscribe = %v, want %v", err, c.want)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := svc.Start(ctx); !errors.Is(err, c.want) {
				_ = svc.Stop(ctx)
				t.Fatalf("Start = %v, want %v", err, c.want)
			}
		})
	}
	// The broker and other services are untouched.
	key := testutil.Key(t, "after")
	got := startWatched(t, "after-bad-subscribe", key).got
	publishN(t, publisher(t), key, []string{"ok"})
	got.WaitDistinct(t, 1, 30*time.Second)
	if q, ok, err := brokertest.FindQueue(brokerVhost(t), strings.Repeat("q", 253)); err != nil || ok {
		t.Errorf("a refused queue was declared: %v %v", q.Name, err)
	}
}

func isAll(err error, targets []error) bool {
	if err == nil {
		return false
	}
	for _, t := range targets {
		if !errors.Is(err, t) {
			return false
		}
	}
	return true
}

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
	w := watchService(t, "hardened", []hato.Option{hato.WithDeliveryEvents(evs.Add)}, jsonKey)
	svc, good := w.svc, w.got
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

// Issue 17: one message whose headers amqp091-go cannot read (nested 40
// deep, or 9 000 entries) reaches its route's dead-letter queue with
// reason "unparseable", its other properties and its raw header table;
// the good messages behind it, on its route and on a route sharing the
// consuming connection, are all handled, and no connection or channel is
// lost. Before the frame guard, the consuming connection died at the
// message and again at every redelivery, and nothing behind it arrived.
func TestUnparseableHeadersAreQuarantined(t *testing.T) {
	for _, tc := range brokertest.UnreadableHeaders() {
		t.Run(tc.Name, func(t *testing.T) { quarantineCase(t, tc.Headers, tc.Reason) })
	}
}

// watched is a started service whose routes collect the ids they handle,
// with its supervisor events.
type watched struct {
	svc   *hato.Service
	got   *testutil.Collector
	sup   *testutil.SupervisorEvents
	dlq   string // the first route's dead-letter queue
	ready int    // ready events once started
}

// watchService makes a service named name (with opts) with a route on
// each of keys that collects the ids of its messages; it does not start it.
func watchService(t *testing.T, name string, opts []hato.Option, keys ...string) watched {
	t.Helper()
	w := watched{sup: &testutil.SupervisorEvents{}, got: testutil.NewCollector()}
	w.svc = newService(t, name, append(opts, hato.WithSupervisorEvents(w.sup.Add))...)
	for _, key := range keys {
		mustSubscribe(t, w.svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
			w.got.Add(idOf(m))
			return nil
		})
	}
	return w
}

// startWatched is watchService, started.
func startWatched(t *testing.T, name string, keys ...string) watched {
	t.Helper()
	w := watchService(t, name, nil, keys...)
	testutil.Start(t, w.svc)
	w.dlq = w.svc.Routes()[0].DeadLetterQueue
	w.ready = w.sup.Count(hato.EventReady)
	return w
}

// checkNothingLost fails the test if the service lost a connection or
// channel since it started.
func (w watched) checkNothingLost(t *testing.T) {
	t.Helper()
	if n := w.sup.Count(hato.EventUnavailable); n != 0 || w.sup.Count(hato.EventReady) != w.ready {
		t.Errorf("%d unavailable events, ready %d -> %d: connections or channels were lost",
			n, w.ready, w.sup.Count(hato.EventReady))
	}
}

// getDeadLetter takes the first message of dlq, waiting for it, on a
// connection of its own, which it returns.
func getDeadLetter(t *testing.T, dlq, what string) (*amqp.Connection, amqp.Delivery) {
	t.Helper()
	conn := brokertest.Dial(t, brokerURL(t), "test-dead-letter-check")
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	var d amqp.Delivery
	brokertest.WaitFor(t, 30*time.Second, func() bool {
		var ok bool
		d, ok, err = ch.Get(dlq, true)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}, "%s in %s", what, dlq)
	return conn, d
}

func quarantineCase(t *testing.T, headers amqp.Table, reason string) {
	const n = 200
	keyA, keyB := testutil.Key(t, "hostile-a"), testutil.Key(t, "hostile-b")
	w := startWatched(t, "quarantine", keyA, keyB)

	brokertest.PublishHostile(t, brokerURL(t), "amq.topic", keyA, amqp.Publishing{
		Headers: headers, MessageId: "hostile", ContentType: "application/json",
		CorrelationId: "corr-1", Body: []byte(`{"id":"hostile"}`),
	})
	p := publisher(t)
	publishN(t, p, keyA, fmtIDs("a", n))
	publishN(t, p, keyB, fmtIDs("b", n))
	w.got.WaitDistinct(t, 2*n, 60*time.Second)

	conn, d := getDeadLetter(t, w.dlq, "the hostile message")
	why, _ := d.Headers[actors.HeaderReason].(string)
	if !strings.HasPrefix(why, "unparseable: ") || !strings.Contains(why, reason) {
		t.Errorf("%s = %q, want unparseable: ...%s", actors.HeaderReason, why, reason)
	}
	if raw, _ := d.Headers[broker.HeaderRawHeaders].([]byte); len(raw) == 0 {
		t.Errorf("no raw header table in %s", broker.HeaderRawHeaders)
	}
	if d.MessageId != "hostile" || d.CorrelationId != "corr-1" || d.ContentType != "application/json" ||
		string(d.Body) != `{"id":"hostile"}` {
		t.Errorf("properties or body of the copy: %+v", d)
	}
	if w.got.Count("hostile") != 0 {
		t.Error("the handler ran on the unparseable message")
	}
	w.checkNothingLost(t)
	if m, _ := brokertest.Inspect(t, conn, w.dlq); m != 0 {
		t.Errorf("%d more messages in the dead-letter queue", m)
	}
}

// Issue 17: a message whose headers are just under frame_max can be
// dead-lettered: the copy, which would not fit with hato's headers added,
// drops the original's largest headers (and says so) instead of costing
// the publishing connection at every attempt.
func TestDeadLetterOfHeadersNearFrameMax(t *testing.T) {
	key := testutil.Key(t, "near-frame-max")
	w := startWatched(t, "near-frame-max", key)

	// Its body is no envelope: it is dead-lettered as undecodable.
	brokertest.PublishHostile(t, brokerURL(t), "amq.topic", key, amqp.Publishing{
		Headers: amqp.Table{"big": strings.Repeat("x", 130_900), "small": "kept"}, MessageId: "big",
		Body: []byte(`{"id":"big"}`),
	})
	publishN(t, publisher(t), key, fmtIDs("after", 50))
	w.got.WaitDistinct(t, 50, 60*time.Second)

	_, d := getDeadLetter(t, w.dlq, "the copy")
	note, _ := d.Headers[actors.HeaderDroppedHeaders].(string)
	if !strings.Contains(note, "big") || d.Headers["small"] != "kept" || d.MessageId != "big" {
		t.Errorf("copy: note %q, small %v, id %q", note, d.Headers["small"], d.MessageId)
	}
	w.checkNothingLost(t)
}

// Over amqps the guard sits above TLS (the dialer does the handshake):
// the hostile message is quarantined there too.
func TestUnparseableHeadersAreQuarantinedOverTLS(t *testing.T) {
	u, err := amqp.ParseURI(brokerURL(t))
	if err != nil {
		t.Fatal(err)
	}
	proxy := newTLSProxy(t, net.JoinHostPort(u.Host, "5672"))
	u.Scheme, u.Host = "amqps", "127.0.0.1"
	_, port, _ := net.SplitHostPort(proxy.ln.Addr().String())
	u.Port = atoiOrFail(t, port)

	key := testutil.Key(t, "tls-hostile")
	got := testutil.NewCollector()
	svc, err := hato.New("tls-hostile", append(testutil.Options(t, u.String()),
		hato.WithTLS(&tls.Config{RootCAs: proxy.roots, MinVersion: tls.VersionTLS12}))...)
	if err != nil {
		t.Fatal(err)
	}
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		got.Add(idOf(m))
		return nil
	})
	testutil.Start(t, svc)
	dlq := svc.Routes()[0].DeadLetterQueue
	brokertest.PublishHostile(t, brokerURL(t), "amq.topic", key, amqp.Publishing{
		Headers: brokertest.NestedHeaders(40), MessageId: "hostile", Body: []byte(`{"id":"hostile"}`),
	})
	publishN(t, publisher(t), key, []string{"good"})
	got.WaitDistinct(t, 1, 30*time.Second)
	conn := brokertest.Dial(t, brokerURL(t), "test-tls-hostile-check")
	brokertest.WaitFor(t, 30*time.Second, func() bool {
		n, _ := brokertest.Inspect(t, conn, dlq)
		return n == 1
	}, "the hostile message in %s", dlq)
	if got.Count("hostile") != 0 {
		t.Error("the handler ran on the unparseable message")
	}
}
