//! The HTTP API under `/v1`, plus `/healthz` (metrics have their own listener).
//!
//! Who may do something is checked before what they sent is read: tokens and signatures
//! come from headers, and a body is read only after them, within a relay-wide budget of
//! bytes in memory and a deadline. Bodies are parsed once at the edge; every failure a
//! client can cause is answered with a 4xx and `{"code", "message"}`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use samizdat_proto::{
    self as proto, AckMessages, Acked, AppendEntry, ClaimKeyPackage, CreateGroup, CreateMailbox,
    Created, DropMessage, EntryKind, ErrorBody, ErrorCode, Health, Id, MailboxMessages, Stored,
    UploadKeyPackages,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::limits::AddrBucket;
use crate::notify::{Appended, Topic};
use crate::store::{AppendRequest, StoreError};
use crate::{AppState, auth, now_secs};

/// An error answer: status from the code, JSON body.
#[derive(Debug)]
pub struct ApiError(pub ErrorBody);

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError(ErrorBody {
            code,
            message: message.into(),
            current_epoch: None,
        })
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Rejected {
                code,
                message,
                current_epoch,
            } => ApiError(ErrorBody {
                code,
                message,
                current_epoch,
            }),
            StoreError::Backend(msg) => {
                tracing::error!(error = %msg, "storage failure");
                ApiError::new(
                    ErrorCode::Unavailable,
                    "the relay's storage failed; retry later",
                )
            }
            StoreError::Retry => ApiError::new(ErrorCode::Unavailable, "the relay is busy; retry"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
        let retry = matches!(self.0.code, ErrorCode::Unavailable | ErrorCode::RateLimited);
        let code = self.0.code;
        let mut resp = (status, axum::Json(self.0)).into_response();
        // Tagged with its code for the metrics (`serve.rs` counts answers by code).
        resp.extensions_mut().insert(code);
        if retry {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        resp
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

pub(crate) fn router(state: AppState) -> Router {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/mailboxes", post(create_mailbox))
        .route(
            "/v1/mailboxes/{id}/messages",
            post(drop_message).get(read_mailbox),
        )
        .route("/v1/mailboxes/{id}/ack", post(ack))
        .route(
            "/v1/mailboxes/{id}/keypackages",
            post(upload_key_packages).get(key_package_count),
        )
        .route(
            "/v1/mailboxes/{id}/keypackages/claim",
            post(claim_key_package),
        )
        .route("/v1/groups", post(create_group))
        .route("/v1/groups/{id}/entries", post(append).get(read_entries))
        .route("/v1/groups/{id}/calls", post(turn_credentials))
        .route("/v1/blobs", post(crate::blobs::create))
        .route("/v1/blobs/{id}", get(crate::blobs::download))
        .route(
            "/v1/blobs/{id}/upload",
            get(crate::blobs::offset).patch(crate::blobs::append),
        )
        .route("/v1/channels/{id}", get(crate::channels::head))
        .route(
            "/v1/channels/{id}/records",
            post(crate::channels::store_record),
        )
        .route(
            "/v1/channels/{id}/segments/{n}",
            get(crate::channels::segment),
        )
        .route("/v1/ws", get(crate::ws::upgrade))
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_and_reject,
        ))
        .with_state(state);
    with_request_layers(app)
}

/// Request spans and panic containment for every route. Spans name the route *template*
/// (`/v1/groups/{id}/entries`), never the ids in the path; a handler that panics answers
/// 500 `internal` and the relay keeps serving.
fn with_request_layers(router: Router) -> Router {
    router
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                tracing::error!("a request handler panicked");
                ApiError::new(ErrorCode::Internal, "internal error").into_response()
            },
        ))
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                |req: &axum::extract::Request| {
                    let route = req
                        .extensions()
                        .get::<axum::extract::MatchedPath>()
                        .map(|p| without_prefix(p.as_str()).to_owned())
                        .unwrap_or_else(|| "unmatched".into());
                    tracing::debug_span!("request", method = %req.method(), route)
                },
            ),
        )
}

tokio::task_local! {
    /// The client (address bucket) of the request being handled: bodies it holds in memory
    /// count against its share (`limits::BodyShares`).
    pub(crate) static CLIENT: AddrBucket;
}

/// A forwarded client's slot among `AppState::forwarded`, held until the request is done
/// (or, for a WebSocket, until it closes).
#[derive(Clone)]
pub(crate) struct ForwardedSlot(#[allow(dead_code)] pub Arc<crate::serve::Admitted>);

/// A route template without the secret path prefix it is nested under (`--path-prefix`):
/// metrics name the API's routes, never the secret that hides them (security review 3, M12).
fn without_prefix(route: &str) -> &str {
    ["/v1/", "/healthz"]
        .iter()
        .filter_map(|api| route.find(api))
        .min()
        .map_or(route, |i| &route[i..])
}

async fn count_and_reject(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    state.metrics.http_requests.increment(1);
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| without_prefix(p.as_str()).to_owned())
        .unwrap_or_else(|| "unmatched".into());
    // A label value from a fixed set: a client choosing extension methods must not be able
    // to create metrics (memory) at will.
    let method = match *req.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    };
    // Who is asking, once: the socket peer, or behind a trusted proxy the client it names.
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let client = peer.map(|p| client_bucket(&state, &p, req.headers()));
    let mut req = req;
    if let (Some(p), Some(bucket)) = (peer, client)
        && state.trusted_proxies.iter().any(|c| c.contains(p.ip()))
        && bucket != AddrBucket::of(p.ip())
    {
        // The proxy's connections carry many clients: each forwarded client may have
        // `max_connections_per_ip` requests and WebSockets open at once (security review 3,
        // M4). A WebSocket keeps its slot for as long as it is open (`ws::upgrade`).
        match state.forwarded.admit(Some(bucket)) {
            Some(slot) => {
                req.extensions_mut().insert(ForwardedSlot(Arc::new(slot)));
            }
            None => {
                state.metrics.connections_refused.increment(1);
                return ApiError::new(
                    ErrorCode::RateLimited,
                    "too many connections from this address",
                )
                .into_response();
            }
        }
    }
    let started = std::time::Instant::now();
    let resp = match client {
        Some(bucket) => CLIENT.scope(bucket, next.run(req)).await,
        None => next.run(req).await,
    };
    state.metrics.observe(&route, method, started.elapsed());
    if resp.status().is_client_error() || resp.status().is_server_error() {
        // The code is in the body; the status class is enough for the counter's label
        // when the handler did not record it itself.
        if let Some(code) = resp.extensions().get::<ErrorCode>() {
            state.metrics.reject(*code);
        }
    }
    resp
}

