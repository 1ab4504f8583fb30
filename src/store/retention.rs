//! Retention: which entries go, removed in bounded batches so the writer
//! lock is never held for the whole store, each leaving a tombstone.

use std::collections::{BTreeSet, BinaryHeap};

use chrono::{DateTime, Utc};

use super::buckets::BucketBatch;
use super::codec::{self, Slot};
use super::ingest::{put_stories, StoryDrafts};
use super::keys::{self, canon_key, compact_id, source_key, tombstone_key};
use super::query::SourceScan;
use super::{Batches, Store, StoreError};

/// Entries removed per hold of the writer lock.
pub(super) const PRUNE_BATCH: usize = 500;

/// How long entries are kept (built from the config by `app`).
#[derive(Debug, Clone)]
pub struct Retention {
    /// Entries first seen longer ago than this are pruned.
    pub max_age: std::time::Duration,
    /// Most entries kept per source (the newest).
    pub max_per_source: usize,
    /// Most entries kept in all.
    pub max_total: usize,
    /// How long a pruned entry's tombstone keeps it from coming back.
    pub tombstone_age: std::time::Duration,
}

impl Default for Retention {
    fn default() -> Self {
        let day = std::time::Duration::from_secs(24 * 3600);
        Self {
            max_age: 90 * day,
            max_per_source: 2_000,
            max_total: 200_000,
            tombstone_age: 180 * day,
        }
    }
}

/// What a prune removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneCounts {
    /// Entries removed (each leaves a tombstone).
    pub pruned: usize,
    /// Tombstones old enough to go.
    pub tombstones_expired: usize,
    /// Frozen archive documents of days older than `max_age`.
    pub archives: usize,
}

impl Store {
    /// Prunes entries first seen longer than `rules.max_age` ago (an old
    /// article found today is kept for the full period), then the oldest
    /// beyond `max_per_source` per source and `max_total` in all. Each
    /// pruned entry leaves a tombstone so its source cannot bring it back;
    /// old tombstones go. Undecodable records are skipped (and counted),
    /// never the end of a prune.
    pub fn prune(&self, now: DateTime<Utc>, rules: &Retention) -> Result<PruneCounts, StoreError> {
        // An age past what a date can hold keeps everything.
        let oldest_kept = chrono::Duration::from_std(rules.max_age)
            .ok()
            .and_then(|age| now.checked_sub_signed(age))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let mut doomed: BTreeSet<u64> = BTreeSet::new();
        // Records are in arrival order: the too-old ones come first.
        for item in self.t.records.iter() {
            let (key, value) = item.map_err(|e| self.sled_err(e))?;
            let Some(seq) = keys::number_at(&key, 0) else {
                continue;
            };
            match codec::decode_entry(&value).and_then(|s| s.first_seen()) {
                Ok(first_seen) if first_seen >= oldest_kept => break,
                Ok(_) => {
                    doomed.insert(seq);
                }
                Err(reason) => self.skip_corrupt("records", &key, &reason),
            }
        }
        // Newest first over all sources (a merge of their `by_source`
        // scans), counting as we go: whatever is past a limit goes.
        let prefixes = self.source_prefixes()?;
        let mut scans = Vec::with_capacity(prefixes.len());
        let mut heads = BinaryHeap::new();
        for prefix in &prefixes {
            let mut scan = self.source_keys_since(prefix, None);
            if let Some(head) = self.retention_head(&mut scan, prefix.len())? {
                heads.push((head, scans.len()));
            }
            scans.push(scan);
        }
        let mut per_source = vec![0usize; scans.len()];
        let mut total = 0usize;
        while let Some(((_, seq), which)) = heads.pop() {
            let (Some(scan), Some(count)) = (scans.get_mut(which), per_source.get_mut(which))
            else {
                break;
            };
            *count += 1;
            total += 1;
            if *count > rules.max_per_source || total > rules.max_total {
                doomed.insert(seq);
            }
            let skip = prefixes.get(which).map_or(0, Vec::len);
            if let Some(head) = self.retention_head(scan, skip)? {
                heads.push((head, which));
            }
        }
        let doomed: Vec<u64> = doomed.into_iter().collect();
        let mut pruned = 0;
        for chunk in doomed.chunks(PRUNE_BATCH) {
            pruned += self.prune_batch(chunk, now)?;
        }
        let expiry = chrono::Duration::from_std(rules.tombstone_age)
            .ok()
            .and_then(|age| now.checked_sub_signed(age))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let expiry = keys::ordered_millis(expiry).to_be_bytes();
        let mut expired = 0;
        loop {
            let mut keys_ = Vec::new();
            for item in self.t.tombstones.range(..&expiry[..]).take(PRUNE_BATCH) {
                let (key, _) = item.map_err(|e| self.sled_err(e))?;
                keys_.push(key);
            }
            if keys_.is_empty() {
                break;
            }
            let _writer = self.lock_writer();
            let (mut stones, mut ids) = (sled::Batch::default(), BucketBatch::default());
            for key in &keys_ {
                stones.remove(key.clone());
                if let Some(id) = key.get(8..) {
                    ids.remove(id);
                }
            }
            self.apply_buckets(&self.t.ids, ids)?;
            self.t
                .tombstones
                .apply_batch(stones)
                .map_err(|e| self.sled_err(e))?;
            expired += keys_.len();
        }
        // Archives of days older than the age limit go too (and are not
        // served again: see `archive_kept`).
        let archives = self.prune_archives(oldest_kept.date_naive())?;
        Ok(PruneCounts {
            pruned,
            tombstones_expired: expired,
            archives,
        })
    }

