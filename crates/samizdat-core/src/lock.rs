//! One owner per profile: an OS file lock (`flock` on Unix) on `lock` in the profile
//! directory, held for the owner's life and released by the OS when the process dies
//! (even by SIGKILL), so a crash never leaves a profile locked.
//!
//! The file also holds the owner's process id, only to name it in messages.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{Error, Result};

pub const LOCK_FILE: &str = "lock";

/// The held lock; dropping it releases the profile.
#[derive(Debug)]
pub struct ProfileLock {
    _file: File,
    path: PathBuf,
}

impl ProfileLock {
    /// Take the lock now, or fail naming the process that holds it.
    pub fn try_acquire(home: &Path) -> Result<ProfileLock> {
        match Self::acquire(home, Duration::ZERO, |_| {}) {
            Err(Error::Busy(_)) => Err(Error::Busy(format!(
                "the profile in {} is in use by another samizdat process{}",
                home.display(),
                holder(home)
                    .map(|p| format!(" (pid {p})"))
                    .unwrap_or_default()
            ))),
            other => other,
        }
    }

    /// Take the lock, waiting up to `wait` for another process to release it. `waiting` is
    /// called once, with the holder's pid if known, when the lock is not free at once.
    pub fn acquire(
        home: &Path,
        wait: Duration,
        mut waiting: impl FnMut(Option<u32>),
    ) -> Result<ProfileLock> {
        crate::create_private_dir(home)?;
        let path = home.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::Storage(format!("cannot open {}: {e}", path.display())))?;
        let start = Instant::now();
        let mut told = false;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    if start.elapsed() >= wait {
                        return Err(Error::Busy(format!(
                            "the profile in {} is still in use by another samizdat process{} after {} s",
                            home.display(),
                            holder(home)
                                .map(|p| format!(" (pid {p})"))
                                .unwrap_or_default(),
                            wait.as_secs()
                        )));
                    }
                    if !told {
                        waiting(holder(home));
                        told = true;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(TryLockError::Error(e)) => {
                    return Err(Error::Storage(format!(
                        "cannot lock {}: {e}",
                        path.display()
                    )));
                }
            }
        }
        // Ours now: record who holds it.
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{}", std::process::id());
        let _ = file.sync_all();
        Ok(ProfileLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The pid recorded by the current (or last) holder.
pub fn holder(home: &Path) -> Option<u32> {
    let mut s = String::new();
    File::open(home.join(LOCK_FILE))
        .ok()?
        .read_to_string(&mut s)
        .ok()?;
    s.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_in_one_process_is_refused_then_granted_after_release() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = ProfileLock::try_acquire(dir.path()).expect("first lock");
        let err = ProfileLock::try_acquire(dir.path()).expect_err("second lock must fail");
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        let mut waited = None;
        let err = ProfileLock::acquire(dir.path(), Duration::from_millis(200), |p| waited = p)
            .expect_err("still held");
        assert!(matches!(err, Error::Busy(_)));
        assert_eq!(waited, Some(std::process::id()));
        drop(first);
        ProfileLock::try_acquire(dir.path()).expect("free again");
    }
}
