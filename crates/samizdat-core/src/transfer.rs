//! Sending and fetching attachments through a running service. The bytes move outside the
//! profile's thread (encryption on a blocking thread, uploads and downloads on the caller's
//! runtime), so messages keep flowing during a 100 MB transfer; only the short database
//! steps run as jobs. Progress is broadcast as live `transfer` events.
//!
//! Both directions survive a relay that goes away mid-way: an upload asks the relay how far
//! it got and continues from there; a download continues with `Range` from the bytes it
//! has. They give up after `GIVE_UP` without progress.

use std::path::{Path, PathBuf};
use std::time::Duration;

use backon::BackoffBuilder;
use futures_util::FutureExt;
use samizdat_proto::{Bytes, ErrorCode};

use crate::attachment;
use crate::payload::Attachment;
use crate::profile::{Event, TransferDirection};
use crate::relay_client::RelayClient;
use crate::service::LiveEvent;
use crate::{ClientHandle, ConversationId, Error, MessageId, Result, random_id};

/// Upload piece size (the relay accepts up to 8 MiB by default).
const PIECE: usize = 4 << 20;
/// A transfer that makes no progress for this long fails (its partial state is kept for
/// the next attempt of a download; an upload starts over).
const GIVE_UP: Duration = Duration::from_secs(300);
/// Progress events at most every this many bytes.
const REPORT_EVERY: u64 = 1 << 20;

/// How a file is sent.
#[derive(Debug, Clone, Default)]
pub struct SendFile {
    /// The name it is sent under (default: the file's own).
    pub name: Option<String>,
    /// Send a photo's metadata (location, camera, time) as it is, instead of removing it.
    pub keep_metadata: bool,
    /// A voice message of this many milliseconds (recorded by the app): shown as a player.
    pub voice_ms: Option<u64>,
}

/// Photos up to this size are cleaned of metadata in memory (larger files are sent as they
/// are: no camera makes a photo this large).
const MAX_CLEANED: u64 = 256 << 20;

/// Whether the file starts like a JPEG, PNG or WebP image.
fn looks_like_image(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut head = [0u8; 12];
    let mut f = std::fs::File::open(path)
        .map_err(|e| Error::Usage(format!("cannot read {}: {e}", path.display())))?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(Error::Usage(format!("cannot read {}: {e}", path.display()))),
        }
    }
    let head = &head[..n];
    Ok(head.starts_with(&[0xFF, 0xD8, 0xFF])
        || head.starts_with(b"\x89PNG\r\n\x1a\n")
        || (head.len() == 12 && &head[..4] == b"RIFF" && &head[8..] == b"WEBP"))
}

/// What `download` wrote.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Downloaded {
    pub path: String,
    pub size: u64,
    pub name: String,
    pub media_type: String,
}

/// Test hooks: a pause after every piece (so a test can stop a relay mid-transfer) and a
/// smaller piece. Never set in normal use.
fn test_pause() -> Option<Duration> {
    crate::fault::point("TRANSFER_PAUSE_MS")
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
}

fn piece_size() -> usize {
    crate::fault::point("TRANSFER_PIECE")
        .and_then(|v| v.parse().ok())
        .filter(|n: &usize| *n > 0)
        .unwrap_or(PIECE)
}

/// Whether a failure may pass if we wait and try again.
fn transient(e: &Error) -> bool {
    match e {
        Error::RelayUnreachable(_) => true,
        Error::Relay { code, .. } => matches!(
            code,
            ErrorCode::Unavailable
                | ErrorCode::Timeout
                | ErrorCode::RateLimited
                | ErrorCode::OffsetMismatch
        ),
        _ => false,
    }
}

fn backoff() -> backon::ExponentialBackoff {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Reports progress, at most every [`REPORT_EVERY`] bytes and at the end.
struct Progress<'a> {
    handle: &'a ClientHandle,
    id: String,
    direction: TransferDirection,
    total: u64,
    reported: Option<u64>,
}