/// Unknown paths get the plain page any web server gives, not an API error that names the
/// software (security review 3, M12).
pub(crate) async fn fallback() -> Response {
    const PAGE: &str = "<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n\
        <center><h1>404 Not Found</h1></center>\r\n</body>\r\n</html>\r\n";
    let mut resp = (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/html")],
        PAGE,
    )
        .into_response();
    resp.extensions_mut().insert(ErrorCode::NotFound);
    resp
}

async fn method_not_allowed() -> Response {
    ApiError::new(ErrorCode::BadRequest, "method not allowed on this endpoint").into_response()
}

/// Who sent a request, as the per-address limits count it: the peer address, or the address a
/// trusted proxy forwarded (see `limits::client_addr`).
pub(crate) struct Client(pub AddrBucket);

impl axum::extract::FromRequestParts<AppState> for Client {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> ApiResult<Self> {
        let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
            return Err(ApiError::new(
                ErrorCode::Internal,
                "the connection's address is unknown",
            ));
        };
        Ok(Client(client_bucket(state, peer, &parts.headers)))
    }
}

/// An id in the request's path, parsed before the handler runs: a malformed one is a typed
/// `bad_request` naming what it should have been.
macro_rules! path_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        pub(crate) struct $name(pub Id);

        impl<S: Send + Sync> axum::extract::FromRequestParts<S> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut axum::http::request::Parts,
                state: &S,
            ) -> ApiResult<Self> {
                let Path(id) = Path::<String>::from_request_parts(parts, state)
                    .await
                    .map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?;
                parse_id(&id, $what).map($name)
            }
        }
    };
}

path_id!(
    /// `/v1/mailboxes/{id}/…`
    MailboxId,
    "mailbox"
);
path_id!(
    /// `/v1/groups/{id}/…`: a group's log.
    LogId,
    "group"
);
path_id!(
    /// `/v1/blobs/{id}/…`
    BlobId,
    "blob"
);

#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    summary = "Liveness",
    responses(
        (status = 200, description = "success", body = samizdat_proto::Health),
    )
)]
async fn healthz(State(state): State<AppState>) -> Response {
    if !state.store.healthy() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(Health {
                status: "storage writer stopped".into(),
                version: None,
            }),
        )
            .into_response();
    }
    axum::Json(Health {
        status: "ok".into(),
        version: None,
    })
    .into_response()
}

/// The OpenAPI document, generated from the code once (see `openapi.rs`). Served only on the
/// metrics listener, with the version: one request to the public listener must not identify
/// a relay (security review 3, M12).
pub(crate) async fn openapi() -> impl IntoResponse {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOC.get_or_init(crate::openapi::document).as_str(),
    )
}

/// A request body in memory, with its share of the relay-wide byte budget: the share is
/// returned when this is dropped (after the handler has finished with the body).
pub(crate) struct ReadBody {
    pub(crate) bytes: Vec<u8>,
    pub(crate) _budget: Option<Held>,
}

impl std::ops::Deref for ReadBody {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Body bytes held in memory: a share of the relay-wide budget and of the client's own
/// (security review 3, M3). Both are given back when this is dropped.
pub(crate) struct Held {
    _permit: tokio::sync::OwnedSemaphorePermit,
    share: Option<crate::limits::Share>,
}

impl Held {
    fn merge(&mut self, other: Held) {
        self._permit.merge(other._permit);
        match (&mut self.share, other.share) {
            (Some(mine), Some(more)) => mine.merge(more),
            (mine @ None, more) => *mine = more,
            (Some(_), None) => {}
        }
    }
}

/// Take `n` bytes from the client's share (at once, or `rate_limited`) and from the
/// relay-wide budget of request bodies held in memory (waiting a few seconds at most; when
/// it stays exhausted the request is refused with `unavailable`).
pub(crate) async fn body_budget(state: &AppState, n: u32) -> ApiResult<Held> {
    let share = match CLIENT.try_with(|b| *b) {
        Ok(bucket) => Some(
            state
                .body_shares
                .take(bucket, u64::from(n))
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::RateLimited,
                        "this address is sending too much data at once; retry shortly",
                    )
                })?,
        ),
        Err(_) => None,
    };
    let permit = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        state.body_budget.clone().acquire_many_owned(n),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unavailable,
            "the relay is receiving too much data at once; retry shortly",
        )
    })?;
    Ok(Held {
        _permit: permit,
        share,
    })
}

