//! Search across every conversation, on this device only: SQLite FTS5 inside the encrypted
//! profile (migration 20). Triggers keep the index in step with `messages`; this module asks
//! it and keeps it clean.
//!
//! Russian-aware: the tokenizer folds case in every script, ё is indexed and searched as е,
//! and each word of a query matches as a prefix ("встреч" finds "встреча", "встречи").

use super::*;

/// Most hits one search returns.
pub const MAX_HITS: usize = 500;
/// Longest query accepted.
const MAX_QUERY: usize = 512;

/// One message that matched, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct SearchHit {
    pub id: MessageId,
    pub conversation_id: ConversationId,
    /// The conversation as the person calls it.
    pub conversation: String,
    pub from: String,
    pub text: String,
    pub sent_at: u64,
    pub outgoing: bool,
}

/// What the index holds for `s`: ё as е (the tokenizer does the rest).
fn fold(s: &str) -> String {
    s.replace('ё', "е").replace('Ё', "Е")
}

/// A person's query as an FTS5 expression: every word must appear, each as a prefix. Words
/// are quoted, so nothing typed is taken as FTS5 syntax.
fn expression(query: &str) -> Option<String> {
    let terms: Vec<String> = fold(query)
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(16)
        .map(|w| format!("\"{w}\"*"))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" "))
}

impl Profile {
    /// Messages whose text has every word of `query` (as prefixes), newest first, across all
    /// conversations or in one.
    pub fn search(
        &self,
        query: &str,
        conversation: Option<&ConversationId>,
        limit: usize,
    ) -> Result<Vec<SearchHit>> {
        if query.len() > MAX_QUERY {
            return Err(Error::Usage(format!(
                "the search is longer than {MAX_QUERY} bytes"
            )));
        }
        let Some(expr) = expression(query) else {
            return Err(Error::Usage("search for at least one word".into()));
        };
        let group = match conversation {
            Some(id) => Some(self.conv(id)?.group_id),
            None => None,
        };
        // Disappeared messages are never found, even between sweeps.
        self.expire_messages()?;
        let limit = limit.clamp(1, MAX_HITS) as i64;
        // Newest first by arrival (the index's own rowid order, which FTS5 walks backwards
        // without sorting every match); the self group is never searched.
        let rows: Vec<(Vec<u8>, Vec<u8>, Vec<u8>, String, i64, bool, String)> = {
            let conn = self.db.conn();
            let mut stmt = conn.prepare_cached(
                "SELECT m.id, m.group_id, m.sender_fp, m.body, m.sent_at, m.outgoing, CASE WHEN c.kind = 'self' THEN '' ELSE c.name END
                 FROM message_search s
                 JOIN messages m ON m.rowid = s.rowid
                 JOIN conversations c ON c.group_id = m.group_id
                 WHERE message_search MATCH ?1 AND (?2 IS NULL OR m.group_id = ?2)
                   AND m.deleted = 0
                 ORDER BY s.rowid DESC LIMIT ?3",
            )?;
            stmt.query_map(
                params![expr, group.as_ref().map(|g| g.as_bytes().to_vec()), limit],
                |r| r.try_into(),
            )?
            .collect::<rusqlite::Result<_>>()?
        };
        let mut out = Vec::with_capacity(rows.len());
        for (id, gid, fp, text, sent_at, outgoing, name) in rows {
            let group_id =
                Id::from_slice(&gid).map_err(|_| Error::Storage("corrupt group id".into()))?;
            out.push(SearchHit {
                id: MessageId::from_slice(&id)?,
                conversation_id: ConversationId::from_id(group_id),
                conversation: name,
                from: self.label(&group_id, &fp)?,
                text,
                sent_at: sent_at.max(0) as u64,
                outgoing,
            });
        }
        Ok(out)
    }

    /// After messages were removed (expired, deleted): merge the index into one segment, so
    /// the removed words are gone from its pages too, not only marked deleted (the pages are
    /// then overwritten: `secure_delete`).
    pub(super) fn compact_search(&self) -> Result<()> {
        self.db.conn().execute(
            "INSERT INTO message_search (message_search) VALUES ('optimize')",
            [],
        )?;
        Ok(())
    }

    /// Build the index again from the messages (after a restore: a copied database numbers
    /// its rows anew).
    pub(crate) fn reindex_search(&self) -> Result<()> {
        self.db.transaction(|tx| {
            let conn = tx.conn();
            conn.execute(
                "INSERT INTO message_search (message_search) VALUES ('delete-all')",
                [],
            )?;
            conn.execute(
                "INSERT INTO message_search (rowid, body)
                 SELECT rowid, replace(replace(body, 'ё', 'е'), 'Ё', 'Е') FROM messages
                 WHERE deleted = 0 AND body != ''",
                [],
            )?;
            Ok(())
        })
    }
}

#[cfg(feature = "testing")]
impl Profile {
    /// `temp.search_terms`: the index's own list of terms (`fts5vocab`), to check that a
    /// removed message's words are gone from it.
    pub fn vocab_for_test(&self) -> Result<()> {
        self.db.conn().execute_batch(
            "CREATE VIRTUAL TABLE IF NOT EXISTS temp.search_terms USING fts5vocab(main, message_search, row)",
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_becomes_quoted_prefix_terms() {
        assert_eq!(
            expression("Встреча  ЁЛКА").as_deref(),
            Some("\"Встреча\"* \"ЕЛКА\"*")
        );
        // FTS5 syntax typed by a person is only words.
        assert_eq!(
            expression("a OR b\" NEAR(").as_deref(),
            Some("\"a\"* \"OR\"* \"b\"* \"NEAR\"*")
        );
        assert_eq!(expression(" --- "), None);
    }
}
