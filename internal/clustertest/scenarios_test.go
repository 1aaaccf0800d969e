//go:build cluster

package clustertest_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/internal/clustertest"
	"github.com/hato-go/hato/internal/netproxy"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/test/brokertest"
)

// Message counts and publish rates of the scenarios: modest, so that the
// suite fits in a few minutes under -race, with load running through each
// fault.
const (
	n    = 3000
	rate = 500 // publishes per second
)

// scenarios run in this order on one cluster (TestCluster); the cluster is
// restored (every node running and clustered) after each, unless keepDown.
var scenarios = []struct {
	name     string
	run      func(*testing.T, *clustertest.Cluster)
	keepDown bool // the next scenario starts the node this one killed
}{
	{"kill -9 the node of hato's connections", scenarioKillConnectionNode, true},
	{"killed node restarts and rejoins", scenarioNodeRejoins, false},
	{"kill -9 the quorum leader's node", scenarioKillLeader, false},
	{"stop a follower", scenarioStopFollower, false},
	{"rolling restart of all nodes", scenarioRollingRestart, false},
	{"network cut between hato and its node", scenarioNetworkCut, false},
	{"classic queue, home node down", scenarioClassicHomeNodeDown, false},
	{"non-competing routes on two hato nodes", scenarioNonCompeting, false},
	{"hato processes share a queue", scenarioHatoProcesses, false},
}

// 1. The node holding both of hato's connections (and, declared through
// them, the quorum queue's leader) is killed under load: hato reconnects to
// a surviving node, re-declares, resends what was unconfirmed.
func scenarioKillConnectionNode(t *testing.T, c *clustertest.Cluster) {
	s := newScenario(t, c, "kill -9 the node of hato's connections", n, rate)
	svc := s.service(c.URLs())
	from := s.node(svc)
	to := -1
	left := s.run(svc, func() {
		c.Kill(from)
		to = s.awayFrom(svc, from, c.NodeOf)
	})
	s.finish(left, s.reconnected("route-"), fmt.Sprintf("hato on %s, moved to %s", c.Name(from), c.Name(to)))
}

// 2. A killed node (left down by scenario 1) starts again under load and
// rejoins the cluster; hato, on another node, goes on undisturbed.
func scenarioNodeRejoins(t *testing.T, c *clustertest.Cluster) {
	down := -1
	for i := range c.N() {
		if !c.Running(i) {
			down = i
		}
	}
	if down < 0 {
		down = c.N() - 1
		c.Kill(down)
	}
	s := newScenario(t, c, "killed node restarts and rejoins", n, rate/2)
	svc := s.service(c.URLs())
	var rejoined time.Duration
	left := s.run(svc, func() {
		c.StartNode(down)
		c.Restore()
		rejoined = time.Since(s.faultStart)
	})
	s.finish(left, 0, fmt.Sprintf("%s back in the cluster after %s", c.Name(down), rejoined.Round(100*time.Millisecond)))
}

// 3. The quorum queue's leader node (not the node of hato's connections) is
// killed under load: a follower takes over; hato's channel stays or is
// cancelled and consumes again.
func scenarioKillLeader(t *testing.T, c *clustertest.Cluster) {
	s := newScenario(t, c, "kill -9 the quorum leader's node", n, rate)
	var svc *hato.Service
	var on, leader int
	// The queue's leader is where it was first declared (client-local);
	// start instances (which pick a random node) until one is elsewhere.
	for try := 0; ; try++ {
		svc = s.service(c.URLs())
		on = s.node(svc)
		var err error
		if leader, err = c.QuorumLeader("/", svc.Routes()[0].Queue); err != nil {
			t.Fatal(err)
		}
		if leader != on {
			break
		}
		if try == 20 {
			t.Fatalf("every instance connected to the leader's node %s", c.Name(leader))
		}
		testutil.Stop(t, svc)
	}
	left := s.run(svc, func() { c.Kill(leader) })
	s.finish(left, s.reconnected("route-"), fmt.Sprintf("leader %s killed, hato stayed on %s; %d route interruptions",
		c.Name(leader), c.Name(on), s.count(hato.EventUnavailable, "route-")))
}

