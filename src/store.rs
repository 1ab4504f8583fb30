//! The only module that knows sled: entries, their indexes (time, dedup,
//! stories), tombstones and per-source state, with explicit flushes.
//!
//! Each entry gets a sequence number when first stored (sled's
//! `generate_id`: increasing, never reused), and every index points at
//! sequence numbers. New entries therefore land at the end of every tree but
//! `ids` and `by_canon`, and the lookups an incoming entry makes touch the
//! recent end: what ingest reads and writes stays a small, hot part of the
//! store however large the store grows.
//!
//! Layout (numbers big-endian; values start with a format byte):
//! - `records`: seq -> [`Record`] (the entry and its story's seq), postcard
//! - `ids`: entry id (compact) -> [`Slot`]: where it is stored, or when it
//!   was pruned (a tombstone, so its source cannot bring it back)
//! - `by_time`: sort time (8) + seq -> source name; scanned backwards for
//!   newest-first, and by retention, which counts per source from it
//! - `by_canon`: hash of the canonical link (8) + seq -> empty (same-link
//!   lookups)
//! - `by_band`: time bucket (4) + LSH band (5) + inverted sort time (8) +
//!   seq -> empty (near-duplicate candidates within a time window, newest
//!   first)
//! - `by_story`: story's seq + seq -> empty (a story's copies; a story's
//!   seq is its first copy's)
//! - `tombstones`: prune time (8) + entry id (compact) -> empty (which
//!   tombstones expire)
//! - `sources`: source name -> [`SourceState`], JSON (few, and they grow
//!   fields: JSON reads old values with the new fields defaulted)
//!
//! `ids` and `by_canon` are keyed by hashes, so their lookups read random
//! pages; Bloom filters in memory ([`filters`]) answer "not stored" for new
//! entries without those reads.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

mod filters;

use filters::{Filters, KeyFilter};

use crate::config::{DedupConfig, RetentionConfig};
use crate::dedup::{self, Merge};
use crate::model::{Entry, IngestCounts, Item, MergeRule, Merged, SourceState};

/// Format byte of a JSON value.
const JSON_V1: u8 = 1;
/// Format byte of a postcard value.
const POSTCARD_V1: u8 = 2;

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
    /// The directory holds a store in a layout this version cannot read.
    #[error(
        "store {} was written by a development build of feedmerge in an older layout; \
         move it aside (or delete it) and feedmerge will start a new store there",
        path.display()
    )]
    OldLayout {
        /// The sled directory.
        path: PathBuf,
    },
}

/// A stored entry with the sequence number of its story.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    /// The seq of the story's first copy (`by_story` keys start with it).
    story_seq: u64,
    entry: Entry,
}

/// What `ids` says of an entry id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Stored under this seq.
    Stored(u64),
    /// Pruned at this time (milliseconds since the epoch); it was stored
    /// under this seq, which its story's copies may still use.
    Pruned { seq: u64, at_millis: i64 },
}

/// Format byte of a stored slot.
const SLOT_STORED: u8 = 1;
/// Format byte of a pruned slot.
const SLOT_PRUNED: u8 = 2;

impl Slot {
    fn seq(self) -> u64 {
        match self {
            Slot::Stored(seq) | Slot::Pruned { seq, .. } => seq,
        }
    }

    fn encode(self) -> Vec<u8> {
        match self {
            Slot::Stored(seq) => [&[SLOT_STORED][..], &seq.to_be_bytes()].concat(),
            Slot::Pruned { seq, at_millis } => [
                &[SLOT_PRUNED][..],
                &seq.to_be_bytes(),
                &at_millis.to_be_bytes(),
            ]
            .concat(),
        }
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        match bytes.split_first() {
            Some((&SLOT_STORED, rest)) => Ok(Slot::Stored(number_at(rest, 0).ok_or("short slot")?)),
            Some((&SLOT_PRUNED, rest)) => Ok(Slot::Pruned {
                seq: number_at(rest, 0).ok_or("short slot")?,
                at_millis: number_at(rest, 8).ok_or("short slot")? as i64,
            }),
            Some((kind, _)) => Err(format!("unknown slot kind {kind}")),
            None => Err("empty slot".into()),
        }
    }
}

/// A stored record found by a lookup, with its seq.
type Found = Option<(u64, Record)>;

/// One write an ingest makes: the entry under `seq`, replacing `old`.
struct Plan {
    seq: u64,
    old: Option<Record>,
    new: Record,
}

