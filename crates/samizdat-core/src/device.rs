//! Several devices of one person (docs/PROTOCOL.md "Devices").
//!
//! A person's **identity key** is the MLS signature key of their first device: its
//! fingerprint is what contacts know and what safety numbers are computed over, so profiles
//! made before devices existed keep theirs. Every further device has its own MLS signature
//! key and is its own MLS leaf; its basic credential carries a [`DeviceCert`] — the identity
//! key's signature over the device key — instead of its own fingerprint. [`person_of`] maps
//! any member to the person: a credential that names a person without a valid signature is
//! refused by [`DeviceIdentityProvider`] inside mls-rs, so no relay and no member can add a
//! device to somebody else's identity.
//!
//! Linking runs over a one-time mailbox and HPKE of the profile's ciphersuite (hybrid
//! post-quantum by default), through mls-rs' crypto provider: nothing here is hand-rolled.

use mls_rs::identity::basic::BasicCredential;
use mls_rs::identity::{CredentialType, SigningIdentity};
use mls_rs::mls_rs_codec::{MlsDecode, MlsEncode};
use mls_rs::time::MlsTime;
use mls_rs::{CipherSuite, CipherSuiteProvider, CryptoProvider, ExtensionList, IdentityProvider};
use mls_rs_core::crypto::{
    HpkeCiphertext, HpkePublicKey, HpkeSecretKey, SignaturePublicKey, SignatureSecretKey,
};
use mls_rs_core::identity::MemberValidationContext;
use mls_rs_crypto_awslc::AwsLcCryptoProvider;
use samizdat_proto::{Bytes, Id};
use serde::{Deserialize, Serialize};

use crate::mls::fingerprint;
use crate::{Error, Result, sha256};

const CERT_MAGIC: &[u8; 4] = b"SZD1";
const CERT_LABEL: &[u8] = b"samizdat device certificate v1\0";
/// Largest certificate accepted (a post-quantum signature key would still fit).
const MAX_CERT: usize = 8 * 1024;

/// The identity key's signature over one device's MLS signature key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCert {
    pub cipher_suite: u16,
    pub identity_public: Vec<u8>,
    pub signature: Vec<u8>,
}

fn suite(cs: u16) -> Result<impl CipherSuiteProvider> {
    AwsLcCryptoProvider::default()
        .cipher_suite_provider(CipherSuite::from(cs))
        .ok_or_else(|| Error::Mls(format!("ciphersuite {cs} is not supported")))
}

fn signed_data(device_public: &[u8]) -> Vec<u8> {
    [CERT_LABEL, device_public].concat()
}

impl DeviceCert {
    /// Sign `device_public` with the identity key.
    pub fn sign(
        cipher_suite: u16,
        identity_secret: &[u8],
        identity_public: &[u8],
        device_public: &[u8],
    ) -> Result<DeviceCert> {
        let signature = suite(cipher_suite)?
            .sign(
                &SignatureSecretKey::new_slice(identity_secret),
                &signed_data(device_public),
            )
            .map_err(|e| Error::Crypto(format!("cannot sign the device key: {e:?}")))?;
        Ok(DeviceCert {
            cipher_suite,
            identity_public: identity_public.to_vec(),
            signature,
        })
    }

    /// Whether the identity key signed `device_public`.
    pub fn verify(&self, device_public: &[u8]) -> Result<()> {
        suite(self.cipher_suite)?
            .verify(
                &SignaturePublicKey::new_slice(&self.identity_public),
                &self.signature,
                &signed_data(device_public),
            )
            .map_err(|_| Error::Protocol("a device certificate's signature does not verify".into()))
    }

