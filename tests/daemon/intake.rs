//! Intake limits, end to end: a document within its size cap that holds
//! too many entries, over-long fields or deep nesting is bounded, the
//! source's status says which limit was hit, and other sources are untouched.

use std::collections::HashMap;

use axum::http::StatusCode;
use feedmerge::{app, config};

use super::serve_paths;

fn many_items(count: usize) -> String {
    let mut doc = String::from(
        "feed:<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>many</title>",
    );
    for i in 0..count {
        doc.push_str(&format!(
            "<item><guid>many-{i}</guid><title>{}</title><link>https://example.com/{}</link></item>",
            if i == 0 { "t".repeat(10_000) } else { format!("item {i}") },
            if i == 1 { "p".repeat(20_000) } else { i.to_string() },
        ));
    }
    doc.push_str("</channel></rss>");
    doc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_are_held_to_the_intake_limits_and_the_status_says_so() {
    let deep = format!(
        "feed:<rss version=\"2.0\"><channel><item><title>deep</title>{}{}</item></channel></rss>",
        "<x>".repeat(5_000),
        "</x>".repeat(5_000)
    );
    let fine = "feed:<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>fine</title>\
                <item><guid>fine-1</guid><title>fine one</title></item></channel></rss>";
    let routes = HashMap::from([
        ("many".to_string(), (StatusCode::OK, many_items(5_000))),
        ("deep".to_string(), (StatusCode::OK, deep)),
        ("fine".to_string(), (StatusCode::OK, fine.to_string())),
    ]);
    let (port, _stop) = serve_paths(routes).await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from(
        "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = \"store\"\n\
         [intake]\nmax_entries = 100\nmax_title = \"1KiB\"\n\
         [defaults]\nschedule = \"0 0 0 1 1 *\"\n",
    );
    for name in ["many", "deep", "fine"] {
        text.push_str(&format!(
            "[[sources]]\nname = \"{name}\"\nurl = \"http://127.0.0.1:{port}/{name}\"\n"
        ));
    }
    let path = dir.path().join("feedmerge.toml");
    std::fs::write(&path, text).unwrap();
    let config = config::load(&path).unwrap();
    let reports: HashMap<String, String> = app::fetch_once(config.clone(), None)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.source.clone(), r.to_string()))
        .collect();
    assert_eq!(reports["many"], "many: 100 new, 0 updated, 0 unchanged");
    assert_eq!(
        reports["deep"],
        "deep: error: elements nest deeper than 64 levels ([intake] max_depth)"
    );
    assert_eq!(reports["fine"], "fine: 1 new, 0 updated, 0 unchanged");

    let statuses = app::sources(&config).await.unwrap();
    let many = statuses.iter().find(|s| s.name == "many").unwrap();
    assert_eq!(
        many.notes,
        [
            "kept the first 100 of 5000 entries ([intake] max_entries)",
            "titles or names cut: 1 ([intake] max_title = 1024)",
            "urls or ids too long: 1 ([intake] max_url = 8192)",
        ]
    );
    assert!(many.last_error.is_none());
    let table = feedmerge::status::table(&statuses);
    assert!(
        table.contains("kept the first 100 of 5000 entries"),
        "{table}"
    );

    // What was stored is what the limits let in.
    let xml = app::export(&config, feedmerge::feeds::Selector::Source("many"))
        .await
        .unwrap();
    assert!(xml.contains(&"t".repeat(1024)) && !xml.contains(&"t".repeat(1025)));
    assert!(!xml.contains(&"p".repeat(8193)));
    assert!(xml.contains("item 99") && !xml.contains("item 100<"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durations_past_any_date_mean_forever_not_a_crash() {
    let fine = "feed:<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>fine</title><ttl>60</ttl>\
                <item><guid>fine-1</guid><title>fine one</title></item></channel></rss>";
    let routes = HashMap::from([
        ("fine".to_string(), (StatusCode::OK, fine.to_string())),
        (
            "failing".to_string(),
            (StatusCode::INTERNAL_SERVER_ERROR, "feed:no".to_string()),
        ),
    ]);
    let (port, _stop) = serve_paths(routes).await;
    let dir = tempfile::tempdir().unwrap();
    // A million years: within what a std or chrono duration holds, past
    // what a date can be moved by.
    let forever = "1000000years";
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = \"store\"\n\
         [poll]\nmax_backoff = \"{forever}\"\n[dedup]\nwindow = \"{forever}\"\n\
         [retention]\nmax_age = \"{forever}\"\ntombstone_age = \"{forever}\"\n\
         [defaults]\nschedule = \"0 0 0 1 1 *\"\n"
    );
    for name in ["fine", "failing"] {
        text.push_str(&format!(
            "[[sources]]\nname = \"{name}\"\nurl = \"http://127.0.0.1:{port}/{name}\"\n"
        ));
    }
    let path = dir.path().join("feedmerge.toml");
    std::fs::write(&path, text).unwrap();
    let config = config::load(&path).unwrap();
    for _ in 0..3 {
        let reports: HashMap<String, String> = app::fetch_once(config.clone(), None)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.source.clone(), r.to_string()))
            .collect();
        assert!(reports["fine"].starts_with("fine: "), "{reports:?}");
        assert_eq!(reports["failing"], "failing: error: http 500");
    }
    let store = feedmerge::store::Store::open(
        &config.storage.path,
        feedmerge::store::StoreOptions::with_cache(1 << 20),
    )
    .unwrap();
    let retention = feedmerge::store::Retention {
        max_age: config.retention.max_age,
        max_per_source: config.retention.max_per_source,
        max_total: config.retention.max_total,
        tombstone_age: config.retention.tombstone_age,
    };
    let pruned = store.prune(chrono::Utc::now(), &retention).unwrap();
    assert_eq!(pruned.pruned, 0, "{pruned:?}");
    assert_eq!(store.source_entries("fine", 10).unwrap().len(), 1);
}
