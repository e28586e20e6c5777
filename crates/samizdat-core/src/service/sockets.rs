//! The sockets beside the home relay's: one per isolated conversation (each through its own
//! proxy identity) and one per mailbox on our other relays. Each reports pushes to the service.

use std::collections::HashSet;
use std::sync::Arc;

use super::*;

/// What one conversation's own WebSocket subscribes (isolation): its log's relay, the
/// epoch being read with that epoch's token, and the cursor.
#[derive(Clone)]
pub(super) struct ConvSub {
    ws_url: String,
    epoch: u64,
    token: Vec<u8>,
    after: u64,
}

/// The same subscription: the cursor (`after`) is left out, because the relay pushes every
/// entry after it anyway — a moved cursor needs no new subscription (one per message would
/// make the relay re-read the log for each).
impl PartialEq for ConvSub {
    fn eq(&self, o: &ConvSub) -> bool {
        (&self.ws_url, self.epoch, &self.token) == (&o.ws_url, o.epoch, &o.token)
    }
}

/// What an isolated conversation's socket reports: its log pushed, with the entry when the
/// push carried one (applied as it is when it follows the cursor, as on the main socket).
pub(super) struct ConvPush {
    pub(super) log: Id,
    pub(super) entry: Option<samizdat_proto::Entry>,
}

/// One WebSocket per conversation when isolating: each under the conversation's own proxy
/// identity, carrying that conversation's token only. Pushes come back with their entries.
pub(super) struct ConvSockets {
    tasks: HashMap<Id, (watch::Sender<ConvSub>, tokio::task::JoinHandle<()>)>,
    push_tx: mpsc::Sender<ConvPush>,
    pub(super) push_rx: mpsc::Receiver<ConvPush>,
    /// Logs whose socket is open and subscribed: their pushes keep the cursor current, so a
    /// send to one appends at once (as on the home socket).
    live: Arc<std::sync::Mutex<HashSet<Id>>>,
}

impl ConvSockets {
    pub(super) fn new() -> ConvSockets {
        let (push_tx, push_rx) = mpsc::channel(1024);
        ConvSockets {
            tasks: HashMap::new(),
            push_tx,
            push_rx,
            live: Arc::default(),
        }
    }

    /// The logs followed live on their own sockets now.
    pub(super) fn live_logs(&self) -> HashSet<Id> {
        self.live.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Start, update or stop the sockets so they match the active conversations.
    pub(super) fn update(&mut self, p: &Profile) -> Result<()> {
        let mut wanted = std::collections::HashSet::new();
        for conv in p.active_convs()? {
            // Keyed by the log: a move starts a socket for the new log and ends the old one.
            wanted.insert(conv.log);
            let client = p.conv_relay(&conv)?;
            let sub = ConvSub {
                ws_url: client.ws_url(),
                epoch: conv.read_epoch,
                token: p.token(&conv.group_id, conv.read_epoch)?,
                after: conv.cursor,
            };
            match self.tasks.get(&conv.log) {
                Some((tx, task)) if !task.is_finished() => {
                    tx.send_if_modified(|cur| {
                        let changed = *cur != sub;
                        if changed {
                            *cur = sub;
                        }
                        changed
                    });
                }
                _ => {
                    let (tx, rx) = watch::channel(sub);
                    let task = tokio::spawn(conv_socket(
                        client,
                        conv.log,
                        rx,
                        (self.push_tx.clone(), self.live.clone()),
                    ));
                    self.tasks.insert(conv.log, (tx, task));
                }
            }
        }
        self.tasks.retain(|g, (_, task)| {
            let keep = wanted.contains(g);
            if !keep {
                task.abort();
            }
            keep
        });
        if let Ok(mut live) = self.live.lock() {
            live.retain(|g| wanted.contains(g));
        }
        Ok(())
    }
}

impl Drop for ConvSockets {
    fn drop(&mut self) {
        for (_, (_, task)) in self.tasks.drain() {
            task.abort();
        }
    }
}

/// Keep one conversation's WebSocket open (reconnecting with backoff), subscribed to what
/// `sub` says; report each push for the conversation on `push`. The conversation's client
/// (its own proxy identity) appends over the same socket.
pub(super) async fn conv_socket(
    client: crate::relay_client::RelayClient,
    group: Id,
    mut sub: watch::Receiver<ConvSub>,
    (push, live): (mpsc::Sender<ConvPush>, Arc<std::sync::Mutex<HashSet<Id>>>),
) {
    let pushed = |entry| ConvPush { log: group, entry };
    let following = |on: bool| {
        if let Ok(mut l) = live.lock() {
            if on {
                l.insert(group);
            } else {
                l.remove(&group);
            }
        }
    };
    let mut backoff = new_backoff();
    loop {
        if let Ok(mut ws) = client.open_shared(true).await {
            backoff = new_backoff();
            let mut ready = false;
            loop {
                let frame = tokio::select! {
                    msg = ws.next() => msg,
                    changed = sub.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let current = sub.borrow().clone();
                        if ready && subscribe_group(&mut ws, group, &current).await.is_err() {
                            break;
                        }
                        continue;
                    }
                };
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Binary(b))) => {
                        // A pushed entry: handed to the service, which applies it when it
                        // follows the cursor (or reads the log when it does not).
                        let entry = match samizdat_proto::BinaryEntry::decode(&b) {
                            Ok(e) if e.group_id == group => Some(pushed_entry(e)),
                            _ if group_of_binary(&b) == Some(group) => None,
                            _ => continue,
                        };
                        if push.send(pushed(entry)).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    Some(Ok(_)) => continue,
                    _ => break,
                };
                match serde_json::from_str::<ServerFrame>(text.as_str()) {
                    Ok(ServerFrame::Hello { features, .. }) => {
                        ready = true;
                        if ask_binary_entries(&mut ws, &features).await.is_err() {
                            break;
                        }
                        let current = sub.borrow().clone();
                        if subscribe_group(&mut ws, group, &current).await.is_err() {
                            break;
                        }
                        following(true);
                        // Whatever arrived while this socket was away.
                        let _ = push.send(pushed(None)).await;
                    }
                    // The service is gone: so is this socket.
                    Ok(ServerFrame::Entry { .. } | ServerFrame::EpochClosed { .. })
                        if push.send(pushed(None)).await.is_err() =>
                    {
                        return;
                    }
                    _ => {}
                }
            }
            following(false);
        }
        tokio::time::sleep(backoff.next().unwrap_or(Duration::from_secs(10))).await;
    }
}

