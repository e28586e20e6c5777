-- Attachments: what the message carries (JSON: relay, blob id, key, digest, size, name,
-- media type) and, once we hold it, the encrypted copy under attachments/ (file name).
ALTER TABLE messages ADD COLUMN attachment TEXT;
ALTER TABLE messages ADD COLUMN attachment_file TEXT;
