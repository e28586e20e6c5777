-- People's signed device lists (security review 3, H2): the newest version seen of each
-- person's list, whole (to pass it on), and one row per device it names, so a Welcome or a
-- message can be checked against it in one lookup.
CREATE TABLE device_lists (
    person      BLOB PRIMARY KEY NOT NULL,
    version     INTEGER NOT NULL,
    list        BLOB NOT NULL
) STRICT;

CREATE TABLE listed_devices (
    person      BLOB NOT NULL,
    device_fp   BLOB NOT NULL,
    revoked     INTEGER NOT NULL,
    PRIMARY KEY (person, device_fp)
) STRICT;

-- Who was in a conversation when we last held its keys (left or removed): only one of them
-- may re-add us to it (security review 3, M6).
CREATE TABLE last_rosters (
    group_id    BLOB NOT NULL,
    person      BLOB NOT NULL,
    PRIMARY KEY (group_id, person)
) STRICT;
