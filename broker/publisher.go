package broker

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Request is one message to publish with a broker confirm.
//
// A Request moves from pending (queued) to written (sent, awaiting its
// confirm) to finished; Done is called exactly once, when it finishes. A
// written request whose channel dies before its confirm goes back to pending
// and is handed to the Publisher's Closed callback to be sent again (at least
// once: the broker may already have it).
type Request struct {
	Exchange   string
	RoutingKey string
	// Mandatory makes an unroutable message come back as ErrUnroutable
	// instead of being dropped by the broker. A mandatory message carries
	// the header ReturnTagHeader on the wire (Msg itself is not changed).
	Mandatory bool
	Msg       amqp.Publishing
	// Done receives the outcome: nil once confirmed (and, if Mandatory,
	// routed), else why not. It is called from a publisher goroutine and must
	// not block.
	Done func(err error)

	state    atomic.Int32
	attempts int // channel deaths while written; touched by one owner at a time
	nacks    int // basic.nacks received; likewise
}

const (
	reqPending int32 = iota
	reqWritten
	reqFinished
)

// Finish completes the request with err unless it already finished. It
// reports whether this call finished it.
func (r *Request) Finish(err error) bool {
	if r.state.Swap(reqFinished) == reqFinished {
		return false
	}
	if r.Done != nil {
		r.Done(err)
	}
	return true
}

// Abandon finishes the request with err only if it was not written yet (a
// caller giving up before the message left). It reports whether it did.
func (r *Request) Abandon(err error) bool {
	if !r.state.CompareAndSwap(reqPending, reqFinished) {
		return false
	}
	if r.Done != nil {
		r.Done(err)
	}
	return true
}

// Finished reports whether the request has its outcome.
func (r *Request) Finished() bool { return r.state.Load() == reqFinished }

// MaxAttempts is how many channel deaths a written request survives before
// it fails with the channel's error: a message that itself kills the channel
// (too large, refused) must not be resent forever.
const MaxAttempts = 3

// MaxNacks is how many basic.nacks a request survives: after each of the
// first MaxNacks-1 the Publisher closes its channel and hands the request
// back, unfinished, to be sent again on a new channel (see NackedError); the
// last one fails it with ErrNacked.
//
// A nack is often not the message's fault: a channel opened on a node right
// after a quorum queue's leader node died nacks every publish to that queue
// for as long as it lives (RabbitMQ 3.10), while a new channel a moment
// later works. A queue that refuses for good (x-overflow reject-publish and
// full) still fails the publish, after MaxNacks channels.
const MaxNacks = 5

// NackedError is the error Closed gets when the Publisher closed its own
// channel after a basic.nack, to have the nacked requests sent again on a
// new channel. It matches ErrNacked. Nacks is the most times one of the
// handed-back requests was nacked: pace the new channel by it.
type NackedError struct{ Nacks int }

func (e *NackedError) Error() string {
	return fmt.Sprintf("hato/broker: publish nacked by broker (%d times); sending it again on a new channel", e.Nacks)
}

// Is makes errors.Is(err, ErrNacked) true.
func (e *NackedError) Is(target error) bool { return target == ErrNacked }

// DefaultMaxInFlight bounds unconfirmed publishes per Publisher.
const DefaultMaxInFlight = 1024

// ReturnTagHeader is the header a Publisher adds to every mandatory publish:
// the publish's delivery tag on its channel, in decimal (a string header:
// consumers such as Watermill's default marshaler reject other types), so
// a basic.return,
// which carries the message but no delivery tag, names the very publish it
// belongs to.
//
// Why not match by message id, or by order: message ids are the caller's
// and need not be unique (two returns with one id would overwrite each
// other, and one publish would be reported confirmed). Order alone is not
// enough either: a basic.return does precede the ack of its publish, but
// with multiple acks several returns arrive before one ack covering them
// and other, routed, mandatory publishes, and the returned message has
// nothing that tells two look-alike publishes apart. The delivery tag is
// unique per channel, and a request sent again on another channel gets that
// channel's tag. Consumers see the header too; it means nothing to them.
const ReturnTagHeader = "x-hato-seq"

