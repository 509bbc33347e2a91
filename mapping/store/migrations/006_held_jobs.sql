-- Deliveries caused by a message that names someone a privacy deletion holds
-- back (or keyed by such an identifier) are held too: not claimed, not
-- listed, until the deletion is final (they are erased with it) or a message
-- older than the deletion shows it never took them (they are due again).
ALTER TABLE jobs ADD COLUMN held INTEGER NOT NULL DEFAULT 0;
