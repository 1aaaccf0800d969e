//go:build integration

package hato_test

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

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato"
	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/test/brokertest"
)

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
