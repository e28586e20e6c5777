-- Version 5: channels. A channel is a chain of signed records (see samizdat-proto's
-- `channel` module); the relay keeps the records and where the chain stands, and checks
-- every record's signature against the admin set of the chain before it.
CREATE TABLE channels (
    channel_id BLOB PRIMARY KEY,
    head_seq   INTEGER NOT NULL,
    head_hash  BLOB NOT NULL,
    -- The current admin keys, 32 bytes each, concatenated.
    admins     BLOB NOT NULL,
    -- The bytes of its records (counted in the relay's stored bytes, `max_relay_bytes`).
    bytes      INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
CREATE TABLE channel_records (
    channel_id BLOB NOT NULL,
    seq        INTEGER NOT NULL,
    hash       BLOB NOT NULL,
    record     BLOB NOT NULL,
    stored_at  INTEGER NOT NULL,
    PRIMARY KEY (channel_id, seq)
) WITHOUT ROWID;
-- A channel's files: blobs an admin of a channel vouched for live `channel_blob_ttl_secs`
-- after their upload finished instead of `blob_ttl_secs`.
ALTER TABLE blobs ADD COLUMN for_channel BOOLEAN NOT NULL DEFAULT FALSE;
