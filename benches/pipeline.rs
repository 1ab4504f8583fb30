//! Pipeline benchmark: the whole poll path on a realistic corpus, against
//! the targets.
//!
//! Run: `cargo bench --bench pipeline`. One run prints:
//!
//! - the corpus: 200 feeds × 50 entries, about half RSS 2.0 and half Atom,
//!   about 10 MB, each entry 60-130 words of HTML (paragraphs, a relative
//!   link, a relative image) over a vocabulary of about 2,600 English and
//!   470 Arabic words; about 15 % of the feeds Arabic, about a third with no
//!   language declared anywhere; links with `utm_*` parameters; dates over
//!   the last four days; about 6 % of the entries republished copies of
//!   another feed's story (another guid, a prefixed title, and either the
//!   same canonical link or the same text under another link), and about
//!   2 % a changed guid under a link the same feed already lists, so every
//!   dedup layer has work;
//! - parse-only: feed-rs over every body on one core (median of 5);
//! - parse + normalize: `document::read` (what a poll runs on a body before
//!   the store) over every body on one core (median of 5), beside
//!   parse-only: the share of the budget the pure stages take;
//! - first poll: `app::fetch_once` over the 200 sources into a fresh store
//!   with every dedup layer on, in a child process (its peak RSS is its
//!   own); entries/s and the ratio to parse-only;
//! - the store's bytes on disk after that poll against the feed bytes;
//! - re-poll: 2,000 feeds polled once (not measured), then again in a fresh
//!   process where every source answers 304: feeds/s;
//! - a table of each figure beside its target.
//!
//! The feeds are served on loopback by a child process of this binary (ETag
//! and If-None-Match → 304), as in `benches/poll.rs`. Everything generated
//! is seeded, so runs are comparable; only the dates follow the clock.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Duration, TimeZone, Utc};
use common::{Rng, Script, Story, Vocabulary};

/// Feeds of the first-poll corpus.
const FEEDS: usize = 200;
/// Feeds of the re-poll.
const REPOLL_FEEDS: usize = 2_000;
/// Entries in every feed.
const ENTRIES: usize = 50;
/// Feeds are generated in blocks of this many; a copy's original is in its
/// own block, so the first 200 feeds stand on their own.
const BLOCK: usize = 200;
const ROLE: &str = "FEEDMERGE_BENCH_ROLE";
const PARSE_REPETITIONS: usize = 5;

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("serve") => serve(),
        Ok("poll") => poll(),
        _ => orchestrate(),
    }
}

// ---------------------------------------------------------------------------
// The corpus

/// What kind of feed feed `i` is.
#[derive(Debug, Clone, Copy)]
struct FeedPlan {
    atom: bool,
    script: Script,
    /// Whether the feed declares its language.
    declared: bool,
    /// RSS only: the full text in `content:encoded` beside a teaser.
    content_encoded: bool,
}

fn plan(i: usize) -> FeedPlan {
    let mut rng = Rng::new(0xFEED_0000 + i as u64);
    FeedPlan {
        atom: rng.chance(50),
        script: if rng.chance(15) {
            Script::Arabic
        } else {
            Script::English
        },
        declared: !rng.chance(33),
        content_encoded: rng.chance(50),
    }
}

/// What entry `j` of feed `i` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A story of the feed's own.
    Original,
    /// Another feed's story under the same canonical link (other tracking
    /// parameters), a prefixed title.
    SameLink { feed: usize, entry: usize },
    /// Another feed's story under this feed's own link: the same text less
    /// its last paragraph, a prefixed title.
    SameText { feed: usize, entry: usize },
    /// A new guid for the link this feed's previous entry has.
    NewGuid,
}

