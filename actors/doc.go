// Package actors holds hato's actors: the connection actor and the consumer
// actor, and the messages they exchange. They run under the root supervisor
// of package supervisor; the hato package wires them up.
//
// # The connection actor
//
// [ConnectionProps] makes the actor that owns the two AMQP connections (one
// for publishing, one for consuming, so flow control on one never stalls
// the other) and the confirm-mode publishing channel. Publishing is a
// [Publish] message to it; consumer actors ask it for channels with
// [OpenChannel]. It dials and reconnects with capped, jittered backoff,
// buffers publishes while disconnected (bounded; [ErrBufferFull] beyond),
// re-sends what a dead channel handed back, and pauses publishing while the
// broker blocks the connection.
//
// # The consumer actor
//
// [ConsumerProps] makes one route's actor. It owns its channel session,
// declares the route's topology on every (re)connection, runs the handler on
// Route.Concurrency worker goroutines, and settles each delivery by outcome
// ([Action]): ack once the handler returned and every publish it made was
// confirmed ([Tracker]); retry in process with backoff; requeue; drop; or
// dead-letter (republish with reason headers, wait for the confirm, then
// ack). A handler panic closes the channel, so the broker redelivers, and
// crashes the actor into its supervisor ([HandlerPanic]); a message that
// keeps crashing or being requeued is dead-lettered as poison.
//
// # Never blocking a mailbox
//
// No actor waits on network I/O or a confirm inside Receive: dials, channel
// setup, handlers and confirms run on goroutines that report back as
// messages stamped with the actor's incarnation and session generation, so
// results from before a restart or reconnection are recognised and dropped.
package actors
