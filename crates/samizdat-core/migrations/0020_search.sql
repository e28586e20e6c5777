-- Version 20: search across every conversation, local only (issue 30), inside the encrypted
-- profile. An external-content FTS5 index over `messages.body`: it keeps the words, not a copy
-- of the text, and triggers keep it in step with the rows — so an edit re-indexes, a delete
-- for everyone (its body emptied) or an expiry (its row deleted) takes the message's words
-- out, and `profile/search.rs` merges the index after removals so no old segment keeps them.
--
-- Russian-aware: `unicode61` folds case in every script; ё is indexed (and searched, see
-- `search.rs`) as е; every query term is a prefix.
CREATE VIRTUAL TABLE message_search USING fts5(
    body,
    content = 'messages',
    content_rowid = 'rowid',
    tokenize = 'unicode61 remove_diacritics 2'
);

CREATE TRIGGER message_search_insert AFTER INSERT ON messages
WHEN new.deleted = 0 AND new.body != ''
BEGIN
    INSERT INTO message_search (rowid, body)
    VALUES (new.rowid, replace(replace(new.body, 'ё', 'е'), 'Ё', 'Е'));
END;

CREATE TRIGGER message_search_delete AFTER DELETE ON messages
WHEN old.deleted = 0 AND old.body != ''
BEGIN
    INSERT INTO message_search (message_search, rowid, body)
    VALUES ('delete', old.rowid, replace(replace(old.body, 'ё', 'е'), 'Ё', 'Е'));
END;

CREATE TRIGGER message_search_update AFTER UPDATE OF body, deleted ON messages
BEGIN
    INSERT INTO message_search (message_search, rowid, body)
    SELECT 'delete', old.rowid, replace(replace(old.body, 'ё', 'е'), 'Ё', 'Е')
    WHERE old.deleted = 0 AND old.body != '';
    INSERT INTO message_search (rowid, body)
    SELECT new.rowid, replace(replace(new.body, 'ё', 'е'), 'Ё', 'Е')
    WHERE new.deleted = 0 AND new.body != '';
END;

INSERT INTO message_search (rowid, body)
SELECT rowid, replace(replace(body, 'ё', 'е'), 'Ё', 'Е') FROM messages
WHERE deleted = 0 AND body != '';
