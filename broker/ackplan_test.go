package broker

import (
	"slices"
	"testing"
)

func TestPlanAcks(t *testing.T) {
	cases := []struct {
		name          string
		unsettled     []uint64
		acks          []uint64
		prefix        int
		upTo          uint64
		singles, rest []uint64
	}{
		{name: "one in order", unsettled: []uint64{1, 2, 3}, acks: []uint64{1},
			prefix: 1, upTo: 1, rest: []uint64{2, 3}},
		{name: "contiguous prefix", unsettled: []uint64{4, 5, 6, 7}, acks: []uint64{4, 5, 6},
			prefix: 3, upTo: 6, rest: []uint64{7}},
		{name: "all", unsettled: []uint64{4, 5}, acks: []uint64{4, 5},
			prefix: 2, upTo: 5},
		{name: "never past an unsettled tag", unsettled: []uint64{1, 2, 3, 4, 5}, acks: []uint64{1, 2, 4, 5},
			prefix: 2, upTo: 2, singles: []uint64{4, 5}, rest: []uint64{3}},
		{name: "head unsettled: each alone", unsettled: []uint64{1, 2, 3}, acks: []uint64{2, 3},
			singles: []uint64{2, 3}, rest: []uint64{1}},
		{name: "gap left by a nack", unsettled: []uint64{1, 3, 4}, acks: []uint64{1, 3},
			prefix: 2, upTo: 3, rest: []uint64{4}},
		{name: "unknown tags alone", unsettled: []uint64{5, 6}, acks: []uint64{2, 5, 9},
			singles: []uint64{2, 5, 9}, rest: []uint64{6}},
		{name: "unknown tag after the prefix", unsettled: []uint64{5, 6}, acks: []uint64{5, 9},
			prefix: 1, upTo: 5, singles: []uint64{9}, rest: []uint64{6}},
		{name: "nothing unsettled", acks: []uint64{7}, singles: []uint64{7}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rest, p := planAcks(slices.Clone(tc.unsettled), tc.acks, nil)
			if p.prefix != tc.prefix || p.upTo != tc.upTo {
				t.Errorf("prefix %d up to %d, want %d up to %d", p.prefix, p.upTo, tc.prefix, tc.upTo)
			}
			if !slices.Equal(p.singles, tc.singles) {
				t.Errorf("singles %v, want %v", p.singles, tc.singles)
			}
			if !slices.Equal(rest, tc.rest) {
				t.Errorf("unsettled after %v, want %v", rest, tc.rest)
			}
		})
	}
}

// TestPlanAcksCoversExactlyTheAcked checks, over every subset of a window,
// that the multiple ack covers only acked tags and that every ack is sent
// exactly once.
func TestPlanAcksCoversExactlyTheAcked(t *testing.T) {
	window := []uint64{3, 4, 5, 7, 8, 9}
	for mask := 0; mask < 1<<len(window); mask++ {
		var acks []uint64
		for i, tag := range window {
			if mask&(1<<i) != 0 {
				acks = append(acks, tag)
			}
		}
		rest, p := planAcks(slices.Clone(window), acks, nil)
		sent := slices.Clone(p.singles)
		for _, tag := range window {
			if tag <= p.upTo && p.prefix > 0 {
				sent = append(sent, tag)
			}
		}
		slices.Sort(sent)
		if !slices.Equal(sent, acks) {
			t.Fatalf("acks %v: sent %v (prefix %d up to %d, singles %v)", acks, sent, p.prefix, p.upTo, p.singles)
		}
		if len(rest)+len(acks) != len(window) {
			t.Fatalf("acks %v: %v left unsettled", acks, rest)
		}
	}
}

func TestRemoveTag(t *testing.T) {
	if got := removeTag([]uint64{1, 2, 3}, 2); !slices.Equal(got, []uint64{1, 3}) {
		t.Errorf("got %v", got)
	}
	if got := removeTag([]uint64{1, 3}, 2); !slices.Equal(got, []uint64{1, 3}) {
		t.Errorf("got %v", got)
	}
}
