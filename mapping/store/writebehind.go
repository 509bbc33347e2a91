package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/jmoiron/sqlx"

	"github.com/bridgeworks/bridge/mapping"
)

// Write-behind.
//
// Most of a message's statements are writes whose result the group
// committer never reads (a link, a reference, traits, a job). Those are
// written behind: later queues them in the writer, and they are executed,
// in their order, before the next statement whose result the writer needs
// (a read, an exec it inspects, SAVEPOINT, RELEASE, COMMIT). On PostgreSQL
// they go with that statement in one pgx batch (a pipeline), saving a
// network round trip each; on SQLite they run just before it, on the
// committer's connection. So every read still sees every earlier write,
// and a queued statement that fails fails the statement it travels with:
// the group fails as it would have had the write run at once (commitGroup
// then commits its submissions one by one), with an error naming the
// queued statement.
//
// Many messages' writes are executed together, and each engine's cost is
// per statement as much as per row (a round trip, or SQLite's binding,
// stepping and the cgo calls around them): INSERTs of one text are merged
// into multi-row INSERTs. A merged row moves ahead of the statements
// queued after the one it joins, which is safe because they are of other
// tables (rows of one table keep their order) and every statement written
// behind reads and writes its own table alone.
//
// The rows the writer creates and then refers to (messages, profiles,
// identifiers) get their IDs in the writer (nextID), so that their INSERTs
// are written behind too. On PostgreSQL they are drawn ahead, many at a
// time, from their identity sequences; drawn under the graph lock
// (postgres.go), they increase in commit order as IDs the INSERT assigned
// would, and one left unused is a gap, as a rolled-back INSERT leaves one.
// On SQLite the writer holds the database's write lock, so it counts on
// from the largest ID stored (and, for profiles, from the largest ever
// assigned: their IDs are never reused), as the INSERT would have. Whether
// a message is already stored is told without ON CONFLICT: the keys of the
// group's messages already stored are read once, at its first message, and
// those the group stores are added as it goes; while the group holds the
// write lock no other transaction writes messages.
//
// Every message starts by reading its identifiers (lookup). The stored
// identifiers all the group's messages name are read once, with the stored
// messages (readKnown); with those the group creates (made) they answer
// each lookup without a statement until something else may have changed
// stored identifiers (stale: a merge, a replay, a deletion, a rollback to
// a savepoint). After that a lookup is one statement, which waits for the
// writes queued before it only if one of them changes stored identifiers
// (changed); the identifiers created since are added from created. So a
// group of new people's messages costs a few reads in all, and its writes
// a few statements at its end.
//
// All of this rests on one rule: every statement that changes identifiers
// goes through the writer (exec, later, execIn) and names its table, which
// is how the writer notices that stored identifiers may have changed. A
// statement run on w.conn directly would break the lookups silently.

// behind is a writer's write-behind state; see above.
type behind struct {
	group []*submission
	queue []queued
	// created holds the identifiers whose INSERTs are queued; changed says
	// that a queued statement changes stored identifiers (see lookupBehind).
	created map[identityKey]identity
	changed bool
	// known holds the stored identifiers of the keys in asked: those the
	// group's messages name, read with stored. made holds every identifier
	// the group created. Until stale, nothing else changed stored
	// identifiers, and they answer lookups (see recall).
	known, made map[identityKey]identity
	asked       map[identityKey]bool
	stale       bool
	// shapes holds what tableOf and insertShape found in each text queued.
	shapes map[string]shape
	// ids holds, per table, the IDs drawn ahead and not used yet, ascending
	// (PostgreSQL); last holds, per table, the last ID assigned (SQLite).
	ids  map[string][]int64
	last map[string]int64
	// stored holds the keys of the group's messages that are stored (read
	// at the group's first message, and again after messages are deleted:
	// nil until then) or that the group has stored since; inGroup holds the
	// keys of all the group's messages.
	stored, inGroup map[messageKey]bool
}

