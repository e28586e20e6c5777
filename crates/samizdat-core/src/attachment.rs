//! Attachment encryption: a file is padded to a size bucket and encrypted under a fresh
//! random key with the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár 2015) over
//! ChaCha20-Poly1305, from the RustCrypto `aead`/`chacha20poly1305` crates — each 64 KiB
//! piece is sealed with a nonce made of its counter and a last-piece flag, so pieces cannot
//! be reordered, dropped or cut off without detection. Nothing here is hand-rolled
//! cryptography: we pick the construction's parameters and the file layout.
//!
//! Layout of the ciphertext (what the relay stores): the padded plaintext's pieces, each
//! followed by its 16-byte tag; the last piece may be short (or empty for an empty file).
//! The key, the digest of the whole ciphertext (BLAKE3; SHA-256 for files sent before it),
//! the real size, the name and the media type travel inside MLS; nothing decrypted is kept
//! or shown before the digest matched (a download decrypts as it goes, into a hidden file,
//! and every piece's tag is checked either way).
//!
//! Padding (Padmé, Nikitin et al., "Reducing Metadata Leakage from Encrypted Files and
//! Communication with PURBs", PETS 2019): lengths are rounded up so that at most
//! O(log log L) bits of the size leak, with at most 12% overhead; everything under 4 KiB
//! looks alike.

use std::io::{Read, Write};
use std::path::Path;

use chacha20poly1305::aead::stream::EncryptorBE32;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};

use crate::{Error, Result};

/// Plaintext bytes per sealed piece.
pub const PIECE: usize = 64 * 1024;
const TAG: u64 = 16;
/// Sizes below this are padded to it.
const MIN_BUCKET: u64 = 4096;
/// The STREAM nonce prefix. The key is fresh for every file, so a constant prefix never
/// repeats a (key, nonce) pair.
const NONCE_PREFIX: [u8; 7] = [0; 7];

/// What the receiver needs besides the ciphertext. The key is overwritten when this is
/// dropped (security review 3, L5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key: [u8; 32],
    /// The digest of the whole ciphertext (BLAKE3).
    pub digest: [u8; 32],
    pub digest_kind: DigestKind,
    pub cipher_len: u64,
}

pub use crate::payload::DigestKind;

/// The digest of a ciphertext, as its bytes go by.
pub enum Hasher {
    Sha256(aws_lc_rs::digest::Context),
    Blake3(Box<blake3::Hasher>),
}

impl Hasher {
    pub fn new(kind: DigestKind) -> Hasher {
        match kind {
            DigestKind::Sha256 => {
                Hasher::Sha256(aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256))
            }
            DigestKind::Blake3 => Hasher::Blake3(Box::new(blake3::Hasher::new())),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(c) => c.update(data),
            Hasher::Blake3(h) => {
                h.update(data);
            }
        }
    }

    pub fn finish(self) -> [u8; 32] {
        match self {
            Hasher::Sha256(c) => {
                let mut d = [0u8; 32];
                d.copy_from_slice(c.finish().as_ref());
                d
            }
            Hasher::Blake3(h) => *h.finalize().as_bytes(),
        }
    }
}

impl zeroize::Zeroize for Sealed {
    fn zeroize(&mut self) {
        self.key.zeroize();
    }
}

impl Drop for Sealed {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(self);
    }
}

/// The Padmé length for `size` (at least `MIN_BUCKET`).
pub fn padded_len(size: u64) -> u64 {
    let l = size.max(MIN_BUCKET);
    let e = 63 - u64::from(l.leading_zeros()); // floor(log2 l)
    let s = 64 - u64::from(e.leading_zeros()); // floor(log2 e) + 1
    let last_bits = e - s;
    let mask = (1u64 << last_bits) - 1;
    l.saturating_add(mask) & !mask
}

fn pieces(padded: u64) -> u64 {
    padded.div_ceil(PIECE as u64).max(1)
}

/// The ciphertext length of a `size`-byte file.
pub fn cipher_len(size: u64) -> u64 {
    let p = padded_len(size);
    p + pieces(p) * TAG
}

fn random_key() -> Result<[u8; 32]> {
    let mut key = [0u8; 32];
    aws_lc_rs::rand::fill(&mut key)
        .map_err(|_| Error::Crypto("the system random number generator failed".into()))?;
    Ok(key)
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Storage(format!("cannot {what} {}: {e}", path.display()))
}

