package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato/broker"
)

var dlqReplaySpec = spec{
	name: "dlq replay",
	args: "QUEUE",
	about: `Republishes the messages of a dead-letter queue to the exchange and routing
key they were first published with (x-hato-original-*), or to --to KEY, and
removes each from the queue only after the broker confirmed its republish
(and routed it: a message no queue takes stays). One message is in flight
at a time, so a crash or Ctrl-C loses nothing and duplicates at most that
one. The copy keeps the body, properties and headers, without the x-hato-*
dead-letter headers, with x-hato-replayed-at and x-hato-replay-count added.
Filters pick messages by reason, age and number; the others stay, in order.
Every message on the exchange and key reaches every queue bound to it, not
only the one that dead-lettered it; --to-queue sends it to its original
queue alone. Messages that fail again are dead-lettered again and are not
replayed twice in one run.

The x-hato-original-* headers are part of the message, so anyone who can
publish to the dead-letter queue can write them. Without --to, --exchange,
--to-queue or --trust-headers, replay only sends a message back to its
queue's own route: the exchange must be amq.topic (hato's and tomodachi's
default) and the routing key the one the queue's name is the hash of (a
route with a --routing-key-prefix needs that flag); --to-queue needs
x-hato-original-queue to be QUEUE without ".dlq". Other messages are
skipped and named. --trust-headers replays them where their headers say
(queues with an explicit queue name, or per-instance dead-letter queues,
need it or --to).

Before it publishes anything, replay reads the queue once as --dry-run
does and prints on stderr how many messages would go to each exchange and
routing key and how many are skipped, then asks "Replay N messages to
...? [y/N]"; only y or yes goes on, and then at most those N messages, to
those targets only (a message that arrived since is skipped and stays).
--yes (-y) replays without reading twice and without asking. When stdin
is not a terminal, replay refuses (exit 2) unless --yes or --dry-run, so a
script cannot replay by mistake.`,
	examples: `  hato dlq replay --dry-run QUEUE.dlq
  hato dlq replay QUEUE.dlq
  hato dlq replay --yes --json QUEUE.dlq
  hato dlq replay --reason 'connection refused' --older-than 10m --count 100 QUEUE.dlq
  hato dlq replay --to example.topic.retry QUEUE.dlq
`,
}

type replayOpts struct {
	conn      connFlags
	out       printer
	to        string
	exchange  string
	toQueue   bool
	reason    string
	olderThan time.Duration
	newerThan time.Duration
	count     int
	dryRun    bool
	trust     bool
	keyPrefix string
	yes       bool
}

func (o *replayOpts) register(fs *flag.FlagSet) {
	o.conn.register(fs)
	o.out.register(fs)
	fs.StringVar(&o.to, "to", "", "routing key to replay to instead of the original (as on the wire)")
	fs.StringVar(&o.exchange, "exchange", "", "exchange to replay to instead of the original")
	fs.BoolVar(&o.toQueue, "to-queue", false, "replay to the original queue only (through the default exchange)")
	fs.StringVar(&o.reason, "reason", "", "only messages whose x-hato-reason contains this text")
	fs.DurationVar(&o.olderThan, "older-than", 0, "only messages dead-lettered at least this long ago")
	fs.DurationVar(&o.newerThan, "newer-than", 0, "only messages dead-lettered less than this long ago")
	fs.IntVar(&o.count, "count", 0, "replay at most this many messages (0: all)")
	fs.BoolVar(&o.dryRun, "dry-run", false, "show what would be replayed; change nothing")
	fs.BoolVar(&o.trust, "trust-headers", false, "replay to where x-hato-original-* say even when it is not the queue's own route")
	fs.StringVar(&o.keyPrefix, "routing-key-prefix", "", "tomodachi's routing_key_prefix of the route, to check its routing key against the queue name")
	fs.BoolVar(&o.yes, "yes", false, "replay without showing the plan and asking (needed when stdin is not a terminal)")
	fs.BoolVar(&o.yes, "y", false, "short for --yes")
}

// replayed is the record dlq replay prints for each message it replays
// (or would, with --dry-run) or cannot.
type replayed struct {
	Action string `json:"action"` // replayed, would-replay, skipped
	deadLetter
	Exchange   string `json:"exchange"`
	RoutingKey string `json:"routing_key"`
	Why        string `json:"why,omitempty"`
}

func (r replayed) text() string {
	s := fmt.Sprintf("%-12s %s -> exchange %q key %q (reason: %s)", r.Action, safe(orDash(r.MessageID)), r.Exchange, r.RoutingKey, safe(clip(orDash(shortReason(r.Reason)), 160)))
	if r.Why != "" {
		s += ": " + r.Why
	}
	return s
}