/// Read at most `limit` bytes of body within `body_timeout_secs`, taking each chunk's size
/// from the relay-wide budget first. When the budget stays exhausted for a few seconds
/// the request is refused with `unavailable` (Retry-After) instead of growing memory.
pub(crate) async fn read_body(state: &AppState, body: Body, limit: usize) -> ApiResult<ReadBody> {
    use futures_util::StreamExt;
    let too_large = || {
        ApiError::new(
            ErrorCode::TooLarge,
            format!("request body is larger than the relay's limit of {limit} bytes"),
        )
    };
    let deadline = std::time::Duration::from_secs(state.limits.body_timeout_secs.max(1));
    let read = async {
        let mut stream = body.into_data_stream();
        let mut bytes: Vec<u8> = Vec::new();
        let mut budget: Option<Held> = None;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .map_err(|_| ApiError::new(ErrorCode::BadRequest, "the request body broke off"))?;
            if bytes.len() + chunk.len() > limit {
                return Err(too_large());
            }
            let n = u32::try_from(chunk.len()).map_err(|_| too_large())?;
            if n > 0 {
                let permit = body_budget(state, n).await?;
                match &mut budget {
                    Some(b) => b.merge(permit),
                    None => budget = Some(permit),
                }
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(ReadBody {
            bytes,
            _budget: budget,
        })
    };
    tokio::time::timeout(deadline, read).await.map_err(|_| {
        ApiError::new(
            ErrorCode::Timeout,
            "the request body did not arrive in time",
        )
    })?
}

/// Refuse counters the stores cannot hold (they are signed 64-bit).
fn bounded(v: u64, what: &str) -> ApiResult<u64> {
    if v > crate::store::MAX_COUNTER {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("{what} is larger than 2^63-1"),
        ));
    }
    Ok(v)
}

/// The relay-wide storage limits: stored bytes (as of the last sweep) and the free share of
/// the disk (looked at most once a second).
pub(crate) fn check_relay_storage(state: &AppState) -> ApiResult<()> {
    let max = state.limits.max_relay_bytes;
    if (max > 0 && state.stored_bytes.load(Ordering::Relaxed) >= max)
        || state.disk.low(state.limits.min_free_disk_percent)
    {
        return Err(ApiError::new(
            ErrorCode::StorageFull,
            "the relay's storage is full; try again later or use another relay",
        ));
    }
    Ok(())
}

/// The free share of the file systems holding the relay's data and blobs, looked at no more
/// than once a second (a `statvfs` each).
pub(crate) struct DiskWatch {
    dirs: Vec<std::path::PathBuf>,
    /// When it was last looked at, and the lowest free share seen then (percent).
    last: std::sync::Mutex<Option<(std::time::Instant, u64)>>,
}

impl DiskWatch {
    pub(crate) fn new(dirs: Vec<std::path::PathBuf>) -> Arc<Self> {
        Arc::new(DiskWatch {
            dirs,
            last: std::sync::Mutex::new(None),
        })
    }

    /// Whether some directory's file system has less than `min_percent` free.
    pub(crate) fn low(&self, min_percent: u64) -> bool {
        if min_percent == 0 {
            return false;
        }
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let free = match *last {
            Some((at, free)) if at.elapsed() < std::time::Duration::from_secs(1) => free,
            _ => {
                let free = self
                    .dirs
                    .iter()
                    .filter_map(|d| rustix::fs::statvfs(d).ok())
                    .filter(|s| s.f_blocks > 0)
                    .map(|s| s.f_bavail.saturating_mul(100) / s.f_blocks)
                    .min()
                    .unwrap_or(100);
                *last = Some((std::time::Instant::now(), free));
                free
            }
        };
        free < min_percent
    }
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("invalid JSON body: {e}")))
}

pub(crate) fn parse_id(s: &str, what: &str) -> ApiResult<Id> {
    s.parse()
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("invalid {what} id: {e}")))
}

/// The bucket a per-address limit counts this request in (see `limits::client_addr`).
pub(crate) fn client_bucket(
    state: &AppState,
    peer: &SocketAddr,
    headers: &HeaderMap,
) -> AddrBucket {
    AddrBucket::of(crate::limits::client_addr(
        *peer,
        headers,
        &state.trusted_proxies,
    ))
}

/// Check the owner signature headers of a mailbox request; consumes the nonce.
pub(crate) async fn check_owner(
    state: &AppState,
    mailbox: Id,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<()> {
    let signed = owner_precheck(state, mailbox, headers).await?;
    owner_verify(state, mailbox, signed, method, uri, body).await
}

/// The headers of an owner-signed request, checked before its body is read.
struct Signed {
    owner: Vec<u8>,
    ts: u64,
    nonce: Id,
    sig: Vec<u8>,
}

/// Everything about an owner-signed request that needs no body: the signature headers, the
/// timestamp window and that the mailbox exists. Done before a body is read, so a request for
/// a mailbox that does not exist (or with a stale clock) holds none of the relay-wide body
/// budget (security review 3, M3).
async fn owner_precheck(state: &AppState, mailbox: Id, headers: &HeaderMap) -> ApiResult<Signed> {
    let (ts, nonce, sig) = signature_headers(headers)?;
    let owner = state
        .store
        .mailbox_owner(mailbox)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such mailbox"))?;
    Ok(Signed {
        owner,
        ts,
        nonce,
        sig,
    })
}

/// The signature headers of a signed request (timestamp, nonce, signature), the timestamp
/// within the window of the relay's clock.
pub(crate) fn signature_headers(headers: &HeaderMap) -> ApiResult<(u64, Id, Vec<u8>)> {
    let header = |name: &str| -> ApiResult<&str> {
        headers.get(name).and_then(|v| v.to_str().ok()).ok_or_else(|| {
            ApiError::new(
                ErrorCode::BadSignature,
                format!("missing or unreadable {name} header; this request must be signed (by the mailbox owner or a channel admin)"),
            )
        })
    };
    let ts: u64 = header(proto::HEADER_TIMESTAMP)?
        .parse()
        .map_err(|_| ApiError::new(ErrorCode::BadSignature, "timestamp must be Unix seconds"))?;
    let nonce: Id = header(proto::HEADER_NONCE)?.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::BadSignature,
            "nonce must be 16 bytes of base64url",
        )
    })?;
    let sig = proto::Bytes::decode(header(proto::HEADER_SIGNATURE)?)
        .map_err(|_| ApiError::new(ErrorCode::BadSignature, "signature must be base64url"))?;
    if ts.abs_diff(now_secs()) > proto::SIGNATURE_WINDOW_SECS {
        return Err(ApiError::new(
            ErrorCode::StaleSignature,
            "signature timestamp is too far from the relay's clock; check the device's clock",
        ));
    }
    Ok((ts, nonce, sig))
}