impl Progress<'_> {
    fn at(&mut self, done: u64, resumed_at: Option<u64>) {
        let due = match self.reported {
            None => true,
            Some(r) => done >= r + REPORT_EVERY || done == self.total || resumed_at.is_some(),
        };
        if due {
            self.reported = Some(done);
            self.handle.broadcast(LiveEvent {
                seq: None,
                event: Event::Transfer {
                    id: self.id.clone(),
                    direction: self.direction,
                    done,
                    total: self.total,
                    resumed_at,
                },
            });
        }
    }
}

impl ClientHandle {
    /// Encrypt `path`, upload it to the conversation's relay and send it there with
    /// `caption`. Returns the message id (as `send` does, a relay that cannot be reached
    /// once the file is up leaves the message queued and returns `RelayUnreachable`).
    pub async fn send_file(
        &self,
        target: &ConversationId,
        path: &Path,
        caption: &str,
        how: &SendFile,
    ) -> Result<MessageId> {
        let out = outgoing(path, how)?;
        let size = out.size;
        if how
            .voice_ms
            .is_some_and(|ms| ms > crate::payload::MAX_VOICE_MS)
        {
            return Err(Error::Usage(
                "a voice message can be at most an hour long".into(),
            ));
        }
        let t = *target;
        let plan = self
            .call(move |p| async move { p.attachment_plan(&t) }.boxed_local())
            .await?;
        let (relay, dir) = (plan.relay, plan.dir);
        // The relay says no to a file over its limit before anything is encrypted.
        let owner = crate::relay_client::BlobOwner::Group {
            log: plan.log,
            token: &plan.token,
        };
        // A relay that cannot be reached does not lose the file: it is encrypted and kept,
        // and sent when the relay is back (`send_pending_files`), as a text would be.
        let created = match relay.create_blob(attachment::cipher_len(size), owner).await {
            Ok(c) => Some(c),
            Err(Error::RelayUnreachable(_)) => None,
            Err(e) => return Err(e),
        };
        let (mut att, tmp, cipher_len) = encrypt_outgoing(out, path, how, &dir).await?;
        att.relay = relay.base().to_string();
        let name = att.name.clone();
        let Some(created) = created else {
            self.keep_for_later(target, caption, att, &tmp, cipher_len)
                .await?;
            return Err(Error::RelayUnreachable(relay.base().to_string()));
        };
        let mut progress = Progress {
            handle: self,
            id: name.clone(),
            direction: TransferDirection::Upload,
            total: cipher_len,
            reported: None,
        };
        let token = created.upload_token.0.clone();
        match upload(&relay, &created.blob_id, &token, &tmp, &mut progress).await {
            Ok(()) => {}
            Err(e @ Error::RelayUnreachable(_)) => {
                self.keep_for_later(target, caption, att, &tmp, cipher_len)
                    .await?;
                return Err(e);
            }
            Err(e) => {
                let _ = crate::wipe::wipe_file(&tmp);
                return Err(e);
            }
        }
        att.blob = created.blob_id;
        // The `ATTACHMENT_RELAY` fault point names another relay, as a hostile member would
        // (security review 3, M7 test).
        if let Some(other) = crate::fault::point("ATTACHMENT_RELAY") {
            att.relay = other;
        }
        let t = *target;
        let caption = caption.to_string();
        self.call(move |p| {
            async move { p.send_attachment(&t, &caption, att, &tmp).await }.boxed_local()
        })
        .await
    }

    /// Keep an encrypted file whose relay could not be reached (its message waits).
    async fn keep_for_later(
        &self,
        target: &ConversationId,
        caption: &str,
        att: Attachment,
        tmp: &Path,
        cipher_len: u64,
    ) -> Result<()> {
        let (t, c, file) = (*target, caption.to_string(), tmp.to_path_buf());
        let kept = self
            .call(move |p| {
                async move { p.queue_attachment(&t, &c, att, &file, cipher_len) }.boxed_local()
            })
            .await;
        if kept.is_err() {
            let _ = crate::wipe::wipe_file(tmp);
        }
        kept.map(|_| ())
    }

