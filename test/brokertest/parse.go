package brokertest

// Parsing of `rabbitmqctl ... --formatter json` output.
//
// What RabbitMQ 3.10.8 prints (captured in testdata/):
//
//   - a JSON array of objects, one per row, keyed by the requested columns;
//     with -q there are no "Listing ..." lines.
//   - AMQP tables (queue/exchange "arguments", connection "client_properties")
//     are NOT objects but lists of [key, type, value] triples, e.g.
//     [["x-expires","signedint",60000],["x-dead-letter-exchange","longstr","dlx"]].
//     Nested tables recurse; an AMQP array is rendered as an OBJECT keyed by
//     element type ({"longstr":"s","signedint":1}), so its elements are read
//     in document order; "void" values print as "undefined", "decimal" as
//     [scale, value], "timestamp" as Unix seconds, "binary" as a string.
//   - some columns are not booleans/numbers for every queue type: quorum
//     queues report "exclusive":"" and counts may be "" while a queue is
//     unavailable. Those decode as false / 0.
//   - pids are printed as "#PID<12576.856.0>", which is relative to the CLI's
//     own Erlang node and cannot be passed back to close_connection; the
//     table formatter prints the usable "<rabbit@host.1795630724.856.0>"
//     form (see ListConnections).
//
// Newer RabbitMQ versions may print tables as JSON objects; both forms are
// accepted.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// jsonRows extracts the JSON array from rabbitmqctl output and decodes it
// into one raw map per row.
func jsonRows(out string) ([]map[string]json.RawMessage, error) {
	start := -1
	for off := 0; off < len(out); {
		line := out[off:]
		if i := strings.IndexByte(line, '\n'); i >= 0 {
			line = line[:i]
		}
		if strings.HasPrefix(strings.TrimSpace(line), "[") {
			start = off
			break
		}
		off += len(line) + 1
	}
	if start < 0 {
		return nil, fmt.Errorf("no JSON array in rabbitmqctl output: %q", out)
	}
	var rows []map[string]json.RawMessage
	dec := json.NewDecoder(strings.NewReader(out[start:]))
	dec.UseNumber()
	if err := dec.Decode(&rows); err != nil {
		return nil, fmt.Errorf("decoding rabbitmqctl JSON output: %w; output: %q", err, out)
	}
	return rows, nil
}

func jsonString(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return strings.TrimSpace(string(raw))
}

// jsonBool accepts true/false and "true"/"false"; anything else ("", null)
// is false.
func jsonBool(raw json.RawMessage) bool {
	var b bool
	if json.Unmarshal(raw, &b) == nil {
		return b
	}
	return jsonString(raw) == "true"
}

// jsonInt accepts numbers and numeric strings; anything else ("", null) is 0.
func jsonInt(raw json.RawMessage) int {
	s := strings.Trim(strings.TrimSpace(string(raw)), `"`)
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return int(n)
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		return int(f)
	}
	return 0
}

// ParseTable converts an AMQP table as printed by `rabbitmqctl --formatter
// json` (a list of [key, type, value] triples, a list of [key, value] pairs,
// or an object) to a map. Values become:
//
//	longstr, shortstr, binary                 -> string
//	signedint, long, short, byte, unsigned*, timestamp -> int64
//	float, double                             -> float64
//	bool                                      -> bool
//	void                                      -> nil
//	table                                     -> map[string]any
//	array                                     -> []any
//	anything else (decimal, ...)              -> generic JSON value with
//	                                             integers as int64
//
// An empty input, null or "" yields an empty (non-nil) map.
func ParseTable(raw []byte) (map[string]any, error) {
	out := map[string]any{}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" || string(raw) == `""` {
		return out, nil
	}
	switch raw[0] {
	case '{':
		entries, err := orderedObject(raw)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			v, err := untyped(e.value)
			if err != nil {
				return nil, err
			}
			out[e.key] = v
		}
		return out, nil
	case '[':
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return nil, fmt.Errorf("table: %w", err)
		}
		for _, item := range items {
			var parts []json.RawMessage
			if err := json.Unmarshal(item, &parts); err != nil {
				return nil, fmt.Errorf("table entry %s: %w", item, err)
			}
			var key string
			if len(parts) < 2 || json.Unmarshal(parts[0], &key) != nil {
				return nil, fmt.Errorf("table entry %s: want [key, type, value] or [key, value]", item)
			}
			var (
				v   any
				err error
			)
			if len(parts) >= 3 {
				v, err = typed(jsonString(parts[1]), parts[2])
			} else {
				v, err = untyped(parts[1])
			}
			if err != nil {
				return nil, fmt.Errorf("table entry %q: %w", key, err)
			}
			out[key] = v
		}
		return out, nil
	default:
		return nil, fmt.Errorf("table: unexpected JSON %s", raw)
	}
}

// typed converts one AMQP field value given its RabbitMQ type tag.
func typed(typ string, raw json.RawMessage) (any, error) {
	switch typ {
	case "longstr", "shortstr", "binary":
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s, nil
		}
	case "signedint", "unsignedint", "long", "unsignedlong", "short", "unsignedshort",
		"byte", "unsignedbyte", "timestamp", "signedlong":
		if n, err := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64); err == nil {
			return n, nil
		}
	case "float", "double":
		if f, err := strconv.ParseFloat(strings.TrimSpace(string(raw)), 64); err == nil {
			return f, nil
		}
	case "bool":
		var b bool
		if json.Unmarshal(raw, &b) == nil {
			return b, nil
		}
	case "void":
		return nil, nil
	case "table":
		return ParseTable(raw)
	case "array":
		return parseArray(raw)
	}
	return untyped(raw)
}

// parseArray handles both the 3.10 object form ({"type": value, ...}) and a
// plain list (of [type, value] pairs or bare values).
func parseArray(raw json.RawMessage) ([]any, error) {
	raw = bytes.TrimSpace(raw)
	out := []any{}
	if len(raw) == 0 {
		return out, nil
	}
	switch raw[0] {
	case '{':
		entries, err := orderedObject(raw)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			v, err := typed(e.key, e.value)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case '[':
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return nil, err
		}
		for _, item := range items {
			var pair []json.RawMessage
			var typ string
			if json.Unmarshal(item, &pair) == nil && len(pair) == 2 && json.Unmarshal(pair[0], &typ) == nil {
				v, err := typed(typ, pair[1])
				if err != nil {
					return nil, err
				}
				out = append(out, v)
				continue
			}
			v, err := untyped(item)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	}
	v, err := untyped(raw)
	if err != nil {
		return nil, err
	}
	return []any{v}, nil
}

type objectEntry struct {
	key   string
	value json.RawMessage
}

// orderedObject decodes a JSON object preserving key order and duplicates.
func orderedObject(raw json.RawMessage) ([]objectEntry, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("want JSON object, got %s", raw)
	}
	var entries []objectEntry
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, ok := tok.(string)
		if !ok {
			return nil, fmt.Errorf("bad object key %v", tok)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		entries = append(entries, objectEntry{key, v})
	}
	if _, err := dec.Token(); err != nil && err != io.EOF {
		return nil, err
	}
	return entries, nil
}

// untyped decodes generic JSON with integers as int64 and other numbers as
// float64.
func untyped(raw json.RawMessage) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return normalize(v), nil
}

func normalize(v any) any {
	switch x := v.(type) {
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return n
		}
		f, _ := x.Float64()
		return f
	case []any:
		for i := range x {
			x[i] = normalize(x[i])
		}
		return x
	case map[string]any:
		for k := range x {
			x[k] = normalize(x[k])
		}
		return x
	}
	return v
}
