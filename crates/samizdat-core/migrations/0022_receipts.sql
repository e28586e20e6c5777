-- Version 22: delivery and read receipts (issue 30, item 7), in 1:1 and small groups.
--
-- `receipts`: which people (by key fingerprint) said a device of theirs holds, or has shown,
-- one of our messages (and, for messages of others, that another device of ours already
-- said so, so that this one need not). One row per person and message; `read` only grows.
CREATE TABLE receipts (
    message_id  BLOB NOT NULL,
    person      BLOB NOT NULL,
    read        INTEGER NOT NULL DEFAULT 0,
    at          INTEGER NOT NULL,
    PRIMARY KEY (message_id, person)
) STRICT, WITHOUT ROWID;

-- Receipts this device owes for messages it received (`read` = 0) or showed (`read` = 1),
-- sent in one message per conversation after the sync or page that produced them.
CREATE TABLE receipts_owed (
    group_id    BLOB NOT NULL,
    message_id  BLOB NOT NULL,
    read        INTEGER NOT NULL,
    PRIMARY KEY (message_id, read)
) STRICT, WITHOUT ROWID;

-- They go with their message, whatever removes it (expiry, delete for me, a removed
-- conversation).
CREATE TRIGGER messages_receipts_go AFTER DELETE ON messages BEGIN
    DELETE FROM receipts WHERE message_id = old.id;
    DELETE FROM receipts_owed WHERE message_id = old.id;
END;
