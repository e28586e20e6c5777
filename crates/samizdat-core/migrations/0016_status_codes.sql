-- A conversation's status becomes a code (`notice::ConvStatus`) that each front renders in its
-- language; the refusal that goes with some of them moves to its own column. Rows written by
-- earlier versions held English sentences.
ALTER TABLE conversations ADD COLUMN status_reason TEXT;
UPDATE conversations SET status_reason = substr(status, length('refusing: ') + 1), status = 'refusing'
    WHERE status LIKE 'refusing: %';
UPDATE conversations SET status_reason = substr(status, length('refused: ') + 1), status = 'refused'
    WHERE status LIKE 'refused: %';
UPDATE conversations SET status_reason = NULL, status = 'invite_refused'
    WHERE status LIKE 'the invite was refused%';
UPDATE conversations SET status = 'left' WHERE status = 'you left';
UPDATE conversations SET status = 'removed' WHERE status = 'removed from the group';
UPDATE conversations SET status = 'lost_sync' WHERE status LIKE 'lost sync%';
-- Why a message failed: a `notice::Problem` as JSON from now on; older rows keep their text,
-- which is read as the detail of a relay refusal.
