package brokertest

import (
	"os"
	"reflect"
	"testing"
)

func readTestdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseCapturedQueues(t *testing.T) {
	queues, err := parseQueues(readTestdata(t, "list_queues.json"))
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Queue{}
	for _, q := range queues {
		byName[q.Name] = q
	}
	if len(byName) != 4 {
		t.Fatalf("got %d queues: %+v", len(byName), queues)
	}

	q := byName["probe-q"]
	want := Queue{
		Name: "probe-q",
		Arguments: map[string]any{
			"x-expires":              int64(60000),
			"x-max-length":           int64(10),
			"x-dead-letter-exchange": "dlx",
			"x-queue-mode":           "lazy",
		},
		Messages: 1, MessagesUnacknowledged: 1, Consumers: 1, Type: "classic",
	}
	if !reflect.DeepEqual(q, want) {
		t.Errorf("probe-q:\n got %#v\nwant %#v", q, want)
	}

	q2 := byName["probe-q2"]
	if !q2.Durable || !q2.AutoDelete || q2.Exclusive || len(q2.Arguments) != 0 || q2.Arguments == nil {
		t.Errorf("probe-q2: %#v", q2)
	}

	// Quorum queues print "exclusive":"".
	qq := byName["probe-quorum"]
	if qq.Type != "quorum" || qq.Exclusive || !qq.Durable || qq.Arguments["x-queue-type"] != "quorum" {
		t.Errorf("probe-quorum: %#v", qq)
	}

	types := byName["probe-types"].Arguments
	wantTypes := map[string]any{
		"x-dec":   []any{int64(2), int64(12345)},
		"x-i16":   int64(7),
		"x-nil":   nil,
		"x-bool":  true,
		"x-f32":   2.5,
		"x-int64": int64(1) << 40,
		"x-array": []any{"s", int64(1), true},
		"x-ts":    int64(1700000000),
		"x-u8":    int64(8),
		"x-float": 1.5,
		"x-table": map[string]any{"n": int64(3), "a": "b"},
		"x-bytes": "raw",
	}
	if !reflect.DeepEqual(types, wantTypes) {
		t.Errorf("probe-types arguments:\n got %#v\nwant %#v", types, wantTypes)
	}
}

func TestParseCapturedExchanges(t *testing.T) {
	exchanges, err := parseExchanges(readTestdata(t, "list_exchanges.json"))
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Exchange{}
	for _, e := range exchanges {
		byName[e.Name] = e
	}
	if len(byName) != 9 {
		t.Fatalf("got %d exchanges", len(byName))
	}
	x := byName["probe-x"]
	want := Exchange{Name: "probe-x", Type: "topic", AutoDelete: true, Arguments: map[string]any{"alternate-exchange": "ae"}}
	if !reflect.DeepEqual(x, want) {
		t.Errorf("probe-x:\n got %#v\nwant %#v", x, want)
	}
	if e := byName["probe-int"]; !e.Internal || !e.Durable || e.Type != "fanout" {
		t.Errorf("probe-int: %#v", e)
	}
	if e, ok := byName[""]; !ok || e.Type != "direct" {
		t.Errorf("default exchange: %#v", e)
	}
}

