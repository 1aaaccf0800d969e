package actors

import (
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/zap"

	"github.com/hato-go/hato/broker"
	"github.com/hato-go/hato/supervisor"
)

// Defect 10: a publish handed back by a closed publisher, not yet taken by
// the actor, is still outstanding: a drain must not report clean.
func TestDrainCountsHandedBackPublishes(t *testing.T) {
	sys := actor.NewActorSystem()
	defer sys.Shutdown()
	r := &broker.Request{Done: func(error) {}}
	c := &connection{
		shared: &connShared{handback: []*broker.Request{r}},
		log:    zap.NewNop(),
		sys:    sys,
		self:   actor.NewPID(sys.Address(), "nobody"),
	}
	done := make(chan struct{})
	c.drain = &supervisor.Drain{Deadline: time.Now().Add(time.Hour), Done: done}
	c.checkDrain()
	select {
	case <-done:
		t.Fatal("drain reported clean while a publish waits in hand-over between publishers")
	default:
	}
}
