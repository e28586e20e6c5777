-- Samizdat relay schema, version 1 (PostgreSQL). Same tables as the SQLite schema; shared
-- by any number of relay processes.

CREATE TABLE mailboxes (
    mailbox_id   BYTEA PRIMARY KEY,
    owner_key    BYTEA NOT NULL,
    last_resort  BYTEA,
    next_seq     BIGINT NOT NULL DEFAULT 1,
    msg_count    BIGINT NOT NULL DEFAULT 0,
    msg_bytes    BIGINT NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL
);

CREATE TABLE mailbox_messages (
    mailbox_id  BYTEA NOT NULL,
    seq         BIGINT NOT NULL,
    body        BYTEA NOT NULL,
    stored_at   BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    PRIMARY KEY (mailbox_id, seq)
);
CREATE INDEX mailbox_messages_expiry ON mailbox_messages (expires_at);

CREATE TABLE key_packages (
    id          BIGSERIAL PRIMARY KEY,
    mailbox_id  BYTEA NOT NULL,
    data        BYTEA NOT NULL
);
CREATE INDEX key_packages_mailbox ON key_packages (mailbox_id, id);

CREATE TABLE groups (
    group_id       BYTEA PRIMARY KEY,
    current_epoch  BIGINT NOT NULL,
    next_seq       BIGINT NOT NULL DEFAULT 1,
    created_at     BIGINT NOT NULL
);

CREATE TABLE group_epochs (
    group_id    BYTEA NOT NULL,
    epoch       BIGINT NOT NULL,
    token_hash  BYTEA NOT NULL,
    PRIMARY KEY (group_id, epoch)
);

CREATE TABLE entries (
    group_id    BYTEA NOT NULL,
    seq         BIGINT NOT NULL,
    epoch       BIGINT NOT NULL,
    kind        SMALLINT NOT NULL,
    body        BYTEA NOT NULL,
    stored_at   BIGINT NOT NULL,
    PRIMARY KEY (group_id, seq)
);
CREATE INDEX entries_epoch ON entries (group_id, epoch, seq);
CREATE INDEX entries_expiry ON entries (stored_at);

CREATE TABLE requests (
    request_id  BYTEA PRIMARY KEY,
    scope       TEXT NOT NULL,
    result      TEXT NOT NULL,
    stored_at   BIGINT NOT NULL
);
CREATE INDEX requests_expiry ON requests (stored_at);

CREATE TABLE nonces (
    nonce       BYTEA PRIMARY KEY,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX nonces_expiry ON nonces (expires_at);
