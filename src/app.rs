//! Wiring: opens the store, starts the server and the scheduler, runs the
//! first poll of every source, and shuts everything down in order.
//!
//! Shutdown is passed in as a [`CancellationToken`]. Every task goes through
//! one [`TaskTracker`]; on cancellation the scheduler stops firing, in-flight
//! polls finish or time out, the server stops, and sled is flushed last.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock, Weak};
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

use crate::config::{Config, ConfigError, RetentionConfig, SourceConfig, SourceLocation};
use crate::control;
use crate::feeds::Selector;
use crate::fetch::Fetcher;
use crate::metrics::Metrics;
use crate::poll::{self, Due, Pipeline, PollReport};
use crate::schedule::{self, Scheduler};
use crate::server::{self, ServerState};
use crate::status::{self, FetchSummary, ReloadStatus, SourceStatus, StoryReport};
use crate::store::{Retention, Store, StoreError, StoreOptions};

/// Time allowed, beyond the longest fetch timeout, for shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Everything a poll needs under one version of the config; a reload
/// builds a new one. Shared by the scheduler's callbacks.
struct Poller {
    config: Arc<Config>,
    pipeline: Pipeline,
    /// Sources with a poll in flight: a source is never polled twice at
    /// once. Shared by every version, so a reload sees the old polls.
    busy: Arc<Mutex<HashSet<String>>>,
    /// Per source: cancelled when a reload removes or changes the source,
    /// which ends its poll in flight before anything is written.
    stops: HashMap<String, CancellationToken>,
    /// Per source: how long after its cron time a scheduled poll starts.
    offsets: HashMap<String, Duration>,
}

/// Marks a source busy for as long as it lives.
struct Busy {
    set: Arc<Mutex<HashSet<String>>>,
    name: String,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.name);
    }
}

impl Poller {
    fn claim(&self, name: &str) -> Option<Busy> {
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        if !busy.insert(name.to_string()) {
            debug!(source = %name, "previous poll still running; skipped");
            return None;
        }
        Some(Busy {
            set: Arc::clone(&self.busy),
            name: name.to_string(),
        })
    }

    fn stop_of(&self, name: &str) -> CancellationToken {
        self.stops.get(name).cloned().unwrap_or_default()
    }

    /// Polls `source` unless a poll of it is already running.
    async fn poll(&self, source: &SourceConfig, due: Due) -> Option<PollReport> {
        let _busy = self.claim(&source.name)?;
        let stop = self.stop_of(&source.name);
        Some(poll::poll_source(&self.pipeline, source, due, &stop).await)
    }

    /// A scheduled poll: claims the source, waits its jitter offset (unless
    /// shutdown or a reload comes first), then polls it if it is due.
    async fn scheduled_poll(&self, source: &SourceConfig, shutdown: &CancellationToken) {
        let Some(_busy) = self.claim(&source.name) else {
            return;
        };
        let stop = self.stop_of(&source.name);
        let offset = self.offsets.get(&source.name).copied().unwrap_or_default();
        tokio::select! {
            () = tokio::time::sleep(offset) => {}
            () = shutdown.cancelled() => return,
            () = stop.cancelled() => return,
        }
        poll::poll_source(&self.pipeline, source, Due::Respect, &stop).await;
    }

