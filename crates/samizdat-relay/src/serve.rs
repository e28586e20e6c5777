//! The accept loop: bounded connections (in total and per address), a deadline for request
//! headers (slowloris), and graceful shutdown.
//!
//! `axum::serve` has neither caps nor a header timeout, so the relay drives hyper itself.
//! Each accepted socket carries its permits inside its I/O object: they are released when
//! the socket closes, including after a WebSocket upgrade (the upgraded stream owns the
//! same object), so long-lived WebSockets count against the caps too.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::limits::{AddrBucket, Cidr};
use crate::metrics::Metrics;

/// Connection caps, shared by the accept loop and every open socket.
pub(crate) struct ConnectionCaps {
    total: Arc<Semaphore>,
    per_ip: Mutex<HashMap<AddrBucket, usize>>,
    max_per_ip: usize,
    /// Trusted proxies: their connections count in the total only.
    proxies: Arc<[Cidr]>,
}

impl ConnectionCaps {
    pub fn new(max_total: usize, max_per_ip: usize, proxies: Arc<[Cidr]>) -> Arc<Self> {
        Arc::new(ConnectionCaps {
            total: Arc::new(Semaphore::new(max_total.max(1))),
            per_ip: Mutex::new(HashMap::new()),
            max_per_ip: max_per_ip.max(1),
            proxies,
        })
    }

    /// Admit a connection from `peer` (a trusted proxy counts in the total only).
    fn admit_peer(self: &Arc<Self>, peer: std::net::IpAddr) -> Option<Admitted> {
        let proxy = self.proxies.iter().any(|c| c.contains(peer));
        self.admit((!proxy).then(|| AddrBucket::of(peer)))
    }

    /// Admit one connection from `bucket`, or refuse it (`None`). A connection from a
    /// trusted proxy (`bucket` `None`) counts in the total only: the clients behind it are
    /// counted per request instead (see `http::count_and_reject`).
    pub(crate) fn admit(self: &Arc<Self>, bucket: Option<AddrBucket>) -> Option<Admitted> {
        let total = self.total.clone().try_acquire_owned().ok()?;
        if let Some(bucket) = bucket {
            // A poisoned lock means a panic while counting: refuse rather than admit unbounded.
            let mut per_ip = self.per_ip.lock().ok()?;
            let n = per_ip.entry(bucket).or_insert(0);
            if *n >= self.max_per_ip {
                return None;
            }
            *n += 1;
        }
        Some(Admitted {
            caps: self.clone(),
            bucket,
            _total: total,
        })
    }

    /// Open connections from `bucket` (for tests and metrics).
    #[cfg(test)]
    fn open_from(&self, bucket: AddrBucket) -> usize {
        self.per_ip
            .lock()
            .map(|m| m.get(&bucket).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

/// The permits of one open connection; dropping it frees them.
pub(crate) struct Admitted {
    caps: Arc<ConnectionCaps>,
    bucket: Option<AddrBucket>,
    _total: OwnedSemaphorePermit,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let Some(bucket) = self.bucket else { return };
        if let Ok(mut per_ip) = self.caps.per_ip.lock()
            && let Some(n) = per_ip.get_mut(&bucket)
        {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&bucket);
            }
        }
    }
}

/// A socket that holds its connection permits for as long as it is open.
struct CountedStream {
    io: TcpStream,
    _admitted: Admitted,
}

impl AsyncRead for CountedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Serve `app` on `listener` (over TLS with `tls`) until `stop` turns true, then let open
/// requests finish.
/// What a connection on the relay's port may speak besides plain HTTP.
#[derive(Clone, Default)]
pub(crate) struct Protocols {
    /// TLS in front of HTTP (and of TURN).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// TURN over TCP or TLS, told from HTTP by the first byte (issue 31).
    pub turn: Option<Arc<crate::turn::Turn>>,
}

