//! Panic wipe and the duress passphrase.
//!
//! `wipe` overwrites every file of a profile with zeros (synced) before unlinking it, then
//! removes the directory. On flash storage and copy-on-write file systems the old blocks may
//! survive the overwrite; the database was only ever written encrypted (SQLCipher), so what
//! survives is ciphertext under a key derived from the passphrase.
//!
//! The duress file (`duress`, fixed size) always exists: random bytes until a duress
//! passphrase is set, then `salt ‖ nonce ‖ ChaCha20-Poly1305(Argon2id(passphrase, salt),
//! padded name and relay)` — which cannot be told apart from random bytes without the
//! passphrase. Opening the profile with that passphrase wipes it and creates a fresh, empty
//! profile with the same display name on the same relay (as SimpleX's self-destruct
//! passcode does).

use std::io::Write;
use std::path::Path;

use aws_lc_rs::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

use crate::{Error, Result};

pub const DURESS_FILE: &str = "duress";
const SALT: usize = 16;
const NONCE: usize = 12;
const TAG: usize = 16;
/// Name and relay, JSON, zero-padded to this size (so the file size says nothing).
const PAYLOAD: usize = 1024;
const DURESS_LEN: usize = SALT + NONCE + PAYLOAD + TAG;

fn random(n: usize) -> Result<Vec<u8>> {
    let mut b = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut b)
        .map_err(|_| Error::Crypto("the system random generator failed".into()))?;
    Ok(b)
}

/// Write `bytes` to `path` durably (a temporary file renamed into place), mode 0600.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::Storage(format!("cannot write {}: {e}", tmp.display())))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::Storage(format!("cannot write {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| Error::Storage(format!("cannot write {}: {e}", path.display())))
}

/// A duress file of random bytes (no duress passphrase): written when a profile is created.
pub fn init_duress(home: &Path) -> Result<()> {
    write_private(&home.join(DURESS_FILE), &random(DURESS_LEN)?)
}

/// Argon2id's memory (KiB) and passes for the profile, the duress file and backups.
const KDF_MEMORY_KIB: u32 = 64 * 1024;
const KDF_PASSES: u32 = 3;

/// The parameters [`derive_key`] uses: the profile's, unless a test made them cheap (every
/// process a test spawns derives the key at least once, and nothing a behaviour test checks
/// depends on its cost): the fault point `KDF_MEMORY_KIB`, or the in-process test world.
/// Neither exists in a build people run.
fn kdf_params() -> (u32, u32) {
    #[cfg(feature = "testing")]
    if let Some(kib) = crate::testing::kdf_memory_kib() {
        return (kib, 1);
    }
    match crate::fault::point("KDF_MEMORY_KIB").and_then(|v| v.parse().ok()) {
        Some(kib) => (kib, 1),
        None => (KDF_MEMORY_KIB, KDF_PASSES),
    }
}

