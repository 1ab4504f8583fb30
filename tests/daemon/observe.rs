//! Observability on the running daemon: `/readyz` waits for the first poll
//! round, `/metrics` counts polls, entries, fetches and requests, and
//! `/healthz` answers at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use feedmerge::{app, config};
use tokio_util::sync::CancellationToken;

use super::{http_get, serve_paths};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_the_first_round_and_metrics_count_what_happened() {
    // A source whose server never answers holds the first round for its
    // timeout.
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hung_addr = hung.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hung.accept().await {
            held.push(socket);
        }
    });
    let good = "feed:<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>good</title>\
                <item><guid>good-1</guid><title>good one</title></item></channel></rss>";
    let (port, _stop_feeds) = serve_paths(HashMap::from([(
        "good".to_string(),
        (StatusCode::OK, good.to_string()),
    )]))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("feedmerge.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = \"store\"\n\
             [defaults]\nschedule = \"0 0 0 1 1 *\"\n\
             [[sources]]\nname = \"good\"\nurl = \"http://127.0.0.1:{port}/good\"\n\
             [[sources]]\nname = \"hung\"\nurl = \"http://{hung_addr}/feed\"\ntimeout = \"3s\"\n"
        ),
    )
    .unwrap();
    let stop = CancellationToken::new();
    let daemon = app::start(config::load(&path).unwrap(), stop.clone())
        .await
        .unwrap();
    let base = format!("http://{}", daemon.local_addr());

    let (status, _, body) = http_get(&format!("{base}/readyz")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let (status, _, _) = http_get(&format!("{base}/healthz")).await;
    assert_eq!(status, StatusCode::OK);

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, _) = http_get(&format!("{base}/readyz")).await;
        if status == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, content_type, text) = http_get(&format!("{base}/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    for line in [
        "feedmerge_polls_total{source=\"good\",result=\"stored\"} 1",
        "feedmerge_polls_total{source=\"hung\",result=\"failed\"} 1",
        "feedmerge_entries_total{kind=\"new\"} 1",
        "feedmerge_entries_stored 1",
        "feedmerge_fetch_duration_seconds_count 1",
        "feedmerge_http_requests_total{route=\"/readyz\",status=\"503\"} ",
        "feedmerge_http_requests_total{route=\"/healthz\",status=\"200\"} 1",
        "feedmerge_not_modified_ratio 0.0",
    ] {
        assert!(text.contains(line), "{line} not in:\n{text}");
    }
    assert!(text.ends_with("# EOF\n"));
    // A raw path never becomes a label.
    http_get(&format!("{base}/no/such/{}", "x".repeat(50))).await;
    let (_, _, text) = http_get(&format!("{base}/metrics")).await;
    assert!(
        text.contains("route=\"unmatched\",status=\"404\""),
        "{text}"
    );
    assert!(!text.contains("xxxxx"));
    stop.cancel();
    daemon.wait().await.unwrap();
}
