//! HTTP client for the relay API (docs/PROTOCOL.md), plus the WebSocket used by `listen`.
//!
//! Every write carries a fresh random `request_id`; callers that retry pass the same id, so
//! the relay answers a repeat with the original result.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use samizdat_proto::{
    self as proto, Acked, AppendEntry, Bytes, ClaimedKeyPackage, Entries, EntryKind, ErrorBody,
    ErrorCode, Id, KeyPackageCount, MailboxMessage, MailboxMessages, Stored, WelcomeDrop,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, Result, random_id};

mod blobs;
mod channels;
mod ws_appends;
pub use ws_appends::SharedWs;
use ws_appends::WsAppends;

/// Largest relay answer the client reads (a page of big post-quantum commits fits).
pub const MAX_RESPONSE: usize = 256 << 20;

fn too_large() -> Error {
    Error::Protocol(format!(
        "the relay's answer is larger than {} MiB; refused",
        MAX_RESPONSE >> 20
    ))
}

/// A mailbox owner's signing key (Ed25519, separate from the MLS identity so the relay
/// cannot link a mailbox to group membership through keys).
pub struct MailboxKey(Ed25519KeyPair);

impl MailboxKey {
    pub fn generate() -> Result<(MailboxKey, Vec<u8>)> {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| Error::Crypto("cannot generate a mailbox key".into()))?;
        let key = Self::from_pkcs8(pkcs8.as_ref())?;
        Ok((key, pkcs8.as_ref().to_vec()))
    }

    pub fn from_pkcs8(bytes: &[u8]) -> Result<MailboxKey> {
        Ed25519KeyPair::from_pkcs8(bytes)
            .map(MailboxKey)
            .map_err(|_| Error::Storage("the stored mailbox key is corrupt".into()))
    }

    pub fn public(&self) -> Vec<u8> {
        self.0.public_key().as_ref().to_vec()
    }

    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.0.sign(msg).as_ref().to_vec()
    }
}

