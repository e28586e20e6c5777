//! Wake-ups for subscribers. A wake-up only says "look again": subscribers always read
//! from the store, so a lost or duplicated wake-up delays nothing beyond the next poll.

use samizdat_proto::Id;
use tokio::sync::broadcast;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    Mailbox(Id),
    Group(Id),
}

/// Fan-out of wake-ups to every WebSocket connection of this process.
#[derive(Clone)]
pub struct Notifier {
    tx: broadcast::Sender<Topic>,
}

impl Notifier {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(4096);
        Notifier { tx }
    }

    pub fn notify(&self, topic: Topic) {
        let _ = self.tx.send(topic);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Topic> {
        self.tx.subscribe()
    }
}

impl Default for Notifier {
    fn default() -> Self {
        Self::new()
    }
}