fn kind(i: usize, j: usize) -> Kind {
    let mut rng = Rng::new(((i as u64) << 20) ^ (j as u64) ^ 0xD0_0000_0000);
    let roll = rng.below(100);
    if roll < 6 {
        // The original: the first feed of the same script after this one in
        // its block, at an entry that is an original itself.
        let base = i / BLOCK * BLOCK;
        let script = plan(i).script;
        let feed = (1..BLOCK)
            .map(|k| base + (i - base + k) % BLOCK)
            .find(|&o| plan(o).script == script)
            .unwrap_or(i);
        let start = rng.below(ENTRIES as u64) as usize;
        let entry = (0..ENTRIES)
            .map(|k| (start + k) % ENTRIES)
            .find(|&e| base_kind(feed, e))
            .unwrap_or(start);
        if feed == i || !base_kind(feed, entry) {
            Kind::Original
        } else if roll < 3 {
            Kind::SameLink { feed, entry }
        } else {
            Kind::SameText { feed, entry }
        }
    } else if roll < 8 && j > 0 && base_kind(i, j - 1) {
        Kind::NewGuid
    } else {
        Kind::Original
    }
}

/// Whether entry `j` of feed `i` is an original (without following copies).
fn base_kind(i: usize, j: usize) -> bool {
    let mut rng = Rng::new(((i as u64) << 20) ^ (j as u64) ^ 0xD0_0000_0000);
    rng.below(100) >= 8
}

fn site(i: usize) -> String {
    match plan(i).script {
        Script::Arabic => format!("https://akhbar{i}.example"),
        Script::English => format!("https://news{i}.example"),
    }
}

const SECTIONS: &[&str] = &[
    "world", "politics", "business", "sport", "science", "health", "culture", "region",
];

/// The story an original entry tells, and where and when.
struct Original {
    story: Story,
    link: String,
    published: DateTime<Utc>,
}

fn original(vocab: &Vocabulary, i: usize, j: usize, now: DateTime<Utc>) -> Original {
    let seed = ((i as u64) << 16) | j as u64;
    let mut rng = Rng::new(seed ^ 0x57_0000_0000);
    let words = rng.range(60, 130) as usize;
    let story = vocab.story(seed, plan(i).script, words);
    let section = SECTIONS[rng.below(SECTIONS.len() as u64) as usize];
    let link = format!(
        "{}/{section}/2025/{}-{j}?utm_source=rss&utm_medium=feed&utm_campaign={section}",
        site(i),
        story.slug
    );
    // Fifty entries over about four days, newest first.
    let minutes = (j as i64) * 110 + rng.below(60) as i64 + 5;
    Original {
        story,
        link,
        published: now - Duration::minutes(minutes),
    }
}

/// One entry as the feed lists it.
struct Item {
    guid: String,
    title: String,
    link: String,
    html: String,
    teaser: String,
    published: DateTime<Utc>,
    author: String,
    categories: Vec<&'static str>,
}

fn item(vocab: &Vocabulary, i: usize, j: usize, now: DateTime<Utc>) -> (Item, Kind) {
    let kind = kind(i, j);
    let own = original(vocab, i, j, now);
    let mut rng = Rng::new(((i as u64) << 16) ^ j as u64 ^ 0xA7_0000_0000);
    let author = format!("{} {}", vocab.headline(&mut rng, plan(i).script, 1), j % 7);
    let categories = (0..rng.range(1, 3))
        .map(|_| SECTIONS[rng.below(SECTIONS.len() as u64) as usize])
        .collect();
    let guid_of = |slug: &str, j: usize, salt: &str| {
        if plan(i).atom {
            format!("tag:{},2025:{slug}-{j}{salt}", &site(i)[8..])
        } else {
            format!("{}/?p={}{j}{salt}", site(i), slug.len() * 1000 + i)
        }
    };
    let item = match kind {
        Kind::Original => Item {
            guid: guid_of(&own.story.slug, j, ""),
            title: own.story.title.clone(),
            link: own.link,
            html: own.story.html(((i as u64) << 16) | j as u64),
            teaser: own.story.teaser(),
            published: own.published,
            author,
            categories,
        },
        Kind::NewGuid => {
            let previous = original(vocab, i, j - 1, now);
            Item {
                guid: guid_of(&previous.story.slug, j - 1, "-v2"),
                title: previous.story.title.clone(),
                link: previous.link,
                html: previous.story.html(((i as u64) << 16) | (j - 1) as u64),
                teaser: previous.story.teaser(),
                published: previous.published,
                author,
                categories,
            }
        }
        Kind::SameLink { feed, entry } => {
            let from = original(vocab, feed, entry, now);
            let base = from.link.split('?').next().unwrap_or(&from.link);
            let link = format!("{base}?utm_source=partner&utm_medium=syndication&fbclid=x{i}");
            Item {
                guid: guid_of(&from.story.slug, j, "-syn"),
                title: format!("{}{}", prefix(plan(i).script, 0), from.story.title),
                link,
                html: from.story.html(((feed as u64) << 16) | entry as u64),
                teaser: from.story.teaser(),
                published: from.published + Duration::minutes(40),
                author,
                categories,
            }
        }
        Kind::SameText { feed, entry } => {
            let from = original(vocab, feed, entry, now);
            let mut story = from.story.clone();
            if story.paragraphs.len() > 2 {
                story.paragraphs.pop();
            }
            Item {
                guid: guid_of(&story.slug, j, "-copy"),
                title: format!("{}{}", prefix(plan(i).script, 1), story.title),
                link: format!(
                    "{}/wire/{}-{j}?utm_source=rss&utm_medium=feed",
                    site(i),
                    story.slug
                ),
                html: story.html(((i as u64) << 16) | j as u64),
                teaser: story.teaser(),
                published: from.published + Duration::minutes(95),
                author,
                categories,
            }
        }
    };
    (item, kind)
}

