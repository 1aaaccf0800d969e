package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/envelope"
)

var publishSpec = spec{
	name: "publish",
	args: "KEY [DATA|-]",
	about: `Publishes DATA (or standard input, when DATA is "-" or missing) on routing key
KEY, wrapped in an envelope as a tomodachi or hato service would publish it,
and waits for the broker's confirm. The message is mandatory: when no queue
is bound to KEY the broker returns it and hato exits 1 (--allow-unroutable
accepts that). --count and --rate publish many copies for load; each gets its
own message uuid. Envelopes: json (DATA is a JSON value), protobuf (DATA is a
serialized message, or protobuf JSON with --proto-type and --descriptor-set),
raw (DATA is the body). A mandatory message (all but --allow-unroutable)
carries the string header x-hato-seq (its publish's sequence number on the
channel), by which a returned message is matched to its publish; consumers
can ignore it.`,
	examples: `  hato publish example.topic '{"hello": "world"}'
  echo '"text"' | hato publish example.topic -
  hato publish --envelope raw --header trace=abc example.topic 'plain bytes'
  hato publish --envelope protobuf --descriptor-set person.pb --proto-type tutorial.Person \
      person.created '{"name": "Ada", "id": 1}'
  hato publish --count 10000 --rate 500 example.topic '{"n": 1}'
`,
}

type publishOpts struct {
	conn      connFlags
	out       printer
	proto     protoFlags
	envelope  string
	exchange  string
	prefix    string
	headers   headerFlags
	count     int
	rate      float64
	service   string
	uuid      string
	transient bool
	unrouted  bool
}

func (o *publishOpts) register(fs *flag.FlagSet) {
	o.conn.register(fs)
	o.out.register(fs)
	o.proto.register(fs, "DATA is then protobuf JSON")
	o.headers = headerFlags{}
	fs.StringVar(&o.envelope, "envelope", envJSON, "envelope: json, protobuf or raw")
	fs.StringVar(&o.exchange, "exchange", "amq.topic", "exchange to publish to")
	fs.StringVar(&o.prefix, "routing-key-prefix", "", "prefix put before KEY on the wire (tomodachi's routing_key_prefix); the envelope's topic stays KEY")
	fs.Var(o.headers, "header", "message header k=v (repeatable)")
	fs.IntVar(&o.count, "count", 1, "number of messages to publish")
	fs.Float64Var(&o.rate, "rate", 0, "messages per second with --count (0: as fast as confirms allow)")
	fs.StringVar(&o.service, "service", "hato-cli", "service name written in the envelope")
	fs.StringVar(&o.uuid, "uuid", "", "service uuid written in the envelope and message uuids (default random)")
	fs.BoolVar(&o.transient, "transient", false, "publish transient instead of persistent messages")
	fs.BoolVar(&o.unrouted, "allow-unroutable", false, "do not fail when no queue is bound to KEY")
}

// publishResult is the record publish prints.
type publishResult struct {
	Exchange    string  `json:"exchange"`
	RoutingKey  string  `json:"routing_key"`
	Envelope    string  `json:"envelope"`
	MessageUUID string  `json:"message_uuid,omitempty"`
	Published   int     `json:"published"`
	Confirmed   int     `json:"confirmed"`
	Failed      int     `json:"failed"`
	Error       string  `json:"error,omitempty"`
	Seconds     float64 `json:"seconds"`
	Rate        float64 `json:"rate"`
}

func (r publishResult) text() string {
	if r.Failed == 0 && r.Published == 1 {
		return fmt.Sprintf("confirmed: %s on %s (message uuid %s)", r.RoutingKey, exchangeName(r.Exchange), r.MessageUUID)
	}
	s := fmt.Sprintf("confirmed %d of %d on %s %s in %.2fs (%.0f/s)", r.Confirmed, r.Published, exchangeName(r.Exchange), r.RoutingKey, r.Seconds, r.Rate)
	if r.Failed > 0 {
		s += fmt.Sprintf("; %d failed: %s", r.Failed, r.Error)
	}
	return s
}

