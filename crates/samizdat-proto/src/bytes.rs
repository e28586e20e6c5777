//! Byte strings and identifiers as unpadded base64url.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    #[error("not valid unpadded base64url")]
    Base64,
    #[error("expected 16 bytes, got {0}")]
    Length(usize),
}

/// Arbitrary bytes, encoded as an unpadded base64url string on the wire.
#[derive(Clone, PartialEq, Eq, Default, Hash)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    pub fn encode(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn decode(s: &str) -> Result<Vec<u8>, IdError> {
        URL_SAFE_NO_PAD
            .decode(s.as_bytes())
            .map_err(|_| IdError::Base64)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        Bytes(v)
    }
}

impl fmt::Debug for Bytes {
    // Never print contents: they may be ciphertext, tokens or keys.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes({} bytes)", self.0.len())
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&Bytes::encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Bytes::decode(&s)
            .map(Bytes)
            .map_err(serde::de::Error::custom)
    }
}

/// A 16-byte random identifier (mailbox, group, request or nonce).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id([u8; 16]);

impl Id {
    pub const LEN: usize = 16;

    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Id(bytes)
    }

    pub fn from_slice(bytes: &[u8]) -> Result<Self, IdError> {
        <[u8; 16]>::try_from(bytes)
            .map(Id)
            .map_err(|_| IdError::Length(bytes.len()))
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The first four bytes in hex: enough to tell ids apart in logs, not to identify one.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl std::str::FromStr for Id {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 22 {
            return Err(match Bytes::decode(s) {
                Ok(v) => IdError::Length(v.len()),
                Err(e) => e,
            });
        }
        Id::from_slice(&Bytes::decode(s)?)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&Bytes::encode(&self.0))
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({}…)", self.short())
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The OpenAPI schema of a base64url string.
fn base64url_schema(
    pattern: &str,
    description: &str,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some(pattern))
        .description(Some(description))
        .into()
}

impl utoipa::PartialSchema for Bytes {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        base64url_schema("^[A-Za-z0-9_-]*$", "unpadded base64url")
    }
}

impl utoipa::ToSchema for Bytes {}

impl utoipa::PartialSchema for Id {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        base64url_schema("^[A-Za-z0-9_-]{22}$", "16 random bytes, unpadded base64url")
    }
}

impl utoipa::ToSchema for Id {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn id_roundtrips(bytes in any::<[u8; 16]>()) {
            let id = Id::from_bytes(bytes);
            let parsed: Id = id.to_string().parse().unwrap();
            prop_assert_eq!(id, parsed);
        }

        #[test]
        fn id_parse_never_panics(s in ".{0,64}") {
            let _ = s.parse::<Id>();
        }

        #[test]
        fn bytes_roundtrip(v in proptest::collection::vec(any::<u8>(), 0..300)) {
            let json = serde_json::to_string(&Bytes(v.clone())).unwrap();
            let back: Bytes = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(back.0, v);
        }
    }

    #[test]
    fn id_rejects_wrong_length() {
        assert_eq!("AAAA".parse::<Id>(), Err(IdError::Length(3)));
        assert_eq!("!!".parse::<Id>(), Err(IdError::Base64));
    }
}
