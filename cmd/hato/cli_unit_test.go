package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/hato-go/hato/actors"
	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/envelope"
	"github.com/hato-go/hato/internal/testpb"
)

func TestParseAllowsFlagsAfterArguments(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantPos []string
		count   int
	}{
		{[]string{"k", "d"}, []string{"k", "d"}, 0},
		{[]string{"k", "--count", "5", "d"}, []string{"k", "d"}, 5},
		{[]string{"--count=2", "k", "-"}, []string{"k", "-"}, 2},
		{[]string{"k", "--", "--count", "3"}, []string{"k", "--count", "3"}, 0},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			fs := flag.NewFlagSet("x", flag.ContinueOnError)
			count := fs.Int("count", 0, "")
			pos, err := parse(&env{}, spec{name: "x"}, fs, tc.args)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(pos, tc.wantPos) || *count != tc.count {
				t.Errorf("pos %q count %d, want %q %d", pos, *count, tc.wantPos, tc.count)
			}
		})
	}
}

func TestEveryCommandHasHelpWithAnExample(t *testing.T) {
	for _, args := range [][]string{
		{"--help"}, {"publish", "--help"}, {"tail", "-h"}, {"names", "--help"},
		{"dlq", "--help"}, {"dlq", "list", "--help"}, {"dlq", "show", "--help"},
		{"dlq", "replay", "--help"}, {"dlq", "purge", "--help"},
	} {
		r := runIn("", nil, args...)
		if r.code != exitOK || !strings.Contains(r.stdout, "Example") || !strings.Contains(r.stdout, "hato ") {
			t.Errorf("%q: %v", args, r)
		}
	}
	if r := runIn("", nil, "--help"); !strings.Contains(r.stdout, "Exit codes") {
		t.Errorf("hato --help does not document the exit codes:\n%s", r.stdout)
	}
}

func TestUsageErrorsExitTwo(t *testing.T) {
	for _, args := range [][]string{
		{}, {"nope"}, {"publish"}, {"publish", "--nope", "k"}, {"publish", "k", "not json"},
		{"publish", "--envelope", "xml", "k", "1"}, {"tail"}, {"names"}, {"names", "--not-competing", "k"},
		{"dlq"}, {"dlq", "nope"}, {"dlq", "purge", "queue-without-suffix"},
		{"publish", "--url", "http://x", "k", "1"}, {"tail", "--envelope", "protobuf", "--proto-type", "a.B", "k"},
	} {
		if r := runIn("", nil, args...); r.code != exitUsage {
			t.Errorf("%q: %v", args, r)
		}
	}
}

func TestUnreachableBrokerExitsOneWithoutThePassword(t *testing.T) {
	r := runIn("", map[string]string{"AMQP_URL": "amqp://guest:s3cret@127.0.0.1:1/,amqp://guest:s3cret@127.0.0.1:2/"},
		"publish", "--timeout", "5s", "k", "1")
	if r.code != exitFailure || strings.Contains(r.stdout+r.stderr, "s3cret") || !strings.Contains(r.stderr, "127.0.0.1:2") {
		t.Errorf("%v", r)
	}
}

func TestResolveURLs(t *testing.T) {
	env := map[string]string{"AMQP_URL": "amqp://a/, amqp://b/"}
	for _, tc := range []struct {
		flags []string
		env   map[string]string
		want  []string
	}{
		{nil, nil, []string{defaultURL}},
		{nil, env, []string{"amqp://a/", "amqp://b/"}},
		{[]string{"amqp://c/", "amqp://d/,amqp://e/"}, env, []string{"amqp://c/", "amqp://d/", "amqp://e/"}},
	} {
		c := connFlags{urls: tc.flags, timeout: time.Second}
		got, err := c.resolve(func(k string) string { return tc.env[k] })
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q %v: %q %v, want %q", tc.flags, tc.env, got, err, tc.want)
		}
	}
	c := connFlags{urls: []string{"http://u:pw@x/"}, timeout: time.Second}
	var ue *usageError
	if _, err := c.resolve(func(string) string { return "" }); !errors.As(err, &ue) {
		t.Errorf("bad URL: %v, want a usage error", err)
	}
}

