//! Polling manners and hostile servers (issue 3): conditional GET,
//! compression, headers, redirects, 410, 429, backoff, TTL, per-host limits,
//! and a server that tries every trick while other sources keep updating.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::Utc;
use feedmerge::app;
use feedmerge::config;
use feedmerge::store::Store;
use tokio_util::sync::CancellationToken;

use crate::{assert_valid_atom, entry_titles, http_get, start_daemon};

/// The scripted server's memory.
#[derive(Default)]
struct Script {
    /// 1: every path serves a valid feed; 2: hostile paths turn hostile.
    phase: AtomicU8,
    /// `/flaky` answers 500 until healed.
    healed: AtomicBool,
    hits: Mutex<HashMap<String, usize>>,
    headers: Mutex<HashMap<String, HeaderMap>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// The port of the second listener (another origin).
    other_port: AtomicUsize,
}

impl Script {
    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
    fn headers(&self, path: &str) -> HeaderMap {
        self.headers
            .lock()
            .unwrap()
            .get(path)
            .cloned()
            .unwrap_or_default()
    }
}

/// An RSS document with one item per `(guid, title)`.
fn rss(channel: &str, items: &[(&str, &str)], extra: &str) -> String {
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<rss version=\"2.0\"><channel><title>{channel}</title><link>https://example.org/{channel}/</link>{extra}\n"
    );
    for (guid, title) in items {
        out.push_str(&format!(
            "<item><guid>{guid}</guid><title>{title}</title><link>https://example.org/{guid}</link><pubDate>Thu, 27 Mar 2025 10:00:00 GMT</pubDate><description>&lt;p&gt;{title}&lt;/p&gt;</description></item>\n"
        ));
    }
    out.push_str("</channel></rss>\n");
    out
}

fn feed_response(body: impl Into<Body>) -> Response {
    ([(header::CONTENT_TYPE, "application/rss+xml")], body.into()).into_response()
}

/// A gzip stream of 512 MiB of zeros (about half a megabyte on the wire).
fn gzip_bomb() -> &'static [u8] {
    static BOMB: OnceLock<Vec<u8>> = OnceLock::new();
    BOMB.get_or_init(|| {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..512 {
            encoder.write_all(&zeros).unwrap();
        }
        encoder.finish().unwrap()
    })
}

const BILLION_LAUGHS: &str = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<rss version="2.0"><channel><title>&lol9;</title>
<item><guid>laughs-2</guid><title>&lol9;</title><description>&lol9;</description></item>
</channel></rss>
"#;

/// The paths that turn hostile in phase 2.
const HOSTILE: &[&str] = &[
    "drip",
    "endless",
    "bomb",
    "error-500",
    "rate-limited",
    "gone",
    "moved",
    "loop-a",
    "html",
    "laughs",
    "random",
    "truncated",
];

