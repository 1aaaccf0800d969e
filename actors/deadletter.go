package actors

import (
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato/broker"
)

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
	return &broker.Request{
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
