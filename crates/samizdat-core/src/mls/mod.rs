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

mod storage;
use storage::BaseCache;
pub use storage::{GroupStore, KeyPackageStore};

/// The default ciphersuite: hybrid post-quantum ML-KEM-768 + X25519.
pub const DEFAULT_CIPHERSUITE: CipherSuite = CipherSuite::ML_KEM_768_X25519;

/// Exporter label for epoch tokens (docs/PROTOCOL.md: epoch tokens).
const TOKEN_LABEL: &[u8] = b"samizdat epoch token v1";
/// The MLS exporter label of a call's room token (issue 31; the call id is the context).
const CALL_LABEL: &[u8] = b"samizdat call v1";
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

    /// A call's room token: what both sides of the call ask the relay's TURN server with
    /// (the caller derives it and carries it in the MLS-encrypted invite).
    pub fn call_room(&self, call_id: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>> {
        Ok(zeroize::Zeroizing::new(
            self.inner
                .export_secret(CALL_LABEL, call_id, 32)?
                .as_bytes()
                .to_vec(),
        ))
    }

    /// A group call's SFrame base key (RFC 9605 §5.2 with MLS: `MLS-Exporter("SFrame 1.0
    /// Base Key", call id, 16)`), carried in the call's invite so people who join later,
    /// at a later epoch, share it.
    pub fn sframe_base_key(&self, call_id: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>> {
        Ok(zeroize::Zeroizing::new(
            self.inner
                .export_secret(b"SFrame 1.0 Base Key", call_id, 16)?
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
mod tests;
