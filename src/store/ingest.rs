//! Writes: one poll's entries into the store. Identity and story policy
//! are `dedup`'s ([`dedup::merge`], [`dedup::place`]); this file reads
//! what they ask for and writes what they decide.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use crate::dedup::{self, Candidate, LinkCopies, Merge, Rules, StoredCopy, StoryIndex};
use crate::model::{Entry, Fingerprint, IngestCounts, Merged};

use super::codec::{self, PackedTexts, Slot, StoredEntry};
use super::filters::{Filters, KeyFilter};
use super::keys::{self, canon_hash, canon_key, compact_id, source_key, story_key, time_key};
use super::window::{Indexed, NearIndex, MAX_RESIDENTS};
use super::{Batches, Store, StoreError, WriterState};

/// One write an ingest makes: the entry under `seq` in story `story_seq`,
/// replacing `old`.
struct Plan {
    seq: u64,
    story_seq: u64,
    old: Option<Stored>,
    new: Entry,
    /// The entry starts a story: its id names the story.
    starts_story: bool,
    /// Which incoming entry it came from (its texts were packed ahead).
    incoming: Option<usize>,
}

/// A stored entry, decoded.
#[derive(Clone)]
pub(super) struct Stored {
    pub story_seq: u64,
    pub entry: Entry,
}

/// The store's indexes as `dedup::place` sees them.
struct Lookup<'a> {
    store: &'a Store,
    filters: &'a Filters,
    near: &'a NearIndex,
}

impl StoryIndex for Lookup<'_> {
    type Error = StoreError;

    fn by_link(&mut self, canon: &str, source: &str) -> Result<LinkCopies, StoreError> {
        let hash = canon_hash(canon);
        let mut found = LinkCopies::default();
        if !self.filters.canons.may_hold(&hash) {
            return Ok(found);
        }
        for item in self.store.t.by_canon.scan_prefix(hash) {
            let (key, _) = item.map_err(|e| self.store.sled_err(e))?;
            let Some(seq) = keys::trailing_seq(&key) else {
                continue;
            };
            // The stored form has all a match needs: no text to unpack.
            let Some(record) = self.store.record(seq)? else {
                continue;
            };
            // The hash may collide: the link itself decides.
            if record.canonical.as_deref() != Some(canon) {
                continue;
            }
            let slot = if record.source == source {
                &mut found.same_source
            } else {
                &mut found.other_source
            };
            slot.get_or_insert(StoredCopy {
                key: seq,
                story: record.story_seq,
                id: record.id,
            });
            if found.same_source.is_some() && found.other_source.is_some() {
                break;
            }
        }
        Ok(found)
    }

    fn near(
        &mut self,
        fingerprint: &Fingerprint,
        at: DateTime<Utc>,
        window: chrono::Duration,
        visit: &mut dyn FnMut(Candidate<'_>),
    ) -> Result<(), StoreError> {
        self.near.candidates(fingerprint, at, window, visit);
        Ok(())
    }
}

