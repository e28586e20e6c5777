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
        }
    }
}
