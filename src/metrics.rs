//! What `GET /metrics` exposes, in the Prometheus (OpenMetrics) text
//! format, with prometheus-client: polls by source and result, fetch
//! durations and bytes, the 304 ratio, entries by what happened to them,
//! entries stored and the store's size, scheduler lag, reloads, and HTTP
//! requests by route and status.
//!
//! Recording is a few atomic operations; reading the store's figures
//! (counters kept by the store, a directory listing) happens only at scrape
//! time. Label values are bounded: source names come from the config,
//! routes are route templates, never raw paths.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::model::IngestCounts;

/// The content type of `/metrics`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PollLabels {
    source: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EntryLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: u16,
}

/// How a poll ended, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollResult {
    /// A document was read and stored.
    Stored,
    /// 304 Not Modified.
    NotModified,
    /// The poll failed.
    Failed,
    /// Not due, or disabled.
    Skipped,
    /// Stopped by a reload.
    Cancelled,
}

impl PollResult {
    fn label(self) -> &'static str {
        match self {
            PollResult::Stored => "stored",
            PollResult::NotModified => "not_modified",
            PollResult::Failed => "failed",
            PollResult::Skipped => "skipped",
            PollResult::Cancelled => "cancelled",
        }
    }
}

/// Every metric the daemon keeps; shared by the polls and the server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    polls: Family<PollLabels, Counter>,
    fetch_seconds: Histogram,
    fetched_bytes: Counter,
    not_modified_ratio: Gauge<f64, AtomicU64>,
    entries: Family<EntryLabels, Counter>,
    entries_stored: Gauge,
    store_bytes: Gauge,
    scheduler_lag: Histogram,
    reloads: Family<ReloadLabels, Counter>,
    last_reload_ok: Gauge,
    last_reload_time: Gauge,
    requests: Family<RequestLabels, Counter>,
    /// Polls answered 304, and polls answered with a document or a 304
    /// (for the ratio; a family cannot be summed).
    not_modified: AtomicU64,
    answered: AtomicU64,
    store_path: PathBuf,
}

