package actors

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/zap"

	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/supervisor"
)

// Errors the connection actor finishes publish requests with.
var (
	// ErrBufferFull: more publishes are waiting than the publish buffer
	// holds.
	ErrBufferFull = errors.New("hato: publish buffer full")
	// ErrClosed: the connection actor stopped before the publish had an
	// outcome.
	ErrClosed = errors.New("hato: connection closed")
)

// ConnectionConfig configures the connection actor.
type ConnectionConfig struct {
	// Name is the actor's child name, reported in ChildReady.
	Name string
	// Publish and Consume dial the two connections (publishing must not
	// share a connection with consuming: flow control on one must not stall
	// the other). Give them distinct ConnectionName values.
	Publish, Consume broker.Config
	// URLs are the broker nodes (AMQP URLs) to connect to. Both connections
	// go to one node; the first dial uses URLs[0], and every failed dial or
	// lost connection moves on to the next one, round and round, paced by
	// Reconnect. Empty means the URLs of Publish and Consume as given. The
	// caller shuffles them if it wants to spread its load.
	URLs []string
	// Reconnect paces reconnection attempts. Zero means the supervisor
	// package's default (100 ms doubling to 30 s, 20 % jitter).
	Reconnect supervisor.Backoff
	// PublishBuffer bounds publishes that are buffered or awaiting confirms;
	// beyond it a publish fails with ErrBufferFull. Zero means 10,000.
	PublishBuffer int
	// MaxInFlight bounds unconfirmed publishes on the channel.
	MaxInFlight int
	// ChannelsPerConnection caps the consumer channels of one consuming
	// connection (the lower of it and the broker's channel_max, 2047 by
	// default, applies). Once every consuming connection is full, another
	// one is opened, named Consume.ConnectionName + "-2", "-3", …. Zero
	// means the broker's channel_max.
	ChannelsPerConnection int
	// Logger receives connection events. Nil means zap.NewNop().
	Logger *zap.Logger
	// Direct, when set, is opened while the publishing channel is open and
	// nothing is buffered, so the caller's publishers can skip the mailbox
	// (see DirectPublish). Nil means every publish is a Publish message.
	Direct *DirectPublish

	// fx routes the actor's dials, publishing channel opens, connection
	// closes and timers; nil means realConnEffects. The simulation
	// (sim_conn_test.go) decides when each happens and how it ends.
	fx connEffects
}

// connEffects are the connection actor's side effects on the broker and
// the clock. dial and publishChannel block (they run on goroutines);
// closeConn may block (it runs on one too); the notify methods register a
// receiver that is closed when conn is gone, as amqp091-go's are.
type connEffects interface {
	dial(ctx context.Context, cfg broker.Config) (*amqp.Connection, error)
	notifyClose(conn *amqp.Connection, c chan *amqp.Error) chan *amqp.Error
	notifyBlocked(conn *amqp.Connection, c chan amqp.Blocking) chan amqp.Blocking
	publishChannel(conn *amqp.Connection) (broker.PublishChannel, error)
	closeConn(conn *amqp.Connection)
	after(d time.Duration, self *actor.PID, sys *actor.ActorSystem, msg any)
}

// realConnEffects are the production effects: amqp091-go and time.AfterFunc.
type realConnEffects struct{}

func (realConnEffects) dial(ctx context.Context, cfg broker.Config) (*amqp.Connection, error) {
	return broker.Dial(ctx, cfg)
}

func (realConnEffects) notifyClose(conn *amqp.Connection, c chan *amqp.Error) chan *amqp.Error {
	return conn.NotifyClose(c)
}

func (realConnEffects) notifyBlocked(conn *amqp.Connection, c chan amqp.Blocking) chan amqp.Blocking {
	return conn.NotifyBlocked(c)
}

func (realConnEffects) publishChannel(conn *amqp.Connection) (broker.PublishChannel, error) {
	return conn.Channel()
}

func (realConnEffects) closeConn(conn *amqp.Connection) { _ = conn.Close() }

