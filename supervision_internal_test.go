package hato

import (
	"testing"
	"time"

	"github.com/hato-go/hato/supervisor"
)

// The event kinds are supervisor's (aliases): they keep the values and
// names they had as the root package's own type.
func TestEventKindsKeepTheirValuesAndNames(t *testing.T) {
	for i, want := range []struct {
		kind EventKind
		name string
	}{
		{EventReady, "ready"}, {EventFailed, "failed"}, {EventRestarted, "restarted"},
		{EventStopped, "stopped"}, {EventRespawned, "respawned"}, {EventGaveUp, "gave-up"},
		{EventUnavailable, "unavailable"}, {EventPaused, "paused"}, {EventResumed, "resumed"},
	} {
		if int(want.kind) != i+1 || want.kind.String() != want.name {
			t.Errorf("kind %d: value %d name %q, want %d %q", i, int(want.kind), want.kind, i+1, want.name)
		}
	}
	if s := EventKind(10).String(); s != "EventKind(10)" {
		t.Errorf("unknown kind reads %q", s)
	}
}

// A SupervisorEvent reads as before: String keeps the form the logs and
// the examples show.
func TestSupervisorEventString(t *testing.T) {
	e := SupervisorEvent{Time: time.Now(), Kind: EventFailed, Child: "r", Reason: supervisor.ErrGaveUp,
		Failures: 2, Delay: time.Second, Detail: "d"}
	if e.String() != "r failed failures=2 delay=1s (d): "+supervisor.ErrGaveUp.Error() {
		t.Errorf("String() = %q", e.String())
	}
}
