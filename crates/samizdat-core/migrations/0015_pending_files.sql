-- Files sent while their relay could not be reached: encrypted and kept (the message row
-- holds the key and digest, `attachment_file` the encrypted copy), uploaded and sent when the
-- relay is back, as a text would be.
CREATE TABLE pending_files (
    id          BLOB PRIMARY KEY NOT NULL,
    group_id    BLOB NOT NULL,
    cipher_len  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;
