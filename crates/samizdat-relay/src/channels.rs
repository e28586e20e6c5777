//! Channels over HTTP: storing a record (anyone may send one; only an admin's signature makes
//! it stick), the head, and segments — immutable once full, so any cache may keep them.
//!
//! `POST /v1/channels/{id}/records` takes one record (`application/octet-stream`, as
//! `ChannelRecord::encode` writes it). `GET /v1/channels/{id}` answers the head;
//! `GET /v1/channels/{id}/segments/{n}` the records of segment `n`, with an ETag (a hash of
//! the bytes) and, for a full segment, `Cache-Control: public, max-age=31536000, immutable`.
//! Reading asks nothing of the reader: who reads is not the relay's business, and the posts
//! are sealed for whoever lacks the link's key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use samizdat_proto::channel::{
    self, ChannelRecord, MAX_CHANNEL_ADMINS, MAX_CHANNEL_BODY, RecordKind, SEGMENT_RECORDS,
};
use samizdat_proto::{ChannelHead, ErrorCode, Id, Stored};

use crate::http::{ApiError, ApiResult, Client, parse_id, rate_limited, read_body};
use crate::notify::Topic;
use crate::store::NewRecord;
use crate::{AppState, auth, now_secs};

/// The largest record: every field at its limit.
pub const MAX_RECORD: usize =
    16 + 8 + 32 + 2 + 32 * MAX_CHANNEL_ADMINS + 4 + MAX_CHANNEL_BODY + 32 + 64;

/// `POST /v1/channels/{id}/records`.
#[utoipa::path(
    post,
    path = "/v1/channels/{id}/records",
    operation_id = "storeChannelRecord",
    summary = "Store one signed channel record: the genesis (creates the channel) or the record after the head, signed by an admin of the chain; a copy of a record already held is answered 200",
    params(("id" = samizdat_proto::Id, Path)),
    request_body(content = crate::openapi::Binary, content_type = "application/octet-stream"),
    responses(
        crate::openapi::Rejected,
        crate::openapi::TooLarge,
        (status = 201, description = "stored", body = samizdat_proto::Stored),
        (status = 200, description = "already held", body = samizdat_proto::Stored),
        (status = 401, description = "not signed by an admin of the channel", body = samizdat_proto::ErrorBody),
        (status = 404, description = "no such channel", body = samizdat_proto::ErrorBody),
        (status = 409, description = "the record does not follow the head (chain_conflict), or another channel has this id (already_exists)", body = samizdat_proto::ErrorBody),
    )
)]
pub(crate) async fn store_record(
    State(state): State<AppState>,
    Client(client): Client,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult<Response> {
    let channel = parse_id(&id, "channel id")?;
    // The budget is held until the record is stored.
    let crate::http::ReadBody { bytes, _budget } = read_body(&state, body, MAX_RECORD).await?;
    let record = ChannelRecord::decode(&bytes)
        .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("not a channel record: {e}")))?;
    if record.channel != channel {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "the record belongs to another channel",
        ));
    }
    let admins = if record.kind == RecordKind::Genesis {
        if !state.rates.creations_per_addr.allow(&client) {
            return Err(rate_limited());
        }
        record.admins.clone()
    } else {
        let head =
            state.store.channel_state(channel).await?.ok_or_else(|| {
                ApiError::new(ErrorCode::NotFound, "no such channel on this relay")
            })?;
        if record.seq > head.seq + 1 {
            return Err(ApiError::new(
                ErrorCode::ChainConflict,
                format!(
                    "this relay's copy ends at record {}; send the records before this one first",
                    head.seq
                ),
            ));
        }
        // A record at or before the head is stored only if it is that very record (the store
        // compares hashes), so its signature was checked when it first came.
        if record.seq <= head.seq {
            Vec::new()
        } else {
            head.admins
        }
    };
    if record.seq == 0 || !admins.is_empty() {
        check_signature(&record, &admins)?;
    }
    crate::http::check_relay_storage(&state)?;
    let hash = auth::token_hash(&bytes);
    let new = NewRecord {
        channel,
        seq: record.seq,
        prev: record.prev,
        hash,
        admins: matches!(record.kind, RecordKind::Genesis | RecordKind::Roster)
            .then(|| record.admins.clone()),
        bytes,
    };
    let fresh = state.store.store_channel_record(new, now_secs()).await?;
    if fresh {
        state.notifier.notify(Topic::Channel(channel));
        metrics::counter!("samizdat_channel_records_total").increment(1);
    }
    let status = if fresh {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        axum::Json(Stored {
            seq: record.seq,
            undelivered_welcomes: Vec::new(),
        }),
    )
        .into_response())
}

