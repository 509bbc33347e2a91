package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/bridgeworks/bridge/mapping"
)

// Write-behind (PostgreSQL).
//
// On PostgreSQL each statement the group committer sends would cost it a
// network round trip, and most of a message's statements are writes whose
// result it never reads (a link, a reference, traits, a job). Those are
// written behind: later queues them in the writer, and they go, in their
// order, in one pgx batch (a pipeline) with the next statement whose result
// the writer needs: a read, an exec it inspects, SAVEPOINT, RELEASE, COMMIT.
// So every read still sees every earlier write, and a queued statement that
// fails fails the statement it travels with: the group fails as it would
// have had the write run at once (commitGroup then commits its submissions
// one by one), with an error naming the queued statement.
//
// The rows the writer creates and then refers to (messages, profiles,
// identifiers) get their IDs without a round trip each: drawn ahead, many
// at a time, from their identity sequences (nextID), so that their INSERTs
// are written behind too. Drawn under the graph lock (postgres.go), they
// increase in commit order as IDs the INSERT assigned would; a drawn ID left
// unused is a gap, as a rolled-back INSERT leaves one. Whether a message is
// already stored is told without ON CONFLICT: the keys of the group's
// messages already stored are read once, at its first message, and those
// the group stores are added as it goes; while the group holds the graph
// lock no other transaction writes messages.
//
// On SQLite, which has no round trips to save, later runs the statement at
// once and IDs come from the INSERT, as before.

// behind is a PostgreSQL writer's write-behind state; see above.
type behind struct {
	group []*submission
	queue []queued
	// ids holds, per table, the IDs drawn ahead and not used yet, ascending.
	ids map[string][]int64
	// stored holds the keys of the group's messages that are stored (read
	// once, at the group's first message: nil until then) or that the group
	// has stored since.
	stored map[messageKey]bool
}

// queued is a statement written behind: its text rebound, its arguments,
// and what to call it in an error.
type queued struct {
	what, query string
	args        []any
}

type messageKey struct {
	source mapping.Source
	id     string
}

// later runs a write whose result the writer does not need: at once on
// SQLite, written behind on PostgreSQL (see the top of this file). what
// names the statement in its error, wherever that error surfaces.
func (w *writer) later(ctx context.Context, what, query string, args ...any) error {
	if w.behind == nil {
		if _, err := w.exec(ctx, query, args...); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
	w.behind.queue = append(w.behind.queue, queued{what: what, query: w.store.rebound(query), args: args})
	return nil
}

// flush sends what is written behind (nothing on SQLite).
func (w *writer) flush(ctx context.Context) error {
	if w.behind == nil || len(w.behind.queue) == 0 {
		return nil
	}
	return w.roundTrip(ctx, "", nil, nil)
}

// discard drops what is written behind, for a rollback that undoes it anyway.
func (w *writer) discard() {
	if w.behind != nil {
		w.behind.queue = nil
	}
}

// roundTrip sends, in one batch, the statements written behind and then
// query (rebound; none if ""), and hands query's result to read. The
// queue is empty afterwards, whatever the outcome.
func (w *writer) roundTrip(ctx context.Context, query string, args []any, read func(pgx.BatchResults) error) error {
	queue := w.behind.queue
	w.behind.queue = nil
	b := &pgx.Batch{}
	for _, q := range queue {
		b.Queue(q.query, q.args...)
	}
	if query != "" {
		b.Queue(query, args...)
	}
	return w.conn.Raw(func(dc any) error {
		br := dc.(*stdlib.Conn).Conn().SendBatch(ctx, b)
		for i, q := range queue {
			if _, err := br.Exec(); err != nil {
				br.Close()
				return fmt.Errorf("%s (statement %d of %d written behind): %w", q.what, i+1, len(queue), err)
			}
		}
		if read != nil {
			if err := read(br); err != nil {
				br.Close()
				return err
			}
		}
		return br.Close()
	})
}

// execBehind is exec on PostgreSQL: query goes with what is written behind.
func (w *writer) execBehind(ctx context.Context, query string, args []any) (sql.Result, error) {
	var res sql.Result
	err := w.roundTrip(ctx, w.store.rebound(query), args, func(br pgx.BatchResults) error {
		tag, err := br.Exec()
		res = driver.RowsAffected(tag.RowsAffected())
		return err
	})
	return res, err
}

// getBehind is get on PostgreSQL. A single value (the reads on the hot
// path) is read in the round trip that sends what is written behind;
// anything else is read by sqlx, as on SQLite, once that is sent.
func (w *writer) getBehind(ctx context.Context, dest any, query string, args []any) error {
	switch dest.(type) {
	case *bool, *int, *int64, *string:
		return w.roundTrip(ctx, w.store.rebound(query), args, func(br pgx.BatchResults) error {
			return br.QueryRow().Scan(dest) // no row: pgx.ErrNoRows, which is sql.ErrNoRows
		})
	}
	if err := w.flush(ctx); err != nil {
		return err
	}
	return w.conn.GetContext(ctx, dest, w.store.rebound(query), args...)
}

// queryBehind runs query (rebound) in the round trip that sends what is
// written behind and calls scan for each row.
func (w *writer) queryBehind(ctx context.Context, query string, args []any, scan func(pgx.Rows) error) error {
	return w.roundTrip(ctx, w.store.rebound(query), args, func(br pgx.BatchResults) error {
		rows, err := br.Query()
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			if err := scan(rows); err != nil {
				return err
			}
		}
		return rows.Err()
	})
}

