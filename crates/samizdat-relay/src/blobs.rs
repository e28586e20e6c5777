//! Blobs: encrypted attachments, uploaded in pieces that resume where they stopped (the tus
//! idea — create, ask for the offset, append at the offset) and downloaded by an unguessable
//! id, whole or from an offset (`Range: bytes=N-`).
//!
//! The relay sees only ciphertext: clients encrypt (and pad) before uploading, and the key,
//! the file name and the media type travel inside MLS. Bytes live in one file per blob under
//! the blob directory — shared by every relay process when several share a PostgreSQL
//! database — and the store holds each blob's record: who may write (a token hash), its
//! length, how much is durable, when it expires. A piece is written at its offset and
//! `fsync`ed before the record moves the offset and the client is answered, so an
//! acknowledged byte survives a crash; bytes past the recorded offset are simply written
//! again by the client's next attempt.

use std::path::{Path, PathBuf};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use samizdat_proto::{self as proto, BlobCreated, BlobOffset, ErrorCode, Id};

use crate::http::{ApiError, ApiResult, BlobId, Client, check_relay_storage, parse_id};
use crate::store::BlobRecord;
use crate::{AppState, now_secs};

/// Bytes read from a blob file per step of a download.
const READ_CHUNK: usize = 256 * 1024;

/// Where a blob's bytes live.
pub(crate) fn blob_path(dir: &Path, id: &Id) -> PathBuf {
    dir.join(format!("{}.blob", hex::encode(id.as_bytes())))
}

fn header_u64(headers: &HeaderMap, name: &str) -> ApiResult<u64> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|v| *v <= crate::store::MAX_COUNTER)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::BadRequest,
                format!("missing or invalid {name} header (a byte count)"),
            )
        })
}

fn storage_failed(what: &str, e: std::io::Error) -> ApiError {
    tracing::error!(error = %e, "blob storage: {what}");
    ApiError::new(
        ErrorCode::Unavailable,
        "the relay's blob storage failed; retry later",
    )
}

