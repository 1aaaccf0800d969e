// Package pgstore is a hato.DedupeClaimer on PostgreSQL: a de-duplication
// store shared by every node of a service, for hato.Dedupe.
//
// # Table
//
// One row per message key (hato's key: the route's queue and the message
// uuid, so keys are per service and route): owner is the claim's owner
// while a node holds it, "" once the message was handled; expires is the
// claim's lease or the Dedupe window, in the database's clock (now()), so
// nodes' clocks do not matter. Migrate creates the table; WithTable names
// it (schema-qualified if wanted).
//
// # Atomicity
//
// Claim is one INSERT ... ON CONFLICT DO UPDATE ... WHERE (expired, or
// ours): two nodes that claim the same key at once get one ClaimTaken and
// one ClaimHeld (or, if the row committed after the statement's snapshot,
// ClaimHeld, and hato asks again).
//
// # Housekeeping
//
// Expired rows are deleted in batches (WithSweep: at most batch rows a
// statement, every interval) by a goroutine New starts and Close stops.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/hato-go/hato"
)

// DefaultTable is the table's name unless WithTable says otherwise.
const DefaultTable = "hato_dedupe"

// Sweep defaults (see WithSweep).
const (
	DefaultSweepInterval = time.Minute
	DefaultSweepBatch    = 1000
)

// ErrInvalidOption is wrapped by New's errors.
var ErrInvalidOption = errors.New("pgstore: invalid option")

// DB is what the store needs of a connection pool; *pgxpool.Pool has it.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Store is a hato.DedupeClaimer on PostgreSQL. Safe for concurrent use;
// each call is one statement, bounded by its ctx.
type Store struct {
	db         DB
	table      string // quoted, maybe schema-qualified
	index      string // quoted, unqualified
	interval   time.Duration
	batch      int
	onSweepErr func(error)

	q struct{ claim, record, release, seen, sweep string }

	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

// Option configures a Store.
type Option func(*Store) error

var ident = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)

// WithTable names the table: "name" or "schema.name", plain identifiers.
func WithTable(name string) Option {
	return func(s *Store) error {
		parts := strings.Split(name, ".")
		if len(parts) > 2 {
			return fmt.Errorf("%w: table %q", ErrInvalidOption, name)
		}
		for _, p := range parts {
			if !ident.MatchString(p) {
				return fmt.Errorf("%w: table %q", ErrInvalidOption, name)
			}
		}
		s.table = pgx.Identifier(parts).Sanitize()
		s.index = pgx.Identifier{parts[len(parts)-1] + "_expires"}.Sanitize()
		return nil
	}
}

// WithSweep deletes expired rows every interval, at most batch a statement
// until none is left; interval 0 turns sweeping off (sweep yourself with
// Sweep). onErr, if not nil, is told of each failed sweep (e.g. to log or
// count it); it must not block.
func WithSweep(interval time.Duration, batch int, onErr func(error)) Option {
	return func(s *Store) error {
		if interval < 0 || batch <= 0 {
			return fmt.Errorf("%w: sweep every %s, batch %d", ErrInvalidOption, interval, batch)
		}
		s.interval, s.batch, s.onSweepErr = interval, batch, onErr
		return nil
	}
}

// New returns a store on db, which the caller owns (and closes after
// Close). It starts the sweeping goroutine (see WithSweep): call Close.
func New(db DB, opts ...Option) (*Store, error) {
	if db == nil {
		return nil, fmt.Errorf("%w: nil db", ErrInvalidOption)
	}
	s := &Store{db: db, interval: DefaultSweepInterval, batch: DefaultSweepBatch, stop: make(chan struct{})}
	if err := WithTable(DefaultTable)(s); err != nil {
		return nil, err
	}
	for _, o := range opts {
		if err := o(s); err != nil {
			return nil, err
		}
	}
	s.prepare()
	if s.interval > 0 {
		s.wg.Add(1)
		go s.sweeper()
	}
	return s, nil
}

