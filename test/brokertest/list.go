package brokertest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// Queue is one row of `rabbitmqctl list_queues`.
type Queue struct {
	Name       string
	Durable    bool
	AutoDelete bool
	Exclusive  bool
	// Arguments are the x-arguments the queue was declared with, converted
	// as documented on ParseTable (integers are int64).
	Arguments              map[string]any
	Messages               int
	MessagesReady          int
	MessagesUnacknowledged int
	Consumers              int
	Type                   string // "classic", "quorum" or "stream"
}

// Exchange is one row of `rabbitmqctl list_exchanges`.
type Exchange struct {
	Name       string // "" is the default exchange
	Type       string
	Durable    bool
	AutoDelete bool
	Internal   bool
	Arguments  map[string]any // as documented on ParseTable
}

// Connection is one row of `rabbitmqctl list_connections`.
type Connection struct {
	// Name is the client-provided connection name (client property
	// "connection_name", set by Dial); "" if the client set none. RabbitMQ
	// 3.10 has no user_provided_name column, it is read from
	// client_properties.
	Name string
	// PID is the connection process id as accepted by close_connection,
	// e.g. "<rabbit@localhost.1795630724.856.0>". Empty if the connection
	// vanished between the two rabbitmqctl calls of ListConnections.
	PID string
	// Addr is RabbitMQ's own connection name, "clientIP:port -> serverIP:port".
	Addr  string
	VHost string
	User  string
	// State is e.g. "running", "blocking", "blocked" (memory/disk alarm),
	// "closing".
	State string
	// ClientProperties are all properties the client advertised.
	ClientProperties map[string]any
}

const queueColumns = "name durable auto_delete exclusive arguments messages messages_ready messages_unacknowledged consumers type"

// ListQueues lists the queues of vhost via `rabbitmqctl list_queues` (~1 s).
// A vhost that does not exist yields no queues and no error (that is what
// rabbitmqctl does).
func ListQueues(vhost string) ([]Queue, error) {
	args := append([]string{"-q", "list_queues", "-p", vhost}, strings.Fields(queueColumns)...)
	out, err := Rabbitmqctl(append(args, "--formatter", "json")...)
	if err != nil {
		return nil, err
	}
	return parseQueues(out)
}

func parseQueues(out string) ([]Queue, error) {
	rows, err := jsonRows(out)
	if err != nil {
		return nil, err
	}
	queues := make([]Queue, 0, len(rows))
	for _, r := range rows {
		args, err := ParseTable(r["arguments"])
		if err != nil {
			return nil, fmt.Errorf("queue %s: arguments: %w", r["name"], err)
		}
		queues = append(queues, Queue{
			Name:                   jsonString(r["name"]),
			Durable:                jsonBool(r["durable"]),
			AutoDelete:             jsonBool(r["auto_delete"]),
			Exclusive:              jsonBool(r["exclusive"]),
			Arguments:              args,
			Messages:               jsonInt(r["messages"]),
			MessagesReady:          jsonInt(r["messages_ready"]),
			MessagesUnacknowledged: jsonInt(r["messages_unacknowledged"]),
			Consumers:              jsonInt(r["consumers"]),
			Type:                   jsonString(r["type"]),
		})
	}
	return queues, nil
}

// FindQueue returns the queue called name in vhost; ok is false if it does
// not exist.
func FindQueue(vhost, name string) (q Queue, ok bool, err error) {
	queues, err := ListQueues(vhost)
	if err != nil {
		return Queue{}, false, err
	}
	for _, q := range queues {
		if q.Name == name {
			return q, true, nil
		}
	}
	return Queue{}, false, nil
}

// ListExchanges lists the exchanges of vhost (including the default and
// amq.* exchanges) via `rabbitmqctl list_exchanges` (~1 s).
func ListExchanges(vhost string) ([]Exchange, error) {
	out, err := Rabbitmqctl("-q", "list_exchanges", "-p", vhost,
		"name", "type", "durable", "auto_delete", "internal", "arguments", "--formatter", "json")
	if err != nil {
		return nil, err
	}
	return parseExchanges(out)
}

func parseExchanges(out string) ([]Exchange, error) {
	rows, err := jsonRows(out)
	if err != nil {
		return nil, err
	}
	exchanges := make([]Exchange, 0, len(rows))
	for _, r := range rows {
		args, err := ParseTable(r["arguments"])
		if err != nil {
			return nil, fmt.Errorf("exchange %s: arguments: %w", r["name"], err)
		}
		exchanges = append(exchanges, Exchange{
			Name:       jsonString(r["name"]),
			Type:       jsonString(r["type"]),
			Durable:    jsonBool(r["durable"]),
			AutoDelete: jsonBool(r["auto_delete"]),
			Internal:   jsonBool(r["internal"]),
			Arguments:  args,
		})
	}
	return exchanges, nil
}