/// `POST /v1/blobs` with `Upload-Length`: a new, empty blob. Only a member of a group on
/// this relay (its epoch token) or a mailbox's owner (a signed request) may create one, and
/// the quota is that group's or that mailbox's — not the address's, which a whole Tor exit
/// or carrier NAT shares (security review 3, M8).
#[utoipa::path(
    post,
    path = "/v1/blobs",
    operation_id = "createBlob",
    summary = "Create an empty blob (an encrypted attachment) of Upload-Length bytes, for a group (its epoch token), a mailbox (signed by its owner) or a channel (signed by an admin); the answer holds its id and upload token",
    params(
        ("upload-length" = u64, Header, description = "the blob's total length in bytes (at most the relay's max_blob_bytes)"),
        ("x-samizdat-group" = Option<String>, Header, description = "the group whose epoch token is in x-samizdat-token"),
        ("x-samizdat-token" = Option<String>, Header, description = "an epoch token of that group (base64url)"),
        ("x-samizdat-mailbox" = Option<String>, Header, description = "or: the mailbox whose owner signed this request (x-samizdat-timestamp, -nonce, -signature)"),
        ("x-samizdat-channel" = Option<String>, Header, description = "or: the channel one of whose admins signed this request (the same signature headers); kept channel_blob_ttl_secs once finished"),
    ),
    responses(
        crate::openapi::Rejected,
        (status = 201, description = "created", body = samizdat_proto::BlobCreated),
        (status = 401, description = "the mailbox owner's signature is missing, wrong, stale or replayed", body = samizdat_proto::ErrorBody),
        (status = 403, description = "neither a group with its epoch token nor a mailbox named, or a token that is not this group's", body = samizdat_proto::ErrorBody),
        (status = 404, description = "no such mailbox or channel", body = samizdat_proto::ErrorBody),
        (status = 413, description = "larger than the relay's blob limit", body = samizdat_proto::ErrorBody),
    )
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    Client(client): Client,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> ApiResult<impl IntoResponse> {
    let bucket = client;
    if !state.rates.creations_per_addr.allow(&bucket) {
        return Err(crate::http::rate_limited());
    }
    // Who vouches for the blob, checked before anything else; its quota is theirs.
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let mut for_channel = false;
    let owner = match (
        header(proto::HEADER_GROUP),
        header(proto::HEADER_MAILBOX),
        header(proto::HEADER_CHANNEL),
    ) {
        (Some(group), None, None) => {
            let group = parse_id(group, "group")?;
            let token = header(proto::HEADER_TOKEN)
                .and_then(|t| proto::Bytes::decode(t).ok())
                .filter(|t| !t.is_empty() && t.len() <= 64)
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::BadToken,
                        "missing or malformed x-samizdat-token header",
                    )
                })?;
            crate::http::authorize_append(&state, group, &token).await?;
            format!("group {group}")
        }
        (None, Some(mailbox), None) => {
            let mailbox = parse_id(mailbox, "mailbox")?;
            crate::http::check_owner(&state, mailbox, &method, &uri, &headers, &[]).await?;
            format!("mailbox {mailbox}")
        }
        (None, None, Some(channel)) => {
            let channel = parse_id(channel, "channel")?;
            crate::channels::check_admin_request(&state, channel, &method, &uri, &headers).await?;
            for_channel = true;
            format!("channel {channel}")
        }
        _ => {
            return Err(ApiError::new(
                ErrorCode::BadToken,
                "a blob is created for a group (x-samizdat-group with its epoch token), a mailbox (x-samizdat-mailbox, signed by its owner) or a channel (x-samizdat-channel, signed by an admin)",
            ));
        }
    };
    let length = header_u64(&headers, proto::HEADER_UPLOAD_LENGTH)?;
    if length > state.limits.max_blob_bytes {
        return Err(ApiError::new(
            ErrorCode::TooLarge,
            format!(
                "a blob may hold at most {} bytes",
                state.limits.max_blob_bytes
            ),
        ));
    }
    check_relay_storage(&state)?;
    let (Some(blob_id), Some(a), Some(b)) = (
        crate::auth::random_id(),
        crate::auth::random_id(),
        crate::auth::random_id(),
    ) else {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "the relay cannot make random ids; retry later",
        ));
    };
    let token = [a.as_bytes().as_slice(), b.as_bytes().as_slice()].concat();
    let Some(source) = source_of(&owner) else {
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            "the relay cannot make random ids; retry later",
        ));
    };
    let path = blob_path(&state.blob_dir, &blob_id);
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let f = std::fs::File::create_new(&path)?;
        f.sync_all()?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })
    .await
    .map_err(|e| storage_failed("create task", std::io::Error::other(e)))?
    .map_err(|e| storage_failed("create", e))?;
    let created = state
        .store
        .create_blob(
            blob_id,
            crate::auth::token_hash(&token),
            length,
            source,
            for_channel,
            now_secs(),
            &state.limits,
        )
        .await;
    if let Err(e) = created {
        let _ = tokio::fs::remove_file(blob_path(&state.blob_dir, &blob_id)).await;
        return Err(e.into());
    }
    Ok((
        StatusCode::CREATED,
        axum::Json(BlobCreated {
            blob_id,
            upload_token: proto::Bytes(token),
            length,
        }),
    ))
}

/// What a blob record keeps of the group or mailbox it was created for, for the quota: an
/// HMAC under a random key that lives only in this process's memory and is replaced every UTC
/// day. A seized disk then holds nothing that ties a blob to a group or mailbox — not even by
/// hashing every id the relay knows (security review 3, M9). The price: the quota starts over
/// with each new key (daily, and per relay process).
fn source_of(bucket: &impl std::fmt::Debug) -> Option<[u8; 32]> {
    static KEY: std::sync::Mutex<Option<(u64, aws_lc_rs::hmac::Key)>> = std::sync::Mutex::new(None);
    let today = now_secs() / 86_400;
    let mut key = KEY.lock().unwrap_or_else(|p| p.into_inner());
    if key.as_ref().is_none_or(|(day, _)| *day != today) {
        let mut secret = zeroize::Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(secret.as_mut()).ok()?;
        *key = Some((
            today,
            aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_ref()),
        ));
    }
    let (_, k) = key.as_ref()?;
    let tag = aws_lc_rs::hmac::sign(k, format!("{bucket:?}").as_bytes());
    tag.as_ref().try_into().ok()
}