    /// Polls every source once (`only`: just that one), a few at a time:
    /// only as many polls exist at once as may fetch at once, so a round
    /// over thousands of sources stays small in memory.
    async fn poll_round(
        &self,
        only: Option<&str>,
        due: Due,
        progress: &(dyn Fn(&PollReport) + Sync),
    ) -> Vec<PollReport> {
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
                if let Some(Some(report)) = running.next().await {
                    progress(&report);
                    reports.push(report);
                }
            }
            running.push(self.poll(source, due));
        }
        while let Some(report) = running.next().await {
            if let Some(report) = report {
                progress(&report);
                reports.push(report);
            }
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

fn new_fetcher(config: &Config) -> Fetcher {
    Fetcher::new(&config.poll, config.sources.iter().filter_map(source_url))
}

fn new_poller(config: Arc<Config>, store: Store, metrics: Arc<Metrics>) -> Poller {
    poller_with(config, store, None, Arc::default(), metrics)
}

/// A poller for `config`, reusing `fetcher` (its slots and clients) when
/// given.
fn poller_with(
    config: Arc<Config>,
    store: Store,
    fetcher: Option<Fetcher>,
    busy: Arc<Mutex<HashSet<String>>>,
    metrics: Arc<Metrics>,
) -> Poller {
    let fetcher = fetcher.unwrap_or_else(|| new_fetcher(&config));
    Poller {
        pipeline: Pipeline::new(
            fetcher,
            store,
            config.poll.max_backoff,
            config.dedup.clone(),
            config.intake.clone(),
            metrics,
        ),
        stops: config
            .sources
            .iter()
            .map(|s| (s.name.clone(), CancellationToken::new()))
            .collect(),
        offsets: {
            // Sources mostly share a few schedules: each is parsed once.
            let now = chrono::Utc::now();
            let mut intervals = HashMap::new();
            config
                .sources
                .iter()
                .map(|s| {
                    let interval = *intervals
                        .entry(s.schedule.as_str())
                        .or_insert_with(|| schedule::interval(&s.schedule, now));
                    let bound = schedule::jitter_bound(config.poll.jitter, interval);
                    (s.name.clone(), schedule::jitter_offset(&s.name, bound))
                })
                .collect()
        },
        config,
        busy,
    }
}

/// The running daemon's parts that a reload replaces, and what it needs to
/// replace them.
struct Core {
    store: Store,
    metrics: Arc<Metrics>,
    /// The config in force; the server reads it from here per request.
    config: watch::Sender<Arc<Config>>,
    poller: RwLock<Arc<Poller>>,
    scheduler: tokio::sync::Mutex<Option<Scheduler>>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    /// The last reload's result, for `/healthz`.
    last_reload: Arc<Mutex<Option<ReloadStatus>>>,
    /// A digest of the config file's text in force (for `watch_config`).
    applied_text: Mutex<u64>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
}

impl Core {
    fn poller(&self) -> Arc<Poller> {
        Arc::clone(&self.poller.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn current(&self) -> Arc<Config> {
        Arc::clone(&self.config.borrow())
    }

    /// Starts one cron job per source of `config`; each firing polls the
    /// source as the config then in force describes it.
    async fn schedule(self: &Arc<Self>, config: &Config) -> anyhow::Result<Scheduler> {
        // The scheduler may keep its jobs after shutdown; they hold the
        // core weakly so the store (and its lock) is released when the
        // daemon stops.
        let core = Arc::downgrade(self);
        let scheduler = Scheduler::start(&config.sources, move |name| {
            let Some(core) = core.upgrade() else {
                return;
            };
            if core.shutdown.is_cancelled() {
                return;
            }
            let poller = core.poller();
            let Some(source) = poller.config.source(name).cloned() else {
                return;
            };
            if let Some(lag) = schedule::lag(&source.schedule, chrono::Utc::now()) {
                core.metrics.scheduler_lag(lag);
            }
            let shutdown = core.shutdown.clone();
            core.tracker
                .spawn(async move { poller.scheduled_poll(&source, &shutdown).await });
        })
        .await?;
        Ok(scheduler)
    }

    /// Reads the config file again and applies it; on any error the daemon
    /// keeps the config it has. The result is logged and kept for
    /// `/healthz`.
    async fn reload(self: &Arc<Self>) -> ReloadStatus {
        let _one = self.reloading.lock().await;
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
        let old = self.current();
        let result = match read_config(&old.path) {
            Ok((new, digest)) => {
                let summary = self.apply(&old, new).await;
                *self.applied_text.lock().unwrap_or_else(|e| e.into_inner()) = digest;
                summary
            }
            Err(e) => Err(format!("{e:#}")),
        };
        let status = ReloadStatus {
            at: chrono::Utc::now(),
            ok: result.is_ok(),
            message: match result {
                Ok(summary) | Err(summary) => summary,
            },
        };
        if status.ok {
            info!(result = %status.message, "config reloaded");
        } else {
            warn!(error = %status.message, "config reload failed; running on the previous config");
        }
        self.metrics.reload(status.ok, status.at.timestamp());
        *self.last_reload.lock().unwrap_or_else(|e| e.into_inner()) = Some(status.clone());
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        status
    }

    /// Puts `new` in force in place of `old`: polls of removed or changed
    /// sources are stopped (and waited for) first, then the poller, the
    /// served config and the schedule are replaced, and added or changed
    /// sources are polled at once. Keys that need a restart keep their old
    /// values.
    async fn apply(self: &Arc<Self>, old: &Config, mut new: Config) -> Result<String, String> {
        let mut restart = old.server.needs_restart(&new.server);
        new.server.listen = old.server.listen;
        new.server.header_read_timeout = old.server.header_read_timeout;
        new.server.request_timeout = old.server.request_timeout;
        new.server.max_connections = old.server.max_connections;
        if new.storage != old.storage {
            restart.push("storage");
            new.storage = old.storage.clone();
        }

        let added: Vec<String> = new
            .sources
            .iter()
            .filter(|s| old.source(&s.name).is_none())
            .map(|s| s.name.clone())
            .collect();
        let removed: Vec<String> = old
            .sources
            .iter()
            .filter(|s| new.source(&s.name).is_none())
            .map(|s| s.name.clone())
            .collect();
        let changed: Vec<String> = new
            .sources
            .iter()
            .filter(|s| old.source(&s.name).is_some_and(|o| o != *s))
            .map(|s| s.name.clone())
            .collect();

        // The schedule is checked before anything changes.
        let scheduler = self.schedule(&new).await.map_err(|e| format!("{e:#}"))?;

        // Polls of removed or changed sources end before the new config is
        // in force, so none writes under the old one afterwards.
        let old_poller = self.poller();
        let stopping: Vec<&String> = removed.iter().chain(&changed).collect();
        for name in &stopping {
            old_poller.stop_of(name).cancel();
        }
        let bound = longest_fetch(old) + SHUTDOWN_GRACE;
        let waited = tokio::time::timeout(bound, async {
            loop {
                let running = {
                    let busy = old_poller.busy.lock().unwrap_or_else(|e| e.into_inner());
                    stopping.iter().any(|name| busy.contains(*name))
                };
                if !running {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        if waited.is_err() {
            warn!("polls of removed or changed sources did not end in time");
        }

        let fetcher = (new.poll == old.poll).then(|| {
            let fetcher = old_poller.pipeline.fetcher().clone();
            fetcher.name_hosts(new.sources.iter().filter_map(source_url));
            fetcher
        });
        let new = Arc::new(new);
        let poller = Arc::new(poller_with(
            Arc::clone(&new),
            self.store.clone(),
            fetcher,
            Arc::clone(&old_poller.busy),
            Arc::clone(&self.metrics),
        ));
        *self.poller.write().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&poller);
        self.config.send_replace(Arc::clone(&new));
        crate::logging::set_level(&new.log.level);
        if let Some(previous) = self.scheduler.lock().await.replace(scheduler) {
            if let Err(e) = previous.shutdown().await {
                warn!(error = %e, "old schedule did not stop");
            }
        }
        for name in added.iter().chain(&changed) {
            if let Some(source) = new.source(name).cloned() {
                let poller = Arc::clone(&poller);
                self.tracker
                    .spawn(async move { poller.poll(&source, Due::Respect).await });
            }
        }

        let mut summary = format!(
            "{} sources: {} added, {} removed, {} changed",
            new.sources.len(),
            added.len(),
            removed.len(),
            changed.len()
        );
        if !restart.is_empty() {
            summary.push_str(&format!(
                "; needs a restart to apply: {}",
                restart.join(", ")
            ));
            warn!(keys = %restart.join(", "), "config keys changed that need a restart");
        }
        Ok(summary)
    }
}

/// Reads and checks the config file at `path`; also returns a digest of
/// its text.
fn read_config(path: &Path) -> Result<(Config, u64), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let config = crate::config::parse(&text, path)?;
    Ok((config, digest(&text)))
}

fn digest(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

/// The longest fetch any source of `config` may take.
fn longest_fetch(config: &Config) -> Duration {
    config
        .sources
        .iter()
        .map(|s| s.timeout)
        .max()
        .unwrap_or_default()
}

/// How often `watch_config` looks at the file; a change is applied once the
/// file has read the same twice in a row (editors write in steps).
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// Reloads when the config file's text changes (by any write, or a rename
/// over it), while `server.watch_config` is on.
async fn watch_config(core: Weak<Core>, shutdown: CancellationToken) {
    let mut pending: Option<u64> = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(WATCH_EVERY) => {}
            () = shutdown.cancelled() => return,
        }
        let Some(core) = core.upgrade() else {
            return;
        };
        let config = core.current();
        if !config.server.watch_config {
            continue;
        }
        let Ok(text) = tokio::fs::read_to_string(&config.path).await else {
            // Mid-rename, or gone: look again next time.
            continue;
        };
        let now = digest(&text);
        let applied = *core.applied_text.lock().unwrap_or_else(|e| e.into_inner());
        if now == applied {
            pending = None;
        } else if pending == Some(now) {
            pending = None;
            info!(path = %config.path.display(), "config file changed");
            core.reload().await;
            // A broken file is not tried again until it changes.
            *core.applied_text.lock().unwrap_or_else(|e| e.into_inner()) = now;
        } else {
            pending = Some(now);
        }
    }
}

/// A started daemon.
pub struct Daemon {
    local_addr: SocketAddr,
    first_round: watch::Receiver<bool>,
    core: Weak<Core>,
    main: JoinHandle<anyhow::Result<()>>,
}

/// Triggers reloads of a running daemon (what SIGHUP does).
#[derive(Clone)]
pub struct Reloader {
    core: Weak<Core>,
}

impl Reloader {
    /// Reloads the config file; `None` once the daemon has stopped.
    pub async fn reload(&self) -> Option<ReloadStatus> {
        let core = self.core.upgrade()?;
        Some(core.reload().await)
    }
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

    /// A handle that reloads this daemon's config.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            core: Weak::clone(&self.core),
        }
    }

    /// Waits for the daemon to stop (after its shutdown token is cancelled).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.main.await.context("daemon task failed")?
    }
}

/// Starts the daemon: store, server, first poll round, scheduler. It runs
/// until `shutdown` is cancelled.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Daemon> {
    let initial_text = std::fs::read_to_string(&config.path)
        .map(|text| digest(&text))
        .unwrap_or_default();
    let config = Arc::new(config);
    let store = open_store(&config)?;
    let metrics = Arc::new(Metrics::new(&config.storage.path));
    let poller = Arc::new(new_poller(
        Arc::clone(&config),
        store.clone(),
        Arc::clone(&metrics),
    ));
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let local_addr = listener.local_addr()?;
    let tracker = TaskTracker::new();
    let (config_tx, config_rx) = watch::channel(Arc::clone(&config));
    let last_reload = Arc::new(Mutex::new(None));
    let (round_tx, first_round) = watch::channel(false);
    let core = Arc::new(Core {
        store: store.clone(),
        metrics: Arc::clone(&metrics),
        config: config_tx,
        poller: RwLock::new(Arc::clone(&poller)),
        scheduler: tokio::sync::Mutex::new(None),
        tracker: tracker.clone(),
        shutdown: shutdown.clone(),
        last_reload: Arc::clone(&last_reload),
        applied_text: Mutex::new(initial_text),
        reloading: tokio::sync::Mutex::new(()),
    });

    let router = server::router(ServerState {
        config: config_rx.clone(),
        store: store.clone(),
        last_reload,
        metrics,
        ready: first_round.clone(),
        documents: Arc::default(),
    });
    let server_stop = shutdown.clone();
    let limits = config.server.clone();
    let server = tracker.spawn(async move {
        server::serve(listener, router, &limits, server_stop).await;
        Ok::<(), std::io::Error>(())
    });
    info!(addr = %local_addr, sources = config.sources.len(), "serving feeds");

    let round_poller = Arc::clone(&poller);
    let round_stop = shutdown.clone();
    tracker.spawn(async move {
        tokio::select! {
            reports = round_poller.poll_round(None, Due::Respect, &|_| {}) => {
                let failed = reports.iter().filter(|r| r.outcome.is_err()).count();
                info!(polled = reports.len(), failed, "first poll round done");
            }
            () = round_stop.cancelled() => {}
        }
        round_tx.send_replace(true);
    });
    drop(poller);

    // Retention: prune on a period until shutdown, with the limits in force.
    let prune_store = store.clone();
    let prune_stop = shutdown.clone();
    let prune_config = config_rx.clone();
    tracker.spawn(async move {
        loop {
            let every = prune_config.borrow().retention.every;
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = prune_stop.cancelled() => return,
            }
            let store = prune_store.clone();
            let rules = retention(&prune_config.borrow().retention);
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

    // The CLI's channel to this daemon: a socket in the store directory.
    let control_path = config.storage.path.clone();
    let control_routes = control_router(Arc::downgrade(&core));
    let control_stop = shutdown.clone();
    tracker.spawn(async move {
        if let Err(e) = control::serve(&control_path, control_routes, control_stop).await {
            warn!(error = %e, "control socket failed; the CLI cannot reach this daemon");
        }
    });

    let scheduler = core.schedule(&config).await?;
    *core.scheduler.lock().await = Some(scheduler);
    tracker.spawn(watch_config(Arc::downgrade(&core), shutdown.clone()));

    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        debug!(error = %e, "sd_notify ready failed");
    }
    tracker.spawn(crate::watchdog::run(store.clone(), shutdown.clone()));
    // WebSub pings, when a hub is configured (read anew after each change,
    // so a reload can add or drop it).
    tracker.spawn(crate::websub::run(
        config_rx.clone(),
        store.clone(),
        shutdown.clone(),
    ));

    let weak = Arc::downgrade(&core);
    let main = tokio::spawn(async move {
        shutdown.cancelled().await;
        info!("shutting down");
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        // No reload starts or finishes from here on.
        let no_reloads = core.reloading.lock().await;
        if let Some(scheduler) = core.scheduler.lock().await.take() {
            if let Err(e) = scheduler.shutdown().await {
                warn!(error = %e, "scheduler shutdown");
            }
        }
        let longest = longest_fetch(&core.current());
        tracker.close();
        if tokio::time::timeout(longest + SHUTDOWN_GRACE, tracker.wait())
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
        drop(no_reloads);
        // The scheduler's jobs and reloaders hold the core weakly; this
        // task kept it alive until now.
        drop(core);
        info!("stopped");
        Ok(())
    });

    Ok(Daemon {
        local_addr,
        first_round,
        core: weak,
        main,
    })
}

/// Runs the daemon until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    start(config, shutdown).await?.wait().await
}

