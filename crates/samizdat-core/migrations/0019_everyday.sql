-- Version 19: replies, reactions, edits, deletes, forwards, bodies from newer versions
-- (issue 30, groundwork).
--
-- `content_hash` is SHA-256 over what the message said when it was sent (see
-- `profile/reactions.rs`, `content_hash`): a reply, reaction, edit or delete names its
-- target by id *and* this hash, so a forged quote of something never said shows as "not
-- found". NULL on rows older than this version: computed from the row when needed (no edit
-- existed before, so the row still holds what was sent).
ALTER TABLE messages ADD COLUMN content_hash BLOB;
-- The message this one answers (its id and content hash as the sender named them). A quote is
-- never a copy: it is read from the target's row at display time, so it goes when the target
-- goes (expiry, delete).
ALTER TABLE messages ADD COLUMN reply_to BLOB;
ALTER TABLE messages ADD COLUMN reply_hash BLOB;
-- Set when the sender corrected the text (`body` then holds the newest text, in the same row:
-- it expires with it).
ALTER TABLE messages ADD COLUMN edited_at INTEGER;
-- Deleted for everyone by its sender: the row stays as a tombstone with no text or file.
ALTER TABLE messages ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN forwarded INTEGER NOT NULL DEFAULT 0;
-- A body this version cannot read, kept as it came (JSON) for a later version to show.
ALTER TABLE messages ADD COLUMN unknown TEXT;
-- A line about the conversation itself (someone added, removed or left, a rename, the timer,
-- a contact's devices): the event as the core reported it (JSON), which each front says in
-- its reader's language. Such a row has no sender, text or position of its own: it sits
-- after the log entry that caused it.
ALTER TABLE messages ADD COLUMN system TEXT;

-- One reaction per person per message (a new one replaces theirs).
CREATE TABLE reactions (
    message_id  BLOB NOT NULL,
    reactor     BLOB NOT NULL,
    emoji       TEXT NOT NULL,
    at          INTEGER NOT NULL,
    PRIMARY KEY (message_id, reactor)
) STRICT, WITHOUT ROWID;

-- Whatever removes a message (expiry, delete for me, a removed conversation) removes its
-- reactions in the same statement's transaction.
CREATE TRIGGER messages_reactions_go AFTER DELETE ON messages BEGIN
    DELETE FROM reactions WHERE message_id = old.id;
END;