/// An open store. Cloning is cheap and shares the database.
///
/// Writes and flushes go through one lock, one at a time: sled 0.34's
/// transactions switch it to a global reader-writer mode in which
/// concurrent transactions and flushes can deadlock (seen here with a few
/// dozen polls storing at once). Flushes are group commits: a caller whose
/// writes were already covered by a flush that started after them returns
/// without flushing again.
#[derive(Clone)]
pub struct Store {
    path: PathBuf,
    db: sled::Db,
    records: sled::Tree,
    ids: sled::Tree,
    by_time: sled::Tree,
    by_canon: sled::Tree,
    by_band: sled::Tree,
    by_story: sled::Tree,
    tombstones: sled::Tree,
    sources: sled::Tree,
    /// Held for every write and flush; holds the filters (read in on the
    /// first ingest), which only writers touch.
    writer: Arc<Mutex<Option<Filters>>>,
    /// Held while a flush is arranged; holds the last flush ticket covered.
    /// An async lock, so polls waiting to flush hold no thread.
    flush_gate: Arc<tokio::sync::Mutex<u64>>,
    /// Flush tickets handed out so far.
    tickets: Arc<AtomicU64>,
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
        let open = || {
            sled::Config::new()
                .path(path)
                .cache_capacity(cache_capacity)
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
        // The first layout kept entries by id in a tree of this name.
        if db.tree_names().iter().any(|name| &name[..] == b"entries") {
            return Err(StoreError::OldLayout {
                path: path.to_path_buf(),
            });
        }
        let tree = |name: &str| db.open_tree(name).map_err(sled_err);
        Ok(Self {
            path: path.to_path_buf(),
            records: tree("records")?,
            ids: tree("ids")?,
            by_time: tree("by_time")?,
            by_canon: tree("by_canon")?,
            by_band: tree("by_band")?,
            by_story: tree("by_story")?,
            tombstones: tree("tombstones")?,
            sources: tree("sources")?,
            db,
            writer: Arc::new(Mutex::new(None)),
            flush_gate: Arc::new(tokio::sync::Mutex::new(0)),
            tickets: Arc::new(AtomicU64::new(0)),
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
    /// new entries are added (joining another source's story when `rules`
    /// say they are the same story), changed ones updated in place, the
    /// rest left; entries with a tombstone stay out. Lookups run first under
    /// the writer lock; the writes then go in one batch per tree.
    pub fn ingest(
        &self,
        incoming: &[Entry],
        now: DateTime<Utc>,
        rules: &DedupConfig,
    ) -> Result<IngestCounts, StoreError> {
        let mut writer = self.lock_writer();
        let filters = match writer.take() {
            Some(filters) => filters,
            None => self.read_filters()?,
        };
        let filters = writer.insert(filters);
        let mut counts = IngestCounts::default();
        let mut plans: Vec<Plan> = Vec::new();
        let mut seen = HashSet::new();
        for entry in incoming {
            // The filter answers "not stored" for most new entries.
            let slot = if filters.ids.may_hold(&compact_id(&entry.id)) {
                self.slot(&entry.id)?
            } else {
                None
            };
            if let Some(Slot::Pruned { .. }) = slot {
                counts.suppressed += 1;
                continue;
            }
            let mut entry = entry.clone();
            // A slot without its record (a crash between the two writes)
            // keeps its seq; the entry is stored again under it.
            let mut seq = slot.map(Slot::seq);
            let mut existing = match seq {
                Some(seq) => self.record(seq)?,
                None => None,
            };
            // Stored copies with the same canonical link: from this source,
            // a publisher that changed the guid but not the link; from
            // another, the same story.
            let mut other_copy = None;
            let canon = entry.canonical.clone();
            let canon = canon.filter(|c| filters.canons.may_hold(&canon_hash(c)));
            if let (None, Some(canon)) = (seq, canon) {
                let (same, other) = self.find_by_canon(&canon, &entry.source)?;
                if let (true, Some((at, same))) = (rules.same_link, same) {
                    entry.id = same.entry.id.clone();
                    seq = Some(at);
                    existing = Some(same);
                }
                other_copy = other.filter(|_| rules.canonical_urls);
            }
            if !seen.insert(entry.id.clone()) {
                counts.unchanged += 1;
                continue;
            }
            match dedup::merge(existing.as_ref().map(|r| &r.entry), entry, now) {
                Merge::Unchanged => counts.unchanged += 1,
                Merge::Updated(mut e) => {
                    // An update always has a stored copy and its seq.
                    let (Some(old), Some(seq)) = (existing, seq) else {
                        continue;
                    };
                    counts.updated += 1;
                    e.story = old.entry.story.clone();
                    e.merged = old.entry.merged.clone();
                    let new = Record {
                        story_seq: old.story_seq,
                        entry: e,
                    };
                    plans.push(Plan {
                        seq,
                        old: Some(old),
                        new,
                    });
                }
                Merge::New(mut e) => {
                    counts.new += 1;
                    let seq = match seq {
                        Some(seq) => seq,
                        None => self.db.generate_id().map_err(|e| self.sled_err(e))?,
                    };
                    e.story = e.id.clone();
                    e.merged = None;
                    let mut new = Record {
                        story_seq: seq,
                        entry: e,
                    };
                    let absorbed = self.assign_story(&mut new, other_copy, rules)?;
                    // The new copy links two stories: they are one now.
                    if let Some((other, link)) = absorbed {
                        for (member_seq, member) in self.members(other)? {
                            let mut moved = member.clone();
                            moved.story_seq = new.story_seq;
                            moved.entry.story = new.entry.story.clone();
                            // The absorbed story's first copy says why.
                            if moved.entry.merged.is_none() {
                                moved.entry.merged = Some(link.clone());
                            }
                            plans.push(Plan {
                                seq: member_seq,
                                old: Some(member),
                                new: moved,
                            });
                        }
                    }
                    plans.push(Plan {
                        seq,
                        old: None,
                        new,
                    });
                }
            }
        }
        if plans.is_empty() {
            return Ok(counts);
        }
        self.write(&plans, filters)?;
        Ok(counts)
    }

    /// Writes what an ingest planned, one batch per tree: indexes first,
    /// then ids, records last. A crash in between leaves index keys whose
    /// record is missing or older, which every reader skips or tolerates,
    /// never a record no index finds. (Per-tree batches cost a fraction of
    /// one multi-tree transaction, and the writer lock already keeps writes
    /// from interleaving.)
    fn write(&self, plans: &[Plan], filters: &mut Filters) -> Result<(), StoreError> {
        let mut records = sled::Batch::default();
        let mut ids = sled::Batch::default();
        let mut by_time = sled::Batch::default();
        let mut by_canon = sled::Batch::default();
        let mut by_band = sled::Batch::default();
        let mut by_story = sled::Batch::default();
        let mut removed_bands = HashSet::new();
        for Plan { seq, old, new } in plans {
            let seq = *seq;
            if let Some(old) = old {
                let (before, after) =
                    (story_key(old.story_seq, seq), story_key(new.story_seq, seq));
                if before != after {
                    by_story.remove(&before[..]);
                }
                let time = time_key(&old.entry, seq);
                if time != time_key(&new.entry, seq) {
                    by_time.remove(time);
                }
                let canon = canon_key(&old.entry, seq);
                if canon != canon_key(&new.entry, seq) {
                    if let Some(key) = canon {
                        by_canon.remove(key);
                    }
                }
                for key in band_index_keys(&old.entry, seq) {
                    removed_bands.insert(key);
                }
            }
            let value = encode(new, Format::Postcard).map_err(|r| self.corrupt("records", r))?;
            records.insert(&seq.to_be_bytes()[..], value);
            let id = compact_id(&new.entry.id);
            filters.ids.add(&id);
            ids.insert(id, Slot::Stored(seq).encode());
            by_time.insert(time_key(&new.entry, seq), new.entry.source.as_bytes());
            if let Some(key) = canon_key(&new.entry, seq) {
                filters.canons.add(&key[..8]);
                by_canon.insert(key, &[][..]);
            }
            for key in band_index_keys(&new.entry, seq) {
                removed_bands.remove(&key);
                by_band.insert(key, &[][..]);
            }
            by_story.insert(&story_key(new.story_seq, seq)[..], &[][..]);
        }
        for key in removed_bands {
            by_band.remove(key);
        }
        for (tree, batch) in [
            (&self.by_time, by_time),
            (&self.by_canon, by_canon),
            (&self.by_band, by_band),
            (&self.by_story, by_story),
            (&self.ids, ids),
            (&self.records, records),
        ] {
            tree.apply_batch(batch).map_err(|e| self.sled_err(e))?;
        }
        Ok(())
    }

    /// Puts a new entry in the story of a stored copy from another source:
    /// `by_url` (same canonical URL) first, else the most similar
    /// near-duplicate published within the window.
    ///
    /// Returns another story (by its seq) to fold into the entry's, when
    /// the entry matches one story by URL and another by text, with the
    /// link to give that story's first copy.
    fn assign_story(
        &self,
        new: &mut Record,
        by_url: Found,
        rules: &DedupConfig,
    ) -> Result<Option<(u64, Merged)>, StoreError> {
        let by_text = if rules.near_duplicates {
            self.nearest_copy(&new.entry, rules)?
        } else {
            None
        };
        Ok(match (by_url, by_text) {
            (Some((_, copy)), text) => {
                new.story_seq = copy.story_seq;
                new.entry.story = copy.entry.story.clone();
                new.entry.merged = Some(Merged {
                    with: copy.entry.id,
                    rule: MergeRule::CanonicalUrl,
                });
                let id = new.entry.id.clone();
                text.filter(|(_, t)| t.story_seq != copy.story_seq)
                    .map(|(similarity, t)| {
                        let link = Merged {
                            with: id,
                            rule: MergeRule::NearDuplicate {
                                similarity: percent(similarity),
                            },
                        };
                        (t.story_seq, link)
                    })
            }
            (None, Some((similarity, copy))) => {
                new.story_seq = copy.story_seq;
                new.entry.story = copy.entry.story;
                new.entry.merged = Some(Merged {
                    with: copy.entry.id,
                    rule: MergeRule::NearDuplicate {
                        similarity: percent(similarity),
                    },
                });
                None
            }
            (None, None) => None,
        })
    }

    /// The stored copy from another source whose text is most like the
    /// entry's (same story by `dedup::same_story`), published within the
    /// window.
    fn nearest_copy(
        &self,
        entry: &Entry,
        rules: &DedupConfig,
    ) -> Result<Option<(f64, Record)>, StoreError> {
        let Some(signature) = entry.fingerprint.clone() else {
            return Ok(None);
        };
        let at = entry.published_or_seen();
        let window = chrono::Duration::from_std(rules.window).unwrap_or(chrono::Duration::days(3));
        let (start, end) = (at - window, at + window);
        // Band keys hold the inverted time: a forward scan (which sled does
        // far faster than a backward one) meets the newest first.
        let (newest, oldest) = (!ordered_millis(end), !ordered_millis(start));
        let mut checked = HashSet::new();
        let mut best: Option<(f64, Record)> = None;
        let bands = dedup::band_keys(&signature.minhash);
        let scans = (time_bucket(start)..=time_bucket(end))
            .flat_map(|bucket| bands.iter().map(move |band| (bucket, band)));
        for (bucket, band) in scans {
            if checked.len() >= MAX_CANDIDATES {
                break;
            }
            let mut low = bucket.to_be_bytes().to_vec();
            low.extend_from_slice(band);
            let mut high = low.clone();
            low.extend_from_slice(&newest.to_be_bytes());
            high.extend_from_slice(&oldest.to_be_bytes());
            high.push(0xff);
            // Boilerplate-heavy bands hold many entries, and the latest
            // copies are the likeliest.
            for item in self.by_band.range(low..high).take(MAX_CANDIDATES_PER_BAND) {
                let (key, _) = item.map_err(|e| self.sled_err(e))?;
                let Some(seq) = number_at(&key, BAND_KEY_HEAD) else {
                    continue;
                };
                if !checked.insert(seq) {
                    continue;
                }
                let Some(candidate) = self.record(seq)? else {
                    continue;
                };
                if candidate.entry.source == entry.source || candidate.entry.id == entry.id {
                    continue;
                }
                let Some(other) = &candidate.entry.fingerprint else {
                    continue;
                };
                if let Some(similarity) = dedup::same_story(&signature, other) {
                    if best.as_ref().is_none_or(|(s, _)| similarity > *s) {
                        best = Some((similarity, candidate));
                    }
                }
            }
        }
        Ok(best)
    }

    /// The `ids` and `by_canon` filters, read in on the first ingest since
    /// the store opened: one read of both indexes.
    fn read_filters(&self) -> Result<Filters, StoreError> {
        let (mut ids, mut canons) = (KeyFilter::default(), KeyFilter::default());
        for key in self.ids.iter().keys() {
            ids.add(&key.map_err(|e| self.sled_err(e))?);
        }
        for key in self.by_canon.iter().keys() {
            let key = key.map_err(|e| self.sled_err(e))?;
            canons.add(key.get(..8).unwrap_or(&key));
        }
        Ok(Filters { ids, canons })
    }

    /// The first stored entries with canonical link `canon` from `source`
    /// and from another source, with their seqs (one index scan for both).
    fn find_by_canon(&self, canon: &str, source: &str) -> Result<(Found, Found), StoreError> {
        let (mut same, mut other) = (None, None);
        for item in self.by_canon.scan_prefix(canon_hash(canon)) {
            let (key, _) = item.map_err(|e| self.sled_err(e))?;
            let Some(seq) = number_at(&key, 8) else {
                continue;
            };
            let Some(record) = self.record(seq)? else {
                continue;
            };
            // The hash may collide: the link itself decides.
            if record.entry.canonical.as_deref() != Some(canon) {
                continue;
            }
            let slot = if record.entry.source == source {
                &mut same
            } else {
                &mut other
            };
            if slot.is_none() {
                *slot = Some((seq, record));
            }
            if same.is_some() && other.is_some() {
                break;
            }
        }
        Ok((same, other))
    }

    /// Every stored copy in the story whose seq is `story_seq`, with their
    /// seqs.
    fn members(&self, story_seq: u64) -> Result<Vec<(u64, Record)>, StoreError> {
        let mut out = Vec::new();
        for item in self.by_story.scan_prefix(story_seq.to_be_bytes()) {
            let (key, _) = item.map_err(|e| self.sled_err(e))?;
            let Some(seq) = number_at(&key, 8) else {
                continue;
            };
            if let Some(record) = self.record(seq)? {
                out.push((seq, record));
            }
        }
        Ok(out)
    }

    /// Every stored copy in the story whose seq is `story_seq`, oldest
    /// first.
    fn story_copies(&self, story_seq: u64) -> Result<Vec<Entry>, StoreError> {
        let mut out: Vec<Entry> = self
            .members(story_seq)?
            .into_iter()
            .map(|(_, r)| r.entry)
            .collect();
        out.sort_by_key(|e| (e.published_or_seen(), e.first_seen));
        Ok(out)
    }

    /// Every stored copy in story `story` (the id of its first copy, which
    /// may have been pruned since), oldest first.
    pub fn story(&self, story: &str) -> Result<Vec<Entry>, StoreError> {
        match self.slot(story)? {
            Some(slot) => self.story_copies(slot.seq()),
            None => Ok(Vec::new()),
        }
    }

    /// Prunes entries first seen longer than `rules.max_age` ago (an old
    /// article found today is kept for the full period), then the oldest
    /// beyond `max_per_source` per source and `max_total` in all. Each
    /// pruned entry leaves a tombstone so its source cannot bring it back;
    /// old tombstones go.
    pub fn prune(
        &self,
        now: DateTime<Utc>,
        rules: &RetentionConfig,
    ) -> Result<PruneCounts, StoreError> {
        let _writer = self.lock_writer();
        let max_age =
            chrono::Duration::from_std(rules.max_age).unwrap_or(chrono::Duration::days(90));
        let oldest_kept = now - max_age;
        let mut doomed: HashSet<u64> = HashSet::new();
        // Records are in arrival order: the too-old ones come first.
        for item in self.records.iter() {
            let (key, value) = item.map_err(|e| self.sled_err(e))?;
            let record: Record = decode(&value).map_err(|r| self.corrupt("records", r))?;
            if record.entry.first_seen >= oldest_kept {
                break;
            }
            if let Some(seq) = number_at(&key, 0) {
                doomed.insert(seq);
            }
        }
        // Newest first, counting as we go: whatever is past a limit goes.
        let mut per_source: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut total = 0usize;
        for item in self.by_time.iter().rev() {
            let (key, source) = item.map_err(|e| self.sled_err(e))?;
            let Some(seq) = number_at(&key, 8) else {
                continue;
            };
            let count = per_source.entry(source.to_vec()).or_default();
            *count += 1;
            total += 1;
            if *count > rules.max_per_source || total > rules.max_total {
                doomed.insert(seq);
            }
        }
        let mut pruned = Vec::new();
        for seq in doomed {
            if let Some(record) = self.record(seq)? {
                pruned.push((seq, record.entry, record.story_seq));
            }
        }
        let tombstone_age =
            chrono::Duration::from_std(rules.tombstone_age).unwrap_or(chrono::Duration::days(180));
        let expiry = ordered_millis(now - tombstone_age).to_be_bytes();
        let mut expired = Vec::new();
        for item in self.tombstones.range(..&expiry[..]) {
            let (key, _) = item.map_err(|e| self.sled_err(e))?;
            expired.push(key);
        }
        let at_millis = now.timestamp_millis();
        let trees = (
            &self.records,
            &self.ids,
            &self.by_time,
            &self.by_canon,
            &self.by_band,
            &self.by_story,
            &self.tombstones,
        );
        let result = trees.transaction(
            |(records, ids, by_time, by_canon, by_band, by_story, tombstones)| {
                for (seq, entry, story_seq) in &pruned {
                    let seq = *seq;
                    records.remove(&seq.to_be_bytes()[..])?;
                    by_time.remove(time_key(entry, seq))?;
                    if let Some(key) = canon_key(entry, seq) {
                        by_canon.remove(key)?;
                    }
                    for key in band_index_keys(entry, seq) {
                        by_band.remove(key)?;
                    }
                    by_story.remove(&story_key(*story_seq, seq)[..])?;
                    let stone = Slot::Pruned { seq, at_millis };
                    ids.insert(compact_id(&entry.id), stone.encode())?;
                    tombstones.insert(tombstone_key(now, &entry.id), &[][..])?;
                }
                for key in &expired {
                    tombstones.remove(key)?;
                    if let Some(id) = key.get(8..) {
                        ids.remove(id)?;
                    }
                }
                Ok::<_, ConflictableTransactionError<(&'static str, String)>>(())
            },
        );
        result.map_err(|err| match err {
            TransactionError::Abort((tree, reason)) => StoreError::Corrupt {
                path: self.path.clone(),
                tree,
                reason,
            },
            TransactionError::Storage(e) => self.sled_err(e),
        })?;
        Ok(PruneCounts {
            pruned: pruned.len(),
            tombstones_expired: expired.len(),
        })
    }

    /// Up to `limit` entries, newest first, that `keep` accepts.
    pub fn newest(
        &self,
        limit: usize,
        mut keep: impl FnMut(&Entry) -> bool,
    ) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::new();
        for record in self.newest_records() {
            if out.len() >= limit {
                break;
            }
            let record = record?;
            if keep(&record.entry) {
                out.push(record.entry);
            }
        }
        Ok(out)
    }

    /// Every stored record, newest first (the `by_time` index, backwards);
    /// index keys whose record is gone are skipped.
    fn newest_records(&self) -> impl Iterator<Item = Result<Record, StoreError>> + '_ {
        self.by_time.iter().rev().filter_map(move |item| {
            let seq = match item {
                Ok((key, _)) => number_at(&key, 8)?,
                Err(e) => return Some(Err(self.sled_err(e))),
            };
            self.record(seq).transpose()
        })
    }

    /// Up to `limit` stories, newest first (by their newest copy that
    /// `keep` accepts), each with its copies that `keep` accepts.
    pub fn newest_stories(
        &self,
        limit: usize,
        mut keep: impl FnMut(&Entry) -> bool,
    ) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        let mut emitted = HashSet::new();
        for record in self.newest_records() {
            if out.len() >= limit {
                break;
            }
            let record = record?;
            if !keep(&record.entry) || !emitted.insert(record.story_seq) {
                continue;
            }
            let mut copies: Vec<Entry> = self
                .story_copies(record.story_seq)?
                .into_iter()
                .filter(|e| keep(e))
                .collect();
            if copies.is_empty() {
                copies.push(record.entry.clone());
            }
            out.push(Item {
                id: record.entry.story,
                copies,
            });
        }
        Ok(out)
    }

    /// The stored entry with feedmerge id `id`.
    pub fn entry(&self, id: &str) -> Result<Option<Entry>, StoreError> {
        match self.slot(id)? {
            Some(Slot::Stored(seq)) => Ok(self.record(seq)?.map(|r| r.entry)),
            _ => Ok(None),
        }
    }

    /// What `ids` says of entry id `id`.
    fn slot(&self, id: &str) -> Result<Option<Slot>, StoreError> {
        self.value(&self.ids, "ids", compact_id(id), Slot::decode)
    }

    /// The record stored under `seq`.
    fn record(&self, seq: u64) -> Result<Option<Record>, StoreError> {
        self.value(&self.records, "records", seq.to_be_bytes(), decode)
    }

    /// The value under `key` in `tree` (called `name` in errors), read
    /// with `read`.
    fn value<T>(
        &self,
        tree: &sled::Tree,
        name: &'static str,
        key: impl AsRef<[u8]>,
        read: impl Fn(&[u8]) -> Result<T, String>,
    ) -> Result<Option<T>, StoreError> {
        match tree.get(key).map_err(|e| self.sled_err(e))? {
            Some(bytes) => read(&bytes).map(Some).map_err(|r| self.corrupt(name, r)),
            None => Ok(None),
        }
    }

    /// How many entries are stored.
    pub fn entry_count(&self) -> usize {
        self.records.len()
    }

    /// The stored state of source `name`.
    pub fn source_state(&self, name: &str) -> Result<Option<SourceState>, StoreError> {
        self.value(&self.sources, "sources", name.as_bytes(), decode)
    }

    /// Replaces the stored state of source `name`.
    pub fn put_source_state(&self, name: &str, state: &SourceState) -> Result<(), StoreError> {
        let value = encode(state, Format::Json).map_err(|r| self.corrupt("sources", r))?;
        let _writer = self.lock_writer();
        self.sources
            .insert(name.as_bytes(), value)
            .map_err(|e| self.sled_err(e))?;
        Ok(())
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, Option<Filters>> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
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
            .map_err(|e| StoreError::Sled {
                path: self.path.clone(),
                source: sled::Error::ReportableBug(format!("flush task failed: {e}")),
            })??;
        *covered = upto;
        Ok(())
    }

    /// Makes every write made before this call durable, blocking the caller.
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        let _writer = self.lock_writer();
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

/// Attempts to open a locked store before reporting it locked.
const LOCK_RETRIES: u32 = 10;
/// Pause between those attempts.
const LOCK_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// A similarity in whole percent.
fn percent(similarity: f64) -> u8 {
    (similarity * 100.0).round().clamp(0.0, 100.0) as u8
}

/// Candidates read per LSH band: bounds a lookup however large the store.
const MAX_CANDIDATES_PER_BAND: usize = 8;
/// Candidates compared per lookup, over all bands. Copies of one story
/// share many bands, so a true match is met early; a template shared by
/// many unrelated entries cannot make a lookup expensive.
const MAX_CANDIDATES: usize = 48;

/// What a prune removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneCounts {
    /// Entries removed (each leaves a tombstone).
    pub pruned: usize,
    /// Tombstones old enough to go.
    pub tombstones_expired: usize,
}

/// A time as milliseconds, shifted so that byte order is time order (for
/// negative timestamps too).
fn ordered_millis(t: DateTime<Utc>) -> u64 {
    (t.timestamp_millis() as u64) ^ (1 << 63)
}

/// Sort key of an entry: its sort time, then its seq.
fn time_key(entry: &Entry, seq: u64) -> Vec<u8> {
    [
        &ordered_millis(entry.published_or_seen()).to_be_bytes()[..],
        &seq.to_be_bytes(),
    ]
    .concat()
}

/// The first 8 bytes of the SHA-256 of a canonical link: `by_canon` keys
/// stay small (links are long), and a collision costs one extra read.
fn canon_hash(canon: &str) -> [u8; 8] {
    let digest = Sha256::digest(canon.as_bytes());
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// `by_canon` key: hash of the canonical link, then the seq.
fn canon_key(entry: &Entry, seq: u64) -> Option<Vec<u8>> {
    let canon = entry.canonical.as_ref()?;
    Some([&canon_hash(canon)[..], &seq.to_be_bytes()].concat())
}

/// Days per `by_band` time bucket: a bucket holds a few days of entries,
/// so the part of the index that new entries write to stays small, and a
/// lookup's window spans two or three buckets.
const BUCKET_DAYS: i64 = 8;
/// Bytes before the seq in a `by_band` key.
const BAND_KEY_HEAD: usize = 4 + 5 + 8;

/// The time bucket of `t`: keys start with it, so the entries being
/// written and looked up (recent ones) share a small, hot part of the
/// index however large it grows.
fn time_bucket(t: DateTime<Utc>) -> u32 {
    let days = t.timestamp().div_euclid(86_400);
    (days.div_euclid(BUCKET_DAYS) + (1 << 31)).clamp(0, i64::from(u32::MAX)) as u32
}

/// `by_band` keys: time bucket (4 bytes), band (5), inverted sort time
/// (8), seq (8).
fn band_index_keys(entry: &Entry, seq: u64) -> Vec<Vec<u8>> {
    let Some(signature) = &entry.fingerprint else {
        return Vec::new();
    };
    let at = entry.published_or_seen();
    let bucket = time_bucket(at).to_be_bytes();
    let time = (!ordered_millis(at)).to_be_bytes();
    dedup::band_keys(&signature.minhash)
        .into_iter()
        .map(|band| [&bucket[..], &band, &time, &seq.to_be_bytes()].concat())
        .collect()
}

/// `by_story` key: the story's seq, then the copy's.
fn story_key(story_seq: u64, seq: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&story_seq.to_be_bytes());
    key[8..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// `tombstones` key: when the entry was pruned, then its id (compact).
fn tombstone_key(at: DateTime<Utc>, id: &str) -> Vec<u8> {
    [&ordered_millis(at).to_be_bytes()[..], &compact_id(id)].concat()
}

/// The big-endian number at `at` in `bytes`.
fn number_at(bytes: &[u8], at: usize) -> Option<u64> {
    let slice: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_be_bytes(slice))
}

/// An entry id in keys: its 16 hash bytes when it is a feedmerge id
/// (`urn:feedmerge:entry:` + 32 hex digits), else its text.
fn compact_id(id: &str) -> Vec<u8> {
    let hex = id
        .strip_prefix(dedup::ENTRY_ID_PREFIX)
        .filter(|h| h.len() == 32);
    let bytes: Option<Vec<u8>> = hex.and_then(|h| {
        (0..16)
            .map(|i| u8::from_str_radix(h.get(i * 2..i * 2 + 2)?, 16).ok())
            .collect()
    });
    bytes.unwrap_or_else(|| id.as_bytes().to_vec())
}

/// How a value is written.
#[derive(Debug, Clone, Copy)]
enum Format {
    Json,
    Postcard,
}

fn encode<T: Serialize>(value: &T, format: Format) -> Result<Vec<u8>, String> {
    match format {
        Format::Json => {
            let mut out = vec![JSON_V1];
            serde_json::to_writer(&mut out, value).map_err(|e| e.to_string())?;
            Ok(out)
        }
        Format::Postcard => {
            postcard::to_extend(value, vec![POSTCARD_V1]).map_err(|e| e.to_string())
        }
    }
}

/// Reads a value in whichever format its first byte names.
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        Some((&JSON_V1, json)) => serde_json::from_slice(json).map_err(|e| e.to_string()),
        Some((&POSTCARD_V1, data)) => postcard::from_bytes(data).map_err(|e| e.to_string()),
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
            enclosures: vec![],
            canonical: None,
            fingerprint: None,
            story: String::new(),
            merged: None,
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
        let counts = store.ingest(&batch, now, &DedupConfig::default()).unwrap();
        assert_eq!((counts.new, counts.updated, counts.unchanged), (3, 0, 0));
        let counts = store.ingest(&batch, now, &DedupConfig::default()).unwrap();
        assert_eq!((counts.new, counts.updated, counts.unchanged), (0, 0, 3));

        // A changed title under the same id is updated in place; a moved
        // date leaves no stale index key behind.
        let changed = [entry("a", "A2", Some("2025-03-05T00:00:00Z"))];
        let counts = store
            .ingest(&changed, now, &DedupConfig::default())
            .unwrap();
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
    fn concurrent_ingests_and_flushes_finish() {
        // Many writers and flushers at once all finish. (The poll benchmark,
        // which deadlocked before writes were serialized, is the heavier
        // check: `cargo bench --bench poll`.)
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let now = at("2025-04-01T00:00:00Z");
        std::thread::scope(|scope| {
            for t in 0..32 {
                let store = store.clone();
                scope.spawn(move || {
                    for i in 0..20 {
                        let batch = [entry(&format!("{t}-{i}"), "x", None)];
                        store.ingest(&batch, now, &DedupConfig::default()).unwrap();
                        store
                            .put_source_state(&format!("s{t}"), &SourceState::default())
                            .unwrap();
                        store.flush_blocking().unwrap();
                    }
                });
            }
        });
        assert_eq!(store.entry_count(), 32 * 20);
    }

    #[test]
    fn pruned_entries_stay_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let rules = DedupConfig::default();
        let t0 = at("2025-04-01T00:00:00Z");
        let later = t0 + chrono::Duration::days(95);
        let a = entry("a", "A", Some("2025-03-01T00:00:00Z"));
        store.ingest(std::slice::from_ref(&a), t0, &rules).unwrap();
        // An article from 2020 first seen today is kept for the full period.
        let recent = [
            entry("ancient", "Ancient", Some("2020-01-01T00:00:00Z")),
            entry("b", "B", Some("2025-06-02T00:00:00Z")),
            entry("c", "C", Some("2025-06-03T00:00:00Z")),
            entry("d", "D", Some("2025-06-04T00:00:00Z")),
        ];
        store.ingest(&recent, later, &rules).unwrap();
        let by_age = RetentionConfig::default();
        assert_eq!(
            store.prune(later, &by_age).unwrap().pruned,
            1,
            "a is 95 days old"
        );
        let by_count = RetentionConfig {
            max_per_source: 2,
            ..RetentionConfig::default()
        };
        assert_eq!(store.prune(later, &by_count).unwrap().pruned, 2);
        let titles: Vec<_> = store
            .newest(10, |_| true)
            .unwrap()
            .into_iter()
            .map(|e| e.title)
            .collect();
        assert_eq!(titles, ["D", "C"]);
        // The source still lists them all: the pruned ones do not come back.
        let mut all = recent.to_vec();
        all.push(a);
        let counts = store.ingest(&all, later, &rules).unwrap();
        assert_eq!((counts.new, counts.suppressed, counts.unchanged), (0, 3, 2));
        assert_eq!(store.entry_count(), 2);
        // Tombstones expire.
        let much_later = later + chrono::Duration::days(400);
        let counts = store.prune(
            much_later,
            &RetentionConfig {
                max_age: std::time::Duration::from_secs(1000 * 24 * 3600),
                ..by_count
            },
        );
        assert_eq!(counts.unwrap().tombstones_expired, 3);
    }

