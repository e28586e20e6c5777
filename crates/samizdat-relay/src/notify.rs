//! Wake-ups for subscribers. A freshly appended entry is pushed with the wake-up
//! ([`Appended`]): a subscriber whose cursor it directly follows sends it without a store
//! read; any other reads the log. A lost or duplicated wake-up delays nothing beyond the next
//! periodic re-read.

use std::sync::{Arc, OnceLock};

use axum::extract::ws::Utf8Bytes;

use samizdat_proto::{BinaryEntry, Bytes, EntryKind, Id, ServerFrame};
use tokio::sync::broadcast;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    Mailbox(Id),
    Group(Id),
    Channel(Id),
}

/// A freshly appended entry, pushed to every subscriber that is waiting for it without a store
/// read. Its frames are encoded at most once each, on first use — the `entry` text frame
/// (JSON, base64 body) only if some subscriber wants text, the binary frame only if some
/// subscriber asked for binary entries. A subscriber uses it only if it directly follows its
/// cursor; otherwise it reads the log.
#[derive(Debug)]
pub struct Appended {
    pub group: Id,
    pub seq: u64,
    pub epoch: u64,
    pub kind: EntryKind,
    body: Vec<u8>,
    text: OnceLock<Utf8Bytes>,
    binary: OnceLock<axum::body::Bytes>,
}

impl Appended {
    pub fn new(group: Id, seq: u64, epoch: u64, kind: EntryKind, body: Vec<u8>) -> Self {
        Appended {
            group,
            seq,
            epoch,
            kind,
            body,
            text: OnceLock::new(),
            binary: OnceLock::new(),
        }
    }

    /// The `entry` text frame (encoded on first use, shared after).
    pub fn text_frame(&self) -> Utf8Bytes {
        self.text
            .get_or_init(|| {
                let frame = ServerFrame::Entry {
                    group_id: self.group,
                    seq: self.seq,
                    epoch: self.epoch,
                    kind: self.kind,
                    body: Bytes(self.body.clone()),
                };
                serde_json::to_string(&frame).unwrap_or_default().into()
            })
            .clone()
    }

    /// The [`BinaryEntry`] frame (encoded on first use, shared after).
    pub fn binary_frame(&self) -> axum::body::Bytes {
        self.binary
            .get_or_init(|| {
                BinaryEntry::encode_parts(&self.group, self.seq, self.epoch, self.kind, &self.body)
                    .into()
            })
            .clone()
    }
}

#[derive(Debug, Clone)]
pub enum Wake {
    Topic(Topic),
    Entry(Arc<Appended>),
    /// Anything may have changed (wake-ups from other processes may have been lost): every
    /// connection reads all it follows.
    All,
}

/// Fan-out of wake-ups to every WebSocket connection of this process.
#[derive(Clone)]
pub struct Notifier {
    tx: broadcast::Sender<Wake>,
    /// Channel wake-ups so far (`channels::PushFrames` forgets "no record yet" at each).
    channel_wakes: Arc<std::sync::atomic::AtomicU64>,
}

impl Notifier {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(4096);
        Notifier {
            tx,
            channel_wakes: Arc::default(),
        }
    }

    pub fn notify(&self, topic: Topic) {
        if matches!(topic, Topic::Channel(_)) {
            // Counted before anyone is woken: whoever wakes sees the new count.
            self.channel_wakes
                .fetch_add(1, std::sync::atomic::Ordering::Release);
        }
        let _ = self.tx.send(Wake::Topic(topic));
    }

    /// Wake every connection for everything it follows.
    pub fn all(&self) {
        self.channel_wakes
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        let _ = self.tx.send(Wake::All);
    }

    /// The count of channel wake-ups, shared.
    pub fn channel_wakes(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.channel_wakes.clone()
    }

    pub fn entry(&self, appended: Appended) {
        let _ = self.tx.send(Wake::Entry(Arc::new(appended)));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Wake> {
        self.tx.subscribe()
    }
}

impl Default for Notifier {
    fn default() -> Self {
        Self::new()
    }
}
