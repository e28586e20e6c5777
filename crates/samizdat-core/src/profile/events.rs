//! The event log: every event the core reports, written once, in the transaction of
//! the change it reports, and read back by position (`get_events`).

use super::*;

/// Something the core reports to its fronts. Every event names what it is about by id
/// (`conversation_id`, message `id`, contact `fingerprint`); names are for display only and
/// may change. Fronts must ignore event kinds and fields they do not know.
///
/// Events are written to the profile's durable event log (`events` table) in the same
/// transaction as the change they report, except `relay` connection events, which are live
/// only (see [`Event::is_durable`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A message from another member, stored and shown once.
    Message {
        conversation_id: ConversationId,
        conversation: String,
        id: MessageId,
        /// Sender's key fingerprint (hex).
        sender: ContactId,
        /// Sender's display label in this conversation.
        from: String,
        text: String,
        sent_at: u64,
        /// A file that came with the message (`download` fetches it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attachment: Option<super::AttachmentView>,
    },
    /// Our message is stored and waits for the relay's acknowledgement.
    MessageQueued {
        conversation_id: ConversationId,
        conversation: String,
        id: MessageId,
    },
    /// The relay acknowledged our message at `position` of the conversation's log.
    MessageDelivered {
        conversation_id: ConversationId,
        conversation: String,
        id: MessageId,
        position: u64,
    },
    /// Someone (`who`; "me" for us) reacted to a message with `emoji`, or took their reaction
    /// back (`emoji` absent).
    Reaction {
        conversation_id: ConversationId,
        /// The message reacted to.
        id: MessageId,
        sender: ContactId,
        who: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        emoji: Option<String>,
    },
    /// A chat was deleted on this device (`delete_chat`).
    ChatDeleted { conversation_id: ConversationId },
    /// Someone calls us (the app rings; `call` gives the offer).
    CallIncoming {
        conversation_id: ConversationId,
        conversation: String,
        call_id: CallId,
        video: bool,
        from: String,
        /// A group call: join it with an offer to each person in it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        group: bool,
    },
    /// Someone joined or left a group call we are in or rung for, or sent us an offer or
    /// answer: `call` has its legs.
    CallChanged {
        conversation_id: ConversationId,
        call_id: CallId,
    },
    /// New records in a channel this profile runs or follows (posts, edits, deletes).
    ChannelPosts {
        channel_id: crate::ChannelId,
        channel: String,
        records: u64,
    },
    /// A relay's copy of a channel did not check out (a record altered, dropped or forged):
    /// the channel was read from its next relay.
    ChannelFault {
        channel_id: crate::ChannelId,
        channel: String,
        relay: String,
        fault: crate::channel::ChainFault,
    },
    /// The other side took our call: its answer is in `call`.
    CallAnswered {
        conversation_id: ConversationId,
        call_id: CallId,
    },
    /// A call ended, a line in the chat: how, and how long it lasted once answered.
    CallEnded {
        conversation_id: ConversationId,
        call_id: CallId,
        outgoing: bool,
        video: bool,
        outcome: super::calls::CallOutcome,
        #[serde(default)]
        duration_secs: u64,
        /// A group call (the line says so).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        group: bool,
    },
    /// Other members' devices hold (`read`: have shown) these messages of ours.
    Receipt {
        conversation_id: ConversationId,
        ids: Vec<MessageId>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        read: bool,
    },
    /// A message's sender corrected its text.
    MessageEdited {
        conversation_id: ConversationId,
        id: MessageId,
        text: String,
    },
    /// A message was deleted: by its sender for everyone, or by us on this device only.
    MessageDeleted {
        conversation_id: ConversationId,
        id: MessageId,
        for_everyone: bool,
    },
    /// Our message was refused and will not be retried.
    MessageFailed {
        conversation_id: ConversationId,
        conversation: String,
        id: MessageId,
        error: crate::Problem,
    },
    NewContact {
        /// Key fingerprint (hex): the contact's stable id.
        fingerprint: ContactId,
        alias: String,
        display_name: String,
    },
    Joined {
        conversation_id: ConversationId,
        conversation: String,
    },
    /// A member (`who`; "me" for us) set the disappearing-messages timer (0: off).
    TimerSet {
        conversation_id: ConversationId,
        conversation: String,
        who: String,
        secs: u64,
    },
    /// A group got (or changed) its local name.
    GroupNamed {
        conversation_id: ConversationId,
        conversation: String,
    },
    MemberAdded {
        conversation_id: ConversationId,
        conversation: String,
        /// Key fingerprint (hex) of the new member.
        member: ContactId,
        who: String,
    },
    MemberRemoved {
        conversation_id: ConversationId,
        conversation: String,
        member: ContactId,
        who: String,
    },
    MemberLeft {
        conversation_id: ConversationId,
        conversation: String,
        member: ContactId,
        who: String,
    },
    /// We were removed from the group.
    Removed {
        conversation_id: ConversationId,
        conversation: String,
    },
    /// Something to tell the person, as data (`notice.kind`, `notice.params`): each front
    /// writes the sentence in its language.
    Notice {
        conversation_id: Option<ConversationId>,
        conversation: Option<String>,
        notice: crate::Notice,
    },
    /// A group invitation from someone who is not a contact, waiting for consent
    /// (`invitation accept|decline ID`). Nothing was sent and no relay was contacted.
    InvitationPending {
        id: i64,
        /// Key fingerprint (hex prefix) of the member who added us.
        from: String,
        relay: String,
        members: usize,
        /// Set when the invitation needs a second look (an unknown relay, a claimed id).
        warning: Option<crate::Notice>,
    },
    /// A long catch-up on one conversation: `done` log entries processed so far (reported
    /// after each full page).
    SyncProgress {
        conversation_id: ConversationId,
        conversation: String,
        done: u64,
    },
    /// An attachment moving to or from a relay: `done` of `total` ciphertext bytes.
    /// Live only.
    Transfer {
        /// The message the file belongs to (for an upload: known once it is sent; until
        /// then the local file name).
        id: String,
        direction: TransferDirection,
        done: u64,
        total: u64,
        /// Set when a transfer picked up after an interruption, at this byte.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resumed_at: Option<u64>,
    },
    /// The realtime connection to a relay: `up`, `down` or `retrying` (after `retry_in_ms`).
    /// Live only: not in the durable log.
    Relay {
        relay: String,
        state: RelayState,
        retry_in_ms: Option<u64>,
    },
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RelayState {
    Up,
    Down,
    Retrying,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TransferDirection {
    Upload,
    Download,
}

impl Event {
    /// The conversation whose chat shows this event as a line, if it is one of those:
    /// membership, a rename, the timer, our removal, a contact's devices changing.
    pub(crate) fn chat_line(&self) -> Option<&ConversationId> {
        match self {
            Event::MemberAdded {
                conversation_id, ..
            }
            | Event::MemberRemoved {
                conversation_id, ..
            }
            | Event::MemberLeft {
                conversation_id, ..
            }
            | Event::GroupNamed {
                conversation_id, ..
            }
            | Event::TimerSet {
                conversation_id, ..
            }
            | Event::Removed {
                conversation_id, ..
            }
            | Event::CallEnded {
                conversation_id, ..
            } => Some(conversation_id),
            Event::Notice {
                conversation_id: Some(id),
                notice:
                    crate::Notice::ContactDeviceAdded { .. }
                    | crate::Notice::ContactDeviceRemoved { .. }
                    | crate::Notice::LetInByHand { .. }
                    | crate::Notice::TheyCouldNotRead { .. },
                ..
            } => Some(id),
            _ => None,
        }
    }

    /// Whether the event belongs in the durable log (all but relay connection changes and
    /// transfer progress).
    pub fn is_durable(&self) -> bool {
        !matches!(self, Event::Relay { .. } | Event::Transfer { .. })
    }

    pub(super) fn notice(conv: Option<&Conv>, notice: crate::Notice) -> Event {
        Event::Notice {
            conversation_id: conv.map(|c| ConversationId::from_id(c.group_id)),
            conversation: conv.map(|c| c.name.clone()),
            notice,
        }
    }
}

/// An event with its position in the durable log.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct LoggedEvent {
    pub seq: u64,
    #[serde(flatten)]
    pub event: Event,
}

