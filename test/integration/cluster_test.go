//go:build integration

package integration_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/internal/netproxy"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/test/brokertest"
	amqp "github.com/rabbitmq/amqp091-go"
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

// Issue 9: a quorum queue counts every return in x-delivery-count, also the
// returns of a lost connection (node down, network cut). Poison detection
// must not count those: messages held unacked across two connection losses
// are handled, not dead-lettered, even with MaxRedeliveries 1.
func TestQuorumPoisonIgnoresConnectionLoss(t *testing.T) {
	proxy, url := brokertest.Proxy(t, brokerURL(t))
	key := testutil.Key(t, "qq-loss")
	ids := fmtIDs("loss", 5)
	handled := testutil.NewCollector()
	var dl testutil.DeliveryEvents
	gate := make(chan struct{})
	var arrivals atomic.Int64
	svc := newService(t, "qq-loss",
		hato.WithURL(url),
		hato.WithReconnectBackoff(hato.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond}),
		hato.WithDeliveryEvents(dl.Add),
		hato.FailureHandling(hato.FailurePolicy{MaxRedeliveries: 1}))
	err := hato.Subscribe(svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		arrivals.Add(1)
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
		handled.Add(idOf(m))
		return nil
	}, hato.QuorumQueue(), hato.Concurrency(3*len(ids))) // handlers of a lost channel keep their slots until they return
	if err != nil {
		t.Fatal(err)
	}
	testutil.Start(t, svc)
	publishN(t, publisher(t), key, ids)

	// Each cut returns the unacked messages to the queue (x-delivery-count
	// +1); wait until all are held again before the next one.
	for cut := 1; cut <= 2; cut++ {
		want := int64(cut * len(ids))
		brokertest.WaitFor(t, 30*time.Second, func() bool { return arrivals.Load() >= want }, "%d arrivals", want)
		proxy.CutAll()
	}
	brokertest.WaitFor(t, 30*time.Second, func() bool {
		return arrivals.Load() >= int64(3*len(ids)) || dl.Len() > 0
	}, "redeliveries after the second cut")
	close(gate)
	for _, e := range dl.Snapshot() {
		t.Fatalf("%d delivery events after connection losses, e.g. %s %s: %v", dl.Len(), e.Action, e.MessageID, e.Err)
	}
	handled.WaitDistinct(t, len(ids), 30*time.Second)
}

func TestQuorumQueueUsesTheBrokersDeliveryCountForPoisonMessages(t *testing.T) {
	key := testutil.Key(t, "quorum")
	evs := &testutil.DeliveryEvents{}
	var counts []int
	var mu sync.Mutex
	svc := newService(t, "quorum", hato.WithDeliveryEvents(evs.Add))
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		mu.Lock()
		counts = append(counts, m.DeliveryCount)
		mu.Unlock()
		return hato.Requeue(errors.New("always busy"))
	}, hato.QuorumQueue(), hato.FailureHandling(hato.FailurePolicy{MaxRedeliveries: 3}))
	testutil.Start(t, svc)
	r := svc.Routes()[0]
	q, ok, err := brokertest.FindQueue(brokerVhost(t), r.Queue)
	if err != nil || !ok {
		t.Fatalf("queue: %v %v", ok, err)
	}
	if q.Type != "quorum" || toInt(q.Arguments["x-expires"]) != 86400000 {
		t.Errorf("queue type %q arguments %v, want a quorum queue with tomodachi's x-expires", q.Type, q.Arguments)
	}

	publishN(t, publisher(t), key, []string{"poison"})
	brokertest.WaitFor(t, 20*time.Second, func() bool { return len(evs.Snapshot()) == 1 }, "dead-lettered")
	mu.Lock()
	defer mu.Unlock()
	if len(counts) < 2 || counts[0] != 0 || counts[1] != 1 {
		t.Errorf("delivery counts seen by the handler %v, want 0, 1, ... from the broker", counts)
	}
	conn := brokertest.Dial(t, brokerURL(t), "test-quorum")
	if n, _ := brokertest.Inspect(t, conn, r.DeadLetterQueue); n != 1 {
		t.Errorf("dead-letter queue holds %d, want 1", n)
	}
}

// tlsProxy terminates TLS with a throw-away certificate for 127.0.0.1 and
// forwards the plain bytes to the broker.
type tlsProxy struct {
	ln    net.Listener
	roots *x509.CertPool
	wg    sync.WaitGroup
	conns sync.Map
	n     atomic.Int32
}

func newTLSProxy(t *testing.T, target string) *tlsProxy {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "hato test broker"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	p := &tlsProxy{roots: x509.NewCertPool()}
	p.roots.AddCert(cert)
	p.ln, err = tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		MinVersion:   tls.VersionTLS12,
	})
	if err != nil {
		t.Fatal(err)
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := p.ln.Accept()
			if err != nil {
				return
			}
			p.n.Add(1)
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				defer c.Close()
				up, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer up.Close()
				p.conns.Store(c, up)
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
				go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
				<-done
			}()
		}
	}()
	t.Cleanup(func() {
		_ = p.ln.Close()
		p.conns.Range(func(k, v any) bool {
			_ = k.(net.Conn).Close()
			_ = v.(net.Conn).Close()
			return true
		})
		p.wg.Wait()
	})
	return p
}

func TestTLSVerifiesTheBrokerByDefault(t *testing.T) {
	u, err := amqp.ParseURI(brokerURL(t))
	if err != nil {
		t.Fatal(err)
	}
	// The broker's port comes from the test URL (HATO_TEST_AMQP_URL), as
	// every other test's does: never the default broker's.
	proxy := newTLSProxy(t, net.JoinHostPort(u.Host, strconv.Itoa(u.Port)))
	u.Scheme = "amqps"
	u.Host = "127.0.0.1"
	_, port, _ := net.SplitHostPort(proxy.ln.Addr().String())
	u.Port = atoiOrFail(t, port)
	amqpsURL := u.String()

	// Default: verification on, and a self-signed broker is refused.
	untrusting, err := hato.New("tls-default", append(testutil.Options(t, amqpsURL), hato.WithStartTimeout(5*time.Second))...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = untrusting.Start(ctx)
	if err == nil {
		_ = untrusting.Stop(context.Background())
		t.Fatal("connected to a broker with an untrusted certificate")
	}
	if proxy.n.Load() == 0 {
		t.Fatal("the client never reached the TLS endpoint")
	}

	// Trusting the test CA: a round trip over TLS.
	key := testutil.Key(t, "tls")
	got := testutil.NewCollector()
	svc, err := hato.New("tls", append(testutil.Options(t, amqpsURL), hato.WithTLS(&tls.Config{RootCAs: proxy.roots, MinVersion: tls.VersionTLS12}))...)
	if err != nil {
		t.Fatal(err)
	}
	mustSubscribe(t, svc, key, func(ctx context.Context, m *hato.Message[payload]) error {
		got.Add(idOf(m))
		return svc.Publish(ctx, m.Data, key+".ok")
	})
	testutil.Start(t, svc)
	publishN(t, svc, key, []string{"over-tls"})
	got.WaitDistinct(t, 1, 10*time.Second)
	if strings.Contains(amqpsURL, "xxxxx") {
		t.Fatal("test URL already redacted")
	}
}

func atoiOrFail(t *testing.T, s string) int {
	t.Helper()
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			t.Fatalf("bad port %q", s)
		}
		n = n*10 + int(c-'0')
	}
	return n
}
