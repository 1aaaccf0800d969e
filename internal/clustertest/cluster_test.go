//go:build cluster

package clustertest_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato/internal/clustertest"
	"github.com/hato-go/hato/internal/leak"
	"github.com/hato-go/hato/test/brokertest"
)

func TestMain(m *testing.M) { leak.VerifyTestMain(m) }

const messages = 100

// TestCluster starts one 3-node cluster and runs every cluster test on it
// in turn (starting a cluster takes about 15 s), then prints the table of
// the scenarios (see harness_test.go).
func TestCluster(t *testing.T) {
	c := clustertest.Start(t)
	defer printTable()
	t.Run("quorum queue survives leader kill", func(t *testing.T) { quorumQueueSurvivesLeaderKill(t, c) })
	c.Restore()
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) { sc.run(t, c) })
		if !sc.keepDown {
			c.Restore()
		}
	}
	t.Run("stop leaves the default broker alone", func(t *testing.T) {
		if err := c.Stop(); err != nil {
			t.Fatal(err)
		}
		if status, ok := c.Status(); ok {
			t.Fatalf("nodes still run after Stop:\n%s", status)
		}
		if err := brokertest.Ping(brokertest.BaseURL()); err != nil {
			t.Fatalf("default broker at %s unreachable after the cluster test: %v", brokertest.Redact(brokertest.BaseURL()), err)
		}
	})
}

// quorumQueueSurvivesLeaderKill is the cluster's acceptance test: three
// nodes in one cluster; a quorum queue keeps every confirmed message when its
// leader's node is killed; the node rejoins after a restart.
func quorumQueueSurvivesLeaderKill(t *testing.T, c *clustertest.Cluster) {
	if c.N() != 3 {
		t.Fatalf("cluster has %d nodes, want 3", c.N())
	}
	all := c.Names()
	slices.Sort(all)
	for i := range c.N() {
		running, err := c.RunningNodes(i)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(running, all) {
			t.Fatalf("%s sees running nodes %v, want %v", c.Name(i), running, all)
		}
	}

	const queue = "hato-cluster-qq"
	publishConfirmed(t, c.URL(0), queue)

	leader, err := c.QuorumLeader("/", queue)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("leader of %s: %s; killing it", queue, c.Name(leader))
	c.Kill(leader)

	survivor := (leader + 1) % c.N()
	got := consumeAll(t, c.URL(survivor), queue)
	for i, body := range got {
		if body != strconv.Itoa(i) {
			t.Fatalf("message %d is %q, want %q (all: %v)", i, body, strconv.Itoa(i), got)
		}
	}

	c.StartNode(leader)
	c.WaitRunning(leader)
	brokertest.WaitFor(t, 60*time.Second, func() bool {
		running, err := c.RunningNodes(survivor)
		return err == nil && slices.Equal(running, all)
	}, "%s to rejoin the cluster", c.Name(leader))
}

// publishConfirmed declares quorum queue queue through url and publishes
// messages persistent messages "0".."99" to it, each confirmed.
func publishConfirmed(t *testing.T, url, queue string) {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
		t.Fatalf("declare quorum queue: %v", err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	confirms := make([]*amqp.DeferredConfirmation, 0, messages)
	for i := range messages {
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, true, false, amqp.Publishing{
			DeliveryMode: amqp.Persistent,
			Body:         []byte(strconv.Itoa(i)),
		})
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		confirms = append(confirms, dc)
	}
	for i, dc := range confirms {
		ok, err := dc.WaitContext(ctx)
		if err != nil || !ok {
			t.Fatalf("message %d not confirmed: ack=%v err=%v", i, ok, err)
		}
	}
}

// consumeAll reads messages messages from queue through url, acking each,
// and returns their bodies in delivery order. The queue may still be electing
// a new leader, so connecting and consuming are retried.
func consumeAll(t *testing.T, url, queue string) []string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var got []string
	var lastErr error
	for len(got) < messages && time.Now().Before(deadline) {
		got, lastErr = tryConsume(url, queue, deadline, got)
	}
	if len(got) < messages {
		t.Fatalf("consumed %d of %d messages through %s; last error: %v", len(got), messages, url, lastErr)
	}
	return got
}

func tryConsume(url, queue string, deadline time.Time, got []string) ([]string, error) {
	conn, err := amqp.Dial(url)
	if err != nil {
		time.Sleep(100 * time.Millisecond) // node or queue still recovering; retry
		return got, err
	}
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	if err != nil {
		return got, err
	}
	if err := ch.Qos(messages, 0, false); err != nil {
		return got, err
	}
	deliveries, err := ch.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		time.Sleep(100 * time.Millisecond)
		return got, err
	}
	timeout := time.NewTimer(time.Until(deadline))
	defer timeout.Stop()
	for len(got) < messages {
		select {
		case d, ok := <-deliveries:
			if !ok {
				return got, fmt.Errorf("delivery channel closed after %d messages", len(got))
			}
			if err := d.Ack(false); err != nil {
				return got, err
			}
			got = append(got, string(d.Body))
		case <-timeout.C:
			return got, fmt.Errorf("timed out after %d messages", len(got))
		}
	}
	return got, nil
}