/// Read exactly `buf.len()` bytes unless the input ends first; returns how many were read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Encrypt `src` (which must hold exactly `size` bytes) into a new file `dst` under a fresh
/// key. `dst` is synced to disk before this returns.
pub fn encrypt_file(src: &Path, size: u64, dst: &Path) -> Result<Sealed> {
    let mut input = std::fs::File::open(src).map_err(|e| io("read", src, e))?;
    encrypt_from(&mut input, &src.display().to_string(), size, dst)
}

/// Encrypt what `input` (called `what` in errors) holds — exactly `size` bytes — into a new
/// file `dst` under a fresh key; `dst` is synced before this returns. A file read from memory
/// never touches a disk in plaintext.
pub fn encrypt_from(input: &mut impl Read, what: &str, size: u64, dst: &Path) -> Result<Sealed> {
    let src = Path::new(what);
    let key = zeroize::Zeroizing::new(random_key()?);
    let aead = ChaCha20Poly1305::new((&*key).into());
    let mut enc = EncryptorBE32::from_aead(aead, (&NONCE_PREFIX).into());
    let mut out =
        std::io::BufWriter::new(crate::create_private_file(dst).map_err(|e| io("create", dst, e))?);
    let mut digest = Hasher::new(DigestKind::Blake3);
    let padded = padded_len(size);
    let total = pieces(padded);
    let mut buf = vec![0u8; PIECE];
    let mut read = 0u64;
    let mut written = 0u64;
    for i in 0..total {
        let want = (padded - i * PIECE as u64).min(PIECE as u64) as usize;
        let piece = &mut buf[..want];
        // File bytes first, then zero padding.
        let from_file = (size - read).min(want as u64) as usize;
        let n = read_full(input, &mut piece[..from_file]).map_err(|e| io("read", src, e))?;
        if n != from_file {
            return Err(Error::Usage(format!(
                "{} changed while it was being read",
                src.display()
            )));
        }
        read += n as u64;
        piece[from_file..].fill(0);
        let sealed = if i + 1 == total {
            let enc = std::mem::replace(
                &mut enc,
                EncryptorBE32::from_aead(
                    ChaCha20Poly1305::new((&*key).into()),
                    (&NONCE_PREFIX).into(),
                ),
            );
            enc.encrypt_last(&*piece)
        } else {
            enc.encrypt_next(&*piece)
        }
        .map_err(|_| Error::Crypto("attachment encryption failed".into()))?;
        digest.update(&sealed);
        out.write_all(&sealed).map_err(|e| io("write", dst, e))?;
        written += sealed.len() as u64;
    }
    let mut extra = [0u8; 1];
    if read_full(input, &mut extra).map_err(|e| io("read", src, e))? != 0 {
        return Err(Error::Usage(format!(
            "{} changed while it was being read",
            src.display()
        )));
    }
    let file = out
        .into_inner()
        .map_err(|e| io("write", dst, e.into_error()))?;
    file.sync_all().map_err(|e| io("sync", dst, e))?;
    debug_assert_eq!(written, cipher_len(size));
    Ok(Sealed {
        key: *key,
        digest: digest.finish(),
        digest_kind: DigestKind::Blake3,
        cipher_len: written,
    })
}

/// Check that the file at `path` is the ciphertext whose digest (of `kind`) is `digest`,
/// with the length a `size`-byte file encrypts to.
pub fn verify(path: &Path, size: u64, digest: &[u8], kind: DigestKind) -> Result<()> {
    let mut f = std::fs::File::open(path).map_err(|e| io("read", path, e))?;
    let len = f.metadata().map_err(|e| io("read", path, e))?.len();
    if len != cipher_len(size) {
        return Err(Error::Integrity(format!(
            "the attachment has {len} bytes where {} were expected; refused",
            cipher_len(size)
        )));
    }
    let mut ctx = Hasher::new(kind);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(|e| io("read", path, e))?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    if ctx.finish().as_slice() != digest {
        return Err(Error::Integrity(
            "the attachment does not match its digest (damaged or altered by the relay); refused"
                .into(),
        ));
    }
    Ok(())
}

/// Decrypt the ciphertext at `src` (already [`verify`]ed) into a new file `dst`, keeping the
/// first `size` bytes. A piece that fails authentication stops it with an error and removes
/// `dst`.
pub fn decrypt_file(src: &Path, key: &[u8], size: u64, dst: &Path) -> Result<()> {
    let mut input = std::fs::File::open(src).map_err(|e| io("read", src, e))?;
    decrypt_from(&mut input, &src.display().to_string(), key, size, dst)
}

