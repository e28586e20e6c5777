-- Version 7: indexes for the app's reads.
--
-- A conversation's messages in log order (messages not yet ordered by the relay last), so
-- the newest page, a page before or after a message and the chat list's preview read a few
-- rows instead of sorting the whole conversation. The expression matches the queries'.
CREATE INDEX messages_by_position
    ON messages (group_id, COALESCE(seq, 9223372036854775807), received_at);
-- Unread counts without reading every message.
CREATE INDEX messages_unread ON messages (group_id) WHERE unread = 1;