/// The blob's record, if `headers` carry its upload token.
async fn authorized(state: &AppState, id: Id, headers: &HeaderMap) -> ApiResult<(Id, BlobRecord)> {
    let token = headers
        .get(proto::HEADER_UPLOAD_TOKEN)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| proto::Bytes::decode(v).ok())
        .filter(|t| !t.is_empty() && t.len() <= 64)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::BadToken,
                "missing or malformed x-samizdat-upload-token header",
            )
        })?;
    let record = state
        .store
        .blob(id, now_secs())
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such blob (or it expired)"))?;
    // Comparing hashes: timing says nothing about the token itself.
    if crate::auth::token_hash(&token) != record.token_hash {
        return Err(ApiError::new(
            ErrorCode::BadToken,
            "wrong upload token for this blob",
        ));
    }
    Ok((id, record))
}

/// `GET /v1/blobs/{id}/upload`: how many bytes are stored (to resume an upload).
#[utoipa::path(
    get,
    path = "/v1/blobs/{id}/upload",
    operation_id = "blobOffset",
    summary = "How many bytes of the blob are stored durably (to resume an upload)",
    params(
        ("id" = samizdat_proto::Id, Path),
        ("x-samizdat-upload-token" = samizdat_proto::Bytes, Header, description = "the upload token from createBlob"),
    ),
    responses(
        crate::openapi::Rejected,
        (status = 200, description = "success", body = samizdat_proto::BlobOffset),
        (status = 403, description = "wrong or missing upload token", body = samizdat_proto::ErrorBody),
        (status = 404, description = "no such blob (or it expired)", body = samizdat_proto::ErrorBody),
    )
)]
pub(crate) async fn offset(
    State(state): State<AppState>,
    BlobId(id): BlobId,
    headers: HeaderMap,
) -> ApiResult<impl IntoResponse> {
    let (_, r) = authorized(&state, id, &headers).await?;
    Ok(axum::Json(BlobOffset {
        offset: r.offset,
        length: r.length,
    }))
}

