-- Version 2: message requests. A Welcome from someone who is not a contact (and not the
-- answer to one of our invites) waits here until the user accepts or declines it. Nothing
-- is sent and no relay named in it is contacted before the user accepts.
CREATE TABLE invitations (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id         BLOB NOT NULL UNIQUE,
    relay            TEXT NOT NULL,
    welcome          BLOB NOT NULL,
    committer        BLOB NOT NULL,
    members          INTEGER NOT NULL,
    -- The name of an existing conversation whose id this Welcome claims without continuing
    -- its group (a takeover attempt): such an invitation cannot be accepted.
    claims_existing  TEXT,
    received_at      INTEGER NOT NULL
) STRICT;
