//! Soak benchmark: the real daemon for a set time under steady load, to see
//! whether memory stays flat and nothing stalls or fails.
//!
//! Run: `cargo bench --bench soak` (600 s), or `SOAK_SECS=60 cargo bench
//! --bench soak` for a quick check. Other knobs: `SOAK_SAMPLE_SECS` (time
//! between samples; default a twentieth of the run, at least 5 s),
//! `SOAK_IDLE` (idle connections held, default 500), `SOAK_HAMMER`
//! (connections fetching `/feed.atom`, default 4).
//!
//! What runs:
//!
//! - the daemon, `feedmerge run`, as a child process (so its RSS, read from
//!   /proc, is its own) on a fresh store, with `MALLOC_ARENA_MAX=2` as the
//!   systemd unit sets it;
//! - 1,000 sources on a loopback feed server in this process (4 listeners
//!   on 127.0.0.1, `per_host = 8`), each polled on `*/5 * * * * *` with a
//!   5 s jitter, so about 200 polls a second spread over each 5 s;
//! - each feed lists its 10 newest entries and moves on every 10 to 40 s
//!   (its own period): one new entry, and the one before it edited. The
//!   Atom feeds (half) also restamp every listed entry's `<updated>` with
//!   the version's time, as some publishers do, so a changed Atom document
//!   updates all its older entries. Half the feeds answer `If-None-Match`,
//!   half `If-Modified-Since`, with 304 while they have not moved, so most
//!   polls are 304s;
//! - retention keeps 8 entries per source, prunes every 30 s and keeps
//!   tombstones for 2 minutes, so entries and tombstones reach a steady
//!   state after about 3 minutes;
//! - `SOAK_HAMMER` keep-alive connections fetching `/feed.atom` back to
//!   back;
//! - `SOAK_IDLE` idle connections to the daemon's server, half that never
//!   send a byte and half that send one request and then idle; whenever the
//!   server closes one (its header-read timeout), it is opened again.
//!
//! Every sample prints the daemon's RSS, its CPU, its open descriptors, the
//! polls (from its log: one line per poll), the feed server's answers, the
//! hammer's requests and latency, the idle connections open, and what
//! `/api/sources` and `/healthz` say. At the end: polls/s, error counts and
//! whether memory stayed flat (RSS after the first quarter, the warm-up,
//! grows by less than [`FLAT_BOUND`]).
//!
//! The process's descriptor limit must hold the idle connections, the
//! hammer and the feed server's sockets: about 900 here, and the daemon
//! about 600. `ulimit -n` is checked before the run (no `setrlimit`: the
//! limit is inherited, and a run that cannot hold its connections says so).

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Duration, Utc};
use common::{Rng, Script, Vocabulary};

/// Sources polled.
const SOURCES: usize = 1_000;
/// Loopback listeners of the feed server; source `i` is on listener `i % LISTENERS`.
const LISTENERS: usize = 4;
/// Entries each feed document lists.
const LISTED: i64 = 10;
/// Entries retention keeps per source.
const KEEP: usize = 8;
/// Every source's schedule.
const SCHEDULE: &str = "*/5 * * * * *";
/// Seconds between a source's scheduled polls.
const POLL_EVERY: f64 = 5.0;
/// A feed moves on every this many seconds at least, and at most
/// `PERIOD_MIN + PERIOD_SPREAD - 1`.
const PERIOD_MIN: u64 = 10;
const PERIOD_SPREAD: u64 = 31;
/// Memory counts as flat when RSS after the warm-up grows less than this.
const FLAT_BOUND: f64 = 0.10;
/// A source not attempted for this long counts as stalled.
const STALLED_SECS: i64 = 30;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------
// The feed server

/// How feed `i` changes over time.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Seconds between versions.
    period: u64,
    /// Seconds into its first period the feed is at the server's start.
    phase: u64,
    /// Atom (else RSS 2.0).
    atom: bool,
    /// Answers `If-None-Match` (else `If-Modified-Since`).
    etag: bool,
    script: Script,
}

fn plan(i: usize) -> Plan {
    let mut rng = Rng::new(0x50A4_0000 + i as u64);
    let period = PERIOD_MIN + rng.below(PERIOD_SPREAD);
    Plan {
        period,
        phase: rng.below(period),
        atom: i % 2 == 0,
        etag: i % 4 < 2,
        script: if i % 7 == 3 {
            Script::Arabic
        } else {
            Script::English
        },
    }
}

