package main

import (
	"encoding/json"
	"net/http"
	"testing"

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
