//! Bloom filters in front of the two indexes an ingest reads for every
//! incoming entry: `ids` (is this entry stored?) and `by_canon` (is a copy
//! with this canonical link stored?).
//!
//! For a new entry the answer is "no", and both indexes are keyed by
//! hashes, so each lookup reads a random page: once the store holds a
//! million entries those pages no longer fit the page cache, and the index
//! says "no" more slowly the more it holds. A filter says "no" from memory
//! (about 10 bits per key) and never wrongly: a key it does not hold is not
//! in the index. Keys are added to a filter before they are written;
//! removed keys stay in it, costing a needless index read, never a missed
//! copy.
//!
//! The filters are built on the first ingest after the store opens, with
//! one read of both indexes.

use growable_bloom_filter::GrowableBloom;

/// The share of absent keys a filter lets through to the index.
const FALSE_POSITIVES: f64 = 0.01;
/// Keys a new filter is sized for: it grows as keys come.
const FIRST_CAPACITY: usize = 16_384;

/// The filters the writer keeps (under the writer lock: only writes change
/// what they cover).
pub(super) struct Filters {
    pub(super) ids: KeyFilter,
    pub(super) canons: KeyFilter,
}

/// A filter over every key of an index: the caller adds them all.
pub(super) struct KeyFilter(GrowableBloom);

impl Default for KeyFilter {
    fn default() -> Self {
        KeyFilter(GrowableBloom::new(FALSE_POSITIVES, FIRST_CAPACITY))
    }
}

impl KeyFilter {
    /// False only when `key` is not in the filter: then the index does not
    /// hold `key`.
    pub(super) fn may_hold(&self, key: &[u8]) -> bool {
        self.0.contains(key)
    }

    /// Notes that the index holds `key` (called before it is written).
    pub(super) fn add(&mut self, key: &[u8]) {
        self.0.insert(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_filter_holds_every_key_it_was_given() {
        let mut filter = KeyFilter::default();
        assert!(!filter.may_hold(b"lost"));
        // Past its first capacity, too.
        let keys = FIRST_CAPACITY as u32 * 3;
        for n in 0..keys {
            filter.add(&n.to_be_bytes());
        }
        for n in 0..keys {
            assert!(filter.may_hold(&n.to_be_bytes()), "key {n}");
        }
        let through = (1_000_000u32..1_010_000)
            .filter(|n| filter.may_hold(&n.to_be_bytes()))
            .count();
        assert!(through < 300, "{through} of 10,000 absent keys let through");
    }
}
