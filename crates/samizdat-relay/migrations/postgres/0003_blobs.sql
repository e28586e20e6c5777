-- Blobs (encrypted attachments): the bytes live in files under the blob directory; this
-- row says how much of the file is durable and who may write it.
CREATE TABLE blobs (
    blob_id      BYTEA PRIMARY KEY,
    token_hash   BYTEA NOT NULL,
    length       BIGINT NOT NULL,
    offset_bytes BIGINT NOT NULL DEFAULT 0,
    -- SHA-256 of the uploader's address bucket, for the per-source quota.
    source       BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX blobs_by_source ON blobs (source, expires_at);
CREATE INDEX blobs_by_expiry ON blobs (expires_at);
