//! The near-duplicate index, in memory: the LSH bands of recent entries'
//! fingerprints, so a lookup for an incoming entry reads no sled page.
//!
//! Near-duplicates are only looked for among entries published within the
//! dedup window of each other, and news arrives close to when it is
//! published, so the entries that matter are the recent ones: those first
//! seen, or published, within the horizon (twice the window). The index is
//! rebuilt on the first ingest after the store opens, from the recent end
//! of `records` and each source's `by_source` keys within the horizon, and
//! holds at most [`MAX_RESIDENTS`]
//! entries (the latest arrivals win).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use crate::dedup::{self, Candidate};
use crate::model::{Fingerprint, FingerprintView};

/// Most entries the index holds (about 450 bytes each: the resident with
/// its fingerprint, about 250 bytes, and sixteen band slots of 8 bytes).
pub(super) const MAX_RESIDENTS: usize = 100_000;
/// Candidates read per LSH band: bounds a lookup however many entries
/// share a band (boilerplate, templates).
const MAX_CANDIDATES_PER_BAND: usize = 8;
/// Candidates offered per lookup, over all bands. Copies of one story
/// share many bands, so a true match is met early.
const MAX_CANDIDATES: usize = 48;

/// One indexed entry.
struct Resident {
    seq: u64,
    story: u64,
    id: ResidentId,
    /// Shared by every resident of the source.
    source: Arc<str>,
    /// Sort time (publication, else first seen), milliseconds.
    at: i64,
    /// First seen, milliseconds.
    seen: i64,
    /// The fingerprint, held inline: its MinHash has a fixed length.
    minhash: [u16; dedup::FINGERPRINT_HASHES],
    numbers: Box<[u32]>,
    /// Which arrival of this seq it is (an entry pruned and stored again
    /// arrives twice): the queue's older arrival no longer evicts it.
    arrival: u64,
}

/// An entry id as a resident keeps it: a feedmerge id as the 16 bytes its
/// hex digits spell (inline), any other id as its text.
enum ResidentId {
    Hash([u8; 16]),
    Text(Box<str>),
}

impl ResidentId {
    fn of(id: &str) -> Self {
        // Only an id spelled as `dedup` spells one, so it reads back as the
        // same text.
        match dedup::entry_id_hash(id) {
            Some(hash) => Self::Hash(hash),
            None => Self::Text(id.into()),
        }
    }

    /// The id as text, written into `buffer` when it is not kept as text.
    fn text<'a>(&'a self, buffer: &'a mut String) -> &'a str {
        match self {
            Self::Text(text) => text,
            Self::Hash(hash) => {
                buffer.clear();
                dedup::push_entry_id(hash, buffer);
                buffer
            }
        }
    }
}

/// An entry to index.
pub(super) struct Indexed<'a> {
    pub seq: u64,
    pub story: u64,
    pub id: &'a str,
    pub source: &'a str,
    pub at: DateTime<Utc>,
    pub seen: DateTime<Utc>,
    pub fingerprint: &'a Fingerprint,
}

/// The index. Residents live in slots, and the bands name slots (32 bits)
/// rather than seqs; a resident leaves its bands when it leaves, so every
/// slot a band names is live.
pub(super) struct NearIndex {
    /// Residents by slot (`None`: a free slot).
    slots: Vec<Option<Resident>>,
    /// Free slots, used again first.
    free: Vec<u32>,
    /// Seq -> its slot.
    by_seq: HashMap<u64, u32>,
    /// One table per LSH band: band hash -> the slots under it, in arrival
    /// order.
    bands: Vec<Bands>,
    /// Seqs (and their arrival numbers) in arrival order, for eviction.
    arrivals: VecDeque<(u64, u64)>,
    /// Arrivals so far.
    arrived: u64,
    /// Arrivals queued for residents removed before their turn to leave:
    /// swept when they outnumber the residents.
    stale: usize,
    /// Source names, one copy each.
    sources: HashSet<Arc<str>>,
    horizon: Duration,
}

