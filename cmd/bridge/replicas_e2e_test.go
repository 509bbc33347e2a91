package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bridgeworks/bridge/jimo/jimotest"
	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/mapping/store"
	"github.com/bridgeworks/bridge/mapping/testenv"
	"github.com/bridgeworks/bridge/segment/segmenttest"
)

// replica is one bridge process of a deployment whose replicas share one
// PostgreSQL database.
type replica struct {
	name   string
	cmd    *exec.Cmd
	URL    string
	output *syncBuffer
}

// replicaEnv is the environment every replica of a test runs with: the
// same database, secrets and destinations, given as BRIDGE_* variables as
// an operator would; nothing BRIDGE_* leaks in from the test's own
// environment.
func replicaEnv(dbURL string, extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BRIDGE_") {
			env = append(env, kv)
		}
	}
	return append(append(env,
		"BRIDGE_DB="+dbURL,
		"BRIDGE_ADDR=127.0.0.1:0",
		"BRIDGE_ADMIN_PASSWORD="+testAdminPassword,
		"BRIDGE_SEGMENT_WRITE_KEYS="+testWriteKey,
		"BRIDGE_SEGMENT_SHARED_SECRET="+webhookSecret,
		"BRIDGE_JIMO_SIGNING_SECRET="+testSigningSecret,
		"BRIDGE_JIMO_WEBHOOK_SECRET="+testWebhookSecret,
		"BRIDGE_ALLOWED_ORIGINS="+testPageOrigin,
		"BRIDGE_LOG_LEVEL=warn",
		"BRIDGE_OUTBOX_LEASE="+outboxLease.String(),
	), extra...)
}

// startReplica starts the bridge binary bin with env and waits until it
// listens. It is killed when the test ends; its output is shown if the
// test failed.
func startReplica(t *testing.T, name, bin string, env []string) *replica {
	t.Helper()
	r := &replica{name: name, cmd: exec.Command(bin), output: &syncBuffer{addr: make(chan string, 1)}}
	r.cmd.Env = env
	r.cmd.Stdout, r.cmd.Stderr = r.output, r.output
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { r.cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		r.cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("replica %s output:\n%s", name, r.output)
		}
	})
	select {
	case r.URL = <-r.output.addr:
		r.URL = "http://" + strings.TrimPrefix(r.URL, "http://")
		return r
	case <-exited:
		t.Fatalf("replica %s exited before it listened:\n%s", name, r.output)
	case <-time.After(60 * time.Second):
		t.Fatalf("replica %s did not listen within 60s:\n%s", name, r.output)
	}
	return nil
}

// replicaMessage is one message of the replicas test's load: a single
// identify on the Tracking API or a signed Jimo session report.
type replicaMessage struct {
	user, step  int    // the user's index; the message's place in the user's sequence (1…)
	userID      string // whom it is about
	path        string // /v1/identify or /jimo/session
	body        []byte
	messageID   string // the Tracking API's messageId, or the report's messageId
	anonymousID string // fresh for every message but a shared-device identify

	// Set when a replica acknowledges it:
	ackedBy string // the replica that answered 200
	ackSeq  int64  // its place in the order of all acknowledgements
}

