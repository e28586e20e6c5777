-- Version 2: storage bounds and expiry (idle mailboxes, groups, epochs, KeyPackages),
-- per-group byte counts, and idempotency records keyed by (scope, target, request id).

ALTER TABLE mailboxes ADD COLUMN last_seen_at INTEGER NOT NULL DEFAULT 0;
UPDATE mailboxes SET last_seen_at = CAST(strftime('%s', 'now') AS INTEGER);

ALTER TABLE key_packages ADD COLUMN uploaded_at INTEGER NOT NULL DEFAULT 0;
UPDATE key_packages SET uploaded_at = CAST(strftime('%s', 'now') AS INTEGER);

ALTER TABLE groups ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE groups ADD COLUMN last_append_at INTEGER NOT NULL DEFAULT 0;
UPDATE groups SET
    bytes = (SELECT COALESCE(SUM(length(body)), 0) FROM entries e WHERE e.group_id = groups.group_id),
    last_append_at = CAST(strftime('%s', 'now') AS INTEGER);

ALTER TABLE group_epochs ADD COLUMN created_at INTEGER NOT NULL DEFAULT 0;
UPDATE group_epochs SET created_at = CAST(strftime('%s', 'now') AS INTEGER);
CREATE INDEX group_epochs_token ON group_epochs (group_id, token_hash);

-- Retry records are a cache of answers: starting them afresh loses nothing durable.
DROP TABLE requests;
CREATE TABLE requests (
    scope       TEXT NOT NULL,
    target      BLOB NOT NULL,
    request_id  BLOB NOT NULL,
    result      TEXT NOT NULL,
    stored_at   INTEGER NOT NULL,
    PRIMARY KEY (scope, target, request_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX requests_expiry ON requests (stored_at);
CREATE INDEX mailboxes_idle ON mailboxes (last_seen_at);
CREATE INDEX key_packages_age ON key_packages (uploaded_at);
CREATE INDEX groups_idle ON groups (last_append_at);
