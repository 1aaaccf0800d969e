package hato

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hato-go/hato/supervisor"
)

// Every kind the supervisor reports has a root EventKind of the same name.
func TestEventKindMirrorsSupervisor(t *testing.T) {
	n := 0
	for k := supervisor.EventKind(1); !strings.HasPrefix(k.String(), "EventKind("); k++ {
		if got := eventKind(k); got.String() != k.String() {
			t.Errorf("supervisor %s converts to %s", k, got)
		}
		n++
	}
	if n != 9 {
		t.Errorf("%d supervisor event kinds, the root mirrors 9", n)
	}
}

// The root types carry every field of the supervisor's, so the conversions
// lose nothing.
func TestSupervisionConversions(t *testing.T) {
	for _, pair := range [][2]any{
		{Backoff{}, supervisor.Backoff{}},
		{RestartPolicy{}, supervisor.Policy{}},
		{SupervisorEvent{}, supervisor.Event{}},
	} {
		root, sup := reflect.TypeOf(pair[0]), reflect.TypeOf(pair[1])
		if root.NumField() != sup.NumField() {
			t.Errorf("%s has %d fields, %s %d", root, root.NumField(), sup, sup.NumField())
		}
		for i := range sup.NumField() {
			if _, ok := root.FieldByName(sup.Field(i).Name); !ok {
				t.Errorf("%s lacks %s.%s", root, sup, sup.Field(i).Name)
			}
		}
	}

	b := Backoff{Initial: time.Millisecond, Max: time.Second, Multiplier: 3, Jitter: -1}
	want := supervisor.Backoff{Initial: time.Millisecond, Max: time.Second, Multiplier: 3, Jitter: -1}
	if got := supervisorBackoff(b); got != want {
		t.Errorf("supervisorBackoff = %+v, want %+v", got, want)
	}
	p := RestartPolicy{Backoff: b, ResetAfter: time.Minute, MaxRestarts: -1, Window: time.Hour}
	wantP := supervisor.Policy{Backoff: want, ResetAfter: time.Minute, MaxRestarts: -1, Window: time.Hour}
	if got := supervisorPolicy(p); got != wantP {
		t.Errorf("supervisorPolicy = %+v, want %+v", got, wantP)
	}

	now := time.Now()
	e := supervisorEvent(supervisor.Event{Time: now, Kind: supervisor.EventFailed, Child: "r", Reason: supervisor.ErrGaveUp, Failures: 2, Delay: time.Second})
	wantE := SupervisorEvent{Time: now, Kind: EventFailed, Child: "r", Reason: supervisor.ErrGaveUp, Failures: 2, Delay: time.Second}
	if e != wantE {
		t.Errorf("supervisorEvent = %+v, want %+v", e, wantE)
	}
	if e.String() != "r failed failures=2 delay=1s: "+supervisor.ErrGaveUp.Error() {
		t.Errorf("String() = %q", e.String())
	}
}
