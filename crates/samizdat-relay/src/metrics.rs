//! Prometheus counters, rendered by `GET /metrics`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use samizdat_proto::ErrorCode;

#[derive(Default)]
pub struct Metrics {
    pub http_requests: AtomicU64,
    pub entries_stored: AtomicU64,
    pub entry_bytes_stored: AtomicU64,
    pub mailbox_messages_stored: AtomicU64,
    pub mailbox_bytes_stored: AtomicU64,
    pub key_packages_claimed: AtomicU64,
    pub ws_connections: AtomicI64,
    pub ws_connections_total: AtomicU64,
    pub pushed_frames: AtomicU64,
    pub connections_refused: AtomicU64,
    rejections: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    pub fn reject(&self, code: ErrorCode) {
        if let Ok(mut m) = self.rejections.lock() {
            *m.entry(code.as_str()).or_default() += 1;
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, kind: &str, v: String| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            ));
        };
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        counter(
            "samizdat_http_requests_total",
            "HTTP requests received.",
            "counter",
            g(&self.http_requests),
        );
        counter(
            "samizdat_connections_refused_total",
            "Connections closed at once because a connection cap was reached.",
            "counter",
            g(&self.connections_refused),
        );
        counter(
            "samizdat_entries_stored_total",
            "Group log entries stored.",
            "counter",
            g(&self.entries_stored),
        );
        counter(
            "samizdat_entry_bytes_stored_total",
            "Bytes of group log entries stored.",
            "counter",
            g(&self.entry_bytes_stored),
        );
        counter(
            "samizdat_mailbox_messages_stored_total",
            "Mailbox messages stored (drops and Welcomes).",
            "counter",
            g(&self.mailbox_messages_stored),
        );
        counter(
            "samizdat_mailbox_bytes_stored_total",
            "Bytes of mailbox messages stored.",
            "counter",
            g(&self.mailbox_bytes_stored),
        );
        counter(
            "samizdat_key_packages_claimed_total",
            "KeyPackages handed out.",
            "counter",
            g(&self.key_packages_claimed),
        );
        counter(
            "samizdat_ws_connections",
            "Open WebSocket connections.",
            "gauge",
            self.ws_connections.load(Ordering::Relaxed).to_string(),
        );
        counter(
            "samizdat_ws_connections_total",
            "WebSocket connections accepted.",
            "counter",
            g(&self.ws_connections_total),
        );
        counter(
            "samizdat_pushed_frames_total",
            "Frames pushed to subscribers.",
            "counter",
            g(&self.pushed_frames),
        );
        out.push_str("# HELP samizdat_rejections_total Requests refused, by error code.\n# TYPE samizdat_rejections_total counter\n");
        if let Ok(m) = self.rejections.lock() {
            for (code, n) in m.iter() {
                out.push_str(&format!(
                    "samizdat_rejections_total{{code=\"{code}\"}} {n}\n"
                ));
            }
        }
        out
    }
}
