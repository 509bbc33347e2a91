package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/bridgeworks/bridge/mapping"
)

// SearchQuery finds identifiers by value.
type SearchQuery struct {
	// Kind limits the search to one kind; "" searches user IDs, anonymous IDs
	// and Jimo tokens, or emails when Value contains "@".
	Kind   mapping.Kind
	Value  string
	Prefix bool // match values starting with Value
	Limit  int  // default 50, at most 500
	// After is the cursor from the previous page's SearchResult.Next.
	After string
}

// SearchResult is one page of hits, in (kind, value) order.
type SearchResult struct {
	Hits []SearchHit `json:"hits"`
	// Next is the cursor for the following page; "" when there is none.
	Next string `json:"next"`
}

// SearchHit is an identifier and the profile holding it.
type SearchHit struct {
	mapping.Identifier
	ProfileID   int64     `json:"profileId"`
	UserID      string    `json:"userId"`
	FirstSeenAt time.Time `json:"firstSeenAt"`
}

// Search finds identifiers equal to (or starting with) q.Value. Every query
// walks the (kind, value) index; an email that is only an attribute is found
// through the traits' email index.
func (s *Store) Search(ctx context.Context, q SearchQuery) (SearchResult, error) {
	v := strings.TrimSpace(q.Value)
	if v == "" || strings.ContainsRune(v, 0) { // a value holding NUL is never an identifier
		return SearchResult{Hits: []SearchHit{}}, nil
	}
	if q.Limit <= 0 {
		q.Limit = 50
	}
	q.Limit = min(q.Limit, 500)
	kinds := []mapping.Kind{q.Kind}
	if q.Kind == "" {
		kinds = []mapping.Kind{mapping.KindAnonymousID, mapping.KindJimoToken, mapping.KindUserID}
		if strings.Contains(v, "@") {
			kinds = []mapping.Kind{mapping.KindEmail}
		}
	}
	if len(kinds) == 1 && kinds[0] == mapping.KindEmail && !s.opts.MergeOnEmail {
		return s.searchEmails(ctx, v, q)
	}
	afterKind, afterValue, _ := strings.Cut(q.After, ":")
	sort.Slice(kinds, func(i, j int) bool { return kinds[i] < kinds[j] })
	res := SearchResult{Hits: []SearchHit{}}
	// One index range per kind, in (kind, value) order, starting after the
	// cursor: a page deep in a wide prefix costs what the first one does.
	for _, kind := range kinds {
		if string(kind) < afterKind {
			continue
		}
		lo, loInclusive, hi := v, true, ""
		if q.Prefix {
			hi = v + "\U0010FFFF"
		}
		if string(kind) == afterKind && afterValue >= lo {
			lo, loInclusive = afterValue, false
		}
		cond := "i.value > ?"
		if loInclusive {
			cond = "i.value >= ?"
		}
		args := []any{kind, lo}
		if q.Prefix {
			cond += " AND i.value < ?"
			args = append(args, hi)
		} else {
			cond += " AND i.value <= ?"
			args = append(args, v)
		}
		var rows []struct {
			Kind      mapping.Kind `db:"kind"`
			Value     string       `db:"value"`
			ProfileID int64        `db:"profile_id"`
			FirstSeen int64        `db:"first_seen_at"`
			UserID    string       `db:"user_id"`
		}
		need := q.Limit + 1 - len(res.Hits)
		if err := s.read.SelectContext(ctx, &rows, `SELECT i.kind, i.value, i.profile_id, i.first_seen_at, COALESCE(p.user_id, '') AS user_id
			FROM identifiers i JOIN profiles p ON p.id = i.profile_id
			WHERE i.kind = ? AND `+cond+` ORDER BY i.value LIMIT ?`, append(args, need)...); err != nil {
			return SearchResult{}, fmt.Errorf("search: %w", err)
		}
		for _, r := range rows {
			if len(res.Hits) == q.Limit {
				res.Next = res.Hits[len(res.Hits)-1].Identifier.String()
				return res, nil
			}
			res.Hits = append(res.Hits, SearchHit{Identifier: mapping.Identifier{Kind: r.Kind, Value: r.Value}, ProfileID: r.ProfileID, UserID: r.UserID, FirstSeenAt: time.Unix(0, r.FirstSeen).UTC()})
		}
	}
	return res, nil
}

