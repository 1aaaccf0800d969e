package broker

import (
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato/broker/internal/rawamqp"
)

// Headers of a message whose properties amqp091-go could not read. Every
// connection Dial opens reads frames through a guard that rewrites such a
// content header before amqp091-go parses it (amqp091-go would drop the
// whole connection, and the broker would redeliver the message on every
// reconnect). The delivery then carries, instead of what could not be
// read, these headers, of plain types any client reads:
const (
	// HeaderUnparseable: why (string), for example "rawamqp: nested
	// deeper than 32". Its presence marks the delivery as quarantined.
	HeaderUnparseable = rawamqp.HeaderUnparseable
	// HeaderRawHeaders: the headers table as sent (byte array): its
	// field-table bytes without the 4-byte length prefix, cut (and the
	// reason says so) only if the rewritten header would not fit the
	// frame_max. The other properties are kept.
	HeaderRawHeaders = rawamqp.HeaderRawHeaders
	// HeaderRawProperties: every property byte after the property flags
	// (byte array), when more than the table was unreadable; the
	// delivery then has no other property.
	HeaderRawProperties = rawamqp.HeaderRawProperties
)

// Unparseable returns why the properties of a delivery with headers h could
// not be read, and whether they could not (see HeaderUnparseable).
func Unparseable(h amqp.Table) (string, bool) {
	why, ok := h[HeaderUnparseable].(string)
	return why, ok
}