/// The signature over the request (body included) and the nonce's freshness.
async fn owner_verify(
    state: &AppState,
    mailbox: Id,
    signed: Signed,
    method: &Method,
    uri: &Uri,
    body: &[u8],
) -> ApiResult<()> {
    let Signed {
        owner,
        ts,
        nonce,
        sig,
    } = signed;
    let path_and_query = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or(uri.path());
    let payload = proto::http_signing_payload(method.as_str(), path_and_query, ts, &nonce, body);
    if !auth::verify(&owner, &payload, &sig) {
        return Err(ApiError::new(
            ErrorCode::BadSignature,
            "the owner signature does not verify",
        ));
    }
    use_nonce(state, nonce, ts, mailbox).await
}

/// Spend a signed request's nonce (under `scope`: its mailbox or channel); a nonce seen before
/// is a replay.
pub(crate) async fn use_nonce(state: &AppState, nonce: Id, ts: u64, scope: Id) -> ApiResult<()> {
    let fresh = state
        .store
        .use_nonce(
            nonce,
            ts.saturating_add(proto::SIGNATURE_WINDOW_SECS + 1),
            scope,
            now_secs(),
        )
        .await?;
    if !fresh {
        return Err(ApiError::new(
            ErrorCode::ReplayedSignature,
            "this signature nonce was already used; sign every request afresh",
        ));
    }
    Ok(())
}

pub(crate) fn rate_limited() -> ApiError {
    ApiError::new(
        ErrorCode::RateLimited,
        "too many requests of this kind from your address; retry in a minute",
    )
}

fn target_rate_limited() -> ApiError {
    ApiError::new(
        ErrorCode::RateLimited,
        "too many requests of this kind for this mailbox; retry in a minute",
    )
}

#[utoipa::path(
    post,
    path = "/v1/mailboxes",
    operation_id = "createMailbox",
    summary = "Create a mailbox owned by an Ed25519 key",
    request_body(content = samizdat_proto::CreateMailbox, content_type = "application/json"),
    responses(
        crate::openapi::Rejected,
        crate::openapi::TooLarge,
        (status = 201, description = "success", body = samizdat_proto::Created),
        (status = 409, description = "mailbox id taken", body = samizdat_proto::ErrorBody),
    )
)]
async fn create_mailbox(
    State(state): State<AppState>,
    Client(client): Client,
    body: Body,
) -> ApiResult<impl IntoResponse> {
    if !state.rates.creations_per_addr.allow(&client) {
        return Err(rate_limited());
    }
    let bytes = read_body(&state, body, 4096).await?;
    let req: CreateMailbox = parse(&bytes)?;
    if req.owner_key.len() != 32 {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "owner_key must be a 32-byte Ed25519 public key",
        ));
    }
    state
        .store
        .create_mailbox(req.request_id, req.mailbox_id, req.owner_key.0, now_secs())
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(Created { id: req.mailbox_id }),
    ))
}

#[utoipa::path(
    post,
    path = "/v1/mailboxes/{id}/messages",
    operation_id = "dropMessage",
    summary = "Drop a message into a mailbox (anyone with the address)",
    params(
        ("id" = samizdat_proto::Id, Path),
    ),
    request_body(content = samizdat_proto::DropMessage, content_type = "application/json"),
    responses(
        crate::openapi::Rejected,
        crate::openapi::TooLarge,
        (status = 200, description = "success", body = samizdat_proto::Stored),
        (status = 404, description = "no such mailbox", body = samizdat_proto::ErrorBody),
    )
)]
async fn drop_message(
    State(state): State<AppState>,
    Client(client): Client,
    MailboxId(mailbox): MailboxId,
    body: Body,
) -> ApiResult<impl IntoResponse> {
    // Drops are anonymous: bound them per sender address and per target mailbox
    // before reading a byte, and refuse them when the mailbox does not exist.
    if !state.rates.drops_per_addr.allow(&client) {
        return Err(rate_limited());
    }
    if !state.rates.drops_per_mailbox.allow(&mailbox) {
        return Err(target_rate_limited());
    }
    check_relay_storage(&state)?;
    if state.store.mailbox_owner(mailbox).await?.is_none() {
        return Err(ApiError::new(ErrorCode::NotFound, "no such mailbox"));
    }
    let limit = state.limits.max_mailbox_message * 4 / 3 + 256;
    let bytes = read_body(&state, body, limit.min(state.limits.max_request_body)).await?;
    let req: DropMessage = parse(&bytes)?;
    if req.body.len() > state.limits.max_mailbox_message {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            "message is larger than the mailbox message limit",
        ));
    }
    let len = req.body.len() as u64;
    let seq = state
        .store
        .drop_message(
            req.request_id,
            mailbox,
            req.body.0,
            now_secs(),
            &state.limits,
        )
        .await?;
    state.metrics.mailbox_messages_stored.increment(1);
    state.metrics.mailbox_bytes_stored.increment(len as u64);
    state.notifier.notify(Topic::Mailbox(mailbox));
    Ok(axum::Json(Stored {
        seq,
        undelivered_welcomes: Vec::new(),
    }))
}

