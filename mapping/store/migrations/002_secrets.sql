-- Secrets the bridge generated on first start (admin password, write key, ...).
CREATE TABLE secrets (
    name       TEXT PRIMARY KEY,
    value      TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);
