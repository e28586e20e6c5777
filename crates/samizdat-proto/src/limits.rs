//! Every size and rate the relay bounds, with the defaults it ships with.

use serde::{Deserialize, Serialize};

/// Configurable relay limits. Every field has a default; a TOML `[limits]` table may
/// override any of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest application entry body, in bytes (an MLS application message is ~220 B).
    pub max_application_entry: usize,
    /// Largest commit entry body, in bytes (a post-quantum 1,000-member add is ~2.7 MB).
    pub max_commit_entry: usize,
    /// Largest mailbox message (a Welcome of a big post-quantum group is megabytes).
    pub max_mailbox_message: usize,
    /// Largest HTTP request body or WebSocket frame, in bytes.
    pub max_request_body: usize,
    /// Most messages one mailbox may hold before drops are refused.
    pub mailbox_quota_messages: u64,
    /// Most bytes one mailbox may hold before drops are refused.
    pub mailbox_quota_bytes: u64,
    /// Most KeyPackages in one mailbox's pool.
    pub max_key_packages: u64,
    /// Largest single KeyPackage, in bytes.
    pub max_key_package_size: usize,
    /// Most Welcome drops carried by one commit.
    pub max_welcomes_per_commit: usize,
    /// Most subscriptions (mailboxes + groups) on one WebSocket.
    pub max_subscriptions: usize,
    /// Most entries returned by one read.
    pub max_read_entries: usize,
    /// KeyPackage claims per client IP per minute.
    pub claims_per_ip_per_minute: u32,
    /// Mailbox and group creations per client IP per minute.
    pub creations_per_ip_per_minute: u32,
    /// Mailbox messages expire after this many seconds unless acknowledged.
    pub mailbox_ttl_secs: u64,
    /// Group log entries expire after this many seconds.
    pub retention_secs: u64,
    /// Request body bytes the relay holds in memory at once, over all requests; a request
    /// that would exceed it waits briefly, then gets `unavailable` (503, Retry-After).
    pub max_inflight_body_bytes: u64,
    /// Of those, the bytes one client address (IPv6: one /64) may hold at once, even a valid
    /// owner's; never less than `max_request_body`. Beyond it a request gets `rate_limited`.
    pub max_inflight_body_bytes_per_ip: u64,
    /// A client must send a request's headers within this many seconds (slowloris).
    pub header_timeout_secs: u64,
    /// A client must send a request's whole body within this many seconds.
    pub body_timeout_secs: u64,
    /// A WebSocket must prove within this many seconds that it belongs to someone (a
    /// subscription or an accepted append), or it is closed (security review 3, M4).
    pub ws_proof_secs: u64,
    /// Open connections (HTTP and WebSocket) over all clients.
    pub max_connections: usize,
    /// Open connections from one address (IPv6: one /64).
    pub max_connections_per_ip: usize,
    /// Writes waiting for the SQLite writer; beyond it the relay answers 503.
    pub writer_queue: usize,
    /// Mailbox drops per client address per minute.
    pub drops_per_ip_per_minute: u32,
    /// Drops into one mailbox per minute, from all addresses together.
    pub drops_per_mailbox_per_minute: u32,
    /// KeyPackage claims from one mailbox's pool per minute, from all addresses together.
    pub claims_per_mailbox_per_minute: u32,
    /// Extra bytes a mailbox accepts for Welcomes that arrive with accepted commits, beyond
    /// `mailbox_quota_bytes`, so that a mailbox filled by drops cannot block a group add.
    pub welcome_allowance_bytes: u64,
    /// Extra messages a mailbox accepts for Welcomes beyond `mailbox_quota_messages`.
    pub welcome_allowance_messages: u64,
    /// Most bytes of entries one group log may hold.
    pub max_group_bytes: u64,
    /// Most bytes of entries and mailbox messages the whole relay holds (0: no limit).
    pub max_relay_bytes: u64,
    /// Writes (entries, mailbox messages, blobs) are refused with `storage_full` while the
    /// file system of the relay's data or blob directory has less than this share free, in
    /// percent (0: no floor). Keeps a relay's disk from being filled to the last byte.
    pub min_free_disk_percent: u64,
    /// A mailbox whose owner has not signed a request for this long is deleted with its
    /// messages and KeyPackages.
    pub mailbox_idle_secs: u64,
    /// A group log nobody appended to for this long is deleted with its epochs (members of a
    /// conversation silent that long must start it afresh).
    pub group_idle_secs: u64,
    /// Unclaimed KeyPackages are deleted this long after upload (clients make them valid
    /// for 180 days and refill the pool).
    pub key_package_ttl_secs: u64,
    /// Largest blob (an encrypted attachment) the relay accepts, in bytes.
    pub max_blob_bytes: u64,
    /// Largest piece of a blob one upload request may carry.
    pub max_blob_chunk: usize,
    /// Bytes of unexpired blobs one source (an IPv4 address or IPv6 /64) may hold.
    pub blob_quota_bytes: u64,
    /// Blobs are deleted this long after their upload finished.
    pub blob_ttl_secs: u64,
    /// A channel's files (blobs an admin of the channel vouched for) are deleted this long
    /// after their upload finished: a channel is an archive read long after a post.
    pub channel_blob_ttl_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_application_entry: 64 * 1024,
            max_commit_entry: 8 * 1024 * 1024,
            max_mailbox_message: 8 * 1024 * 1024,
            max_request_body: 12 * 1024 * 1024,
            mailbox_quota_messages: 10_000,
            mailbox_quota_bytes: 64 * 1024 * 1024,
            max_key_packages: 200,
            max_key_package_size: 16 * 1024,
            max_welcomes_per_commit: 1_000,
            max_subscriptions: 1_000,
            max_read_entries: 500,
            claims_per_ip_per_minute: 120,
            creations_per_ip_per_minute: 60,
            mailbox_ttl_secs: 30 * 24 * 3600,
            retention_secs: 30 * 24 * 3600,
            max_inflight_body_bytes: 48 * 1024 * 1024,
            max_inflight_body_bytes_per_ip: 16 * 1024 * 1024,
            header_timeout_secs: 10,
            body_timeout_secs: 60,
            ws_proof_secs: 10,
            max_connections: 8192,
            max_connections_per_ip: 256,
            writer_queue: 4096,
            drops_per_ip_per_minute: 120,
            drops_per_mailbox_per_minute: 60,
            claims_per_mailbox_per_minute: 60,
            welcome_allowance_bytes: 64 * 1024 * 1024,
            welcome_allowance_messages: 1_000,
            max_group_bytes: 1024 * 1024 * 1024,
            max_relay_bytes: 0,
            min_free_disk_percent: 5,
            mailbox_idle_secs: 180 * 24 * 3600,
            group_idle_secs: 180 * 24 * 3600,
            key_package_ttl_secs: 150 * 24 * 3600,
            max_blob_bytes: 100 * 1024 * 1024,
            max_blob_chunk: 8 * 1024 * 1024,
            blob_quota_bytes: 1024 * 1024 * 1024,
            blob_ttl_secs: 30 * 24 * 3600,
            channel_blob_ttl_secs: 5 * 365 * 24 * 3600,
        }
    }
}
