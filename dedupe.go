package hato

import (
	"container/list"
	"context"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/hato-go/hato/actors"
	"github.com/hato-go/hato/broker"
)

// DedupeStore remembers which messages a route handled, for Dedupe. Keys are
// opaque strings (the route's queue and the message's uuid, see Dedupe).
//
// Both methods must be safe for concurrent use and honour ctx: hato bounds
// every call by DedupeStoreTimeout and by the handler's context. An error
// never stops a message: hato fails open, handles the message as new (Seen)
// or leaves it unrecorded (Record), logs a warning and counts the error in
// Service.DedupeStats.
//
// NewMemoryDedupeStore is hato's in-process implementation. Stores shared by
// several nodes are in their own modules, github.com/hato-go/hato/dedupe/
// redisstore and .../dedupe/pgstore; they also implement DedupeClaimer, which
// a store of your own should too: a plain DedupeStore leaves two nodes free
// to handle copies at the same moment.
type DedupeStore interface {
	// Seen reports whether key was recorded and its ttl has not passed.
	Seen(ctx context.Context, key string) (bool, error)
	// Record remembers key for ttl (again, if it is already there).
	Record(ctx context.Context, key string, ttl time.Duration) error
}

// DefaultDedupeEntries bounds the in-memory store Dedupe makes when given
// none.
const DefaultDedupeEntries = 100_000

// DedupeStoreTimeout bounds each call hato makes to a DedupeStore.
const DedupeStoreTimeout = 5 * time.Second

// MemoryDedupeStore is an in-process DedupeStore bounded in memory: it holds at
// most its maximum of keys and, when full, forgets the key recorded least
// recently. An expired key is never seen; it is removed when met. Safe for
// concurrent use; its methods never block on anything but a mutex and never
// fail.
type MemoryDedupeStore struct {
	mu    sync.Mutex
	keys  map[string]*list.Element // of *dedupEntry, least recently recorded first
	order *list.List
	max   int
	now   func() time.Time
}

type dedupEntry struct {
	key     string
	expires time.Time
}

// NewMemoryDedupeStore returns an empty store holding up to maxEntries keys
// (zero or less means DefaultDedupeEntries).
func NewMemoryDedupeStore(maxEntries int) *MemoryDedupeStore {
	if maxEntries <= 0 {
		maxEntries = DefaultDedupeEntries
	}
	return &MemoryDedupeStore{keys: map[string]*list.Element{}, order: list.New(), max: maxEntries, now: time.Now}
}

// Seen implements DedupeStore.
func (m *MemoryDedupeStore) Seen(_ context.Context, key string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.keys[key]
	if !ok {
		return false, nil
	}
	if !m.now().Before(e.Value.(*dedupEntry).expires) {
		m.remove(e)
		return false, nil
	}
	return true, nil
}

// Record implements DedupeStore.
func (m *MemoryDedupeStore) Record(_ context.Context, key string, ttl time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	if e, ok := m.keys[key]; ok {
		m.remove(e)
	}
	// Expired keys at the front go first; then the least recently recorded
	// while full.
	for f := m.order.Front(); f != nil && !now.Before(f.Value.(*dedupEntry).expires); f = m.order.Front() {
		m.remove(f)
	}
	for len(m.keys) >= m.max {
		m.remove(m.order.Front())
	}
	m.keys[key] = m.order.PushBack(&dedupEntry{key: key, expires: now.Add(ttl)})
	return nil
}

// Len returns how many keys the store holds (expired ones not yet removed
// included).
func (m *MemoryDedupeStore) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.keys)
}

func (m *MemoryDedupeStore) remove(e *list.Element) {
	m.order.Remove(e)
	delete(m.keys, e.Value.(*dedupEntry).key)
}

// DedupeOption is the option Dedupe returns. It implements Option and
// RouteOption.
type DedupeOption struct {
	store  DedupeStore
	window time.Duration
	lease  time.Duration
}

// Dedupe skips a message whose uuid the route already handled within
// window: the duplicate is acked without running the handler (tomodachi's
// in-process dedup leaves it unacked), logged at debug, counted in
// Service.DedupeStats and reported as a DeliveryEvent with ActionDuplicate.
// For every route of the service, or one route. Off by default.
//
// The key is the route's queue and the message's uuid: the envelope's
// message uuid, or for a body without one (envelope.Raw) the AMQP message
// id; a message with neither is always handled. The check runs after
// decoding, before middleware and the handler. A message is recorded, for
// window, only once its handler returned nil and every publish it made was
// confirmed: a failed attempt (retried, requeued, dead-lettered, dropped)
// records nothing.
//
// Copies of one message in flight at once in a route (Concurrency above 1,
// or a redelivery while the first copy's publishes await their confirms):
// the later copy waits, holding its handler slot, until the earlier one is
// recorded or failed, then is skipped as a duplicate or handled. Across
// processes only the store decides: two nodes may handle copies at the
// same moment, unless the store is a DedupeClaimer (see its doc): then a
// claim with a lease, taken before the handler runs, lets one node handle a
// message while a copy on another node waits for it to be recorded, or
// released when it failed, or for the lease to expire when its node died.
//
// store nil means a NewMemoryDedupeStore(DefaultDedupeEntries) per route,
// which forgets on restart and sees only its own process's messages; for
// a store shared by nodes use github.com/hato-go/hato/dedupe/redisstore or
// .../dedupe/pgstore, or implement DedupeClaimer. A store given
// to the service is shared by its routes. Store errors fail open (see
// DedupeStore).
func Dedupe(window time.Duration, store DedupeStore) DedupeOption {
	return DedupeOption{store: store, window: window}
}

