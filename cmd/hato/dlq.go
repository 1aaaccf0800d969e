package main

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato/broker"
)

// Headers of a hato dead letter (actors/deadletter.go; a test keeps them
// equal), and the two a replay adds.
const (
	hdrReason             = "x-hato-reason"
	hdrAttempts           = "x-hato-attempts"
	hdrOriginalExchange   = "x-hato-original-exchange"
	hdrOriginalKey        = "x-hato-original-routing-key"
	hdrOriginalQueue      = "x-hato-original-queue"
	hdrDeadLetteredAt     = "x-hato-dead-lettered-at"
	hdrService            = "x-hato-service"
	hdrRoute              = "x-hato-route"
	hdrOriginalUserID     = "x-hato-original-user-id"
	hdrOriginalExpiration = "x-hato-original-expiration"
	hdrReplayedAt         = "x-hato-replayed-at"
	hdrReplayCount        = "x-hato-replay-count"
	hdrDroppedHeaders     = "x-hato-dropped-headers"
)

// deadLetterHeaders are dropped from a replayed message.
var deadLetterHeaders = []string{
	hdrReason, hdrAttempts, hdrOriginalExchange, hdrOriginalKey, hdrOriginalQueue,
	hdrDeadLetteredAt, hdrService, hdrRoute, hdrOriginalUserID, hdrOriginalExpiration,
	hdrDroppedHeaders,
}

var dlqSpec = spec{
	name: "dlq",
	args: "list|show|replay|purge ...",
	about: `Works on hato's dead-letter queues (<queue>.dlq; see hato names). Each
dead letter carries x-hato-* headers: why (reason, attempts), where from
(original exchange, routing key and queue), when (dead-lettered-at) and by
whom (service, route).

  list [QUEUE...]   queues with their message counts and reasons
  show QUEUE        the messages, without consuming them
  replay QUEUE      republish to their route (or --to), then remove them
                    (shows where and asks first)
  purge QUEUE       delete every message (asks first)`,
	examples: `  hato dlq list
  hato dlq show --limit 5 6db12a9d302beb382083af15edb16743a71606430dccfd286ab4dd577289d175.dlq
  hato dlq replay --dry-run --reason 'timeout' QUEUE.dlq
  hato dlq purge --yes QUEUE.dlq
`,
}

func runDLQ(e *env, args []string) error {
	if len(args) == 0 {
		printHelp(e.stderr, dlqSpec, nil)
		return usagef("dlq: want list, show, replay or purge")
	}
	switch args[0] {
	case "list":
		return runDLQList(e, args[1:])
	case "show":
		return runDLQShow(e, args[1:])
	case "replay":
		return runDLQReplay(e, args[1:])
	case "purge":
		return runDLQPurge(e, args[1:])
	case "-h", "-help", "--help", "help":
		printHelp(e.stdout, dlqSpec, nil)
		return nil
	}
	return usagef("dlq: unknown subcommand %q: want list, show, replay or purge", args[0])
}

// deadLetter is what the x-hato-* headers say about a message.
type deadLetter struct {
	Queue              string `json:"queue"`
	MessageID          string `json:"message_id,omitempty"`
	Reason             string `json:"reason,omitempty"`
	Attempts           int64  `json:"attempts,omitempty"`
	OriginalExchange   string `json:"original_exchange"`
	OriginalRoutingKey string `json:"original_routing_key"`
	OriginalQueue      string `json:"original_queue,omitempty"`
	DeadLetteredAt     string `json:"dead_lettered_at,omitempty"`
	Service            string `json:"service,omitempty"`
	Route              string `json:"route,omitempty"`
	ReplayCount        int64  `json:"replay_count,omitempty"`
	// Unparseable says why the message's headers could not be read (its
	// raw header table is in the x-hato-raw-headers header); see
	// broker.HeaderUnparseable.
	Unparseable string `json:"unparseable,omitempty"`
	// Dropped lists headers the dead-letter copy dropped to fit a frame.
	Dropped string `json:"dropped_headers,omitempty"`
	// hasOrigin is whether the original exchange and key headers exist.
	hasOrigin bool
}