impl Store {
    /// Stores one poll's entries, deduplicating against what is stored:
    /// new entries are added (joining another source's story when `rules`
    /// say they are the same story), changed ones updated in place, the
    /// rest left; entries with a tombstone stay out. Lookups run first under
    /// the writer lock; the writes then go in one batch per tree.
    pub fn ingest(
        &self,
        incoming: &[Entry],
        now: DateTime<Utc>,
        rules: &Rules,
    ) -> Result<IngestCounts, StoreError> {
        // Compression is most of encoding a record: done before the lock,
        // for the entries not stored yet (most of a feed that changed is
        // already stored, and an unchanged entry is never written).
        let ahead: Vec<Option<PackedTexts<'_>>> = incoming
            .iter()
            .map(|e| match self.t.ids.contains_key(compact_id(&e.id)) {
                Ok(true) => None,
                _ => PackedTexts::of(e),
            })
            .collect();
        let mut writer = self.lock_writer();
        let state = match writer.take() {
            Some(state) => state,
            None => self.writer_state(now, rules.window)?,
        };
        let state = writer.insert(state);
        let mut counts = IngestCounts::default();
        let mut plans: Vec<Plan> = Vec::new();
        let mut seen = HashSet::new();
        // The document as dedup's identity rules see it: its guids, and the
        // ids its entries were given.
        let guids: Vec<&str> = incoming.iter().map(|e| e.source_id.as_str()).collect();
        let guids = dedup::DocumentGuids::new(&guids);
        let listed: HashSet<&str> = incoming.iter().map(|e| e.id.as_str()).collect();
        for (index, entry) in incoming.iter().enumerate() {
            let (stored_id, slot) = match self.find_slot(entry, &guids, &state.filters)? {
                Some((id, slot)) => (Some(id), Some(slot)),
                None => (None, None),
            };
            if let Some(Slot::Pruned { .. }) = slot {
                counts.suppressed += 1;
                continue;
            }
            // A slot without its record (a crash between the two writes)
            // keeps its seq; the entry is stored again under it.
            let mut seq = slot.map(Slot::seq);
            let mut existing = match seq {
                Some(seq) => self.stored(seq)?,
                None => None,
            };
            let mut placement = dedup::Placement::default();
            if seq.is_none() {
                let mut lookup = Lookup {
                    store: self,
                    filters: &state.filters,
                    near: &state.near,
                };
                placement = dedup::place(entry, &listed, rules, &mut lookup)?;
            }
            let mut entry = entry.clone();
            // Found under another guid variant's id: that entry it is.
            if let Some(id) = stored_id {
                entry.id = id;
            }
            if let Some(same) = placement.same_entry.take() {
                entry.id = same.id;
                existing = self.stored(same.key)?;
                seq = Some(same.key);
            }
            if !seen.insert(entry.id.clone()) {
                counts.unchanged += 1;
                continue;
            }
            match dedup::merge(existing.as_ref().map(|s| &s.entry), entry, now) {
                Merge::Unchanged => counts.unchanged += 1,
                Merge::Updated(mut e) => {
                    // An update always has a stored copy and its seq.
                    let (Some(old), Some(seq)) = (existing, seq) else {
                        continue;
                    };
                    counts.updated += 1;
                    e.merged = old.entry.merged.clone();
                    plans.push(Plan {
                        seq,
                        story_seq: old.story_seq,
                        old: Some(old),
                        new: e,
                        starts_story: false,
                        incoming: Some(index),
                    });
                }
                Merge::New(mut e) => {
                    counts.new += 1;
                    let seq = match seq {
                        Some(seq) => seq,
                        None => {
                            let seq = self.db.generate_id().map_err(|e| self.sled_err(e))?;
                            // Hidden from readers until it is flushed.
                            self.unflushed.hide_from(seq);
                            seq
                        }
                    };
                    let (story_seq, merged) = match placement.join {
                        Some((story, merged)) => {
                            counts.merged += 1;
                            (story, Some(merged))
                        }
                        None => (seq, None),
                    };
                    e.merged = merged;
                    // The new copy links two stories: they are one now.
                    if let Some((other, link)) = placement.absorb {
                        self.plan_absorb(other, story_seq, link, &mut plans)?;
                    }
                    plans.push(Plan {
                        seq,
                        story_seq,
                        old: None,
                        new: e,
                        starts_story: story_seq == seq,
                        incoming: Some(index),
                    });
                }
            }
        }
        if !plans.is_empty() {
            self.write(&plans, &ahead, state, now)?;
        }
        Ok(counts)
    }