/// What the feed server shares between requests.
struct Feeds {
    started: Instant,
    epoch: DateTime<Utc>,
    vocab: Vocabulary,
    /// Each feed's latest rendered version.
    cache: Vec<Mutex<Option<(i64, Bytes)>>>,
    full: AtomicU64,
    not_modified: AtomicU64,
}

impl Feeds {
    fn new() -> Self {
        Feeds {
            started: Instant::now(),
            epoch: Utc::now(),
            vocab: Vocabulary::load(),
            cache: (0..SOURCES).map(|_| Mutex::new(None)).collect(),
            full: AtomicU64::new(0),
            not_modified: AtomicU64::new(0),
        }
    }

    /// The version feed `i` is at now.
    fn version(&self, i: usize) -> i64 {
        let p = plan(i);
        ((self.started.elapsed().as_secs() + p.phase) / p.period) as i64
    }

    /// When version `v` of feed `i` came out.
    fn since(&self, i: usize, v: i64) -> DateTime<Utc> {
        let p = plan(i);
        self.epoch + Duration::seconds(v * p.period as i64 - p.phase as i64)
    }

    /// Version `v` of feed `i`: entries `v - LISTED + 1 ..= v`, newest
    /// first, all but the newest in their updated form.
    fn render(&self, i: usize, v: i64) -> Bytes {
        use std::fmt::Write as _;
        let p = plan(i);
        let site = format!("https://soak{i}.example");
        let mut out = String::with_capacity(LISTED as usize * 1_200);
        let updated = self.since(i, v);
        if p.atom {
            let _ = write!(
                out,
                "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\">\n\
                 <title>Soak {i}</title>\n<id>{site}/</id>\n<link rel=\"alternate\" href=\"{site}/\"/>\n\
                 <updated>{}</updated>\n",
                updated.to_rfc3339()
            );
        } else {
            let _ = write!(
                out,
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<rss version=\"2.0\">\n<channel>\n\
                 <title>Soak {i}</title>\n<link>{site}/</link>\n<description>Soak {i}</description>\n\
                 <lastBuildDate>{}</lastBuildDate>\n",
                updated.to_rfc2822()
            );
        }
        for k in (v - LISTED + 1..=v).rev() {
            // Keys stay positive for the entries listed before the start.
            let key = (k + 1_000) as u64;
            let seed = ((i as u64) << 32) ^ key;
            let mut rng = Rng::new(seed);
            let story = self
                .vocab
                .story(seed, p.script, rng.range(60, 110) as usize);
            let (title, html) = if k < v {
                let mut html = story.html(seed);
                html.push_str("<p>");
                html.push_str(&self.vocab.sentence(&mut rng, p.script, 12));
                html.push_str("</p>");
                (format!("{} (updated)", story.title), html)
            } else {
                (story.title.clone(), story.html(seed))
            };
            let link = format!("{site}/news/{}-{key}?utm_source=rss", story.slug);
            let published = self.since(i, k);
            if p.atom {
                let _ = write!(
                    out,
                    "<entry>\n<title>{}</title>\n<id>tag:soak{i}.example,2026:{key}</id>\n\
                     <link rel=\"alternate\" href=\"{}\"/>\n<published>{}</published>\n\
                     <updated>{}</updated>\n<content type=\"html\">{}</content>\n</entry>\n",
                    common::xml_escape(&title),
                    common::xml_escape(&link),
                    published.to_rfc3339(),
                    // Every older entry carries the document's time.
                    if k < v { updated } else { published }.to_rfc3339(),
                    common::xml_escape(&html)
                );
            } else {
                let _ = write!(
                    out,
                    "<item>\n<title>{}</title>\n<link>{}</link>\n<guid isPermaLink=\"false\">{site}/?p={key}</guid>\n\
                     <pubDate>{}</pubDate>\n<description><![CDATA[{html}]]></description>\n</item>\n",
                    common::xml_escape(&title),
                    common::xml_escape(&link),
                    published.to_rfc2822(),
                );
            }
        }
        out.push_str(if p.atom {
            "</feed>\n"
        } else {
            "</channel>\n</rss>\n"
        });
        Bytes::from(out)
    }
}

