package supervisor

import (
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// Issue 19: start-up printed two info lines per route (the route's own
// "consuming" and the supervisor's "ready"). Ready goes to debug; the
// events that need attention stay at warn and error.
func TestReadyIsLoggedAtDebug(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	r := &root{log: zap.New(core)}
	r.emit(Event{Kind: EventReady, Child: "route-0-h"})
	if n := logs.Len(); n != 0 {
		t.Errorf("ready logged %d lines at info or above: %v", n, logs.All())
	}
	r.emit(Event{Kind: EventGaveUp, Child: "route-0-h"})
	if logs.FilterLevelExact(zap.ErrorLevel).Len() != 1 {
		t.Errorf("gave-up not logged at error: %v", logs.All())
	}
}
