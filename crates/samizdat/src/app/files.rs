//! Attachments in the app: sending a file (a multipart form that works without script) and
//! saving one. A file being sent is held in memory only — an anonymous in-memory file
//! (`memfd`), never on a disk — until the service has encrypted it (security review 3,
//! architecture review). A file being saved is decrypted into a private directory inside the
//! profile (`tmp/`, 0700, wiped with the profile and at every start) and removed as soon as
//! the browser has it. A file is served as a download (`attachment`, octet-stream, nosniff),
//! except pictures and sound opened or played in the chat (`?inline=1`): those are served as
//! what their first bytes say (JPEG, PNG, GIF, WebP, WebM or Ogg audio — never SVG, HTML or
//! what the sender named them) under a `sandbox` policy. A photo's thumbnail is a JPEG its
//! sender made, carried in the message.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use samizdat_core::{ChannelId, ConversationId, MessageId};
use samizdat_rpc::{self as rpc, Api};

use super::web::{Signed, fail, see};
use super::{App, CallError, security};

/// Largest file the app takes from the browser (the relay's default blob limit).
pub const MAX_UPLOAD: usize = 100 << 20;

/// A fresh private directory for one file, removed (overwritten) when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(app: &App) -> std::io::Result<Scratch> {
        use std::os::unix::fs::DirBuilderExt;
        let base = app.home().join("tmp");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&base)?;
        let mut rnd = [0u8; 12];
        aws_lc_rs::rand::fill(&mut rnd).map_err(|_| std::io::Error::other("no randomness"))?;
        let dir = base.join(hex::encode(rnd));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = samizdat_core::wipe::wipe(&self.0);
    }
}

fn io_failure(c: &super::pages::Ctx<'_>, e: std::io::Error) -> Response {
    fail(
        c,
        &CallError {
            kind: Some("storage".into()),
            message: e.to_string(),
        },
    )
}

/// What a file form carried: the caption, a voice message's length, and the file (in memory).
struct Upload {
    caption: String,
    voice_ms: Option<u64>,
    file: Option<(InMemory, String)>,
}

/// Read a multipart file form: `csrf` first (checked before the file is read), then an
/// optional `text` (the caption), `voice_ms` and `file`.
async fn read_upload(r: &super::web::Req<'_>, form: &mut Multipart) -> Result<Upload, Response> {
    let bad = |why: &'static str| (StatusCode::BAD_REQUEST, why).into_response();
    let first = match form.next_field().await {
        Ok(Some(f)) if f.name() == Some("csrf") => f.text().await.unwrap_or_default(),
        _ => String::new(),
    };
    if !security::csrf_ok(&r.session, &first) {
        return Err((
            StatusCode::FORBIDDEN,
            "forbidden: missing or wrong CSRF token",
        )
            .into_response());
    }
    let mut up = Upload {
        caption: String::new(),
        voice_ms: None,
        file: None,
    };
    while let Ok(Some(mut field)) = form.next_field().await {
        match field.name() {
            Some("text") => up.caption = field.text().await.unwrap_or_default(),
            Some("voice_ms") => {
                up.voice_ms = field
                    .text()
                    .await
                    .ok()
                    .and_then(|t| t.trim().parse::<u64>().ok())
                    .map(|ms| ms.min(samizdat_core::MAX_VOICE_MS));
            }
            Some("file") => {
                let name = samizdat_core::attachment::safe_name(field.file_name().unwrap_or(""));
                let mut out = InMemory::new().map_err(|e| io_failure(&r.ctx, e))?;
                let mut size = 0usize;
                loop {
                    match field.chunk().await {
                        Ok(Some(chunk)) => {
                            size += chunk.len();
                            if size > MAX_UPLOAD {
                                return Err((
                                    StatusCode::PAYLOAD_TOO_LARGE,
                                    r.ctx.tr("file-too-large"),
                                )
                                    .into_response());
                            }
                            std::io::Write::write_all(&mut out.file, &chunk)
                                .map_err(|e| io_failure(&r.ctx, e))?;
                        }
                        Ok(None) => break,
                        Err(_) => return Err(bad("the upload broke off")),
                    }
                }
                if size > 0 {
                    up.file = Some((out, name));
                }
            }
            _ => {}
        }
    }
    Ok(up)
}

