//! Fidelity, end to end: feeds whose entries feed-rs refused or read wrong
//! (an Atom content of type `application/xhtml+xml`, base64 content, RSS
//! `<body>` and `<fullitem>`, JSON Feed 1.1 item languages and authors,
//! Scripting News guids that differ only in their fragment) are served on
//! loopback, the real daemon polls them, and each entry is checked in the
//! merged Atom document (which jing validates) and in the store.
//!
//! Then 81 feeds that no one here wrote go through the same daemon:
//! podcastparser's 70 test feeds and rss2email's 11 feeds captured from
//! real sites (BBC Chinese, Disqus, Gmane, Node.js, Tails...), both from
//! their sdists, unpacked by `.ci/run` under `target/conformance/`. Every
//! entry the parser finds arrives, and every document published stays
//! valid.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use feedmerge::model::Entry;
use feedmerge::store::{Store, StoreOptions};
use tokio_util::sync::CancellationToken;

use crate::{assert_valid_atom, http_get, start_daemon};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fidelity2");

/// The podcastparser sdist, as `.ci/run` unpacks it.
const PODCASTPARSER: &str = "podcastparser-0.6.11";
/// The rss2email sdist, as `.ci/run` unpacks it: real sites' feeds
/// (BBC Chinese, Disqus, Gmane, Node.js, Tails...) captured for its bug
/// reports.
const RSS2EMAIL: &str = "rss2email-3.14";

/// What the server hands out: path → (content type, body). Tests change it
/// between polls.
type Served = Arc<Mutex<HashMap<String, (String, Vec<u8>)>>>;

