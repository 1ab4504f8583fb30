//! End to end: the real daemon (config, scheduler, fetch, parse, normalize,
//! store, publish, server) against a feed server on 127.0.0.1 in this
//! process, a real sled directory, and jing validating every Atom document.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use feedmerge::app;
use feedmerge::config;
use feedmerge::store::Store;
use tokio_util::sync::CancellationToken;

mod conformance;
mod crash;
mod dedup_pairs;
mod encodings;
mod fidelity2;
mod filters;
mod fuzz_corpora;
mod guard;
mod install;
mod intake;
mod manners;
mod observe;
mod opml;
mod publishing;
mod reference_config;
mod reload;
mod roundtrip;
mod systemd;
mod upgrade;
mod xss;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
const SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schema/atom.rnc");
const BIN: &str = env!("CARGO_BIN_EXE_feedmerge");

// ---- the feed server ---------------------------------------------------

/// A server on 127.0.0.1 answering each path (without its leading `/`)
/// with a status and either a redirect to a location or, for a value that
/// starts with `feed:`, the rest of it as an RSS body.
async fn serve_paths(routes: HashMap<String, (StatusCode, String)>) -> (u16, CancellationToken) {
    let routes = Arc::new(routes);
    let router = Router::new().fallback(move |uri: axum::http::Uri| {
        let routes = Arc::clone(&routes);
        async move {
            match routes.get(uri.path().trim_start_matches('/')) {
                Some((status, location)) if location.starts_with("feed:") => (
                    *status,
                    [(header::CONTENT_TYPE, "application/rss+xml")],
                    location.trim_start_matches("feed:").to_string(),
                )
                    .into_response(),
                Some((status, location)) => {
                    (*status, [(header::LOCATION, location.clone())]).into_response()
                }
                None => StatusCode::NOT_FOUND.into_response(),
            }
        }
    });
    let (base, stop) = serve_router(router).await;
    let port = base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap();
    (port, stop)
}

/// Which version of the English feed the server hands out.
#[derive(Clone, Default)]
struct Server {
    english_updated: Arc<Mutex<bool>>,
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(FIXTURES).join(name)).unwrap()
}

async fn serve_feed(State(server): State<Server>, UrlPath(name): UrlPath<String>) -> Response {
    let (file, content_type) = match name.as_str() {
        // windows-1256, declared only in the XML declaration.
        "ar-1256.xml" => ("arabic-windows-1256.xml", "application/rss+xml"),
        // ISO-8859-6, declared only in the HTTP header.
        "ar-8859-6.xml" => (
            "arabic-iso-8859-6.xml",
            "application/rss+xml; charset=ISO-8859-6",
        ),
        "english.atom" => {
            let updated = *server.english_updated.lock().unwrap();
            let file = if updated {
                "english-updated.atom"
            } else {
                "english.atom"
            };
            (file, "application/atom+xml")
        }
        "notes.json" => ("notes.json", "application/feed+json"),
        "no-guid.xml" => ("no-guid.xml", "application/rss+xml"),
        "media.xml" => ("media-and-dates.xml", "application/rss+xml"),
        "story-a.xml" => ("story-a.xml", "application/rss+xml"),
        "story-b.xml" => ("story-b.xml", "application/rss+xml"),
        "story-c.xml" => ("story-c.xml", "application/rss+xml"),
        "broken.xml" => ("broken.xml", "application/rss+xml"),
        "page.html" => ("not-a-feed.html", "text/html; charset=utf-8"),
        "error-500" => return (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        "drip" => {
            // One byte every 2 s, forever.
            let stream = futures_util::stream::unfold(0u64, |n| async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                Some((Ok::<_, std::io::Error>(vec![b' ']), n + 1))
            });
            return (
                [(header::CONTENT_TYPE, "application/rss+xml")],
                Body::from_stream(stream),
            )
                .into_response();
        }
        "endless" => {
            let stream = futures_util::stream::repeat_with(|| {
                Ok::<_, std::io::Error>(vec![b'<'; 64 * 1024])
            });
            return (
                [(header::CONTENT_TYPE, "application/rss+xml")],
                Body::from_stream(stream),
            )
                .into_response();
        }
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    ([(header::CONTENT_TYPE, content_type)], fixture(file)).into_response()
}

/// Serves `router` on 127.0.0.1 (a free port) until the returned token is
/// cancelled; returns the base URL.
async fn serve_router(router: Router) -> (String, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(token.cancelled_owned())
            .await
            .unwrap();
    });
    (format!("http://{addr}"), stop)
}

