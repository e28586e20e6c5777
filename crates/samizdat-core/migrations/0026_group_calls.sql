-- Version 26: group calls and renegotiation (issue 31), a mesh of at most four people. A group call keeps its
-- SFrame base key (from the group's MLS exporter, carried in the invite) and one leg per other
-- person who joined: the offer and answer of that pair's own connection.
ALTER TABLE calls ADD COLUMN group_call INTEGER NOT NULL DEFAULT 0;
ALTER TABLE calls ADD COLUMN sframe_key BLOB;
-- A 1:1 call renegotiated while connected (an ICE restart, video added): the newest offer,
-- whether it is ours, and its answer.
ALTER TABLE calls ADD COLUMN reoffer TEXT;
ALTER TABLE calls ADD COLUMN reoffer_mine INTEGER NOT NULL DEFAULT 0;
ALTER TABLE calls ADD COLUMN reanswer TEXT;
-- Entries of a 1:1 chat this device could not read (forged, damaged, undecryptable): the
-- other person is told (`Body::Unreadable`) after the sync; at most 16 per conversation.
CREATE TABLE unreadable_owed (
    group_id  BLOB NOT NULL,
    position  INTEGER NOT NULL,
    PRIMARY KEY (group_id, position)
);
CREATE TRIGGER unreadable_owed_goes_with_its_conversation AFTER DELETE ON conversations BEGIN
    DELETE FROM unreadable_owed WHERE group_id = OLD.group_id;
END;
CREATE TABLE call_legs (
    call_id      BLOB NOT NULL,
    -- the other person (identity fingerprint)
    peer         BLOB NOT NULL,
    joined_at    INTEGER NOT NULL,
    left_at      INTEGER,
    -- the offer they made to us when they joined, and our answer
    their_offer  TEXT,
    my_answer    TEXT,
    -- the offer we made to them when we joined, and their answer
    my_offer     TEXT,
    their_answer TEXT,
    PRIMARY KEY (call_id, peer)
);
CREATE TRIGGER call_legs_go_with_their_call AFTER DELETE ON calls BEGIN
    DELETE FROM call_legs WHERE call_id = OLD.call_id;
END;
