-- Deletions take part in the order of rule 6 (DESIGN §3): a deletion with
-- event time T takes the profile as it stood at T, whatever the arrival
-- order. An identifier named by a deletion records the deletion's order key;
-- one that a deletion took is held back (no profile: profile_id 0, hidden from
-- every page and never forwarded) since deleted_at, until the deletion grace
-- period ends and it is erased, leaving only its tombstone.
ALTER TABLE identifiers ADD COLUMN delete_key TEXT NOT NULL DEFAULT '';
ALTER TABLE identifiers ADD COLUMN deleted_at BIGINT NOT NULL DEFAULT 0;
CREATE INDEX identifiers_deleted_at ON identifiers (deleted_at) WHERE deleted_at > 0;
CREATE INDEX identifiers_delete_key ON identifiers (id) WHERE delete_key <> '';
