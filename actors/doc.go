// Package actors is the embedding layer for actor-system users: the
// messages a Proto.Actor user may send to hato's connection actor. Build,
// run and publish from a service with package hato; reach for this package
// only to talk to the connection actor from your own actors, in the actor
// system you gave hato with hato.WithActorSystem.
//
// # What you may use
//
// The connection actor of a service is its root supervisor's child named
// "connection": in the service's actor system its PID has the id
// "hato-<name>-<uuid>/connection" (Service.Name, Service.UUID). It accepts:
//
//   - [Publish] with a [github.com/hato-go/hato/broker.Request]: publish one
//     message with a broker confirm. The Request's Done is called exactly
//     once, from a hato goroutine, with the outcome (nil once confirmed); it
//     must not block. You build the message yourself (exchange, routing key
//     as broker.BindingKey makes it, body encoded with package envelope):
//     hato.Service.Publish does that for you and also makes Stop wait for
//     the outcome, so prefer it from code that holds the Service.
//   - [OpenChannel], answered by a [ChannelReply] with the same Nonce, sent
//     to ReplyTo once the consuming connection is up: an AMQP channel the
//     receiver then owns and must close.
//   - [StatusRequest], answered by a [ConnectionStatus] (use RequestFuture);
//     hato.Service.Status wraps it.
//
// A Publish or OpenChannel you send yourself that is still in the
// connection actor's mailbox when the actor is stopped from outside is
// dropped with the mailbox, as protoactor drops any message to a stopped
// actor: its Done is never called, its ReplyTo never answered, so give
// your requests a deadline (Request.Abandon). hato's own publishes and
// channel requests are registered and resolved instead.
//
// Outcomes may be [ErrBufferFull] and [ErrClosed] (hato.ErrBufferFull and
// hato.ErrConnectionClosed) or the broker package's sentinels.
//
// Some types here are package hato's public types, which it exports as
// aliases (one definition, see DESIGN.md, "Types defined once"):
// FailurePolicy, Action (the values a DeliveryEvent carries), DeliveryEvent,
// ConnectionStatus, BreakerPolicy, PausedRoute, HandlerTimeoutError. They
// change only as package hato's API does; use them by hato's names
// (hato.FailurePolicy, hato.ActionDeadLetter, ...).
//
// Everything else here (ConnectionProps, ConsumerProps and their configs,
// DirectPublish, Route, RouteState, Tracker, Directive, the Ack and Retry
// actions, HandlerPanic, the Header* names) is implementation detail of
// package hato, subject to change without notice. Use the root package
// instead: hato.Requeue and its siblings, hato.SubscribeActor; the
// dead-letter headers are described in docs/failure-handling.md.
//
// # Implementation: the actors
//
// The connection actor and the consumer actors run under the root
// supervisor of package supervisor; the hato package wires them up.
//
// # The connection actor
//
// [ConnectionProps] makes the actor that owns the AMQP connections (one for
// publishing, and for consuming as many as the consumer channels need, so
// flow control on publishing never stalls consuming) and the confirm-mode
// publishing channel. Publishing is a [Publish] message to it, or, from
// package hato while the channel is open and nothing is buffered, a
// [DirectPublish] hand-over to the channel that skips the mailbox; consumer
// actors ask it for channels with [OpenChannel], opened on a consuming
// connection with a free channel id, or on one more consuming connection
// it dials when every one is full (a broker caps the channels of a
// connection: RabbitMQ's channel_max is 2047). All its connections are one
// generation: losing any reconnects them all. It dials and reconnects with capped, jittered backoff,
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
// keeps crashing or being requeued is dead-lettered as poison, counted per
// message in [routeState] (a quorum queue's delivery count is only a
// backstop: [FailurePolicy.DeliveryCountLimit]). A dead-letter queue that
// refuses a copy as unroutable is declared again, a bounded number of
// times, before the delivery goes back to its queue.
//
// # Never blocking a mailbox
//
// No actor waits on network I/O or a confirm inside Receive: dials, channel
// setup, handlers and confirms run on goroutines that report back as
// messages stamped with the actor's incarnation and session generation, so
// results from before a restart or reconnection are recognised and dropped.
package actors