#[derive(Deserialize)]
struct MailboxQuery {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    limit: Option<usize>,
}

#[utoipa::path(
    get,
    path = "/v1/mailboxes/{id}/messages",
    operation_id = "readMailbox",
    summary = "Read messages (owner-signed)",
    params(
        ("id" = samizdat_proto::Id, Path),
        crate::openapi::OwnerSigned,
        ("after" = Option<u64>, Query),
        ("limit" = Option<u32>, Query),
    ),
    responses(
        crate::openapi::Rejected,
        crate::openapi::TooLarge,
        crate::openapi::OwnerRefusals,
        (status = 200, description = "success", body = samizdat_proto::MailboxMessages),
    )
)]
async fn read_mailbox(
    State(state): State<AppState>,
    MailboxId(mailbox): MailboxId,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    query: Result<Query<MailboxQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<impl IntoResponse> {
    let Query(q) = query.map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?;
    bounded(q.after, "after")?;
    check_owner(&state, mailbox, &method, &uri, &headers, b"").await?;
    let limit = q
        .limit
        .unwrap_or(state.limits.max_read_entries)
        .clamp(1, state.limits.max_read_entries);
    let messages = state
        .store
        .read_mailbox(mailbox, q.after, limit, now_secs())
        .await?;
    Ok(axum::Json(MailboxMessages { messages }))
}

#[utoipa::path(
    post,
    path = "/v1/mailboxes/{id}/ack",
    operation_id = "ackMessages",
    summary = "Delete read messages (owner-signed)",
    params(
        ("id" = samizdat_proto::Id, Path),
        crate::openapi::OwnerSigned,
    ),
    request_body(content = samizdat_proto::AckMessages, content_type = "application/json"),
    responses(
        crate::openapi::Rejected,
        crate::openapi::TooLarge,
        crate::openapi::OwnerRefusals,
        (status = 200, description = "success", body = samizdat_proto::Acked),
    )
)]
async fn ack(
    State(state): State<AppState>,
    MailboxId(mailbox): MailboxId,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<impl IntoResponse> {
    let signed = owner_precheck(&state, mailbox, &headers).await?;
    let bytes = read_body(&state, body, 64 * 1024).await?;
    owner_verify(&state, mailbox, signed, &method, &uri, &bytes).await?;
    let req: AckMessages = parse(&bytes)?;
    if req.seqs.len() > state.limits.max_read_entries {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            "too many sequence numbers in one acknowledgement",
        ));
    }
    let deleted = state
        .store
        .ack_messages(req.request_id, mailbox, req.seqs)
        .await?;
    Ok(axum::Json(Acked { deleted }))
}

#[utoipa::path(
    post,
    path = "/v1/mailboxes/{id}/keypackages",
    operation_id = "uploadKeyPackages",
    summary = "Add KeyPackages and set the last resort (owner-signed)",
    params(
        ("id" = samizdat_proto::Id, Path),
        crate::openapi::OwnerSigned,
    ),
    request_body(content = samizdat_proto::UploadKeyPackages, content_type = "application/json"),
    responses(
        crate::openapi::Rejected,
        crate::openapi::TooLarge,
        crate::openapi::OwnerRefusals,
        (status = 200, description = "success", body = samizdat_proto::KeyPackageCount),
    )
)]
async fn upload_key_packages(
    State(state): State<AppState>,
    MailboxId(mailbox): MailboxId,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<impl IntoResponse> {
    let l = &state.limits;
    let limit = (l.max_key_package_size * (l.max_key_packages as usize + 1)) * 4 / 3 + 1024;
    let signed = owner_precheck(&state, mailbox, &headers).await?;
    let bytes = read_body(&state, body, limit.min(l.max_request_body)).await?;
    owner_verify(&state, mailbox, signed, &method, &uri, &bytes).await?;
    let req: UploadKeyPackages = parse(&bytes)?;
    if req
        .key_packages
        .iter()
        .chain(req.last_resort.iter())
        .any(|k| k.len() > l.max_key_package_size || k.is_empty())
    {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!(
                "each KeyPackage must be 1 to {} bytes",
                l.max_key_package_size
            ),
        ));
    }
    let count = state
        .store
        .upload_key_packages(
            req.request_id,
            mailbox,
            req.key_packages.into_iter().map(|k| k.0).collect(),
            req.last_resort.map(|k| k.0),
            l.max_key_packages,
        )
        .await?;
    Ok(axum::Json(count))
}