// 4. A follower of the queue, holding none of hato's connections, is
// stopped gracefully under load.
func scenarioStopFollower(t *testing.T, c *clustertest.Cluster) {
	s := newScenario(t, c, "stop a follower", n, rate)
	svc := s.service(c.URLs())
	on := s.node(svc)
	leader, err := c.QuorumLeader("/", svc.Routes()[0].Queue)
	if err != nil {
		t.Fatal(err)
	}
	follower := 0
	for follower == on || follower == leader {
		follower++
	}
	left := s.run(svc, func() { c.StopNode(follower) })
	s.finish(left, s.reconnected("route-"), fmt.Sprintf("%s stopped; hato on %s, leader %s", c.Name(follower), c.Name(on), c.Name(leader)))
}

// 5. Rolling upgrade: every node is stopped and started again, one after
// the other (each rejoins before the next goes), under load.
func scenarioRollingRestart(t *testing.T, c *clustertest.Cluster) {
	s := newScenario(t, c, "rolling restart of all nodes", 4000, 50)
	svc := s.service(c.URLs())
	var took time.Duration
	left := s.run(svc, func() {
		for i := range c.N() {
			c.StopNode(i)
			c.StartNode(i)
			c.Restore()
		}
		took = time.Since(s.faultStart)
	})
	s.finish(left, 0, fmt.Sprintf("3 nodes stopped and started in turn in %s; hato's connections lost %d time(s)",
		took.Round(100*time.Millisecond), s.count(hato.EventUnavailable, "connection")))
}

// 6. The network between hato and its node is cut (a black hole: no data,
// no FIN/RST) under load: heartbeats time out, hato moves to another node.
func scenarioNetworkCut(t *testing.T, c *clustertest.Cluster) {
	proxies := make([]*netproxy.Proxy, c.N())
	urls := make([]string, c.N())
	for i := range c.N() {
		proxies[i], urls[i] = brokertest.Proxy(t, c.URL(i))
	}
	nodeOf := func(addr string) int {
		for i, p := range proxies {
			if p.Addr() == addr {
				return i
			}
		}
		return -1
	}
	s := newScenario(t, c, "network cut between hato and its node", n, rate)
	svc := s.service(urls)
	var from, to int
	brokertest.WaitFor(t, time.Minute, func() bool {
		st, err := svc.Status(context.Background())
		from = -1
		if err == nil {
			from = nodeOf(st.PublishNode)
		}
		return from >= 0
	}, "connected through a proxy")
	left := s.run(svc, func() {
		proxies[from].Pause()
		to = s.awayFrom(svc, from, nodeOf)
		proxies[from].Resume()
	})
	s.finish(left, s.reconnected("route-"), fmt.Sprintf("cut to %s (heartbeat 2 s), moved to %s", c.Name(from), c.Name(to)))
}

