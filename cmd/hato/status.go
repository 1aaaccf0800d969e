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
	examples: `  hato status 6db12a9d302beb382083af15edb16743a71606430dccfd286ab4dd577289d175
  hato status --retry-delays 10s,1m --json 6db12a9d302beb382083af15edb16743a71606430dccfd286ab4dd577289d175
  hato status "$(hato names --json example.topic | jq -r .queue)"
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

// ok is false when the queue, or one of the delay queues --retry-delays
// names, could not be read (missing: a wrong QUEUE or --retry-delays).
func (q queueStatus) ok() bool {
	if q.Error != "" {
		return false
	}
	for _, d := range q.Delayed {
		if d.Error != "" {
			return false
		}
	}
	return true
}

func (q queueStatus) text() string {
	if q.Error != "" {
		return fmt.Sprintf("%s  error: %s", q.Queue, q.Error)
	}
	s := fmt.Sprintf("%s  %s, %s", q.Queue, plural(q.Messages, "message"), plural(q.Consumers, "consumer"))
	if q.Idle && !strings.HasSuffix(q.Queue, ".dlq") { // nothing ever consumes a DLQ
		s += "  (no consumer: paused by a circuit breaker, stopped or down)"
	}
	var b strings.Builder
	b.WriteString(s)
	for _, d := range q.Delayed {
		if d.Error != "" {
			fmt.Fprintf(&b, "\n  %s  error: %s", d.Queue, d.Error)
			continue
		}
		fmt.Fprintf(&b, "\n  %s  %s waiting for a delayed retry", d.Queue, plural(d.Messages, "message"))
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
		if !st.ok() {
			failed++
		}
		o.out.record(st, st.text())
	}
	if failed > 0 {
		return fmt.Errorf("%d of %s could not be read", failed, plural(len(queues), "queue"))
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