// TestTwoReplicasOnePostgres runs two bridge processes on one PostgreSQL
// database, both forwarding to the same fake Jimo and Segment, drives
// concurrent identifies and session reports at both, kills one with
// SIGKILL mid-stream and retries at the survivor what the killed one did
// not acknowledge, as Segment's clients and the page do. Then: every
// message is stored once; every forward reached its destination at least
// once, always under one message ID, in each user's order; the jobs the
// killed replica held were delivered by the survivor once their lease
// ended; and the identity graph equals what one SQLite bridge computes
// from the same messages.
func TestTwoReplicasOnePostgres(t *testing.T) {
	if testing.Short() {
		testenv.Lacks(t, "a full run: it builds and runs the binary", "run go test without -short")
	}
	dbURL := newPostgresDB(t)
	bin := buildBridge(t)
	fakeJimo := jimotest.NewServer(t, jimoKey)
	fakeSegment := segmenttest.NewServer(t, forwardWriteKey)
	env := replicaEnv(dbURL,
		"BRIDGE_JIMO_API_KEY="+jimoKey, "BRIDGE_JIMO_ENDPOINT="+fakeJimo.URL,
		"BRIDGE_SEGMENT_FORWARD_WRITE_KEY="+forwardWriteKey, "BRIDGE_SEGMENT_ENDPOINT="+fakeSegment.URL,
		"BRIDGE_JIMO_SESSION_RATE=0", // every report comes from 127.0.0.1
	)
	// A starts alone, so that it runs the migrations; B then finds them done.
	a := startReplica(t, "A", bin, env)
	b := startReplica(t, "B", bin, env)
	replicas := []*replica{a, b}

	// Each user: an identify from a first browser, a session report from a
	// second, an identify from a third (one user in five logs in on the
	// next user's first browser instead: a conflict the event times
	// decide), a session report from a fourth. A user's messages go out
	// one after another, alternating between the replicas.
	const users = 120
	base := time.Now().Add(-time.Hour).UTC().Truncate(time.Millisecond)
	userIDs, firstAnon := make([]string, users), make([]string, users)
	for i := range users {
		userIDs[i], firstAnon[i] = "u-"+randomHex(12), "a-"+randomHex(12)
	}
	identify := func(i, step int, anon string) *replicaMessage {
		id := "rep-" + randomHex(10)
		at := base.Add(time.Duration(4*i+step) * time.Second)
		body := fmt.Sprintf(`{"type":"identify","messageId":%q,"userId":%q,"anonymousId":%q,"timestamp":%q,"traits":{"step":"%d","msg":%q}}`,
			id, userIDs[i], anon, at.Format(time.RFC3339Nano), step, id)
		return &replicaMessage{user: i, step: step, userID: userIDs[i], path: "/v1/identify", body: []byte(body), messageID: id, anonymousID: anon}
	}
	session := func(i, step int) *replicaMessage {
		id, anon := "jb-"+randomHex(10), "a-"+randomHex(12)
		body, _ := json.Marshal(map[string]any{"token": userIDs[i], "anonymousId": anon, "messageId": id,
			"signature": signUserID(testSigningSecret, userIDs[i])})
		return &replicaMessage{user: i, step: step, userID: userIDs[i], path: "/jimo/session", body: body, messageID: id, anonymousID: anon}
	}
	sequences := make([][]*replicaMessage, users)
	var all []*replicaMessage
	for i := range users {
		third := "a-" + randomHex(12)
		if i%5 == 0 {
			third = firstAnon[(i+1)%users]
		}
		sequences[i] = []*replicaMessage{identify(i, 1, firstAnon[i]), session(i, 2), identify(i, 3, third), session(i, 4)}
		all = append(all, sequences[i]...)
	}

	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(testWriteKey+":"))
	client := &http.Client{Timeout: 20 * time.Second}
	// send posts m until a replica acknowledges it: to its own replica
	// while that lives, then to the survivor, as a client retries what
	// was not acknowledged. A refusal (4xx) fails the test.
	var killed atomic.Bool
	var acks atomic.Int64
	send := func(m *replicaMessage) error {
		var last string
		for attempt := range 100 {
			r := replicas[(m.user+m.step)%2]
			if killed.Load() {
				r = b
			}
			req, _ := http.NewRequest(http.MethodPost, r.URL+m.path, strings.NewReader(string(m.body)))
			req.Header.Set("Content-Type", "application/json")
			if m.path == "/v1/identify" {
				req.Header.Set("Authorization", auth)
			} else {
				req.Header.Set("Origin", testPageOrigin)
			}
			resp, err := client.Do(req)
			if err != nil {
				last = err.Error()
				if r == b || !killed.Load() {
					time.Sleep(time.Duration(attempt) * 10 * time.Millisecond)
				}
				continue
			}
			answer, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch {
			case resp.StatusCode == http.StatusOK:
				m.ackedBy, m.ackSeq = r.name, acks.Add(1)
				return nil
			case resp.StatusCode >= 400 && resp.StatusCode < 500:
				return fmt.Errorf("%s %s refused by %s: %d %s", m.path, m.messageID, r.name, resp.StatusCode, answer)
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, answer)
			time.Sleep(time.Duration(attempt) * 10 * time.Millisecond)
		}
		return fmt.Errorf("%s %s: not acknowledged after 100 attempts; last: %s", m.path, m.messageID, last)
	}

	// Kill A once a third of the messages are acknowledged, while both
	// replicas are delivering: the fakes hold every request for a while
	// first, so that A dies holding claimed jobs. The jobs claimed at that
	// moment (A's and B's) are noted.
	db := pgConnect(t, dbURL) // only kill uses it while the load runs
	var claimedAtKill []replicaClaim
	var killErr error
	var killStarted atomic.Bool
	killDone := make(chan struct{})
	kill := func() {
		defer close(killDone)
		jimoBefore, segmentBefore := fakeJimo.Attempts(), fakeSegment.Attempts()
		fakeJimo.Hang(3 * time.Second)
		fakeSegment.Hang(3 * time.Second)
		defer fakeJimo.Recover()
		defer fakeSegment.Recover()
		deadline := time.Now().Add(20 * time.Second)
		for fakeJimo.Attempts() < jimoBefore+8 || fakeSegment.Attempts() < segmentBefore+8 {
			if time.Now().After(deadline) {
				killErr = fmt.Errorf("deliveries did not reach the fakes before the kill: Jimo %d, Segment %d new attempts",
					fakeJimo.Attempts()-jimoBefore, fakeSegment.Attempts()-segmentBefore)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		killed.Store(true)
		a.cmd.Process.Signal(syscall.SIGKILL)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rows, err := db.Query(ctx, `SELECT destination, message_id, locked_until FROM jobs WHERE state = $1`, store.JobRunning)
		if err != nil {
			killErr = fmt.Errorf("jobs claimed at the kill: %w", err)
			return
		}
		for rows.Next() {
			var c replicaClaim
			if err := rows.Scan(&c.destination, &c.messageID, &c.lockedUntil); err != nil {
				killErr = err
				break
			}
			claimedAtKill = append(claimedAtKill, c)
		}
		rows.Close()
		if killErr == nil {
			killErr = rows.Err()
		}
	}

	work := make(chan []*replicaMessage)
	errs := make(chan error, users)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := range work {
				for _, m := range seq {
					if err := send(m); err != nil {
						errs <- err
						break
					}
					if acks.Load() >= int64(len(all)/3) && killStarted.CompareAndSwap(false, true) {
						go kill() // the load goes on meanwhile
					}
				}
			}
		}()
	}
	for _, seq := range sequences {
		work <- seq
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if !killStarted.Load() {
		t.Fatal("replica A was never killed")
	}
	<-killDone
	if killErr != nil {
		t.Fatal(killErr)
	}
	if t.Failed() {
		t.FailNow()
	}
	if !killed.Load() {
		t.Fatal("replica A was never killed")
	}
	ackedByA := 0
	for _, m := range all {
		if m.ackedBy == "A" {
			ackedByA++
		}
	}
	if ackedByA == 0 || ackedByA == len(all) {
		t.Fatalf("A acknowledged %d of %d messages, want the kill mid-stream", ackedByA, len(all))
	}
	t.Logf("%d messages: %d acknowledged by A before it was killed, %d by B; %d jobs claimed at the kill",
		len(all), ackedByA, len(all)-ackedByA, len(claimedAtKill))

	// Every message is stored, once, whichever replica took it.
	checkStored(t, db, all)

	// Every forward arrives, under one message ID, in each user's order:
	// the identifies to Jimo, the session reports to Segment (as identifies).
	// The survivor delivers the killed replica's claims after their lease.
	identifies, sessions := map[string]*replicaMessage{}, map[string]*replicaMessage{}
	for _, m := range all {
		if m.path == "/v1/identify" {
			identifies[m.messageID] = m
		} else {
			sessions[m.anonymousID] = m
		}
	}
	deadline := time.Now().Add(outboxLease + time.Minute)
	var jimoReqs []jimotest.Request
	var segmentMsgs []segmenttest.Message
	for {
		jimoReqs, segmentMsgs = fakeJimo.Requests(), fakeSegment.Messages()
		missing := missingForwards(identifies, sessions, jimoReqs, segmentMsgs)
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d forwards never arrived, e.g. %s", len(missing), missing[0])
		}
		time.Sleep(250 * time.Millisecond)
	}
	checkForwardOrder(t, identifies, sessions, jimoReqs, segmentMsgs)
	checkClaimsDelivered(t, db, claimedAtKill, jimoReqs, segmentMsgs)

	// The graph is the one a single SQLite bridge computes from the same
	// messages, sent in the order they were acknowledged.
	single := startBridge(t, "", "-allowed-origins", testPageOrigin, "-jimo-session-rate", "0")
	ordered := slices.Clone(all)
	sort.Slice(ordered, func(i, j int) bool { return ordered[i].ackSeq < ordered[j].ackSeq })
	for _, m := range ordered {
		headers := map[string]string{"Content-Type": "application/json"}
		if m.path == "/v1/identify" {
			headers["Authorization"] = auth
		} else {
			headers["Origin"] = testPageOrigin
		}
		if status, answer := single.post(t, m.path, m.body, headers); status != http.StatusOK {
			t.Fatalf("replay %s %s into the single bridge: %d %s", m.path, m.messageID, status, answer)
		}
	}
	survivor := &testBridge{URL: b.URL}
	compared := map[string]bool{}
	conflicts := 0
	for _, m := range all {
		for _, id := range []string{"user_id:" + m.userID, "anonymous_id:" + m.anonymousID} {
			if compared[id] {
				continue
			}
			compared[id] = true
			got, gotOK := survivor.profile(t, id)
			want, wantOK := single.profile(t, id)
			if gotOK != wantOK || got.UserID != want.UserID || !maps.Equal(identifierSet(got), identifierSet(want)) {
				t.Errorf("%s: the replicas' profile (found %v) is user %q with %v; one SQLite bridge's (found %v) is user %q with %v",
					id, gotOK, got.UserID, sortedSet(identifierSet(got)), wantOK, want.UserID, sortedSet(identifierSet(want)))
			}
		}
	}
	for i := 0; i < users; i += 5 {
		if p, _ := single.profile(t, "anonymous_id:"+firstAnon[(i+1)%users]); p.UserID == userIDs[i] {
			conflicts++
		}
	}
	if conflicts == 0 {
		t.Errorf("no shared browser went to the user who logged in on it first: the workload tests no conflict")
	}
}

