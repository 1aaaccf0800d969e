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
	"github.com/hato-go/hato/test/netproxy"
)

// Several broker URLs: a dead address in the list costs one failed dial;
// when the node of the connections goes silent (a network cut), the service
// reconnects to the next address and says so in Status and its events.
func TestSeveralURLsFailOver(t *testing.T) {
	url := brokerURL(t)
	p1, url1 := brokertest.Proxy(t, url)
	p2, url2 := brokertest.Proxy(t, url)
	proxies := map[string]*netproxy.Proxy{p1.Addr(): p1, p2.Addr(): p2}
	dead := "amqp://guest:s3cret@127.0.0.1:1/"

	key := testutil.Key(t, "failover")
	handled := testutil.NewCollector()
	var events testutil.SupervisorEvents
	svc := newService(t, "failover",
		hato.WithURLs(dead, url1, url2),
		hato.WithDialTimeout(2*time.Second),
		hato.WithHeartbeat(time.Second),
		hato.WithReconnectBackoff(hato.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond}),
		hato.WithSupervisorEvents(events.Add))
	if err := hato.Subscribe(svc, key, func(_ context.Context, m *hato.Message[payload]) error {
		handled.Add(idOf(m))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	testutil.Start(t, svc)

	st := status(t, svc)
	first := proxies[st.PublishNode]
	if first == nil || st.ConsumeNode != st.PublishNode {
		t.Fatalf("connected to publish=%q consume=%q, want both on one of the proxies %v", st.PublishNode, st.ConsumeNode, keys(proxies))
	}
	publishN(t, svc, key, []string{"before"})
	handled.WaitDistinct(t, 1, 10*time.Second)

	cut := time.Now()
	first.Pause()
	t.Cleanup(first.Resume)
	brokertest.WaitFor(t, 30*time.Second, func() bool {
		st, err := svc.Status(context.Background())
		return err == nil && st.Connected && st.PublishNode != "" && st.PublishNode != first.Addr()
	}, "reconnection to another node than %s", first.Addr())
	st = status(t, svc)
	if proxies[st.PublishNode] == nil || st.ConsumeNode != st.PublishNode {
		t.Fatalf("after the cut: publish=%q consume=%q", st.PublishNode, st.ConsumeNode)
	}
	publishN(t, svc, key, []string{"after"})
	handled.WaitDistinct(t, 2, 20*time.Second)

	var detail string
	for _, e := range events.Snapshot() {
		if e.Child == "connection" && e.Kind == hato.EventReady && e.Time.After(cut) {
			detail = e.Detail
		}
	}
	if !strings.Contains(detail, "publish="+st.PublishNode) || !strings.Contains(detail, "consume="+st.ConsumeNode) {
		t.Errorf("connection's EventReady after the cut has detail %q, want its node %s", detail, st.PublishNode)
	}
	for _, e := range events.Snapshot() {
		if strings.Contains(e.String(), "s3cret") {
			t.Errorf("event shows the password: %s", e)
		}
	}
}

func status(t *testing.T, svc *hato.Service) hato.ConnectionStatus {
	t.Helper()
	st, err := svc.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
