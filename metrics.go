package hato

import (
	"context"
	"errors"
	"reflect"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// counter indexes hato's counters (see newInstruments for their names).
type counter int

const (
	cPublished counter = iota
	cConfirmed
	cNacked
	cReturned
	cDeadLettered
	cDropped
	cRedelivered
	cRetries
	cRestarts
	cGiveUps
	cReconnects
	cStalls
	numCounters
)

// upDown indexes hato's up-down counters.
type upDown int

const (
	upActive upDown = iota
	upInFlight
	numUpDowns
)

var counterSpecs = [numCounters]struct{ name, desc string }{
	cPublished:    {"hato.messages.published", "Messages handed to the broker connection to publish."},
	cConfirmed:    {"hato.messages.confirmed", "Published messages the broker confirmed."},
	cNacked:       {"hato.messages.nacked", "Published messages the broker nacked."},
	cReturned:     {"hato.messages.returned", "Mandatory messages the broker returned as unroutable."},
	cDeadLettered: {"hato.messages.dead_lettered", "Messages dead-lettered, by reason."},
	cDropped:      {"hato.messages.dropped", "Messages a handler dropped on purpose."},
	cRedelivered:  {"hato.messages.redelivered", "Deliveries the broker flagged as redelivered."},
	cRetries:      {"hato.handler.retries", "Handler runs that retried a message that failed before."},
	cRestarts:     {"hato.route.restarts", "Route actors restarted or respawned by the supervisor."},
	cGiveUps:      {"hato.route.give_ups", "Routes that exhausted their restart budget or failed permanently."},
	cReconnects:   {"hato.connection.reconnects", "Broker reconnections after the first connection."},
	cStalls:       {"hato.route.stalls", "Routes found stuck (by reason: stalled, dead_letter_failing)."},
}

// instruments are hato's instruments on one meter.
type instruments struct {
	duration metric.Float64Histogram
	counters [numCounters]metric.Int64Counter
	upDowns  [numUpDowns]metric.Int64UpDownCounter
	buffered metric.Int64ObservableGauge
	unconf   metric.Int64ObservableGauge
	reg      metric.Registration

	never  bool                 // the meter provider is a no-op one
	global metric.MeterProvider // the global provider's placeholder the meter is from, or nil
}

// measures reports whether measurements on in's instruments may be
// recorded: not by a no-op meter provider, nor by the global one while no
// other provider was set with otel.SetMeterProvider (measurements before
// are dropped, not kept for the provider set later).
func (in *instruments) measures() bool {
	if in.never {
		return false
	}
	if in.global == nil {
		return true
	}
	g := otel.GetMeterProvider()
	return g != in.global && !isNoopMeter(g)
}

func isNoopMeter(mp metric.MeterProvider) bool {
	switch mp.(type) {
	case noop.MeterProvider, *noop.MeterProvider:
		return true
	}
	return false
}

// isGlobalMeterPlaceholder reports whether mp is the provider otel's
// global one is until otel.SetMeterProvider, which it then delegates to.
func isGlobalMeterPlaceholder(mp metric.MeterProvider) bool {
	t := reflect.TypeOf(mp)
	return t != nil && t.Kind() == reflect.Pointer && t.Elem().PkgPath() == otelGlobalPkg
}

// otelGlobalPkg is the package of otel's global providers' placeholders.
const otelGlobalPkg = "go.opentelemetry.io/otel/internal/global"

// metered reports whether a message's measurements are to be made: by at
// least one meter that measures. A handler run or a publish decides once,
// so its up-down counts always come in pairs.
func (t *telemetry) metered() bool {
	for _, m := range t.meters {
		if m.measures() {
			return true
		}
	}
	return false
}

// newInstruments creates the instruments on m. tomodachi's two keep
// tomodachi's names; hato's own are named hato.*. An instrument that
// fails is a no-op one (the API returns one with the error).
func newInstruments(m metric.Meter) (*instruments, error) {
	in := &instruments{}
	var errs []error
	var err error
	in.duration, err = m.Float64Histogram("messaging.rabbitmq.duration",
		metric.WithUnit("s"), metric.WithDescription("Duration of handling one message (one handler run)."),
		metric.WithExplicitBucketBoundaries(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
	errs = append(errs, err)
	in.upDowns[upActive], err = m.Int64UpDownCounter("messaging.rabbitmq.active_tasks",
		metric.WithUnit("{task}"), metric.WithDescription("Handlers running."))
	errs = append(errs, err)
	in.upDowns[upInFlight], err = m.Int64UpDownCounter("hato.route.in_flight",
		metric.WithUnit("{message}"), metric.WithDescription("Deliveries being handled: handler running or its publishes awaiting their confirms."))
	errs = append(errs, err)
	for i, spec := range counterSpecs {
		in.counters[i], err = m.Int64Counter(spec.name, metric.WithUnit("{message}"), metric.WithDescription(spec.desc))
		errs = append(errs, err)
	}
	in.buffered, err = m.Int64ObservableGauge("hato.publish.buffered",
		metric.WithUnit("{message}"), metric.WithDescription("Publishes waiting for a broker connection."))
	errs = append(errs, err)
	in.unconf, err = m.Int64ObservableGauge("hato.publish.unconfirmed",
		metric.WithUnit("{message}"), metric.WithDescription("Publishes sent and awaiting their confirm."))
	errs = append(errs, err)
	return in, errors.Join(errs...)
}

// observe registers the callback of the publish gauges, read from the
// connection actor's status at each collection.
func (in *instruments) observe(m metric.Meter, status func(context.Context) (ConnectionStatus, error)) error {
	reg, err := m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		st, err := status(ctx)
		if err != nil {
			return nil // not started or stopped: nothing to observe
		}
		o.ObserveInt64(in.buffered, int64(st.Buffered))
		o.ObserveInt64(in.unconf, int64(st.Outstanding))
		return nil
	}, in.buffered, in.unconf)
	in.reg = reg
	return err
}
