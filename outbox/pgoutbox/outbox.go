// Package pgoutbox is a transactional outbox on PostgreSQL for hato: a
// service writes its rows and the messages announcing them in one
// transaction (Outbox.Publish), and a relay running inside the service (a
// hato.Component) publishes committed messages with confirms, deleting each
// row only once the broker confirmed it.
//
// # Guarantees
//
// A committed message is published at least once: a relay that crashes
// before its batch's transaction committed leaves the rows, and they are
// published again (by it or another relay), with the same message uuid, so
// a consumer with hato.Dedupe on a shared store drops the copy. A rolled
// back transaction publishes nothing. Several relays on one table share the
// work (SELECT ... FOR UPDATE SKIP LOCKED). With WithOrdered, messages of
// one routing key are published in commit order (see WithOrdered).
//
// # Pickup
//
// Publish notifies the table's channel (pg_notify, delivered at commit); a
// relay LISTENs on it and polls every WithPollInterval as a fallback.
//
// # Visibility
//
// Relay.Stats reports the backlog (rows, oldest row's age) and counts;
// WithMeterProvider exports them as OpenTelemetry metrics. Ready (part of
// Service.Ready) fails while the relay cannot reach the database.
package pgoutbox

import (
	"bytes"
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/zap"

	"github.com/hato-go/hato"
)

// DefaultTable is the outbox table unless WithTable says otherwise.
const DefaultTable = "hato_outbox"

// Defaults of the relay's options.
const (
	DefaultBatch        = 100
	DefaultPollInterval = time.Second
)

var (
	// ErrInvalidOption is wrapped by New's errors.
	ErrInvalidOption = errors.New("pgoutbox: invalid option")
	// ErrNotReady is wrapped by Relay.Ready's errors.
	ErrNotReady = errors.New("pgoutbox: relay not ready")
)

// Tx is what Publish needs of the caller's transaction; pgx.Tx has it.
type Tx interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Outbox is one outbox table: Publish writes to it; as a hato.Component
// (hato.WithComponent) it is the relay that publishes its rows. Safe for
// concurrent use.
type Outbox struct {
	pool     *pgxpool.Pool
	table    string // quoted
	channel  string // the NOTIFY channel, unquoted
	batch    int
	poll     time.Duration
	ordered  bool
	log      *zap.Logger
	meter    metric.MeterProvider
	relay    atomic.Pointer[relay]
	onPub    func(messageID string)
	q        queries
	tableRaw string
}

type queries struct{ insert, notify, pick, pickOrdered, del, stats, lock string }

// Option configures an Outbox.
type Option func(*Outbox) error

var ident = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)

// WithTable names the table: "name" or "schema.name", plain identifiers.
func WithTable(name string) Option {
	return func(o *Outbox) error {
		parts := strings.Split(name, ".")
		if len(parts) > 2 {
			return fmt.Errorf("%w: table %q", ErrInvalidOption, name)
		}
		for _, p := range parts {
			if !ident.MatchString(p) {
				return fmt.Errorf("%w: table %q", ErrInvalidOption, name)
			}
		}
		o.table = pgx.Identifier(parts).Sanitize()
		o.tableRaw = name
		o.channel = strings.ReplaceAll(name, ".", "_") + "_notify"
		return nil
	}
}

// WithBatch sets how many rows a relay takes per transaction (default
// DefaultBatch).
func WithBatch(n int) Option {
	return func(o *Outbox) error {
		if n <= 0 {
			return fmt.Errorf("%w: batch %d", ErrInvalidOption, n)
		}
		o.batch = n
		return nil
	}
}

// WithPollInterval sets how often a relay looks for rows without a
// notification (default DefaultPollInterval); it also refreshes Stats.
func WithPollInterval(d time.Duration) Option {
	return func(o *Outbox) error {
		if d <= 0 {
			return fmt.Errorf("%w: poll interval %s", ErrInvalidOption, d)
		}
		o.poll = d
		return nil
	}
}

// WithOrdered keeps the order of messages of one routing key: one relay at
// a time works on the table (the others wait on a transaction-level
// advisory lock, as hot standbys) and a key's messages are published one
// after the other, each after the previous one's confirm; a failed one
// holds back the key's later ones until it is published. Keys are
// published concurrently. Without it, relays and messages run in parallel
// and order is not kept.
func WithOrdered() Option {
	return func(o *Outbox) error { o.ordered = true; return nil }
}

// WithLogger sets the relay's logger (default: the service's).
func WithLogger(l *zap.Logger) Option {
	return func(o *Outbox) error { o.log = l; return nil }
}

// WithMeterProvider exports the relay's Stats as OpenTelemetry metrics:
// hato.outbox.backlog (rows), hato.outbox.backlog.age (s, oldest row),
// hato.outbox.published and hato.outbox.publish.failures.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(o *Outbox) error { o.meter = mp; return nil }
}

