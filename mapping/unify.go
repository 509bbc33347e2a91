package mapping

import (
	"fmt"
	"sort"
	"time"
)

// Decision is what the rules decided about a link.
type Decision string

// The decisions a link can carry.
const (
	// DecisionApplied: the link joins its two identifiers into one profile.
	DecisionApplied Decision = "applied"
	// DecisionConflict: the link would give a profile two user IDs (rule 3); an operator resolves it.
	DecisionConflict Decision = "conflict"
	// DecisionOverCap: the link would take a profile past a cap (rule 4); an operator resolves it.
	DecisionOverCap Decision = "over_cap"
	// DecisionRetracted: an operator unmerged the link; it joins nothing.
	DecisionRetracted Decision = "retracted"
	// DecisionDismissed: an operator dismissed the conflict; it joins nothing and leaves the conflict list.
	DecisionDismissed Decision = "dismissed"
	// DecisionForced: an operator's "link anyway", decided before all other links (in the link log).
	DecisionForced Decision = "forced"
	// DecisionDeleted: a privacy deletion took one of the link's identifiers before it (and, in the
	// link log, a profile was deleted).
	DecisionDeleted Decision = "deleted"
)

// DeletedReason is the reason of a link not applied because a deletion took one of its identifiers first.
const DeletedReason = "a privacy deletion took one of its identifiers before it"

// Caps bounds a profile's size (rule 4). Zero fields mean the defaults.
type Caps struct {
	AnonymousIDs int // anonymous IDs per profile; default 100
	Links        int // applied links per profile; default 1000
}

func (c Caps) WithDefaults() Caps {
	if c.AnonymousIDs <= 0 {
		c.AnonymousIDs = 100
	}
	if c.Links <= 0 {
		c.Links = 1000
	}
	return c
}

// OrderKey sorts links by event time, then source and message ID, then the
// link's position in its message. It is the tie-break of rule 6: deciding
// links in this order makes the result independent of arrival order.
func OrderKey(at time.Time, source Source, messageID string, index int) string {
	return fmt.Sprintf("%s|%s|%s|%03d", at.UTC().Format("2006-01-02T15:04:05.000000000Z"), source, messageID, index)
}

// ProfileState is what the rules need to know about a profile.
type ProfileState struct {
	UserID       string // the profile's user ID, "" if none
	AnonymousIDs int
	Links        int
}

// Decide applies rules 3 and 4 to a link between two different profiles. It
// returns DecisionApplied, or the refusal and its reason, and the state the
// merged profile has if the link is applied. An operator's forced link skips
// the caps but never rule 3.
func Decide(a, b ProfileState, caps Caps, forced bool) (Decision, string, ProfileState) {
	merged := ProfileState{UserID: a.UserID, AnonymousIDs: a.AnonymousIDs + b.AnonymousIDs, Links: a.Links + b.Links + 1}
	if merged.UserID == "" {
		merged.UserID = b.UserID
	}
	if a.UserID != "" && b.UserID != "" && a.UserID != b.UserID {
		return DecisionConflict, fmt.Sprintf("would join user IDs %q and %q", a.UserID, b.UserID), a
	}
	if forced {
		return DecisionApplied, "", merged
	}
	if merged.AnonymousIDs > caps.AnonymousIDs {
		return DecisionOverCap, fmt.Sprintf("profile would hold %d anonymous IDs, over the cap of %d", merged.AnonymousIDs, caps.AnonymousIDs), a
	}
	if merged.Links > caps.Links {
		return DecisionOverCap, fmt.Sprintf("profile would hold %d links, over the cap of %d", merged.Links, caps.Links), a
	}
	return DecisionApplied, "", merged
}

// Node is an identifier in a cluster, as Unify sees it.
type Node struct {
	Kind  Kind
	Value string
	// DeleteKey is the order key of the earliest privacy deletion naming
	// this identifier ("" if none). At that point of the order the profile
	// holding the node, as it stands then, is deleted.
	DeleteKey string
}

// Edge is a link between Nodes A and B (indexes into the node slice).
type Edge struct {
	A, B     int
	OrderKey string
	// Forced links were accepted by an operator and are decided before all others.
	Forced bool
	// Withdrawn links (retracted or dismissed by an operator) are not decided at all.
	Withdrawn bool
}