/// Polls every source (or just `only`) once and stores the results.
pub async fn fetch_once(config: Config, only: Option<&str>) -> anyhow::Result<Vec<PollReport>> {
    check_source(&config, only)?;
    let store = open_store(&config)?;
    local_round(config, store, only, &|_| {}).await
}

/// Polls every source (or `only`) of `config` into `store`, here, now,
/// and flushes.
async fn local_round(
    config: Config,
    store: Store,
    only: Option<&str>,
    progress: &(dyn Fn(&PollReport) + Sync),
) -> anyhow::Result<Vec<PollReport>> {
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::new(&config.storage.path));
    let poller = new_poller(config, store.clone(), metrics);
    let reports = poller.poll_round(only, Due::Ignore, progress).await;
    store.flush().await?;
    Ok(reports)
}

fn check_source(config: &Config, only: Option<&str>) -> anyhow::Result<()> {
    if let Some(name) = only {
        if config.source(name).is_none() {
            anyhow::bail!("{}: no source named {name:?}", config.path.display());
        }
    }
    Ok(())
}

/// What `feedmerge fetch` does: polls every source (or `only`) now, here
/// or, when a daemon holds the store, in that daemon. `progress` hears of
/// each poll that ends here, with the number of sources.
pub async fn fetch(
    config: Config,
    only: Option<&str>,
    progress: &(dyn Fn(&PollReport, usize) + Sync),
) -> anyhow::Result<FetchSummary> {
    check_source(&config, only)?;
    match Store::open(&config.storage.path, store_options(&config)) {
        Ok(store) => {
            let total = only.map_or(config.sources.len(), |_| 1);
            let reports =
                local_round(config, store, only, &|report| progress(report, total)).await?;
            Ok(FetchSummary::of(&reports))
        }
        Err(StoreError::Locked { .. }) => {
            let query = only
                .map(|name| format!("?source={name}"))
                .unwrap_or_default();
            let body = ask_daemon(&config, "POST", &format!("/fetch{query}")).await?;
            serde_json::from_slice(&body).context("unexpected answer from the daemon")
        }
        Err(e) => Err(e.into()),
    }
}