async fn scripted(State(script): State<Arc<Script>>, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().trim_start_matches('/').to_string();
    *script.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    script
        .headers
        .lock()
        .unwrap()
        .insert(path.clone(), headers.clone());
    let name = path.as_str();

    if script.phase.load(Ordering::SeqCst) < 2 && HOSTILE.contains(&name) {
        return feed_response(rss(
            name,
            &[(&format!("{name}-1"), &format!("phase one {name}"))],
            "",
        ));
    }
    match name {
        "steady" => {
            let phase = script.phase.load(Ordering::SeqCst);
            let mut items = vec![("steady-1", "steady one")];
            if phase >= 2 {
                items.push(("steady-2", "steady two"));
            }
            feed_response(rss("steady", &items, ""))
        }
        "drip" => {
            let stream = futures_util::stream::unfold((), |()| async {
                tokio::time::sleep(Duration::from_secs(2)).await;
                Some((Ok::<_, std::io::Error>(vec![b' ']), ()))
            });
            feed_response(Body::from_stream(stream))
        }
        "endless" => {
            let stream = futures_util::stream::repeat_with(|| {
                Ok::<_, std::io::Error>(b"<item><title>more</title></item>".repeat(2048))
            });
            feed_response(Body::from_stream(stream))
        }
        "bomb" => (
            [
                (header::CONTENT_TYPE, "application/rss+xml"),
                (header::CONTENT_ENCODING, "gzip"),
            ],
            gzip_bomb(),
        )
            .into_response(),
        "error-500" => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        "rate-limited" => (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "3600")], "slow down")
            .into_response(),
        "gone" => (StatusCode::GONE, "gone").into_response(),
        "moved" => (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, "/moved-target")]).into_response(),
        "moved-target" => feed_response(rss(
            "moved",
            &[("moved-1", "phase one moved"), ("moved-2", "moved two")],
            "",
        )),
        "loop-a" => (StatusCode::FOUND, [(header::LOCATION, "/loop-b")]).into_response(),
        "loop-b" => (StatusCode::FOUND, [(header::LOCATION, "/loop-a")]).into_response(),
        "html" => (
            [(header::CONTENT_TYPE, "text/html")],
            "<!doctype html><html><head><title>Not a feed</title></head><body><p>hello</p></body></html>",
        )
            .into_response(),
        "laughs" => feed_response(BILLION_LAUGHS),
        "random" => {
            let mut x: u32 = 0x2545_f491;
            let bytes: Vec<u8> = (0..4096)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    (x >> 24) as u8
                })
                .collect();
            feed_response(bytes)
        }
        "truncated" => {
            let full = rss("truncated", &[("truncated-2", "cut"), ("truncated-3", "off")], "");
            feed_response(full[..full.len() / 2].to_string())
        }
        "etag" => {
            let etag = "\"v1\"";
            let last_modified = "Wed, 26 Mar 2025 10:00:00 GMT";
            if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag) {
                return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
            }
            (
                [
                    (header::CONTENT_TYPE, "application/rss+xml"),
                    (header::ETAG, etag),
                    (header::LAST_MODIFIED, last_modified),
                    (header::CACHE_CONTROL, "public, max-age=600"),
                ],
                rss("etag", &[("etag-1", "etag one")], ""),
            )
                .into_response()
        }
        "gzip" | "br" | "zstd" | "deflate" => {
            let body = rss(name, &[(&format!("{name}-1"), &format!("compressed {name}"))], "");
            let encoded = match name {
                "gzip" => {
                    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                    e.write_all(body.as_bytes()).unwrap();
                    e.finish().unwrap()
                }
                "deflate" => {
                    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
                    e.write_all(body.as_bytes()).unwrap();
                    e.finish().unwrap()
                }
                "br" => {
                    let mut out = Vec::new();
                    brotli::BrotliCompress(&mut body.as_bytes(), &mut out, &Default::default()).unwrap();
                    out
                }
                _ => zstd::encode_all(body.as_bytes(), 3).unwrap(),
            };
            (
                [
                    (header::CONTENT_TYPE, "application/rss+xml"),
                    (header::CONTENT_ENCODING, name),
                ],
                encoded,
            )
                .into_response()
        }
        "private" => {
            let port = script.other_port.load(Ordering::SeqCst);
            let location = format!("http://127.0.0.1:{port}/public");
            (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
        }
        "public" => feed_response(rss("public", &[("public-1", "public one")], "")),
        "with-password" => feed_response(
            "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>pw</title><link>/home</link>\
             <item><guid>pw-1</guid><title>password one</title><link>/articles/1</link>\
             <description>&lt;a href=\"/articles/2\"&gt;two&lt;/a&gt;</description></item></channel></rss>",
        ),
        "secret" => {
            let port = script.other_port.load(Ordering::SeqCst);
            let location = format!("http://127.0.0.1:{port}/secret-elsewhere");
            (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, location)]).into_response()
        }
        "secret-elsewhere" => feed_response(rss("secret", &[("secret-1", "secret one")], "")),
        "ttl" => feed_response(rss("ttl", &[("ttl-1", "ttl one")], "<ttl>60</ttl>")),
        "flaky" => {
            if script.healed.load(Ordering::SeqCst) {
                feed_response(rss("flaky", &[("flaky-1", "flaky one")], ""))
            } else {
                (StatusCode::INTERNAL_SERVER_ERROR, "flaky").into_response()
            }
        }
        slow if slow.starts_with("slow-") => {
            let now = script.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            script.max_in_flight.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
            script.in_flight.fetch_sub(1, Ordering::SeqCst);
            feed_response(rss(slow, &[(slow, slow)], ""))
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Starts the scripted server on two ports (two origins); returns the
/// first one's base URL.
async fn start_scripted(script: Arc<Script>) -> (String, CancellationToken) {
    let stop = CancellationToken::new();
    let mut bases = Vec::new();
    for _ in 0..2 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        bases.push(addr);
        let router = Router::new()
            .fallback(scripted)
            .with_state(Arc::clone(&script));
        let token = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
                .unwrap();
        });
    }
    script
        .other_port
        .store(bases[1].port().into(), Ordering::SeqCst);
    script.phase.store(1, Ordering::SeqCst);
    (format!("http://{}", bases[0]), stop)
}

