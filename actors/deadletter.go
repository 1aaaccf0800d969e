package actors

import (
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap"

	"github.com/hato-go/hato/broker"
)

// maxRedeclares bounds how often a consumer declares its dead-letter queue
// again for one delivery whose copy the queue refused as unroutable.
const maxRedeclares = 3

// Headers hato adds to a dead-lettered message.
const (
	HeaderReason           = "x-hato-reason"
	HeaderAttempts         = "x-hato-attempts"
	HeaderOriginalExchange = "x-hato-original-exchange"
	HeaderOriginalKey      = "x-hato-original-routing-key"
	HeaderOriginalQueue    = "x-hato-original-queue"
	HeaderDeadLetteredAt   = "x-hato-dead-lettered-at"
	HeaderService          = "x-hato-service"
	HeaderRoute            = "x-hato-route"
	HeaderOriginalUserID   = "x-hato-original-user-id"
	// HeaderOriginalExpiration holds the original's expiration property,
	// which the dead-letter copy does not carry.
	HeaderOriginalExpiration = "x-hato-original-expiration"
	// HeaderDroppedHeaders lists the original's headers the dead-letter
	// copy does not carry because, with hato's headers added, they would
	// not fit one frame (see fitDeadLetter).
	HeaderDroppedHeaders = "x-hato-dropped-headers"
)