// The names command agrees with tomodachi's queue names.
func TestNamesMatchTomodachiVectors(t *testing.T) {
	f, err := os.Open(filepath.Join("..", "..", "broker", "testdata", "tomodachi", "queue_names.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		var v struct {
			RoutingKey string `json:"routing_key"`
			FuncName   string `json:"func_name"`
			UUID       string `json:"uuid"`
			Competing  bool   `json:"competing"`
			Prefix     string `json:"queue_name_prefix"`
			Expect     string `json:"expect"`
		}
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatal(err)
		}
		args := []string{"names", "--json", "--handler", v.FuncName, "--uuid", v.UUID, "--queue-name-prefix", v.Prefix}
		if !v.Competing {
			args = append(args, "--not-competing")
		}
		r := runIn("", nil, append(args, "--", v.RoutingKey)...)
		var got namesResult
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || r.code != 0 {
			t.Fatalf("%q: %v (%v)", args, r, err)
		}
		if got.Queue != v.Expect {
			t.Errorf("names %q: queue %s, want %s", v.RoutingKey, got.Queue, v.Expect)
		}
		n++
	}
	if n == 0 {
		t.Fatal("no vectors")
	}
}

func TestNamesText(t *testing.T) {
	r := runIn("", nil, "names", "test.topic")
	want := "queue              540e8e5bc604e4ea618f7e0517a04f030ad1dcbff2e121e9466ddd1c811450bf"
	if r.code != 0 || !strings.Contains(r.stdout, want) || !strings.Contains(r.stdout, "540e8e5bc604e4ea618f7e0517a04f030ad1dcbff2e121e9466ddd1c811450bf.dlq") {
		t.Errorf("%v", r)
	}
}

func TestDeadLetterHeadersMatchTheRuntime(t *testing.T) {
	want := []string{actors.HeaderReason, actors.HeaderAttempts, actors.HeaderOriginalExchange, actors.HeaderOriginalKey,
		actors.HeaderOriginalQueue, actors.HeaderDeadLetteredAt, actors.HeaderService, actors.HeaderRoute,
		actors.HeaderOriginalUserID, actors.HeaderOriginalExpiration, actors.HeaderDroppedHeaders}
	if !reflect.DeepEqual(deadLetterHeaders, want) {
		t.Errorf("dead-letter headers %q, want %q", deadLetterHeaders, want)
	}
}