    /// Upload and send the files that were waiting for their relay, oldest first; stops at
    /// the first relay that still cannot be reached (the next sync tries again). A file the
    /// relay refuses for good is marked failed on its message.
    pub async fn send_pending_files(&self) -> Result<()> {
        let pending = self
            .call(|p| async move { p.pending_files() }.boxed_local())
            .await?;
        for f in pending {
            match self.send_pending_file(&f).await {
                Ok(_) => {}
                Err(e) if transient(&e) => return Err(e),
                Err(e) => {
                    let why = e.to_string();
                    let id = f.id;
                    self.call(move |p| {
                        async move { p.pending_file_failed(&id, &why) }.boxed_local()
                    })
                    .await?;
                }
            }
        }
        Ok(())
    }

    async fn send_pending_file(&self, f: &crate::profile::PendingFile) -> Result<MessageId> {
        let t = f.conversation;
        let plan = self
            .call(move |p| async move { p.attachment_plan(&t) }.boxed_local())
            .await?;
        let owner = crate::relay_client::BlobOwner::Group {
            log: plan.log,
            token: &plan.token,
        };
        let created = plan.relay.create_blob(f.cipher_len, owner).await?;
        let mut progress = Progress {
            handle: self,
            id: f.id.to_string(),
            direction: TransferDirection::Upload,
            total: f.cipher_len,
            reported: None,
        };
        let token = created.upload_token.0.clone();
        upload(
            &plan.relay,
            &created.blob_id,
            &token,
            &f.file,
            &mut progress,
        )
        .await?;
        let (id, relay, blob) = (f.id, plan.relay.base().to_string(), created.blob_id);
        self.call(move |p| {
            async move { p.send_pending_file(&id, &relay, blob).await }.boxed_local()
        })
        .await
    }

    /// Our verified encrypted copy of `message_id`'s attachment, fetched from its relay if
    /// we do not hold it yet (the digest is checked before it is kept).
    pub async fn fetch_attachment(&self, message_id: &MessageId) -> Result<(PathBuf, Attachment)> {
        let source = self.attachment_source(message_id).await?;
        self.fetch_from(message_id, source, None).await
    }

    async fn attachment_source(
        &self,
        message_id: &MessageId,
    ) -> Result<crate::profile::AttachmentSource> {
        let m = *message_id;
        self.call(move |p| async move { p.attachment_source(&m) }.boxed_local())
            .await
    }

    /// Fetch `source`'s copy if we do not hold it (as [`Self::fetch_attachment`]), handing
    /// the bytes to `tap` as they arrive when it is given.
    async fn fetch_from(
        &self,
        message_id: &MessageId,
        source: crate::profile::AttachmentSource,
        tap: Option<Tap>,
    ) -> Result<(PathBuf, Attachment)> {
        let att = source.attachment;
        if let Some(local) = source.local {
            return Ok((local, att));
        }
        let relay = source.client;
        let part = source.dir.join(format!(
            "download-{}.part",
            hex::encode(crate::sha256(message_id.to_string().as_bytes()))
        ));
        let mut progress = Progress {
            handle: self,
            id: message_id.to_string(),
            direction: TransferDirection::Download,
            total: attachment::cipher_len(att.size),
            reported: None,
        };
        let digest = download(&relay, &att, &part, &mut progress, GIVE_UP, tap).await?;
        if digest.as_slice() != att.digest.0.as_slice() {
            // Never kept, never shown: a fresh download may fetch an intact copy.
            let _ = crate::wipe::wipe_file(&part);
            return Err(Error::Integrity(
                "the attachment does not match its digest (damaged or altered by the relay); refused"
                    .into(),
            ));
        }
        let m = *message_id;
        let path = self
            .call(move |p| async move { p.attachment_fetched(&m, &part) }.boxed_local())
            .await?;
        Ok((path, att))
    }

