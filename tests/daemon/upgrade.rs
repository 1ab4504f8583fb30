//! A store written by the previous release opens in this one with
//! everything kept.
//!
//! `tests/fixtures/store-v1.tar.gz` is a sled directory written by the
//! release before schema version 2 (the seq-keyed layout, no `meta` tree):
//! the real daemon's `fetch` polled the fixture feeds from a loopback
//! server at 127.0.0.1:39245 (ETag and Last-Modified on every answer),
//! stories joined across sources by URL and by text, and a prune with
//! `max_per_source = 2` left two tombstones. `store-v1.json` is what that
//! release read back from it.
//!
//! `tests/fixtures/store-v2.tar.gz` is a whole config folder written by the
//! release before schema version 3 (entries without `external`): its
//! config, the fixture feeds it read as file sources, the store its
//! `feedmerge fetch` wrote, and under `expected/` what that release's
//! `export` and `sources --json` printed from that store.
//!
//! `tests/fixtures/store-v3.tar.gz` is the same folder written by the
//! release before schema version 4 (no `archives` tree), with retention
//! keeping every day, so the upgraded store archives the fixtures' days.
//!
//! `tests/fixtures/store-v4.tar.gz` is that folder again, written by the
//! schema-4 release (224ef81's own `fetch`, `export` and `sources --json`),
//! with `clean_links = false` set as this test reads it.
//!
//! `tests/fixtures/store-v5.tar.gz` is that folder once more, written by the
//! schema-5 release (fd11667's own `fetch`, `export` and `sources --json`):
//! the store schema 6's migration (bucketed `ids` and `by_canon`) carries
//! over.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use feedmerge::dedup::Rules;
use feedmerge::model::{Entry, SourceState};
use feedmerge::store::{Store, StoreOptions};
use serde::Deserialize;

#[derive(Deserialize)]
struct Manifest {
    entries: Vec<Entry>,
    entry_count: u64,
    stories: BTreeMap<String, Vec<String>>,
    sources: BTreeMap<String, SourceState>,
    tombstoned: Tombstoned,
}

#[derive(Deserialize)]
struct Tombstoned {
    ids: Vec<String>,
    entries: Vec<Entry>,
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The manifest, as this release reads those entries back: fingerprints
/// keep the low 16 bits of each MinHash value since schema 5
/// (`dedup::FINGERPRINT_MASK`), and older records read that way.
fn manifest() -> Manifest {
    let text = std::fs::read_to_string(fixture("store-v1.json")).unwrap();
    let mut m: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mask = |entries: &mut serde_json::Value| {
        for e in entries.as_array_mut().into_iter().flatten() {
            // (`get_mut`: indexing would make a missing fingerprint an object.)
            let hashes = e
                .get_mut("fingerprint")
                .and_then(|f| f.get_mut("minhash"))
                .and_then(serde_json::Value::as_array_mut);
            if let Some(hashes) = hashes {
                for h in hashes {
                    *h = (h.as_u64().unwrap() & u64::from(feedmerge::dedup::FINGERPRINT_MASK))
                        .into();
                }
            }
        }
    };
    mask(&mut m["entries"]);
    mask(&mut m["tombstoned"]["entries"]);
    serde_json::from_value(m).unwrap()
}

/// The previous release's store, unpacked into `dir`.
fn unpack_v1(dir: &Path) {
    let status = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(fixture("store-v1.tar.gz"))
        .arg("-C")
        .arg(dir)
        .status()
        .expect("tar runs");
    assert!(status.success());
}

fn open(dir: &Path) -> Store {
    Store::open(dir, StoreOptions::with_cache(1 << 20)).unwrap()
}

#[test]
fn a_store_from_the_previous_release_opens_with_everything_kept() {
    let dir = tempfile::tempdir().unwrap();
    unpack_v1(dir.path());
    let m = manifest();
    let store = open(dir.path());
    assert_eq!(store.entry_count(), m.entry_count);
    for want in &m.entries {
        let got = store.entry(&want.id).unwrap();
        assert_eq!(got.as_ref(), Some(want), "entry {}", want.id);
    }
    for (story, ids) in &m.stories {
        let item = store.story(story).unwrap().expect("story kept");
        assert_eq!(&item.id, story);
        let mut got: Vec<String> = item.copies.into_iter().map(|e| e.id).collect();
        got.sort();
        assert_eq!(&got, ids, "story {story}");
    }
    for (name, state) in &m.sources {
        let got = store.source_state(name).unwrap();
        assert_eq!(got.as_ref(), Some(state), "source {name}");
    }
    let sources: HashSet<&str> = m.sources.keys().map(String::as_str).collect();
    let merged = store.newest_stories(100, &sources).unwrap();
    assert_eq!(merged.len(), m.stories.len());
    // Each source's feed holds its entries, newest first.
    for name in &sources {
        let own: Vec<String> = store
            .source_entries(name, 100)
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        let expected: Vec<String> = m
            .entries
            .iter()
            .filter(|e| e.source == *name)
            .map(|e| e.id.clone())
            .collect();
        assert_eq!(own, expected, "source {name}");
    }
    // Tombstones still keep pruned entries out.
    for id in &m.tombstoned.ids {
        assert_eq!(store.entry(id).unwrap(), None);
    }
    let now = chrono::Utc::now();
    let counts = store
        .ingest(&m.tombstoned.entries, now, &Rules::default())
        .unwrap();
    assert_eq!((counts.new, counts.suppressed), (0, m.tombstoned.ids.len()));
    store.flush_blocking().unwrap();
    drop(store);

    // Opened again, the store is at the new version: nothing runs twice
    // and nothing is lost.
    let store = open(dir.path());
    assert_eq!(store.entry_count(), m.entry_count);
    for want in &m.entries {
        assert_eq!(store.entry(&want.id).unwrap().as_ref(), Some(want));
    }
}

/// Validators seen by the loopback server, by path.
type Seen = Arc<Mutex<Vec<(String, Option<String>, Option<String>)>>>;

async fn answer_304(State(seen): State<Seen>, uri: Uri, headers: HeaderMap) -> Response {
    let value = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    };
    let (etag, since) = (
        value(header::IF_NONE_MATCH),
        value(header::IF_MODIFIED_SINCE),
    );
    let conditional = etag.is_some();
    seen.lock()
        .unwrap()
        .push((uri.path().to_string(), etag, since));
    if conditional {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "expected a conditional GET",
        )
            .into_response()
    }
}

