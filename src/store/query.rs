//! Reads: every one costs what it returns, not what the store holds.
//! Feeds read only the sources they publish (`by_source`), newest first;
//! a story's copies are listed in its `stories` value; undecodable values
//! are skipped, logged and counted, never the end of a feed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};

use crate::model::{Entry, Item};

use super::codec::{self, Slot, StoredEntry, StoredStory};
use super::ingest::Stored;
use super::keys::{self, compact_id, source_prefix};
use super::{Store, StoreError};

/// A `by_source` iterator, newest first.
pub(super) type SourceScan = std::iter::Rev<sled::Iter>;

/// A story's stored copies with their seqs, oldest first.
type Copies = Vec<(u64, Stored)>;

/// A place in a newest-first listing (an entry's sort time and seq): a page
/// holds what comes strictly after it. Opaque outside the store; it travels
/// in URLs as 32 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor([u8; 16]);

impl Cursor {
    /// The place just before everything sorted at or after `time`: a page
    /// before it holds what sorts earlier, a bound after it what sorts at
    /// `time` or later.
    pub fn at(time: chrono::DateTime<chrono::Utc>) -> Self {
        Self(keys::time_key(time, 0))
    }

    /// The sort time of the place.
    pub fn time(&self) -> chrono::DateTime<chrono::Utc> {
        let mut millis = [0u8; 8];
        millis.copy_from_slice(&self.0[..8]);
        let millis = (u64::from_be_bytes(millis) ^ (1 << 63)) as i64;
        chrono::DateTime::from_timestamp_millis(millis).unwrap_or_default()
    }

    /// The cursor as 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A cursor from [`Cursor::to_hex`]'s form; `None` for anything else.
    pub fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
        }
        Some(Self(out))
    }
}

/// One page of a newest-first listing.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// What the page holds, newest first.
    pub items: Vec<T>,
    /// Where the next (older) page starts, when there may be one.
    pub next: Option<Cursor>,
    /// Where the page's first (newest) item sits.
    pub first: Option<Cursor>,
}

impl Store {
    /// The value under `key` in `tree` (named `name`), decoded by
    /// `decode`; `None` when absent or undecodable (logged and counted).
    pub(super) fn decoded<T>(
        &self,
        tree: &sled::Tree,
        name: &'static str,
        key: &[u8],
        decode: impl FnOnce(&[u8]) -> Result<T, String>,
    ) -> Result<Option<T>, StoreError> {
        let bytes = tree.get(key).map_err(|e| self.sled_err(e))?;
        Ok(self.decode_or_skip(name, key, bytes.as_deref(), decode))
    }

    /// `bytes` (the value under `key` in tree `name`, if any) decoded by
    /// `decode`; `None` when absent or undecodable (logged and counted).
    pub(super) fn decode_or_skip<T>(
        &self,
        name: &'static str,
        key: &[u8],
        bytes: Option<&[u8]>,
        decode: impl FnOnce(&[u8]) -> Result<T, String>,
    ) -> Option<T> {
        match decode(bytes?) {
            Ok(value) => Some(value),
            Err(reason) => {
                self.skip_corrupt(name, key, &reason);
                None
            }
        }
    }

    /// What `ids` says of entry id `id`.
    pub(super) fn slot(&self, id: &str) -> Result<Option<Slot>, StoreError> {
        let key = compact_id(id);
        let bytes = self.bucket_get(&self.t.ids, &key)?;
        Ok(self.decode_or_skip("ids", &key, bytes.as_deref(), Slot::decode))
    }

    /// The record stored under `seq`, undecoded beyond its stored form;
    /// `None` when absent or undecodable (logged and counted).
    pub(super) fn record(&self, seq: u64) -> Result<Option<StoredEntry>, StoreError> {
        self.decoded(
            &self.t.records,
            "records",
            &keys::record_key(seq),
            codec::decode_entry,
        )
    }

    /// The entry stored under `seq` and its story's seq.
    pub(super) fn stored(&self, seq: u64) -> Result<Option<Stored>, StoreError> {
        let Some(record) = self.record(seq)? else {
            return Ok(None);
        };
        let story_seq = record.story_seq;
        match record.entry() {
            Ok(entry) => Ok(Some(Stored { story_seq, entry })),
            Err(reason) => {
                self.skip_corrupt("records", &keys::record_key(seq), &reason);
                Ok(None)
            }
        }
    }

    /// The story whose seq is `story_seq`, as stored; `None` when absent or
    /// undecodable (logged and counted).
    pub(super) fn stored_story(&self, story_seq: u64) -> Result<Option<StoredStory>, StoreError> {
        let key = keys::record_key(story_seq);
        self.decoded(&self.t.stories, "stories", &key, codec::decode_story)
    }