func (realConnEffects) after(d time.Duration, self *actor.PID, sys *actor.ActorSystem, msg any) {
	time.AfterFunc(d, func() { sys.Root.Send(self, msg) })
}

// ConnectionProps returns the props of a connection actor. It owns both
// AMQP connections and the publishing channel, opens channels for consumer
// actors, buffers publishes while disconnected and reconnects with capped,
// jittered backoff. It never blocks its mailbox on I/O: every dial, channel
// open and close runs on a goroutine that reports back as a message.
// amqp091-go's own recovery stays off.
func ConnectionProps(cfg ConnectionConfig) *actor.Props {
	props, _ := connectionProps(cfg)
	return props
}

// connectionProps is ConnectionProps with what its incarnations share.
func connectionProps(cfg ConnectionConfig) (*actor.Props, *connShared) {
	if cfg.PublishBuffer <= 0 {
		cfg.PublishBuffer = 10000
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Direct != nil {
		cfg.Direct.limit.Store(int64(cfg.PublishBuffer))
	}
	if cfg.fx == nil {
		cfg.fx = realConnEffects{}
	}
	shared := &connShared{setup: broker.NewSetupPool(broker.SetupBase)}
	return actor.PropsFromProducer(func() actor.Actor {
		return &connection{cfg: cfg, shared: shared, log: cfg.Logger}
	}, actor.WithDispatcher(newWarmDispatcher())), shared
}

// connShared is what outlives a restart of the connection actor: publish
// requests a closed publisher handed back (guarded by mu, so a request is
// always either here, in the actor's buffer, or finished), and, owned by the
// actor's mailbox, the buffer, the routes waiting for a channel, the last
// incarnation and the last generation. A new incarnation numbers its
// connections after the last one's, so no message of an earlier incarnation
// can name its connections.
type connShared struct {
	mu       sync.Mutex
	stopped  bool
	handback []*broker.Request
	setup    *broker.SetupPool // consumer channel opens and route set-ups (see broker.SetupBase)

	pending []*broker.Request
	waiters []*OpenChannel
	// dials are dial results holding connections, sent to the actor and not
	// taken yet (under mu; see sendDial).
	dials map[discarder]struct{}
	// retired are publishers the actor let go of with their connection
	// (closeConns) that have not closed yet: their requests come back
	// through handBack, and until then they are outstanding (a drain must
	// not report clean while they are in transit).
	retired []*broker.Publisher
	inc     uint64
	gen     uint64
	next    int // index in ConnectionConfig.URLs of the next dial's node
}

// handBack takes the requests a closed publisher did not finish, to be
// resent, and reports true; once the actor stopped (and until it is
// spawned again) it finishes them with ErrClosed and reports false.
func (s *connShared) handBack(unfinished []*broker.Request) bool {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		for _, r := range unfinished {
			r.Finish(ErrClosed)
		}
		return false
	}
	s.handback = append(s.handback, unfinished...)
	s.mu.Unlock()
	return true
}

// sendDial sends a dial's result (connections it opened) to the actor by
// send, registered until the actor takes it (takeDial). If the incarnation
// that dialed stopped (ctx cancelled), it closes what res holds instead:
// a result sent to a stopped actor is dropped with its mailbox, and the
// connections in it would stay open for good. stop closes what results
// still registered hold (sweepDials). Check and registration happen under
// mu, after which stop's cancel and sweep come, so none is missed.
func (s *connShared) sendDial(ctx context.Context, res discarder, send func()) {
	s.mu.Lock()
	if ctx.Err() != nil {
		s.mu.Unlock()
		res.discard()
		return
	}
	if s.dials == nil {
		s.dials = make(map[discarder]struct{})
	}
	s.dials[res] = struct{}{}
	s.mu.Unlock()
	send()
}

// takeDial claims a dial result for the actor; false if stop swept it.
func (s *connShared) takeDial(res discarder) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.dials[res]
	delete(s.dials, res)
	return ok
}

// sweepDials closes what the dial results nobody took hold.
func (s *connShared) sweepDials() {
	s.mu.Lock()
	left := s.dials
	s.dials = nil
	s.mu.Unlock()
	for res := range left {
		res.discard()
	}
}

