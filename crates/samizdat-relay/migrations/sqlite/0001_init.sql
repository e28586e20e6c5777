-- Samizdat relay schema, version 1 (SQLite).
-- Every table is designed so several relay processes can share it: no state lives only
-- in a process. Binary ids are 16 bytes; hashes 32 bytes; times are Unix seconds.

CREATE TABLE mailboxes (
    mailbox_id   BLOB PRIMARY KEY NOT NULL,
    owner_key    BLOB NOT NULL,
    last_resort  BLOB,
    next_seq     INTEGER NOT NULL DEFAULT 1,
    msg_count    INTEGER NOT NULL DEFAULT 0,
    msg_bytes    INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL
) STRICT;

CREATE TABLE mailbox_messages (
    mailbox_id  BLOB NOT NULL,
    seq         INTEGER NOT NULL,
    body        BLOB NOT NULL,
    stored_at   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (mailbox_id, seq)
) STRICT, WITHOUT ROWID;
CREATE INDEX mailbox_messages_expiry ON mailbox_messages (expires_at);

CREATE TABLE key_packages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    mailbox_id  BLOB NOT NULL,
    data        BLOB NOT NULL
) STRICT;
CREATE INDEX key_packages_mailbox ON key_packages (mailbox_id, id);

CREATE TABLE groups (
    group_id       BLOB PRIMARY KEY NOT NULL,
    current_epoch  INTEGER NOT NULL,
    next_seq       INTEGER NOT NULL DEFAULT 1,
    created_at     INTEGER NOT NULL
) STRICT;

CREATE TABLE group_epochs (
    group_id    BLOB NOT NULL,
    epoch       INTEGER NOT NULL,
    token_hash  BLOB NOT NULL,
    PRIMARY KEY (group_id, epoch)
) STRICT, WITHOUT ROWID;

CREATE TABLE entries (
    group_id    BLOB NOT NULL,
    seq         INTEGER NOT NULL,
    epoch       INTEGER NOT NULL,
    kind        INTEGER NOT NULL,
    body        BLOB NOT NULL,
    stored_at   INTEGER NOT NULL,
    PRIMARY KEY (group_id, seq)
) STRICT, WITHOUT ROWID;
CREATE INDEX entries_epoch ON entries (group_id, epoch, seq);
CREATE INDEX entries_expiry ON entries (stored_at);

-- Idempotency: the original successful answer to every write, by client-chosen id.
CREATE TABLE requests (
    request_id  BLOB PRIMARY KEY NOT NULL,
    scope       TEXT NOT NULL,
    result      TEXT NOT NULL,
    stored_at   INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX requests_expiry ON requests (stored_at);

-- Signature nonces already used, kept until their timestamp window has passed.
CREATE TABLE nonces (
    nonce       BLOB PRIMARY KEY NOT NULL,
    expires_at  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX nonces_expiry ON nonces (expires_at);
