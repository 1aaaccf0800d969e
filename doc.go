// Package hato is a runtime for AMQP (RabbitMQ) publish/subscribe services
// with the programming model of Python's tomodachi and the fault tolerance of
// an actor system.
//
// A service declares handlers on routing keys; messages arrive decoded from
// an envelope (tomodachi's JSON envelope by default) into the handler's type;
// handlers publish onward. Underneath, a root supervisor
// ([github.com/hato-go/hato/supervisor]) runs one connection actor and one
// consumer actor per route ([github.com/hato-go/hato/actors]) on
// Proto.Actor. Wire format, queue names and topology match tomodachi's
// exactly, so a hato node can join or replace a tomodachi service on the same
// broker.
//
// # A service
//
//	svc, err := hato.New("amqp-example") // AMQP_URL, or tomodachi's defaults
//	if err != nil {
//		log.Fatal(err)
//	}
//	hato.Subscribe(svc, "example.topic", func(ctx context.Context, msg *hato.Message[any]) error {
//		return svc.Publish(ctx, msg.Data, "example.response")
//	})
//	hato.Main(svc) // run until SIGINT/SIGTERM, drain, exit with a meaningful code
//
// # Routes
//
// [Subscribe] is tomodachi's @amqp(routing_key, exchange_name, competing,
// queue_name): the options [Exchange], [NotCompeting], [QueueName] and
// [HandlerName] map to its parameters, with the same defaults (amq.topic,
// competing). [Envelope], [EnvelopeOptions] and [Validator] choose and
// configure the route's envelope; [Concurrency] and [Prefetch] bound how many
// messages a route handles and holds; [FailureHandling] (a [FailurePolicy])
// and [Supervision] (a [RestartPolicy]) say what happens when handlers fail
// or crash; [NoDeadLetterQueue] turns dead-letter queues off; [QuorumQueue]
// opts into quorum queues for queues hato owns alone. [SubscribeActor] makes
// a route whose handler is a user's actor in an embedding actor system
// ([WithActorSystem]).
//
// # Options
//
// How options read. One rule, for every option of [New], [Subscribe] and
// [Service.Publish]:
//
//   - An option that configures only the service is named With… and
//     returns [Option] ([WithURL], [WithLogger], [WithMiddleware], ...).
//   - An option of a route or a publish is a bare noun or adjective
//     ([QueueName], [Concurrency], [Mandatory], ...) and returns
//     [RouteOption] or [PublishOption]. One that also sets the service's
//     default for every route or publish keeps its bare name.
//   - An option valid in more than one place returns an exported type of
//     its own, named after it with the suffix Option ([ExchangeOption],
//     [FailureHandlingOption], ...), whose doc says which interfaces it
//     implements ("implements Option, RouteOption").
//   - Nothing is named On…: that prefix is for the lifecycle hooks
//     ([Service.OnStart], [Service.OnStarted], [Service.OnStop]).
//
// Every option is validated when it is applied: New, Subscribe and Publish
// return an error wrapping [ErrInvalidOption].
//
// # Delivery guarantees
//
// A delivery is acked only after its handler returned nil and every message
// the handler published was confirmed by the broker. A publish from inside a
// handler does not make the handler wait; a publish from outside a handler
// returns once confirmed. A handler error is retried in process with backoff,
// then the message is republished to the route's dead-letter queue
// ("<queue>.dlq"; for a non-competing route, one shared by every instance,
// see docs/failure-handling.md) with headers saying why, and only then acked; [Requeue],
// [Retry], [DeadLetter] and [Drop] override that per error. A message the
// envelope cannot decode is dead-lettered at once, never requeued. A
// panicking handler restarts its route's actor; the message goes back to the
// broker, and one that keeps crashing is dead-lettered as poison. Handling is
// at least once: a message may be handled again after a crash or a
// connection loss. [Dedupe] skips (and acks) a message whose uuid the route
// handled within a window, with a [DedupeStore] ([NewMemoryDedupeStore] by
// default).
//
// # Lifecycle
//
// [Service.Start] connects and returns once every route consumes;
// [Service.Stop] drains (stop taking deliveries, let handlers in flight
// finish within the drain timeout, return the rest, wait for outstanding
// confirms) and is idempotent; [Service.Run] does both around SIGINT/SIGTERM;
// [Main] exits with [ExitOK], [ExitStartFailed], [ExitFailed] or
// [ExitStopIncomplete]. Hooks: [Service.OnStart], [Service.OnStarted],
// [Service.OnStop]. Middleware: [WithMiddleware]. A lost connection is
// re-established with a [Backoff] ([WithReconnectBackoff]). Observe the
// service with [WithSupervisorEvents] (a [SupervisorEvent] per ready,
// unavailable, failed, restarted, stopped, respawned or gave-up),
// [WithDeliveryEvents] and [Service.Status].
//
// # Testing
//
// Package [github.com/hato-go/hato/hatotest] runs a service on an
// in-memory broker (hatotest.Transport): the same routes, envelopes,
// middleware, failure policy and supervision, no RabbitMQ. It captures what
// handlers publish, dead-letter and settle, and waits until everything is
// settled instead of sleeping.
//
// # Tracing, metrics and health
//
// Trace context travels in the message headers as W3C traceparent and
// tracestate (strings, as tomodachi writes and reads them), also with
// nothing configured. Every handler run is a CONSUMER span "<key> process",
// a child of the incoming context, and every publish a PRODUCER span
// "<key> publish"; tomodachi's metrics (messaging.rabbitmq.duration,
// messaging.rabbitmq.active_tasks) and hato's own (hato.*) are recorded.
// Configure with [WithTracerProvider], [WithMeterProvider] and
// [WithPropagator] (default: the OpenTelemetry globals, W3C Trace Context).
// With no tracer provider set (or a no-op one) no span is started: the
// handler's context carries the incoming trace context, which its
// publishes forward; with no meter provider set (or a no-op one, and no
// ops server) nothing is measured. [Message.Logger] and [TraceFields] put
// the trace and span ids into logs.
// [WithOpsServer] (or HATO_OPS_ADDR) serves /metrics, /healthz and /readyz
// ([Service.Healthy], [Service.Ready]).
//
// # Differences from tomodachi
//
// Messages are persistent and confirmed (tomodachi: transient, fire and
// forget); handler errors never lose a message (tomodachi acks it); the
// connection is re-established after a loss (tomodachi stops consuming);
// every route runs concurrently with its own prefetch (tomodachi handles one
// message at a time per process).
package hato