// valueCondition matches column against v exactly or as a prefix (a range, so it uses the index).
func valueCondition(column, v string, prefix bool) (string, []any) {
	if !prefix {
		return column + " = ?", []any{v}
	}
	return column + " >= ? AND " + column + " < ?", []any{v, v + "\U0010FFFF"}
}

func (s *Store) searchEmails(ctx context.Context, v string, q SearchQuery) (SearchResult, error) {
	_, after, _ := strings.Cut(q.After, ":")
	where, args := valueCondition("t.email", v, q.Prefix)
	// An email attribute's first-seen time is when its trait was set (the
	// earliest among the profile's identifiers that carry it), as the
	// profile shows it: not when the identifier carrying it was first seen.
	// One hit per email and profile, however many identifiers carry it.
	var rows []struct {
		Email     string `db:"email"`
		ProfileID int64  `db:"profile_id"`
		SetKey    string `db:"set_key"`
		UserID    string `db:"user_id"`
	}
	if err := s.read.SelectContext(ctx, &rows, `SELECT t.email, i.profile_id, MIN(COALESCE(`+s.jsonText("t.doc", "email", "k")+`, '')) AS set_key,
		COALESCE(p.user_id, '') AS user_id
		FROM traits t JOIN identifiers i ON i.id = t.identifier_id JOIN profiles p ON p.id = i.profile_id
		WHERE `+where+` AND t.email > ? GROUP BY t.email, i.profile_id, p.user_id ORDER BY t.email, i.profile_id LIMIT ?`, append(args, after, q.Limit+1)...); err != nil {
		return SearchResult{}, fmt.Errorf("search emails: %w", err)
	}
	res := SearchResult{Hits: []SearchHit{}}
	for i, r := range rows {
		if i == q.Limit {
			res.Next = res.Hits[len(res.Hits)-1].Identifier.String()
			break
		}
		res.Hits = append(res.Hits, SearchHit{Identifier: mapping.Identifier{Kind: mapping.KindEmail, Value: r.Email}, ProfileID: r.ProfileID, UserID: r.UserID, FirstSeenAt: orderKeyTime(r.SetKey)})
	}
	return res, nil
}

// ProfileByID returns profile id; CodeNotFound if it does not exist (merged away or deleted).
func (s *Store) ProfileByID(ctx context.Context, id int64) (Profile, error) {
	return s.profile(ctx, id)
}

// History is how a profile came to be: its links (with every decision
// logged), its recent messages, its deliveries and its traits.
type History struct {
	Links    []LinkInfo    `json:"links"`
	Messages []MessageInfo `json:"messages"`
	Jobs     []JobInfo     `json:"jobs"`
	Traits   []TraitInfo   `json:"traits"`
}

// LinkInfo is a link with its cause, current decision and log.
type LinkInfo struct {
	ID        int64              `json:"id"`
	A         mapping.Identifier `json:"a"`
	B         mapping.Identifier `json:"b"`
	Source    mapping.Source     `json:"source"`
	MessageID string             `json:"messageId"`
	EventAt   time.Time          `json:"eventAt"`
	Decision  mapping.Decision   `json:"decision"`
	Reason    string             `json:"reason"`
	Forced    bool               `json:"forced"`
	Withdrawn bool               `json:"withdrawn"`
	Log       []LinkLogEntry     `json:"log"`
	// AProfileID and BProfileID are the profiles holding A and B now (the
	// same one for an applied link); AUserID and BUserID are those
	// profiles' shared user IDs, "" while anonymous.
	AProfileID int64  `json:"aProfileId"`
	BProfileID int64  `json:"bProfileId"`
	AUserID    string `json:"aUserId"`
	BUserID    string `json:"bUserId"`
}

