//go:build integration

package integration_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/hato-go/hato"
	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/test/brokertest"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func TestForwardingRoundTrip(t *testing.T) {
	in, out := testutil.Key(t, "topic"), testutil.Key(t, "response")
	fwd := newService(t, "forwarder")
	mustSubscribe(t, fwd, in, func(ctx context.Context, m *hato.Message[any]) error {
		return fwd.Publish(ctx, m.Data, out)
	})
	got := testutil.NewCollector()
	sink := newService(t, "sink")
	var sample *hato.Message[payload]
	mustSubscribe(t, sink, out, func(ctx context.Context, m *hato.Message[payload]) error {
		if m.Data.ID == "m-0" {
			sample = m
		}
		got.Add(idOf(m))
		return nil
	})
	testutil.Start(t, fwd)
	testutil.Start(t, sink)

	ids := fmtIDs("m", 200)
	publishN(t, publisher(t), in, ids)
	got.WaitDistinct(t, len(ids), 20*time.Second)
	if missing := got.Missing(ids); len(missing) > 0 {
		t.Fatalf("missing %d messages: %v", len(missing), missing[:min(5, len(missing))])
	}
	brokertest.WaitFor(t, 5*time.Second, func() bool { return sample != nil }, "sample")
	if sample.Service.Name != "forwarder" || sample.Service.UUID != fwd.UUID() {
		t.Errorf("sender = %+v, want the forwarder", sample.Service)
	}
	if sample.Metadata.Topic != out || sample.RoutingKey != out || sample.DeliveredRoutingKey != out {
		t.Errorf("topic %q, routing key %q, delivered %q; want %q", sample.Metadata.Topic, sample.RoutingKey, sample.DeliveredRoutingKey, out)
	}
	if !strings.HasPrefix(sample.Metadata.MessageUUID, fwd.UUID()+".") {
		t.Errorf("message uuid %q does not start with the sender's uuid", sample.Metadata.MessageUUID)
	}
	if sample.Metadata.ProtocolVersion != "tomodachi-json-base--1.0.0" {
		t.Errorf("protocol %q", sample.Metadata.ProtocolVersion)
	}
	if sample.Properties.DeliveryMode != 2 || sample.Properties.MessageID != sample.Metadata.MessageUUID {
		t.Errorf("properties %+v: want persistent with the message uuid as id", sample.Properties)
	}
}

func TestWildcardRoutes(t *testing.T) {
	base := testutil.Key(t, "w")
	star, hash := testutil.NewCollector(), testutil.NewCollector()
	svc := newService(t, "wild")
	mustSubscribe(t, svc, base+".*.x", func(ctx context.Context, m *hato.Message[payload]) error {
		star.Add(m.DeliveredRoutingKey)
		return nil
	})
	mustSubscribe(t, svc, base+".#", func(ctx context.Context, m *hato.Message[payload]) error {
		hash.Add(m.DeliveredRoutingKey)
		if m.RoutingKey != base+".#" {
			t.Errorf("subscribed pattern %q, want %q", m.RoutingKey, base+".#")
		}
		return nil
	})
	testutil.Start(t, svc)
	p := publisher(t)
	keys := []string{base + ".a.x", base + ".a.b.x", base + ".z", base + ".b.x"}
	for _, k := range keys {
		publishN(t, p, k, []string{k})
	}
	hash.WaitDistinct(t, len(keys), 10*time.Second)
	star.WaitDistinct(t, 2, 10*time.Second)
	for _, k := range []string{base + ".a.x", base + ".b.x"} {
		if star.Count(k) != 1 {
			t.Errorf("star route got %q %d times, want 1", k, star.Count(k))
		}
	}
	// The star route's queue is empty and it saw nothing else: every key
	// was delivered to the hash route, so anything for the star route has
	// arrived by now too.
	if star.Distinct() != 2 {
		t.Errorf("star route got %v, want only the two one-word matches", star.Keys())
	}
}