// queued is a statement written behind, or several rows of one INSERT text
// merged: its table, its text (with ?), its arguments (one list per row),
// and what to call it in an error.
type queued struct {
	what, table, query string
	rows               [][]any
	// head, tuple, tail are an INSERT's text around its VALUES tuples ("" if
	// not an INSERT that can be merged); see insertShape.
	head, tuple, tail string
	// upserted holds, for an INSERT ... ON CONFLICT DO UPDATE, the first
	// value of each row: its conflict target, which no two merged rows may
	// share (a statement may not update a row twice).
	upserted map[any]bool
}

// shape is a statement's table, and its VALUES tuples if it is an INSERT
// that can be merged (see insertShape).
type shape struct {
	table, head, tuple, tail string
	n                        int
}

type identityKey struct {
	kind  mapping.Kind
	value string
}

type messageKey struct {
	source mapping.Source
	id     string
}

// later queues a write whose result the writer does not need (see the top
// of this file). what names the statement in its error, wherever that
// error surfaces. The statement must read and write its own table alone
// (INSERT INTO, UPDATE or DELETE FROM it, no subquery of another table),
// and an INSERT into identifiers must be of an identifier the writer adds
// to created.
func (w *writer) later(ctx context.Context, what, query string, args ...any) error {
	b := w.behind
	sh, ok := b.shapes[query]
	if !ok {
		sh.table = tableOf(query)
		sh.head, sh.tuple, sh.tail, sh.n = insertShape(query)
		if b.shapes == nil {
			b.shapes = map[string]shape{}
		}
		b.shapes[query] = sh
	}
	q := queued{what: what, table: sh.table, query: query, head: sh.head, tuple: sh.tuple, tail: sh.tail}
	n := sh.n
	if q.table == "identifiers" && q.head == "" {
		b.changed, b.stale = true, true
	}
	rows := make([][]any, n)
	for i := range rows {
		rows[i] = args[i*len(args)/n : (i+1)*len(args)/n]
	}
	upsert := strings.Contains(q.tail, "DO UPDATE")
	// Join the last statement queued for the table if it is the same INSERT
	// of the same name (its error names every row).
	for i := len(b.queue) - 1; i >= 0; i-- {
		if last := &b.queue[i]; last.table == q.table {
			if q.head != "" && last.what == q.what && last.head == q.head && last.tuple == q.tuple && last.tail == q.tail &&
				(!upsert || n == 1 && last.upserted != nil && !last.upserted[args[0]]) {
				last.rows = append(last.rows, rows...)
				if upsert {
					last.upserted[args[0]] = true
				}
				return nil
			}
			break
		}
	}
	q.rows = rows
	if upsert && n == 1 {
		q.upserted = map[any]bool{args[0]: true}
	}
	b.queue = append(b.queue, q)
	return nil
}

// tableOf returns the table an INSERT INTO, UPDATE or DELETE FROM writes.
func tableOf(query string) string {
	f := strings.Fields(query)
	if len(f) > 2 && (f[0] == "INSERT" || f[0] == "DELETE") {
		return strings.TrimSuffix(f[2], "(")
	}
	if len(f) > 1 && f[0] == "UPDATE" {
		return f[1]
	}
	return ""
}

// insertShape splits an INSERT whose rows can be merged with others of its
// text (VALUES with one or more equal tuples) into the text before the
// tuples, one tuple, the text after them, and how many tuples it has. For
// any other statement, head is "" and n 1.
func insertShape(query string) (head, tuple, tail string, n int) {
	i := strings.Index(query, "VALUES (")
	if !strings.HasPrefix(query, "INSERT INTO ") || i < 0 {
		return "", "", "", 1
	}
	head, rest := query[:i+len("VALUES ")], query[i+len("VALUES "):]
	tuple = rest[:strings.IndexByte(rest, ')')+1]
	for {
		rest, n = rest[len(tuple):], n+1
		if !strings.HasPrefix(rest, ", "+tuple) {
			return head, tuple, rest, n
		}
		rest = rest[len(", "):]
	}
}

