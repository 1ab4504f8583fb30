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

use chrono::{DateTime, Duration, Utc};

use crate::dedup::{self, Candidate};
use crate::model::Fingerprint;

/// Most entries the index holds (about 1 KB each: the resident with its
/// fingerprint, about 550 bytes, and sixteen band slots).
pub(super) const MAX_RESIDENTS: usize = 100_000;
/// Candidates read per LSH band: bounds a lookup however many entries
/// share a band (boilerplate, templates).
const MAX_CANDIDATES_PER_BAND: usize = 8;
/// Candidates offered per lookup, over all bands. Copies of one story
/// share many bands, so a true match is met early.
const MAX_CANDIDATES: usize = 48;

/// One indexed entry.
struct Resident {
    story: u64,
    id: Box<str>,
    source: Box<str>,
    /// Sort time (publication, else first seen), milliseconds.
    at: i64,
    /// First seen, milliseconds.
    seen: i64,
    fingerprint: Fingerprint,
    /// Which arrival of this seq it is (an entry pruned and stored again
    /// arrives twice): the queue's older arrival no longer evicts it.
    arrival: u64,
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

/// The index.
pub(super) struct NearIndex {
    residents: HashMap<u64, Resident>,
    /// Band key -> seqs, in arrival order (may name seqs no longer
    /// resident: skipped, and swept when they outnumber the live ones).
    bands: Bands,
    /// Seqs (and their arrival numbers) in arrival order, for eviction.
    arrivals: VecDeque<(u64, u64)>,
    /// Arrivals so far.
    arrived: u64,
    /// Band slots naming seqs no longer resident.
    stale: usize,
    horizon: Duration,
}

impl NearIndex {
    pub(super) fn new(window: Duration) -> Self {
        Self {
            residents: HashMap::new(),
            bands: Bands::default(),
            arrivals: VecDeque::new(),
            arrived: 0,
            stale: 0,
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
        self.residents.len()
    }

    #[cfg(test)]
    pub(super) fn contains(&self, seq: u64) -> bool {
        self.residents.contains_key(&seq)
    }

    /// Indexes an entry (or re-indexes it when its text changed), then
    /// evicts what fell out of the horizon or past the cap.
    pub(super) fn insert(&mut self, e: Indexed<'_>, now: DateTime<Utc>) {
        // A re-indexed entry keeps its place in the arrival order.
        let arrival = match self.residents.remove(&e.seq) {
            Some(old) => {
                self.stale += dedup::BANDS;
                old.arrival
            }
            None => {
                self.arrived += 1;
                self.arrivals.push_back((e.seq, self.arrived));
                self.arrived
            }
        };
        for band in dedup::band_keys(&e.fingerprint.minhash) {
            self.bands.push(packed(band), e.seq);
        }
        self.residents.insert(
            e.seq,
            Resident {
                story: e.story,
                id: e.id.into(),
                source: e.source.into(),
                at: e.at.timestamp_millis(),
                seen: e.seen.timestamp_millis(),
                fingerprint: e.fingerprint.clone(),
                arrival,
            },
        );
        self.evict(now);
    }

    /// Forgets an entry (pruned, or its text lost its fingerprint).
    pub(super) fn remove(&mut self, seq: u64) {
        if self.residents.remove(&seq).is_some() {
            self.stale += dedup::BANDS;
            if self.stale > (self.residents.len() + 1024) * dedup::BANDS {
                self.sweep();
            }
        }
    }

    fn evict(&mut self, now: DateTime<Utc>) {
        let cutoff = self.cutoff(now).timestamp_millis();
        while let Some(&(seq, arrival)) = self.arrivals.front() {
            // A slot whose entry left, or arrived again since, is stale.
            let current = self.residents.get(&seq).filter(|r| r.arrival == arrival);
            // Arrival order is first-seen order: once the front is kept, so
            // is everything after it.
            let kept = current.is_some_and(|r| {
                self.residents.len() <= MAX_RESIDENTS && r.seen.max(r.at) >= cutoff
            });
            if kept {
                break;
            }
            let evict = current.is_some();
            self.arrivals.pop_front();
            if evict {
                self.remove(seq);
            }
        }
    }

    fn sweep(&mut self) {
        let residents = &self.residents;
        self.bands.retain(|s| residents.contains_key(s));
        self.arrivals
            .retain(|(s, a)| residents.get(s).is_some_and(|r| r.arrival == *a));
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
        let mut offered = HashSet::new();
        for band in dedup::band_keys(&fingerprint.minhash) {
            let mut from_band = 0;
            for &seq in self.bands.get(packed(band)).iter().rev() {
                if from_band >= MAX_CANDIDATES_PER_BAND || offered.len() >= MAX_CANDIDATES {
                    break;
                }
                let Some(r) = self.residents.get(&seq) else {
                    continue;
                };
                if (r.at - at).abs() > window || !offered.insert(seq) {
                    continue;
                }
                from_band += 1;
                visit(Candidate {
                    key: seq,
                    story: r.story,
                    id: &r.id,
                    source: &r.source,
                    fingerprint: &r.fingerprint,
                });
            }
        }
    }
}

/// A band key (band number, then its 32-bit hash) as one number.
fn packed(band: [u8; 5]) -> u64 {
    let [b, h0, h1, h2, h3] = band;
    (u64::from(b) << 32) | u64::from(u32::from_be_bytes([h0, h1, h2, h3]))
}

/// A band value holding a list: the top bit, then the list's index.
const LIST: u64 = 1 << 63;

/// Band key -> the seqs under it, in arrival order. There are sixteen band
/// keys per resident, nearly all of them held by one seq, so each value is
/// one `u64`: that seq, or (top bit set) the index of a list of them. That
/// keeps a slot at 16 bytes (8 for the key, 8 for the value).
#[derive(Default)]
struct Bands {
    map: HashMap<u64, u64>,
    lists: Vec<Vec<u64>>,
    /// Indexes of `lists` no band uses.
    free: Vec<usize>,
}

impl Bands {
    fn push(&mut self, band: u64, seq: u64) {
        match self.map.entry(band) {
            Entry::Vacant(slot) if seq & LIST == 0 => {
                slot.insert(seq);
            }
            Entry::Vacant(slot) => {
                let list = Self::new_list(&mut self.lists, &mut self.free, vec![seq]);
                slot.insert(list);
            }
            Entry::Occupied(mut slot) => {
                let value = *slot.get();
                if value & LIST != 0 {
                    if let Some(list) = self.lists.get_mut((value & !LIST) as usize) {
                        list.push(seq);
                    }
                } else {
                    let list = Self::new_list(&mut self.lists, &mut self.free, vec![value, seq]);
                    slot.insert(list);
                }
            }
        }
    }

