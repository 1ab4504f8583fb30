//! Schema versions and the migrations between them, run on open.
//!
//! The version lives in `meta`. A store without one is either new (then
//! it gets this version), or version 1 (the seq-keyed layout of the first
//! release, which had no `meta` tree), or not a feedmerge store at all.
//! Migrations run in order, each logged, in batches, flushed, and safe to
//! run again if interrupted: the version is written last.

use std::path::Path;

use tracing::info;

use super::buckets;
use super::codec::{self, legacy, StoredStory, ENTRY_V1, SCHEMA_VERSION};
use super::keys::{self, source_key};
use super::{Store, StoreError, META_ENTRIES, META_REBUILD, META_VERSION};

/// Records converted per batch.
const MIGRATE_BATCH: usize = 1_000;

/// The trees of versions 2 to 4 (a store of any of them is ours).
const TREES_V2: &[&str] = &[
    "meta",
    "records",
    "ids",
    "by_time",
    "by_source",
    "by_canon",
    "by_story",
    "stories",
    "tombstones",
    "sources",
    // Version 4.
    "archives",
];
/// Trees that versions 2 to 4 had and version 5 dropped.
const TREES_V4_ONLY: &[&str] = &["by_time", "by_story"];
/// Trees that only version 1 had.
const TREES_V1_ONLY: &[&str] = &["by_band"];

/// Refuses a path that holds something other than a sled directory,
/// before sled writes its files among someone else's.
pub(super) fn check_directory(path: &Path) -> Result<(), StoreError> {
    let not_a_store = |what: String| StoreError::NotAStore {
        path: path.to_path_buf(),
        what,
    };
    if path.is_file() {
        return Err(not_a_store("it is a file".into()));
    }
    let Ok(listing) = std::fs::read_dir(path) else {
        // Missing (sled creates it) or unreadable (sled reports it).
        return Ok(());
    };
    let names: Vec<String> = listing
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let sled_files = names.iter().any(|n| n == "conf" || n == "db");
    if names.is_empty() || sled_files {
        return Ok(());
    }
    let mut shown: Vec<&str> = names.iter().map(String::as_str).take(3).collect();
    shown.sort_unstable();
    Err(not_a_store(format!(
        "it holds other files: {}{}",
        shown.join(", "),
        if names.len() > 3 { ", ..." } else { "" }
    )))
}

/// Brings an open store to [`SCHEMA_VERSION`], or says why it cannot.
/// What the store's directory held before sled opened it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Before {
    /// A non-empty sled log.
    Database,
    /// Nothing sled wrote.
    Nothing,
}

impl Before {
    /// What `path` holds now, before sled opens it.
    pub(super) fn look(path: &Path) -> Self {
        match std::fs::metadata(path.join("db")) {
            Ok(meta) if meta.len() > 0 => Before::Database,
            _ => Before::Nothing,
        }
    }
}

