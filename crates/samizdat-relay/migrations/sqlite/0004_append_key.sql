-- Version 4: one row per append. The append's idempotency key (its request id) is kept on
-- the entry itself, under a unique index, instead of in a second row of `requests`: a retry
-- finds the entry it stored the first time. Both lived and expired together (the retention
-- sweep deletes entries and request records with the same cutoff), so nothing changes for a
-- client. Records of appends made before version 4 are moved onto their entries.
ALTER TABLE entries ADD COLUMN request_id BLOB;
UPDATE entries SET request_id = r.request_id
    FROM requests r
    WHERE r.scope = 'append' AND r.target = entries.group_id
      AND entries.seq = CAST(r.result AS INTEGER);
DELETE FROM requests WHERE scope = 'append';
CREATE UNIQUE INDEX entries_request ON entries (group_id, request_id);