fn prefix(script: Script, n: usize) -> &'static str {
    match (script, n) {
        (Script::English, 0) => "UPDATE: ",
        (Script::English, _) => "Wire: ",
        (Script::Arabic, 0) => "عاجل: ",
        (Script::Arabic, _) => "وكالات: ",
    }
}

/// One generated feed document.
struct Feed {
    body: String,
    plan: FeedPlan,
    kinds: Vec<Kind>,
}

fn feed(vocab: &Vocabulary, i: usize, now: DateTime<Utc>) -> Feed {
    use std::fmt::Write as _;
    let plan = plan(i);
    let items: Vec<(Item, Kind)> = (0..ENTRIES).map(|j| item(vocab, i, j, now)).collect();
    let mut rng = Rng::new(0x717_0000 + i as u64);
    let title = vocab.headline(&mut rng, plan.script, 3);
    let lang = match plan.script {
        Script::Arabic => "ar",
        Script::English => "en-us",
    };
    let site = site(i);
    let mut out = String::with_capacity(ENTRIES * 1_400);
    if plan.atom {
        let lang = if plan.declared {
            format!(" xml:lang=\"{lang}\"")
        } else {
            String::new()
        };
        let _ = write!(
            out,
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\"{lang}>\n\
             <title>{}</title>\n<id>{site}/</id>\n<link rel=\"alternate\" href=\"{site}/\"/>\n\
             <link rel=\"self\" href=\"{site}/feed.atom\"/>\n<updated>{}</updated>\n",
            common::xml_escape(&title),
            now.to_rfc3339()
        );
        for (e, _) in &items {
            let _ = write!(
                out,
                "<entry>\n<title>{}</title>\n<id>{}</id>\n<link rel=\"alternate\" type=\"text/html\" href=\"{}\"/>\n\
                 <published>{}</published>\n<updated>{}</updated>\n<author><name>{}</name></author>\n",
                common::xml_escape(&e.title),
                common::xml_escape(&e.guid),
                common::xml_escape(&e.link),
                e.published.to_rfc3339(),
                e.published.to_rfc3339(),
                common::xml_escape(&e.author),
            );
            for c in &e.categories {
                let _ = write!(out, "<category term=\"{c}\"/>");
            }
            let _ = write!(
                out,
                "\n<summary>{}</summary>\n<content type=\"html\">{}</content>\n</entry>\n",
                common::xml_escape(&e.teaser),
                common::xml_escape(&e.html)
            );
        }
        out.push_str("</feed>\n");
    } else {
        let lang = if plan.declared {
            format!("<language>{lang}</language>\n")
        } else {
            String::new()
        };
        let _ = write!(
            out,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<rss version=\"2.0\" \
             xmlns:content=\"http://purl.org/rss/1.0/modules/content/\" \
             xmlns:dc=\"http://purl.org/dc/elements/1.1/\">\n<channel>\n<title>{}</title>\n\
             <link>{site}/</link>\n<description>{}</description>\n{lang}<lastBuildDate>{}</lastBuildDate>\n\
             <generator>bench</generator>\n",
            common::xml_escape(&title),
            common::xml_escape(&title),
            now.to_rfc2822()
        );
        for (e, _) in &items {
            let _ = write!(
                out,
                "<item>\n<title>{}</title>\n<link>{}</link>\n<guid isPermaLink=\"false\">{}</guid>\n\
                 <pubDate>{}</pubDate>\n<dc:creator>{}</dc:creator>\n",
                common::xml_escape(&e.title),
                common::xml_escape(&e.link),
                common::xml_escape(&e.guid),
                e.published.to_rfc2822(),
                common::xml_escape(&e.author),
            );
            for c in &e.categories {
                let _ = write!(out, "<category>{c}</category>");
            }
            if plan.content_encoded {
                let _ = write!(
                    out,
                    "\n<description>{}</description>\n<content:encoded><![CDATA[{}]]></content:encoded>\n</item>\n",
                    common::xml_escape(&e.teaser),
                    e.html
                );
            } else {
                let _ = write!(
                    out,
                    "\n<description><![CDATA[{}]]></description>\n</item>\n",
                    e.html
                );
            }
        }
        out.push_str("</channel>\n</rss>\n");
    }
    Feed {
        body: out,
        plan,
        kinds: items.into_iter().map(|(_, k)| k).collect(),
    }
}