pub(super) fn bring_up_to_date(store: &Store, before: Before) -> Result<(), StoreError> {
    let version = match store
        .t
        .meta
        .get(META_VERSION)
        .map_err(|e| store.sled_err(e))?
    {
        Some(bytes) => Some(
            <[u8; 4]>::try_from(&bytes[..])
                .map(u32::from_be_bytes)
                .map_err(|_| store.corrupt("meta", "schema version is not 4 bytes".into()))?,
        ),
        None => None,
    };
    let version = match version {
        Some(v) => v,
        None => unversioned(store, before)?,
    };
    if version > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: store.path.clone(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version == 1 {
        v1_to_v2(store)?;
    }
    if version <= 2 {
        v2_to_v3(store)?;
    }
    if version <= 3 {
        v3_to_v4(store)?;
    }
    if version <= 4 {
        v4_to_v5(store)?;
    }
    if version <= 5 {
        v5_to_v6(store)?;
    }
    Ok(())
}

/// Version 5 -> 6: `ids` and `by_canon` keys move into buckets
/// ([`super::buckets`]), each a sled value, so the two trees hold 65,536
/// keys at most instead of one per entry. Each batch of old keys is
/// written into its buckets and removed in one sled batch (one tree, so
/// atomic): interrupted, the next run finds only old keys not yet moved,
/// and moving a key into a bucket that holds it already changes nothing.
fn v5_to_v6(store: &Store) -> Result<(), StoreError> {
    info!(store = %store.path.display(), "migrating the store from schema version 5 to 6");
    let ids = into_buckets(store, &store.t.ids)?;
    let canonical_links = into_buckets(store, &store.t.by_canon)?;
    store.db.flush().map_err(|e| store.sled_err(e))?;
    info!(
        store = %store.path.display(),
        ids,
        canonical_links,
        "moved the entry ids and canonical links into buckets"
    );
    // The moved keys' pages stay in sled's page table, and in memory at
    // every open, until the store is rebuilt (see `rebuild`).
    if ids + canonical_links > 0 {
        store
            .t
            .meta
            .insert(META_REBUILD, &[])
            .map_err(|e| store.sled_err(e))?;
    }
    raise_version(store, 6)
}

/// Moves every key of `tree` not in a bucket yet into its bucket; how
/// many it moved.
fn into_buckets(store: &Store, tree: &buckets::Bucketed) -> Result<u64, StoreError> {
    let sled = |e| store.sled_err(e);
    let mut moved = 0u64;
    let mut from: Vec<u8> = Vec::new();
    loop {
        let mut old = Vec::new();
        for item in tree.tree.range(from.as_slice()..) {
            let (key, value) = item.map_err(sled)?;
            if !buckets::is_bucket_key(&key) {
                old.push((key, value));
                if old.len() >= MIGRATE_BATCH {
                    break;
                }
            }
        }
        let Some((last, _)) = old.last() else {
            return Ok(moved);
        };
        from = last.to_vec();
        from.push(0);
        let mut batch = buckets::BucketBatch::default();
        for (key, value) in &old {
            batch.insert(key.to_vec(), value.to_vec());
            batch.remove_old(key.to_vec());
        }
        moved += old.len() as u64;
        store.apply_buckets(tree, batch)?;
    }
}

/// Version 4 -> 5: two index trees fewer, and a key fewer for a story of
/// one copy. A story's copies move from `by_story` (story seq + copy seq
/// -> empty) into its `stories` value, beside its id, and a story that is
/// its first copy alone keeps no value; `by_time` goes (feeds, retention
/// and the writer's window merge per-source `by_source` scans).
/// Safe to run again: each story's value is rebuilt from `by_story`, which
/// is dropped only when every story is rebuilt, and the version is raised
/// last.
fn v4_to_v5(store: &Store) -> Result<(), StoreError> {
    let sled = |e| store.sled_err(e);
    info!(store = %store.path.display(), "migrating the store from schema version 4 to 5");
    let by_story = store.db.open_tree("by_story").map_err(sled)?;
    let mut stories = sled::Batch::default();
    let mut pending = 0usize;
    let mut rebuilt: u64 = 0;
    let mut current: Option<(u64, Vec<u64>)> = None;
    let mut finish =
        |group: Option<(u64, Vec<u64>)>, stories: &mut sled::Batch| -> Result<(), StoreError> {
            let Some((story_seq, members)) = group else {
                return Ok(());
            };
            let key = keys::record_key(story_seq);
            rebuilt += 1;
            // A story that is its first copy alone needs no value (nor its
            // id read).
            if members[..] == [story_seq] {
                stories.remove(&key[..]);
                return Ok(());
            }
            let id = match store.t.stories.get(key).map_err(sled)? {
                Some(bytes) => match codec::decode_story_id(&bytes)
                    .or_else(|_| codec::decode_story(&bytes).map(|s| s.id.unwrap_or_default()))
                {
                    Ok(id) if !id.is_empty() => Some(id),
                    Ok(_) => None,
                    Err(reason) => {
                        store.skip_corrupt("stories", &key, &reason);
                        None
                    }
                },
                None => None,
            };
            stories.insert(&key[..], codec::encode_story(&StoredStory { id, members }));
            Ok(())
        };
    for item in by_story.iter().keys() {
        let key = item.map_err(sled)?;
        let (Some(story_seq), Some(seq), 16) = (
            keys::number_at(&key, 0),
            keys::trailing_seq(&key),
            key.len(),
        ) else {
            store.skip_corrupt("by_story", &key, "bad key length");
            continue;
        };
        match &mut current {
            Some((at, members)) if *at == story_seq => members.push(seq),
            _ => {
                finish(current.take(), &mut stories)?;
                current = Some((story_seq, vec![seq]));
                pending += 1;
                if pending >= MIGRATE_BATCH {
                    store
                        .t
                        .stories
                        .apply_batch(std::mem::take(&mut stories))
                        .map_err(sled)?;
                    pending = 0;
                }
            }
        }
    }
    finish(current.take(), &mut stories)?;
    store.t.stories.apply_batch(stories).map_err(sled)?;
    // What is left in the old form lists no copy: its story is gone.
    let mut dropped = 0u64;
    let mut gone = sled::Batch::default();
    for item in store.t.stories.iter() {
        let (key, value) = item.map_err(sled)?;
        if codec::decode_story(&value).is_err() {
            gone.remove(key);
            dropped += 1;
        }
    }
    store.t.stories.apply_batch(gone).map_err(sled)?;
    // Every story is rebuilt before its copies' old index goes.
    store.db.flush().map_err(sled)?;
    for tree in TREES_V4_ONLY {
        store.db.drop_tree(tree).map_err(sled)?;
    }
    info!(
        store = %store.path.display(),
        stories = rebuilt,
        empty_stories_dropped = dropped,
        "rebuilt the stories with their copies"
    );
    raise_version(store, 5)
}

/// Version 3 -> 4: the `archives` tree (frozen RFC 5005 archive
/// documents), made empty when the store opens; nothing else changes, so
/// only the version does, and older builds then refuse the store rather
/// than serve archives they would not keep or prune.
fn v3_to_v4(store: &Store) -> Result<(), StoreError> {
    raise_version(store, 4)
}

/// Version 2 -> 3: entries gained a trailing field (the page an entry
/// points to elsewhere, JSON Feed's `external_url`). Records in the
/// version 2 form stay readable as they are (the field reads as absent)
/// and are rewritten in the new form when next written, so only the
/// version changes; older builds then refuse the store instead of
/// skipping the new records as corrupt.
fn v2_to_v3(store: &Store) -> Result<(), StoreError> {
    raise_version(store, 3)
}

/// Writes schema version `to` and flushes: a migration whose stored forms
/// older data already fits.
fn raise_version(store: &Store, to: u32) -> Result<(), StoreError> {
    let sled = |e| store.sled_err(e);
    store
        .t
        .meta
        .insert(META_VERSION, &to.to_be_bytes())
        .map_err(sled)?;
    store.db.flush().map_err(sled)?;
    info!(
        store = %store.path.display(),
        "migrated the store to schema version {to}"
    );
    Ok(())
}

/// The names of the store's trees.
pub(super) fn tree_names(store: &Store) -> Vec<String> {
    store
        .db
        .tree_names()
        .iter()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect()
}

/// The version of a store without one in `meta`: 1 when it holds version
/// 1's data, else a new store (given this version), else not ours.
fn unversioned(store: &Store, before: Before) -> Result<u32, StoreError> {
    let names = tree_names(store);
    // The first development layout kept entries by id in this tree.
    if names.iter().any(|n| n == "entries") {
        return Err(StoreError::OldLayout {
            path: store.path.clone(),
        });
    }
    let has_data = |tree: &sled::Tree| tree.first().map(|f| f.is_some());
    let sled = |e| store.sled_err(e);
    let v1_data = has_data(&store.t.records).map_err(sled)?
        || has_data(&store.t.ids.tree).map_err(sled)?
        || has_data(&store.t.sources).map_err(sled)?
        || names.iter().any(|n| TREES_V1_ONLY.contains(&n.as_str()));
    if v1_data {
        return Ok(1);
    }
    let foreign: Vec<&String> = names
        .iter()
        .filter(|n| !n.starts_with("__sled__") && !TREES_V2.contains(&n.as_str()))
        .collect();
    let default_tree_used = store.db.first().map_err(sled)?.is_some();
    if !foreign.is_empty() || default_tree_used {
        return Err(StoreError::NotAStore {
            path: store.path.clone(),
            what: format!("a sled database with other trees: {foreign:?}"),
        });
    }
    // Files sled recovered, yet not even the version written when the
    // store was made: sled 0.34 stops reading its log at the first damaged
    // part and opens what came before, here nothing.
    if matches!(before, Before::Database) {
        return Err(StoreError::Damaged {
            path: store.path.clone(),
            reason: "the database opened without any of its data, not even its \
                     schema version"
                .into(),
        });
    }
    let meta = &store.t.meta;
    meta.insert(META_ENTRIES, &0u64.to_be_bytes())
        .map_err(sled)?;
    meta.insert(META_VERSION, &SCHEMA_VERSION.to_be_bytes())
        .map_err(sled)?;
    store.db.flush().map_err(sled)?;
    Ok(SCHEMA_VERSION)
}

/// Version 1 -> 2: records in the store's own form (summary and content
/// compressed, no domain types), the story's id once per story
/// (`stories`) instead of in every copy, `by_source` added, the band index
/// dropped (near-duplicates are looked up in memory), the count kept.
fn v1_to_v2(store: &Store) -> Result<(), StoreError> {
    let sled = |e| store.sled_err(e);
    info!(store = %store.path.display(), "migrating the store from schema version 1 to 2");
    let mut count: u64 = 0;
    let mut skipped: u64 = 0;
    let mut after: Option<sled::IVec> = None;
    loop {
        let range = match &after {
            Some(last) => store.t.records.range::<&[u8], _>((
                std::ops::Bound::Excluded(&last[..]),
                std::ops::Bound::Unbounded,
            )),
            None => store.t.records.iter(),
        };
        let chunk: Vec<(sled::IVec, sled::IVec)> = range
            .take(MIGRATE_BATCH)
            .collect::<Result<_, _>>()
            .map_err(sled)?;
        let Some((last, _)) = chunk.last() else {
            break;
        };
        after = Some(last.clone());
        let (mut records, mut by_source, mut stories) = (
            sled::Batch::default(),
            sled::Batch::default(),
            sled::Batch::default(),
        );
        for (key, value) in &chunk {
            let Some(seq) = keys::number_at(key, 0) else {
                continue;
            };
            let stored = if value.first() != Some(&ENTRY_V1) {
                // Converted by an earlier, interrupted run.
                codec::decode_entry(value)
            } else {
                legacy::upgrade(value).and_then(|(stored, story_id)| {
                    let value = codec::encode_entry(stored.clone())?;
                    stories.insert(
                        &keys::record_key(stored.story_seq)[..],
                        codec::encode_story_id(&story_id),
                    );
                    records.insert(key.clone(), value);
                    Ok(stored)
                })
            };
            let stored = match stored.and_then(|s| s.sort_time().map(|t| (t, s))) {
                Ok(found) => found,
                Err(reason) => {
                    store.skip_corrupt("records", key, &reason);
                    skipped += 1;
                    continue;
                }
            };
            let (time, stored) = stored;
            by_source.insert(
                source_key(&stored.source, time, seq),
                &stored.story_seq.to_be_bytes()[..],
            );
            count += 1;
        }
        // Indexes before records: a record in the new form has its keys.
        store.t.stories.apply_batch(stories).map_err(sled)?;
        store.t.by_source.apply_batch(by_source).map_err(sled)?;
        store.t.records.apply_batch(records).map_err(sled)?;
    }
    for tree in TREES_V1_ONLY {
        store.db.drop_tree(tree).map_err(sled)?;
    }
    store
        .t
        .meta
        .insert(META_ENTRIES, &count.to_be_bytes())
        .map_err(sled)?;
    store
        .t
        .meta
        .insert(META_VERSION, &2u32.to_be_bytes())
        .map_err(sled)?;
    store.db.flush().map_err(sled)?;
    info!(
        store = %store.path.display(),
        entries = count,
        skipped,
        "migrated the store to schema version 2"
    );
    Ok(())
}
