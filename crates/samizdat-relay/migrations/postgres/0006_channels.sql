-- Version 6: channels. A channel is a chain of signed records (see samizdat-proto's
-- `channel` module); the relay keeps the records and where the chain stands, and checks
-- every record's signature against the admin set of the chain before it.
CREATE TABLE channels (
    channel_id BYTEA PRIMARY KEY,
    head_seq   BIGINT NOT NULL,
    head_hash  BYTEA NOT NULL,
    -- The current admin keys, 32 bytes each, concatenated.
    admins     BYTEA NOT NULL,
    -- The bytes of its records (counted in the relay's stored bytes, `max_relay_bytes`).
    bytes      BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);
CREATE TABLE channel_records (
    channel_id BYTEA NOT NULL,
    seq        BIGINT NOT NULL,
    hash       BYTEA NOT NULL,
    record     BYTEA NOT NULL,
    stored_at  BIGINT NOT NULL,
    PRIMARY KEY (channel_id, seq)
);
-- A channel's files: blobs an admin of a channel vouched for live `channel_blob_ttl_secs`
-- after their upload finished instead of `blob_ttl_secs`.
ALTER TABLE blobs ADD COLUMN for_channel BOOLEAN NOT NULL DEFAULT FALSE;