// LinkLogEntry is one entry of the append-only link log.
type LinkLogEntry struct {
	At       time.Time        `json:"at"`
	Decision mapping.Decision `json:"decision"`
	Reason   string           `json:"reason"`
	Actor    string           `json:"actor"`
}

// MessageInfo is a stored message.
type MessageInfo struct {
	Source     mapping.Source `json:"source"`
	MessageID  string         `json:"messageId"`
	Type       string         `json:"type"`
	Event      string         `json:"event"`
	EventAt    time.Time      `json:"eventAt"`
	ReceivedAt time.Time      `json:"receivedAt"`
	Rejected   string         `json:"rejected"`
	Notes      []string       `json:"notes"`
	// Raw is the payload as received; "" once it expired.
	Raw string `json:"raw"`
	// RawExpiredAt is when the payload was removed after BRIDGE_KEEP_MESSAGES;
	// nil while it is kept. The message's links and traits stay.
	RawExpiredAt *time.Time `json:"rawExpiredAt,omitempty"`
}

// TraitInfo is one merged trait with where and when it was last set.
type TraitInfo struct {
	Key    string         `json:"key"`
	Value  any            `json:"value"`
	Source mapping.Source `json:"source"`
	At     time.Time      `json:"at"`
}

const linkColumns = `l.id, l.source, l.message_id, l.event_at, l.decision, l.reason, l.forced, l.withdrawn,
	a.kind AS a_kind, a.value AS a_value, b.kind AS b_kind, b.value AS b_value,
	a.profile_id AS a_profile, b.profile_id AS b_profile, COALESCE(pa.user_id, '') AS a_user, COALESCE(pb.user_id, '') AS b_user`

// linkJoins are the joins linkColumns reads: the link's two identifiers and their profiles.
const linkJoins = `FROM links l JOIN identifiers a ON a.id = l.a_id JOIN identifiers b ON b.id = l.b_id
	LEFT JOIN profiles pa ON pa.id = a.profile_id LEFT JOIN profiles pb ON pb.id = b.profile_id`

type linkInfoRow struct {
	ID        int64            `db:"id"`
	Source    mapping.Source   `db:"source"`
	MessageID string           `db:"message_id"`
	EventAt   int64            `db:"event_at"`
	Decision  mapping.Decision `db:"decision"`
	Reason    string           `db:"reason"`
	Forced    bool             `db:"forced"`
	Withdrawn bool             `db:"withdrawn"`
	AKind     mapping.Kind     `db:"a_kind"`
	AValue    string           `db:"a_value"`
	BKind     mapping.Kind     `db:"b_kind"`
	BValue    string           `db:"b_value"`
	AProfile  int64            `db:"a_profile"`
	BProfile  int64            `db:"b_profile"`
	AUser     string           `db:"a_user"`
	BUser     string           `db:"b_user"`
}

func (r linkInfoRow) info() LinkInfo {
	return LinkInfo{ID: r.ID, A: mapping.Identifier{Kind: r.AKind, Value: r.AValue}, B: mapping.Identifier{Kind: r.BKind, Value: r.BValue},
		Source: r.Source, MessageID: r.MessageID, EventAt: time.Unix(0, r.EventAt).UTC(), Decision: r.Decision, Reason: r.Reason,
		Forced: r.Forced, Withdrawn: r.Withdrawn, Log: []LinkLogEntry{},
		AProfileID: r.AProfile, BProfileID: r.BProfile, AUserID: r.AUser, BUserID: r.BUser}
}