// descriptorSet writes the FileDescriptorSet of testpb.Person to a file.
func descriptorSet(t *testing.T) string {
	t.Helper()
	set := &descriptorpb.FileDescriptorSet{File: []*descriptorpb.FileDescriptorProto{
		protodesc.ToFileDescriptorProto(testpb.File_internal_testpb_person_proto),
	}}
	b, err := proto.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "person.pb")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func build(t *testing.T, env envelope.Envelope, data any) []byte {
	t.Helper()
	b, err := env.Build(envelope.Build{Service: envelope.Service{Name: "svc", UUID: "u1"}, Topic: "t", MessageUUID: "u1.m1",
		Time: time.Unix(1700000000, 0)}, data, envelope.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecode(t *testing.T) {
	person := &testpb.Person{Name: "Ada", Id: "7"}
	pb, err := proto.Marshal(person)
	if err != nil {
		t.Fatal(err)
	}
	typed, err := newDecoder(envAuto, &protoFlags{protoType: "vectors.Person", descriptorSet: descriptorSet(t)})
	if err != nil {
		t.Fatal(err)
	}
	plain := &decoder{envelope: envAuto}
	for _, tc := range []struct {
		name, env, format, data, errText string
		dec                              *decoder
		body                             []byte
	}{
		{"json", envJSON, "json", `{"a":[1,2]}`, "", plain, build(t, envelope.JSON, map[string]any{"a": []int{1, 2}})},
		{"protobuf as base64", envProtobuf, "base64", `"` + b64(pb) + `"`, "", plain, build(t, envelope.Protobuf, person)},
		{"protobuf decoded", envProtobuf, "json", `{"id":"7","name":"Ada"}`, "", typed, build(t, envelope.Protobuf, person)},
		{"text", "none", "text", `"hello"`, "json", plain, []byte("hello")},
		{"broken json", "none", "text", `"{\"service\": 1"`, "json", plain, []byte(`{"service": 1`)},
		{"binary", "none", "base64", `"AP8="`, "protobuf", plain, []byte{0, 0xff}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.dec.decode(tc.body)
			if got.Envelope != tc.env || got.DataFormat != tc.format || string(got.Data) != tc.data ||
				!strings.Contains(got.Error, tc.errText) || (tc.errText == "") != (got.Error == "") {
				t.Errorf("got %+v (data %s)", got, got.Data)
			}
			if tc.env != "none" && (got.Service != "svc" || got.MessageUUID != "u1.m1" || got.Timestamp != "2023-11-14T22:13:20.000Z") {
				t.Errorf("metadata %+v", got)
			}
		})
	}
}

func b64(b []byte) string {
	s, _ := json.Marshal(b)
	return strings.Trim(string(s), `"`)
}

func TestDecodedText(t *testing.T) {
	d := (&decoder{envelope: envAuto}).decode(build(t, envelope.JSON, "x"))
	if got, want := d.text(), `svc u1.m1 2023-11-14T22:13:20.000Z "x"`; got != want {
		t.Errorf("text %q, want %q", got, want)
	}
	u := (&decoder{envelope: envAuto}).decode([]byte("oops"))
	if got := u.text(); !strings.HasPrefix(got, "(undecodable: json") || !strings.HasSuffix(got, ") oops") {
		t.Errorf("text %q", got)
	}
}

func TestReplayRequestDropsDeadLetterHeadersAndCountsReplays(t *testing.T) {
	d := amqp.Delivery{
		Headers: amqp.Table{
			hdrReason: "boom", hdrAttempts: int64(3), hdrOriginalExchange: "amq.topic", hdrOriginalKey: "k",
			hdrOriginalQueue: "q", hdrDeadLetteredAt: "2026-01-01T00:00:00Z", hdrService: "s", hdrRoute: "r",
			hdrOriginalUserID: "u", hdrOriginalExpiration: "500", "trace": "abc", hdrReplayCount: int64(1),
		},
		ContentType: "application/json", DeliveryMode: amqp.Persistent, MessageId: "m", AppId: "s",
		Body: []byte("body"), CorrelationId: "c",
	}
	now := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	r := replayRequest(d, "amq.topic", "k", now)
	want := amqp.Table{"trace": "abc", hdrReplayCount: int64(2), hdrReplayedAt: "2026-02-01T00:00:00Z"}
	if !reflect.DeepEqual(r.Msg.Headers, want) {
		t.Errorf("headers %v, want %v", r.Msg.Headers, want)
	}
	m := r.Msg
	if r.Exchange != "amq.topic" || r.RoutingKey != "k" || !r.Mandatory || string(m.Body) != "body" ||
		m.MessageId != "m" || m.ContentType != "application/json" || m.DeliveryMode != amqp.Persistent ||
		m.CorrelationId != "c" || m.AppId != "s" || m.Expiration != "" || m.UserId != "" {
		t.Errorf("request %+v", r)
	}
}

func TestReplayFiltersAndTarget(t *testing.T) {
	now := time.Date(2026, 1, 1, 1, 0, 0, 0, time.UTC)
	dl := deadLetter{Reason: "handler: timeout", DeadLetteredAt: "2026-01-01T00:30:00Z", OriginalExchange: "amq.topic",
		OriginalRoutingKey: "k", OriginalQueue: "q", hasOrigin: true}
	for _, tc := range []struct {
		o    replayOpts
		want bool
	}{
		{replayOpts{}, true},
		{replayOpts{reason: "timeout"}, true},
		{replayOpts{reason: "refused"}, false},
		{replayOpts{olderThan: 10 * time.Minute}, true},
		{replayOpts{olderThan: time.Hour}, false},
		{replayOpts{newerThan: time.Hour}, true},
		{replayOpts{newerThan: 10 * time.Minute}, false},
	} {
		if got := tc.o.matches(dl, now); got != tc.want {
			t.Errorf("%+v: %v, want %v", tc.o, got, tc.want)
		}
	}
	if (&replayOpts{olderThan: time.Minute}).matches(deadLetter{}, now) {
		t.Error("an age filter matched a message without x-hato-dead-lettered-at")
	}
	own := broker.QueueName("k", "", "", true, "") + ".dlq"
	for _, tc := range []struct {
		o      replayOpts
		dl     deadLetter
		ex, rk string
		ok     bool
	}{
		{replayOpts{}, dl, "amq.topic", "k", true},
		{replayOpts{to: "other", exchange: "x"}, dl, "x", "other", true},
		{replayOpts{toQueue: true}, dl, "", "q", false},
		{replayOpts{toQueue: true, trust: true}, dl, "", "q", true},
		{replayOpts{}, deadLetter{}, "", "", false},
		{replayOpts{to: "k2"}, deadLetter{}, "", "k2", true},
	} {
		ex, rk, why := tc.o.target(own, tc.dl)
		if ex != tc.ex || rk != tc.rk || (why == "") != tc.ok {
			t.Errorf("%+v: %q %q %q, want %q %q ok=%v", tc.o, ex, rk, why, tc.ex, tc.rk, tc.ok)
		}
	}
}

func TestParseQueueListKeepsDeadLetterQueues(t *testing.T) {
	got, err := parseQueueList([]byte(`[{"name":"b.dlq"},{"name":"a"},{"name":"a.dlq"}]`))
	if err != nil || !reflect.DeepEqual(got, []string{"a.dlq", "b.dlq"}) {
		t.Errorf("%q %v", got, err)
	}
	if _, err := parseQueueList([]byte("Error: unreachable")); err == nil {
		t.Error("no error for output that is not JSON")
	}
}

func TestOutputFormatting(t *testing.T) {
	var b strings.Builder
	p := printer{w: &b, json: true}
	p.record(dlqInfo{Queue: "q.dlq", Messages: 2, Peeked: 2, Reasons: []reasonCount{{"boom", 2}}}, "")
	if got := b.String(); got != `{"queue":"q.dlq","messages":2,"peeked":2,"reasons":[{"reason":"boom","count":2}]}`+"\n" {
		t.Errorf("json line %q", got)
	}
	if got := (dlqInfo{Queue: "q.dlq", Messages: 2, Reasons: []reasonCount{{"boom", 2}}}).text(); got != "q.dlq  2 messages  2× boom" {
		t.Errorf("text %q", got)
	}
	if got := clip("abcdef", 4); got != "abc…" {
		t.Errorf("clip %q", got)
	}
	if s, f := showBody([]byte("a\tb\n")); s != "a\tb\n" || f != "text" {
		t.Errorf("showBody %q %q", s, f)
	}
	sum := replaySummary{Queue: "q.dlq", Replayed: 3, Left: 1}
	if got := sum.text(); got != "replayed 3 messages from q.dlq; 1 left in the queue" {
		t.Errorf("summary %q", got)
	}
}

func TestShortReasonGroupsMessages(t *testing.T) {
	var rt reasonTally
	for _, id := range []string{"a.1", "b.2"} {
		rt.add(deadLetter{Reason: "failed 2 attempts: message " + id + ": inventory down", OriginalQueue: "q"})
	}
	reasons, origins := rt.result()
	if !reflect.DeepEqual(reasons, []reasonCount{{"failed 2 attempts: inventory down", 2}}) || !reflect.DeepEqual(origins, []string{"q"}) {
		t.Errorf("reasons %v origins %v", reasons, origins)
	}
}

func TestDelayQueuesInNamesAndDLQList(t *testing.T) {
	r := runIn("", nil, "names", "--retry-delays", "5s,1m", "test.topic")
	q := "540e8e5bc604e4ea618f7e0517a04f030ad1dcbff2e121e9466ddd1c811450bf"
	if r.code != 0 || !strings.Contains(r.stdout, "delay queue        "+q+".retry.5s") || !strings.Contains(r.stdout, q+".retry.1m0s") {
		t.Errorf("%v", r)
	}
	if r := runIn("", nil, "names", "--retry-delays", "soon", "test.topic"); r.code == 0 {
		t.Errorf("bad delay accepted: %v", r)
	}
	got, err := parseQueueList([]byte(`[{"name":"a.retry.5s"},{"name":"a"},{"name":"a.dlq"},{"name":"a.retry.x"}]`))
	if err != nil || !reflect.DeepEqual(got, []string{"a.dlq", "a.retry.5s"}) {
		t.Errorf("%q %v", got, err)
	}
	if got := (dlqInfo{Queue: "a.retry.5s", Messages: 3, Delay: true}).text(); got != "a.retry.5s  3 messages waiting for a delayed retry" {
		t.Errorf("text %q", got)
	}
}

func FuzzDelayQueueNames(f *testing.F) {
	for _, s := range []string{"q.retry.5s", "a.b.retry.1m30s", "q.retry.", "q.retry.-5s", ".retry.5s", "q.retry.x", "5s,1m", " 10s , 1h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if isDelayQueue(s) {
			d, err := time.ParseDuration(s[strings.LastIndex(s, ".retry.")+len(".retry."):])
			if err != nil || d <= 0 {
				t.Errorf("%q accepted as a delay queue", s)
			}
		}
		var l delayList
		if err := l.Set(s); err == nil {
			for _, d := range l {
				if d <= 0 {
					t.Errorf("%q gave delay %s", s, d)
				}
			}
			var again delayList
			if err := again.Set(l.String()); err != nil || !reflect.DeepEqual(again, l) {
				t.Errorf("%q: %v does not round-trip: %v %v", s, l, again, err)
			}
		}
	})
}