// Outcome is the result of Unify: the profile of every node (nodes with the
// same Component value form one profile), whether it was deleted, and the
// decision on every edge.
type Outcome struct {
	Component []int // for each node, the index of its profile's representative node
	// Deleted tells, for each node, whether a deletion took its profile.
	// Deleted nodes form no profile; their Component is their own index.
	Deleted   []bool
	Decisions []Decision
	Reasons   []string
}

// Unify decides every link of a cluster from scratch: forced links first, then
// the rest and the deletions in OrderKey order. A link is applied unless it
// breaks rule 3 or 4, or one of its identifiers was deleted before it
// (DecisionDeleted); a deletion takes the whole profile holding its node at
// that point of the order, and the Jimo token of the value of any user ID it
// took. The outcome depends only on the set of nodes and
// edges, never on their order in the slices, which is what makes the store's
// result independent of arrival order and duplication (rule 6), deletions
// included. Withdrawn edges keep a zero Decision.
func Unify(nodes []Node, edges []Edge, caps Caps) Outcome {
	caps = caps.WithDefaults()
	parent := make([]int, len(nodes))
	state := make([]ProfileState, len(nodes))
	deleted := make([]bool, len(nodes)) // by representative
	for i, n := range nodes {
		parent[i] = i
		switch n.Kind {
		case KindUserID:
			state[i].UserID = n.Value
		case KindAnonymousID:
			state[i].AnonymousIDs = 1
		}
	}
	find := func(i int) int {
		for parent[i] != i {
			parent[i] = parent[parent[i]]
			i = parent[i]
		}
		return i
	}

	// Events are edges (index >= 0) and deletions (node index encoded as -1-i).
	type event struct {
		edge   int // -1 for a deletion
		node   int
		key    string
		forced bool
	}
	events := make([]event, 0, len(edges)+len(nodes))
	for i, e := range edges {
		if !e.Withdrawn {
			events = append(events, event{edge: i, key: e.OrderKey, forced: e.Forced})
		}
	}
	for i, n := range nodes {
		if n.DeleteKey != "" {
			events = append(events, event{edge: -1, node: i, key: n.DeleteKey})
		}
	}
	sort.Slice(events, func(x, y int) bool {
		ex, ey := events[x], events[y]
		if ex.forced != ey.forced {
			return ex.forced
		}
		if ex.key != ey.key {
			return ex.key < ey.key
		}
		// A deletion and a link never share a key (a deletion is a message
		// of its own); two deletions with one key are equivalent.
		return ex.edge < ey.edge || (ex.edge == ey.edge && ex.node < ey.node)
	})

	out := Outcome{Component: make([]int, len(nodes)), Deleted: make([]bool, len(nodes)), Decisions: make([]Decision, len(edges)), Reasons: make([]string, len(edges))}
	for _, ev := range events {
		if ev.edge < 0 {
			deleted[find(ev.node)] = true
			continue
		}
		i, e := ev.edge, edges[ev.edge]
		ra, rb := find(e.A), find(e.B)
		if deleted[ra] || deleted[rb] {
			out.Decisions[i], out.Reasons[i] = DecisionDeleted, DeletedReason
			continue
		}
		if ra == rb {
			out.Decisions[i] = DecisionApplied
			state[ra].Links++
			continue
		}
		d, reason, merged := Decide(state[ra], state[rb], caps, e.Forced)
		out.Decisions[i], out.Reasons[i] = d, reason
		if d != DecisionApplied {
			continue
		}
		// The representative is the smaller index, so it does not depend on edge order.
		if rb < ra {
			ra, rb = rb, ra
		}
		parent[rb] = ra
		state[ra] = merged
	}
	// A Jimo token of the value of a user ID a deletion took is that
	// person's token (in shared mode the token is the user ID): taken too.
	deletedUsers := map[string]bool{}
	for i, n := range nodes {
		if n.Kind == KindUserID && deleted[find(i)] {
			deletedUsers[n.Value] = true
		}
	}
	for i, n := range nodes {
		r := find(i)
		out.Component[i], out.Deleted[i] = r, deleted[r] || (n.Kind == KindJimoToken && deletedUsers[n.Value])
		if out.Deleted[i] {
			out.Component[i] = i
		}
	}
	return out
}