    /// Where `entry` is stored, if it is: the ids `dedup::stored_under`
    /// names (its own first when they leave it out), in order, each behind
    /// the Bloom filter (which answers "not stored" for most new entries).
    fn find_slot(
        &self,
        entry: &Entry,
        guids: &dedup::DocumentGuids,
        filters: &Filters,
    ) -> Result<Option<(String, Slot)>, StoreError> {
        let mut candidates = dedup::stored_under(&entry.source, &entry.source_id, guids);
        if !candidates.iter().any(|c| c.id == entry.id) {
            candidates.insert(
                0,
                dedup::StoredUnder {
                    id: entry.id.clone(),
                    same_guid_only: false,
                },
            );
        }
        for candidate in candidates {
            if !filters.ids.may_hold(&compact_id(&candidate.id)) {
                continue;
            }
            let Some(slot) = self.slot(&candidate.id)? else {
                continue;
            };
            if candidate.same_guid_only {
                let same = match slot {
                    Slot::Stored(seq) => self
                        .stored(seq)?
                        .is_some_and(|s| dedup::same_guid(&s.entry.source_id, &entry.source_id)),
                    Slot::Pruned { .. } => false,
                };
                if !same {
                    continue;
                }
            }
            return Ok(Some((candidate.id, slot)));
        }
        Ok(None)
    }

    /// Plans moving every copy of story `other` into story `into`; the
    /// absorbed story's first copy says why (`link`).
    fn plan_absorb(
        &self,
        other: u64,
        into: u64,
        link: Merged,
        plans: &mut Vec<Plan>,
    ) -> Result<(), StoreError> {
        for (member_seq, member) in self.members(other)? {
            let mut moved = member.entry.clone();
            if moved.merged.is_none() {
                moved.merged = Some(link.clone());
            }
            plans.push(Plan {
                seq: member_seq,
                story_seq: into,
                old: Some(member),
                new: moved,
                starts_story: false,
                incoming: None,
            });
        }
        Ok(())
    }

    /// The filters and the near-duplicate index, read in on the first
    /// ingest since the store opened: one read of `ids` and `by_canon`, and
    /// of the recent end of `records` and `by_time`.
    fn writer_state(
        &self,
        now: DateTime<Utc>,
        window: chrono::Duration,
    ) -> Result<WriterState, StoreError> {
        let (mut ids, mut canons) = (KeyFilter::default(), KeyFilter::default());
        for key in self.t.ids.iter().keys() {
            ids.add(&key.map_err(|e| self.sled_err(e))?);
        }
        for key in self.t.by_canon.iter().keys() {
            let key = key.map_err(|e| self.sled_err(e))?;
            canons.add(key.get(..8).unwrap_or(&key));
        }
        let mut near = NearIndex::new(window);
        let cutoff = near.cutoff(now);
        let mut recent = Vec::new();
        // Latest arrivals first, then the latest published: what was seen
        // or published within the horizon.
        for item in self.t.records.iter().rev() {
            let (key, value) = item.map_err(|e| self.sled_err(e))?;
            let Some(seq) = keys::number_at(&key, 0) else {
                continue;
            };
            match codec::decode_entry(&value) {
                Ok(stored) => {
                    if stored.first_seen().is_ok_and(|t| t < cutoff)
                        || recent.len() >= MAX_RESIDENTS
                    {
                        break;
                    }
                    recent.push((seq, stored));
                }
                Err(reason) => self.skip_corrupt("records", &key, &reason),
            }
        }
        let floor = keys::time_key(cutoff, 0);
        for item in self.t.by_time.range(floor..).rev() {
            if recent.len() >= MAX_RESIDENTS {
                break;
            }
            let (key, _) = item.map_err(|e| self.sled_err(e))?;
            let Some(seq) = keys::trailing_seq(&key) else {
                continue;
            };
            if let Some(stored) = self.record(seq)? {
                recent.push((seq, stored));
            }
        }
        // Oldest first, so the latest arrivals are the last evicted.
        recent.sort_by_key(|(seq, _)| *seq);
        recent.dedup_by_key(|(seq, _)| *seq);
        for (seq, stored) in recent {
            let (Some(fingerprint), Ok(at), Ok(seen)) = (
                stored
                    .fingerprint
                    .as_ref()
                    .and_then(|f| f.fingerprint().ok()),
                stored.sort_time(),
                stored.first_seen(),
            ) else {
                continue;
            };
            near.insert(
                Indexed {
                    seq,
                    story: stored.story_seq,
                    id: &stored.id,
                    source: &stored.source,
                    at,
                    seen,
                    fingerprint: &fingerprint,
                },
                now,
            );
        }
        Ok(WriterState {
            filters: Filters { ids, canons },
            near,
        })
    }