type connection struct {
	cfg    ConnectionConfig
	shared *connShared
	log    *zap.Logger
	self   *actor.PID
	sys    *actor.ActorSystem

	ctx    context.Context // cancels dials in progress when the actor stops
	cancel context.CancelFunc

	inc          uint64 // incarnation: async results of an earlier one are stale
	gen          uint64 // current connection generation
	dialing      bool
	attempt      int
	failures     int   // failed dials since the last successful one
	lastErr      error // the last dial failure, for ConnectionStatus
	pub          *amqp.Connection
	subs         []*amqp.Connection // consuming connections; subs[0] dialed with pub
	growing      bool               // dialing one more consuming connection
	growFailures int                // failed dials of one more consuming connection in a row
	publisher    *broker.Publisher
	blocked      bool
	drain        *supervisor.Drain
	connected    bool   // publisher channel open on live connections
	pubNode      string // host:port of the live connections' node(s)
	subNode      string
	subCfg       broker.Config // how subs[0] was dialed

	beforeHandback func() // test hook: runs in outstanding between its reads
}

// stamp says which incarnation started the work behind an async message
// and, for a message about connections, their generation (zero: none).
type stamp struct{ inc, gen uint64 }

func (s stamp) connStamp() stamp { return s }

type dialResult struct {
	stamp    // gen zero: the dial's generation is next
	next     uint64
	pub, sub *amqp.Connection
	pubCfg   broker.Config // what was dialed (URL: the node)
	subCfg   broker.Config
	err      error
	fx       connEffects // closes what a stale dial opened
}

type connLost struct {
	stamp
	err error
}

type publisherResult struct {
	stamp
	p   *broker.Publisher
	err error
}

type publisherClosed struct {
	gen uint64
	p   *broker.Publisher
	err error
}

type blockedChanged struct {
	stamp
	active bool
	reason string
}

type redial struct{ stamp }

type reopenPublisher struct{ stamp }

type drainCheck struct{ stamp }

// connStamped is an async message: it is stale once the incarnation that
// started its work is gone (a panic-restart), or, if it is about the
// connections of one generation, once those are gone (closed, or replaced by
// a newer generation). Receive drops stale ones in one place (see current).
type connStamped interface{ connStamp() stamp }

// discard closes the publisher a stale open made.
func (m *publisherResult) discard() {
	if m.p != nil {
		m.p.Close()
	}
}

// discard closes the connections a stale dial opened.
func (m *dialResult) discard() {
	for _, conn := range []*amqp.Connection{m.pub, m.sub} {
		if conn != nil {
			go m.fx.closeConn(conn)
		}
	}
}

// Receive implements actor.Actor.
func (c *connection) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case connStamped:
		c.receiveStamped(ctx, msg)
	case *actor.Started:
		c.started(ctx)
	case *actor.Restarting:
		c.teardown()
	case *actor.Stopping:
		c.stop()
	case *publisherClosed:
		c.publisherGone(msg)
	case *Publish:
		if msg.Take() {
			c.publish(msg.Req)
			msg.counted.taken()
		}
	case *OpenChannel:
		if msg.Take() {
			c.openChannel(msg)
		}
	case *subsFull:
		c.full(msg)
	case *StatusRequest:
		ctx.Respond(c.status())
	case *supervisor.Drain:
		c.startDrain(msg)
	}
}

// receiveStamped drops a stale message, then dispatches a current one.
func (c *connection) receiveStamped(ctx actor.Context, msg connStamped) {
	switch res := msg.(type) {
	case *dialResult:
		if !c.shared.takeDial(res) {
			return // swept (and closed) by a stop
		}
	case *subDialed:
		if !c.shared.takeDial(res) {
			return
		}
	}
	if !c.current(msg) {
		return
	}
	switch msg := msg.(type) {
	case *redial:
		c.redial()
	case *dialResult:
		c.dialed(ctx, msg)
	case *drainCheck:
		c.checkDrain()
	case *connLost:
		c.lost(ctx, msg)
	case *publisherResult:
		c.publisherOpened(ctx, msg)
	case *blockedChanged:
		c.blockedChanged(msg)
	case *reopenPublisher:
		c.reopenPublisher()
	case *growSubs:
		c.growSubs()
	case *subDialed:
		c.subDialed(msg)
	}
}