/// The signer must be one of `admins` and its signature must hold.
fn check_signature(record: &ChannelRecord, admins: &[[u8; 32]]) -> ApiResult<()> {
    if !admins.contains(&record.signer) {
        return Err(ApiError::new(
            ErrorCode::BadSignature,
            "only the channel's admins can write to it",
        ));
    }
    if !auth::verify(&record.signer, &record.signing_payload(), &record.signature) {
        return Err(ApiError::new(
            ErrorCode::BadSignature,
            "the record's signature does not hold",
        ));
    }
    Ok(())
}

/// A request (no body) signed by one of the channel's current admins, as a mailbox owner signs
/// hers (`x-samizdat-timestamp`, `-nonce`, `-signature` over `http_signing_payload`): how an
/// admin vouches for a channel's file. The nonce is used up under the channel's id.
pub(crate) async fn check_admin_request(
    state: &AppState,
    channel: Id,
    method: &axum::http::Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
) -> ApiResult<()> {
    let (ts, nonce, sig) = crate::http::signature_headers(headers)?;
    let admins = state
        .store
        .channel_state(channel)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such channel on this relay"))?
        .admins;
    let path = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or(uri.path());
    let payload = samizdat_proto::http_signing_payload(method.as_str(), path, ts, &nonce, &[]);
    // At most MAX_CHANNEL_ADMINS keys to try.
    if !admins.iter().any(|k| auth::verify(k, &payload, &sig)) {
        return Err(ApiError::new(
            ErrorCode::BadSignature,
            "not signed by an admin of the channel",
        ));
    }
    crate::http::use_nonce(state, nonce, ts, channel).await
}

/// `GET /v1/channels/{id}`: the head. Never cached without asking (it moves).
#[utoipa::path(
    get,
    path = "/v1/channels/{id}",
    operation_id = "channelHead",
    summary = "Where the channel's chain stands on this relay (ETag: the head's hash; Cache-Control: no-cache)",
    params(("id" = samizdat_proto::Id, Path)),
    responses(
        crate::openapi::Rejected,
        (status = 200, description = "the head", body = samizdat_proto::ChannelHead),
        (status = 304, description = "not modified (If-None-Match)"),
        (status = 404, description = "no such channel", body = samizdat_proto::ErrorBody),
    )
)]
pub(crate) async fn head(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let channel = parse_id(&id, "channel id")?;
    let head = state
        .store
        .channel_state(channel)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such channel on this relay"))?;
    let etag = etag_of(&head.hash);
    if not_modified(&headers, &etag) {
        return Ok(cached(
            StatusCode::NOT_MODIFIED,
            Body::empty(),
            &etag,
            false,
        ));
    }
    let body = serde_json::to_vec(&ChannelHead {
        seq: head.seq,
        hash: samizdat_proto::Bytes(head.hash.to_vec()),
    })
    .unwrap_or_default();
    let mut resp = cached(StatusCode::OK, Body::from(body), &etag, false);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// `GET /v1/channels/{id}/segments/{n}`.
#[utoipa::path(
    get,
    path = "/v1/channels/{id}/segments/{n}",
    operation_id = "channelSegment",
    summary = "Records n*64 .. n*64+63 of the channel, each as len (u32) | record; a full segment is immutable (Cache-Control: public, max-age=31536000, immutable), the last one is revalidated (no-cache); ETag: a hash of the bytes",
    params(("id" = samizdat_proto::Id, Path), ("n" = u64, Path)),
    responses(
        crate::openapi::Rejected,
        (status = 200, description = "the segment", body = crate::openapi::Binary, content_type = "application/octet-stream"),
        (status = 304, description = "not modified (If-None-Match)"),
        (status = 404, description = "no such channel, or no records in this segment yet", body = samizdat_proto::ErrorBody),
    )
)]
pub(crate) async fn segment(
    State(state): State<AppState>,
    Path((id, n)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let channel = parse_id(&id, "channel id")?;
    let n: u64 = n.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::BadRequest,
            "a segment number is a decimal integer",
        )
    })?;
    if let Some((bytes, etag)) = state.segments.get(channel, n) {
        metrics::counter!("samizdat_channel_segment_reads_total", "from" => "cache").increment(1);
        return Ok(segment_response(&headers, bytes, &etag, true));
    }
    let head = state
        .store
        .channel_state(channel)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such channel on this relay"))?;
    if n > channel::segment_of(head.seq) {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "this segment has no records yet",
        ));
    }
    let from = n * SEGMENT_RECORDS;
    let to = from + SEGMENT_RECORDS - 1;
    let records = state.store.read_channel(channel, from, to).await?;
    let full = records.len() as u64 == SEGMENT_RECORDS;
    let bytes = axum::body::Bytes::from(channel::encode_segment(records.iter().map(Vec::as_slice)));
    let etag = etag_of(&auth::token_hash(&bytes));
    if full {
        state
            .segments
            .insert(channel, n, bytes.clone(), etag.clone());
    }
    metrics::counter!("samizdat_channel_segment_reads_total", "from" => "store").increment(1);
    Ok(segment_response(&headers, bytes, &etag, full))
}

