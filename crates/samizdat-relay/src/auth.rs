//! Owner signatures (Ed25519 through aws-lc-rs) and epoch-token hashing (SHA-256).

use aws_lc_rs::digest;
use aws_lc_rs::signature::{ED25519, UnparsedPublicKey};
use samizdat_proto::Id;

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

/// Epoch tokens the store has confirmed, by group and token hash: an append's check of who
/// may append answered from memory instead of a store read (a PostgreSQL round trip).
///
/// Only confirmed tokens enter, so a stranger cannot fill it; it holds at most
/// [`TokenCache::CAPACITY`] entries and starts over when full. It is a pre-check only: the
/// store checks the token again inside the append's transaction, so an epoch swept since it
/// was cached is refused there with the same error.
#[derive(Default)]
pub struct TokenCache {
    known: std::sync::Mutex<std::collections::HashMap<(Id, [u8; 32]), u64>>,
}

impl TokenCache {
    pub const CAPACITY: usize = 65_536;

    pub fn get(&self, group: Id, token_hash: &[u8; 32]) -> Option<u64> {
        self.lock().get(&(group, *token_hash)).copied()
    }

    pub fn insert(&self, group: Id, token_hash: [u8; 32], epoch: u64) {
        let mut known = self.lock();
        if known.len() >= Self::CAPACITY {
            known.clear();
        }
        known.insert((group, token_hash), epoch);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<(Id, [u8; 32]), u64>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod token_cache_tests {
    use super::*;

    #[test]
    fn holds_what_was_confirmed_and_stays_bounded() {
        let c = TokenCache::default();
        let g = Id::from_bytes([9; 16]);
        assert_eq!(c.get(g, &[1; 32]), None);
        c.insert(g, [1; 32], 7);
        assert_eq!(c.get(g, &[1; 32]), Some(7));
        assert_eq!(c.get(g, &[2; 32]), None);
        assert_eq!(c.get(Id::from_bytes([8; 16]), &[1; 32]), None);
        for i in 0..TokenCache::CAPACITY as u64 + 10 {
            let mut h = [0u8; 32];
            h[..8].copy_from_slice(&i.to_le_bytes());
            c.insert(g, h, i);
        }
        assert!(c.lock().len() <= TokenCache::CAPACITY);
    }
}