// Issue 19: --url split on every comma and space, so a password holding
// one was cut in two, and the error printed the fragment.
func TestURLWithCommaOrSpaceInThePassword(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"amqp://u:pa,ss@h/", []string{"amqp://u:pa,ss@h/"}},
		{"amqp://u:p,a@h/, amqps://v:w@h2/", []string{"amqp://u:p,a@h/", "amqps://v:w@h2/"}},
		{"amqp://a/ amqp://b/", []string{"amqp://a/", "amqp://b/"}},
		{"amqp://a/,", []string{"amqp://a/"}},
	} {
		c := connFlags{urls: []string{tc.in}, timeout: time.Second}
		got, err := c.resolve(func(string) string { return "" })
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q: %q %v, want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"amqp://u:se/cret@h:notaport/", "http://u:secret@h/", "amqp://u:secret/", "u:secret"} {
		r := runIn("", nil, "publish", "--url", bad, "k", "1")
		if r.code != exitUsage || strings.Contains(r.stderr, "cret") {
			t.Errorf("--url %q: %v, want a usage error without the password", bad, r)
		}
	}
}

// Issue 19: replay published wherever a message's x-hato-original-*
// headers pointed, with the operator's credentials. A forged message in a
// dead-letter queue must not reach another route unless the operator says
// so.
func TestReplayRefusesForgedTargets(t *testing.T) {
	queue := broker.QueueName("orders.created", "", "", true, "") + ".dlq"
	prefixed := broker.QueueName("orders.created", "", "", true, "svc-") + ".dlq"
	good := deadLetter{OriginalExchange: "amq.topic", OriginalRoutingKey: "orders.created",
		OriginalQueue: strings.TrimSuffix(queue, ".dlq"), hasOrigin: true}
	forgedKey := good
	forgedKey.OriginalRoutingKey = "payments.approve"
	suffixKey := good
	suffixKey.OriginalRoutingKey = "evil.orders.created"
	forgedEx := good
	forgedEx.OriginalExchange = "payments"
	forgedQueue := good
	forgedQueue.OriginalQueue = "payments.approve"
	prefixedKey := good
	prefixedKey.OriginalRoutingKey = "pfx.orders.created"
	for name, tc := range map[string]struct {
		o     replayOpts
		queue string
		dl    deadLetter
		ok    bool
	}{
		"own route":                 {replayOpts{}, queue, good, true},
		"own route, queue prefix":   {replayOpts{}, prefixed, good, true},
		"forged key":                {replayOpts{}, queue, forgedKey, false},
		"key with extra prefix":     {replayOpts{}, queue, suffixKey, false},
		"forged exchange":           {replayOpts{}, queue, forgedEx, false},
		"forged queue":              {replayOpts{toQueue: true}, queue, forgedQueue, false},
		"routing-key prefix":        {replayOpts{keyPrefix: "pfx."}, queue, prefixedKey, true},
		"forged key with --to":      {replayOpts{to: "orders.created"}, queue, forgedKey, true},
		"forged exchange, explicit": {replayOpts{exchange: "amq.topic"}, queue, forgedEx, true},
		"trusted":                   {replayOpts{trust: true}, queue, forgedKey, true},
		"explicit queue name":       {replayOpts{}, "orders.dlq", good, false},
	} {
		ex, rk, why := tc.o.target(tc.queue, tc.dl)
		if (why == "") != tc.ok {
			t.Errorf("%s: target %q %q, why %q; want ok=%v", name, ex, rk, why, tc.ok)
		}
	}
}

