-- Version 3: the long-running service.
--
-- A durable, bounded log of everything the core reported (messages, joins, delivery...),
-- written in the same transaction as the change it reports, so a bot that was not running
-- reads what it missed with `get_events {since}` and a crash never reports a change twice.
-- The oldest rows are dropped beyond a bound; readers learn of it from the gap.
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    body        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;

-- Outgoing application messages that are not text (introductions, profile and group
-- metadata, leave notices), stored before the relay sees them and retried until
-- acknowledged, like pending text messages in `messages`. `payload` is the plaintext
-- payload, kept to re-encrypt it when its epoch ended before the relay took it.
CREATE TABLE outbox (
    id             BLOB PRIMARY KEY NOT NULL,
    group_id       BLOB NOT NULL,
    payload        BLOB NOT NULL,
    request_id     BLOB NOT NULL,
    pending_body   BLOB NOT NULL,
    pending_epoch  INTEGER NOT NULL,
    created_at     INTEGER NOT NULL
) STRICT;
CREATE INDEX outbox_by_group ON outbox (group_id, created_at);

-- A text message the relay refused for good keeps its text, with the reason.
ALTER TABLE messages ADD COLUMN failed TEXT;
