package pgoutbox

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/zap"

	"github.com/hato-go/hato"
)

// Stats is what a relay saw.
type Stats struct {
	// Backlog is how many rows the table held at the last refresh (every
	// poll interval), OldestAge the age of the oldest one.
	Backlog   int64
	OldestAge time.Duration
	// Published counts messages confirmed and deleted; Failures publishes
	// that failed (their rows stay and are retried).
	Published, Failures uint64
}

// relay is a started Outbox's goroutines and state.
type relay struct {
	svc    *hato.Service
	cancel context.CancelFunc
	wg     sync.WaitGroup
	wake   chan struct{} // buffered 1: a notification or a full batch

	dbErr               atomic.Pointer[error] // last database failure, nil when fine
	backlog, ageNanos   atomic.Int64
	published, failures atomic.Uint64
	reg                 metric.Registration
}

var _ hato.Component = (*Outbox)(nil)

// Start implements hato.Component: it starts the relay's goroutines, the
// listener (LISTEN on its own connection) and the worker (batches), and
// returns. Start an Outbox in one service only.
func (o *Outbox) Start(_ context.Context, svc *hato.Service) error {
	if o.relay.Load() != nil {
		return fmt.Errorf("%w: relay started twice", ErrInvalidOption)
	}
	if o.log == nil {
		o.log = svc.Logger()
	}
	o.log = o.log.With(zap.String("outbox", o.tableRaw))
	ctx, cancel := context.WithCancel(context.Background())
	r := &relay{svc: svc, cancel: cancel, wake: make(chan struct{}, 1)}
	o.relay.Store(r)
	if err := o.registerMetrics(r); err != nil {
		cancel()
		return err
	}
	r.wg.Add(2)
	go o.listen(ctx, r)
	go o.work(ctx, r)
	return nil
}

// Stop implements hato.Component: it ends the relay's goroutines (a batch
// being published is abandoned: its transaction rolls back and its rows are
// published again later) and waits for them or for ctx.
func (o *Outbox) Stop(ctx context.Context) error {
	r := o.relay.Load()
	if r == nil {
		return nil
	}
	r.cancel()
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if r.reg != nil {
		return r.reg.Unregister()
	}
	return nil
}

// Ready implements hato.Component: an error wrapping ErrNotReady while the
// relay's last database call failed.
func (o *Outbox) Ready() error {
	r := o.relay.Load()
	if r == nil {
		return fmt.Errorf("%w: not started", ErrNotReady)
	}
	if err := r.dbErr.Load(); err != nil {
		return fmt.Errorf("%w: %w", ErrNotReady, *err)
	}
	return nil
}

// Stats returns the relay's figures (zero before Start).
func (o *Outbox) Stats() Stats {
	r := o.relay.Load()
	if r == nil {
		return Stats{}
	}
	return Stats{Backlog: r.backlog.Load(), OldestAge: time.Duration(r.ageNanos.Load()),
		Published: r.published.Load(), Failures: r.failures.Load()}
}

func (r *relay) dbFailed(err error) { r.dbErr.Store(&err) }
func (r *relay) dbOK()              { r.dbErr.Store(nil) }

func (r *relay) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// listen holds a connection that LISTENs on the outbox's channel and pokes
// the worker on each notification; on a failure it waits a poll interval
// and connects again (the worker polls meanwhile).
func (o *Outbox) listen(ctx context.Context, r *relay) {
	defer r.wg.Done()
	for ctx.Err() == nil {
		err := o.listenOnce(ctx, r)
		if ctx.Err() != nil {
			return
		}
		r.dbFailed(err)
		o.log.Warn("outbox listener failed; polling until it reconnects", zap.Error(err))
		select {
		case <-ctx.Done():
		case <-time.After(o.poll):
		}
	}
}

func (o *Outbox) listenOnce(ctx context.Context, r *relay) error {
	pc, err := o.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("pgoutbox: listen: %w", err)
	}
	conn := pc.Hijack() // a LISTENing connection must not go back to the pool
	defer func() { _ = conn.Close(context.Background()) }()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{o.channel}.Sanitize()); err != nil {
		return fmt.Errorf("pgoutbox: listen: %w", err)
	}
	r.poke() // rows committed before LISTEN
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return fmt.Errorf("pgoutbox: listen: %w", err)
		}
		r.poke()
	}
}

