package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/mapping/httperror"
	"github.com/bridgeworks/bridge/mapping/outbox"
	"github.com/bridgeworks/bridge/mapping/store"
)

// Page sizes.
const (
	searchPageSize   = 50
	conflictPageSize = 50
	jobListSize      = 200
	warningListSize  = 500
	maxReasonLength  = 500
)

type errorView struct {
	frame
	Status  int
	Heading string
	Message string
}

// attention is one line of the overview's "needs attention" list.
type attention struct {
	Label string
	Count string
	Href  string
	Help  string
	Hot   bool
}

// backlogRow is one outbox destination on the overview: every configured
// destination, and every one with jobs, even when nothing waits.
type backlogRow struct {
	store.Backlog
	Age string
	// Configured: forwarding to it is on; false for a destination whose
	// jobs remain from an earlier configuration.
	Configured bool
	// Status is the outbox's view (paused or not); nil when unknown.
	Status *outbox.DestinationStatus
}

// settingRow is one line of the overview's configuration table.
type settingRow struct {
	Name, Value, Detail string
	// On marks a setting that is on (green) or off (grey); Warn one to look at.
	On, Warn bool
}

type overviewView struct {
	frame
	// UnsignedSessions shows the standing warning about unsigned session reports.
	UnsignedSessions bool
	O                store.Overview
	Attention        []attention
	Backlogs         []backlogRow
	// Settings is the active configuration; nil when the admin was not given it.
	Settings []settingRow
}

// settings lists the active configuration for the overview: plain values, never secrets.
func (a *Admin) settings() []settingRow {
	if a.fwd == nil {
		return nil
	}
	f := a.fwd
	dest := func(label string, d Destination) settingRow {
		r := settingRow{Name: label, On: d.On, Value: "off", Detail: d.Off}
		if d.On {
			r.Value, r.Detail = "on", "endpoint "+d.Host
		}
		return r
	}
	rows := []settingRow{dest("Forwarding to Segment", f.Segment)}
	relay := settingRow{Name: "Relay Tracking API calls to Segment", Value: "off", Detail: "only the bridge's own identify and track calls are sent"}
	if f.Relay {
		relay.On, relay.Value, relay.Detail = true, "on", "every call received on /v1/* is passed on as received"
	}
	rows = append(rows, relay, dest("Forwarding to Jimo", f.Jimo))
	track := settingRow{Name: "Segment track calls to Jimo", Value: "off", Detail: "Jimo gets identify calls only"}
	if f.JimoTrack {
		track.On, track.Value, track.Detail = true, "on", "BRIDGE_JIMO_FORWARD_TRACK"
	}
	rows = append(rows, track)
	mode := settingRow{Name: "Jimo token mode", Value: f.TokenMode, On: true}
	switch f.TokenMode {
	case "derived":
		mode.Detail = "Jimo's token is an opaque HMAC of the user ID"
	case "shared":
		mode.Detail = "Jimo's token is the user ID itself"
	}
	sig := settingRow{Name: "Session signatures", Value: "required", On: true, Detail: "POST /jimo/session needs the backend's HMAC of the user ID"}
	if a.unsigned {
		sig = settingRow{Name: "Session signatures", Value: "not required", Warn: true, Detail: "anyone who knows a user ID can join a browser to it (see above)"}
	}
	return append(rows, mode, sig)
}

// backlogRows lists every outbox destination: the configured ones, those
// with jobs waiting or dead, and those the outbox reports, in name order.
func (a *Admin) backlogRows(backlogs []store.Backlog) []backlogRow {
	now := a.now()
	byName := map[string]*backlogRow{}
	add := func(name string) *backlogRow {
		r := byName[name]
		if r == nil {
			r = &backlogRow{Backlog: store.Backlog{Destination: name}}
			byName[name] = r
		}
		return r
	}
	if a.fwd != nil {
		for _, d := range []Destination{a.fwd.Segment, a.fwd.Jimo} {
			if d.On && d.Name != "" {
				add(d.Name).Configured = true
			}
		}
	}
	for _, b := range backlogs {
		r := add(b.Destination)
		r.Backlog = b
		if !b.Oldest.IsZero() {
			r.Age = humanDuration(now.Sub(b.Oldest))
		}
	}
	if a.dests != nil {
		for _, st := range a.dests() {
			r := add(st.Destination)
			r.Configured = true // the outbox has a sender for it
			r.Status = &st
		}
	}
	out := make([]backlogRow, 0, len(byName))
	for _, name := range sortedKeys(byName) {
		out = append(out, *byName[name])
	}
	return out
}