func runPublish(e *env, args []string) error {
	var o publishOpts
	pos, err := parseArgs(e, publishSpec, o.register, args, 1, 2)
	if err != nil {
		return err
	}
	next, err := o.prepare(e, pos)
	if err != nil {
		return err
	}
	s, err := connect(e, &o.conn, "publish")
	if err != nil {
		return err
	}
	defer s.close()
	c, err := newConfirmer(s)
	if err != nil {
		return err
	}
	defer c.close()
	o.out.w = e.stdout
	res := o.load(e, c, next)
	res.RoutingKey, res.Exchange, res.Envelope = pos[0], o.exchange, o.envelope
	o.out.record(res, res.text())
	if res.Failed > 0 || res.Confirmed < o.count {
		return fmt.Errorf("%d of %s not confirmed", o.count-res.Confirmed, plural(o.count, "message"))
	}
	return nil
}

// prepare checks the flags and DATA and returns a function that builds
// each message.
func (o *publishOpts) prepare(e *env, pos []string) (func() (*broker.Request, string, error), error) {
	if o.count < 1 {
		return nil, usagef("--count must be at least 1")
	}
	if o.rate != 0 && !(o.rate >= minRate && o.rate <= maxRate) { // NaN fails both
		return nil, usagef("--rate must be 0 (no limit) or between %g and %g messages per second", minRate, maxRate)
	}
	key := pos[0]
	wire, err := broker.WireRoutingKey(o.prefix, key)
	if err != nil {
		return nil, usagef("%v", err)
	}
	if err := broker.ValidateHeaders(amqp.Table(o.headers)); err != nil {
		return nil, usagef("--header: %v", err)
	}
	raw, err := readData(e, pos[1:])
	if err != nil {
		return nil, err
	}
	env, payload, err := o.payload(raw)
	if err != nil {
		return nil, err
	}
	if o.uuid == "" {
		o.uuid = envelope.NewUUID4()
	}
	return func() (*broker.Request, string, error) { return o.request(env, payload, key, wire) }, nil
}

// readData is DATA, or standard input for "-" or no DATA.
func readData(e *env, pos []string) ([]byte, error) {
	if len(pos) == 1 && pos[0] != "-" {
		return []byte(pos[0]), nil
	}
	b, err := io.ReadAll(io.LimitReader(e.stdin, envelope.DefaultMaxBodySize+1))
	if err != nil {
		return nil, fmt.Errorf("read standard input: %w", err)
	}
	return b, nil
}

// payload turns DATA into what the chosen envelope builds from.
func (o *publishOpts) payload(raw []byte) (envelope.Envelope, any, error) {
	switch o.envelope {
	case envJSON:
		t := bytes.TrimSpace(raw)
		if !json.Valid(t) {
			return nil, nil, usagef(`DATA is not JSON (a string must be quoted: '"text"'; or use --envelope raw)`)
		}
		return envelope.JSON, json.RawMessage(t), nil
	case envRaw:
		return envelope.Raw, raw, nil
	case envProtobuf:
		return o.protoPayload(raw)
	}
	return nil, nil, usagef("--envelope %q: want json, protobuf or raw", o.envelope)
}

func (o *publishOpts) protoPayload(raw []byte) (envelope.Envelope, any, error) {
	mt, err := o.proto.messageType()
	if err != nil {
		return nil, nil, err
	}
	if mt == nil {
		return envelope.Protobuf, raw, nil
	}
	m := mt.New().Interface()
	if err := protojson.Unmarshal(raw, m); err != nil {
		return nil, nil, usagef("DATA is not a %s in protobuf JSON: %v", mt.Descriptor().FullName(), err)
	}
	return envelope.Protobuf, m, nil
}

// request builds one message as hato's Service.Publish does.
func (o *publishOpts) request(env envelope.Envelope, payload any, key, wire string) (*broker.Request, string, error) {
	now := time.Now()
	muuid := o.uuid + "." + envelope.NewUUID4()
	body, err := env.Build(envelope.Build{
		Service:     envelope.Service{Name: o.service, UUID: o.uuid},
		Topic:       key,
		MessageUUID: muuid,
		Time:        now,
	}, payload, envelope.Options{})
	if err != nil {
		return nil, "", usagef("%v", err)
	}
	mode := amqp.Persistent
	if o.transient {
		mode = amqp.Transient
	}
	return &broker.Request{
		Exchange:   o.exchange,
		RoutingKey: wire,
		Mandatory:  !o.unrouted,
		Msg: amqp.Publishing{
			Headers:      amqp.Table(o.headers),
			ContentType:  env.ContentType(),
			DeliveryMode: mode,
			MessageId:    muuid,
			Timestamp:    now,
			AppId:        o.service,
			Body:         body,
		},
	}, muuid, nil
}