/// `PATCH /v1/blobs/{id}/upload` with `Upload-Offset`: the next piece. Answered once the
/// piece is on disk.
#[utoipa::path(
    patch,
    path = "/v1/blobs/{id}/upload",
    operation_id = "appendBlob",
    summary = "Append the next piece at Upload-Offset; answered once it is durable",
    params(
        ("id" = samizdat_proto::Id, Path),
        ("x-samizdat-upload-token" = samizdat_proto::Bytes, Header, description = "the upload token from createBlob"),
        ("upload-offset" = u64, Header, description = "where this piece starts: the blob's current offset"),
    ),
    request_body(content = crate::openapi::Binary, content_type = "application/octet-stream"),
    responses(
        crate::openapi::Rejected,
        (status = 200, description = "stored", body = samizdat_proto::BlobOffset),
        (status = 403, description = "wrong or missing upload token", body = samizdat_proto::ErrorBody),
        (status = 404, description = "no such blob (or it expired)", body = samizdat_proto::ErrorBody),
        (status = 408, description = "the piece did not arrive in time", body = samizdat_proto::ErrorBody),
        (status = 409, description = "offset_mismatch: the upload is elsewhere; ask for the offset", body = samizdat_proto::ErrorBody),
        (status = 413, description = "the piece is larger than allowed or goes past the blob's length", body = samizdat_proto::ErrorBody),
    )
)]
pub(crate) async fn append(
    State(state): State<AppState>,
    BlobId(id): BlobId,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<impl IntoResponse> {
    let (id, r) = authorized(&state, id, &headers).await?;
    let at = header_u64(&headers, proto::HEADER_UPLOAD_OFFSET)?;
    if at != r.offset {
        return Err(ApiError::new(
            ErrorCode::OffsetMismatch,
            format!("the upload is at byte {}; continue from there", r.offset),
        ));
    }
    // A disk that filled up since the blob was created takes no more of it.
    check_relay_storage(&state)?;
    let room = usize::try_from(r.length - r.offset).unwrap_or(usize::MAX);
    let limit = state.limits.max_blob_chunk.min(room);
    let piece = crate::http::read_body(&state, body, limit).await.map_err(|e| {
        if e.0.code == ErrorCode::TooLarge {
            ApiError::new(
                ErrorCode::TooLarge,
                format!(
                    "a piece may hold at most {} bytes and must not go past the blob's length ({} left)",
                    state.limits.max_blob_chunk, room
                ),
            )
        } else {
            e
        }
    })?;
    let n = piece.len() as u64;
    if n > 0 {
        let path = blob_path(&state.blob_dir, &id);
        // The piece keeps its share of the body budget until it is on disk.
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::os::unix::fs::FileExt;
            let f = std::fs::OpenOptions::new().write(true).open(&path)?;
            f.write_all_at(&piece, at)?;
            f.sync_data()
        })
        .await
        .map_err(|e| storage_failed("write task", std::io::Error::other(e)))?
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ApiError::new(ErrorCode::NotFound, "no such blob (or it expired)")
            } else {
                storage_failed("write", e)
            }
        })?;
        let finished =
            crate::store::rules::finished_blob_expiry(now_secs(), r.for_channel, &state.limits);
        let quota = crate::store::BlobQuota {
            now: now_secs(),
            bytes: state.limits.blob_quota_bytes,
        };
        if !state
            .store
            .advance_blob(id, at, at + n, finished, quota)
            .await?
        {
            // Not moved: either another upload moved it on, or this piece would pass
            // the quota of bytes uploaded (its offset is then still ours).
            let still_here = state
                .store
                .blob(id, now_secs())
                .await?
                .is_some_and(|b| b.offset == at);
            return Err(if still_here {
                crate::store::blob_quota_exceeded().into()
            } else {
                ApiError::new(
                    ErrorCode::OffsetMismatch,
                    "another upload of this blob moved on; ask for the offset and continue",
                )
            });
        }
    }
    Ok(axum::Json(BlobOffset {
        offset: at + n,
        length: r.length,
    }))
}

/// The start of a `Range: bytes=N-` (or `bytes=N-M`, whose end is ignored: the rest is
/// sent with 206 and its `Content-Range`). `None` without a Range header.
fn range_start(headers: &HeaderMap) -> ApiResult<Option<u64>> {
    let Some(v) = headers.get(header::RANGE) else {
        return Ok(None);
    };
    let bad = || ApiError::new(ErrorCode::BadRequest, "Range must be bytes=N-");
    let v = v.to_str().map_err(|_| bad())?;
    let spec = v.strip_prefix("bytes=").ok_or_else(bad)?;
    let (start, _) = spec.split_once('-').ok_or_else(bad)?;
    start.trim().parse::<u64>().map(Some).map_err(|_| bad())
}

