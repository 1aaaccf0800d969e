package brokertest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
)

// VhostPrefix starts the name of every vhost created by this package.
const VhostPrefix = "hato-test-"

const maxLabel = 40

// sanitize keeps ASCII letters, digits and the characters in extra, maps
// everything else to '-' (or '_' if '-' is not allowed), and collapses runs.
func sanitize(s, extra string) string {
	repl := byte('-')
	if !strings.ContainsRune(extra, '-') {
		repl = '_'
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(extra, c) >= 0
		if !ok {
			c = repl
		}
		if c == repl && b.Len() > 0 && b.String()[b.Len()-1] == repl {
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// UniqueName returns "<prefix><label>-<8 random hex digits>" where label is
// reduced to [A-Za-z0-9_.-] and at most 40 characters. Use it for queue,
// exchange and connection names that must not collide across tests.
func UniqueName(prefix, label string) string {
	label = strings.Trim(sanitize(label, "_.-"), "-")
	if len(label) > maxLabel {
		label = label[:maxLabel]
	}
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	if label == "" {
		return prefix + hex.EncodeToString(rnd[:])
	}
	return prefix + label + "-" + hex.EncodeToString(rnd[:])
}

// SetupVhost creates a fresh vhost named like "hato-test-<label>-<random>",
// grants the BaseURL user full permissions on it and returns its AMQP URL
// and an idempotent cleanup that deletes it (which also closes every
// connection to it; a deletion failure is reported on stderr). It needs no
// testing.T, so a package can call it from TestMain and share one vhost
// between its tests.
func SetupVhost(label string) (url string, cleanup func(), err error) {
	_, url, del, err := setupVhost(label)
	if err != nil {
		return "", nil, err
	}
	return url, func() {
		if err := del(); err != nil {
			fmt.Fprintf(os.Stderr, "brokertest: %v\n", err)
		}
	}, nil
}

// NewVhost creates a fresh vhost for this test (named after t.Name()) and
// returns its name and AMQP URL. t.Cleanup deletes it again (a deletion
// failure fails the test). It fails the test if the broker or rabbitmqctl is
// unavailable.
func NewVhost(t testing.TB) (vhost, url string) {
	t.Helper()
	vhost, url, del, err := setupVhost(t.Name())
	if err != nil {
		t.Fatalf("NewVhost: %v", err)
	}
	t.Cleanup(func() {
		if err := del(); err != nil {
			t.Errorf("NewVhost cleanup: %v", err)
		}
	})
	return vhost, url
}

// setupVhost creates the vhost; del deletes it and is idempotent.
func setupVhost(label string) (vhost, url string, del func() error, err error) {
	// The shared lock first: a fault test in another process may have the
	// broker stopped right now, and holds the exclusive lock until it is back.
	acquireShared()
	vhost = UniqueName(VhostPrefix, label)
	url, err = VhostURL(vhost)
	if err != nil {
		return "", "", nil, err
	}
	if err := Ping(BaseURL()); err != nil {
		return "", "", nil, fmt.Errorf("RabbitMQ not reachable at %s: %w; %s", Redact(BaseURL()), err, Hint)
	}
	if _, err := Rabbitmqctl("add_vhost", vhost); err != nil {
		return "", "", nil, fmt.Errorf("creating test vhost: %w", err)
	}
	var (
		once   sync.Once
		delErr error
	)
	del = func() error {
		once.Do(func() {
			if _, err := Rabbitmqctl("delete_vhost", vhost); err != nil {
				delErr = fmt.Errorf("deleting test vhost %q: %w", vhost, err)
			}
		})
		return delErr
	}
	if _, err := Rabbitmqctl("set_permissions", "-p", vhost, brokerUser(), ".*", ".*", ".*"); err != nil {
		_ = del()
		return "", "", nil, fmt.Errorf("granting permissions on test vhost %q: %w", vhost, err)
	}
	return vhost, url, del, nil
}

// PackageVhost is a vhost shared by the tests of one package, created the
// first time a test asks for it (URL or Name), so the tests of the package
// that do not use the broker run without one. Declare one per package and
// pass it to Main:
//
//	var pkgVhost = brokertest.NewPackageVhost("mypkg")
//
//	func TestMain(m *testing.M) { brokertest.Main(m, pkgVhost, leak.Find) }
//
//	func TestSomething(t *testing.T) { url := pkgVhost.URL(t); ... }
//
// Creation runs once per process; if it fails (no broker, no rabbitmqctl)
// every test that asks fails with the reason, none skips.
type PackageVhost struct {
	label string
	once  sync.Once
	vhost string
	url   string
	del   func() error
	err   error
}

// NewPackageVhost returns a PackageVhost whose name starts with
// "hato-test-<label>-". It contacts nothing.
func NewPackageVhost(label string) *PackageVhost { return &PackageVhost{label: label} }

func (p *PackageVhost) setup(t testing.TB) {
	t.Helper()
	p.once.Do(func() { p.vhost, p.url, p.del, p.err = setupVhost(p.label) })
	if p.err != nil {
		layer := ""
		if unitLayer {
			layer = " (built without -tags integration: the unit layer, which has no broker; a test that needs the broker belongs in a file tagged //go:build integration)"
		}
		t.Fatalf("this test needs the broker: package vhost %q: %v%s", p.label, p.err, layer)
	}
}

// URL returns the AMQP URL of the package vhost, creating the vhost on the
// first call. It fails the test if the broker or rabbitmqctl is unavailable.
func (p *PackageVhost) URL(t testing.TB) string {
	t.Helper()
	p.setup(t)
	return p.url
}

// Name returns the name of the package vhost, creating it on the first
// call (see URL).
func (p *PackageVhost) Name(t testing.TB) string {
	t.Helper()
	p.setup(t)
	return p.vhost
}

// Delete deletes the vhost if it was created; otherwise it does nothing.
// Call it after the tests ran (Main does).
func (p *PackageVhost) Delete() error {
	p.once.Do(func() { p.err = errors.New("brokertest: package vhost used after Delete") })
	if p.del == nil {
		return nil
	}
	return p.del()
}

// Main runs a test package whose broker tests share vh: it runs the tests,
// deletes vh if a test created it (a deletion failure is reported on
// stderr), then runs check (for example a
// goroutine-leak check; nil for none) if the tests passed, and exits. It
// contacts the broker only if a test asked vh for its URL. Call it from
// TestMain.
func Main(m *testing.M, vh *PackageVhost, check func() error) {
	code := m.Run()
	if err := vh.Delete(); err != nil {
		fmt.Fprintf(os.Stderr, "brokertest: %v\n", err)
	}
	if code == 0 && check != nil {
		if err := check(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}