// counter is one process counter as the pages show it.
type counter struct {
	name, help string
	value      float64
}

// list is the counters in the order the pages show them, each with its
// name (its anchor on the warnings page) and what it means.
func (c Counters) list() []counter {
	return []counter{
		{"signature_failures", "Requests refused because their write key, signature or webhook secret was missing or did not verify.", c.SignatureFailures},
		{"blocked_values", "Identifier values refused by the blocklist (placeholders such as \"null\" or \"anonymous\").", c.BlockedValues},
	}
}

func (a *Admin) overview(c echo.Context, s *session) error {
	o, err := a.store.Overview(c.Request().Context())
	if err != nil {
		return err
	}
	v := overviewView{frame: a.frame(c, s, "Overview", "overview"), O: o, UnsignedSessions: a.unsigned,
		Settings: a.settings(), Backlogs: a.backlogRows(o.Backlogs)}
	v.Attention = []attention{
		{Label: "Open conflicts", Count: strconv.Itoa(o.Conflicts), Href: a.base + "/conflicts", Hot: o.Conflicts > 0,
			Help: "Links the rules refused (two user IDs, or over a cap); link anyway or dismiss."},
		{Label: "Dead deliveries", Count: strconv.Itoa(o.DeadJobs), Href: a.base + "/jobs", Hot: o.DeadJobs > 0,
			Help: "Outbox jobs that failed permanently or too often; retry them once the cause is fixed."},
		{Label: "Guessable user IDs", Count: strconv.Itoa(o.Warnings), Href: a.base + "/warnings", Hot: o.Warnings > 0,
			Help: "User IDs the bridge refused to hand to Jimo as tokens; consider derived token mode."},
	}
	if a.counters != nil {
		for _, n := range a.counters().list() {
			v.Attention = append(v.Attention, attention{
				Label: counterLabel(n.name), Count: strconv.FormatFloat(n.value, 'f', -1, 64),
				Href: a.base + "/warnings#counter-" + n.name, Help: n.help, Hot: n.value > 0,
			})
		}
	}
	return a.render(c, http.StatusOK, "overview", v)
}

