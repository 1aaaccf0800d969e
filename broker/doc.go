// Package broker is everything AMQP in hato, and nothing else: no actors, no
// envelopes. For users it is part of the embedding layer, with package
// actors: the pieces an actor-system user needs to talk to hato's connection
// actor. Services are built and run with package hato.
//
// # What you may use
//
//   - [Request]: the message an actors.Publish carries. Set Exchange,
//     RoutingKey, Mandatory, Msg and Done; Done is called exactly once with
//     the outcome and must not block. [Request.Abandon] gives up on a request
//     not sent yet; [Request.Finished] says whether it has its outcome.
//   - The names: [EncodeRoutingKey], [DecodeRoutingKey], [BindingKey],
//     [StripPrefix], [QueueName] and [FixedQueueName], tomodachi's routing
//     keys and queue names, to address what a hato or tomodachi service
//     consumes.
//   - The sentinels a publish's outcome may match ([ErrNacked],
//     [ErrUnroutable], [ErrExchangeNotFound], [ErrAccessRefused], ...;
//     package hato re-exports them) and [Permanent].
//
// Everything else here (Dial, Config, Session, Publisher, Topology,
// Delivery, QueueType, Request.Finish, the URL helpers) is implementation
// detail of packages hato and actors, subject to change without notice.
//
// # Names
//
// [EncodeRoutingKey], [DecodeRoutingKey], [BindingKey], [QueueName] and
// [FixedQueueName] reproduce tomodachi's routing-key encoding and queue
// naming byte for byte, so hato and tomodachi nodes share queues.
//
// # Topology
//
// [Topology] declares a route's exchange (only when it is not amq.topic),
// queue (durable, x-expires as tomodachi declares it, or a quorum queue when
// asked) and binding, plus an optional dead-letter queue.
//
// # Sessions
//
// Each AMQP channel has exactly one owner goroutine. A [Session] owns a
// consuming channel: QoS, declarations, consume, acks, cancel and close all
// happen on its goroutine; settlements from any goroutine are queued and
// never block, and settlements after the channel ended are dropped (a
// delivery tag never reaches another channel). A [Publisher] owns a
// confirm-mode channel: a writer goroutine sends [Request]s in order with a
// bounded number in flight, a reader goroutine matches confirms and returns
// to them, and when the channel dies every request without an outcome is
// handed back to be sent elsewhere. Every Notify channel is buffered and
// drained until amqp091-go closes it.
//
// # Dialing and errors
//
// [Dial] honours its context for the whole handshake, names the connection,
// never enables amqp091-go's automatic recovery (the caller owns
// reconnection), arms the heartbeat read deadline right after the handshake,
// and never puts a password in an error ([Redact]). Errors wrap package
// sentinels ([ErrAccessRefused], [ErrPreconditionFailed],
// [ErrExchangeNotFound], ...); [Permanent] says whether retrying can help.
package broker
