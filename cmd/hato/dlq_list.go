package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sort"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

var dlqListSpec = spec{
	name: "dlq list",
	args: "[QUEUE...]",
	about: `Lists dead-letter queues with their message counts, the services and
routing keys their messages came from, and the reasons they were
dead-lettered (read from up to --peek messages each, which are returned to
the queue untouched; reasons are grouped by cause, without the message uuid
they name).

AMQP cannot list queues. Without QUEUE arguments hato runs "rabbitmqctl
list_queues" for the URL's virtual host and keeps the queues named *.dlq and
the delay queues of delayed retries (*.retry.<delay>: listed with the
messages waiting in them, not peeked). That works on the broker's machine,
as a user rabbitmqctl accepts; elsewhere, name the queues (hato names
prints them). rabbitmqctl talks to its own node, not to the broker of
--url: when --url names a host other than this machine, pass --node
(rabbit@HOST) to say which node to list. The node listed is named on stderr.`,
	examples: `  hato dlq list
  hato dlq list --json 6db12a9d302beb382083af15edb16743a71606430dccfd286ab4dd577289d175.dlq
  hato dlq list --rabbitmqctl /usr/sbin/rabbitmqctl --url amqp://guest:guest@127.0.0.1:5672/orders
`,
}

type dlqListOpts struct {
	conn  connFlags
	out   printer
	ctl   string
	node  string
	peekN int
}

func (o *dlqListOpts) register(fs *flag.FlagSet) {
	o.conn.register(fs)
	o.out.register(fs)
	fs.StringVar(&o.ctl, "rabbitmqctl", "rabbitmqctl", "rabbitmqctl executable that lists the queues when none is named")
	fs.StringVar(&o.node, "node", "", "node rabbitmqctl lists the queues of (-n); needed when --url is not this machine")
	fs.IntVar(&o.peekN, "peek", 1000, "read at most this many messages per queue for the reasons")
}

// reasonCount is how many peeked messages had one reason.
type reasonCount struct {
	Reason string `json:"reason"`
	Count  int    `json:"count"`
}

// dlqInfo is the record dlq list prints for a queue.
type dlqInfo struct {
	Queue          string        `json:"queue"`
	Messages       int           `json:"messages"`
	Peeked         int           `json:"peeked"`
	Reasons        []reasonCount `json:"reasons"`
	OriginalQueues []string      `json:"original_queues,omitempty"`
	// Services and RoutingKeys are the x-hato-service and
	// x-hato-original-routing-key values of the peeked messages.
	Services    []string `json:"services,omitempty"`
	RoutingKeys []string `json:"routing_keys,omitempty"`
	Error       string   `json:"error,omitempty"`
	// Delay: a delay queue of delayed retries; its messages are waiting
	// to go back to their route's queue, not dead.
	Delay bool `json:"delay_queue,omitempty"`
}

func (d dlqInfo) text() string {
	if d.Error != "" {
		return fmt.Sprintf("%s  error: %s", safe(d.Queue), safe(d.Error))
	}
	reasons := make([]string, 0, len(d.Reasons))
	for _, r := range d.Reasons {
		reasons = append(reasons, fmt.Sprintf("%d× %s", r.Count, safe(clip(r.Reason, 160))))
	}
	if d.Delay {
		return fmt.Sprintf("%s  %s waiting for a delayed retry", safe(d.Queue), plural(d.Messages, "message"))
	}
	s := fmt.Sprintf("%s  %s", safe(d.Queue), plural(d.Messages, "message"))
	if len(d.Services) > 0 || len(d.RoutingKeys) > 0 {
		s += fmt.Sprintf("  service %s, key %s", safe(orDash(strings.Join(d.Services, ","))), safe(orDash(strings.Join(d.RoutingKeys, ","))))
	}
	if len(reasons) > 0 {
		s += "  " + strings.Join(reasons, "; ")
	}
	return s
}