    /// The next key of a source's newest-first scan whose prefix is
    /// `prefix_len` bytes long: its time and seq (as key bytes, which order
    /// newest first) and its seq.
    fn retention_head(
        &self,
        scan: &mut SourceScan,
        prefix_len: usize,
    ) -> Result<Option<([u8; 16], u64)>, StoreError> {
        for item in scan.by_ref() {
            let (key, _) = item.map_err(|e| self.sled_err(e))?;
            let place = key
                .get(prefix_len..)
                .and_then(|t| <[u8; 16]>::try_from(t).ok());
            match (place, keys::trailing_seq(&key)) {
                (Some(place), Some(seq)) => return Ok(Some((place, seq))),
                _ => self.skip_corrupt("by_source", &key, "bad key length"),
            }
        }
        Ok(None)
    }

    /// Removes the entries under `seqs`, leaving tombstones; returns how
    /// many were there. One hold of the writer lock.
    fn prune_batch(&self, seqs: &[u64], now: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut writer = self.lock_writer();
        let mut b = Batches::default();
        // The stories losing copies, as they will be stored.
        let mut stories = StoryDrafts::new();
        let at_millis = now.timestamp_millis();
        let mut removed = 0;
        for &seq in seqs {
            let Some(stored) = self.stored(seq)? else {
                continue;
            };
            let entry = &stored.entry;
            let time = entry.published_or_seen();
            b.records.remove(&keys::record_key(seq)[..]);
            self.changes.touch(&entry.source);
            b.by_source.remove(source_key(&entry.source, time, seq));
            if let Some(canon) = &entry.canonical {
                b.by_canon.remove(&canon_key(canon, seq)[..]);
            }
            self.draft_story(&mut stories, stored.story_seq)?
                .remove(seq);
            b.ids.insert(
                compact_id(&entry.id),
                Slot::Pruned { seq, at_millis }.encode(),
            );
            b.tombstones.insert(tombstone_key(now, &entry.id), &[][..]);
            if let Some(state) = writer.as_mut() {
                state.near.remove(seq);
            }
            removed += 1;
        }
        // A story with no copy left no longer needs its id.
        put_stories(&stories, &mut b.stories);
        self.apply(b)?;
        if removed > 0 {
            self.count_entries(-(removed as i64))?;
        }
        Ok(removed)
    }
}
