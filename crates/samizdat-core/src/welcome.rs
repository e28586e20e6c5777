//! Welcomes stored once (PROTOCOL.md "Welcomes: the tree once, a part per member").
//!
//! mls-rs builds one Welcome for all new members of a commit: every member's HPKE-encrypted
//! group secrets plus one encrypted GroupInfo. Copying it into every new member's mailbox
//! stored n copies of everything (~2.6 GB to add 1,000 members), and with the ratchet tree
//! inside the GroupInfo each member's HPKE context held the whole tree (creation grew
//! quadratically). So:
//!
//! - the ratchet tree travels **out of band, once**: sealed (ChaCha20-Poly1305 from the
//!   RustCrypto crate, a fresh key per commit) and uploaded as one blob to the group's
//!   relay. Its key rides in the GroupInfo, in the [`JoinInfo`] extension, so only new
//!   members can open it, and mls-rs checks the tree against the tree hash the committer
//!   signed;
//! - each new member's mailbox gets a [`WelcomePart`]: where the tree is, and a complete
//!   MLS Welcome holding only that member's encrypted group secrets and the (now small)
//!   encrypted GroupInfo.
//!
//! This file only rearranges bytes at the TLS-presentation level (RFC 9420 §12.4.3.1): it
//! splits mls-rs' Welcome into per-member Welcomes. No cryptography is done here except the
//! AEAD call that seals the tree.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use mls_rs_codec::{MlsDecode, MlsEncode, MlsSize, byte_vec};
use mls_rs_core::extension::{ExtensionType, MlsCodecExtension};
use mls_rs_core::identity::SigningIdentity;

use crate::{Error, Result};

/// The wire format number of a Welcome (RFC 9420 §6).
const WIRE_FORMAT_WELCOME: u16 = 3;
/// What a [`WelcomePart`] starts with (a JSON envelope starts with `{`).
const PART_MAGIC: &[u8; 4] = b"SZW1";
/// Additional data of the sealed tree: binds the ciphertext to its use.
const TREE_AAD: &[u8] = b"samizdat welcome tree v1";
/// The sealed tree's key is fresh for every commit, so a fixed nonce never repeats a pair.
const TREE_NONCE: [u8; 12] = [0; 12];

/// The GroupInfo extension a committer adds for new members (private-use type, RFC 9420
/// §17.3): the key of the sealed tree, who committed (so an invitation can be screened before
/// anything is fetched) and how many members the group has.
#[derive(Clone, Debug, PartialEq, Eq, MlsSize, MlsEncode, MlsDecode)]
pub struct JoinInfo {
    #[mls_codec(with = "mls_rs_codec::byte_vec")]
    pub tree_key: Vec<u8>,
    pub committer: SigningIdentity,
    pub members: u32,
}

impl MlsCodecExtension for JoinInfo {
    fn extension_type() -> ExtensionType {
        ExtensionType::new(0xF5A0)
    }
}

/// Where the group lives, signed with the GroupInfo (private-use extension type): the relay
/// and the log id (empty when it is the group id). The envelope's copy of both travels
/// outside MLS, where a hostile mailbox relay could rewrite it; a joiner uses these
/// (security review 3, M1).
#[derive(Clone, Debug, PartialEq, Eq, MlsSize, MlsEncode, MlsDecode)]
pub struct JoinPlace {
    #[mls_codec(with = "mls_rs_codec::byte_vec")]
    pub relay: Vec<u8>,
    #[mls_codec(with = "mls_rs_codec::byte_vec")]
    pub log: Vec<u8>,
}

impl MlsCodecExtension for JoinPlace {
    fn extension_type() -> ExtensionType {
        ExtensionType::new(0xF5A1)
    }
}