// deadLetterRequest republishes d to queue through the default exchange:
// body and properties as they were, headers extended with why and where
// from. It is mandatory, so a missing dead-letter queue is an error rather
// than a silent drop. The user-id property moves to a header: the broker
// refuses a user-id other than the publishing connection's. The copy must
// outlive the original's TTL and a broker restart: it is persistent and has
// no expiration (the original's moves to a header).
func deadLetterRequest(d *broker.Delivery, queue string, route *Route, attempts int, reason error) *broker.Request {
	headers := make(amqp.Table, len(d.Headers)+10)
	for k, v := range d.Headers {
		headers[k] = v
	}
	if reason != nil {
		headers[HeaderReason] = truncate(reason.Error(), 4096)
	}
	headers[HeaderAttempts] = int64(attempts)
	headers[HeaderOriginalExchange] = d.Exchange
	headers[HeaderOriginalKey] = d.RoutingKey
	headers[HeaderOriginalQueue] = route.Topology.Queue
	headers[HeaderDeadLetteredAt] = time.Now().UTC().Format(time.RFC3339Nano)
	headers[HeaderRoute] = route.Name
	if route.Service != "" {
		headers[HeaderService] = route.Service
	}
	if d.UserId != "" {
		headers[HeaderOriginalUserID] = d.UserId
	}
	if d.Expiration != "" {
		headers[HeaderOriginalExpiration] = d.Expiration
	}
	req := &broker.Request{
		Exchange:   "",
		RoutingKey: queue,
		Mandatory:  true,
		Msg: amqp.Publishing{
			Headers:         headers,
			ContentType:     d.ContentType,
			ContentEncoding: d.ContentEncoding,
			DeliveryMode:    amqp.Persistent,
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
	fitDeadLetter(&req.Msg, d.Headers)
	return req
}

// ErrUnparseable: the message's properties could not be read (see
// broker.HeaderUnparseable); such a message is dead-lettered on arrival,
// without running the handler or counting attempts.
var ErrUnparseable = errors.New("unparseable")

// unparseable returns why d must be quarantined, or nil: its properties
// reached hato rewritten by the frame guard, which says why in a header.
func unparseable(d *broker.Delivery) error {
	if why, ok := broker.Unparseable(d.Headers); ok {
		return fmt.Errorf("%w: %s", ErrUnparseable, why)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// dead settles a delivery whose message is marked dead-lettered in the
// route's memory. The mark is for one thing: the original of a confirmed
// dead-letter copy coming back redelivered because its ack died with its
// channel. That redelivery is acked, not dead-lettered twice, and the mark
// goes with it. The copy itself, replayed (it carries the mark's stamp), is
// handled like any message, and so is a message that arrives not
// redelivered, which also clears the mark: the redelivery it was for is
// past. Only for messages with an id: two raw messages with equal bodies are
// different messages.
func (c *consumer) dead(j *job) bool {
	if j.d.MessageId == "" || !c.state.hasDeadLettered() {
		return false
	}
	if !j.d.Redelivered {
		c.state.clearDeadLettered(j.keyOf())
		return false
	}
	stamp, _ := j.d.Headers[HeaderDeadLetteredAt].(string)
	if !c.state.isDeadLettered(j.keyOf(), stamp) {
		return false
	}
	c.log.Info("redelivered message was dead-lettered already; acking it", c.fields(j, nil)...)
	j.d.Ack()
	c.done(j)
	return true
}

// deadLetterQueueDeclared reports declaring the dead-letter queue again
// for job id (see deadLetterFailed).
type deadLetterQueueDeclared struct {
	inc, id uint64
	err     error
}

func (m *deadLetterQueueDeclared) incarnation() uint64 { return m.inc }

// deadLetterFailed handles a dead-letter copy the broker did not take. An
// unroutable copy means the dead-letter queue is gone: it is declared again
// and the copy sent again, up to maxRedeclares times; beyond that the
// delivery goes back to its queue (logged, and reported as a Requeue event)
// rather than being held forever. Any other failure (connection loss,
// nack, full buffer, refused access) holds the delivery and tries again
// after a backoff; only the first failure of a run (first) is logged as an
// error, the route reports it as not ready meanwhile (see
// deadLetterFailing), and its retries are logged at debug level.
func (c *consumer) deadLetterFailed(j *job, err error, first bool) {
	if !errors.Is(err, broker.ErrUnroutable) {
		// Never drop the message and never loop: hold it and try again.
		delay := c.policy.Backoff.Delay(3)
		log := c.log.Debug
		if first {
			log = c.log.Error
		}
		log("dead-lettering failed; holding the message and retrying",
			append(c.fields(j, err), zap.Duration("retry_in", delay))...)
		c.after(delay, &deadLetterRetry{inc: c.inc, id: j.id})
		return
	}
	if j.redeclares >= maxRedeclares {
		c.log.Error("dead-letter queue refuses the copy even after declaring it again; returning the message to its queue",
			append(c.fields(j, err), zap.String("dead_letter_queue", c.policy.DeadLetterQueue), zap.Int("declared", j.redeclares))...)
		c.event(j, Requeue, err)
		c.release(j)
		return
	}
	j.redeclares++
	c.log.Warn("dead-letter copy unroutable: declaring the dead-letter queue again",
		append(c.fields(j, err), zap.String("dead_letter_queue", c.policy.DeadLetterQueue), zap.Int("declaring", j.redeclares))...)
	c.declareDeadLetterQueue(j.id)
}

// deadLetterQueueDeclared sends the copy again once the dead-letter queue
// was declared again, at once, or after a backoff when declaring failed or
// the copy was refused before.
func (c *consumer) deadLetterQueueDeclared(ctx actor.Context, msg *deadLetterQueueDeclared) {
	j := c.jobs[msg.id]
	if j == nil || j.stage != deadLettering {
		return
	}
	if msg.err == nil && j.redeclares == 1 {
		c.publishDeadLetter(ctx, j)
		return
	}
	delay := c.policy.Backoff.Delay(j.redeclares)
	if msg.err != nil {
		c.log.Error("declaring the dead-letter queue failed", append(c.fields(j, msg.err),
			zap.String("dead_letter_queue", c.policy.DeadLetterQueue), zap.Duration("retry_in", delay))...)
	}
	c.after(delay, &deadLetterRetry{inc: c.inc, id: j.id})
}

// declareDeadLetterQueue declares the route's dead-letter queue, as its
// topology does, on a channel of its own (a failed declaration closes its
// channel, which must not be the route's), then reports
// deadLetterQueueDeclared for job id. A one-shot actor asks the connection
// actor for the channel, so the channel is closed however late it comes.
func (c *consumer) declareDeadLetterQueue(id uint64) {
	topo := c.route.Topology
	topo.DeadLetterQueue = c.policy.DeadLetterQueue
	inc := c.inc
	c.onOwnChannel(id, topo.DeclareDeadLetterQueue, func(err error) any {
		return &deadLetterQueueDeclared{inc: inc, id: id, err: err}
	})
}

// onOwnChannel runs declare on a channel of its own (a failed declaration
// closes its channel, which must not be the route's), closes the channel,
// and sends report(err) to the actor. A one-shot actor asks the connection
// actor for the channel, so the channel is closed however late it comes;
// declare runs on a goroutine, never in a Receive.
func (c *consumer) onOwnChannel(nonce uint64, declare func(*amqp.Channel) error, report func(error) any) {
	self, sys, conn := c.self, c.sys, c.conn
	sys.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		switch msg := ctx.Message().(type) {
		case *actor.Started:
			ctx.Send(conn, &OpenChannel{ReplyTo: ctx.Self(), Nonce: nonce})
		case *ChannelReply:
			ctx.Stop(ctx.Self())
			go func() {
				err := msg.Err
				if msg.Channel != nil {
					err = declare(msg.Channel)
					_ = msg.Channel.Close()
				}
				sys.Root.Send(self, report(err))
			}()
		}
	}))
}