// History returns the profile's history, newest first: up to 200 links, 50 messages and 50 jobs.
func (s *Store) History(ctx context.Context, profileID int64) (History, error) {
	var members []identifierRow
	if err := s.read.SelectContext(ctx, &members, `SELECT id, kind, value, profile_id, first_seen_at, first_source, first_message_id, warning
		FROM identifiers WHERE profile_id = ?`, profileID); err != nil {
		return History{}, fmt.Errorf("history of profile %d: %w", profileID, err)
	}
	if len(members) == 0 {
		return History{}, mapping.Errorf(mapping.CodeNotFound, "profile %d does not exist (it may have been merged or deleted)", profileID)
	}
	ids := make([]int64, len(members))
	values := make([]string, len(members))
	for i, m := range members {
		ids[i], values[i] = m.ID, m.Value
	}
	h := History{Links: []LinkInfo{}, Messages: []MessageInfo{}, Jobs: []JobInfo{}, Traits: []TraitInfo{}}

	var links []linkInfoRow
	if err := s.selectIn(ctx, &links, `SELECT `+linkColumns+` `+linkJoins+`
		WHERE (l.a_id IN (?) OR l.b_id IN (?)) AND a.profile_id <> 0 AND b.profile_id <> 0 ORDER BY l.order_key DESC LIMIT 200`, ids, ids); err != nil {
		return History{}, fmt.Errorf("history links: %w", err)
	}
	if err := s.withLogs(ctx, links, &h.Links); err != nil {
		return History{}, err
	}

	var msgs []struct {
		Source     mapping.Source `db:"source"`
		MessageID  string         `db:"message_id"`
		Type       string         `db:"type"`
		Event      string         `db:"event"`
		EventAt    int64          `db:"event_at"`
		ReceivedAt int64          `db:"received_at"`
		Rejected   string         `db:"rejected"`
		Notes      string         `db:"notes"`
		Raw        string         `db:"raw"`
		Expired    int64          `db:"raw_expired_at"`
	}
	const messageColumns = `SELECT source, message_id, type, event, event_at, received_at, rejected, notes, raw, raw_expired_at FROM messages `
	if err := s.selectIn(ctx, &msgs, messageColumns+`WHERE `+messagesReferencing+` ORDER BY received_at DESC LIMIT 50`, ids); err != nil {
		return History{}, fmt.Errorf("history messages: %w", err)
	}
	refused := msgs[:0:0]
	if err := s.selectIn(ctx, &refused, messageColumns+`WHERE `+refusedMessagesNaming+` ORDER BY received_at DESC LIMIT 50`,
		values, values, values); err != nil {
		return History{}, fmt.Errorf("history messages: %w", err)
	}
	msgs = append(msgs, refused...)
	sort.SliceStable(msgs, func(i, j int) bool { return msgs[i].ReceivedAt > msgs[j].ReceivedAt })
	msgs = msgs[:min(len(msgs), 50)]
	for _, m := range msgs {
		var notes []string
		if m.Notes != "" {
			json.Unmarshal([]byte(m.Notes), &notes)
		}
		info := MessageInfo{Source: m.Source, MessageID: m.MessageID, Type: m.Type, Event: m.Event,
			EventAt: time.Unix(0, m.EventAt).UTC(), ReceivedAt: time.Unix(0, m.ReceivedAt).UTC(), Rejected: m.Rejected, Notes: notes, Raw: m.Raw}
		if m.Expired != 0 {
			t := time.Unix(0, m.Expired).UTC()
			info.RawExpiredAt = &t
		}
		h.Messages = append(h.Messages, info)
	}

	var jobs []jobRow
	if err := s.selectIn(ctx, &jobs, `SELECT id, destination, ordering_key, message_id, state, attempts, last_error, source_message, payload, created_at, updated_at, run_at
		FROM jobs WHERE ordering_key IN (?) AND held = 0 ORDER BY id DESC LIMIT 50`, values); err != nil {
		return History{}, fmt.Errorf("history jobs: %w", err)
	}
	for _, j := range jobs {
		h.Jobs = append(h.Jobs, j.info())
	}

	var docs []string
	if err := s.selectIn(ctx, &docs, `SELECT doc FROM traits WHERE identifier_id IN (?)`, ids); err != nil {
		return History{}, fmt.Errorf("history traits: %w", err)
	}
	merged, err := mergeTraitDocs(docs, nil)
	if err != nil {
		return History{}, err
	}
	for k, e := range merged {
		h.Traits = append(h.Traits, TraitInfo{Key: k, Value: e.Value, Source: e.Source, At: orderKeyTime(e.OrderKey)})
	}
	sort.Slice(h.Traits, func(i, j int) bool { return h.Traits[i].Key < h.Traits[j].Key })
	return h, nil
}

