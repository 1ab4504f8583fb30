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
//! empty store, then fills the store, then measures again.

use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use feedmerge::config::DedupConfig;
use feedmerge::dedup;
use feedmerge::model::Entry;
use feedmerge::store::Store;

const BATCH: usize = 100;
const MEASURED_BATCHES: usize = 50;
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
        story: id.clone(),
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
    }
}

fn measure(
    store: &Store,
    rng: &mut Rng,
    next: &mut u64,
    size: u64,
    now: DateTime<Utc>,
    rules: &DedupConfig,
) -> f64 {
    let mut total = 0.0;
    for _ in 0..MEASURED_BATCHES {
        let batch: Vec<Entry> = (0..BATCH)
            .map(|_| {
                *next += 1;
                entry(rng, *next, size, now, rules)
            })
            .collect();
        let started = Instant::now();
        store.ingest(&batch, now, rules).expect("ingest");
        total += started.elapsed().as_secs_f64();
    }
    total / (MEASURED_BATCHES * BATCH) as f64 * 1e6
}

fn main() {
    let size: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), 64 << 20).expect("store");
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
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut next = 0u64;

    let empty = measure(&store, &mut rng, &mut next, size, now, &rules);
    let fill_started = Instant::now();
    while next < size {
        let batch: Vec<Entry> = (0..1000)
            .map(|_| {
                next += 1;
                entry(&mut rng, next, size, now, &rules)
            })
            .collect();
        store.ingest(&batch, now, &rules).expect("fill");
    }
    store.flush_blocking().expect("flush");
    let fill = fill_started.elapsed().as_secs_f64();
    let full = measure(&store, &mut rng, &mut next, size, now, &rules);
    println!(
        "ingest benchmark: batches of {BATCH} new entries, {MEASURED_BATCHES} batches per measure"
    );
    println!("  empty store:            {empty:>8.1} µs per entry");
    println!(
        "  store with {:>9} entries: {full:>8.1} µs per entry ({:.2}× empty)",
        store.entry_count(),
        full / empty
    );
    println!("  (filling took {fill:.0} s)");
}