func TestCompetingRoutesShareTheWork(t *testing.T) {
	key := testutil.Key(t, "competing")
	all := testutil.NewCollector()
	var perInstance [2]*testutil.Collector
	var services [2]*hato.Service
	for i := range services {
		c := testutil.NewCollector()
		perInstance[i] = c
		s := newService(t, "competitor")
		mustSubscribe(t, s, key, func(ctx context.Context, m *hato.Message[payload]) error {
			c.Add(idOf(m))
			all.Add(idOf(m))
			return nil
		})
		services[i] = s
		testutil.Start(t, s)
	}
	q := routeQueue(t, services[0], 0)
	if q != routeQueue(t, services[1], 0) {
		t.Fatalf("competing routes on one key must share a queue: %q vs %q", q, routeQueue(t, services[1], 0))
	}
	conn := brokertest.Dial(t, brokerURL(t), "test-inspector")
	brokertest.WaitFor(t, 10*time.Second, func() bool {
		_, consumers := brokertest.Inspect(t, conn, q)
		return consumers == 2
	}, "two consumers on %s", q)

	ids := fmtIDs("c", 400)
	publishN(t, publisher(t), key, ids)
	all.WaitDistinct(t, len(ids), 20*time.Second)
	if all.Total() != len(ids) {
		t.Errorf("handled %d times for %d messages: competing consumers must handle each once", all.Total(), len(ids))
	}
	for i, c := range perInstance {
		if c.Total() == 0 {
			t.Errorf("instance %d handled nothing: the work was not shared", i)
		}
	}
}

func TestNonCompetingInstancesEachGetEverything(t *testing.T) {
	key := testutil.Key(t, "broadcast")
	var got [2]*testutil.Collector
	var queues [2]string
	for i := range got {
		c := testutil.NewCollector()
		got[i] = c
		s := newService(t, "listener")
		mustSubscribe(t, s, key, func(ctx context.Context, m *hato.Message[payload]) error {
			c.Add(idOf(m))
			return nil
		}, hato.NotCompeting(), hato.HandlerName("on_broadcast"))
		testutil.Start(t, s)
		queues[i] = routeQueue(t, s, 0)
	}
	if queues[0] == queues[1] {
		t.Fatalf("non-competing instances share queue %q", queues[0])
	}
	ids := fmtIDs("b", 100)
	publishN(t, publisher(t), key, ids)
	for i, c := range got {
		c.WaitDistinct(t, len(ids), 20*time.Second)
		if c.Total() != len(ids) {
			t.Errorf("instance %d handled %d, want each of %d once", i, c.Total(), len(ids))
		}
	}
}

func TestRoutingKeyAndQueueNamePrefixes(t *testing.T) {
	key := testutil.Key(t, "prefixed")
	const rkPrefix, qPrefix = "env.test.", "qp-"
	got := testutil.NewCollector()
	var sample *hato.Message[payload]
	svc := newService(t, "prefixed", hato.RoutingKeyPrefix(rkPrefix), hato.WithQueueNamePrefix(qPrefix))
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		sample = m
		got.Add(idOf(m))
		return nil
	})
	testutil.Start(t, svc)
	r := svc.Routes()[0]
	if !strings.HasPrefix(r.Queue, qPrefix) || len(r.Queue) != len(qPrefix)+64 {
		t.Errorf("queue %q: want %q + sha256 hex", r.Queue, qPrefix)
	}
	if r.BindingKey != rkPrefix+key {
		t.Errorf("binding key %q, want %q", r.BindingKey, rkPrefix+key)
	}

	p := publisher(t, hato.RoutingKeyPrefix(rkPrefix))
	publishN(t, p, key, []string{"with-service-prefix"})
	// Per-publish override: without the prefix the key matches no queue
	// (a mandatory publish says so); spelling the prefix out reaches it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := p.Publish(ctx, map[string]any{"id": "without-prefix"}, key, hato.RoutingKeyPrefix(""), hato.Mandatory())
	if !errorsIs(err, hato.ErrUnroutable) {
		t.Errorf("publish without the prefix: %v, want ErrUnroutable", err)
	}
	publishN(t, p, rkPrefix+key, []string{"unprefixed-publisher"}, hato.RoutingKeyPrefix(""))
	got.WaitDistinct(t, 2, 10*time.Second)
	if got.Count("with-service-prefix") != 1 || got.Count("unprefixed-publisher") != 1 {
		t.Errorf("got %v", got.Keys())
	}
	if sample.DeliveredRoutingKey != key || sample.Metadata.Topic == "" {
		t.Errorf("delivered key %q (want prefix stripped: %q), topic %q", sample.DeliveredRoutingKey, key, sample.Metadata.Topic)
	}
}

