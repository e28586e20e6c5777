//! Samizdat's wire protocol: the JSON bodies of the relay's HTTP API, the WebSocket frames,
//! the error codes, the default limits and the exact bytes that owners sign.
//!
//! This crate does no I/O and no cryptography. The relay and the client core both depend on
//! it, so the two can never disagree about an encoding. `docs/PROTOCOL.md` is the prose
//! version of what is here.
//!
//! Binary values travel as unpadded base64url strings ([`Bytes`], [`Id`]). Identifiers are
//! 16 random bytes chosen by the client ([`Id`]).

mod bytes;
pub mod channel;
mod error;
mod frames;
mod limits;
mod messages;

pub use bytes::{Bytes, Id, IdError};
pub use channel::{ChannelHead, ChannelRecord, RecordError, RecordKind};
pub use error::{ErrorBody, ErrorCode};
pub use frames::{BinaryAppend, BinaryEntry, BinaryFrameError, ClientFrame, ServerFrame};
pub use limits::Limits;
pub use messages::*;

/// The protocol version this crate speaks; it is the `/v1` in every path.
pub const PROTOCOL_VERSION: u32 = 1;
/// The `hello` feature of relays that push entries as [`BinaryEntry`] frames on request.
pub const FEATURE_BINARY_ENTRIES: &str = "binary_entries";

/// HTTP header carrying the owner's signature timestamp (Unix seconds).
pub const HEADER_TIMESTAMP: &str = "x-samizdat-timestamp";
/// HTTP header carrying the owner's 16-byte random nonce (base64url).
pub const HEADER_NONCE: &str = "x-samizdat-nonce";
/// HTTP header carrying the owner's Ed25519 signature (base64url).
pub const HEADER_SIGNATURE: &str = "x-samizdat-signature";
/// HTTP header carrying a group's epoch token (base64url).
pub const HEADER_TOKEN: &str = "x-samizdat-token";
/// HTTP header carrying a blob's upload token (base64url), the capability to write it.
pub const HEADER_UPLOAD_TOKEN: &str = "x-samizdat-upload-token";
/// Creating a blob: the group whose epoch token (`x-samizdat-token`) vouches for it.
pub const HEADER_GROUP: &str = "x-samizdat-group";
/// Creating a blob: the mailbox whose owner signed the request (the signature headers).
pub const HEADER_MAILBOX: &str = "x-samizdat-mailbox";
/// Creating a blob: the channel one of whose current admins signed the request (the signature
/// headers); the blob lives `channel_blob_ttl_secs`, as long as a channel's posts are read.
pub const HEADER_CHANNEL: &str = "x-samizdat-channel";
/// HTTP header: a blob's total length (creating it) or where a piece starts (appending).
pub const HEADER_UPLOAD_LENGTH: &str = "upload-length";
pub const HEADER_UPLOAD_OFFSET: &str = "upload-offset";
/// Binary appends (`Content-Type: application/octet-stream`): the request id (base64url).
pub const HEADER_REQUEST_ID: &str = "x-samizdat-request-id";
/// Binary appends: the sender's epoch (decimal).
pub const HEADER_EPOCH: &str = "x-samizdat-epoch";
/// Binary appends: `application` or `commit`.
pub const HEADER_KIND: &str = "x-samizdat-kind";
/// Binary appends of a commit: SHA-256 of the next epoch's token (base64url).
pub const HEADER_NEXT_TOKEN_HASH: &str = "x-samizdat-next-token-hash";

/// How far an owner's signature timestamp may be from the relay's clock, in seconds.
pub const SIGNATURE_WINDOW_SECS: u64 = 300;

/// The bytes a mailbox owner signs for an HTTP request.
///
/// `samizdat-v1-http\n{METHOD}\n{PATH}\n{timestamp}\n{nonce}\n` followed by the raw body.
/// `PATH` is the request path without the query string; the query is covered by signing
/// the path plus `?` plus the raw query when one is present.
pub fn http_signing_payload(
    method: &str,
    path_and_query: &str,
    timestamp: u64,
    nonce: &Id,
    body: &[u8],
) -> Vec<u8> {
    let mut out = format!(
        "samizdat-v1-http\n{}\n{}\n{}\n{}\n",
        method.to_ascii_uppercase(),
        path_and_query,
        timestamp,
        nonce
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// The bytes a mailbox owner signs to subscribe to its mailbox over a WebSocket: the
/// connection's challenge binds the signature to that one connection.
pub fn ws_signing_payload(challenge: &Id, mailbox: &Id) -> Vec<u8> {
    format!("samizdat-v1-ws\n{challenge}\n{mailbox}\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_payload_is_stable() {
        let nonce = Id::from_bytes([7; 16]);
        let payload =
            http_signing_payload("get", "/v1/mailboxes/x/messages?after=3", 42, &nonce, b"{}");
        assert_eq!(
            String::from_utf8(payload).unwrap(),
            "samizdat-v1-http\nGET\n/v1/mailboxes/x/messages?after=3\n42\nBwcHBwcHBwcHBwcHBwcHBw\n{}"
        );
    }
}
