//! The only module that knows sled: entries, their indexes (time, source,
//! links, stories), tombstones and per-source state, with explicit flushes.
//!
//! Each entry gets a sequence number (seq) when first stored (sled's
//! `generate_id`: increasing, never reused), and every index points at
//! seqs, so new entries land at the end of every tree but `ids` and
//! `by_canon`: what ingest reads and writes stays a small, hot part of the
//! store however large it grows.
//!
//! Layout, schema version 6 (numbers big-endian; values start with a format
//! byte, see [`codec`]):
//! - `meta`: `version` -> schema version (u32), `entries` -> how many
//!   entries are stored (u64)
//! - `records`: seq -> the entry and its story's seq ([`codec::StoredEntry`])
//! - `ids`, in buckets ([`buckets`]): entry id (compact) -> slot: its seq,
//!   or when it was pruned (a tombstone, so its source cannot bring it
//!   back)
//! - `by_source`: source name (length-prefixed) + sort time (8) + seq ->
//!   story seq: a source's entries newest first; feeds, retention and the
//!   writer's window merge the scans of the sources they need
//! - `by_canon`, in buckets: hash of the canonical link (8) + seq -> empty
//! - `stories`: story seq -> the story's copies (their seqs) and its id
//!   (its first copy's, kept after that copy is pruned); a story's seq is
//!   its first copy's ([`codec::StoredStory`]). A story that is its first
//!   copy alone, as most are, has no value: that record is the story.
//! - `tombstones`: prune time (8) + entry id (compact) -> empty
//! - `sources`: source name -> source state (JSON)
//!
//! Nothing is shown before it is durable: entries first stored since the
//! last flush are left out of every read (feeds, stories, entries, the
//! entry count), and status reads get each source's state as of the last
//! flush, so what a reader saw survives a crash (SIGKILL) at any moment.
//! Writers see everything. (A changed entry shows its change at once; a
//! crash before the flush shows its previous version again, never none.)
//!
//! Near-duplicate lookups go to an in-memory index of recent entries
//! ([`window`]), and `ids` / `by_canon` lookups for new entries are
//! answered by Bloom filters ([`filters`]) without a random read; both are
//! built on the first ingest after the store opens.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use tracing::{info, warn};

mod archives;
mod buckets;
mod codec;
mod filters;
mod ingest;
mod keys;
mod migrate;
mod query;
mod rebuild;
mod retention;
mod window;

pub use query::{Cursor, Page};
pub use rebuild::Rebuilt;
pub use retention::{PruneCounts, Retention};

use buckets::{BucketBatch, Bucketed};
use filters::Filters;
use window::NearIndex;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (normally a running daemon) holds the store.
    #[error("store {} is locked by another process (is `feedmerge run` using it?)", path.display())]
    Locked {
        /// The store directory.
        path: PathBuf,
    },
    /// The database underneath failed (I/O, mostly).
    #[error("store {}: {reason}", path.display())]
    Backend {
        /// The store directory.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The database underneath found its own files damaged.
    #[error(
        "store {} is damaged ({reason}); restore it from a backup, or move it aside and \
         feedmerge will start a new store (the sources are polled again)",
        path.display()
    )]
    Damaged {
        /// The store directory.
        path: PathBuf,
        /// What the database said.
        reason: String,
    },
    /// A stored value could not be read back where it must be.
    #[error("store {}: corrupt value in {tree}: {reason}", path.display())]
    Corrupt {
        /// The store directory.
        path: PathBuf,
        /// The tree holding the value.
        tree: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The directory holds a store in a layout no release used.
    #[error(
        "store {} was written by a development build of feedmerge in an older layout; \
         move it aside (or delete it) and feedmerge will start a new store there",
        path.display()
    )]
    OldLayout {
        /// The store directory.
        path: PathBuf,
    },
    /// The directory holds something that is not a feedmerge store.
    #[error(
        "{} is not a feedmerge store ({what}); point [storage] path at an empty or new \
         directory, or move these files aside",
        path.display()
    )]
    NotAStore {
        /// The directory.
        path: PathBuf,
        /// What is there.
        what: String,
    },
    /// The store was written by a newer feedmerge.
    #[error(
        "store {} has schema version {found}, newer than this feedmerge reads ({supported}); \
         run the newer feedmerge, or restore a backup made before it ran",
        path.display()
    )]
    TooNew {
        /// The store directory.
        path: PathBuf,
        /// The version found.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
}

/// How the store is opened (built from the config by `app`).
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// sled's page cache, in bytes.
    pub cache_capacity: u64,
}