// Issue 19: numeric edges were accepted (exit 0, or --rate NaN and 1e-300
// not throttling); each is a usage error.
func TestNumericEdgesAreUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"publish", "--count", "5", "--rate", "NaN", "k", "1"},
		{"publish", "--count", "5", "--rate", "1e-300", "k", "1"},
		{"publish", "--count", "5", "--rate", "-1", "k", "1"},
		{"publish", "--count", "5", "--rate", "+Inf", "k", "1"},
		{"dlq", "show", "--limit", "-1", "q.dlq"},
		{"dlq", "list", "--peek", "-5"},
		{"tail", "--count", "-1", "k"},
	} {
		if r := runIn("", map[string]string{"AMQP_URL": "amqp://guest:guest@127.0.0.1:1/"}, args...); r.code != exitUsage {
			t.Errorf("%q: %v, want exit %d", args, r, exitUsage)
		}
	}
}

// Issue 19: "1 messages", "after 1 attempts"; an empty Flags section in
// hato dlq --help.
func TestWording(t *testing.T) {
	dl := deadLetter{MessageID: "m", Attempts: 1, ReplayCount: 1}
	if s := dl.text(time.Now()); !strings.Contains(s, "after 1 attempt\n") || !strings.Contains(s, "replayed: 1 time before") {
		t.Errorf("dead letter text %q", s)
	}
	if s := (dlqInfo{Queue: "q", Messages: 1}).text(); s != "q  1 message" {
		t.Errorf("dlq list text %q", s)
	}
	if s := (replaySummary{Queue: "q", Replayed: 1}).text(); !strings.HasPrefix(s, "replayed 1 message from q") {
		t.Errorf("replay summary %q", s)
	}
	dry := replaySummary{Queue: "q", Matched: 3, Skipped: 2, DryRun: true}
	if s := dry.text(); !strings.HasPrefix(s, "would replay 1 message from q") {
		t.Errorf("dry-run summary %q counts skipped messages", s)
	}
	r := runIn("", nil, "dlq", "--help")
	if r.code != exitOK || strings.Contains(r.stdout, "Flags:") {
		t.Errorf("hato dlq --help: %v", r)
	}
}

