-- Version 24: a conversation the person joined themselves, from the list of pending
-- invitations (issue 30, item 7). An introduction inside it through a link that is used up,
-- expired or unknown is not refused: the person let the stranger in by hand, so the
-- conversation becomes the 1:1 chat with them, named after them, with a line saying the link
-- had already been used. Kept per device: only the device that joined reads the introduction.
ALTER TABLE conversations ADD COLUMN joined_by_hand INTEGER NOT NULL DEFAULT 0;