// PublisherConfig configures a Publisher.
type PublisherConfig struct {
	// MaxInFlight bounds written-but-unconfirmed requests. Zero means
	// DefaultMaxInFlight.
	MaxInFlight int
	// FrameMax is the connection's negotiated frame_max
	// (amqp.Connection.Config.FrameSize): a request whose properties do not
	// fit a frame of it fails with ErrPropertiesTooLarge instead of being
	// written (the broker would close the connection). Zero means
	// DefaultFrameMax.
	FrameMax int
	// Closed is called exactly once when the channel is gone, with the
	// publisher, the close error (nil after Close) and every request that
	// has no outcome yet, in submission order, reset to pending so they can
	// be submitted elsewhere. It may run before NewPublisher has returned.
	Closed func(p *Publisher, err error, unfinished []*Request)
}

// Publisher owns one channel in confirm mode. Submit never blocks; a writer
// goroutine sends requests in order and a reader goroutine matches confirms
// and returns to them.
type Publisher struct {
	ch  PublishChannel
	cfg PublisherConfig

	mu        sync.Mutex
	queue     []*Request
	inflight  map[uint64]*Request
	nacked    []*Request // nacked, to be handed back for a new channel
	maxNacks  int        // the most nacks of one of them
	closed    bool
	paused    bool
	recycling bool // a nack came: send nothing more, close once nothing is in flight
	closing   bool // recycling and the channel close was asked for

	signal     chan struct{} // wakes the writer
	slots      chan struct{} // one token per written, unconfirmed request
	stop       chan struct{} // closed by the reader when the channel is gone
	writerDone chan struct{}
	done       chan struct{} // closed after Closed was called
	count      atomic.Int64  // submitted, without an outcome, not handed back
}

// PublishChannel is what a Publisher uses of its channel: *amqp.Channel in
// production; an in-process fake in unit tests (the actors package's
// simulation decides when confirms, nacks, returns and the close come).
// The Notify* channels it is given are closed by the channel's owner when
// the channel is gone, as amqp091-go does.
type PublishChannel interface {
	NotifyClose(c chan *amqp.Error) chan *amqp.Error
	NotifyPublish(c chan amqp.Confirmation) chan amqp.Confirmation
	NotifyReturn(c chan amqp.Return) chan amqp.Return
	Confirm(noWait bool) error
	GetNextPublishSeqNo() uint64
	PublishWithDeferredConfirm(exchange, key string, mandatory, immediate bool, msg amqp.Publishing) (*amqp.DeferredConfirmation, error)
	Close() error
}

// NewPublisher puts ch in confirm mode and starts the session goroutines. It
// blocks on a broker round trip. On error ch is closed.
func NewPublisher(ch *amqp.Channel, cfg PublisherConfig) (*Publisher, error) {
	return NewPublisherOn(ch, cfg)
}

// NewPublisherOn is NewPublisher on any PublishChannel (a fake in tests).
// Only the Publisher's writer goroutine publishes on ch, so
// GetNextPublishSeqNo is the next publish's delivery tag.
func NewPublisherOn(ch PublishChannel, cfg PublisherConfig) (*Publisher, error) {
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	closes := ch.NotifyClose(make(chan *amqp.Error, 1))
	// The confirm buffer holds every outstanding publish, so amqp091-go
	// never waits on (or drops) a confirmation.
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, cfg.MaxInFlight+1))
	returns := ch.NotifyReturn(make(chan amqp.Return, cfg.MaxInFlight+1))
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, classify("confirm.select", err)
	}
	p := &Publisher{
		ch:         ch,
		cfg:        cfg,
		inflight:   make(map[uint64]*Request),
		signal:     make(chan struct{}, 1),
		slots:      make(chan struct{}, cfg.MaxInFlight),
		stop:       make(chan struct{}),
		writerDone: make(chan struct{}),
		done:       make(chan struct{}),
	}
	go p.write()
	go p.read(confirms, returns, closes)
	return p, nil
}