// WithOnPublished calls fn with each message's uuid once the broker
// confirmed it (before its row's delete commits). fn runs on a relay
// goroutine and must not block.
func WithOnPublished(fn func(messageID string)) Option {
	return func(o *Outbox) error { o.onPub = fn; return nil }
}

// New returns the outbox on pool's database; the caller owns pool and
// closes it after the service stopped.
func New(pool *pgxpool.Pool, opts ...Option) (*Outbox, error) {
	if pool == nil {
		return nil, fmt.Errorf("%w: nil pool", ErrInvalidOption)
	}
	o := &Outbox{pool: pool, batch: DefaultBatch, poll: DefaultPollInterval}
	if err := WithTable(DefaultTable)(o); err != nil {
		return nil, err
	}
	for _, opt := range opts {
		if opt == nil {
			return nil, fmt.Errorf("%w: nil option", ErrInvalidOption)
		}
		if err := opt(o); err != nil {
			return nil, err
		}
	}
	o.prepare()
	return o, nil
}

const columns = `exchange, routing_key, topic, mandatory, message_id, content_type, delivery_mode, app_id, msg_time, headers, body`

func (o *Outbox) prepare() {
	t := o.table
	o.q = queries{
		insert: `INSERT INTO ` + t + ` (` + columns + `) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		notify: `SELECT pg_notify($1, '')`,
		pick:   `SELECT id, ` + columns + ` FROM ` + t + ` ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED`,
		// Ordered: one relay at a time (lock below), no row skipped.
		pickOrdered: `SELECT id, ` + columns + ` FROM ` + t + ` ORDER BY id LIMIT $1 FOR UPDATE`,
		del:         `DELETE FROM ` + t + ` WHERE id = ANY($1)`,
		stats:       `SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 FROM ` + t,
		lock:        `SELECT pg_try_advisory_xact_lock(hashtext($1))`,
	}
}

// Migrate creates the table if it does not exist. Safe to run from every
// node at start.
func (o *Outbox) Migrate(ctx context.Context) error {
	_, err := o.pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+o.table+` (
  id bigserial PRIMARY KEY,
  created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  exchange text NOT NULL,
  routing_key text NOT NULL,
  topic text NOT NULL,
  mandatory boolean NOT NULL,
  message_id text NOT NULL,
  content_type text NOT NULL,
  delivery_mode smallint NOT NULL,
  app_id text NOT NULL,
  msg_time timestamptz NOT NULL,
  headers bytea,
  body bytea NOT NULL)`)
	if err != nil {
		return fmt.Errorf("pgoutbox: migrate: %w", err)
	}
	return nil
}

// Publish writes the message svc.Publish(ctx, data, routingKey, opts...)
// would send (same options, envelope and encoding: hato.Service.Encode) to
// the outbox in tx, the caller's transaction, and returns its message
// uuid. It is published by a relay once tx commits, never if it rolls
// back. svc need not be started. WaitForConfirm has no effect.
func (o *Outbox) Publish(ctx context.Context, tx Tx, svc *hato.Service, data any, routingKey string,
	opts ...hato.PublishOption) (string, error) {
	m, err := svc.Encode(data, routingKey, opts...)
	if err != nil {
		return "", err
	}
	hdr, err := encodeHeaders(m.Publishing.Headers)
	if err != nil {
		return "", err
	}
	p := &m.Publishing
	if _, err := tx.Exec(ctx, o.q.insert, m.Exchange, m.RoutingKey, m.Topic, m.Mandatory, p.MessageId,
		p.ContentType, int16(p.DeliveryMode), p.AppId, p.Timestamp, hdr, p.Body); err != nil {
		return "", fmt.Errorf("pgoutbox: publish %q: %w", routingKey, err)
	}
	if _, err := tx.Exec(ctx, o.q.notify, o.channel); err != nil {
		return "", fmt.Errorf("pgoutbox: publish %q: notify: %w", routingKey, err)
	}
	return p.MessageId, nil
}

func init() {
	// Header values hato accepts (broker.ValidateHeaders), for gob.
	gob.Register(amqp.Table{})
	gob.Register([]any{})
	gob.Register(time.Time{})
	gob.Register(amqp.Decimal{})
	gob.Register([]byte{})
}

func encodeHeaders(h amqp.Table) ([]byte, error) {
	if len(h) == 0 {
		return nil, nil
	}
	var b bytes.Buffer
	if err := gob.NewEncoder(&b).Encode(h); err != nil {
		return nil, fmt.Errorf("pgoutbox: headers: %w", err)
	}
	return b.Bytes(), nil
}

func decodeHeaders(b []byte) (amqp.Table, error) {
	if len(b) == 0 {
		return nil, nil
	}
	var h amqp.Table
	if err := gob.NewDecoder(bytes.NewReader(b)).Decode(&h); err != nil {
		return nil, fmt.Errorf("pgoutbox: headers: %w", err)
	}
	return h, nil
}
