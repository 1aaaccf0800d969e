package hato

import (
	"context"
	"log/slog"
	"strings"
)

// protoactorHandler passes protoactor's log records on, except its
// "[DeadLetter]" lines: a message sent to an actor that has stopped, which
// happens routinely at shutdown. In hato "dead letter" means a message that
// failed, so at Info they read like message loss; they go out at Debug as
// "actor message undeliverable".
type protoactorHandler struct{ slog.Handler }

// undeliverable is what protoactor's "[DeadLetter]" lines are called.
const undeliverable = "actor message undeliverable (the actor stopped)"

func (h protoactorHandler) Handle(ctx context.Context, r slog.Record) error {
	if !strings.HasPrefix(r.Message, "[DeadLetter]") {
		return h.Handler.Handle(ctx, r)
	}
	if !h.Handler.Enabled(ctx, slog.LevelDebug) {
		return nil
	}
	out := slog.NewRecord(r.Time, slog.LevelDebug, undeliverable, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(a)
		return true
	})
	return h.Handler.Handle(ctx, out)
}

func (h protoactorHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return protoactorHandler{h.Handler.WithAttrs(attrs)}
}

func (h protoactorHandler) WithGroup(name string) slog.Handler {
	return protoactorHandler{h.Handler.WithGroup(name)}
}
