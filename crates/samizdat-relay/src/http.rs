//! The HTTP API under `/v1`, plus `/healthz` and `/metrics`.
//!
//! Bodies are read by hand (bounded) and parsed once at the edge; every failure a client can
//! cause is answered with a 4xx and `{"code", "message"}`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use samizdat_proto::{
    self as proto, AckMessages, Acked, AppendEntry, ClaimKeyPackage, CreateGroup, CreateMailbox,
    Created, DropMessage, EntryKind, ErrorBody, ErrorCode, Health, Id, MailboxMessages,
    ServerFrame, Stored, UploadKeyPackages,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;

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
        (status, axum::Json(self.0)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi))
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
        .route("/v1/ws", get(crate::ws::upgrade))
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_and_reject,
        ))
        .with_state(state)
}

async fn count_and_reject(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    state.metrics.http_requests.fetch_add(1, Ordering::Relaxed);
    let resp = next.run(req).await;
    if resp.status().is_client_error() || resp.status().is_server_error() {
        // The code is in the body; the status class is enough for the counter's label
        // when the handler did not record it itself.
        if let Some(code) = resp.extensions().get::<ErrorCode>() {
            state.metrics.reject(*code);
        }
    }
    resp
}

async fn fallback() -> Response {
    with_code(ApiError::new(
        ErrorCode::NotFound,
        "no such endpoint; see /v1/openapi.json",
    ))
}

async fn method_not_allowed() -> Response {
    with_code(ApiError::new(
        ErrorCode::BadRequest,
        "method not allowed on this endpoint",
    ))
}

fn with_code(e: ApiError) -> Response {
    let code = e.0.code;
    let mut resp = e.into_response();
    resp.extensions_mut().insert(code);
    resp
}

/// Turn a handler result into a response, tagging errors with their code for the metrics.
fn respond<T: IntoResponse>(r: ApiResult<T>) -> Response {
    match r {
        Ok(v) => v.into_response(),
        Err(e) => with_code(e),
    }
}

async fn healthz() -> impl IntoResponse {
    axum::Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// The OpenAPI document, committed as `docs/openapi.json`.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn read_body(body: Body, limit: usize) -> ApiResult<axum::body::Bytes> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            ErrorCode::TooLarge,
            format!("request body is larger than the relay's limit of {limit} bytes"),
        )
    })
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("invalid JSON body: {e}")))
}

fn parse_id(s: &str, what: &str) -> ApiResult<Id> {
    s.parse()
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("invalid {what} id: {e}")))
}

fn client_ip(addr: &SocketAddr) -> std::net::IpAddr {
    addr.ip()
}

