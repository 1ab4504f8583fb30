//! Wiring: opens the store, starts the server and the scheduler, runs the
//! first poll of every source, and shuts everything down in order.
//!
//! Shutdown is passed in as a [`CancellationToken`]. Every task goes through
//! one [`TaskTracker`]; on cancellation the scheduler stops firing, in-flight
//! polls finish or time out, the server stops, and sled is flushed last.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};
use url::Url;

use crate::config::{Config, RetentionConfig, SourceConfig, SourceLocation};
use crate::feeds::Selector;
use crate::fetch::Fetcher;
use crate::poll::{self, Due, Pipeline, PollReport};
use crate::schedule::{self, Scheduler};
use crate::server::{self, ServerState};
use crate::status::{self, SourceStatus, StoryReport};
use crate::store::{Retention, Store, StoreError, StoreOptions};

/// Time allowed for the daemon's API to answer `feedmerge sources`.
const API_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed, beyond the longest fetch timeout, for shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Everything a poll needs; shared by the scheduler's callbacks.
struct Poller {
    config: Arc<Config>,
    pipeline: Pipeline,
    /// Sources with a poll in flight: a source is never polled twice at once.
    busy: Mutex<HashSet<String>>,
}

/// Marks a source busy for as long as it lives.
struct Busy<'a> {
    set: &'a Mutex<HashSet<String>>,
    name: String,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.name);
    }
}

impl Poller {
    fn claim(&self, name: &str) -> Option<Busy<'_>> {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        if !busy.insert(name.to_string()) {
            debug!(source = %name, "previous poll still running; skipped");
            return None;
        }
        Some(Busy {
            set: &self.busy,
            name: name.to_string(),
        })
    }

    /// Polls `source` unless a poll of it is already running.
    async fn poll(&self, source: &SourceConfig, due: Due) -> Option<PollReport> {
        let _busy = self.claim(&source.name)?;
        Some(poll::poll_source(&self.pipeline, source, due).await)
    }

    /// A scheduled poll: claims the source, waits its jitter offset (unless
    /// shutdown comes first), then polls it if it is due.
    async fn scheduled_poll(&self, source: &SourceConfig, stop: &CancellationToken) {
        let Some(_busy) = self.claim(&source.name) else {
            return;
        };
        let offset = schedule::jitter_offset(&source.name, self.config.poll.jitter);
        tokio::select! {
            () = tokio::time::sleep(offset) => {}
            () = stop.cancelled() => return,
        }
        poll::poll_source(&self.pipeline, source, Due::Respect).await;
    }

    /// Polls every source once (`only`: just that one), a few at a time:
    /// only as many polls exist at once as may fetch at once, so a round
    /// over thousands of sources stays small in memory.
    async fn poll_round(&self, only: Option<&str>, due: Due) -> Vec<PollReport> {
        let sources = self
            .config
            .sources
            .iter()
            .filter(|s| only.is_none_or(|name| s.name == name));
        let limit = self.config.poll.max_in_flight.max(1);
        let mut reports = Vec::new();
        let mut running = FuturesUnordered::new();
        for source in sources {
            if running.len() >= limit {
                if let Some(report) = running.next().await {
                    reports.extend(report);
                }
            }
            running.push(self.poll(source, due));
        }
        while let Some(report) = running.next().await {
            reports.extend(report);
        }
        reports
    }
}

fn open_store(config: &Config) -> anyhow::Result<Store> {
    Store::open(&config.storage.path, store_options(config)).map_err(anyhow::Error::from)
}

/// The store's options, from the config.
fn store_options(config: &Config) -> StoreOptions {
    StoreOptions {
        cache_capacity: config.storage.cache_capacity,
    }
}

/// The retention limits, from the config.
fn retention(config: &RetentionConfig) -> Retention {
    Retention {
        max_age: config.max_age,
        max_per_source: config.max_per_source,
        max_total: config.max_total,
        tombstone_age: config.tombstone_age,
    }
}

/// A source's URL as written in the config, for an http(s) source.
fn source_url(source: &SourceConfig) -> Option<&Url> {
    match &source.location {
        SourceLocation::Http(url) => Some(url),
        SourceLocation::File(_) => None,
    }
}

fn new_poller(config: Arc<Config>, store: Store) -> Poller {
    let fetcher = Fetcher::new(&config.poll, config.sources.iter().filter_map(source_url));
    Poller {
        pipeline: Pipeline::new(
            fetcher,
            store,
            config.poll.max_backoff,
            config.dedup.clone(),
            config.intake.limits(),
        ),
        config,
        busy: Mutex::new(HashSet::new()),
    }
}