func TestMandatoryUnroutablePublishFails(t *testing.T) {
	p := publisher(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := p.Publish(ctx, "x", testutil.Key(t, "nobody-listens"), hato.Mandatory())
	if !errorsIs(err, hato.ErrUnroutable) {
		t.Fatalf("mandatory publish to an unbound key: %v, want ErrUnroutable", err)
	}
	// Not mandatory: the broker drops it, as tomodachi expects.
	if err := p.Publish(ctx, "x", testutil.Key(t, "nobody-listens")); err != nil {
		t.Fatalf("plain publish to an unbound key: %v", err)
	}
}

func TestPublishToMissingExchangeFailsAndPublishingRecovers(t *testing.T) {
	key := testutil.Key(t, "after-missing-exchange")
	got := testutil.NewCollector()
	svc := newService(t, "recovering")
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		got.Add(idOf(m))
		return nil
	})
	testutil.Start(t, svc)
	p := publisher(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := p.Publish(ctx, "x", "k", hato.Exchange("hato.no.such.exchange"))
	if !errorsIs(err, hato.ErrExchangeNotFound) {
		t.Fatalf("publish to a missing exchange: %v, want ErrExchangeNotFound", err)
	}
	publishN(t, p, key, []string{"after"})
	got.WaitDistinct(t, 1, 10*time.Second)
}

func TestDeclaredQueuesCarryTomodachisArguments(t *testing.T) {
	key := testutil.Key(t, "args")
	svc := newService(t, "args")
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[any]) error { return nil })
	testutil.Start(t, svc)
	r := svc.Routes()[0]

	q, ok, err := brokertest.FindQueue(brokerVhost(t), r.Queue)
	if err != nil || !ok {
		t.Fatalf("queue %s: found=%v err=%v", r.Queue, ok, err)
	}
	if !q.Durable || q.AutoDelete || q.Exclusive {
		t.Errorf("queue %s durable=%v auto_delete=%v exclusive=%v; tomodachi declares durable, not auto-delete, not exclusive",
			q.Name, q.Durable, q.AutoDelete, q.Exclusive)
	}
	if len(q.Arguments) != 1 || toInt(q.Arguments["x-expires"]) != 86400000 {
		t.Errorf("queue arguments %v, want exactly x-expires=86400000", q.Arguments)
	}

	// The proof that matters: tomodachi's own declaration of that queue
	// (x-expires as a plain int, as aioamqp sends it) is accepted by the
	// broker, so a tomodachi node and a hato node can share it.
	conn := brokertest.Dial(t, brokerURL(t), "test-tomodachi-like")
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if _, err := ch.QueueDeclare(r.Queue, true, false, false, false, amqp.Table{"x-expires": int32(86400000)}); err != nil {
		t.Fatalf("tomodachi-style declaration of %s refused: %v", r.Queue, err)
	}

	dlq, ok, err := brokertest.FindQueue(brokerVhost(t), r.DeadLetterQueue)
	if err != nil || !ok {
		t.Fatalf("dead-letter queue %s: found=%v err=%v", r.DeadLetterQueue, ok, err)
	}
	if !dlq.Durable || len(dlq.Arguments) != 0 {
		t.Errorf("dead-letter queue durable=%v arguments=%v, want durable without arguments (it must not expire)", dlq.Durable, dlq.Arguments)
	}
}

func TestQueueTTLZeroDeclaresNoArguments(t *testing.T) {
	key := testutil.Key(t, "no-ttl")
	svc := newService(t, "no-ttl", hato.WithQueueTTL(0))
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[any]) error { return nil })
	testutil.Start(t, svc)
	q, ok, err := brokertest.FindQueue(brokerVhost(t), svc.Routes()[0].Queue)
	if err != nil || !ok {
		t.Fatalf("queue: found=%v err=%v", ok, err)
	}
	if len(q.Arguments) != 0 {
		t.Errorf("arguments %v, want none with queue TTL 0", q.Arguments)
	}
}