// outboxLease is how long a delivery's claim lasts (BRIDGE_OUTBOX_LEASE):
// a killed replica's claims are delivered by another after it. Its sends
// may take half of it, longer than the fakes hang.
const outboxLease = 10 * time.Second

// checkStored checks in the database that every message was stored exactly
// once: identifies by their message ID, session reports (whose stored ID the
// bridge derives) by their fresh anonymous ID.
func checkStored(t *testing.T, db *pgx.Conn, all []*replicaMessage) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := db.Query(ctx, `SELECT source, message_id, COALESCE(anonymous_id, '') FROM messages`)
	if err != nil {
		t.Fatalf("read the stored messages: %v", err)
	}
	stored := map[string]int{}
	for rows.Next() {
		var source, messageID, anon string
		if err := rows.Scan(&source, &messageID, &anon); err != nil {
			t.Fatal(err)
		}
		switch mapping.Source(source) {
		case mapping.SourceSegmentAPI:
			stored["identify "+messageID]++
		case mapping.SourceJimoSession:
			stored["session "+anon]++
		default:
			t.Errorf("stored a message from %s (%s), want only what was sent", source, messageID)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	for _, m := range all {
		key := "identify " + m.messageID
		if m.path == "/jimo/session" {
			key = "session " + m.anonymousID
		}
		if n := stored[key]; n != 1 {
			t.Errorf("%s (acknowledged by %s): stored %d times, want once", key, m.ackedBy, n)
		}
	}
	if len(stored) != len(all) {
		t.Errorf("stored %d distinct messages, want the %d sent", len(stored), len(all))
	}
}

// missingForwards lists the identifies (by message ID) that have not reached
// Jimo and the session reports (by anonymous ID) that have not reached Segment.
func missingForwards(identifies, sessions map[string]*replicaMessage, jimoReqs []jimotest.Request, segmentMsgs []segmenttest.Message) []string {
	seen := map[string]bool{}
	for _, r := range jimoReqs {
		if msg, _ := r.Event.Traits["msg"].(string); msg != "" {
			seen["identify "+msg] = true
		}
	}
	for _, m := range segmentMsgs {
		seen["session "+m.AnonymousID] = true
	}
	var missing []string
	for id := range identifies {
		if !seen["identify "+id] {
			missing = append(missing, "identify "+id+" to Jimo")
		}
	}
	for anon := range sessions {
		if !seen["session "+anon] {
			missing = append(missing, "session report of "+anon+" to Segment")
		}
	}
	sort.Strings(missing)
	return missing
}

// checkForwardOrder checks that each message was forwarded under one
// message ID however often it arrived, about its own user, and that each
// user's forwards arrived in the order the user's messages were
// acknowledged: a redelivery may repeat a message, never go back to an
// earlier one after a later one arrived.
func checkForwardOrder(t *testing.T, identifies, sessions map[string]*replicaMessage, jimoReqs []jimotest.Request, segmentMsgs []segmenttest.Message) {
	t.Helper()
	keys := map[string]map[string]bool{}
	lastStep := map[string]int{} // destination and user → the step last delivered
	note := func(what, key string, m *replicaMessage, dest, user string) {
		if keys[what] == nil {
			keys[what] = map[string]bool{}
		}
		keys[what][key] = true
		if user != m.userID {
			t.Errorf("%s arrived as user %q, want %q", what, user, m.userID)
		}
		k := dest + " " + m.userID
		if m.step < lastStep[k] {
			t.Errorf("%s: step %d of user %s arrived after step %d, want each user's forwards in order", dest, m.step, m.userID, lastStep[k])
		}
		lastStep[k] = max(lastStep[k], m.step)
	}
	for _, r := range jimoReqs {
		msg, _ := r.Event.Traits["msg"].(string)
		m := identifies[msg]
		if m == nil {
			t.Errorf("Jimo received %s, which no identify sent caused", r.Body)
			continue
		}
		note("identify "+msg+" to Jimo", r.IdempotencyKey, m, "Jimo", r.Event.UserID)
	}
	for _, s := range segmentMsgs {
		m := sessions[s.AnonymousID]
		if m == nil {
			t.Errorf("Segment received %s, which no session report sent caused", s.Raw)
			continue
		}
		note("session report "+m.messageID+" to Segment", s.MessageID, m, "Segment", s.UserID)
	}
	for what, ks := range keys {
		if len(ks) != 1 || ks[""] {
			t.Errorf("%s arrived under message IDs %v, want one", what, sortedSet(ks))
		}
	}
}

// replicaClaim is a job claimed for delivery: its destination, message ID
// and when its lease ends (Unix nanoseconds, as the store writes it).
type replicaClaim struct {
	destination, messageID string
	lockedUntil            int64
}

// checkClaimsDelivered checks that every job claimed when a replica was
// killed was received by its destination and is recorded as done; and that
// at least one Jimo job among them was received only once its lease had
// ended: one the killed replica held, delivered by the survivor.
func checkClaimsDelivered(t *testing.T, db *pgx.Conn, claimed []replicaClaim, jimoReqs []jimotest.Request, segmentMsgs []segmenttest.Message) {
	t.Helper()
	if len(claimed) == 0 {
		t.Fatal("no job was claimed when A was killed, want deliveries in flight")
	}
	firstJimo := map[string]time.Time{}
	for _, r := range jimoReqs {
		if at, ok := firstJimo[r.IdempotencyKey]; !ok || r.Received.Before(at) {
			firstJimo[r.IdempotencyKey] = r.Received
		}
	}
	toSegment := map[string]bool{}
	for _, m := range segmentMsgs {
		toSegment[m.MessageID] = true
	}
	afterLease := 0
	for _, c := range claimed {
		switch c.destination {
		case "jimo":
			at, ok := firstJimo[c.messageID]
			if !ok {
				t.Errorf("job %s claimed at the kill never reached Jimo", c.messageID)
			} else if !at.Before(time.Unix(0, c.lockedUntil)) {
				afterLease++
			}
		case "segment":
			if !toSegment[c.messageID] {
				t.Errorf("job %s claimed at the kill never reached Segment", c.messageID)
			}
		default:
			t.Errorf("job %s claimed at the kill is for %q, want jimo or segment", c.messageID, c.destination)
		}
	}
	if afterLease == 0 {
		t.Errorf("of the %d jobs claimed at the kill, none reached Jimo after its lease ended: the killed replica held none, or its claims were taken early", len(claimed))
	}
	t.Logf("%d jobs claimed at the kill, %d of them delivered to Jimo after their lease ended", len(claimed), afterLease)
	// A delivery is recorded done just after its answer: wait for that.
	deadline := time.Now().Add(30 * time.Second)
	for _, c := range claimed {
		for {
			var state string
			err := db.QueryRow(context.Background(), `SELECT state FROM jobs WHERE destination = $1 AND message_id = $2`, c.destination, c.messageID).Scan(&state)
			if err != nil {
				t.Fatalf("job %s: %v", c.messageID, err)
			}
			if state == store.JobDone {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("job %s claimed at the kill is %s, want %s", c.messageID, state, store.JobDone)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func sortedSet(s map[string]bool) []string {
	out := make([]string, 0, len(s))
	for k := range s {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestAdminSessionAcrossReplicas signs in on one replica through the login
// form and uses the session on another replica of the same database: the
// overview loads, a CSRF-protected form is accepted (and refused without
// its token), and signing out on one ends the session on both.
func TestAdminSessionAcrossReplicas(t *testing.T) {
	dbURL := newPostgresDB(t)
	a := startBridge(t, dbURL)
	b := startBridge(t, dbURL)

	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	// Cookies do not tell ports apart, so the jar sends A's cookie to B,
	// as a browser does for replicas behind one host name.
	browser := &http.Client{Jar: jar, Timeout: 20 * time.Second}
	csrfField := regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	get := func(r *testBridge, path string) (string, string) {
		t.Helper()
		resp, err := browser.Get(r.URL + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: got status %d, want 200: %s", path, resp.StatusCode, body)
		}
		return resp.Request.URL.Path, string(body)
	}
	postForm := func(r *testBridge, path string, form url.Values) (int, string, string) {
		t.Helper()
		resp, err := browser.PostForm(r.URL+path, form)
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Request.URL.Path, string(body)
	}
	token := func(page string) string {
		t.Helper()
		m := csrfField.FindStringSubmatch(page)
		if m == nil {
			t.Fatalf("no csrf field in the page:\n%s", page)
		}
		return m[1]
	}

	// Sign in on A.
	_, loginPage := get(a, "/admin/login")
	status, landed, page := postForm(a, "/admin/login", url.Values{"csrf": {token(loginPage)}, "password": {testAdminPassword}})
	if status != http.StatusOK || landed != "/admin/" || !strings.Contains(page, `action="/admin/logout"`) {
		t.Fatalf("sign in on A: got %d at %s, want 200 at the overview:\n%s", status, landed, page)
	}

	// The overview on B, with A's session.
	landed, overview := get(b, "/admin/")
	if landed != "/admin/" || !strings.Contains(overview, `action="/admin/logout"`) {
		t.Fatalf("overview on B with A's session: landed at %s, want the overview:\n%s", landed, overview)
	}
	csrf := token(overview)

	// A form on B: refused without the session's token, accepted with it.
	if status, _, page := postForm(b, "/admin/jobs/retry", url.Values{"all": {"1"}}); status != http.StatusForbidden {
		t.Fatalf("retry on B without a CSRF token: got %d, want 403:\n%s", status, page)
	}
	status, landed, page = postForm(b, "/admin/jobs/retry", url.Values{"csrf": {csrf}, "all": {"1"}})
	if status != http.StatusOK || landed != "/admin/jobs" || !strings.Contains(page, "There were no dead jobs to retry.") {
		t.Fatalf("retry on B with the session's CSRF token: got %d at %s, want the jobs page saying there was nothing to retry:\n%s", status, landed, page)
	}

	// Signing out on B ends the session on A too, even for a client that
	// kept the cookie.
	aURL, _ := url.Parse(a.URL + "/admin/")
	kept := jar.Cookies(aURL)
	if !slices.ContainsFunc(kept, func(c *http.Cookie) bool { return c.Name == "bridge_admin" }) {
		t.Fatalf("no session cookie kept for A: %v", kept)
	}
	if status, landed, page := postForm(b, "/admin/logout", url.Values{"csrf": {csrf}}); status != http.StatusOK || landed != "/admin/login" {
		t.Fatalf("sign out on B: got %d at %s, want the login page:\n%s", status, landed, page)
	}
	req, _ := http.NewRequest(http.MethodGet, a.URL+"/admin/", nil)
	for _, c := range kept {
		req.AddCookie(c)
	}
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/admin/login") {
		t.Errorf("overview on A with the session signed out on B: got %d to %q, want 303 to the login page", resp.StatusCode, loc)
	}
}