/// A started daemon.
pub struct Daemon {
    local_addr: SocketAddr,
    first_round: watch::Receiver<bool>,
    main: JoinHandle<anyhow::Result<()>>,
}

impl Daemon {
    /// The address the HTTP server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Waits until the first poll of every source has finished.
    pub async fn first_round_done(&self) {
        let mut rx = self.first_round.clone();
        // An error means the daemon is gone; nothing more to wait for.
        let _ = rx.wait_for(|done| *done).await;
    }

    /// Waits for the daemon to stop (after its shutdown token is cancelled).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.main.await.context("daemon task failed")?
    }
}

/// Starts the daemon: store, server, first poll round, scheduler. It runs
/// until `shutdown` is cancelled.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Daemon> {
    let config = Arc::new(config);
    let store = open_store(&config)?;
    let poller = Arc::new(new_poller(Arc::clone(&config), store.clone()));
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let local_addr = listener.local_addr()?;
    let tracker = TaskTracker::new();

    let router = server::router(ServerState {
        config: Arc::clone(&config),
        store: store.clone(),
    });
    let server_stop = shutdown.clone();
    let limits = config.server.clone();
    let server = tracker.spawn(async move {
        server::serve(listener, router, &limits, server_stop).await;
        Ok::<(), std::io::Error>(())
    });
    info!(addr = %local_addr, sources = config.sources.len(), "serving feeds");

    let (round_tx, first_round) = watch::channel(false);
    let round_poller = Arc::clone(&poller);
    let round_stop = shutdown.clone();
    tracker.spawn(async move {
        tokio::select! {
            reports = round_poller.poll_round(None, Due::Respect) => {
                let failed = reports.iter().filter(|r| r.outcome.is_err()).count();
                info!(polled = reports.len(), failed, "first poll round done");
            }
            () = round_stop.cancelled() => {}
        }
        round_tx.send_replace(true);
    });

    // Retention: prune on a fixed period until shutdown.
    let prune_store = store.clone();
    let prune_stop = shutdown.clone();
    let every = config.retention.every;
    let limits = retention(&config.retention);
    tracker.spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = prune_stop.cancelled() => return,
            }
            let store = prune_store.clone();
            let rules = limits.clone();
            let pruned =
                tokio::task::spawn_blocking(move || store.prune(chrono::Utc::now(), &rules)).await;
            match pruned {
                Ok(Ok(counts)) => {
                    if counts.pruned > 0 || counts.tombstones_expired > 0 {
                        info!(
                            pruned = counts.pruned,
                            tombstones_expired = counts.tombstones_expired,
                            "pruned"
                        );
                    }
                    if let Err(e) = prune_store.flush().await {
                        warn!(error = %e, "flush after pruning");
                    }
                }
                Ok(Err(e)) => warn!(error = %e, "pruning failed"),
                Err(e) => warn!(error = %e, "pruning task failed"),
            }
        }
    });

    // The scheduler may keep its jobs after shutdown; they hold the poller
    // weakly so the store (and its lock) is released when the daemon stops.
    let job_poller = Arc::downgrade(&poller);
    let job_tracker = tracker.clone();
    let job_stop = shutdown.clone();
    let scheduler = Scheduler::start(&config.sources, move |name| {
        if job_stop.is_cancelled() {
            return;
        }
        let Some(poller) = job_poller.upgrade() else {
            return;
        };
        let Some(source) = poller.config.source(name).cloned() else {
            return;
        };
        let stop = job_stop.clone();
        job_tracker.spawn(async move { poller.scheduled_poll(&source, &stop).await });
    })
    .await?;

    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        debug!(error = %e, "sd_notify ready failed");
    }

    let longest_fetch = config
        .sources
        .iter()
        .map(|s| s.timeout)
        .max()
        .unwrap_or_default();
    let main = tokio::spawn(async move {
        shutdown.cancelled().await;
        // The scheduler's jobs hold the poller weakly; this task keeps it
        // alive until shutdown.
        drop(poller);
        info!("shutting down");
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        if let Err(e) = scheduler.shutdown().await {
            warn!(error = %e, "scheduler shutdown");
        }
        tracker.close();
        if tokio::time::timeout(longest_fetch + SHUTDOWN_GRACE, tracker.wait())
            .await
            .is_err()
        {
            warn!("some tasks did not finish in time");
        }
        if server.is_finished() {
            match server.await {
                Ok(Err(e)) => warn!(error = %e, "server error"),
                Err(e) => warn!(error = %e, "server task failed"),
                Ok(Ok(())) => {}
            }
        }
        store.flush().await.context("final flush")?;
        info!("stopped");
        Ok(())
    });

    Ok(Daemon {
        local_addr,
        first_round,
        main,
    })
}

