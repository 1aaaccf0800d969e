package actors

import (
	"sync"

	"github.com/asynkron/protoactor-go/actor"
	amqp "github.com/rabbitmq/amqp091-go"
)

// opening is one channel request of a consumer incarnation and what it
// yields: the channel, then the consuming session. It owns them until the
// actor takes the session (sessionStarted), so an actor that stops or
// restarts meanwhile leaks neither: abandon closes what it holds, and what
// arrives later is closed on arrival. The broker then requeues every
// delivery the session took.
type opening struct {
	mu        sync.Mutex
	abandoned bool
	ch        *amqp.Channel
	s         consumerSession
}

// holdChannel takes ch; false, with ch closed, once the request was
// abandoned.
func (o *opening) holdChannel(ch *amqp.Channel) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.abandoned {
		go func() { _ = ch.Close() }()
		return false
	}
	o.ch = ch
	return true
}

// holdSession takes s, which owns the channel now; false, with s closed,
// once the request was abandoned.
func (o *opening) holdSession(s consumerSession) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.abandoned {
		s.Close()
		return false
	}
	o.s, o.ch = s, nil
	return true
}

// handOver gives what the request holds to the actor, which closes it
// from now on.
func (o *opening) handOver() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.s, o.ch = nil, nil
}

// abandon closes what the request holds, and anything it gets later.
func (o *opening) abandon() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.abandoned = true
	if o.s != nil {
		o.s.Close()
	}
	if ch := o.ch; ch != nil {
		go func() { _ = ch.Close() }()
	}
	o.s, o.ch = nil, nil
}

// replyInbox receives one reply on behalf of an actor and passes it to
// deliver. It is a process of its own in the actor system's registry, so
// its PID still works after the actor stopped: a reply that comes too late
// still reaches code that releases what it carries, instead of dead
// letters. It unregisters itself on its first message.
type replyInbox struct {
	sys     *actor.ActorSystem
	deliver func(msg any)
}

// newReplyInbox registers an inbox and returns its PID.
func newReplyInbox(sys *actor.ActorSystem, deliver func(msg any)) *actor.PID {
	pid, _ := sys.ProcessRegistry.Add(&replyInbox{sys: sys, deliver: deliver}, "hato-reply"+sys.ProcessRegistry.NextId())
	return pid
}

// SendUserMessage implements actor.Process.
func (b *replyInbox) SendUserMessage(pid *actor.PID, message any) {
	b.sys.ProcessRegistry.Remove(pid)
	b.deliver(actor.UnwrapEnvelopeMessage(message))
}

// SendSystemMessage implements actor.Process.
func (b *replyInbox) SendSystemMessage(*actor.PID, any) {}

// Stop implements actor.Process.
func (b *replyInbox) Stop(pid *actor.PID) { b.sys.ProcessRegistry.Remove(pid) }
