-- Several devices of one person (issue 14, docs/PROTOCOL.md "Devices").

-- The person's devices, as this device knows them (the first device writes the list and
-- sends it in the self group). `device_fp` is the fingerprint of the device's MLS key.
CREATE TABLE devices (
    device_fp   BLOB PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    relay       TEXT,
    mailbox_id  BLOB,
    added_at    INTEGER NOT NULL,
    revoked_at  INTEGER
) STRICT;

-- Links this device showed (`device link`): a one-time mailbox, a one-time HPKE key and
-- secret; what the new device sent once it asked.
CREATE TABLE device_links (
    id             INTEGER PRIMARY KEY,
    relay          TEXT NOT NULL,
    mailbox_id     BLOB NOT NULL,
    mailbox_key    BLOB NOT NULL,
    hpke_secret    BLOB NOT NULL,
    hpke_public    BLOB NOT NULL,
    secret         BLOB NOT NULL,
    expires_at     INTEGER NOT NULL,
    device_key     BLOB,
    name           TEXT,
    reply_relay    TEXT,
    reply_mailbox  BLOB,
    reply_hpke     BLOB,
    code           TEXT,
    done_at        INTEGER,
    outcome        TEXT
) STRICT;

-- The self group is a conversation that lists never show.
ALTER TABLE conversations ADD COLUMN hidden INTEGER NOT NULL DEFAULT 0;

-- An invitation that arrived on another device of this person (its Welcome is that device's
-- to open): shown here, and answered through the self group. NULL: arrived here.
ALTER TABLE invitations ADD COLUMN on_device BLOB;
