//! The one module that knows mls-rs. Everything else in the core speaks in bytes, epochs and
//! fingerprints, so the MLS library could be swapped behind this file.
//!
//! - Crypto: `mls-rs-crypto-awslc`; default ciphersuite the hybrid post-quantum
//!   `ML_KEM_768_X25519`.
//! - Handshake messages are encrypted (PrivateMessage) and padded (Padmé).
//! - Credentials are basic credentials whose identifier is the fingerprint (SHA-256) of the
//!   member's signature key: pseudonymous, never a name.
//! - State lives in the profile's SQLCipher database through the storage providers below.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use aws_lc_rs::digest;
use mls_rs::client_builder::{
    BaseConfig, IntoConfigOutput, PaddingMode, WithCryptoProvider, WithGroupStateStorage,
    WithIdentityProvider, WithKeyPackageRepo, WithMlsRules,
};
use mls_rs::error::{IntoAnyError, MlsError};
use mls_rs::group::{CommitEffect, ReceivedMessage};
use mls_rs::identity::SigningIdentity;
use mls_rs::identity::basic::{BasicCredential, BasicIdentityProvider};
use mls_rs::mls_rs_codec::{MlsDecode, MlsEncode};
use mls_rs::mls_rules::{CommitOptions, DefaultMlsRules, EncryptionOptions};
use mls_rs::{CipherSuite, CipherSuiteProvider, Client, CryptoProvider, ExtensionList, MlsMessage};
use mls_rs_core::crypto::{SignaturePublicKey, SignatureSecretKey};
use mls_rs_core::group::{EpochRecord, GroupState, GroupStateStorage};
use mls_rs_core::key_package::{KeyPackageData, KeyPackageStorage};
use mls_rs_crypto_awslc::AwsLcCryptoProvider;
use rusqlite::{OptionalExtension, params};
use zeroize::Zeroizing;

use crate::store::Db;
use crate::{Error, Result};

/// The default ciphersuite: hybrid post-quantum ML-KEM-768 + X25519.
pub const DEFAULT_CIPHERSUITE: CipherSuite = CipherSuite::ML_KEM_768_X25519;

/// Exporter label for epoch tokens (DESIGN.md: "Membership without identities").
const TOKEN_LABEL: &[u8] = b"samizdat epoch token v1";
const TOKEN_LEN: usize = 32;

type Cfg = IntoConfigOutput<
    WithMlsRules<
        DefaultMlsRules,
        WithKeyPackageRepo<
            KeyPackageStore,
            WithGroupStateStorage<
                GroupStore,
                WithIdentityProvider<
                    BasicIdentityProvider,
                    WithCryptoProvider<AwsLcCryptoProvider, BaseConfig>,
                >,
            >,
        >,
    >,
>;

/// A storage failure inside an MLS callback.
#[derive(Debug, thiserror::Error)]
#[error("MLS storage: {0}")]
pub struct StorageError(String);

impl IntoAnyError for StorageError {
    fn into_dyn_error(self) -> std::result::Result<Box<dyn std::error::Error + Send + Sync>, Self> {
        Ok(Box::new(self))
    }
}

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> Self {
        StorageError(e.to_string())
    }
}

impl From<MlsError> for Error {
    fn from(e: MlsError) -> Self {
        Error::Mls(e.to_string())
    }
}

/// Samizdat's MLS rules: handshakes encrypted as PrivateMessage and padded (Padmé), the
/// ratchet tree in the Welcome, and a path in every commit (so trees fill in).
pub fn rules() -> DefaultMlsRules {
    DefaultMlsRules::new()
        .with_commit_options(
            CommitOptions::new()
                .with_ratchet_tree_extension(true)
                .with_path_required(true),
        )
        .with_encryption_options(EncryptionOptions::new(true, PaddingMode::Padme))
}

/// SHA-256 of a signature public key: how members are recognised.
pub fn fingerprint(signature_key: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, signature_key).as_ref());
    out
}