// current reports whether msg comes from this incarnation and, if it is
// about connections, the live ones; it releases what a stale one holds.
func (c *connection) current(msg connStamped) bool {
	s := msg.connStamp()
	if s.inc == c.inc && (s.gen == 0 || s.gen == c.gen && c.pub != nil) {
		return true
	}
	if d, ok := msg.(discarder); ok {
		d.discard()
	}
	return false
}

func (c *connection) started(ctx actor.Context) {
	c.self, c.sys = ctx.Self(), ctx.ActorSystem()
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.shared.inc++
	c.inc, c.gen = c.shared.inc, c.shared.gen
	// Spawned again after a stop (the root supervisor respawns a child
	// stopped from outside): publishes are resent again, not failed
	// (issue 17-3b).
	c.shared.mu.Lock()
	c.shared.stopped = false
	c.shared.mu.Unlock()
	// What an earlier incarnation took in is served by this one: requests
	// it handed back, buffered ones and routes waiting for a channel.
	c.takeHandback()
	// Publishes and channel requests sent to the stopped incarnation after
	// its Stopping, or to its PID before this one took its name, are this
	// one's (in send order).
	reqs, opens := c.cfg.Direct.sweep()
	c.shared.pending = append(c.shared.pending, reqs...)
	c.shared.waiters = append(c.shared.waiters, opens...)
	c.dial()
}

func (c *connection) redial() {
	if !c.dialing && c.pub == nil {
		c.dial()
	}
}

func (c *connection) reopenPublisher() {
	if c.publisher == nil && !c.pub.IsClosed() {
		c.openPublisher()
	}
}

func (c *connection) blockedChanged(msg *blockedChanged) {
	c.blocked = msg.active
	if c.publisher != nil {
		c.publisher.SetPaused(msg.active)
	}
	if msg.active {
		c.log.Warn("broker blocked publishing (flow control)", zap.String("reason", msg.reason))
	} else {
		c.log.Info("broker unblocked publishing")
	}
}

// openChannel opens a channel for a consumer now, or once connected.
func (c *connection) openChannel(msg *OpenChannel) {
	if len(c.subs) > 0 && !c.subs[0].IsClosed() {
		c.openFor(msg)
		return
	}
	c.shared.waiters = append(c.shared.waiters, msg)
}

func (c *connection) status() *ConnectionStatus {
	c.prune()
	st := &ConnectionStatus{Connected: c.connected, Publishing: c.publisher != nil, Generation: c.gen, Blocked: c.blocked, Buffered: len(c.shared.pending),
		FailedAttempts: c.failures, LastError: c.lastErr, PublishNode: c.pubNode, ConsumeNode: c.subNode}
	if c.publisher != nil {
		st.Outstanding = c.publisher.Outstanding()
	}
	return st
}

func (c *connection) startDrain(msg *supervisor.Drain) {
	c.drain = msg
	c.checkDrain()
}

// nodeConfigs are the dial configurations of the next node to try.
func (c *connection) nodeConfigs() (pub, sub broker.Config) {
	pub, sub = c.cfg.Publish, c.cfg.Consume
	sub.ChannelMax = channelMax(c.cfg.ChannelsPerConnection)
	if n := len(c.cfg.URLs); n > 0 {
		url := c.cfg.URLs[c.shared.next%n]
		pub.URL, sub.URL = url, url
	}
	return pub, sub
}

// nextNode moves on to the next URL (after a failed dial or a lost
// connection).
func (c *connection) nextNode() {
	if n := len(c.cfg.URLs); n > 1 {
		c.shared.next = (c.shared.next + 1) % n
	}
}