    /// Writes what an ingest planned, one batch per tree ([`Batches`]).
    fn write(
        &self,
        plans: &[Plan],
        ahead: &[Option<PackedTexts<'_>>],
        state: &mut WriterState,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut b = Batches::default();
        let mut added = 0i64;
        for plan in plans {
            let Plan {
                seq,
                story_seq,
                old,
                new,
                starts_story,
                incoming,
            } = plan;
            let (seq, story_seq) = (*seq, *story_seq);
            let time = new.published_or_seen();
            if let Some(old) = old {
                if old.story_seq != story_seq {
                    b.by_story.remove(&story_key(old.story_seq, seq)[..]);
                }
                let old_time = old.entry.published_or_seen();
                if keys::ordered_millis(old_time) != keys::ordered_millis(time) {
                    b.by_time.remove(&time_key(old_time, seq)[..]);
                    b.by_source
                        .remove(source_key(&old.entry.source, old_time, seq));
                }
                if let Some(canon) = &old.entry.canonical {
                    if new.canonical.as_ref() != Some(canon) {
                        b.by_canon.remove(&canon_key(canon, seq)[..]);
                    }
                }
            } else {
                added += 1;
            }
            let packed = incoming.and_then(|i| ahead.get(i)).and_then(Option::as_ref);
            let stored = StoredEntry::of_packed(new, story_seq, packed)
                .map_err(|r| self.corrupt("records", r))?;
            let value = codec::encode_entry(&stored).map_err(|r| self.corrupt("records", r))?;
            b.records.insert(&keys::record_key(seq)[..], value);
            self.changes.touch(&new.source);
            let id = compact_id(&new.id);
            state.filters.ids.add(&id);
            b.ids.insert(id, Slot::Stored(seq).encode());
            b.by_time
                .insert(&time_key(time, seq)[..], new.source.as_bytes());
            b.by_source.insert(
                source_key(&new.source, time, seq),
                &story_seq.to_be_bytes()[..],
            );
            if let Some(canon) = &new.canonical {
                state.filters.canons.add(&canon_hash(canon));
                b.by_canon.insert(&canon_key(canon, seq)[..], &[][..]);
            }
            b.by_story.insert(&story_key(story_seq, seq)[..], &[][..]);
            if *starts_story {
                b.stories
                    .insert(&keys::record_key(seq)[..], codec::encode_story_id(&new.id));
            }
            // A story emptied by an absorption no longer names anything.
            if let Some(old) = old {
                if old.story_seq != story_seq {
                    b.stories.remove(&keys::record_key(old.story_seq)[..]);
                }
            }
        }
        // New entries stay hidden from readers until they are flushed.
        for plan in plans.iter().filter(|plan| plan.old.is_none()) {
            self.unflushed.hide(plan.seq);
        }
        self.apply(b)?;
        if added != 0 {
            self.count_entries(added)?;
        }
        for plan in plans {
            match &plan.new.fingerprint {
                Some(fingerprint) => state.near.insert(
                    Indexed {
                        seq: plan.seq,
                        story: plan.story_seq,
                        id: &plan.new.id,
                        source: &plan.new.source,
                        at: plan.new.published_or_seen(),
                        seen: plan.new.first_seen,
                        fingerprint,
                    },
                    now,
                ),
                None => state.near.remove(plan.seq),
            }
        }
        Ok(())
    }
}