func (s *Store) prepare() {
	t := s.table
	s.q.claim = `WITH ins AS (
  INSERT INTO ` + t + ` AS d (key, owner, expires) VALUES ($1, $2, now() + $3 * interval '1 millisecond')
  ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, expires = excluded.expires
  WHERE d.expires <= now() OR d.owner = excluded.owner
  RETURNING 1)
SELECT CASE WHEN EXISTS (SELECT 1 FROM ins) THEN 1
  WHEN (SELECT owner = '' FROM ` + t + ` WHERE key = $1) THEN 3
  ELSE 2 END`
	s.q.record = `INSERT INTO ` + t + ` (key, owner, expires) VALUES ($1, '', now() + $2 * interval '1 millisecond')
ON CONFLICT (key) DO UPDATE SET owner = '', expires = excluded.expires`
	s.q.release = `DELETE FROM ` + t + ` WHERE key = $1 AND owner = $2`
	s.q.seen = `SELECT EXISTS (SELECT 1 FROM ` + t + ` WHERE key = $1 AND owner = '' AND expires > now())`
	s.q.sweep = `DELETE FROM ` + t + ` WHERE key IN (SELECT key FROM ` + t +
		` WHERE expires <= now() LIMIT $1 FOR UPDATE SKIP LOCKED)`
}

// Migrate creates the table and its index if they do not exist. Safe to
// run from every node at start.
func (s *Store) Migrate(ctx context.Context) error {
	_, err := s.db.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+s.table+` (
  key text PRIMARY KEY,
  owner text NOT NULL,
  expires timestamptz NOT NULL)`)
	if err == nil {
		_, err = s.db.Exec(ctx, `CREATE INDEX IF NOT EXISTS `+s.index+` ON `+s.table+` (expires)`)
	}
	if err != nil {
		return fmt.Errorf("pgstore: migrate: %w", err)
	}
	return nil
}

var _ hato.DedupeClaimer = (*Store)(nil)

// Seen implements hato.DedupeStore.
func (s *Store) Seen(ctx context.Context, key string) (bool, error) {
	var ok bool
	if err := s.db.QueryRow(ctx, s.q.seen, key).Scan(&ok); err != nil {
		return false, fmt.Errorf("pgstore: seen: %w", err)
	}
	return ok, nil
}

// Record implements hato.DedupeStore: it replaces a claim.
func (s *Store) Record(ctx context.Context, key string, ttl time.Duration) error {
	if _, err := s.db.Exec(ctx, s.q.record, key, ttl.Milliseconds()); err != nil {
		return fmt.Errorf("pgstore: record: %w", err)
	}
	return nil
}

// Claim implements hato.DedupeClaimer.
func (s *Store) Claim(ctx context.Context, key, owner string, lease time.Duration) (hato.ClaimState, error) {
	var n int
	if err := s.db.QueryRow(ctx, s.q.claim, key, owner, max(lease.Milliseconds(), 1)).Scan(&n); err != nil {
		return 0, fmt.Errorf("pgstore: claim: %w", err)
	}
	switch n {
	case 1:
		return hato.ClaimTaken, nil
	case 3:
		return hato.ClaimDone, nil
	}
	return hato.ClaimHeld, nil
}

// Release implements hato.DedupeClaimer.
func (s *Store) Release(ctx context.Context, key, owner string) error {
	if _, err := s.db.Exec(ctx, s.q.release, key, owner); err != nil {
		return fmt.Errorf("pgstore: release: %w", err)
	}
	return nil
}

// Sweep deletes expired rows, at most batch (WithSweep) per statement,
// until none is left or ctx ends; it returns how many it deleted.
func (s *Store) Sweep(ctx context.Context) (int64, error) {
	var total int64
	for {
		tag, err := s.db.Exec(ctx, s.q.sweep, s.batch)
		if err != nil {
			return total, fmt.Errorf("pgstore: sweep: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < int64(s.batch) {
			return total, nil
		}
	}
}

func (s *Store) sweeper() {
	defer s.wg.Done()
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.interval)
		go func() { // Close ends a sweep in progress
			select {
			case <-s.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		_, err := s.Sweep(ctx)
		cancel()
		if err != nil && s.onSweepErr != nil {
			s.onSweepErr(err)
		}
	}
}

// Close stops the sweeping goroutine and waits for it. It does not close
// the db. Idempotent.
func (s *Store) Close() {
	s.once.Do(func() { close(s.stop) })
	s.wg.Wait()
}

// Execer is what RecordTx needs of a transaction; pgx.Tx has it.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// RecordTx records key in tx, the transaction the handler writes its
// effect in: the effect and the done mark commit together, so a node that
// dies after the commit leaves the message recorded. key and ttl come from
// hato.DedupeKey; the table must be in tx's database.
func (s *Store) RecordTx(ctx context.Context, tx Execer, key string, ttl time.Duration) error {
	if _, err := tx.Exec(ctx, s.q.record, key, ttl.Milliseconds()); err != nil {
		return fmt.Errorf("pgstore: record: %w", err)
	}
	return nil
}