func (c *connection) dial() {
	c.dialing = true
	ctx := c.ctx
	self, sys, shared := c.self, c.sys, c.shared
	res := &dialResult{stamp: stamp{inc: c.inc}, next: c.gen + 1, fx: c.cfg.fx}
	res.pubCfg, res.subCfg = c.nodeConfigs()
	go func() {
		res.pub, res.err = res.fx.dial(ctx, res.pubCfg)
		if res.err != nil {
			res.err = fmt.Errorf("publishing connection: %w", res.err)
		} else if res.sub, res.err = res.fx.dial(ctx, res.subCfg); res.err != nil {
			res.fx.closeConn(res.pub)
			res.pub, res.err = nil, fmt.Errorf("consuming connection: %w", res.err)
		}
		shared.sendDial(ctx, res, func() { sys.Root.Send(self, res) })
	}()
}

func (c *connection) dialed(ctx actor.Context, msg *dialResult) {
	c.dialing = false
	if msg.err != nil {
		c.attempt++
		c.failures++
		c.lastErr = msg.err
		c.nextNode()
		delay := c.cfg.Reconnect.Delay(c.attempt)
		c.log.Warn("connect failed", zap.Error(msg.err), zap.Int("attempt", c.attempt), zap.Duration("retry_in", delay),
			zap.String("node", broker.Node(msg.pubCfg.URL)))
		if c.gen == 0 && broker.Permanent(msg.err) {
			// Never connected and the broker refused us (credentials,
			// vhost, URL): report it so Start fails instead of waiting.
			ctx.Send(ctx.Parent(), &supervisor.ChildFailed{Name: c.cfg.Name, Err: msg.err, Permanent: true})
		}
		c.after(delay, &redial{stamp: stamp{inc: c.inc}})
		return
	}
	c.gen, c.shared.gen = msg.next, msg.next
	c.failures, c.lastErr = 0, nil
	c.pub, c.subs = msg.pub, []*amqp.Connection{msg.sub}
	c.subCfg = msg.subCfg
	c.pubNode, c.subNode = broker.Node(msg.pubCfg.URL), broker.Node(msg.subCfg.URL)
	st, self, sys := stamp{inc: c.inc, gen: c.gen}, c.self, c.sys
	c.watch(msg.pub)
	c.watch(msg.sub)
	blocks := c.cfg.fx.notifyBlocked(msg.pub, make(chan amqp.Blocking, 4))
	go func() {
		for b := range blocks {
			sys.Root.Send(self, &blockedChanged{stamp: st, active: b.Active, reason: b.Reason})
		}
	}()
	c.log.Info("connected", zap.Uint64("generation", c.gen),
		zap.String("publish_connection", c.cfg.Publish.ConnectionName), zap.String("publish_node", c.pubNode),
		zap.String("consume_connection", c.cfg.Consume.ConnectionName), zap.String("consume_node", c.subNode))
	for _, w := range c.shared.waiters {
		c.openFor(w)
	}
	c.shared.waiters = nil
	c.openPublisher()
}

func (c *connection) openPublisher() {
	pub, st, self, sys, shared := c.pub, stamp{inc: c.inc, gen: c.gen}, c.self, c.sys, c.shared
	maxInFlight, fx := c.cfg.MaxInFlight, c.cfg.fx
	go func() {
		ch, err := fx.publishChannel(pub)
		if err != nil {
			sys.Root.Send(self, &publisherResult{stamp: st, err: err})
			return
		}
		p, err := broker.NewPublisherOn(ch, broker.PublisherConfig{
			MaxInFlight: maxInFlight,
			FrameMax:    pub.Config.FrameSize,
			Closed: func(p *broker.Publisher, err error, unfinished []*broker.Request) {
				if shared.handBack(unfinished) {
					sys.Root.Send(self, &publisherClosed{gen: st.gen, p: p, err: err})
				}
			},
		})
		sys.Root.Send(self, &publisherResult{stamp: st, p: p, err: err})
	}()
}

func (c *connection) publisherOpened(ctx actor.Context, msg *publisherResult) {
	if msg.err != nil {
		c.log.Warn("opening the publishing channel failed", zap.Error(msg.err))
		c.after(c.cfg.Reconnect.Delay(1), &reopenPublisher{stamp: stamp{inc: c.inc, gen: c.gen}})
		return
	}
	c.publisher = msg.p
	c.connected = true
	c.attempt = 0
	if c.blocked {
		c.publisher.SetPaused(true)
	}
	c.flush()
	ctx.Send(ctx.Parent(), &supervisor.ChildReady{Name: c.cfg.Name, Detail: c.nodes()})
}