// Submit queues requests for sending. It never blocks. It returns false, and
// keeps none of them, once the publisher is closed.
func (p *Publisher) Submit(reqs ...*Request) bool {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return false
	}
	p.queue = append(p.queue, reqs...)
	p.count.Add(int64(len(reqs)))
	p.mu.Unlock()
	p.wake()
	return true
}

// Outstanding is the number of submitted requests without an outcome.
func (p *Publisher) Outstanding() int { return int(p.count.Load()) }

// SetPaused stops (true) or resumes (false) sending queued requests, for
// broker flow control (connection.blocked). Confirms keep being processed.
func (p *Publisher) SetPaused(paused bool) {
	p.mu.Lock()
	p.paused = paused
	p.mu.Unlock()
	p.wake()
}

// Close closes the channel. Requests without an outcome are handed to
// Closed. Non-blocking.
func (p *Publisher) Close() {
	go func() { _ = p.ch.Close() }()
}

// Done is closed once the channel is gone and Closed has returned.
func (p *Publisher) Done() <-chan struct{} { return p.done }

func (p *Publisher) wake() {
	select {
	case p.signal <- struct{}{}:
	default:
	}
}

// write sends queued requests in order, one slot each, until the channel is
// gone or unusable.
func (p *Publisher) write() {
	defer close(p.writerDone)
	for {
		select {
		case <-p.signal:
		case <-p.stop:
			return
		}
		for {
			p.mu.Lock()
			if p.paused || p.recycling || len(p.queue) == 0 {
				p.mu.Unlock()
				break
			}
			r := p.queue[0]
			p.queue[0] = nil
			p.queue = p.queue[1:]
			p.mu.Unlock()

			if r.state.Load() != reqPending {
				p.count.Add(-1) // abandoned while queued
				continue
			}
			select {
			case p.slots <- struct{}{}:
			case <-p.stop:
				p.requeueFront(r)
				return
			}
			if !p.send(r) {
				return
			}
		}
	}
}

// send writes one request. It reports false when the channel is unusable.
func (p *Publisher) send(r *Request) bool {
	if !r.state.CompareAndSwap(reqPending, reqWritten) {
		<-p.slots
		p.count.Add(-1)
		return true
	}
	if err := encodable(r, p.cfg.FrameMax); err != nil {
		// Refused before any I/O: the request's own failure.
		<-p.slots
		p.count.Add(-1)
		r.Finish(err)
		return true
	}
	// Only this goroutine publishes, so the next sequence number is this
	// request's delivery tag; record it before the confirm can arrive.
	p.mu.Lock()
	if p.recycling {
		// A nack came since the writer took r: r stays unwritten, first in
		// the queue, to be handed back with it.
		r.state.Store(reqPending)
		p.queue = append([]*Request{r}, p.queue...)
		p.mu.Unlock()
		<-p.slots
		return true
	}
	tag := p.ch.GetNextPublishSeqNo()
	p.inflight[tag] = r
	p.mu.Unlock()

	msg := r.Msg
	if r.Mandatory {
		msg.Headers = withReturnTag(msg.Headers, tag)
	}
	if _, err := p.ch.PublishWithDeferredConfirm(r.Exchange, r.RoutingKey, r.Mandatory, false, msg); err != nil {
		p.writeFailed(r, tag, err)
		return false
	}
	return true
}

// writeFailed handles a publish that amqp091-go did not write. Either the
// channel or connection is broken (closed, reset, ...): the request goes
// back to the queue and is handed back on close. Or amqp091-go could not
// encode it (and closes the connection itself): the request fails and is
// never sent again. Either way this channel is done.
func (p *Publisher) writeFailed(r *Request, tag uint64, err error) {
	p.mu.Lock()
	delete(p.inflight, tag)
	p.mu.Unlock()
	<-p.slots
	if brokenLink(err) {
		r.state.Store(reqPending)
		p.requeueFront(r)
	} else {
		p.count.Add(-1)
		r.Finish(fmt.Errorf("%w: %w", ErrUnencodable, err))
	}
	go func() { _ = p.ch.Close() }()
}

