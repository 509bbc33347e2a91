package store

import (
	"bytes"
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

// traitEntry is one trait value with what decides last-write-wins.
type traitEntry struct {
	Value    any            `json:"v"`
	OrderKey string         `json:"k"`
	Source   mapping.Source `json:"s"`
}

type traitDoc map[string]traitEntry

// UnmarshalJSON decodes numbers as json.Number, so integers beyond 2^53
// (Snowflake IDs) keep every digit however often a profile is merged.
func (d *traitDoc) UnmarshalJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]traitEntry
	if err := dec.Decode(&m); err != nil {
		return err
	}
	*d = m
	return nil
}

// merge sets every trait of m whose order key is newer than the stored one.
func (d traitDoc) merge(traits map[string]any, key string, source mapping.Source) {
	for k, v := range traits {
		if old, ok := d[k]; ok && old.OrderKey >= key {
			continue
		}
		d[k] = traitEntry{Value: v, OrderKey: key, Source: source}
	}
}

// mergeTraits merges the message's traits (and email) into those of
// identifier id. fresh says the identifier was created by this message, so it
// has no traits to read.
func (w *writer) mergeTraits(ctx context.Context, id int64, m mapping.Message, fresh bool) error {
	traits := m.Traits
	if m.Email != "" {
		traits = make(map[string]any, len(m.Traits)+1)
		for k, v := range m.Traits {
			traits[k] = v
		}
		traits["email"] = m.Email
	}
	if len(traits) == 0 {
		return nil
	}
	doc := traitDoc{}
	var raw string
	if !fresh {
		err := w.get(ctx, &raw, `SELECT doc FROM traits WHERE identifier_id = ?`, id)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("read traits: %w", err)
		}
	}
	if raw != "" {
		if err := json.Unmarshal([]byte(raw), &doc); err != nil {
			return fmt.Errorf("read traits of identifier %d: %w", id, err)
		}
	}
	doc.merge(traits, mapping.OrderKey(m.Timestamp, m.Source, m.ID, 0), m.Source)
	b, err := json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("encode traits: %w", err)
	}
	var email sql.NullString
	if e, ok := doc["email"].Value.(string); ok && e != "" {
		email = sql.NullString{String: e, Valid: true}
	}
	return w.later(ctx, "write traits", `INSERT INTO traits (identifier_id, email, doc) VALUES (?, ?, ?)
		ON CONFLICT (identifier_id) DO UPDATE SET email = excluded.email, doc = excluded.doc`, id, email, string(b))
}