    /// The person this certificate names.
    pub fn person(&self) -> [u8; 32] {
        fingerprint(&self.identity_public)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.identity_public.len() + self.signature.len());
        out.extend_from_slice(CERT_MAGIC);
        out.extend_from_slice(&self.cipher_suite.to_be_bytes());
        for part in [&self.identity_public, &self.signature] {
            out.extend_from_slice(&(part.len() as u16).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    /// `None` when `bytes` is not a certificate at all; an error when it is a broken one.
    pub fn decode(bytes: &[u8]) -> Option<Result<DeviceCert>> {
        let rest = bytes.strip_prefix(CERT_MAGIC.as_slice())?;
        let bad = || Error::Protocol("a malformed device certificate".into());
        Some((|| {
            if bytes.len() > MAX_CERT {
                return Err(bad());
            }
            let (cs, mut rest) = rest.split_at_checked(2).ok_or_else(bad)?;
            let mut part = || -> Result<Vec<u8>> {
                let (len, tail) = rest.split_at_checked(2).ok_or_else(bad)?;
                let len = u16::from_be_bytes([len[0], len[1]]) as usize;
                let (p, tail) = tail.split_at_checked(len).ok_or_else(bad)?;
                rest = tail;
                Ok(p.to_vec())
            };
            let identity_public = part()?;
            let signature = part()?;
            if !rest.is_empty() {
                return Err(bad());
            }
            Ok(DeviceCert {
                cipher_suite: u16::from_be_bytes([cs[0], cs[1]]),
                identity_public,
                signature,
            })
        })())
    }
}

/// A person's signed, versioned device list (security review 3, H2): the identity key's
/// signature over which device keys speak for the person (`devices`, the identity's own
/// included) and which no longer do (`revoked`). Contacts keep the newest version they have
/// seen of each person's list and check Welcomes and messages against it, so a revoked (seized)
/// device stops being the person. Any device of the person may pass the list on (it is
/// signed); only the device with the identity key makes a new one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceList {
    pub version: u64,
    pub cipher_suite: u16,
    pub identity_public: Bytes,
    /// Fingerprints of the device keys that speak for the person.
    pub devices: Vec<Bytes>,
    /// Fingerprints of device keys that no longer do.
    pub revoked: Vec<Bytes>,
    pub signature: Bytes,
}

const LIST_LABEL: &[u8] = b"samizdat device list v1\0";
/// Most devices (active and revoked) a list may name.
pub const MAX_LISTED_DEVICES: usize = 1024;

impl DeviceList {
    fn signed_data(&self) -> Vec<u8> {
        let mut d = LIST_LABEL.to_vec();
        d.extend_from_slice(&self.version.to_be_bytes());
        d.extend_from_slice(&self.cipher_suite.to_be_bytes());
        d.extend_from_slice(&(self.identity_public.len() as u32).to_be_bytes());
        d.extend_from_slice(&self.identity_public.0);
        for part in [&self.devices, &self.revoked] {
            d.extend_from_slice(&(part.len() as u32).to_be_bytes());
            for fp in part {
                d.extend_from_slice(&(fp.len() as u32).to_be_bytes());
                d.extend_from_slice(&fp.0);
            }
        }
        d
    }

    /// A list signed with the identity key.
    pub fn sign(
        cipher_suite: u16,
        identity_secret: &[u8],
        identity_public: &[u8],
        version: u64,
        devices: Vec<[u8; 32]>,
        revoked: Vec<[u8; 32]>,
    ) -> Result<DeviceList> {
        let mut list = DeviceList {
            version,
            cipher_suite,
            identity_public: Bytes(identity_public.to_vec()),
            devices: devices.iter().map(|d| Bytes(d.to_vec())).collect(),
            revoked: revoked.iter().map(|d| Bytes(d.to_vec())).collect(),
            signature: Bytes(Vec::new()),
        };
        let signature = suite(cipher_suite)?
            .sign(
                &SignatureSecretKey::new_slice(identity_secret),
                &list.signed_data(),
            )
            .map_err(|e| Error::Crypto(format!("cannot sign the device list: {e:?}")))?;
        list.signature = Bytes(signature);
        Ok(list)
    }

    /// The person whose identity key signed this list; an error for a list that is not
    /// signed by the key it names, or is too long.
    pub fn verify(&self) -> Result<[u8; 32]> {
        if self.devices.len() + self.revoked.len() > MAX_LISTED_DEVICES {
            return Err(Error::Protocol(
                "a device list naming too many devices".into(),
            ));
        }
        suite(self.cipher_suite)?
            .verify(
                &SignaturePublicKey::new_slice(&self.identity_public.0),
                &self.signature.0,
                &self.signed_data(),
            )
            .map_err(|_| Error::Protocol("a device list's signature does not verify".into()))?;
        Ok(fingerprint(&self.identity_public.0))
    }

