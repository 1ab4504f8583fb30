//! Rebuilding a store: every tree copied into a fresh sled directory,
//! which then takes the old one's place.
//!
//! sled 0.34 never forgets a page: a page freed by removals stays in its
//! page table, and every open reads a state for it back into memory. A
//! store that a migration moved most keys out of (5 -> 6 moved one key per
//! entry twice over into buckets) keeps the old store's pages and its
//! memory at open; a rebuilt one holds only the pages its keys need.
//!
//! The copy goes into `rebuild/` inside the store directory (a systemd
//! `StateDirectory` may be the store itself, so nothing is made beside
//! it). The swap is safe to interrupt at any point; [`finish`] runs first
//! on every open and takes it up where it stopped:
//! - `rebuild/` without a marker: the copy did not finish; it is removed
//!   and the old store, untouched, stays;
//! - `rebuild/COPIED`: the copy is complete and flushed; the old store's
//!   files are removed, then `rebuild/MOVING` is written;
//! - `rebuild/MOVING`: the old files are gone; the new ones move up, one
//!   by one, and `rebuild/` is removed last.

use std::path::{Path, PathBuf};

use tracing::info;

use super::{backend_error, StoreError, StoreOptions, META_REBUILD};

/// The folder the copy is made in, inside the store directory.
const FOLDER: &str = "rebuild";
/// In the folder: the copy is complete and flushed.
const COPIED: &str = "COPIED";
/// In the folder: the old store's files are gone; the copy's move up.
const MOVING: &str = "MOVING";
/// Keys copied per sled batch.
const BATCH: usize = 4_096;

/// What a rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    /// Trees copied (sled's default tree among them).
    pub trees: usize,
    /// Keys copied.
    pub keys: u64,
    /// Bytes the store's files took before.
    pub bytes_before: u64,
    /// Bytes the rebuilt store's files take.
    pub bytes_after: u64,
}

/// The copy's folder, locked (`flock`) while this lives: another process
/// opening the store meanwhile leaves the folder alone, so two never
/// finish one rebuild at once. (Where `libc` is not a dependency, the
/// folder is not locked.)
pub(super) struct Held {
    _folder: std::fs::File,
}

/// Locks `folder`, or `None` when another process holds it.
fn lock(folder: &Path) -> std::io::Result<Option<Held>> {
    let file = std::fs::File::open(folder)?;
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::io::AsRawFd;
        // SAFETY: flock takes a descriptor that `file` owns for the whole
        // call and touches no memory of ours.
        let status = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if status != 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EWOULDBLOCK) => Ok(None),
                _ => Err(e),
            };
        }
    }
    Ok(Some(Held { _folder: file }))
}

/// Copies the store open in `db` (at `path`) into `path/rebuild/`, flushed
/// and marked complete, and holds the folder. The caller closes `db`,
/// then calls [`finish_held`].
pub(super) fn copy(
    db: &sled::Db,
    path: &Path,
    options: StoreOptions,
) -> Result<(Rebuilt, Held), StoreError> {
    let folder = path.join(FOLDER);
    let io = |what: &str, e: std::io::Error| io_error(path, what, &folder, e);
    if folder.exists() {
        if lock(&folder).map_err(|e| io("lock", e))?.is_none() {
            return Err(StoreError::Backend {
                path: path.to_path_buf(),
                reason: "another process is rebuilding this store".into(),
            });
        }
        std::fs::remove_dir_all(&folder).map_err(|e| io("remove an unfinished copy", e))?;
    }
    std::fs::create_dir(&folder).map_err(|e| io("create", e))?;
    let Some(held) = lock(&folder).map_err(|e| io("lock", e))? else {
        return Err(StoreError::Backend {
            path: path.to_path_buf(),
            reason: "another process is rebuilding this store".into(),
        });
    };
    let err = |e: sled::Error| backend_error(path, e);
    let fresh = sled::Config::new()
        .path(&folder)
        .cache_capacity(options.cache_capacity)
        .flush_every_ms(None)
        .open()
        .map_err(err)?;
    let mut keys = 0u64;
    let names = db.tree_names();
    for name in &names {
        let from = db.open_tree(name).map_err(err)?;
        let to = fresh.open_tree(name).map_err(err)?;
        let mut batch = sled::Batch::default();
        let mut pending = 0;
        for item in from.iter() {
            let (key, value) = item.map_err(err)?;
            batch.insert(key, value);
            pending += 1;
            keys += 1;
            if pending == BATCH {
                to.apply_batch(std::mem::take(&mut batch)).map_err(err)?;
                pending = 0;
            }
        }
        to.apply_batch(batch).map_err(err)?;
    }
    // The copy is the rebuild a migration asked for.
    fresh
        .open_tree("meta")
        .and_then(|meta| meta.remove(META_REBUILD))
        .map_err(err)?;
    // Entry seqs come from sled's id generator: the copy's must go on from
    // where the old one is, or new entries would reuse stored seqs.
    let next = db.generate_id().map_err(err)?;
    while fresh.generate_id().map_err(err)? < next {}
    fresh.flush().map_err(err)?;
    drop(fresh);
    let bytes_before = dir_bytes(path).saturating_sub(dir_bytes(&folder));
    let bytes_after = dir_bytes(&folder);
    std::fs::write(folder.join(COPIED), b"").map_err(|e| io("mark the copy complete", e))?;
    let rebuilt = Rebuilt {
        trees: names.len(),
        keys,
        bytes_before,
        bytes_after,
    };
    Ok((rebuilt, held))
}