// withReturnTag is a copy of h with ReturnTagHeader set to tag.
func withReturnTag(h amqp.Table, tag uint64) amqp.Table {
	t := make(amqp.Table, len(h)+1)
	maps.Copy(t, h)
	t[ReturnTagHeader] = strconv.FormatUint(tag, 10)
	return t
}

// returnTag is the delivery tag a returned message was published with.
func returnTag(ret amqp.Return) (uint64, bool) {
	s, ok := ret.Headers[ReturnTagHeader].(string)
	if !ok {
		return 0, false
	}
	tag, err := strconv.ParseUint(s, 10, 64)
	return tag, err == nil && tag > 0
}

// returned holds the returns not yet matched to an ack, by delivery tag.
type returned map[uint64]amqp.Return

func (m returned) add(ret amqp.Return) {
	if tag, ok := returnTag(ret); ok {
		m[tag] = ret
	}
}

func (p *Publisher) requeueFront(r *Request) {
	p.mu.Lock()
	p.queue = append([]*Request{r}, p.queue...)
	p.mu.Unlock()
}

// read matches confirms and returns to requests until the channel closes,
// then hands back what has no outcome.
func (p *Publisher) read(confirms <-chan amqp.Confirmation, returns <-chan amqp.Return, closes <-chan *amqp.Error) {
	pendingReturns := returned{}
	var closeErr *amqp.Error
	for confirms != nil || closes != nil {
		select {
		case c, ok := <-confirms:
			if !ok {
				confirms = nil
				continue
			}
			// A basic.return precedes the ack of the same message, and
			// amqp091-go hands both over from one reader goroutine, so the
			// return is already buffered: collect before matching.
			returns = collectReturns(returns, pendingReturns)
			p.confirm(c, pendingReturns)
		case ret, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			pendingReturns.add(ret)
		case e, ok := <-closes:
			if !ok {
				closes = nil
				continue
			}
			if e != nil {
				closeErr = e
			}
		}
	}
	if returns != nil {
		go func() {
			for range returns {
			}
		}()
	}
	close(p.stop)
	<-p.writerDone
	p.finish(closeErr)
}

// collectReturns moves the returns already buffered into returned, without
// waiting. It returns nil once returns is closed.
func collectReturns(returns <-chan amqp.Return, into returned) <-chan amqp.Return {
	for returns != nil {
		select {
		case ret, ok := <-returns:
			if !ok {
				return nil
			}
			into.add(ret)
		default:
			return returns
		}
	}
	return nil
}

func (p *Publisher) confirm(c amqp.Confirmation, rets returned) {
	p.mu.Lock()
	r, ok := p.inflight[c.DeliveryTag]
	delete(p.inflight, c.DeliveryTag)
	p.mu.Unlock()
	ret, hit := rets[c.DeliveryTag]
	delete(rets, c.DeliveryTag)
	if !ok {
		return
	}
	<-p.slots
	defer p.closeWhenQuiet()
	if !c.Ack && p.resendNacked(r) {
		return
	}
	p.count.Add(-1)
	var err error
	switch {
	case !c.Ack:
		err = ErrNacked
	case hit:
		err = &ReturnError{Code: ret.ReplyCode, Text: ret.ReplyText, Exchange: ret.Exchange, RoutingKey: ret.RoutingKey}
	}
	r.Finish(err)
}

// resendNacked keeps a nacked request, unless it was nacked MaxNacks times,
// to hand it back once the channel is closed (see MaxNacks), and stops the
// writer: the channel is closed once nothing is in flight any more (see
// closeWhenQuiet). It reports whether it kept r.
func (p *Publisher) resendNacked(r *Request) bool {
	r.nacks++
	if r.nacks >= MaxNacks {
		return false
	}
	p.mu.Lock()
	p.nacked = append(p.nacked, r)
	p.maxNacks = max(p.maxNacks, r.nacks)
	p.recycling = true
	p.mu.Unlock()
	return true
}