impl Metrics {
    /// A fresh set of metrics for a daemon whose store is at `store_path`.
    pub fn new(store_path: &Path) -> Self {
        let mut registry = Registry::with_prefix("feedmerge");
        let polls = Family::<PollLabels, Counter>::default();
        registry.register(
            "polls",
            "Polls by source and result (stored, not_modified, failed, skipped, cancelled)",
            polls.clone(),
        );
        let fetch_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register(
            "fetch_duration_seconds",
            "Time from sending a request to having the whole body",
            fetch_seconds.clone(),
        );
        let fetched_bytes = Counter::default();
        registry.register(
            "fetched_bytes",
            "Decoded body bytes fetched",
            fetched_bytes.clone(),
        );
        let not_modified_ratio = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "not_modified_ratio",
            "Share of answered polls that were 304 Not Modified, since start",
            not_modified_ratio.clone(),
        );
        let entries = Family::<EntryLabels, Counter>::default();
        registry.register(
            "entries",
            "Entries read by what happened to them (new, updated, unchanged, merged, \
             suppressed, filtered)",
            entries.clone(),
        );
        let entries_stored = Gauge::default();
        registry.register(
            "entries_stored",
            "Entries in the store (as of the last flush)",
            entries_stored.clone(),
        );
        let store_bytes = Gauge::default();
        registry.register(
            "store_size_bytes",
            "Bytes the store's directory holds on disk",
            store_bytes.clone(),
        );
        let scheduler_lag = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "scheduler_lag_seconds",
            "Time from a source's cron firing to its poll starting (jitter excluded)",
            scheduler_lag.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Config reloads by result (ok, error)",
            reloads.clone(),
        );
        let last_reload_ok = Gauge::default();
        registry.register(
            "config_last_reload_successful",
            "1 if the last reload put its file in force, 0 if it was refused",
            last_reload_ok.clone(),
        );
        let last_reload_time = Gauge::default();
        registry.register(
            "config_last_reload_timestamp_seconds",
            "When the last reload finished (Unix time)",
            last_reload_time.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route and status",
            requests.clone(),
        );
        Self {
            registry,
            polls,
            fetch_seconds,
            fetched_bytes,
            not_modified_ratio,
            entries,
            entries_stored,
            store_bytes,
            scheduler_lag,
            reloads,
            last_reload_ok,
            last_reload_time,
            requests,
            not_modified: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            store_path: store_path.to_path_buf(),
        }
    }

    /// One poll of `source` ended with `result`.
    pub fn poll(&self, source: &str, result: PollResult) {
        match result {
            PollResult::NotModified => {
                self.not_modified.fetch_add(1, Ordering::Relaxed);
                self.answered.fetch_add(1, Ordering::Relaxed);
            }
            PollResult::Stored => {
                self.answered.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        self.polls
            .get_or_create(&PollLabels {
                source: source.to_string(),
                result: result.label(),
            })
            .inc();
    }

    /// One fetch took `took` and brought `bytes` (decoded).
    pub fn fetch(&self, took: Duration, bytes: usize) {
        self.fetch_seconds.observe(took.as_secs_f64());
        self.fetched_bytes.inc_by(bytes as u64);
    }

    /// What one ingest did, and how many entries the intake limits left out.
    pub fn entries(&self, counts: &IngestCounts, filtered: usize) {
        for (kind, n) in [
            ("new", counts.new),
            ("updated", counts.updated),
            ("unchanged", counts.unchanged),
            ("merged", counts.merged),
            ("suppressed", counts.suppressed),
            ("filtered", filtered),
        ] {
            if n > 0 {
                self.entries
                    .get_or_create(&EntryLabels { kind })
                    .inc_by(n as u64);
            }
        }
    }

    /// A scheduled poll started `lag` after its cron time.
    pub fn scheduler_lag(&self, lag: Duration) {
        self.scheduler_lag.observe(lag.as_secs_f64());
    }

    /// A reload ended (`ok`: its file is in force) at `unix_seconds`.
    pub fn reload(&self, ok: bool, unix_seconds: i64) {
        let result = if ok { "ok" } else { "error" };
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
        self.last_reload_ok.set(i64::from(ok));
        self.last_reload_time.set(unix_seconds);
    }

    /// The server answered a request to `route` (a route template) with
    /// `status`.
    pub fn request(&self, route: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                status,
            })
            .inc();
    }

    /// The text of `/metrics`, with the store's figures read now.
    pub fn render(&self, entries_stored: u64) -> String {
        self.entries_stored
            .set(i64::try_from(entries_stored).unwrap_or(i64::MAX));
        self.store_bytes
            .set(i64::try_from(dir_size(&self.store_path)).unwrap_or(i64::MAX));
        let not_modified = self.not_modified.load(Ordering::Relaxed);
        let answered = self.answered.load(Ordering::Relaxed);
        let ratio = if answered == 0 {
            0.0
        } else {
            not_modified as f64 / answered as f64
        };
        self.not_modified_ratio.set(ratio);
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text = "# EOF\n".into();
        }
        text
    }
}

/// Bytes in the files under `dir` (sled's directory is flat but for one
/// level of blobs).
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_size(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_holds_every_family_with_its_labels() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db"), vec![0u8; 1000]).unwrap();
        let metrics = Metrics::new(dir.path());
        metrics.poll("centcom-ar", PollResult::Stored);
        metrics.poll("centcom-ar", PollResult::NotModified);
        metrics.poll("centcom-ar", PollResult::NotModified);
        metrics.poll("other", PollResult::NotModified);
        metrics.poll("other", PollResult::Failed);
        metrics.fetch(Duration::from_millis(30), 2048);
        metrics.entries(
            &IngestCounts {
                new: 3,
                updated: 1,
                merged: 2,
                ..IngestCounts::default()
            },
            5,
        );
        metrics.scheduler_lag(Duration::from_millis(4));
        metrics.reload(false, 1_700_000_000);
        metrics.request("/feed.atom", 200);
        let text = metrics.render(42);
        for line in [
            "feedmerge_polls_total{source=\"centcom-ar\",result=\"not_modified\"} 2",
            "feedmerge_polls_total{source=\"other\",result=\"failed\"} 1",
            "feedmerge_fetched_bytes_total 2048",
            "feedmerge_not_modified_ratio 0.75",
            "feedmerge_entries_total{kind=\"new\"} 3",
            "feedmerge_entries_total{kind=\"merged\"} 2",
            "feedmerge_entries_total{kind=\"filtered\"} 5",
            "feedmerge_entries_stored 42",
            "feedmerge_store_size_bytes 1000",
            "feedmerge_config_reloads_total{result=\"error\"} 1",
            "feedmerge_config_last_reload_successful 0",
            "feedmerge_config_last_reload_timestamp_seconds 1700000000",
            "feedmerge_http_requests_total{route=\"/feed.atom\",status=\"200\"} 1",
            "feedmerge_fetch_duration_seconds_count 1",
            "feedmerge_scheduler_lag_seconds_count 1",
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