func TestCustomExchangeIsDeclaredAsTomodachiDeclaresIt(t *testing.T) {
	key := testutil.Key(t, "custom")
	exchange := "hato.test." + key
	got := testutil.NewCollector()
	svc := newService(t, "custom-exchange")
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		if m.Exchange != exchange {
			t.Errorf("message came through %q, want %q", m.Exchange, exchange)
		}
		got.Add(idOf(m))
		return nil
	}, hato.Exchange(exchange))
	testutil.Start(t, svc)

	exchanges, err := brokertest.ListExchanges(brokerVhost(t))
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range exchanges {
		if e.Name == exchange {
			found = true
			if e.Type != "topic" || !e.Durable || e.AutoDelete || e.Internal {
				t.Errorf("exchange %+v: want topic, durable, not auto-delete, not internal", e)
			}
		}
	}
	if !found {
		t.Fatalf("exchange %s not declared", exchange)
	}
	// Declaring amq.topic is never attempted; a tomodachi-style redeclare of
	// the custom exchange is accepted.
	conn := brokertest.Dial(t, brokerURL(t), "test-exchange-redeclare")
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if err := ch.ExchangeDeclare(exchange, "topic", true, false, false, false, nil); err != nil {
		t.Fatalf("tomodachi-style redeclare refused: %v", err)
	}

	publishN(t, publisher(t), key, []string{"via-custom"}, hato.Exchange(exchange))
	got.WaitDistinct(t, 1, 10*time.Second)
}

func TestConflictingQueueDeclarationFailsStart(t *testing.T) {
	key := testutil.Key(t, "conflict")
	// Someone declared the queue with other arguments (e.g. another TTL).
	probe := newService(t, "probe")
	mustSubscribe(t, probe, key, func(ctx context.Context, m *hato.Message[any]) error { return nil })
	queue := probe.Routes()[0].Queue
	conn := brokertest.Dial(t, brokerURL(t), "test-conflict")
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, amqp.Table{"x-expires": int32(1000)}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if ch, err := conn.Channel(); err == nil {
			_, _ = ch.QueueDelete(queue, false, false, false)
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	err = probe.Start(ctx)
	if err == nil {
		_ = probe.Stop(context.Background())
		t.Fatal("Start succeeded although the queue exists with other arguments")
	}
	if ctx.Err() != nil {
		t.Fatalf("Start waited for its deadline instead of failing fast: %v", err)
	}
	if !errorsIs(err, hato.ErrPreconditionFailed) {
		t.Fatalf("Start: %v, want ErrPreconditionFailed", err)
	}
}

func toInt(v any) int64 {
	switch n := v.(type) {
	case int:
		return int64(n)
	case int64:
		return n
	case float64:
		return int64(n)
	case int32:
		return int64(n)
	}
	return -1
}

// Dead letters belong to the route, not to the instance: two starts of a
// service with a non-competing route (each with its own uuid, so its own
// queue) share one dead-letter queue, and leave no other behind.
func TestNotCompetingRoutesShareOneDeadLetterQueueAcrossStarts(t *testing.T) {
	key := testutil.Key(t, "nc-dlq")
	var dlqs, queues []string
	for _, uuid := range []string{"00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"} {
		evs := &testutil.DeliveryEvents{}
		svc := newService(t, "nc-dlq", hato.WithUUID(uuid), hato.WithDeliveryEvents(evs.Add))
		mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
			return hato.DeadLetter(errors.New("to the route's dead-letter queue"))
		}, hato.NotCompeting(), hato.HandlerName("on_event"))
		testutil.Start(t, svc)
		r := svc.Routes()[0]
		dlqs, queues = append(dlqs, r.DeadLetterQueue), append(queues, r.Queue)
		publishN(t, publisher(t), key, []string{uuid})
		brokertest.WaitFor(t, 30*time.Second, func() bool { return evs.Len() == 1 }, "message dead-lettered by %s", uuid)
		testutil.Stop(t, svc)
	}
	if queues[0] == queues[1] {
		t.Fatalf("both instances consumed from %s; the test needs two instance queues", queues[0])
	}
	if dlqs[0] != dlqs[1] {
		t.Fatalf("instances dead-letter to %s and %s, want one queue", dlqs[0], dlqs[1])
	}
	for _, q := range queues {
		if _, ok, err := brokertest.FindQueue(brokerVhost(t), q+".dlq"); err != nil || ok {
			t.Errorf("per-instance dead-letter queue %s.dlq: exists=%v err=%v", q, ok, err)
		}
	}
	q, ok, err := brokertest.FindQueue(brokerVhost(t), dlqs[0])
	if err != nil || !ok {
		t.Fatalf("dead-letter queue %s: found=%v err=%v", dlqs[0], ok, err)
	}
	if q.Messages != 2 {
		t.Errorf("dead-letter queue %s holds %d messages, want both instances' 2", q.Name, q.Messages)
	}
	if len(q.Arguments) != 0 {
		t.Errorf("dead-letter queue arguments %v, want none (it must not expire)", q.Arguments)
	}
}