// orderKeyTime reads the event time at the start of an order key.
func orderKeyTime(key string) time.Time {
	ts, _, _ := strings.Cut(key, "|")
	t, _ := time.Parse("2006-01-02T15:04:05.000000000Z", ts)
	return t
}

// withLogs attaches every link's log entries and appends the links to out.
func (s *Store) withLogs(ctx context.Context, rows []linkInfoRow, out *[]LinkInfo) error {
	if len(rows) == 0 {
		return nil
	}
	ids := make([]int64, len(rows))
	index := map[int64]int{}
	for i, r := range rows {
		ids[i] = r.ID
		index[r.ID] = len(*out) + i
	}
	for _, r := range rows {
		*out = append(*out, r.info())
	}
	var logs []struct {
		LinkID   int64            `db:"link_id"`
		At       int64            `db:"at"`
		Decision mapping.Decision `db:"decision"`
		Reason   string           `db:"reason"`
		Actor    string           `db:"actor"`
	}
	if err := s.selectIn(ctx, &logs, `SELECT link_id, at, decision, reason, actor FROM link_log WHERE link_id IN (?) ORDER BY id`, ids); err != nil {
		return fmt.Errorf("link log: %w", err)
	}
	for _, l := range logs {
		link := &(*out)[index[l.LinkID]]
		link.Log = append(link.Log, LinkLogEntry{At: time.Unix(0, l.At).UTC(), Decision: l.Decision, Reason: l.Reason, Actor: l.Actor})
	}
	return nil
}

func (s *Store) selectIn(ctx context.Context, dest any, query string, args ...any) error {
	q, a, err := sqlx.In(query, args...)
	if err != nil {
		return err
	}
	return s.read.SelectContext(ctx, dest, s.read.Rebind(q), a...)
}

// Conflicts lists links that the rules refused (conflict or over the cap)
// and no operator has resolved, oldest first, after the link ID afterID.
func (s *Store) Conflicts(ctx context.Context, limit int, afterID int64) ([]LinkInfo, error) {
	if limit <= 0 {
		limit = 50
	}
	var rows []linkInfoRow
	if err := s.read.SelectContext(ctx, &rows, `SELECT `+linkColumns+` `+linkJoins+`
		WHERE l.decision IN ('conflict', 'over_cap') AND l.withdrawn = 0 AND l.id > ? AND a.profile_id <> 0 AND b.profile_id <> 0
		ORDER BY l.id LIMIT ?`, afterID, limit); err != nil {
		return nil, fmt.Errorf("conflicts: %w", err)
	}
	out := []LinkInfo{}
	return out, s.withLogs(ctx, rows, &out)
}

// Overview is the state of the bridge at a glance.
type Overview struct {
	Profiles, Identifiers, Messages int
	Conflicts, DeadJobs, Warnings   int
	// MessagesLastHour counts messages received in the last hour (deleted ones included).
	MessagesLastHour int
	// DeliveredLastHour counts jobs delivered in the last hour.
	DeliveredLastHour int
	Backlogs          []Backlog
}

// Overview counts what the admin page's first screen shows.
func (s *Store) Overview(ctx context.Context) (Overview, error) {
	var o Overview
	hourAgo := s.opts.Now().Add(-time.Hour).UnixNano()
	for _, c := range []struct {
		dest  *int
		query string
		args  []any
	}{
		{&o.Profiles, `SELECT COUNT(*) FROM profiles`, nil},
		{&o.Identifiers, `SELECT COUNT(*) FROM identifiers WHERE profile_id <> 0`, nil},
		{&o.Messages, `SELECT COUNT(*) FROM messages`, nil},
		{&o.Conflicts, `SELECT COUNT(*) FROM links l JOIN identifiers a ON a.id = l.a_id JOIN identifiers b ON b.id = l.b_id
			WHERE l.decision IN ('conflict', 'over_cap') AND l.withdrawn = 0 AND a.profile_id <> 0 AND b.profile_id <> 0`, nil},
		{&o.DeadJobs, `SELECT COUNT(*) FROM jobs WHERE state = 'dead' AND held = 0`, nil},
		{&o.Warnings, `SELECT COUNT(*) FROM identifiers WHERE warning <> ''`, nil},
		{&o.DeliveredLastHour, `SELECT COUNT(*) FROM jobs WHERE state = 'done' AND held = 0 AND updated_at >= ?`, []any{hourAgo}},
	} {
		if err := s.read.GetContext(ctx, c.dest, c.query, c.args...); err != nil {
			return o, fmt.Errorf("overview: %w", err)
		}
	}
	n, err := s.messagesSince(ctx, hourAgo)
	if err != nil {
		return o, err
	}
	o.MessagesLastHour = n
	if o.Backlogs, err = s.Backlogs(ctx); err != nil {
		return o, err
	}
	return o, nil
}

