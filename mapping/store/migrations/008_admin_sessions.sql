-- The admin page's login sessions, shared by every replica on the database:
-- an operator who signs in through one may be served by any. The cookie
-- holds a random session ID; only its SHA-256 (hex) is kept here. Times are
-- Unix nanoseconds; flash is the message the next page shows once (JSON),
-- '' when there is none.
CREATE TABLE admin_sessions (
    id_hash      TEXT   PRIMARY KEY,
    csrf         TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    flash        TEXT   NOT NULL DEFAULT ''
);
CREATE INDEX admin_sessions_last_seen_at ON admin_sessions (last_seen_at);

-- Wrong admin passwords per client (its IP), counted across replicas: a
-- token bucket kept as the time it is next full (due_at, Unix nanoseconds;
-- the generic cell rate algorithm). A row whose due_at has passed is as
-- good as none and may be pruned.
CREATE TABLE admin_login_failures (
    client TEXT   PRIMARY KEY,
    due_at BIGINT NOT NULL
);
CREATE INDEX admin_login_failures_due_at ON admin_login_failures (due_at);
