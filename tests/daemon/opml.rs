//! OPML on the real binary and the real server: a reader's subscription
//! list becomes sources the config accepts and exports back to the same
//! URLs, and `/sources.opml` lists the sources without their secrets.

use std::collections::BTreeSet;

use super::*;

/// The http(s) URLs of every outline in `opml`, read back by our importer.
fn outline_urls(opml: &str) -> BTreeSet<String> {
    let import =
        feedmerge::opml::import(opml.as_bytes(), &feedmerge::opml::Taken::default()).unwrap();
    assert!(import.notes.is_empty(), "{:?}", import.notes);
    import.sources.into_iter().map(|s| s.url).collect()
}

#[test]
fn an_opml_file_round_trips_through_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("feedmerge.toml");
    let existing = "[storage]\npath = \"store\"\n\n\
                    [[sources]]\nname = \"rust-blog\"\nurl = \"https://blog.rust-lang.org/feed.xml\"\n\n\
                    [[sources]]\nname = \"news\"\nurl = \"https://example.org/news.xml\"\n\n";
    std::fs::write(&config_path, existing).unwrap();
    let config_arg = config_path.to_str().unwrap();
    let opml_file = Path::new(FIXTURES).join("subscriptions-windows-1256.opml");
    let opml_arg = opml_file.to_str().unwrap();

    let out = feedmerge(&["import-opml", opml_arg, "--config", config_arg]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let toml = String::from_utf8(out.stdout).unwrap();
    // What was left out is said, with the line it is on.
    assert!(
        stderr.contains(&format!(
            "{opml_arg}: line 16: https://blog.rust-lang.org/feed.xml is already in the config as \"rust-blog\"; left out"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{opml_arg}: line 20: outline \"A bookmark, not a feed\" has no xmlUrl; left out"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{opml_arg}: 6 sources")),
        "{stderr}"
    );

    // Appended as printed, the config checks.
    std::fs::write(&config_path, format!("{existing}{toml}")).unwrap();
    let out = feedmerge(&["check", "--config", config_arg]);
    assert!(
        out.status.success(),
        "{}\n{toml}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = config::load(&config_path).unwrap();
    let got: Vec<(&str, Vec<&str>)> = config
        .sources
        .iter()
        .map(|s| (s.name.as_str(), s.tags.iter().map(String::as_str).collect()))
        .collect();
    assert_eq!(
        got,
        [
            ("rust-blog", vec![]),
            ("news", vec![]),
            ("aljazeera-net", vec!["أخبار"]),
            ("bbc", vec!["أخبار"]),
            ("centcom", vec!["أخبار", "الأمن", "security"]),
            ("lwn-net", vec!["tech-news", "linux", "kernel"]),
            ("news-2", vec!["tech-news"]),
            ("news-3", vec!["tech-news"]),
        ]
    );

    // Exported (before any poll: no store is made), it lists the same URLs.
    let out = feedmerge(&["export-opml", "--config", config_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !dir.path().join("store").exists(),
        "export-opml made a store"
    );
    let exported = String::from_utf8(out.stdout).unwrap();
    let configured: BTreeSet<String> = config
        .sources
        .iter()
        .map(|s| s.location.to_string())
        .collect();
    assert_eq!(outline_urls(&exported), configured, "{exported}");
    assert!(
        exported.contains(r#"category="أخبار,الأمن,security""#),
        "{exported}"
    );

    // Importing the export into the config it came from adds nothing.
    let again = dir.path().join("again.opml");
    std::fs::write(&again, &exported).unwrap();
    let out = feedmerge(&["import-opml", again.to_str().unwrap(), "-c", config_arg]);
    assert!(out.status.success());
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Not OPML: an error naming the file, exit 1.
    let rss = Path::new(FIXTURES).join("english.atom");
    let out = feedmerge(&["import-opml", rss.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not an OPML document (the root element is <feed>)"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_opml_lists_sources_without_their_secrets() {
    let (feeds, _server_stop) = start_feed_server(Server::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let with_userinfo = feeds.replace("http://", "http://reader:pa55word@");
    let text = format!(
        r#"[server]
listen = "127.0.0.1:0"
[storage]
path = "store"
[feed]
title = "Ours"
[defaults]
schedule = "0 0 0 1 1 *"
timeout = "3s"
[[sources]]
name = "eng-blog"
url = "{with_userinfo}/english.atom"
tags = ["tech", "en"]
headers = {{ Authorization = "Bearer he4der-secret" }}
[[sources]]
name = "keyed"
url = "{feeds}/notes.json?key=k3y-secret"
publish_url = false
[[sources]]
name = "local"
url = "file:private-dir/feed.xml"
"#
    );
    let config_path = dir.path().join("feedmerge.toml");
    std::fs::write(&config_path, text).unwrap();
    let running = start_daemon(&config_path).await;

    let (status, content_type, body) = http_get(&format!("{}/sources.opml", running.base)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "text/x-opml; charset=utf-8");
    for secret in [
        "reader",
        "pa55word",
        "he4der-secret",
        "k3y-secret",
        "private-dir",
    ] {
        assert!(!body.contains(secret), "{secret} in {body}");
    }
    // One outline, titled by the feed itself after the first poll, with its
    // home page and tags.
    assert_eq!(body.matches("<outline ").count(), 1, "{body}");
    assert!(body.contains("text=\"Example Engineering Blog\""), "{body}");
    assert!(
        body.contains("htmlUrl=\"https://blog.example.com/\""),
        "{body}"
    );
    assert!(
        body.contains(&format!("xmlUrl=\"{feeds}/english.atom\"")),
        "{body}"
    );
    assert!(body.contains("category=\"tech,en\""), "{body}");
    assert!(body.contains("<title>Ours</title>"), "{body}");

    // While the daemon holds the store, the CLI asks it for the titles.
    let config_arg = config_path.to_str().unwrap().to_string();
    let out = tokio::task::spawn_blocking(move || feedmerge(&["export-opml", "-c", &config_arg]))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("source \"keyed\" left out: publish_url = false"),
        "{stderr}"
    );
    assert!(
        stderr.contains("source \"local\" left out: a file source"),
        "{stderr}"
    );
    let exported = String::from_utf8(out.stdout).unwrap();
    assert_eq!(exported, body);
    running.stop().await;
}