impl StoreOptions {
    /// Options with a page cache of `cache_capacity` bytes.
    pub fn with_cache(cache_capacity: u64) -> Self {
        Self { cache_capacity }
    }
}

/// What the store's health check reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreHealth {
    /// Entries stored.
    pub entries: u64,
    /// Stored values found undecodable (skipped and logged) since opening.
    pub corrupt_values: u64,
}

/// What only writers touch, under the writer lock: the near-duplicate
/// index, built on the first ingest after opening.
struct WriterState {
    near: NearIndex,
}

/// The trees.
#[derive(Clone)]
struct Trees {
    meta: sled::Tree,
    records: sled::Tree,
    ids: Bucketed,
    by_source: sled::Tree,
    by_canon: Bucketed,
    stories: sled::Tree,
    tombstones: sled::Tree,
    sources: sled::Tree,
    archives: sled::Tree,
}

/// An open store. Cloning is cheap and shares the database.
///
/// Writes and flushes go through one lock, one at a time: sled 0.34's
/// transactions and flushes deadlocked when concurrent, and one writer
/// keeps index updates simple. Flushes are group commits: a caller whose
/// writes were already covered by a flush that started after them returns
/// without flushing again.
#[derive(Clone)]
pub struct Store {
    path: PathBuf,
    db: sled::Db,
    t: Trees,
    /// Held for every write and flush.
    writer: Arc<Mutex<Option<WriterState>>>,
    /// The Bloom filters over `ids` and `by_canon`, built with the writer
    /// state; written only under the writer lock, read before it too (an
    /// ingest asks which entries are new before it waits for the lock).
    filters: Arc<RwLock<Option<Filters>>>,
    /// Held while a flush is arranged; holds the last flush ticket covered.
    flush_gate: Arc<tokio::sync::Mutex<u64>>,
    /// Flush tickets handed out so far.
    tickets: Arc<AtomicU64>,
    /// Entries stored (kept in `meta`, so no count is a scan).
    entries: Arc<AtomicU64>,
    /// Entries stored as of the last flush: the count reported.
    flushed_entries: Arc<AtomicU64>,
    /// What is written but not yet flushed, hidden from readers.
    unflushed: Arc<Unflushed>,
    /// Undecodable values met since opening.
    corrupt: Arc<AtomicU64>,
    /// Which sources each flush changed: what cached documents check.
    changes: Arc<Changes>,
}

/// The store's change signal. Every write that can change a published
/// document (an entry stored, changed or pruned; a source's title or home
/// page) marks its source; the flush that makes the writes visible gives
/// each marked source a new generation, drawn from one counter, so the
/// largest generation over a set of sources grows whenever any of them
/// changes.
struct Changes {
    /// Sources written since the last flush.
    pending: Mutex<HashSet<String>>,
    /// Each source's generation (0: unchanged since opening).
    generations: RwLock<HashMap<String, u64>>,
    /// The last generation handed out.
    counter: AtomicU64,
    /// The last generation, for whoever waits for changes.
    signal: tokio::sync::watch::Sender<u64>,
}

impl Default for Changes {
    fn default() -> Self {
        Self {
            pending: Mutex::default(),
            generations: RwLock::default(),
            counter: AtomicU64::new(0),
            signal: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl Changes {
    fn touch(&self, source: &str) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if !pending.contains(source) {
            pending.insert(source.to_string());
        }
    }

    /// The flush is done: what it covered is visible.
    fn publish(&self) {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if pending.is_empty() {
            return;
        }
        let generation = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
        let mut generations = self.generations.write().unwrap_or_else(|e| e.into_inner());
        for source in pending {
            generations.insert(source, generation);
        }
        drop(generations);
        self.signal.send_replace(generation);
    }

    fn of<'a>(&self, sources: impl IntoIterator<Item = &'a str>) -> u64 {
        let generations = self.generations.read().unwrap_or_else(|e| e.into_inner());
        sources
            .into_iter()
            .filter_map(|s| generations.get(s))
            .copied()
            .max()
            .unwrap_or(0)
    }
}

/// Writes since the last flush that readers must not see yet: a crash
/// before the flush loses them. Filled before the writes are applied,
/// emptied after the flush.
struct Unflushed {
    /// The first seq sled handed out since the last flush (`u64::MAX`:
    /// none): seqs only grow, so every entry from it up is new since then.
    fresh_from: AtomicU64,
    /// Older seqs first stored since the last flush: slots whose record a
    /// crash lost, stored again.
    reused: RwLock<HashSet<u64>>,
    /// Each source whose state was replaced since the last flush, with its
    /// state as of that flush (`None`: it had none).
    sources: Mutex<HashMap<String, Option<sled::IVec>>>,
}

impl Default for Unflushed {
    fn default() -> Self {
        Self {
            fresh_from: AtomicU64::new(u64::MAX),
            reused: RwLock::default(),
            sources: Mutex::default(),
        }
    }
}

impl Unflushed {
    /// Whether the entry under `seq` is durable as far as readers know.
    fn shown(&self, seq: u64) -> bool {
        seq < self.fresh_from.load(Ordering::SeqCst)
            && !self
                .reused
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&seq)
    }

