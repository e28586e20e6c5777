//! The one WebSocket a long-running client holds per relay and proxy identity: it carries
//! the service's subscriptions (and the mailbox's challenge) and the client's application
//! appends. The socket is owned by a task; appends are answered inside it by request id, so a
//! send waiting for its acknowledgement never waits on the service's own loop.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{self, Message};

use super::*;

/// Frames from the relay waiting for the service; a service that falls this far behind
/// loses the socket (it reconnects and reads what it missed) rather than stalling appends.
const SHARED_INBOX: usize = 1024;
/// Frames from the service waiting to be written.
const SHARED_OUTBOX: usize = 256;

/// One WebSocket that carries a client's application appends (binary frames, pipelined,
/// answered by request id), shared by the client's clones. Opened on first use and again
/// after it closes; a relay whose `hello` does not offer the binary frames is remembered and
/// gets HTTP.
#[derive(Default)]
pub(super) struct WsAppends {
    conn: tokio::sync::Mutex<AppendSocket>,
    unsupported: std::sync::atomic::AtomicBool,
    /// A service's shared socket carries the appends: none of their own is opened (HTTP
    /// while it reconnects).
    shared: std::sync::atomic::AtomicBool,
}

/// The service's end of a shared socket: the frames that are not append answers, and a way
/// to write frames. Reads and writes as the WebSocket itself does (`next`, `send`).
pub struct SharedWs {
    out: tokio::sync::mpsc::Sender<Message>,
    inbox: tokio::sync::mpsc::Receiver<std::result::Result<Message, tungstenite::Error>>,
}

impl SharedWs {
    /// Write one frame.
    pub async fn send(&mut self, m: Message) -> std::result::Result<(), tungstenite::Error> {
        self.out
            .send(m)
            .await
            .map_err(|_| tungstenite::Error::ConnectionClosed)
    }

    /// The next frame from the relay that is not an answer to an append (`None`: closed).
    pub async fn next(&mut self) -> Option<std::result::Result<Message, tungstenite::Error>> {
        self.inbox.recv().await
    }
}

/// The append socket's state: open, or (after a failed open) not tried again before a time,
/// so an unreachable socket does not delay every append by a connection attempt.
#[derive(Default)]
pub(super) struct AppendSocket {
    open: Option<tokio::sync::mpsc::Sender<WsAppend>>,
    retry_at: Option<tokio::time::Instant>,
}

/// How long appends go over HTTP after the append socket could not be opened.
pub(super) const WS_APPEND_RETRY: Duration = Duration::from_secs(30);

/// An append waiting for the socket, and where its answer goes.
pub(super) struct WsAppend {
    frame: proto::BinaryAppend,
    answer: tokio::sync::oneshot::Sender<Result<u64>>,
}

/// Appends waiting to be written to the socket (the relay handles 32 at once per socket).
pub(super) const WS_APPEND_QUEUE: usize = 64;

impl RelayClient {
    /// Append application entries over one WebSocket held by this client and its clones
    /// (for a long-running service: no HTTP request per message). Any failure of the socket
    /// sends the same append (same request id, so never stored twice) over HTTP instead.
    pub fn with_ws_appends(mut self) -> Self {
        self.ws = Some(Arc::new(WsAppends::default()));
        self
    }

    /// Append over the held WebSocket: `Ok(seq)`, or the relay's refusal, or `None` when the
    /// socket cannot be used (the caller appends over HTTP).
    pub(super) async fn ws_append(
        &self,
        ws: &WsAppends,
        frame: proto::BinaryAppend,
    ) -> Option<Result<u64>> {
        if ws.unsupported.load(Ordering::Relaxed) {
            return None;
        }
        let shared = ws.shared.load(Ordering::Relaxed);
        let tx = {
            let mut conn = ws.conn.lock().await;
            match conn.open.as_ref() {
                Some(tx) if !tx.is_closed() => tx.clone(),
                // The shared socket is reconnecting: HTTP meanwhile.
                _ if shared => return None,
                _ if conn
                    .retry_at
                    .is_some_and(|at| tokio::time::Instant::now() < at) =>
                {
                    return None;
                }
                _ => match self.open_ws_appends().await {
                    Ok(Some(tx)) => {
                        *conn = AppendSocket {
                            open: Some(tx.clone()),
                            retry_at: None,
                        };
                        tx
                    }
                    Ok(None) => {
                        ws.unsupported.store(true, Ordering::Relaxed);
                        return None;
                    }
                    Err(_) => {
                        *conn = AppendSocket {
                            open: None,
                            retry_at: Some(tokio::time::Instant::now() + WS_APPEND_RETRY),
                        };
                        return None;
                    }
                },
            }
        };
        let (answer, answered) = tokio::sync::oneshot::channel();
        tx.send(WsAppend { frame, answer }).await.ok()?;
        match tokio::time::timeout(Duration::from_secs(30), answered).await {
            Ok(Ok(result)) => Some(result),
            // The socket closed or hung: HTTP (the same request id) finds out what happened.
            _ => None,
        }
    }