    /// Every stored copy in the story whose seq is `story_seq`, with their
    /// seqs, oldest first.
    pub(super) fn members(&self, story_seq: u64) -> Result<Vec<(u64, Stored)>, StoreError> {
        Ok(self.copies_of(story_seq)?.1)
    }

    /// The story whose seq is `story_seq`: its id when stored, and its
    /// stored copies with their seqs, oldest first.
    fn copies_of(&self, story_seq: u64) -> Result<(Option<String>, Copies), StoreError> {
        let Some(story) = self.stored_story(story_seq)? else {
            // A story whose one copy is its first has no value: that copy
            // is the story (unless it has joined another since).
            return Ok(match self.stored(story_seq)? {
                Some(first) if first.story_seq == story_seq => {
                    (Some(first.entry.id.clone()), vec![(story_seq, first)])
                }
                _ => (None, Vec::new()),
            });
        };
        let mut out = Vec::with_capacity(story.members.len());
        for seq in story.members {
            if let Some(stored) = self.stored(seq)? {
                out.push((seq, stored));
            }
        }
        Ok((story.id, out))
    }

    /// The story whose seq is `story_seq` as stored, and whether `stories`
    /// holds it: a story without a value is its first copy alone, or gone.
    pub(super) fn story_of(&self, story_seq: u64) -> Result<(StoredStory, bool), StoreError> {
        if let Some(story) = self.stored_story(story_seq)? {
            return Ok((story, true));
        }
        Ok(match self.record(story_seq)? {
            Some(first) if first.story_seq == story_seq => (
                StoredStory {
                    id: Some(first.id),
                    members: vec![story_seq],
                },
                false,
            ),
            _ => (StoredStory::default(), false),
        })
    }

    /// The sources `by_source` holds entries of, as their key prefixes:
    /// one seek per source, whatever they hold.
    pub(super) fn source_prefixes(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut from: Vec<u8> = Vec::new();
        loop {
            let Some((key, _)) = self
                .t
                .by_source
                .range(from.as_slice()..)
                .next()
                .transpose()
                .map_err(|e| self.sled_err(e))?
            else {
                break;
            };
            let len = key
                .get(..2)
                .and_then(|l| <[u8; 2]>::try_from(l).ok())
                .map(|l| usize::from(u16::from_be_bytes(l)));
            let Some(prefix) = len.and_then(|len| key.get(..2 + len)) else {
                self.skip_corrupt("by_source", &key, "short key");
                from = key.to_vec();
                from.push(0);
                continue;
            };
            // Past every key of this source: its prefix, then more 0xff
            // than a key's 16 bytes of time and seq.
            from = prefix.to_vec();
            from.extend_from_slice(&[0xff; 17]);
            out.push(prefix.to_vec());
        }
        Ok(out)
    }

    /// The `by_source` keys of the source whose key prefix is `prefix`
    /// that sort at or after `after` (all, when `None`), newest first.
    pub(super) fn source_keys_since(&self, prefix: &[u8], after: Option<Cursor>) -> SourceScan {
        let mut start = prefix.to_vec();
        if let Some(after) = after {
            start.extend_from_slice(&after.0);
        }
        let mut end = prefix.to_vec();
        end.extend_from_slice(&[0xff; 17]);
        self.t.by_source.range(start..end).rev()
    }