    /// Hides the entry under `seq`, about to be stored for the first time.
    fn hide(&self, seq: u64) {
        if self.shown(seq) {
            self.reused
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(seq);
        }
    }

    /// Hides every seq from `seq` up: `seq` is newly generated.
    fn hide_from(&self, seq: u64) {
        self.fresh_from.fetch_min(seq, Ordering::SeqCst);
    }

    /// Shows everything: it is flushed.
    fn clear(&self) {
        self.fresh_from.store(u64::MAX, Ordering::SeqCst);
        self.reused
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.sources().clear();
    }

    fn sources(&self) -> MutexGuard<'_, HashMap<String, Option<sled::IVec>>> {
        self.sources.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// One write's batches, one per tree, applied in a fixed order: indexes
/// first, then `ids`, records last. A crash in between leaves index keys
/// whose record is missing or older, which every reader skips or
/// tolerates, never a record no index finds. (Per-tree batches cost a
/// fraction of one multi-tree transaction, and the writer lock already
/// keeps writes from interleaving.)
#[derive(Default)]
struct Batches {
    by_source: sled::Batch,
    by_canon: BucketBatch,
    stories: sled::Batch,
    tombstones: sled::Batch,
    ids: BucketBatch,
    records: sled::Batch,
}

impl Store {
    /// Applies `batches` (under the writer lock).
    fn apply(&self, batches: Batches) -> Result<(), StoreError> {
        let t = &self.t;
        let sled = |e| self.sled_err(e);
        t.by_source.apply_batch(batches.by_source).map_err(sled)?;
        self.apply_buckets(&t.by_canon, batches.by_canon)?;
        t.stories.apply_batch(batches.stories).map_err(sled)?;
        t.tombstones.apply_batch(batches.tombstones).map_err(sled)?;
        self.apply_buckets(&t.ids, batches.ids)?;
        t.records.apply_batch(batches.records).map_err(sled)?;
        Ok(())
    }
}

/// A sled error as the store reports it: no sled type leaves the store.
fn backend_error(path: &Path, source: sled::Error) -> StoreError {
    let path = path.to_path_buf();
    match source {
        sled::Error::Corruption { .. } => StoreError::Damaged {
            path,
            reason: source.to_string(),
        },
        other => StoreError::Backend {
            path,
            reason: other.to_string(),
        },
    }
}

/// Attempts to open a locked store before reporting it locked.
const LOCK_RETRIES: u32 = 10;
/// Pause between those attempts.
const LOCK_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// `meta` key of the schema version.
const META_VERSION: &[u8] = b"version";
/// `meta` key of the entry count.
const META_ENTRIES: &[u8] = b"entries";
/// `meta` key present while the store waits to be rebuilt
/// ([`rebuild`]): a migration that freed most pages sets it, and the
/// rebuilt copy is made without it.
const META_REBUILD: &[u8] = b"rebuild";

impl Store {
    /// Opens (or creates) the store at `path`, migrating a store written by
    /// an earlier version.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        rebuild::finish(path)?;
        migrate::check_directory(path)?;
        let before = migrate::Before::look(path);
        let sled_err = |source: sled::Error| match &source {
            sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
                StoreError::Locked {
                    path: path.to_path_buf(),
                }
            }
            _ => backend_error(path, source),
        };
        let open = || {
            sled::Config::new()
                .path(path)
                .cache_capacity(options.cache_capacity)
                // Flushes are explicit (after each poll and at shutdown),
                // under the writer lock; sled's background flusher would
                // race them.
                .flush_every_ms(None)
                .open()
                .map_err(sled_err)
        };
        // A store closed a moment ago may still be locked while sled's I/O
        // threads finish; a daemon's lock outlasts this short wait.
        let mut attempt = 0;
        let db = loop {
            match open() {
                Err(StoreError::Locked { .. }) if attempt < LOCK_RETRIES => {
                    attempt += 1;
                    std::thread::sleep(LOCK_RETRY_PAUSE);
                }
                other => break other?,
            }
        };
        let tree = |name: &str| db.open_tree(name).map_err(sled_err);
        let t = Trees {
            meta: tree("meta")?,
            records: tree("records")?,
            ids: Bucketed::new(tree("ids")?, "ids", usize::MAX),
            by_source: tree("by_source")?,
            by_canon: Bucketed::new(tree("by_canon")?, "by_canon", 8),
            stories: tree("stories")?,
            tombstones: tree("tombstones")?,
            sources: tree("sources")?,
            archives: tree("archives")?,
        };
        let store = Self {
            path: path.to_path_buf(),
            db,
            t,
            writer: Arc::new(Mutex::new(None)),
            filters: Arc::new(RwLock::new(None)),
            flush_gate: Arc::new(tokio::sync::Mutex::new(0)),
            tickets: Arc::new(AtomicU64::new(0)),
            entries: Arc::new(AtomicU64::new(0)),
            flushed_entries: Arc::new(AtomicU64::new(0)),
            unflushed: Arc::new(Unflushed::default()),
            corrupt: Arc::new(AtomicU64::new(0)),
            changes: Arc::new(Changes::default()),
        };
        migrate::bring_up_to_date(&store, before)?;
        if store
            .t
            .meta
            .contains_key(META_REBUILD)
            .map_err(|e| store.sled_err(e))?
        {
            info!(store = %path.display(), "rebuilding the store, to give back the pages a migration freed");
            let (rebuilt, held) = rebuild::copy(&store.db, path, options)?;
            drop(store);
            rebuild::finish_held(path, &held)?;
            info!(
                store = %path.display(),
                keys = rebuilt.keys,
                bytes_before = rebuilt.bytes_before,
                bytes_after = rebuilt.bytes_after,
                "store rebuilt"
            );
            return Self::open(path, options);
        }
        let count = store
            .t
            .meta
            .get(META_ENTRIES)
            .map_err(|e| store.sled_err(e))?
            .and_then(|v| keys::number_at(&v, 0))
            .unwrap_or(0);
        store.entries.store(count, Ordering::SeqCst);
        store.flushed_entries.store(count, Ordering::SeqCst);
        Ok(store)
    }

    /// Rebuilds the store at `path` (opening it first, so migrations run):
    /// every tree copied into a fresh directory that takes the old one's
    /// place, holding only the pages its keys need. The store must not be
    /// open elsewhere.
    pub fn compact(path: &Path, options: StoreOptions) -> Result<Rebuilt, StoreError> {
        let store = Self::open(path, options)?;
        let (rebuilt, held) = rebuild::copy(&store.db, path, options)?;
        drop(store);
        rebuild::finish_held(path, &held)?;
        Ok(rebuilt)
    }

    /// The store directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sled_err(&self, source: sled::Error) -> StoreError {
        backend_error(&self.path, source)
    }

    fn corrupt(&self, tree: &'static str, reason: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            tree,
            reason,
        }
    }

    /// Notes an undecodable value that a reader skips: logged with its
    /// tree and key, and counted for the health check.
    fn skip_corrupt(&self, tree: &'static str, key: &[u8], reason: &str) {
        self.corrupt.fetch_add(1, Ordering::Relaxed);
        let key: String = key.iter().map(|b| format!("{b:02x}")).collect();
        warn!(store = %self.path.display(), tree, key = %key, reason, "skipping an undecodable stored value");
    }

    /// How many entries are stored, as of the last flush (a counter, not a
    /// scan).
    pub fn entry_count(&self) -> u64 {
        self.flushed_entries.load(Ordering::SeqCst)
    }

    /// Whether readers may see the entry under `seq`: not while its first
    /// write is unflushed.
    fn shown(&self, seq: u64) -> bool {
        self.unflushed.shown(seq)
    }

    /// The generation of what `sources` publish: it grows after every
    /// flush that made a change to any of them visible (an entry stored,
    /// changed or pruned, a source's title or home page), and stays put
    /// otherwise. What a cache of rendered documents compares.
    pub fn generation<'a>(&self, sources: impl IntoIterator<Item = &'a str>) -> u64 {
        self.changes.of(sources)
    }

    /// Wakes on every flush that made a change visible (its value: the
    /// newest generation), for whoever acts on changes (WebSub pings).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.signal.subscribe()
    }

    /// Entries stored and undecodable values met.
    pub fn health(&self) -> StoreHealth {
        StoreHealth {
            entries: self.entry_count(),
            corrupt_values: self.corrupt.load(Ordering::Relaxed),
        }
    }

    /// A liveness probe, blocking: waits for the writer lock (so a writer
    /// or flush that never ends shows here) and reads the entry count from
    /// sled. For the systemd watchdog; it writes nothing.
    pub fn probe(&self) -> Result<StoreHealth, StoreError> {
        let _writer = self.lock_writer();
        self.t
            .meta
            .get(META_ENTRIES)
            .map_err(|e| self.sled_err(e))?;
        Ok(self.health())
    }

    /// Holds the writer lock until the guard is dropped: a writer that
    /// hangs, for tests of what waits on it.
    #[cfg(test)]
    pub(crate) fn hold_writer(&self) -> impl Sized + '_ {
        self.lock_writer()
    }

    /// The stored state of source `name`.
    pub fn source_state(
        &self,
        name: &str,
    ) -> Result<Option<crate::model::SourceState>, StoreError> {
        // A source whose state cannot be read starts afresh rather than
        // failing every poll and page that asks.
        self.decoded(
            &self.t.sources,
            "sources",
            name.as_bytes(),
            codec::decode_source,
        )
    }

    /// The state of source `name` as of the last flush: what status
    /// reports show, so they never report a poll a crash could still undo.
    pub fn flushed_source_state(
        &self,
        name: &str,
    ) -> Result<Option<crate::model::SourceState>, StoreError> {
        let unflushed = self.unflushed.sources();
        let bytes = match unflushed.get(name) {
            Some(before) => before.clone(),
            None => self.t.sources.get(name).map_err(|e| self.sled_err(e))?,
        };
        drop(unflushed);
        match bytes {
            Some(bytes) => match codec::decode_source(&bytes) {
                Ok(state) => Ok(Some(state)),
                Err(reason) => {
                    self.skip_corrupt("sources", name.as_bytes(), &reason);
                    Ok(None)
                }
            },
            None => Ok(None),
        }
    }

    /// Replaces the stored state of source `name`.
    pub fn put_source_state(
        &self,
        name: &str,
        state: &crate::model::SourceState,
    ) -> Result<(), StoreError> {
        let value = codec::encode_source(state).map_err(|r| self.corrupt("sources", r))?;
        let _writer = self.lock_writer();
        let before = self.t.sources.get(name).map_err(|e| self.sled_err(e))?;
        // Published documents show a source's title and home page.
        let described = before
            .as_deref()
            .and_then(|bytes| codec::decode_source(bytes).ok())
            .is_some_and(|old| old.title == state.title && old.home_page == state.home_page);
        if !described {
            self.changes.touch(name);
        }
        let mut unflushed = self.unflushed.sources();
        if !unflushed.contains_key(name) {
            unflushed.insert(name.to_string(), before);
        }
        self.t
            .sources
            .insert(name.as_bytes(), value)
            .map_err(|e| self.sled_err(e))?;
        Ok(())
    }

    fn lock_writer(&self) -> MutexGuard<'_, Option<WriterState>> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `delta` to the stored entry count (under the writer lock).
    fn count_entries(&self, delta: i64) -> Result<(), StoreError> {
        let now = if delta >= 0 {
            self.entries.fetch_add(delta as u64, Ordering::SeqCst) + delta as u64
        } else {
            let down = delta.unsigned_abs();
            let before = self.entries.fetch_sub(down, Ordering::SeqCst);
            before.saturating_sub(down)
        };
        self.t
            .meta
            .insert(META_ENTRIES, &now.to_be_bytes())
            .map_err(|e| self.sled_err(e))?;
        Ok(())
    }

    /// Makes every write made before this call durable, without blocking
    /// the async workers. Concurrent callers share one flush where they
    /// can (group commit).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let ticket = self.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        let mut covered = self.flush_gate.lock().await;
        if *covered >= ticket {
            // A flush that started after our writes has finished.
            return Ok(());
        }
        let upto = self.tickets.load(Ordering::SeqCst);
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.flush_blocking())
            .await
            .map_err(|e| StoreError::Backend {
                path: self.path.clone(),
                reason: format!("flush task failed: {e}"),
            })??;
        *covered = upto;
        Ok(())
    }

    /// Makes every write made before this call durable, blocking the
    /// caller; then shows readers what it made durable.
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        let _writer = self.lock_writer();
        self.db.flush().map_err(|e| self.sled_err(e))?;
        // Under the writer lock, so nothing was written since the flush.
        self.unflushed.clear();
        self.changes.publish();
        self.flushed_entries
            .store(self.entries.load(Ordering::SeqCst), Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
