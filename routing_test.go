//go:build integration

package hato_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/test/brokertest"
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