// replaySummary is the last record of dlq replay.
type replaySummary struct {
	Queue    string `json:"queue"`
	Replayed int    `json:"replayed"`
	Matched  int    `json:"matched"`
	Skipped  int    `json:"skipped"`
	Left     int    `json:"left"`
	DryRun   bool   `json:"dry_run"`
	// Targets are the distinct exchange/key pairs replayed (or that would
	// be) to, in the order first seen.
	Targets []replayTarget `json:"targets,omitempty"`
	Error   string         `json:"error,omitempty"`
}

type replayTarget struct {
	Exchange   string `json:"exchange"`
	RoutingKey string `json:"routing_key"`
	// Messages is how many were replayed (or would be) to it.
	Messages int `json:"messages"`
}

func (t replayTarget) text() string {
	return fmt.Sprintf("exchange %q key %q", t.Exchange, t.RoutingKey)
}

// target returns the index of exchange/key in s.Targets, or -1.
func (s *replaySummary) target(exchange, key string) int {
	return slices.IndexFunc(s.Targets, func(t replayTarget) bool { return t.Exchange == exchange && t.RoutingKey == key })
}

func (s *replaySummary) addTarget(exchange, key string) {
	i := s.target(exchange, key)
	if i < 0 {
		i = len(s.Targets)
		s.Targets = append(s.Targets, replayTarget{Exchange: exchange, RoutingKey: key})
	}
	s.Targets[i].Messages++
}

func (s replaySummary) text() string {
	verb := "replayed"
	n := s.Replayed
	if s.DryRun {
		verb, n = "would replay", s.Matched-s.Skipped
	}
	t := fmt.Sprintf("%s %s from %s", verb, plural(n, "message"), s.Queue)
	for i, tg := range s.Targets {
		sep := ", "
		if i == 0 {
			sep = " to "
		}
		t += fmt.Sprintf("%s%s (%d)", sep, tg.text(), tg.Messages)
	}
	t += fmt.Sprintf("; %d left in the queue", s.Left)
	if s.Skipped > 0 {
		t += fmt.Sprintf(" (%d skipped: see their lines)", s.Skipped)
	}
	if s.Error != "" {
		t += "; stopped: " + s.Error
	}
	return t
}

func runDLQReplay(e *env, args []string) error {
	var o replayOpts
	pos, err := parseArgs(e, dlqReplaySpec, o.register, args, 1, 1)
	if err != nil {
		return err
	}
	if o.count < 0 || o.olderThan < 0 || o.newerThan < 0 {
		return usagef("dlq replay: --count, --older-than and --newer-than must not be negative")
	}
	if o.toQueue && (o.to != "" || o.exchange != "") {
		return usagef("dlq replay: --to-queue excludes --to and --exchange")
	}
	ask := !o.dryRun && !o.yes
	if ask && !e.stdinTerminal() {
		return usagef("dlq replay: stdin is not a terminal, so replay cannot ask before it publishes: pass --yes (-y) to replay without asking, or --dry-run to see what it would do")
	}
	s, err := connect(e, &o.conn, "dlq replay")
	if err != nil {
		return err
	}
	defer s.close()
	o.out.w = e.stdout
	var plan *replaySummary
	if ask {
		if plan, err = o.confirmPlan(e, s, pos[0]); err != nil {
			return err
		}
	}
	sum, err := o.replay(e, s, pos[0], plan)
	if err != nil {
		sum.Error = err.Error()
	}
	o.out.record(sum, sum.text())
	return err
}

// confirmPlan reads the queue as --dry-run does, without printing its
// lines, shows on stderr what a replay would publish where, and asks. It
// returns the plan the operator agreed to, or an error when they did not.
// A plan with nothing to replay is not asked about.
func (o *replayOpts) confirmPlan(e *env, s *session, queue string) (*replaySummary, error) {
	dry := *o
	dry.dryRun = true
	dry.out = printer{w: io.Discard}
	plan, err := dry.replay(e, s, queue, nil)
	if err != nil {
		return nil, fmt.Errorf("plan: %w", err)
	}
	fmt.Fprint(e.stderr, safeLines(plan.planText()))
	if plan.Matched-plan.Skipped > 0 && !confirm(e, plan.question()) {
		return nil, errors.New("not replayed (not confirmed)")
	}
	return &plan, nil
}

// planText is the plan shown before the question: counts per target.
func (s replaySummary) planText() string {
	t := fmt.Sprintf("dlq replay %s: %s to replay, %d skipped", s.Queue, plural(s.Matched-s.Skipped, "message"), s.Skipped)
	if s.Skipped > 0 {
		t += " (--dry-run lists them with the reason)"
	}
	t += "\n"
	for _, tg := range s.Targets {
		t += fmt.Sprintf("  %5d to %s\n", tg.Messages, tg.text())
	}
	return t
}

