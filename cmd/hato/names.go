package main

import (
	"flag"
	"strings"

	"github.com/hato-go/hato/broker"
)

var namesSpec = spec{
	name: "names",
	args: "KEY",
	about: `Prints the names a tomodachi or hato route subscribed to KEY uses: its queue
(sha256 of the encoded routing key; for a non-competing route also of the
handler name and service uuid), the routing key as bound on the wire
(encoded, with the routing-key prefix) and hato's dead-letter queue. It
contacts no broker: use it to match queues to services.`,
	examples: `  hato names example.topic
  hato names --not-competing --handler example_func --uuid 5d0b530f-5c44-4981-b01f-342801bd48f5 \
      --service amqp-example example.topic
  hato names --queue-name-prefix prod- --routing-key-prefix eu. --json 'orders.created'
`,
}

type namesOpts struct {
	out          printer
	notCompeting bool
	handler      string
	uuid         string
	service      string
	queueName    string
	queuePrefix  string
	keyPrefix    string
	retryDelays  delayList
}

func (o *namesOpts) register(fs *flag.FlagSet) {
	o.out.register(fs)
	fs.BoolVar(&o.notCompeting, "not-competing", false, "a non-competing route (its own queue per service instance); needs --handler and --uuid")
	fs.StringVar(&o.handler, "handler", "", "handler (function) name of a non-competing route")
	fs.StringVar(&o.uuid, "uuid", "", "service instance uuid of a non-competing route")
	fs.StringVar(&o.service, "service", "", "service name (names a non-competing route's dead-letter queue)")
	fs.StringVar(&o.queueName, "queue-name", "", "explicit queue name of the route (no hashing)")
	fs.StringVar(&o.queuePrefix, "queue-name-prefix", "", "tomodachi's queue_name_prefix")
	fs.StringVar(&o.keyPrefix, "routing-key-prefix", "", "tomodachi's routing_key_prefix")
	fs.Var(&o.retryDelays, "retry-delays", "the route's FailurePolicy.RetryDelays, comma-separated (e.g. 10s,1m): names its delay queues")
}

// namesResult is the record names prints.
type namesResult struct {
	RoutingKey      string   `json:"routing_key"`
	WireRoutingKey  string   `json:"wire_routing_key"`
	Queue           string   `json:"queue"`
	DeadLetterQueue string   `json:"dead_letter_queue,omitempty"`
	RetryQueues     []string `json:"retry_queues,omitempty"`
	Competing       bool     `json:"competing"`
}

func (r namesResult) text() string {
	dlq := r.DeadLetterQueue
	if dlq == "" {
		dlq = "(give --service to name it)"
	}
	return strings.Join([]string{
		"queue              " + r.Queue,
		"wire routing key   " + r.WireRoutingKey,
		"dead-letter queue  " + dlq,
	}, "\n") + retryText(r.RetryQueues)
}

func runNames(e *env, args []string) error {
	var o namesOpts
	pos, err := parseArgs(e, namesSpec, o.register, args, 1, 1)
	if err != nil {
		return err
	}
	res, err := o.names(pos[0])
	if err != nil {
		return err
	}
	o.out.w = e.stdout
	o.out.record(res, res.text())
	return nil
}

// names computes the names of the route on key.
func (o *namesOpts) names(key string) (namesResult, error) {
	if o.notCompeting && o.queueName == "" && (o.handler == "" || o.uuid == "") {
		return namesResult{}, usagef("names: --not-competing needs --handler and --uuid (or --queue-name)")
	}
	wire, err := broker.WireRoutingKey(o.keyPrefix, key)
	if err != nil {
		return namesResult{}, usagef("%v", err)
	}
	res := namesResult{RoutingKey: key, WireRoutingKey: wire, Competing: !o.notCompeting}
	if o.queueName != "" {
		res.Queue = broker.FixedQueueName(o.queueName, o.queuePrefix)
	} else {
		res.Queue = broker.QueueName(key, o.handler, o.uuid, !o.notCompeting, o.queuePrefix)
	}
	perInstance := o.notCompeting && o.queueName == ""
	if !perInstance || o.service != "" {
		res.DeadLetterQueue = broker.DeadLetterQueueName(res.Queue, key, o.handler, o.service, perInstance, o.queuePrefix)
	}
	for _, d := range o.retryDelays {
		res.RetryQueues = append(res.RetryQueues, broker.RetryQueueName(res.Queue, d))
	}
	return res, nil
}
