-- Version 21: chat housekeeping (issue 30): pinned chats come first, archived ones are kept
-- out of the main list (a new message brings one back unless it is muted), a muted one makes
-- no notification until `muted_until` (ms; i64::MAX: until unmuted).
ALTER TABLE conversations ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN archived INTEGER NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN muted_until INTEGER;