// question asks to go ahead with the plan; it names up to three targets.
func (s replaySummary) question() string {
	const named = 3
	var to []string
	for i, tg := range s.Targets {
		if i == named {
			to = append(to, fmt.Sprintf("%d more (listed above)", len(s.Targets)-named))
			break
		}
		to = append(to, tg.text())
	}
	return fmt.Sprintf("Replay %s to %s? [y/N] ", plural(s.Matched-s.Skipped, "message"), strings.Join(to, ", "))
}

// replayer is one run of dlq replay.
type replayer struct {
	*replayOpts
	e    *env
	ch   *amqp.Channel
	pub  *confirmer
	sum  replaySummary
	held uint64 // last delivery tag kept unacked, to nack back at the end
	// plan, when the operator confirmed one, bounds the run: no more
	// messages to a target than it counted, and no other target.
	plan *replaySummary
}

// replay walks the messages the queue holds when it starts, once each;
// with a plan, only within it.
func (o *replayOpts) replay(e *env, s *session, queue string, plan *replaySummary) (replaySummary, error) {
	r := &replayer{replayOpts: o, e: e, sum: replaySummary{Queue: queue, DryRun: o.dryRun}, plan: plan}
	n, err := checkQueue(s, queue)
	if err != nil {
		return r.sum, err
	}
	if r.ch, err = s.channel(); err != nil {
		return r.sum, err
	}
	defer func() { _ = r.ch.Close() }()
	if r.pub, err = newConfirmer(s); err != nil {
		return r.sum, err
	}
	defer r.pub.close()
	err = r.run(queue, n)
	r.release()
	r.sum.Left, _ = checkQueue(s, queue)
	return r.sum, err
}

func (r *replayer) run(queue string, n int) error {
	prog := newProgress(r.e)
	defer prog.clear()
	for i := 0; i < n && (r.count == 0 || r.sum.Matched < r.count); i++ {
		if err := r.e.ctx.Err(); err != nil {
			return fmt.Errorf("interrupted: %w", err)
		}
		d, ok, err := r.ch.Get(queue, false)
		if err != nil {
			return fmt.Errorf("get from %s: %w", queue, err)
		}
		if !ok {
			return nil
		}
		if err := r.one(queue, d); err != nil {
			return err
		}
		prog.update("%d of %d messages read, %d replayed", i+1, n, r.sum.Replayed)
	}
	return nil
}

// one replays d if it matches, or keeps it to return it to the queue.
func (r *replayer) one(queue string, d amqp.Delivery) error {
	dl := parseDeadLetter(queue, d)
	if !r.matches(dl, time.Now()) {
		r.keep(d)
		return nil
	}
	r.sum.Matched++
	exchange, key, why := r.target(queue, dl)
	rec := replayed{Action: "would-replay", deadLetter: dl, Exchange: exchange, RoutingKey: key}
	switch {
	case dl.Unparseable != "":
		// Replayed as it is, it would be quarantined again at once.
		rec.Action = "skipped"
		rec.Why = "headers unparseable (" + safe(clip(dl.Unparseable, 80)) + "): its raw header table is in " +
			broker.HeaderRawHeaders + "; fix it and publish it by hand"
		r.sum.Skipped++
		r.keep(d)
	case why == "" && !r.inPlan(exchange, key):
		why = "not in the confirmed plan (the queue changed since): run replay again"
		fallthrough
	case why != "":
		rec.Action, rec.Why = "skipped", why
		r.sum.Skipped++
		r.keep(d)
	case r.dryRun:
		r.sum.addTarget(exchange, key)
		r.keep(d)
	default:
		if err := r.republish(d, exchange, key); err != nil {
			return err
		}
		rec.Action = "replayed"
		r.sum.Replayed++
		r.sum.addTarget(exchange, key)
	}
	r.out.record(rec, rec.text())
	return nil
}

// republish sends d to exchange/key, waits for the confirm, then acks d;
// on failure d goes back to the queue.
func (r *replayer) republish(d amqp.Delivery, exchange, key string) error {
	ctx, cancel := context.WithTimeout(context.Background(), r.conn.timeout)
	defer cancel()
	if err := r.pub.publish(ctx, replayRequest(d, exchange, key, time.Now())); err != nil {
		_ = d.Nack(false, true)
		return fmt.Errorf("republish %s to %q %q: %w (left in the queue)", orDash(d.MessageId), exchange, key, unroutable(err))
	}
	if err := d.Ack(false); err != nil {
		return fmt.Errorf("ack %s after its republish: %w (it may be replayed again)", orDash(d.MessageId), err)
	}
	return nil
}

