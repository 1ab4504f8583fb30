//! Reads: every one costs what it returns, not what the store holds.
//! Feeds read only the sources they publish (`by_source`), newest first;
//! a story's copies come from `by_story`; undecodable values are skipped,
//! logged and counted, never the end of a feed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};

use crate::model::{Entry, Item};

use super::codec::{self, Slot, StoredEntry};
use super::ingest::Stored;
use super::keys::{self, compact_id, source_prefix};
use super::{Store, StoreError};

/// A `by_source` iterator, newest first.
type SourceScan = std::iter::Rev<sled::Iter>;

impl Store {
    /// What `ids` says of entry id `id`.
    pub(super) fn slot(&self, id: &str) -> Result<Option<Slot>, StoreError> {
        let key = compact_id(id);
        match self.t.ids.get(&key).map_err(|e| self.sled_err(e))? {
            Some(bytes) => match Slot::decode(&bytes) {
                Ok(slot) => Ok(Some(slot)),
                Err(reason) => {
                    self.skip_corrupt("ids", &key, &reason);
                    Ok(None)
                }
            },
            None => Ok(None),
        }
    }

    /// The record stored under `seq`, undecoded beyond its stored form;
    /// `None` when absent or undecodable (logged and counted).
    pub(super) fn record(&self, seq: u64) -> Result<Option<StoredEntry>, StoreError> {
        let key = keys::record_key(seq);
        let Some(bytes) = self.t.records.get(key).map_err(|e| self.sled_err(e))? else {
            return Ok(None);
        };
        match codec::decode_entry(&bytes) {
            Ok(stored) => Ok(Some(stored)),
            Err(reason) => {
                self.skip_corrupt("records", &key, &reason);
                Ok(None)
            }
        }
    }

    /// The entry stored under `seq` and its story's seq.
    pub(super) fn stored(&self, seq: u64) -> Result<Option<Stored>, StoreError> {
        let Some(record) = self.record(seq)? else {
            return Ok(None);
        };
        match record.entry() {
            Ok(entry) => Ok(Some(Stored {
                story_seq: record.story_seq,
                entry,
            })),
            Err(reason) => {
                self.skip_corrupt("records", &keys::record_key(seq), &reason);
                Ok(None)
            }
        }
    }

    /// Every stored copy in the story whose seq is `story_seq`, with their
    /// seqs.
    pub(super) fn members(&self, story_seq: u64) -> Result<Vec<(u64, Stored)>, StoreError> {
        let mut out = Vec::new();
        for item in self.t.by_story.scan_prefix(story_seq.to_be_bytes()) {
            let (key, _) = item.map_err(|e| self.sled_err(e))?;
            let Some(seq) = keys::trailing_seq(&key) else {
                continue;
            };
            if let Some(stored) = self.stored(seq)? {
                out.push((seq, stored));
            }
        }
        Ok(out)
    }

    /// The id of the story whose seq is `story_seq`.
    fn story_id(&self, story_seq: u64) -> Result<Option<String>, StoreError> {
        let key = keys::record_key(story_seq);
        match self.t.stories.get(key).map_err(|e| self.sled_err(e))? {
            Some(bytes) => match codec::decode_story_id(&bytes) {
                Ok(id) => Ok(Some(id)),
                Err(reason) => {
                    self.skip_corrupt("stories", &key, &reason);
                    Ok(None)
                }
            },
            None => Ok(None),
        }
    }

    /// The story whose seq is `story_seq`, with its copies that `keep`
    /// accepts, oldest first; `None` when none is left.
    fn story_item(
        &self,
        story_seq: u64,
        keep: &dyn Fn(&Entry) -> bool,
    ) -> Result<Option<Item>, StoreError> {
        let mut copies: Vec<Entry> = self
            .members(story_seq)?
            .into_iter()
            .filter(|(seq, _)| self.shown(*seq))
            .map(|(_, s)| s.entry)
            .filter(|e| keep(e))
            .collect();
        if copies.is_empty() {
            return Ok(None);
        }
        copies.sort_by_key(|e| (e.published_or_seen(), e.first_seen));
        let id = match self.story_id(story_seq)? {
            Some(id) => id,
            None => copies[0].id.clone(),
        };
        Ok(Some(Item { id, copies }))
    }

