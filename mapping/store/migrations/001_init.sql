-- Messages as received, deduplicated on (source, message_id).
CREATE TABLE messages (
    id           INTEGER PRIMARY KEY,
    source       TEXT    NOT NULL,
    message_id   TEXT    NOT NULL,
    type         TEXT    NOT NULL,
    event        TEXT    NOT NULL DEFAULT '',
    user_id      TEXT,
    anonymous_id TEXT,
    jimo_token   TEXT,
    event_at     BIGINT  NOT NULL,
    received_at  BIGINT  NOT NULL,
    rejected     TEXT    NOT NULL DEFAULT '',
    notes        TEXT    NOT NULL DEFAULT '',
    raw          TEXT    NOT NULL,
    UNIQUE (source, message_id)
);
CREATE INDEX messages_user_id ON messages (user_id);
CREATE INDEX messages_anonymous_id ON messages (anonymous_id);
CREATE INDEX messages_jimo_token ON messages (jimo_token) WHERE jimo_token IS NOT NULL;

-- A cluster is a connected component of all links, applied or not: the unit
-- that is re-decided when a link arrives out of order.
CREATE TABLE clusters (
    id       INTEGER PRIMARY KEY,
    last_key TEXT NOT NULL DEFAULT ''
);

-- A profile is a connected component of applied links.
-- AUTOINCREMENT: a profile ID also names its first cluster, so it is never reused.
CREATE TABLE profiles (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id       TEXT,
    anonymous_ids INTEGER NOT NULL DEFAULT 0,
    links         INTEGER NOT NULL DEFAULT 0,
    updated_at    BIGINT  NOT NULL
);

CREATE TABLE identifiers (
    id               INTEGER PRIMARY KEY,
    kind             TEXT   NOT NULL,
    value            TEXT   NOT NULL,
    profile_id       BIGINT NOT NULL,
    cluster_id       BIGINT NOT NULL,
    first_seen_at    BIGINT NOT NULL,
    first_source     TEXT   NOT NULL,
    first_message_id TEXT   NOT NULL,
    warning          TEXT   NOT NULL DEFAULT '',
    UNIQUE (kind, value)
);
CREATE INDEX identifiers_profile_id ON identifiers (profile_id);
CREATE INDEX identifiers_cluster_id ON identifiers (cluster_id);
CREATE INDEX identifiers_warning ON identifiers (id) WHERE warning <> '';

-- Links between two identifiers (a_id < b_id), one row per pair, recorded
-- with their earliest cause (the smallest order key) and the current decision.
CREATE TABLE links (
    id         INTEGER PRIMARY KEY,
    a_id       BIGINT  NOT NULL,
    b_id       BIGINT  NOT NULL,
    order_key  TEXT    NOT NULL,
    source     TEXT    NOT NULL,
    message_id TEXT    NOT NULL,
    event_at   BIGINT  NOT NULL,
    decision   TEXT    NOT NULL,
    reason     TEXT    NOT NULL DEFAULT '',
    forced     INTEGER NOT NULL DEFAULT 0,
    withdrawn  INTEGER NOT NULL DEFAULT 0,
    created_at BIGINT  NOT NULL,
    UNIQUE (a_id, b_id)
);
CREATE INDEX links_b_id ON links (b_id);
-- Only refused links are indexed: the conflict list, not every applied link.
CREATE INDEX links_open_conflicts ON links (id) WHERE decision IN ('conflict', 'over_cap') AND withdrawn = 0;

-- Append-only history of every link decision and every operator action.
CREATE TABLE link_log (
    id       INTEGER PRIMARY KEY,
    link_id  BIGINT NOT NULL,
    at       BIGINT NOT NULL,
    decision TEXT   NOT NULL,
    reason   TEXT   NOT NULL DEFAULT '',
    actor    TEXT   NOT NULL
);
CREATE INDEX link_log_link_id ON link_log (link_id);

-- Traits per identifier: a JSON object of key -> {"v": value, "k": order key, "s": source}.
-- A profile's traits merge those of its identifiers, last write wins by order key.
CREATE TABLE traits (
    identifier_id INTEGER PRIMARY KEY,
    email         TEXT,
    doc           TEXT NOT NULL
);
CREATE INDEX traits_email ON traits (email);

-- Deleted identifiers, by hash, so they do not silently come back.
CREATE TABLE tombstones (
    kind       TEXT   NOT NULL,
    value_hash TEXT   NOT NULL,
    deleted_at BIGINT NOT NULL,
    PRIMARY KEY (kind, value_hash)
);

-- The outbox: deliveries written in the same transaction as their cause.
-- (A message is stored once, so its jobs are written once: no unique index
-- on message_id is needed, and every random-key index costs each commit.)
CREATE TABLE jobs (
    id             INTEGER PRIMARY KEY,
    destination    TEXT    NOT NULL,
    ordering_key   TEXT    NOT NULL,
    message_id     TEXT    NOT NULL,
    payload        TEXT    NOT NULL,
    state          TEXT    NOT NULL,
    attempts       INTEGER NOT NULL DEFAULT 0,
    run_at         BIGINT  NOT NULL,
    locked_until   BIGINT  NOT NULL DEFAULT 0,
    last_error     TEXT    NOT NULL DEFAULT '',
    source_message TEXT    NOT NULL DEFAULT '',
    created_at     BIGINT  NOT NULL,
    updated_at     BIGINT  NOT NULL
);
CREATE INDEX jobs_state_id ON jobs (state, id);
-- Serves per-user ordering in claims and a profile's deliveries.
CREATE INDEX jobs_ordering ON jobs (ordering_key, destination, id);
CREATE INDEX jobs_state_updated_at ON jobs (state, updated_at);
