package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/mapping/outbox"
	"github.com/bridgeworks/bridge/mapping/store"
)

// sendFunc is a sender that answers with its function.
type sendFunc func(context.Context, mapping.Job) error

func (f sendFunc) Send(ctx context.Context, j mapping.Job) error { return f(ctx, j) }

// deliver runs the outbox with senders until no job is pending or running.
func (e *env) deliver(senders map[string]outbox.Sender) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- outbox.New(e.store, outbox.Options{Senders: senders, Poll: 10 * time.Millisecond}).Run(ctx)
	}()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		waiting := 0
		for _, state := range []string{store.JobPending, store.JobRunning} {
			jobs, err := e.store.Jobs(context.Background(), state, 100)
			if err != nil {
				e.t.Fatalf("list jobs: %v", err)
			}
			waiting += len(jobs)
		}
		if waiting == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%d jobs still waiting after 20s", waiting)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// payload encodes a job payload.
func payload(t *testing.T, v map[string]any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tourWebhook is a Jimo webhook delivery reporting a completed tour, as
// testdata/jimo/webhook_tour_completed.json has it.
const tourWebhook = `{"event":"tour.completed","version":"0","time":1793620800000,
	"experience":{"id":"8f0c6f7e","name":"Welcome tour","type":"TOUR"},
	"jimer":{"uid":"2d5e8f3a","identifyToken":"%s","username":"Ada Lovelace"}}`

// seedDeliveries stores alice with a Segment and a Jimo identify (both
// delivered), a Jimo track that Jimo refuses (dead) and a tour she
// completed, reported by a Jimo webhook.
func (e *env) seedDeliveries() {
	e.t.Helper()
	t := e.t
	traits := map[string]any{"name": "Ada", "plan": "pro"}
	identify := message("m1", 0, alice, anonA1, "", traits,
		mapping.Job{Destination: "segment", OrderingKey: alice, MessageID: "seg-m1", Payload: payload(t, map[string]any{
			"type": "identify", "messageId": "seg-m1", "userId": alice, "traits": traits, "context": map[string]any{"bridge": map[string]any{"forwarded": true}}})},
		mapping.Job{Destination: "jimo", OrderingKey: alice, MessageID: "jimo-m1", Payload: payload(t, map[string]any{
			"type": "identify", "userId": alice, "timestamp": "2026-11-01T12:00:00.000Z", "traits": traits})},
	)
	track := message("m2", time.Minute, alice, anonA1, "Viewed Pricing", nil,
		mapping.Job{Destination: "jimo", OrderingKey: alice, MessageID: "jimo-m2", Payload: payload(t, map[string]any{
			"type": "track", "userId": alice, "timestamp": "2026-11-01T12:01:00.000Z", "event": "Viewed Pricing"})})
	webhook := mapping.Message{Source: mapping.SourceJimoWebhook, ID: "jimo-webhook-1", Type: "jimo_event", Event: "tour.completed",
		UserID: alice, Timestamp: t0.Add(2 * time.Minute), ReceivedAt: t0.Add(2 * time.Minute), Raw: json.RawMessage(fmt.Sprintf(tourWebhook, alice))}
	e.submit(identify, track, webhook)
	e.deliver(map[string]outbox.Sender{
		"segment": sendFunc(func(context.Context, mapping.Job) error { return nil }),
		"jimo": sendFunc(func(_ context.Context, j mapping.Job) error {
			if strings.Contains(string(j.Payload), `"type":"track"`) {
				return &outbox.DeliveryError{Permanent: true, Err: errors.New("jimo answered 400: unknown event")}
			}
			return nil
		}),
	})
}

// jobOf finds the job with the outgoing message ID.
func (e *env) jobOf(messageID string) store.JobInfo {
	e.t.Helper()
	jobs, err := e.store.Jobs(context.Background(), "", 100)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, j := range jobs {
		if j.MessageID == messageID {
			return j
		}
	}
	e.t.Fatalf("no job %s in %+v", messageID, jobs)
	return store.JobInfo{}
}

// section returns the part of page from the element with id to the next section.
func section(t *testing.T, page, id string) string {
	t.Helper()
	i := strings.Index(page, `id="`+id+`"`)
	if i < 0 {
		t.Fatalf("page has no #%s:\n%s", id, page)
	}
	rest := page[i:]
	if j := strings.Index(rest[1:], "<section"); j >= 0 {
		rest = rest[:j+1]
	}
	return rest
}

func TestProfileShowsDeliveriesAndJimosView(t *testing.T) {
	e := newEnvWith(t, nil, func(c *Config) {
		c.Forwarding = &Forwarding{Segment: Destination{Name: "segment", On: true, Host: "api.segment.io"},
			Jimo: Destination{Name: "jimo", On: true, Host: "jimo.example"}, TokenMode: "shared"}
	})
	e.seedDeliveries()
	b := e.browser("192.0.2.70").login()
	p := e.mustProfile("user_id:" + alice)
	page := b.get(fmt.Sprintf("/admin/profiles/%d", p.ID)).Body.String()
	identify, dead, seg := e.jobOf("jimo-m1"), e.jobOf("jimo-m2"), e.jobOf("seg-m1")
	if identify.State != store.JobDone || dead.State != store.JobDead || seg.State != store.JobDone {
		t.Fatalf("seed: got states %s, %s, %s; want done, dead, done", identify.State, dead.State, seg.State)
	}

	view := section(t, page, "jimo-view")
	mustContain(t, "Jimo's view", view, "Jimo's view", "known to Jimo",
		`Jimo was given this person as <code class="token">`+alice+`</code>`,
		"1 delivered, the latest an <strong>identify</strong> at", fmt.Sprintf(`<a href="#job-%d">job %d</a>`, identify.ID, identify.ID),
		"To look at:", "1 delivery to Jimo is dead (last error: permanent: jimo answered 400: unknown event)",
		"Jimo reported this person in 1 webhook(s)", "tour.completed · Welcome tour")
	mustNotContain(t, "Jimo's view", view, "not given", "Why not")
	if strings.Index(page, `id="jimo-view"`) > strings.Index(page, `id="identifiers"`) {
		t.Errorf("Jimo's view comes after the identifiers; want it at the top")
	}

	deliveries := section(t, page, "deliveries")
	m1, m2 := messageAnchor(mapping.SourceSegmentAPI, "m1"), messageAnchor(mapping.SourceSegmentAPI, "m2")
	for _, c := range []struct {
		job  store.JobInfo
		want []string
	}{
		{identify, []string{`<span class="badge badge-kind">identify</span>`, `badge-done">done</span>`,
			`<code class="token">` + alice + `</code> <span class="meta">(userId)</span>`,
			`<div class="meta">traits</div>`, `<li><span class="key">name</span> <span class="clip">Ada</span></li>`, `<li><span class="key">plan</span> <span class="clip">pro</span></li>`,
			`<a href="#` + m1 + `">segment.api:m1</a>`, "created", "updated", `datetime="` + identify.CreatedAt.Format(time.RFC3339) + `"`, "payload · jimo-m1"}},
		{dead, []string{`<span class="badge badge-kind">track</span>`, `badge-dead">dead</span>`, `<strong>Viewed Pricing</strong>`,
			`<div class="error">permanent: jimo answered 400: unknown event</div>`, `<a href="#` + m2 + `">segment.api:m2</a>`, `class="inline retry"`}},
		{seg, []string{`<span class="badge badge-kind">identify</span>`, `badge-done">done</span>`, `<span class="key">plan</span>`, `<a href="#` + m1 + `">segment.api:m1</a>`}},
	} {
		row := rowOf(t, deliveries, fmt.Sprintf(`id="job-%d"`, c.job.ID))
		mustContain(t, "delivery "+c.job.MessageID, row, c.want...)
	}
	mustContain(t, "deliveries", deliveries, "<h3>jimo", "<h3>segment")

	messages := section(t, page, "messages")
	mustContain(t, "timeline", messages, `id="`+m1+`"`, `id="`+m2+`"`,
		`<strong class="val">tour.completed</strong> <span class="experience val">tour “Welcome tour”</span>`)
}

// rowOf returns the table row of page that carries attr.
func rowOf(t *testing.T, page, attr string) string {
	t.Helper()
	i := strings.Index(page, attr)
	if i < 0 {
		t.Fatalf("no row with %s in:\n%s", attr, page)
	}
	end := strings.Index(page[i:], "</tr>")
	if end < 0 {
		t.Fatalf("row with %s does not end", attr)
	}
	return page[i : i+end]
}

func TestJimosViewSaysWhyNot(t *testing.T) {
	on := &Forwarding{Jimo: Destination{Name: "jimo", On: true, Host: "jimo.example"}, TokenMode: "shared"}
	off := &Forwarding{Jimo: Destination{Name: "jimo", Off: "BRIDGE_JIMO_API_KEY is not set"}, TokenMode: "shared"}
	const guessable = "user ID is too regular to be unguessable"
	tests := []struct {
		name       string
		forwarding *Forwarding
		msg        mapping.Message
		identifier string
		want       []string
		unwanted   []string
	}{
		{"anonymous", on, message("a1", 0, "", "anon-only-1", "Viewed", nil), "anonymous_id:anon-only-1",
			[]string{"The profile is anonymous (no user ID)"}, []string{"Forwarding to Jimo is off"}},
		{"guessable user ID", on, func() mapping.Message {
			m := message("g1", 0, "user-1", "", "", nil)
			m.UserIDWarning = guessable
			return m
		}(), "user_id:user-1", []string{"The user ID user-1 is guessable (" + guessable + "): the bridge withholds it from Jimo."}, nil},
		{"forwarding off", off, message("o1", 0, alice, "", "", nil), "user_id:" + alice,
			[]string{"Forwarding to Jimo is off: BRIDGE_JIMO_API_KEY is not set; the bridge sends Jimo nothing."}, []string{"anonymous"}},
		{"delivery waiting", on, message("w1", 0, alice, "", "", nil, jimoJob("out-w1", alice)), "user_id:" + alice,
			[]string{"1 delivery to Jimo is waiting to be sent."}, nil},
		{"no delivery", on, message("n1", 0, alice, "", "Viewed", nil), "user_id:" + alice,
			[]string{"No message of this profile caused a delivery to Jimo: Jimo is given identify calls that carry a user ID."}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnvWith(t, nil, func(c *Config) { c.Forwarding = tt.forwarding })
			e.submit(tt.msg)
			b := e.browser("192.0.2.71").login()
			p := e.mustProfile(tt.identifier)
			view := section(t, b.get(fmt.Sprintf("/admin/profiles/%d", p.ID)).Body.String(), "jimo-view")
			mustContain(t, tt.name, view, append([]string{"not given", "Jimo has never been given this person.", "Why not:"}, tt.want...)...)
			mustNotContain(t, tt.name, view, append([]string{"known to Jimo"}, tt.unwanted...)...)
		})
	}
}