/// Check the owner signature headers of a mailbox request; consumes the nonce.
async fn check_owner(
    state: &AppState,
    mailbox: Id,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<()> {
    let header = |name: &str| -> ApiResult<&str> {
        headers.get(name).and_then(|v| v.to_str().ok()).ok_or_else(|| {
            ApiError::new(
                ErrorCode::BadSignature,
                format!("missing or unreadable {name} header; this request must be signed by the mailbox owner"),
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
    let now = now_secs();
    if ts.abs_diff(now) > proto::SIGNATURE_WINDOW_SECS {
        return Err(ApiError::new(
            ErrorCode::StaleSignature,
            "signature timestamp is too far from the relay's clock; check the device's clock",
        ));
    }
    let owner = state
        .store
        .mailbox_owner(mailbox)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such mailbox"))?;
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
    let fresh = state
        .store
        .use_nonce(nonce, ts + proto::SIGNATURE_WINDOW_SECS + 1)
        .await?;
    if !fresh {
        return Err(ApiError::new(
            ErrorCode::ReplayedSignature,
            "this signature nonce was already used; sign every request afresh",
        ));
    }
    Ok(())
}

fn rate_limited() -> ApiError {
    ApiError::new(
        ErrorCode::RateLimited,
        "too many requests of this kind from your address; retry in a minute",
    )
}

async fn create_mailbox(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    body: Body,
) -> Response {
    respond(
        async {
            let bytes = read_body(body, 4096).await?;
            let req: CreateMailbox = parse(&bytes)?;
            if req.owner_key.len() != 32 {
                return Err(ApiError::new(
                    ErrorCode::BadRequest,
                    "owner_key must be a 32-byte Ed25519 public key",
                ));
            }
            if !state.creations.allow(client_ip(&addr), now_secs()) {
                return Err(rate_limited());
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
        .await,
    )
}

async fn drop_message(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    respond(
        async {
            let mailbox = parse_id(&id, "mailbox")?;
            let limit = state.limits.max_mailbox_message * 4 / 3 + 256;
            let bytes = read_body(body, limit.min(state.limits.max_request_body)).await?;
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
            state
                .metrics
                .mailbox_messages_stored
                .fetch_add(1, Ordering::Relaxed);
            state
                .metrics
                .mailbox_bytes_stored
                .fetch_add(len, Ordering::Relaxed);
            state.notifier.notify(Topic::Mailbox(mailbox));
            Ok(axum::Json(Stored { seq }))
        }
        .await,
    )
}

#[derive(Deserialize)]
struct MailboxQuery {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    limit: Option<usize>,
}

async fn read_mailbox(
    State(state): State<AppState>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    query: Result<Query<MailboxQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    respond(
        async {
            let mailbox = parse_id(&id, "mailbox")?;
            let Query(q) =
                query.map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?;
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
        .await,
    )
}

async fn ack(
    State(state): State<AppState>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    respond(
        async {
            let mailbox = parse_id(&id, "mailbox")?;
            let bytes = read_body(body, 64 * 1024).await?;
            check_owner(&state, mailbox, &method, &uri, &headers, &bytes).await?;
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
        .await,
    )
}

async fn upload_key_packages(
    State(state): State<AppState>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    respond(
        async {
            let mailbox = parse_id(&id, "mailbox")?;
            let l = &state.limits;
            let limit = (l.max_key_package_size * (l.max_key_packages as usize + 1)) * 4 / 3 + 1024;
            let bytes = read_body(body, limit.min(l.max_request_body)).await?;
            check_owner(&state, mailbox, &method, &uri, &headers, &bytes).await?;
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
        .await,
    )
}

async fn key_package_count(
    State(state): State<AppState>,
    Path(id): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    respond(
        async {
            let mailbox = parse_id(&id, "mailbox")?;
            check_owner(&state, mailbox, &method, &uri, &headers, b"").await?;
            Ok(axum::Json(state.store.key_package_count(mailbox).await?))
        }
        .await,
    )
}

async fn claim_key_package(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    respond(
        async {
            let mailbox = parse_id(&id, "mailbox")?;
            let bytes = read_body(body, 4096).await?;
            let req: ClaimKeyPackage = parse(&bytes)?;
            if !state.claims.allow(client_ip(&addr), now_secs()) {
                return Err(rate_limited());
            }
            let claimed = state
                .store
                .claim_key_package(req.request_id, mailbox)
                .await?;
            state
                .metrics
                .key_packages_claimed
                .fetch_add(1, Ordering::Relaxed);
            Ok(axum::Json(claimed))
        }
        .await,
    )
}

fn hash_from(b: &proto::Bytes, what: &str) -> ApiResult<[u8; 32]> {
    <[u8; 32]>::try_from(b.0.as_slice()).map_err(|_| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("{what} must be 32 bytes (SHA-256)"),
        )
    })
}

async fn create_group(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    body: Body,
) -> Response {
    respond(
        async {
            let bytes = read_body(body, 4096).await?;
            let req: CreateGroup = parse(&bytes)?;
            let hash = hash_from(&req.token_hash, "token_hash")?;
            if !state.creations.allow(client_ip(&addr), now_secs()) {
                return Err(rate_limited());
            }
            state
                .store
                .create_group(req.request_id, req.group_id, req.epoch, hash, now_secs())
                .await?;
            Ok((
                StatusCode::CREATED,
                axum::Json(Created { id: req.group_id }),
            ))
        }
        .await,
    )
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

async fn append(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    respond(
        async {
            let group = parse_id(&id, "group")?;
            let token = token_from(&headers)?;
            let l = &state.limits;
            let bytes = read_body(body, l.max_request_body).await?;
            let req: AppendEntry = parse(&bytes)?;
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
            let len = req.body.len() as u64;
            let (kind, epoch) = (req.kind, req.epoch);
            let body_copy = req.body.clone();
            let appended = state
                .store
                .append(
                    AppendRequest {
                        request_id: req.request_id,
                        group_id: group,
                        kind: req.kind,
                        epoch: req.epoch,
                        token_hash: auth::token_hash(&token),
                        body: req.body.0,
                        next_token_hash,
                        welcomes: req.welcomes,
                    },
                    now_secs(),
                    l,
                )
                .await?;
            state.metrics.entries_stored.fetch_add(1, Ordering::Relaxed);
            state
                .metrics
                .entry_bytes_stored
                .fetch_add(len, Ordering::Relaxed);
            if appended.fresh {
                let frame = ServerFrame::Entry {
                    group_id: group,
                    seq: appended.seq,
                    epoch,
                    kind,
                    body: body_copy,
                };
                let frame = serde_json::to_string(&frame).unwrap_or_default();
                state.notifier.entry(Appended {
                    group,
                    seq: appended.seq,
                    epoch,
                    kind,
                    frame: frame.into(),
                });
            }
            for m in appended.welcomed {
                state
                    .metrics
                    .mailbox_messages_stored
                    .fetch_add(1, Ordering::Relaxed);
                state.notifier.notify(Topic::Mailbox(m));
            }
            Ok(axum::Json(Stored { seq: appended.seq }))
        }
        .await,
    )
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

async fn read_entries(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<EntriesQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    respond(
        async {
            let group = parse_id(&id, "group")?;
            let Query(q) =
                query.map_err(|e| ApiError::new(ErrorCode::BadRequest, e.body_text()))?;
            let token = token_from(&headers)?;
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
        .await,
    )
}