/// `POST /c/{id}/file`: a multipart form with `csrf` first, then an optional `text` (the
/// caption) and `file`. The CSRF token is checked before the file is read.
pub async fn send_file(
    State(app): State<Arc<App>>,
    signed: Signed,
    Path(id): Path<ConversationId>,
    mut form: Multipart,
) -> Response {
    let r = signed.open(&app);
    let up = match read_upload(&r, &mut form).await {
        Ok(up) => up,
        Err(resp) => return resp,
    };
    let Some((file, name)) = up.file else {
        return see(format!("/c/{id}"));
    };
    // The service (in this process, or a `samizdat serve` of the same account) reads it
    // through /proc; it is gone when `file` is dropped.
    let sent = app
        .send(rpc::SendParams {
            conversation_id: Some(id),
            text: Some(up.caption),
            file: Some(file.path()),
            name: Some(name),
            voice_ms: up.voice_ms,
            ..Default::default()
        })
        .await
        .map_err(CallError::from);
    drop(file);
    match sent {
        Ok(_) => see(format!("/c/{id}")),
        Err(e) if e.kind.as_deref() == Some("relay_unreachable") => see(format!("/c/{id}")),
        Err(e) => fail(&r.ctx, &e),
    }
}

/// `POST /ch/{id}/file`: a post with a photo or file (the same form as a chat's), by an admin.
pub async fn channel_post_file(
    State(app): State<Arc<App>>,
    signed: Signed,
    Path(id): Path<ChannelId>,
    mut form: Multipart,
) -> Response {
    let r = signed.open(&app);
    let up = match read_upload(&r, &mut form).await {
        Ok(up) => up,
        Err(resp) => return resp,
    };
    // Without a file the form posts its caption as a text.
    let (file, name) = up.file.map_or((None, None), |(f, n)| (Some(f), Some(n)));
    let posted = app
        .channel_post(rpc::ChannelPostParams {
            channel_id: Some(id),
            text: up.caption,
            file: file.as_ref().map(InMemory::path),
            name,
            ..Default::default()
        })
        .await;
    drop(file);
    match posted.map_err(CallError::from) {
        Ok(_) => see(format!("/ch/{id}")),
        Err(e) => fail(&r.ctx, &e),
    }
}

/// A file in memory only: an anonymous `memfd` (no name in any file system, never written to
/// a disk; freed when closed), readable by the service as `/proc/PID/fd/N`.
struct InMemory {
    file: std::fs::File,
}

impl InMemory {
    fn new() -> std::io::Result<InMemory> {
        let fd = rustix::fs::memfd_create("samizdat-upload", rustix::fs::MemfdFlags::CLOEXEC)?;
        Ok(InMemory {
            file: std::fs::File::from(fd),
        })
    }

    fn path(&self) -> String {
        use std::os::fd::AsRawFd;
        format!("/proc/{}/fd/{}", std::process::id(), self.file.as_raw_fd())
    }
}

impl Drop for InMemory {
    fn drop(&mut self) {
        // Give the pages back now (the kernel clears them before any reuse).
        let _ = self.file.set_len(0);
    }
}

/// `?inline=1` on a file: show it in the page if it is a picture or sound.
#[derive(serde::Deserialize)]
pub struct FileQuery {
    inline: Option<String>,
}

/// The type a file is shown as, from its first bytes: the pictures and sound a browser shows
/// safely (no SVG, no HTML), else `None` (it is saved instead).
fn shown_type(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        Some("image/webp")
    } else if head.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        Some("audio/webm")
    } else if head.starts_with(b"OggS") {
        Some("audio/ogg")
    } else {
        None
    }
}

/// `GET /m/{mid}/thumb`: a photo's thumbnail (made by its sender, kept in the message).
pub async fn thumbnail(
    State(app): State<Arc<App>>,
    signed: Signed,
    Path(mid): Path<MessageId>,
) -> Response {
    let r = signed.open(&app);
    let t = app
        .thumbnail(rpc::MessageParams { message_id: mid })
        .await
        .map_err(CallError::from);
    jpeg_response(&r.ctx, t)
}

/// `GET /ch/{id}/p/{seq}/thumb`: a channel post's photo thumbnail (made by the admin's device,
/// carried in the post).
pub async fn channel_thumbnail(
    State(app): State<Arc<App>>,
    signed: Signed,
    Path((id, seq)): Path<(ChannelId, u64)>,
) -> Response {
    let r = signed.open(&app);
    let t = app
        .channel_thumbnail(rpc::ChannelFileParams {
            channel_id: Some(id),
            seq,
            ..Default::default()
        })
        .await
        .map_err(CallError::from);
    jpeg_response(&r.ctx, t)
}