// counterLabel turns "signature_failures" into "Signature failures".
func counterLabel(name string) string {
	s := strings.ReplaceAll(name, "_", " ")
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

type searchView struct {
	frame
	Q         string
	Kind      string
	Kinds     []mapping.Kind
	Prefix    bool
	Searched  bool
	Error     string
	Hits      []store.SearchHit
	NextHref  string
	FirstHref string
	After     string
}

// parseSearch reads the search box: KIND:VALUE searches one kind, a bare
// value every kind (or the kind chosen in the form).
func parseSearch(q, kind string) (mapping.Kind, string, error) {
	q = strings.TrimSpace(q)
	k := mapping.Kind(kind)
	if prefix, rest, ok := strings.Cut(q, ":"); ok && mapping.Kind(prefix).Valid() {
		k, q = mapping.Kind(prefix), rest
	}
	if k != "" && !k.Valid() {
		return "", "", mapping.Errorf(mapping.CodeInvalid, "kind %q: want one of user_id, anonymous_id, jimo_token, email", kind)
	}
	v, reason := mapping.Normalize(q)
	if reason != "" {
		return "", "", mapping.Errorf(mapping.CodeInvalid, "search for a value: %s", strings.ReplaceAll(reason, "_", " "))
	}
	return k, v, nil
}

func (a *Admin) search(c echo.Context, s *session) error {
	v := searchView{frame: a.frame(c, s, "Search", "search"), Q: c.QueryParam("q"), Kind: c.QueryParam("kind"), Kinds: mapping.Kinds,
		Prefix: c.QueryParam("prefix") != "", After: c.QueryParam("after")}
	if strings.TrimSpace(v.Q) == "" {
		return a.render(c, http.StatusOK, "search", v)
	}
	v.Searched = true
	kind, value, err := parseSearch(v.Q, v.Kind)
	if err != nil {
		v.Error = messageOf(err)
		return a.render(c, httperror.Status(mapping.ErrorCode(err)), "search", v)
	}
	res, err := a.store.Search(c.Request().Context(), store.SearchQuery{Kind: kind, Value: value, Prefix: v.Prefix, Limit: searchPageSize, After: v.After})
	if err != nil {
		return err
	}
	v.Hits = res.Hits
	q := url.Values{"q": {v.Q}}
	if v.Kind != "" {
		q.Set("kind", v.Kind)
	}
	if v.Prefix {
		q.Set("prefix", "1")
	}
	if v.After != "" {
		v.FirstHref = a.base + "/search?" + q.Encode()
	}
	if res.Next != "" {
		q.Set("after", res.Next)
		v.NextHref = a.base + "/search?" + q.Encode()
	}
	return a.render(c, http.StatusOK, "search", v)
}

// profileByIdentifier finds the profile holding ?identifier=KIND:VALUE and redirects to its page.
func (a *Admin) profileByIdentifier(c echo.Context, s *session) error {
	id, err := mapping.ParseIdentifier(c.QueryParam("identifier"))
	if err != nil {
		return err
	}
	p, err := a.store.ProfileOf(c.Request().Context(), id)
	if err != nil {
		return err
	}
	return c.Redirect(http.StatusSeeOther, fmt.Sprintf("%s/profiles/%d", a.base, p.ID))
}

// identifierView is an identifier of the profile with how it joined.
type identifierView struct {
	store.ProfileIdentifier
	// Joined describes the earliest applied link that brought it in; "" when it started the profile.
	Joined string
	LinkID int64
	// Attribute is true for an email known only as a trait (not a linking identifier).
	Attribute bool
}

type linkView struct {
	store.LinkInfo
	Open       bool // an open conflict: link anyway or dismiss
	CanUnmerge bool
}

type messageView struct {
	store.MessageInfo
	// Shown is the raw payload as the page shows it (redacted, capped).
	Shown shown
	// Anchor is the id of the message's entry (see messageAnchor).
	Anchor string
	// Experience is the tour or survey a Jimo webhook reports; nil for other messages.
	Experience *experience
}

type profileView struct {
	frame
	P           store.Profile
	JimoTokens  []string
	Identifiers []identifierView
	Traits      []store.TraitInfo
	Links       []linkView
	Messages    []messageView
	Deliveries  []destinationView
	Jimo        jimoView
	// DeleteKey is the identifier the delete form starts from.
	DeleteKey string
}

func (a *Admin) profile(c echo.Context, s *session) error {
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil || id <= 0 {
		return mapping.Errorf(mapping.CodeNotFound, "profile %q does not exist: a profile ID is a positive number", c.Param("id"))
	}
	ctx := c.Request().Context()
	p, err := a.store.ProfileByID(ctx, id)
	if err != nil {
		return err
	}
	h, err := a.store.History(ctx, id)
	if err != nil {
		return err
	}
	title := fmt.Sprintf("Profile %d", p.ID)
	if p.UserID != "" {
		title = "Profile " + p.UserID
	}
	v := profileView{frame: a.frame(c, s, title, "search"), P: p, Traits: h.Traits}
	for _, l := range h.Links {
		open := !l.Withdrawn && (l.Decision == mapping.DecisionConflict || l.Decision == mapping.DecisionOverCap)
		v.Links = append(v.Links, linkView{LinkInfo: l, Open: open, CanUnmerge: !l.Withdrawn && l.Decision == mapping.DecisionApplied})
	}
	for _, pi := range p.Identifiers {
		iv := identifierView{ProfileIdentifier: pi, Attribute: attribute(pi)}
		if pi.Kind == mapping.KindJimoToken {
			v.JimoTokens = append(v.JimoTokens, pi.Value)
		}
		var first *store.LinkInfo
		for i, l := range h.Links {
			if l.Withdrawn || l.Decision != mapping.DecisionApplied || (l.A != pi.Identifier && l.B != pi.Identifier) {
				continue
			}
			if first == nil || l.EventAt.Before(first.EventAt) {
				first = &h.Links[i]
			}
		}
		if first != nil {
			other := first.A
			if other == pi.Identifier {
				other = first.B
			}
			iv.Joined = fmt.Sprintf("linked to %s by %s message %s", other, first.Source, first.MessageID)
			iv.LinkID = first.ID
		}
		if v.DeleteKey == "" && !iv.Attribute {
			v.DeleteKey = pi.Identifier.String()
		}
		v.Identifiers = append(v.Identifiers, iv)
	}
	shownMessages := map[string]bool{}
	for _, m := range h.Messages {
		mv := messageView{MessageInfo: m, Shown: showRaw(m.Raw), Anchor: messageAnchor(m.Source, m.MessageID)}
		if x, ok := experienceOf(m); ok {
			mv.Experience = &x
		}
		shownMessages[mv.Anchor] = true
		v.Messages = append(v.Messages, mv)
	}
	v.Jimo = a.jimoSummary(p, h.Jobs, v.Messages)
	byDest := map[string]*destinationView{}
	for _, j := range h.Jobs {
		d := byDest[j.Destination]
		if d == nil {
			d = &destinationView{Destination: j.Destination}
			byDest[j.Destination] = d
		}
		d.Jobs = append(d.Jobs, newDelivery(j, shownMessages))
		switch j.State {
		case store.JobDead:
			d.Dead++
		case store.JobPending, store.JobRunning:
			d.Pending++
		}
	}
	for _, name := range sortedKeys(byDest) {
		v.Deliveries = append(v.Deliveries, *byDest[name])
	}
	return a.render(c, http.StatusOK, "profile", v)
}

type conflictsView struct {
	frame
	Links    []linkView
	NextHref string
	First    bool
}

func (a *Admin) conflicts(c echo.Context, s *session) error {
	var after int64
	if p := c.QueryParam("after"); p != "" {
		var err error
		if after, err = strconv.ParseInt(p, 10, 64); err != nil {
			return mapping.Errorf(mapping.CodeInvalid, "after=%q: want a link ID", p)
		}
	}
	links, err := a.store.Conflicts(c.Request().Context(), conflictPageSize, after)
	if err != nil {
		return err
	}
	v := conflictsView{frame: a.frame(c, s, "Conflicts", "conflicts"), First: after == 0}
	for _, l := range links {
		v.Links = append(v.Links, linkView{LinkInfo: l, Open: true})
	}
	if len(links) == conflictPageSize {
		v.NextHref = fmt.Sprintf("%s/conflicts?after=%d", a.base, links[len(links)-1].ID)
	}
	return a.render(c, http.StatusOK, "conflicts", v)
}

// reason reads the form's reason: required for every repair, at most maxReasonLength characters.
func reason(raw string) (string, error) {
	r := strings.TrimSpace(raw)
	if r == "" {
		return "", mapping.Errorf(mapping.CodeInvalid, "give a reason: it is recorded in the link log with the operator")
	}
	if len([]rune(r)) > maxReasonLength {
		return "", mapping.Errorf(mapping.CodeInvalid, "the reason is longer than %d characters; shorten it", maxReasonLength)
	}
	return r, nil
}

// linkID reads the :id parameter.
func linkID(c echo.Context) (int64, error) {
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil || id <= 0 {
		return 0, mapping.Errorf(mapping.CodeNotFound, "link %q does not exist: a link ID is a positive number", c.Param("id"))
	}
	return id, nil
}

// repairFailed turns a refused repair into a flash on the page the form came
// from; errors that are not the operator's to fix fail the request.
func (a *Admin) repairFailed(c echo.Context, s *session, err error, fallback string) error {
	var me *mapping.Error
	if errors.As(err, &me) {
		switch me.Code {
		case mapping.CodeInvalid, mapping.CodeConflict, mapping.CodeNotFound, mapping.CodeUnprocessable:
			return a.redirect(c, s, a.back(c, fallback), flash{Error: true, Text: me.Message})
		}
	}
	return err
}

func (a *Admin) resolve(c echo.Context, s *session) error {
	action := c.FormValue("action")
	return a.repairLink(c, s, a.base+"/conflicts", func(ctx context.Context, id int64, why string) (string, error) {
		if err := a.store.ResolveConflict(ctx, id, action, OperatorPage, why); err != nil {
			return "", err
		}
		if action == store.ResolveLink {
			return fmt.Sprintf("Link %d linked anyway: the rules re-decided its cluster.", id), nil
		}
		return fmt.Sprintf("Link %d dismissed: the identifiers stay apart.", id), nil
	})
}

func (a *Admin) unmerge(c echo.Context, s *session) error {
	return a.repairLink(c, s, a.base+"/", func(ctx context.Context, id int64, why string) (string, error) {
		if err := a.store.Unmerge(ctx, id, OperatorPage, why); err != nil {
			return "", err
		}
		return fmt.Sprintf("Link %d unmerged: the rules re-decided its cluster.", id), nil
	})
}

// repairLink runs repair on the link named by :id with the form's reason,
// then goes back (see landing) with repair's text and the profiles the
// link's two identifiers are in now. A refused repair goes back to the
// page the form came from, or fallback, with the reason it was refused.
func (a *Admin) repairLink(c echo.Context, s *session, fallback string, repair func(ctx context.Context, id int64, why string) (string, error)) error {
	id, err := linkID(c)
	if err != nil {
		return err
	}
	why, err := reason(c.FormValue("reason"))
	if err != nil {
		return a.repairFailed(c, s, err, fallback)
	}
	text, err := repair(c.Request().Context(), id, why)
	if err != nil {
		return a.repairFailed(c, s, err, fallback)
	}
	f := flash{Text: text, Links: a.sideLinks(c.Request().Context(), c.FormValue("a"), c.FormValue("b"))}
	return a.redirect(c, s, a.landing(c, fallback, f.Links), f)
}

// sideLinks names the profiles the two identifiers of a repaired link are in now.
func (a *Admin) sideLinks(ctx context.Context, ids ...string) []flashLink {
	var out []flashLink
	for _, raw := range ids {
		id, err := mapping.ParseIdentifier(raw)
		if err != nil {
			continue
		}
		p, err := a.store.ProfileOf(ctx, id)
		if err != nil {
			continue
		}
		out = append(out, flashLink{Label: fmt.Sprintf("%s is in profile %d", id, p.ID), Href: fmt.Sprintf("%s/profiles/%d", a.base, p.ID)})
	}
	return out
}

// landing is where a repair's form goes back to: the page it came from,
// unless that was a profile the repair took apart, then a profile of the link.
func (a *Admin) landing(c echo.Context, fallback string, sides []flashLink) string {
	to := a.back(c, fallback)
	idText, ok := strings.CutPrefix(to, a.base+"/profiles/")
	if !ok {
		return to
	}
	id, err := strconv.ParseInt(idText, 10, 64)
	if err != nil {
		return to
	}
	if _, err := a.store.ProfileByID(c.Request().Context(), id); mapping.ErrorCode(err) == mapping.CodeNotFound && len(sides) > 0 {
		return sides[0].Href
	}
	return to
}

type deleteView struct {
	frame
	// Identifier is what the operator asked to delete by; "" shows the form to enter one.
	Identifier string
	P          *store.Profile
	Key        string
}

func (a *Admin) deleteForm(c echo.Context, s *session) error {
	v := deleteView{frame: a.frame(c, s, "Delete a profile", "delete")}
	raw := strings.TrimSpace(c.QueryParam("identifier"))
	if raw == "" {
		return a.render(c, http.StatusOK, "delete", v)
	}
	id, err := mapping.ParseIdentifier(raw)
	if err != nil {
		return err
	}
	p, err := a.store.ProfileOf(c.Request().Context(), id)
	if err != nil {
		return err
	}
	v.Identifier, v.P, v.Key = id.String(), &p, deletionKey(p, id)
	return a.render(c, http.StatusOK, "delete", v)
}

// attribute reports whether pi is an email known only as a trait: it came
// from no message of its own (mapping.Store.ProfileOf lists such emails
// with when their trait was set, but no first message).
func attribute(pi store.ProfileIdentifier) bool {
	return pi.Kind == mapping.KindEmail && pi.FirstMessageID == ""
}

// deletionKey is the identifier to delete p by: id itself when it links,
// else the profile's first linking identifier (an email known only as an
// attribute finds the profile but cannot name it for deletion).
func deletionKey(p store.Profile, id mapping.Identifier) string {
	for _, pi := range p.Identifiers {
		if pi.Identifier == id && !attribute(pi) {
			return id.String()
		}
	}
	for _, pi := range p.Identifiers {
		if !attribute(pi) {
			return pi.Identifier.String()
		}
	}
	return id.String()
}

// deleteProfileOf deletes the profile holding id, by its deletionKey, for
// the page and the API alike. It returns the profile and the identifiers
// deleted.
func (a *Admin) deleteProfileOf(ctx context.Context, id mapping.Identifier, operator, why string) (store.Profile, []mapping.Identifier, error) {
	p, err := a.store.ProfileOf(ctx, id)
	if err != nil {
		return store.Profile{}, nil, err
	}
	key, err := mapping.ParseIdentifier(deletionKey(p, id))
	if err != nil {
		return store.Profile{}, nil, err
	}
	deleted, err := a.store.DeleteProfile(ctx, key, operator, why)
	if err != nil {
		return store.Profile{}, nil, err
	}
	return p, deleted, nil
}

func (a *Admin) deleteProfile(c echo.Context, s *session) error {
	id, err := mapping.ParseIdentifier(strings.TrimSpace(c.FormValue("identifier")))
	if err != nil {
		return err
	}
	confirmPage := a.base + "/delete?identifier=" + url.QueryEscape(id.String())
	why, err := reason(c.FormValue("reason"))
	if err != nil {
		return a.redirect(c, s, confirmPage, flash{Error: true, Text: messageOf(err)})
	}
	if strings.TrimSpace(c.FormValue("confirm")) != id.String() {
		return a.redirect(c, s, confirmPage, flash{Error: true, Text: "Nothing was deleted: type the identifier exactly as shown to confirm."})
	}
	p, deleted, err := a.deleteProfileOf(c.Request().Context(), id, OperatorPage, why)
	if err != nil {
		return err
	}
	return a.redirect(c, s, a.base+"/", flash{Text: fmt.Sprintf("Profile %d deleted with its %d identifier(s), links, traits and messages; it is hidden and never forwarded from now on, erased after the deletion grace period, and tombstones keep the identifiers from coming back. What was already forwarded stays downstream.", p.ID, len(deleted))})
}

// jobStates are the states the jobs page filters by.
var jobStates = []string{store.JobDead, store.JobPending, store.JobRunning, store.JobDone, "all"}

// jobState reads ?state= for the jobs page and the API: state is the one
// asked for (dead when none), query what to ask the store for ("" for all),
// and ok false when state is not one of jobStates.
func jobState(c echo.Context) (state, query string, ok bool) {
	state = c.QueryParam("state")
	if state == "" {
		state = store.JobDead
	}
	if !slices.Contains(jobStates, state) {
		return state, "", false
	}
	if state == "all" {
		return state, "", true
	}
	return state, state, true
}

type jobsView struct {
	frame
	State  string
	States []string
	Jobs   []jobRowView
	Dead   int
	Limit  int
}

// jobRowView is a job on the jobs page with the profile it is for.
type jobRowView struct {
	store.JobInfo
	// Kind is the payload's "type" (identify, track, ...).
	Kind string
	// ProfileHref is the page of the profile holding the job's ordering
	// key; CauseHref its source message there. "" when no profile holds it.
	ProfileHref, CauseHref string
	ProfileID              int64
}

func (a *Admin) jobs(c echo.Context, s *session) error {
	state, query, ok := jobState(c)
	if !ok {
		return mapping.Errorf(mapping.CodeInvalid, "state %q: want one of %s", state, strings.Join(jobStates, ", "))
	}
	jobs, err := a.store.Jobs(c.Request().Context(), query, jobListSize)
	if err != nil {
		return err
	}
	title := "Deliveries: " + state
	if state == store.JobDead {
		title = "Dead deliveries"
	}
	keys := make([]string, 0, len(jobs))
	for _, j := range jobs {
		keys = append(keys, j.OrderingKey)
	}
	profiles, err := a.store.ProfilesByKey(c.Request().Context(), keys)
	if err != nil {
		return err
	}
	v := jobsView{frame: a.frame(c, s, title, "jobs"), State: state, States: jobStates, Limit: jobListSize}
	for _, j := range jobs {
		if j.State == store.JobDead {
			v.Dead++
		}
		row := jobRowView{JobInfo: j, Kind: readPayload(j.Payload).Type}
		if id, ok := profiles[j.OrderingKey]; ok {
			row.ProfileID = id
			row.ProfileHref = fmt.Sprintf("%s/profiles/%d", a.base, id)
			row.CauseHref = row.ProfileHref + "#" + sourceAnchor(j.SourceMessage)
		}
		v.Jobs = append(v.Jobs, row)
	}
	return a.render(c, http.StatusOK, "jobs", v)
}

func (a *Admin) retry(c echo.Context, s *session) error {
	fallback := a.base + "/jobs"
	form, err := c.FormParams()
	if err != nil {
		return mapping.Errorf(mapping.CodeInvalid, "the form could not be read")
	}
	var ids []int64
	for _, raw := range form["id"] {
		id, err := strconv.ParseInt(raw, 10, 64)
		if err != nil || id <= 0 {
			return a.repairFailed(c, s, mapping.Errorf(mapping.CodeInvalid, "job ID %q is not a number", raw), fallback)
		}
		ids = append(ids, id)
	}
	all := form.Get("all") != ""
	if len(ids) == 0 && !all {
		return a.repairFailed(c, s, mapping.Errorf(mapping.CodeInvalid, "choose a job to retry, or retry all"), fallback)
	}
	if all {
		ids = nil
	}
	n, err := a.store.RetryJobs(c.Request().Context(), ids)
	if err != nil {
		return a.repairFailed(c, s, err, fallback)
	}
	text := fmt.Sprintf("%d dead job(s) are due again; the outbox delivers them shortly.", n)
	if n == 0 {
		text = "There were no dead jobs to retry."
	}
	return a.redirect(c, s, a.back(c, fallback), flash{Text: text})
}

type counterView struct {
	Name, Label, Help string
	Value             string
}

type warningsView struct {
	frame
	Warnings []store.Warning
	Counters []counterView
	Limit    int
}

func (a *Admin) warnings(c echo.Context, s *session) error {
	ws, err := a.store.Warnings(c.Request().Context(), warningListSize)
	if err != nil {
		return err
	}
	v := warningsView{frame: a.frame(c, s, "Warnings", "warnings"), Warnings: ws, Limit: warningListSize}
	if a.counters != nil {
		for _, n := range a.counters().list() {
			v.Counters = append(v.Counters, counterView{Name: n.name, Label: counterLabel(n.name), Help: n.help,
				Value: strconv.FormatFloat(n.value, 'f', -1, 64)})
		}
	}
	return a.render(c, http.StatusOK, "warnings", v)
}