func (c *connection) publisherGone(msg *publisherClosed) {
	c.takeHandback()
	if msg.p != c.publisher {
		c.flush()
		return
	}
	c.cfg.Direct.open(nil)
	c.publisher = nil
	// Connected stays: only the channel closed (see ConnectionStatus).
	if msg.err != nil {
		c.log.Warn("publishing channel closed", zap.Error(msg.err))
	}
	if c.pub != nil && !c.pub.IsClosed() {
		// A channel-level error (e.g. a publish to a missing exchange), or
		// the publisher recycling its channel after a nack: the connection
		// lives on, open a new channel.
		c.after(reopenDelay(c.cfg.Reconnect, msg.err), &reopenPublisher{stamp: stamp{inc: c.inc, gen: c.gen}})
	}
	c.checkDrain()
}

// reopenDelay paces a new publishing channel: after a nack, by how often
// the publishes handed back were nacked already (a quorum queue electing a
// leader nacks for a while), else by the first backoff step.
func reopenDelay(b supervisor.Backoff, err error) time.Duration {
	var nacked *broker.NackedError
	if errors.As(err, &nacked) {
		return b.Delay(nacked.Nacks)
	}
	return b.Delay(1)
}

// takeHandback moves requests returned by closed publishers to the front of
// the buffer, in order.
func (c *connection) takeHandback() {
	c.shared.mu.Lock()
	back := c.shared.handback
	c.shared.handback = nil
	c.shared.mu.Unlock()
	if len(back) > 0 {
		c.shared.pending = append(back, c.shared.pending...)
	}
}

// nodes describes the nodes of the connections, for supervisor events.
func (c *connection) nodes() string {
	return "publish=" + c.pubNode + " consume=" + c.subNode
}

func (c *connection) lost(ctx actor.Context, msg *connLost) {
	ctx.Send(ctx.Parent(), &supervisor.ChildFailed{Name: c.cfg.Name, Err: msg.err, Detail: c.nodes()})
	c.log.Warn("connection lost, reconnecting", zap.Uint64("generation", c.gen), zap.Error(msg.err),
		zap.String("publish_node", c.pubNode), zap.String("consume_node", c.subNode))
	c.closeConns()
	c.nextNode()
	c.attempt = 1
	c.after(c.cfg.Reconnect.Delay(c.attempt), &redial{stamp: stamp{inc: c.inc}})
}

// closeConns drops both connections; closing the consuming one closes every
// consumer channel, so consumer actors reopen theirs.
func (c *connection) closeConns() {
	pub, subs, fx := c.pub, c.subs, c.cfg.fx
	c.cfg.Direct.open(nil)
	if c.publisher != nil {
		c.shared.retired = append(c.shared.retired, c.publisher)
	}
	c.pub, c.subs, c.publisher = nil, nil, nil
	c.growing, c.growFailures = false, 0
	c.pubNode, c.subNode = "", ""
	c.connected = false
	c.blocked = false
	go func() {
		if pub != nil {
			fx.closeConn(pub)
		}
		for _, sub := range subs {
			fx.closeConn(sub)
		}
	}()
}

func (c *connection) publish(r *broker.Request) {
	if r.Finished() {
		return
	}
	outstanding := c.outstanding()
	if outstanding >= c.cfg.PublishBuffer {
		c.prune() // callers that gave up still hold places
		outstanding = c.outstanding()
	}
	if outstanding >= c.cfg.PublishBuffer {
		r.Finish(fmt.Errorf("%w (%d publishes outstanding)", ErrBufferFull, outstanding))
		return
	}
	if c.publisher != nil && len(c.shared.pending) == 0 && c.publisher.Submit(r) {
		return
	}
	c.shared.pending = append(c.shared.pending, r)
}

