package hato_test

import (
	"testing"

	"github.com/hato-go/hato"
)

// The actions a DeliveryEvent reports are the consumer actor's (aliases):
// they keep the values and names they had as the root package's own type.
func TestActionsKeepTheirValuesAndNames(t *testing.T) {
	for i, want := range []struct {
		action hato.Action
		name   string
	}{
		{hato.ActionDeadLetter, "dead-letter"}, {hato.ActionDrop, "drop"},
		{hato.ActionRequeue, "requeue"}, {hato.ActionDuplicate, "duplicate"},
	} {
		if int(want.action) != i+1 || want.action.String() != want.name {
			t.Errorf("action %d: value %d name %q, want %d %q", i, int(want.action), want.action, i+1, want.name)
		}
	}
}
