//! The one module that knows mls-rs. Everything else in the core speaks in bytes, epochs and
//! fingerprints, so the MLS library could be swapped behind this file.
//!
//! - Crypto: `mls-rs-crypto-awslc`; default ciphersuite the hybrid post-quantum
//!   `ML_KEM_768_X25519`.
//! - Handshake messages are encrypted (PrivateMessage) and padded (Padmé).
//! - Credentials are basic credentials whose identifier is the fingerprint (SHA-256) of the
//!   member's signature key: pseudonymous, never a name.
//! - State lives in the profile's SQLCipher database through the storage providers below.
//!   The ratchet tree (the bulk of a large group's state) is stored once per epoch in
//!   `mls_trees`, apart from the small per-message state in `mls_groups`; see [`Group::save`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use aws_lc_rs::digest;
use mls_rs::client_builder::{
    BaseConfig, IntoConfigOutput, PaddingMode, WithCryptoProvider, WithGroupStateStorage,
    WithIdentityProvider, WithKeyPackageRepo, WithMlsRules,
};
use mls_rs::error::{IntoAnyError, MlsError};
use mls_rs::group::{CommitEffect, ExportedTree, ReceivedMessage};
use mls_rs::identity::SigningIdentity;
use mls_rs::identity::basic::BasicCredential;

use crate::device::{DeviceIdentityProvider, person_of};
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
use crate::welcome::{JoinInfo, SplitWelcome};
use crate::{Error, Result};

/// The default ciphersuite: hybrid post-quantum ML-KEM-768 + X25519.
pub const DEFAULT_CIPHERSUITE: CipherSuite = CipherSuite::ML_KEM_768_X25519;

