//! `ids` and `by_canon` in buckets (schema 6): each of their keys lives in
//! one of 65,536 buckets, a sled value holding the bucket's keys and
//! values ([`codec::encode_bucket`]).
//!
//! Why: sled 0.34 splits a leaf past 16 keys, and keeps about 500 bytes
//! per leaf in memory from the moment it opens (its page table, the
//! snapshot it reads). These two trees' keys are hashes, so they fill
//! leaves at random: one key each would cost about 85,000 leaves per
//! million entries per tree, and a daemon opening a store of a million
//! entries would hold 80 MB for them before serving anything. In buckets
//! they cost about 6,000 leaves each, however many entries there are.
//!
//! A bucket's key is 3 bytes, `0xff` and the bucket number: no key of an
//! earlier schema has that form (those are 16-byte hashes, or an entry
//! id's UTF-8 text, which never holds `0xff`), so the migration can tell
//! what it has converted. Writes read a bucket and write it back whole,
//! under the writer lock.

use std::collections::{BTreeMap, HashMap};

use super::{codec, Store, StoreError};

/// The first byte of every bucket key.
const BUCKET_TAG: u8 = 0xff;

/// A tree whose keys live in buckets.
#[derive(Clone)]
pub(super) struct Bucketed {
    pub(super) tree: sled::Tree,
    /// The tree's name, for what is logged of it.
    pub(super) name: &'static str,
    /// How many leading bytes of a key choose its bucket: all of an `ids`
    /// key; the link hash of a `by_canon` key (so a prefix scan of that
    /// hash is one bucket).
    chosen_by: usize,
}

/// What the bucket of `key` is, when the first `chosen_by` bytes of a key
/// choose it: FNV-1a (64-bit) of those bytes, mixed by splitmix64's
/// finalizer (FNV's top bits barely see the last byte), top 16 bits. Part
/// of the stored form: the golden test below pins it.
fn bucket_of(key: &[u8], chosen_by: usize) -> [u8; 3] {
    let part = key.get(..chosen_by).unwrap_or(key);
    let mut z = part.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, byte| {
        (h ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    });
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let [high, low, ..] = z.to_be_bytes();
    [BUCKET_TAG, high, low]
}

/// Whether `key` is a bucket's key (and not a key of an earlier schema).
pub(super) fn is_bucket_key(key: &[u8]) -> bool {
    key.len() == 3 && key[0] == BUCKET_TAG
}

impl Bucketed {
    /// `tree`, named `name`, whose keys' first `chosen_by` bytes choose
    /// their bucket (`usize::MAX`: the whole key).
    pub(super) fn new(tree: sled::Tree, name: &'static str, chosen_by: usize) -> Self {
        Self {
            tree,
            name,
            chosen_by,
        }
    }

    fn bucket_of(&self, key: &[u8]) -> [u8; 3] {
        bucket_of(key, self.chosen_by)
    }
}

/// A key and its value, copied out of a bucket.
pub(super) type OwnedMember = (Vec<u8>, Vec<u8>);

/// One write to a bucketed tree: a key and its new value, or `None` to
/// remove it.
type Write = (Vec<u8>, Option<Vec<u8>>);

/// Writes to a bucketed tree, applied in order.
#[derive(Default)]
pub(super) struct BucketBatch {
    writes: Vec<Write>,
    /// Keys of the tree itself to remove: an earlier schema's, which the
    /// migration moves into buckets.
    old_keys: Vec<Vec<u8>>,
}

impl BucketBatch {
    pub(super) fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.writes.push((key.into(), Some(value.into())));
    }

    pub(super) fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.writes.push((key.into(), None));
    }

    /// Removes `key` from the tree itself (not from a bucket): a key of the
    /// layout before buckets, in the same sled batch as the bucket writes.
    pub(super) fn remove_old(&mut self, key: impl Into<Vec<u8>>) {
        self.old_keys.push(key.into());
    }

    pub(super) fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.old_keys.is_empty()
    }
}

