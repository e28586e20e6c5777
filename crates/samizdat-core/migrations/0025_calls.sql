-- Version 25: calls (issue 31). One row per call this device took part in or was rung for:
-- its offer and answer (the SDP, with the DTLS fingerprints MLS authenticated), the room token
-- both sides ask the relay's TURN server with, and how it ended. A finished call is also a
-- line in the chat (`messages.system`). Rows go with their conversation.
CREATE TABLE calls (
    call_id      BLOB PRIMARY KEY,
    group_id     BLOB NOT NULL,
    outgoing     INTEGER NOT NULL,
    peer         BLOB NOT NULL,
    video        INTEGER NOT NULL,
    -- ringing, connected, ended
    state        TEXT NOT NULL,
    -- how it ended (`CallOutcome`), once it has
    outcome      TEXT,
    offer        TEXT NOT NULL,
    answer       TEXT,
    room         BLOB NOT NULL,
    -- what this device still has to tell the other side: decline, busy or end
    owed         TEXT,
    started_at   INTEGER NOT NULL,
    answered_at  INTEGER,
    ended_at     INTEGER
);
CREATE INDEX calls_by_group ON calls (group_id, started_at);
CREATE TRIGGER calls_go_with_their_conversation AFTER DELETE ON conversations BEGIN
    DELETE FROM calls WHERE group_id = OLD.group_id;
END;
