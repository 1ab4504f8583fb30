//! Poll benchmark: N generated feeds served on loopback, polled in full
//! (first fetch: parse and store everything) and again (every source
//! answers 304). Prints feeds/s, entries/s and peak RSS of the poller.
//!
//! Run: `cargo bench --bench poll` (default N = 200 and 2000), or
//! `cargo bench --bench poll -- 500` for other sizes.
//!
//! The feed server and the poller run in separate child processes of this
//! binary, so the peak RSS is the poller's alone; each phase runs in a
//! process of its own on the same store (the unchanged re-poll is what a
//! long-running daemon does all day; the first fetch is a one-off bulk load).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const ENTRIES_PER_FEED: usize = 20;
const ROLE: &str = "FEEDMERGE_BENCH_ROLE";

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("serve") => serve(),
        Ok("poll") => poll(),
        _ => orchestrate(),
    }
}

fn orchestrate() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![200, 2000]
    } else {
        sizes
    };
    let exe = std::env::current_exe().expect("bench binary path");
    println!(
        "poll benchmark: {ENTRIES_PER_FEED} entries per feed, one loopback host, per_host = 64"
    );
    println!(
        "{:>6}  {:<10} {:>9} {:>10} {:>12} {:>10}",
        "feeds", "phase", "seconds", "feeds/s", "entries/s", "peak RSS"
    );
    for n in sizes {
        let mut server = Command::new(&exe)
            .env(ROLE, "serve")
            .env("FEEDS", n.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start feed server");
        let mut line = String::new();
        BufReader::new(server.stdout.take().expect("server stdout"))
            .read_line(&mut line)
            .expect("server port");
        let port = line.trim().to_string();
        let dir = tempfile::tempdir().expect("tempdir");
        for phase in ["first", "unchanged"] {
            let output = Command::new(&exe)
                .env(ROLE, "poll")
                .env("FEEDS", n.to_string())
                .env("PORT", &port)
                .env("PHASE", phase)
                .env("STORE_DIR", dir.path())
                .stderr(Stdio::inherit())
                .output()
                .expect("run poller");
            std::io::stdout().write_all(&output.stdout).expect("stdout");
            assert!(output.status.success(), "poller failed in phase {phase}");
        }
        let _ = server.kill();
        let _ = server.wait();
    }
}

fn feeds_from_env() -> usize {
    std::env::var("FEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

/// A sentence of `n` made-up words, different for every (feed, entry):
/// real stories differ, and identical filler would make every entry a
/// near-duplicate candidate of every other.
fn words(seed: u64, n: usize) -> String {
    const SYLLABLES: &[&str] = &[
        "ba", "ko", "ri", "ta", "mu", "sel", "dan", "or", "vi", "ne", "pol", "ha", "gri", "su",
        "le", "mar", "to", "zen", "ca", "fi",
    ];
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            (0..3)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    SYLLABLES[(x % SYLLABLES.len() as u64) as usize]
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn feed_body(i: usize) -> String {
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><rss version=\"2.0\"><channel><title>Feed {i}</title><link>https://example.org/{i}/</link>\n"
    );
    for j in 0..ENTRIES_PER_FEED {
        out.push_str(&format!(
            "<item><guid>feed-{i}-entry-{j}</guid><title>Story {j} of feed {i}</title>\
             <link>https://example.org/{i}/{j}?utm_source=rss</link>\
             <pubDate>Thu, 27 Mar 2025 {:02}:00:00 GMT</pubDate>\
             <description>&lt;p&gt;{}&lt;/p&gt;&lt;img src=\"/img/{i}/{j}.webp\"&gt;</description></item>\n",
            j % 24,
            words((i * 1000 + j) as u64, 40)
        ));
    }
    out.push_str("</channel></rss>\n");
    out
}

fn serve() {
    let n = feeds_from_env();
    let bodies: Arc<Vec<String>> = Arc::new((0..n).map(feed_body).collect());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("{}", listener.local_addr().expect("addr").port());
        let router = Router::new()
            .route("/feed/{i}", get(feed))
            .with_state(bodies);
        axum::serve(listener, router).await.expect("serve");
    });
}

async fn feed(
    State(bodies): State<Arc<Vec<String>>>,
    Path(i): Path<usize>,
    headers: HeaderMap,
) -> Response {
    let Some(body) = bodies.get(i) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let etag = format!("\"{i}-v1\"");
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(etag.as_str())
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "application/rss+xml".to_string()),
            (header::ETAG, etag),
        ],
        body.clone(),
    )
        .into_response()
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn poll() {
    let n = feeds_from_env();
    let port = std::env::var("PORT").expect("PORT");
    let phase = std::env::var("PHASE").expect("PHASE");
    let dir = std::path::PathBuf::from(std::env::var("STORE_DIR").expect("STORE_DIR"));
    let mut text = String::from(
        "[storage]\npath = \"store\"\ncache_size = \"16MiB\"\n[poll]\nmax_in_flight = 64\nper_host = 64\n\
         [defaults]\ntimeout = \"30s\"\n",
    );
    for i in 0..n {
        text.push_str(&format!(
            "[[sources]]\nname = \"feed-{i}\"\nurl = \"http://127.0.0.1:{port}/feed/{i}\"\n"
        ));
    }
    let path = dir.join("bench.toml");
    std::fs::write(&path, text).expect("write config");
    let config = feedmerge::config::load(&path).expect("config");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    {
        let phase = phase.as_str();
        let started = Instant::now();
        let reports = runtime
            .block_on(feedmerge::app::fetch_once(config.clone(), None))
            .expect("poll round");
        let seconds = started.elapsed().as_secs_f64();
        let failed: Vec<String> = reports
            .iter()
            .filter(|r| r.outcome.is_err())
            .map(|r| r.to_string())
            .collect();
        assert!(failed.is_empty(), "failed polls: {failed:?}");
        let expected = if phase == "first" {
            "20 new"
        } else {
            "not modified"
        };
        assert!(
            reports.iter().all(|r| r.to_string().contains(expected)),
            "unexpected outcome in {phase}"
        );
        let entries = if phase == "first" {
            n * ENTRIES_PER_FEED
        } else {
            0
        };
        println!(
            "{n:>6}  {phase:<10} {seconds:>9.3} {:>10.0} {:>12.0} {:>8.1} MB",
            n as f64 / seconds,
            entries as f64 / seconds,
            peak_rss_mib()
        );
    }
}
