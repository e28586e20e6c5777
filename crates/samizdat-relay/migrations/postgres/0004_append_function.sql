-- Version 4: one row per append, and an append without Welcomes in one round trip.
--
-- The append's idempotency key (its request id) is kept on the entry itself, under a unique
-- index, instead of in a second row of `requests`: a retry finds the entry it stored the first
-- time. Both expired together (the retention sweep uses one cutoff), so nothing changes for a
-- client. Records of appends made before version 4 are moved onto their entries.
ALTER TABLE entries ADD COLUMN request_id BYTEA;
UPDATE entries SET request_id = r.request_id
    FROM requests r
    WHERE r.scope = 'append' AND r.target = entries.group_id
      AND entries.seq = r.result::BIGINT;
DELETE FROM requests WHERE scope = 'append';
CREATE UNIQUE INDEX entries_request ON entries (group_id, request_id);

-- `samizdat_append`:
-- The same rules as the statement-by-statement path in store/postgres.rs (which stays for
-- commits that carry Welcomes), in the same order: the group row is locked, who may append is
-- checked before anything else (the token of the claimed epoch), then the retry record, then
-- the epoch compare-and-set, the log's byte limit and the counters. Called as one statement
-- outside an explicit transaction, so PostgreSQL commits it (and sends the NOTIFY) before
-- answering: acknowledged still means committed.
--
-- status: 0 stored, 1 a retry of a stored request (seq is the first answer), 2 no such group,
-- 3 bad token, 4 wrong epoch (current_epoch says which), 5 log full, 6 counter exhausted,
-- 7 a commit without next_token_hash.
CREATE FUNCTION samizdat_append(
    p_group BYTEA, p_epoch BIGINT, p_token_hash BYTEA, p_request BYTEA, p_kind SMALLINT,
    p_body BYTEA, p_next_hash BYTEA, p_now BIGINT, p_max_bytes BIGINT, p_notify TEXT,
    OUT status SMALLINT, OUT seq BIGINT, OUT current_epoch BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
    g_epoch BIGINT;
    g_seq BIGINT;
    g_bytes BIGINT;
    prior BIGINT;
BEGIN
    SELECT g.current_epoch, g.next_seq, g.bytes INTO g_epoch, g_seq, g_bytes
        FROM groups g WHERE g.group_id = p_group FOR UPDATE;
    IF NOT FOUND THEN
        status := 2; RETURN;
    END IF;
    current_epoch := g_epoch;
    PERFORM 1 FROM group_epochs e
        WHERE e.group_id = p_group AND e.epoch = p_epoch AND e.token_hash = p_token_hash;
    IF NOT FOUND THEN
        status := 3; RETURN;
    END IF;
    SELECT e.seq INTO prior FROM entries e
        WHERE e.group_id = p_group AND e.request_id = p_request;
    IF FOUND THEN
        status := 1; seq := prior; RETURN;
    END IF;
    IF p_epoch <> g_epoch THEN
        status := 4; RETURN;
    END IF;
    IF g_bytes + length(p_body) > p_max_bytes THEN
        status := 5; RETURN;
    END IF;
    IF g_seq >= 9223372036854775807 OR (p_kind = 1 AND g_epoch >= 9223372036854775807) THEN
        status := 6; RETURN;
    END IF;
    IF p_kind = 1 AND p_next_hash IS NULL THEN
        status := 7; RETURN;
    END IF;
    INSERT INTO entries (group_id, seq, epoch, kind, body, stored_at, request_id)
        VALUES (p_group, g_seq, p_epoch, p_kind, p_body, p_now, p_request);
    IF p_kind = 1 THEN
        INSERT INTO group_epochs (group_id, epoch, token_hash, created_at)
            VALUES (p_group, g_epoch + 1, p_next_hash, p_now);
        UPDATE groups SET current_epoch = g_epoch + 1, next_seq = g_seq + 1,
                          bytes = bytes + length(p_body), last_append_at = p_now
            WHERE group_id = p_group;
    ELSE
        UPDATE groups SET next_seq = g_seq + 1, bytes = bytes + length(p_body),
                          last_append_at = p_now
            WHERE group_id = p_group;
    END IF;
    PERFORM pg_notify('samizdat', p_notify);
    status := 0; seq := g_seq;
END;
$$;