/// A page of the durable event log.
#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct EventPage {
    pub events: Vec<LoggedEvent>,
    /// The newest position in the log (pass it as `since` to skip the past).
    pub last: u64,
    /// Events after `since` were dropped from the bounded log before they were read.
    pub overflow: bool,
}

impl Profile {
    /// Log `e` durably, inside the caller's transaction if one is open. Every event the
    /// profile reports goes through here, once, and only here: nothing else collects
    /// events; the service, `sync`'s answer and every front read them back from the log.
    pub(super) fn emit(&self, e: Event) -> Result<()> {
        debug_assert!(
            e.is_durable(),
            "live-only events are the service's, not the log's"
        );
        let body = serde_json::to_string(&e).map_err(|e| Error::Storage(e.to_string()))?;
        if let Some(group) = e.chat_line() {
            self.chat_line(group, &e, &body)?;
        }
        let conn = self.db.conn();
        conn.execute(
            "INSERT INTO events (body, created_at) VALUES (?1, ?2)",
            params![body, now_millis() as i64],
        )?;
        conn.execute(
            "DELETE FROM events WHERE seq <= (SELECT MAX(seq) FROM events) - ?1",
            params![EVENT_LOG_MAX as i64],
        )?;
        Ok(())
    }

    /// Keep an event about a conversation as a line in its chat (see migration 19): after
    /// the last log entry applied, so it sits where it happened. Membership lines only in
    /// groups (a 1:1 contact's new device is its own line).
    fn chat_line(&self, group: &ConversationId, e: &Event, body: &str) -> Result<()> {
        let conn = self.db.conn();
        let conv: Option<(String, i64, i64)> = conn
            .query_row(
                "SELECT kind, cursor, seq_base FROM conversations WHERE group_id = ?1",
                params![group.as_bytes()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((kind, cursor, base)) = conv else {
            return Ok(());
        };
        let membership = matches!(
            e,
            Event::MemberAdded { .. } | Event::MemberRemoved { .. } | Event::MemberLeft { .. }
        );
        if kind == "self" || (membership && kind != "group") {
            return Ok(());
        }
        let now = now_millis() as i64;
        conn.execute(
            "INSERT INTO messages (id, group_id, seq, sender_fp, outgoing, body, sent_at, received_at, unread, system)
             VALUES (?1, ?2, ?3, x'', 0, '', ?4, ?4, 0, ?5)",
            params![random_id().as_bytes(), group.as_bytes(), base + cursor, now, body],
        )?;
        Ok(())
    }

    /// The newest position in the event log (0 when it is empty).
    pub fn last_event(&self) -> Result<u64> {
        let last: Option<i64> =
            self.db
                .conn()
                .query_row("SELECT MAX(seq) FROM events", [], |r| r.get(0))?;
        Ok(last.unwrap_or(0).max(0) as u64)
    }

    /// Every event logged after `since`, oldest first (what one step reported).
    pub fn events_since(&self, since: u64) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        let mut at = since;
        loop {
            let page = self.events_after(at, 1000)?;
            let Some(last) = page.events.last().map(|e| e.seq) else {
                return Ok(out);
            };
            at = last;
            out.extend(page.events.into_iter().map(|e| e.event));
        }
    }

    /// Events logged after `since` (at most `limit`), oldest first. `overflow` is set when
    /// events after `since` were already dropped from the bounded log.
    pub fn events_after(&self, since: u64, limit: usize) -> Result<EventPage> {
        let conn = self.db.conn();
        let (first, last): (Option<i64>, Option<i64>) =
            // Two subqueries: SQLite answers a lone MIN or MAX from the primary key, but scans
            // the whole log for both in one SELECT (this runs after every command).
            conn.query_row(
                "SELECT (SELECT MIN(seq) FROM events), (SELECT MAX(seq) FROM events)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
        let mut stmt =
            conn.prepare("SELECT seq, body FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
        let rows = stmt
            .query_map(
                params![since.min(i64::MAX as u64) as i64, limit as i64],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut events = Vec::with_capacity(rows.len());
        for (seq, body) in rows {
            // A row written by a newer version with a kind we do not know is skipped.
            if let Ok(event) = serde_json::from_str::<Event>(&body) {
                events.push(LoggedEvent {
                    seq: seq as u64,
                    event,
                });
            }
        }
        let first = first.unwrap_or(0) as u64;
        Ok(EventPage {
            overflow: first > 0 && since.saturating_add(1) < first,
            last: last.unwrap_or(0) as u64,
            events,
        })
    }
}
