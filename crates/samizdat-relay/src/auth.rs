//! Owner signatures (Ed25519 through aws-lc-rs) and epoch-token hashing (SHA-256).

use aws_lc_rs::digest;
use aws_lc_rs::signature::{ED25519, UnparsedPublicKey};

/// SHA-256 of an epoch token: the only form of a token the relay keeps.
pub fn token_hash(token: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, token);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// True if `signature` is `owner_key`'s Ed25519 signature over `message`.
pub fn verify(owner_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, owner_key)
        .verify(message, signature)
        .is_ok()
}

/// A fresh 16-byte random value (WebSocket challenges), or `None` if the system's random
/// number generator failed: callers must then refuse to go on (fail closed), because a
/// predictable challenge would let a captured signature be replayed.
pub fn random_id() -> Option<samizdat_proto::Id> {
    let mut b = [0u8; 16];
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        tracing::error!("system random number generator failed");
        return None;
    }
    Some(samizdat_proto::Id::from_bytes(b))
}