/// A thumbnail as the browser gets it: only if its bytes are a JPEG.
fn jpeg_response(c: &super::pages::Ctx<'_>, t: Result<rpc::Thumbnail, CallError>) -> Response {
    let jpeg = match t.map(|t| t.bytes()) {
        Ok(Some(j)) if shown_type(&j) == Some("image/jpeg") => j,
        Ok(_) => return StatusCode::NOT_FOUND.into_response(),
        Err(e) => return fail(c, &e),
    };
    let mut resp = Response::new(Body::from(jpeg));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    resp
}

/// RFC 5987 `filename*` value: UTF-8, percent-encoded.
fn disposition(name: &str) -> String {
    let mut enc = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename*=UTF-8''{enc}")
}

/// `GET /m/{mid}/file`: fetch (if needed), check, decrypt and hand the file to the browser
/// as a download.
pub async fn save_file(
    State(app): State<Arc<App>>,
    signed: Signed,
    Path(mid): Path<MessageId>,
    Query(q): Query<FileQuery>,
) -> Response {
    let r = signed.open(&app);
    let scratch = match Scratch::new(&app) {
        Ok(s) => s,
        Err(e) => return io_failure(&r.ctx, e),
    };
    let done = app
        .download(rpc::DownloadParams {
            message_id: mid,
            out: scratch.0.display().to_string(),
        })
        .await
        .map_err(CallError::from);
    serve_saved(&r.ctx, scratch, done, q.inline.is_some()).await
}

/// `GET /ch/{id}/p/{seq}/file`: a channel post's photo or file, fetched, checked and
/// decrypted, handed to the browser as `save_file` does.
pub async fn channel_save_file(
    State(app): State<Arc<App>>,
    signed: Signed,
    Path((id, seq)): Path<(ChannelId, u64)>,
    Query(q): Query<FileQuery>,
) -> Response {
    let r = signed.open(&app);
    let scratch = match Scratch::new(&app) {
        Ok(s) => s,
        Err(e) => return io_failure(&r.ctx, e),
    };
    let done = app
        .channel_download(rpc::ChannelFileParams {
            channel: None,
            channel_id: Some(id),
            seq,
            out: scratch.0.display().to_string(),
        })
        .await
        .map_err(CallError::from);
    serve_saved(&r.ctx, scratch, done, q.inline.is_some()).await
}

/// Stream a file decrypted into `scratch` to the browser (a download; a picture or sound
/// `inline` when its bytes say it is one); the scratch directory goes when the stream ends.
async fn serve_saved(
    c: &super::pages::Ctx<'_>,
    scratch: Scratch,
    done: Result<samizdat_core::transfer::Downloaded, CallError>,
    inline: bool,
) -> Response {
    let r = c;
    let done = match done {
        Ok(d) => d,
        Err(e) => return fail(r, &e),
    };
    let mut file = match tokio::fs::File::open(&done.path).await {
        Ok(f) => f,
        Err(e) => return io_failure(r, e),
    };
    // Shown in the page (a photo opened, a voice message played): only pictures and sound
    // that its bytes say it is, never what the sender named it, in a sandbox.
    let inline = match inline {
        true => {
            use tokio::io::{AsyncReadExt, AsyncSeekExt};
            let mut head = [0u8; 12];
            let mut n = 0;
            while n < head.len() {
                match file.read(&mut head[n..]).await {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) => return io_failure(r, e),
                }
            }
            if let Err(e) = file.seek(std::io::SeekFrom::Start(0)).await {
                return io_failure(r, e);
            }
            shown_type(&head[..n])
        }
        false => None,
    };
    // The scratch directory goes (overwritten) once the stream is done with it.
    let stream = futures_util::stream::unfold((file, scratch), |(mut f, s)| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 256 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((
                    Ok::<_, std::io::Error>(axum::body::Bytes::from(buf)),
                    (f, s),
                ))
            }
            Err(e) => Some((Err(e), (f, s))),
        }
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(inline.unwrap_or("application/octet-stream")),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(done.size));
    if inline.is_some() {
        h.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("inline"),
        );
        h.insert(
            "content-security-policy",
            HeaderValue::from_static(
                "default-src 'none'; img-src 'self'; media-src 'self'; sandbox",
            ),
        );
    } else if let Ok(v) = HeaderValue::from_str(&disposition(&done.name)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    #[test]
    fn download_names_are_encoded() {
        assert_eq!(
            super::disposition("отчёт 1.pdf"),
            "attachment; filename*=UTF-8''%D0%BE%D1%82%D1%87%D1%91%D1%82%201.pdf"
        );
        assert_eq!(
            super::disposition("a\"b;c.txt"),
            "attachment; filename*=UTF-8''a%22b%3Bc.txt"
        );
    }
}
