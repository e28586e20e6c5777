-- What someone typed in a conversation and has not sent yet (security review 3, H3): kept
-- here, inside SQLCipher, never in the browser's storage. One per conversation; gone with the
-- conversation, on send, and with the profile on wipe.
CREATE TABLE drafts (
    group_id    BLOB PRIMARY KEY NOT NULL,
    text        TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
) STRICT;
