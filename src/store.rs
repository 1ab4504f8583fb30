//! The only module that knows sled: entries, the newest-first time index,
//! and per-source state, with explicit flushes.
//!
//! Layout (all values are a version byte followed by JSON):
//! - `entries`: entry id -> [`Entry`]
//! - `by_time`: 8-byte big-endian sort time + entry id -> empty, scanned
//!   backwards for newest-first
//! - `sources`: source name -> [`SourceState`]

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use crate::dedup::{self, Merge};
use crate::model::{Entry, IngestCounts, SourceState};

/// Version byte in front of every stored value.
const VALUE_VERSION: u8 = 1;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (normally a running daemon) holds the store.
    #[error("store {} is locked by another process (is `feedmerge run` using it?)", path.display())]
    Locked {
        /// The sled directory.
        path: PathBuf,
    },
    /// sled failed.
    #[error("store {}: {source}", path.display())]
    Sled {
        /// The sled directory.
        path: PathBuf,
        /// The underlying error.
        source: sled::Error,
    },
    /// A stored value could not be read back.
    #[error("store {}: corrupt value in {tree}: {reason}", path.display())]
    Corrupt {
        /// The sled directory.
        path: PathBuf,
        /// The tree holding the value.
        tree: &'static str,
        /// What was wrong.
        reason: String,
    },
}

/// An open store. Cloning is cheap and shares the database.
#[derive(Clone)]
pub struct Store {
    path: PathBuf,
    db: sled::Db,
    entries: sled::Tree,
    by_time: sled::Tree,
    sources: sled::Tree,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (or creates) the store at `path` with a page cache of
    /// `cache_capacity` bytes.
    pub fn open(path: &Path, cache_capacity: u64) -> Result<Self, StoreError> {
        let sled_err = |source: sled::Error| match &source {
            sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
                StoreError::Locked {
                    path: path.to_path_buf(),
                }
            }
            _ => StoreError::Sled {
                path: path.to_path_buf(),
                source,
            },
        };
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity)
            .open()
            .map_err(sled_err)?;
        let tree = |name: &str| db.open_tree(name).map_err(sled_err);
        Ok(Self {
            path: path.to_path_buf(),
            entries: tree("entries")?,
            by_time: tree("by_time")?,
            sources: tree("sources")?,
            db,
        })
    }

    /// The sled directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sled_err(&self, source: sled::Error) -> StoreError {
        StoreError::Sled {
            path: self.path.clone(),
            source,
        }
    }

    /// Stores one poll's entries, deduplicating against what is stored:
    /// new entries are added, changed ones updated in place, the rest left.
    /// All of it happens in one transaction.
    pub fn ingest(
        &self,
        incoming: &[Entry],
        now: DateTime<Utc>,
    ) -> Result<IngestCounts, StoreError> {
        let result = (&self.entries, &self.by_time).transaction(|(entries, by_time)| {
            let mut counts = IngestCounts::default();
            for entry in incoming {
                let existing = match entries.get(entry.id.as_bytes())? {
                    Some(bytes) => Some(decode::<Entry>(&bytes).map_err(|reason| {
                        ConflictableTransactionError::Abort(("entries", reason))
                    })?),
                    None => None,
                };
                let stored = match dedup::merge(existing.as_ref(), entry.clone(), now) {
                    Merge::New(e) => {
                        counts.new += 1;
                        e
                    }
                    Merge::Updated(e) => {
                        counts.updated += 1;
                        if let Some(old) = &existing {
                            by_time.remove(time_key(old))?;
                        }
                        e
                    }
                    Merge::Unchanged => {
                        counts.unchanged += 1;
                        continue;
                    }
                };
                let value = encode(&stored)
                    .map_err(|reason| ConflictableTransactionError::Abort(("entries", reason)))?;
                entries.insert(stored.id.as_bytes(), value)?;
                by_time.insert(time_key(&stored), &[][..])?;
            }
            Ok(counts)
        });
        result.map_err(|err| match err {
            TransactionError::Abort((tree, reason)) => StoreError::Corrupt {
                path: self.path.clone(),
                tree,
                reason,
            },
            TransactionError::Storage(e) => self.sled_err(e),
        })
    }

    /// Up to `limit` entries, newest first, that `keep` accepts.
    pub fn newest(
        &self,
        limit: usize,
        mut keep: impl FnMut(&Entry) -> bool,
    ) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::new();
        for item in self.by_time.iter().rev() {
            if out.len() >= limit {
                break;
            }
            let (key, _) = item.map_err(|e| self.sled_err(e))?;
            let Some(id) = key.get(8..) else { continue };
            let Some(bytes) = self.entries.get(id).map_err(|e| self.sled_err(e))? else {
                continue;
            };
            let entry: Entry = decode(&bytes).map_err(|reason| self.corrupt("entries", reason))?;
            if keep(&entry) {
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// The stored entry with feedmerge id `id`.
    pub fn entry(&self, id: &str) -> Result<Option<Entry>, StoreError> {
        match self
            .entries
            .get(id.as_bytes())
            .map_err(|e| self.sled_err(e))?
        {
            Some(bytes) => decode(&bytes)
                .map(Some)
                .map_err(|r| self.corrupt("entries", r)),
            None => Ok(None),
        }
    }

    /// How many entries are stored.
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// The stored state of source `name`.
    pub fn source_state(&self, name: &str) -> Result<Option<SourceState>, StoreError> {
        match self
            .sources
            .get(name.as_bytes())
            .map_err(|e| self.sled_err(e))?
        {
            Some(bytes) => decode(&bytes)
                .map(Some)
                .map_err(|r| self.corrupt("sources", r)),
            None => Ok(None),
        }
    }

    /// Replaces the stored state of source `name`.
    pub fn put_source_state(&self, name: &str, state: &SourceState) -> Result<(), StoreError> {
        let value = encode(state).map_err(|r| self.corrupt("sources", r))?;
        self.sources
            .insert(name.as_bytes(), value)
            .map_err(|e| self.sled_err(e))?;
        Ok(())
    }

    /// Writes everything to disk.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await.map_err(|e| self.sled_err(e))?;
        Ok(())
    }

    /// Writes everything to disk, blocking the caller.
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(|e| self.sled_err(e))?;
        Ok(())
    }

    fn corrupt(&self, tree: &'static str, reason: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            tree,
            reason,
        }
    }
}

