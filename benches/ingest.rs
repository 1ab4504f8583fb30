//! Ingest benchmark (issue 5): dedup lookups are index reads (sled trees:
//! canonical URLs, LSH bands within a time window), not scans, so storing a
//! poll's entries costs about the same in an empty store and in one that
//! already holds a million entries.
//!
//! Entries arrive in time order over 60 days, as news does. Run:
//! `cargo bench --bench ingest` (fills to 1,000,000 entries), or
//! `cargo bench --bench ingest -- 200000` for a quicker run. It measures
//! batches of 100 new entries from 10 sources (each looked up against the
//! store for same-link, canonical-URL and near-duplicate copies) into an
//! empty store and into a filled one, alternating batch by batch so both
//! meet the same moments of a shared machine. It prints the mean and the
//! median batch: the median is the figure a passing hiccup does not move. The sled cache is 64 MiB
//! (`FEEDMERGE_BENCH_CACHE_MB` changes it).

use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use feedmerge::config::DedupConfig;
use feedmerge::dedup;
use feedmerge::model::Entry;
use feedmerge::store::{Store, StoreOptions};

const BATCH: usize = 100;
const MEASURED_BATCHES: usize = 200;
/// Syllables for a synthetic vocabulary of 8,000 words: real news has a
/// large vocabulary, and a tiny one would make every text look alike.
const SYLLABLES: &[&str] = &[
    "ba", "ko", "ri", "ta", "mu", "sel", "dan", "or", "vi", "ne", "pol", "ha", "gri", "su", "le",
    "mar", "to", "zen", "ca", "fi",
];

/// A deterministic generator (xorshift), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn word(&mut self) -> String {
        (0..3)
            .map(|_| SYLLABLES[(self.next() % SYLLABLES.len() as u64) as usize])
            .collect()
    }
}

/// Entry `n` of a store that fills to `size` entries over 60 days: entries
/// arrive in time order, as news does.
fn entry(rng: &mut Rng, n: u64, size: u64, now: DateTime<Utc>, rules: &DedupConfig) -> Entry {
    let source = format!("source-{}", n % 10);
    let title: Vec<String> = (0..8).map(|_| rng.word()).collect();
    let body: Vec<String> = (0..60).map(|_| rng.word()).collect();
    let title = format!("{} {n}", title.join(" "));
    let body = body.join(" ");
    let link = format!("https://news{}.example/{n}?utm_source=rss", n % 50);
    let id = dedup::entry_id(&source, &format!("guid-{n}"));
    let span = Duration::days(60).num_seconds();
    let published =
        now - Duration::days(60) + Duration::seconds(span * n as i64 / size.max(1) as i64);
    Entry {
        id,
        source,
        source_id: format!("guid-{n}"),
        canonical: dedup::canonical_url(&link, &rules.tracking_params),
        fingerprint: dedup::fingerprint(&title, &body),
        title,
        link: Some(link),
        summary: Some(format!("<p>{body}</p>")),
        content: None,
        authors: vec![],
        categories: vec![],
        published: Some(published),
        updated: None,
        first_seen: now,
        changed: now,
        language: Some("en".into()),
        enclosures: vec![],
        merged: None,
        external: None,
    }
}

/// Microseconds per entry: the mean over all measured batches, and the
/// median batch.
struct Cost {
    mean: f64,
    median: f64,
}

impl Cost {
    fn of(mut batches: Vec<f64>) -> Self {
        batches.sort_by(f64::total_cmp);
        Cost {
            mean: batches.iter().sum::<f64>() / batches.len().max(1) as f64,
            median: batches.get(batches.len() / 2).copied().unwrap_or(0.0),
        }
    }
}

/// Entries in arrival order: entry `next + 1` comes next.
struct Stream {
    rng: Rng,
    next: u64,
    size: u64,
}

impl Stream {
    fn batch(&mut self, len: usize, now: DateTime<Utc>, rules: &DedupConfig) -> Vec<Entry> {
        (0..len)
            .map(|_| {
                self.next += 1;
                entry(&mut self.rng, self.next, self.size, now, rules)
            })
            .collect()
    }
}

/// Stores `batch`, returning microseconds per entry; then flushes, as the
/// daemon does after every poll (the flush is not timed: it is the disk's
/// cost, the same for any store).
fn timed(store: &Store, batch: &[Entry], now: DateTime<Utc>, rules: &DedupConfig) -> f64 {
    let started = Instant::now();
    store.ingest(batch, now, &rules.rules()).expect("ingest");
    let cost = started.elapsed().as_secs_f64() / batch.len() as f64 * 1e6;
    store.flush_blocking().expect("flush");
    cost
}

fn main() {
    let size: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let cache_mb: u64 = std::env::var("FEEDMERGE_BENCH_CACHE_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let full_store =
        Store::open(dir.path(), StoreOptions::with_cache(cache_mb << 20)).expect("store");
    // FEEDMERGE_BENCH_LAYERS=none|urls|text turns dedup layers off, to see
    // what each costs.
    let layers = std::env::var("FEEDMERGE_BENCH_LAYERS").unwrap_or_default();
    let rules = DedupConfig {
        same_link: !matches!(layers.as_str(), "none" | "text"),
        canonical_urls: !matches!(layers.as_str(), "none" | "text"),
        near_duplicates: !matches!(layers.as_str(), "none" | "urls"),
        ..DedupConfig::default()
    };
    let now = Utc::now();
    let stream = |seed| Stream {
        rng: Rng(seed),
        next: 0,
        size,
    };
    let mut filler = stream(0x2545_f491_4f6c_dd1d);
    let fill_started = Instant::now();
    while filler.next < size {
        let batch = filler.batch(1000, now, &rules);
        full_store
            .ingest(&batch, now, &rules.rules())
            .expect("fill");
    }
    full_store.flush_blocking().expect("flush");
    let fill = fill_started.elapsed().as_secs_f64();

    // Batches alternate between the empty store and the full one, so a
    // slow moment of the machine falls on both alike.
    let empty_dir = tempfile::tempdir().expect("tempdir");
    let empty_store =
        Store::open(empty_dir.path(), StoreOptions::with_cache(cache_mb << 20)).expect("store");
    let mut fresh = stream(0x9e37_79b9_7f4a_7c15);
    let (mut empty, mut full) = (Vec::new(), Vec::new());
    for _ in 0..MEASURED_BATCHES {
        let batch = fresh.batch(BATCH, now, &rules);
        empty.push(timed(&empty_store, &batch, now, &rules));
        let batch = filler.batch(BATCH, now, &rules);
        full.push(timed(&full_store, &batch, now, &rules));
    }
    let (empty, full) = (Cost::of(empty), Cost::of(full));
    println!(
        "ingest benchmark: batches of {BATCH} new entries, {MEASURED_BATCHES} batches per measure"
    );
    println!("  sled cache {cache_mb} MiB; µs per entry, mean and median batch");
    println!(
        "  empty store:                  {:>8.1} {:>8.1}",
        empty.mean, empty.median
    );
    println!(
        "  store with {:>9} entries: {:>8.1} {:>8.1}   ({:.2}× / {:.2}× empty)",
        full_store.entry_count(),
        full.mean,
        full.median,
        full.mean / empty.mean,
        full.median / empty.median
    );
    println!("  (filling took {fill:.0} s)");
}
