// Package testcert makes throw-away TLS certificates and loopback TLS
// listeners for tests: no files, no network beyond 127.0.0.1.
package testcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"
)

// Cert is a self-signed certificate (its own CA) and its key.
type Cert struct {
	TLS   tls.Certificate
	Roots *x509.CertPool // holds only this certificate
}

// New makes a self-signed certificate for the given DNS names and IP
// addresses ("127.0.0.1" is an IP; anything else a DNS name).
func New(t testing.TB, names ...string) *Cert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "hato test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	c := &Cert{TLS: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, Roots: x509.NewCertPool()}
	c.Roots.AddCert(cert)
	return c
}

// Listen starts a loopback listener that serves each connection with
// serve, in its own goroutine, until the test ends; with cert non-nil it
// speaks TLS with that certificate and completes the handshake before
// serve. It returns the listener's port. Connections are closed after
// serve returns and at cleanup.
func Listen(t testing.TB, cert *Cert, serve func(net.Conn)) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if cert != nil {
				c = tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert.TLS}, MinVersion: tls.VersionTLS12})
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				if tc, ok := c.(*tls.Conn); ok {
					_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
					if tc.Handshake() != nil {
						return
					}
				}
				serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().(*net.TCPAddr).Port
}

// Hangup closes a connection at once.
func Hangup(net.Conn) {}

// PlainAMQP answers like a broker's plain listener does to a bad protocol
// header: it sends AMQP's and hangs up.
func PlainAMQP(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 8)
	_, _ = c.Read(buf)
	_, _ = c.Write([]byte("AMQP\x00\x00\x09\x01"))
}
