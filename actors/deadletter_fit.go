package actors

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hato-go/hato/broker"
)

// fitDeadLetter makes the dead-letter copy m fit what the broker and
// amqp091-go take: its properties within one frame of
// broker.DefaultFrameMax less broker.PropertiesMargin, its header table
// within broker.MaxHeaderElements. A copy that would not fit (an original
// whose headers were just under frame_max, or held 8 192 entries, before
// hato's were added) would be refused again on every attempt and the
// original never settled. The original's own headers (those in orig) are
// dropped, largest first, until the copy fits; HeaderDroppedHeaders names
// them. The headers deadLetterRequest sets are kept. It changes m.Headers in place.
func fitDeadLetter(m *amqp.Publishing, orig amqp.Table) {
	size, max := broker.PropertiesSize(m), broker.DefaultFrameMax-8-broker.PropertiesMargin
	const noteRoom = 2048 // the note itself, at most 1 KiB of names, and its entry
	over := len(m.Headers) > broker.MaxHeaderElements
	if size <= max && !over {
		return
	}
	names := make([]string, 0, len(orig))
	for k := range orig {
		if !slices.Contains(hatoHeaders[:], k) {
			names = append(names, k)
		}
	}
	sizes := make(map[string]int, len(names))
	for _, k := range names {
		sizes[k] = 1 + len(k) + fieldSizeOf(m.Headers[k])
	}
	slices.SortFunc(names, func(a, b string) int { return cmp.Compare(sizes[b], sizes[a]) })
	var dropped []string
	for _, k := range names {
		if size+noteRoom <= max && len(m.Headers)+1 <= broker.MaxHeaderElements {
			break
		}
		delete(m.Headers, k)
		size -= sizes[k]
		dropped = append(dropped, k)
	}
	m.Headers[HeaderDroppedHeaders] = droppedNote(dropped)
}

// hatoHeaders are the headers deadLetterRequest sets: fitDeadLetter keeps
// them.
var hatoHeaders = [...]string{
	HeaderReason, HeaderAttempts, HeaderOriginalExchange, HeaderOriginalKey,
	HeaderOriginalQueue, HeaderDeadLetteredAt, HeaderService, HeaderRoute,
	HeaderOriginalUserID, HeaderOriginalExpiration,
}

// droppedNote is HeaderDroppedHeaders's value: how many headers were
// dropped, and their names, cut to 1 KiB.
func droppedNote(names []string) string {
	list := strings.Join(names, ",")
	if len(list) > 1024 {
		list = list[:1024] + "…"
	}
	return fmt.Sprintf("%d headers dropped to fit one frame: %s", len(names), list)
}

// fieldSizeOf is the encoded size of one header value.
func fieldSizeOf(v any) int {
	return broker.PropertiesSize(&amqp.Publishing{Headers: amqp.Table{"": v}}) - 14 - 4 - 1
}