/// A config polling `paths` on `base`, with `extra` TOML spliced into the
/// first source (e.g. headers).
fn scripted_config(
    dir: &std::path::Path,
    base: &str,
    paths: &[&str],
    poll: &str,
) -> std::path::PathBuf {
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = \"store\"\n[feed]\nmax_entries = 500\n\
         [poll]\njitter = \"0s\"\n{poll}\n[defaults]\nschedule = \"0 0 0 1 1 *\"\ntimeout = \"3s\"\nmax_body_size = \"1MiB\"\n"
    );
    for path in paths {
        text.push_str(&format!(
            "[[sources]]\nname = \"{path}\"\nurl = \"{base}/{path}\"\n"
        ));
    }
    let file = dir.join("feedmerge.toml");
    std::fs::write(&file, text).unwrap();
    file
}

async fn fetch(config_path: &std::path::Path) -> HashMap<String, String> {
    let config = config::load(config_path).unwrap();
    app::fetch_once(config, None)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.source.clone(), r.to_string()))
        .collect()
}

fn store_of(config_path: &std::path::Path) -> Store {
    let config = config::load(config_path).unwrap();
    Store::open(
        &config.storage.path,
        feedmerge::store::StoreOptions::with_cache(1 << 20),
    )
    .unwrap()
}