// consumingConnections lists the names of the open consuming connections
// whose names start with prefix+"-sub", sorted.
func consumingConnections(t *testing.T, prefix string) []string {
	t.Helper()
	conns, err := brokertest.ListConnections()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range conns {
		if strings.HasPrefix(c.Name, prefix+"-sub") && c.State == "running" {
			names = append(names, c.Name)
		}
	}
	slices.Sort(names)
	return names
}

// poolNamesOK checks that names are prefix-sub, prefix-sub-2, … with no
// gap, and at least min of them.
func poolNamesOK(prefix string, names []string, least int) bool {
	if len(names) < least {
		return false
	}
	want := make([]string, len(names))
	for i := range want {
		want[i] = prefix + "-sub"
		if i > 0 {
			want[i] += fmt.Sprintf("-%d", i+1)
		}
	}
	slices.Sort(want)
	return slices.Equal(names, want)
}

// A service with more routes than one consuming connection takes channels
// spreads them over several consuming connections: every route consumes,
// and losing one of the connections brings every route back without losing
// a message.
func TestRoutesSpreadOverConsumingConnections(t *testing.T) {
	const routes, perConn = 10, 3
	prefix := "spread-" + broker.RandomID()[:8]
	got := testutil.NewCollector()
	svc := newService(t, "spread", hato.WithConnectionName(prefix), hato.WithChannelsPerConnection(perConn))
	keys := make([]string, routes)
	for i := range keys {
		keys[i] = testutil.Key(t, fmt.Sprintf("r%d", i))
		key := keys[i]
		mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
			got.Add(m.Data.ID)
			return nil
		}, hato.HandlerName(fmt.Sprintf("route_%d", i)))
	}
	testutil.Start(t, svc)
	// ceil(10/3) = 4 connections at least (a dead-letter queue declaration
	// holds a channel for a while, so there may be one more).
	var names []string
	brokertest.WaitFor(t, 20*time.Second, func() bool {
		names = consumingConnections(t, prefix)
		return poolNamesOK(prefix, names, (routes+perConn-1)/perConn)
	}, "consuming connections %s-sub, %s-sub-2, … (have %v)", prefix, prefix, &names)
	t.Logf("consuming connections: %v", names)

	pub := publisher(t)
	var round1 []string
	for i, key := range keys {
		id := fmt.Sprintf("before-%d", i)
		round1 = append(round1, id)
		publishN(t, pub, key, []string{id})
	}
	got.WaitDistinct(t, routes, 20*time.Second)

	victim := prefix + "-sub-2"
	n, err := brokertest.CloseConnections(func(c brokertest.Connection) bool { return c.Name == victim }, "hato many routes test")
	if err != nil || n != 1 {
		t.Fatalf("closing %s: %d closed, %v", victim, n, err)
	}
	var round2 []string
	for i, key := range keys {
		id := fmt.Sprintf("after-%d", i)
		round2 = append(round2, id)
		publishN(t, pub, key, []string{id})
	}
	got.WaitDistinct(t, 2*routes, 30*time.Second)
	if missing := got.Missing(append(round1, round2...)); len(missing) > 0 {
		t.Fatalf("never handled: %v", missing)
	}
	brokertest.WaitFor(t, 20*time.Second, func() bool {
		names = consumingConnections(t, prefix)
		return poolNamesOK(prefix, names, (routes+perConn-1)/perConn)
	}, "consuming connections again after the loss (have %v)", &names)
}

