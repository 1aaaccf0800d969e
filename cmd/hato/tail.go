package main

import (
	"errors"
	"flag"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato/broker"
)

var tailSpec = spec{
	name: "tail",
	args: "PATTERN",
	about: `Prints every message published on the routing keys PATTERN matches (topic
wildcards: * one word, # any number) until Ctrl-C or --count messages. It
binds a temporary queue (server-named amq.gen-…, exclusive, auto-deleted:
never one of tomodachi's queue names, and gone when hato exits), so it
takes no message from any service. Each body is decoded with the envelope
(auto tries JSON, then protobuf); a body no envelope decodes is shown as it
is (text when printable, else base64) with the decode error.`,
	examples: `  hato tail 'example.#'
  hato tail --json --count 1 example.response
  hato tail --envelope protobuf --descriptor-set person.pb --proto-type tutorial.Person 'person.*'
`,
}

type tailOpts struct {
	conn     connFlags
	out      printer
	proto    protoFlags
	envelope string
	exchange string
	prefix   string
	count    int
	headers  bool
}

func (o *tailOpts) register(fs *flag.FlagSet) {
	o.conn.register(fs)
	o.out.register(fs)
	o.proto.register(fs, "protobuf data is then decoded (else shown as base64)")
	fs.StringVar(&o.envelope, "envelope", envAuto, "envelope: auto, json, protobuf or raw")
	fs.StringVar(&o.exchange, "exchange", "amq.topic", "exchange to bind to")
	fs.StringVar(&o.prefix, "routing-key-prefix", "", "prefix put before PATTERN on the wire (tomodachi's routing_key_prefix)")
	fs.IntVar(&o.count, "count", 0, "stop after this many messages (0: until Ctrl-C)")
	fs.BoolVar(&o.headers, "headers", false, "print the message headers too")
}

// tailRecord is one message tail prints.
type tailRecord struct {
	RoutingKey string     `json:"routing_key"`
	Exchange   string     `json:"exchange"`
	Headers    amqp.Table `json:"headers,omitempty"`
	// Unparseable says why the message's headers could not be read (see
	// broker.HeaderUnparseable); they are then in Headers as raw bytes.
	Unparseable string `json:"unparseable,omitempty"`
	decoded
}

func (r tailRecord) text() string {
	s := safe(r.RoutingKey) + " " + r.decoded.text()
	if r.Unparseable != "" {
		s += " (headers unparseable: " + safe(r.Unparseable) + ")"
	}
	if len(r.Headers) > 0 {
		s += " headers=" + safe(fmt.Sprintf("%v", map[string]any(r.Headers)))
	}
	return s
}

func runTail(e *env, args []string) error {
	var o tailOpts
	pos, err := parseArgs(e, tailSpec, o.register, args, 1, 1)
	if err != nil {
		return err
	}
	if o.count < 0 {
		return usagef("tail: --count must not be negative")
	}
	dec, err := newDecoder(o.envelope, &o.proto)
	if err != nil {
		return err
	}
	wire, err := broker.WireRoutingKey(o.prefix, pos[0])
	if err != nil {
		return usagef("%v", err)
	}
	s, err := connect(e, &o.conn, "tail")
	if err != nil {
		return err
	}
	defer s.close()
	deliveries, err := o.subscribe(e, s, wire)
	if err != nil {
		return err
	}
	o.out.w = e.stdout
	return o.print(e, dec, deliveries)
}

// subscribe binds a temporary queue to wire and consumes from it.
func (o *tailOpts) subscribe(e *env, s *session, wire string) (<-chan amqp.Delivery, error) {
	ch, err := s.channel()
	if err != nil {
		return nil, err
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		return nil, fmt.Errorf("declare the temporary queue: %w", err)
	}
	if err := ch.QueueBind(q.Name, wire, o.exchange, false, nil); err != nil {
		return nil, fmt.Errorf("bind %s on %s: %w", wire, o.exchange, err)
	}
	deliveries, err := ch.Consume(q.Name, "hato-cli-tail-"+broker.RandomID(), true, true, false, false, nil)
	if err != nil {
		return nil, fmt.Errorf("consume: %w", err)
	}
	fmt.Fprintf(e.stderr, "tailing %s on %s (temporary queue %s); Ctrl-C stops\n", wire, o.exchange, q.Name)
	return deliveries, nil
}

// print prints deliveries until ctx ends, --count, or the channel closes.
func (o *tailOpts) print(e *env, dec *decoder, deliveries <-chan amqp.Delivery) error {
	for n := 0; o.count == 0 || n < o.count; n++ {
		select {
		case <-e.ctx.Done():
			return nil
		case d, ok := <-deliveries:
			if !ok {
				return errors.New("the broker closed the channel")
			}
			r := tailRecord{RoutingKey: d.RoutingKey, Exchange: d.Exchange, decoded: dec.decode(d.Body)}
			r.Unparseable, _ = broker.Unparseable(d.Headers)
			if o.headers {
				r.Headers = d.Headers
			}
			o.out.record(r, r.text())
		}
	}
	return nil
}