func TestOverviewShowsConfigurationAndEveryDestination(t *testing.T) {
	since := time.Date(2026, 11, 2, 9, 30, 0, 0, time.UTC)
	fwd := &Forwarding{
		Segment: Destination{Name: "segment", On: true, Host: "api.segment.io"},
		Jimo:    Destination{Name: "jimo", On: true, Host: "jimo.example:8443"},
		Relay:   true, TokenMode: "derived",
	}
	tests := []struct {
		name     string
		mutate   func(*Config)
		want     []string
		unwanted []string
	}{
		{"configured, outbox state known", func(c *Config) {
			c.Forwarding = fwd
			c.Destinations = func() []outbox.DestinationStatus {
				return []outbox.DestinationStatus{
					{Destination: "jimo"},
					{Destination: "segment", Paused: true, PausedSince: since, Failures: 5, LastError: "segment answered 503"},
				}
			}
		}, []string{
			"Forwarding to Segment", "api.segment.io", "Forwarding to Jimo", "jimo.example:8443",
			"Relay Tracking API calls to Segment", "Jimo token mode", "derived", "Session signatures", `badge-done">required</span>`,
			`<tr id="dest-jimo">`, `<tr id="dest-segment">`, `badge-dead">paused</span>`, "segment answered 503",
			`datetime="2026-11-02T09:30:00Z"`, `badge-done">delivering</span>`,
		}, []string{"not required", "No destination is configured"}},
		{"configured, no outbox state", func(c *Config) {
			c.Forwarding = &Forwarding{Segment: Destination{Name: "segment", Off: "BRIDGE_SEGMENT_FORWARD_WRITE_KEY is not set"},
				Jimo: Destination{Name: "jimo", On: true, Host: "jimo.example"}, TokenMode: "shared"}
			c.UnsignedSessions = true
		}, []string{`<tr id="dest-jimo">`, `badge-done">configured</span>`, "BRIDGE_SEGMENT_FORWARD_WRITE_KEY is not set",
			`badge-conflict">not required</span>`, "shared"}, []string{`<tr id="dest-segment">`, "paused"}},
		{"configuration not given", nil, []string{"The admin was not given the configuration.", "No destination is configured"}, []string{`id="dest-`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnvWith(t, nil, tt.mutate)
			b := e.browser("192.0.2.72").login()
			page := b.get("/admin/").Body.String()
			mustContain(t, tt.name, page, tt.want...)
			mustNotContain(t, tt.name, page, tt.unwanted...)
			// An idle destination shows zero counts.
			if strings.Contains(page, `id="dest-jimo"`) {
				mustContain(t, "idle jimo", rowOf(t, page, `id="dest-jimo"`), `<td class="n">0</td>`)
			}
		})
	}
}

