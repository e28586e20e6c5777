-- Samizdat client profile, version 1. Encrypted as a whole by SQLCipher.

CREATE TABLE settings (
    key    TEXT PRIMARY KEY NOT NULL,
    value  BLOB NOT NULL
) STRICT;

-- People this profile talks to. `alias` is what the user calls them; `display_name` is what
-- they call themselves (shared only inside encrypted messages).
CREATE TABLE contacts (
    alias         TEXT PRIMARY KEY NOT NULL,
    fingerprint   BLOB NOT NULL UNIQUE,
    display_name  TEXT NOT NULL,
    relay         TEXT,
    mailbox_id    BLOB,
    group_id      BLOB,
    created_at    INTEGER NOT NULL
) STRICT;

-- Conversations: MLS groups with their log on a relay. 1:1 chats are groups of two.
CREATE TABLE conversations (
    group_id    BLOB PRIMARY KEY NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('direct', 'group')),
    name        TEXT NOT NULL UNIQUE,
    relay       TEXT NOT NULL,
    read_epoch  INTEGER NOT NULL,
    cursor      INTEGER NOT NULL DEFAULT 0,
    active      INTEGER NOT NULL DEFAULT 1,
    status      TEXT,
    created_at  INTEGER NOT NULL
) STRICT;

-- Every epoch token this device knows (derived from the MLS exporter secret).
CREATE TABLE epoch_tokens (
    group_id  BLOB NOT NULL,
    epoch     INTEGER NOT NULL,
    token     BLOB NOT NULL,
    PRIMARY KEY (group_id, epoch)
) STRICT, WITHOUT ROWID;

-- Log entries this device wrote itself (MLS cannot decrypt its own messages).
CREATE TABLE own_entries (
    group_id  BLOB NOT NULL,
    seq       INTEGER NOT NULL,
    PRIMARY KEY (group_id, seq)
) STRICT, WITHOUT ROWID;

-- Display names members announced inside a group, by credential fingerprint.
CREATE TABLE member_names (
    group_id     BLOB NOT NULL,
    fingerprint  BLOB NOT NULL,
    name         TEXT NOT NULL,
    PRIMARY KEY (group_id, fingerprint)
) STRICT, WITHOUT ROWID;

CREATE TABLE messages (
    id           BLOB PRIMARY KEY NOT NULL,
    group_id     BLOB NOT NULL,
    seq          INTEGER,
    sender_fp    BLOB NOT NULL,
    outgoing     INTEGER NOT NULL,
    body         TEXT NOT NULL,
    sent_at      INTEGER NOT NULL,
    received_at  INTEGER NOT NULL,
    unread       INTEGER NOT NULL DEFAULT 0,
    -- Outgoing messages not yet acknowledged by the relay: the exact request to retry
    -- (same request id, so the relay stores it once).
    request_id     BLOB,
    pending_body   BLOB,
    pending_epoch  INTEGER
) STRICT;
CREATE INDEX messages_by_group ON messages (group_id, seq);

CREATE TABLE invites (
    invite_id   BLOB PRIMARY KEY NOT NULL,
    expires_at  INTEGER NOT NULL,
    reusable    INTEGER NOT NULL,
    uses        INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
) STRICT;

-- MLS state, written by mls-rs through the storage providers in mls.rs.
CREATE TABLE mls_groups (
    group_id  BLOB PRIMARY KEY NOT NULL,
    state     BLOB NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE mls_epochs (
    group_id  BLOB NOT NULL,
    epoch_id  INTEGER NOT NULL,
    data      BLOB NOT NULL,
    PRIMARY KEY (group_id, epoch_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE mls_key_packages (
    id           BLOB PRIMARY KEY NOT NULL,
    data         BLOB NOT NULL,
    last_resort  INTEGER NOT NULL DEFAULT 0,
    expires_at   INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
