//go:build integration

package hato_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/test/brokertest"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

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