// Profile is one person as the bridge knows them: a connected component of applied links.
type Profile struct {
	ID int64 `json:"id"`
	// UserID is the shared user ID, "" while the profile is anonymous.
	UserID      string              `json:"userId"`
	Identifiers []ProfileIdentifier `json:"identifiers"`
	Traits      map[string]any      `json:"traits"`
	// Warnings lists what an operator should look at, e.g. a guessable user ID.
	Warnings  []string  `json:"warnings"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// ProfileIdentifier is an identifier of a profile with when and how it was first seen.
type ProfileIdentifier struct {
	mapping.Identifier
	FirstSeenAt    time.Time      `json:"firstSeenAt"`
	FirstSource    mapping.Source `json:"firstSource"`
	FirstMessageID string         `json:"firstMessageId"`
	Warning        string         `json:"warning,omitempty"`
}

type identifierRow struct {
	ID             int64          `db:"id"`
	Kind           mapping.Kind   `db:"kind"`
	Value          string         `db:"value"`
	ProfileID      int64          `db:"profile_id"`
	FirstSeenAt    int64          `db:"first_seen_at"`
	FirstSource    mapping.Source `db:"first_source"`
	FirstMessageID string         `db:"first_message_id"`
	Warning        string         `db:"warning"`
}

// ProfileOf returns the profile holding id. An email finds the profile whose
// traits carry it when merging on email is off. Unknown: a CodeNotFound error.
func (s *Store) ProfileOf(ctx context.Context, id mapping.Identifier) (Profile, error) {
	var profileID int64
	err := sql.ErrNoRows // a value holding NUL is never an identifier (nor can PostgreSQL compare it)
	if !strings.ContainsRune(id.Value, 0) {
		err = s.read.GetContext(ctx, &profileID, `SELECT profile_id FROM identifiers WHERE kind = ? AND value = ? AND profile_id <> 0`, id.Kind, id.Value)
	}
	if errors.Is(err, sql.ErrNoRows) && id.Kind == mapping.KindEmail && !s.opts.MergeOnEmail {
		err = s.read.GetContext(ctx, &profileID, `SELECT i.profile_id FROM traits t JOIN identifiers i ON i.id = t.identifier_id
			WHERE t.email = ? AND i.profile_id <> 0 ORDER BY i.profile_id LIMIT 1`, id.Value)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return Profile{}, mapping.Errorf(mapping.CodeNotFound, "no profile has %s; check the kind and the value, or search by another identifier", id)
	}
	if err != nil {
		return Profile{}, fmt.Errorf("find %s: %w", id, err)
	}
	return s.profile(ctx, profileID)
}

func (s *Store) profile(ctx context.Context, profileID int64) (Profile, error) {
	var p profileRow
	var updated int64
	row := s.read.QueryRowxContext(ctx, `SELECT id, user_id, updated_at FROM profiles WHERE id = ?`, profileID)
	if err := row.Scan(&p.ID, &p.UserID, &updated); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return Profile{}, mapping.Errorf(mapping.CodeNotFound, "profile %d does not exist (it may have been merged or deleted)", profileID)
		}
		return Profile{}, fmt.Errorf("read profile %d: %w", profileID, err)
	}
	var rows []identifierRow
	if err := s.read.SelectContext(ctx, &rows, `SELECT id, kind, value, profile_id, first_seen_at, first_source, first_message_id, warning
		FROM identifiers WHERE profile_id = ? ORDER BY first_seen_at, id`, profileID); err != nil {
		return Profile{}, fmt.Errorf("read identifiers of profile %d: %w", profileID, err)
	}
	out := Profile{ID: p.ID, UserID: p.UserID.String, Traits: map[string]any{}, Identifiers: []ProfileIdentifier{}, Warnings: []string{}, UpdatedAt: time.Unix(0, updated).UTC()}
	ids := make([]int64, len(rows))
	hasEmail := map[string]bool{}
	for i, r := range rows {
		ids[i] = r.ID
		out.Identifiers = append(out.Identifiers, ProfileIdentifier{
			Identifier:  mapping.Identifier{Kind: r.Kind, Value: r.Value},
			FirstSeenAt: time.Unix(0, r.FirstSeenAt).UTC(), FirstSource: r.FirstSource, FirstMessageID: r.FirstMessageID, Warning: r.Warning,
		})
		if r.Kind == mapping.KindEmail {
			hasEmail[r.Value] = true
		}
		if r.Warning != "" {
			out.Warnings = append(out.Warnings, fmt.Sprintf("%s: %s", r.Identifier(), r.Warning))
		}
	}
	if len(ids) > 0 {
		traits, emails, err := s.traits(ctx, ids)
		if err != nil {
			return Profile{}, err
		}
		out.Traits = traits
		for _, e := range emails {
			if !hasEmail[e.Value] {
				out.Identifiers = append(out.Identifiers, e)
			}
		}
	}
	return out, nil
}

func (r identifierRow) Identifier() mapping.Identifier {
	return mapping.Identifier{Kind: r.Kind, Value: r.Value}
}

// traits merges the traits of the given identifiers, last write wins, and
// returns the distinct emails they carry as attributes, each with when and
// from where it was set.
func (s *Store) traits(ctx context.Context, ids []int64) (map[string]any, []ProfileIdentifier, error) {
	q, args, err := sqlx.In(`SELECT doc FROM traits WHERE identifier_id IN (?)`, ids)
	if err != nil {
		return nil, nil, err
	}
	var docs []string
	if err := s.read.SelectContext(ctx, &docs, s.read.Rebind(q), args...); err != nil {
		return nil, nil, fmt.Errorf("read traits: %w", err)
	}
	var emails []ProfileIdentifier
	seen := map[string]int{} // email → index in emails
	merged, err := mergeTraitDocs(docs, func(d traitDoc) {
		// An email carried by several identifiers was first seen when the
		// earliest of them got it (Search reports the same time).
		if e, ok := d["email"]; ok {
			if v, ok := e.Value.(string); ok && v != "" {
				at := orderKeyTime(e.OrderKey)
				if i, dup := seen[v]; !dup {
					seen[v] = len(emails)
					emails = append(emails, ProfileIdentifier{Identifier: mapping.Identifier{Kind: mapping.KindEmail, Value: v}, FirstSeenAt: at, FirstSource: e.Source})
				} else if at.Before(emails[i].FirstSeenAt) {
					emails[i].FirstSeenAt, emails[i].FirstSource = at, e.Source
				}
			}
		}
	})
	if err != nil {
		return nil, nil, err
	}
	sort.Slice(emails, func(i, j int) bool { return emails[i].Value < emails[j].Value })
	out := make(map[string]any, len(merged))
	for k, e := range merged {
		out[k] = e.Value
	}
	return out, emails, nil
}

// Warning is an identifier an operator should look at, with the reason.
type Warning struct {
	mapping.Identifier
	ProfileID int64  `json:"profileId" db:"profile_id"`
	Reason    string `json:"reason" db:"warning"`
}

// Warnings lists up to limit identifiers that carry a warning (for example a
// user ID too guessable to hand to Jimo), newest first.
func (s *Store) Warnings(ctx context.Context, limit int) ([]Warning, error) {
	var rows []struct {
		Kind      mapping.Kind `db:"kind"`
		Value     string       `db:"value"`
		ProfileID int64        `db:"profile_id"`
		Warning   string       `db:"warning"`
	}
	if err := s.read.SelectContext(ctx, &rows, `SELECT kind, value, profile_id, warning FROM identifiers
		WHERE warning <> '' ORDER BY id DESC LIMIT ?`, limit); err != nil {
		return nil, fmt.Errorf("list warnings: %w", err)
	}
	out := make([]Warning, len(rows))
	for i, r := range rows {
		out[i] = Warning{Identifier: mapping.Identifier{Kind: r.Kind, Value: r.Value}, ProfileID: r.ProfileID, Reason: r.Warning}
	}
	return out, nil
}

// mergeTraitDocs decodes the trait documents of a profile's identifiers and
// merges them last-write-wins by event order: the profile's traits. each, if
// not nil, sees every document as decoded. The profile page, the lookup API
// and the history all merge through it.
func mergeTraitDocs(docs []string, each func(traitDoc)) (traitDoc, error) {
	merged := traitDoc{}
	for _, raw := range docs {
		var d traitDoc
		if err := json.Unmarshal([]byte(raw), &d); err != nil {
			return nil, fmt.Errorf("decode traits: %w", err)
		}
		for k, e := range d {
			if old, ok := merged[k]; !ok || e.OrderKey > old.OrderKey {
				merged[k] = e
			}
		}
		if each != nil {
			each(d)
		}
	}
	return merged, nil
}