func (o DedupeOption) check() error {
	if o.window <= 0 {
		return invalid("dedupe window %s", o.window)
	}
	return nil
}

func (o DedupeOption) applyService(c *config) error {
	if err := o.check(); err != nil {
		return err
	}
	c.dedupe = &o
	return nil
}

func (o DedupeOption) applyRoute(r *routeConfig) error {
	if err := o.check(); err != nil {
		return err
	}
	r.dedupe = &o
	return nil
}

// DedupeStats counts what Dedupe did in a service, across its routes.
type DedupeStats struct {
	// Duplicates is how many messages were acked as duplicates, unhandled.
	Duplicates uint64
	// StoreErrors is how many DedupeStore calls failed (hato failed open).
	StoreErrors uint64
}

// dedupeCounters are a service's DedupeStats.
type dedupeCounters struct {
	duplicates, storeErrors atomic.Uint64
}

// DedupeStats returns the service's de-duplication counts (see Dedupe).
func (s *Service) DedupeStats() DedupeStats {
	return DedupeStats{Duplicates: s.dedupe.duplicates.Load(), StoreErrors: s.dedupe.storeErrors.Load()}
}

// deduper is one route's de-duplication: its store, and the keys of the
// copies it handles right now.
type deduper struct {
	store    DedupeStore
	window   time.Duration
	lease    time.Duration // of a DedupeClaimer's claims
	queue    string
	route    string
	log      *zap.Logger
	counters *dedupeCounters
	events   func(DeliveryEvent)

	mu       sync.Mutex
	inflight map[string]chan struct{} // closed when the copy in flight is recorded or failed
}

// deduper returns r's de-duplication, nil when it has none.
func (s *Service) deduper(r *route) *deduper {
	o := s.cfg.dedupe
	if r.cfg.dedupe != nil {
		o = r.cfg.dedupe
	}
	if o == nil {
		return nil
	}
	store := o.store
	if store == nil {
		store = NewMemoryDedupeStore(DefaultDedupeEntries)
	}
	lease := o.lease
	if lease <= 0 {
		lease = DefaultDedupeLease
	}
	return &deduper{
		store: store, window: o.window, lease: lease, queue: r.cfg.queue, route: r.name,
		log: s.log.With(zap.String("route", r.name)), counters: &s.dedupe, events: s.cfg.onDeliveryEvent,
		inflight: map[string]chan struct{}{},
	}
}

// key is the message's key in the store; "" when it has no uuid.
func (dd *deduper) key(uuid string, d *broker.Delivery) string {
	if uuid == "" {
		uuid = d.MessageId
	}
	if uuid == "" {
		return ""
	}
	return dd.queue + "/" + uuid
}

type dedupeKeyCtx struct{}

type dedupeKey struct {
	key    string
	window time.Duration
}

// DedupeKey returns, inside a handler of a route with Dedupe, the
// message's key in the DedupeStore and the Dedupe window; ok is false
// elsewhere or for a message without id. A handler whose effect lives in
// the store's database records the key in the same transaction as its
// effect (pgstore.Store.RecordTx, redisstore.Store.RecordTx): then a node
// that dies after committing leaves the message recorded, and no other
// node repeats the effect.
func DedupeKey(ctx context.Context) (key string, window time.Duration, ok bool) {
	k, ok := ctx.Value(dedupeKeyCtx{}).(dedupeKey)
	return k.key, k.window, ok
}

// run runs handler for a decoded delivery unless its key was handled within
// the window; a duplicate is acked (nil) without running it.
func (dd *deduper) run(ctx context.Context, uuid string, d *broker.Delivery, handler func(context.Context) error) error {
	key := dd.key(uuid, d)
	if key == "" {
		return handler(ctx)
	}
	hctx := context.WithValue(ctx, dedupeKeyCtx{}, dedupeKey{key, dd.window})
	handle := func() error { return handler(hctx) }
	release, err := dd.claim(ctx, key)
	if err != nil {
		return err
	}
	if c, ok := dd.store.(DedupeClaimer); ok {
		return dd.runClaimed(ctx, c, key, d, handle, release)
	}
	if dd.seen(ctx, key) {
		release()
		afterAck(ctx, func() { dd.duplicate(key, d) })
		return nil
	}
	handled := false
	defer func() {
		if !handled { // failed or panicked: nothing to record
			release()
		}
	}()
	if err := handle(); err != nil {
		return err
	}
	handled = true
	dd.settle(ctx, key, nil, release)
	return nil
}

