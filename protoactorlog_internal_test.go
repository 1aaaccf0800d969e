package hato

import (
	"log/slog"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/exp/zapslog"
	"go.uber.org/zap/zaptest/observer"
)

// Issue 19: protoactor's "[DeadLetter]" lines came out at info on
// shutdown and read like message loss.
func TestProtoactorDeadLetterLinesGoToDebug(t *testing.T) {
	for _, level := range []zap.AtomicLevel{zap.NewAtomicLevelAt(zap.InfoLevel), zap.NewAtomicLevelAt(zap.DebugLevel)} {
		core, logs := observer.New(level)
		l := slog.New(protoactorHandler{zapslog.NewHandler(core)}).With("pid", "x")
		l.Info("[DeadLetter]", "message", struct{}{}, "sender", "<nil>")
		l.Info("other")
		var got []string
		for _, e := range logs.All() {
			got = append(got, e.Level.String()+" "+e.Message)
		}
		want := []string{"info other"}
		if level.Level() == zap.DebugLevel {
			want = []string{"debug " + undeliverable, "info other"}
		}
		if len(got) != len(want) || got[0] != want[0] || got[len(got)-1] != want[len(want)-1] {
			t.Errorf("at %s: %q, want %q", level, got, want)
		}
	}
}