/// Starts the feed server; returns its base URL and a handle to stop it.
async fn start_feed_server(server: Server) -> (String, CancellationToken) {
    serve_router(
        Router::new()
            .route("/{name}", get(serve_feed))
            .with_state(server),
    )
    .await
}

// ---- configs -------------------------------------------------------------

/// Sources: (name, path on the feed server, tags).
const GOOD_SOURCES: &[(&str, &str, &str)] = &[
    ("centcom-ar", "ar-1256.xml", r#"["security", "ar"]"#),
    ("sa-news", "ar-8859-6.xml", r#"["ar"]"#),
    ("eng-blog", "english.atom", r#"["tech"]"#),
    ("notes", "notes.json", r#"["tech"]"#),
    ("no-guid", "no-guid.xml", "[]"),
];
const GOOD_ENTRIES: usize = 2 + 2 + 3 + 2 + 2;

const BAD_SOURCES: &[(&str, &str, &str)] = &[
    ("broken", "broken.xml", "[]"),
    ("html-page", "page.html", "[]"),
    ("server-error", "error-500", "[]"),
    ("missing", "does-not-exist", "[]"),
    ("dripping", "drip", "[]"),
    ("endless", "endless", "[]"),
];

/// Writes a config for `sources` served by `base` and returns its path.
fn write_config(dir: &Path, base: &str, sources: &[(&str, &str, &str)]) -> PathBuf {
    let mut text = String::from(
        r#"
[server]
listen = "127.0.0.1:0"
[storage]
path = "store"
cache_size = "8MiB"
[feed]
title = "Test merged feed"
max_entries = 100
[poll]
jitter = "0s"
[defaults]
# Far away: only the first round (and explicit fetches) poll.
schedule = "0 0 0 1 1 *"
timeout = "3s"
max_body_size = "1MiB"
[[feeds]]
name = "security"
title = "Security"
tags = ["security"]
[[feeds]]
name = "arabic"
tags = ["ar"]
"#,
    );
    for (name, path, tags) in sources {
        text.push_str(&format!(
            "[[sources]]\nname = \"{name}\"\nurl = \"{base}/{path}\"\ntags = {tags}\n"
        ));
    }
    let path = dir.join("feedmerge.toml");
    std::fs::write(&path, text).unwrap();
    path
}

// ---- checks --------------------------------------------------------------

/// Validates `xml` against the RFC 4287 RELAX NG schema with jing.
/// jing's verdict on `files` against RFC 4287's schema, in one run (one
/// JVM start).
fn jing(files: &[PathBuf]) -> std::process::Output {
    Command::new("jing")
        .arg("-c")
        .arg(SCHEMA)
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("cannot run jing ({e}); install it: apt-get install jing"))
}

fn assert_valid_atom(xml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("feed.atom");
    std::fs::write(&file, xml).unwrap();
    let output = jing(&[file]);
    assert!(
        output.status.success(),
        "jing rejects the document:\n{}\n{xml}",
        String::from_utf8_lossy(&output.stdout)
    );
}

async fn http_get(url: &str) -> (StatusCode, String, String) {
    let response = ::reqwest::get(url).await.unwrap();
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

/// Where each `<entry>` (or `<entry xml:lang=...>`) element starts.
fn entry_starts(xml: &str) -> impl Iterator<Item = usize> + '_ {
    xml.match_indices("<entry")
        .filter(|(at, _)| matches!(xml.as_bytes().get(at + 6), Some(b'>' | b' ')))
        .map(|(at, _)| at)
}

fn entry_count(xml: &str) -> usize {
    entry_starts(xml).count()
}

/// The text between `<title...>` and `</title>` of each entry, in order.
fn entry_titles(xml: &str) -> Vec<String> {
    xml.split("<entry")
        .skip(1)
        .filter(|rest| rest.starts_with('>') || rest.starts_with(' '))
        .filter_map(|entry| {
            let start = entry.find("<title")?;
            let open_end = start + entry[start..].find('>')? + 1;
            let close = open_end + entry[open_end..].find("</title>")?;
            Some(entry[open_end..close].to_string())
        })
        .collect()
}

/// Runs newsboat's `-x` `commands` on the `urls`, `cache.db` and `config`
/// under `home`.
fn newsboat(home: &Path, commands: &[&str]) -> std::process::Output {
    Command::new("newsboat")
        .arg("-u")
        .arg(home.join("urls"))
        .arg("-c")
        .arg(home.join("cache.db"))
        .arg("-C")
        .arg(home.join("config"))
        .arg("-x")
        .args(commands)
        .env("HOME", home)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run newsboat ({e}); install it: apt-get install newsboat")
        })
}

/// Replaces `listen = "127.0.0.1:0"` with a free fixed port, so commands
/// that look for the daemon through `server.listen` find it.
fn give_fixed_port(config_path: &Path) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = std::fs::read_to_string(config_path).unwrap();
    let text = text.replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(config_path, text).unwrap();
}