// outstanding is how many publishes wait for the broker: buffered here,
// awaiting their confirm (on the publisher or on one let go of with its
// connection), or handed back by a closed publisher and not yet taken (a
// drain must not report clean while they wait).
//
// Publishers are read before the hand-back: a closing publisher hands its
// requests back before its count drops to zero (broker.Publisher.finish),
// so in this order a request in transit between the two is counted at
// least once (twice only delays a drain). In the other order it could be
// counted nowhere (TestOutstandingCountsPublishesInTransit).
func (c *connection) outstanding() int {
	n := c.retiredOutstanding()
	if c.publisher != nil {
		n += c.publisher.Outstanding()
	}
	if c.beforeHandback != nil {
		c.beforeHandback()
	}
	c.shared.mu.Lock()
	n += len(c.shared.handback)
	c.shared.mu.Unlock()
	return n + len(c.shared.pending)
}

// retiredOutstanding counts what retired publishers still hold and forgets
// those that closed (their requests are handed back by then).
func (c *connection) retiredOutstanding() int {
	if len(c.shared.retired) == 0 {
		return 0
	}
	n, live := 0, c.shared.retired[:0]
	for _, p := range c.shared.retired {
		select {
		case <-p.Done():
			continue
		default:
		}
		n += p.Outstanding()
		live = append(live, p)
	}
	clear(c.shared.retired[len(live):])
	c.shared.retired = live
	return n
}

// prune drops buffered requests whose callers gave up.
func (c *connection) prune() {
	live := c.shared.pending[:0]
	for _, r := range c.shared.pending {
		if !r.Finished() {
			live = append(live, r)
		}
	}
	clear(c.shared.pending[len(live):])
	c.shared.pending = live
}

// flush submits buffered requests to the publisher. Once none is left,
// publishers may hand requests to it directly.
func (c *connection) flush() {
	if c.publisher == nil {
		return
	}
	if len(c.shared.pending) > 0 {
		c.prune()
		if !c.publisher.Submit(c.shared.pending...) {
			return
		}
		c.shared.pending = nil
	}
	c.cfg.Direct.open(c.publisher)
}

func (c *connection) checkDrain() {
	if c.drain == nil {
		return
	}
	outstanding := c.outstanding()
	if outstanding == 0 || time.Now().After(c.drain.Deadline) {
		if outstanding > 0 {
			c.log.Warn("publishes unconfirmed at the drain deadline", zap.Int("outstanding", outstanding))
			if c.drain.Unfinished != nil {
				c.drain.Unfinished(outstanding)
			}
		}
		close(c.drain.Done)
		c.drain = nil
		return
	}
	c.after(10*time.Millisecond, &drainCheck{stamp: stamp{inc: c.inc}})
}

func (c *connection) after(d time.Duration, msg any) {
	fx := c.cfg.fx
	if fx == nil { // a connection made without connectionProps (unit tests)
		fx = realConnEffects{}
	}
	fx.after(d, c.self, c.sys, msg)
}

// teardown closes connections and cancels dials; buffered requests stay.
func (c *connection) teardown() {
	if c.cancel != nil {
		c.cancel()
	}
	c.closeConns()
}

func (c *connection) stop() {
	c.teardown() // closes Direct too
	c.shared.sweepDials()
	c.shared.mu.Lock()
	c.shared.stopped = true
	rest := append(c.shared.handback, c.shared.pending...)
	c.shared.handback, c.shared.pending = nil, nil
	c.shared.mu.Unlock()
	// What is still in the mailbox is dropped with it: the publishes and
	// channel requests DirectPublish registered end as the buffered ones do.
	reqs, opens := c.cfg.Direct.sweep()
	rest = append(rest, reqs...)
	for _, r := range rest {
		r.Finish(ErrClosed)
	}
	for _, w := range append(c.shared.waiters, opens...) {
		c.sys.Root.Send(w.ReplyTo, &ChannelReply{Nonce: w.Nonce, Err: ErrClosed})
	}
	c.shared.waiters = nil
	if c.drain != nil {
		close(c.drain.Done)
		c.drain = nil
	}
}
