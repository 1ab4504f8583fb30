//! Crash safety: the real daemon, killed with SIGKILL at seeded random
//! moments during heavy ingest and restarted on the same directory, opens
//! its store every time, serves again every entry it served before a kill,
//! never serves an entry or a story twice in one document, and every
//! document it serves is valid Atom.
//!
//! The feed server slides: every request of a source adds new entries,
//! updates the ones still listed and drops the oldest from the document, so
//! an entry the daemon served but lost in a kill is not simply fetched
//! again. Every fourth entry's link is shared by all sources, so stories
//! join across sources. `CRASH_SEED` replays a run.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::BIN;

/// Sources the daemon polls.
const SOURCES: usize = 10;
/// Entries each request of a source adds.
const NEW_PER_REQUEST: usize = 4;
/// Entries each document lists (the newest).
const LISTED: usize = 5;
/// Kill and restart cycles.
const CYCLES: usize = 22;

/// A small seeded generator (xorshift64*): the kill moments.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `low..high`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low)
    }
}

// ---- the sliding feed server -------------------------------------------

/// Requests served so far, per source, and when the server started.
#[derive(Clone)]
struct Sliding {
    requests: Arc<Mutex<Vec<usize>>>,
    epoch: DateTime<Utc>,
}

const WORDS: &[&str] = &[
    "harbour",
    "council",
    "budget",
    "river",
    "festival",
    "engine",
    "storm",
    "garden",
    "market",
    "library",
    "station",
    "bridge",
    "forest",
    "school",
    "museum",
    "airport",
    "stadium",
    "valley",
    "factory",
    "village",
    "harvest",
    "orchestra",
    "election",
    "treaty",
    "satellite",
    "vaccine",
    "railway",
    "tunnel",
    "glacier",
    "volcano",
    "desert",
    "island",
    "canal",
    "castle",
    "theatre",
    "hospital",
    "parliament",
    "court",
    "prison",
    "embassy",
    "festival",
    "drought",
    "flood",
    "earthquake",
    "pipeline",
    "reactor",
    "telescope",
    "submarine",
    "cathedral",
    "monastery",
];