func runDLQList(e *env, args []string) error {
	var o dlqListOpts
	fs := newFlagSet(dlqListSpec)
	o.register(fs)
	queues, err := parse(e, dlqListSpec, fs, args)
	if err != nil {
		return err
	}
	if o.peekN < 0 {
		return usagef("dlq list: --peek must not be negative")
	}
	s, err := connect(e, &o.conn, "dlq list")
	if err != nil {
		return err
	}
	defer s.close()
	if len(queues) == 0 {
		if queues, err = o.listDLQs(e, s); err != nil {
			return err
		}
	}
	o.out.w = e.stdout
	failed := 0
	for _, q := range queues {
		info := inspectDLQ(s, q, o.peekN)
		if info.Error != "" {
			failed++
		}
		o.out.record(info, info.text())
	}
	if failed > 0 {
		return fmt.Errorf("%d of %s could not be read", failed, plural(len(queues), "queue"))
	}
	return nil
}

// listDLQs runs rabbitmqctl and returns the queues named *.dlq of the
// connected vhost, on --node or, when the connected broker is on this
// machine, rabbitmqctl's default node. It says on stderr which.
func (o *dlqListOpts) listDLQs(e *env, s *session) ([]string, error) {
	node := o.node
	if node == "" {
		host := urlHost(s.url)
		if !localHost(host) {
			return nil, usagef("dlq list: rabbitmqctl lists its own node's queues, not those of %s: pass --node rabbit@HOST, or name the queues", host)
		}
	}
	fmt.Fprintf(e.stderr, "listing the queues of vhost %s on node %s with %s\n", s.vhost(), orDefault(node, "(rabbitmqctl's default, this machine)"), o.ctl)
	return listDLQs(e.ctx, o.ctl, node, s.vhost())
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// urlHost is the host of an AMQP URL that parsed.
func urlHost(u string) string {
	uri, err := amqp.ParseURI(u)
	if err != nil {
		return ""
	}
	return uri.Host
}

// localHost reports whether host is this machine.
func localHost(host string) bool {
	if host == "localhost" {
		return true
	}
	if ip := net.ParseIP(host); ip != nil {
		return ip.IsLoopback()
	}
	name, err := os.Hostname()
	return err == nil && strings.EqualFold(strings.TrimSuffix(host, "."), name)
}

// listDLQs runs rabbitmqctl (on node, when not empty) and returns the
// queues of vhost named *.dlq.
func listDLQs(ctx context.Context, ctl, node, vhost string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	args := []string{"-q"}
	if node != "" {
		args = append(args, "-n", node)
	}
	args = append(args, "list_queues", "-p", vhost, "name", "--formatter", "json")
	cmd := exec.CommandContext(ctx, ctl, args...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("cannot list the queues with %s (%w): name the dead-letter queues as arguments instead", ctl, err)
	}
	return parseQueueList(out)
}

// parseQueueList reads rabbitmqctl's JSON list and keeps the *.dlq names,
// sorted.
func parseQueueList(out []byte) ([]string, error) {
	var rows []struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(out, &rows); err != nil {
		return nil, fmt.Errorf("rabbitmqctl list_queues: unexpected output: %w", err)
	}
	var names []string
	for _, r := range rows {
		if strings.HasSuffix(r.Name, ".dlq") || isDelayQueue(r.Name) {
			names = append(names, r.Name)
		}
	}
	sort.Strings(names)
	return names, nil
}

// inspectDLQ counts queue's messages and their reasons.
func inspectDLQ(s *session, queue string, limit int) dlqInfo {
	info := dlqInfo{Queue: queue, Reasons: []reasonCount{}}
	n, err := checkQueue(s, queue)
	if err != nil {
		info.Error = err.Error()
		return info
	}
	info.Messages = n
	if info.Delay = isDelayQueue(queue); info.Delay {
		return info // not peeked: a get and requeue would disturb the waits
	}
	ch, err := s.channel()
	if err != nil {
		info.Error = err.Error()
		return info
	}
	defer func() { _ = ch.Close() }()
	var t reasonTally
	info.Peeked, err = peek(ch, queue, min(limit, n), func(d amqp.Delivery) { t.add(parseDeadLetter(queue, d)) })
	if err != nil {
		info.Error = err.Error()
	}
	info.Reasons, info.OriginalQueues = t.result()
	info.Services, info.RoutingKeys = sortedKeys(t.services), sortedKeys(t.keys)
	return info
}

// reasonTally counts reasons and original queues.
type reasonTally struct {
	reasons  map[string]int
	origins  map[string]bool
	services map[string]bool
	keys     map[string]bool
}

func sortedKeys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (t *reasonTally) add(d deadLetter) {
	if t.reasons == nil {
		t.reasons, t.origins = map[string]int{}, map[string]bool{}
		t.services, t.keys = map[string]bool{}, map[string]bool{}
	}
	if d.Service != "" {
		t.services[d.Service] = true
	}
	if d.OriginalRoutingKey != "" {
		t.keys[d.OriginalRoutingKey] = true
	}
	t.reasons[shortReason(d.Reason)]++
	if d.OriginalQueue != "" {
		t.origins[d.OriginalQueue] = true
	}
}

// result is the reasons, most frequent first, and the original queues.
func (t *reasonTally) result() ([]reasonCount, []string) {
	reasons := []reasonCount{}
	for r, n := range t.reasons {
		reasons = append(reasons, reasonCount{Reason: r, Count: n})
	}
	sort.Slice(reasons, func(i, j int) bool {
		if reasons[i].Count != reasons[j].Count {
			return reasons[i].Count > reasons[j].Count
		}
		return reasons[i].Reason < reasons[j].Reason
	})
	var origins []string
	for q := range t.origins {
		origins = append(origins, q)
	}
	sort.Strings(origins)
	return reasons, origins
}

var dlqShowSpec = spec{
	name: "dlq show",
	args: "QUEUE",
	about: `Shows up to --limit messages of a dead-letter queue with their x-hato-*
headers and decoded data, without consuming them: each is read unacked and
all are returned to the queue, in order, afterwards.`,
	examples: `  hato dlq show --limit 3 QUEUE.dlq
  hato dlq show --json QUEUE.dlq | jq .reason
`,
}

type dlqShowOpts struct {
	conn     connFlags
	out      printer
	proto    protoFlags
	envelope string
	limit    int
}

func (o *dlqShowOpts) register(fs *flag.FlagSet) {
	o.conn.register(fs)
	o.out.register(fs)
	o.proto.register(fs, "protobuf data is then decoded")
	fs.StringVar(&o.envelope, "envelope", envAuto, "envelope: auto, json, protobuf or raw")
	fs.IntVar(&o.limit, "limit", 10, "show at most this many messages")
}

// shownMessage is the record dlq show prints for a message.
type shownMessage struct {
	deadLetter
	Headers amqp.Table `json:"headers"`
	Data    decoded    `json:"body"`
}

func (m shownMessage) text(now time.Time) string {
	s := m.deadLetter.text(now) + "\n  data:     " + dataText(m.Data)
	if m.Data.Error != "" {
		s += " (undecodable: " + safe(m.Data.Error) + ")"
	} else if m.Data.Service != "" {
		s += fmt.Sprintf(" (%s envelope from %s at %s)", m.Data.Envelope, safe(m.Data.Service), safe(m.Data.Timestamp))
	}
	return s + "\n"
}

func runDLQShow(e *env, args []string) error {
	var o dlqShowOpts
	pos, err := parseArgs(e, dlqShowSpec, o.register, args, 1, 1)
	if err != nil {
		return err
	}
	if o.limit < 0 {
		return usagef("dlq show: --limit must not be negative")
	}
	dec, err := newDecoder(o.envelope, &o.proto)
	if err != nil {
		return err
	}
	s, err := connect(e, &o.conn, "dlq show")
	if err != nil {
		return err
	}
	defer s.close()
	return o.show(e, s, dec, pos[0])
}

func (o *dlqShowOpts) show(e *env, s *session, dec *decoder, queue string) error {
	n, err := checkQueue(s, queue)
	if err != nil {
		return err
	}
	ch, err := s.channel()
	if err != nil {
		return err
	}
	defer func() { _ = ch.Close() }()
	o.out.w = e.stdout
	now := time.Now()
	shown, err := peek(ch, queue, min(o.limit, n), func(d amqp.Delivery) {
		m := shownMessage{deadLetter: parseDeadLetter(queue, d), Headers: d.Headers, Data: dec.decode(d.Body)}
		o.out.record(m, m.text(now))
	})
	if !o.out.json {
		fmt.Fprintf(e.stdout, "%d of %s shown; all left in %s\n", shown, plural(n, "message"), queue)
	}
	return err
}

var dlqPurgeSpec = spec{
	name: "dlq purge",
	args: "QUEUE",
	about: `Deletes every message of a dead-letter queue, after asking on the terminal
(type "yes") unless --yes. Queues not named *.dlq are refused unless
--any-queue.`,
	examples: `  hato dlq purge QUEUE.dlq
  hato dlq purge --yes --json QUEUE.dlq
`,
}

type dlqPurgeOpts struct {
	conn connFlags
	out  printer
	yes  bool
	any  bool
}

func runDLQPurge(e *env, args []string) error {
	var o dlqPurgeOpts
	fs := newFlagSet(dlqPurgeSpec)
	o.conn.register(fs)
	o.out.register(fs)
	fs.BoolVar(&o.yes, "yes", false, "do not ask")
	fs.BoolVar(&o.any, "any-queue", false, "allow a queue not named *.dlq")
	pos, err := parse(e, dlqPurgeSpec, fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(dlqPurgeSpec, pos, 1, 1); err != nil {
		return err
	}
	if !o.any && !strings.HasSuffix(pos[0], ".dlq") {
		return usagef("dlq purge: %s is not a dead-letter queue (*.dlq); --any-queue purges it anyway", pos[0])
	}
	s, err := connect(e, &o.conn, "dlq purge")
	if err != nil {
		return err
	}
	defer s.close()
	return o.purge(e, s, pos[0])
}

func (o *dlqPurgeOpts) purge(e *env, s *session, queue string) error {
	n, err := checkQueue(s, queue)
	if err != nil {
		return err
	}
	if !o.yes && !confirm(e, fmt.Sprintf("purge %s from %s? type yes: ", plural(n, "message"), queue)) {
		return errors.New("not purged (not confirmed)")
	}
	ch, err := s.channel()
	if err != nil {
		return err
	}
	defer func() { _ = ch.Close() }()
	purged, err := ch.QueuePurge(queue, false)
	if err != nil {
		return fmt.Errorf("purge %s: %w", queue, err)
	}
	o.out.w = e.stdout
	o.out.record(map[string]any{"queue": queue, "purged": purged}, fmt.Sprintf("purged %s from %s", plural(purged, "message"), queue))
	return nil
}

// confirm asks question on stderr (control characters escaped) and reads
// one line from stdin: true only for y or yes, in any case. Anything
// else, an empty line, end of input or an interrupt while waiting is no.
func confirm(e *env, question string) bool {
	fmt.Fprint(e.stderr, safeLines(question))
	lines := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(e.stdin).ReadString('\n')
		lines <- line
	}()
	var line string
	select {
	case line = <-lines:
	case <-e.ctx.Done():
	}
	if !strings.HasSuffix(line, "\n") {
		fmt.Fprintln(e.stderr) // end of input or interrupted: end the question's line
	}
	answer := strings.ToLower(strings.TrimSpace(line))
	return answer == "yes" || answer == "y"
}