// claim marks key in flight, first waiting for a copy already in flight to
// be recorded or to fail. It fails only when ctx ends.
func (dd *deduper) claim(ctx context.Context, key string) (release func(), err error) {
	for {
		dd.mu.Lock()
		busy, ok := dd.inflight[key]
		if !ok {
			done := make(chan struct{})
			dd.inflight[key] = done
			dd.mu.Unlock()
			return func() {
				dd.mu.Lock()
				delete(dd.inflight, key)
				dd.mu.Unlock()
				close(done)
			}, nil
		}
		dd.mu.Unlock()
		select {
		case <-busy:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (dd *deduper) seen(ctx context.Context, key string) bool {
	ctx, cancel := context.WithTimeout(ctx, DedupeStoreTimeout)
	defer cancel()
	seen, err := dd.store.Seen(ctx, key)
	if err != nil {
		dd.storeFailed("dedupe store lookup failed; handling the message", key, err)
		return false
	}
	return seen
}

// heldClaim is a DedupeClaimer claim held while a message is handled: stop
// ends its renewals, unclaim stops them and releases the claim (blocks on
// the store).
type heldClaim struct {
	stop, unclaim func()
}

// settle records key once every publish the handler made is confirmed (the
// delivery is then acked), then releases it; a failed publish fails the
// delivery, which records nothing and gives up claim (nil for a plain
// DedupeStore).
func (dd *deduper) settle(ctx context.Context, key string, claim *heldClaim, release func()) {
	settled := func(err error) {
		// The store may block: not on the settling goroutine.
		if err != nil {
			if claim == nil {
				release()
				return
			}
			go func() {
				defer release()
				claim.unclaim()
			}()
			return
		}
		go func() {
			defer release()
			if claim != nil {
				claim.stop() // no renewal after the done mark
			}
			dd.record(key)
		}()
	}
	if tr := actors.TrackerFrom(ctx); tr == nil || !tr.AfterSettle(settled) {
		settled(nil)
	}
}

// afterAck runs fn once the delivery handled in ctx, whose handler returned
// nil, is being acked: when the tracker settled without a publish failure.
// fn must not block.
func afterAck(ctx context.Context, fn func()) {
	tr := actors.TrackerFrom(ctx)
	if tr == nil || !tr.AfterSettle(func(err error) {
		if err == nil {
			fn()
		}
	}) {
		fn()
	}
}

// record runs on its own context: the handler's may end (a stop) while the
// message is acked all the same.
func (dd *deduper) record(key string) {
	ctx, cancel := context.WithTimeout(context.Background(), DedupeStoreTimeout)
	defer cancel()
	if err := dd.store.Record(ctx, key, dd.window); err != nil {
		dd.storeFailed("dedupe store record failed; a copy of the message may be handled again", key, err)
	}
}

func (dd *deduper) storeFailed(msg, key string, err error) {
	dd.counters.storeErrors.Add(1)
	dd.log.Warn(msg, zap.String("dedupe_key", key), zap.Error(err))
}

func (dd *deduper) duplicate(key string, d *broker.Delivery) {
	dd.counters.duplicates.Add(1)
	dd.log.Debug("duplicate message acked unhandled", zap.String("dedupe_key", key),
		zap.String("message_id", d.MessageId), zap.String("routing_key", d.RoutingKey))
	if dd.events != nil {
		dd.events(DeliveryEvent{Route: dd.route, Action: ActionDuplicate, MessageID: d.MessageId,
			RoutingKey: d.RoutingKey})
	}
}

// DedupStore is the old spelling of DedupeStore.
//
// Deprecated: use DedupeStore.
type DedupStore = DedupeStore

// MemoryDedupStore is the old spelling of MemoryDedupeStore.
//
// Deprecated: use MemoryDedupeStore.
type MemoryDedupStore = MemoryDedupeStore

// NewMemoryDedupStore is the old spelling of NewMemoryDedupeStore.
//
// Deprecated: use NewMemoryDedupeStore.
func NewMemoryDedupStore(maxEntries int) *MemoryDedupeStore { return NewMemoryDedupeStore(maxEntries) }

// DedupClaimer is the old spelling of DedupeClaimer.
//
// Deprecated: use DedupeClaimer.
type DedupClaimer = DedupeClaimer