impl NearIndex {
    pub(super) fn new(window: Duration) -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            by_seq: HashMap::new(),
            bands: (0..dedup::BANDS).map(|_| Bands::default()).collect(),
            arrivals: VecDeque::new(),
            arrived: 0,
            stale: 0,
            sources: HashSet::new(),
            horizon: window + window,
        }
    }

    /// The oldest time an entry may be (seen or published) and still be
    /// indexed at `now`.
    pub(super) fn cutoff(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now.checked_sub_signed(self.horizon)
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_seq.len()
    }

    #[cfg(test)]
    pub(super) fn contains(&self, seq: u64) -> bool {
        self.by_seq.contains_key(&seq)
    }

    fn resident(&self, slot: u32) -> Option<&Resident> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    /// Indexes an entry (or re-indexes it when its text changed), then
    /// evicts what fell out of the horizon or past the cap.
    pub(super) fn insert(&mut self, e: Indexed<'_>, now: DateTime<Utc>) {
        // A MinHash of another length (an undecodable record's) could match
        // no fingerprint `dedup` makes.
        let Ok(minhash) = <[u16; dedup::FINGERPRINT_HASHES]>::try_from(&e.fingerprint.minhash[..])
        else {
            self.remove(e.seq);
            return;
        };
        // A re-indexed entry keeps its slot and its place in the arrival
        // order.
        let (slot, arrival) = match self.by_seq.get(&e.seq).copied() {
            Some(slot) => match self.take(slot) {
                Some(old) => (slot, old.arrival),
                None => (slot, self.arrive(e.seq)),
            },
            None => {
                let slot = match self.free.pop() {
                    Some(slot) => slot,
                    None => {
                        self.slots.push(None);
                        (self.slots.len() - 1) as u32
                    }
                };
                self.by_seq.insert(e.seq, slot);
                (slot, self.arrive(e.seq))
            }
        };
        for (band, hash) in band_hashes(&minhash) {
            if let Some(table) = self.bands.get_mut(band) {
                table.push(hash, slot);
            }
        }
        let source = match self.sources.get(e.source) {
            Some(source) => Arc::clone(source),
            None => {
                let source: Arc<str> = e.source.into();
                self.sources.insert(Arc::clone(&source));
                source
            }
        };
        if let Some(place) = self.slots.get_mut(slot as usize) {
            *place = Some(Resident {
                seq: e.seq,
                story: e.story,
                id: ResidentId::of(e.id),
                source,
                at: e.at.timestamp_millis(),
                seen: e.seen.timestamp_millis(),
                minhash,
                numbers: e.fingerprint.numbers.as_slice().into(),
                arrival,
            });
        }
        self.evict(now);
    }

    /// Queues a new arrival of `seq`; its number.
    fn arrive(&mut self, seq: u64) -> u64 {
        self.arrived += 1;
        self.arrivals.push_back((seq, self.arrived));
        self.arrived
    }

    /// Empties `slot` and takes its resident out of its bands (the slot
    /// stays `seq`'s).
    fn take(&mut self, slot: u32) -> Option<Resident> {
        let old = self.slots.get_mut(slot as usize)?.take()?;
        for (band, hash) in band_hashes(&old.minhash) {
            if let Some(table) = self.bands.get_mut(band) {
                table.remove(hash, slot);
            }
        }
        Some(old)
    }

    /// Forgets an entry (pruned, or its text lost its fingerprint); its
    /// queued arrival goes stale.
    pub(super) fn remove(&mut self, seq: u64) {
        if self.forget(seq) {
            self.stale += 1;
            if self.stale > self.by_seq.len() + 1024 {
                self.sweep();
            }
        }
    }

    /// Frees `seq`'s slot; whether it was indexed.
    fn forget(&mut self, seq: u64) -> bool {
        let Some(slot) = self.by_seq.remove(&seq) else {
            return false;
        };
        self.take(slot);
        self.free.push(slot);
        true
    }

    fn evict(&mut self, now: DateTime<Utc>) {
        let cutoff = self.cutoff(now).timestamp_millis();
        while let Some(&(seq, arrival)) = self.arrivals.front() {
            // A queued arrival whose entry left, or arrived again since, is
            // stale.
            let current = self
                .by_seq
                .get(&seq)
                .and_then(|slot| self.resident(*slot))
                .filter(|r| r.arrival == arrival);
            // Arrival order is first-seen order: once the front is kept, so
            // is everything after it.
            let kept = current
                .is_some_and(|r| self.by_seq.len() <= MAX_RESIDENTS && r.seen.max(r.at) >= cutoff);
            if kept {
                break;
            }
            let evict = current.is_some();
            self.arrivals.pop_front();
            if evict {
                self.forget(seq);
            } else {
                self.stale = self.stale.saturating_sub(1);
            }
        }
    }

    /// Drops the queued arrivals of residents that left.
    fn sweep(&mut self) {
        let (by_seq, slots) = (&self.by_seq, &self.slots);
        self.arrivals.retain(|(seq, arrival)| {
            by_seq
                .get(seq)
                .and_then(|slot| slots.get(*slot as usize))
                .and_then(Option::as_ref)
                .is_some_and(|r| r.arrival == *arrival)
        });
        self.stale = 0;
    }

    /// Offers `visit` the entries sharing a band with `fingerprint` and
    /// published within `window` of `at`, latest arrivals first, at most
    /// [`MAX_CANDIDATES`].
    pub(super) fn candidates(
        &self,
        fingerprint: &Fingerprint,
        at: DateTime<Utc>,
        window: Duration,
        visit: &mut dyn FnMut(Candidate<'_>),
    ) {
        let (at, window) = (at.timestamp_millis(), window.num_milliseconds());
        let mut offered: Vec<u32> = Vec::new();
        let mut id = String::new();
        for (band, hash) in band_hashes(&fingerprint.minhash) {
            let Some(table) = self.bands.get(band) else {
                continue;
            };
            let mut from_band = 0;
            for &slot in table.get(hash).iter().rev() {
                if from_band >= MAX_CANDIDATES_PER_BAND || offered.len() >= MAX_CANDIDATES {
                    break;
                }
                let Some(r) = self.resident(slot) else {
                    continue;
                };
                if (r.at - at).abs() > window || offered.contains(&slot) {
                    continue;
                }
                offered.push(slot);
                from_band += 1;
                visit(Candidate {
                    key: r.seq,
                    story: r.story,
                    id: r.id.text(&mut id),
                    source: &r.source,
                    fingerprint: FingerprintView {
                        minhash: &r.minhash,
                        numbers: &r.numbers,
                    },
                });
            }
        }
    }
}