#[utoipa::path(
    get,
    path = "/v1/mailboxes/{id}/keypackages",
    operation_id = "countKeyPackages",
    summary = "Pool size (owner-signed)",
    params(
        ("id" = samizdat_proto::Id, Path),
        crate::openapi::OwnerSigned,
    ),
    responses(
        crate::openapi::Rejected,
        crate::openapi::TooLarge,
        crate::openapi::OwnerRefusals,
        (status = 200, description = "success", body = samizdat_proto::KeyPackageCount),
    )
)]
async fn key_package_count(
    State(state): State<AppState>,
    MailboxId(mailbox): MailboxId,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult<impl IntoResponse> {
    check_owner(&state, mailbox, &method, &uri, &headers, b"").await?;
    Ok(axum::Json(state.store.key_package_count(mailbox).await?))
}

#[utoipa::path(
    post,
    path = "/v1/mailboxes/{id}/keypackages/claim",
    operation_id = "claimKeyPackage",
    summary = "Take one KeyPackage, exactly once",
    params(
        ("id" = samizdat_proto::Id, Path),
    ),
    request_body(content = samizdat_proto::ClaimKeyPackage, content_type = "application/json"),
    responses(
        crate::openapi::Rejected,
        crate::openapi::TooLarge,
        (status = 200, description = "success", body = samizdat_proto::ClaimedKeyPackage),
        (status = 404, description = "no such mailbox, or no KeyPackage left", body = samizdat_proto::ErrorBody),
    )
)]
async fn claim_key_package(
    State(state): State<AppState>,
    Client(client): Client,
    MailboxId(mailbox): MailboxId,
    body: Body,
) -> ApiResult<impl IntoResponse> {
    if !state.rates.claims_per_addr.allow(&client) {
        return Err(rate_limited());
    }
    // Per pool as well: many addresses together must not drain one person's pool.
    if !state.rates.claims_per_mailbox.allow(&mailbox) {
        return Err(target_rate_limited());
    }
    let bytes = read_body(&state, body, 4096).await?;
    let req: ClaimKeyPackage = parse(&bytes)?;
    let claimed = state
        .store
        .claim_key_package(req.request_id, mailbox)
        .await?;
    state.metrics.key_packages_claimed.increment(1);
    Ok(axum::Json(claimed))
}

fn hash_from(b: &proto::Bytes, what: &str) -> ApiResult<[u8; 32]> {
    <[u8; 32]>::try_from(b.0.as_slice()).map_err(|_| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("{what} must be 32 bytes (SHA-256)"),
        )
    })
}

#[utoipa::path(
    post,
    path = "/v1/groups",
    operation_id = "createGroup",
    summary = "Create a group log",
    request_body(content = samizdat_proto::CreateGroup, content_type = "application/json"),
    responses(
        crate::openapi::Rejected,
        crate::openapi::TooLarge,
        (status = 201, description = "success", body = samizdat_proto::Created),
        (status = 409, description = "group id taken", body = samizdat_proto::ErrorBody),
    )
)]
async fn create_group(
    State(state): State<AppState>,
    Client(client): Client,
    body: Body,
) -> ApiResult<impl IntoResponse> {
    if !state.rates.creations_per_addr.allow(&client) {
        return Err(rate_limited());
    }
    let bytes = read_body(&state, body, 4096).await?;
    let req: CreateGroup = parse(&bytes)?;
    let hash = hash_from(&req.token_hash, "token_hash")?;
    bounded(req.epoch, "epoch")?;
    state
        .store
        .create_group(req.request_id, req.group_id, req.epoch, hash, now_secs())
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(Created { id: req.group_id }),
    ))
}

fn token_from(headers: &HeaderMap) -> ApiResult<Vec<u8>> {
    let raw = headers
        .get(proto::HEADER_TOKEN)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::BadToken,
                "missing x-samizdat-token header (the epoch token)",
            )
        })?;
    let token = proto::Bytes::decode(raw)
        .map_err(|_| ApiError::new(ErrorCode::BadToken, "the epoch token must be base64url"))?;
    if token.is_empty() || token.len() > 64 {
        return Err(ApiError::new(
            ErrorCode::BadToken,
            "the epoch token must be 1 to 64 bytes",
        ));
    }
    Ok(token)
}