// When the broker refuses one more consuming connection (here: the vhost's
// connection limit), the routes that need it wait while the service retries
// it, and consume once the broker takes it.
func TestConsumingConnectionRefusedIsRetried(t *testing.T) {
	const routes, perConn = 6, 3
	vhost, url := brokertest.NewVhost(t)
	if _, err := brokertest.Rabbitmqctl("set_vhost_limits", "-p", vhost, `{"max-connections": 2}`); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.WarnLevel)
	fast := hato.Backoff{Initial: 50 * time.Millisecond, Max: 200 * time.Millisecond, Multiplier: 2}
	svc, err := hato.New("refused", append(testutil.Options(t, url), hato.WithLogger(zap.New(core)),
		hato.WithChannelsPerConnection(perConn), hato.WithReconnectBackoff(fast))...)
	if err != nil {
		t.Fatal(err)
	}
	got := testutil.NewCollector()
	keys := make([]string, routes)
	for i := range keys {
		keys[i] = testutil.Key(t, fmt.Sprintf("r%d", i))
		mustSubscribe(t, svc, keys[i], func(ctx context.Context, m *hato.Message[payload]) error {
			got.Add(m.Data.ID)
			return nil
		}, hato.HandlerName(fmt.Sprintf("route_%d", i)))
	}
	started := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		started <- svc.Start(ctx)
	}()
	t.Cleanup(func() { testutil.Stop(t, svc) })
	brokertest.WaitFor(t, 20*time.Second, func() bool {
		return logs.FilterMessage("opening one more consuming connection failed").Len() >= 2
	}, "the refused consuming connection retried")
	select {
	case err := <-started:
		t.Fatalf("started (%v) while routes had no channel", err)
	default:
	}
	if _, err := brokertest.Rabbitmqctl("clear_vhost_limits", "-p", vhost); err != nil {
		t.Fatal(err)
	}
	if err := <-started; err != nil {
		t.Fatalf("start: %v", err)
	}
	pub, err := hato.New("refused-pub", testutil.Options(t, url)...)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Start(t, pub)
	for i, key := range keys {
		publishN(t, pub, key, []string{fmt.Sprintf("m-%d", i)})
	}
	got.WaitDistinct(t, routes, 20*time.Second)
}

// orderActor is a user's actor in an embedding actor system: it receives
// decoded messages, publishes onward, and replies Ack, or an error once.
type orderActor struct {
	svc     func() *hato.Service
	out     string
	got     *testutil.Collector
	failed  *atomic.Bool
	started *atomic.Int32
}

func (a *orderActor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		a.started.Add(1)
	case *hato.Message[payload]:
		if msg.Data.ID == "a-7" && a.failed.CompareAndSwap(false, true) {
			ctx.Respond(errors.New("transient failure"))
			return
		}
		if err := a.svc().Publish(msg.Context(), msg.Data, a.out); err != nil {
			ctx.Respond(err)
			return
		}
		a.got.Add(msg.Data.ID)
		ctx.Respond(hato.Ack{})
	}
}