    #[test]
    fn stories_join_across_sources() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let now = at("2025-04-01T00:00:00Z");
        let rules = DedupConfig::default();
        let body = "Officials met in Doha on Thursday to discuss regional security, maritime \
                    cooperation and the protection of shipping lanes in the Gulf, a statement said.";
        let copy = |source: &str, id: &str, link: &str, title: &str| {
            let mut e = entry(id, title, Some("2025-03-27T10:00:00Z"));
            e.source = source.into();
            e.id = dedup::entry_id(source, id);
            e.story = e.id.clone();
            e.link = Some(link.into());
            e.canonical = dedup::canonical_url(link, &rules.tracking_params);
            e.fingerprint = dedup::fingerprint(title, body);
            e
        };
        let a = copy(
            "a",
            "1",
            "https://x.example/story?utm_source=rss",
            "Talks in Doha",
        );
        let b = copy(
            "b",
            "77",
            "http://x.example/story/",
            "UPDATE: Talks in Doha",
        );
        let c = copy(
            "c",
            "9",
            "https://c.example/doha-talks",
            "Exclusive - Talks in Doha",
        );
        for e in [&a, &b, &c] {
            store.ingest(std::slice::from_ref(e), now, &rules).unwrap();
        }
        let story = store.story(&a.id).unwrap();
        assert_eq!(story.len(), 3);
        let rule = |source: &str| {
            story
                .iter()
                .find(|e| e.source == source)
                .and_then(|e| e.merged.clone())
                .map(|m| m.rule)
        };
        assert_eq!(rule("a"), None);
        assert_eq!(rule("b"), Some(MergeRule::CanonicalUrl));
        assert!(matches!(rule("c"), Some(MergeRule::NearDuplicate { .. })));
        let stories = store.newest_stories(10, |_| true).unwrap();
        assert_eq!(stories.len(), 1);
        assert_eq!(stories[0].id, a.id);