// Issue 19: "undecodable message <uuid> ..." made every message its own
// group, and the cause was cut off at 60 characters; dlq list did not say
// which service and key a DLQ holds.
func TestDLQListGroupsReasonsByCause(t *testing.T) {
	var tally reasonTally
	for _, id := range []string{"0b7c9c52-5a43-4f0e-9d5c-2b1f7d1e4a10", "9f1d2c3b-1111-4222-8333-444455556666"} {
		tally.add(deadLetter{Reason: "hato: invalid message " + id + ` on "orders.created": envelope: payload rejected by validator: amount must be positive`,
			Service: "orders", OriginalRoutingKey: "orders.created"})
	}
	reasons, _ := tally.result()
	if len(reasons) != 1 || reasons[0].Count != 2 {
		t.Fatalf("reasons %+v, want one group of 2", reasons)
	}
	info := dlqInfo{Queue: "q.dlq", Messages: 2, Reasons: reasons, Services: sortedKeys(tally.services), RoutingKeys: sortedKeys(tally.keys)}
	text := info.text()
	for _, want := range []string{"amount must be positive", "service orders", "key orders.created"} {
		if !strings.Contains(text, want) {
			t.Errorf("dlq list text %q does not say %q", text, want)
		}
	}
}

// Issue 19: dlq list ran rabbitmqctl against its default node, not the
// broker of --url, and listed another broker's queues.
func TestDLQListRefusesToListAnotherMachinesBrokerWithoutNode(t *testing.T) {
	o := dlqListOpts{ctl: "/bin/false"}
	var stderr strings.Builder
	e := &env{stderr: &stderr}
	_, err := o.listDLQs(e, &session{url: "amqp://guest:guest@rabbit.example.com:5672/"})
	var ue *usageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "--node") {
		t.Fatalf("list for a remote URL without --node: %v, want a usage error naming --node", err)
	}
	if !localHost("127.0.0.1") || !localHost("localhost") || localHost("rabbit.example.com") {
		t.Error("localHost")
	}
}

