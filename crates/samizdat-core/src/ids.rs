//! The ids the client API speaks in: a conversation, a message, a contact, a device.
//!
//! Each is its own type, so a message id cannot be passed where a conversation is meant.
//! Names and aliases are what people type; they are resolved to ids at a front's edge
//! ([`crate::Profile::find_conversation`], [`crate::Profile::find_contact`],
//! [`crate::Profile::find_device`]) and never taken by a core method.
//!
//! On the wire (JSON-RPC, events) they are the strings they always were: conversation and
//! message ids are 16 bytes in unpadded base64url, contact and device ids a 32-byte key
//! fingerprint in lower-case hex.

use std::fmt;

use samizdat_proto::Id;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

/// Why a string is not an id of the kind asked for (a typed usage error).
fn not_an(what: &str, s: &str) -> Error {
    let shown: String = s.chars().take(64).collect();
    Error::Usage(format!("{shown:?} is not a {what} id"))
}

macro_rules! random_id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub(crate) Id);

        impl $name {
            pub(crate) fn from_id(id: Id) -> Self {
                $name(id)
            }

            pub(crate) fn id(&self) -> &Id {
                &self.0
            }

            #[allow(dead_code)] // not every id type needs it
            pub(crate) fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }

            /// From stored bytes (a wrong length is a damaged store).
            pub(crate) fn from_slice(bytes: &[u8]) -> crate::Result<Self> {
                Id::from_slice(bytes)
                    .map($name)
                    .map_err(|_| Error::Storage(concat!("corrupt ", $what, " id").into()))
            }

            /// The first four bytes in hex: enough to tell ids apart in logs.
            pub fn short(&self) -> String {
                self.0.short()
            }
        }

        impl std::str::FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> crate::Result<Self> {
                s.trim().parse().map($name).map_err(|_| not_an($what, s))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({}…)"), self.short())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.0.serialize(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Id::deserialize(d).map($name)
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "pattern": "^[A-Za-z0-9_-]{22}$",
                    "description": concat!("A ", $what, " id: 16 bytes, unpadded base64url."),
                })
            }
        }

        impl rusqlite::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(rusqlite::types::ToSqlOutput::Borrowed(
                    rusqlite::types::ValueRef::Blob(self.0.as_bytes()),
                ))
            }
        }

        impl rusqlite::types::FromSql for $name {
            fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
                Id::from_slice(v.as_blob()?)
                    .map($name)
                    .map_err(|e| rusqlite::types::FromSqlError::Other(Box::new(e)))
            }
        }
    };
}

macro_rules! key_id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub(crate) [u8; 32]);

        impl $name {
            pub(crate) fn from_bytes(bytes: [u8; 32]) -> Self {
                $name(bytes)
            }

            pub(crate) fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// From stored bytes (a wrong length is a damaged store).
            pub(crate) fn from_slice(bytes: &[u8]) -> crate::Result<Self> {
                <[u8; 32]>::try_from(bytes)
                    .map($name)
                    .map_err(|_| Error::Storage(concat!("corrupt ", $what, " id").into()))
            }

            /// The first four bytes in hex: enough to tell ids apart in logs.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }
        }

        impl std::str::FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> crate::Result<Self> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s.trim(), &mut out).map_err(|_| not_an($what, s))?;
                Ok($name(out))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({}…)"), self.short())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "pattern": "^[0-9a-f]{64}$",
                    "description": concat!("A ", $what, " id: a 32-byte key fingerprint in hex."),
                })
            }
        }

        impl rusqlite::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(rusqlite::types::ToSqlOutput::Borrowed(
                    rusqlite::types::ValueRef::Blob(&self.0),
                ))
            }
        }

        impl rusqlite::types::FromSql for $name {
            fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
                let b = v.as_blob()?;
                <[u8; 32]>::try_from(b).map($name).map_err(|_| {
                    rusqlite::types::FromSqlError::InvalidBlobSize {
                        expected_size: 32,
                        blob_size: b.len(),
                    }
                })
            }
        }
    };
}

random_id_type!(
    /// A conversation (1:1, group or the self group): its MLS group id.
    ConversationId,
    "conversation"
);

random_id_type!(
    /// A message: the id its sender gave it, the same on every member's device.
    MessageId,
    "message"
);

random_id_type!(
    /// A call: chosen by the caller, the same on both sides.
    CallId,
    "call"
);

random_id_type!(
    /// A channel: chosen by its creator, the same for every admin, follower and relay.
    ChannelId,
    "channel"
);

impl ChannelId {
    /// The id as relays know it (a channel's id is public to its relays and mirrors).
    pub fn as_proto(&self) -> &Id {
        &self.0
    }
}

key_id_type!(
    /// A person: the fingerprint of their identity key (what a safety number is made of).
    ContactId,
    "contact"
);

key_id_type!(
    /// One device of a person: the fingerprint of its MLS signing key.
    DeviceId,
    "device"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_read_back_what_they_write_and_refuse_the_other_kind() {
        let c = ConversationId::from_id(crate::random_id());
        let text = c.to_string();
        assert_eq!(text.parse::<ConversationId>().unwrap(), c);
        assert_eq!(
            serde_json::from_value::<ConversationId>(serde_json::to_value(c).unwrap()).unwrap(),
            c
        );
        // A device id (hex fingerprint) is not a conversation id, and the error is typed.
        let d = DeviceId::from_bytes([7; 32]);
        let err = d.to_string().parse::<ConversationId>().unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Usage);
        assert!(err.to_string().contains("not a conversation id"), "{err}");
        assert_eq!(d.to_string().parse::<DeviceId>().unwrap(), d);
        assert!(c.to_string().parse::<ContactId>().is_err());
    }
}