func TestActorRouteInAnEmbeddingActorSystem(t *testing.T) {
	in, out := testutil.Key(t, "to-actor"), testutil.Key(t, "from-actor")
	sys := actor.NewActorSystem()
	defer sys.Shutdown()

	var svc *hato.Service
	got, forwarded := testutil.NewCollector(), testutil.NewCollector()
	a := &orderActor{svc: func() *hato.Service { return svc }, out: out, got: got, failed: &atomic.Bool{}, started: &atomic.Int32{}}
	pid := sys.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return a }))

	svc = newService(t, "embedded", hato.WithActorSystem(sys),
		hato.FailureHandling(hato.FailurePolicy{MaxAttempts: 3}))
	if err := hato.SubscribeActor[payload](svc, in, pid, hato.ActorTimeout(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	sink := newService(t, "actor-sink")
	mustSubscribe(t, sink, out, func(ctx context.Context, m *hato.Message[payload]) error {
		forwarded.Add(idOf(m))
		return nil
	})
	testutil.Start(t, svc)
	testutil.Start(t, sink)
	if svc.ActorSystem() != sys {
		t.Fatal("service did not run in the given actor system")
	}

	ids := fmtIDs("a", 50)
	publishN(t, publisher(t), in, ids)
	got.WaitDistinct(t, len(ids), 20*time.Second)
	forwarded.WaitDistinct(t, len(ids), 20*time.Second)
	if !a.failed.Load() {
		t.Error("the actor's error reply never happened")
	}
	if got.Count("a-7") != 1 {
		t.Errorf("a-7 handled %d times after one error reply, want a retry that succeeds once", got.Count("a-7"))
	}

	// Stopping the service leaves the embedding system and its actors alive.
	testutil.Stop(t, svc)
	res, err := sys.Root.RequestFuture(pid, &actor.Touch{}, time.Second).Result()
	if err != nil || res == nil {
		t.Fatalf("user actor unreachable after the service stopped: %v", err)
	}
	brokertest.WaitFor(t, time.Second, func() bool { return a.started.Load() == 1 }, "actor untouched")
}

func TestActorRouteTimesOutAndRetries(t *testing.T) {
	in := testutil.Key(t, "slow-actor")
	sys := actor.NewActorSystem()
	defer sys.Shutdown()
	var calls atomic.Int32
	pid := sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if _, ok := ctx.Message().(*hato.Message[payload]); ok {
			if calls.Add(1) == 1 {
				return // never replies the first time
			}
			ctx.Respond(hato.Ack{})
		}
	}))
	svc := newService(t, "slow-actor", hato.WithActorSystem(sys))
	if err := hato.SubscribeActor[payload](svc, in, pid, hato.ActorTimeout(200*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	testutil.Start(t, svc)
	publishN(t, publisher(t), in, []string{"x"})
	brokertest.WaitFor(t, 10*time.Second, func() bool { return calls.Load() == 2 }, "the retry after the timeout")
	conn := brokertest.Dial(t, brokerURL(t), "test-actor-timeout")
	brokertest.WaitFor(t, 10*time.Second, func() bool {
		n, _ := brokertest.Inspect(t, conn, svc.Routes()[0].Queue)
		return n == 0
	}, "queue empty")
}

// With Concurrency 1 a message waiting for its in-process retry keeps the
// route's only slot: the next message runs after it, not in between.
func TestConcurrencyOneKeepsOrderAcrossRetries(t *testing.T) {
	key := testutil.Key(t, "ordered-retry")
	var mu sync.Mutex
	var seen []string
	var failed atomic.Bool
	svc := newService(t, "ordered-retry", hato.FailureHandling(hato.FailurePolicy{
		Backoff: hato.Backoff{Initial: 500 * time.Millisecond, Max: 500 * time.Millisecond, Multiplier: 1},
	}))
	ids := fmtIDs("r", 3)
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		mu.Lock()
		seen = append(seen, idOf(m))
		mu.Unlock()
		if idOf(m) == ids[0] && failed.CompareAndSwap(false, true) {
			return errors.New("transient")
		}
		return nil
	})
	testutil.Start(t, svc)
	publishN(t, publisher(t), key, ids)
	brokertest.WaitFor(t, 20*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == 4 }, "all handled")
	mu.Lock()
	defer mu.Unlock()
	want := strings.Join([]string{ids[0], ids[0], ids[1], ids[2]}, ",")
	if got := strings.Join(seen, ","); got != want {
		t.Fatalf("handled in order %s, want %s: the retry wait gave the slot away", got, want)
	}
}

