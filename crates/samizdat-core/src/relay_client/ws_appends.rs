//! The one WebSocket that carries a long-running client's application appends.

use super::*;

/// One WebSocket that carries a client's application appends (binary frames, pipelined,
/// answered by request id), shared by the client's clones. Opened on first use and again
/// after it closes; a relay whose `hello` does not offer the binary frames is remembered and
/// gets HTTP.
#[derive(Default)]
pub(super) struct WsAppends {
    conn: tokio::sync::Mutex<AppendSocket>,
    unsupported: std::sync::atomic::AtomicBool,
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
        let tx = {
            let mut conn = ws.conn.lock().await;
            match conn.open.as_ref() {
                Some(tx) if !tx.is_closed() => tx.clone(),
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

    /// Connect the append socket; `None` if the relay does not offer binary frames.
    pub(super) async fn open_ws_appends(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::Sender<WsAppend>>> {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let mut ws = self
            .net
            .connect_ws(&self.ws_url(), self.identity.as_deref(), self.tls.clone())
            .await?;
        let hello = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .map_err(|_| Error::RelayUnreachable(format!("{}: no hello", self.spec)))?;
        let features = match hello {
            Some(Ok(Message::Text(t))) => match serde_json::from_str::<proto::ServerFrame>(&t) {
                Ok(proto::ServerFrame::Hello { features, .. }) => features,
                _ => return Ok(None),
            },
            _ => return Err(Error::RelayUnreachable(format!("{}: no hello", self.spec))),
        };
        if !features.iter().any(|f| f == proto::FEATURE_BINARY_ENTRIES) {
            return Ok(None);
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel::<WsAppend>(WS_APPEND_QUEUE);
        tokio::spawn(async move {
            let mut pending: std::collections::HashMap<
                Id,
                tokio::sync::oneshot::Sender<Result<u64>>,
            > = std::collections::HashMap::new();
            loop {
                tokio::select! {
                    out = rx.recv() => {
                        // Every client clone gone: close.
                        let Some(out) = out else { break };
                        let id = out.frame.request_id;
                        if ws.send(Message::Binary(out.frame.encode().into())).await.is_err() {
                            break;
                        }
                        pending.insert(id, out.answer);
                    }
                    msg = ws.next() => {
                        let text = match msg {
                            Some(Ok(Message::Text(t))) => t,
                            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                            Some(Ok(_)) => continue,
                        };
                        match serde_json::from_str::<proto::ServerFrame>(&text) {
                            Ok(proto::ServerFrame::Appended { request_id, seq }) => {
                                if let Some(a) = pending.remove(&request_id) {
                                    let _ = a.send(Ok(seq));
                                }
                            }
                            Ok(proto::ServerFrame::AppendFailed { request_id, code, message, current_epoch }) => {
                                if let Some(a) = pending.remove(&request_id) {
                                    let _ = a.send(Err(Error::Relay { code, message, current_epoch }));
                                }
                            }
                            // A frame the relay could not use: the appends in flight go over
                            // HTTP, and so does everything after (the socket closes).
                            Ok(proto::ServerFrame::Error { .. }) => break,
                            _ => {}
                        }
                    }
                }
            }
            // Unanswered appends are dropped here: their callers use HTTP.
        });
        Ok(Some(tx))
    }
}
