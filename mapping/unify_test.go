package mapping

import (
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

// key is an order key at minute min of t0, for message id.
func key(min int, id string) string {
	return OrderKey(t0.Add(time.Duration(min)*time.Minute), SourceSegmentAPI, id, 1)
}

func TestUnify(t *testing.T) {
	user := func(v string) Node { return Node{Kind: KindUserID, Value: v} }
	anon := func(v string) Node { return Node{Kind: KindAnonymousID, Value: v} }
	deleted := func(n Node, k string) Node { n.DeleteKey = k; return n }
	tests := []struct {
		name  string
		nodes []Node
		edges []Edge
		caps  Caps
		// same lists, per node, the index of a node in the same profile
		// (itself when alone); gone lists the nodes a deletion took.
		same      []int
		gone      []int
		decisions []Decision
	}{
		{
			name:      "a link joins two identifiers",
			nodes:     []Node{user("u1"), anon("a1")},
			edges:     []Edge{{A: 0, B: 1, OrderKey: key(1, "m1")}},
			same:      []int{0, 0},
			decisions: []Decision{DecisionApplied},
		},
		{
			name:      "rule 3: the earlier link wins, the later one is a conflict",
			nodes:     []Node{anon("a1"), user("u1"), user("u2")},
			edges:     []Edge{{A: 0, B: 2, OrderKey: key(2, "m2")}, {A: 0, B: 1, OrderKey: key(1, "m1")}},
			same:      []int{0, 0, 2},
			decisions: []Decision{DecisionConflict, DecisionApplied},
		},
		{
			name:      "rule 4: a link past the anonymous-ID cap is over the cap",
			nodes:     []Node{user("u1"), anon("a1"), anon("a2")},
			edges:     []Edge{{A: 0, B: 1, OrderKey: key(1, "m1")}, {A: 0, B: 2, OrderKey: key(2, "m2")}},
			caps:      Caps{AnonymousIDs: 1},
			same:      []int{0, 0, 2},
			decisions: []Decision{DecisionApplied, DecisionOverCap},
		},
		{
			name:      "a forced link is decided before the others and skips the caps",
			nodes:     []Node{user("u1"), anon("a1"), anon("a2")},
			edges:     []Edge{{A: 0, B: 1, OrderKey: key(1, "m1")}, {A: 0, B: 2, OrderKey: key(2, "m2"), Forced: true}},
			caps:      Caps{AnonymousIDs: 1},
			same:      []int{0, 1, 0},
			decisions: []Decision{DecisionOverCap, DecisionApplied},
		},
		{
			name:      "a withdrawn link joins nothing and keeps a zero decision",
			nodes:     []Node{user("u1"), anon("a1")},
			edges:     []Edge{{A: 0, B: 1, OrderKey: key(1, "m1"), Withdrawn: true}},
			same:      []int{0, 1},
			decisions: []Decision{""},
		},
		{
			name: "a deletion takes the profile as it stood at its time, not later links",
			// a1–u1 at 1, deletion of a1 at 2, u1–a2 at 3.
			nodes:     []Node{deleted(anon("a1"), key(2, "d")), user("u1"), anon("a2")},
			edges:     []Edge{{A: 0, B: 1, OrderKey: key(1, "m1")}, {A: 1, B: 2, OrderKey: key(3, "m3")}},
			same:      []int{0, 1, 2},
			gone:      []int{0, 1},
			decisions: []Decision{DecisionApplied, DecisionDeleted},
		},
		{
			name: "the issue's case: the conflicting later user survives the deletion",
			// identify(A1→C) at 1, identify(A1→A) at 2, delete(A1) at 3.
			nodes:     []Node{deleted(anon("A1"), key(3, "d")), user("C"), user("A")},
			edges:     []Edge{{A: 0, B: 1, OrderKey: key(1, "m1")}, {A: 0, B: 2, OrderKey: key(2, "m2")}},
			same:      []int{0, 1, 2},
			gone:      []int{0, 1},
			decisions: []Decision{DecisionApplied, DecisionConflict},
		},
		{
			name:      "a link after the deletion of one side is not applied; the other side stays",
			nodes:     []Node{deleted(user("u1"), key(1, "d")), anon("a1")},
			edges:     []Edge{{A: 0, B: 1, OrderKey: key(2, "m2")}},
			same:      []int{0, 1},
			gone:      []int{0},
			decisions: []Decision{DecisionDeleted},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check := func(t *testing.T, nodes []Node, edges []Edge, perm []int) {
				out := Unify(nodes, edges, tt.caps)
				for i := range nodes {
					if got, want := out.Deleted[i], slices.Contains(tt.gone, i); got != want {
						t.Errorf("node %d deleted: got %v, want %v", i, got, want)
					}
					if out.Deleted[i] {
						continue
					}
					if got, want := out.Component[i] == out.Component[tt.same[i]], true; got != want {
						t.Errorf("node %d in the profile of node %d: got %v, want %v", i, tt.same[i], got, want)
					}
					for j := range nodes {
						if !out.Deleted[j] && tt.same[j] != tt.same[i] && out.Component[i] == out.Component[j] {
							t.Errorf("nodes %d and %d: got one profile, want two", i, j)
						}
					}
				}
				for k, e := range perm {
					if got, want := out.Decisions[k], tt.decisions[e]; got != want {
						t.Errorf("edge %d: got %q, want %q (%s)", e, got, want, out.Reasons[k])
					}
				}
			}
			perm := make([]int, len(tt.edges))
			for i := range perm {
				perm[i] = i
			}
			check(t, tt.nodes, tt.edges, perm)
			// The order of the edges in the slice changes nothing.
			reversed := slices.Clone(tt.edges)
			slices.Reverse(reversed)
			slices.Reverse(perm)
			check(t, tt.nodes, reversed, perm)
		})
	}
}