    pub fn lists(&self, device: &[u8]) -> bool {
        self.devices.iter().any(|d| d.0 == device)
    }

    pub fn revokes(&self, device: &[u8]) -> bool {
        self.revoked.iter().any(|d| d.0 == device)
    }
}

/// The person (identity fingerprint) a member's signing identity belongs to: the key's own
/// fingerprint for a first device, the certifying identity for a linked one. An error for a
/// credential that is neither (mls-rs refuses such members through
/// [`DeviceIdentityProvider`]).
pub fn person_of(identity: &SigningIdentity) -> Result<[u8; 32]> {
    let basic = identity
        .credential
        .as_basic()
        .ok_or_else(|| Error::Protocol("a member without a basic credential".into()))?;
    let key = identity.signature_key.as_bytes();
    let own = fingerprint(key);
    if basic.identifier.as_slice() == own.as_slice() {
        return Ok(own);
    }
    match DeviceCert::decode(&basic.identifier) {
        Some(cert) => {
            let cert = cert?;
            cert.verify(key)?;
            Ok(cert.person())
        }
        None => Err(Error::Protocol(
            "a member's credential names neither its key nor a certified identity".into(),
        )),
    }
}

/// The credential identifier of a device: its own fingerprint when it holds the identity
/// key, else its certificate.
pub fn credential_identifier(public: &[u8], cert: Option<&[u8]>) -> Vec<u8> {
    match cert {
        Some(c) => c.to_vec(),
        None => fingerprint(public).to_vec(),
    }
}

/// A credential refused by [`DeviceIdentityProvider`].
#[derive(Debug, thiserror::Error)]
#[error("invalid member credential: {0}")]
pub struct CredentialError(String);

impl mls_rs::error::IntoAnyError for CredentialError {
    fn into_dyn_error(self) -> std::result::Result<Box<dyn std::error::Error + Send + Sync>, Self> {
        Ok(Box::new(self))
    }
}

/// mls-rs' identity provider for Samizdat credentials: a member is valid only if its
/// credential is its own key's fingerprint or a certificate of an identity that verifies.
#[derive(Clone, Debug, Default)]
pub struct DeviceIdentityProvider;

fn basic(identity: &SigningIdentity) -> std::result::Result<&BasicCredential, CredentialError> {
    identity
        .credential
        .as_basic()
        .ok_or_else(|| CredentialError("not a basic credential".into()))
}

impl IdentityProvider for DeviceIdentityProvider {
    type Error = CredentialError;

    fn validate_member(
        &self,
        signing_identity: &SigningIdentity,
        _timestamp: Option<MlsTime>,
        _context: MemberValidationContext<'_>,
    ) -> std::result::Result<(), Self::Error> {
        person_of(signing_identity)
            .map(|_| ())
            .map_err(|e| CredentialError(e.to_string()))
    }

    fn validate_external_sender(
        &self,
        _signing_identity: &SigningIdentity,
        _timestamp: Option<MlsTime>,
        _extensions: Option<&ExtensionList>,
    ) -> std::result::Result<(), Self::Error> {
        Err(CredentialError("groups have no external senders".into()))
    }

    fn identity(
        &self,
        signing_identity: &SigningIdentity,
        _extensions: &ExtensionList,
    ) -> std::result::Result<Vec<u8>, Self::Error> {
        Ok(basic(signing_identity)?.identifier.clone())
    }

    fn valid_successor(
        &self,
        predecessor: &SigningIdentity,
        successor: &SigningIdentity,
        _extensions: &ExtensionList,
    ) -> std::result::Result<bool, Self::Error> {
        Ok(basic(predecessor)?.identifier == basic(successor)?.identifier)
    }

