//! Read benchmark: what a reader meets with a million entries stored.
//!
//! Run: `cargo bench --bench read` (1,000,000 entries), or
//! `cargo bench --bench read -- 200000` for a quicker run. It prints the
//! medians of:
//!
//! - rendering the merged feed (`/feed.atom`, 200 entries) with
//!   `feeds::render`;
//! - rendering `/sources/tiny.atom`, a source holding just 3 old entries
//!   (so they sit far back behind everything newer);
//! - the daemon's start to serving: the real `feedmerge run` binary on that
//!   store, timed from spawn until `GET /healthz` answers 200; after it has
//!   served `/feed.atom` a few times, its peak RSS (VmHWM) just before
//!   SIGTERM;
//!
//! each beside its target. The store is filled once, in batches of 1,000
//! over 200 sources and 60 days in time order (plus the 3 entries of
//! `tiny`, the oldest), under `target/tmp/read-bench-N/`, and reused while
//! it holds the right count. The daemon's sources point at a closed
//! loopback port, so its first poll round fails fast.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, Utc};
use common::{Rng, Script, Vocabulary};
use feedmerge::config::{Config, DedupConfig};
use feedmerge::feeds::{self, Selector};
use feedmerge::store::{Store, StoreOptions};

/// Sources holding the bulk of the entries.
const SOURCES: usize = 200;
/// The source holding 3 old entries.
const TINY: &str = "tiny";
const BATCH: usize = 1_000;
const DAYS: i64 = 60;
/// The sled cache, for the fill, the renders and the daemon.
const CACHE: &str = "64MiB";
const CACHE_BYTES: u64 = 64 << 20;
/// Daemon starts measured.
const STARTS: usize = 5;
/// `/feed.atom` requests served by each daemon before its RSS is read.
const REQUESTS: usize = 5;

/// One generated entry, in the terms a feed gives it.
struct Generated {
    source: String,
    guid: String,
    title: String,
    link: String,
    html: String,
    text: String,
    published: DateTime<Utc>,
}

/// Stores `batch` and flushes, as the daemon does after a poll. This is the
/// one place that knows how entries reach the store.
fn store_batch(store: &Store, batch: &[Generated], now: DateTime<Utc>, rules: &DedupConfig) {
    use feedmerge::dedup;
    use feedmerge::model::Entry;
    let entries: Vec<Entry> = batch
        .iter()
        .map(|g| {
            let id = dedup::entry_id(&g.source, &g.guid);
            Entry {
                id,
                source: g.source.clone(),
                source_id: g.guid.clone(),
                canonical: dedup::canonical_url(&g.link, &rules.tracking_params),
                fingerprint: dedup::fingerprint(&g.title, &g.text),
                title: g.title.clone(),
                link: Some(g.link.clone()),
                summary: Some(g.html.clone()),
                content: None,
                authors: vec![],
                categories: vec![],
                published: Some(g.published),
                updated: None,
                first_seen: g.published.min(now),
                changed: g.published.min(now),
                language: None,
                enclosures: vec![],
                merged: None,
                external: None,
            }
        })
        .collect();
    store.ingest(&entries, now, &rules.rules()).expect("ingest");
    store.flush_blocking().expect("flush");
}

/// Entry `n` of `size`, from source `n % SOURCES`, at its place in 60 days.
fn generate(vocab: &Vocabulary, n: u64, size: u64, now: DateTime<Utc>) -> Generated {
    let source = n % SOURCES as u64;
    let script = if source % 7 == 3 {
        Script::Arabic
    } else {
        Script::English
    };
    let mut rng = Rng::new(n ^ 0x5EED_0000_0000);
    let story = vocab.story(n, script, rng.range(80, 150) as usize);
    let span = Duration::days(DAYS).num_seconds();
    let published = now - Duration::days(DAYS)
        + Duration::hours(4)
        + Duration::seconds(span * n as i64 / size.max(1) as i64);
    Generated {
        source: format!("src-{source:03}"),
        guid: format!("https://site{source}.example/?p={n}"),
        link: format!(
            "https://site{source}.example/news/{}-{n}?utm_source=rss",
            story.slug
        ),
        html: story.html(n),
        text: story.paragraphs.join(" "),
        title: story.title,
        published,
    }
}

