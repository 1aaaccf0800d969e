package hato

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	"go.uber.org/zap"

	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/supervisor"
)

// ErrNotReady is wrapped by Service.Ready's errors; ErrUnhealthy by
// Service.Healthy's.
var (
	ErrNotReady  = errors.New("hato: not ready")
	ErrUnhealthy = errors.New("hato: unhealthy")
)

// WithOpsServer serves the operations endpoint on addr (host:port; port 0
// picks a free one, see Service.OpsAddr) while the service runs, from
// Start until it stopped:
//
//   - /metrics: hato's metrics (and the Go runtime's) in the Prometheus
//     text format, whatever meter provider is configured besides;
//   - /healthz: 200 while the process is alive and no route gave up
//     (Service.Healthy), else 503 — a liveness probe;
//   - /readyz: 200 once started, connected and every route consuming
//     (Service.Ready), else 503 with a JSON reason — a readiness probe.
//
// Every path answers 405 to methods other than GET and HEAD. The server
// closes connections idle for 30 s, and those that take over 10 s to send
// a request or 30 s to read the answer.
//
// Without this option, the environment variable HATO_OPS_ADDR sets addr
// (except for services on hatotest's in-memory broker).
// Service.OpsHandler serves the same from a server of your own.
func WithOpsServer(addr string) Option {
	return serviceOption(func(c *config) error {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return invalid("ops server address %q: %v", addr, err)
		}
		c.opsAddr = addr
		return nil
	})
}

// opsState is the ops endpoint's: readiness as the supervisor's events
// tell it, the Prometheus registry, the HTTP server.
type opsState struct {
	mu        sync.Mutex
	children  map[string]childState
	gaveUp    error
	connReady bool // the connection was ready once: a later ready is a reconnection

	registry *prometheus.Registry
	handler  http.Handler
	addr     string
	srv      *http.Server
	ln       net.Listener
}

type childState struct {
	ready  bool
	reason string
}

// setupOps prepares readiness tracking and, when an ops address is
// configured, the Prometheus registry with hato's instruments on a meter
// provider of its own.
func (s *Service) setupOps() error {
	s.ops = &opsState{children: map[string]childState{}}
	addr := s.cfg.opsAddr
	// A service on hatotest's in-memory broker (a transport) ignores
	// HATO_OPS_ADDR: parallel tests would clash on its port.
	if addr == "" && s.cfg.transport == nil {
		addr = os.Getenv("HATO_OPS_ADDR")
		if addr != "" {
			if _, _, err := net.SplitHostPort(addr); err != nil {
				return invalid("HATO_OPS_ADDR %q: %v", addr, err)
			}
		}
	}
	s.ops.addr = addr
	if addr != "" {
		// Only then: a second meter costs on every message.
		if err := s.setupPrometheus(); err != nil {
			return err
		}
	}
	s.ops.handler = s.opsMux()
	return nil
}

func (s *Service) setupPrometheus() error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return fmt.Errorf("hato: prometheus exporter: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp), sdkmetric.WithResource(ServiceResource(s.name, s.uuid)))
	s.tel.addMeter(mp)
	s.ops.registry = reg
	return nil
}

// ServiceResource is the OpenTelemetry resource of a service, as
// tomodachi's: service.name and service.instance.id (the service uuid),
// merged over the SDK's default (which reads OTEL_RESOURCE_ATTRIBUTES and
// OTEL_SERVICE_NAME).
func ServiceResource(name, uuid string) *resource.Resource {
	own := resource.NewSchemaless(attribute.String("service.name", name), attribute.String("service.instance.id", uuid))
	r, err := resource.Merge(resource.Default(), own)
	if err != nil {
		return own
	}
	return r
}

// OpsHandler serves /metrics, /healthz and /readyz (see WithOpsServer), to
// mount on a server of your own. /metrics answers 404 unless an ops
// address is configured (WithOpsServer or HATO_OPS_ADDR): export metrics
// with WithMeterProvider then.
func (s *Service) OpsHandler() http.Handler { return s.ops.handler }

// OpsAddr is the address the ops server listens on, once started (empty
// without one).
func (s *Service) OpsAddr() string {
	s.ops.mu.Lock()
	defer s.ops.mu.Unlock()
	if s.ops.ln == nil {
		return ""
	}
	return s.ops.ln.Addr().String()
}

