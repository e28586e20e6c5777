-- Version 10: several independent relays per profile, and conversations that move.
--
-- One mailbox per relay, each with its own owner key and id so the relays cannot link them.
-- The first (lowest position) is the primary: its address is what older peers know. Rows
-- are filled from the settings of profiles made before version 10 when they are opened.
CREATE TABLE mailboxes (
    relay           TEXT PRIMARY KEY NOT NULL,
    mailbox_id      BLOB NOT NULL,
    mailbox_key     BLOB NOT NULL,
    position        INTEGER NOT NULL,
    last_resort_at  INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL
) STRICT;

-- Where other people can be reached: every mailbox a person told us about (an invite, an
-- introduction, a profile announcement inside a conversation), by key fingerprint, in their
-- order of preference. Only the person themselves can announce their addresses (the MLS
-- sender is authenticated).
CREATE TABLE peer_mailboxes (
    fingerprint  BLOB NOT NULL,
    relay        TEXT NOT NULL,
    mailbox_id   BLOB NOT NULL,
    position     INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (fingerprint, relay)
) STRICT;
INSERT OR IGNORE INTO peer_mailboxes (fingerprint, relay, mailbox_id, position, updated_at)
    SELECT fingerprint, relay, mailbox_id, 0, created_at FROM contacts
    WHERE relay IS NOT NULL AND mailbox_id IS NOT NULL;

-- A conversation's log on its current relay. NULL: the log's id is the group id (every
-- conversation before its first move). After a move the log has a new id, derived from the
-- epoch's secret, so the old and new relays cannot match the two logs by id.
ALTER TABLE conversations ADD COLUMN log_id BLOB;
-- Added to a log's positions when storing message order, so that messages read from a later
-- log sort after those of the earlier ones.
ALTER TABLE conversations ADD COLUMN seq_base INTEGER NOT NULL DEFAULT 0;

-- The winning move of a conversation at each epoch (ours, or one a member told us about).
-- Moves at one epoch are numbered (`n`: a second move before any commit is n = 1); the
-- higher number wins, and at the same number the relay whose address hashes lowest
-- (`rank`), so concurrent moves converge on one log.
CREATE TABLE moves (
    group_id    BLOB NOT NULL,
    epoch       INTEGER NOT NULL,
    n           INTEGER NOT NULL,
    relay       TEXT NOT NULL,
    log_id      BLOB NOT NULL,
    rank        BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (group_id, epoch)
) STRICT, WITHOUT ROWID;

-- What a drop carries: an invitation (a Welcome: other addresses of the member are tried
-- when one cannot be reached) or a move notice (sent to every address).
ALTER TABLE drops ADD COLUMN kind TEXT NOT NULL DEFAULT 'welcome';

-- A pending invitation to a group that moved names its log there.
ALTER TABLE invitations ADD COLUMN log_id BLOB;