/// A fingerprint's LSH bands: each band's number and its 32-bit hash.
fn band_hashes(minhash: &[u16]) -> impl Iterator<Item = (usize, u32)> {
    dedup::band_keys(minhash)
        .into_iter()
        .map(|[band, h0, h1, h2, h3]| (usize::from(band), u32::from_be_bytes([h0, h1, h2, h3])))
}

/// A band value holding a list: the top bit, then the list's index.
const LIST: u32 = 1 << 31;

/// One band's table: band hash -> the slots under it, in arrival order.
/// Nearly every hash is held by one slot, so each value is one `u32`: that
/// slot, or (top bit set) the index of a list of them. A table entry is 8
/// bytes; slots stay below the top bit (at most [`MAX_RESIDENTS`] are
/// live).
#[derive(Default)]
struct Bands {
    map: HashMap<u32, u32>,
    lists: Vec<Vec<u32>>,
    /// Indexes of `lists` no hash uses.
    free: Vec<u32>,
}

impl Bands {
    fn push(&mut self, hash: u32, slot: u32) {
        match self.map.entry(hash) {
            Entry::Vacant(place) => {
                place.insert(slot);
            }
            Entry::Occupied(mut place) => {
                let value = *place.get();
                if value & LIST != 0 {
                    if let Some(list) = self.lists.get_mut((value & !LIST) as usize) {
                        list.push(slot);
                    }
                } else {
                    let list = Self::new_list(&mut self.lists, &mut self.free, vec![value, slot]);
                    place.insert(list);
                }
            }
        }
    }

