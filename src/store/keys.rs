//! How keys are laid out: numbers big-endian, times shifted so that byte
//! order is time order, so sled's ordered scans are time scans.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::dedup;

/// A time as milliseconds, shifted so that byte order is time order (for
/// negative timestamps too).
pub(super) fn ordered_millis(t: DateTime<Utc>) -> u64 {
    (t.timestamp_millis() as u64) ^ (1 << 63)
}

/// `records` key: the seq.
pub(super) fn record_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// An entry's place in time order: its sort time, then its seq (the end
/// of its `by_source` key).
pub(super) fn time_key(sort_time: DateTime<Utc>, seq: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&ordered_millis(sort_time).to_be_bytes());
    key[8..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The prefix of a source's `by_source` keys: the name's length (2 bytes)
/// and the name, so no name is a prefix of another's keys.
pub(super) fn source_prefix(source: &str) -> Vec<u8> {
    let len = u16::try_from(source.len()).unwrap_or(u16::MAX);
    let mut key = Vec::with_capacity(2 + source.len() + 16);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(
        source
            .as_bytes()
            .get(..usize::from(len))
            .unwrap_or_default(),
    );
    key
}

/// `by_source` key: the source prefix, then the sort time and seq.
pub(super) fn source_key(source: &str, sort_time: DateTime<Utc>, seq: u64) -> Vec<u8> {
    let mut key = source_prefix(source);
    key.extend_from_slice(&time_key(sort_time, seq));
    key
}

/// The first 8 bytes of the SHA-256 of a canonical link: `by_canon` keys
/// stay small (links are long), and a collision costs one extra read.
pub(super) fn canon_hash(canon: &str) -> [u8; 8] {
    let digest = Sha256::digest(canon.as_bytes());
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// `by_canon` key: hash of the canonical link, then the seq.
pub(super) fn canon_key(canon: &str, seq: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&canon_hash(canon));
    key[8..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// `tombstones` key: when the entry was pruned, then its id (compact).
pub(super) fn tombstone_key(at: DateTime<Utc>, id: &str) -> Vec<u8> {
    [&ordered_millis(at).to_be_bytes()[..], &compact_id(id)].concat()
}

/// The big-endian number at `at` in `bytes`.
pub(super) fn number_at(bytes: &[u8], at: usize) -> Option<u64> {
    let slice: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_be_bytes(slice))
}

/// The big-endian `u32` at `at` in `bytes`.
pub(super) fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let slice: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(slice))
}

/// The seq that ends a key (every index key but `ids` ends with one).
pub(super) fn trailing_seq(key: &[u8]) -> Option<u64> {
    number_at(key, key.len().checked_sub(8)?)
}

/// An entry id in keys: its 16 hash bytes when it is a feedmerge id
/// (`urn:feedmerge:entry:` + 32 hex digits), else its text.
pub(super) fn compact_id(id: &str) -> Vec<u8> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_time_and_ids_round_trip() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert!(time_key(t("1960-01-01T00:00:00Z"), 9) < time_key(t("2025-01-01T00:00:00Z"), 1));
        assert!(!source_key("ab", t("2025-01-01T00:00:00Z"), 1).starts_with(&source_prefix("a")));
        let id = dedup::entry_id("src", "guid");
        assert_eq!(compact_id(&id).len(), 16);
        assert_eq!(compact_id("https://x.example/1"), b"https://x.example/1");
        assert_eq!(trailing_seq(&canon_key("x", 7)), Some(7));
    }
}