/// Sort key of an entry: its sort time (order-preserving for negative
/// timestamps too), then its id to keep keys unique.
fn time_key(entry: &Entry) -> Vec<u8> {
    let millis = entry.published_or_seen().timestamp_millis();
    let ordered = (millis as u64) ^ (1 << 63);
    let mut key = Vec::with_capacity(8 + entry.id.len());
    key.extend_from_slice(&ordered.to_be_bytes());
    key.extend_from_slice(entry.id.as_bytes());
    key
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    let mut out = vec![VALUE_VERSION];
    serde_json::to_writer(&mut out, value).map_err(|e| e.to_string())?;
    Ok(out)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        Some((&VALUE_VERSION, json)) => serde_json::from_slice(json).map_err(|e| e.to_string()),
        Some((version, _)) => Err(format!("unknown value version {version}")),
        None => Err("empty value".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn entry(source_id: &str, title: &str, published: Option<&str>) -> Entry {
        let now = at("2025-04-01T00:00:00Z");
        Entry {
            id: dedup::entry_id("src", source_id),
            source: "src".into(),
            source_id: source_id.into(),
            title: title.into(),
            link: None,
            summary: None,
            content: None,
            authors: vec![],
            categories: vec![],
            published: published.map(at),
            updated: None,
            first_seen: now,
            changed: now,
            language: None,
        }
    }

    #[test]
    fn ingest_dedups_and_orders() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let now = at("2025-04-01T00:00:00Z");
        let batch = [
            entry("a", "A", Some("2025-03-01T00:00:00Z")),
            entry("b", "B", Some("2025-03-03T00:00:00Z")),
            entry("c", "C", Some("1960-01-01T00:00:00Z")),
        ];
        let counts = store.ingest(&batch, now).unwrap();
        assert_eq!((counts.new, counts.updated, counts.unchanged), (3, 0, 0));
        let counts = store.ingest(&batch, now).unwrap();
        assert_eq!((counts.new, counts.updated, counts.unchanged), (0, 0, 3));

        // A changed title under the same id is updated in place; a moved
        // date leaves no stale index key behind.
        let changed = [entry("a", "A2", Some("2025-03-05T00:00:00Z"))];
        let counts = store.ingest(&changed, now).unwrap();
        assert_eq!((counts.new, counts.updated, counts.unchanged), (0, 1, 0));
        let titles: Vec<_> = store
            .newest(10, |_| true)
            .unwrap()
            .into_iter()
            .map(|e| e.title)
            .collect();
        assert_eq!(titles, ["A2", "B", "C"]);
        assert_eq!(store.entry_count(), 3);
        let limited = store.newest(1, |e| e.title != "A2").unwrap();
        assert_eq!(limited[0].title, "B");
    }

    #[test]
    fn second_open_reports_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let _held = Store::open(dir.path(), 1 << 20).unwrap();
        let err = Store::open(dir.path(), 1 << 20).unwrap_err();
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    }

    #[test]
    fn values_are_versioned() {
        assert_eq!(decode::<u32>(&encode(&7u32).unwrap()), Ok(7));
        assert!(decode::<u32>(b"\x097").unwrap_err().contains("version 9"));
    }
}
