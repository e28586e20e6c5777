-- Version 8: disappearing messages.
--
-- The conversation's timer (seconds, 0: off), set by any member with a Timer message.
ALTER TABLE conversations ADD COLUMN timer_secs INTEGER NOT NULL DEFAULT 0;
-- Each message carries its own timer; `expires_at` (ms) is counted from sending for the
-- sender and from arrival for the others. Expired rows are deleted (secure_delete is on).
ALTER TABLE messages ADD COLUMN expires_in INTEGER;
ALTER TABLE messages ADD COLUMN expires_at INTEGER;
CREATE INDEX messages_expiry ON messages (expires_at) WHERE expires_at IS NOT NULL;