/// What `feedmerge compact` does: rebuilds the store (blocking). A store
/// that a daemon holds is refused: stop it first.
pub fn compact(config: &Config) -> anyhow::Result<crate::store::Rebuilt> {
    match Store::compact(&config.storage.path, store_options(config)) {
        Ok(rebuilt) => Ok(rebuilt),
        Err(e @ StoreError::Locked { .. }) => Err(anyhow::Error::new(e)
            .context("a daemon holds the store: stop it (systemctl stop feedmerge), then compact")),
        Err(e) => Err(e.into()),
    }
}

/// Renders a published feed: from the store, or from the daemon that
/// holds it.
pub async fn export(config: &Config, selector: Selector<'_>) -> anyhow::Result<String> {
    match Store::open(&config.storage.path, store_options(config)) {
        Ok(store) => crate::feeds::render(config, &store, selector)?
            .with_context(|| format!("{}: no such feed: {selector:?}", config.path.display())),
        Err(StoreError::Locked { .. }) => {
            let query = match selector {
                Selector::Merged => String::new(),
                Selector::Output(name) => format!("?feed={name}"),
                Selector::Source(name) => format!("?source={name}"),
            };
            let body = ask_daemon(config, "GET", &format!("/export{query}")).await?;
            String::from_utf8(body).context("the daemon's feed is not UTF-8")
        }
        Err(e) => Err(e.into()),
    }
}