    fn new_list(lists: &mut Vec<Vec<u32>>, free: &mut Vec<u32>, slots: Vec<u32>) -> u32 {
        let at = match free.pop() {
            Some(at) => {
                if let Some(list) = lists.get_mut(at as usize) {
                    *list = slots;
                }
                at
            }
            None => {
                lists.push(slots);
                (lists.len() - 1) as u32
            }
        };
        at | LIST
    }

    /// The slots under `hash`, in arrival order.
    fn get(&self, hash: u32) -> &[u32] {
        match self.map.get(&hash) {
            Some(value) if value & LIST != 0 => self
                .lists
                .get((value & !LIST) as usize)
                .map_or(&[], Vec::as_slice),
            Some(slot) => std::slice::from_ref(slot),
            None => &[],
        }
    }

    /// Takes `slot` out from under `hash`; a hash left with one slot holds
    /// it inline again, one left with none goes.
    fn remove(&mut self, hash: u32, slot: u32) {
        let Entry::Occupied(mut place) = self.map.entry(hash) else {
            return;
        };
        let value = *place.get();
        if value & LIST == 0 {
            if value == slot {
                place.remove();
            }
            return;
        }
        let at = value & !LIST;
        let Some(list) = self.lists.get_mut(at as usize) else {
            place.remove();
            return;
        };
        if let Some(i) = list.iter().position(|s| *s == slot) {
            list.remove(i);
        }
        match list.as_slice() {
            [] => {
                place.remove();
            }
            [one] => {
                place.insert(*one);
            }
            _ => return,
        }
        *list = Vec::new();
        self.free.push(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(seed: u32) -> Fingerprint {
        Fingerprint {
            minhash: (0..64).map(|i| (i * 7 + seed) as u16).collect(),
            numbers: vec![],
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn band_slots_keep_arrival_order_and_shrink_back() {
        let mut bands = Bands::default();
        bands.push(9, 1);
        assert_eq!(bands.get(9), [1]);
        bands.push(9, 2);
        bands.push(9, 3);
        bands.push(8, 4);
        assert_eq!(bands.get(9), [1, 2, 3]);
        assert_eq!(bands.get(8), [4]);
        assert_eq!(bands.get(7), [] as [u32; 0]);
        bands.remove(9, 2);
        assert_eq!(bands.get(9), [1, 3]);
        bands.remove(9, 1);
        assert_eq!(bands.get(9), [3]);
        assert_eq!(bands.map.get(&9), Some(&3), "one slot is inline again");
        assert_eq!(bands.free.len(), 1);
        // A slot not under the hash changes nothing.
        bands.remove(9, 7);
        bands.remove(6, 7);
        assert_eq!(bands.get(9), [3]);
        // A freed list is used again.
        bands.push(8, 5);
        assert_eq!(bands.get(8), [4, 5]);
        assert!(bands.free.is_empty());
        bands.remove(9, 3);
        bands.remove(8, 4);
        bands.remove(8, 5);
        assert!(bands.map.is_empty());
    }

    #[test]
    fn a_resident_leaves_its_bands_and_its_slot_serves_again() {
        let now = at("2025-04-01T00:00:00Z");
        let mut index = NearIndex::new(Duration::days(3));
        let (f, g) = (fp(1), fp(2));
        let entry = |seq, fingerprint| Indexed {
            seq,
            story: seq,
            id: "id",
            source: "a",
            at: now,
            seen: now,
            fingerprint,
        };
        let found = |index: &NearIndex, f: &Fingerprint| {
            let mut keys = Vec::new();
            index.candidates(f, now, Duration::days(3), &mut |c| keys.push(c.key));
            keys
        };
        index.insert(entry(1, &f), now);
        index.insert(entry(2, &f), now);
        assert_eq!(found(&index, &f), [2, 1], "latest arrival first");
        index.remove(1);
        assert_eq!(found(&index, &f), [2]);
        // Seq 3 takes seq 1's slot, under other bands: f finds only 2.
        index.insert(entry(3, &g), now);
        assert_eq!(index.slots.len(), 2, "the free slot was used again");
        assert_eq!(found(&index, &f), [2]);
        assert_eq!(found(&index, &g), [3]);
        // Re-indexed under another text, seq 2 leaves f's bands.
        index.insert(entry(2, &g), now);
        assert!(found(&index, &f).is_empty());
        assert_eq!(found(&index, &g), [2, 3]);
        assert!(index.bands.iter().all(|b| b.map.len() == 1));
        // One source name is kept once.
        assert_eq!(index.sources.len(), 1);
        // Ids come back as they went in, kept as hash bytes or as text.
        let mut buffer = String::new();
        for id in [
            dedup::entry_id("src", "guid"),
            "id".to_string(),
            // Upper-case digits spell the same bytes: kept as text.
            dedup::entry_id("src", "guid").replacen('a', "A", 1),
            format!("{}abc", dedup::ENTRY_ID_PREFIX),
        ] {
            assert_eq!(ResidentId::of(&id).text(&mut buffer), id);
        }
        assert!(matches!(
            ResidentId::of(&dedup::entry_id("src", "guid")),
            ResidentId::Hash(_)
        ));
        // Removals past the residents sweep the stale arrivals.
        for seq in 10..2_100 {
            index.insert(entry(seq, &g), now);
            index.remove(seq);
        }
        assert!(index.arrivals.len() <= index.len() + 1025 + 1);
        assert_eq!(index.len(), 2);
        // A MinHash of another length is not indexed, and takes its seq out.
        let short = Fingerprint {
            minhash: vec![1, 2, 3],
            numbers: vec![],
        };
        index.insert(entry(3, &short), now);
        assert!(!index.contains(3));
        assert_eq!(found(&index, &g), [2]);
    }

    #[test]
    fn finds_recent_band_mates_within_the_window_only() {
        let now = at("2025-04-01T00:00:00Z");
        let mut index = NearIndex::new(Duration::days(3));
        let f = fp(1);
        let entry = |seq, when: &str| Indexed {
            seq,
            story: seq,
            id: "id",
            source: "a",
            at: at(when),
            seen: now,
            fingerprint: &f,
        };
        index.insert(entry(1, "2025-03-31T00:00:00Z"), now);
        index.insert(entry(2, "2025-03-20T00:00:00Z"), now);
        let mut found = Vec::new();
        index.candidates(
            &f,
            at("2025-03-31T12:00:00Z"),
            Duration::days(3),
            &mut |c| found.push(c.key),
        );
        assert_eq!(found, [1]);
        // Another fingerprint shares no band.
        let mut none = 0;
        index.candidates(&fp(999), now, Duration::days(3), &mut |_| none += 1);
        assert_eq!(none, 0);
        // Indexed again in another story (two stories became one).
        index.insert(
            Indexed {
                story: 7,
                ..entry(1, "2025-03-31T00:00:00Z")
            },
            now,
        );
        let mut stories = Vec::new();
        index.candidates(&f, now, Duration::days(3), &mut |c| stories.push(c.story));
        assert_eq!(stories, [7]);
        index.remove(1);
        assert!(!index.contains(1));
        // Entries seen and published long before now leave.
        let later = now + Duration::days(30);
        let g = fp(5);
        index.insert(
            Indexed {
                seq: 3,
                story: 3,
                id: "id3",
                source: "b",
                at: later,
                seen: later,
                fingerprint: &g,
            },
            later,
        );
        assert!(!index.contains(2));
        assert!(index.contains(3));
        assert_eq!(index.len(), 1);
    }
}