// work publishes batches until none is full, then waits for a poke or the
// poll interval.
func (o *Outbox) work(ctx context.Context, r *relay) {
	defer r.wg.Done()
	t := time.NewTicker(o.poll)
	defer t.Stop()
	for {
		o.refreshStats(ctx, r)
		for ctx.Err() == nil {
			n, err := o.batchOnce(ctx, r)
			if err != nil {
				if ctx.Err() == nil {
					r.dbFailed(err)
					o.log.Warn("outbox batch failed", zap.Error(err))
				}
				break
			}
			r.dbOK()
			if n < o.batch {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-t.C:
		}
	}
}

func (o *Outbox) refreshStats(ctx context.Context, r *relay) {
	var n int64
	var age float64
	if err := o.pool.QueryRow(ctx, o.q.stats).Scan(&n, &age); err != nil {
		if ctx.Err() == nil {
			r.dbFailed(fmt.Errorf("pgoutbox: stats: %w", err))
		}
		return
	}
	r.backlog.Store(n)
	r.ageNanos.Store(int64(age * float64(time.Second)))
}

// batchOnce takes up to batch rows in one transaction, publishes them,
// deletes the confirmed ones and commits; it returns how many rows it took.
// A crash or error before the commit leaves every row of the batch.
func (o *Outbox) batchOnce(ctx context.Context, r *relay) (int, error) {
	tx, err := o.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("pgoutbox: begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	pick := o.q.pick
	if o.ordered {
		var locked bool
		if err := tx.QueryRow(ctx, o.q.lock, o.tableRaw).Scan(&locked); err != nil {
			return 0, fmt.Errorf("pgoutbox: lock: %w", err)
		}
		if !locked { // another relay works on the table
			return 0, nil
		}
		pick = o.q.pickOrdered
	}
	rows, err := o.pick(ctx, tx, pick)
	if err != nil || len(rows) == 0 {
		return 0, err
	}
	done := o.publishAll(ctx, r, rows)
	if len(done) > 0 {
		if _, err := tx.Exec(ctx, o.q.del, done); err != nil {
			return 0, fmt.Errorf("pgoutbox: delete: %w", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("pgoutbox: commit: %w", err)
	}
	r.published.Add(uint64(len(done)))
	if len(done) < len(rows) {
		return len(done), nil // failures: wait before trying them again
	}
	return len(rows), nil
}

type row struct {
	id  int64
	msg hato.Outgoing
}

func (o *Outbox) pick(ctx context.Context, tx pgx.Tx, sql string) ([]row, error) {
	rs, err := tx.Query(ctx, sql, o.batch)
	if err != nil {
		return nil, fmt.Errorf("pgoutbox: select: %w", err)
	}
	var out []row
	var hdr []byte
	var mode int16
	for rs.Next() {
		var x row
		p := &x.msg.Publishing
		if err := rs.Scan(&x.id, &x.msg.Exchange, &x.msg.RoutingKey, &x.msg.Topic, &x.msg.Mandatory, &p.MessageId,
			&p.ContentType, &mode, &p.AppId, &p.Timestamp, &hdr, &p.Body); err != nil {
			rs.Close()
			return nil, fmt.Errorf("pgoutbox: scan: %w", err)
		}
		p.DeliveryMode = uint8(mode)
		if p.Headers, err = decodeHeaders(hdr); err != nil {
			o.log.Error("outbox row with undecodable headers; publishing it without them",
				zap.Int64("id", x.id), zap.Error(err))
		}
		out = append(out, x)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("pgoutbox: select: %w", err)
	}
	return out, nil
}

// publishAll publishes rows and returns the ids the broker confirmed.
// Unordered: all at once. Ordered: a key's rows one after the other (each
// after the previous confirm), stopping at its first failure; keys at once.
func (o *Outbox) publishAll(ctx context.Context, r *relay, rows []row) []int64 {
	groups := map[string][]row{}
	var keys []string
	for i, x := range rows {
		k := fmt.Sprint(i)
		if o.ordered {
			k = x.msg.Exchange + "\x00" + x.msg.RoutingKey
		}
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], x)
	}
	var mu sync.Mutex
	var done []int64
	var wg sync.WaitGroup
	for _, k := range keys {
		wg.Add(1)
		go func(g []row) {
			defer wg.Done()
			for _, x := range g {
				if err := r.svc.PublishEncoded(ctx, &x.msg); err != nil {
					r.failures.Add(1)
					if !errors.Is(err, context.Canceled) {
						o.log.Warn("outbox publish failed; the row stays", zap.Int64("id", x.id),
							zap.String("message_id", x.msg.Publishing.MessageId), zap.Error(err))
					}
					return
				}
				if o.onPub != nil {
					o.onPub(x.msg.Publishing.MessageId)
				}
				mu.Lock()
				done = append(done, x.id)
				mu.Unlock()
			}
		}(groups[k])
	}
	wg.Wait()
	return done
}

func (o *Outbox) registerMetrics(r *relay) error {
	if o.meter == nil {
		return nil
	}
	m := o.meter.Meter("github.com/hato-go/hato/outbox/pgoutbox")
	backlog, err1 := m.Int64ObservableGauge("hato.outbox.backlog", metric.WithDescription("Rows in the outbox table."))
	age, err2 := m.Float64ObservableGauge("hato.outbox.backlog.age", metric.WithUnit("s"),
		metric.WithDescription("Age of the oldest row in the outbox table."))
	pub, err3 := m.Int64ObservableCounter("hato.outbox.published", metric.WithDescription("Messages relayed and confirmed."))
	fail, err4 := m.Int64ObservableCounter("hato.outbox.publish.failures", metric.WithDescription("Relay publishes that failed."))
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return fmt.Errorf("pgoutbox: metrics: %w", err)
	}
	reg, err := m.RegisterCallback(func(_ context.Context, ob metric.Observer) error {
		ob.ObserveInt64(backlog, r.backlog.Load())
		ob.ObserveFloat64(age, time.Duration(r.ageNanos.Load()).Seconds())
		ob.ObserveInt64(pub, int64(r.published.Load()))
		ob.ObserveInt64(fail, int64(r.failures.Load()))
		return nil
	}, backlog, age, pub, fail)
	if err != nil {
		return fmt.Errorf("pgoutbox: metrics: %w", err)
	}
	r.reg = reg
	return nil
}
