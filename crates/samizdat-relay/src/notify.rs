//! Wake-ups for subscribers. A wake-up only says "look again": subscribers always read
//! from the store, so a lost or duplicated wake-up delays nothing beyond the next poll.

use std::sync::Arc;

use samizdat_proto::{EntryKind, Id};
use tokio::sync::broadcast;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    Mailbox(Id),
    Group(Id),
}

/// A freshly appended entry, serialized once as its `entry` frame, so fan-out to many
/// subscribers costs no store read and no re-encoding. A subscriber uses it only if it
/// directly follows its cursor; otherwise it reads the log.
#[derive(Debug)]
pub struct Appended {
    pub group: Id,
    pub seq: u64,
    pub epoch: u64,
    pub kind: EntryKind,
    pub frame: axum::extract::ws::Utf8Bytes,
}

#[derive(Debug, Clone)]
pub enum Wake {
    Topic(Topic),
    Entry(Arc<Appended>),
}

/// Fan-out of wake-ups to every WebSocket connection of this process.
#[derive(Clone)]
pub struct Notifier {
    tx: broadcast::Sender<Wake>,
}

impl Notifier {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(4096);
        Notifier { tx }
    }

    pub fn notify(&self, topic: Topic) {
        let _ = self.tx.send(Wake::Topic(topic));
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