    /// The stored entry with feedmerge id `id`.
    pub fn entry(&self, id: &str) -> Result<Option<Entry>, StoreError> {
        match self.slot(id)? {
            Some(Slot::Stored(seq)) if self.shown(seq) => Ok(self.stored(seq)?.map(|s| s.entry)),
            _ => Ok(None),
        }
    }

    /// The story of entry `id`, or of the story `id` names (its first
    /// copy's id, which may have been pruned since), with every copy,
    /// oldest first.
    pub fn story(&self, id: &str) -> Result<Option<Item>, StoreError> {
        let story_seq = match self.slot(id)? {
            Some(Slot::Stored(seq)) if self.shown(seq) => match self.record(seq)? {
                Some(record) => record.story_seq,
                None => return Ok(None),
            },
            Some(Slot::Pruned { seq, .. }) => seq,
            Some(Slot::Stored(_)) | None => return Ok(None),
        };
        self.story_item(story_seq, &|_| true)
    }

    /// Up to `limit` entries of source `source`, newest first.
    pub fn source_entries(&self, source: &str, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::new();
        for item in self.t.by_source.scan_prefix(source_prefix(source)).rev() {
            if out.len() >= limit {
                break;
            }
            let (key, _) = item.map_err(|e| self.sled_err(e))?;
            let Some(seq) = keys::trailing_seq(&key) else {
                continue;
            };
            if !self.shown(seq) {
                continue;
            }
            if let Some(stored) = self.stored(seq)? {
                out.push(stored.entry);
            }
        }
        Ok(out)
    }

    /// Up to `limit` stories with a copy from `sources`, newest first (by
    /// their newest such copy), each with its copies from `sources`.
    ///
    /// Reads only those sources' keys: a merge, newest first, of one
    /// `by_source` scan per source.
    pub fn newest_stories(
        &self,
        limit: usize,
        sources: &HashSet<&str>,
    ) -> Result<Vec<Item>, StoreError> {
        let mut scans: Vec<SourceScan> = Vec::new();
        let mut heads = BinaryHeap::new();
        for source in sources {
            let mut scan = self.t.by_source.scan_prefix(source_prefix(source)).rev();
            if let Some(head) = self.next_head(&mut scan)? {
                heads.push((head, Reverse(scans.len())));
            }
            scans.push(scan);
        }
        let keep = |e: &Entry| sources.contains(e.source.as_str());
        let mut out = Vec::new();
        let mut emitted = HashSet::new();
        while let Some(((_, story_seq), Reverse(which))) = heads.pop() {
            if out.len() >= limit {
                break;
            }
            if let Some(scan) = scans.get_mut(which) {
                if let Some(head) = self.next_head(scan)? {
                    heads.push((head, Reverse(which)));
                }
            }
            if !emitted.insert(story_seq) {
                continue;
            }
            if let Some(item) = self.story_item(story_seq, &keep)? {
                out.push(item);
            }
        }
        Ok(out)
    }

    /// The next key of a `by_source` scan: (its time and seq, as key
    /// bytes, which order newest first), with the story seq it holds.
    fn next_head(&self, scan: &mut SourceScan) -> Result<Option<([u8; 16], u64)>, StoreError> {
        for item in scan.by_ref() {
            let (key, value) = item.map_err(|e| self.sled_err(e))?;
            let (Some(time), Some(story)) = (
                key.len()
                    .checked_sub(16)
                    .and_then(|at| key.get(at..))
                    .and_then(|t| <[u8; 16]>::try_from(t).ok()),
                keys::number_at(&value, 0),
            ) else {
                self.skip_corrupt("by_source", &key, "short key or value");
                continue;
            };
            if keys::trailing_seq(&key).is_some_and(|seq| !self.shown(seq)) {
                continue;
            }
            return Ok(Some((time, story)));
        }
        Ok(None)
    }
}
