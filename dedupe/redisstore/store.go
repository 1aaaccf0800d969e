// Package redisstore is a hato.DedupeClaimer on Redis: a de-duplication
// store shared by every node of a service, for hato.Dedupe.
//
// # Keys
//
// One string key per message: prefix + hato's key (the route's queue and
// the message uuid, so keys are per service and route). Its value is
// "c:<owner>" while a node holds a claim (expiring with the lease, PX) and
// "d" once the message was handled (expiring after the Dedupe window).
// Redis expires keys itself: there is no housekeeping to run.
//
// # Atomicity
//
// Claim and Release are Lua scripts, atomic on the server: two nodes that
// claim the same key at the same moment get one ClaimTaken and one
// ClaimHeld. On Redis Cluster each call touches one key (one slot).
package redisstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hato-go/hato"
)

// DefaultPrefix is the key prefix unless WithPrefix says otherwise.
const DefaultPrefix = "hato:dedupe:"

// ErrInvalidOption is wrapped by New's errors.
var ErrInvalidOption = errors.New("redisstore: invalid option")

const done = "d"

var claimScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if v == 'd' then return 3 end
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 2`)

var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`)

// Store is a hato.DedupeClaimer on Redis. Safe for concurrent use; every
// call is one round trip, bounded by its ctx (and the client's timeouts).
type Store struct {
	rdb    redis.UniversalClient
	prefix string
}

// Option configures a Store.
type Option func(*Store) error

// WithPrefix sets the prefix of every key (default DefaultPrefix); use one
// per environment or test sharing a Redis.
func WithPrefix(p string) Option {
	return func(s *Store) error {
		if p == "" {
			return fmt.Errorf("%w: empty prefix", ErrInvalidOption)
		}
		s.prefix = p
		return nil
	}
}

// New returns a store on rdb, which the caller owns (and closes).
func New(rdb redis.UniversalClient, opts ...Option) (*Store, error) {
	if rdb == nil {
		return nil, fmt.Errorf("%w: nil client", ErrInvalidOption)
	}
	s := &Store{rdb: rdb, prefix: DefaultPrefix}
	for _, o := range opts {
		if err := o(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

var _ hato.DedupeClaimer = (*Store)(nil)

// Seen implements hato.DedupeStore: whether key is recorded as handled.
func (s *Store) Seen(ctx context.Context, key string) (bool, error) {
	v, err := s.rdb.Get(ctx, s.prefix+key).Result()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("redisstore: seen: %w", err)
	}
	return v == done, nil
}

// Record implements hato.DedupeStore: key is handled, for ttl; it replaces a
// claim.
func (s *Store) Record(ctx context.Context, key string, ttl time.Duration) error {
	if err := s.rdb.Set(ctx, s.prefix+key, done, max(ttl, time.Millisecond)).Err(); err != nil {
		return fmt.Errorf("redisstore: record: %w", err)
	}
	return nil
}

// Claim implements hato.DedupeClaimer.
func (s *Store) Claim(ctx context.Context, key, owner string, lease time.Duration) (hato.ClaimState, error) {
	n, err := claimScript.Run(ctx, s.rdb, []string{s.prefix + key}, "c:"+owner, max(lease.Milliseconds(), 1)).Int()
	if err != nil {
		return 0, fmt.Errorf("redisstore: claim: %w", err)
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
	if err := releaseScript.Run(ctx, s.rdb, []string{s.prefix + key}, "c:"+owner).Err(); err != nil {
		return fmt.Errorf("redisstore: release: %w", err)
	}
	return nil
}

// RecordTx queues the SET that records key in pipe, a MULTI/EXEC pipeline
// (rdb.TxPipelined) the handler runs its own writes in: the effect and the
// done mark commit together, so a node that dies after EXEC leaves the
// message recorded. key and ttl come from hato.DedupeKey.
func (s *Store) RecordTx(pipe redis.Pipeliner, key string, ttl time.Duration) {
	pipe.Set(context.Background(), s.prefix+key, done, max(ttl, time.Millisecond))
}
