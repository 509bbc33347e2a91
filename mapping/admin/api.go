package admin

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/bridgeworks/bridge/mapping"
	"github.com/bridgeworks/bridge/mapping/store"
)

// maxAPIBody bounds a JSON request body of the admin API.
const maxAPIBody = 64 << 10

// RegisterAPI adds the admin operations as JSON to g (mounted at /api/v1),
// which must already require the admin password. Errors are *mapping.Error
// values for the server's error handler; repairs are logged with operator
// "api". Raw payloads and job payloads in answers have their secret-looking
// fields replaced by Redacted (see RedactJSON). POST bodies must be JSON (Content-Type: application/json), which a
// cross-site HTML form cannot send.
//
//	GET  /profiles?identifier=KIND:VALUE                                {"profile":{...}}, 404 if none
//	GET  /warnings                           {"warnings":[...]} (at most 500)
//	GET  /search?q=KIND:VALUE|VALUE[&kind=K][&prefix=1][&after=CURSOR][&limit=N]  {"hits":[...],"next":"..."}
//	GET  /profiles/:id                       {"profile":{...}}
//	GET  /profiles/:id/history               {"history":{"links","messages","jobs","traits"}}
//	GET  /conflicts[?after=LINK_ID][&limit=N] {"conflicts":[...],"next":"LINK_ID"}
//	POST /conflicts/:id/resolve {"action":"link"|"dismiss","reason"}
//	POST /links/:id/unmerge     {"reason"}
//	POST /profiles/delete       {"identifier":"KIND:VALUE","reason"}   {"deleted":N,"identifiers":[...]}
//	POST /jobs/retry            {"ids":[...]} or {"all":true}           {"retried":N}
//	GET  /jobs[?state=dead|pending|running|done|all][&limit=N]          {"jobs":[...]}
func (a *Admin) RegisterAPI(g *echo.Group) {
	g.GET("/profiles", a.apiLookup)
	g.GET("/warnings", a.apiWarnings)
	g.GET("/search", a.apiSearch)
	g.GET("/profiles/:id", a.apiProfile)
	g.GET("/profiles/:id/history", a.apiHistory)
	g.GET("/conflicts", a.apiConflicts)
	g.POST("/conflicts/:id/resolve", a.apiResolve)
	g.POST("/links/:id/unmerge", a.apiUnmerge)
	g.POST("/profiles/delete", a.apiDelete)
	g.POST("/jobs/retry", a.apiRetry)
	g.GET("/jobs", a.apiJobs)
}

// decodeJSON reads a JSON object of at most maxAPIBody bytes into v, refusing unknown fields.
func decodeJSON(c echo.Context, v any) error {
	ct, _, _ := mime.ParseMediaType(c.Request().Header.Get(echo.HeaderContentType))
	if ct != echo.MIMEApplicationJSON {
		return mapping.Errorf(mapping.CodeInvalid, "send the body as JSON with Content-Type: application/json")
	}
	dec := json.NewDecoder(io.LimitReader(c.Request().Body, maxAPIBody+1))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var syntax *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.Is(err, io.EOF):
			return mapping.Errorf(mapping.CodeInvalid, "the body is empty; send a JSON object")
		case errors.As(err, &syntax), errors.As(err, &typ), errors.Is(err, io.ErrUnexpectedEOF):
			return mapping.Errorf(mapping.CodeInvalid, "the body is not the expected JSON: %v", err)
		default:
			return mapping.Errorf(mapping.CodeInvalid, "the body could not be read as JSON: %v", err)
		}
	}
	if dec.More() {
		return mapping.Errorf(mapping.CodeInvalid, "send one JSON object")
	}
	return nil
}

// limitParam reads ?limit=, between 1 and max, default def.
func limitParam(c echo.Context, def, max int) (int, error) {
	raw := c.QueryParam("limit")
	if raw == "" {
		return def, nil
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < 1 || n > max {
		return 0, mapping.Errorf(mapping.CodeInvalid, "limit=%q: want a number from 1 to %d", raw, max)
	}
	return n, nil
}

func profileID(c echo.Context) (int64, error) {
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil || id <= 0 {
		return 0, mapping.Errorf(mapping.CodeInvalid, "profile ID %q: want a positive number", c.Param("id"))
	}
	return id, nil
}

// profileAnswer is the body of a profile read: by identifier or by ID.
type profileAnswer struct {
	Profile store.Profile `json:"profile"`
}

// apiLookup answers GET /profiles?identifier=KIND:VALUE.
func (a *Admin) apiLookup(c echo.Context) error {
	raw := c.QueryParam("identifier")
	if raw == "" {
		return mapping.Errorf(mapping.CodeInvalid, "add ?identifier=KIND:VALUE, for example ?identifier=user_id:u_123")
	}
	id, err := mapping.ParseIdentifier(raw)
	if err != nil {
		return err
	}
	p, err := a.store.ProfileOf(c.Request().Context(), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, profileAnswer{Profile: p})
}

// apiWarnings answers GET /warnings: identifiers an operator should look at.
func (a *Admin) apiWarnings(c echo.Context) error {
	ws, err := a.store.Warnings(c.Request().Context(), 500)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"warnings": ws})
}

func (a *Admin) apiSearch(c echo.Context) error {
	if c.QueryParam("q") == "" {
		return mapping.Errorf(mapping.CodeInvalid, "add ?q=KIND:VALUE or ?q=VALUE (every kind), and &prefix=1 for a prefix search")
	}
	kind, value, err := parseSearch(c.QueryParam("q"), c.QueryParam("kind"))
	if err != nil {
		return err
	}
	limit, err := limitParam(c, searchPageSize, 500)
	if err != nil {
		return err
	}
	prefix := c.QueryParam("prefix")
	res, err := a.store.Search(c.Request().Context(), store.SearchQuery{Kind: kind, Value: value, Prefix: prefix != "" && prefix != "0" && prefix != "false",
		Limit: limit, After: c.QueryParam("after")})
	if err != nil {
		return err
	}
	if res.Hits == nil {
		res.Hits = []store.SearchHit{}
	}
	return c.JSON(http.StatusOK, res)
}