        // A copy that matches one story by URL and another by text joins
        // them: b's text is too short to compare, so c starts its own
        // story; a then matches b by URL and c by text.
        let dir = tempfile::tempdir().unwrap();
        let union = Store::open(dir.path(), 1 << 20).unwrap();
        let mut short_b = b.clone();
        short_b.fingerprint = None;
        for e in [&short_b, &c, &a] {
            union.ingest(std::slice::from_ref(e), now, &rules).unwrap();
        }
        let stories = union.newest_stories(10, |_| true).unwrap();
        assert_eq!(stories.len(), 1, "{stories:#?}");
        assert_eq!(stories[0].id, b.id, "the first story's id survives");
        let firsts = stories[0]
            .copies
            .iter()
            .filter(|e| e.merged.is_none())
            .count();
        assert_eq!(firsts, 1);

        // With the layers off, three stories.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let off = DedupConfig {
            canonical_urls: false,
            near_duplicates: false,
            ..DedupConfig::default()
        };
        for e in [&a, &b, &c] {
            store.ingest(std::slice::from_ref(e), now, &off).unwrap();
        }
        assert_eq!(store.newest_stories(10, |_| true).unwrap().len(), 3);
    }

    /// The `ids` and `by_canon` filters never hide a stored copy: neither
    /// one stored before the store was reopened (read into the filters)
    /// nor one stored since (added to them).
    #[test]
    fn filters_never_hide_a_stored_copy() {
        let dir = tempfile::tempdir().unwrap();
        let now = at("2025-04-01T00:00:00Z");
        let rules = DedupConfig::default();
        let copy = |source: &str, n: usize| {
            let mut e = entry(
                &format!("{n}"),
                &format!("Story {n}"),
                Some("2025-03-27T10:00:00Z"),
            );
            e.source = source.into();
            e.id = dedup::entry_id(source, &format!("{n}"));
            e.story = e.id.clone();
            let link = format!("https://x.example/{n}?utm_source=rss");
            e.canonical = dedup::canonical_url(&link, &rules.tracking_params);
            e.link = Some(link);
            e
        };
        let sources = |store: &Store, n: usize| -> Vec<String> {
            let story = store.story(&dedup::entry_id("a", &format!("{n}"))).unwrap();
            story.into_iter().map(|e| e.source).collect()
        };
        let batch = |source: &str, range: std::ops::Range<usize>| -> Vec<Entry> {
            range.map(|n| copy(source, n)).collect()
        };
        {
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            store.ingest(&batch("a", 0..100), now, &rules).unwrap();
        }
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        store.ingest(&batch("a", 100..200), now, &rules).unwrap();
        // Every entry is known by its id, from before the reopening and
        // after (without its link, which would find it too).
        let mut again = batch("a", 0..200);
        for e in &mut again {
            e.canonical = None;
        }
        let counts = store.ingest(&again, now, &rules).unwrap();
        assert_eq!(counts.new, 0);
        // Other sources' copies find them by canonical link.
        store.ingest(&batch("b", 50..150), now, &rules).unwrap();
        for n in [50, 99, 100, 149] {
            assert_eq!(sources(&store, n), ["a", "b"], "story {n}");
        }
        assert_eq!(sources(&store, 10), ["a"]);
        assert_eq!(store.entry_count(), 300);
    }

    #[test]
    fn a_changed_guid_with_the_same_link_is_the_same_entry() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let now = at("2025-04-01T00:00:00Z");
        let rules = DedupConfig::default();
        let mut first = entry("guid-1", "T", None);
        first.canonical = Some("x.example/post".into());
        store.ingest(&[first], now, &rules).unwrap();
        let mut renamed = entry("guid-2", "T", None);
        renamed.canonical = Some("x.example/post".into());
        let counts = store.ingest(&[renamed], now, &rules).unwrap();
        assert_eq!(counts.new, 0);
        assert_eq!(store.entry_count(), 1);
    }

    #[test]
    fn a_story_outlives_its_first_copy() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let rules = DedupConfig::default();
        let t0 = at("2025-04-01T00:00:00Z");
        let copy = |source: &str, seen: DateTime<Utc>| {
            let mut e = entry("1", "Talks in Doha", Some("2025-03-31T10:00:00Z"));
            e.source = source.into();
            e.id = dedup::entry_id(source, "1");
            e.canonical = Some("x.example/doha".into());
            (e, seen)
        };
        let (first, seen) = copy("a", t0);
        store
            .ingest(std::slice::from_ref(&first), seen, &rules)
            .unwrap();
        let (second, seen) = copy("b", t0 + chrono::Duration::days(20));
        store
            .ingest(std::slice::from_ref(&second), seen, &rules)
            .unwrap();
        assert_eq!(store.story(&first.id).unwrap().len(), 2);

        // The first copy ages out; the story keeps its id and its other copy.
        let later = t0 + chrono::Duration::days(100);
        assert_eq!(
            store.prune(later, &RetentionConfig::default()).unwrap(),
            PruneCounts {
                pruned: 1,
                tombstones_expired: 0
            }
        );
        assert_eq!(store.entry(&first.id).unwrap(), None);
        let copies = store.story(&first.id).unwrap();
        assert_eq!(copies.len(), 1);
        assert_eq!(copies[0].source, "b");
        let stories = store.newest_stories(10, |_| true).unwrap();
        assert_eq!(stories.len(), 1);
        assert_eq!(stories[0].id, first.id);
        // The source still lists the pruned copy: it stays out.
        let counts = store.ingest(&[first], later, &rules).unwrap();
        assert_eq!((counts.new, counts.suppressed), (0, 1));
    }

    #[test]
    fn a_store_in_the_first_layout_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            db.open_tree("entries").unwrap().insert("k", "v").unwrap();
            db.flush().unwrap();
        }
        let err = Store::open(dir.path(), 1 << 20).unwrap_err();
        assert!(matches!(err, StoreError::OldLayout { .. }), "{err}");
        assert!(err.to_string().contains(&dir.path().display().to_string()));
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
        assert_eq!(decode::<u32>(&encode(&7u32, Format::Json).unwrap()), Ok(7));
        let e = entry("a", "Ä title", Some("2025-03-01T00:00:00Z"));
        assert_eq!(
            decode::<Entry>(&encode(&e, Format::Postcard).unwrap()),
            Ok(e)
        );
        assert!(decode::<u32>(b"\x097").unwrap_err().contains("version 9"));
    }
}