// A handler that ignores its context outlives its actor's incarnation. The
// next incarnation must not run a handler beside it: with Concurrency 1 the
// redelivered message is handled once at a time, never twice at once.
func TestConcurrencyOneHoldsAcrossRestarts(t *testing.T) {
	key := testutil.Key(t, "ordered-restart")
	ev := &testutil.SupervisorEvents{}
	var running, maxRunning, calls atomic.Int32
	release := make(chan struct{})
	second := make(chan struct{}, 1)
	svc := newService(t, "ordered-restart", fastSupervision, hato.WithSupervisorEvents(ev.Add))
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			old := maxRunning.Load()
			if n <= old || maxRunning.CompareAndSwap(old, n) {
				break
			}
		}
		if calls.Add(1) > 1 {
			second <- struct{}{}
			return nil
		}
		<-release // ignores ctx
		return nil
	})
	testutil.Start(t, svc)
	publishN(t, publisher(t), key, []string{"x"})
	brokertest.WaitFor(t, 10*time.Second, func() bool { return calls.Load() == 1 }, "the first handler running")

	svc.ActorSystem().Root.Stop(svc.Routes()[0].Actor)
	brokertest.WaitFor(t, 10*time.Second, func() bool { return ev.Count(hato.EventRespawned) == 1 }, "respawn")
	conn := brokertest.Dial(t, brokerURL(t), "test-ordered-restart")
	brokertest.WaitFor(t, 10*time.Second, func() bool {
		ready, consumers := brokertest.Inspect(t, conn, svc.Routes()[0].Queue)
		return ready == 0 && consumers == 1
	}, "the redelivery held by the new incarnation")
	select {
	case <-second: // the bug: handled again while the first still runs
	case <-time.After(time.Second):
	}
	close(release)
	brokertest.WaitFor(t, 10*time.Second, func() bool { return calls.Load() == 2 }, "the redelivery handled")
	if m := maxRunning.Load(); m != 1 {
		t.Fatalf("%d handlers of a Concurrency(1) route ran at once across a restart", m)
	}
}

type ctxKey struct{}

func TestMiddlewareOrderValuesSkipAndErrors(t *testing.T) {
	key := testutil.Key(t, "mw")
	var mu sync.Mutex
	var trace []string
	record := func(s string) {
		mu.Lock()
		trace = append(trace, s)
		mu.Unlock()
	}
	outer := func(next hato.HandlerFunc) hato.HandlerFunc {
		return func(ctx context.Context, m *hato.Message[any]) error {
			record("outer-before")
			err := next(context.WithValue(ctx, ctxKey{}, "from-outer"), m)
			record("outer-after")
			return err
		}
	}
	inner := func(next hato.HandlerFunc) hato.HandlerFunc {
		return func(ctx context.Context, m *hato.Message[any]) error {
			p := m.Data.(payload) // middleware sees the decoded, typed payload
			if p.ID == "skip" {
				record("inner-skip")
				return nil
			}
			record("inner-before")
			err := next(ctx, m)
			if errors.Is(err, errHandled) {
				record("inner-handled-error")
				return nil
			}
			return err
		}
	}
	got := testutil.NewCollector()
	svc := newService(t, "mw", hato.WithMiddleware(outer, inner))
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		record("handler:" + m.Data.ID + ":" + ctx.Value(ctxKey{}).(string))
		got.Add(m.Data.ID)
		if m.Data.ID == "fails" {
			return errHandled
		}
		return nil
	})
	testutil.Start(t, svc)
	p := publisher(t)
	publishN(t, p, key, []string{"a"})
	got.WaitDistinct(t, 1, 10*time.Second)
	publishN(t, p, key, []string{"skip", "fails"})
	got.WaitDistinct(t, 2, 10*time.Second)

	conn := brokertest.Dial(t, brokerURL(t), "test-mw")
	brokertest.WaitFor(t, 10*time.Second, func() bool {
		n, _ := brokertest.Inspect(t, conn, svc.Routes()[0].Queue)
		mu.Lock()
		defer mu.Unlock()
		return n == 0 && len(trace) == 12
	}, "all three messages handled and acked")
	want := []string{
		"outer-before", "inner-before", "handler:a:from-outer", "outer-after",
		"outer-before", "inner-skip", "outer-after",
		"outer-before", "inner-before", "handler:fails:from-outer", "inner-handled-error", "outer-after",
	}
	mu.Lock()
	defer mu.Unlock()
	for i := range want {
		if trace[i] != want[i] {
			t.Fatalf("trace:\n got %v\nwant %v", trace, want)
		}
	}
	if got.Count("fails") != 1 {
		t.Errorf("an error the middleware handled must not be retried: handled %d times", got.Count("fails"))
	}
}

var errHandled = errors.New("handled by middleware")