#[utoipa::path(
    post,
    path = "/v1/groups/{id}/entries",
    operation_id = "appendEntry",
    summary = "Append an application entry or a commit (epoch compare-and-set)",
    params(
        ("id" = samizdat_proto::Id, Path),
        ("x-samizdat-token" = samizdat_proto::Bytes, Header, description = "the epoch's token (1-64 bytes)"),
        ("x-samizdat-request-id" = Option<samizdat_proto::Id>, Header, description = "binary form only: the request id"),
        ("x-samizdat-epoch" = Option<u64>, Header, description = "binary form only: the sender's epoch"),
        ("x-samizdat-kind" = Option<samizdat_proto::EntryKind>, Header, description = "binary form only: application or commit"),
        ("x-samizdat-next-token-hash" = Option<samizdat_proto::Bytes>, Header, description = "binary form of a commit only: SHA-256 of the next epoch's token"),
    ),
    request_body(
        description = "JSON, or the entry itself as application/octet-stream with its metadata in the x-samizdat-* headers (no Welcomes)",
        content(
            (samizdat_proto::AppendEntry = "application/json"),
            (Vec<u8> = "application/octet-stream"),
        )
    ),
    responses(
        crate::openapi::Rejected,
        crate::openapi::TooLarge,
        (status = 200, description = "success", body = samizdat_proto::Stored),
        (status = 403, description = "wrong or missing epoch token", body = samizdat_proto::ErrorBody),
        (status = 404, description = "no such group or Welcome mailbox", body = samizdat_proto::ErrorBody),
        (status = 409, description = "epoch_conflict or stale_epoch: the group moved on", body = samizdat_proto::ErrorBody),
    )
)]
async fn append(
    State(state): State<AppState>,
    LogId(group): LogId,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<impl IntoResponse> {
    let token = token_from(&headers)?;
    let (token_hash, token_epoch) = authorize_append(&state, group, &token).await?;
    check_relay_storage(&state)?;
    let bytes = read_body(&state, body, state.limits.max_request_body).await?;
    let req = if is_octet_stream(&headers) {
        binary_append_entry(&headers, &bytes)?
    } else {
        parse(&bytes)?
    };
    let stored = append_entry(&state, group, token_hash, token_epoch, req).await?;
    Ok(axum::Json(stored))
}

fn is_octet_stream(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/octet-stream"))
}

/// The binary form of an append: the body is the entry as it is; what the JSON form carries
/// beside it comes in headers (`x-samizdat-request-id`, `x-samizdat-epoch`,
/// `x-samizdat-kind`, and for a commit `x-samizdat-next-token-hash`). Welcomes need the
/// JSON form.
fn binary_append_entry(headers: &HeaderMap, body: &[u8]) -> ApiResult<AppendEntry> {
    let header = |name: &str| -> ApiResult<&str> {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::BadRequest,
                    format!("a binary append needs the {name} header"),
                )
            })
    };
    let request_id = parse_id(header(proto::HEADER_REQUEST_ID)?, "request id")?;
    let epoch = header(proto::HEADER_EPOCH)?.parse::<u64>().map_err(|_| {
        ApiError::new(
            ErrorCode::BadRequest,
            "x-samizdat-epoch must be a non-negative integer",
        )
    })?;
    let kind = match header(proto::HEADER_KIND)? {
        "application" => EntryKind::Application,
        "commit" => EntryKind::Commit,
        _ => {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "x-samizdat-kind must be application or commit",
            ));
        }
    };
    let next_token_hash = match headers.get(proto::HEADER_NEXT_TOKEN_HASH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| proto::Bytes::decode(v).ok())
                .map(proto::Bytes)
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::BadRequest,
                        "x-samizdat-next-token-hash must be base64url",
                    )
                })?,
        ),
    };
    Ok(AppendEntry {
        request_id,
        kind,
        epoch,
        body: proto::Bytes(body.to_vec()),
        next_token_hash,
        welcomes: Vec::new(),
    })
}

/// Who may append, checked before a body is read: only a member (someone holding one of the
/// group's epoch tokens) gets to send one at all; a made-up token or group costs one indexed
/// read. Returns the token's hash and the epoch it belongs to.
pub(crate) async fn authorize_append(
    state: &AppState,
    group: Id,
    token: &[u8],
) -> ApiResult<([u8; 32], u64)> {
    let token_hash = auth::token_hash(token);
    if let Some(epoch) = state.tokens.get(group, &token_hash) {
        return Ok((token_hash, epoch));
    }
    let token_epoch = state
        .store
        .token_epoch(group, token_hash)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::BadToken,
                "the epoch token does not match this group",
            )
        })?;
    state.tokens.insert(group, token_hash, token_epoch);
    Ok((token_hash, token_epoch))
}

/// Check and store an append from an authorized member (HTTP, JSON or binary, or a WebSocket
/// binary frame), then wake the subscribers.
pub(crate) async fn append_entry(
    state: &AppState,
    group: Id,
    token_hash: [u8; 32],
    token_epoch: u64,
    mut req: AppendEntry,
) -> ApiResult<Stored> {
    let l = &state.limits;
    if req.epoch != token_epoch {
        return Err(ApiError::new(
            ErrorCode::BadToken,
            "the epoch token does not match this group and epoch",
        ));
    }
    let (max, what) = match req.kind {
        EntryKind::Application => (l.max_application_entry, "application entry"),
        EntryKind::Commit => (l.max_commit_entry, "commit"),
    };
    if req.body.len() > max {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!("the {what} is larger than the relay's limit of {max} bytes"),
        ));
    }
    let next_token_hash = match (req.kind, &req.next_token_hash) {
        (EntryKind::Commit, Some(h)) => Some(hash_from(h, "next_token_hash")?),
        (EntryKind::Commit, None) => {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "a commit must carry next_token_hash",
            ));
        }
        (EntryKind::Application, Some(_)) => {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "only commits carry next_token_hash",
            ));
        }
        (EntryKind::Application, None) => None,
    };
    if req.kind == EntryKind::Application && !req.welcomes.is_empty() {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "only commits carry welcomes",
        ));
    }
    if req.welcomes.len() > l.max_welcomes_per_commit {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            "too many welcomes in one commit",
        ));
    }
    if req
        .welcomes
        .iter()
        .any(|w| w.body.len() > l.max_mailbox_message)
    {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            "a welcome is larger than the mailbox message limit",
        ));
    }
    // A Welcome counts against its target mailbox's drop allowance like any other drop: a
    // stranger's own group cannot pour thousands into one mailbox (security review 3, M2).
    // Those beyond it are held back and reported undelivered; the committer delivers them
    // later, when the allowance has refilled.
    let (welcomes, held_back): (Vec<_>, Vec<_>) = std::mem::take(&mut req.welcomes)
        .into_iter()
        .partition(|w| state.rates.drops_per_mailbox.allow(&w.mailbox_id));
    req.welcomes = welcomes;
    let len = req.body.len() as u64;
    let (kind, epoch) = (req.kind, req.epoch);
    let body_copy = req.body.0.clone();
    let appended = state
        .store
        .append(
            AppendRequest {
                request_id: req.request_id,
                group_id: group,
                kind: req.kind,
                epoch: req.epoch,
                token_hash,
                body: req.body.0,
                next_token_hash,
                welcomes: req.welcomes,
            },
            now_secs(),
            l,
        )
        .await?;
    state.metrics.entries_stored.increment(1);
    state.metrics.entry_bytes_stored.increment(len);
    if appended.fresh {
        state
            .notifier
            .entry(Appended::new(group, appended.seq, epoch, kind, body_copy));
    }
    for m in appended.welcomed {
        state.metrics.mailbox_messages_stored.increment(1);
        state.notifier.notify(Topic::Mailbox(m));
    }
    let mut undelivered = appended.undelivered;
    undelivered.extend(held_back.into_iter().map(|w| w.mailbox_id));
    if !undelivered.is_empty() {
        tracing::info!(
            undelivered = undelivered.len(),
            "commit stored; some Welcomes could not be delivered"
        );
    }
    Ok(Stored {
        seq: appended.seq,
        undelivered_welcomes: undelivered,
    })
}

