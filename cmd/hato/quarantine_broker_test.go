//go:build integration

package main

import (
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato/internal/testutil"
	"github.com/hato-go/hato/test/brokertest"
)

// Issue 17: dlq show, list and replay survive a message whose headers
// amqp091-go cannot read (nested 40 deep), say what they saw, and replay
// skips it (replayed, it would be quarantined again). Before, each died
// with the connection at that message.
func TestDLQCommandsSurviveUnparseableHeaders(t *testing.T) {
	url := pkgVhost.URL(t)
	q := testutil.Key(t, "hostile") + ".dlq"
	conn := brokertest.Dial(t, url, "cli-hostile")
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	target := testutil.Key(t, "replayed")
	for _, name := range []string{q, target} {
		if _, err := ch.QueueDeclare(name, false, true, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	brokertest.PublishHostile(t, url, "", q, amqp.Publishing{Headers: brokertest.NestedHeaders(40), MessageId: "hostile", Body: []byte("x")})
	brokertest.PublishHostile(t, url, "", q, amqp.Publishing{MessageId: "good", Body: []byte("y")})

	r := hatoRun(t, url, "", "dlq", "show", "--json", q)
	rows := jsonLines[shownMessage](t, r.stdout)
	if r.code != exitOK || len(rows) != 2 || rows[0].MessageID != "hostile" || rows[1].MessageID != "good" ||
		!strings.Contains(rows[0].Unparseable, "nested deeper than 32") {
		t.Fatalf("dlq show --json: %v", r)
	}
	if r := hatoRun(t, url, "", "dlq", "show", q); r.code != exitOK || !strings.Contains(r.stdout, "headers:  unparseable (") {
		t.Errorf("dlq show: %v", r)
	}
	if r := hatoRun(t, url, "", "dlq", "list", "--json", q); r.code != exitOK || !strings.Contains(r.stdout, `"messages":2`) {
		t.Errorf("dlq list: %v", r)
	}
	r = hatoRun(t, url, "", "dlq", "replay", "-y", "--json", "--exchange", "", "--to", target, q)
	reps := jsonLines[replayed](t, r.stdout)
	if len(reps) < 2 || reps[0].Action != "skipped" || !strings.Contains(reps[0].Why, "unparseable") {
		t.Fatalf("dlq replay: %v", r)
	}
	if m, _ := brokertest.Inspect(t, conn, q); m != 1 {
		t.Errorf("after replay the queue holds %d, want the unparseable one", m)
	}
}

// Issue 17: hato tail survives such a message, says so, and shows the
// one behind it.
func TestTailSurvivesUnparseableHeaders(t *testing.T) {
	url := pkgVhost.URL(t)
	key := testutil.Key(t, "tail-hostile")
	p := startTail(t, url, "--json", "--envelope", "raw", key)
	brokertest.PublishHostile(t, url, "amq.topic", key, amqp.Publishing{Headers: brokertest.WideHeaders(9000), Body: []byte("hostile")})
	brokertest.PublishHostile(t, url, "amq.topic", key, amqp.Publishing{Body: []byte("good")})
	brokertest.WaitFor(t, 30*time.Second, func() bool { return strings.Count(p.stdout.String(), "\n") >= 2 }, "two messages tailed")
	rows := jsonLines[tailRecord](t, p.stdout.String())
	if !strings.Contains(rows[0].Unparseable, "more than 8192 elements") || rows[1].Unparseable != "" ||
		!strings.Contains(string(rows[1].Data), "good") {
		t.Fatalf("tail: %s", p.stdout.String())
	}
}