/// One new member's share of a commit's Welcome: a mailbox message.
#[derive(Clone, Debug, PartialEq, Eq, MlsSize, MlsEncode, MlsDecode)]
pub struct WelcomePart {
    #[mls_codec(with = "mls_rs_codec::byte_vec")]
    pub group_id: Vec<u8>,
    /// The relay that hosts the group's log and the sealed tree.
    #[mls_codec(with = "mls_rs_codec::byte_vec")]
    pub relay: Vec<u8>,
    /// The group's log id on that relay when it is not the group id (empty otherwise).
    #[mls_codec(with = "mls_rs_codec::byte_vec")]
    pub log: Vec<u8>,
    /// See `Envelope::Welcome::invite_mac` (empty when there is none).
    #[mls_codec(with = "mls_rs_codec::byte_vec")]
    pub invite_mac: Vec<u8>,
    /// The blob holding the sealed ratchet tree, and its length.
    #[mls_codec(with = "mls_rs_codec::byte_vec")]
    pub tree_blob: Vec<u8>,
    pub tree_len: u64,
    /// An MLS Welcome with this member's group secrets only, and no tree.
    #[mls_codec(with = "mls_rs_codec::byte_vec")]
    pub welcome: Vec<u8>,
}

impl WelcomePart {
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = PART_MAGIC.to_vec();
        self.mls_encode(&mut out)
            .map_err(|e| Error::Protocol(format!("cannot encode a Welcome part: {e}")))?;
        Ok(out)
    }

    /// `None` when `bytes` is not a Welcome part at all (another kind of mailbox message).
    pub fn decode(bytes: &[u8]) -> Option<Result<WelcomePart>> {
        let mut rest = bytes.strip_prefix(PART_MAGIC)?;
        Some(
            WelcomePart::mls_decode(&mut rest)
                .map_err(|e| Error::Protocol(format!("malformed Welcome part: {e}")))
                .and_then(|p| {
                    if !rest.is_empty() {
                        return Err(Error::Protocol(
                            "trailing bytes after a Welcome part".into(),
                        ));
                    }
                    if p.group_id.len() != 16
                        || p.tree_blob.len() != 16
                        || !(p.log.is_empty() || p.log.len() == 16)
                    {
                        return Err(Error::Protocol("malformed Welcome part ids".into()));
                    }
                    Ok(p)
                }),
        )
    }
}

/// A Welcome as mls-rs wrote it, taken apart: the header, the encrypted GroupInfo and each
/// member's encoded `EncryptedGroupSecrets` keyed by its KeyPackage reference.
pub struct SplitWelcome {
    version: u16,
    cipher_suite: u16,
    encrypted_group_info: Vec<u8>,
    pub secrets: Vec<(Vec<u8>, Vec<u8>)>,
}

fn codec(e: mls_rs_codec::Error) -> Error {
    Error::Protocol(format!("malformed Welcome: {e}"))
}

impl SplitWelcome {
    pub fn parse(message: &[u8]) -> Result<SplitWelcome> {
        let r = &mut &message[..];
        let version = u16::mls_decode(r).map_err(codec)?;
        if u16::mls_decode(r).map_err(codec)? != WIRE_FORMAT_WELCOME {
            return Err(Error::Protocol("not a Welcome".into()));
        }
        let cipher_suite = u16::mls_decode(r).map_err(codec)?;
        let all: Vec<u8> = byte_vec::mls_decode(r).map_err(codec)?;
        let encrypted_group_info: Vec<u8> = byte_vec::mls_decode(r).map_err(codec)?;
        if !r.is_empty() {
            return Err(Error::Protocol("trailing bytes after a Welcome".into()));
        }
        let mut secrets = Vec::new();
        let mut rest = &all[..];
        while !rest.is_empty() {
            let start = rest;
            let reference: Vec<u8> = byte_vec::mls_decode(&mut rest).map_err(codec)?;
            let _kem_output: Vec<u8> = byte_vec::mls_decode(&mut rest).map_err(codec)?;
            let _ciphertext: Vec<u8> = byte_vec::mls_decode(&mut rest).map_err(codec)?;
            let item = start[..start.len() - rest.len()].to_vec();
            secrets.push((reference, item));
        }
        Ok(SplitWelcome {
            version,
            cipher_suite,
            encrypted_group_info,
            secrets,
        })
    }