    /// Fetch (if needed), verify and decrypt `message_id`'s attachment to `out`: a new file,
    /// or a file named after the attachment inside `out` when it is a directory. An
    /// existing file is never overwritten.
    ///
    /// A copy not held yet is decrypted as it arrives (on every core, beside the download);
    /// the result stays a hidden temporary file until the whole copy matched its digest, and
    /// is decrypted again from the copy if the download had to resume.
    pub async fn download(&self, message_id: &MessageId, out: &Path) -> Result<Downloaded> {
        let source = self.attachment_source(message_id).await?;
        if source.local.is_some() {
            let (copy, att) = self.fetch_from(message_id, source, None).await?;
            return decrypt_to(&copy, &att, out).await;
        }
        let att = source.attachment.clone();
        let (dest, tmp) = destination(&att, out)?;
        let (tx, rx) = tokio::sync::mpsc::channel(TAP_CHUNKS);
        let (key, size) = (zeroize::Zeroizing::new(att.key.0.clone()), att.size);
        let t = tmp.clone();
        let streamed = tokio::task::spawn_blocking(move || {
            attachment::decrypt_from(&mut TapReader::new(rx), "the download", &key, size, &t)
        });
        let fetched = self.fetch_from(message_id, source, Some(tx)).await;
        let streamed = streamed.await;
        let (copy, att) = match fetched {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        if !matches!(streamed, Ok(Ok(()))) {
            // Resumed, or the stream was cut: the verified copy is decrypted instead.
            let _ = std::fs::remove_file(&tmp);
            decrypt_copy(&copy, &att, &tmp).await?;
        }
        place(&tmp, &dest, &att)
    }

    /// Post a photo or file to a channel this profile is an admin of, with `caption`: cleaned
    /// of metadata like any photo sent, encrypted under a fresh key, uploaded to the home relay
    /// (vouched for with the admin key) and to every mirror that answers, then posted (the key
    /// and digest travel sealed in the post). Returns the post's number.
    pub async fn channel_post_file(
        &self,
        channel: &crate::ChannelId,
        caption: &str,
        path: &Path,
        how: &SendFile,
    ) -> Result<u64> {
        let out = outgoing(path, how)?;
        let c = *channel;
        let plan = self
            .call(move |p| async move { p.channel_file_plan(&c) }.boxed_local())
            .await?;
        let key = crate::relay_client::MailboxKey::from_pkcs8(&plan.admin_key)?;
        let owner = || crate::relay_client::BlobOwner::Channel {
            channel: plan.channel,
            key: &key,
        };
        let Some((home_url, home)) = plan.relays.first() else {
            return Err(Error::Storage("a channel without relays".into()));
        };
        // The home relay says no to a file over its limit before anything is encrypted.
        let cipher_len = attachment::cipher_len(out.size);
        let created = home.create_blob(cipher_len, owner()).await?;
        let (mut att, tmp, cipher_len) = encrypt_outgoing(out, path, how, &plan.dir).await?;
        let mut progress = Progress {
            handle: self,
            id: att.name.clone(),
            direction: TransferDirection::Upload,
            total: cipher_len,
            reported: None,
        };
        let uploaded = upload(
            home,
            &created.blob_id,
            &created.upload_token.0,
            &tmp,
            &mut progress,
        )
        .await;
        if let Err(e) = uploaded {
            let _ = crate::wipe::wipe_file(&tmp);
            return Err(e);
        }
        att.relay = home_url.clone();
        att.blob = created.blob_id;
        // Mirrors: best effort (a reader falls back to the home relay's copy).
        let mut copies = Vec::new();
        for (url, client) in plan.relays.iter().skip(1) {
            let copied = async {
                let created = client.create_blob(cipher_len, owner()).await?;
                upload(
                    client,
                    &created.blob_id,
                    &created.upload_token.0,
                    &tmp,
                    &mut progress,
                )
                .await?;
                Ok::<_, Error>(created.blob_id)
            }
            .await;
            match copied {
                Ok(blob) => copies.push(crate::channel::FileCopy {
                    relay: url.clone(),
                    blob,
                }),
                Err(e) => tracing::debug!("a channel file's mirror copy: {e}"),
            }
        }
        let _ = crate::wipe::wipe_file(&tmp);
        let caption = caption.to_string();
        self.call(move |p| {
            async move { p.channel_post_with(&c, &caption, Some(att), copies).await }.boxed_local()
        })
        .await
    }

    /// Fetch post `seq`'s file from the first of the channel's relays that has an intact copy
    /// (the digest is checked), and decrypt it to `out` as `download` does.
    pub async fn channel_download(
        &self,
        channel: &crate::ChannelId,
        seq: u64,
        out: &Path,
    ) -> Result<Downloaded> {
        let c = *channel;
        let source = self
            .call(move |p| async move { p.channel_file_source(&c, seq) }.boxed_local())
            .await?;
        let part = source.dir.join(format!(
            "channel-{}.part",
            hex::encode(crate::sha256(format!("{} {seq}", channel.id()).as_bytes()))
        ));
        let mut progress = Progress {
            handle: self,
            id: format!("{channel}/{seq}"),
            direction: TransferDirection::Download,
            total: attachment::cipher_len(source.file.size),
            reported: None,
        };
        let mut last = None;
        let n = source.copies.len();
        for (i, (blob, client)) in source.copies.iter().enumerate() {
            let mut att = source.file.clone();
            att.blob = *blob;
            // A copy that does not come within a short while gives way to the next one.
            let give_up = if i + 1 < n {
                CHANNEL_COPY_GIVE_UP
            } else {
                GIVE_UP
            };
            match download(client, &att, &part, &mut progress, give_up, None).await {
                Ok(digest) if digest.as_slice() == att.digest.0.as_slice() => {
                    let placed = decrypt_to(&part, &att, out).await;
                    let _ = crate::wipe::wipe_file(&part);
                    return placed;
                }
                Ok(_) => {
                    let _ = crate::wipe::wipe_file(&part);
                    last = Some(Error::Integrity(
                        "a copy of the file does not match its digest (damaged or altered by a relay); refused"
                            .into(),
                    ));
                }
                Err(e) => {
                    // Partial bytes of one relay's copy are not continued from another's.
                    let _ = std::fs::remove_file(&part);
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::NotFound("no copy of this file".into())))
    }
}

/// How long a channel file's copy may make no progress before the next relay's is tried.
const CHANNEL_COPY_GIVE_UP: Duration = Duration::from_secs(15);

/// Decrypt a verified encrypted copy of `att` to `out`: a new file, or a file named after the
/// attachment inside `out` when it is a directory. An existing file is never overwritten.
async fn decrypt_to(copy: &Path, att: &Attachment, out: &Path) -> Result<Downloaded> {
    let (dest, tmp) = destination(att, out)?;
    decrypt_copy(copy, att, &tmp).await?;
    place(&tmp, &dest, att)
}

/// Where `att` saved to `out` goes, and the hidden temporary file beside it that is written
/// first. An existing file is refused.
fn destination(att: &Attachment, out: &Path) -> Result<(PathBuf, PathBuf)> {
    let name = attachment::safe_name(&att.name);
    let dest = if out.is_dir() {
        out.join(&name)
    } else {
        out.to_path_buf()
    };
    if dest.exists() {
        return Err(Error::Usage(format!(
            "{} exists; choose another --out",
            dest.display()
        )));
    }
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let tmp = parent.join(format!(".samizdat-{}.part", random_id()));
    Ok((dest, tmp))
}

async fn decrypt_copy(copy: &Path, att: &Attachment, tmp: &Path) -> Result<()> {
    let (key, size) = (zeroize::Zeroizing::new(att.key.0.clone()), att.size);
    let (c, t) = (copy.to_path_buf(), tmp.to_path_buf());
    tokio::task::spawn_blocking(move || attachment::decrypt_file(&c, &key, size, &t))
        .await
        .map_err(|e| Error::Storage(format!("decryption task failed: {e}")))?
}

/// Put the decrypted `tmp` at `dest`.
fn place(tmp: &Path, dest: &Path, att: &Attachment) -> Result<Downloaded> {
    // A hard link refuses to replace a file that appeared meanwhile; rename would not.
    let placed = std::fs::hard_link(tmp, dest);
    let _ = std::fs::remove_file(tmp);
    placed.map_err(|e| Error::Usage(format!("cannot write {}: {e}", dest.display())))?;
    Ok(Downloaded {
        path: dest.display().to_string(),
        size: att.size,
        name: attachment::safe_name(&att.name),
        media_type: crate::AttachmentView::of(att, true).media_type,
    })
}

/// Chunks of a download handed to its decryption as they arrive (bounded: a slow decryption
/// slows the download, and memory stays at most this many chunks).
const TAP_CHUNKS: usize = 64;
type Tap = tokio::sync::mpsc::Sender<bytes::Bytes>;

/// The bytes a [`Tap`] carries, read on a blocking thread. The sender gone is the end.
struct TapReader {
    rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    current: bytes::Bytes,
}

impl TapReader {
    fn new(rx: tokio::sync::mpsc::Receiver<bytes::Bytes>) -> TapReader {
        TapReader {
            rx,
            current: bytes::Bytes::new(),
        }
    }
}

impl std::io::Read for TapReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.current = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

impl ClientHandle {
    /// Fetch the incoming attachments under the profile's automatic-download size. Errors
    /// are left for the user's own `download` to report.
    pub async fn auto_download(&self) {
        let ids = self
            .call(|p| {
                async move {
                    let max = p.auto_download_bytes()?;
                    if max == 0 {
                        return Ok(Vec::new());
                    }
                    p.attachments_to_fetch(max)
                }
                .boxed_local()
            })
            .await
            .unwrap_or_default();
        for id in ids {
            if let Err(e) = self.fetch_attachment(&id).await {
                tracing::debug!("automatic download failed: {e}");
            }
        }
    }
}

/// Upload `file` into the blob from wherever the relay says it is.
async fn upload(
    relay: &RelayClient,
    blob: &samizdat_proto::Id,
    token: &[u8],
    file: &Path,
    progress: &mut Progress<'_>,
) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(file)
        .map_err(|e| Error::Storage(format!("cannot read the encrypted attachment: {e}")))?;
    let total = progress.total;
    let piece = piece_size();
    let mut offset = 0u64;
    let mut waits = backoff();
    let mut stalled_since: Option<tokio::time::Instant> = None;
    let mut resumed = None;
    progress.at(0, None);
    loop {
        let result = if offset >= total {
            break;
        } else {
            let n = (total - offset).min(piece as u64) as usize;
            let mut buf = vec![0u8; n];
            f.read_exact_at(&mut buf, offset).map_err(|e| {
                Error::Storage(format!("cannot read the encrypted attachment: {e}"))
            })?;
            relay.put_blob_piece(blob, token, offset, buf).await
        };
        match result {
            Ok(at) => {
                offset = at.offset;
                stalled_since = None;
                waits = backoff();
                progress.at(offset, resumed.take());
                if let Some(p) = test_pause() {
                    tokio::time::sleep(p).await;
                }
            }
            Err(e) if transient(&e) => {
                let since = *stalled_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() > GIVE_UP {
                    return Err(e);
                }
                tokio::time::sleep(waits.next().unwrap_or(Duration::from_secs(5))).await;
                // Where the relay really is (a piece may have landed before the failure).
                if let Ok(at) = relay.blob_offset(blob, token).await {
                    offset = at.offset;
                    resumed = Some(offset);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Download the blob into `part`, continuing from the bytes already there.
/// SHA-256 over the first `len` bytes of `path`.
fn hash_prefix(path: &Path, len: u64, kind: attachment::DigestKind) -> Result<attachment::Hasher> {
    use std::io::Read;
    let mut ctx = attachment::Hasher::new(kind);
    if len == 0 {
        return Ok(ctx);
    }
    let mut f = std::fs::File::open(path)
        .map_err(|e| Error::Storage(format!("cannot read the download: {e}")))?
        .take(len);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| Error::Storage(format!("cannot read the download: {e}")))?;
        if n == 0 {
            return Ok(ctx);
        }
        ctx.update(&buf[..n]);
    }
}

/// Download the blob into `part`, continuing from the bytes already there. Returns the
/// SHA-256 of the whole file, computed as the bytes arrive (a resumed download first hashes
/// what it already has).
async fn download(
    relay: &RelayClient,
    att: &Attachment,
    part: &Path,
    progress: &mut Progress<'_>,
    give_up: Duration,
    mut tap: Option<Tap>,
) -> Result<[u8; 32]> {
    use tokio::io::AsyncWriteExt;
    let total = progress.total;
    let mut waits = backoff();
    let mut stalled_since: Option<tokio::time::Instant> = None;
    let mut resumed = None;
    // The digest so far and how many bytes of `part` it covers.
    let mut hashed: Option<(attachment::Hasher, u64)> = None;
    loop {
        let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        if have > total {
            let _ = std::fs::remove_file(part);
            hashed = None;
            continue;
        }
        if hashed.as_ref().map(|h| h.1) != Some(have) {
            hashed = Some((hash_prefix(part, have, att.digest_kind)?, have));
        }
        if have == total {
            progress.at(total, resumed.take());
            let (ctx, _) = hashed
                .take()
                .ok_or_else(|| Error::Storage("no digest".into()))?;
            return Ok(ctx.finish());
        }
        progress.at(have, resumed.take());
        if have > 0 {
            // The tap sees a download from its first byte, or nothing (it ends short).
            tap = None;
        }
        let attempt = async {
            let mut r = relay.get_blob(&att.blob, have).await?;
            let file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(part)
                .await
                .map_err(|e| Error::Storage(format!("cannot write the download: {e}")))?;
            let partial = r.status() == reqwest::StatusCode::PARTIAL_CONTENT;
            if have > 0 && !partial {
                // The relay sent the whole blob: start over.
                file.set_len(0)
                    .await
                    .map_err(|e| Error::Storage(format!("cannot write the download: {e}")))?;
                hashed = Some((hash_prefix(part, 0, att.digest_kind)?, 0));
            }
            let mut file = tokio::io::BufWriter::with_capacity(1 << 20, file);
            let mut done = if have > 0 && partial { have } else { 0 };
            // Write-back started as the bytes come (the buffer's last MiB not yet written).
            let mut kicked = done;
            while let Some(chunk) = r.chunk().await.map_err(|e| relay.stream_error(e))? {
                if done + chunk.len() as u64 > total {
                    return Err(Error::Integrity(
                        "the relay sent more bytes than the attachment has; refused".into(),
                    ));
                }
                file.write_all(&chunk)
                    .await
                    .map_err(|e| Error::Storage(format!("cannot write the download: {e}")))?;
                if let Some((ctx, n)) = hashed.as_mut() {
                    ctx.update(&chunk);
                    *n += chunk.len() as u64;
                }
                if let Some(t) = &tap
                    && t.send(chunk.clone()).await.is_err()
                {
                    // The decryption stopped (damaged bytes): the copy decides later.
                    tap = None;
                }
                done += chunk.len() as u64;
                let settled = done.saturating_sub(1 << 20);
                if settled >= kicked + (8 << 20) {
                    attachment::start_writeback(file.get_ref(), kicked, settled);
                    kicked = settled;
                }
                progress.at(done, None);
                if let Some(p) = test_pause() {
                    file.flush().await.ok();
                    tokio::time::sleep(p).await;
                }
            }
            file.flush()
                .await
                .map_err(|e| Error::Storage(format!("cannot write the download: {e}")))?;
            file.get_ref()
                .sync_all()
                .await
                .map_err(|e| Error::Storage(format!("cannot write the download: {e}")))?;
            Ok::<u64, Error>(done)
        }
        .await;
        let failure = match attempt {
            Ok(done) if done == total => {
                stalled_since = None;
                waits = backoff();
                continue;
            }
            // Cut short without an error: continue from what we have.
            Ok(_) => Error::RelayUnreachable("the download broke off".into()),
            Err(e) => e,
        };
        if !transient(&failure) {
            if matches!(failure, Error::Integrity(_)) {
                let _ = std::fs::remove_file(part);
            }
            return Err(failure);
        }
        let since = *stalled_since.get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() > give_up {
            return Err(failure);
        }
        tokio::time::sleep(waits.next().unwrap_or(Duration::from_secs(5))).await;
        resumed = Some(std::fs::metadata(part).map(|m| m.len()).unwrap_or(0));
    }
}

/// A file about to be sent, checked: its size (after cleaning), its safe name, and the
/// cleaned bytes when it was a photo whose metadata was stripped.
struct Outgoing {
    size: u64,
    name: String,
    cleaned: Option<zeroize::Zeroizing<Vec<u8>>>,
    /// A picture sent as it is (with its metadata): its thumbnail is made from the file.
    image: bool,
}

/// Check a file to send and strip a photo's location, camera and time before anything
/// else (unless asked to keep them): read into memory, cleaned there, encrypted from there.
fn outgoing(path: &Path, how: &SendFile) -> Result<Outgoing> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::Usage(format!("cannot read {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(Error::Usage(format!("{} is not a file", path.display())));
    }
    let mut size = meta.len();
    if size > crate::payload::MAX_ATTACHMENT {
        return Err(Error::Usage(
            "files larger than 4 GiB cannot be sent".into(),
        ));
    }
    let name = attachment::safe_name(&match &how.name {
        Some(n) => n.clone(),
        None => path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    });
    // A photo loses its location, camera and time before anything else (unless asked to
    // keep them): read into memory, cleaned there, encrypted from there.
    let mut cleaned: Option<zeroize::Zeroizing<Vec<u8>>> = None;
    let image = size <= MAX_CLEANED && looks_like_image(path)?;
    if !how.keep_metadata && image {
        let bytes = zeroize::Zeroizing::new(
            std::fs::read(path)
                .map_err(|e| Error::Usage(format!("cannot read {}: {e}", path.display())))?,
        );
        if let crate::metadata::Stripped::Image(clean) = crate::metadata::strip(&bytes)? {
            size = clean.len() as u64;
            cleaned = Some(clean);
        }
    }
    Ok(Outgoing {
        size,
        name,
        image: image && cleaned.is_none(),
        cleaned,
    })
}

/// Encrypt a checked file into a new file under `dir` (on a blocking thread), with a photo's
/// thumbnail made from the cleaned bytes or a voice message's length. Returns the attachment
/// (its `relay` empty and `blob` zero until it is uploaded), the encrypted file and its length.
async fn encrypt_outgoing(
    out: Outgoing,
    path: &Path,
    how: &SendFile,
    dir: &Path,
) -> Result<(Attachment, PathBuf, u64)> {
    let Outgoing {
        size,
        name,
        cleaned,
        image,
    } = out;
    let tmp = dir.join(format!("upload-{}.part", random_id()));
    let src = path.to_path_buf();
    let dst = tmp.clone();
    let (sealed, thumbnail) = tokio::task::spawn_blocking(move || {
        // A photo's thumbnail, from the cleaned bytes (or, sent with its metadata, from
        // the file): a new JPEG, which carries none.
        let thumbnail = match &cleaned {
            Some(clean) => crate::thumbnail::make(clean),
            None if image => std::fs::read(&src)
                .ok()
                .and_then(|b| crate::thumbnail::make(&b)),
            None => None,
        };
        let sealed = match cleaned {
            Some(clean) => attachment::encrypt_from(
                &mut std::io::Cursor::new(clean.as_slice()),
                &src.display().to_string(),
                size,
                &dst,
            ),
            None => attachment::encrypt_file(&src, size, &dst),
        };
        (sealed, thumbnail)
    })
    .await
    .map_err(|e| Error::Storage(format!("encryption task failed: {e}")))?;
    let preview = match (thumbnail, how.voice_ms) {
        (Some(t), _) => Some(crate::payload::Preview {
            thumbnail: Some(Bytes(t.jpeg)),
            width: t.width,
            height: t.height,
            voice_ms: None,
        }),
        (None, Some(ms)) => Some(crate::payload::Preview {
            thumbnail: None,
            width: 0,
            height: 0,
            voice_ms: Some(ms),
        }),
        (None, None) => None,
    };
    let sealed = match sealed {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let att = Attachment {
        relay: String::new(),
        // Where the blob will be is known once it is created.
        blob: samizdat_proto::Id::from_bytes([0; 16]),
        key: Bytes(sealed.key.to_vec()),
        digest: Bytes(sealed.digest.to_vec()),
        digest_kind: sealed.digest_kind,
        size,
        media_type: attachment::media_type(&name).to_string(),
        name,
        preview,
    };
    Ok((att, tmp, sealed.cipher_len))
}