// Issue 19: dlq show of a raw text body showed the protobuf decode error
// instead of the JSON one.
func TestAutoDecodeOfTextShowsTheJSONError(t *testing.T) {
	d, err := newDecoder("auto", &protoFlags{})
	if err != nil {
		t.Fatal(err)
	}
	body := []byte("plain bytes")
	_, jerr := decodeJSON(body)
	got := d.decode(body)
	if jerr == nil || got.Error != jerr.Error() {
		t.Errorf("auto decode of text: error %q, want the JSON envelope's %v", got.Error, jerr)
	}
}

// New-user pass (issue 19): the summary names the targets before what is
// left, and each usage mistake has its own message.
func TestReplaySummaryOrderAndUsageMessages(t *testing.T) {
	sum := replaySummary{Queue: "q.dlq", Replayed: 2, Left: 3,
		Targets: []replayTarget{{Exchange: "amq.topic", RoutingKey: "k", Messages: 2}}}
	got := sum.text()
	to, left := strings.Index(got, " to "), strings.Index(got, "; 3 left in the queue")
	if to < 0 || left < 0 || to > left {
		t.Errorf("summary %q: want the targets before what is left", got)
	}
	for args, want := range map[string]string{
		"--count -1":              "--count, --older-than and --newer-than must not be negative",
		"--to-queue --to other.k": "--to-queue excludes --to and --exchange",
	} {
		r := runIn("", nil, append(append([]string{"dlq", "replay"}, strings.Fields(args)...), "q.dlq")...)
		if r.code != exitUsage || !strings.Contains(r.stderr, want) || strings.Contains(r.stderr, ";") {
			t.Errorf("dlq replay %s: %v, want exit %d saying only %q", args, r, exitUsage, want)
		}
	}
}