// mergedRowsMax bounds the rows of one merged INSERT (PostgreSQL takes at
// most 65,535 arguments a statement, SQLite 32,766). Merged INSERTs have 1, 2, 4, ... up to
// this many rows, so that few texts are prepared.
const mergedRowsMax = 256

// statement is one statement to send: its text rebound, its arguments,
// and how many rows of an INSERT it holds.
type statement struct {
	query string
	args  []any
	rows  int
}

// statements returns q as statements to send, its rows merged.
func (w *writer) statements(q queued) []statement {
	if q.head == "" {
		return []statement{{w.store.rebound(q.query), q.rows[0], 1}}
	}
	var out []statement
	rows := q.rows
	for len(rows) > 0 {
		k := mergedRowsMax
		for k > len(rows) {
			k /= 2
		}
		var args []any
		for _, r := range rows[:k] {
			args = append(args, r...)
		}
		out = append(out, statement{w.store.rebound(q.head + strings.TrimSuffix(strings.Repeat(q.tuple+", ", k), ", ") + q.tail), args, k})
		rows = rows[k:]
	}
	return out
}

// flush executes what is written behind.
func (w *writer) flush(ctx context.Context) error {
	if len(w.behind.queue) == 0 {
		return nil
	}
	if !w.store.postgres {
		return w.execQueued(ctx)
	}
	return w.roundTrip(ctx, "", nil, nil)
}

// discard drops what is written behind, for a rollback that undoes it
// anyway (and perhaps more: made no longer holds).
func (w *writer) discard() {
	w.behind.queue, w.behind.created, w.behind.changed, w.behind.stale = nil, nil, false, true
}

// changes notes that query, executed at once, may change stored
// identifiers, or delete stored messages (which the group then reads again:
// one of its messages may come after its own erasure).
func (b *behind) changes(query string) {
	switch tableOf(query) {
	case "identifiers":
		b.stale = true
	case "messages":
		if strings.HasPrefix(query, "DELETE") {
			b.stored = nil
		}
	}
}

// take empties the queue and returns what it held.
func (b *behind) take() []queued {
	queue := b.queue
	b.queue, b.created, b.changed = nil, nil, false
	return queue
}

// execQueued executes, on SQLite, the statements written behind, each
// prepared once on the committer's connection. The queue is empty
// afterwards, whatever the outcome.
func (w *writer) execQueued(ctx context.Context) error {
	for _, q := range w.behind.take() {
		for _, st := range w.statements(q) {
			stmt, err := w.store.prepared(ctx, st.query)
			if err == nil {
				_, err = stmt.ExecContext(ctx, st.args...)
			}
			if err != nil {
				return fmt.Errorf("%s (written behind, %d rows): %w", q.what, st.rows, err)
			}
		}
	}
	return nil
}