/// Who vouches for a new blob (the relay counts its quota against them): a member of a group
/// on that relay, with an epoch token of it, a mailbox's owner (security review 3, M8), or an
/// admin of a channel, with its admin key (a channel's file, kept as long as channels are).
pub enum BlobOwner<'a> {
    Group { log: Id, token: &'a [u8] },
    Mailbox { mailbox: Id, key: &'a MailboxKey },
    Channel { channel: Id, key: &'a MailboxKey },
}

/// A client for one relay *service*: one address, or several addresses of relay processes
/// sharing a database (`http://a:7700,http://b:7700`). A request that cannot reach one
/// address is retried on the next; every write carries a request id, so a retry never stores
/// anything twice.
#[derive(Clone)]
pub struct RelayClient {
    spec: String,
    bases: Vec<String>,
    current: Arc<AtomicUsize>,
    http: reqwest::Client,
    /// The proxy the connections go through (without its password), for messages.
    via: Option<String>,
    /// The pinned-certificate TLS configuration, when the address carries pins.
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// How WebSockets to this relay connect (the same proxy and identity as the HTTP client).
    net: crate::net::Net,
    identity: Option<String>,
    /// Application entries appended over one held WebSocket ([`Self::with_ws_appends`]).
    ws: Option<Arc<WsAppends>>,
}

/// How long an isolating client's idle HTTP connection is kept.
const ISOLATED_IDLE: Duration = Duration::from_secs(10);

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Normalise a relay spec: comma-separated http(s) URLs without trailing slashes.
pub fn normalize_spec(spec: &str) -> Result<String> {
    let bases: Vec<String> = spec
        .split(',')
        .map(|b| b.trim().trim_end_matches('/').to_string())
        .filter(|b| !b.is_empty())
        .collect();
    if bases.is_empty() {
        return Err(Error::Usage("no relay address given".into()));
    }
    for b in &bases {
        if !(b.starts_with("http://") || b.starts_with("https://")) {
            return Err(Error::Usage(format!(
                "relay address must start with http:// or https://, got {b:?}"
            )));
        }
        crate::pin::split(b)?;
    }
    Ok(bases.join(","))
}

impl RelayClient {
    /// A direct client (tools and tests; a profile's clients come from [`Self::with_net`]).
    pub fn new(spec: &str) -> Result<RelayClient> {
        Self::with_net(spec, &crate::net::Net::default(), None)
    }

    /// A client whose connections go through `net`'s proxy, under `identity` when isolating.
    pub fn with_net(
        spec: &str,
        net: &crate::net::Net,
        identity: Option<&str>,
    ) -> Result<RelayClient> {
        Self::build(spec, net, identity, true)
    }

    /// As [`Self::with_net`], keeping no idle connection between requests: for a client
    /// whose traffic rides a WebSocket and whose HTTP requests are rare (an isolated
    /// conversation's), so that it holds one socket, not two.
    pub fn with_net_unpooled(
        spec: &str,
        net: &crate::net::Net,
        identity: Option<&str>,
    ) -> Result<RelayClient> {
        Self::build(spec, net, identity, false)
    }

    fn build(
        spec: &str,
        net: &crate::net::Net,
        identity: Option<&str>,
        keep_idle: bool,
    ) -> Result<RelayClient> {
        let spec = normalize_spec(spec)?;
        let mut bases = Vec::new();
        let mut pins = Vec::new();
        for b in spec.split(',') {
            let (addr, pin) = crate::pin::split(b)?;
            bases.push(addr.trim_end_matches('/').to_string());
            pins.extend(pin);
        }
        let tls = if pins.is_empty() {
            None
        } else {
            Some(crate::pin::client_config(pins)?)
        };
        let mut builder = net.http_builder(identity)?;
        // Pinned, or the system's authorities loaded once for the whole process (not once
        // per client: with isolation there is a client per conversation).
        let shared = match &tls {
            Some(cfg) => cfg.clone(),
            None if bases.iter().any(|b| b.starts_with("https://")) => crate::pin::system_roots()?,
            // Plain HTTP only: a configuration that trusts nothing, shared too.
            None => crate::pin::no_roots()?,
        };
        builder = builder.tls_backend_preconfigured((*shared).clone());
        if !keep_idle {
            builder = builder.pool_max_idle_per_host(0);
        } else if identity.is_some() {
            // Isolating, the mailbox's client: a burst (read, then acknowledge) shares a
            // connection, which then closes instead of lingering beside the mailbox's socket.
            builder = builder.pool_idle_timeout(ISOLATED_IDLE);
        }
        let http = builder
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| Error::Usage(format!("cannot build an HTTP client: {e}")))?;
        Ok(RelayClient {
            spec,
            bases,
            current: Arc::new(AtomicUsize::new(0)),
            http,
            via: net.proxy.as_ref().map(|p| p.display()),
            tls,
            net: net.clone(),
            identity: identity.map(str::to_string),
            ws: None,
        })
    }

    /// The normalised spec (all addresses), used to name the relay service.
    pub fn base(&self) -> &str {
        &self.spec
    }

    /// The host of the address in use (what TURN URLs for this relay name).
    pub fn host(&self) -> Option<String> {
        reqwest::Url::parse(self.current_base())
            .ok()?
            .host_str()
            .map(str::to_string)
    }

    fn current_base(&self) -> &str {
        &self.bases[self.current.load(Ordering::Relaxed) % self.bases.len()]
    }

    /// This client for one call: its first address chosen by the call's room token, the same
    /// on both sides (they share the conversation's relay spec), so that with several relay
    /// processes both ask the same process for credentials and meet on its TURN server (TURN
    /// relays only between one server's own allocations). Failover keeps the spec's order
    /// from there, the same on both sides too.
    pub fn for_room(&self, room: &[u8]) -> RelayClient {
        let mut c = self.clone();
        let n = self.bases.len();
        // Order-independent of the spec's spelling: the sorted addresses.
        let mut sorted: Vec<&String> = self.bases.iter().collect();
        sorted.sort();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, room);
        let pick = u64::from_be_bytes(digest.as_ref()[..8].try_into().unwrap_or([0; 8]));
        let chosen = sorted[(pick % n as u64) as usize];
        let idx = self.bases.iter().position(|b| b == chosen).unwrap_or(0);
        c.current = Arc::new(AtomicUsize::new(idx));
        c
    }

    /// Move to the next address (after a WebSocket failure).
    pub fn rotate(&self) {
        self.current.fetch_add(1, Ordering::Relaxed);
    }

    /// The TLS configuration a WebSocket to this relay must use (pinned), if any.
    pub fn tls_config(&self) -> Option<std::sync::Arc<rustls::ClientConfig>> {
        self.tls.clone()
    }

    /// `ws://…/v1/ws` for the current address.
    pub fn ws_url(&self) -> String {
        let base = self.current_base();
        let rest = base.strip_prefix("http").unwrap_or(base);
        format!("ws{rest}/v1/ws")
    }

    fn unreachable(&self, e: reqwest::Error) -> Error {
        match &self.via {
            Some(via) => Error::RelayUnreachable(format!(
                "{} through the proxy {via}: {}",
                self.spec,
                short_reqwest_error(&e)
            )),
            None => Error::RelayUnreachable(format!("{}: {}", self.spec, short_reqwest_error(&e))),
        }
    }

    /// Send a request built for some address, failing over to the next address when the
    /// current one cannot be reached.
    async fn send(
        &self,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let n = self.bases.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..n {
            let idx = (start + i) % n;
            let mut retried = false;
            loop {
                match build(&self.bases[idx]).send().await {
                    Ok(r) => {
                        self.current.store(idx, Ordering::Relaxed);
                        return Ok(r);
                    }
                    // Closed under us (a kept-alive connection the relay or an HTTP proxy had
                    // just closed): once more, on a new connection. Every request may be
                    // repeated — writes carry request ids, blob pieces an offset.
                    Err(e) if !retried && e.is_request() && !e.is_connect() && !e.is_timeout() => {
                        retried = true;
                    }
                    Err(e) if e.is_connect() || e.is_timeout() || e.is_request() => {
                        last = Some(e);
                        break;
                    }
                    Err(e) => return Err(self.unreachable(e)),
                }
            }
        }
        match last {
            Some(e) => Err(self.unreachable(e)),
            None => Err(Error::RelayUnreachable(self.spec.clone())),
        }
    }

    async fn finish<T: DeserializeOwned>(&self, r: reqwest::Response) -> Result<T> {
        let status = r.status();
        let bytes = self.read_capped(r).await?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| Error::Protocol(format!("unexpected answer from the relay: {e}")));
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            // The relay's words reach terminals and pages: no control or bidi characters,
            // and bounded (security review 3, L1).
            Ok(b) => Err(Error::Relay {
                code: b.code,
                message: crate::text::escape_bounded(&b.message, 300),
                current_epoch: b.current_epoch,
            }),
            Err(_) => Err(Error::Protocol(format!(
                "the relay answered HTTP {status} without an error body"
            ))),
        }
    }

    /// Read a response body, refusing one larger than `MAX_RESPONSE` (a relay cannot make
    /// the client buffer without bound).
    async fn read_capped(&self, mut r: reqwest::Response) -> Result<Vec<u8>> {
        if r.content_length().is_some_and(|n| n > MAX_RESPONSE as u64) {
            return Err(too_large());
        }
        let mut out = Vec::new();
        while let Some(chunk) = r.chunk().await.map_err(|e| self.unreachable(e))? {
            if out.len() + chunk.len() > MAX_RESPONSE {
                return Err(too_large());
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let r = self
            .send(|base| self.http.post(format!("{base}{path}")).json(body))
            .await?;
        self.finish(r).await
    }

    async fn signed<T: DeserializeOwned>(
        &self,
        key: &MailboxKey,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<T> {
        // Signed afresh for every attempt: a nonce may already be spent on a lost attempt.
        let r = self
            .send(|base| {
                let ts = now_secs();
                let nonce = random_id();
                let payload = proto::http_signing_payload(method.as_str(), path, ts, &nonce, &body);
                let sig = key.sign(&payload);
                self.http
                    .request(method.clone(), format!("{base}{path}"))
                    .header(proto::HEADER_TIMESTAMP, ts.to_string())
                    .header(proto::HEADER_NONCE, nonce.to_string())
                    .header(proto::HEADER_SIGNATURE, Bytes::encode(&sig))
                    .header("content-type", "application/json")
                    .body(body.clone())
            })
            .await?;
        self.finish(r).await
    }

    pub async fn health(&self) -> Result<()> {
        let r = self
            .send(|base| self.http.get(format!("{base}/healthz")))
            .await?;
        let _: proto::Health = self.finish(r).await?;
        Ok(())
    }

    pub async fn create_mailbox(
        &self,
        request_id: Id,
        mailbox: Id,
        owner_key: Vec<u8>,
    ) -> Result<()> {
        let _: proto::Created = self
            .post(
                "/v1/mailboxes",
                &proto::CreateMailbox {
                    request_id,
                    mailbox_id: mailbox,
                    owner_key: Bytes(owner_key),
                },
            )
            .await?;
        Ok(())
    }

    pub async fn drop_message(&self, request_id: Id, mailbox: &Id, body: Vec<u8>) -> Result<u64> {
        let s: Stored = self
            .post(
                &format!("/v1/mailboxes/{mailbox}/messages"),
                &proto::DropMessage {
                    request_id,
                    body: Bytes(body),
                },
            )
            .await?;
        Ok(s.seq)
    }

    pub async fn read_mailbox(
        &self,
        key: &MailboxKey,
        mailbox: &Id,
        after: u64,
    ) -> Result<Vec<MailboxMessage>> {
        let m: MailboxMessages = self
            .signed(
                key,
                reqwest::Method::GET,
                &format!("/v1/mailboxes/{mailbox}/messages?after={after}"),
                Vec::new(),
            )
            .await?;
        Ok(m.messages)
    }

    pub async fn ack(&self, key: &MailboxKey, mailbox: &Id, seqs: Vec<u64>) -> Result<u64> {
        let body = serde_json::to_vec(&proto::AckMessages {
            request_id: random_id(),
            seqs,
        })
        .map_err(|e| Error::Protocol(e.to_string()))?;
        let a: Acked = self
            .signed(
                key,
                reqwest::Method::POST,
                &format!("/v1/mailboxes/{mailbox}/ack"),
                body,
            )
            .await?;
        Ok(a.deleted)
    }

    pub async fn upload_key_packages(
        &self,
        key: &MailboxKey,
        mailbox: &Id,
        kps: Vec<Vec<u8>>,
        last_resort: Option<Vec<u8>>,
    ) -> Result<KeyPackageCount> {
        let body = serde_json::to_vec(&proto::UploadKeyPackages {
            request_id: random_id(),
            key_packages: kps.into_iter().map(Bytes).collect(),
            last_resort: last_resort.map(Bytes),
        })
        .map_err(|e| Error::Protocol(e.to_string()))?;
        self.signed(
            key,
            reqwest::Method::POST,
            &format!("/v1/mailboxes/{mailbox}/keypackages"),
            body,
        )
        .await
    }

    pub async fn key_package_count(
        &self,
        key: &MailboxKey,
        mailbox: &Id,
    ) -> Result<KeyPackageCount> {
        self.signed(
            key,
            reqwest::Method::GET,
            &format!("/v1/mailboxes/{mailbox}/keypackages"),
            Vec::new(),
        )
        .await
    }

    pub async fn claim_key_package(&self, mailbox: &Id) -> Result<ClaimedKeyPackage> {
        self.post(
            &format!("/v1/mailboxes/{mailbox}/keypackages/claim"),
            &proto::ClaimKeyPackage {
                request_id: random_id(),
            },
        )
        .await
    }

    pub async fn create_group(
        &self,
        request_id: Id,
        group: Id,
        epoch: u64,
        token_hash: [u8; 32],
    ) -> Result<()> {
        let _: proto::Created = self
            .post(
                "/v1/groups",
                &proto::CreateGroup {
                    request_id,
                    group_id: group,
                    epoch,
                    token_hash: Bytes(token_hash.to_vec()),
                },
            )
            .await?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn append(
        &self,
        request_id: Id,
        group: &Id,
        token: &[u8],
        kind: EntryKind,
        epoch: u64,
        body: Vec<u8>,
        next_token_hash: Option<[u8; 32]>,
        welcomes: Vec<WelcomeDrop>,
    ) -> Result<Stored> {
        // Without Welcomes the entry travels as it is (application/octet-stream, metadata in
        // headers): no base64, no JSON. A relay from before the binary form refuses it as
        // bad JSON; the same request (same id, so never stored twice) then goes as JSON.
        if welcomes.is_empty() {
            let kind_name = match kind {
                EntryKind::Application => "application",
                EntryKind::Commit => "commit",
            };
            let r = self
                .send(|base| {
                    let mut b = self
                        .http
                        .post(format!("{base}/v1/groups/{group}/entries"))
                        .header(proto::HEADER_TOKEN, Bytes::encode(token))
                        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                        .header(proto::HEADER_REQUEST_ID, request_id.to_string())
                        .header(proto::HEADER_EPOCH, epoch.to_string())
                        .header(proto::HEADER_KIND, kind_name);
                    if let Some(h) = next_token_hash {
                        b = b.header(proto::HEADER_NEXT_TOKEN_HASH, Bytes::encode(&h));
                    }
                    b.body(body.clone())
                })
                .await?;
            match self.finish(r).await {
                Err(Error::Relay {
                    code: ErrorCode::BadRequest,
                    message,
                    ..
                }) if message.starts_with("invalid JSON body") => {}
                other => return other,
            }
        }
        let req = AppendEntry {
            request_id,
            kind,
            epoch,
            body: Bytes(body),
            next_token_hash: next_token_hash.map(|h| Bytes(h.to_vec())),
            welcomes,
        };
        let r = self
            .send(|base| {
                self.http
                    .post(format!("{base}/v1/groups/{group}/entries"))
                    .header(proto::HEADER_TOKEN, Bytes::encode(token))
                    .json(&req)
            })
            .await?;
        self.finish(r).await
    }

    /// Append an application entry (no next token, no Welcomes): over the held WebSocket
    /// when this client has one ([`Self::with_ws_appends`]), else (or when it fails) over HTTP.
    pub async fn append_application(
        &self,
        request_id: Id,
        group: &Id,
        token: &[u8],
        epoch: u64,
        body: Vec<u8>,
    ) -> Result<u64> {
        if let Some(ws) = &self.ws
            && (1..=64).contains(&token.len())
        {
            let frame = proto::BinaryAppend {
                request_id,
                group_id: *group,
                epoch,
                token: token.to_vec(),
                body: body.clone(),
            };
            if let Some(result) = self.ws_append(ws, frame).await {
                return result;
            }
        }
        self.append(
            request_id,
            group,
            token,
            EntryKind::Application,
            epoch,
            body,
            None,
            Vec::new(),
        )
        .await
        .map(|s| s.seq)
    }

    pub async fn read_entries(
        &self,
        group: &Id,
        epoch: u64,
        after: u64,
        token: &[u8],
    ) -> Result<Entries> {
        let r = self
            .send(|base| {
                self.http
                    .get(format!(
                        "{base}/v1/groups/{group}/entries?epoch={epoch}&after={after}"
                    ))
                    .header(proto::HEADER_TOKEN, Bytes::encode(token))
            })
            .await?;
        self.finish(r).await
    }

    /// TURN credentials for one call's room (issue 31), as a member of `group` at `epoch`.
    pub async fn turn_credentials(
        &self,
        group: &Id,
        epoch: u64,
        token: &[u8],
        room: &[u8],
    ) -> Result<proto::TurnCredentials> {
        let req = proto::TurnRequest {
            room: Bytes(room.to_vec()),
        };
        let r = self
            .send(|base| {
                self.http
                    .post(format!("{base}/v1/groups/{group}/calls?epoch={epoch}"))
                    .header(proto::HEADER_TOKEN, Bytes::encode(token))
                    .json(&req)
            })
            .await?;
        self.finish(r).await
    }

    /// A byte stream to the relay's own port, through the proxy under this client's identity
    /// and, for `https://` relays, inside TLS (the pinned certificate, or the system's roots):
    /// the call tunnel carries TURN over it (the relay tells TURN from HTTP by its first byte).
    pub async fn raw_stream(&self) -> Result<RawStream> {
        let base = self.current_base().to_string();
        let (host, port) = crate::net::host_port(&base)?;
        let open = async {
            let tcp = self
                .net
                .connect_tcp(&host, port, self.identity.as_deref())
                .await?;
            let _ = tcp.set_nodelay(true);
            if !base.starts_with("https://") {
                return Ok(RawStream::Plain(tcp));
            }
            let cfg = match &self.tls {
                Some(c) => c.clone(),
                None => crate::pin::system_roots()?,
            };
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| Error::Usage(format!("{host}: {e}")))?;
            let tls = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, tcp)
                .await
                .map_err(|e| Error::RelayUnreachable(format!("{host}:{port}: TLS: {e}")))?;
            Ok(RawStream::Tls(Box::new(tls)))
        };
        tokio::time::timeout(Duration::from_secs(20), open)
            .await
            .map_err(|_| Error::RelayUnreachable(format!("{host}:{port}: timed out")))?
    }

    /// The port of an `https://` relay whose certificate a browser would trust (no pin):
    /// where browsers may speak TURN over TLS.
    pub fn tls_port(&self) -> Option<u16> {
        let base = self.current_base();
        if self.tls.is_some() || !base.starts_with("https://") {
            return None;
        }
        crate::net::host_port(base).ok().map(|(_, p)| p)
    }

    /// Whether this relay's address pins its certificate (a browser would not trust it).
    pub fn pinned(&self) -> bool {
        self.tls.is_some()
    }

    /// A network failure while reading a streamed answer.
    pub fn stream_error(&self, e: reqwest::Error) -> Error {
        self.unreachable(e)
    }
}

/// A plain or TLS byte stream to a relay ([`RelayClient::raw_stream`]).
pub enum RawStream {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
}

impl tokio::io::AsyncRead for RawStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            RawStream::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            RawStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for RawStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            RawStream::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            RawStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            RawStream::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            RawStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            RawStream::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            RawStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

fn short_reqwest_error(e: &reqwest::Error) -> String {
    // The innermost cause says what actually happened (refused, TLS, DNS…).
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let detail = cause.to_string();
    if detail.contains("certificate") || detail.contains("Certificate") {
        format!("TLS certificate not trusted ({detail})")
    } else if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        format!("cannot connect ({detail})")
    } else {
        detail
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Both sides of a call pick the same relay process for its room, whatever order their
    /// spec lists the addresses in, and different rooms spread over the processes.
    #[test]
    fn a_call_room_picks_the_same_relay_process_on_both_sides() {
        let a = RelayClient::new("http://10.0.0.1:7700,http://10.0.0.2:7700,http://10.0.0.3:7700")
            .expect("client");
        let b = RelayClient::new("http://10.0.0.3:7700,http://10.0.0.1:7700,http://10.0.0.2:7700")
            .expect("client");
        let mut seen = std::collections::HashSet::new();
        for i in 0u8..32 {
            let room = [i; 32];
            let (x, y) = (a.for_room(&room), b.for_room(&room));
            assert_eq!(x.host(), y.host(), "room {i}");
            seen.insert(x.host());
        }
        assert_eq!(seen.len(), 3, "rooms spread over the processes: {seen:?}");
        // The original client's own position is not moved.
        assert_eq!(a.host().as_deref(), Some("10.0.0.1"));
    }

    /// A relay that announces a huge answer is refused before the client
    /// buffers it.
    #[tokio::test]
    async fn an_oversized_relay_answer_is_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                MAX_RESPONSE + 1
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(&[b' '; 1024]).await;
        });
        let client = RelayClient::new(&format!("http://{addr}")).expect("client");
        match client.health().await {
            Err(Error::Protocol(m)) => assert!(m.contains("larger than"), "{m}"),
            other => panic!("an oversized answer was not refused: {other:?}"),
        }
        server.abort();
    }
}