// messagesSince counts messages received at or after since.
func (s *Store) messagesSince(ctx context.Context, since int64) (int, error) {
	first, err := s.firstMessageSince(ctx, since)
	if err != nil {
		return 0, fmt.Errorf("count recent messages: %w", err)
	}
	var n int
	err = s.read.GetContext(ctx, &n, `SELECT COUNT(*) FROM messages WHERE id >= ?`, first)
	return n, err
}

// firstMessageSince returns the ID of the first message received at or
// after since (one past the last message if there is none; 0 if there are
// no messages). Message IDs grow with arrival, so a binary search over IDs
// finds it in a few index lookups, without an index on received_at.
func (s *Store) firstMessageSince(ctx context.Context, since int64) (int64, error) {
	var bounds struct {
		Lo sql.NullInt64 `db:"lo"`
		Hi sql.NullInt64 `db:"hi"`
	}
	if err := s.read.GetContext(ctx, &bounds, `SELECT MIN(id) AS lo, MAX(id) AS hi FROM messages`); err != nil {
		return 0, err
	}
	if !bounds.Hi.Valid {
		return 0, nil
	}
	lo, hi := bounds.Lo.Int64, bounds.Hi.Int64+1 // find the first id in [lo, hi) received at or after since
	for lo < hi {
		mid := lo + (hi-lo)/2
		var at int64
		err := s.read.GetContext(ctx, &at, `SELECT received_at FROM messages WHERE id >= ? ORDER BY id LIMIT 1`, mid)
		if errors.Is(err, sql.ErrNoRows) {
			hi = mid
			continue
		}
		if err != nil {
			return 0, err
		}
		if at >= since {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo, nil
}

// ProfilesByKey returns the profile holding each outbox ordering key (a job's
// user ID, Jimo token or anonymous ID: see JobInfo.OrderingKey), for pages
// that link a job to its person. A value that is a user ID is looked up as
// one first, then as a Jimo token, then as an anonymous ID; keys no profile
// holds (deleted, or never stored) are absent from the map.
func (s *Store) ProfilesByKey(ctx context.Context, keys []string) (map[string]int64, error) {
	out := make(map[string]int64, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	var rows []struct {
		Kind      mapping.Kind `db:"kind"`
		Value     string       `db:"value"`
		ProfileID int64        `db:"profile_id"`
	}
	if err := s.selectIn(ctx, &rows, `SELECT kind, value, profile_id FROM identifiers
		WHERE kind IN (?) AND value IN (?) AND profile_id <> 0`,
		[]mapping.Kind{mapping.KindUserID, mapping.KindJimoToken, mapping.KindAnonymousID}, keys); err != nil {
		return nil, fmt.Errorf("profiles of ordering keys: %w", err)
	}
	rank := map[mapping.Kind]int{mapping.KindUserID: 0, mapping.KindJimoToken: 1, mapping.KindAnonymousID: 2}
	best := make(map[string]mapping.Kind, len(rows))
	for _, r := range rows {
		if k, ok := best[r.Value]; ok && rank[k] <= rank[r.Kind] {
			continue
		}
		best[r.Value] = r.Kind
		out[r.Value] = r.ProfileID
	}
	return out, nil
}
