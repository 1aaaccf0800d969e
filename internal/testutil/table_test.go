package testutil

import (
	"strings"
	"testing"
	"time"
)

// The fault and cluster suites print their tables through Table: the
// Markdown they printed by hand before.
func TestTablePrintsMarkdown(t *testing.T) {
	tb := Table{Header: []string{"scenario", "lost", "recovery", "notes"}, Align: "lrrl"}
	tb.Add("kill", 0, TableDuration(1234*time.Millisecond), "ok")
	tb.Add("none", 2, TableDuration(0), "")
	var b strings.Builder
	tb.Print(&b)
	want := "| scenario | lost | recovery | notes |\n|---|---:|---:|---|\n| kill | 0 | 1.23s | ok |\n| none | 2 | - |  |\n"
	if b.String() != want || tb.Len() != 2 {
		t.Errorf("table\n%s\nwant\n%s", b.String(), want)
	}
}