fn http_date(t: DateTime<Utc>) -> String {
    t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

async fn serve_feed(
    State(feeds): State<Arc<Feeds>>,
    UrlPath(i): UrlPath<usize>,
    headers: HeaderMap,
) -> Response {
    if i >= SOURCES {
        return StatusCode::NOT_FOUND.into_response();
    }
    let p = plan(i);
    let v = feeds.version(i);
    let (name, value, asked) = if p.etag {
        (header::ETAG, format!("\"{i}-{v}\""), header::IF_NONE_MATCH)
    } else {
        (
            header::LAST_MODIFIED,
            http_date(feeds.since(i, v)),
            header::IF_MODIFIED_SINCE,
        )
    };
    if headers.get(&asked).and_then(|h| h.to_str().ok()) == Some(value.as_str()) {
        feeds.not_modified.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::NOT_MODIFIED, [(name, value)]).into_response();
    }
    let body = {
        let mut slot = feeds.cache[i].lock().unwrap_or_else(|e| e.into_inner());
        match &*slot {
            Some((cached, body)) if *cached == v => body.clone(),
            _ => {
                let body = feeds.render(i, v);
                *slot = Some((v, body.clone()));
                body
            }
        }
    };
    feeds.full.fetch_add(1, Ordering::Relaxed);
    let content_type = if p.atom {
        "application/atom+xml"
    } else {
        "application/rss+xml"
    };
    (
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (name, value),
        ],
        body,
    )
        .into_response()
}

/// Starts the feed server on its own thread: the ports of its listeners.
fn start_feed_server(feeds: Arc<Feeds>) -> Vec<u16> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let router = Router::new()
                .route("/feed/{i}", get(serve_feed))
                .with_state(feeds);
            let mut servers = Vec::new();
            for _ in 0..LISTENERS {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                tx.send(listener.local_addr().expect("addr").port())
                    .expect("port");
                let router = router.clone();
                servers.push(tokio::spawn(
                    async move { axum::serve(listener, router).await },
                ));
            }
            for server in servers {
                let _ = server.await;
            }
        });
    });
    (0..LISTENERS).map(|_| rx.recv().expect("port")).collect()
}

// ---------------------------------------------------------------------------
// The daemon

fn write_config(dir: &Path, listen: u16, ports: &[u16]) -> std::path::PathBuf {
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:{listen}\"\n\
         [storage]\npath = \"store\"\n\
         [feed]\ntitle = \"soak\"\n\
         [poll]\nmax_in_flight = 32\nper_host = 8\njitter = \"5s\"\n\
         [retention]\nmax_per_source = {KEEP}\ntombstone_age = \"2m\"\nevery = \"30s\"\n\
         [defaults]\nschedule = \"{SCHEDULE}\"\n"
    );
    for i in 0..SOURCES {
        text.push_str(&format!(
            "[[sources]]\nname = \"soak-{i}\"\nurl = \"http://127.0.0.1:{}/feed/{i}\"\n",
            ports[i % LISTENERS]
        ));
    }
    let path = dir.join("soak.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// What the daemon's log says, counted as it is written.
#[derive(Default)]
struct LogCounts {
    stored: AtomicU64,
    not_modified: AtomicU64,
    failed: AtomicU64,
    new: AtomicU64,
    updated: AtomicU64,
    pruned: AtomicU64,
    /// tokio-cron-scheduler's job runner fell behind its activation channel
    /// ("Error receiving Lagged(N)"): N firings were lost.
    lost_firings: AtomicU64,
    /// Its notification runner fell behind ("Error receiving value
    /// Lagged(N)"): N job-state notifications were dropped.
    lost_notifications: AtomicU64,
    /// Warnings and errors other than failed polls.
    other_warnings: AtomicU64,
    first_round: Mutex<Option<f64>>,
    /// The first few failures and warnings, as written.
    samples: Mutex<Vec<String>>,
}

fn field(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        .unwrap_or(0)
}

/// N of a "`prefix`N)" log line.
fn lagged(line: &str, prefix: &str) -> Option<u64> {
    let rest = &line[line.find(prefix)? + prefix.len()..];
    rest.split(')').next()?.parse().ok()
}

fn read_log(child: &mut Child, counts: Arc<LogCounts>, started: Instant) {
    let stderr = child.stderr.take().expect("daemon stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let keep = |counts: &LogCounts| {
                let mut samples = counts.samples.lock().unwrap_or_else(|e| e.into_inner());
                if samples.len() < 8 {
                    samples.push(line.clone());
                }
            };
            if line.contains("poll done") {
                counts.stored.fetch_add(1, Ordering::Relaxed);
                counts.new.fetch_add(field(&line, "new"), Ordering::Relaxed);
                counts
                    .updated
                    .fetch_add(field(&line, "updated"), Ordering::Relaxed);
            } else if line.contains("not modified") {
                counts.not_modified.fetch_add(1, Ordering::Relaxed);
            } else if line.contains("poll failed") {
                counts.failed.fetch_add(1, Ordering::Relaxed);
                keep(&counts);
            } else if line.contains("first poll round done") {
                *counts.first_round.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(started.elapsed().as_secs_f64());
            } else if line.contains(" pruned") {
                counts
                    .pruned
                    .fetch_add(field(&line, "pruned"), Ordering::Relaxed);
            } else if let Some(n) = lagged(&line, "Error receiving Lagged(") {
                if counts.lost_firings.fetch_add(n, Ordering::Relaxed) == 0 {
                    keep(&counts);
                }
            } else if let Some(n) = lagged(&line, "Error receiving value Lagged(") {
                if counts.lost_notifications.fetch_add(n, Ordering::Relaxed) == 0 {
                    keep(&counts);
                }
            } else if line.contains(" WARN ") || line.contains(" ERROR ") {
                counts.other_warnings.fetch_add(1, Ordering::Relaxed);
                keep(&counts);
            }
        }
    });
}

