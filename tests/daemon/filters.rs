//! A source's include/exclude filters, end to end: what they keep out is
//! dropped at intake (never stored, never published, counted in the
//! source's status), and a bad pattern stops the daemon before it starts,
//! naming where it is written.

use std::collections::HashMap;

use axum::http::StatusCode;
use feedmerge::config;
use feedmerge::store::{Store, StoreOptions};

use super::{
    assert_valid_atom, entry_count, entry_titles, feedmerge, http_get, serve_paths, start_daemon,
};

const FEED: &str = "feed:<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>news</title>\
    <item><guid>n-1</guid><title>Climate talks open</title><description>Delegates arrive</description></item>\
    <item><guid>n-2</guid><title>Sponsored: buy now</title><description>A great deal</description></item>\
    <item><guid>n-3</guid><title>Rust 1.85 released</title><description>A new edition</description></item>\
    </channel></rss>";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excluded_entries_are_neither_stored_nor_published() {
    let routes = HashMap::from([("news".to_string(), (StatusCode::OK, FEED.to_string()))]);
    let (port, _server_stop) = serve_paths(routes).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("feedmerge.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = \"store\"\n\
             [poll]\njitter = \"0s\"\n[defaults]\nschedule = \"0 0 0 1 1 *\"\n\
             [[sources]]\nname = \"news\"\nurl = \"http://127.0.0.1:{port}/news\"\n\
             exclude = [\"(?i)sponsored\"]\n"
        ),
    )
    .unwrap();

    let running = start_daemon(&path).await;
    let (status, _, xml) = http_get(&format!("{}/sources/news.atom", running.base)).await;
    let (_, _, merged) = http_get(&format!("{}/feed.atom", running.base)).await;
    let (_, _, api) = http_get(&format!("{}/api/sources", running.base)).await;
    running.stop().await;

    assert_eq!(status, StatusCode::OK);
    assert_valid_atom(&xml);
    assert_eq!(entry_count(&xml), 2, "{xml}");
    let mut titles = entry_titles(&xml);
    titles.sort();
    assert_eq!(titles, ["Climate talks open", "Rust 1.85 released"]);
    assert!(!xml.contains("Sponsored"), "{xml}");
    assert_eq!(entry_count(&merged), 2, "{merged}");
    assert!(!merged.contains("Sponsored"), "{merged}");

    // The status says what the filters kept out of the last document.
    let api: serde_json::Value = serde_json::from_str(&api).unwrap();
    let news = &api[0];
    assert_eq!(news["name"], "news");
    assert_eq!(news["entries_seen"], 3, "{news}");
    assert_eq!(
        news["notes"],
        serde_json::json!(["1 entry excluded by the source's filters"]),
        "{news}"
    );

    // Nothing of it reached the store.
    let config = config::load(&path).unwrap();
    let store = Store::open(&config.storage.path, StoreOptions::with_cache(1 << 20)).unwrap();
    let stored = store.source_entries("news", 10).unwrap();
    let mut titles: Vec<&str> = stored.iter().map(|e| e.title.as_str()).collect();
    titles.sort_unstable();
    assert_eq!(titles, ["Climate talks open", "Rust 1.85 released"]);
}

#[test]
fn a_bad_filter_pattern_stops_the_daemon_naming_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("feedmerge.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = \"store\"\n\
         [[sources]]\nname = \"news\"\nurl = \"http://127.0.0.1:9/news\"\n\
         exclude = ['(?i)sponsored', '(?i)^ad:(']\n",
    )
    .unwrap();
    let out = feedmerge(&["run", "--config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let expected = format!(
        "{}:8:29: sources[0].exclude[1]: invalid regex: unclosed group",
        path.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(!dir.path().join("store").exists(), "the store was created");
}
