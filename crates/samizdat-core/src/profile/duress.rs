//! The duress passphrase, kept by the profile (see `wipe.rs` for the file).
//!
//! Setting it stores its key (salt ‖ Argon2id key, inside SQLCipher) and seals the profile's
//! name, relay and network settings into the duress file. From then on the file is sealed
//! again at every unlock and whenever the network settings change, so:
//! - the fresh profile a duress unlock makes connects the way this one does now — never
//!   directly when a proxy or Tor was turned on after the duress passphrase was set
//!   (security review 3, M11);
//! - rewriting the file is routine: its contents, inode and times change at every unlock
//!   whether or not a duress passphrase exists, so they do not show that one was set
//!   (security review 3, L3).
//!
//! Profiles made before this kept their duress file unmanaged: it is left alone (a duress
//! passphrase set then would be lost) until a duress passphrase is set again.

use super::*;
use crate::wipe::{DuressKey, DuressProfile};

const DURESS_KEY: Setting = Setting::DuressKey;
const DURESS_MANAGED: Setting = Setting::DuressManaged;

impl Profile {
    /// Mark a new profile's duress file (random bytes) as managed by the profile.
    pub(super) fn manage_duress(db: &Db) -> Result<()> {
        db.set_setting(DURESS_MANAGED, b"1")
    }

    /// Set (or replace) the duress passphrase: opening the profile with it wipes the profile
    /// and opens a fresh, empty one with this name on this relay, through the network
    /// settings in force then.
    pub fn set_duress(&self, passphrase: &str) -> Result<()> {
        if passphrase.chars().count() < crate::store::MIN_PASSPHRASE_CHARS {
            return Err(Error::Usage(format!(
                "the duress passphrase must have at least {} characters",
                crate::store::MIN_PASSPHRASE_CHARS
            )));
        }
        if Db::open(&Self::db_path(&self.home), passphrase).is_ok() {
            return Err(Error::Usage(
                "the duress passphrase must differ from the profile's passphrase".into(),
            ));
        }
        let key = DuressKey::derive(passphrase)?;
        self.db.set_setting(DURESS_KEY, &key.to_bytes())?;
        Self::manage_duress(&self.db)?;
        crate::wipe::seal_duress(&self.home, &key, &self.duress_profile()?)
    }

    /// Seal the duress file again (or fill it with fresh random bytes when no duress
    /// passphrase is set) with the current settings.
    pub(crate) fn refresh_duress(&self) -> Result<()> {
        if self.db.get_setting(DURESS_MANAGED)?.as_deref() != Some(b"1") {
            return Ok(());
        }
        let stored = zeroize::Zeroizing::new(self.db.get_setting(DURESS_KEY)?.unwrap_or_default());
        let key = DuressKey::from_bytes(&stored);
        crate::wipe::refresh_duress(&self.home, key.as_ref(), &self.duress_profile()?)
    }

    /// What a duress unlock creates: this name, this relay, the saved network settings.
    fn duress_profile(&self) -> Result<DuressProfile> {
        let net = self.saved_net()?;
        Ok(DuressProfile {
            name: self.name.clone(),
            relay: self.relay_url().to_string(),
            proxy: net.proxy.as_ref().map(|p| p.url()),
            isolate: net.isolate,
        })
    }
}