/// A `/proc/PID/status` field in MB (for `Vm*` fields, which are in kB) or
/// as a plain number.
fn proc_status(pid: u32, name: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| {
            if name.starts_with("Vm") {
                v / 1024.0
            } else {
                v
            }
        })
        .unwrap_or(0.0)
}

/// CPU seconds (user + system) the process has used, at 100 ticks a second.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces), from field 3.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> f64 { fields.get(i).and_then(|v| v.parse().ok()).unwrap_or(0.0) };
    (ticks(11) + ticks(12)) / 100.0
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// HTTP clients

/// Reads one HTTP/1.1 response with a Content-Length body: status and body.
fn read_response(reader: &mut BufReader<TcpStream>) -> std::io::Result<(u16, Vec<u8>)> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(ErrorKind::UnexpectedEof.into());
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(ErrorKind::InvalidData)?;
    let mut length = 0usize;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        if let Some((name, value)) = trimmed.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().map_err(|_| ErrorKind::InvalidData)?;
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok((status, body))
}

/// `GET path` on a new connection, closed after: status and body.
fn get_once(addr: SocketAddr, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let stream = TcpStream::connect_timeout(&addr, StdDuration::from_secs(10))?;
    stream.set_read_timeout(Some(StdDuration::from_secs(30)))?;
    let mut writer = stream.try_clone()?;
    write!(
        writer,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    read_response(&mut BufReader::new(stream))
}

/// What the hammer did.
#[derive(Default)]
struct Hammer {
    ok: AtomicU64,
    errors: AtomicU64,
    /// Connections opened (one each at the start; more after errors).
    connects: AtomicU64,
    /// Milliseconds of each good request since the last sample.
    window: Mutex<Vec<f64>>,
    /// Milliseconds of every good request.
    all: Mutex<Vec<f64>>,
    first_error: Mutex<Option<String>>,
}

impl Hammer {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert(what);
    }
}

/// One hammer connection: `GET /feed.atom` back to back on a keep-alive
/// connection, opened again after any error.
fn hammer(addr: SocketAddr, stats: Arc<Hammer>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        stats.connects.fetch_add(1, Ordering::Relaxed);
        let stream = match TcpStream::connect_timeout(&addr, StdDuration::from_secs(10)) {
            Ok(s) => s,
            Err(e) => {
                stats.error(format!("connect: {e}"));
                std::thread::sleep(StdDuration::from_millis(100));
                continue;
            }
        };
        let _ = stream.set_read_timeout(Some(StdDuration::from_secs(30)));
        let Ok(mut writer) = stream.try_clone() else {
            continue;
        };
        let mut reader = BufReader::new(stream);
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            let sent = writer.write_all(b"GET /feed.atom HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
            let answer = sent.and_then(|()| read_response(&mut reader));
            let ms = t.elapsed().as_secs_f64() * 1e3;
            match answer {
                Ok((200, body)) if body.ends_with(b"</feed>") || body.ends_with(b"</feed>\n") => {
                    stats.ok.fetch_add(1, Ordering::Relaxed);
                    stats
                        .window
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(ms);
                    stats.all.lock().unwrap_or_else(|e| e.into_inner()).push(ms);
                }
                Ok((status, body)) => {
                    stats.error(format!("status {status}, {} bytes", body.len()));
                }
                Err(e) => {
                    stats.error(format!("{e}"));
                    break;
                }
            }
        }
    }
}