    /// Open a WebSocket (through the proxy, under this client's identity) and read the
    /// relay's `hello`: the socket, the hello, and whether it offers binary frames.
    async fn connect_with_hello(&self) -> Result<(crate::net::Ws, Message, bool)> {
        let mut ws = self
            .net
            .connect_ws(&self.ws_url(), self.identity.as_deref(), self.tls.clone())
            .await?;
        let hello = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .map_err(|_| Error::RelayUnreachable(format!("{}: no hello", self.spec)))?;
        let Some(Ok(hello)) = hello else {
            return Err(Error::RelayUnreachable(format!("{}: no hello", self.spec)));
        };
        let binary = match &hello {
            Message::Text(t) => matches!(
                serde_json::from_str::<proto::ServerFrame>(t),
                Ok(proto::ServerFrame::Hello { features, .. })
                    if features.iter().any(|f| f == proto::FEATURE_BINARY_ENTRIES)
            ),
            _ => false,
        };
        Ok((ws, hello, binary))
    }

    /// Connect the append socket; `None` if the relay does not offer binary frames.
    pub(super) async fn open_ws_appends(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::Sender<WsAppend>>> {
        let (ws, _, binary) = self.connect_with_hello().await?;
        if !binary {
            return Ok(None);
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<WsAppend>(WS_APPEND_QUEUE);
        tokio::spawn(run_socket(ws, rx, None));
        Ok(Some(tx))
    }

    /// Open the socket a service holds for this relay and identity: the returned end reads
    /// and writes its frames (the `hello` first); with `appends`, this client's application
    /// appends ride on it too (when the relay offers binary frames), answered by request id
    /// inside the socket's task. One socket, not one for subscriptions and one for appends.
    pub async fn open_shared(&self, appends: bool) -> Result<SharedWs> {
        let (ws, hello, binary) = self.connect_with_hello().await?;
        let (out, out_rx) = tokio::sync::mpsc::channel::<Message>(SHARED_OUTBOX);
        let (inbox_tx, inbox) = tokio::sync::mpsc::channel(SHARED_INBOX);
        let _ = inbox_tx.try_send(Ok(hello));
        let (app_tx, app_rx) = tokio::sync::mpsc::channel::<WsAppend>(WS_APPEND_QUEUE);
        if appends
            && binary
            && let Some(held) = &self.ws
        {
            held.shared.store(true, Ordering::Relaxed);
            *held.conn.lock().await = AppendSocket {
                open: Some(app_tx),
                retry_at: None,
            };
        }
        tokio::spawn(run_socket(ws, app_rx, Some((out_rx, inbox_tx))));
        Ok(SharedWs { out, inbox })
    }
}

/// The frames a service exchanges over a shared socket: what it writes, and where what the
/// relay sends (but append answers) goes.
type ServiceEnd = (
    tokio::sync::mpsc::Receiver<Message>,
    tokio::sync::mpsc::Sender<std::result::Result<Message, tungstenite::Error>>,
);

/// Own one socket: write the appends (answered here by request id) and, for a shared socket,
/// the service's frames; hand the service everything else. Ends when the socket closes, or
/// when its users are gone (the service's end; for an appends-only socket, every client).
/// Appends unanswered by then are dropped: their callers use HTTP.
async fn run_socket(
    mut ws: crate::net::Ws,
    mut appends: tokio::sync::mpsc::Receiver<WsAppend>,
    mut service: Option<ServiceEnd>,
) {
    let mut pending = std::collections::HashMap::new();
    let mut appending = true;
    loop {
        let from_service = async {
            match service.as_mut() {
                Some((out, _)) => out.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            frame = from_service => {
                // The service dropped its end: close.
                let Some(frame) = frame else { break };
                if ws.send(frame).await.is_err() {
                    break;
                }
            }
            a = appends.recv(), if appending => {
                let Some(a) = a else {
                    // No client will append any more: an appends-only socket closes.
                    if service.is_none() {
                        break;
                    }
                    appending = false;
                    continue;
                };
                let id = a.frame.request_id;
                if ws.send(Message::Binary(a.frame.encode().into())).await.is_err() {
                    break;
                }
                pending.insert(id, a.answer);
            }
            msg = ws.next() => {
                let Some(msg) = msg else { break };
                if let Ok(Message::Text(t)) = &msg
                    && answer_append(&mut pending, t)
                {
                    continue;
                }
                let closed = matches!(msg, Err(_) | Ok(Message::Close(_)));
                let stop = match &service {
                    // A service this far behind reconnects and reads what it missed.
                    Some((_, inbox)) => inbox.try_send(msg).is_err() || closed,
                    // An appends-only socket: a frame the relay could not use sends the
                    // appends in flight, and everything after, over HTTP.
                    None => closed || is_error_frame(&msg),
                };
                if stop {
                    break;
                }
            }
        }
    }
}

fn is_error_frame(msg: &std::result::Result<Message, tungstenite::Error>) -> bool {
    matches!(msg, Ok(Message::Text(t))
        if matches!(serde_json::from_str::<proto::ServerFrame>(t), Ok(proto::ServerFrame::Error { .. })))
}

/// Answer the append a text frame is about (`true`), if it is about one.
fn answer_append(
    pending: &mut std::collections::HashMap<Id, tokio::sync::oneshot::Sender<Result<u64>>>,
    text: &str,
) -> bool {
    if !text.contains("\"request_id\"") {
        return false;
    }
    match serde_json::from_str::<proto::ServerFrame>(text) {
        Ok(proto::ServerFrame::Appended { request_id, seq }) => {
            if let Some(a) = pending.remove(&request_id) {
                let _ = a.send(Ok(seq));
            }
            true
        }
        Ok(proto::ServerFrame::AppendFailed {
            request_id,
            code,
            message,
            current_epoch,
        }) => {
            if let Some(a) = pending.remove(&request_id) {
                let _ = a.send(Err(Error::Relay {
                    code,
                    message,
                    current_epoch,
                }));
            }
            true
        }
        _ => false,
    }
}