/// `GET /v1/blobs/{id}`: a finished blob, streamed from disk.
#[utoipa::path(
    get,
    path = "/v1/blobs/{id}",
    operation_id = "downloadBlob",
    summary = "Download a finished blob, whole or from an offset (Range: bytes=N-)",
    params(
        ("id" = samizdat_proto::Id, Path),
        ("range" = Option<String>, Header, description = "bytes=N- to continue from byte N"),
    ),
    responses(
        crate::openapi::Rejected,
        (status = 200, description = "the blob", body = crate::openapi::Binary, content_type = "application/octet-stream"),
        (status = 206, description = "the blob from the requested byte", body = crate::openapi::Binary, content_type = "application/octet-stream"),
        (status = 404, description = "no such blob (or it expired)", body = samizdat_proto::ErrorBody),
        (status = 409, description = "incomplete: the upload has not finished", body = samizdat_proto::ErrorBody),
    )
)]
pub(crate) async fn download(
    State(state): State<AppState>,
    BlobId(id): BlobId,
    headers: HeaderMap,
) -> Response {
    let r = async {
        let record =
            state.store.blob(id, now_secs()).await?.ok_or_else(|| {
                ApiError::new(ErrorCode::NotFound, "no such blob (or it expired)")
            })?;
        if record.offset < record.length {
            return Err(ApiError::new(
                ErrorCode::Incomplete,
                "this blob's upload has not finished",
            ));
        }
        let start = range_start(&headers)?;
        let from = start.unwrap_or(0);
        if from > record.length {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!("the range starts past the blob's {} bytes", record.length),
            ));
        }
        let mut file = tokio::fs::File::open(blob_path(&state.blob_dir, &id))
            .await
            .map_err(|e| storage_failed("open", e))?;
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        file.seek(std::io::SeekFrom::Start(from))
            .await
            .map_err(|e| storage_failed("seek", e))?;
        let left = record.length - from;
        let stream = futures_util::stream::unfold((file, left), |(mut file, left)| async move {
            if left == 0 {
                return None;
            }
            let want = usize::try_from(left).unwrap_or(READ_CHUNK).min(READ_CHUNK);
            let mut buf = vec![0u8; want];
            match file.read(&mut buf).await {
                Ok(0) => Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "blob file is shorter than its record",
                    )),
                    (file, 0),
                )),
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), (file, left - n as u64)))
                }
                Err(e) => Some((Err(e), (file, 0))),
            }
        });
        let mut resp = Response::new(Body::from_stream(stream));
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(left));
        if start.is_some() {
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            let last = record.length.saturating_sub(1);
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {from}-{last}/{}", record.length))
            {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
        }
        Ok(resp)
    }
    .await;
    r.into_response()
}

/// Blob files that no record claims and that are older than any record could be (records
/// expire `blob_ttl_secs` after creation; a day of slack): left by a crash between deleting
/// an expired record and its file.
async fn orphans(state: &AppState) -> Vec<PathBuf> {
    let dir: &Path = &state.blob_dir;
    let limit = std::time::Duration::from_secs(state.limits.blob_ttl_secs.saturating_add(86_400));
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        return Vec::new();
    };
    let mut old = Vec::new();
    while let Ok(Some(e)) = entries.next_entry().await {
        let name = e.file_name();
        let ours = name.to_str().is_some_and(|n| n.ends_with(".blob"));
        let aged = e
            .metadata()
            .await
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > limit);
        if !(ours && aged) {
            continue;
        }
        let id = name
            .to_str()
            .and_then(|n| n.strip_suffix(".blob"))
            .and_then(|h| hex::decode(h).ok())
            .and_then(|b| Id::from_slice(&b).ok());
        let claimed = match id {
            Some(id) => !matches!(state.store.blob(id, now_secs()).await, Ok(None)),
            None => false,
        };
        if !claimed {
            old.push(e.path());
        }
    }
    old
}

/// Delete expired blobs: their records, then their files (and any orphaned file).
pub(crate) async fn sweep(state: &AppState) -> u64 {
    let ids = match state.store.expire_blobs(now_secs()).await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(error = %e, "blob sweep failed");
            return 0;
        }
    };
    let mut n = 0;
    let mut paths: Vec<PathBuf> = ids
        .iter()
        .map(|id| blob_path(&state.blob_dir, id))
        .collect();
    paths.extend(orphans(state).await);
    for path in paths {
        match tokio::fs::remove_file(&path).await {
            Ok(()) => n += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(error = %e, "cannot delete an expired blob file"),
        }
    }
    n
}