#[derive(Deserialize)]
struct EntriesQuery {
    epoch: u64,
    #[serde(default)]
    after: u64,
    #[serde(default)]
    limit: Option<usize>,
}

/// Check that `token` is `epoch`'s token of `group`; returns the group's current epoch.
pub(crate) async fn check_token(
    state: &AppState,
    group: Id,
    epoch: u64,
    token: &[u8],
) -> ApiResult<u64> {
    match state.store.epoch_token(group, epoch).await? {
        Some((hash, current)) if hash == auth::token_hash(token) => Ok(current),
        _ => Err(ApiError::new(
            ErrorCode::BadToken,
            "the epoch token does not match this group and epoch",
        )),
    }
}

#[utoipa::path(
    get,
    path = "/v1/groups/{id}/entries",
    operation_id = "readEntries",
    summary = "Read one epoch's entries with that epoch's token",
    params(
        ("id" = samizdat_proto::Id, Path),
        ("x-samizdat-token" = samizdat_proto::Bytes, Header, description = "the epoch's token (1-64 bytes)"),
        ("epoch" = u64, Query),
        ("after" = Option<u64>, Query),
        ("limit" = Option<u32>, Query),
    ),
    responses(
        crate::openapi::Rejected,
        crate::openapi::TooLarge,
        (status = 200, description = "success", body = samizdat_proto::Entries),
        (status = 403, description = "wrong or missing epoch token", body = samizdat_proto::ErrorBody),
        (status = 404, description = "no such group", body = samizdat_proto::ErrorBody),
    )
)]
async fn read_entries(
    State(state): State<AppState>,
    LogId(group): LogId,
    headers: HeaderMap,
    query: Result<Query<EntriesQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<impl IntoResponse> {
    let Query(q) = query.map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?;
    let token = token_from(&headers)?;
    bounded(q.epoch, "epoch")?;
    bounded(q.after, "after")?;
    check_token(&state, group, q.epoch, &token).await?;
    let limit = q
        .limit
        .unwrap_or(state.limits.max_read_entries)
        .clamp(1, state.limits.max_read_entries);
    let entries = state
        .store
        .read_entries(group, q.epoch, q.after, limit)
        .await?;
    Ok(axum::Json(entries))
}

#[derive(Deserialize)]
struct CallsQuery {
    epoch: u64,
}

#[utoipa::path(
    post,
    path = "/v1/groups/{id}/calls",
    operation_id = "turnCredentials",
    summary = "TURN credentials for one call of the group's members (issue 31)",
    params(
        ("id" = samizdat_proto::Id, Path),
        ("x-samizdat-token" = samizdat_proto::Bytes, Header, description = "the epoch's token (1-64 bytes)"),
        ("epoch" = u64, Query),
    ),
    request_body(content = samizdat_proto::TurnRequest, content_type = "application/json"),
    responses(
        crate::openapi::Rejected,
        crate::openapi::TooLarge,
        (status = 200, description = "success", body = samizdat_proto::TurnCredentials),
        (status = 403, description = "wrong or missing epoch token", body = samizdat_proto::ErrorBody),
        (status = 404, description = "no such group, or this relay does not relay calls", body = samizdat_proto::ErrorBody),
    )
)]
async fn turn_credentials(
    State(state): State<AppState>,
    LogId(group): LogId,
    headers: HeaderMap,
    query: Result<Query<CallsQuery>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> ApiResult<impl IntoResponse> {
    let Query(q) = query.map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?;
    let token = token_from(&headers)?;
    bounded(q.epoch, "epoch")?;
    // Who may ask first: a member of the group at that epoch; only then what they sent.
    check_token(&state, group, q.epoch, &token).await?;
    let Some(turn) = state.turn.clone() else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "this relay does not relay calls",
        ));
    };
    let bytes = read_body(&state, body, 1024).await?;
    let req: proto::TurnRequest = parse(&bytes)?;
    let room = hash_from(&req.room, "room")?;
    let creds = turn
        .mint(&auth::token_hash(&room))
        .ok_or_else(|| ApiError::new(ErrorCode::Unavailable, "no randomness for a credential"))?;
    Ok(axum::Json(creds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    async fn boom() -> &'static str {
        panic!("boom")
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_and_the_router_keeps_serving() {
        let app = with_request_layers(
            Router::new()
                .route("/boom", get(boom))
                .route("/ok", get(|| async { "fine" })),
        );
        let req = |path: &str| {
            axum::extract::Request::builder()
                .uri(path)
                .body(axum::body::Body::empty())
                .expect("request")
        };
        let resp = app.clone().oneshot(req("/boom")).await.expect("answer");
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .expect("body");
        let err: ErrorBody = serde_json::from_slice(&body).expect("an error body");
        assert_eq!(err.code, ErrorCode::Internal);
        let resp = app.oneshot(req("/ok")).await.expect("answer");
        assert_eq!(resp.status(), StatusCode::OK);
    }
}