/// Exporter label for epoch tokens (docs/PROTOCOL.md: epoch tokens).
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
                    DeviceIdentityProvider,
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
/// ratchet tree out of band (sealed once per commit, see `crate::welcome`), and a path in
/// every commit (so trees fill in).
pub fn rules() -> DefaultMlsRules {
    DefaultMlsRules::new()
        .with_commit_options(
            CommitOptions::new()
                .with_ratchet_tree_extension(false)
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

/// Bases kept in memory at most (bytes); past this the cache starts over. The database is
/// the truth: a cached base is used only while the stored one has the same id.
const BASE_CACHE_BYTES: usize = 256 << 20;
/// A change this small (or up to a quarter of the snapshot) is stored as a difference from
/// the base; a larger one (a new epoch) writes a new base.
const SMALL_CHANGE: usize = 4 << 10;

/// The snapshots written last per group, by base id (see migration 11).
type BaseCache = Arc<Mutex<HashMap<Vec<u8>, (Vec<u8>, Arc<Zeroizing<Vec<u8>>>)>>>;

#[derive(Clone)]
pub struct GroupStore {
    db: Db,
    bases: BaseCache,
}

impl GroupStore {
    /// The stored base of `group_id`, if any: from memory when the cached copy is the stored
    /// one (same id), otherwise read (and cached).
    fn base(
        &self,
        group_id: &[u8],
    ) -> rusqlite::Result<Option<(Vec<u8>, Arc<Zeroizing<Vec<u8>>>)>> {
        let id: Option<Vec<u8>> = self
            .db
            .conn()
            .query_row(
                "SELECT base_id FROM mls_state_bases WHERE group_id = ?1",
                params![group_id],
                |r| r.get(0),
            )
            .optional()?;
        let Some(id) = id else { return Ok(None) };
        if let Some((cached_id, base)) = self.cache().get(group_id)
            && *cached_id == id
        {
            return Ok(Some((id, base.clone())));
        }
        let base: Vec<u8> = self.db.conn().query_row(
            "SELECT base FROM mls_state_bases WHERE group_id = ?1",
            params![group_id],
            |r| r.get(0),
        )?;
        let base = Arc::new(Zeroizing::new(base));
        self.remember(group_id, &id, base.clone());
        Ok(Some((id, base)))
    }

    fn cache(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, (Vec<u8>, Arc<Zeroizing<Vec<u8>>>)>> {
        self.bases.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember(&self, group_id: &[u8], id: &[u8], base: Arc<Zeroizing<Vec<u8>>>) {
        let mut cache = self.cache();
        cache.remove(group_id);
        let held: usize = cache.values().map(|(_, b)| b.len()).sum();
        if held + base.len() > BASE_CACHE_BYTES {
            cache.clear();
        }
        cache.insert(group_id.to_vec(), (id.to_vec(), base));
    }
}

/// The group state as mls-rs encodes it (its `Snapshot`), minus the ratchet tree's index.
///
/// `write_to_storage_without_ratchet_tree` leaves the tree's nodes out but keeps the index
/// mls-rs builds over them (`tree_index`): every member's HPKE key, signature key and
/// identity. With ML-KEM-768 keys that is ~1.3 KiB per member — 14 MB at 10,000 members,
/// as large as the tree it duplicates, written again at every epoch. mls-rs rebuilds an
/// empty index from the tree when it loads a state (`initialize_index_if_necessary`), so
/// the state is stored with the index's five maps emptied.
///
/// The layout walked here is mls-rs 0.57's (`Snapshot` version 1: version, group context,
/// the two proposal maps, then the tree's index maps, then its nodes — empty in a state
/// written without the tree). Anything else is stored whole (`None`): bigger, never wrong.
/// `mls::tests::a_state_stored_without_its_tree_index_reloads_to_the_same_state` checks
/// that the reloaded group encodes to the very same full state.
/// Upstream fix: leave the index out in `write_to_storage_without_ratchet_tree` itself.
fn without_tree_index(snapshot: &[u8]) -> Option<Vec<u8>> {
    use mls_rs::mls_rs_codec::VarInt;
    fn skip_collection(r: &mut &[u8]) -> Option<()> {
        let len = usize::try_from(u32::from(VarInt::mls_decode(r).ok()?)).ok()?;
        *r = r.get(len..)?;
        Some(())
    }
    let mut r = snapshot;
    if u16::mls_decode(&mut r).ok()? != 1 {
        return None;
    }
    mls_rs::group::GroupContext::mls_decode(&mut r).ok()?;
    skip_collection(&mut r)?; // proposals
    skip_collection(&mut r)?; // own proposals
    let index_start = snapshot.len() - r.len();
    for _ in 0..5 {
        skip_collection(&mut r)?; // signature keys, HPKE keys, identities, two counters
    }
    let index_end = snapshot.len() - r.len();
    // The nodes follow, empty (a zero length): otherwise this is not the layout above.
    if r.first() != Some(&0) {
        return None;
    }
    let mut out = Vec::with_capacity(snapshot.len() - (index_end - index_start) + 5);
    out.extend_from_slice(&snapshot[..index_start]);
    out.extend_from_slice(&[0; 5]);
    out.extend_from_slice(&snapshot[index_end..]);
    Some(out)
}

/// Length of the common prefix of two byte strings.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    // Compare in blocks first (memcmp), then bytes within the first differing block.
    const BLOCK: usize = 4096;
    let mut i = 0;
    while i + BLOCK <= n && a[i..i + BLOCK] == b[i..i + BLOCK] {
        i += BLOCK;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

impl GroupStateStorage for GroupStore {
    type Error = StorageError;

    fn state(
        &self,
        group_id: &[u8],
    ) -> std::result::Result<Option<Zeroizing<Vec<u8>>>, Self::Error> {
        let row: Option<(Vec<u8>, Option<Vec<u8>>, Option<i64>)> = self
            .db
            .conn()
            .query_row(
                "SELECT state, base_id, base_len FROM mls_groups WHERE group_id = ?1",
                params![group_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((state, base_id, base_len)) = row else {
            return Ok(None);
        };
        let state = Zeroizing::new(state);
        let (Some(base_id), Some(base_len)) = (base_id, base_len) else {
            return Ok(Some(state));
        };
        // Written in one savepoint with the row, so the base is the one named; anything
        // else is a damaged database, never something to run on.
        let base = self
            .base(group_id)?
            .filter(|(id, b)| *id == base_id && base_len >= 0 && b.len() >= base_len as usize)
            .ok_or_else(|| StorageError("the group state's base is missing or not its own".into()))?
            .1;
        let mut full = Zeroizing::new(Vec::with_capacity(base_len as usize + state.len()));
        full.extend_from_slice(&base[..base_len as usize]);
        full.extend_from_slice(&state);
        Ok(Some(full))
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
        drop(conn);
        let res = (|| -> rusqlite::Result<()> {
            // Only what changed since the base, when that is small (a message); otherwise
            // (a new epoch) this snapshot becomes the base.
            let base = self.base(&state.id)?;
            #[cfg(test)]
            tests::LAST_FULL_STATE.with(|l| *l.borrow_mut() = state.data.to_vec());
            let stripped = without_tree_index(&state.data).map(Zeroizing::new);
            let data = stripped
                .as_deref()
                .map_or(state.data.as_slice(), |d| d.as_slice());
            let small = SMALL_CHANGE.max(data.len() / 4);
            let delta = base.and_then(|(id, b)| {
                let prefix = common_prefix(&b, data);
                (data.len() - prefix <= small).then_some((id, prefix))
            });
            match delta {
                Some((base_id, prefix)) => {
                    self.db.conn().execute(
                        "INSERT INTO mls_groups (group_id, state, base_id, base_len) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT(group_id) DO UPDATE SET state = excluded.state,
                             base_id = excluded.base_id, base_len = excluded.base_len",
                        params![state.id, &data[prefix..], base_id, prefix as i64],
                    )?;
                }
                _ => {
                    let base_id = crate::random_id().as_bytes().to_vec();
                    let conn = self.db.conn();
                    conn.execute(
                        "INSERT INTO mls_state_bases (group_id, base_id, base) VALUES (?1, ?2, ?3)
                         ON CONFLICT(group_id) DO UPDATE SET base_id = excluded.base_id, base = excluded.base",
                        params![state.id, base_id, data],
                    )?;
                    conn.execute(
                        "INSERT INTO mls_groups (group_id, state, base_id, base_len) VALUES (?1, x'', ?2, ?3)
                         ON CONFLICT(group_id) DO UPDATE SET state = excluded.state,
                             base_id = excluded.base_id, base_len = excluded.base_len",
                        params![state.id, base_id, data.len() as i64],
                    )?;
                    drop(conn);
                    self.remember(&state.id, &base_id, Arc::new(Zeroizing::new(data.to_vec())));
                }
            }
            let conn = self.db.conn();
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
        let conn = self.db.conn();
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
    db: Db,
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
    person_of(kp.signing_identity())
}

/// The person and the device key fingerprint of a serialized KeyPackage.
pub fn key_package_signer(bytes: &[u8]) -> Result<([u8; 32], [u8; 32])> {
    let msg = MlsMessage::from_bytes(bytes)
        .map_err(|e| Error::Protocol(format!("not an MLS message: {e}")))?;
    let kp = msg
        .into_key_package()
        .ok_or_else(|| Error::Protocol("not a KeyPackage".into()))?;
    let si = kp.signing_identity();
    Ok((person_of(si)?, fingerprint(si.signature_key.as_bytes())))
}

/// The person a (validated) member belongs to; its own key's fingerprint if the credential
/// does not say (mls-rs refuses such members, see [`crate::device::DeviceIdentityProvider`]).
fn person(si: &SigningIdentity) -> [u8; 32] {
    person_of(si).unwrap_or_else(|_| fingerprint(si.signature_key.as_bytes()))
}

impl Mls {
    /// The device's MLS client; `cert` is its [`crate::device::DeviceCert`] when the device
    /// does not hold the identity key (a linked device).
    pub fn new(
        db: Db,
        secret: &[u8],
        public: &[u8],
        cipher_suite: CipherSuite,
        cert: Option<&[u8]>,
    ) -> Result<Mls> {
        let identity = SigningIdentity::new(
            BasicCredential::new(crate::device::credential_identifier(public, cert))
                .into_credential(),
            SignaturePublicKey::new_slice(public),
        );
        let rules = rules();
        let kp_store = KeyPackageStore {
            db: db.clone(),
            next_is_last_resort: Arc::new(AtomicBool::new(false)),
        };
        let client = Client::builder()
            .crypto_provider(provider())
            .identity_provider(DeviceIdentityProvider)
            .group_state_storage(GroupStore {
                db: db.clone(),
                bases: BaseCache::default(),
            })
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
            db,
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
        Ok(self.group(g))
    }

    fn group(&self, inner: mls_rs::Group<Cfg>) -> Group {
        Group {
            inner,
            db: self.db.clone(),
        }
    }

    /// Load a stored group: its state and, when stored apart (version 11 on), its epoch's
    /// ratchet tree.
    pub fn load(&self, group_id: &[u8]) -> Result<Group> {
        let stored: Option<(Vec<u8>, Vec<u8>)> = self
            .db
            .conn()
            .query_row(
                "SELECT tree_hash, tree FROM mls_trees WHERE group_id = ?1",
                params![group_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let inner = match stored {
            None => self.client.load_group(group_id)?,
            Some((tree_hash, tree)) => {
                let tree = ExportedTree::mls_decode(&mut tree.as_slice())
                    .map_err(|e| Error::Storage(format!("stored ratchet tree: {e}")))?;
                let g = self.client.load_group_with_ratchet_tree(group_id, tree)?;
                // Both are written in one transaction (Group::save), so they always match;
                // a mismatch means a damaged database, never something to run on.
                if g.context().tree_hash != tree_hash {
                    return Err(Error::Storage(
                        "the stored ratchet tree is not the group state's".into(),
                    ));
                }
                g
            }
        };
        Ok(self.group(inner))
    }

    /// Read a Welcome without its ratchet tree: decrypted with our KeyPackage, and its
    /// GroupInfo's signature checked against the committer its [`JoinInfo`] names. This is
    /// what an invitation is screened on before anything is fetched from the group's relay.
    pub fn examine(&self, welcome: &[u8]) -> Result<WelcomeSeen> {
        let msg = MlsMessage::from_bytes(welcome)
            .map_err(|e| Error::Protocol(format!("malformed Welcome: {e}")))?;
        let info = self.client.examine_welcome_message(&msg)?;
        let join = info
            .extensions()
            .get_as::<JoinInfo>()
            .map_err(|e| Error::Protocol(format!("malformed join information: {e}")))?
            .ok_or_else(|| {
                Error::Protocol(
                    "the Welcome carries neither its ratchet tree nor where it is".into(),
                )
            })?;
        // The GroupInfo as an MLS message (version, wire format 4, GroupInfo) for mls-rs'
        // own signature check.
        let mut framed = welcome
            .get(..2)
            .ok_or_else(|| Error::Protocol("malformed Welcome".into()))?
            .to_vec();
        4u16.mls_encode(&mut framed)
            .and_then(|()| info.mls_encode(&mut framed))
            .map_err(|e| Error::Protocol(format!("cannot frame the GroupInfo: {e}")))?;
        let framed = MlsMessage::from_bytes(&framed)
            .map_err(|e| Error::Protocol(format!("cannot frame the GroupInfo: {e}")))?;
        self.client
            .validate_group_info(&framed, &join.committer)
            .map_err(|e| {
                Error::Protocol(format!(
                    "the Welcome is not signed by the member it names: {e}"
                ))
            })?;
        let place = info
            .extensions()
            .get_as::<crate::welcome::JoinPlace>()
            .ok()
            .flatten();
        Ok(WelcomeSeen {
            place,
            group_id: info.group_context().group_id.clone(),
            epoch: info.group_context().epoch,
            committer: person_of(&join.committer)?,
            committer_device: fingerprint(join.committer.signature_key.as_bytes()),
            members: join.members,
            tree_key: Zeroizing::new(join.tree_key),
        })
    }

    /// Join from a serialized Welcome and, for a Welcome without its tree, the sealed tree
    /// it names (see `crate::welcome`). Returns the group (its id is the conversation id)
    /// and the fingerprint of the member whose commit added us. Nothing is stored until the
    /// caller saves the group (the KeyPackage stays usable if it does not).
    pub fn join(&self, welcome: &[u8], sealed_tree: Option<&[u8]>) -> Result<(Group, [u8; 32])> {
        self.join_seen(welcome, sealed_tree)
            .map(|(g, committer, _)| (g, committer))
    }

    /// [`Mls::join`], also returning the fingerprint of the committer's device key.
    pub fn join_seen(
        &self,
        welcome: &[u8],
        sealed_tree: Option<&[u8]>,
    ) -> Result<(Group, [u8; 32], [u8; 32])> {
        let msg = MlsMessage::from_bytes(welcome)
            .map_err(|e| Error::Protocol(format!("malformed Welcome: {e}")))?;
        let (tree, named) = match sealed_tree {
            None => (None, None),
            Some(sealed) => {
                let seen = self.examine(welcome)?;
                let plain = crate::welcome::open_tree(&seen.tree_key, sealed)?;
                let tree = ExportedTree::mls_decode(&mut plain.as_slice())
                    .map_err(|e| Error::Protocol(format!("malformed ratchet tree: {e}")))?;
                (Some(tree.into_owned()), Some(seen.committer))
            }
        };
        let (g, info) = self.client.join_group(tree, &msg, None)?;
        let (committer, device) = g
            .roster()
            .member_with_index(info.sender)
            .map(|m| {
                (
                    person(&m.signing_identity),
                    fingerprint(m.signing_identity.signature_key.as_bytes()),
                )
            })
            .map_err(|_| Error::Protocol("the Welcome names no committer".into()))?;
        if named.is_some_and(|n| n != committer) {
            return Err(Error::Protocol(
                "the Welcome's committer is not the member its join information names".into(),
            ));
        }
        Ok((self.group(g), committer, device))
    }
}

/// What a Welcome says before its group is joined (see [`Mls::examine`]).
pub struct WelcomeSeen {
    /// Where the group lives, as the committer signed it (committers before this field:
    /// `None`).
    pub place: Option<crate::welcome::JoinPlace>,
    pub group_id: Vec<u8>,
    pub epoch: u64,
    /// Fingerprint of the committer, whose signature was checked.
    pub committer: [u8; 32],
    /// Fingerprint of the committer's own device key.
    pub committer_device: [u8; 32],
    /// Members of the group, as the committer states them.
    pub members: u32,
    tree_key: Zeroizing<Vec<u8>>,
}

/// What processing one log entry did.
#[derive(Debug)]
pub enum Incoming {
    Application {
        sender: [u8; 32],
        /// The sending member's own device key fingerprint.
        sender_device: [u8; 32],
        data: Vec<u8>,
    },
    /// A commit moved the group to `epoch`; `removed` if it removed this device.
    Commit {
        epoch: u64,
        removed: bool,
        /// Key fingerprint of the member who committed (unknown once we are removed).
        committer: Option<[u8; 32]>,
        /// That member's device key fingerprint.
        committer_device: Option<[u8; 32]>,
    },
    /// A proposal or anything else that changes nothing visible.
    Other,
}

/// A commit ready to send: the log entry and, if it adds members, what they need to join.
pub struct PendingCommit {
    pub commit: Vec<u8>,
    pub welcome: Option<NewMembers>,
}

/// A commit's Welcome, split to be stored once (see `crate::welcome`).
pub struct NewMembers {
    /// The new epoch's ratchet tree, sealed: one blob for all new members.
    pub sealed_tree: Vec<u8>,
    /// One complete Welcome (that member's secrets, no tree) per added KeyPackage, in the
    /// order they were given.
    pub welcomes: Vec<Vec<u8>>,
}

pub struct Member {
    pub index: u32,
    /// The person (identity fingerprint): one person may be several members.
    pub fingerprint: [u8; 32],
    /// This member's own signature key fingerprint (the device).
    pub device: [u8; 32],
}

pub struct Group {
    inner: mls_rs::Group<Cfg>,
    db: Db,
}

impl Group {
    pub fn id(&self) -> &[u8] {
        self.inner.group_id()
    }

    pub fn epoch(&self) -> u64 {
        self.inner.current_epoch()
    }

    /// This epoch's token for the relay (docs/PROTOCOL.md): from the MLS exporter secret.
    /// This epoch's token for the relay (an MLS exporter secret); overwritten when dropped
    /// (security review 3, L5).
    pub fn token(&self) -> Result<zeroize::Zeroizing<Vec<u8>>> {
        Ok(zeroize::Zeroizing::new(
            self.inner
                .export_secret(TOKEN_LABEL, self.inner.group_id(), TOKEN_LEN)?
                .as_bytes()
                .to_vec(),
        ))
    }

    /// The person this device belongs to (tests and benchmarks).
    #[cfg(any(test, feature = "internals"))]
    pub fn own_fingerprint(&self) -> Result<[u8; 32]> {
        Ok(person(self.inner.current_member_signing_identity()?))
    }

    /// This device's leaf index.
    pub fn own_index(&self) -> u32 {
        self.inner.current_member_index()
    }

    pub fn members(&self) -> Vec<Member> {
        self.inner
            .roster()
            .members()
            .into_iter()
            .map(|m| Member {
                index: m.index,
                fingerprint: person(&m.signing_identity),
                device: fingerprint(m.signing_identity.signature_key.as_bytes()),
            })
            .collect()
    }

    /// The people of the group: one entry per person (their first leaf), however many
    /// devices they have.
    pub fn people(&self) -> Vec<Member> {
        let mut seen = std::collections::HashSet::new();
        self.members()
            .into_iter()
            .filter(|m| seen.insert(m.fingerprint))
            .collect()
    }

    pub fn encrypt(&mut self, data: &[u8]) -> Result<Vec<u8>> {
        Ok(self
            .inner
            .encrypt_application_message(data, Vec::new())?
            .to_bytes()?)
    }

    /// Build (but do not apply) a commit adding these KeyPackages and removing these members
    /// (tests and benchmarks; the profile places its commits with `commit_placed`).
    #[cfg(any(test, feature = "internals"))]
    pub fn commit(&mut self, add: &[Vec<u8>], remove: &[u32]) -> Result<PendingCommit> {
        self.commit_placed(add, remove, None)
    }

    /// [`Group::commit`], with where the group lives (relay, log id) signed into the
    /// GroupInfo for the new members (see [`crate::welcome::JoinPlace`]).
    pub fn commit_placed(
        &mut self,
        add: &[Vec<u8>],
        remove: &[u32],
        place: Option<crate::welcome::JoinPlace>,
    ) -> Result<PendingCommit> {
        let committer = self.inner.current_member_signing_identity()?.clone();
        let size = self.inner.roster().members_iter().count();
        let cs = provider()
            .cipher_suite_provider(self.inner.cipher_suite())
            .ok_or_else(|| Error::Mls("unsupported ciphersuite".into()))?;
        let mut b = self.inner.commit_builder();
        let mut tree_key = None;
        let mut refs = Vec::with_capacity(add.len());
        if !add.is_empty() {
            let mut key = Zeroizing::new(vec![0u8; 32]);
            aws_lc_rs::rand::fill(&mut key)
                .map_err(|_| Error::Crypto("the system random number generator failed".into()))?;
            let mut ext = ExtensionList::new();
            ext.set_from(JoinInfo {
                tree_key: key.to_vec(),
                committer,
                members: (size + add.len()).saturating_sub(remove.len()) as u32,
            })
            .map_err(|e| Error::Mls(e.to_string()))?;
            if let Some(place) = place {
                ext.set_from(place).map_err(|e| Error::Mls(e.to_string()))?;
            }
            b = b.set_group_info_ext(ext);
            tree_key = Some(key);
        }
        for kp in add {
            let msg = MlsMessage::from_bytes(kp)
                .map_err(|e| Error::Protocol(format!("malformed KeyPackage: {e}")))?;
            let r = msg
                .key_package_reference(&cs)?
                .ok_or_else(|| Error::Protocol("not a KeyPackage".into()))?;
            refs.push(r.to_vec());
            b = b.add_member(msg)?;
        }
        for idx in remove {
            b = b.remove_member(*idx)?;
        }
        let out = b.build()?;
        let welcome = match (out.welcome_messages.first(), &out.ratchet_tree, tree_key) {
            (None, _, _) => None,
            (Some(w), Some(tree), Some(key)) => {
                let split = SplitWelcome::parse(&w.to_bytes()?)?;
                let tree = Zeroizing::new(
                    tree.mls_encode_to_vec()
                        .map_err(|e| Error::Mls(format!("cannot encode the ratchet tree: {e}")))?,
                );
                Some(NewMembers {
                    sealed_tree: crate::welcome::seal_tree(&key, &tree)?,
                    welcomes: refs
                        .iter()
                        .map(|r| split.for_member(r))
                        .collect::<Result<_>>()?,
                })
            }
            _ => {
                return Err(Error::Mls(
                    "the commit's Welcome came without its ratchet tree".into(),
                ));
            }
        };
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
                let (sender, sender_device) = self
                    .inner
                    .member_at_index(app.sender_index)
                    .map(|m| {
                        (
                            person(&m.signing_identity),
                            fingerprint(m.signing_identity.signature_key.as_bytes()),
                        )
                    })
                    .ok_or_else(|| Error::Protocol("message from an unknown member".into()))?;
                Ok(Incoming::Application {
                    sender,
                    sender_device,
                    data: app.data().to_vec(),
                })
            }
            ReceivedMessage::Commit(c) => {
                let removed = matches!(c.effect, CommitEffect::Removed { .. });
                let member = self.inner.member_at_index(c.committer);
                let committer = member.as_ref().map(|m| person(&m.signing_identity));
                let committer_device = member
                    .as_ref()
                    .map(|m| fingerprint(m.signing_identity.signature_key.as_bytes()));
                Ok(Incoming::Commit {
                    epoch: self.inner.current_epoch(),
                    removed,
                    committer,
                    committer_device,
                })
            }
            _ => Ok(Incoming::Other),
        }
    }

    /// Persist the group state (inside the caller's transaction, if any).
    ///
    /// The ratchet tree is written only when it is not the stored one (a new epoch, a join, a
    /// state saved before version 11), named by its tree hash from the group context; every
    /// other save writes the state without the tree — for 1,000 members a few kilobytes
    /// instead of megabytes. Both go in one savepoint, so a crash never leaves a state next
    /// to another epoch's tree.
    pub fn save(&mut self) -> Result<()> {
        let tree_hash = self.inner.context().tree_hash.clone();
        let group_id = self.inner.group_id().to_vec();
        self.db.conn().execute_batch("SAVEPOINT mls_save")?;
        let res = (|| -> Result<()> {
            let stored: Option<Vec<u8>> = self
                .db
                .conn()
                .query_row(
                    "SELECT tree_hash FROM mls_trees WHERE group_id = ?1",
                    params![group_id],
                    |r| r.get(0),
                )
                .optional()?;
            if stored.as_deref() != Some(tree_hash.as_slice()) {
                let tree = self.inner.export_tree().to_bytes()?;
                self.db.conn().execute(
                    "INSERT INTO mls_trees (group_id, tree_hash, tree) VALUES (?1, ?2, ?3)
                     ON CONFLICT(group_id) DO UPDATE SET tree_hash = excluded.tree_hash,
                                                         tree = excluded.tree",
                    params![group_id, tree_hash, tree],
                )?;
            }
            self.inner.write_to_storage_without_ratchet_tree()?;
            Ok(())
        })();
        match res {
            Ok(()) => {
                self.db.conn().execute_batch("RELEASE mls_save")?;
                Ok(())
            }
            Err(e) => {
                let _ = self
                    .db
                    .conn()
                    .execute_batch("ROLLBACK TO mls_save; RELEASE mls_save");
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// The full state mls-rs last handed to `GroupStore::write` on this thread.
        pub(super) static LAST_FULL_STATE: std::cell::RefCell<Vec<u8>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }

    /// `alice` creates `gid` with eight new members in one commit and saves it; the first
    /// of them joins (not saved yet). Returns alice's group, the members, the joiner's group.
    fn group_of_nine(dir: &std::path::Path, alice: &Mls, gid: &[u8]) -> (Group, Vec<Mls>, Group) {
        let others: Vec<Mls> = (0..8).map(|i| member(dir, &format!("m{i}"))).collect();
        let mut a = alice.create_group(gid).unwrap();
        let kps: Vec<Vec<u8>> = others
            .iter()
            .map(|m| m.key_package(false).unwrap())
            .collect();
        let pending = a.commit(&kps, &[]).unwrap();
        a.apply_pending_commit().unwrap();
        a.save().unwrap();
        let b = joined(&others[0], &pending, 0);
        (a, others, b)
    }

    fn last_full_state() -> Vec<u8> {
        LAST_FULL_STATE.with(|l| l.borrow().clone())
    }

    #[test]
    fn a_state_stored_without_its_tree_index_reloads_to_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let alice = member(dir.path(), "alice");
        let gid = [6u8; 16];
        let (a, others, mut b) = group_of_nine(dir.path(), &alice, &gid);
        let full = last_full_state();
        b.save().unwrap();
        let stripped = without_tree_index(&full).expect("mls-rs 0.57's state layout");
        // Nine members' HPKE keys (ML-KEM-768 + X25519), signature keys and identities.
        assert!(
            full.len() - stripped.len() > 9 * 1_200,
            "the index is what was left out: {} of {} B",
            full.len() - stripped.len(),
            full.len()
        );
        let stored = stored(
            &a.db,
            "SELECT base FROM mls_state_bases WHERE group_id = ?1",
            &gid,
        );
        assert_eq!(stored, stripped, "the state is stored without the index");
        // Not this layout (a state with its nodes, garbage, a newer version): stored whole.
        assert_eq!(without_tree_index(&[0, 2, 0, 0]), None);
        assert_eq!(without_tree_index(&full[..64]), None);

        // Reloaded, mls-rs rebuilds the index from the tree: the group encodes to the very
        // same full state, and the index is live (a second leaf with a member's signature
        // key is refused).
        let mut a = alice.load(&gid).unwrap();
        a.inner.write_to_storage_without_ratchet_tree().unwrap();
        assert!(last_full_state() == full, "the reloaded state is the same");
        let again = others[3].key_package(false).unwrap();
        assert!(
            a.commit(&[again], &[]).is_err(),
            "a duplicate member is refused"
        );
        let ct = a.encrypt(b"after reload").unwrap();
        match b.process(&ct).unwrap() {
            Incoming::Application { data, .. } => assert_eq!(data, b"after reload"),
            other => panic!("{other:?}"),
        }
    }

    fn member(dir: &std::path::Path, name: &str) -> Mls {
        let db = Db::open(&dir.join(format!("{name}.db")), "test passphrase").unwrap();
        let keys = generate_signer(DEFAULT_CIPHERSUITE).unwrap();
        Mls::new(db, &keys.secret, &keys.public, DEFAULT_CIPHERSUITE, None).unwrap()
    }

    /// Member `i` of a commit's new members joins with its own Welcome and the sealed tree.
    fn joined(m: &Mls, pending: &PendingCommit, i: usize) -> Group {
        let nm = pending.welcome.as_ref().unwrap();
        m.join(&nm.welcomes[i], Some(&nm.sealed_tree)).unwrap().0
    }

    #[test]
    fn each_new_member_gets_its_own_small_welcome_and_the_tree_travels_once() {
        let dir = tempfile::tempdir().unwrap();
        let alice = member(dir.path(), "alice");
        let others: Vec<Mls> = (0..6)
            .map(|i| member(dir.path(), &format!("m{i}")))
            .collect();
        let mut a = alice.create_group(&[9; 16]).unwrap();
        let kps: Vec<Vec<u8>> = others
            .iter()
            .map(|m| m.key_package(false).unwrap())
            .collect();
        let pending = a.commit(&kps, &[]).unwrap();
        a.apply_pending_commit().unwrap();
        let nm = pending.welcome.as_ref().unwrap();
        assert_eq!(nm.welcomes.len(), 6);
        // Screening reads who committed and how many members there are, with no tree.
        let seen = others[2].examine(&nm.welcomes[2]).unwrap();
        assert_eq!(seen.group_id, vec![9; 16]);
        assert_eq!(seen.epoch, a.epoch());
        assert_eq!(seen.committer, a.own_fingerprint().unwrap());
        assert_eq!(seen.members, 7);
        // Each Welcome holds one member's secrets: nobody else can use it.
        assert!(others[1].examine(&nm.welcomes[2]).is_err());
        assert!(
            others[1]
                .join(&nm.welcomes[2], Some(&nm.sealed_tree))
                .is_err()
        );
        // Without the tree, or with an altered or foreign one, nobody joins.
        assert!(others[2].join(&nm.welcomes[2], None).is_err());
        let mut bad = nm.sealed_tree.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(others[2].join(&nm.welcomes[2], Some(&bad)).is_err());
        let mut g2 = alice.create_group(&[8; 16]).unwrap();
        let other_commit = g2
            .commit(&[others[3].key_package(false).unwrap()], &[])
            .unwrap();
        let foreign = &other_commit.welcome.as_ref().unwrap().sealed_tree;
        assert!(others[2].join(&nm.welcomes[2], Some(foreign)).is_err());
        // The right pieces join, and the per-member part is small next to the tree.
        let mut c = joined(&others[2], &pending, 2);
        assert_eq!(c.token().unwrap(), a.token().unwrap());
        let ct = a.encrypt(b"hi").unwrap();
        assert!(
            matches!(c.process(&ct).unwrap(), Incoming::Application { data, .. } if data == b"hi")
        );
        assert!(nm.welcomes[0].len() < 2_500, "{}", nm.welcomes[0].len());
    }

    #[test]
    fn huge_generation_jumps_are_refused_small_ones_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let (alice, bob) = (member(dir.path(), "alice"), member(dir.path(), "bob"));
        let mut a = alice.create_group(&[1; 16]).unwrap();
        let kp = bob.key_package(false).unwrap();
        let pending = a.commit(&[kp], &[]).unwrap();
        a.apply_pending_commit().unwrap();
        let mut b = joined(&bob, &pending, 0);
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

    fn stored(db: &Db, sql: &str, gid: &[u8]) -> Vec<u8> {
        db.conn()
            .query_row(sql, params![gid], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn the_tree_is_stored_once_per_epoch_and_state_reloads_from_the_split() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("a.db"), "test passphrase").unwrap();
        let keys = generate_signer(DEFAULT_CIPHERSUITE).unwrap();
        let alice = Mls::new(
            db.clone(),
            &keys.secret,
            &keys.public,
            DEFAULT_CIPHERSUITE,
            None,
        )
        .unwrap();
        let gid = [4u8; 16];
        let (mut a, others, mut b) = group_of_nine(dir.path(), &alice, &gid);
        b.save().unwrap();
        // The joiner goes on from what it stored.
        let mut b = others[0].load(&gid).unwrap();

        let tree_sql = "SELECT tree FROM mls_trees WHERE group_id = ?1";
        let state_sql = "SELECT state FROM mls_groups WHERE group_id = ?1";
        let base_sql = "SELECT base_id FROM mls_state_bases WHERE group_id = ?1";
        let base_len_sql = "SELECT length(base) FROM mls_state_bases WHERE group_id = ?1";
        let tree = stored(&db, tree_sql, &gid);
        let base = stored(&db, base_sql, &gid);
        let base_len: i64 = db
            .conn()
            .query_row(base_len_sql, params![&gid[..]], |r| r.get(0))
            .unwrap();
        assert!(
            stored(&db, state_sql, &gid).is_empty(),
            "a new epoch is all base"
        );

        // Messages change a small part of the state: neither the tree nor the base is
        // written again, only what differs from the base.
        for i in 0..3 {
            let ct = a.encrypt(format!("m{i}").as_bytes()).unwrap();
            a.save().unwrap();
            assert!(matches!(
                b.process(&ct).unwrap(),
                Incoming::Application { .. }
            ));
        }
        let delta = stored(&db, state_sql, &gid);
        assert!(
            !delta.is_empty() && (delta.len() as i64) * 4 < base_len,
            "a message stores a small difference: {} B of a {} B state ({} B tree)",
            delta.len(),
            base_len,
            tree.len()
        );
        assert_eq!(
            stored(&db, tree_sql, &gid),
            tree,
            "the tree was not rewritten"
        );
        assert_eq!(
            stored(&db, base_sql, &gid),
            base,
            "the base was not rewritten"
        );

        // A reloaded group goes on where it was: its next message decrypts, it processes a
        // commit, and the commit's new tree replaces the stored one.
        let mut a = alice.load(&gid).unwrap();
        let ct = a.encrypt(b"after reload").unwrap();
        a.save().unwrap();
        match b.process(&ct).unwrap() {
            Incoming::Application { data, .. } => assert_eq!(data, b"after reload"),
            other => panic!("{other:?}"),
        }
        let update = b.commit(&[], &[]).unwrap();
        b.apply_pending_commit().unwrap();
        let mut a = alice.load(&gid).unwrap();
        assert!(matches!(
            a.process(&update.commit).unwrap(),
            Incoming::Commit { .. }
        ));
        a.save().unwrap();
        assert_ne!(
            stored(&db, tree_sql, &gid),
            tree,
            "a commit stores the new tree"
        );
        assert_ne!(stored(&db, base_sql, &gid), base, "and a new base");
        let a = alice.load(&gid).unwrap();
        assert_eq!(a.epoch(), b.epoch());
        assert_eq!(a.token().unwrap(), b.token().unwrap());
    }

    #[test]
    fn a_state_saved_with_its_tree_still_loads_and_is_split_on_its_next_save() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("a.db"), "test passphrase").unwrap();
        let keys = generate_signer(DEFAULT_CIPHERSUITE).unwrap();
        let alice = Mls::new(
            db.clone(),
            &keys.secret,
            &keys.public,
            DEFAULT_CIPHERSUITE,
            None,
        )
        .unwrap();
        let bob = member(dir.path(), "bob");
        let gid = [5u8; 16];
        let mut a = alice.create_group(&gid).unwrap();
        let pending = a.commit(&[bob.key_package(false).unwrap()], &[]).unwrap();
        a.apply_pending_commit().unwrap();
        // As a profile before version 11 stored it: the whole snapshot, no tree row.
        a.inner.write_to_storage().unwrap();
        let mut b = joined(&bob, &pending, 0);
        let mut a = alice.load(&gid).unwrap();
        let ct = a.encrypt(b"old format").unwrap();
        a.save().unwrap();
        assert!(matches!(
            b.process(&ct).unwrap(),
            Incoming::Application { .. }
        ));
        let trees: i64 = db
            .conn()
            .query_row("SELECT count(*) FROM mls_trees", [], |r| r.get(0))
            .unwrap();
        assert_eq!(trees, 1, "the next save stored the tree apart");
        let mut a = alice.load(&gid).unwrap();
        let ct = a.encrypt(b"new format").unwrap();
        assert!(matches!(
            b.process(&ct).unwrap(),
            Incoming::Application { .. }
        ));

        // A tree or a base that does not belong to the state is refused, not run on.
        db.conn()
            .execute("UPDATE mls_trees SET tree_hash = x'00'", [])
            .unwrap();
        assert!(matches!(alice.load(&gid), Err(Error::Storage(_))));
        let fresh = Mls::new(
            db.clone(),
            &keys.secret,
            &keys.public,
            DEFAULT_CIPHERSUITE,
            None,
        )
        .unwrap();
        db.conn()
            .execute("UPDATE mls_state_bases SET base_id = x'00'", [])
            .unwrap();
        assert!(fresh.load(&gid).is_err());
    }

    #[test]
    fn removed_member_cannot_derive_the_next_token() {
        let dir = tempfile::tempdir().unwrap();
        let (alice, bob) = (member(dir.path(), "alice"), member(dir.path(), "bob"));
        let mut a = alice.create_group(&[2; 16]).unwrap();
        let pending = a.commit(&[bob.key_package(false).unwrap()], &[]).unwrap();
        a.apply_pending_commit().unwrap();
        let mut b = joined(&bob, &pending, 0);
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
        let mut b = joined(&bob, &pending, 0);
        let mut c = joined(&carol, &pending, 1);
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