/// Runs the daemon until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    start(config, shutdown).await?.wait().await
}

/// Polls every source (or just `only`) once and stores the results.
pub async fn fetch_once(config: Config, only: Option<&str>) -> anyhow::Result<Vec<PollReport>> {
    if let Some(name) = only {
        if config.source(name).is_none() {
            anyhow::bail!("{}: no source named {name:?}", config.path.display());
        }
    }
    let config = Arc::new(config);
    let store = open_store(&config)?;
    let poller = new_poller(Arc::clone(&config), store.clone());
    let reports = poller.poll_round(only, Due::Ignore).await;
    store.flush().await?;
    Ok(reports)
}

/// Renders a published feed from the store (`feed`: `None` for the merged one).
pub fn export(config: &Config, selector: Selector<'_>) -> anyhow::Result<String> {
    let store = open_store(config)?;
    crate::feeds::render(config, &store, selector)?
        .with_context(|| format!("{}: no such feed: {selector:?}", config.path.display()))
}

/// Which copies the story of entry `id` holds: from the store, or from the
/// daemon's `GET /api/entries/ID` when it holds the store.
pub async fn explain(config: &Config, id: &str) -> anyhow::Result<StoryReport> {
    match Store::open(&config.storage.path, store_options(config)) {
        Ok(store) => {
            status::explain(&store, id)?.with_context(|| format!("no stored entry or story {id:?}"))
        }
        Err(StoreError::Locked { .. }) => {
            let body = ask_daemon(config, &format!("api/entries/{id}")).await?;
            serde_json::from_slice(&body).context("unexpected answer from the daemon")
        }
        Err(e) => Err(e.into()),
    }
}

/// GETs `path` from the daemon that holds the store, found at
/// `server.listen`.
async fn ask_daemon(config: &Config, path: &str) -> anyhow::Result<Vec<u8>> {
    let mut addr = config.server.listen;
    if addr.port() == 0 {
        anyhow::bail!(
            "store {} is locked by a running daemon, and server.listen has port 0, \
             so its API cannot be found",
            config.storage.path.display()
        );
    }
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let url = format!("http://{addr}/{path}");
    let fetch = async {
        let response = reqwest::get(&url).await?.error_for_status()?;
        response.bytes().await
    };
    let body = tokio::time::timeout(API_TIMEOUT, fetch)
        .await
        .with_context(|| format!("the store is locked and {url} did not answer in time"))?
        .with_context(|| format!("the store is locked; asked the daemon at {url}"))?;
    Ok(body.to_vec())
}

/// The status of every source: from the store, or, when a daemon holds the
/// store, from that daemon's `GET /api/sources`.
pub async fn sources(config: &Config) -> anyhow::Result<Vec<SourceStatus>> {
    match Store::open(&config.storage.path, store_options(config)) {
        Ok(store) => Ok(status::statuses(config, &store)?),
        Err(StoreError::Locked { .. }) => {
            let body = ask_daemon(config, "api/sources").await?;
            serde_json::from_slice(&body).context("unexpected answer from the daemon")
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_source_is_never_polled_twice_at_once() {
        // A server that accepts and never answers keeps the first poll busy.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[storage]\npath = \"store\"\n[[sources]]\nname = \"silent\"\nurl = \"http://{addr}/feed\"\ntimeout = \"2s\"\n"
        );
        let config = crate::config::parse(&text, &dir.path().join("f.toml")).unwrap();
        let store = open_store(&config).unwrap();
        let poller = new_poller(Arc::new(config.clone()), store);
        let source = &config.sources[0];

        let mut first = Box::pin(poller.poll(source, Due::Ignore));
        assert!(futures_util::poll!(&mut first).is_pending());
        assert!(
            poller.poll(source, Due::Ignore).await.is_none(),
            "second poll must be skipped"
        );
        let report = first.await.expect("first poll runs");
        assert!(report.outcome.is_err());
        // Once the first finished, the source can be polled again.
        assert!(poller.poll(source, Due::Ignore).await.is_some());
        drop(listener);
    }
}
