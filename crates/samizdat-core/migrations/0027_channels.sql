-- Version 27: channels (issue 34). A channel this profile created or follows: where its chain
-- stands here (every record checked), the relays to read it from (home first, then mirrors),
-- its keys, and its records — kept as signed, so this profile can fill a mirror.
-- Nothing here names another follower: a follower is known to no one, this profile included.
CREATE TABLE channels (
    channel_id   BLOB PRIMARY KEY,
    name         TEXT NOT NULL,
    about        TEXT NOT NULL DEFAULT '',
    genesis      BLOB NOT NULL,
    -- JSON array of relay addresses: the home relay first, then mirrors.
    relays       TEXT NOT NULL,
    -- JSON array: the mirrors this profile keeps filled (it added them).
    mirrors_mine TEXT NOT NULL DEFAULT '[]',
    -- PKCS#8 of this profile's admin key (NULL: it follows the channel).
    admin_key    BLOB,
    head_seq     INTEGER NOT NULL,
    head_hash    BLOB NOT NULL,
    -- The admin keys of the chain as it stands (32 bytes each).
    admins       BLOB NOT NULL,
    key_epoch    INTEGER NOT NULL,
    pinned       INTEGER,
    read_seq     INTEGER NOT NULL DEFAULT 0,
    -- The last fault a relay's copy showed: JSON {relay, fault, at}.
    fault        TEXT,
    -- The group of the channel's admins (an ordinary MLS group), when it has several.
    admin_group  BLOB,
    created_at   INTEGER NOT NULL
);
-- Invitations to administer a channel (`Body::ChannelAdmin`), taken after the sync that
-- brought them: the channel is followed, an admin key made and its public half sent back.
CREATE TABLE channel_admin_invites (
    channel_id  BLOB PRIMARY KEY,
    group_id    BLOB NOT NULL,
    link        TEXT NOT NULL,
    received_at INTEGER NOT NULL
);
-- Who holds which admin key of a channel (said in its admin group, `Body::ChannelAdminKey`),
-- and whether this profile invited them and has put their key in the roster.
CREATE TABLE channel_admins (
    channel_id    BLOB NOT NULL,
    contact       BLOB NOT NULL,
    key           BLOB,
    invited_by_me INTEGER NOT NULL DEFAULT 0,
    in_roster     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (channel_id, contact)
);
CREATE TABLE channel_keys (
    channel_id BLOB NOT NULL,
    epoch      INTEGER NOT NULL,
    key        BLOB NOT NULL,
    PRIMARY KEY (channel_id, epoch)
);
CREATE TABLE channel_records (
    channel_id BLOB NOT NULL,
    seq        INTEGER NOT NULL,
    record     BLOB NOT NULL,
    -- post, info, edit, delete, pin, rekey, roster, unreadable
    kind       TEXT NOT NULL,
    text       TEXT,
    -- A post's file: JSON {file, copies} (its key, digest, thumbnail and where its copies are).
    file       TEXT,
    posted_at  INTEGER,
    edited     INTEGER NOT NULL DEFAULT 0,
    deleted    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (channel_id, seq)
);
CREATE TRIGGER channel_rows_go_with_their_channel AFTER DELETE ON channels BEGIN
    DELETE FROM channel_keys WHERE channel_id = OLD.channel_id;
    DELETE FROM channel_records WHERE channel_id = OLD.channel_id;
    DELETE FROM channel_admins WHERE channel_id = OLD.channel_id;
END;