fn corpus(n: usize, now: DateTime<Utc>) -> Vec<Feed> {
    let vocab = Vocabulary::load();
    (0..n).map(|i| feed(&vocab, i, now)).collect()
}

fn now_from_env() -> DateTime<Utc> {
    std::env::var("NOW")
        .ok()
        .and_then(|v| v.parse().ok())
        .and_then(|s| Utc.timestamp_opt(s, 0).single())
        .unwrap_or_else(Utc::now)
}

/// The pure stages a poll runs on each document (`document::read`: parse,
/// bound, normalize), one core, as the poller calls them: entries/s,
/// median of [`PARSE_REPETITIONS`].
fn read_only(feeds: &[Feed]) -> f64 {
    let limits = feedmerge::parse::Limits::default();
    let tracking = feedmerge::config::DedupConfig::default().tracking_params;
    let urls: Vec<url::Url> = (0..feeds.len())
        .map(|i| url::Url::parse(&format!("http://127.0.0.1:8080/feed/{i}")).expect("url"))
        .collect();
    let mut rates = Vec::new();
    for _ in 0..PARSE_REPETITIONS {
        let started = Instant::now();
        let mut read = 0;
        for (f, url) in feeds.iter().zip(&urls) {
            let document = feedmerge::document::read(
                f.body.as_bytes(),
                &feedmerge::document::DocumentMeta {
                    content_type: Some(content_type(f.plan.atom)),
                    url: Some(url),
                    content_language: None,
                },
                &feedmerge::document::Reading {
                    source: "bench",
                    limits: &limits,
                    tracking: &tracking,
                    now: Utc::now(),
                },
            )
            .expect("corpus reads");
            read += document.entries.len();
        }
        assert_eq!(read, feeds.len() * ENTRIES, "every entry was read");
        rates.push(read as f64 / started.elapsed().as_secs_f64());
    }
    common::median(rates)
}

// ---------------------------------------------------------------------------
// The feed server

fn serve() {
    let n: usize = std::env::var("FEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(REPOLL_FEEDS);
    let feeds = corpus(n, now_from_env());
    let bodies: Arc<Vec<(Bytes, bool)>> = Arc::new(
        feeds
            .into_iter()
            .map(|f| (Bytes::from(f.body), f.plan.atom))
            .collect(),
    );
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
            .route("/feed/{i}", get(serve_feed))
            .with_state(bodies);
        axum::serve(listener, router).await.expect("serve");
    });
}