    /// The story whose seq is `story_seq`, with its copies that `keep`
    /// accepts, oldest first; `None` when none is left.
    fn story_item(
        &self,
        story_seq: u64,
        keep: &dyn Fn(&Entry) -> bool,
    ) -> Result<Option<Item>, StoreError> {
        let (id, members) = self.copies_of(story_seq)?;
        let mut copies: Vec<Entry> = members
            .into_iter()
            .filter(|(seq, _)| self.shown(*seq))
            .map(|(_, s)| s.entry)
            .filter(|e| keep(e))
            .collect();
        if copies.is_empty() {
            return Ok(None);
        }
        copies.sort_by_key(|e| (e.published_or_seen(), e.first_seen));
        let id = match id {
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
        Ok(self.source_page(source, limit, None)?.items)
    }

    /// Up to `limit` entries of source `source` older than `before` (all,
    /// when `None`), newest first, and where the next page starts.
    pub fn source_page(
        &self,
        source: &str,
        limit: usize,
        before: Option<Cursor>,
    ) -> Result<Page<Entry>, StoreError> {
        self.source_between(source, limit, before, None)
    }

    /// [`Store::source_page`], also stopping at `after`: only entries that
    /// sort at or after it.
    pub fn source_between(
        &self,
        source: &str,
        limit: usize,
        before: Option<Cursor>,
        after: Option<Cursor>,
    ) -> Result<Page<Entry>, StoreError> {
        let mut out = Vec::new();
        let mut last = None;
        let mut first = None;
        let mut next = None;
        for item in self.source_scan(source, before) {
            let (key, _) = item.map_err(|e| self.sled_err(e))?;
            let Some(seq) = keys::trailing_seq(&key) else {
                continue;
            };
            if !self.shown(seq) {
                continue;
            }
            if after.is_some_and(|after| position(&key).is_some_and(|at| at < after)) {
                break;
            }
            if out.len() >= limit {
                next = last;
                break;
            }
            if let Some(stored) = self.stored(seq)? {
                out.push(stored.entry);
                last = position(&key);
                first = first.or(last);
            }
        }
        Ok(Page {
            items: out,
            next,
            first,
        })
    }

    /// `source`'s `by_source` keys older than `before` (all, when `None`),
    /// newest first.
    fn source_scan(&self, source: &str, before: Option<Cursor>) -> SourceScan {
        let prefix = source_prefix(source);
        match before {
            None => self.t.by_source.scan_prefix(prefix).rev(),
            Some(Cursor(at)) => {
                let mut end = prefix.clone();
                end.extend_from_slice(&at);
                self.t.by_source.range(prefix..end).rev()
            }
        }
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
        Ok(self.stories_page(limit, sources, &|_| true, None)?.items)
    }

    /// Up to `limit` stories with a copy from `sources` that `admit`
    /// accepts, whose newest such copy is older than `before` (all, when
    /// `None`), newest first, each with those copies, and where the next
    /// page starts. Following the pages from `None` meets every story
    /// exactly once: a story belongs to the page of its newest copy.
    pub fn stories_page(
        &self,
        limit: usize,
        sources: &HashSet<&str>,
        admit: &dyn Fn(&Entry) -> bool,
        before: Option<Cursor>,
    ) -> Result<Page<Item>, StoreError> {
        self.stories_between(limit, sources, admit, before, None)
    }

    /// [`Store::stories_page`], also stopping at `after`: only stories
    /// whose newest admitted copy sorts at or after it.
    pub fn stories_between(
        &self,
        limit: usize,
        sources: &HashSet<&str>,
        admit: &dyn Fn(&Entry) -> bool,
        before: Option<Cursor>,
        after: Option<Cursor>,
    ) -> Result<Page<Item>, StoreError> {
        let mut scans: Vec<SourceScan> = Vec::new();
        let mut heads = BinaryHeap::new();
        for source in sources {
            let mut scan = self.source_scan(source, before);
            if let Some(head) = self.next_head(&mut scan)? {
                heads.push((head, Reverse(scans.len())));
            }
            scans.push(scan);
        }
        let keep = |e: &Entry| sources.contains(e.source.as_str()) && admit(e);
        let mut out = Vec::new();
        let mut emitted = HashSet::new();
        let mut last = None;
        let mut first = None;
        let mut next = None;
        while let Some(((at, story_seq), Reverse(which))) = heads.pop() {
            if after.is_some_and(|after| Cursor(at) < after) {
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
            // On a later page, a story whose newest copy is above the
            // cursor was on an earlier one.
            if before.is_some() && self.story_newest(story_seq, &keep)? > Some(Cursor(at)) {
                continue;
            }
            if out.len() >= limit {
                next = last;
                break;
            }
            if let Some(item) = self.story_item(story_seq, &keep)? {
                out.push(item);
                last = Some(Cursor(at));
                first = first.or(last);
            }
        }
        Ok(Page {
            items: out,
            next,
            first,
        })
    }

    /// Where the newest copy of story `story_seq` that `keep` accepts sits
    /// in the newest-first order.
    fn story_newest(
        &self,
        story_seq: u64,
        keep: &dyn Fn(&Entry) -> bool,
    ) -> Result<Option<Cursor>, StoreError> {
        Ok(self
            .members(story_seq)?
            .into_iter()
            .filter(|(seq, stored)| self.shown(*seq) && keep(&stored.entry))
            .map(|(seq, stored)| Cursor(keys::time_key(stored.entry.published_or_seen(), seq)))
            .max())
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

/// Where a `by_source` key sits in the newest-first order.
fn position(key: &[u8]) -> Option<Cursor> {
    key.len()
        .checked_sub(16)
        .and_then(|at| key.get(at..))
        .and_then(|t| <[u8; 16]>::try_from(t).ok())
        .map(Cursor)
}
