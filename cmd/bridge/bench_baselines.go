package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/labstack/echo/v4"

	"github.com/bridgeworks/bridge/mapping/store"
)

// The baselines bridge bench measures the bridge against, in the same run.

// bareEcho answers POST /v1/identify as cheaply as Echo can: it reads the
// body and answers 200.
func bareEcho() *echo.Echo {
	e := echo.New()
	e.POST("/v1/identify", func(c echo.Context) error {
		if _, err := io.Copy(io.Discard, c.Request().Body); err != nil {
			return err
		}
		return c.JSON(http.StatusOK, map[string]bool{"success": true})
	})
	return e
}

// floorServer is a durable single-event endpoint that does the least such
// an endpoint can do: it stores each request's body as one row
// (deduplicated on its message ID) and answers once the commit holding the
// row is on disk, concurrent requests sharing commits. No validation, no
// identity graph, no outbox: it shows how near bare Echo a durable endpoint
// can come on the same machine.
type floorServer struct {
	db    *sqlx.DB
	queue chan floorRow
	stop  chan struct{}
}

type floorRow struct {
	messageID string
	body      []byte
	done      chan error
}

func openFloor(ctx context.Context, path string) (*floorServer, error) {
	db, err := openBaselineDB(ctx, path)
	if err != nil {
		return nil, err
	}
	f := &floorServer{db: db, queue: make(chan floorRow, 4096), stop: make(chan struct{})}
	go f.commitLoop()
	return f, nil
}

func (f *floorServer) Close() error {
	close(f.stop)
	return f.db.Close()
}

func (f *floorServer) handler() *echo.Echo {
	e := echo.New()
	e.POST("/v1/identify", func(c echo.Context) error {
		body, err := io.ReadAll(c.Request().Body)
		if err != nil {
			return err
		}
		var event struct {
			MessageID string `json:"messageId"`
		}
		if err := json.Unmarshal(body, &event); err != nil {
			return echo.NewHTTPError(http.StatusBadRequest, err.Error())
		}
		row := floorRow{messageID: event.MessageID, body: body, done: make(chan error, 1)}
		f.queue <- row
		if err := <-row.done; err != nil {
			return err
		}
		return c.JSON(http.StatusOK, map[string]bool{"success": true})
	})
	return e
}

// commitLoop commits every row waiting in one transaction, then the next.
func (f *floorServer) commitLoop() {
	for {
		var group []floorRow
		select {
		case row := <-f.queue:
			group = append(group, row)
		case <-f.stop:
			return
		}
	gather:
		for len(group) < 2000 {
			select {
			case row := <-f.queue:
				group = append(group, row)
			default:
				break gather
			}
		}
		err := f.commit(group)
		for _, row := range group {
			row.done <- err
		}
	}
}

func (f *floorServer) commit(group []floorRow) error {
	ctx := context.Background()
	tx, err := f.db.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, row := range group {
		if _, err := tx.ExecContext(ctx, `INSERT INTO messages (message_id, raw) VALUES (?, ?) ON CONFLICT DO NOTHING`, row.messageID, row.body); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// openBaselineDB opens a baseline's database: plain SQLite (go-sqlite3 as it
// comes, with its automatic checkpoints) with the store's settings: WAL, and
// a commit that returns only once it is on disk. It holds one table of
// messages, unique on their IDs, which grows from one round to the next as
// the bridge's database does.
func openBaselineDB(ctx context.Context, path string) (*sqlx.DB, error) {
	db, err := sqlx.Open("sqlite3", store.SQLiteDSN(path, true))
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, message_id TEXT NOT NULL UNIQUE, raw TEXT NOT NULL)`); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// rawInserts is the storage baseline: one writer inserting message rows,
// batchSize per transaction, into a baseline database (openBaselineDB).
func rawInserts(ctx context.Context, path string, batchSize int, d time.Duration) (benchResult, error) {
	res := benchResult{name: fmt.Sprintf("raw SQLite inserts (%d per commit)", batchSize)}
	db, err := openBaselineDB(ctx, path)
	if err != nil {
		return res, err
	}
	defer db.Close()
	start := time.Now()
	deadline := start.Add(d)
	for time.Now().Before(deadline) {
		t := time.Now()
		tx, err := db.BeginTxx(ctx, nil)
		if err != nil {
			return res, err
		}
		for range batchSize {
			event, messageID := identifyEvent(newPerson())
			if _, err := tx.ExecContext(ctx, `INSERT INTO messages (message_id, raw) VALUES (?, ?)`, messageID, event); err != nil {
				tx.Rollback()
				return res, err
			}
		}
		if err := tx.Commit(); err != nil {
			return res, err
		}
		res.latencies = append(res.latencies, time.Since(t))
		res.events += int64(batchSize)
	}
	res.elapsed = time.Since(start)
	return res, nil
}