struct Running {
    daemon: app::Daemon,
    stop: CancellationToken,
    base: String,
}

async fn start_daemon(config_path: &Path) -> Running {
    let config = config::load(config_path).unwrap();
    let stop = CancellationToken::new();
    let daemon = app::start(config, stop.clone()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), daemon.first_round_done())
        .await
        .expect("the first poll round never finished");
    let base = format!("http://{}", daemon.local_addr());
    Running { daemon, stop, base }
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.daemon.wait())
            .await
            .expect("the daemon did not stop")
            .unwrap();
    }
}

// ---- tests ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_feed_from_good_and_bad_sources() {
    let (feeds, _server_stop) = start_feed_server(Server::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let sources: Vec<_> = GOOD_SOURCES.iter().chain(BAD_SOURCES).copied().collect();
    let config_path = write_config(dir.path(), &feeds, &sources);
    let running = start_daemon(&config_path).await;

    let (status, content_type, xml) = http_get(&format!("{}/feed.atom", running.base)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "application/atom+xml; charset=utf-8");
    assert_valid_atom(&xml);
    assert_eq!(entry_count(&xml), GOOD_ENTRIES, "{xml}");
    let titles = entry_titles(&xml);
    // windows-1256 from the XML declaration, ISO-8859-6 from the HTTP header.
    assert!(
        titles.contains(&"قائد القيادة المركزية يزور قطر".to_string()),
        "{titles:?}"
    );
    assert!(
        titles.contains(&"اجتماع وزراء الخارجية في الرياض".to_string()),
        "{titles:?}"
    );
    assert!(
        titles.contains(&"Rust 2025 survey results".to_string()),
        "{titles:?}"
    );
    assert!(
        titles.contains(&"Notes from the field".to_string()),
        "{titles:?}"
    );
    // The relative photo link is absolute, against the article's site.
    assert!(xml.contains(
        "https://www.centcom.mil/ssc/images/2025/03/27/49771-Kurilla-Qatar-conference-600_384.webp"
    ));
    assert!(
        !xml.contains("src=&quot;/ssc/"),
        "a relative image link survived"
    );
    // Language and source travel with each entry; nothing unsafe survives.
    assert!(xml.contains(r#"<title xml:lang="ar">قائد القيادة المركزية يزور قطر</title>"#));
    assert!(xml.contains("<id>urn:feedmerge:source:centcom-ar</id>"));
    assert!(xml.contains("<id>urn:feedmerge:source:notes</id>"));
    assert!(
        !xml.to_lowercase().contains("&lt;script"),
        "a script survived"
    );
    assert!(!xml.contains("onclick"), "an event handler survived");
    assert!(
        xml.contains("https://blog.example.com/about"),
        "xml:base link not resolved"
    );
    // Newest first.
    let published: Vec<&str> = xml
        .split("<published>")
        .skip(1)
        .filter_map(|s| s.split('<').next())
        .collect();
    let mut sorted = published.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(published, sorted);

    // Tag-selected feeds.
    let (status, _, security) = http_get(&format!("{}/feeds/security.atom", running.base)).await;
    assert_eq!(status, StatusCode::OK);
    assert_valid_atom(&security);
    assert_eq!(entry_count(&security), 2);
    assert!(security.contains("urn:feedmerge:source:centcom-ar"));
    assert!(!security.contains("urn:feedmerge:source:eng-blog"));
    let (_, _, arabic) = http_get(&format!("{}/feeds/arabic.atom", running.base)).await;
    assert_valid_atom(&arabic);
    assert_eq!(entry_count(&arabic), 4);
    let (status, _, _) = http_get(&format!("{}/feeds/nope.atom", running.base)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, health) = http_get(&format!("{}/healthz", running.base)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        health.contains(&format!("\"entries\":{GOOD_ENTRIES}")),
        "{health}"
    );

    running.stop().await;

    // Every bad source has its reason recorded; the good ones have none.
    let config = config::load(&config_path).unwrap();
    let store = Store::open(
        &config.storage.path,
        feedmerge::store::StoreOptions::with_cache(1 << 20),
    )
    .unwrap();
    let error_of = |name: &str| {
        store
            .source_state(name)
            .unwrap()
            .unwrap_or_else(|| panic!("no state for {name}"))
            .last_error
    };
    let expect_error = |name: &str, part: &str| {
        let error = error_of(name).unwrap_or_else(|| panic!("{name} has no error"));
        assert!(error.contains(part), "{name}: {error:?} lacks {part:?}");
    };
    expect_error("broken", "not a valid feed");
    expect_error("html-page", "not a valid feed");
    expect_error("server-error", "http 500");
    expect_error("missing", "http 404");
    expect_error("dripping", "timed out after 3 s");
    expect_error("endless", "body larger than 1048576 bytes");
    for (name, _, _) in GOOD_SOURCES {
        assert_eq!(error_of(name), None, "{name}");
    }
    let state = store.source_state("sa-news").unwrap().unwrap();
    assert_eq!(state.encoding.as_deref(), Some("ISO-8859-6"));
    let state = store.source_state("centcom-ar").unwrap().unwrap();
    assert_eq!(state.encoding.as_deref(), Some("windows-1256"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_entries_and_updates_in_place() {
    let server = Server::default();
    let (feeds, server_stop) = start_feed_server(server.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path(), &feeds, GOOD_SOURCES);

    let running = start_daemon(&config_path).await;
    let (_, _, first) = http_get(&format!("{}/feed.atom", running.base)).await;
    running.stop().await;
    assert_eq!(entry_count(&first), GOOD_ENTRIES);

    // Same ids, one changed title: updated in place, not added.
    *server.english_updated.lock().unwrap() = true;
    let running = start_daemon(&config_path).await;
    let (_, _, second) = http_get(&format!("{}/feed.atom", running.base)).await;
    running.stop().await;
    assert_valid_atom(&second);
    assert_eq!(entry_count(&second), GOOD_ENTRIES, "{second}");
    let titles = entry_titles(&second);
    assert!(titles.contains(&"Rust 2025 survey results (updated)".to_string()));
    assert!(!titles.contains(&"Rust 2025 survey results".to_string()));
    assert!(second.contains("<updated>2025-03-13T08:00:00+00:00</updated>"));

    // With every source down, a restart still serves everything stored.
    server_stop.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let running = start_daemon(&config_path).await;
    let (_, _, third) = http_get(&format!("{}/feed.atom", running.base)).await;
    running.stop().await;
    assert_eq!(entry_titles(&third), entry_titles(&second));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_schedule_polls_again() {
    let server = Server::default();
    let (feeds, _server_stop) = start_feed_server(server.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path(), &feeds, &[GOOD_SOURCES[2]]);
    // Every second, for this source only.
    let text = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(&config_path, format!("{text}schedule = \"* * * * * *\"\n")).unwrap();

    let running = start_daemon(&config_path).await;
    *server.english_updated.lock().unwrap() = true;
    let mut titles = Vec::new();
    for _ in 0..300 {
        let (_, _, xml) = http_get(&format!("{}/feed.atom", running.base)).await;
        titles = entry_titles(&xml);
        if titles.contains(&"Rust 2025 survey results (updated)".to_string()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.stop().await;
    assert!(
        titles.contains(&"Rust 2025 survey results (updated)".to_string()),
        "the scheduled poll never picked up the change: {titles:?}"
    );
    assert_eq!(titles.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newsboat_reads_the_merged_feed() {
    let (feeds, _server_stop) = start_feed_server(Server::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path(), &feeds, GOOD_SOURCES);
    let running = start_daemon(&config_path).await;

    let home = dir.path().join("newsboat");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("urls"), format!("{}/feed.atom\n", running.base)).unwrap();
    std::fs::write(home.join("config"), "").unwrap();
    let output = tokio::task::spawn_blocking(move || newsboat(&home, &["reload", "print-unread"]))
        .await
        .unwrap();
    running.stop().await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("{GOOD_ENTRIES} unread articles")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_arrive_intact() {
    // Issue 4: language and direction, absolute links and media, safe HTML,
    // odd dates, and one guid shared by two items.
    let (feeds, _server_stop) = start_feed_server(Server::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let sources = [GOOD_SOURCES[0], ("desk", "media.xml", "[]")];
    let config_path = write_config(dir.path(), &feeds, &sources);
    let running = start_daemon(&config_path).await;
    let (_, _, xml) = http_get(&format!("{}/feed.atom", running.base)).await;
    running.stop().await;
    assert_valid_atom(&xml);
    assert_eq!(entry_count(&xml), 2 + 3, "{xml}");

    // The Arabic entries carry their language on the entry and read right
    // to left.
    assert_eq!(xml.matches(r#"<entry xml:lang="ar">"#).count(), 2, "{xml}");
    assert!(xml.contains("&lt;div dir=&quot;rtl&quot;&gt;"), "{xml}");
    // Every URL is absolute; media are enclosures; trackers and scripts gone.
    assert!(
        xml.contains("src=&quot;https://news.example.net/img/harbour.jpg&quot;"),
        "{xml}"
    );
    assert!(
        xml.contains("srcset=&quot;https://news.example.net/img/harbour-2x.jpg 2x&quot;"),
        "{xml}"
    );
    assert!(!xml.contains("px.gif"), "tracking pixel kept");
    assert!(!xml.contains("track()"), "script kept");
    assert!(xml.contains(
        r#"<link href="https://news.example.net/audio/harbour.mp3" rel="enclosure" type="audio/mpeg" length="482133"/>"#
    ), "{xml}");
    assert!(xml.contains(
        r#"<link href="https://cdn.example.net/thumbs/harbour.webp" rel="enclosure" type="image/webp"/>"#
    ), "{xml}");
    // Dates: a named zone, a French date, and an ISO date without a zone.
    assert!(
        xml.contains("<published>2025-03-27T10:00:00+00:00</published>"),
        "{xml}"
    );
    assert!(
        xml.contains("<published>2025-03-27T07:00:00+00:00</published>"),
        "{xml}"
    );
    assert!(
        xml.contains("<published>2025-03-27T18:00:00+00:00</published>"),
        "{xml}"
    );
    // Both items sharing a guid are kept.
    let titles = entry_titles(&xml);
    assert!(
        titles.contains(&"Morning briefing".to_string()),
        "{titles:?}"
    );
    assert!(
        titles.contains(&"Evening briefing".to_string()),
        "{titles:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_story_one_entry() {
    // Issue 5: the same story three ways (tracking parameters, another
    // guid, a prefixed title, other markup, a mirror's own URL) plus
    // unrelated stories with shared boilerplate.
    let (feeds, _server_stop) = start_feed_server(Server::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let sources = [
        ("centcom", "story-a.xml", "[]"),
        ("mirror", "story-b.xml", "[]"),
        ("digest", "story-c.xml", "[]"),
    ];
    let config_path = write_config(dir.path(), &feeds, &sources);
    give_fixed_port(&config_path);
    let running = start_daemon(&config_path).await;
    let (_, _, merged) = http_get(&format!("{}/feed.atom", running.base)).await;
    assert_valid_atom(&merged);
    let titles = entry_titles(&merged);
    assert_eq!(titles.len(), 4, "{titles:#?}");
    let visits = titles.iter().filter(|t| t.contains("visits Qatar")).count();
    assert_eq!(visits, 1, "the story is shown once: {titles:#?}");
    for unrelated in [
        "CENTCOM forces complete mine countermeasures exercise",
        "Navy christens new expeditionary sea base",
        "Qatar and Oman sign maritime border agreement",
    ] {
        assert!(
            titles.contains(&unrelated.to_string()),
            "{unrelated} missing: {titles:#?}"
        );
    }
    // Every copy is named: the chosen one as atom:source, the others as
    // related links.
    assert!(
        merged.contains(r#"rel="related" title="mirror""#)
            || merged.contains(r#"rel="related" title="centcom""#),
        "{merged}"
    );
    assert!(merged.contains(r#"href="https://digest.example.org/2025/03/27/centcom-qatar-visit/?ref=rss" rel="related" title="digest""#)
        || merged.contains("<id>urn:feedmerge:source:digest</id>"), "{merged}");
    // The earliest publication of the three copies.
    assert!(
        merged.contains("<published>2025-03-27T14:30:00+00:00</published>"),
        "{merged}"
    );

    // Each source's own feed still lists its copy.
    for (name, _, _) in sources {
        let (status, _, own) = http_get(&format!("{}/sources/{name}.atom", running.base)).await;
        assert_eq!(status, StatusCode::OK);
        assert_valid_atom(&own);
        assert_eq!(entry_count(&own), 2, "{name}: {own}");
        assert!(
            entry_titles(&own)
                .iter()
                .any(|t| t.contains("visits Qatar")),
            "{name}"
        );
    }
    let (status, _, _) = http_get(&format!("{}/sources/nope.atom", running.base)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Which copies merged, and by which rule: over the API while the
    // daemon runs, and from the store with `feedmerge explain` after.
    let story_id = merged
        .split("<entry")
        .find(|e| e.contains("visits Qatar"))
        .and_then(|e| e.split("<id>").nth(1))
        .and_then(|e| e.split("</id>").next())
        .unwrap()
        .to_string();
    let (status, _, api) = http_get(&format!("{}/api/entries/{story_id}", running.base)).await;
    assert_eq!(status, StatusCode::OK, "{api}");
    let report: serde_json::Value = serde_json::from_str(&api).unwrap();
    let copies = report["copies"].as_array().unwrap();
    assert_eq!(copies.len(), 3, "{api}");
    let rules: Vec<&str> = copies
        .iter()
        .map(|c| c["rule"].as_str().unwrap_or("first copy"))
        .collect();
    assert_eq!(
        rules.iter().filter(|r| **r == "first copy").count(),
        1,
        "{api}"
    );
    assert!(rules.contains(&"same canonical url"), "{rules:?}");
    assert!(
        rules.iter().any(|r| r.starts_with("near-duplicate text")),
        "{rules:?}"
    );
    running.stop().await;

    // The story's id is the same after a restart and a re-poll.
    let running = start_daemon(&config_path).await;
    let (_, _, again) = http_get(&format!("{}/feed.atom", running.base)).await;
    running.stop().await;
    assert!(again.contains(&format!("<id>{story_id}</id>")), "{again}");
    assert_eq!(entry_count(&again), 4);

    let arg = config_path.to_str().unwrap().to_string();
    let out =
        tokio::task::spawn_blocking(move || feedmerge(&["explain", "--config", &arg, &story_id]))
            .await
            .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("(3 copies)"), "{text}");
    assert!(
        text.contains("joined:    same canonical url, matching"),
        "{text}"
    );
    assert!(text.contains("joined:    near-duplicate text ("), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_prunes_and_pruned_entries_stay_out() {
    let (feeds, _server_stop) = start_feed_server(Server::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path(), &feeds, &[GOOD_SOURCES[2]]);
    let text = std::fs::read_to_string(&config_path).unwrap();
    let text = text.replace(
        "[poll]\n",
        "[retention]\nmax_per_source = 1\nevery = \"1s\"\n[poll]\n",
    );
    std::fs::write(&config_path, text).unwrap();
    let running = start_daemon(&config_path).await;
    let mut count = usize::MAX;
    for _ in 0..100 {
        let (_, _, xml) = http_get(&format!("{}/feed.atom", running.base)).await;
        count = entry_count(&xml);
        if count == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.stop().await;
    assert_eq!(
        count, 1,
        "the daemon never pruned down to one entry per source"
    );

    // The source still lists all three; the pruned two stay out.
    let out = tokio::task::spawn_blocking(move || {
        let arg = config_path.to_str().unwrap().to_string();
        feedmerge(&["fetch", "--config", &arg])
    })
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "eng-blog: 0 new, 0 updated, 1 unchanged\n1 source: 0 new, 0 updated, 0 failed\n"
    );
}

// ---- the command line ------------------------------------------------------

fn feedmerge(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("FEEDMERGE_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn check_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[storage]\npath = \"s\"\n\n[[sources]]\nname = \"ok\"\nurl = \"https://example.org/feed\"\nschedule = \"*/5 * * * *\"\n",
    )
    .unwrap();
    let out = feedmerge(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!("{}:7:12: sources[0].schedule:", path.display());
    assert!(stderr.starts_with(&expected), "{stderr}");

    std::fs::write(&path, "[storage]\npath = \"s\"\nsurprise = 1\n").unwrap();
    let out = feedmerge(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!("{}:3:1: unknown field `surprise`", path.display())),
        "{stderr}"
    );

    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.toml");
    let out = feedmerge(&["check", "--config", demo]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_works_the_same_with_and_without_a_running_daemon() {
    let (feeds, _server_stop) = start_feed_server(Server::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let sources = [GOOD_SOURCES[0], GOOD_SOURCES[2], BAD_SOURCES[2]];
    let config_path = write_config(dir.path(), &feeds, &sources);
    let config_arg = config_path.to_str().unwrap().to_string();

    // Without FEEDMERGE_LOG, as a user runs it.
    let out = tokio::task::spawn_blocking({
        let config_arg = config_arg.clone();
        move || {
            Command::new(BIN)
                .args(["fetch", "--config", &config_arg])
                .env_remove("FEEDMERGE_LOG")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "a failing source is not a failed run"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines: Vec<&str> = stdout.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "3 sources: 5 new, 0 updated, 1 failed",
            "centcom-ar: 2 new, 0 updated, 0 unchanged",
            "eng-blog: 3 new, 0 updated, 0 unchanged",
            "server-error: error: http 500",
        ]
    );
    assert_eq!(
        stdout.lines().last(),
        Some("3 sources: 5 new, 0 updated, 1 failed"),
        "the summary closes the output"
    );
    // Logs stay at warn: the failing source, not a line per source.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("INFO"), "{stderr}");
    assert!(
        stderr.contains("WARN") && stderr.contains("http 500"),
        "{stderr}"
    );

    let out = tokio::task::spawn_blocking({
        let config_arg = config_arg.clone();
        move || feedmerge(&["fetch", "--config", &config_arg, "--source", "eng-blog"])
    })
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "eng-blog: 0 new, 0 updated, 3 unchanged\n1 source: 0 new, 0 updated, 0 failed\n"
    );

    let out = feedmerge(&["export", "--config", &config_arg]);
    assert_eq!(out.status.code(), Some(0));
    let xml = String::from_utf8(out.stdout).unwrap();
    assert_valid_atom(&xml);
    assert_eq!(entry_count(&xml), 5);
    let out = feedmerge(&["export", "--config", &config_arg, "--feed", "security"]);
    assert_eq!(entry_count(&String::from_utf8(out.stdout).unwrap()), 2);

    // While a daemon holds the store, the commands work the same: they ask
    // it over its control socket, which only its user can open.
    let running = start_daemon(&config_path).await;
    let socket = dir.path().join("store").join("control.sock");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    let cli = |args: &'static [&'static str]| {
        let config_arg = config_arg.clone();
        tokio::task::spawn_blocking(move || {
            let mut all = args.to_vec();
            all.extend(["--config", config_arg.as_str()]);
            feedmerge(&all)
        })
    };
    let out = cli(&["export"]).await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let xml = String::from_utf8(out.stdout).unwrap();
    assert_valid_atom(&xml);
    assert_eq!(entry_count(&xml), 5);
    let out = cli(&["export", "--feed", "security"]).await.unwrap();
    assert_eq!(entry_count(&String::from_utf8(out.stdout).unwrap()), 2);
    let out = cli(&["export", "--feed", "nonesuch"]).await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such feed"));
    // The daemon polls the source now and reports it.
    let out = cli(&["fetch", "--source", "eng-blog"]).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "eng-blog: 0 new, 0 updated, 3 unchanged\n1 source: 0 new, 0 updated, 0 failed\n"
    );
    let out = cli(&["sources", "--json"]).await.unwrap();
    let statuses: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(statuses.len(), 3);
    let out = cli(&["reload"]).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "reloaded: 3 sources: 0 added, 0 removed, 0 changed\n"
    );
    running.stop().await;
    // With no daemon, there is nothing to reload.
    let out = cli(&["reload"]).await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no daemon is running"));
}

#[test]
fn sigterm_stops_the_daemon_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let samples = concat!(env!("CARGO_MANIFEST_DIR"), "/config/samples");
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let config_path = dir.path().join("feedmerge.toml");
    std::fs::write(
        &config_path,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[storage]\npath = \"store\"\n\
             [[sources]]\nname = \"ar\"\nurl = \"file://{samples}/centcom-ar.xml\"\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config", config_path.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it serves the sample's entries.
    let url = format!("http://127.0.0.1:{port}/feed.atom");
    let mut served = String::new();
    for _ in 0..300 {
        if let Ok(body) = plain_http::get(&url) {
            if entry_count(&body) == 3 {
                served = body;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        entry_count(&served),
        3,
        "the daemon never served the sample"
    );
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "exit after SIGTERM");
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("stopped"), "{stderr}");

    // The store was flushed and released: export reads it.
    let out = feedmerge(&["export", "--config", config_path.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(entry_count(&String::from_utf8(out.stdout).unwrap()), 3);
}

mod plain_http {
    //! A tiny blocking GET over std's TcpStream for the sync test above
    //! (reqwest's blocking client is not enabled).

    pub fn get(url: &str) -> std::io::Result<String> {
        use std::io::{Read, Write};
        let rest = url.strip_prefix("http://").unwrap_or(url);
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let mut stream = std::net::TcpStream::connect(host)?;
        write!(stream, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_closes_slow_huge_and_unwanted_requests() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("feedmerge.toml");
    std::fs::write(
        &config_path,
        "[server]\nlisten = \"127.0.0.1:0\"\nheader_read_timeout = \"1s\"\n[storage]\npath = \"store\"\n",
    )
    .unwrap();
    let running = start_daemon(&config_path).await;
    let addr = running.base.trim_start_matches("http://").to_string();

    // Slowloris: a request line and never the end of the headers.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /feed.atom HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(
        closed.is_ok(),
        "a request whose headers never end stays open"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    // A 70 KB header: an error or a close, not a 200.
    let mut huge = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(70_000)
    );
    let _ = huge.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), huge.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A long URI: 414.
    let long = format!("{}/feed.atom?{}", running.base, "q".repeat(9000));
    let (status, _, _) = http_get(&long).await;
    assert_eq!(status, StatusCode::URI_TOO_LONG);

    // GET and HEAD only, on known routes and unknown paths alike.
    let client = ::reqwest::Client::new();
    for path in ["/feed.atom", "/api/sources", "/no-such-path"] {
        let response = client
            .post(format!("{}{path}", running.base))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 405, "POST {path}");
    }
    let head = client
        .head(format!("{}/healthz", running.base))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status().as_u16(), 200);
    let (status, _, _) = http_get(&format!("{}/healthz", running.base)).await;
    assert_eq!(status, StatusCode::OK);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_holding_every_slot_make_room_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("feedmerge.toml");
    std::fs::write(
        &config_path,
        "[server]\nlisten = \"127.0.0.1:0\"\nheader_read_timeout = \"30s\"\nmax_connections = 10\n\
         [storage]\npath = \"store\"\n",
    )
    .unwrap();
    let running = start_daemon(&config_path).await;
    let addr = running.base.trim_start_matches("http://").to_string();
    // Ten connections that never send a request hold every slot.
    let mut idle = Vec::new();
    for _ in 0..10 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A new client waits for the last slot's short timeout, not for the
    // 30 s one.
    let client = ::reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let answer = client
        .get(format!("{}/healthz", running.base))
        .send()
        .await
        .expect("a new client waited out the idle connections");
    assert_eq!(answer.status().as_u16(), 200);
    drop(idle);
    running.stop().await;
}