/// Argon2id with the profile's memory-hard parameters (also the backup key).
pub(crate) fn derive_key(passphrase: &str, salt: &[u8]) -> Result<[u8; 32]> {
    let (memory_kib, passes) = kdf_params();
    let params = argon2::Params::new(memory_kib, passes, 1, Some(32))
        .map_err(|e| Error::Crypto(format!("argon2 parameters: {e}")))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = [0u8; 32];
    a.hash_password_into(passphrase.as_bytes(), salt, &mut key)
        .map_err(|e| Error::Crypto(format!("argon2: {e}")))?;
    Ok(key)
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct DuressProfile {
    pub name: String,
    pub relay: String,
    /// The proxy the fresh profile connects through (the old profile's), with credentials.
    #[serde(default)]
    pub proxy: Option<String>,
    #[serde(default)]
    pub isolate: bool,
}

/// The key of a duress file: a salt and the Argon2id key derived from the duress passphrase
/// over it. The profile keeps it (inside SQLCipher), so the file can be sealed again — with
/// a fresh nonce and the profile's current network settings — at every unlock and whenever
/// those settings change, without asking for the duress passphrase (security review 3, L3
/// and M11).
pub struct DuressKey {
    salt: Vec<u8>,
    key: zeroize::Zeroizing<[u8; 32]>,
}

impl DuressKey {
    /// A fresh salt and the key `passphrase` gives over it.
    pub fn derive(passphrase: &str) -> Result<DuressKey> {
        let salt = random(SALT)?;
        let key = zeroize::Zeroizing::new(derive_key(passphrase, &salt)?);
        Ok(DuressKey { salt, key })
    }

    /// Salt then key, as the profile stores them.
    pub fn to_bytes(&self) -> zeroize::Zeroizing<Vec<u8>> {
        zeroize::Zeroizing::new([self.salt.as_slice(), self.key.as_slice()].concat())
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<DuressKey> {
        if bytes.len() != SALT + 32 {
            return None;
        }
        let mut key = zeroize::Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&bytes[SALT..]);
        Some(DuressKey {
            salt: bytes[..SALT].to_vec(),
            key,
        })
    }
}

/// Set (or replace) the duress passphrase. `name` and `relay` are what the fresh profile
/// will use.
pub fn set_duress(home: &Path, passphrase: &str, profile: &DuressProfile) -> Result<()> {
    seal_duress(home, &DuressKey::derive(passphrase)?, profile)
}

/// Write the duress file again: sealed under `key` (with a fresh nonce) with `profile`, or —
/// without a key — fresh random bytes. Either way the file gets new bytes and a new inode, so
/// neither its contents nor its times show when (or whether) a duress passphrase was set.
pub fn refresh_duress(home: &Path, key: Option<&DuressKey>, profile: &DuressProfile) -> Result<()> {
    match key {
        Some(k) => seal_duress(home, k, profile),
        None => init_duress(home),
    }
}

/// Seal `profile` under `key` into the duress file.
pub fn seal_duress(home: &Path, key: &DuressKey, profile: &DuressProfile) -> Result<()> {
    let salt = key.salt.clone();
    let nonce = random(NONCE)?;
    let mut payload = serde_json::to_vec(profile).map_err(|e| Error::Storage(e.to_string()))?;
    if payload.len() > PAYLOAD {
        return Err(Error::Usage("the relay address is too long".into()));
    }
    payload.resize(PAYLOAD, 0);
    let key = LessSafeKey::new(
        UnboundKey::new(&CHACHA20_POLY1305, key.key.as_slice())
            .map_err(|_| Error::Crypto("duress key".into()))?,
    );
    let n = Nonce::try_assume_unique_for_key(&nonce).map_err(|_| Error::Crypto("nonce".into()))?;
    key.seal_in_place_append_tag(n, Aad::from(&salt[..]), &mut payload)
        .map_err(|_| Error::Crypto("cannot seal the duress file".into()))?;
    let mut file = salt;
    file.extend_from_slice(&nonce);
    file.extend_from_slice(&payload);
    write_private(&home.join(DURESS_FILE), &file)
}

/// The fresh profile to create when `passphrase` is the duress passphrase.
pub fn check_duress(home: &Path, passphrase: &str) -> Result<Option<DuressProfile>> {
    let Ok(file) = std::fs::read(home.join(DURESS_FILE)) else {
        return Ok(None);
    };
    if file.len() != DURESS_LEN {
        return Ok(None);
    }
    let (salt, rest) = file.split_at(SALT);
    let (nonce, sealed) = rest.split_at(NONCE);
    let key = zeroize::Zeroizing::new(derive_key(passphrase, salt)?);
    let key = LessSafeKey::new(
        UnboundKey::new(&CHACHA20_POLY1305, key.as_slice())
            .map_err(|_| Error::Crypto("duress key".into()))?,
    );
    let n = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Error::Crypto("nonce".into()))?;
    let mut buf = sealed.to_vec();
    let Ok(plain) = key.open_in_place(n, Aad::from(salt), &mut buf) else {
        return Ok(None);
    };
    let end = plain.iter().position(|b| *b == 0).unwrap_or(plain.len());
    Ok(serde_json::from_slice(&plain[..end]).ok())
}

/// Delete every file of the profile in `home`: overwritten with zeros and synced, then
/// unlinked; then the directory. Symbolic links are removed, never followed.
pub fn wipe(home: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(home) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(Error::Storage(format!(
                "cannot read {}: {e}",
                home.display()
            )));
        }
    };
    if !meta.is_dir() {
        return Err(Error::Usage(format!(
            "{} is not a profile directory",
            home.display()
        )));
    }
    // A process that is stopping may still remove (or, closing its database, briefly
    // create) files while we work: go over the directory again until it is gone.
    let mut last = None;
    for _ in 0..20 {
        wipe_dir(home, &[])?;
        match std::fs::remove_dir(home) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Err(Error::Storage(format!(
        "cannot remove {}: {}",
        home.display(),
        last.map(|e| e.to_string()).unwrap_or_default()
    )))
}