// closeWhenQuiet closes the channel of a recycling publisher once every
// publish written on it has its confirm (ack or nack), so none of them is
// handed back and sent again although the broker routed it: only the nacked
// ones and those never written are. The writer writes nothing once
// recycling is set (send checks it under p.mu, where it records a written
// request in inflight), so inflight only shrinks from then on; the reader
// calls this after each confirm.
func (p *Publisher) closeWhenQuiet() {
	p.mu.Lock()
	quiet := p.recycling && !p.closing && len(p.inflight) == 0
	if quiet {
		p.closing = true
	}
	p.mu.Unlock()
	if quiet {
		p.Close()
	}
}

// finish runs once, after the writer stopped.
func (p *Publisher) finish(closeErr *amqp.Error) {
	// A channel-level error, or the broker closing the connection for a
	// protocol error, may be a publish's own doing: count it against the
	// requests in flight (see blame). A network failure is nobody's.
	soft := closeErr != nil && (closeErr.Recover || protocolError(closeErr))
	p.mu.Lock()
	p.closed = true
	unfinished := make([]*Request, 0, len(p.nacked)+len(p.inflight)+len(p.queue))
	// Nacked requests were sent before those still in flight, which were
	// submitted before queued ones; delivery tags give their order.
	unfinished = append(unfinished, p.nacked...)
	for _, tag := range slices.Sorted(maps.Keys(p.inflight)) {
		r := p.inflight[tag]
		if soft {
			r.attempts++
		}
		unfinished = append(unfinished, r)
	}
	unfinished = append(unfinished, p.queue...)
	p.inflight = nil
	p.queue = nil
	nacked := p.nacked
	p.nacked = nil
	p.mu.Unlock()

	var err error
	switch {
	case closeErr != nil:
		err = classify("publish channel closed", closeErr)
	case len(nacked) > 0:
		err = &NackedError{Nacks: p.maxNacks}
	}
	kept := unfinished[:0]
	for _, r := range unfinished {
		if r.Finished() {
			continue
		}
		if soft {
			if cause := blame(closeErr, r); cause != nil {
				r.Finish(cause)
				continue
			}
		}
		r.state.CompareAndSwap(reqWritten, reqPending)
		kept = append(kept, r)
	}
	// Closed takes the requests before Outstanding drops to zero, so they
	// are always counted somewhere (here or by whoever took them).
	if p.cfg.Closed != nil {
		p.cfg.Closed(p, err, kept)
	}
	p.count.Store(0)
	close(p.done)
}

// protocolError reports whether the broker closed the connection because
// of a frame it refused (which a publish may have caused), as opposed to an
// operator, a shutdown or the network.
func protocolError(e *amqp.Error) bool {
	switch e.Code {
	case amqp.FrameError, amqp.SyntaxError, amqp.CommandInvalid, amqp.ChannelError,
		amqp.UnexpectedFrame, amqp.NotImplemented:
		return e.Server
	}
	return false
}

// blame decides whether a channel-level error is this request's own doing,
// so it fails instead of being sent again: a publish to a missing or
// forbidden exchange named in the error, or a request that has now been in
// flight through MaxAttempts channel or broker protocol errors.
func blame(closeErr *amqp.Error, r *Request) error {
	if closeErr.Code == amqp.NotFound || closeErr.Code == amqp.AccessRefused {
		if strings.Contains(closeErr.Reason, "exchange '"+r.Exchange+"'") {
			return classify("publish to exchange "+r.Exchange, closeErr)
		}
	}
	if r.attempts >= MaxAttempts {
		return classify("publish failed repeatedly", closeErr)
	}
	return nil
}

// ReturnError is the outcome of a mandatory publish the broker returned.
// It matches ErrUnroutable with errors.Is.
type ReturnError struct {
	Code       uint16
	Text       string
	Exchange   string
	RoutingKey string
}

func (e *ReturnError) Error() string {
	return "hato/broker: message returned by broker: " + e.Text + " (exchange " + e.Exchange + ", routing key " + e.RoutingKey + ")"
}

// Is makes errors.Is(err, ErrUnroutable) true.
func (e *ReturnError) Is(target error) bool { return target == ErrUnroutable }