/// The 3 entries of `tiny`, older than all the others.
fn tiny_entries(vocab: &Vocabulary, now: DateTime<Utc>) -> Vec<Generated> {
    (0..3u64)
        .map(|k| {
            let story = vocab.story(0x717_0000 + k, Script::English, 120);
            Generated {
                source: TINY.to_string(),
                guid: format!("tiny-{k}"),
                link: format!("https://tiny.example/{}-{k}", story.slug),
                html: story.html(k),
                text: story.paragraphs.join(" "),
                title: story.title,
                published: now - Duration::days(DAYS) + Duration::hours(k as i64 + 1),
            }
        })
        .collect()
}

/// A free loopback port now (closed again: nothing listens on it after).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn write_config(root: &Path, listen: u16, dead: u16) -> PathBuf {
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:{listen}\"\n\
         [storage]\npath = \"store\"\ncache_size = \"{CACHE}\"\n\
         [retention]\nmax_age = \"365d\"\nmax_per_source = 1000000\nmax_total = 10000000\n"
    );
    let names = (0..SOURCES)
        .map(|s| format!("src-{s:03}"))
        .chain([TINY.to_string()]);
    for name in names {
        text.push_str(&format!(
            "[[sources]]\nname = \"{name}\"\nurl = \"http://127.0.0.1:{dead}/{name}.xml\"\n"
        ));
    }
    let path = root.join("read.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// Opens the store under `config`, filling it first unless it already holds
/// `size` + 3 entries.
fn open_filled(config: &Config, size: u64) -> (Store, Option<f64>) {
    let dir = &config.storage.path;
    if dir.exists() {
        let store = Store::open(dir, StoreOptions::with_cache(CACHE_BYTES)).expect("open store");
        if store.entry_count() == size + 3 {
            return (store, None);
        }
        println!(
            "  store {} holds {} entries, not {}: filling it again",
            dir.display(),
            store.entry_count(),
            size + 3
        );
        drop(store);
        std::fs::remove_dir_all(dir).expect("remove old store");
    }
    let store = Store::open(dir, StoreOptions::with_cache(CACHE_BYTES)).expect("open store");
    let vocab = Vocabulary::load();
    let now = Utc::now();
    let rules = config.dedup.clone();
    let started = Instant::now();
    store_batch(&store, &tiny_entries(&vocab, now), now, &rules);
    let mut n = 0;
    while n < size {
        let end = (n + BATCH as u64).min(size);
        let batch: Vec<Generated> = (n..end).map(|k| generate(&vocab, k, size, now)).collect();
        store_batch(&store, &batch, now, &rules);
        n = end;
        if n % 100_000 == 0 {
            println!(
                "  filled {n} entries in {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    (store, Some(started.elapsed().as_secs_f64()))
}

/// Milliseconds of each of `runs` renders of `selector`, and the document's
/// entries.
fn render_times(
    config: &Config,
    store: &Store,
    selector: Selector<'_>,
    runs: usize,
    budget: StdDuration,
) -> (Vec<f64>, usize) {
    let mut times = Vec::new();
    let mut entries = 0;
    let started = Instant::now();
    while times.len() < runs && (times.len() < 3 || started.elapsed() < budget) {
        let t = Instant::now();
        let xml = feeds::render(config, store, selector)
            .expect("render")
            .expect("feed exists");
        times.push(t.elapsed().as_secs_f64() * 1e3);
        entries = xml.matches("<entry").count();
    }
    (times, entries)
}

/// `GET path` on the daemon: the status code and body length.
fn get(port: u16, path: &str) -> Option<(u16, usize)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(StdDuration::from_secs(60)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let head = String::from_utf8_lossy(&response[..response.len().min(64)]).to_string();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, response.len()))
}

/// One daemon run's figures.
struct DaemonRun {
    answer_ms: f64,
    start_ms: f64,
    healthz_ms: f64,
    feed_ms: Vec<f64>,
    source_ms: f64,
    rss_mb: f64,
    stop_ms: f64,
}

fn daemon_run(config_path: &Path, port: u16, log: &Path) -> DaemonRun {
    let log = std::fs::File::create(log).expect("daemon log");
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_feedmerge"))
        .args(["run", "--config"])
        .arg(config_path)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start daemon");
    // First any answer (an unknown feed: 404 without reading the store),
    // then /healthz, which counts the stored entries.
    loop {
        if get(port, "/feeds/none.atom").is_some() {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("daemon exited before serving: {status}");
        }
        assert!(
            started.elapsed() < StdDuration::from_secs(120),
            "daemon did not answer within 120 s"
        );
        std::thread::sleep(StdDuration::from_millis(2));
    }
    let answer_ms = started.elapsed().as_secs_f64() * 1e3;
    loop {
        if let Some((200, _)) = get(port, "/healthz") {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("daemon exited before serving: {status}");
        }
        assert!(
            started.elapsed() < StdDuration::from_secs(120),
            "daemon did not serve within 120 s"
        );
        std::thread::sleep(StdDuration::from_millis(2));
    }
    let start_ms = started.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    assert!(
        matches!(get(port, "/healthz"), Some((200, _))),
        "GET /healthz"
    );
    let healthz_ms = t.elapsed().as_secs_f64() * 1e3;
    let feed_ms = (0..REQUESTS)
        .map(|_| {
            let t = Instant::now();
            let answer = get(port, "/feed.atom");
            assert!(
                matches!(answer, Some((200, _))),
                "GET /feed.atom: {answer:?}"
            );
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let t = Instant::now();
    let answer = get(port, &format!("/sources/{TINY}.atom"));
    assert!(matches!(answer, Some((200, _))), "GET /sources: {answer:?}");
    let source_ms = t.elapsed().as_secs_f64() * 1e3;
    let rss_mb = common::peak_rss_mb(&child.id().to_string());
    let t = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success(), "SIGTERM sent");
    let status = child.wait().expect("daemon exit");
    assert!(status.success(), "daemon stopped cleanly: {status}");
    DaemonRun {
        answer_ms,
        start_ms,
        healthz_ms,
        feed_ms,
        source_ms,
        rss_mb,
        stop_ms: t.elapsed().as_secs_f64() * 1e3,
    }
}

fn list(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.1}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() {
    let size: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("read-bench-{size}"));
    std::fs::create_dir_all(&root).expect("bench dir");
    let listen = free_port();
    let config_path = write_config(&root, listen, free_port());
    let config = feedmerge::config::load(&config_path).expect("config");
    println!(
        "read benchmark: {size} entries over {SOURCES} sources and {DAYS} days, plus 3 old ones \
         in source {TINY:?}; sled cache {CACHE}"
    );

    let (store, fill) = open_filled(&config, size);
    match fill {
        Some(s) => println!(
            "  filled {} in {s:.0} s ({:.0} µs per entry)",
            config.storage.path.display(),
            s / (size + 3) as f64 * 1e6
        ),
        None => println!(
            "  reused {} ({} entries)",
            config.storage.path.display(),
            store.entry_count()
        ),
    }
    println!(
        "  store on disk: {:.0} MB",
        common::mb(common::dir_bytes(&config.storage.path))
    );

    let budget = StdDuration::from_secs(60);
    let (merged, merged_entries) = render_times(&config, &store, Selector::Merged, 21, budget);
    let (tiny, tiny_entries) = render_times(&config, &store, Selector::Source(TINY), 11, budget);
    let (busy, busy_entries) =
        render_times(&config, &store, Selector::Source("src-000"), 11, budget);
    let merged_ms = common::median(merged[1..].to_vec());
    let tiny_ms = common::median(tiny.clone());
    println!(
        "render /feed.atom ({merged_entries} entries): median {merged_ms:.2} ms \
         (first {:.1} ms; runs {})",
        merged[0],
        list(&merged[1..])
    );
    println!(
        "render /sources/{TINY}.atom ({tiny_entries} entries): median {tiny_ms:.2} ms (runs {})",
        list(&tiny)
    );
    println!(
        "render /sources/src-000.atom ({busy_entries} entries), for comparison: median {:.2} ms",
        common::median(busy)
    );
    drop(store);

    let runs: Vec<DaemonRun> = (0..STARTS)
        .map(|k| daemon_run(&config_path, listen, &root.join(format!("daemon-{k}.log"))))
        .collect();
    let starts: Vec<f64> = runs.iter().map(|r| r.start_ms).collect();
    let rss: Vec<f64> = runs.iter().map(|r| r.rss_mb).collect();
    let feed_ms: Vec<f64> = runs.iter().flat_map(|r| r.feed_ms.clone()).collect();
    let source_ms: Vec<f64> = runs.iter().map(|r| r.source_ms).collect();
    let stops: Vec<f64> = runs.iter().map(|r| r.stop_ms).collect();
    let start_ms = common::median(starts.clone());
    let rss_max = rss.iter().copied().fold(0.0, f64::max);
    println!(
        "daemon start to serving (spawn → GET /healthz 200), {STARTS} starts: median {start_ms:.0} ms \
         (runs {})",
        list(&starts)
    );
    println!(
        "  first HTTP answer (a 404): median {:.0} ms; a later GET /healthz alone: median {:.0} ms",
        common::median(runs.iter().map(|r| r.answer_ms).collect()),
        common::median(runs.iter().map(|r| r.healthz_ms).collect())
    );
    // Each daemon's first /feed.atom renders it; the others are answered
    // from the render cache.
    let first_feed: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.feed_ms.first().copied())
        .collect();
    let cached_feed: Vec<f64> = runs
        .iter()
        .flat_map(|r| r.feed_ms.iter().skip(1).copied())
        .collect();
    let cached_ms = common::median(cached_feed.clone());
    println!(
        "  GET /feed.atom over HTTP: median {:.1} ms (first of each daemon, rendering: median {:.1} ms; \
         later, from the cache: median {cached_ms:.2} ms); GET /sources/{TINY}.atom: median {:.1} ms",
        common::median(feed_ms),
        common::median(first_feed),
        common::median(source_ms)
    );
    println!(
        "  peak RSS after {REQUESTS} × /feed.atom and 1 × /sources/{TINY}.atom: median {:.1} MB, \
         max {rss_max:.1} MB (runs {})",
        common::median(rss.clone()),
        list(&rss)
    );
    println!("  SIGTERM to exit: median {:.0} ms", common::median(stops));

    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!();
    println!(
        "{:<36} {:>12}  {:<10} result",
        "figure", "measured", "target"
    );
    let rows = [
        (
            "render /feed.atom",
            format!("{merged_ms:.2} ms"),
            "< 5 ms",
            merged_ms < 5.0,
        ),
        (
            "GET /feed.atom, cached (HTTP)",
            format!("{cached_ms:.2} ms"),
            "< 5 ms",
            cached_ms < 5.0,
        ),
        (
            "render /sources/tiny.atom",
            format!("{tiny_ms:.2} ms"),
            "< 5 ms",
            tiny_ms < 5.0,
        ),
        (
            "daemon start to serving",
            format!("{start_ms:.0} ms"),
            "< 1 s",
            start_ms < 1_000.0,
        ),
        (
            "daemon peak RSS (max of starts)",
            format!("{rss_max:.1} MB"),
            "≤ 150 MB",
            rss_max <= 150.0,
        ),
    ];
    for (figure, measured, target, ok) in rows {
        println!("{figure:<36} {measured:>12}  {target:<10} {}", verdict(ok));
    }
}