/// After the upgrade, the first poll of every source is still conditional:
/// the ETag and Last-Modified the previous release stored are sent back.
#[tokio::test]
async fn the_first_poll_after_upgrading_is_conditional() {
    let m = manifest();
    // The previous release polled this address; its states belong to it.
    let addr: SocketAddr = "127.0.0.1:39245".parse().unwrap();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("port 39245 on loopback is free (the fixture's source URLs name it)");
    let seen: Seen = Arc::default();
    let router = Router::new()
        .fallback(answer_304)
        .with_state(Arc::clone(&seen));
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    std::fs::create_dir(&store_dir).unwrap();
    unpack_v1(&store_dir);
    let mut text = String::from("[storage]\npath = \"store\"\n");
    for (name, state) in &m.sources {
        text.push_str(&format!(
            "[[sources]]\nname = \"{name}\"\nurl = \"{}\"\n",
            state.config_url
        ));
    }
    let path = dir.path().join("feedmerge.toml");
    std::fs::write(&path, text).unwrap();
    let config = feedmerge::config::load(&path).unwrap();
    let reports = feedmerge::app::fetch_once(config, None).await.unwrap();
    for report in &reports {
        assert!(report.to_string().ends_with("not modified"), "{report}");
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), m.sources.len());
    for (name, state) in &m.sources {
        let path = state
            .config_url
            .trim_start_matches("http://127.0.0.1:39245");
        let (_, etag, since) = seen.iter().find(|(p, _, _)| p == path).expect("polled");
        assert_eq!(etag, &state.etag, "{name}");
        assert_eq!(since, &state.last_modified, "{name}");
    }
    server.abort();
}