async fn serve_feed(
    State(bodies): State<Arc<Vec<(Bytes, bool)>>>,
    UrlPath(i): UrlPath<usize>,
    headers: HeaderMap,
) -> Response {
    let Some((body, atom)) = bodies.get(i) else {
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
            (header::CONTENT_TYPE, content_type(*atom).to_string()),
            (header::ETAG, etag),
        ],
        body.clone(),
    )
        .into_response()
}

/// The media type a feed is served (and read) with.
fn content_type(atom: bool) -> &'static str {
    if atom {
        "application/atom+xml"
    } else {
        "application/rss+xml"
    }
}

// ---------------------------------------------------------------------------
// The poller (a child process per phase)

/// Writes the poll config for `n` feeds served on `port` into `dir`.
fn write_config(dir: &Path, n: usize, port: &str) -> std::path::PathBuf {
    let mut text = String::from(
        "[storage]\npath = \"store\"\ncache_size = \"16MiB\"\n\
         [feed]\nmax_entries = 20000\n\
         [poll]\nmax_in_flight = 64\nper_host = 64\n\
         [defaults]\ntimeout = \"60s\"\n",
    );
    for i in 0..n {
        text.push_str(&format!(
            "[[sources]]\nname = \"feed-{i}\"\nurl = \"http://127.0.0.1:{port}/feed/{i}\"\n"
        ));
    }
    let path = dir.join("bench.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn poll() {
    // As the daemon's `main` does.
    feedmerge::malloc::cap_arenas();
    let config_path = std::env::var("CONFIG").expect("CONFIG");
    let config = feedmerge::config::load(Path::new(&config_path)).expect("config");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let reports = runtime
        .block_on(feedmerge::app::fetch_once(config, None))
        .expect("poll round");
    let seconds = started.elapsed().as_secs_f64();
    let (mut new, mut updated, mut unchanged, mut not_modified) = (0u64, 0u64, 0u64, 0u64);
    let mut failed = Vec::new();
    for report in &reports {
        let line = report.to_string();
        if report.outcome.is_err() {
            failed.push(line);
            continue;
        }
        if line.ends_with(": not modified") {
            not_modified += 1;
            continue;
        }
        let count = |what: &str| -> u64 {
            line.split(", ")
                .find_map(|part| {
                    let part = part.rsplit(": ").next().unwrap_or(part);
                    part.strip_suffix(what).and_then(|n| n.trim().parse().ok())
                })
                .unwrap_or(0)
        };
        new += count(" new");
        updated += count(" updated");
        unchanged += count(" unchanged");
    }
    for f in failed.iter().take(5) {
        eprintln!("failed: {f}");
    }
    println!(
        "result seconds={seconds} sources={} new={new} updated={updated} unchanged={unchanged} \
         not_modified={not_modified} failed={} rss_mb={}",
        reports.len(),
        failed.len(),
        common::peak_rss_mb("self")
    );
}

/// The figures one poller child printed.
struct PollResult(HashMap<String, f64>);

impl PollResult {
    fn get(&self, key: &str) -> f64 {
        self.0.get(key).copied().unwrap_or(f64::NAN)
    }
}

fn run_poller(exe: &Path, config: &Path) -> PollResult {
    let output = Command::new(exe)
        .env(ROLE, "poll")
        .env("CONFIG", config)
        .stderr(Stdio::inherit())
        .output()
        .expect("run poller");
    assert!(output.status.success(), "poller failed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("result "))
        .expect("poller result line");
    PollResult(
        line.split_whitespace()
            .skip(1)
            .filter_map(|kv| kv.split_once('='))
            .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
            .collect(),
    )
}

// ---------------------------------------------------------------------------
// The run

fn orchestrate() {
    let exe = std::env::current_exe().expect("bench binary path");
    let now = Utc::now();
    let vocab = Vocabulary::load();
    let (en_words, ar_words) = vocab.sizes();

    // The corpus, as the server will serve it.
    let generated = Instant::now();
    let feeds = corpus(FEEDS, now);
    let generated = generated.elapsed().as_secs_f64();
    let feed_bytes: u64 = feeds.iter().map(|f| f.body.len() as u64).sum();
    let entries = feeds.len() * ENTRIES;
    let atom = feeds.iter().filter(|f| f.plan.atom).count();
    let arabic = feeds
        .iter()
        .filter(|f| f.plan.script == Script::Arabic)
        .count();
    let undeclared = feeds.iter().filter(|f| !f.plan.declared).count();
    let kinds: Vec<Kind> = feeds.iter().flat_map(|f| f.kinds.iter().copied()).collect();
    let same_link = kinds
        .iter()
        .filter(|k| matches!(k, Kind::SameLink { .. }))
        .count();
    let same_text = kinds
        .iter()
        .filter(|k| matches!(k, Kind::SameText { .. }))
        .count();
    let new_guid = kinds.iter().filter(|k| **k == Kind::NewGuid).count();
    let distinct: HashSet<&str> = feeds
        .iter()
        .flat_map(|f| f.body.split(|c: char| !c.is_alphabetic()))
        .filter(|w| w.len() > 1)
        .collect();
    println!("pipeline benchmark");
    println!(
        "corpus: {FEEDS} feeds × {ENTRIES} entries = {entries} entries, {:.1} MB \
         ({atom} Atom, {} RSS 2.0; {arabic} Arabic; {undeclared} with no language declared), \
         generated in {generated:.1} s",
        common::mb(feed_bytes),
        FEEDS - atom,
    );
    println!(
        "  vocabulary {en_words} English + {ar_words} Arabic words; {} distinct letter runs in the bodies",
        distinct.len()
    );
    println!(
        "  copies of another feed's story: {same_link} under the same canonical link, \
         {same_text} with the same text under another link; {new_guid} new guids for a listed link"
    );

    // Parse-only: feed-rs over every body, one core.
    let mut rates = Vec::new();
    let mut parsed = 0;
    for _ in 0..PARSE_REPETITIONS {
        let started = Instant::now();
        parsed = 0;
        for f in &feeds {
            let doc = feed_rs::parser::parse(f.body.as_bytes()).expect("corpus parses");
            parsed += doc.entries.len();
        }
        rates.push(parsed as f64 / started.elapsed().as_secs_f64());
    }
    assert_eq!(parsed, entries, "feed-rs saw every entry");
    let parse_rate = common::median(rates.clone());
    println!(
        "parse-only (feed_rs::parser::parse, one core, median of {PARSE_REPETITIONS}): \
         {parse_rate:.0} entries/s (runs: {})",
        rates
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let read_rate = read_only(&feeds);
    println!(
        "parse + normalize (document::read, one core, median of {PARSE_REPETITIONS}): \
         {read_rate:.0} entries/s = {:.3}× parse-only",
        read_rate / parse_rate
    );
    // For profiling the pure stages alone: `PIPELINE_READ_ONLY=1`.
    if std::env::var_os("PIPELINE_READ_ONLY").is_some() {
        return;
    }
    drop(feeds);

    // The feed server: the first 2,000 feeds (the first 200 are the corpus).
    let mut server = Command::new(&exe)
        .env(ROLE, "serve")
        .env("FEEDS", REPOLL_FEEDS.to_string())
        .env("NOW", now.timestamp().to_string())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start feed server");
    let mut line = String::new();
    BufReader::new(server.stdout.take().expect("server stdout"))
        .read_line(&mut line)
        .expect("server port");
    let port = line.trim().to_string();
    assert!(!port.is_empty(), "feed server started");

    // First poll of the 200 feeds into a fresh store.
    let first_dir = tempfile::tempdir().expect("tempdir");
    let first_config = write_config(first_dir.path(), FEEDS, &port);
    let first = run_poller(&exe, &first_config);
    let first_seconds = first.get("seconds");
    let first_rate = entries as f64 / first_seconds;
    let first_rss = first.get("rss_mb");
    println!(
        "first poll ({FEEDS} sources, fetch_once, every dedup layer on): {first_seconds:.2} s, \
         {first_rate:.0} entries/s = {:.3}× parse-only; peak RSS {first_rss:.1} MB",
        first_rate / parse_rate
    );
    println!(
        "  reports: {} new, {} updated, {} unchanged, {} failed",
        first.get("new"),
        first.get("updated"),
        first.get("unchanged"),
        first.get("failed")
    );
    let store_bytes = common::dir_bytes(&first_dir.path().join("store"));
    let store_ratio = store_bytes as f64 / feed_bytes as f64;
    println!(
        "store on disk after the first poll: {:.1} MB for {:.1} MB of feeds = {store_ratio:.2}×",
        common::mb(store_bytes),
        common::mb(feed_bytes)
    );
    stories(&first_config);
    // For profiling the first poll alone: `PIPELINE_FIRST_ONLY=1`.
    if std::env::var_os("PIPELINE_FIRST_ONLY").is_some() {
        let _ = server.kill();
        let _ = server.wait();
        return;
    }

    // Re-poll: 2,000 feeds, first polled once (not measured), then again in a
    // fresh process with every source answering 304.
    let repoll_dir = tempfile::tempdir().expect("tempdir");
    let repoll_config = write_config(repoll_dir.path(), REPOLL_FEEDS, &port);
    let load = run_poller(&exe, &repoll_config);
    println!(
        "re-poll setup: first poll of {REPOLL_FEEDS} sources (not measured): {:.1} s, {} new, peak RSS {:.1} MB",
        load.get("seconds"),
        load.get("new"),
        load.get("rss_mb")
    );
    let repoll = run_poller(&exe, &repoll_config);
    let repoll_seconds = repoll.get("seconds");
    let repoll_rate = REPOLL_FEEDS as f64 / repoll_seconds;
    assert_eq!(
        repoll.get("not_modified") as usize,
        REPOLL_FEEDS,
        "every source answered 304"
    );
    println!(
        "re-poll ({REPOLL_FEEDS} sources, all 304): {repoll_seconds:.3} s, {repoll_rate:.0} feeds/s, \
         peak RSS {:.1} MB",
        repoll.get("rss_mb")
    );
    let _ = server.kill();
    let _ = server.wait();

    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!();
    println!(
        "{:<44} {:>14}  {:<22} result",
        "figure", "measured", "target"
    );
    let rows = [
        (
            "first poll, entries/s".to_string(),
            format!("{first_rate:.0}"),
            "≥ 20,000",
            first_rate >= 20_000.0,
        ),
        (
            "first poll / parse-only".to_string(),
            format!("{:.3}×", first_rate / parse_rate),
            "≥ 0.25×",
            first_rate / parse_rate >= 0.25,
        ),
        (
            format!("re-poll of {REPOLL_FEEDS} (304), feeds/s"),
            format!("{repoll_rate:.0}"),
            "≥ 5,000",
            repoll_rate >= 5_000.0,
        ),
        (
            format!("peak RSS, {FEEDS}-feed first poll"),
            format!("{first_rss:.1} MB"),
            "≤ 50 MB",
            first_rss <= 50.0,
        ),
        (
            "store on disk / feed bytes".to_string(),
            format!("{store_ratio:.2}×"),
            "≤ 2×",
            store_ratio <= 2.0,
        ),
    ];
    for (figure, measured, target, ok) in rows {
        println!("{figure:<44} {measured:>14}  {target:<22} {}", verdict(ok));
    }
    std::io::stdout().flush().expect("stdout");
}

/// How many stories the first poll's entries make: the merged feed of every
/// stored entry, its entries and its links to other copies.
fn stories(config_path: &Path) {
    let config = feedmerge::config::load(config_path).expect("config");
    let store = feedmerge::store::Store::open(
        &config.storage.path,
        feedmerge::store::StoreOptions::with_cache(config.storage.cache_capacity),
    )
    .expect("open store");
    let xml = feedmerge::feeds::render(&config, &store, feedmerge::feeds::Selector::Merged)
        .expect("render")
        .expect("merged feed");
    println!(
        "  merged feed of the stored entries: {} stories, {} links to other copies",
        xml.matches("<entry").count(),
        xml.matches("rel=\"related\"").count()
    );
}
