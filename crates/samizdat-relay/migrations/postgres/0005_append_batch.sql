-- Version 5: appends to one group batched into one transaction (group commit per group).
--
-- Each append holds its group's row lock (the epoch compare-and-set) until its transaction is
-- durable, so a group took one append per WAL flush. The relay now gathers the appends waiting
-- for the same group and stores them with one call: each is checked and stored by
-- `samizdat_append` exactly as before, in the order they arrived (a commit in the batch moves
-- the epoch for those after it, as if they had come one by one), and all are committed — and
-- acknowledged — together. Answers come back in order with their index.
CREATE FUNCTION samizdat_append_batch(
    p_group BYTEA, p_epochs BIGINT[], p_token_hashes BYTEA[], p_requests BYTEA[],
    p_kinds SMALLINT[], p_bodies BYTEA[], p_next_hashes BYTEA[], p_now BIGINT,
    p_max_bytes BIGINT, p_notify TEXT)
RETURNS TABLE (r_index INT, r_status SMALLINT, r_seq BIGINT, r_epoch BIGINT)
LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_requests, 1), 0) LOOP
        RETURN QUERY SELECT i, a.status, a.seq, a.current_epoch
            FROM samizdat_append(p_group, p_epochs[i], p_token_hashes[i], p_requests[i],
                                 p_kinds[i], p_bodies[i], p_next_hashes[i], p_now, p_max_bytes,
                                 p_notify) AS a;
    END LOOP;
END;
$$;