// tally counts outcomes of publishes in flight.
type tally struct {
	mu        sync.Mutex
	confirmed int
	failed    int
	first     error
	wg        sync.WaitGroup
}

func (t *tally) done(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err == nil {
		t.confirmed++
		return
	}
	t.failed++
	if t.first == nil {
		t.first = err
	}
}

func (t *tally) counts() (int, int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.confirmed, t.failed, t.first
}

// maxInFlight bounds unconfirmed publishes under load.
const maxInFlight = 512

// load publishes o.count messages at o.rate, then waits for the
// outstanding confirms (at most --timeout after the last publish).
func (o *publishOpts) load(e *env, c *confirmer, next func() (*broker.Request, string, error)) publishResult {
	var t tally
	slots := make(chan struct{}, maxInFlight)
	prog := newProgress(e)
	start := time.Now()
	res := publishResult{}
	for i := 0; i < o.count; i++ {
		if err := pace(e, start, i, o.rate, slots); err != nil {
			t.done(err)
			break
		}
		r, muuid, err := next()
		if err != nil {
			<-slots
			t.done(err)
			break
		}
		res.Published++
		res.MessageUUID = muuid
		t.wg.Add(1)
		c.submit(r, func(err error) { t.done(publishUnroutable(err)); <-slots; t.wg.Done() })
		conf, _, _ := t.counts()
		prog.update("published %d/%d, confirmed %d", i+1, o.count, conf)
	}
	waitConfirms(e, &t, o.conn.timeout)
	prog.clear()
	return o.finish(res, &t, time.Since(start))
}

func (o *publishOpts) finish(res publishResult, t *tally, took time.Duration) publishResult {
	var first error
	res.Confirmed, res.Failed, first = t.counts()
	if first != nil {
		res.Error = first.Error()
	}
	if res.Published > 1 {
		res.MessageUUID = ""
	}
	res.Seconds = took.Seconds()
	if res.Seconds > 0 {
		res.Rate = float64(res.Confirmed) / res.Seconds
	}
	return res
}

// Bounds of --rate: below minRate a message's due time overflows a
// time.Duration (so nothing was throttled); above maxRate pacing is moot.
const (
	minRate = 0.001
	maxRate = 1e9
)

// pace waits for message i's turn at rate (messages per second; 0 is no
// limit) and for a free in-flight slot, which it takes.
func pace(e *env, start time.Time, i int, rate float64, slots chan struct{}) error {
	if rate > 0 {
		due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			timer := time.NewTimer(d)
			defer timer.Stop()
			select {
			case <-timer.C:
			case <-e.ctx.Done():
				return fmt.Errorf("interrupted: %w", e.ctx.Err())
			}
		}
	}
	select {
	case slots <- struct{}{}:
		return nil
	case <-e.ctx.Done():
		return fmt.Errorf("interrupted: %w", e.ctx.Err())
	}
}

// waitConfirms waits for every submitted publish's outcome, at most
// timeout.
func waitConfirms(e *env, t *tally, timeout time.Duration) {
	done := make(chan struct{})
	go func() { t.wg.Wait(); close(done) }()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		t.done(errors.New("timed out waiting for confirms"))
	}
}

// unroutable explains a returned mandatory publish (for publish and dlq
// replay alike: only publish has --allow-unroutable, see publishUnroutable).
func unroutable(err error) error {
	if errors.Is(err, broker.ErrUnroutable) {
		return fmt.Errorf("unroutable: no queue is bound to the routing key: %w", err)
	}
	return err
}

// publishUnroutable is unroutable with the flag of publish that accepts it.
func publishUnroutable(err error) error {
	if errors.Is(err, broker.ErrUnroutable) {
		return fmt.Errorf("unroutable: no queue is bound to the routing key (--allow-unroutable accepts this): %w", err)
	}
	return err
}

// exchangeName is an exchange as text output names it: the default
// exchange, whose name is empty, by that description.
func exchangeName(name string) string {
	if name == "" {
		return "the default exchange"
	}
	return name
}