/// Thirty words that depend only on `seed`: unrelated entries are never
/// near-duplicates of each other, and copies of a shared story are.
fn text(seed: u64) -> String {
    let mut rng = Rng::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xfeed);
    (0..30)
        .map(|_| WORDS[rng.next() as usize % WORDS.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

/// The RSS document of source `source` on its `request`th request.
fn document(epoch: DateTime<Utc>, source: usize, request: usize) -> String {
    let end = (request + 1) * NEW_PER_REQUEST;
    let mut items = String::new();
    for j in (end.saturating_sub(LISTED)..end).rev() {
        // Every fourth entry is a story every source carries.
        let (link, title, body) = if j % 4 == 0 {
            (
                format!("http://news.example/shared/{j}"),
                format!("Shared story {j}"),
                text(1_000_000 + j as u64),
            )
        } else {
            (
                format!("http://news.example/{source}/{j}"),
                format!("Story {j} of source {source}"),
                text((source as u64) << 32 | j as u64),
            )
        };
        // Listed entries change on every request: updates.
        let revision = request + 1 - j / NEW_PER_REQUEST;
        let published = (epoch + chrono::Duration::seconds(j as i64)).to_rfc2822();
        items.push_str(&format!(
            "<item><title>{title}</title><link>{link}</link>\
             <guid isPermaLink=\"false\">s{source}-e{j}</guid><pubDate>{published}</pubDate>\
             <description>{body} (revision {revision})</description></item>\n"
        ));
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<rss version=\"2.0\"><channel>\
         <title>Source {source}</title><link>http://news.example/{source}/</link>\
         <description>Sliding feed {source}</description>\n{items}</channel></rss>\n"
    )
}

async fn serve_sliding(State(server): State<Sliding>, UrlPath(name): UrlPath<String>) -> Response {
    let Some(source) = name
        .strip_suffix(".xml")
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n < SOURCES)
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let request = {
        let mut requests = server.requests.lock().unwrap();
        requests[source] += 1;
        requests[source] - 1
    };
    (
        [(header::CONTENT_TYPE, "application/rss+xml")],
        document(server.epoch, source, request),
    )
        .into_response()
}

async fn start_sliding_server() -> (String, CancellationToken) {
    let server = Sliding {
        requests: Arc::new(Mutex::new(vec![0; SOURCES])),
        epoch: Utc::now() - chrono::Duration::days(1),
    };
    let router = Router::new()
        .route("/{name}", get(serve_sliding))
        .with_state(server);
    super::serve_router(router).await
}

fn write_crash_config(dir: &Path, base: &str) -> PathBuf {
    let mut text = String::from(
        r#"
[server]
listen = "127.0.0.1:0"
[storage]
path = "store"
cache_size = "8MiB"
[feed]
title = "Crash test"
max_entries = 100000
[poll]
jitter = "0s"
[retention]
max_age = "3650d"
max_per_source = 1000000
max_total = 10000000
every = "3650d"
[defaults]
schedule = "*/1 * * * * *"
timeout = "3s"
respect_ttl = false
"#,
    );
    for i in 0..SOURCES {
        text.push_str(&format!(
            "[[sources]]\nname = \"s{i}\"\nurl = \"{base}/{i}.xml\"\n"
        ));
    }
    let path = dir.join("feedmerge.toml");
    std::fs::write(&path, text).unwrap();
    path
}

// ---- the daemon as a child process ---------------------------------------

struct Daemon {
    child: Child,
    base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts `feedmerge run` and waits until it serves `/healthz`.
    async fn start(config: &Path, seed: u64, cycle: usize) -> Self {
        let mut child = Command::new(BIN)
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("FEEDMERGE_LOG", "info,tokio_cron_scheduler=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::clone(&log);
        // Drained to the end, so the daemon never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("serving feeds") {
                    if let Some(addr) = line
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("addr="))
                    {
                        let _ = addr_tx.send(addr.to_string());
                    }
                }
                lines.lock().unwrap().push(line);
            }
        });
        let mut running = Self {
            child,
            base: String::new(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            if let Ok(addr) = addr_rx.try_recv() {
                break addr;
            }
            if let Ok(Some(status)) = running.child.try_wait() {
                running.fail(
                    seed,
                    cycle,
                    &format!("the daemon exited on start ({status})"),
                );
            }
            if Instant::now() > deadline {
                running.fail(seed, cycle, "the daemon did not start serving");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        running.base = format!("http://{addr}");
        let health = fetch(&format!("{}/healthz", running.base)).await;
        match health {
            Some((StatusCode::OK, body)) if body.contains(r#""status":"ok""#) => {}
            other => running.fail(seed, cycle, &format!("/healthz answered {other:?}")),
        }
        running
    }

    fn fail(&mut self, seed: u64, cycle: usize, what: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(50));
        let log = self.log.lock().unwrap();
        let tail = log[log.len().saturating_sub(40)..].join("\n");
        panic!("cycle {cycle} (CRASH_SEED={seed}): {what}; the daemon's log ends:\n{tail}");
    }

    /// The entry count `/healthz` reports.
    async fn entries_counted(&mut self, seed: u64, cycle: usize) -> u64 {
        let answer = fetch(&format!("{}/healthz", self.base)).await;
        let count = answer.as_ref().and_then(|(_, body)| {
            let value: serde_json::Value = serde_json::from_str(body).ok()?;
            value["entries"].as_u64()
        });
        match count {
            Some(count) => count,
            None => self.fail(seed, cycle, &format!("/healthz answered {answer:?}")),
        }
    }

    fn kill(mut self) {
        // `Child::kill` is SIGKILL on unix.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

async fn fetch(url: &str) -> Option<(StatusCode, String)> {
    let response = reqwest::get(url).await.ok()?;
    let status = StatusCode::from_u16(response.status().as_u16()).ok()?;
    Some((status, response.text().await.ok()?))
}

// ---- what is served --------------------------------------------------------

/// The `atom:id` of each entry of `xml`, in order (not its source's id).
fn entry_ids(xml: &str) -> Vec<String> {
    xml.split("<entry")
        .skip(1)
        .filter(|rest| rest.starts_with('>') || rest.starts_with(' '))
        .map(|entry| {
            let entry = entry.split("</entry>").next().unwrap_or(entry);
            // The entry's own id, outside its atom:source.
            let outside: String = match (entry.find("<source>"), entry.find("</source>")) {
                (Some(open), Some(close)) => {
                    format!("{}{}", &entry[..open], &entry[close..])
                }
                _ => entry.to_string(),
            };
            let start = outside.find("<id>").expect("an entry without an id") + 4;
            let end = start + outside[start..].find("</id>").unwrap();
            outside[start..end].to_string()
        })
        .collect()
}

/// The documents read: each source's own feed (every entry it holds),
/// then the merged feed (every story).
fn document_paths() -> Vec<String> {
    let mut paths: Vec<String> = (0..SOURCES).map(|i| format!("sources/s{i}.atom")).collect();
    paths.push("feed.atom".to_string());
    paths
}

/// Reads the document at `path` and the ids of its entries, none twice.
async fn read_document(base: &str, path: &str) -> Result<(Vec<String>, String), String> {
    let (status, xml) = fetch(&format!("{base}/{path}"))
        .await
        .ok_or_else(|| format!("no answer for /{path}"))?;
    if status != StatusCode::OK {
        return Err(format!("/{path} answered {status}"));
    }
    let ids = entry_ids(&xml);
    let unique: HashSet<&String> = ids.iter().collect();
    if unique.len() != ids.len() {
        return Err(format!("/{path} lists an id twice:\n{xml}"));
    }
    Ok((ids, xml))
}

/// What was served: entry ids (from the sources' feeds) and story ids
/// (from the merged feed).
#[derive(Default)]
struct Served {
    entries: HashSet<String>,
    stories: HashSet<String>,
}

impl Served {
    /// Notes the ids of the document at `path`; true if any is new.
    fn note(&mut self, path: &str, ids: Vec<String>) -> bool {
        let into = if path == "feed.atom" {
            &mut self.stories
        } else {
            &mut self.entries
        };
        let before = into.len();
        into.extend(ids);
        into.len() > before
    }
}

/// Validates every document with one run of jing (one JVM start, not one
/// per document).
fn assert_all_valid_atom(dir: &Path, documents: &[String]) {
    let files: Vec<PathBuf> = documents
        .iter()
        .enumerate()
        .map(|(n, xml)| {
            let file = dir.join(format!("doc-{n}.atom"));
            std::fs::write(&file, xml).unwrap();
            file
        })
        .collect();
    let output = super::jing(&files);
    assert!(
        output.status.success(),
        "jing rejects documents (in {}):\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stdout)
    );
}

// ---- the test ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_ingest_loses_nothing_served() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("crash test seed: CRASH_SEED={seed}");
    let mut rng = Rng::new(seed);
    let (feeds, _server_stop) = start_sliding_server().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_crash_config(dir.path(), &feeds);
    let docs_dir = tempfile::tempdir().unwrap();

    let mut served = Served::default();
    // The highest entry count /healthz reported.
    let mut counted_max = 0;
    let mut kept: Vec<String> = Vec::new();
    let paths = document_paths();
    let started = Instant::now();
    for cycle in 0..=CYCLES {
        let mut daemon = Daemon::start(&config, seed, cycle).await;
        // The store opened; everything served before the kill is there.
        let counted_before = daemon.entries_counted(seed, cycle).await;
        if counted_before < counted_max {
            daemon.fail(
                seed,
                cycle,
                &format!(
                    "/healthz counted {counted_max} entries before the kill, \
                     {counted_before} after"
                ),
            );
        }
        let mut now_served = Served::default();
        for path in &paths {
            match read_document(&daemon.base, path).await {
                Ok((ids, xml)) => {
                    now_served.note(path, ids);
                    kept.push(xml);
                }
                Err(e) => daemon.fail(seed, cycle, &e),
            }
        }
        for (what, before, after) in [
            ("entries", &served.entries, &now_served.entries),
            ("stories", &served.stories, &now_served.stories),
        ] {
            let lost: Vec<&String> = before.difference(after).collect();
            if !lost.is_empty() {
                daemon.fail(
                    seed,
                    cycle,
                    &format!(
                        "{} of {} {what} served before the kill are gone: {lost:?}",
                        lost.len(),
                        before.len()
                    ),
                );
            }
        }
        // The count reports flushed entries, all of them: what it said
        // before the documents were read is all shown in them, and they
        // show nothing it does not count after.
        let counted_after = daemon.entries_counted(seed, cycle).await;
        counted_max = counted_max.max(counted_after);
        let shown = now_served.entries.len() as u64;
        if !(counted_before..=counted_after).contains(&shown) {
            daemon.fail(
                seed,
                cycle,
                &format!(
                    "/healthz counted {counted_before} then {counted_after} entries; \
                     the feeds show {shown}"
                ),
            );
        }
        if cycle == CYCLES {
            daemon.kill();
            break;
        }
        // Heavy ingest, read document by document until the seeded moment.
        // Then the kill follows the first sign of a new write: a document
        // that shows a new entry, or (every other cycle) a higher count on
        // /healthz, the cheapest reading, so the kill lands closest to the
        // write. A write not yet flushed then is lost, so it must not have
        // been shown. Within a second, so every cycle ends.
        let kill_at = Instant::now() + Duration::from_millis(rng.between(50, 800));
        let latest = kill_at + Duration::from_secs(1);
        let by_count = rng.next() % 2 == 0;
        for path in paths.iter().cycle() {
            let fresh = match read_document(&daemon.base, path).await {
                Ok((ids, xml)) => {
                    if kept.len() < 4 * (SOURCES + 1) * (cycle + 1) {
                        kept.push(xml);
                    }
                    served.note(path, ids)
                }
                Err(e) => daemon.fail(seed, cycle, &e),
            };
            let now = Instant::now();
            if (now >= kill_at && (fresh || by_count)) || now >= latest {
                break;
            }
        }
        if by_count {
            let highest = counted_max;
            while Instant::now() < latest {
                counted_max = counted_max.max(daemon.entries_counted(seed, cycle).await);
                if counted_max > highest {
                    break;
                }
            }
        }
        daemon.kill();
    }
    eprintln!(
        "crash test: {CYCLES} kills, {} entries and {} stories served, {} documents, {:?}",
        served.entries.len(),
        served.stories.len(),
        kept.len(),
        started.elapsed()
    );
    assert!(
        served.entries.len() > 200,
        "too little was ingested for the test to mean anything"
    );
    assert_all_valid_atom(docs_dir.path(), &kept);
}