// idsPerMessage is how many IDs of a table nextID draws at a time for each
// message of the group not yet applied: most messages that create rows are
// about a new person, with one profile and two or three identifiers. Too few
// costs a round trip for more; too many, a gap.
var idsPerMessage = map[string]int{"profiles": 1, "identifiers": 2}

// nextID returns an ID for a new row of table on PostgreSQL, drawn ahead
// from the table's identity sequence (for messages, by newMessage).
func (w *writer) nextID(ctx context.Context, table string) (int64, error) {
	b := w.behind
	if len(b.ids[table]) == 0 {
		left := len(b.ids["messages"]) + 1 // the messages not yet given an ID, and this one
		if err := w.drawIDs(ctx, table, max(1, idsPerMessage[table]*left)); err != nil {
			return 0, err
		}
	}
	id := b.ids[table][0]
	b.ids[table] = b.ids[table][1:]
	return id, nil
}

// drawIDs draws n IDs from table's identity sequence into w.behind.ids.
func (w *writer) drawIDs(ctx context.Context, table string, n int) error {
	if w.behind.ids == nil {
		w.behind.ids = map[string][]int64{}
	}
	ids := make([]int64, 0, n)
	err := w.queryBehind(ctx, `SELECT nextval(pg_get_serial_sequence(?, 'id')) FROM generate_series(1, ?)`, []any{table, n}, func(rows pgx.Rows) error {
		var id int64
		err := rows.Scan(&id)
		ids = append(ids, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("draw IDs for %s: %w", table, err)
	}
	slices.Sort(ids)
	w.behind.ids[table] = ids
	return nil
}

// newMessage says, on PostgreSQL, whether m is not stored yet, and counts
// it stored from then on. At the group's first message it reads which of
// the group's messages are stored, and draws an ID for each of the others
// (nextID hands them out in the order of the group).
func (w *writer) newMessage(ctx context.Context, m mapping.Message) (bool, error) {
	b := w.behind
	if b.stored == nil {
		if err := w.readStored(ctx); err != nil {
			return false, err
		}
	}
	key := messageKey{m.Source, m.ID}
	if b.stored[key] {
		return false, nil
	}
	if len(b.ids["messages"]) == 0 {
		return false, fmt.Errorf("message %s %s is not of the group", m.Source, m.ID)
	}
	b.stored[key] = true
	return true, nil
}

// readStored reads which of the group's messages are stored, and draws an
// ID for each of the others.
func (w *writer) readStored(ctx context.Context) error {
	b := w.behind
	b.stored = map[messageKey]bool{}
	var sources, ids []string
	seen := map[messageKey]bool{}
	for _, sub := range b.group {
		for _, m := range sub.msgs {
			if k := (messageKey{m.Source, m.ID}); !seen[k] {
				seen[k] = true
				sources, ids = append(sources, string(m.Source)), append(ids, m.ID)
			}
		}
	}
	// PostgreSQL alone runs this, so it may take the keys as two arrays.
	err := w.queryBehind(ctx, `SELECT source, message_id FROM messages
		WHERE (source, message_id) IN (SELECT * FROM unnest(?::text[], ?::text[]))`, []any{sources, ids}, func(rows pgx.Rows) error {
		var k messageKey
		err := rows.Scan(&k.source, &k.id)
		b.stored[k] = true
		return err
	})
	if err != nil {
		return fmt.Errorf("read stored messages: %w", err)
	}
	if fresh := len(seen) - len(b.stored); fresh > 0 {
		return w.drawIDs(ctx, "messages", fresh)
	}
	return nil
}
