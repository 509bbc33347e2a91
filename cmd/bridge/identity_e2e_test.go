package main

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/bridgeworks/bridge/segment"
	"github.com/segmentio/analytics-go/v3"
)

// TestAliasFromAKnownUserID: an alias whose previousId is a stored user ID
// joins two user IDs, which rule 3 turns into a conflict for an operator,
// instead of inventing an anonymous ID of that value.
func TestAliasFromAKnownUserID(t *testing.T) {
	b := startBridge(t, "")
	oldUser, newUser, anon := newUUID(t), newUUID(t), newUUID(t)
	cb := &recordingCallback{}
	client := newClient(t, b, cb)
	must(t, client.Enqueue(analytics.Identify{UserId: oldUser, AnonymousId: anon}))
	if err := client.Close(); err != nil {
		t.Fatal(err)
	}
	client = newClient(t, b, cb)
	must(t, client.Enqueue(analytics.Alias{PreviousId: oldUser, UserId: newUser}))
	if err := client.Close(); err != nil {
		t.Fatal(err)
	}
	if len(cb.failed) > 0 || cb.succeeded != 2 {
		t.Fatalf("analytics-go: got %d delivered and failures %v, want 2 delivered", cb.succeeded, cb.failed)
	}

	if _, ok := b.profile(t, "anonymous_id:"+oldUser); ok {
		t.Errorf("anonymous_id:%s exists: the previous user ID was taken for an anonymous ID", oldUser)
	}
	wantIdentifiers(t, mustProfile(t, b, "user_id:"+oldUser), "user_id:"+oldUser, "anonymous_id:"+anon)
	wantIdentifiers(t, mustProfile(t, b, "user_id:"+newUser), "user_id:"+newUser)

	r := b.do(t, http.MethodGet, "/api/v1/conflicts", nil, map[string]string{"Authorization": "Bearer " + testAdminPassword})
	var out struct {
		Conflicts []struct {
			A, B struct{ Kind, Value string }
		} `json:"conflicts"`
	}
	if err := json.Unmarshal(r.body, &out); r.status != http.StatusOK || err != nil {
		t.Fatalf("GET /api/v1/conflicts: %d %v: %s", r.status, err, r.body)
	}
	if len(out.Conflicts) != 1 {
		t.Fatalf("got %d conflicts, want 1 (the alias joining two user IDs): %s", len(out.Conflicts), r.body)
	}
	got := map[string]bool{out.Conflicts[0].A.Value: true, out.Conflicts[0].B.Value: true}
	if !got[oldUser] || !got[newUser] {
		t.Errorf("conflict: got %s, want between %s and %s", r.body, oldUser, newUser)
	}
}

// TestSessionTokenIsFoundAsJimoToken: in shared mode the token a page
// reports is the Jimo token of its user, and is found as one at once.
func TestSessionTokenIsFoundAsJimoToken(t *testing.T) {
	b := startBridge(t, "", "-allowed-origins", jimoPageOrigin)
	u, anon := newUUID(t), newUUID(t)
	sessionAnswer(t, b.session(t, jimoPageOrigin, map[string]any{"token": u, "anonymousId": anon, "signature": signUserID(testSigningSecret, u)}))
	p := mustProfile(t, b, "jimo_token:"+u)
	if p.UserID != u {
		t.Errorf("jimo_token:%s: got the profile of user %q, want %q", u, p.UserID, u)
	}
	wantIdentifiers(t, p, "user_id:"+u, "jimo_token:"+u, "anonymous_id:"+anon)
}

// TestSessionOfDeletedPersonGetsNoToken: after a signed deletion, a session
// report for the same user is stored as a trace but gets no Jimo token, so
// the page does not identify the deleted person to Jimo again.
func TestSessionOfDeletedPersonGetsNoToken(t *testing.T) {
	const secret = "shared-secret-for-deletion"
	b := startBridge(t, "", "-allowed-origins", jimoPageOrigin, "-segment-shared-secret", secret, "-jimo-token-mode", "derived")
	u := newUUID(t)
	report := func(id string) map[string]any {
		return map[string]any{"userId": u, "anonymousId": newUUID(t), "signature": signUserID(testSigningSecret, u), "messageId": id}
	}
	if _, token := sessionAnswer(t, b.session(t, jimoPageOrigin, report("s-1"))); token == "" {
		t.Fatal("before the deletion: got no Jimo token, want one")
	}
	del := []byte(`{"type":"delete","userId":"` + u + `","messageId":"del-1","timestamp":"` + time.Now().UTC().Format(time.RFC3339) + `"}`)
	if status, resp := b.post(t, "/segment/webhook", del, map[string]string{"Content-Type": "application/json", "X-Signature": segment.Sign([]byte(secret), del)}); status != http.StatusOK {
		t.Fatalf("delete: got %d %s", status, resp)
	}
	later := report("s-2")
	if _, token := sessionAnswer(t, b.session(t, jimoPageOrigin, later)); token != "" {
		t.Errorf("after the deletion: got Jimo token %q, want none", token)
	}
	if _, ok := b.profile(t, "user_id:"+u); ok {
		t.Errorf("user_id:%s is back after its deletion", u)
	}
}