/// Which copies the story of entry `id` holds: from the store, or from the
/// daemon that holds it.
pub async fn explain(config: &Config, id: &str) -> anyhow::Result<StoryReport> {
    match Store::open(&config.storage.path, store_options(config)) {
        Ok(store) => {
            status::explain(&store, id)?.with_context(|| format!("no stored entry or story {id:?}"))
        }
        Err(StoreError::Locked { .. }) => {
            let body = ask_daemon(config, "GET", &format!("/entries/{}", encode_path(id))).await?;
            serde_json::from_slice(&body).context("unexpected answer from the daemon")
        }
        Err(e) => Err(e.into()),
    }
}

/// The status of every source: from the store, or from the daemon that
/// holds it.
pub async fn sources(config: &Config) -> anyhow::Result<Vec<SourceStatus>> {
    match Store::open(&config.storage.path, store_options(config)) {
        Ok(store) => Ok(status::statuses(config, &store)?),
        Err(StoreError::Locked { .. }) => {
            let body = ask_daemon(config, "GET", "/sources").await?;
            serde_json::from_slice(&body).context("unexpected answer from the daemon")
        }
        Err(e) => Err(e.into()),
    }
}

/// Makes the daemon that holds the store reload its config file.
pub async fn reload(config: &Config) -> anyhow::Result<ReloadStatus> {
    match Store::open(&config.storage.path, store_options(config)) {
        Ok(_) => anyhow::bail!(
            "no daemon is running on store {}: nothing to reload",
            config.storage.path.display()
        ),
        Err(StoreError::Locked { .. }) => {
            let body = ask_daemon(config, "POST", "/reload").await?;
            serde_json::from_slice(&body).context("unexpected answer from the daemon")
        }
        Err(e) => Err(e.into()),
    }
}