/// Decrypt the ciphertext `input` (called `what` in errors) yields into a new file `dst`,
/// keeping the first `size` bytes; as [`decrypt_file`]. Input that ends early is refused as
/// damaged. A caller decrypting bytes whose digest is not checked yet keeps `dst` hidden
/// until it is (the pieces' tags are checked here either way).
pub fn decrypt_from(
    input: &mut impl Read,
    what: &str,
    key: &[u8],
    size: u64,
    dst: &Path,
) -> Result<()> {
    let result = decrypt_into(input, Path::new(what), key, size, dst);
    if result.is_err() {
        let _ = std::fs::remove_file(dst);
    }
    result
}

/// Pieces decrypted together: read in order, opened on every core, written in order.
const BATCH: usize = 32;
/// Bytes written between two nudges of the kernel to start writing them out.
const WRITEBACK_EVERY: u64 = 8 << 20;

/// Start writing out `file`'s bytes in `from..to` without waiting for them (the final
/// `sync_all` then has little left to wait for). `POSIX_FADV_DONTNEED` makes Linux start the
/// write-back of a range's dirty pages; pages still being written stay cached. Advisory: a
/// system that ignores it only makes the final sync longer.
pub(crate) fn start_writeback(file: &impl std::os::fd::AsFd, from: u64, to: u64) {
    if let Some(len) = std::num::NonZeroU64::new(to.saturating_sub(from)) {
        let _ = rustix::fs::fadvise(file, from, Some(len), rustix::fs::Advice::DontNeed);
    }
}

/// How many threads open pieces: every core, at most four.
fn decrypt_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4)
}

fn decrypt_into(
    input: &mut impl Read,
    src: &Path,
    key: &[u8],
    size: u64,
    dst: &Path,
) -> Result<()> {
    use chacha20poly1305::aead::stream::{NewStream, StreamBE32, StreamPrimitive};
    let key: zeroize::Zeroizing<[u8; 32]> = zeroize::Zeroizing::new(
        key.try_into()
            .map_err(|_| Error::Integrity("the attachment key has the wrong length".into()))?,
    );
    // The STREAM primitive is stateless: piece `i` is opened with its own position and
    // last-piece flag, so pieces can be opened in any order, on any thread.
    let stream: StreamBE32<ChaCha20Poly1305> = StreamBE32::from_aead(
        ChaCha20Poly1305::new((&*key).into()),
        (&NONCE_PREFIX).into(),
    );
    let mut out = crate::create_private_file(dst).map_err(|e| io("create", dst, e))?;
    let padded = padded_len(size);
    let total = pieces(padded);
    let mut left = size;
    let damaged = || Error::Integrity("the attachment failed authentication; refused".into());
    let threads = decrypt_threads();
    let mut bufs: Vec<Vec<u8>> = Vec::new();
    let (mut written, mut kicked) = (0u64, 0u64);
    let mut first = 0u64;
    while first < total {
        let n = (total - first).min(BATCH as u64) as usize;
        bufs.resize_with(n, || Vec::with_capacity(PIECE + TAG as usize));
        for (k, buf) in bufs.iter_mut().enumerate() {
            let i = first + k as u64;
            let want = (padded - i * PIECE as u64).min(PIECE as u64) as usize + TAG as usize;
            buf.resize(want, 0);
            if read_full(input, buf).map_err(|e| io("read", src, e))? != want {
                return Err(damaged());
            }
        }
        let open = |from: u64, part: &mut [Vec<u8>]| {
            part.iter_mut().enumerate().all(|(k, buf)| {
                let i = from + k as u64;
                let Ok(position) = u32::try_from(i) else {
                    return false;
                };
                stream
                    .decrypt_in_place(position, i + 1 == total, &[], buf)
                    .is_ok()
            })
        };
        let per = n.div_ceil(threads);
        let opened = if threads == 1 || n == 1 {
            open(first, &mut bufs)
        } else {
            std::thread::scope(|s| {
                let mut parts = bufs.chunks_mut(per).enumerate();
                let mine = parts.next();
                let others: Vec<_> = parts
                    .map(|(j, part)| {
                        let open = &open;
                        s.spawn(move || open(first + (j * per) as u64, part))
                    })
                    .collect();
                let ok = mine.is_none_or(|(_, part)| open(first, part));
                others
                    .into_iter()
                    .fold(ok, |ok, t| t.join().unwrap_or(false) && ok)
            })
        };
        if !opened {
            return Err(damaged());
        }
        for plain in &bufs {
            let keep = (plain.len() as u64).min(left) as usize;
            out.write_all(&plain[..keep])
                .map_err(|e| io("write", dst, e))?;
            left -= keep as u64;
            written += keep as u64;
        }
        if written - kicked >= WRITEBACK_EVERY {
            start_writeback(&out, kicked, written);
            kicked = written;
        }
        first += n as u64;
    }
    out.sync_all().map_err(|e| io("sync", dst, e))?;
    Ok(())
}