async fn serve(State(served): State<Served>, UrlPath(name): UrlPath<String>) -> Response {
    let found = served.lock().unwrap().get(&name).cloned();
    match found {
        Some((content_type, body)) => {
            ([(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn start_server(served: Served) -> (String, CancellationToken) {
    let router = Router::new()
        .route("/{name}", get(serve))
        .with_state(served);
    super::serve_router(router).await
}

/// A config with one source per served path (named after it, dots made
/// dashes), every entry kept and published.
fn config(dir: &Path, base: &str, paths: &[String]) -> PathBuf {
    let mut text = String::from(
        r#"
[server]
listen = "127.0.0.1:0"
[storage]
path = "store"
cache_size = "16MiB"
[feed]
title = "Fidelity"
max_entries = 100000
[poll]
jitter = "0s"
max_in_flight = 8
[retention]
max_age = "100years"
[defaults]
schedule = "0 0 0 1 1 *"
timeout = "5s"
"#,
    );
    for path in paths {
        text.push_str(&format!(
            "[[sources]]\nname = \"{}\"\nurl = \"{base}/{path}\"\n",
            source_name(path)
        ));
    }
    let file = dir.join("feedmerge.toml");
    std::fs::write(&file, text).unwrap();
    file
}

fn source_name(path: &str) -> String {
    path.replace(['.', '_'], "-")
}

fn open_store(dir: &Path) -> Store {
    Store::open(&dir.join("store"), StoreOptions::with_cache(1 << 20)).unwrap()
}

/// The stored entry of `source` titled `title`.
fn stored<'a>(entries: &'a [Entry], title: &str) -> &'a Entry {
    entries
        .iter()
        .find(|e| e.title == title)
        .unwrap_or_else(|| panic!("no stored entry {title:?} in {entries:#?}"))
}

/// The published `<entry>` element whose title is `title`.
fn published<'a>(xml: &'a str, title: &str) -> &'a str {
    let at = xml
        .find(&format!(">{title}</title>"))
        .unwrap_or_else(|| panic!("no published entry {title:?}:\n{xml}"));
    let start = xml[..at].rfind("<entry").unwrap();
    let end = at + xml[at..].find("</entry>").unwrap();
    &xml[start..end]
}

fn fixture_map(files: &[(&str, &str)]) -> Served {
    Arc::new(Mutex::new(
        files
            .iter()
            .map(|(file, content_type)| {
                let body = std::fs::read(Path::new(FIXTURES).join(file)).unwrap();
                (file.to_string(), (content_type.to_string(), body))
            })
            .collect(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_and_hidden_contents_arrive_as_text() {
    let files = [
        ("xhtml-content.atom", "application/atom+xml"),
        ("base64.atom", "application/atom+xml"),
        ("rss-body.xml", "application/rss+xml"),
        ("items.json", "application/feed+json"),
    ];
    let served = fixture_map(&files);
    let (base, _server) = start_server(served).await;
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<String> = files.iter().map(|(f, _)| f.to_string()).collect();
    let running = start_daemon(&config(dir.path(), &base, &paths)).await;
    let (_, _, xml) = http_get(&format!("{}/feed.atom", running.base)).await;
    let mut sources = Vec::new();
    for path in &paths {
        let (status, _, doc) = http_get(&format!(
            "{}/sources/{}.atom",
            running.base,
            source_name(path)
        ))
        .await;
        assert_eq!(status, StatusCode::OK, "{path}");
        sources.push(doc);
    }
    running.stop().await;
    assert_valid_atom(&xml);
    assert_all_valid_atom(&sources);
    let store = open_store(dir.path());
    let entries = |source: &str| store.source_entries(source, 100).unwrap();

    // An xhtml+xml content no longer costs the feed, nor the entry: its
    // text arrives sanitized; a text/plain title is a title.
    let typed = entries("xhtml-content-atom");
    assert_eq!(typed.len(), 3, "{typed:#?}");
    let harbour = stored(&typed, "Harbour reopens after the storm");
    let content = harbour.content.as_deref().unwrap();
    assert!(content.contains("<b>Thursday</b>"), "{content}");
    assert!(!content.contains("steal"), "{content}");
    let entry = published(&xml, "Harbour reopens after the storm");
    assert!(entry.contains("&lt;b&gt;Thursday&lt;/b&gt;"), "{entry}");
    // Inline base64 of an image is no text; content by reference of a
    // non-text type is an enclosure.
    let tides = stored(&typed, "A chart of the tides");
    assert_eq!(tides.content, None);
    assert!(!xml.contains("iVBORw0KGgo"), "base64 published:\n{xml}");
    let report = stored(&typed, "The full report");
    assert_eq!(
        report.enclosures.first().map(|e| e.url.as_str()),
        Some("https://typed.example.org/report.pdf")
    );
    assert!(published(&xml, "The full report").contains(
        r#"<link href="https://typed.example.org/report.pdf" rel="enclosure" type="application/pdf"/>"#
    ));

    // Base64 (Atom 0.3 mode="base64") is decoded, then sanitized.
    let boats = entries("base64-atom");
    let boats = stored(&boats, "Boats in the bay");
    let content = boats.content.as_deref().unwrap();
    assert!(content.contains("Safe <b>words</b> survive"), "{content}");
    assert!(
        content.contains(r#"<img src="https://old.example.org/img/boat.png">"#),
        "{content}"
    );
    for bad in ["script", "evil", "onerror", "steal"] {
        assert!(!content.contains(bad), "{bad} in {content}");
    }
    assert!(published(&xml, "Boats in the bay").contains("Safe &lt;b&gt;words&lt;/b&gt; survive"));

    // RSS <body> and <fullitem> are the items' content.
    let bodies = entries("rss-body-xml");
    let council = stored(&bodies, "Council meets on the budget");
    let content = council.content.as_deref().unwrap();
    assert!(
        content.contains("<p>The council met <em>on Monday</em> to discuss the budget.</p>"),
        "{content}"
    );
    assert!(!content.contains("iframe"), "{content}");
    let library = stored(&bodies, "Library hours change");
    let content = library.content.as_deref().unwrap();
    assert!(
        content.contains("<strong>an hour earlier</strong>"),
        "{content}"
    );
    assert!(!content.contains("steal"), "{content}");
    assert!(published(&xml, "Library hours change").contains("an hour earlier"));

    // JSON Feed 1.1: item languages, authors (1.1 `authors` and 1.0
    // `author`), summary, tags, modification date, images, external_url.
    let notes = entries("items-json");
    let ferry = stored(&notes, "Short note");
    assert_eq!(ferry.language.as_deref(), Some("en"));
    assert_eq!(ferry.authors, ["Ada Example", "Bo Example"]);
    assert_eq!(ferry.categories, ["ferries", "timetables"]);
    assert_eq!(
        ferry.summary.as_deref(),
        Some("A note about the ferry timetable.")
    );
    assert_eq!(
        ferry.updated.map(|t| t.to_rfc3339()).as_deref(),
        Some("2025-03-27T09:30:00+00:00")
    );
    let images: Vec<&str> = ferry.enclosures.iter().map(|e| e.url.as_str()).collect();
    assert_eq!(
        images,
        [
            "https://notes.example.org/ferry.jpg",
            "https://notes.example.org/ferry-wide.jpg"
        ]
    );
    // `external_url`: kept, and published as a related link.
    assert_eq!(
        ferry.external.as_deref(),
        Some("https://elsewhere.example.com/original")
    );
    let entry = published(&xml, "Short note");
    assert!(
        entry.contains(r#"<link href="https://elsewhere.example.com/original" rel="related"/>"#),
        "{entry}"
    );
    assert!(entry.starts_with(r#"<entry xml:lang="en">"#), "{entry}");
    assert!(entry.contains("<name>Ada Example</name>"), "{entry}");
    assert!(entry.contains("<name>Bo Example</name>"), "{entry}");
    assert!(entry.contains(r#"term="ferries""#), "{entry}");
    assert!(
        entry.contains("<updated>2025-03-27T09:30:00+00:00</updated>"),
        "{entry}"
    );
    let italian = stored(&notes, "Nota breve");
    assert_eq!(italian.language.as_deref(), Some("it"));
    assert_eq!(italian.authors, ["Cleo Example"]);
    assert!(published(&xml, "Nota breve").starts_with(r#"<entry xml:lang="it">"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_items_of_one_document_are_never_one_entry() {
    let served = fixture_map(&[("scripting-news.xml", "application/rss+xml")]);
    let (base, _server) = start_server(Arc::clone(&served)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &base, &["scripting-news.xml".to_string()]);
    let running = start_daemon(&config).await;
    let (_, _, xml) = http_get(&format!("{}/feed.atom", running.base)).await;
    running.stop().await;
    assert_valid_atom(&xml);
    let bodies: Vec<&str> = [
        "Evening: the new aggregator",
        "Noon: writing the release notes",
    ]
    .into_iter()
    .filter(|text| xml.contains(text))
    .collect();
    assert_eq!(bodies.len(), 2, "{xml}");
    assert_eq!(
        open_store(dir.path())
            .source_entries("scripting-news-xml", 10)
            .unwrap()
            .len(),
        2
    );

    // The next fetch: the noon item is gone, a night one is new, and the
    // evening one is the entry it was.
    let doc = std::fs::read_to_string(Path::new(FIXTURES).join("scripting-news.xml")).unwrap();
    let noon_start = doc.find("<item>\n      <guid>http://scriptingnews.userland.com/backissues/2002/09/29#When:12:59").unwrap();
    let noon_end = noon_start + doc[noon_start..].find("</item>").unwrap() + "</item>".len();
    let night = "<item>\n      <guid>http://scriptingnews.userland.com/backissues/2002/09/29#When:11:02:00PM</guid>\n      \
        <link>http://scriptingnews.userland.com/backissues/2002/09/29</link>\n      \
        <description>Night: the first bug reports about the aggregator.</description>\n    </item>\n    ";
    let channel_items = doc.find("<item>").unwrap();
    let next = format!(
        "{}{night}{}{}",
        &doc[..channel_items],
        &doc[channel_items..noon_start],
        &doc[noon_end..]
    );
    served.lock().unwrap().insert(
        "scripting-news.xml".into(),
        ("application/rss+xml".into(), next.into_bytes()),
    );
    let running = start_daemon(&config).await;
    let (_, _, xml) = http_get(&format!("{}/feed.atom", running.base)).await;
    running.stop().await;
    assert_valid_atom(&xml);
    let stored = open_store(dir.path())
        .source_entries("scripting-news-xml", 10)
        .unwrap();
    let mut texts: Vec<String> = stored
        .iter()
        .map(|e| e.summary.clone().unwrap_or_default())
        .collect();
    texts.sort();
    assert_eq!(
        texts,
        [
            "Evening: the new aggregator shipped tonight.",
            "Night: the first bug reports about the aggregator.",
            "Noon: writing the release notes for the aggregator."
        ],
        "{stored:#?}"
    );
}

/// The podcastparser test feeds, or a message saying how to get them.
fn podcastparser_feeds() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/conformance")
        .join(PODCASTPARSER)
        .join("tests/data");
    let listing = std::fs::read_dir(&dir).unwrap_or_else(|err| {
        panic!(
            "{}: {err}; run .ci/run, which fetches podcastparser's sdist, or `python3 -m pip download \
             --no-binary :all: --no-deps podcastparser==0.6.11 -d target/conformance && tar -xzf \
             target/conformance/{PODCASTPARSER}.tar.gz -C target/conformance`",
            dir.display()
        )
    });
    let mut files: Vec<PathBuf> = listing
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rss"))
        .collect();
    files.sort();
    files
}

/// rss2email's captured feeds (`test/data/SITE/feed*.{rss,atom,xml}`), each
/// named `SITE-FILE`, or a message saying how to get them.
fn rss2email_feeds() -> Vec<(String, PathBuf)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/conformance")
        .join(RSS2EMAIL)
        .join("test/data");
    let sites = std::fs::read_dir(&dir).unwrap_or_else(|err| {
        panic!(
            "{}: {err}; run .ci/run, which fetches rss2email's sdist from PyPI into \
             target/conformance",
            dir.display()
        )
    });
    let mut files = Vec::new();
    for site in sites {
        let site = site.unwrap().path();
        let Ok(listing) = std::fs::read_dir(&site) else {
            continue;
        };
        for file in listing {
            let file = file.unwrap().path();
            let name = file.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with("feed") && !name.ends_with(".config") {
                let site_name = site.file_name().unwrap().to_string_lossy().to_string();
                files.push((format!("{site_name}-{name}"), file));
            }
        }
    }
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_no_one_here_wrote_arrive_whole() {
    let mut files: Vec<(String, PathBuf)> = podcastparser_feeds()
        .into_iter()
        .map(|file| {
            (
                file.file_name().unwrap().to_string_lossy().to_string(),
                file,
            )
        })
        .collect();
    let captured = rss2email_feeds();
    assert!(
        captured.len() >= 10,
        "only {} captured feeds",
        captured.len()
    );
    files.extend(captured);
    assert!(files.len() >= 40, "only {} feeds", files.len());
    let mut served = HashMap::new();
    // Per path: how many entries the parser finds.
    let mut expected: HashMap<String, usize> = HashMap::new();
    for (name, file) in &files {
        let name = name.clone();
        let body = std::fs::read(file).unwrap();
        // What the parser makes of it; a document it refuses is not counted.
        if let Ok(parsed) = feedmerge::parse::parse(&body, None, None) {
            expected.insert(name.clone(), parsed.feed.entries.len());
        }
        served.insert(name, ("application/rss+xml".to_string(), body));
    }
    let paths: Vec<String> = {
        let mut p: Vec<String> = served.keys().cloned().collect();
        p.sort();
        p
    };
    let (base, _server) = start_server(Arc::new(Mutex::new(served))).await;
    let dir = tempfile::tempdir().unwrap();
    let running = start_daemon(&config(dir.path(), &base, &paths)).await;
    let (_, _, merged) = http_get(&format!("{}/feed.atom", running.base)).await;
    let mut documents = vec![merged];
    for path in &paths {
        let (_, _, doc) = http_get(&format!(
            "{}/sources/{}.atom",
            running.base,
            source_name(path)
        ))
        .await;
        documents.push(doc);
    }
    running.stop().await;
    let store = open_store(dir.path());
    let mut short = Vec::new();
    for (path, found) in &expected {
        let arrived = store
            .source_entries(&source_name(path), 10_000)
            .unwrap()
            .len();
        if arrived != *found {
            short.push(format!("{path}: parser {found}, stored {arrived}"));
        }
    }
    assert!(short.is_empty(), "entries lost: {short:#?}");
    assert!(expected.values().sum::<usize>() >= 50, "{expected:?}");
    assert_all_valid_atom(&documents);
}

/// Validates every document with one jing run (a run per document would
/// start the JVM dozens of times).
fn assert_all_valid_atom(documents: &[String]) {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = documents
        .iter()
        .enumerate()
        .map(|(i, doc)| {
            let file = dir.path().join(format!("{i}.atom"));
            std::fs::write(&file, doc).unwrap();
            file
        })
        .collect();
    let output = std::process::Command::new("jing")
        .arg("-c")
        .arg(crate::SCHEMA)
        .args(&files)
        .output()
        .unwrap_or_else(|e| panic!("cannot run jing ({e}); install it: apt-get install jing"));
    assert!(
        output.status.success(),
        "jing rejects a document:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
}
