package store

import (
	"context"
	"database/sql"

	"github.com/jmoiron/sqlx"
)

// pool is a connection pool whose queries are written once, with ?
// placeholders, for both engines: each is rebound for the pool's driver
// (PostgreSQL numbers its parameters: $1, $2, ...) before it runs.
type pool struct{ *sqlx.DB }

func (p pool) GetContext(ctx context.Context, dest any, query string, args ...any) error {
	return p.DB.GetContext(ctx, dest, p.Rebind(query), args...)
}

func (p pool) SelectContext(ctx context.Context, dest any, query string, args ...any) error {
	return p.DB.SelectContext(ctx, dest, p.Rebind(query), args...)
}

func (p pool) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return p.DB.ExecContext(ctx, p.Rebind(query), args...)
}

func (p pool) QueryRowxContext(ctx context.Context, query string, args ...any) *sqlx.Row {
	return p.DB.QueryRowxContext(ctx, p.Rebind(query), args...)
}

func (p pool) QueryxContext(ctx context.Context, query string, args ...any) (*sqlx.Rows, error) {
	return p.DB.QueryxContext(ctx, p.Rebind(query), args...)
}

func (p pool) Get(dest any, query string, args ...any) error {
	return p.DB.Get(dest, p.Rebind(query), args...)
}

func (p pool) Select(dest any, query string, args ...any) error {
	return p.DB.Select(dest, p.Rebind(query), args...)
}

func (p pool) Exec(query string, args ...any) (sql.Result, error) {
	return p.DB.Exec(p.Rebind(query), args...)
}

func (p pool) QueryRow(query string, args ...any) *sql.Row {
	return p.DB.QueryRow(p.Rebind(query), args...)
}