/// Wipe every file of the profile but the lock (which the caller holds while it creates the
/// fresh profile in its place).
pub fn wipe_keeping_lock(home: &Path) -> Result<()> {
    wipe_dir(home, &[crate::lock::LOCK_FILE])
}

fn wipe_dir(dir: &Path, keep: &[&str]) -> Result<()> {
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if gone(&e) => return Ok(()),
        Err(e) => {
            return Err(Error::Storage(format!(
                "cannot read {}: {e}",
                dir.display()
            )));
        }
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::Storage(e.to_string()))?;
        let path = entry.path();
        if keep.iter().any(|k| entry.file_name() == *k) {
            continue;
        }
        // Files may vanish under us (a stopping owner removes its socket and WAL).
        let kind = match entry.file_type() {
            Ok(k) => k,
            Err(e) if gone(&e) => continue,
            Err(e) => return Err(Error::Storage(e.to_string())),
        };
        if kind.is_dir() {
            wipe_dir(&path, &[])?;
            let _ = std::fs::remove_dir(&path);
            continue;
        }
        if kind.is_file() {
            overwrite(&path);
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if gone(&e) => {}
            Err(e) => {
                return Err(Error::Storage(format!(
                    "cannot remove {}: {e}",
                    path.display()
                )));
            }
        }
    }
    Ok(())
}

/// Overwrite one file with zeros and unlink it.
pub(crate) fn wipe_file(path: &Path) -> Result<()> {
    overwrite(path);
    std::fs::remove_file(path)
        .map_err(|e| Error::Storage(format!("cannot remove {}: {e}", path.display())))
}

/// Zeros over the whole file, synced (best effort: a file another process holds open is
/// overwritten in place all the same).
fn overwrite(path: &Path) {
    let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(path) else {
        return;
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let zeros = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        if f.write_all(&zeros[..n]).is_err() {
            return;
        }
        left -= n as u64;
    }
    let _ = f.sync_all();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// The profile's key costs 64 MiB and 3 passes of Argon2id when no test made it cheap.
    #[test]
    fn the_profile_key_is_memory_hard() {
        assert_eq!(super::kdf_params(), (64 * 1024, 3));
        let salt = [9u8; 16];
        let params = argon2::Params::new(64 * 1024, 3, 1, Some(32)).expect("params");
        let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut want = [0u8; 32];
        a.hash_password_into(b"pass", &salt, &mut want)
            .expect("argon2");
        assert_eq!(super::derive_key("pass", &salt).expect("derive"), want);
    }

    #[test]
    fn the_duress_file_opens_only_with_its_passphrase_and_looks_random_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        init_duress(dir.path()).unwrap();
        let unset = std::fs::read(dir.path().join(DURESS_FILE)).unwrap();
        assert_eq!(unset.len(), DURESS_LEN);
        assert!(check_duress(dir.path(), "anything").unwrap().is_none());
        let p = DuressProfile {
            name: "Alice".into(),
            relay: "http://127.0.0.1:7700".into(),
            proxy: None,
            isolate: false,
        };
        set_duress(dir.path(), "the duress words", &p).unwrap();
        let set = std::fs::read(dir.path().join(DURESS_FILE)).unwrap();
        assert_eq!(
            set.len(),
            unset.len(),
            "the size does not tell whether one is set"
        );
        assert!(!set.windows(5).any(|w| w == b"Alice"));
        assert!(check_duress(dir.path(), "other words").unwrap().is_none());
        let got = check_duress(dir.path(), "the duress words")
            .unwrap()
            .expect("opens");
        assert_eq!(
            (got.name.as_str(), got.relay.as_str()),
            ("Alice", "http://127.0.0.1:7700")
        );
    }

    #[test]
    fn wipe_removes_every_file_and_never_follows_links() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("profile");
        std::fs::create_dir_all(home.join("attachments")).unwrap();
        std::fs::write(home.join("profile.db"), b"secret bytes").unwrap();
        std::fs::write(home.join("attachments/a"), b"more").unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, b"keep me").unwrap();
        std::os::unix::fs::symlink(&outside, home.join("link")).unwrap();
        wipe(&home).unwrap();
        assert!(!home.exists());
        assert_eq!(std::fs::read(&outside).unwrap(), b"keep me");
        wipe(&home).unwrap(); // nothing there: fine
    }
}
