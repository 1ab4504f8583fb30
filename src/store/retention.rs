//! Retention: which entries go, removed in bounded batches so the writer
//! lock is never held for the whole store, each leaving a tombstone.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};

use super::codec::{self, Slot};
use super::keys::{self, canon_key, compact_id, source_key, story_key, time_key, tombstone_key};
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
        // Newest first, counting as we go: whatever is past a limit goes.
        let mut per_source: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut total = 0usize;
        for item in self.t.by_time.iter().rev() {
            let (key, source) = item.map_err(|e| self.sled_err(e))?;
            let Some(seq) = keys::trailing_seq(&key) else {
                continue;
            };
            let count = per_source.entry(source.to_vec()).or_default();
            *count += 1;
            total += 1;
            if *count > rules.max_per_source || total > rules.max_total {
                doomed.insert(seq);
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
            let (mut stones, mut ids) = (sled::Batch::default(), sled::Batch::default());
            for key in &keys_ {
                stones.remove(key.clone());
                if let Some(id) = key.get(8..) {
                    ids.remove(id);
                }
            }
            self.t.ids.apply_batch(ids).map_err(|e| self.sled_err(e))?;
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

    /// Removes the entries under `seqs`, leaving tombstones; returns how
    /// many were there. One hold of the writer lock.
    fn prune_batch(&self, seqs: &[u64], now: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut writer = self.lock_writer();
        let mut b = Batches::default();
        let mut stories = Vec::new();
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
            b.by_time.remove(&time_key(time, seq)[..]);
            b.by_source.remove(source_key(&entry.source, time, seq));
            if let Some(canon) = &entry.canonical {
                b.by_canon.remove(&canon_key(canon, seq)[..]);
            }
            b.by_story.remove(&story_key(stored.story_seq, seq)[..]);
            b.ids.insert(
                compact_id(&entry.id),
                Slot::Pruned { seq, at_millis }.encode(),
            );
            b.tombstones.insert(tombstone_key(now, &entry.id), &[][..]);
            stories.push(stored.story_seq);
            if let Some(state) = writer.as_mut() {
                state.near.remove(seq);
            }
            removed += 1;
        }
        self.apply(b)?;
        // A story with no copy left no longer needs its id.
        for story in stories {
            let empty = self
                .t
                .by_story
                .scan_prefix(story.to_be_bytes())
                .next()
                .is_none();
            if empty {
                self.t
                    .stories
                    .remove(keys::record_key(story))
                    .map_err(|e| self.sled_err(e))?;
            }
        }
        if removed > 0 {
            self.count_entries(-(removed as i64))?;
        }
        Ok(removed)
    }
}