impl Store {
    /// The bucket `bucket` of `tree`, undecoded; `None` when absent.
    fn bucket_bytes(
        &self,
        tree: &Bucketed,
        bucket: &[u8; 3],
    ) -> Result<Option<sled::IVec>, StoreError> {
        tree.tree.get(bucket).map_err(|e| self.sled_err(e))
    }

    /// What `read` makes of the members of `tree`'s bucket `bucket`, in
    /// key order; `None` when the bucket is absent or undecodable (logged
    /// and counted).
    fn read_bucket<T>(
        &self,
        tree: &Bucketed,
        bucket: &[u8; 3],
        read: impl FnOnce(Vec<codec::Member<'_>>) -> T,
    ) -> Result<Option<T>, StoreError> {
        let bytes = self.bucket_bytes(tree, bucket)?;
        Ok(
            self.decode_or_skip(tree.name, bucket, bytes.as_deref(), |bytes| {
                codec::decode_bucket(bytes).map(read)
            }),
        )
    }

    /// The value under `key` in `tree`; `None` when absent, or when its
    /// bucket is undecodable (logged and counted).
    pub(super) fn bucket_get(
        &self,
        tree: &Bucketed,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let found = self.read_bucket(tree, &tree.bucket_of(key), |members| {
            members
                .binary_search_by(|(k, _)| (*k).cmp(key))
                .ok()
                .map(|at| members[at].1.to_vec())
        })?;
        Ok(found.flatten())
    }

    /// The keys in `tree` that start with `prefix` (at least the bytes that
    /// choose a bucket), with their values, in key order.
    pub(super) fn bucket_prefix(
        &self,
        tree: &Bucketed,
        prefix: &[u8],
    ) -> Result<Vec<OwnedMember>, StoreError> {
        let found = self.read_bucket(tree, &tree.bucket_of(prefix), |members| {
            members
                .into_iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect()
        })?;
        Ok(found.unwrap_or_default())
    }

    /// Calls `visit` with every key in `tree` (bucket by bucket; an
    /// undecodable bucket is logged, counted and passed over).
    pub(super) fn bucket_keys(
        &self,
        tree: &Bucketed,
        mut visit: impl FnMut(&[u8]),
    ) -> Result<(), StoreError> {
        for item in tree.tree.iter() {
            let (bucket, bytes) = item.map_err(|e| self.sled_err(e))?;
            if !is_bucket_key(&bucket) {
                self.skip_corrupt(tree.name, &bucket, "not a bucket key");
                continue;
            }
            match codec::decode_bucket(&bytes) {
                Ok(members) => members.iter().for_each(|(k, _)| visit(k)),
                Err(reason) => self.skip_corrupt(tree.name, &bucket, &reason),
            }
        }
        Ok(())
    }

    /// The sled writes that apply `batch` to `tree` as it stands: each
    /// bucket it touches read, changed and written back whole (or removed
    /// when emptied). Under the writer lock, so nothing writes between the
    /// read and the write. A bucket that cannot be decoded is logged and
    /// counted, and starts over with what `batch` puts in it.
    pub(super) fn bucket_writes(
        &self,
        tree: &Bucketed,
        batch: BucketBatch,
    ) -> Result<sled::Batch, StoreError> {
        let mut buckets: HashMap<[u8; 3], Vec<Write>> = HashMap::new();
        for (key, value) in batch.writes {
            buckets
                .entry(tree.bucket_of(&key))
                .or_default()
                .push((key, value));
        }
        let mut out = sled::Batch::default();
        for key in batch.old_keys {
            out.remove(key);
        }
        for (bucket, writes) in buckets {
            let stored = self.bucket_bytes(tree, &bucket)?;
            let mut members: BTreeMap<&[u8], &[u8]> = BTreeMap::new();
            if let Some(bytes) = &stored {
                match codec::decode_bucket(bytes) {
                    Ok(decoded) => members.extend(decoded),
                    Err(reason) => self.skip_corrupt(tree.name, &bucket, &reason),
                }
            }
            for (key, value) in &writes {
                match value {
                    Some(value) => members.insert(key, value),
                    None => members.remove(&key[..]),
                };
            }
            if members.is_empty() {
                if stored.is_some() {
                    out.remove(&bucket[..]);
                }
            } else {
                out.insert(&bucket[..], codec::encode_bucket(members));
            }
        }
        Ok(out)
    }

    /// Applies `batch` to `tree` (under the writer lock).
    pub(super) fn apply_buckets(
        &self,
        tree: &Bucketed,
        batch: BucketBatch,
    ) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let writes = self.bucket_writes(tree, batch)?;
        tree.tree.apply_batch(writes).map_err(|e| self.sled_err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bucket a key goes to is part of the stored form: a store
    /// written with one choice cannot be read with another.
    #[test]
    fn buckets_are_chosen_as_pinned() {
        assert_eq!(bucket_of(b"", usize::MAX), [0xff, 0xf5, 0x2a]);
        assert_eq!(bucket_of(b"a", usize::MAX), [0xff, 0x02, 0xc0]);
        // Only the first `chosen_by` bytes count.
        assert_eq!(bucket_of(b"abcdefgh-1", 8), bucket_of(b"abcdefgh-2", 8));
        assert_ne!(bucket_of(b"abcdefgh-1", 10), bucket_of(b"abcdefgh-2", 10));
        assert!(is_bucket_key(&bucket_of(b"x", 8)));
        assert!(!is_bucket_key(&[0xff; 16]));
        assert!(!is_bucket_key(b"abc"));
    }

    #[test]
    fn writes_land_in_their_buckets_and_empty_buckets_go() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open(dir.path(), super::super::StoreOptions::with_cache(1 << 20)).unwrap();
        let tree = store.t.by_canon.clone();
        let mut batch = BucketBatch::default();
        batch.insert(&b"hash0001seq00001"[..], &b""[..]);
        batch.insert(&b"hash0001seq00002"[..], &b""[..]);
        batch.insert(&b"hash0002seq00003"[..], &b"v"[..]);
        store.apply_buckets(&tree, batch).unwrap();
        let found = store.bucket_prefix(&tree, b"hash0001").unwrap();
        let keys: Vec<&[u8]> = found.iter().map(|(k, _)| &k[..]).collect();
        assert_eq!(keys, [&b"hash0001seq00001"[..], b"hash0001seq00002"]);
        assert_eq!(
            store.bucket_get(&tree, b"hash0002seq00003").unwrap(),
            Some(b"v".to_vec())
        );
        let mut all = Vec::new();
        store.bucket_keys(&tree, |k| all.push(k.to_vec())).unwrap();
        assert_eq!(all.len(), 3);
        // Removing every member removes the bucket; a later insert of the
        // same key in the same batch wins over an earlier removal.
        let mut batch = BucketBatch::default();
        batch.remove(&b"hash0001seq00001"[..]);
        batch.remove(&b"hash0001seq00002"[..]);
        batch.remove(&b"hash0002seq00003"[..]);
        batch.insert(&b"hash0002seq00003"[..], &b"w"[..]);
        store.apply_buckets(&tree, batch).unwrap();
        assert!(store.bucket_prefix(&tree, b"hash0001").unwrap().is_empty());
        assert_eq!(
            store.bucket_get(&tree, b"hash0002seq00003").unwrap(),
            Some(b"w".to_vec())
        );
        assert_eq!(tree.tree.len(), 1);
        // An undecodable bucket reads as empty, is counted, and is
        // replaced by the next write to it.
        let bucket = tree.bucket_of(b"hash0002");
        tree.tree.insert(bucket, &[9u8, 9][..]).unwrap();
        assert_eq!(store.bucket_get(&tree, b"hash0002seq00003").unwrap(), None);
        assert_eq!(store.health().corrupt_values, 1);
        let mut batch = BucketBatch::default();
        batch.insert(&b"hash0002seq00004"[..], &b""[..]);
        store.apply_buckets(&tree, batch).unwrap();
        assert_eq!(store.bucket_prefix(&tree, b"hash0002").unwrap().len(), 1);
    }
}