    fn supported_types(&self) -> Vec<CredentialType> {
        vec![BasicCredential::credential_type()]
    }
}

// ---------------------------------------------------------------------------------------
// Linking
//
// The new device shows the link; the device that holds the identity key takes it (as Signal
// and WhatsApp do). Whoever glimpses a link can at most make that new, empty device theirs —
// never the account (security review 3, H1).

/// What a link holds (`samizdat device join` prints it on the new device; the device with the
/// identity key reads it with `device add`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub v: u8,
    /// The relay of the new device's mailbox.
    pub relay: String,
    pub mailbox: Id,
    /// The new device's one-time HPKE public key.
    pub hpke: Bytes,
    /// A one-time secret: only who saw the link can prove to know it.
    pub secret: Bytes,
    /// The new device's MLS signature public key (what the certificate will sign).
    pub device_key: Bytes,
    /// What the new device is called.
    pub name: String,
    pub cipher_suite: u16,
    /// Unix seconds.
    pub expires_at: u64,
}

pub const LINK_PREFIX: &str = "samizdat://device/v2/";
/// A link is valid this long (seconds): long enough to scan or paste it, short enough that a
/// photo of it is soon worth nothing.
pub const LINK_TTL: u64 = 120;

impl Link {
    /// `samizdat://device/v2/` and base64url of: version, ciphersuite, expiry, mailbox,
    /// secret, the device key and the HPKE key (length-prefixed), the name (length-prefixed),
    /// the relay — binary, so that the link (mostly the post-quantum key) fits a QR code.
    pub fn to_link(&self) -> String {
        let mut b = Vec::with_capacity(
            128 + self.hpke.len() + self.device_key.len() + self.relay.len() + self.name.len(),
        );
        b.push(self.v);
        b.extend_from_slice(&self.cipher_suite.to_be_bytes());
        b.extend_from_slice(&self.expires_at.to_be_bytes());
        b.extend_from_slice(self.mailbox.as_bytes());
        b.extend_from_slice(&self.secret.0);
        for part in [
            &self.device_key.0,
            &self.hpke.0,
            &self.name.as_bytes().to_vec(),
        ] {
            b.extend_from_slice(&(part.len() as u16).to_be_bytes());
            b.extend_from_slice(part);
        }
        b.extend_from_slice(self.relay.as_bytes());
        format!("{LINK_PREFIX}{}", Bytes::encode(&b))
    }

    pub fn parse(s: &str) -> Result<Link> {
        let bad = |why: &str| Error::Usage(format!("not a device link: {why}"));
        let s = s.trim();
        if s.starts_with("samizdat://device/v1/") {
            return Err(bad(
                "it was made the old way, by the device that holds the identity; make one on the new device with `samizdat device join`",
            ));
        }
        let rest = s
            .strip_prefix(LINK_PREFIX)
            .ok_or_else(|| bad(&format!("a device link starts with {LINK_PREFIX}")))?;
        if rest.len() > 8 * 1024 {
            return Err(bad("too long"));
        }
        let raw = Bytes::decode(rest).map_err(|_| bad("damaged (not base64url)"))?;
        let mut r = raw.as_slice();
        let mut take = |n: usize| -> Result<&[u8]> {
            let (h, t) = r
                .split_at_checked(n)
                .ok_or_else(|| bad("damaged (cut short)"))?;
            r = t;
            Ok(h)
        };
        let v = take(1)?[0];
        if v != 2 {
            return Err(bad("made by a newer samizdat"));
        }
        let cs = take(2)?;
        let cipher_suite = u16::from_be_bytes([cs[0], cs[1]]);
        let expires_at = u64::from_be_bytes(take(8)?.try_into().map_err(|_| bad("damaged"))?);
        let mailbox = Id::from_slice(take(16)?).map_err(|_| bad("damaged"))?;
        let secret = Bytes(take(32)?.to_vec());
        let mut part = || -> Result<Vec<u8>> {
            let n = take(2)?;
            let n = u16::from_be_bytes([n[0], n[1]]) as usize;
            Ok(take(n)?.to_vec())
        };
        let device_key = Bytes(part()?);
        let hpke = Bytes(part()?);
        let name = String::from_utf8(part()?).map_err(|_| bad("damaged device name"))?;
        let relay = String::from_utf8(r.to_vec()).map_err(|_| bad("damaged relay address"))?;
        crate::check_foreign_relay_url(&relay)?;
        let name = crate::text::clean_name(&name);
        if name.is_empty() {
            return Err(bad("no device name"));
        }
        Ok(Link {
            v,
            relay,
            mailbox,
            hpke,
            secret,
            device_key,
            name,
            cipher_suite,
            expires_at,
        })
    }

