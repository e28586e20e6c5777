-- Version 23: blocking a contact (issue 30, item 6). Nothing a blocked contact sends is kept
-- (messages, reactions, edits, receipts, invitations to groups); we cannot write to them
-- until we unblock them. The state is this person's, shared by their devices.
ALTER TABLE contacts ADD COLUMN blocked INTEGER NOT NULL DEFAULT 0;
