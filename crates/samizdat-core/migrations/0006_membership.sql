-- Version 6: membership changes that must complete.
--
-- Members whose leave notice we processed: kept until a commit removes them (ours or
-- anyone's), so a crash or an unreachable relay between reading the notice and committing
-- cannot leave a leaver in the group for good. Checked before every send: nothing new is
-- encrypted to a leaver's keys.
CREATE TABLE pending_removals (
    group_id    BLOB NOT NULL,
    member      BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (group_id, member)
) STRICT;

-- Members we added, watched until they join (announce themselves or write): one who has not
-- joined within the re-send delay (SAMIZDAT_READD_AFTER_SECS, default a day) is sent a fresh
-- Welcome, at most 3 times.
CREATE TABLE added_members (
    group_id    BLOB NOT NULL,
    member      BLOB NOT NULL,
    added_at    INTEGER NOT NULL,
    resent      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (group_id, member)
) STRICT;
