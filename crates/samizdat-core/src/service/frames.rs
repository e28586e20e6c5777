//! Frames from the home relay's socket: what each asks of the service, entries pushed and
//! kept until applied, and the small timers of the realtime loop.

use super::*;

/// What a server frame asks of the service.
pub(super) enum Frame {
    Hello(Id),
    /// New entries in one conversation's log.
    Group(Id),
    /// A channel's record, pushed (channel, seq, the record's bytes).
    Channel(Id, u64, Vec<u8>),
    /// Nothing to read: a subscription confirmed (the relay pushes what follows its cursor),
    /// a pong.
    Quiet,
    /// Anything else: the mailbox, an error.
    Other,
}

/// The conversation a pushed frame is about, if it is about one.
pub(super) fn group_of(text: &str) -> Option<Id> {
    match serde_json::from_str::<ServerFrame>(text) {
        Ok(ServerFrame::Entry { group_id, .. } | ServerFrame::EpochClosed { group_id, .. }) => {
            Some(group_id)
        }
        _ => None,
    }
}

/// The conversation a pushed binary entry is about (`None`: not an entry frame). Only the
/// header is read (a conversation's own socket only says which log moved).
pub(super) fn group_of_binary(b: &[u8]) -> Option<Id> {
    samizdat_proto::BinaryEntry::group_of(b)
}

/// Pushed entries kept per log until the service applies them; past this the log is read.
pub(super) const PUSHED_MAX: usize = 64;

/// Keep a pushed binary entry for [`Profile::sync_conversation`] and say which log it is
/// for (`None`: not an entry frame). A log with too many waiting entries drops them: a gap
/// makes the sync read the log instead.
pub(super) fn keep_pushed(
    pushed: &mut HashMap<Id, Vec<samizdat_proto::Entry>>,
    b: &[u8],
) -> Option<Id> {
    let Ok(e) = samizdat_proto::BinaryEntry::decode(b) else {
        return group_of_binary(b);
    };
    let group = e.group_id;
    keep_entry(pushed, group, pushed_entry(e));
    Some(group)
}

/// A pushed binary entry as the log would give it.
pub(super) fn pushed_entry(e: samizdat_proto::BinaryEntry) -> samizdat_proto::Entry {
    samizdat_proto::Entry {
        seq: e.seq,
        epoch: e.epoch,
        kind: e.kind,
        body: Bytes(e.body),
    }
}

/// Keep one pushed entry of `log` (bounded: past [`PUSHED_MAX`] the log is read instead).
pub(super) fn keep_entry(
    pushed: &mut HashMap<Id, Vec<samizdat_proto::Entry>>,
    log: Id,
    entry: samizdat_proto::Entry,
) {
    let waiting = pushed.entry(log).or_default();
    if waiting.len() >= PUSHED_MAX {
        waiting.clear();
    }
    waiting.push(entry);
}

/// Ask a relay that offers it (its `hello` lists the feature) to push entries as binary
/// frames: no base64 and no JSON for the relay to encode or for us to parse.
pub(super) async fn ask_binary_entries(ws: &mut Ws, features: &[String]) -> Result<()> {
    if !features
        .iter()
        .any(|f| f == samizdat_proto::FEATURE_BINARY_ENTRIES)
    {
        return Ok(());
    }
    let frame = ClientFrame::Options {
        binary_entries: true,
    };
    let text = serde_json::to_string(&frame).map_err(|e| Error::Protocol(e.to_string()))?;
    ws.send(Message::Text(text.into()))
        .await
        .map_err(|e| Error::RelayUnreachable(e.to_string()))
}

pub(super) async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

pub(super) async fn next_frame(
    ws: &mut Option<Ws>,
) -> Option<std::result::Result<Message, tokio_tungstenite::tungstenite::Error>> {
    match ws.as_mut() {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

pub(super) fn new_backoff() -> backon::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}