// TestEmailFirstSeenAgrees: an email set as a trait an hour after its
// profile began is first seen then, on the search page as on the profile;
// carried by two identifiers of the profile (whichever got it first), it is
// one search hit, first seen when the first of them got it.
func TestEmailFirstSeenAgrees(t *testing.T) {
	const email = "ada@example.com"
	for _, tt := range []struct{ name, first, second string }{
		{"user ID first", alice, ""},
		{"anonymous ID first", "", alice},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			withEmail := map[string]any{"email": email}
			first, second := message("e2", time.Hour, tt.first, anonA1, "", withEmail), message("e3", 2*time.Hour, tt.second, anonA1, "", withEmail)
			if tt.first != "" { // the user ID's identify names no anonymous ID, so only its identifier gets the email
				first.AnonymousID = ""
			} else {
				second.AnonymousID = ""
			}
			e.submit(message("e1", 0, alice, anonA1, "", map[string]any{"name": "Ada"}), first, second)
			b := e.browser("192.0.2.73").login()
			p := e.mustProfile("user_id:" + alice)
			want := `datetime="` + t0.Add(time.Hour).Format(time.RFC3339) + `"`

			search := b.get("/admin/search?q=" + email).Body.String()
			if n := strings.Count(search, `<a href="/admin/profiles/`+itoa(p.ID)+`">`+email+`</a>`); n != 1 {
				t.Errorf("search: got %d hits for %s, want 1", n, email)
			}
			mustContain(t, "search", rowOf(t, search, email+"</a>"), want)

			profile := b.get(fmt.Sprintf("/admin/profiles/%d", p.ID)).Body.String()
			row := rowOf(t, section(t, profile, "identifiers"), `<td class="val">`+email)
			mustContain(t, "profile", row, "set as a trait by segment.api", "an email attribute from the traits (does not link)")
			mustNotContain(t, "profile", row, "started the profile")
			got := regexp.MustCompile(`datetime="([^"]+)"`).FindStringSubmatch(row)
			if got == nil || `datetime="`+got[1]+`"` != want {
				t.Errorf("profile: email first seen %v, want %s", got, want)
			}
		})
	}
}

func TestFavicon(t *testing.T) {
	e := newEnv(t, nil)
	b := e.browser("192.0.2.74")
	rec := b.get("/admin/favicon.ico") // no login needed
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "image/svg+xml" || !strings.HasPrefix(rec.Body.String(), "<svg") {
		t.Fatalf("GET /admin/favicon.ico: got %d %q %.40q, want 200 image/svg+xml <svg…", rec.Code, rec.Header().Get("Content-Type"), rec.Body.String())
	}
	mustContain(t, "login page", b.get("/admin/login").Body.String(), `<link rel="icon" type="image/svg+xml" href="/admin/favicon.ico">`)
}
