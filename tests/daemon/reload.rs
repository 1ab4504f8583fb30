//! Reloading the config without a restart, on the real binary: SIGHUP
//! after adding a source, after breaking the file, and after removing a
//! source (its entries stay stored, unpublished); and `watch_config` picking up a file replaced by rename.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::header;
use axum::response::IntoResponse;
use axum::Router;

use super::{plain_http, BIN};

/// A feed server whose every path is a one-entry feed named after the
/// path; it counts the requests per path.
fn start_counting_server() -> (u16, Arc<std::sync::Mutex<HashMap<String, usize>>>) {
    let hits: Arc<std::sync::Mutex<HashMap<String, usize>>> = Arc::default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let counter = Arc::clone(&hits);
    let started = Arc::new(AtomicUsize::new(0));
    let ready = Arc::clone(&started);
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let router = Router::new().fallback(move |uri: axum::http::Uri| {
                let counter = Arc::clone(&counter);
                async move {
                    let name = uri.path().trim_start_matches('/').to_string();
                    *counter.lock().unwrap().entry(name.clone()).or_default() += 1;
                    (
                        [(header::CONTENT_TYPE, "application/rss+xml")],
                        format!(
                            "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>{name}</title>\
                             <item><guid>{name}-1</guid><title>{name} one</title></item></channel></rss>"
                        ),
                    )
                        .into_response()
                }
            });
            ready.store(1, Ordering::SeqCst);
            axum::serve(listener, router).await.unwrap();
        });
    });
    while started.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    (port, hits)
}

fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

fn config_text(listen: u16, watch: bool, feeds: u16, sources: &[&str]) -> String {
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:{listen}\"\nwatch_config = {watch}\n\
         [storage]\npath = \"store\"\n[poll]\njitter = \"0s\"\n\
         [defaults]\nschedule = \"*/1 * * * * *\"\n"
    );
    for name in sources {
        text.push_str(&format!(
            "[[sources]]\nname = \"{name}\"\nurl = \"http://127.0.0.1:{feeds}/{name}\"\n"
        ));
    }
    text
}