// ListConnections lists all client connections of the broker (every vhost).
//
// The JSON formatter prints pids relative to the CLI node ("#PID<1.2.3>"),
// which close_connection does not accept, so the pids come from a second,
// concurrent `rabbitmqctl -s list_connections pid name` (table format) and
// are joined on RabbitMQ's connection name (Addr). Takes ~1 s.
func ListConnections() ([]Connection, error) {
	var (
		wg            sync.WaitGroup
		jsonOut, pids string
		jsonErr       error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		jsonOut, jsonErr = Rabbitmqctl("-q", "list_connections",
			"name", "user", "vhost", "state", "client_properties", "--formatter", "json")
	}()
	pids, pidErr := Rabbitmqctl("-s", "list_connections", "pid", "name")
	wg.Wait()
	if err := errors.Join(jsonErr, pidErr); err != nil {
		return nil, err
	}
	return parseConnections(jsonOut, pids)
}

func parseConnections(jsonOut, pidTable string) ([]Connection, error) {
	rows, err := jsonRows(jsonOut)
	if err != nil {
		return nil, err
	}
	pidByAddr := map[string]string{}
	for _, line := range strings.Split(pidTable, "\n") {
		pid, addr, ok := strings.Cut(strings.TrimRight(line, "\r"), "\t")
		if ok && strings.HasPrefix(pid, "<") {
			pidByAddr[addr] = pid
		}
	}
	conns := make([]Connection, 0, len(rows))
	for _, r := range rows {
		props, err := ParseTable(r["client_properties"])
		if err != nil {
			return nil, fmt.Errorf("connection %s: client_properties: %w", r["name"], err)
		}
		name, _ := props["connection_name"].(string)
		addr := jsonString(r["name"])
		conns = append(conns, Connection{
			Name:             name,
			PID:              pidByAddr[addr],
			Addr:             addr,
			VHost:            jsonString(r["vhost"]),
			User:             jsonString(r["user"]),
			State:            jsonString(r["state"]),
			ClientProperties: props,
		})
	}
	return conns, nil
}

// NamePrefix returns a connection matcher for client-provided names that
// start with prefix.
func NamePrefix(prefix string) func(Connection) bool {
	return func(c Connection) bool { return strings.HasPrefix(c.Name, prefix) }
}

// CloseConnections force-closes (`rabbitmqctl close_connection <pid>
// <reason>`) every connection for which match returns true and returns how
// many were closed. Only ever match connections your test created (e.g. by
// a unique name prefix, see NamePrefix). Clients see a connection.close with
// code 320 (CONNECTION_FORCED) and text "CONNECTION_FORCED - <reason>".
// Characters other than letters, digits, space and "_.:-/" in reason are
// replaced by '_'. A connection that closed on its own between the listing
// and its close_connection (the broker answers noproc) is not counted and
// is no error: what the caller wanted gone is gone.
func CloseConnections(match func(Connection) bool, reason string) (int, error) {
	conns, err := ListConnections()
	if err != nil {
		return 0, err
	}
	reason = sanitize(reason, " _.:-/")
	if reason == "" {
		reason = "closed by brokertest"
	}
	var (
		mu     sync.Mutex
		wg     sync.WaitGroup
		closed int
		errs   []error
	)
	sem := make(chan struct{}, 4) // bound the number of concurrent Erlang VMs
	for _, c := range conns {
		if !match(c) {
			continue
		}
		if c.PID == "" {
			mu.Lock()
			errs = append(errs, fmt.Errorf("connection %q (%s) has no pid (it appeared or vanished while listing)", c.Name, c.Addr))
			mu.Unlock()
			continue
		}
		wg.Add(1)
		go func(c Connection) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			_, err := Rabbitmqctl("close_connection", c.PID, reason)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && strings.Contains(err.Error(), "noproc") {
				return
			}
			if err != nil {
				errs = append(errs, err)
				return
			}
			closed++
		}(c)
	}
	wg.Wait()
	return closed, errors.Join(errs...)
}

// WaitConnections waits until exactly n connections match (polling
// ListConnections, ~1 s per round) and returns them; it fails the test after
// timeout.
func WaitConnections(t testing.TB, match func(Connection) bool, n int, timeout time.Duration) []Connection {
	t.Helper()
	var (
		matched []Connection
		lastErr error
	)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := Poll(ctx, func() bool {
		conns, err := ListConnections()
		if err != nil {
			lastErr = err
			return false
		}
		matched = matched[:0]
		for _, c := range conns {
			if match(c) {
				matched = append(matched, c)
			}
		}
		return len(matched) == n
	})
	if err != nil {
		names := make([]string, len(matched))
		for i, c := range matched {
			names[i] = fmt.Sprintf("%q", c.Name)
		}
		t.Fatalf("waiting %v for %d matching connections: have %d [%s] (last error: %v)",
			timeout, n, len(matched), strings.Join(names, ", "), lastErr)
	}
	return matched
}

// ListVhosts returns the names of all virtual hosts.
func ListVhosts() ([]string, error) {
	out, err := Rabbitmqctl("-q", "list_vhosts", "name", "--formatter", "json")
	if err != nil {
		return nil, err
	}
	rows, err := jsonRows(out)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(rows))
	for _, r := range rows {
		names = append(names, jsonString(r["name"]))
	}
	return names, nil
}
