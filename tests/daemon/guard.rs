//! The private-network guard, end to end: a source's server redirects the
//! poller to loopback addresses no source names (127.0.0.2, `localhost`,
//! an IPv4-mapped spelling), and a listener there counts every connection
//! that reaches it. Loopback stands in for the operator's network.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::http::StatusCode;
use feedmerge::{app, config};

use super::serve_paths;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// A listener that answers every connection with a one-item RSS feed and
/// counts the connections it accepted.
async fn trap(addr: &str) -> (u16, Arc<AtomicUsize>, CancellationToken) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let (counter, token) = (Arc::clone(&hits), stop.clone());
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = tokio::select! {
                accepted = listener.accept() => accepted.unwrap(),
                _ = token.cancelled() => return,
            };
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let body = "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>inside</title>\
                            <item><guid>inside-1</guid><title>from the inside</title></item></channel></rss>";
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/rss+xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    (port, hits, stop)
}

fn config_text(poll: &str, sources: &[(&str, String)]) -> String {
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = \"store\"\n\
         [poll]\njitter = \"0s\"\n{poll}\n[defaults]\nschedule = \"0 0 0 1 1 *\"\ntimeout = \"5s\"\n"
    );
    for (name, url) in sources {
        text.push_str(&format!(
            "[[sources]]\nname = \"{name}\"\nurl = \"{url}\"\n"
        ));
    }
    text
}

async fn poll_all(dir: &std::path::Path, text: &str) -> HashMap<String, String> {
    let path = dir.join("feedmerge.toml");
    std::fs::write(&path, text).unwrap();
    let config = config::load(&path).unwrap();
    app::fetch_once(config, None)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.source.clone(), r.to_string()))
        .collect()
}

const PLAIN: &str =
    "feed:<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>plain</title>\
                     <item><guid>plain-1</guid><title>plain one</title></item></channel></rss>";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_never_reach_private_addresses_the_config_does_not_name() {
    let (ip_port, ip_hits, _stop_ip) = trap("127.0.0.2:0").await;
    let (name_port, name_hits, _stop_name) = trap("127.0.0.1:0").await;
    let routes = HashMap::from([
        (
            "to-ip".to_string(),
            (
                StatusCode::FOUND,
                format!("http://127.0.0.2:{ip_port}/feed"),
            ),
        ),
        (
            "to-name".to_string(),
            (
                StatusCode::MOVED_PERMANENTLY,
                format!("http://localhost:{name_port}/feed"),
            ),
        ),
        (
            "to-mapped".to_string(),
            (
                StatusCode::PERMANENT_REDIRECT,
                format!("http://[::ffff:127.0.0.2]:{ip_port}/feed"),
            ),
        ),
        (
            "to-hex".to_string(),
            (
                StatusCode::FOUND,
                format!("http://0x7f.0.0.2:{ip_port}/feed"),
            ),
        ),
        ("plain".to_string(), (StatusCode::OK, PLAIN.to_string())),
    ]);
    let (port, _stop) = serve_paths(routes).await;
    let base = format!("http://127.0.0.1:{port}");
    let sources = ["to-ip", "to-name", "to-mapped", "to-hex", "plain"]
        .map(|name| (name, format!("{base}/{name}")));
    let dir = tempfile::tempdir().unwrap();
    let text = config_text("", &sources);

    // Twice: a refused permanent redirect is not stored as a move.
    for round in 0..2 {
        let reports = poll_all(dir.path(), &text).await;
        for (name, host, addr) in [
            ("to-ip", "127.0.0.2", "127.0.0.2"),
            ("to-mapped", "[::ffff:7f00:2]", "::ffff:127.0.0.2"),
            ("to-hex", "127.0.0.2", "127.0.0.2"),
        ] {
            assert!(
                reports[name].starts_with(&format!(
                    "{name}: error: refused: {host} is {addr}, a private or local address"
                )),
                "round {round}: {}",
                reports[name]
            );
        }
        assert!(
            reports["to-name"].starts_with("to-name: error: refused: localhost is "),
            "round {round}: {}",
            reports["to-name"]
        );
        assert!(
            reports["plain"].starts_with("plain: 1 new") || round == 1,
            "{}",
            reports["plain"]
        );
    }
    assert_eq!(
        ip_hits.load(Ordering::SeqCst),
        0,
        "a connection reached 127.0.0.2"
    );
    assert_eq!(
        name_hits.load(Ordering::SeqCst),
        0,
        "a connection reached localhost"
    );

    // The refusal is the source's status, one line.
    let config = config::load(&dir.path().join("feedmerge.toml")).unwrap();
    let statuses = app::sources(&config).await.unwrap();
    let to_ip = statuses.iter().find(|s| s.name == "to-ip").unwrap();
    let error = to_ip.last_error.as_deref().unwrap();
    assert!(
        error.starts_with("refused: 127.0.0.2 is 127.0.0.2"),
        "{error}"
    );
    assert!(!error.contains('\n'));
    assert_eq!(
        to_ip.current_url, to_ip.url,
        "a refused redirect moved the source"
    );
    let to_name = statuses.iter().find(|s| s.name == "to-name").unwrap();
    assert_eq!(
        to_name.current_url, to_name.url,
        "a refused redirect moved the source"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_named_in_the_config_may_be_private_and_the_guard_can_be_turned_off() {
    let (ip_port, ip_hits, _stop_ip) = trap("127.0.0.2:0").await;
    let routes = HashMap::from([
        (
            "to-ip".to_string(),
            (
                StatusCode::FOUND,
                format!("http://127.0.0.2:{ip_port}/feed"),
            ),
        ),
        ("plain".to_string(), (StatusCode::OK, PLAIN.to_string())),
    ]);
    let (port, _stop) = serve_paths(routes).await;
    let dir = tempfile::tempdir().unwrap();

    // A name written in the config resolves to loopback and is fetched.
    let named = config_text("", &[("by-name", format!("http://localhost:{port}/plain"))]);
    let reports = poll_all(dir.path(), &named).await;
    assert!(
        reports["by-name"].starts_with("by-name: 1 new"),
        "{reports:?}"
    );

    // With the guard off, the redirect is followed.
    let open = config_text(
        "allow_private_networks = true",
        &[("to-ip", format!("http://127.0.0.1:{port}/to-ip"))],
    );
    let reports = poll_all(dir.path(), &open).await;
    assert!(reports["to-ip"].starts_with("to-ip: 1 new"), "{reports:?}");
    assert_eq!(ip_hits.load(Ordering::SeqCst), 1);
}