/// Peak resident memory of this process, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_servers_leave_stored_entries_and_other_sources_alone() {
    let script = Arc::new(Script::default());
    let (base, _stop) = start_scripted(Arc::clone(&script)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut paths = HOSTILE.to_vec();
    paths.push("steady");
    let config_path = scripted_config(dir.path(), &base, &paths, "");
    // Built before the polls so its memory is not blamed on them.
    gzip_bomb();

    // Phase 1: every source is well, every entry is stored.
    let reports = fetch(&config_path).await;
    for path in &paths {
        assert!(
            reports[*path].ends_with("1 new, 0 updated, 0 unchanged"),
            "{}",
            reports[*path]
        );
    }

    // Phase 2: the hostile paths attack; each gets a clear error.
    script.phase.store(2, Ordering::SeqCst);
    let before = Utc::now();
    let reports = fetch(&config_path).await;
    let expect = |name: &str, text: &str| {
        assert_eq!(reports[name], format!("{name}: {text}"), "{reports:#?}");
    };
    expect("drip", "error: timed out after 3 s");
    expect("endless", "error: body larger than 1048576 bytes");
    expect("bomb", "error: body larger than 1048576 bytes");
    expect("error-500", "error: http 500");
    expect("rate-limited", "error: http 429, retry after 3600 s");
    expect("gone", "error: http 410 gone");
    expect("moved", "1 new, 0 updated, 1 unchanged");
    expect("loop-a", &format!("error: redirect loop at {base}/loop-a"));
    assert!(
        reports["html"].starts_with("html: error: not a valid feed"),
        "{}",
        reports["html"]
    );
    assert!(
        reports["random"].starts_with("random: error: not a valid feed"),
        "{}",
        reports["random"]
    );
    assert!(
        reports["truncated"].starts_with("truncated: error: not a valid feed"),
        "{}",
        reports["truncated"]
    );
    // Entities are not expanded: the laughs stay a few bytes, or the
    // document is refused; either way nothing explodes.
    let laughs = &reports["laughs"];
    assert!(
        laughs.starts_with("laughs: error: not a valid feed")
            || laughs.starts_with("laughs: 1 new"),
        "{laughs}"
    );
    expect("steady", "1 new, 0 updated, 1 unchanged");
    // The body cap, not the server, decided how much was read.
    let peak = peak_rss();
    assert!(peak < 400 << 20, "peak RSS {} MiB", peak >> 20);

    {
        let store = store_of(&config_path);
        let state = |name: &str| store.source_state(name).unwrap().unwrap();
        let rate = state("rate-limited");
        let wait = rate.next_due.unwrap() - before;
        assert!(
            (3590..=3700).contains(&wait.num_seconds()),
            "next due in {wait}"
        );
        assert!(state("gone")
            .disabled
            .as_deref()
            .unwrap()
            .starts_with("gone (http 410)"));
        assert_eq!(
            state("moved").moved_to,
            Some(format!("{base}/moved-target"))
        );
        let flaky_like = state("error-500");
        assert_eq!(flaky_like.consecutive_failures, 1);
        assert_eq!(flaky_like.http_status, Some(500));
        // Every phase-one entry is still there, plus the new ones.
        let config = config::load(&config_path).unwrap();
        let titles: Vec<String> = config
            .sources
            .iter()
            .flat_map(|s| store.source_entries(&s.name, 500).unwrap())
            .map(|e| e.title)
            .collect();
        for path in HOSTILE {
            assert!(
                titles.contains(&format!("phase one {path}")),
                "{path} lost its entry: {titles:?}"
            );
        }
        assert!(titles.contains(&"steady two".to_string()));
        for entry in store.source_entries("laughs", 500).unwrap() {
            let size = entry.title.len() + entry.summary.as_deref().unwrap_or("").len();
            assert!(size < 1000, "entities expanded: {entry:?}");
        }
        assert!(titles.contains(&"moved two".to_string()));
    }

    // Phase 3: a disabled source is not fetched, a moved one is fetched at
    // its new address.
    let gone_hits = script.hits("gone");
    let moved_hits = script.hits("moved");
    let target_hits = script.hits("moved-target");
    let reports = fetch(&config_path).await;
    assert!(
        reports["gone"].starts_with("gone: skipped: disabled: gone (http 410)"),
        "{}",
        reports["gone"]
    );
    assert_eq!(script.hits("gone"), gone_hits);
    assert_eq!(script.hits("moved"), moved_hits);
    assert_eq!(script.hits("moved-target"), target_hits + 1);

    // The daemon honours Retry-After: the rate-limited source is not asked
    // again, and the merged feed still holds everything.
    let rate_hits = script.hits("rate-limited");
    let running = start_daemon(&config_path).await;
    let (_, _, xml) = http_get(&format!("{}/feed.atom", running.base)).await;
    let (_, _, api) = http_get(&format!("{}/api/sources", running.base)).await;
    running.stop().await;
    assert_eq!(script.hits("rate-limited"), rate_hits);
    assert_valid_atom(&xml);
    let titles = entry_titles(&xml);
    for path in HOSTILE {
        assert!(
            titles.contains(&format!("phase one {path}")),
            "{path}: {titles:?}"
        );
    }
    let api: serde_json::Value = serde_json::from_str(&api).unwrap();
    let gone = api
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "gone")
        .unwrap();
    assert!(gone["disabled"]
        .as_str()
        .unwrap()
        .starts_with("gone (http 410)"));
    let moved = api
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "moved")
        .unwrap();
    assert_eq!(moved["current_url"], format!("{base}/moved-target"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_get_compression_and_headers() {
    let script = Arc::new(Script::default());
    let (base, _stop) = start_scripted(Arc::clone(&script)).await;
    let dir = tempfile::tempdir().unwrap();
    let paths = ["etag", "gzip", "br", "zstd", "deflate", "private"];
    let config_path = scripted_config(dir.path(), &base, &paths, "");
    // Headers for the private source: one literal, one from the environment.
    let text = std::fs::read_to_string(&config_path).unwrap().replace(
        &format!("url = \"{base}/private\"\n"),
        &format!(
            "url = \"{base}/private\"\nuser_agent = \"private-agent/1.0\"\n\
             headers = {{ X-Api-Key = \"k-123\" }}\nheaders_from_env = {{ Authorization = \"FEEDMERGE_MANNERS_TOKEN\" }}\n"
        ),
    );
    std::fs::write(&config_path, text).unwrap();
    std::env::set_var("FEEDMERGE_MANNERS_TOKEN", "Bearer s3cret");

    let reports = fetch(&config_path).await;
    for name in paths {
        assert!(
            reports[name].ends_with("1 new, 0 updated, 0 unchanged"),
            "{}",
            reports[name]
        );
    }
    // Compression: requested and decoded.
    let accept = script.headers("gzip");
    let accept = accept
        .get(header::ACCEPT_ENCODING)
        .unwrap()
        .to_str()
        .unwrap();
    for coding in ["gzip", "br", "zstd", "deflate"] {
        assert!(accept.contains(coding), "{accept}");
    }
    // The default User-Agent names feedmerge; the source's own overrides it.
    let ua = script.headers("etag");
    assert!(ua[header::USER_AGENT]
        .to_str()
        .unwrap()
        .starts_with("feedmerge/"));
    let private = script.headers("private");
    assert_eq!(private[header::USER_AGENT], "private-agent/1.0");
    assert_eq!(private["x-api-key"], "k-123");
    assert_eq!(private[header::AUTHORIZATION], "Bearer s3cret");
    // Followed to another origin, the secrets stay behind.
    let public = script.headers("public");
    assert_eq!(public[header::USER_AGENT], "private-agent/1.0");
    assert!(public.get(header::AUTHORIZATION).is_none());
    assert!(public.get("x-api-key").is_none());

    // Conditional GET: validators sent back, 304 costs nothing.
    let reports = fetch(&config_path).await;
    assert_eq!(reports["etag"], "etag: not modified");
    let sent = script.headers("etag");
    assert_eq!(sent[header::IF_NONE_MATCH], "\"v1\"");
    assert_eq!(
        sent[header::IF_MODIFIED_SINCE],
        "Wed, 26 Mar 2025 10:00:00 GMT"
    );
    let store = store_of(&config_path);
    let state = store.source_state("etag").unwrap().unwrap();
    assert_eq!(state.http_status, Some(304));
    assert_eq!(state.etag.as_deref(), Some("\"v1\""));
    assert_eq!(state.entries_seen, 1);
    // Cache-Control: max-age is a floor on the next poll.
    assert_eq!(state.ttl_secs, Some(600));
    let wait = (state.next_due.unwrap() - Utc::now()).num_seconds();
    assert!((500..=600).contains(&wait), "max-age floor {wait} s");
    // A 302 is followed but does not move the source.
    let private = store.source_state("private").unwrap().unwrap();
    assert_eq!(private.moved_to, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_ttl_and_per_host_limit() {
    let script = Arc::new(Script::default());
    let (base, _stop) = start_scripted(Arc::clone(&script)).await;
    let dir = tempfile::tempdir().unwrap();
    let slow: Vec<String> = (0..8).map(|i| format!("slow-{i}")).collect();
    let mut paths: Vec<&str> = slow.iter().map(String::as_str).collect();
    paths.extend(["flaky", "ttl"]);
    let config_path = scripted_config(
        dir.path(),
        &base,
        &paths,
        "per_host = 2\nmax_backoff = \"1h\"",
    );

    let before = Utc::now();
    let reports = fetch(&config_path).await;
    // Eight slow sources on one host, never more than two at once.
    let max = script.max_in_flight.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&max),
        "{max} requests in flight to one host"
    );
    for name in &slow {
        assert!(reports[name.as_str()].ends_with("1 new, 0 updated, 0 unchanged"));
    }
    assert_eq!(reports["flaky"], "flaky: error: http 500");
    let second = fetch(&config_path).await;
    assert_eq!(second["flaky"], "flaky: error: http 500");
    {
        let store = store_of(&config_path);
        let flaky = store.source_state("flaky").unwrap().unwrap();
        assert_eq!(flaky.consecutive_failures, 2);
        // Second failure: two minutes, ±20 %.
        let wait = (flaky.next_due.unwrap() - before).num_seconds();
        assert!((90..=150).contains(&wait), "backoff {wait} s");
        // <ttl>60</ttl>: not polled again for an hour.
        let ttl = store.source_state("ttl").unwrap().unwrap();
        assert_eq!(ttl.ttl_secs, Some(3600));
        let wait = (ttl.next_due.unwrap() - before).num_seconds();
        assert!((3590..=3700).contains(&wait), "ttl floor {wait} s");
    }
    // A success resets the backoff.
    script.healed.store(true, Ordering::SeqCst);
    let third = fetch(&config_path).await;
    assert_eq!(third["flaky"], "flaky: 1 new, 0 updated, 0 unchanged");
    let store = store_of(&config_path);
    let flaky = store.source_state("flaky").unwrap().unwrap();
    assert_eq!((flaky.consecutive_failures, flaky.next_due), (0, None));
    let status = feedmerge::status::statuses(&config::load(&config_path).unwrap(), &store).unwrap();
    assert_eq!(status.len(), paths.len());
    drop(store);

    // `feedmerge sources` reads the store, or the daemon's API when the
    // daemon holds it; both show the same table.
    let out = crate::feedmerge(&["sources", "--config", config_path.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let offline = String::from_utf8(out.stdout).unwrap();
    assert!(offline.starts_with("NAME "), "{offline}");
    assert!(offline.contains("\nttl "), "{offline}");
    assert_eq!(offline.lines().count(), paths.len() + 1);

    // The command finds the daemon through server.listen: give it a port.
    crate::give_fixed_port(&config_path);
    let running = start_daemon(&config_path).await;
    let arg = config_path.to_str().unwrap().to_string();
    let out = tokio::task::spawn_blocking(move || {
        crate::feedmerge(&["sources", "--config", &arg, "--json"])
    })
    .await
    .unwrap();
    running.stop().await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let online: Vec<feedmerge::status::SourceStatus> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(online.len(), paths.len());
    let ttl = online.iter().find(|s| s.name == "ttl").unwrap();
    assert!(ttl.next_due.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_source_keeps_its_secrets() {
    let script = Arc::new(Script::default());
    let (base, _stop) = start_scripted(Arc::clone(&script)).await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = scripted_config(dir.path(), &base, &["secret"], "");
    let text = std::fs::read_to_string(&config_path).unwrap().replace(
        &format!("url = \"{base}/secret\"\n"),
        &format!("url = \"{base}/secret\"\nheaders = {{ Authorization = \"Bearer secret\" }}\n"),
    );
    std::fs::write(&config_path, text).unwrap();

    // The first poll: the configured origin gets the header, the 301's
    // target (another port, so another origin) does not.
    let reports = fetch(&config_path).await;
    assert!(
        reports["secret"].ends_with("1 new, 0 updated, 0 unchanged"),
        "{}",
        reports["secret"]
    );
    assert_eq!(
        script.headers("secret")[header::AUTHORIZATION],
        "Bearer secret"
    );
    assert!(script
        .headers("secret-elsewhere")
        .get(header::AUTHORIZATION)
        .is_none());
    // Later polls go straight to the stored move, and still without it.
    for poll in 2..=4 {
        let reports = fetch(&config_path).await;
        assert!(reports["secret"].starts_with("secret: "), "{reports:?}");
        assert_eq!(script.hits("secret-elsewhere"), poll);
        let seen = script.headers("secret-elsewhere");
        assert!(
            seen.get(header::AUTHORIZATION).is_none(),
            "poll {poll} sent the secret to the moved origin"
        );
    }
    assert_eq!(script.hits("secret"), 1);
}

fn assert_valid_atom_unless_api(path: &str, body: &str) {
    if path.ends_with(".atom") {
        assert_valid_atom(body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_documents_and_the_api_carry_no_passwords_or_paths() {
    let script = Arc::new(Script::default());
    let (base, _stop) = start_scripted(Arc::clone(&script)).await;
    let dir = tempfile::tempdir().unwrap();
    let with_password = base.replace("http://", "http://user:hunter2@");
    let config_path = scripted_config(dir.path(), &with_password, &["with-password"], "");
    let feeds = dir.path().join("private-feeds");
    std::fs::create_dir(&feeds).unwrap();
    std::fs::write(
        feeds.join("local.xml"),
        rss("local", &[("local-1", "local one")], ""),
    )
    .unwrap();
    let mut text = std::fs::read_to_string(&config_path).unwrap();
    text.push_str("[[sources]]\nname = \"local\"\nurl = \"file:private-feeds/local.xml\"\n");
    // A source whose URL stays out of what is published.
    text.push_str(&format!(
        "[[sources]]\nname = \"hidden\"\nurl = \"{base}/public\"\npublish_url = false\n"
    ));
    std::fs::write(&config_path, text).unwrap();

    let running = start_daemon(&config_path).await;
    let mut documents = Vec::new();
    for path in [
        "feed.atom",
        "sources/with-password.atom",
        "sources/local.atom",
        "sources/hidden.atom",
        "api/sources",
    ] {
        let (status, _, body) = http_get(&format!("{}/{path}", running.base)).await;
        assert_eq!(status, 200, "{path}");
        documents.push((path, body));
    }
    running.stop().await;
    // The source was polled with its password (basic auth).
    assert!(script
        .headers("with-password")
        .get(header::AUTHORIZATION)
        .is_some());
    assert!(
        documents[0].1.contains("password one"),
        "{}",
        documents[0].1
    );
    assert!(documents[0].1.contains("local one"), "{}", documents[0].1);
    let folder = feeds.to_str().unwrap();
    for (path, body) in &documents {
        assert!(
            !body.contains("hunter2"),
            "{path} shows the password:\n{body}"
        );
        assert!(
            !body.contains(folder),
            "{path} shows the file's path:\n{body}"
        );
        assert_valid_atom_unless_api(path, body);
    }
    // The hidden source's entries are published, its URL is not (the API,
    // for the operator, still shows it).
    let hidden = format!("{base}/public");
    assert!(documents[0].1.contains("public one"));
    for (path, body) in &documents[..4] {
        assert!(
            !body.contains(&hidden),
            "{path} shows a hidden URL:\n{body}"
        );
    }
    assert!(documents[4].1.contains(&hidden));
    // The password's source keeps a self link, without the password.
    assert!(documents[1]
        .1
        .contains(&format!("href=\"{base}/with-password\" rel=\"self\"")));
}