func (s *Service) opsMux() http.Handler {
	mux := http.NewServeMux()
	if s.ops.registry != nil {
		mux.Handle("/metrics", promhttp.HandlerFor(s.ops.registry, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { writeProbe(w, s.Healthy()) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) { writeReady(w, s.Ready(), s.PausedRoutes()) }) // outage: names paused routes
	return readOnly(mux)
}

// readOnly answers 405 to every method but GET and HEAD, and closes the
// connection rather than read a body nobody wants.
func readOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			w.Header().Set("Connection", "close")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// opsTimeouts bound the ops server's connections: a client that sends
// nothing, sends slowly, reads slowly or idles in keep-alive is cut off.
// Variables for tests.
var opsTimeouts = struct{ header, read, write, idle time.Duration }{
	header: 5 * time.Second, read: 10 * time.Second, write: 30 * time.Second, idle: 30 * time.Second,
}

func writeProbe(w http.ResponseWriter, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	body := map[string]string{"status": "ok"}
	if err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		body = map[string]string{"status": "unavailable", "reason": err.Error()}
	}
	_ = json.NewEncoder(w).Encode(body)
}

// startOps starts the ops server, if configured.
func (s *Service) startOps() error {
	if s.ops.addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", s.ops.addr)
	if err != nil {
		return fmt.Errorf("hato: ops server: %w", err)
	}
	t := opsTimeouts
	srv := &http.Server{Handler: s.ops.handler, ReadHeaderTimeout: t.header, ReadTimeout: t.read, WriteTimeout: t.write, IdleTimeout: t.idle}
	s.ops.mu.Lock()
	s.ops.ln, s.ops.srv = ln, srv
	s.ops.mu.Unlock()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("ops server failed", zap.Error(err))
		}
	}()
	s.log.Info("ops server listening", zap.String("addr", ln.Addr().String()))
	return nil
}

// stopOps stops the ops server, if it runs. finish calls it, once: on
// the service's one move to stopped from aborting or closing.
func (s *Service) stopOps() {
	s.ops.mu.Lock()
	srv := s.ops.srv
	s.ops.mu.Unlock()
	if srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		_ = srv.Close()
	}
}

// trackEvent follows the connection's and the routes' readiness and counts
// restarts, give-ups and reconnections. It runs on the root supervisor's
// goroutine.
func (s *Service) trackEvent(e supervisor.Event) {
	kind := e.Kind
	o := s.ops
	o.mu.Lock()
	first := e.Child == "connection" && !o.connReady
	switch kind {
	case EventReady:
		o.children[e.Child] = childState{ready: true}
		if e.Child == "connection" {
			o.connReady = true
		}
	case EventUnavailable, EventFailed, EventStopped:
		o.children[e.Child] = childState{reason: fmt.Sprintf("%s %s", e.Child, kind) + reasonSuffix(e.Reason)}
	case EventGaveUp:
		o.children[e.Child] = childState{reason: fmt.Sprintf("%s gave up", e.Child) + reasonSuffix(e.Reason)}
		if o.gaveUp == nil {
			o.gaveUp = fmt.Errorf("%s gave up%s", e.Child, reasonSuffix(e.Reason))
		}
	}
	o.mu.Unlock()
	s.tel.supervisorEvent(supervisorEventView{kind: kind, child: e.Child, reason: e.Reason}, first)
}

func reasonSuffix(err error) string {
	if err == nil {
		return ""
	}
	return ": " + broker.Redact(err.Error())
}

// runningStatus is Status while the service runs (the publish gauges'
// source: nothing to observe before Start or after Stop).
func (s *Service) runningStatus(ctx context.Context) (ConnectionStatus, error) {
	if !s.current().running() {
		return ConnectionStatus{}, ErrNotStarted
	}
	return s.Status(ctx)
}

// Ready returns nil once the service started, is connected to the broker
// and every route consumes and makes progress (no route stuck, see
// WithStallAfter); else an error wrapping ErrNotReady that says
// why. For readiness probes (see WithOpsServer).
func (s *Service) Ready() error {
	s.mu.Lock()
	st := s.current()
	names := make([]string, 0, len(s.routes)+1)
	names = append(names, "connection")
	for _, r := range s.routes {
		names = append(names, r.name)
	}
	s.mu.Unlock()
	switch st {
	case stateNew:
		return fmt.Errorf("%w: not started", ErrNotReady)
	case stateStarting, stateSpawning, stateStartCancelled, stateAborting:
		return fmt.Errorf("%w: starting", ErrNotReady)
	case stateDraining, stateClosing, stateStopped:
		return fmt.Errorf("%w: stopping", ErrNotReady)
	}
	if err := s.stuckRoute(false); err != nil {
		return fmt.Errorf("%w: %w", ErrNotReady, err)
	}
	s.ops.mu.Lock()
	defer s.ops.mu.Unlock()
	for _, n := range names {
		c, ok := s.ops.children[n]
		if !ok {
			return fmt.Errorf("%w: %s not ready yet", ErrNotReady, n)
		}
		if !c.ready {
			return fmt.Errorf("%w: %s", ErrNotReady, c.reason)
		}
	}
	return s.componentsReady()
}

// Healthy returns nil while the service has not failed: no fatal error,
// no route that gave up (also with WithKeepRunningOnRouteFailure) and no
// route stuck for the unhealthy threshold (see WithUnhealthyAfter); else
// an error wrapping ErrUnhealthy. For liveness probes (see WithOpsServer).
func (s *Service) Healthy() error {
	if err := s.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrUnhealthy, err)
	}
	s.ops.mu.Lock()
	defer s.ops.mu.Unlock()
	if s.ops.gaveUp != nil {
		return fmt.Errorf("%w: %w", ErrUnhealthy, s.ops.gaveUp)
	}
	if err := s.stuckRoute(true); err != nil {
		return fmt.Errorf("%w: %w", ErrUnhealthy, err)
	}
	return nil
}