func parseDeadLetter(queue string, d amqp.Delivery) deadLetter {
	h := d.Headers
	_, hasEx := h[hdrOriginalExchange]
	_, hasKey := h[hdrOriginalKey]
	return deadLetter{
		Queue:              queue,
		MessageID:          d.MessageId,
		Reason:             headerString(h, hdrReason),
		Attempts:           headerInt(h, hdrAttempts),
		OriginalExchange:   headerString(h, hdrOriginalExchange),
		OriginalRoutingKey: headerString(h, hdrOriginalKey),
		OriginalQueue:      headerString(h, hdrOriginalQueue),
		DeadLetteredAt:     headerString(h, hdrDeadLetteredAt),
		Service:            headerString(h, hdrService),
		Route:              headerString(h, hdrRoute),
		ReplayCount:        headerInt(h, hdrReplayCount),
		Unparseable:        headerString(h, broker.HeaderUnparseable),
		Dropped:            headerString(h, hdrDroppedHeaders),
		hasOrigin:          hasEx && hasKey,
	}
}

func headerString(h amqp.Table, k string) string {
	switch v := h[k].(type) {
	case string:
		return v
	case []byte:
		return string(v)
	case nil:
		return ""
	default:
		return fmt.Sprint(v)
	}
}

func headerInt(h amqp.Table, k string) int64 {
	switch v := h[k].(type) {
	case int64:
		return v
	case int32:
		return int64(v)
	case int16:
		return int64(v)
	case int8:
		return int64(v)
	case int:
		return int64(v)
	}
	return 0
}

// text is a dead letter's description for people, several lines.
func (d deadLetter) text(now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "message %s", safe(orDash(d.MessageID)))
	if a, ok := age(d.DeadLetteredAt, now); ok {
		fmt.Fprintf(&b, ", dead-lettered %s (%s ago)", safe(d.DeadLetteredAt), a.Round(time.Second))
	}
	if d.Attempts > 0 {
		fmt.Fprintf(&b, " after %s", plural(d.Attempts, "attempt"))
	}
	fmt.Fprintf(&b, "\n  reason:   %s", safe(orDash(d.Reason)))
	fmt.Fprintf(&b, "\n  from:     exchange %q, routing key %q, queue %s", d.OriginalExchange, d.OriginalRoutingKey, safe(orDash(d.OriginalQueue)))
	if d.Service != "" || d.Route != "" {
		fmt.Fprintf(&b, "\n  service:  %s, route %s", safe(orDash(d.Service)), safe(orDash(d.Route)))
	}
	if d.ReplayCount > 0 {
		fmt.Fprintf(&b, "\n  replayed: %s before", plural(d.ReplayCount, "time"))
	}
	if d.Unparseable != "" {
		fmt.Fprintf(&b, "\n  headers:  unparseable (%s); the raw table is in %s", safe(d.Unparseable), broker.HeaderRawHeaders)
	}
	if d.Dropped != "" {
		fmt.Fprintf(&b, "\n  dropped:  %s", clip(d.Dropped, 200))
	}
	return b.String()
}

// checkQueue returns the message count of queue, on a channel of its own
// (a missing queue closes the channel it is asked on).
func checkQueue(s *session, queue string) (int, error) {
	ch, err := s.channel()
	if err != nil {
		return 0, err
	}
	defer func() { _ = ch.Close() }()
	q, err := ch.QueueDeclarePassive(queue, false, false, false, false, nil)
	if err != nil {
		return 0, fmt.Errorf("queue %s: %w", queue, err)
	}
	return q.Messages, nil
}

// peek reads up to limit messages of queue without consuming them: it
// gets each unacked, hands it to f, and finally nacks them all back to
// the queue, in their order. A crash meanwhile returns them too (the
// broker requeues a closed channel's unacked messages).
func peek(ch *amqp.Channel, queue string, limit int, f func(amqp.Delivery)) (int, error) {
	var last uint64
	n := 0
	defer func() {
		if last != 0 {
			_ = ch.Nack(last, true, true)
		}
	}()
	for ; n < limit; n++ {
		d, ok, err := ch.Get(queue, false)
		if err != nil {
			return n, fmt.Errorf("get from %s: %w", queue, err)
		}
		if !ok {
			break
		}
		last = d.DeliveryTag
		f(d)
	}
	return n, nil
}

// messageRef is the "message <uuid>: " hato writes into a reason;
// messageIn the "message <uuid> on ..." of an undecodable one; uuidRef any
// other uuid.
var (
	messageRef = regexp.MustCompile(`message [^\s:]+: `)
	messageIn  = regexp.MustCompile(`message [^\s:]+ on `)
	uuidRef    = regexp.MustCompile(`[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}`)
)

// shortReason is a reason without the message it names and without
// hato's package prefix, so that the reasons of many messages group
// together by cause.
func shortReason(r string) string {
	r = messageRef.ReplaceAllString(r, "")
	r = messageIn.ReplaceAllString(r, "message on ")
	r = uuidRef.ReplaceAllString(r, "<uuid>")
	return strings.TrimPrefix(r, "hato: ")
}