#[derive(Clone)]
pub struct GroupStore {
    db: Db,
}

impl GroupStateStorage for GroupStore {
    type Error = StorageError;

    fn state(
        &self,
        group_id: &[u8],
    ) -> std::result::Result<Option<Zeroizing<Vec<u8>>>, Self::Error> {
        let v: Option<Vec<u8>> = self
            .db
            .conn()
            .query_row(
                "SELECT state FROM mls_groups WHERE group_id = ?1",
                params![group_id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(v.map(Zeroizing::new))
    }

    fn epoch(
        &self,
        group_id: &[u8],
        epoch_id: u64,
    ) -> std::result::Result<Option<Zeroizing<Vec<u8>>>, Self::Error> {
        let v: Option<Vec<u8>> = self
            .db
            .conn()
            .query_row(
                "SELECT data FROM mls_epochs WHERE group_id = ?1 AND epoch_id = ?2",
                params![group_id, epoch_id as i64],
                |r| r.get(0),
            )
            .optional()?;
        Ok(v.map(Zeroizing::new))
    }

    fn write(
        &mut self,
        state: GroupState,
        inserts: Vec<EpochRecord>,
        updates: Vec<EpochRecord>,
    ) -> std::result::Result<(), Self::Error> {
        let conn = self.db.conn();
        // Part of the caller's transaction when there is one (Db::transaction); otherwise
        // SQLite makes each statement atomic and the savepoint makes the set atomic.
        conn.execute_batch("SAVEPOINT mls_write")?;
        let res = (|| -> rusqlite::Result<()> {
            conn.execute(
                "INSERT INTO mls_groups (group_id, state) VALUES (?1, ?2)
                 ON CONFLICT(group_id) DO UPDATE SET state = excluded.state",
                params![state.id, state.data.as_slice()],
            )?;
            for e in inserts.iter().chain(updates.iter()) {
                conn.execute(
                    "INSERT INTO mls_epochs (group_id, epoch_id, data) VALUES (?1, ?2, ?3)
                     ON CONFLICT(group_id, epoch_id) DO UPDATE SET data = excluded.data",
                    params![state.id, e.id as i64, e.data.as_slice()],
                )?;
            }
            // Keep only the most recent prior epochs (mls-rs' retention).
            conn.execute(
                "DELETE FROM mls_epochs WHERE group_id = ?1 AND epoch_id <
                   (SELECT COALESCE(MAX(epoch_id), 0) - 3 FROM mls_epochs WHERE group_id = ?1)",
                params![state.id],
            )?;
            Ok(())
        })();
        match res {
            Ok(()) => {
                conn.execute_batch("RELEASE mls_write")?;
                Ok(())
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK TO mls_write; RELEASE mls_write");
                Err(e.into())
            }
        }
    }

    fn max_epoch_id(&self, group_id: &[u8]) -> std::result::Result<Option<u64>, Self::Error> {
        let v: Option<i64> = self.db.conn().query_row(
            "SELECT MAX(epoch_id) FROM mls_epochs WHERE group_id = ?1",
            params![group_id],
            |r| r.get(0),
        )?;
        Ok(v.map(|v| v as u64))
    }
}

#[derive(Clone)]
pub struct KeyPackageStore {
    db: Db,
    /// Marks the next generated KeyPackage as the last resort (never deleted on use).
    next_is_last_resort: Arc<AtomicBool>,
}

impl KeyPackageStorage for KeyPackageStore {
    type Error = StorageError;

    fn delete(&mut self, id: &[u8]) -> std::result::Result<(), Self::Error> {
        self.db.conn().execute(
            "DELETE FROM mls_key_packages WHERE id = ?1 AND last_resort = 0",
            params![id],
        )?;
        Ok(())
    }

    fn insert(&mut self, id: Vec<u8>, pkg: KeyPackageData) -> std::result::Result<(), Self::Error> {
        let data = pkg
            .mls_encode_to_vec()
            .map_err(|e| StorageError(e.to_string()))?;
        let last_resort = self.next_is_last_resort.swap(false, Ordering::SeqCst);
        self.db.conn().execute(
            "INSERT INTO mls_key_packages (id, data, last_resort, expires_at) VALUES (?1, ?2, ?3, ?4)",
            params![id, data, last_resort as i64, pkg.expiration as i64],
        )?;
        Ok(())
    }

    fn get(&self, id: &[u8]) -> std::result::Result<Option<KeyPackageData>, Self::Error> {
        let v: Option<Vec<u8>> = self
            .db
            .conn()
            .query_row(
                "SELECT data FROM mls_key_packages WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()?;
        v.map(|d| {
            KeyPackageData::mls_decode(&mut d.as_slice()).map_err(|e| StorageError(e.to_string()))
        })
        .transpose()
    }
}

/// The device's MLS client.
pub struct Mls {
    client: Client<Cfg>,
    kp_store: KeyPackageStore,
    cipher_suite: CipherSuite,
}

/// A freshly generated signature key pair.
pub struct SignerKeys {
    pub secret: Zeroizing<Vec<u8>>,
    pub public: Vec<u8>,
}

fn provider() -> AwsLcCryptoProvider {
    AwsLcCryptoProvider::default()
}

/// Generate the device's MLS signature key pair for `cipher_suite`.
pub fn generate_signer(cipher_suite: CipherSuite) -> Result<SignerKeys> {
    let cs = provider()
        .cipher_suite_provider(cipher_suite)
        .ok_or_else(|| Error::Mls(format!("ciphersuite {cipher_suite:?} is not supported")))?;
    let (secret, public) = cs
        .signature_key_generate()
        .map_err(|e| Error::Mls(format!("{e:?}")))?;
    Ok(SignerKeys {
        secret: Zeroizing::new(secret.as_bytes().to_vec()),
        public: public.as_bytes().to_vec(),
    })
}

/// Fingerprint of the signer of a serialized KeyPackage message; checks it parses.
pub fn key_package_fingerprint(bytes: &[u8]) -> Result<[u8; 32]> {
    let msg = MlsMessage::from_bytes(bytes)
        .map_err(|e| Error::Protocol(format!("not an MLS message: {e}")))?;
    let kp = msg.into_key_package().ok_or_else(|| {
        Error::Protocol("the relay returned something that is not a KeyPackage".into())
    })?;
    Ok(fingerprint(kp.signing_identity().signature_key.as_bytes()))
}

impl Mls {
    pub fn new(db: Db, secret: &[u8], public: &[u8], cipher_suite: CipherSuite) -> Result<Mls> {
        let fp = fingerprint(public);
        let identity = SigningIdentity::new(
            BasicCredential::new(fp.to_vec()).into_credential(),
            SignaturePublicKey::new_slice(public),
        );
        let rules = rules();
        let kp_store = KeyPackageStore {
            db: db.clone(),
            next_is_last_resort: Arc::new(AtomicBool::new(false)),
        };
        let client = Client::builder()
            .crypto_provider(provider())
            .identity_provider(BasicIdentityProvider)
            .group_state_storage(GroupStore { db })
            .key_package_repo(kp_store.clone())
            .mls_rules(rules)
            .key_package_lifetime(std::time::Duration::from_secs(180 * 24 * 3600))
            .signing_identity(
                identity,
                SignatureSecretKey::new_slice(secret),
                cipher_suite,
            )
            .build();
        Ok(Mls {
            client,
            kp_store,
            cipher_suite,
        })
    }

    pub fn cipher_suite(&self) -> CipherSuite {
        self.cipher_suite
    }

    /// A new KeyPackage (serialized MLS message); its private keys go to the store.
    pub fn key_package(&self, last_resort: bool) -> Result<Vec<u8>> {
        self.kp_store
            .next_is_last_resort
            .store(last_resort, Ordering::SeqCst);
        let msg = self.client.generate_key_package_message(
            ExtensionList::new(),
            ExtensionList::new(),
            None,
        );
        self.kp_store
            .next_is_last_resort
            .store(false, Ordering::SeqCst);
        Ok(msg?.to_bytes()?)
    }

    pub fn create_group(&self, group_id: &[u8]) -> Result<Group> {
        let g = self.client.create_group_with_id(
            group_id.to_vec(),
            ExtensionList::new(),
            ExtensionList::new(),
            None,
        )?;
        Ok(Group { inner: g })
    }

    pub fn load(&self, group_id: &[u8]) -> Result<Group> {
        Ok(Group {
            inner: self.client.load_group(group_id)?,
        })
    }

    /// Join from a serialized Welcome. Returns the group (its id is the conversation id)
    /// and the fingerprint of the member whose commit added us. Nothing is stored until the
    /// caller saves the group (the KeyPackage stays usable if it does not).
    pub fn join(&self, welcome: &[u8]) -> Result<(Group, [u8; 32])> {
        let msg = MlsMessage::from_bytes(welcome)
            .map_err(|e| Error::Protocol(format!("malformed Welcome: {e}")))?;
        let (g, info) = self.client.join_group(None, &msg, None)?;
        let committer = g
            .roster()
            .member_with_index(info.sender)
            .map(|m| fingerprint(m.signing_identity.signature_key.as_bytes()))
            .map_err(|_| Error::Protocol("the Welcome names no committer".into()))?;
        Ok((Group { inner: g }, committer))
    }
}

/// What processing one log entry did.
#[derive(Debug)]
pub enum Incoming {
    Application {
        sender: [u8; 32],
        data: Vec<u8>,
    },
    /// A commit moved the group to `epoch`; `removed` if it removed this device.
    Commit {
        epoch: u64,
        removed: bool,
        /// Key fingerprint of the member who committed (unknown once we are removed).
        committer: Option<[u8; 32]>,
    },
    /// A proposal or anything else that changes nothing visible.
    Other,
}

/// A commit ready to send: the log entry and the Welcome for new members (if any).
pub struct PendingCommit {
    pub commit: Vec<u8>,
    pub welcome: Option<Vec<u8>>,
}

pub struct Member {
    pub index: u32,
    pub fingerprint: [u8; 32],
}

pub struct Group {
    inner: mls_rs::Group<Cfg>,
}

impl Group {
    pub fn id(&self) -> &[u8] {
        self.inner.group_id()
    }

    pub fn epoch(&self) -> u64 {
        self.inner.current_epoch()
    }

    /// This epoch's token for the relay (DESIGN.md): from the MLS exporter secret.
    pub fn token(&self) -> Result<Vec<u8>> {
        Ok(self
            .inner
            .export_secret(TOKEN_LABEL, self.inner.group_id(), TOKEN_LEN)?
            .as_bytes()
            .to_vec())
    }

    pub fn own_fingerprint(&self) -> Result<[u8; 32]> {
        Ok(fingerprint(
            self.inner
                .current_member_signing_identity()?
                .signature_key
                .as_bytes(),
        ))
    }

    pub fn members(&self) -> Vec<Member> {
        self.inner
            .roster()
            .members()
            .into_iter()
            .map(|m| Member {
                index: m.index,
                fingerprint: fingerprint(m.signing_identity.signature_key.as_bytes()),
            })
            .collect()
    }

    pub fn encrypt(&mut self, data: &[u8]) -> Result<Vec<u8>> {
        Ok(self
            .inner
            .encrypt_application_message(data, Vec::new())?
            .to_bytes()?)
    }

    /// Build (but do not apply) a commit adding these KeyPackages and removing these members.
    pub fn commit(&mut self, add: &[Vec<u8>], remove: &[u32]) -> Result<PendingCommit> {
        let mut b = self.inner.commit_builder();
        for kp in add {
            let msg = MlsMessage::from_bytes(kp)
                .map_err(|e| Error::Protocol(format!("malformed KeyPackage: {e}")))?;
            b = b.add_member(msg)?;
        }
        for idx in remove {
            b = b.remove_member(*idx)?;
        }
        let out = b.build()?;
        let welcome = out
            .welcome_messages
            .first()
            .map(|w| w.to_bytes())
            .transpose()?;
        Ok(PendingCommit {
            commit: out.commit_message.to_bytes()?,
            welcome,
        })
    }

    pub fn apply_pending_commit(&mut self) -> Result<()> {
        self.inner.apply_pending_commit()?;
        Ok(())
    }

    /// Whether a commit of ours is built (and stored) but not yet applied.
    pub fn has_pending_commit(&self) -> bool {
        self.inner.has_pending_commit()
    }

    pub fn clear_pending_commit(&mut self) {
        self.inner.clear_pending_commit();
    }

    /// Decrypt and process one log entry.
    pub fn process(&mut self, bytes: &[u8]) -> Result<Incoming> {
        let msg = MlsMessage::from_bytes(bytes)
            .map_err(|e| Error::Protocol(format!("malformed MLS message: {e}")))?;
        match self.inner.process_incoming_message(msg)? {
            ReceivedMessage::ApplicationMessage(app) => {
                let sender = self
                    .inner
                    .member_at_index(app.sender_index)
                    .map(|m| fingerprint(m.signing_identity.signature_key.as_bytes()))
                    .ok_or_else(|| Error::Protocol("message from an unknown member".into()))?;
                Ok(Incoming::Application {
                    sender,
                    data: app.data().to_vec(),
                })
            }
            ReceivedMessage::Commit(c) => {
                let removed = matches!(c.effect, CommitEffect::Removed { .. });
                let committer = self
                    .inner
                    .member_at_index(c.committer)
                    .map(|m| fingerprint(m.signing_identity.signature_key.as_bytes()));
                Ok(Incoming::Commit {
                    epoch: self.inner.current_epoch(),
                    removed,
                    committer,
                })
            }
            _ => Ok(Incoming::Other),
        }
    }

    /// Persist the group state (inside the caller's transaction, if any).
    pub fn save(&mut self) -> Result<()> {
        self.inner.write_to_storage()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(dir: &std::path::Path, name: &str) -> Mls {
        let db = Db::open(&dir.join(format!("{name}.db")), "test passphrase").unwrap();
        let keys = generate_signer(DEFAULT_CIPHERSUITE).unwrap();
        Mls::new(db, &keys.secret, &keys.public, DEFAULT_CIPHERSUITE).unwrap()
    }

    #[test]
    fn huge_generation_jumps_are_refused_small_ones_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let (alice, bob) = (member(dir.path(), "alice"), member(dir.path(), "bob"));
        let mut a = alice.create_group(&[1; 16]).unwrap();
        let kp = bob.key_package(false).unwrap();
        let pending = a.commit(&[kp], &[]).unwrap();
        a.apply_pending_commit().unwrap();
        let (mut b, _) = bob.join(&pending.welcome.unwrap()).unwrap();
        assert_eq!(
            a.token().unwrap(),
            b.token().unwrap(),
            "both derive the same epoch token"
        );

        // A gap of 10 messages (lost or withheld by the relay) is fine.
        let mut last = Vec::new();
        for _ in 0..10 {
            last = a.encrypt(b"skipped").unwrap();
        }
        assert!(matches!(
            b.process(&last).unwrap(),
            Incoming::Application { .. }
        ));
        // A jump beyond mls-rs' bound (1,024 generations) is refused without work or memory
        // proportional to the claimed generation.
        for _ in 0..1100 {
            last = a.encrypt(b"flood").unwrap();
        }
        assert!(b.process(&last).is_err());
        // The refusal is sticky for that sender's chain in this epoch (mls-rs keeps no key
        // that far ahead), but the group still works: the other direction decrypts, and after
        // the next commit (a fresh epoch, fresh chains) so does the flooding sender.
        match a.process(&b.encrypt(b"from bob").unwrap()) {
            Ok(Incoming::Application { data, .. }) => assert_eq!(data, b"from bob"),
            other => panic!("bob's messages no longer decrypt: {other:?}"),
        }
        let update = a.commit(&[], &[]).unwrap();
        a.apply_pending_commit().unwrap();
        assert!(matches!(
            b.process(&update.commit).unwrap(),
            Incoming::Commit { removed: false, .. }
        ));
        let next = a.encrypt(b"after").unwrap();
        match b.process(&next) {
            Ok(Incoming::Application { data, .. }) => assert_eq!(data, b"after"),
            other => panic!("the group no longer works after a refused flood: {other:?}"),
        }
    }

    #[test]
    fn removed_member_cannot_derive_the_next_token() {
        let dir = tempfile::tempdir().unwrap();
        let (alice, bob) = (member(dir.path(), "alice"), member(dir.path(), "bob"));
        let mut a = alice.create_group(&[2; 16]).unwrap();
        let pending = a.commit(&[bob.key_package(false).unwrap()], &[]).unwrap();
        a.apply_pending_commit().unwrap();
        let (mut b, _) = bob.join(&pending.welcome.unwrap()).unwrap();
        let bob_index = a
            .members()
            .iter()
            .find(|m| m.fingerprint != a.own_fingerprint().unwrap())
            .unwrap()
            .index;
        let removal = a.commit(&[], &[bob_index]).unwrap();
        a.apply_pending_commit().unwrap();
        match b.process(&removal.commit).unwrap() {
            Incoming::Commit { removed, .. } => assert!(removed),
            other => panic!("{other:?}"),
        }
        let secret = a.encrypt(b"after removal").unwrap();
        assert!(b.process(&secret).is_err());
    }

    #[test]
    fn a_fork_is_reported_not_fatal() {
        // A dishonest relay hands carol a different commit for the same epoch than the one
        // alice and bob applied. Carol's state diverges: everything after fails to decrypt
        // (reported to the user as rejected entries), nothing panics, nothing is displayed.
        let dir = tempfile::tempdir().unwrap();
        let (alice, bob, carol) = (
            member(dir.path(), "a"),
            member(dir.path(), "b"),
            member(dir.path(), "c"),
        );
        let mut a = alice.create_group(&[3; 16]).unwrap();
        let kps = vec![
            bob.key_package(false).unwrap(),
            carol.key_package(false).unwrap(),
        ];
        let pending = a.commit(&kps, &[]).unwrap();
        a.apply_pending_commit().unwrap();
        let welcome = pending.welcome.unwrap();
        let (mut b, _) = bob.join(&welcome).unwrap();
        let (mut c, _) = carol.join(&welcome).unwrap();
        // Two commits for the same epoch: alice's (accepted by the honest log) and bob's.
        let from_alice = a.commit(&[], &[]).unwrap();
        let from_bob = b.commit(&[], &[]).unwrap();
        a.apply_pending_commit().unwrap();
        b.clear_pending_commit();
        b.process(&from_alice.commit).unwrap();
        c.process(&from_bob.commit).unwrap(); // the fork
        assert_eq!(a.token().unwrap(), b.token().unwrap());
        assert_ne!(
            a.token().unwrap(),
            c.token().unwrap(),
            "the forked member derives another token"
        );
        let msg = a.encrypt(b"on the honest branch").unwrap();
        assert!(matches!(
            b.process(&msg).unwrap(),
            Incoming::Application { .. }
        ));
        assert!(c.process(&msg).is_err());
    }
}
