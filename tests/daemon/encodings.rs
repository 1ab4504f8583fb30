//! Labels that lie, or no label at all: the corpus in
//! `tests/fixtures/encodings/` (real sentences in 11 scripts, each in a
//! legacy encoding) is served on loopback twice per case, undeclared and
//! falsely declared UTF-8 (in HTTP and in the XML declaration), and polled
//! by the real pipeline into a real store. Every title must arrive as the
//! original text, in the store and in the published Atom, and each source's
//! status must say what the label claimed and what was used. A correctly
//! labelled UTF-8 source beside them says nothing.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use feedmerge::feeds::Selector;
use feedmerge::store::{Store, StoreOptions};
use feedmerge::{app, config};
use serde::Deserialize;

use super::{assert_valid_atom, entry_titles, FIXTURES};

#[derive(Deserialize)]
struct Corpus {
    case: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    encoding: String,
    detected: String,
    title: String,
}

/// The two ways of lying: (file suffix, HTTP Content-Type).
const WAYS: [(&str, &str); 2] = [
    ("undeclared", "application/rss+xml"),
    ("lying", "application/rss+xml; charset=utf-8"),
];

const CLEAN: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?><rss version=\"2.0\"><channel>\
    <title>clean</title><item><guid>clean-1</guid><title>Ein sauber deklariertes Dokument: Grüße aus Köln</title></item>\
    </channel></rss>";

fn corpus() -> Vec<Case> {
    let dir = Path::new(FIXTURES).join("encodings");
    let text = std::fs::read_to_string(dir.join("corpus.toml")).unwrap();
    let corpus: Corpus = toml::from_str(&text).unwrap();
    corpus.case
}

/// Serves each `NAME.WAY.xml` of the corpus with its way's Content-Type,
/// and `clean.xml` as UTF-8, labelled so.
async fn serve_corpus(cases: &[Case]) -> u16 {
    let dir = Path::new(FIXTURES).join("encodings");
    let mut routes: HashMap<String, (&'static str, Vec<u8>)> = HashMap::new();
    for case in cases {
        for (way, content_type) in WAYS {
            let file = format!("{}.{way}.xml", case.name);
            let body = std::fs::read(dir.join(&file)).unwrap();
            routes.insert(file, (content_type, body));
        }
    }
    routes.insert(
        "clean.xml".into(),
        (
            "application/rss+xml; charset=utf-8",
            CLEAN.as_bytes().to_vec(),
        ),
    );
    let routes = Arc::new(routes);
    let router = Router::new().fallback(move |uri: axum::http::Uri| {
        let routes = Arc::clone(&routes);
        async move {
            match routes.get(uri.path().trim_start_matches('/')) {
                Some((content_type, body)) => {
                    ([(header::CONTENT_TYPE, *content_type)], body.clone()).into_response()
                }
                None => StatusCode::NOT_FOUND.into_response(),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    port
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mislabeled_and_undeclared_legacy_encodings_arrive_as_their_text() {
    let cases = corpus();
    assert!(cases.len() >= 8);
    let port = serve_corpus(&cases).await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from(
        "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = \"store\"\n\
         [feed]\nmax_entries = 100\n[defaults]\nschedule = \"0 0 0 1 1 *\"\n",
    );
    let mut sources = vec![("clean".to_string(), "clean.xml".to_string())];
    for case in &cases {
        for (way, _) in WAYS {
            sources.push((
                format!("{}-{way}", case.name),
                format!("{}.{way}.xml", case.name),
            ));
        }
    }
    for (name, path) in &sources {
        text.push_str(&format!(
            "[[sources]]\nname = \"{name}\"\nurl = \"http://127.0.0.1:{port}/{path}\"\n"
        ));
    }
    let path = dir.path().join("feedmerge.toml");
    std::fs::write(&path, text).unwrap();
    let config = config::load(&path).unwrap();
    for report in app::fetch_once(config.clone(), None).await.unwrap() {
        assert!(report.outcome.is_ok(), "{report}");
    }

    let statuses = app::sources(&config).await.unwrap();
    let status = |name: &str| statuses.iter().find(|s| s.name == name).unwrap();
    let clean = status("clean");
    assert_eq!(clean.encoding.as_deref(), Some("UTF-8"));
    assert!(clean.notes.is_empty(), "{:?}", clean.notes);
    let table = feedmerge::status::table(&statuses);

    let merged = app::export(&config, Selector::Merged).await.unwrap();
    assert_valid_atom(&merged);
    let published: Vec<String> = entry_titles(&merged).iter().map(|t| unescape(t)).collect();
    {
        let store = Store::open(&config.storage.path, StoreOptions::with_cache(1 << 20)).unwrap();
        let mut lost = Vec::new();
        for case in &cases {
            for (way, _) in WAYS {
                let name = format!("{}-{way}", case.name);
                let stored = store.source_entries(&name, 10).unwrap();
                if stored.len() != 1 || stored[0].title != case.title {
                    lost.push(format!(
                        "{name} ({}): stored {:?}",
                        case.encoding,
                        stored.first().map(|e| &e.title)
                    ));
                }
                if !published.contains(&case.title) {
                    lost.push(format!("{name}: not in the merged feed"));
                }
                let expected = match way {
                    "undeclared" => format!("undeclared, not UTF-8; detected {}", case.detected),
                    _ => format!(
                        "declared UTF-8 (HTTP charset), not valid; detected {}",
                        case.detected
                    ),
                };
                let source = status(&name);
                if source.encoding.as_deref() != Some(expected.as_str())
                    || source.notes != [expected.clone()]
                {
                    lost.push(format!(
                        "{name}: status {:?}, notes {:?}, expected {expected:?}",
                        source.encoding, source.notes
                    ));
                }
                if !table.contains(&expected) {
                    lost.push(format!(
                        "{name}: `feedmerge sources` does not say {expected:?}"
                    ));
                }
            }
        }
        assert!(
            lost.is_empty(),
            "{} lost:\n{}\n{table}",
            lost.len(),
            lost.join("\n")
        );
    }
}
