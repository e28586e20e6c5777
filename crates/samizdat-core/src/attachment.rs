//! Attachment encryption: a file is padded to a size bucket and encrypted under a fresh
//! random key with the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár 2015) over
//! ChaCha20-Poly1305, from the RustCrypto `aead`/`chacha20poly1305` crates — each 64 KiB
//! piece is sealed with a nonce made of its counter and a last-piece flag, so pieces cannot
//! be reordered, dropped or cut off without detection. Nothing here is hand-rolled
//! cryptography: we pick the construction's parameters and the file layout.
//!
//! Layout of the ciphertext (what the relay stores): the padded plaintext's pieces, each
//! followed by its 16-byte tag; the last piece may be short (or empty for an empty file).
//! The key, the SHA-256 of the whole ciphertext, the real size, the name and the media type
//! travel inside MLS; the receiver checks the digest before it decrypts anything.
//!
//! Padding (Padmé, Nikitin et al., "Reducing Metadata Leakage from Encrypted Files and
//! Communication with PURBs", PETS 2019): lengths are rounded up so that at most
//! O(log log L) bits of the size leak, with at most 12% overhead; everything under 4 KiB
//! looks alike.

use std::io::{Read, Write};
use std::path::Path;

use chacha20poly1305::aead::stream::{DecryptorBE32, EncryptorBE32};
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
    /// SHA-256 of the whole ciphertext.
    pub digest: [u8; 32],
    pub cipher_len: u64,
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
    let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
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
    let mut d = [0u8; 32];
    d.copy_from_slice(digest.finish().as_ref());
    debug_assert_eq!(written, cipher_len(size));
    Ok(Sealed {
        key: *key,
        digest: d,
        cipher_len: written,
    })
}

/// Check that the file at `path` is the ciphertext whose SHA-256 is `digest`, with the
/// length a `size`-byte file encrypts to.
pub fn verify(path: &Path, size: u64, digest: &[u8]) -> Result<()> {
    let mut f = std::fs::File::open(path).map_err(|e| io("read", path, e))?;
    let len = f.metadata().map_err(|e| io("read", path, e))?.len();
    if len != cipher_len(size) {
        return Err(Error::Integrity(format!(
            "the attachment has {len} bytes where {} were expected; refused",
            cipher_len(size)
        )));
    }
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(|e| io("read", path, e))?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    if ctx.finish().as_ref() != digest {
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
    let result = decrypt_into(src, key, size, dst);
    if result.is_err() {
        let _ = std::fs::remove_file(dst);
    }
    result
}

fn decrypt_into(src: &Path, key: &[u8], size: u64, dst: &Path) -> Result<()> {
    let key: zeroize::Zeroizing<[u8; 32]> = zeroize::Zeroizing::new(
        key.try_into()
            .map_err(|_| Error::Integrity("the attachment key has the wrong length".into()))?,
    );
    let mut dec = DecryptorBE32::from_aead(
        ChaCha20Poly1305::new((&*key).into()),
        (&NONCE_PREFIX).into(),
    );
    let mut input =
        std::io::BufReader::new(std::fs::File::open(src).map_err(|e| io("read", src, e))?);
    let mut out =
        std::io::BufWriter::new(crate::create_private_file(dst).map_err(|e| io("create", dst, e))?);
    let padded = padded_len(size);
    let total = pieces(padded);
    let mut buf = vec![0u8; PIECE + TAG as usize];
    let mut left = size;
    let damaged = || Error::Integrity("the attachment failed authentication; refused".into());
    for i in 0..total {
        let want = (padded - i * PIECE as u64).min(PIECE as u64) as usize + TAG as usize;
        let n = read_full(&mut input, &mut buf[..want]).map_err(|e| io("read", src, e))?;
        if n != want {
            return Err(damaged());
        }
        let plain = if i + 1 == total {
            let d = std::mem::replace(
                &mut dec,
                DecryptorBE32::from_aead(
                    ChaCha20Poly1305::new((&*key).into()),
                    (&NONCE_PREFIX).into(),
                ),
            );
            d.decrypt_last(&buf[..want])
        } else {
            dec.decrypt_next(&buf[..want])
        }
        .map_err(|_| damaged())?;
        let keep = (plain.len() as u64).min(left) as usize;
        out.write_all(&plain[..keep])
            .map_err(|e| io("write", dst, e))?;
        left -= keep as u64;
    }
    let file = out
        .into_inner()
        .map_err(|e| io("write", dst, e.into_error()))?;
    file.sync_all().map_err(|e| io("sync", dst, e))?;
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
        verify(&ct, size, &sealed.digest).unwrap();
        let out = dir.path().join("out");
        decrypt_file(&ct, &sealed.key, size, &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), data);
    }

    #[test]
    fn files_of_every_shape_come_back_identical() {
        for size in [0, 1, 4095, 4096, 65_536, 65_537, 200_000, 1_048_577] {
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
            verify(&ct, 150_000, &sealed.digest),
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
        assert!(verify(&short, 150_000, &sealed.digest).is_err());
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