// roundTrip sends, on PostgreSQL, in one batch, the statements written
// behind and then query (rebound; none if ""), and hands query's result to
// read. The queue is empty afterwards, whatever the outcome.
func (w *writer) roundTrip(ctx context.Context, query string, args []any, read func(pgx.BatchResults) error) error {
	b := &pgx.Batch{}
	var names []string // what each statement sent for the queue is, for its error
	for _, q := range w.behind.take() {
		for _, st := range w.statements(q) {
			b.Queue(st.query, st.args...)
			names = append(names, fmt.Sprintf("%s (written behind, %d rows)", q.what, st.rows))
		}
	}
	if query != "" {
		b.Queue(query, args...)
	}
	return w.conn.Raw(func(dc any) error {
		br := dc.(*stdlib.Conn).Conn().SendBatch(ctx, b)
		for _, name := range names {
			if _, err := br.Exec(); err != nil {
				br.Close()
				return fmt.Errorf("%s: %w", name, err)
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

// exec runs a statement whose result the caller needs now (it may be only
// whether it failed), after what is written behind; see later for one
// whose result it does not.
func (w *writer) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	w.behind.changes(query)
	if !w.store.postgres {
		st, err := w.preparedAfter(ctx, query)
		if err != nil {
			return nil, err
		}
		return st.ExecContext(ctx, args...)
	}
	var res sql.Result
	err := w.roundTrip(ctx, w.store.rebound(query), args, func(br pgx.BatchResults) error {
		tag, err := br.Exec()
		res = driver.RowsAffected(tag.RowsAffected())
		return err
	})
	return res, err
}

// preparedAfter returns query prepared (once) on SQLite's committer
// connection, after executing what is written behind.
func (w *writer) preparedAfter(ctx context.Context, query string) (*sqlx.Stmt, error) {
	if err := w.flush(ctx); err != nil {
		return nil, err
	}
	return w.store.prepared(ctx, query)
}

// get reads one row into dest after what is written behind. On PostgreSQL
// a single value (the reads on the hot path) is read in the round trip
// that sends it; anything else is read by sqlx once it is sent.
func (w *writer) get(ctx context.Context, dest any, query string, args ...any) error {
	if !w.store.postgres {
		st, err := w.preparedAfter(ctx, query)
		if err != nil {
			return err
		}
		return st.GetContext(ctx, dest, args...)
	}
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

// sel reads rows into dest after what is written behind.
func (w *writer) sel(ctx context.Context, dest any, query string, args ...any) error {
	w.behind.changes(query)
	if !w.store.postgres {
		st, err := w.preparedAfter(ctx, query)
		if err != nil {
			return err
		}
		return st.SelectContext(ctx, dest, args...)
	}
	if err := w.flush(ctx); err != nil {
		return err
	}
	return w.conn.SelectContext(ctx, dest, w.store.rebound(query), args...)
}

// rowScanner is a row of a result, as pgx and database/sql both give it.
type rowScanner interface{ Scan(dest ...any) error }

// query runs query after what is written behind (on PostgreSQL, in the
// round trip that sends it) and calls scan for each row.
func (w *writer) query(ctx context.Context, query string, args []any, scan func(rowScanner) error) error {
	if !w.store.postgres {
		if err := w.flush(ctx); err != nil {
			return err
		}
		return w.queryNow(ctx, query, args, scan)
	}
	return w.roundTrip(ctx, w.store.rebound(query), args, func(br pgx.BatchResults) error {
		rows, err := br.Query()
		return eachRow(rows, err, func() { rows.Close() }, scan)
	})
}

// queryNow runs query at once, whatever is written behind, and calls scan
// for each row.
func (w *writer) queryNow(ctx context.Context, query string, args []any, scan func(rowScanner) error) error {
	if w.store.postgres {
		return w.conn.Raw(func(dc any) error {
			rows, err := dc.(*stdlib.Conn).Conn().Query(ctx, w.store.rebound(query), args...)
			return eachRow(rows, err, func() { rows.Close() }, scan)
		})
	}
	st, err := w.store.prepared(ctx, query)
	if err != nil {
		return err
	}
	rows, err := st.QueryContext(ctx, args...)
	return eachRow(rows, err, func() { rows.Close() }, scan)
}

// eachRow calls scan for each of rows (as a query returned them, with err)
// and then closes them (closeRows).
func eachRow[R interface {
	rowScanner
	Next() bool
	Err() error
}](rows R, err error, closeRows func(), scan func(rowScanner) error) error {
	if err != nil {
		return err
	}
	defer closeRows()
	for rows.Next() {
		if err := scan(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// idsPerMessage is how many IDs of a table nextID draws at a time on
// PostgreSQL for each message of the group not yet applied: most messages
// that create rows are about a new person, with one profile and two or
// three identifiers. Too few costs a round trip for more; too many, a gap.
var idsPerMessage = map[string]int{"profiles": 1, "identifiers": 2}

// nextID returns an ID for a new row of table (messages, profiles or
// identifiers); see the top of this file.
func (w *writer) nextID(ctx context.Context, table string) (int64, error) {
	b := w.behind
	if !w.store.postgres {
		last, ok := b.last[table]
		if !ok {
			// Only the writer holding the write lock inserts into these
			// tables, through insertRow: no INSERT queued for table yet
			// took an ID that is not stored.
			err := w.queryNow(ctx, `SELECT MAX(COALESCE((SELECT MAX(id) FROM `+table+`), 0),
				COALESCE((SELECT seq FROM sqlite_sequence WHERE name = ?), 0))`, []any{table}, func(r rowScanner) error { return r.Scan(&last) })
			if err != nil {
				return 0, fmt.Errorf("read the last ID of %s: %w", table, err)
			}
			if b.last == nil {
				b.last = map[string]int64{}
			}
		}
		b.last[table] = last + 1
		return last + 1, nil
	}
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
	// n values in one step (nextval n times costs a millisecond): only
	// transactions holding the graph lock take values from these sequences.
	var last int64
	err := w.query(ctx, `SELECT setval(pg_get_serial_sequence(?, 'id'), nextval(pg_get_serial_sequence(?, 'id')) + ? - 1)`,
		[]any{table, table, n}, func(r rowScanner) error { return r.Scan(&last) })
	if err != nil {
		return fmt.Errorf("draw IDs for %s: %w", table, err)
	}
	ids := make([]int64, n)
	for i := range ids {
		ids[i] = last - int64(n) + 1 + int64(i)
	}
	w.behind.ids[table] = ids
	return nil
}

// newMessage says whether m is not stored yet, and counts it stored from
// then on. At the group's first message it reads which of the group's
// messages are stored (and, on PostgreSQL, draws an ID for each of the
// others: nextID hands them out in the order of the group).
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
	if !b.inGroup[key] {
		return false, fmt.Errorf("message %s %s is not of the group", m.Source, m.ID)
	}
	b.stored[key] = true
	return true, nil
}

// readStored reads which of the group's messages are stored (on
// PostgreSQL drawing an ID for each of the others), then readKnown.
func (w *writer) readStored(ctx context.Context) error {
	b := w.behind
	b.stored, b.inGroup = map[messageKey]bool{}, map[messageKey]bool{}
	var keys [][2]string
	for _, sub := range b.group {
		for _, m := range sub.msgs {
			if k := (messageKey{m.Source, m.ID}); !b.inGroup[k] {
				b.inGroup[k] = true
				keys = append(keys, [2]string{string(m.Source), m.ID})
			}
		}
	}
	err := w.readPairs(ctx, `source, message_id`, `messages`, `source`, `message_id`, keys, func(r rowScanner) error {
		var k messageKey
		err := r.Scan(&k.source, &k.id)
		b.stored[k] = true
		return err
	})
	if err != nil {
		return fmt.Errorf("read stored messages: %w", err)
	}
	if fresh := len(b.inGroup) - len(b.stored); fresh > 0 && w.store.postgres {
		if err := w.drawIDs(ctx, "messages", fresh); err != nil {
			return err
		}
	}
	return w.readKnown(ctx)
}

// pairsPerRead bounds the pairs readPairs asks SQLite for in one statement.
// Reads ask for 1, 2, 4, ... up to this many (repeating the last pair to
// fill a read), so that few texts are prepared.
const pairsPerRead = 256

// readPairs calls scan for each row (columns) of table whose columns a
// and b hold one of pairs, found with one index probe a pair.
func (w *writer) readPairs(ctx context.Context, columns, table, a, b string, pairs [][2]string, scan func(rowScanner) error) error {
	if w.store.postgres {
		// LIMIT 1 keeps the subquery apart, so that the plan probes the
		// unique index once a pair, whatever the table's size (a join may
		// scan it).
		as, bs := make([]string, len(pairs)), make([]string, len(pairs))
		for i, p := range pairs {
			as[i], bs[i] = p[0], p[1]
		}
		query := fmt.Sprintf(`SELECT m.* FROM unnest(?::text[], ?::text[]) AS g(a, b),
			LATERAL (SELECT %s FROM %s WHERE %s = g.a AND %s = g.b LIMIT 1) m`, columns, table, a, b)
		return w.query(ctx, query, []any{as, bs}, scan)
	}
	for len(pairs) > 0 {
		k := pairsPerRead
		for k/2 >= len(pairs) {
			k /= 2
		}
		args := make([]any, 0, 2*k)
		for i := range k {
			p := pairs[min(i, len(pairs)-1)]
			args = append(args, p[0], p[1])
		}
		// IN (VALUES ...) alone would scan the table; IN (SELECT ...) probes its index.
		query := fmt.Sprintf(`SELECT %s FROM %s WHERE (%s, %s) IN (SELECT column1, column2 FROM (VALUES %s))`, columns, table, a, b, strings.TrimSuffix(strings.Repeat("(?, ?), ", k), ", "))
		if err := w.query(ctx, query, args, scan); err != nil {
			return err
		}
		pairs = pairs[min(k, len(pairs)):]
	}
	return nil
}

// readKnown reads the stored identifiers that the group's messages name
// into known, for recall.
func (w *writer) readKnown(ctx context.Context) error {
	b := w.behind
	b.asked, b.known = map[identityKey]bool{}, map[identityKey]identity{}
	var pairs [][2]string
	ask := func(k mapping.Kind, v string) {
		if key := (identityKey{k, v}); !b.asked[key] {
			b.asked[key] = true
			pairs = append(pairs, [2]string{string(k), v})
		}
	}
	for _, sub := range b.group {
		for _, m := range sub.msgs {
			cands, _ := w.identifiers(m)
			for _, c := range cands {
				ask(c.kind, c.value)
				if c.field == "previousId" {
					ask(mapping.KindUserID, c.value) // see previousIDKind
				}
			}
		}
	}
	err := w.readPairs(ctx, `id, kind, value, profile_id, cluster_id`, `identifiers`, `kind`, `value`, pairs, func(r rowScanner) error {
		var f identity
		err := r.Scan(&f.ID, &f.Kind, &f.Value, &f.ProfileID, &f.ClusterID)
		b.known[identityKey{f.Kind, f.Value}] = f
		return err
	})
	if err != nil {
		return fmt.Errorf("read the group's identifiers: %w", err)
	}
	return nil
}

// recall answers a lookup of cands from what the group read and created,
// without a statement, unless something else may have changed stored
// identifiers since (stale) or a candidate was not read (ok false).
func (b *behind) recall(cands []candidate) (found []identity, ok bool) {
	if b.stale || b.asked == nil {
		return nil, false
	}
	for _, c := range cands {
		key := identityKey{c.kind, c.value}
		if f, ok := b.made[key]; ok {
			found = append(found, f)
		} else if !b.asked[key] {
			return nil, false
		} else if f, ok := b.known[key]; ok {
			found = append(found, f)
		}
	}
	return found, true
}

// lookupBehind is lookup's read: query finds the stored rows of cands, and
// scan takes each. Unless a queued statement changes stored identifiers,
// it does not wait for what is written behind: the identifiers created
// since are added from created instead.
func (w *writer) lookupBehind(ctx context.Context, query string, args []any, cands []candidate, scan func(identity)) error {
	read := func(r rowScanner) error {
		var f identity
		err := r.Scan(&f.ID, &f.Kind, &f.Value, &f.ProfileID, &f.ClusterID)
		scan(f)
		return err
	}
	b := w.behind
	if found, ok := b.recall(cands); ok {
		for _, f := range found {
			scan(f)
		}
		return nil
	}
	if b.changed || len(b.queue) == 0 {
		return w.query(ctx, query, args, read)
	}
	for _, c := range cands {
		if f, ok := b.created[identityKey{c.kind, c.value}]; ok {
			scan(f)
		}
	}
	return w.queryNow(ctx, query, args, read)
}

// create records that the INSERT of identifier f is written behind; see lookupBehind.
func (b *behind) create(f identity) {
	if b.created == nil {
		b.created = map[identityKey]identity{}
	}
	b.created[identityKey{f.Kind, f.Value}] = f
	if b.made == nil {
		b.made = map[identityKey]identity{}
	}
	b.made[identityKey{f.Kind, f.Value}] = f
}