func (r *replayer) keep(d amqp.Delivery) { r.held = d.DeliveryTag }

// inPlan reports whether one more message to exchange/key stays within
// the confirmed plan (always, without one).
func (r *replayer) inPlan(exchange, key string) bool {
	if r.plan == nil {
		return true
	}
	i := r.plan.target(exchange, key)
	if i < 0 {
		return false
	}
	done := 0
	if j := r.sum.target(exchange, key); j >= 0 {
		done = r.sum.Targets[j].Messages
	}
	return done < r.plan.Targets[i].Messages
}

// release returns the kept messages to the queue, in order (acked ones
// are not affected by a multiple nack).
func (r *replayer) release() {
	if r.held != 0 {
		_ = r.ch.Nack(r.held, true, true)
	}
}

// matches applies the filters.
func (o *replayOpts) matches(d deadLetter, now time.Time) bool {
	if o.reason != "" && !strings.Contains(d.Reason, o.reason) {
		return false
	}
	if o.olderThan == 0 && o.newerThan == 0 {
		return true
	}
	a, ok := age(d.DeadLetteredAt, now)
	if !ok {
		return false
	}
	return (o.olderThan == 0 || a >= o.olderThan) && (o.newerThan == 0 || a < o.newerThan)
}

// target is where d from queue goes; why says why it does not go
// anywhere: neither the headers nor the flags name a target, or the
// headers name one that is not the queue's own route (see ownRoute).
func (o *replayOpts) target(queue string, d deadLetter) (exchange, key, why string) {
	if o.toQueue {
		if d.OriginalQueue == "" {
			return "", "", "no x-hato-original-queue header"
		}
		if !o.trust && d.OriginalQueue != strings.TrimSuffix(queue, ".dlq") {
			return "", d.OriginalQueue, "x-hato-original-queue is not this queue's: pass --trust-headers to replay there"
		}
		return "", d.OriginalQueue, ""
	}
	exchange, key = d.OriginalExchange, d.OriginalRoutingKey
	if o.exchange != "" {
		exchange = o.exchange
	}
	if o.to != "" {
		key = o.to
	}
	switch {
	case !d.hasOrigin && o.to == "":
		return exchange, key, "no x-hato-original-* headers: give --to (and --exchange)"
	case o.trust:
		return exchange, key, ""
	case o.exchange == "" && d.hasOrigin && exchange != defaultExchange:
		return exchange, key, "x-hato-original-exchange is not " + defaultExchange + ": pass --exchange, or --trust-headers"
	case o.to == "" && !o.ownKey(queue, key):
		return exchange, key, "x-hato-original-routing-key is not the one this queue's name is made from: pass --to, or --trust-headers"
	}
	return exchange, key, ""
}

// defaultExchange is the exchange of hato and tomodachi routes by default.
const defaultExchange = "amq.topic"

// ownKey reports whether key (as on the wire) is the routing key queue (a
// dead-letter queue of a competing route without an explicit queue name,
// named sha256 of its key, behind any queue-name prefix) was named from.
// The hash commits to the key: headers cannot forge it.
func (o *replayOpts) ownKey(queue, key string) bool {
	base := strings.TrimSuffix(queue, ".dlq")
	decoded := broker.DecodeRoutingKey(key)
	if !strings.HasPrefix(decoded, o.keyPrefix) {
		return false
	}
	want := broker.QueueName(decoded[len(o.keyPrefix):], "", "", true, "")
	return base != queue && strings.HasSuffix(base, want)
}

// replayRequest is d as first published: body, properties and headers,
// without the dead-letter headers (user-id and expiration are not
// restored), with the replay headers. It is mandatory.
func replayRequest(d amqp.Delivery, exchange, key string, now time.Time) *broker.Request {
	headers := amqp.Table{}
	for k, v := range d.Headers {
		if !slices.Contains(deadLetterHeaders, k) {
			headers[k] = v
		}
	}
	headers[hdrReplayedAt] = now.UTC().Format(time.RFC3339Nano)
	headers[hdrReplayCount] = headerInt(d.Headers, hdrReplayCount) + 1
	return &broker.Request{
		Exchange:   exchange,
		RoutingKey: key,
		Mandatory:  true,
		Msg: amqp.Publishing{
			Headers:         headers,
			ContentType:     d.ContentType,
			ContentEncoding: d.ContentEncoding,
			DeliveryMode:    d.DeliveryMode,
			Priority:        d.Priority,
			CorrelationId:   d.CorrelationId,
			ReplyTo:         d.ReplyTo,
			MessageId:       d.MessageId,
			Timestamp:       d.Timestamp,
			Type:            d.Type,
			AppId:           d.AppId,
			Body:            d.Body,
		},
	}
}
