package testutil

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Table is a Markdown table of results (lines start with "|") that tests
// running in parallel add rows to, printed once at the end: the fault
// and cluster suites' scenario tables. Safe for concurrent use.
type Table struct {
	// Header names the columns; Align has an 'l' (left) or 'r' (right)
	// per column.
	Header []string
	Align  string

	mu   sync.Mutex
	rows [][]any
}

// Add records a row; its cells are printed with fmt.Sprint.
func (t *Table) Add(cells ...any) {
	t.mu.Lock()
	t.rows = append(t.rows, cells)
	t.mu.Unlock()
}

// Len is how many rows were added.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.rows)
}

// Print writes the header, the alignment line and the rows.
func (t *Table) Print(w io.Writer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	fmt.Fprintf(w, "| %s |\n", strings.Join(t.Header, " | "))
	var sep strings.Builder
	for _, a := range t.Align {
		sep.WriteString("|---")
		if a == 'r' {
			sep.WriteString(":")
		}
	}
	fmt.Fprintln(w, sep.String()+"|")
	for _, row := range t.rows {
		cells := make([]string, len(row))
		for i, c := range row {
			cells[i] = fmt.Sprint(c)
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	}
}

// TableDuration is d for a table cell: rounded to 10 ms, "-" when not
// positive (not measured).
func TableDuration(d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return d.Round(10 * time.Millisecond).String()
}