    /// A complete Welcome for the member whose KeyPackage reference is `reference`.
    pub fn for_member(&self, reference: &[u8]) -> Result<Vec<u8>> {
        let (_, item) = self
            .secrets
            .iter()
            .find(|(r, _)| r == reference)
            .ok_or_else(|| Error::Protocol("the Welcome has no secrets for a new member".into()))?;
        let mut out = Vec::with_capacity(item.len() + self.encrypted_group_info.len() + 16);
        let enc = |out: &mut Vec<u8>| -> std::result::Result<(), mls_rs_codec::Error> {
            self.version.mls_encode(out)?;
            WIRE_FORMAT_WELCOME.mls_encode(out)?;
            self.cipher_suite.mls_encode(out)?;
            byte_vec::mls_encode(item, out)?;
            byte_vec::mls_encode(&self.encrypted_group_info, out)
        };
        enc(&mut out).map_err(codec)?;
        Ok(out)
    }
}

/// Seal an encoded ratchet tree under a fresh `key`.
pub fn seal_tree(key: &[u8], tree: &[u8]) -> Result<Vec<u8>> {
    ChaCha20Poly1305::new_from_slice(key)
        .map_err(|_| Error::Crypto("bad tree key length".into()))?
        .encrypt(
            Nonce::from_slice(&TREE_NONCE),
            Payload {
                msg: tree,
                aad: TREE_AAD,
            },
        )
        .map_err(|_| Error::Crypto("cannot seal the ratchet tree".into()))
}

/// Open a sealed tree; a wrong key or altered bytes are refused.
pub fn open_tree(key: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
    ChaCha20Poly1305::new_from_slice(key)
        .map_err(|_| Error::Protocol("bad tree key length".into()))?
        .decrypt(
            Nonce::from_slice(&TREE_NONCE),
            Payload {
                msg: sealed,
                aad: TREE_AAD,
            },
        )
        .map_err(|_| {
            Error::Protocol(
                "the group's ratchet tree on the relay is not the one the Welcome names".into(),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_part_round_trips_and_is_told_from_json() {
        let p = WelcomePart {
            group_id: vec![1; 16],
            relay: b"http://127.0.0.1:1".to_vec(),
            log: Vec::new(),
            invite_mac: vec![2; 32],
            tree_blob: vec![3; 16],
            tree_len: 99,
            welcome: vec![4; 40],
        };
        let bytes = p.encode().unwrap();
        assert_eq!(WelcomePart::decode(&bytes).unwrap().unwrap(), p);
        assert!(WelcomePart::decode(br#"{"type":"welcome"}"#).is_none());
        let mut long = bytes.clone();
        long.push(0);
        assert!(WelcomePart::decode(&long).unwrap().is_err());
        let short = WelcomePart {
            group_id: vec![1; 3],
            ..p
        };
        assert!(
            WelcomePart::decode(&short.encode().unwrap())
                .unwrap()
                .is_err()
        );
    }

    #[test]
    fn a_sealed_tree_opens_only_with_its_key_and_unaltered() {
        let key = [7u8; 32];
        let sealed = seal_tree(&key, b"tree").unwrap();
        assert_eq!(open_tree(&key, &sealed).unwrap(), b"tree");
        assert!(open_tree(&[8u8; 32], &sealed).is_err());
        let mut bad = sealed.clone();
        bad[0] ^= 1;
        assert!(open_tree(&key, &bad).is_err());
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = SplitWelcome::parse(&bytes);
            let mut tagged = PART_MAGIC.to_vec();
            tagged.extend_from_slice(&bytes);
            let _ = WelcomePart::decode(&tagged);
        }
    }
}