func TestParseCapturedConnections(t *testing.T) {
	conns, err := parseConnections(readTestdata(t, "list_connections.json"), readTestdata(t, "list_connections_pid.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(conns) != 1 {
		t.Fatalf("got %d connections", len(conns))
	}
	c := conns[0]
	if c.Name != `probe "quoted", name ünï` {
		t.Errorf("Name = %q", c.Name)
	}
	if c.PID != "<rabbit@localhost.1795630724.1069.0>" {
		t.Errorf("PID = %q", c.PID)
	}
	if c.Addr != "127.0.0.1:49516 -> 127.0.0.1:5672" || c.VHost != "probe-vh" || c.User != "guest" || c.State != "running" {
		t.Errorf("connection = %#v", c)
	}
	caps, _ := c.ClientProperties["capabilities"].(map[string]any)
	if caps["connection.blocked"] != true || c.ClientProperties["product"] != "AMQP 0.9.1 Client" {
		t.Errorf("client properties = %#v", c.ClientProperties)
	}
}

func TestParseConnectionsWithoutPid(t *testing.T) {
	conns, err := parseConnections(readTestdata(t, "list_connections.json"), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(conns) != 1 || conns[0].PID != "" {
		t.Fatalf("%#v", conns)
	}
}

func TestJSONRowsSkipsBanner(t *testing.T) {
	rows, err := jsonRows("Listing queues for vhost / ...\n[\n{\"name\":\"a\"}\n,{\"name\":\"b\"}\n]\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || jsonString(rows[1]["name"]) != "b" {
		t.Fatalf("%v", rows)
	}
	if rows, err := jsonRows("[\n]\n"); err != nil || len(rows) != 0 {
		t.Fatalf("empty: %v %v", rows, err)
	}
	if _, err := jsonRows("Error: boom"); err == nil {
		t.Fatal("no error for non-JSON output")
	}
}

func TestParseTableForms(t *testing.T) {
	cases := []struct {
		in   string
		want map[string]any
	}{
		{``, map[string]any{}},
		{`null`, map[string]any{}},
		{`""`, map[string]any{}},
		{`[]`, map[string]any{}},
		// Object form (newer RabbitMQ versions).
		{`{"x-expires":1000,"x-ratio":0.5,"x-name":"n","x-t":{"k":[1,"v"]}}`,
			map[string]any{"x-expires": int64(1000), "x-ratio": 0.5, "x-name": "n", "x-t": map[string]any{"k": []any{int64(1), "v"}}}},
		// [key, value] pairs.
		{`[["a",1],["b","s"]]`, map[string]any{"a": int64(1), "b": "s"}},
		// Unknown type tag: generic value.
		{`[["a","weird",{"z":2}]]`, map[string]any{"a": map[string]any{"z": int64(2)}}},
		// Arrays as lists of [type, value] pairs and duplicate type keys.
		{`[["a","array",[["longstr","x"],["signedint",2]]],["b","array",{"longstr":"p","longstr":"q"}]]`,
			map[string]any{"a": []any{"x", int64(2)}, "b": []any{"p", "q"}}},
	}
	for _, c := range cases {
		got, err := ParseTable([]byte(c.in))
		if err != nil {
			t.Errorf("ParseTable(%s): %v", c.in, err)
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("ParseTable(%s):\n got %#v\nwant %#v", c.in, got, c.want)
		}
	}
	for _, bad := range []string{`5`, `[1]`, `[["a"]]`, `{"a":`} {
		if _, err := ParseTable([]byte(bad)); err == nil {
			t.Errorf("ParseTable(%s) did not fail", bad)
		}
	}
}

func TestJSONScalars(t *testing.T) {
	for in, want := range map[string]bool{`true`: true, `false`: false, `""`: false, `"true"`: true, `null`: false} {
		if got := jsonBool([]byte(in)); got != want {
			t.Errorf("jsonBool(%s) = %v", in, got)
		}
	}
	for in, want := range map[string]int{`3`: 3, `""`: 0, `"12"`: 12, `null`: 0, `2.0`: 2} {
		if got := jsonInt([]byte(in)); got != want {
			t.Errorf("jsonInt(%s) = %v", in, got)
		}
	}
}

func TestParseWatermark(t *testing.T) {
	cases := map[string][]string{
		"0.4\n":                   {"0.4"},
		"1.0e-6\n":                {"1.0e-6"},
		"{absolute,4000000000}\n": {"absolute", "4000000000"},
		"{relative, 0.5}":         {"0.5"},
	}
	for in, want := range cases {
		got, err := parseWatermark(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("parseWatermark(%q) = %v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "{foo,1}", "Error: x y"} {
		if _, err := parseWatermark(bad); err == nil {
			t.Errorf("parseWatermark(%q) did not fail", bad)
		}
	}
}

func TestUniqueNameAndSanitize(t *testing.T) {
	n := UniqueName(VhostPrefix, "TestFoo/sub case#1")
	if len(n) != len(VhostPrefix+"TestFoo-sub-case-1-")+8 || n[:len(VhostPrefix+"TestFoo-sub-case-1-")] != VhostPrefix+"TestFoo-sub-case-1-" {
		t.Errorf("UniqueName = %q", n)
	}
	if a, b := UniqueName("p-", "x"), UniqueName("p-", "x"); a == b {
		t.Errorf("UniqueName not unique: %q", a)
	}
	long := UniqueName("", string(make([]byte, 100)))
	if len(long) != 8 {
		t.Errorf("UniqueName of garbage label = %q", long)
	}
	if got := sanitize("it's $bad `x` \\ ok:1", " _.:-/"); got != "it-s -bad -x- - ok:1" {
		t.Errorf("sanitize = %q", got)
	}
}