    /// The six-digit code both devices show for this link: the new device next to the link,
    /// the other one before asking. Different codes mean the link was changed on the way
    /// (another device's link put on the clipboard, say).
    pub fn code(&self) -> String {
        auth_code(&self.hpke.0, &self.device_key.0, self.mailbox.as_bytes())
    }
}

/// The answer of the device that holds the identity, sealed to the new device's HPKE key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LinkReply {
    Accepted {
        /// The [`DeviceCert`] for the new device's key.
        cert: Bytes,
        /// The person's display name.
        name: String,
        /// KeyPackages the new device must send (one per conversation, plus the self group).
        key_packages: u32,
        /// The self group, shared only by the person's devices.
        self_group: Id,
        /// The person's devices so far (the self group repeats it).
        #[serde(default)]
        devices: Vec<crate::payload::DeviceRecord>,
        /// Where the KeyPackages go: a one-time mailbox and HPKE key of the identity device.
        reply_relay: String,
        reply_mailbox: Id,
        reply_hpke: Bytes,
        /// HMAC-SHA256 under the link secret over the certificate and the reply address:
        /// only a device that saw the link can make it.
        mac: Bytes,
    },
    Refused {
        reason: String,
    },
}

/// The MAC of an `Accepted` answer (see [`LinkReply::Accepted`]).
pub fn accepted_mac(
    secret: &[u8],
    cert: &[u8],
    reply_relay: &str,
    reply_mailbox: &Id,
    reply_hpke: &[u8],
) -> Vec<u8> {
    hmac(
        secret,
        &[
            b"accepted",
            cert,
            reply_relay.as_bytes(),
            reply_mailbox.as_bytes(),
            reply_hpke,
        ],
    )
}

/// Whether `mac` is the [`accepted_mac`] of these values.
pub fn accepted_mac_ok(
    secret: &[u8],
    cert: &[u8],
    reply_relay: &str,
    reply_mailbox: &Id,
    reply_hpke: &[u8],
    mac: &[u8],
) -> bool {
    mac_ok(
        &accepted_mac(secret, cert, reply_relay, reply_mailbox, reply_hpke),
        mac,
    )
}

/// The new device's KeyPackages, sealed to the identity device's one-time HPKE key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkKeys {
    pub key_packages: Vec<Bytes>,
    /// HMAC-SHA256 under the link secret over the device key and the KeyPackages.
    pub mac: Bytes,
}

fn hmac(secret: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let mut ctx = aws_lc_rs::hmac::Context::with_key(&key);
    for p in parts {
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p);
    }
    ctx.sign().as_ref().to_vec()
}

fn mac_ok(expected: &[u8], got: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(expected, got).is_ok()
}

impl LinkKeys {
    pub fn new(secret: &[u8], device_key: &[u8], key_packages: Vec<Vec<u8>>) -> LinkKeys {
        let mut keys = LinkKeys {
            key_packages: key_packages.into_iter().map(Bytes).collect(),
            mac: Bytes(Vec::new()),
        };
        keys.mac = Bytes(keys.expected_mac(secret, device_key));
        keys
    }

    fn expected_mac(&self, secret: &[u8], device_key: &[u8]) -> Vec<u8> {
        let mut parts: Vec<&[u8]> = vec![b"keys", device_key];
        parts.extend(self.key_packages.iter().map(|k| k.0.as_slice()));
        hmac(secret, &parts)
    }

    pub fn check(&self, secret: &[u8], device_key: &[u8]) -> bool {
        mac_ok(&self.expected_mac(secret, device_key), &self.mac.0)
    }
}

/// The short authentication code both devices show: six digits from the link's HPKE key,
/// the new device's key and its mailbox ([`Link::code`]).
pub fn auth_code(link_hpke: &[u8], device_key: &[u8], device_hpke: &[u8]) -> String {
    let h = sha256(
        &[
            b"samizdat link code v1\0".as_slice(),
            &sha256(link_hpke),
            &sha256(device_key),
            &sha256(device_hpke),
        ]
        .concat(),
    );
    let n = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) % 1_000_000;
    format!("{:03} {:03}", n / 1000, n % 1000)
}

