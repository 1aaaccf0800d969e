// Package hatotest tests hato handlers without a broker. A service built
// with [Transport] runs exactly as it runs on RabbitMQ: the same root
// supervisor and consumer actors, the same envelope encoding and decoding,
// middleware, failure policy (retries with backoff, dead-lettering,
// requeues bounded by MaxRedeliveries) and supervision (a handler panic
// restarts its route's actor and the message is delivered again). Only the
// transport differs: an in-memory [Broker] with RabbitMQ's topic routing.
//
//	b := hatotest.NewBroker()
//	svc, err := hato.New("orders", hatotest.Transport(b)) // check err
//	err = hato.Subscribe(svc, "order.created", handle, hato.HandlerName("handle"))
//	hatotest.Start(t, svc) // stopped when the test ends
//
//	// ctx: context.WithTimeout, so a stuck handler fails the test
//	b.Publish(ctx, "order.created", map[string]any{"id": 1}) // MessageUUID("…") fixes the uuid
//	b.WaitIdle(ctx)                        // every delivery settled: no sleeping
//	b.PublishedTo("invoice.#")             // what handlers published, decoded
//	b.DeadLettered(svc.Routes()[0].DeadLetterQueue)
//
// # What behaves like RabbitMQ
//
// Queues are declared and bound with the names hato computes, so several
// services sharing one Broker behave as on a broker: instances of a
// service share a competing route's queue and each message is handled
// once; a non-competing route (hato.NotCompeting) gets a queue per
// instance and each instance handles every message. Binding keys match as
// on a topic exchange: "*" is one word, "#" zero or more, so "a.#.b"
// matches "a.b". Routing-key and queue-name prefixes, custom exchanges, the
// default exchange (dead-letter copies reach their queue through it),
// mandatory publishes (hato.ErrUnroutable), prefetch, redelivery flags
// and a quorum queue's x-delivery-count are honoured. See [Broker] for
// where it has to pick one of RabbitMQ's possible behaviours.
//
// A conformance suite (package internal/conformance of this module) runs
// the same scenarios against the Broker and against RabbitMQ, so the two
// cannot drift apart.
//
// # What it does not model
//
// Connection loss, flow control, broker restarts, queue expiry and
// clustering: test those against RabbitMQ (hato's own fault suite does).
package hatotest