pub(crate) async fn run(
    listener: TcpListener,
    protocols: Protocols,
    app: Router,
    caps: Arc<ConnectionCaps>,
    header_timeout: Duration,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let Protocols { tls, turn } = protocols;
    // Every connection task holds a clone of `alive`; when all are gone, `drained` ends.
    let (alive, mut drained) = mpsc::channel::<()>(1);
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
        };
        let Some(admitted) = caps.admit_peer(peer.ip()) else {
            metrics.connections_refused.increment(1);
            drop(socket);
            continue;
        };
        let _ = socket.set_nodelay(true);
        let stream = CountedStream {
            io: socket,
            _admitted: admitted,
        };
        let router = app.clone();
        let conn_stop = stop.clone();
        let alive = alive.clone();
        let tls = tls.clone();
        let turn = turn.clone();
        tokio::spawn(async move {
            let _alive = alive;
            // TURN over TCP shares the port (issue 31): a STUN message starts with 0x00 or
            // 0x01, TLS with 0x16, HTTP with a letter.
            let first = match &turn {
                Some(_) => {
                    let mut b = [0u8; 1];
                    match tokio::time::timeout(header_timeout, stream.io.peek(&mut b)).await {
                        Ok(Ok(1)) => Some(b[0]),
                        _ => return,
                    }
                }
                None => None,
            };
            let local = stream.io.local_addr().ok();
            if let (Some(turn), Some(b), Some(local)) = (&turn, first, local)
                && crate::turn::first_byte_is_stun(b)
            {
                crate::turn::serve_tcp(turn.clone(), stream, peer, local, Vec::new(), conn_stop)
                    .await;
                return;
            }
            match tls {
                None => {
                    serve_one(
                        TokioIo::new(stream),
                        router,
                        peer,
                        header_timeout,
                        conn_stop,
                    )
                    .await
                }
                Some(acceptor) => {
                    // The handshake shares the header deadline (a slow handshake is slowloris too).
                    let handshake = tokio::time::timeout(header_timeout, acceptor.accept(stream));
                    let Ok(Ok(mut tls_stream)) = handshake.await else {
                        return;
                    };
                    // TURN over TLS (`turns:`) on the same port: the first byte inside.
                    let mut prefix = Vec::new();
                    if turn.is_some() {
                        let mut b = [0u8; 1];
                        match tokio::time::timeout(
                            header_timeout,
                            tokio::io::AsyncReadExt::read(&mut tls_stream, &mut b),
                        )
                        .await
                        {
                            Ok(Ok(1)) => prefix.push(b[0]),
                            _ => return,
                        }
                    }
                    if let (Some(turn), Some(local)) = (&turn, local)
                        && prefix
                            .first()
                            .is_some_and(|b| crate::turn::first_byte_is_stun(*b))
                    {
                        crate::turn::serve_tcp(
                            turn.clone(),
                            tls_stream,
                            peer,
                            local,
                            prefix,
                            conn_stop,
                        )
                        .await;
                        return;
                    }
                    serve_one(
                        TokioIo::new(Prefixed {
                            prefix,
                            io: tls_stream,
                        }),
                        router,
                        peer,
                        header_timeout,
                        conn_stop,
                    )
                    .await
                }
            }
        });
    }
    drop(alive);
    let _ = drained.recv().await;
    Ok(())
}

/// Serve `app` on `listener` (plain HTTP) with the relay's accept loop — at most
/// `max_connections` open, `max_per_ip` from one address, request headers within
/// `header_timeout` — until `stop` turns true. `samizdat app` serves its pages this way
/// (security review 3, L9): `axum::serve` has neither caps nor a header deadline.
pub async fn serve_bounded(
    listener: TcpListener,
    app: Router,
    max_connections: usize,
    max_per_ip: usize,
    header_timeout: Duration,
    stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let caps = ConnectionCaps::new(max_connections, max_per_ip, Arc::from([]));
    run(
        listener,
        Protocols::default(),
        app,
        caps,
        header_timeout,
        Arc::new(Metrics::default()),
        stop,
    )
    .await
}

/// A stream whose first bytes were already read (to tell TURN from HTTP): they come first.
struct Prefixed<S> {
    prefix: Vec<u8>,
    io: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.drain(..n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// One HTTP/1.1 connection (with upgrades), shut down gracefully when `stop` turns true.
async fn serve_one<I>(
    io: TokioIo<I>,
    router: Router,
    peer: std::net::SocketAddr,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        tower::ServiceExt::oneshot(router.clone(), req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(conn);
    let stopping = tokio::select! {
        _ = conn.as_mut() => false,
        _ = async { let _ = stop.wait_for(|s| *s).await; } => true,
    };
    if stopping {
        conn.as_mut().graceful_shutdown();
        let _ = conn.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_address_cap_and_release() {
        let caps = ConnectionCaps::new(10, 2, Arc::from([]));
        let a = AddrBucket::of([10, 0, 0, 1].into());
        let b = AddrBucket::of([10, 0, 0, 2].into());
        let first = caps.admit(Some(a)).expect("first");
        let _second = caps.admit(Some(a)).expect("second");
        assert!(
            caps.admit(Some(a)).is_none(),
            "third from one address is refused"
        );
        assert!(
            caps.admit(Some(b)).is_some(),
            "another address is not affected"
        );
        drop(first);
        assert_eq!(caps.open_from(a), 1);
        assert!(
            caps.admit(Some(a)).is_some(),
            "a closed connection frees its slot"
        );
        // A trusted proxy's connections count in the total only.
        let _p: Vec<_> = (0..5).map(|_| caps.admit(None).expect("proxy")).collect();
    }

    #[test]
    fn total_cap() {
        let caps = ConnectionCaps::new(2, 10, Arc::from([]));
        let _x = caps
            .admit(Some(AddrBucket::of([10, 0, 0, 1].into())))
            .expect("x");
        let _y = caps.admit(None).expect("y");
        assert!(
            caps.admit(Some(AddrBucket::of([10, 0, 0, 3].into())))
                .is_none()
        );
        assert!(caps.admit(None).is_none());
    }
}