// 7. A classic (tomodachi-compatible) queue lives on one node. While that
// node is down, the route's consumer is cancelled and re-declaring fails
// (404, home node down): the route retries with backoff and reports itself
// unavailable, the service keeps running; once the node is back, the route
// consumes again and nothing confirmed before the outage is lost.
func scenarioClassicHomeNodeDown(t *testing.T, c *clustertest.Cluster) {
	const home = 0
	s := newScenario(t, c, "classic queue, home node down", 400, 0)
	s.classic = true
	// Declare the queue on its home node, then run the service on the
	// other nodes (a classic queue's home is where it was declared).
	decl := s.service([]string{c.URL(home)})
	testutil.Stop(t, decl)
	svc := s.service(c.URLs()[1:])
	first := s.IDs[:200]
	s.IDs = first
	s.WaitPublished(s.PublishAll(svc, s.key, s.rate))
	s.Settle(time.Minute)

	s.faultStart = time.Now()
	c.Kill(home)
	brokertest.WaitFor(t, time.Minute, func() bool { return s.count(hato.EventUnavailable, "route-") >= 3 },
		"the route to retry while its queue's node is down")
	select {
	case <-svc.Failed():
		t.Fatalf("the service failed while a classic queue's node was down: %v", svc.Err())
	default:
	}
	reasons := s.reasons("route-")
	if !strings.Contains(reasons, "cancel") || !strings.Contains(reasons, "404") {
		t.Errorf("route events while the home node is down do not show the cancel and the 404: %s", reasons)
	}
	c.StartNode(home)
	restarted := time.Now()
	downFor := restarted.Sub(s.faultStart)
	retries := s.count(hato.EventUnavailable, "route-")
	brokertest.WaitFor(t, 2*time.Minute, func() bool { return s.readyAfter("route-", s.faultStart) }, "the route to consume again")
	back := time.Since(restarted)

	s.IDs = append(first, testutil.IDs("after", 200)...)
	s.Reset()
	s.WaitPublished(s.PublishAll(svc, s.key, s.rate))
	s.Settle(time.Minute)
	queue := svc.Routes()[0].Queue
	testutil.Stop(t, svc)
	s.finish(s.leftInQueue(queue), 0, fmt.Sprintf("node down %s: route cancelled, %d unavailable events (404 home node down), service never failed; "+
		"consuming again %s after the node's start returned; duplicates: acks of the 200 handled before the kill -9 were not on disk yet",
		downFor.Round(100*time.Millisecond), retries, back.Round(100*time.Millisecond)))
}

// 8. Non-competing routes of two hato instances (on whatever nodes they
// picked) each get every message: one queue per instance, as tomodachi.
func scenarioNonCompeting(t *testing.T, c *clustertest.Cluster) {
	s := newScenario(t, c, "non-competing routes on two hato nodes", 500, 0)
	s.classic = true
	a := s.service(c.URLs(), hato.NotCompeting())
	b := s.service(c.URLs(), hato.NotCompeting())
	nodes := fmt.Sprintf("instances on %s and %s", c.Name(s.node(a)), c.Name(s.node(b)))
	s.WaitPublished(s.PublishAll(a, s.key, s.rate))
	brokertest.WaitFor(t, time.Minute, func() bool { return s.Handled.Total() >= 2*len(s.IDs) }, "both instances to handle every message")
	for _, id := range s.IDs {
		if got := s.Handled.Count(id); got != 2 {
			t.Fatalf("%s handled %d times, want once per instance", id, got)
		}
	}
	left := 0
	for _, svc := range []*hato.Service{a, b} {
		queue := svc.Routes()[0].Queue
		testutil.Stop(t, svc)
		left += s.leftInQueue(queue)
	}
	s.finish(left, 0, nodes+"; each handled all 500 (duplicates = the second copy)")
}

// count is how many events of kind children named child* reported since
// the fault.
func (s *scenario) count(kind hato.EventKind, child string) int {
	k := 0
	for _, e := range s.events.Snapshot() {
		if e.Kind == kind && strings.HasPrefix(e.Child, child) && !e.Time.Before(s.faultStart) {
			k++
		}
	}
	return k
}

// reasons joins the reasons of child*'s events since the fault.
func (s *scenario) reasons(child string) string {
	var b strings.Builder
	for _, e := range s.events.Snapshot() {
		if e.Reason != nil && strings.HasPrefix(e.Child, child) && !e.Time.Before(s.faultStart) {
			b.WriteString(e.Reason.Error())
			b.WriteString("; ")
		}
	}
	return b.String()
}

// readyAfter reports whether child* reported EventReady after t0.
func (s *scenario) readyAfter(child string, t0 time.Time) bool {
	for _, e := range s.events.Snapshot() {
		if e.Kind == hato.EventReady && strings.HasPrefix(e.Child, child) && e.Time.After(t0) {
			return true
		}
	}
	return false
}