pub(super) async fn subscribe_group(ws: &mut Ws, group: Id, sub: &ConvSub) -> Result<()> {
    let frame = ClientFrame::SubscribeGroup {
        group_id: group,
        epoch: sub.epoch,
        token: Bytes(sub.token.clone()),
        after: sub.after,
    };
    let text = serde_json::to_string(&frame).map_err(|e| Error::Protocol(e.to_string()))?;
    ws.send(Message::Text(text.into()))
        .await
        .map_err(|e| Error::RelayUnreachable(e.to_string()))
}

/// One WebSocket per mailbox on our other relays (the primary's is the service's own),
/// reporting pushes so the service syncs at once.
pub(super) struct MailboxSockets {
    tasks: HashMap<String, tokio::task::JoinHandle<()>>,
    push_tx: mpsc::Sender<()>,
    pub(super) push_rx: mpsc::Receiver<()>,
}

impl MailboxSockets {
    pub(super) fn new() -> MailboxSockets {
        let (push_tx, push_rx) = mpsc::channel(64);
        MailboxSockets {
            tasks: HashMap::new(),
            push_tx,
            push_rx,
        }
    }

    pub(super) fn update(&mut self, p: &Profile) {
        let mut wanted = std::collections::HashSet::new();
        for m in &p.others {
            let relay = m.relay.base().to_string();
            wanted.insert(relay.clone());
            if self.tasks.get(&relay).is_some_and(|t| !t.is_finished()) {
                continue;
            }
            let identity = crate::profile::isolation_identity(
                &p.net,
                &p.isolation_salt,
                format!("mailbox:{relay}").as_bytes(),
            );
            let task = tokio::spawn(mailbox_socket(
                p.net.clone(),
                identity,
                m.relay.ws_url(),
                m.relay.tls_config(),
                m.id,
                m.key.clone(),
                self.push_tx.clone(),
            ));
            self.tasks.insert(relay, task);
        }
        self.tasks.retain(|r, task| {
            let keep = wanted.contains(r);
            if !keep {
                task.abort();
            }
            keep
        });
    }
}

impl Drop for MailboxSockets {
    fn drop(&mut self) {
        for (_, task) in self.tasks.drain() {
            task.abort();
        }
    }
}

/// Keep one mailbox's WebSocket open (reconnecting with backoff); report each push.
pub(super) async fn mailbox_socket(
    net: crate::net::Net,
    identity: Option<String>,
    url: String,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    mailbox: Id,
    key: std::sync::Arc<crate::relay_client::MailboxKey>,
    push: mpsc::Sender<()>,
) {
    let mut backoff = new_backoff();
    loop {
        if let Ok(mut ws) = net.connect_ws(&url, identity.as_deref(), tls.clone()).await {
            backoff = new_backoff();
            while let Some(Ok(frame)) = ws.next().await {
                let Message::Text(text) = frame else { continue };
                match serde_json::from_str::<ServerFrame>(text.as_str()) {
                    Ok(ServerFrame::Hello { challenge, .. }) => {
                        let sig =
                            key.sign(&samizdat_proto::ws_signing_payload(&challenge, &mailbox));
                        let frame = ClientFrame::SubscribeMailbox {
                            mailbox_id: mailbox,
                            after: 0,
                            signature: Bytes(sig),
                        };
                        let Ok(text) = serde_json::to_string(&frame) else {
                            return;
                        };
                        if ws.send(Message::Text(text.into())).await.is_err() {
                            break;
                        }
                    }
                    Ok(ServerFrame::MailboxMessage { .. }) if push.send(()).await.is_err() => {
                        return;
                    }
                    _ => {}
                }
            }
        }
        tokio::time::sleep(backoff.next().unwrap_or(Duration::from_secs(10))).await;
    }
}