    fn new_list(lists: &mut Vec<Vec<u64>>, free: &mut Vec<usize>, seqs: Vec<u64>) -> u64 {
        let at = match free.pop() {
            Some(at) => {
                if let Some(list) = lists.get_mut(at) {
                    *list = seqs;
                }
                at
            }
            None => {
                lists.push(seqs);
                lists.len() - 1
            }
        };
        at as u64 | LIST
    }

    /// The seqs under `band`, in arrival order.
    fn get(&self, band: u64) -> &[u64] {
        match self.map.get(&band) {
            Some(value) if value & LIST != 0 => self
                .lists
                .get((value & !LIST) as usize)
                .map_or(&[], Vec::as_slice),
            Some(seq) => std::slice::from_ref(seq),
            None => &[],
        }
    }

    /// Keeps the seqs `keep` accepts; a band left without any goes.
    fn retain(&mut self, keep: impl Fn(&u64) -> bool) {
        let (lists, free) = (&mut self.lists, &mut self.free);
        self.map.retain(|_, value| {
            if *value & LIST == 0 {
                return keep(value);
            }
            let at = (*value & !LIST) as usize;
            let Some(list) = lists.get_mut(at) else {
                return false;
            };
            list.retain(|s| keep(s));
            match list.as_slice() {
                [] => {
                    free.push(at);
                    false
                }
                [one] if one & LIST == 0 => {
                    *value = *one;
                    list.clear();
                    list.shrink_to_fit();
                    free.push(at);
                    true
                }
                _ => true,
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(seed: u32) -> Fingerprint {
        Fingerprint {
            minhash: (0..64).map(|i| i * 7 + seed).collect(),
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
        assert_eq!(bands.get(7), [] as [u64; 0]);
        bands.retain(|s| *s != 2);
        assert_eq!(bands.get(9), [1, 3]);
        bands.retain(|s| *s == 3 || *s == 4);
        assert_eq!(bands.get(9), [3]);
        assert_eq!(bands.map.get(&9), Some(&3), "one seq is inline again");
        assert_eq!(bands.free.len(), 1);
        // A freed list is used again.
        bands.push(8, 5);
        assert_eq!(bands.get(8), [4, 5]);
        assert!(bands.free.is_empty());
        // A seq with the top bit set (sled hands none out) still reads back.
        bands.push(6, LIST | 7);
        assert_eq!(bands.get(6), [LIST | 7]);
        bands.retain(|_| false);
        assert!(bands.map.is_empty());
        assert_ne!(packed([0, 0, 0, 0, 1]), packed([1, 0, 0, 0, 1]));
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
