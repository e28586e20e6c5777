-- Version 4: delivery across relays.
--
-- Mailbox drops owed to another party (Welcomes for members whose mailbox is on another
-- relay, or that the group's relay could not store): written in the transaction that makes
-- them owed (the commit's), retried with backoff and jitter until the relay stores them or
-- refuses them for good; the request id makes every retry idempotent.
CREATE TABLE drops (
    request_id  BLOB PRIMARY KEY NOT NULL,
    relay       TEXT NOT NULL,
    mailbox     BLOB NOT NULL,
    body        BLOB NOT NULL,
    group_id    BLOB NOT NULL,
    -- Key fingerprint of the member the drop is for.
    member      BLOB NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     INTEGER NOT NULL,
    last_error  TEXT,
    created_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX drops_due ON drops (next_at);

-- Adds not committed yet: group adds waiting for the new member's relay (their KeyPackage
-- could not be claimed), and the add of an inviter into the 1:1 conversation `accept`
-- created (with the invite, and the KeyPackage already claimed and verified). Resumed by
-- the next syncs with backoff until committed (then, for an accept, the introduction is
-- queued) or refused for good (then the user is told).
CREATE TABLE pending_adds (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id    BLOB NOT NULL,
    member      BLOB NOT NULL,
    alias       TEXT NOT NULL,
    relay       TEXT NOT NULL,
    mailbox     BLOB NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     INTEGER NOT NULL,
    last_error  TEXT,
    created_at  INTEGER NOT NULL,
    invite      BLOB,
    key_package BLOB,
    UNIQUE (group_id, member)
) STRICT;