#[test]
fn what_is_not_a_store_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let err = Store::open(dir.path(), StoreOptions::with_cache(1 << 20)).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("not a feedmerge store"), "{message}");
    assert!(message.contains("notes.txt"), "{message}");
    // Nothing was written among the files that are there.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_schema_version_2_publishes_the_same_after_upgrading() {
    publishes_the_same_after_upgrading("store-v2.tar.gz").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_schema_version_4_publishes_the_same_after_upgrading() {
    publishes_the_same_after_upgrading("store-v4.tar.gz").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_schema_version_5_publishes_the_same_after_upgrading() {
    publishes_the_same_after_upgrading("store-v5.tar.gz").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_schema_version_3_publishes_the_same_and_archives_after_upgrading() {
    let (dir, config) = publishes_the_same_after_upgrading("store-v3.tar.gz").await;
    // The new tree works in the upgraded store: a day of the fixtures is
    // archived, frozen, and read back the same.
    let xml = feedmerge::app::export(&config, feedmerge::feeds::Selector::Merged)
        .await
        .unwrap();
    let archive = xml
        .split("href=\"/feed.atom?archive=")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the subscription document links its newest archive")
        .to_string();
    let day: chrono::NaiveDate = archive.parse().unwrap();
    let store = Store::open(&config.storage.path, StoreOptions::with_cache(1 << 20)).unwrap();
    let request = feedmerge::feeds::Request {
        archive: Some(day),
        ..feedmerge::feeds::Request::atom(feedmerge::feeds::Selector::Merged)
    };
    let now = chrono::Utc::now();
    let first = feedmerge::feeds::archive_document(&config, &store, &request, now)
        .unwrap()
        .expect("an archive of a fixture day");
    assert!(first.contains("<fh:archive/>"));
    super::assert_valid_atom(&first);
    assert_eq!(
        store.archive(day, &request.path_and_query()).unwrap(),
        Some(first)
    );
    drop(store);
    drop(dir);
}

/// Unpacks the config folder `fixture` (written by an earlier release:
/// its config, feeds, store, and under `expected/` what that release
/// published and showed) and checks this release, on the upgraded store,
/// publishes the same, shows the same states, and finds nothing new.
async fn publishes_the_same_after_upgrading(
    fixture_name: &str,
) -> (tempfile::TempDir, feedmerge::config::Config) {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(fixture(fixture_name))
        .arg("-C")
        .arg(dir.path())
        .status()
        .expect("tar runs");
    assert!(status.success());
    let mut config = feedmerge::config::load(&dir.path().join("feedmerge.toml")).unwrap();
    // What this release publishes differently, on purpose, is set aside:
    // links lose their trackers unless told not to, each document links
    // its JSON Feed form (checked present, then removed) and its newest
    // archive (removed).
    config.feed.clean_links = false;
    let expected =
        |name: &str| std::fs::read_to_string(dir.path().join("expected").join(name)).unwrap();
    use feedmerge::feeds::Selector;
    let mut documents = vec![
        (
            "feed.atom".to_string(),
            Selector::Merged,
            "feed.json".to_string(),
        ),
        (
            "stories.atom".to_string(),
            Selector::Output("stories"),
            "feeds/stories.json".to_string(),
        ),
    ];
    for source in &config.sources {
        documents.push((
            format!("source-{}.atom", source.name),
            Selector::Source(&source.name),
            format!("sources/{}.json", source.name),
        ));
    }
    for (file, selector, json) in documents {
        let xml = feedmerge::app::export(&config, selector).await.unwrap();
        let json_link = format!(
            "  <link href=\"/{json}\" rel=\"alternate\" type=\"application/feed+json\"/>\n"
        );
        assert!(xml.contains(&json_link), "{file}: no link to {json}");
        // Both sides lose these lines: the releases before them had none.
        let set_aside = |xml: String| -> String {
            xml.replacen(&json_link, "", 1)
                .split_inclusive('\n')
                // So is the link to the newest archive, where a day is kept.
                .filter(|line| !line.contains("rel=\"prev-archive\""))
                .collect()
        };
        assert_eq!(
            set_aside(xml),
            set_aside(expected(&file)),
            "{file} changed across the upgrade"
        );
    }
    // Every source state, as that release showed it.
    let before: Vec<serde_json::Value> = serde_json::from_str(&expected("sources.json")).unwrap();
    let after = feedmerge::app::sources(&config).await.unwrap();
    assert_eq!(before.len(), after.len());
    for (old, new) in before.iter().zip(&after) {
        assert_eq!(old["name"], new.name.as_str());
        assert_eq!(old["entries_seen"], new.entries_seen);
        assert_eq!(old["title"].as_str(), new.title.as_deref());
        assert_eq!(old["encoding"].as_str(), new.encoding.as_deref());
        assert_eq!(
            old["last_success"]
                .as_str()
                .map(|t| t.parse::<chrono::DateTime<chrono::Utc>>().unwrap()),
            new.last_success,
            "{}",
            new.name
        );
    }
    // The next poll finds every entry under its old id: nothing new.
    let reports = feedmerge::app::fetch_once(config.clone(), None)
        .await
        .unwrap();
    for report in reports {
        let line = report.to_string();
        assert!(line.contains(": 0 new,"), "{line}");
    }
    // And once written again in the new form, it still publishes the same.
    let xml = feedmerge::app::export(&config, Selector::Merged)
        .await
        .unwrap();
    assert_eq!(
        super::entry_count(&xml),
        super::entry_count(&expected("feed.atom"))
    );
    super::assert_valid_atom(&xml);
    (dir, config)
}

/// `feedmerge compact` on an upgraded store: the same documents from a
/// directory that holds only the pages its keys need; refused while the
/// store is open elsewhere, with what to do.
#[test]
fn compact_rebuilds_the_store_and_it_publishes_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(fixture("store-v5.tar.gz"))
        .arg("-C")
        .arg(dir.path())
        .status()
        .expect("tar runs");
    assert!(status.success());
    let config = dir.path().join("feedmerge.toml");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(super::BIN)
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .expect("feedmerge runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // Upgrading already rebuilt it once; the export is what it publishes.
    let (ok, before, err) = run(&["export"]);
    assert!(ok, "{err}");
    assert!(before.contains("<entry>"), "{before}");
    let (ok, said, err) = run(&["compact"]);
    assert!(ok, "{err}");
    assert!(said.starts_with("rebuilt "), "{said}");
    let store = feedmerge::config::load(&config).unwrap().storage.path;
    assert!(!store.join("rebuild").exists());
    let (ok, after, err) = run(&["export"]);
    assert!(ok, "{err}");
    assert_eq!(after, before);
    // Held open (as a daemon holds it): refused, nothing changed.
    let held = Store::open(&store, StoreOptions::with_cache(1 << 20)).unwrap();
    let (ok, _, err) = run(&["compact"]);
    assert!(!ok);
    assert!(err.contains("stop it"), "{err}");
    drop(held);
    let (ok, again, _) = run(&["export"]);
    assert!(ok);
    assert_eq!(again, before);
}