/// Waits up to 20 s for `check` to hold on what `path` serves.
fn wait_for(port: u16, path: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
    let url = format!("http://127.0.0.1:{port}/{path}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(body) = plain_http::get(&url) {
            if check(&body) {
                return body;
            }
            last = body;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("waited 20 s for {what}; /{path} last said: {last}");
}

fn last_reload(health: &str) -> serde_json::Value {
    let value: serde_json::Value = serde_json::from_str(health).unwrap_or_default();
    value["last_reload"].clone()
}

fn signal(child: &Child, name: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

fn spawn_daemon(config: &Path) -> Child {
    Command::new(BIN)
        .args(["run", "--config", config.to_str().unwrap()])
        .env("FEEDMERGE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn stop(mut child: Child) {
    signal(&child, "TERM");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "exit after SIGTERM");
}

#[test]
fn sighup_applies_the_config_file_and_a_broken_one_changes_nothing() {
    let (feeds, hits) = start_counting_server();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("feedmerge.toml");
    std::fs::write(&path, config_text(port, false, feeds, &["alpha"])).unwrap();
    let child = spawn_daemon(&path);
    wait_for(port, "feed.atom", "alpha's entry", |b| {
        b.contains("alpha one")
    });

    // A source added to the file polls and is served, with no restart.
    std::fs::write(&path, config_text(port, false, feeds, &["alpha", "beta"])).unwrap();
    signal(&child, "HUP");
    wait_for(port, "feed.atom", "beta's entry after SIGHUP", |b| {
        b.contains("beta one") && b.contains("alpha one")
    });
    let health = wait_for(port, "healthz", "the reload's result", |b| {
        last_reload(b)["ok"] == true
    });
    assert_eq!(
        last_reload(&health)["message"],
        "2 sources: 1 added, 0 removed, 0 changed",
        "{health}"
    );

    // A broken file is refused: the old config stays in force, and its
    // sources keep polling.
    let mut broken = config_text(port, false, feeds, &["alpha", "beta", "gamma"]);
    broken.push_str("surprise = 1\n");
    std::fs::write(&path, &broken).unwrap();
    signal(&child, "HUP");
    let health = wait_for(port, "healthz", "the refused reload", |b| {
        last_reload(b)["ok"] == false
    });
    let message = last_reload(&health)["message"]
        .as_str()
        .unwrap()
        .to_string();
    let line = broken.lines().count();
    assert!(
        message.starts_with(&format!(
            "{}:{line}:1: unknown field `surprise`",
            path.display()
        )),
        "{message}"
    );
    let alpha_before = hits.lock().unwrap()["alpha"];
    std::thread::sleep(Duration::from_millis(2_500));
    assert!(
        hits.lock().unwrap()["alpha"] > alpha_before,
        "alpha stopped polling after a refused reload"
    );
    assert!(!hits.lock().unwrap().contains_key("gamma"));
    let feed = plain_http::get(&format!("http://127.0.0.1:{port}/feed.atom")).unwrap();
    assert!(feed.contains("alpha one") && feed.contains("beta one"));

    // A removed source stops polling; what it stored stays until retention.
    std::fs::write(&path, config_text(port, false, feeds, &["beta"])).unwrap();
    signal(&child, "HUP");
    let health = wait_for(port, "healthz", "the removal", |b| {
        last_reload(b)["message"] == "1 sources: 0 added, 1 removed, 0 changed"
    });
    assert_eq!(last_reload(&health)["ok"], true);
    std::thread::sleep(Duration::from_millis(300));
    let alpha_after = hits.lock().unwrap()["alpha"];
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(
        hits.lock().unwrap()["alpha"],
        alpha_after,
        "a removed source was still polled"
    );
    // Its entries stay stored (until retention) but are no longer
    // published, as for a source removed before a restart.
    let feed = plain_http::get(&format!("http://127.0.0.1:{port}/feed.atom")).unwrap();
    assert!(
        !feed.contains("alpha one") && feed.contains("beta one"),
        "{feed}"
    );
    stop(child);
}

#[test]
fn watch_config_reloads_a_file_replaced_by_rename() {
    let (feeds, hits) = start_counting_server();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("feedmerge.toml");
    std::fs::write(&path, config_text(port, true, feeds, &["alpha"])).unwrap();
    let child = spawn_daemon(&path);
    wait_for(port, "feed.atom", "alpha's entry", |b| {
        b.contains("alpha one")
    });

    // As editors save: a new file renamed over the old one.
    let next = dir.path().join(".feedmerge.toml.swp");
    std::fs::write(&next, config_text(port, true, feeds, &["alpha", "delta"])).unwrap();
    std::fs::rename(&next, &path).unwrap();
    wait_for(port, "feed.atom", "delta's entry without a signal", |b| {
        b.contains("delta one")
    });
    let health = plain_http::get(&format!("http://127.0.0.1:{port}/healthz")).unwrap();
    assert_eq!(last_reload(&health)["ok"], true, "{health}");

    // A broken save is refused the same way: the daemon serves on, and
    // health says why.
    let mut broken = config_text(port, true, feeds, &["alpha", "delta", "omega"]);
    broken.push_str("surprise = 1\n");
    std::fs::write(&next, &broken).unwrap();
    std::fs::rename(&next, &path).unwrap();
    let health = wait_for(port, "healthz", "the refused reload", |b| {
        last_reload(b)["ok"] == false
    });
    let message = last_reload(&health)["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("unknown field `surprise`"), "{message}");
    let feed = plain_http::get(&format!("http://127.0.0.1:{port}/feed.atom")).unwrap();
    assert!(feed.contains("alpha one") && feed.contains("delta one"));
    assert!(!hits.lock().unwrap().contains_key("omega"));

    // Fixing the file applies it.
    std::fs::write(
        &next,
        config_text(port, true, feeds, &["alpha", "delta", "omega"]),
    )
    .unwrap();
    std::fs::rename(&next, &path).unwrap();
    wait_for(port, "feed.atom", "omega's entry after the fix", |b| {
        b.contains("omega one")
    });
    stop(child);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_in_flight_for_a_removed_source_ends_without_writing() {
    // A server that accepts and never answers keeps the poll in flight.
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hung_addr = hung.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hung.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("feedmerge.toml");
    let with_hung = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = \"store\"\n\
         [defaults]\nschedule = \"0 0 0 1 1 *\"\ntimeout = \"60s\"\n\
         [[sources]]\nname = \"hung\"\nurl = \"http://{hung_addr}/feed\"\n"
    );
    std::fs::write(&path, &with_hung).unwrap();
    let config = feedmerge::config::load(&path).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let daemon = feedmerge::app::start(config.clone(), stop.clone())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while accepted.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the poll never connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\npath = \"store\"\n",
    )
    .unwrap();
    let started = Instant::now();
    let status = daemon.reloader().reload().await.unwrap();
    assert!(status.ok, "{status:?}");
    assert_eq!(status.message, "0 sources: 0 added, 1 removed, 0 changed");
    // The reload did not wait out the 60 s fetch: the poll was cancelled.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    daemon.first_round_done().await;
    stop.cancel();
    daemon.wait().await.unwrap();

    // Nothing was written under the removed source's name.
    let store = feedmerge::store::Store::open(
        &config.storage.path,
        feedmerge::store::StoreOptions::with_cache(1 << 20),
    )
    .unwrap();
    assert_eq!(store.source_state("hung").unwrap(), None);
}
