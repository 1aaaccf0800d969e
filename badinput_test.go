//go:build integration

package hato_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/test/brokertest"
)

// The bad-input rows that need the broker's answer (see the README's Bad
// input table); the rows hato refuses up front are in validate_test.go.

// TestPublishOverMaxMessageSizeFailsAtOnce: a body over WithMaxMessageSize
// (after envelope encoding) fails at once with ErrMessageTooLarge; nothing
// is sent, the connection stays up and good messages around it arrive.
func TestPublishOverMaxMessageSizeFailsAtOnce(t *testing.T) {
	const limit = 4096
	key := testutil.Key(t, "sized")
	sup := &testutil.SupervisorEvents{}
	got := testutil.NewCollector()
	svc := newService(t, "max-size")
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		got.Add(idOf(m))
		return nil
	})
	testutil.Start(t, svc)
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
	got := testutil.NewCollector()
	svc := newService(t, "missing-exchange-consumer")
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		got.Add(idOf(m))
		return nil
	})
	testutil.Start(t, svc)
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
	got := testutil.NewCollector()
	svc := newService(t, "unaffected")
	mustSubscribe(t, svc, other, func(ctx context.Context, m *hato.Message[payload]) error { got.Add(idOf(m)); return nil })
	testutil.Start(t, svc)
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
	got := testutil.NewCollector()
	svc := newService(t, "forbidden-consumer")
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		got.Add(idOf(m))
		return nil
	})
	testutil.Start(t, svc)

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