func (a *Admin) apiProfile(c echo.Context) error {
	id, err := profileID(c)
	if err != nil {
		return err
	}
	p, err := a.store.ProfileByID(c.Request().Context(), id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, profileAnswer{Profile: p})
}

func (a *Admin) apiHistory(c echo.Context) error {
	id, err := profileID(c)
	if err != nil {
		return err
	}
	h, err := a.store.History(c.Request().Context(), id)
	if err != nil {
		return err
	}
	for i := range h.Messages {
		h.Messages[i].Raw = RedactJSON(h.Messages[i].Raw)
	}
	redactJobs(h.Jobs)
	return c.JSON(http.StatusOK, map[string]any{"history": h})
}

func (a *Admin) apiConflicts(c echo.Context) error {
	var after int64
	if p := c.QueryParam("after"); p != "" {
		var err error
		if after, err = strconv.ParseInt(p, 10, 64); err != nil || after < 0 {
			return mapping.Errorf(mapping.CodeInvalid, "after=%q: want the last link ID of the previous page", p)
		}
	}
	limit, err := limitParam(c, conflictPageSize, 500)
	if err != nil {
		return err
	}
	links, err := a.store.Conflicts(c.Request().Context(), limit, after)
	if err != nil {
		return err
	}
	if links == nil {
		links = []store.LinkInfo{}
	}
	next := ""
	if len(links) == limit {
		next = strconv.FormatInt(links[len(links)-1].ID, 10)
	}
	return c.JSON(http.StatusOK, map[string]any{"conflicts": links, "next": next})
}

func (a *Admin) apiResolve(c echo.Context) error {
	id, err := linkID(c)
	if err != nil {
		return err
	}
	var body struct {
		Action string `json:"action"`
		Reason string `json:"reason"`
	}
	if err := decodeJSON(c, &body); err != nil {
		return err
	}
	if body.Action != store.ResolveLink && body.Action != store.ResolveDismiss {
		return mapping.Errorf(mapping.CodeInvalid, `"action" must be "link" (link anyway) or "dismiss"`)
	}
	why, err := reason(body.Reason)
	if err != nil {
		return err
	}
	if err := a.store.ResolveConflict(c.Request().Context(), id, body.Action, OperatorAPI, why); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"linkId": id, "action": body.Action})
}

func (a *Admin) apiUnmerge(c echo.Context) error {
	id, err := linkID(c)
	if err != nil {
		return err
	}
	var body struct {
		Reason string `json:"reason"`
	}
	if err := decodeJSON(c, &body); err != nil {
		return err
	}
	why, err := reason(body.Reason)
	if err != nil {
		return err
	}
	if err := a.store.Unmerge(c.Request().Context(), id, OperatorAPI, why); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"linkId": id, "unmerged": true})
}

func (a *Admin) apiDelete(c echo.Context) error {
	var body struct {
		Identifier string `json:"identifier"`
		Reason     string `json:"reason"`
	}
	if err := decodeJSON(c, &body); err != nil {
		return err
	}
	if body.Identifier == "" {
		return mapping.Errorf(mapping.CodeInvalid, `"identifier" is required: KIND:VALUE of any identifier of the profile`)
	}
	id, err := mapping.ParseIdentifier(body.Identifier)
	if err != nil {
		return err
	}
	why, err := reason(body.Reason)
	if err != nil {
		return err
	}
	_, deleted, err := a.deleteProfileOf(c.Request().Context(), id, OperatorAPI, why)
	if err != nil {
		return err
	}
	if deleted == nil {
		deleted = []mapping.Identifier{}
	}
	return c.JSON(http.StatusOK, map[string]any{"deleted": len(deleted), "identifiers": deleted})
}

func (a *Admin) apiRetry(c echo.Context) error {
	var body struct {
		IDs []int64 `json:"ids"`
		All bool    `json:"all"`
	}
	if err := decodeJSON(c, &body); err != nil {
		return err
	}
	if len(body.IDs) == 0 && !body.All {
		return mapping.Errorf(mapping.CodeInvalid, `send {"ids":[JOB_ID,...]} or {"all":true}`)
	}
	if len(body.IDs) > 0 && body.All {
		return mapping.Errorf(mapping.CodeInvalid, `send either "ids" or "all", not both`)
	}
	n, err := a.store.RetryJobs(c.Request().Context(), body.IDs)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"retried": n})
}

func (a *Admin) apiJobs(c echo.Context) error {
	state, query, ok := jobState(c)
	if !ok {
		return mapping.Errorf(mapping.CodeInvalid, "state=%q: want dead, pending, running, done or all", state)
	}
	limit, err := limitParam(c, 100, 1000)
	if err != nil {
		return err
	}
	jobs, err := a.store.Jobs(c.Request().Context(), query, limit)
	if err != nil {
		return err
	}
	if jobs == nil {
		jobs = []store.JobInfo{}
	}
	redactJobs(jobs)
	return c.JSON(http.StatusOK, map[string]any{"jobs": jobs})
}

// redactJobs replaces, in place, the secret-looking fields of the jobs'
// payloads (see RedactJSON): a payload carries what a client sent (traits,
// properties), which may include credentials.
func redactJobs(jobs []store.JobInfo) {
	for i := range jobs {
		jobs[i].Payload = RedactJSON(jobs[i].Payload)
	}
}
