package main

import (
	"flag"
	"fmt"
	"strings"

	"github.com/hato-go/hato/broker"
)

var statusSpec = spec{
	name: "status",
	args: "QUEUE...",
	about: `Prints, for each route queue (as hato names prints it), how many messages
wait in it and how many consumers it has, and with --retry-delays the
messages waiting in its delay queues. A queue with messages and no consumer
is not being worked on: every node of the route is paused by its circuit
breaker (hato.Breaker; the node's /readyz names its paused routes),
stopped, or down. The CLI cannot tell these apart: it sees only the broker.`,
	examples: `  hato status 540e8e5bc604e4ea618f7e0517a04f030ad1dcbff2e121e9466ddd1c811450bf
  hato status --retry-delays 10s,1m --json orders
`,
}

type statusOpts struct {
	conn        connFlags
	out         printer
	retryDelays delayList
}

func (o *statusOpts) register(fs *flag.FlagSet) {
	o.conn.register(fs)
	o.out.register(fs)
	fs.Var(&o.retryDelays, "retry-delays", "the route's FailurePolicy.RetryDelays, comma-separated (e.g. 10s,1m)")
}

// delayCount is one delay queue's waiting messages.
type delayCount struct {
	Queue    string `json:"queue"`
	Messages int    `json:"messages"`
	Error    string `json:"error,omitempty"`
}

// queueStatus is the record status prints for a queue.
type queueStatus struct {
	Queue     string       `json:"queue"`
	Messages  int          `json:"messages"`
	Consumers int          `json:"consumers"`
	Idle      bool         `json:"no_consumer"` // nothing consumes it: paused, stopped or down
	Delayed   []delayCount `json:"delay_queues,omitempty"`
	Error     string       `json:"error,omitempty"`
}

func (q queueStatus) text() string {
	if q.Error != "" {
		return fmt.Sprintf("%s  error: %s", q.Queue, q.Error)
	}
	s := fmt.Sprintf("%s  %d messages, %d consumers", q.Queue, q.Messages, q.Consumers)
	if q.Idle {
		s += "  (no consumer: paused by a circuit breaker, stopped or down)"
	}
	var b strings.Builder
	b.WriteString(s)
	for _, d := range q.Delayed {
		if d.Error != "" {
			fmt.Fprintf(&b, "\n  %s  error: %s", d.Queue, d.Error)
			continue
		}
		fmt.Fprintf(&b, "\n  %s  %d messages waiting for a delayed retry", d.Queue, d.Messages)
	}
	return b.String()
}

func runStatus(e *env, args []string) error {
	var o statusOpts
	queues, err := parseArgs(e, statusSpec, o.register, args, 1, -1)
	if err != nil {
		return err
	}
	s, err := connect(e, &o.conn, "status")
	if err != nil {
		return err
	}
	defer s.close()
	o.out.w = e.stdout
	failed := 0
	for _, name := range queues {
		st := o.status(s, name)
		if st.Error != "" {
			failed++
		}
		o.out.record(st, st.text())
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d queues could not be read", failed, len(queues))
	}
	return nil
}

func (o *statusOpts) status(s *session, name string) queueStatus {
	st := queueStatus{Queue: name}
	ch, err := s.channel()
	if err != nil {
		st.Error = err.Error()
		return st
	}
	q, err := ch.QueueDeclarePassive(name, false, false, false, false, nil)
	_ = ch.Close()
	if err != nil {
		st.Error = err.Error()
		return st
	}
	st.Messages, st.Consumers = q.Messages, q.Consumers
	st.Idle = q.Consumers == 0
	for _, d := range o.retryDelays {
		dq := delayCount{Queue: broker.RetryQueueName(name, d)}
		if dq.Messages, err = checkQueue(s, dq.Queue); err != nil {
			dq.Error = err.Error()
		}
		st.Delayed = append(st.Delayed, dq)
	}
	return st
}
