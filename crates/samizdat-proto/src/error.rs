//! Machine-readable error codes shared by the relay and its clients.

use serde::{Deserialize, Serialize};

/// Every error the relay can answer with. The wire form is the snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The body or a parameter could not be parsed.
    BadRequest,
    /// The body, frame or entry is larger than the relay allows.
    TooLarge,
    /// No such mailbox, group or route.
    NotFound,
    /// The object already exists with different content.
    AlreadyExists,
    /// The owner signature is missing, malformed or wrong.
    BadSignature,
    /// The signature timestamp is outside the allowed window.
    StaleSignature,
    /// The signature nonce was already used.
    ReplayedSignature,
    /// The epoch token is missing or does not match the epoch.
    BadToken,
    /// A commit was sent for an epoch that is no longer current.
    EpochConflict,
    /// An application entry was sent for an epoch that is no longer current.
    StaleEpoch,
    /// The mailbox is full.
    QuotaExceeded,
    /// The KeyPackage pool has no KeyPackage and no last resort.
    NoKeyPackage,
    /// Too many requests of this kind from this address; retry later.
    RateLimited,
    /// Too many subscriptions on one WebSocket.
    TooManySubscriptions,
    /// The relay is shutting down or its storage failed; retry later.
    Unavailable,
    /// A bug in the relay. Never caused by a client.
    Internal,
    /// The request (its headers or body) did not arrive within the relay's time limit.
    Timeout,
    /// The group or the relay as a whole has reached its storage limit.
    StorageFull,
    /// A blob upload continued at an offset other than the relay's (query it and resume).
    OffsetMismatch,
    /// The blob's upload has not finished; it cannot be downloaded yet.
    Incomplete,
    /// A channel record does not follow the channel's last record (another was stored
    /// first, or it skips one): read the head and chain onto it.
    ChainConflict,
}

impl ErrorCode {
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::TooLarge => 413,
            ErrorCode::NotFound => 404,
            ErrorCode::AlreadyExists => 409,
            ErrorCode::BadSignature | ErrorCode::StaleSignature | ErrorCode::ReplayedSignature => {
                401
            }
            ErrorCode::BadToken => 403,
            ErrorCode::EpochConflict | ErrorCode::StaleEpoch => 409,
            ErrorCode::QuotaExceeded => 429,
            ErrorCode::NoKeyPackage => 404,
            ErrorCode::RateLimited | ErrorCode::TooManySubscriptions => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
            ErrorCode::Timeout => 408,
            ErrorCode::StorageFull => 429,
            ErrorCode::OffsetMismatch | ErrorCode::Incomplete | ErrorCode::ChainConflict => 409,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::BadSignature => "bad_signature",
            ErrorCode::StaleSignature => "stale_signature",
            ErrorCode::ReplayedSignature => "replayed_signature",
            ErrorCode::BadToken => "bad_token",
            ErrorCode::EpochConflict => "epoch_conflict",
            ErrorCode::StaleEpoch => "stale_epoch",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::NoKeyPackage => "no_key_package",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::Timeout => "timeout",
            ErrorCode::StorageFull => "storage_full",
            ErrorCode::OffsetMismatch => "offset_mismatch",
            ErrorCode::Incomplete => "incomplete",
            ErrorCode::ChainConflict => "chain_conflict",
        }
    }

    pub const ALL: [ErrorCode; 21] = [
        ErrorCode::BadRequest,
        ErrorCode::TooLarge,
        ErrorCode::NotFound,
        ErrorCode::AlreadyExists,
        ErrorCode::BadSignature,
        ErrorCode::StaleSignature,
        ErrorCode::ReplayedSignature,
        ErrorCode::BadToken,
        ErrorCode::EpochConflict,
        ErrorCode::StaleEpoch,
        ErrorCode::QuotaExceeded,
        ErrorCode::NoKeyPackage,
        ErrorCode::RateLimited,
        ErrorCode::TooManySubscriptions,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
        ErrorCode::Timeout,
        ErrorCode::StorageFull,
        ErrorCode::OffsetMismatch,
        ErrorCode::Incomplete,
        ErrorCode::ChainConflict,
    ];
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON body of every error response: `{"code": "...", "message": "..."}`.
/// `current_epoch` is set on `epoch_conflict` and `stale_epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_epoch: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_match_as_str() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}