/// A file name from a peer, made safe to show and to create: no directories, no control or
/// bidirectional-override characters, no leading dots, at most 200 bytes. Empty → "file".
pub fn safe_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let mut out = String::new();
    for c in base.chars() {
        let bad = c.is_control()
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}');
        if bad {
            continue;
        }
        if out.len() + c.len_utf8() > 200 {
            break;
        }
        out.push(c);
    }
    let trimmed = out.trim().trim_start_matches('.').trim().to_string();
    if trimmed.is_empty() {
        "file".into()
    } else {
        trimmed
    }
}

/// A media type from the file name's extension (what the receiver is told; it never decides
/// how the app serves the file).
pub fn media_type(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        "mp4" => "video/mp4",
        "mov" => "video/quicktime",
        "webm" => "video/webm",
        "weba" => "audio/webm",
        "mp3" => "audio/mpeg",
        "ogg" | "opus" => "audio/ogg",
        "m4a" => "audio/mp4",
        "zip" => "application/zip",
        "doc" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "odt" => "application/vnd.oasis.opendocument.text",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padme_buckets_leak_little_and_cost_little() {
        assert_eq!(padded_len(0), 4096);
        assert_eq!(padded_len(4096), 4096);
        for size in [
            5_000u64,
            65_537,
            1_000_000,
            5_000_000,
            60_000_000,
            100_000_000,
        ] {
            let p = padded_len(size);
            assert!(p >= size, "{size}");
            assert!((p - size) * 100 <= size * 12, "{size} → {p}: more than 12%");
        }
        // Nearby sizes fall into one bucket.
        assert_eq!(padded_len(1_000_000), padded_len(1_000_100));
    }

    fn roundtrip(size: u64) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&src, &data).unwrap();
        let ct = dir.path().join("ct");
        let sealed = encrypt_file(&src, size, &ct).unwrap();
        assert_eq!(std::fs::metadata(&ct).unwrap().len(), cipher_len(size));
        verify(&ct, size, &sealed.digest, sealed.digest_kind).unwrap();
        let out = dir.path().join("out");
        decrypt_file(&ct, &sealed.key, size, &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), data);
    }

    #[test]
    fn files_of_every_shape_come_back_identical() {
        // Up to several batches of pieces opened on several threads.
        for size in [
            0, 1, 4095, 4096, 65_536, 65_537, 200_000, 1_048_577, 2_097_152, 5_000_001,
        ] {
            roundtrip(size);
        }
    }

    #[test]
    fn a_flipped_byte_is_refused_by_the_digest_and_by_the_aead() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::write(&src, vec![42u8; 150_000]).unwrap();
        let ct = dir.path().join("ct");
        let sealed = encrypt_file(&src, 150_000, &ct).unwrap();
        let mut bytes = std::fs::read(&ct).unwrap();
        bytes[70_000] ^= 1;
        std::fs::write(&ct, &bytes).unwrap();
        assert!(matches!(
            verify(&ct, 150_000, &sealed.digest, sealed.digest_kind),
            Err(Error::Integrity(_))
        ));
        let out = dir.path().join("out");
        assert!(matches!(
            decrypt_file(&ct, &sealed.key, 150_000, &out),
            Err(Error::Integrity(_))
        ));
        assert!(!out.exists(), "nothing of a damaged file is left behind");
        // Cutting off the last piece is caught too.
        let short = dir.path().join("short");
        std::fs::write(&short, &std::fs::read(&src).unwrap()[..0]).unwrap();
        assert!(verify(&short, 150_000, &sealed.digest, sealed.digest_kind).is_err());
    }

    /// Pieces are opened in batches on several threads: damage anywhere (a later batch, the
    /// last piece), pieces swapped inside one thread's share or across threads, and a file cut
    /// at a piece boundary are each refused, and nothing is left behind.
    #[test]
    fn pieces_opened_in_parallel_are_still_checked_each_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let size = 5_000_000u64;
        let src = dir.path().join("src");
        let data: Vec<u8> = (0..size).map(|i| (i * 13 % 251) as u8).collect();
        std::fs::write(&src, &data).unwrap();
        let ct = dir.path().join("ct");
        let sealed = encrypt_file(&src, size, &ct).unwrap();
        let good = std::fs::read(&ct).unwrap();
        let step = PIECE + TAG as usize;
        let swap = |a: usize, b: usize| {
            let mut v = good.clone();
            let (pa, pb) = (
                v[a * step..(a + 1) * step].to_vec(),
                v[b * step..(b + 1) * step].to_vec(),
            );
            v[a * step..(a + 1) * step].copy_from_slice(&pb);
            v[b * step..(b + 1) * step].copy_from_slice(&pa);
            v
        };
        let flip = |at: usize| {
            let mut v = good.clone();
            v[at] ^= 0x80;
            v
        };
        let pieces_total = good.len().div_ceil(step);
        let cases = [
            ("a byte in the third batch", flip(BATCH * 2 * step + 100)),
            ("a byte of the last piece", flip(good.len() - 3)),
            ("two pieces of one share swapped", swap(1, 2)),
            ("pieces of two batches swapped", swap(3, BATCH + 3)),
            (
                "the last piece cut off",
                good[..(pieces_total - 1) * step].to_vec(),
            ),
        ];
        for (what, bytes) in cases {
            let bad = dir.path().join("bad");
            std::fs::write(&bad, &bytes).unwrap();
            let out = dir.path().join("out");
            assert!(
                matches!(
                    decrypt_file(&bad, &sealed.key, size, &out),
                    Err(Error::Integrity(_))
                ),
                "{what}"
            );
            assert!(!out.exists(), "{what}: nothing is left behind");
        }
        let out = dir.path().join("out");
        decrypt_file(&ct, &sealed.key, size, &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), data);
    }

    /// Files are sent with a BLAKE3 digest now; a file sent before (SHA-256, no kind in its
    /// message) is still checked by SHA-256, and a digest of the wrong kind never passes.
    #[test]
    fn blake3_digests_are_made_and_sha256_digests_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::write(&src, vec![5u8; 300_000]).unwrap();
        let ct = dir.path().join("ct");
        let sealed = encrypt_file(&src, 300_000, &ct).unwrap();
        assert_eq!(sealed.digest_kind, DigestKind::Blake3);
        let bytes = std::fs::read(&ct).unwrap();
        assert_eq!(sealed.digest, *blake3::hash(&bytes).as_bytes());
        let sha = crate::sha256(&bytes);
        verify(&ct, 300_000, &sha, DigestKind::Sha256).unwrap();
        verify(&ct, 300_000, &sealed.digest, DigestKind::Blake3).unwrap();
        assert!(verify(&ct, 300_000, &sha, DigestKind::Blake3).is_err());
        assert!(verify(&ct, 300_000, &sealed.digest, DigestKind::Sha256).is_err());
        // In the message: absent means SHA-256; BLAKE3 is named.
        let old = r#"{"relay":"https://r.example","blob":"AAAAAAAAAAAAAAAAAAAAAA","key":"","digest":"","size":1,"name":"a","media_type":"text/plain"}"#;
        let att: crate::payload::Attachment = serde_json::from_str(old).unwrap();
        assert_eq!(att.digest_kind, DigestKind::Sha256);
        let mut new = att.clone();
        new.digest_kind = DigestKind::Blake3;
        let json = serde_json::to_string(&new).unwrap();
        assert!(json.contains(r#""digest_kind":"blake3""#), "{json}");
        assert!(!serde_json::to_string(&att).unwrap().contains("digest_kind"));
    }

    #[test]
    fn hostile_names_become_plain_file_names() {
        assert_eq!(safe_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_name("..\\..\\boot.ini"), "boot.ini");
        assert_eq!(safe_name("a\nb\u{202e}gpj.exe"), "abgpj.exe");
        assert_eq!(safe_name(".bashrc"), "bashrc");
        assert_eq!(safe_name(""), "file");
        assert_eq!(safe_name("../"), "file");
        assert!(safe_name(&"й".repeat(500)).len() <= 200);
    }
}