fn segment_response(
    headers: &HeaderMap,
    bytes: axum::body::Bytes,
    etag: &str,
    full: bool,
) -> Response {
    if not_modified(headers, etag) {
        return cached(StatusCode::NOT_MODIFIED, Body::empty(), etag, full);
    }
    let mut resp = cached(StatusCode::OK, Body::from(bytes), etag, full);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    resp
}

fn etag_of(hash: &[u8; 32]) -> String {
    format!("\"{}\"", hex::encode(&hash[..16]))
}

fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
}

fn cached(status: StatusCode, body: Body, etag: &str, immutable: bool) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if immutable {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        }),
    );
    resp
}

/// Full segments kept in memory: they never change, so the relay serves them without a store
/// read. Bounded by bytes; starts over when full (a segment is one store read away).
#[derive(Default)]
pub struct SegmentCache {
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    bytes: usize,
    segments: HashMap<(Id, u64), (axum::body::Bytes, String)>,
}

impl SegmentCache {
    pub const MAX_BYTES: usize = 64 << 20;

    fn get(&self, channel: Id, n: u64) -> Option<(axum::body::Bytes, String)> {
        self.lock().segments.get(&(channel, n)).cloned()
    }

    fn insert(&self, channel: Id, n: u64, bytes: axum::body::Bytes, etag: String) {
        let mut c = self.lock();
        if c.bytes + bytes.len() > Self::MAX_BYTES {
            c.segments.clear();
            c.bytes = 0;
        }
        c.bytes += bytes.len();
        if let Some((old, _)) = c.segments.insert((channel, n), (bytes, etag)) {
            c.bytes -= old.len();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The `channel_record` frames of fresh records, encoded once per relay process: when a
/// record lands, every follower's connection wakes and needs the same frame. The first to ask
/// reads the record (one store read per process, not one per follower) and encodes it; the
/// others wait for that and share it. Bounded: it starts over past `CAPACITY` records.
///
/// That the next record is not there yet is shared the same way (each follower, having sent
/// the newest record, asks for the one after it): the answer is kept until the process hears
/// of any channel's new record (`wakes`, counted by the [`crate::notify::Notifier`] before it
/// wakes the connections), so a post costs each process one read, not one per follower.
pub struct PushFrames {
    frames: Mutex<HashMap<(Id, u64), (u64, FrameCell)>>,
    wakes: Arc<std::sync::atomic::AtomicU64>,
}

type FrameCell = Arc<tokio::sync::OnceCell<Option<Utf8Bytes>>>;

impl PushFrames {
    pub const CAPACITY: usize = 4096;

    /// Frames for a process whose notifier counts channel wake-ups in `wakes`.
    pub fn new(wakes: Arc<std::sync::atomic::AtomicU64>) -> Self {
        PushFrames {
            frames: Mutex::new(HashMap::new()),
            wakes,
        }
    }

    /// Record `seq` of `channel` as a text frame; `None` if the relay does not hold it (yet).
    pub(crate) async fn frame(
        &self,
        state: &AppState,
        channel: Id,
        seq: u64,
    ) -> Result<Option<Utf8Bytes>, crate::store::StoreError> {
        let wakes = self.wakes.load(std::sync::atomic::Ordering::Acquire);
        let cell = {
            let mut frames = self.frames.lock().unwrap_or_else(|p| p.into_inner());
            if frames.len() >= Self::CAPACITY {
                frames.clear();
            }
            match frames.get(&(channel, seq)) {
                // A frame never changes; "not there yet" holds until the next wake-up (a
                // read begun before it may have missed the record it announces).
                Some((at, cell)) if *at == wakes || cell.get().is_some_and(|f| f.is_some()) => {
                    cell.clone()
                }
                _ => {
                    let cell = FrameCell::default();
                    frames.insert((channel, seq), (wakes, cell.clone()));
                    cell
                }
            }
        };
        let frame = cell
            .get_or_try_init(|| async {
                state.metrics.push_reads.increment(1);
                let mut records = state.store.read_channel(channel, seq, seq).await?;
                Ok::<_, crate::store::StoreError>(records.pop().map(|record| {
                    let frame = samizdat_proto::ServerFrame::ChannelRecord {
                        channel_id: channel,
                        seq,
                        record: samizdat_proto::Bytes(record),
                    };
                    Utf8Bytes::from(serde_json::to_string(&frame).unwrap_or_default())
                }))
            })
            .await?
            .clone();
        Ok(frame)
    }
}