/// A one-time HPKE key pair of the ciphersuite.
pub fn hpke_keypair(cipher_suite: u16) -> Result<(Vec<u8>, Vec<u8>)> {
    let (secret, public) = suite(cipher_suite)?
        .kem_generate()
        .map_err(|e| Error::Crypto(format!("cannot make an HPKE key: {e:?}")))?;
    Ok((secret.as_ref().to_vec(), public.as_ref().to_vec()))
}

const HPKE_INFO: &[u8] = b"samizdat device link v1";

/// HPKE-seal `plain` to `public` (base mode, the ciphersuite's KEM, one shot).
pub fn hpke_seal(cipher_suite: u16, public: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
    let ct = suite(cipher_suite)?
        .hpke_seal(
            &HpkePublicKey::from(public.to_vec()),
            HPKE_INFO,
            None,
            plain,
        )
        .map_err(|e| Error::Crypto(format!("cannot seal a link message: {e:?}")))?;
    ct.mls_encode_to_vec()
        .map_err(|e| Error::Crypto(format!("cannot encode a link message: {e}")))
}

/// Open what [`hpke_seal`] sealed to our key pair.
pub fn hpke_open(
    cipher_suite: u16,
    secret: &[u8],
    public: &[u8],
    sealed: &[u8],
) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    let ct = HpkeCiphertext::mls_decode(&mut &*sealed)
        .map_err(|_| Error::Protocol("a malformed link message".into()))?;
    suite(cipher_suite)?
        .hpke_open(
            &ct,
            &HpkeSecretKey::from(secret.to_vec()),
            &HpkePublicKey::from(public.to_vec()),
            HPKE_INFO,
            None,
        )
        .map_err(|_| {
            Error::Protocol("a link message that is not for this link (or was altered)".into())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mls::{DEFAULT_CIPHERSUITE, generate_signer};

    fn cs() -> u16 {
        u16::from(DEFAULT_CIPHERSUITE)
    }

    fn with_identifier(public: &[u8], identifier: Vec<u8>) -> SigningIdentity {
        SigningIdentity::new(
            BasicCredential::new(identifier).into_credential(),
            SignaturePublicKey::new_slice(public),
        )
    }

    #[test]
    fn a_certified_device_is_its_person_and_a_forged_one_is_refused() {
        let identity = generate_signer(DEFAULT_CIPHERSUITE).unwrap();
        let device = generate_signer(DEFAULT_CIPHERSUITE).unwrap();
        let other = generate_signer(DEFAULT_CIPHERSUITE).unwrap();
        let cert = DeviceCert::sign(cs(), &identity.secret, &identity.public, &device.public)
            .unwrap()
            .encode();
        assert_eq!(DeviceCert::decode(&cert).unwrap().unwrap().encode(), cert);
        let person = fingerprint(&identity.public);
        // The first device: its own fingerprint.
        let first = with_identifier(&identity.public, fingerprint(&identity.public).to_vec());
        assert_eq!(person_of(&first).unwrap(), person);
        // A linked device: the identity's.
        let linked = with_identifier(&device.public, cert.clone());
        assert_eq!(person_of(&linked).unwrap(), person);
        // Someone else's key presenting that certificate: refused.
        let thief = with_identifier(&other.public, cert.clone());
        assert!(person_of(&thief).is_err());
        // A certificate signed by another identity for this key names that identity only.
        let forged = DeviceCert {
            identity_public: identity.public.clone(),
            ..DeviceCert::sign(cs(), &other.secret, &other.public, &device.public).unwrap()
        };
        assert!(person_of(&with_identifier(&device.public, forged.encode())).is_err());
        // Garbage and someone else's fingerprint: refused, never a panic.
        for id in [
            b"SZD1".to_vec(),
            b"SZD1\0\x01\xff\xff".to_vec(),
            fingerprint(&other.public).to_vec(),
        ] {
            assert!(person_of(&with_identifier(&device.public, id)).is_err());
        }
        let p = DeviceIdentityProvider;
        assert!(
            p.validate_member(&thief, None, MemberValidationContext::None)
                .is_err()
        );
        assert!(
            p.validate_member(&linked, None, MemberValidationContext::None)
                .is_ok()
        );
    }

    #[test]
    fn link_messages_open_only_with_the_link_and_macs_bind_the_secret() {
        let (secret, public) = hpke_keypair(cs()).unwrap();
        let sealed = hpke_seal(cs(), &public, b"hello").unwrap();
        assert_eq!(
            &hpke_open(cs(), &secret, &public, &sealed).unwrap()[..],
            b"hello"
        );
        let (s2, p2) = hpke_keypair(cs()).unwrap();
        assert!(hpke_open(cs(), &s2, &p2, &sealed).is_err());
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(hpke_open(cs(), &secret, &public, &flipped).is_err());
        assert!(hpke_open(cs(), &secret, &public, b"\x00").is_err());

        let mailbox = Id::from_bytes([3; 16]);
        let mac = accepted_mac(&[7; 32], b"cert", "http://127.0.0.1:1", &mailbox, b"hpke");
        assert!(accepted_mac_ok(
            &[7; 32],
            b"cert",
            "http://127.0.0.1:1",
            &mailbox,
            b"hpke",
            &mac
        ));
        assert!(!accepted_mac_ok(
            &[8; 32],
            b"cert",
            "http://127.0.0.1:1",
            &mailbox,
            b"hpke",
            &mac
        ));
        assert!(!accepted_mac_ok(
            &[7; 32],
            b"cert",
            "http://evil:1",
            &mailbox,
            b"hpke",
            &mac
        ));
        assert!(!accepted_mac_ok(
            &[7; 32],
            b"cert",
            "http://127.0.0.1:1",
            &mailbox,
            b"other",
            &mac
        ));
        let keys = LinkKeys::new(&[7; 32], &[1; 32], vec![vec![9; 10]]);
        assert!(keys.check(&[7; 32], &[1; 32]));
        assert!(!keys.check(&[7; 32], &[2; 32]));
        assert_eq!(auth_code(b"a", b"b", b"c").len(), 7);
        assert_ne!(auth_code(b"a", b"b", b"c"), auth_code(b"a", b"b", b"d"));
    }

    #[test]
    fn links_round_trip_and_damaged_ones_are_refused() {
        let link = Link {
            v: 2,
            relay: "http://127.0.0.1:7000".into(),
            mailbox: Id::from_bytes([1; 16]),
            hpke: Bytes(vec![5; 40]),
            secret: Bytes(vec![6; 32]),
            device_key: Bytes(vec![7; 32]),
            name: "laptop".into(),
            cipher_suite: cs(),
            expires_at: 5,
        };
        let mut renamed = link.clone();
        renamed.hpke = Bytes(vec![4; 40]);
        assert_ne!(
            link.code(),
            renamed.code(),
            "a changed link shows another code"
        );
        assert_eq!(Link::parse(&link.to_link()).unwrap(), link);
        for bad in [
            "samizdat://invite/v2/AAAA".to_string(),
            format!("{LINK_PREFIX}!!!"),
            format!("{LINK_PREFIX}{}", Bytes::encode(b"\x03")),
            "samizdat://device/v1/AAAA".to_string(),
            link.to_link()[..80].to_string(),
        ] {
            assert!(Link::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn device_lists_verify_only_as_signed() {
        let id = generate_signer(DEFAULT_CIPHERSUITE).unwrap();
        let cs = cs();
        let list =
            DeviceList::sign(cs, &id.secret, &id.public, 3, vec![[1; 32]], vec![[2; 32]]).unwrap();
        assert_eq!(list.verify().unwrap(), fingerprint(&id.public));
        assert!(list.lists(&[1; 32]) && list.revokes(&[2; 32]) && !list.lists(&[2; 32]));
        // Any change breaks the signature: the version, a device moved between the lists.
        let mut newer = list.clone();
        newer.version = 4;
        assert!(newer.verify().is_err());
        let mut moved = list.clone();
        moved.revoked.clear();
        moved.devices.push(Bytes(vec![2; 32]));
        assert!(moved.verify().is_err());
        // Signed by another key than the one it names.
        let other = generate_signer(DEFAULT_CIPHERSUITE).unwrap();
        let mut forged =
            DeviceList::sign(cs, &other.secret, &other.public, 9, vec![], vec![]).unwrap();
        forged.identity_public = Bytes(id.public.clone());
        assert!(forged.verify().is_err());
    }
}
