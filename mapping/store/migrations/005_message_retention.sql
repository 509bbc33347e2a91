-- Raw payloads are kept for a while (BRIDGE_KEEP_MESSAGES), then replaced
-- by '' with the time they expired; the row, the identity graph and the link
-- log stay. Only expired rows are indexed: an insert never touches it, and
-- the retention pass finds where it stopped with one index lookup.
ALTER TABLE messages ADD COLUMN raw_expired_at BIGINT NOT NULL DEFAULT 0;
CREATE INDEX messages_raw_expired ON messages (id) WHERE raw_expired_at <> 0;
