-- The self group (shared only by one person's devices) is a kind of conversation, not a
-- reserved name: `kind` gains 'self'. SQLite cannot change a CHECK constraint in place, so the
-- table is rebuilt with its columns in their order (0001, 0008, 0010, 0012, 0016); rows that
-- carried the reserved name become kind 'self'. Nothing else refers to this table.
CREATE TABLE conversations_new (
    group_id      BLOB PRIMARY KEY NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('direct', 'group', 'self')),
    name          TEXT NOT NULL UNIQUE,
    relay         TEXT NOT NULL,
    read_epoch    INTEGER NOT NULL,
    cursor        INTEGER NOT NULL DEFAULT 0,
    active        INTEGER NOT NULL DEFAULT 1,
    status        TEXT,
    created_at    INTEGER NOT NULL,
    timer_secs    INTEGER NOT NULL DEFAULT 0,
    log_id        BLOB,
    seq_base      INTEGER NOT NULL DEFAULT 0,
    hidden        INTEGER NOT NULL DEFAULT 0,
    status_reason TEXT
) STRICT;
INSERT INTO conversations_new
    (group_id, kind, name, relay, read_epoch, cursor, active, status, created_at, timer_secs,
     log_id, seq_base, hidden, status_reason)
SELECT group_id, CASE WHEN name = char(1) || 'self' THEN 'self' ELSE kind END, name, relay,
       read_epoch, cursor, active, status, created_at, timer_secs, log_id, seq_base, hidden,
       status_reason
FROM conversations;
DROP TABLE conversations;
ALTER TABLE conversations_new RENAME TO conversations;