/// Asks the daemon that holds the store, over its control socket.
async fn ask_daemon(config: &Config, method: &str, path: &str) -> anyhow::Result<Vec<u8>> {
    Ok(control::ask(&config.storage.path, method, path).await?)
}

/// `text` safe as one path segment.
fn encode_path(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// The control socket's routes: what the CLI asks a running daemon.
fn control_router(core: Weak<Core>) -> axum::Router {
    use axum::extract::{Path as UrlPath, Query, State};
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, post};

    #[derive(serde::Deserialize)]
    struct Which {
        source: Option<String>,
        feed: Option<String>,
    }
    type CoreRef = State<Weak<Core>>;
    fn gone() -> Response {
        (StatusCode::SERVICE_UNAVAILABLE, "the daemon is stopping\n").into_response()
    }
    fn failed(e: impl std::fmt::Display) -> Response {
        (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
    }
    async fn fetch(State(core): CoreRef, Query(which): Query<Which>) -> Response {
        let Some(core) = core.upgrade() else {
            return gone();
        };
        let poller = core.poller();
        if let Err(e) = check_source(&poller.config, which.source.as_deref()) {
            return (StatusCode::NOT_FOUND, format!("{e:#}\n")).into_response();
        }
        // A task of the daemon's, not of this request: a client that goes
        // away does not cut polls short.
        let only = which.source;
        let round = core.tracker.spawn(async move {
            poller
                .poll_round(only.as_deref(), Due::Ignore, &|_| {})
                .await
        });
        match round.await {
            Ok(reports) => axum::Json(FetchSummary::of(&reports)).into_response(),
            Err(e) => failed(e),
        }
    }
    async fn reload(State(core): CoreRef) -> Response {
        match core.upgrade() {
            Some(core) => axum::Json(core.reload().await).into_response(),
            None => gone(),
        }
    }
    async fn sources(State(core): CoreRef) -> Response {
        let Some(core) = core.upgrade() else {
            return gone();
        };
        match status::statuses(&core.current(), &core.store) {
            Ok(list) => axum::Json(list).into_response(),
            Err(e) => failed(e),
        }
    }
    async fn entry(State(core): CoreRef, UrlPath(id): UrlPath<String>) -> Response {
        let Some(core) = core.upgrade() else {
            return gone();
        };
        match status::explain(&core.store, &id) {
            Ok(Some(report)) => axum::Json(report).into_response(),
            Ok(None) => (
                StatusCode::NOT_FOUND,
                format!("no stored entry or story {id:?}\n"),
            )
                .into_response(),
            Err(e) => failed(e),
        }
    }
    async fn export(State(core): CoreRef, Query(which): Query<Which>) -> Response {
        let Some(core) = core.upgrade() else {
            return gone();
        };
        let config = core.current();
        let store = core.store.clone();
        let rendered = tokio::task::spawn_blocking(move || {
            let selector = match (&which.feed, &which.source) {
                (Some(name), _) => Selector::Output(name),
                (None, Some(name)) => Selector::Source(name),
                (None, None) => Selector::Merged,
            };
            crate::feeds::render(&config, &store, selector)
                .map(|xml| (xml, format!("{selector:?}")))
        })
        .await;
        match rendered {
            Ok(Ok((Some(xml), _))) => xml.into_response(),
            Ok(Ok((None, what))) => {
                (StatusCode::NOT_FOUND, format!("no such feed: {what}\n")).into_response()
            }
            Ok(Err(e)) => failed(e),
            Err(e) => failed(e),
        }
    }
    axum::Router::new()
        .route("/fetch", post(fetch))
        .route("/reload", post(reload))
        .route("/sources", get(sources))
        .route("/entries/{id}", get(entry))
        .route("/export", get(export))
        .with_state(core)
}

// ---- OPML -----------------------------------------------------------------

/// Largest OPML file read.
const MAX_OPML_BYTES: u64 = 16 * 1024 * 1024;

/// The OPML file at `file` as sources, named apart from (and without the
/// URLs of) `config`'s sources when a config is given.
pub fn import_opml(file: &Path, config: Option<&Config>) -> anyhow::Result<crate::opml::Import> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(MAX_OPML_BYTES + 1).read_to_end(&mut bytes))
        .with_context(|| format!("{}: cannot read", file.display()))?;
    if bytes.len() as u64 > MAX_OPML_BYTES {
        anyhow::bail!("{}: larger than {MAX_OPML_BYTES} bytes", file.display());
    }
    let taken = config
        .map(crate::opml::Taken::from_config)
        .unwrap_or_default();
    crate::opml::import(&bytes, &taken).with_context(|| file.display().to_string())
}

/// `config`'s sources as OPML 2.0, titled as the store knows them (or the
/// daemon that holds it). Before the first poll there is no store, and
/// none is made: the sources' names stand in for their titles.
pub async fn export_opml(config: &Config) -> anyhow::Result<crate::opml::Export> {
    let known = if config.storage.path.exists() {
        sources(config).await?
    } else {
        Vec::new()
    };
    Ok(crate::opml::export(config, &known)?)
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
        let metrics = Arc::new(Metrics::new(&config.storage.path));
        let poller = new_poller(Arc::new(config.clone()), store, metrics);
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
