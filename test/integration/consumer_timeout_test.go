//go:build cluster && integration

package integration_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/internal/clustertest"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/test/brokertest"
)

// Issue 17 (2): on a RabbitMQ node whose consumer_timeout is 2 s, one
// message whose handler takes 5 s sits before 20 ordinary ones
// (Concurrency 1). The slow one must end in the dead-letter queue and the 20
// must be handled, whether the handler honours its context (the handler
// deadline ends it) or ignores it (each 406 channel close while it runs
// counts against it, up to MaxRedeliveries). Before the fix none of the 20
// was handled within 90 s and the slow one ran again and again.
//
// The node is a throw-away one of scripts/cluster.sh (one node, its own
// ports and directory); the default broker's settings are not touched.
func TestConsumerTimeoutSlowHandler(t *testing.T) {
	for k, v := range map[string]string{
		clustertest.EnvDir:       t.TempDir() + "/node",
		"HATO_CLUSTER_NODES":     "1",
		"HATO_CLUSTER_NAME":      "hato-ct",
		"HATO_CLUSTER_PORT_BASE": "5694",
		"HATO_CLUSTER_DIST_BASE": "25694",
		"HATO_CLUSTER_CTL_PORTS": "35730-35739",
	} {
		t.Setenv(k, v)
	}
	c := clustertest.Start(t)
	// Read by RabbitMQ when a channel opens. The channel checks the timeout
	// on its tick, every minute by default: every second here.
	for _, env := range []string{"consumer_timeout, 2000", "channel_tick_interval, 1000"} {
		if out, err := c.Ctl(0, "eval", "application:set_env(rabbit, "+env+")."); err != nil {
			t.Fatalf("set %s: %v\n%s", env, err, out)
		}
	}
	url := c.URL(0)
	for _, tc := range []struct {
		name string
		opts []hato.RouteOption
		slow func(ctx context.Context) error
	}{
		{"deadline", []hato.RouteOption{hato.HandlerTimeout(time.Second)}, func(ctx context.Context) error {
			select {
			case <-time.After(5 * time.Second):
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}},
		{"ignores-context", nil, func(context.Context) error {
			time.Sleep(5 * time.Second)
			return nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { slowBehindOrdinary(t, url, tc.opts, tc.slow) })
	}
}

func slowBehindOrdinary(t *testing.T, url string, opts []hato.RouteOption, slow func(context.Context) error) {
	var mu sync.Mutex
	handled, slowRuns := map[string]int{}, 0
	var dead []error
	svc, err := hato.New("ct-"+t.Name(), append(testutil.Options(t, url),
		hato.FailureHandling(hato.FailurePolicy{MaxAttempts: 2, MaxRedeliveries: 2}),
		hato.WithDeliveryEvents(func(e hato.DeliveryEvent) {
			if e.Action == hato.ActionDeadLetter {
				mu.Lock()
				dead = append(dead, e.Err)
				mu.Unlock()
			}
		}))...)
	if err != nil {
		t.Fatal(err)
	}
	key := "ct." + brokertest.UniqueName("", t.Name())
	err = hato.Subscribe(svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		if m.Data.ID == "slow" {
			mu.Lock()
			slowRuns++
			mu.Unlock()
			return slow(ctx)
		}
		mu.Lock()
		handled[m.Data.ID]++
		mu.Unlock()
		return nil
	}, append(opts, hato.Concurrency(1))...)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Start(t, svc)
	pub, err := hato.New("ct-pub", testutil.Options(t, url)...)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Start(t, pub)
	publishN(t, pub, key, append([]string{"slow"}, fmtIDs("m", 20)...))
	brokertest.WaitFor(t, 90*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(handled) == 20 && len(dead) == 1
	}, "the 20 ordinary messages handled and the slow one dead-lettered")
	mu.Lock()
	defer mu.Unlock()
	t.Logf("ordinary handled %d (%d runs), slow ran %d times, dead-lettered %v", len(handled), sum(handled), slowRuns, dead)
}

func sum(m map[string]int) (n int) {
	for _, v := range m {
		n += v
	}
	return n
}