/// What the idle connections saw.
#[derive(Default)]
struct Idle {
    open: AtomicU64,
    /// Connections the server closed.
    closed: AtomicU64,
    connect_errors: AtomicU64,
    /// Seconds each closed connection was open.
    lifetimes: Mutex<Vec<f64>>,
}

/// Holds `n` idle connections to `addr`: even slots never send a byte, odd
/// ones send one `GET /healthz` and then idle. A connection the server
/// closes is opened again on the next round (every 200 ms).
fn hold_idle(addr: SocketAddr, n: usize, stats: Arc<Idle>, stop: Arc<AtomicBool>) {
    let mut slots: Vec<Option<(TcpStream, Instant)>> = (0..n).map(|_| None).collect();
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let round = Instant::now();
        for (k, slot) in slots.iter_mut().enumerate() {
            if let Some((stream, opened)) = slot {
                match stream.read(&mut buf) {
                    Ok(0) => {
                        stats.closed.fetch_add(1, Ordering::Relaxed);
                        stats
                            .lifetimes
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(opened.elapsed().as_secs_f64());
                        *slot = None;
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => {
                        stats.closed.fetch_add(1, Ordering::Relaxed);
                        *slot = None;
                    }
                }
            }
            if slot.is_none() {
                let opened = TcpStream::connect_timeout(&addr, StdDuration::from_secs(2)).and_then(
                    |mut s| {
                        if k % 2 == 1 {
                            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")?;
                        }
                        s.set_nonblocking(true)?;
                        Ok(s)
                    },
                );
                match opened {
                    Ok(s) => *slot = Some((s, Instant::now())),
                    Err(_) => {
                        stats.connect_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        let open = slots.iter().filter(|s| s.is_some()).count();
        stats.open.store(open as u64, Ordering::Relaxed);
        if let Some(left) = StdDuration::from_millis(200).checked_sub(round.elapsed()) {
            std::thread::sleep(left);
        }
    }
}

// ---------------------------------------------------------------------------
// The run

/// Percentile `p` (0..=100) of `values` (0 when empty).
fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * (values.len() - 1) as f64).round() as usize;
    values[rank.min(values.len() - 1)]
}

/// One sample.
#[derive(Debug, Clone, Default)]
struct Sample {
    at: f64,
    rss: f64,
    hwm: f64,
    cpu: f64,
    fds: usize,
    threads: f64,
    polls: u64,
    stored: u64,
    not_modified: u64,
    polls_per_s: f64,
    failed: u64,
    feed_200: u64,
    feed_304: u64,
    hammer_per_s: f64,
    hammer_p50: f64,
    hammer_p99: f64,
    hammer_errors: u64,
    idle_open: u64,
    idle_closed: u64,
    entries: i64,
    failing: usize,
    stalled: usize,
    api_ms: f64,
    store_mb: f64,
}

/// What `/api/sources` says: sources failing now, sources not attempted for
/// [`STALLED_SECS`] (or never), and how long the answer took.
fn sources_status(addr: SocketAddr) -> (usize, usize, f64) {
    let t = Instant::now();
    let Ok((200, body)) = get_once(addr, "/api/sources") else {
        return (usize::MAX, usize::MAX, 0.0);
    };
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let list: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap_or_default();
    let now = Utc::now();
    let failing = list.iter().filter(|s| !s["last_error"].is_null()).count();
    let stalled = list
        .iter()
        .filter(|s| {
            s["last_attempt"]
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .is_none_or(|t| (now - t.with_timezone(&Utc)).num_seconds() > STALLED_SECS)
        })
        .count();
    (failing, stalled, ms)
}

fn healthz_entries(addr: SocketAddr) -> i64 {
    get_once(addr, "/healthz")
        .ok()
        .and_then(|(_, body)| serde_json::from_slice::<serde_json::Value>(&body).ok())
        .and_then(|v| v["entries"].as_i64())
        .unwrap_or(-1)
}

fn print_header() {
    println!(
        "{:>5} {:>7} {:>7} {:>5} {:>4} {:>6} {:>6} {:>5} {:>6} {:>6} {:>7} {:>6} {:>6} {:>5} {:>5} {:>6} {:>6} {:>5} {:>5} {:>6} {:>7}",
        "t s", "RSS MB", "HWM MB", "CPU%", "fds", "polls", "/s", "fail", "200s", "304s",
        "feed/s", "p50ms", "p99ms", "herr", "idle", "closed", "entries", "errs", "stall", "api ms", "disk MB"
    );
}

fn print_sample(s: &Sample) {
    println!(
        "{:>5.0} {:>7.1} {:>7.1} {:>5.0} {:>4} {:>6} {:>6.1} {:>5} {:>6} {:>6} {:>7.1} {:>6.1} {:>6.1} {:>5} {:>5} {:>6} {:>6} {:>5} {:>5} {:>6.0} {:>7.1}",
        s.at,
        s.rss,
        s.hwm,
        s.cpu,
        s.fds,
        s.polls,
        s.polls_per_s,
        s.failed,
        s.feed_200,
        s.feed_304,
        s.hammer_per_s,
        s.hammer_p50,
        s.hammer_p99,
        s.hammer_errors,
        s.idle_open,
        s.idle_closed,
        s.entries,
        s.failing as i64,
        s.stalled as i64,
        s.api_ms,
        s.store_mb
    );
}

fn fd_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let secs = env_or("SOAK_SECS", 600).max(10);
    let sample_secs = env_or("SOAK_SAMPLE_SECS", (secs / 20).max(5)).max(1);
    let idle_n = env_or("SOAK_IDLE", 500) as usize;
    let hammers = env_or("SOAK_HAMMER", 4) as usize;
    let limit = fd_limit();
    let needed = (idle_n + hammers + 400) as u64;
    assert!(
        limit >= needed,
        "open-file limit {limit} is under the {needed} this run needs: raise it with `ulimit -n 4096`"
    );

    let feeds = Arc::new(Feeds::new());
    let ports = start_feed_server(Arc::clone(&feeds));
    let dir = tempfile::tempdir().expect("tempdir");
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let config = write_config(dir.path(), listen, &ports);
    let addr: SocketAddr = ([127, 0, 0, 1], listen).into();
    println!(
        "soak benchmark: {secs} s; {SOURCES} sources on {LISTENERS} loopback listeners, schedule \
         {SCHEDULE:?} with a 5 s jitter ({:.0} polls/s scheduled); feeds of {LISTED} entries moving \
         every {PERIOD_MIN}-{} s; retention {KEEP} per source; {hammers} connections on /feed.atom; \
         {idle_n} idle connections; samples every {sample_secs} s; open-file limit {limit}",
        SOURCES as f64 / POLL_EVERY,
        PERIOD_MIN + PERIOD_SPREAD - 1
    );

    let started = Instant::now();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_feedmerge"))
        .args(["run", "--config"])
        .arg(&config)
        .env("MALLOC_ARENA_MAX", "2")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start daemon");
    let pid = daemon.id();
    let log = Arc::new(LogCounts::default());
    read_log(&mut daemon, Arc::clone(&log), started);
    while !matches!(get_once(addr, "/healthz"), Ok((200, _))) {
        if let Ok(Some(status)) = daemon.try_wait() {
            panic!("daemon exited before serving: {status}");
        }
        assert!(
            started.elapsed() < StdDuration::from_secs(60),
            "daemon did not serve within 60 s"
        );
        std::thread::sleep(StdDuration::from_millis(20));
    }
    println!(
        "daemon pid {pid} serving after {:.0} ms",
        started.elapsed().as_secs_f64() * 1e3
    );

    let stop = Arc::new(AtomicBool::new(false));
    let idle = Arc::new(Idle::default());
    let hammer_stats = Arc::new(Hammer::default());
    let mut threads = Vec::new();
    {
        let (idle, stop) = (Arc::clone(&idle), Arc::clone(&stop));
        threads.push(std::thread::spawn(move || {
            hold_idle(addr, idle_n, idle, stop)
        }));
    }
    for _ in 0..hammers {
        let (stats, stop) = (Arc::clone(&hammer_stats), Arc::clone(&stop));
        threads.push(std::thread::spawn(move || hammer(addr, stats, stop)));
    }

    print_header();
    let mut samples: Vec<Sample> = Vec::new();
    let mut last = Sample::default();
    let mut last_cpu = 0.0;
    let mut last_ok = 0;
    let mut next = sample_secs as f64;
    loop {
        let wait = next - started.elapsed().as_secs_f64();
        if wait > 0.0 {
            std::thread::sleep(StdDuration::from_secs_f64(wait));
        }
        if let Ok(Some(status)) = daemon.try_wait() {
            panic!("daemon exited during the soak: {status}");
        }
        let at = started.elapsed().as_secs_f64();
        let dt = at - last.at;
        let stored = log.stored.load(Ordering::Relaxed);
        let not_modified = log.not_modified.load(Ordering::Relaxed);
        let polls = stored + not_modified + log.failed.load(Ordering::Relaxed);
        let cpu = cpu_seconds(pid);
        let ok = hammer_stats.ok.load(Ordering::Relaxed);
        let mut window = std::mem::take(
            &mut *hammer_stats
                .window
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        let (failing, stalled, api_ms) = sources_status(addr);
        let sample = Sample {
            at,
            rss: proc_status(pid, "VmRSS"),
            hwm: proc_status(pid, "VmHWM"),
            cpu: (cpu - last_cpu) / dt * 100.0,
            fds: open_fds(pid),
            threads: proc_status(pid, "Threads"),
            polls,
            stored,
            not_modified,
            polls_per_s: (polls - last.polls) as f64 / dt,
            failed: log.failed.load(Ordering::Relaxed),
            feed_200: feeds.full.load(Ordering::Relaxed),
            feed_304: feeds.not_modified.load(Ordering::Relaxed),
            hammer_per_s: (ok - last_ok) as f64 / dt,
            hammer_p50: percentile(&mut window, 50.0),
            hammer_p99: percentile(&mut window, 99.0),
            hammer_errors: hammer_stats.errors.load(Ordering::Relaxed),
            idle_open: idle.open.load(Ordering::Relaxed),
            idle_closed: idle.closed.load(Ordering::Relaxed),
            entries: healthz_entries(addr),
            failing,
            stalled,
            api_ms,
            store_mb: common::mb(common::dir_bytes(&dir.path().join("store"))),
        };
        print_sample(&sample);
        last_cpu = cpu;
        last_ok = ok;
        last = sample.clone();
        samples.push(sample);
        if at >= secs as f64 - 0.5 {
            break;
        }
        next = (next + sample_secs as f64).min(secs as f64);
    }

    stop.store(true, Ordering::Relaxed);
    let stopping = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success(), "SIGTERM sent");
    let status = daemon.wait().expect("daemon exit");
    let stop_ms = stopping.elapsed().as_secs_f64() * 1e3;
    for t in threads {
        let _ = t.join();
    }
    report(
        &samples,
        &log,
        &hammer_stats,
        &idle,
        secs,
        status.success(),
        stop_ms,
    );
}

/// The sample nearest to `fraction` of the run.
fn at_fraction(samples: &[Sample], secs: u64, fraction: f64) -> &Sample {
    let t = secs as f64 * fraction;
    samples
        .iter()
        .min_by(|a, b| (a.at - t).abs().total_cmp(&(b.at - t).abs()))
        .expect("at least one sample")
}

fn report(
    samples: &[Sample],
    log: &LogCounts,
    hammer: &Hammer,
    idle: &Idle,
    secs: u64,
    clean_exit: bool,
    stop_ms: f64,
) {
    let Some(end) = samples.last() else {
        return;
    };
    let first_round = log
        .first_round
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or(f64::NAN);
    let warm = at_fraction(samples, secs, 0.25);
    let half = at_fraction(samples, secs, 0.5);
    let three = at_fraction(samples, secs, 0.75);
    let after: Vec<&Sample> = samples.iter().filter(|s| s.at >= warm.at).collect();
    let max_after = after.iter().map(|s| s.rss).fold(0.0, f64::max);
    let growth = (end.rss - warm.rss) / warm.rss;
    let peak_growth = (max_after - warm.rss) / warm.rss;
    let flat = peak_growth < FLAT_BOUND;
    let steady_polls = end.polls - warm.polls;
    let steady_rate = steady_polls as f64 / (end.at - warm.at);
    let mut all = hammer.all.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let served = hammer.ok.load(Ordering::Relaxed);
    let lifetimes = idle
        .lifetimes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let (stored, not_modified, failed) = (end.stored, end.not_modified, end.failed);
    let after_end = log.stored.load(Ordering::Relaxed)
        + log.not_modified.load(Ordering::Relaxed)
        + log.failed.load(Ordering::Relaxed)
        - end.polls;
    let max_failing = samples
        .iter()
        .map(|s| s.failing)
        .filter(|&f| f != usize::MAX)
        .max()
        .unwrap_or(0);
    let stalled_after: usize = after
        .iter()
        .map(|s| s.stalled)
        .filter(|&f| f != usize::MAX)
        .max()
        .unwrap_or(0);
    let api_errors = samples.iter().filter(|s| s.failing == usize::MAX).count();
    let api_ms: Vec<f64> = samples.iter().map(|s| s.api_ms).collect();

    println!();
    println!("summary ({secs} s; the machine's 2 cores are shared, so rates are noisy)");
    println!(
        "  polls: {} in all ({stored} stored, {not_modified} not modified, {failed} failed); \
         first round of {SOURCES} done at {first_round:.1} s; {:.1} polls/s overall, \
         {steady_rate:.1} polls/s after the warm-up ({:.0} scheduled); {after_end} more finished \
         during shutdown",
        end.polls,
        end.polls as f64 / end.at,
        SOURCES as f64 / POLL_EVERY
    );
    println!(
        "  entries: {} new, {} updated, {} pruned; {} stored at the end (retention keeps {}); \
         store {:.1} MB on disk",
        log.new.load(Ordering::Relaxed),
        log.updated.load(Ordering::Relaxed),
        log.pruned.load(Ordering::Relaxed),
        end.entries,
        SOURCES * KEEP,
        end.store_mb
    );
    println!(
        "  /api/sources: at most {max_failing} sources failing, at most {stalled_after} not \
         attempted for {STALLED_SECS} s after the warm-up, {api_errors} samples without an answer; \
         median answer {:.0} ms",
        common::median(api_ms)
    );
    println!(
        "  feed server: {} full answers, {} not modified",
        end.feed_200, end.feed_304
    );
    println!(
        "  hammer: {served} × /feed.atom ({:.1}/s) on {} connections opened; median {:.1} ms, \
         p99 {:.1} ms, max {:.1} ms; {} errors{}",
        served as f64 / end.at,
        hammer.connects.load(Ordering::Relaxed),
        percentile(&mut all, 50.0),
        percentile(&mut all, 99.0),
        all.last().copied().unwrap_or(0.0),
        hammer.errors.load(Ordering::Relaxed),
        hammer
            .first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    let mut lifetimes_sorted = lifetimes.clone();
    println!(
        "  idle: {} open at the end; the server closed {} (open a median {:.1} s, max {:.1} s); \
         {} connects failed",
        end.idle_open,
        idle.closed.load(Ordering::Relaxed),
        percentile(&mut lifetimes_sorted, 50.0),
        lifetimes_sorted.last().copied().unwrap_or(0.0),
        idle.connect_errors.load(Ordering::Relaxed)
    );
    println!(
        "  scheduler (tokio-cron-scheduler, from its \"Lagged\" errors): {} firings lost, {} \
         notifications lost",
        log.lost_firings.load(Ordering::Relaxed),
        log.lost_notifications.load(Ordering::Relaxed)
    );
    println!(
        "  daemon: {} other warnings in its log; {:.0} threads, {} fds at the end; SIGTERM to exit \
         {stop_ms:.0} ms, {}",
        log.other_warnings.load(Ordering::Relaxed),
        end.threads,
        end.fds,
        if clean_exit {
            "exit 0"
        } else {
            "exit NOT clean"
        }
    );
    for line in log.samples.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        println!("    log: {line}");
    }
    println!(
        "  RSS: {:.1} MB at {:.0} s (25 %), {:.1} MB at {:.0} s (50 %), {:.1} MB at {:.0} s (75 %), \
         {:.1} MB at the end; max after the warm-up {max_after:.1} MB; peak (VmHWM) {:.1} MB",
        warm.rss, warm.at, half.rss, half.at, three.rss, three.at, end.rss, end.hwm
    );
    println!(
        "  memory: {:+.1} % from 25 % to the end, {:+.1} % at most: {} (bound {:.0} %)",
        growth * 100.0,
        peak_growth * 100.0,
        if flat { "flat" } else { "NOT flat" },
        FLAT_BOUND * 100.0
    );
}