/// Finishes an interrupted rebuild of the store at `path`, or removes an
/// unfinished copy. Does nothing when there is none, or when another
/// process holds it (a rebuild under way there). Run before sled opens
/// the store.
pub(super) fn finish(path: &Path) -> Result<(), StoreError> {
    let folder = path.join(FOLDER);
    if !folder.is_dir() {
        return Ok(());
    }
    match lock(&folder) {
        Ok(Some(held)) => finish_held(path, &held),
        Ok(None) => Ok(()),
        Err(e) => Err(io_error(path, "lock", &folder, e)),
    }
}

/// Finishes the rebuild that [`copy`] made (and `_held` holds).
pub(super) fn finish_held(path: &Path, _held: &Held) -> Result<(), StoreError> {
    let folder = path.join(FOLDER);
    let io = |what: &str, at: &Path, e: std::io::Error| io_error(path, what, at, e);
    // Only a copy of ours is touched: sled's files in it, in a sled
    // directory (a `rebuild` folder anywhere else is left alone, and
    // `check_directory` refuses what is not a store).
    let sled_files = |dir: &Path| dir.join("db").exists() || dir.join("conf").exists();
    let marked = folder.join(MOVING).exists() || folder.join(COPIED).exists();
    if !(sled_files(&folder) || marked && sled_files(path)) {
        return Ok(());
    }
    if !folder.join(MOVING).exists() {
        if !folder.join(COPIED).exists() {
            if !sled_files(path) {
                return Ok(());
            }
            info!(store = %path.display(), "removing an unfinished rebuild; the store stays as it was");
            return std::fs::remove_dir_all(&folder)
                .map_err(|e| io("remove an unfinished copy", &folder, e));
        }
        // The old store's files (everything but the copy).
        for entry in std::fs::read_dir(path).map_err(|e| io("list", path, e))? {
            let entry = entry.map_err(|e| io("list", path, e))?;
            if entry.file_name() == FOLDER {
                continue;
            }
            remove(&entry.path()).map_err(|e| io("remove the old store's", &entry.path(), e))?;
        }
        std::fs::write(folder.join(MOVING), b"").map_err(|e| io("mark the move", &folder, e))?;
    }
    // sled's `db` moves last: while it is in the folder, the folder is
    // recognisably ours.
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&folder).map_err(|e| io("list", &folder, e))? {
        let name = entry.map_err(|e| io("list", &folder, e))?.file_name();
        if name != COPIED && name != MOVING {
            names.push(name);
        }
    }
    names.sort_by_key(|name| name == "db");
    for name in names {
        let to = path.join(&name);
        std::fs::rename(folder.join(&name), &to).map_err(|e| io("move the rebuilt", &to, e))?;
    }
    std::fs::remove_dir_all(&folder).map_err(|e| io("remove", &folder, e))?;
    info!(store = %path.display(), "store rebuilt");
    Ok(())
}

fn remove(path: &Path) -> std::io::Result<()> {
    if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
}

fn io_error(store: &Path, what: &str, at: &Path, e: std::io::Error) -> StoreError {
    StoreError::Backend {
        path: store.to_path_buf(),
        reason: format!("rebuilding: could not {what} {}: {e}", at.display()),
    }
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(listing) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in listing.filter_map(Result::ok) {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}
