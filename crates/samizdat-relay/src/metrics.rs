//! Prometheus metrics through the `metrics` crate, rendered by `GET /metrics` on the separate
//! metrics listener.
//!
//! Each relay has its own recorder (not the process-global one), so several relays in one
//! process — the integration tests — count separately. Counters and gauges are registered
//! once and kept as handles; request latency is a histogram per route *template* (never an
//! id) and method.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use samizdat_proto::ErrorCode;

const META: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));
const LATENCY: &str = "samizdat_http_request_duration_seconds";
const REJECTIONS: &str = "samizdat_rejections_total";

pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    pub http_requests: Counter,
    pub entries_stored: Counter,
    pub entry_bytes_stored: Counter,
    pub mailbox_messages_stored: Counter,
    pub mailbox_bytes_stored: Counter,
    pub key_packages_claimed: Counter,
    pub ws_connections: Gauge,
    pub ws_connections_total: Counter,
    pub pushed_frames: Counter,
    /// Log reads made to push entries to WebSocket subscribers (catch-up, wake-ups from
    /// other processes, announced entries that could not be pushed as they came).
    pub push_reads: Counter,
    pub connections_refused: Counter,
    /// Per (route, method) latency histograms and per-code rejection counters, registered
    /// on first use (routes and codes are fixed sets, so these stay small).
    latency: Mutex<HashMap<(String, &'static str), Histogram>>,
    rejections: Mutex<HashMap<&'static str, Counter>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(LATENCY.into()),
                &[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ],
            )
            .map(|b| b.build_recorder())
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        let counter = |name: &'static str, help: &'static str| {
            recorder.describe_counter(KeyName::from_const_str(name), None, help.into());
            recorder.register_counter(&Key::from_static_name(name), &META)
        };
        let http_requests = counter("samizdat_http_requests_total", "HTTP requests received.");
        let entries_stored = counter("samizdat_entries_stored_total", "Group log entries stored.");
        let entry_bytes_stored = counter(
            "samizdat_entry_bytes_stored_total",
            "Bytes of group log entries stored.",
        );
        let mailbox_messages_stored = counter(
            "samizdat_mailbox_messages_stored_total",
            "Mailbox messages stored (drops and Welcomes).",
        );
        let mailbox_bytes_stored = counter(
            "samizdat_mailbox_bytes_stored_total",
            "Bytes of mailbox messages stored.",
        );
        let key_packages_claimed = counter(
            "samizdat_key_packages_claimed_total",
            "KeyPackages handed out.",
        );
        let ws_connections_total = counter(
            "samizdat_ws_connections_total",
            "WebSocket connections accepted.",
        );
        let pushed_frames = counter(
            "samizdat_pushed_frames_total",
            "Frames pushed to subscribers.",
        );
        let push_reads = counter(
            "samizdat_push_reads_total",
            "Log reads made to push entries to WebSocket subscribers.",
        );
        let connections_refused = counter(
            "samizdat_connections_refused_total",
            "Connections closed at once because a connection cap was reached.",
        );
        recorder.describe_gauge(
            KeyName::from_const_str("samizdat_ws_connections"),
            None,
            "Open WebSocket connections.".into(),
        );
        let ws_connections =
            recorder.register_gauge(&Key::from_static_name("samizdat_ws_connections"), &META);
        recorder.describe_counter(
            KeyName::from_const_str(REJECTIONS),
            None,
            "Requests refused, by error code.".into(),
        );
        recorder.describe_histogram(
            KeyName::from_const_str(LATENCY),
            Some(metrics::Unit::Seconds),
            "Time to answer an HTTP request, by route template and method.".into(),
        );
        Metrics {
            recorder,
            handle,
            http_requests,
            entries_stored,
            entry_bytes_stored,
            mailbox_messages_stored,
            mailbox_bytes_stored,
            key_packages_claimed,
            ws_connections,
            ws_connections_total,
            pushed_frames,
            push_reads,
            connections_refused,
            latency: Mutex::new(HashMap::new()),
            rejections: Mutex::new(HashMap::new()),
        }
    }

    pub fn reject(&self, code: ErrorCode) {
        let mut m = self.rejections.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(code.as_str())
            .or_insert_with(|| {
                let key = Key::from_parts(REJECTIONS, vec![Label::new("code", code.as_str())]);
                self.recorder.register_counter(&key, &META)
            })
            .increment(1);
    }

    /// Record one answered request. `route` is the route template (e.g.
    /// `/v1/groups/{id}/entries`) or `unmatched`, `method` one of a fixed set: the number of
    /// histograms is bounded whatever clients send.
    pub fn observe(&self, route: &str, method: &'static str, took: Duration) {
        let mut m = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        m.entry((route.to_string(), method))
            .or_insert_with(|| {
                let key = Key::from_parts(
                    LATENCY,
                    vec![
                        Label::new("route", route.to_string()),
                        Label::new("method", method),
                    ],
                );
                self.recorder.register_histogram(&key, &META)
            })
            .record(took.as_secs_f64());
    }

    pub fn render(&self) -> String {
        self.handle.run_upkeep();
        self.handle.render()
    }
}
