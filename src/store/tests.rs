//! The store's unit tests: through its public operations, on real sled
//! directories.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};

use super::*;
use crate::dedup::{self, Rules};
use crate::model::{Entry, IngestCounts, MergeRule, SourceState};

/// The copies in the story of `id`, oldest first.
fn copies(store: &Store, id: &str) -> Vec<Entry> {
    store
        .story(id)
        .unwrap()
        .map(|i| i.copies)
        .unwrap_or_default()
}

/// The titles of source "src", newest first.
fn titles(store: &Store) -> Vec<String> {
    let entries = store.source_entries("src", 10).unwrap();
    entries.into_iter().map(|e| e.title).collect()
}

/// Stores `entries` and flushes, as every poll does: readers see an entry
/// once it is flushed.
fn ingest(store: &Store, entries: &[Entry], now: DateTime<Utc>, rules: &Rules) -> IngestCounts {
    let counts = store.ingest(entries, now, rules).unwrap();
    store.flush_blocking().unwrap();
    counts
}

/// Every source the tests use.
fn all() -> HashSet<&'static str> {
    ["src", "a", "b", "c"].into_iter().collect()
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn entry(source_id: &str, title: &str, published: Option<&str>) -> Entry {
    let now = at("2025-04-01T00:00:00Z");
    Entry {
        id: dedup::entry_id("src", source_id),
        source: "src".into(),
        source_id: source_id.into(),
        title: title.into(),
        link: None,
        summary: None,
        content: None,
        authors: vec![],
        categories: vec![],
        published: published.map(at),
        updated: None,
        first_seen: now,
        changed: now,
        language: None,
        enclosures: vec![],
        canonical: None,
        fingerprint: None,
        merged: None,
        external: None,
    }
}

#[test]
fn ingest_dedups_and_orders() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::with_cache(1 << 20)).unwrap();
    let now = at("2025-04-01T00:00:00Z");
    let batch = [
        entry("a", "A", Some("2025-03-01T00:00:00Z")),
        entry("b", "B", Some("2025-03-03T00:00:00Z")),
        entry("c", "C", Some("1960-01-01T00:00:00Z")),
    ];
    let counts = ingest(&store, &batch, now, &Rules::default());
    assert_eq!((counts.new, counts.updated, counts.unchanged), (3, 0, 0));
    let counts = ingest(&store, &batch, now, &Rules::default());
    assert_eq!((counts.new, counts.updated, counts.unchanged), (0, 0, 3));

    // A changed title under the same id is updated in place; a moved
    // date leaves no stale index key behind.
    let changed = [entry("a", "A2", Some("2025-03-05T00:00:00Z"))];
    let counts = ingest(&store, &changed, now, &Rules::default());
    assert_eq!((counts.new, counts.updated, counts.unchanged), (0, 1, 0));
    assert_eq!(titles(&store), ["A2", "B", "C"]);
    assert_eq!(store.entry_count(), 3);
    let limited = store.source_entries("src", 1).unwrap();
    assert_eq!(limited[0].title, "A2");
}

#[test]
fn concurrent_ingests_and_flushes_finish() {
    // Many writers and flushers at once all finish. (The poll benchmark,
    // which deadlocked before writes were serialized, is the heavier
    // check: `cargo bench --bench poll`.)
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::with_cache(1 << 20)).unwrap();
    let now = at("2025-04-01T00:00:00Z");
    std::thread::scope(|scope| {
        for t in 0..32 {
            let store = store.clone();
            scope.spawn(move || {
                for i in 0..20 {
                    let batch = [entry(&format!("{t}-{i}"), "x", None)];
                    store.ingest(&batch, now, &Rules::default()).unwrap();
                    store
                        .put_source_state(&format!("s{t}"), &SourceState::default())
                        .unwrap();
                    store.flush_blocking().unwrap();
                }
            });
        }
    });
    assert_eq!(store.entry_count(), 32 * 20);
}

#[test]
fn pruned_entries_stay_out() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::with_cache(1 << 20)).unwrap();
    let rules = Rules::default();
    let t0 = at("2025-04-01T00:00:00Z");
    let later = t0 + chrono::Duration::days(95);
    let a = entry("a", "A", Some("2025-03-01T00:00:00Z"));
    ingest(&store, std::slice::from_ref(&a), t0, &rules);
    // An article from 2020 first seen today is kept for the full period.
    let recent = [
        entry("ancient", "Ancient", Some("2020-01-01T00:00:00Z")),
        entry("b", "B", Some("2025-06-02T00:00:00Z")),
        entry("c", "C", Some("2025-06-03T00:00:00Z")),
        entry("d", "D", Some("2025-06-04T00:00:00Z")),
    ];
    ingest(&store, &recent, later, &rules);
    let by_age = Retention::default();
    assert_eq!(
        store.prune(later, &by_age).unwrap().pruned,
        1,
        "a is 95 days old"
    );
    let by_count = Retention {
        max_per_source: 2,
        ..Retention::default()
    };
    assert_eq!(store.prune(later, &by_count).unwrap().pruned, 2);
    assert_eq!(titles(&store), ["D", "C"]);
    // The source still lists them all: the pruned ones do not come back.
    let mut all = recent.to_vec();
    all.push(a);
    let counts = ingest(&store, &all, later, &rules);
    assert_eq!((counts.new, counts.suppressed, counts.unchanged), (0, 3, 2));
    assert_eq!(store.entry_count(), 2);
    // Tombstones expire.
    let much_later = later + chrono::Duration::days(400);
    let counts = store.prune(
        much_later,
        &Retention {
            max_age: std::time::Duration::from_secs(1000 * 24 * 3600),
            ..by_count
        },
    );
    assert_eq!(counts.unwrap().tombstones_expired, 3);
}

#[test]
fn stories_join_across_sources() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::with_cache(1 << 20)).unwrap();
    let now = at("2025-04-01T00:00:00Z");
    let rules = Rules::default();
    let body = "Officials met in Doha on Thursday to discuss regional security, maritime \
                cooperation and the protection of shipping lanes in the Gulf, a statement said.";
    let copy = |source: &str, id: &str, link: &str, title: &str| {
        let mut e = entry(id, title, Some("2025-03-27T10:00:00Z"));
        e.source = source.into();
        e.id = dedup::entry_id(source, id);
        e.link = Some(link.into());
        e.canonical = dedup::canonical_url(link, &dedup::default_tracking());
        e.fingerprint = dedup::fingerprint(title, body);
        e
    };
    let a = copy(
        "a",
        "1",
        "https://x.example/story?utm_source=rss",
        "Talks in Doha",
    );
    let b = copy(
        "b",
        "77",
        "http://x.example/story/",
        "UPDATE: Talks in Doha",
    );
    let c = copy(
        "c",
        "9",
        "https://c.example/doha-talks",
        "Exclusive - Talks in Doha",
    );
    for e in [&a, &b, &c] {
        ingest(&store, std::slice::from_ref(e), now, &rules);
    }
    let story = copies(&store, &a.id);
    assert_eq!(story.len(), 3);
    let rule = |source: &str| {
        story
            .iter()
            .find(|e| e.source == source)
            .and_then(|e| e.merged.clone())
            .map(|m| m.rule)
    };
    assert_eq!(rule("a"), None);
    assert_eq!(rule("b"), Some(MergeRule::CanonicalUrl));
    assert!(matches!(rule("c"), Some(MergeRule::NearDuplicate { .. })));
    let stories = store.newest_stories(10, &all()).unwrap();
    assert_eq!(stories.len(), 1);
    assert_eq!(stories[0].id, a.id);

    // A copy that matches one story by URL and another by text joins
    // them: b's text is too short to compare, so c starts its own
    // story; a then matches b by URL and c by text.
    let dir = tempfile::tempdir().unwrap();
    let union = Store::open(dir.path(), StoreOptions::with_cache(1 << 20)).unwrap();
    let mut short_b = b.clone();
    short_b.fingerprint = None;
    for e in [&short_b, &c, &a] {
        ingest(&union, std::slice::from_ref(e), now, &rules);
    }
    let stories = union.newest_stories(10, &all()).unwrap();
    assert_eq!(stories.len(), 1, "{stories:#?}");
    assert_eq!(stories[0].id, b.id, "the first story's id survives");
    let firsts = stories[0]
        .copies
        .iter()
        .filter(|e| e.merged.is_none())
        .count();
    assert_eq!(firsts, 1);

    // With the layers off, three stories.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::with_cache(1 << 20)).unwrap();
    let off = Rules {
        canonical_urls: false,
        near_duplicates: false,
        ..Rules::default()
    };
    for e in [&a, &b, &c] {
        ingest(&store, std::slice::from_ref(e), now, &off);
    }
    assert_eq!(store.newest_stories(10, &all()).unwrap().len(), 3);
}

/// The `ids` and `by_canon` filters never hide a stored copy: neither
/// one stored before the store was reopened (read into the filters)
/// nor one stored since (added to them).
#[test]
fn filters_never_hide_a_stored_copy() {
    let dir = tempfile::tempdir().unwrap();
    let now = at("2025-04-01T00:00:00Z");
    let rules = Rules::default();
    let copy = |source: &str, n: usize| {
        let mut e = entry(
            &format!("{n}"),
            &format!("Story {n}"),
            Some("2025-03-27T10:00:00Z"),
        );
        e.source = source.into();
        e.id = dedup::entry_id(source, &format!("{n}"));
        let link = format!("https://x.example/{n}?utm_source=rss");
        e.canonical = dedup::canonical_url(&link, &dedup::default_tracking());
        e.link = Some(link);
        e
    };
    let sources = |store: &Store, n: usize| -> Vec<String> {
        let story = copies(store, &dedup::entry_id("a", &format!("{n}")));
        story.into_iter().map(|e| e.source).collect()
    };
    let batch = |source: &str, range: std::ops::Range<usize>| -> Vec<Entry> {
        range.map(|n| copy(source, n)).collect()
    };
    {
        let store = Store::open(dir.path(), StoreOptions::with_cache(1 << 20)).unwrap();
        ingest(&store, &batch("a", 0..100), now, &rules);
    }
    let store = Store::open(dir.path(), StoreOptions::with_cache(1 << 20)).unwrap();
    ingest(&store, &batch("a", 100..200), now, &rules);
    // Every entry is known by its id, from before the reopening and
    // after (without its link, which would find it too).
    let mut again = batch("a", 0..200);
    for e in &mut again {
        e.canonical = None;
    }
    let counts = ingest(&store, &again, now, &rules);
    assert_eq!(counts.new, 0);
    // Other sources' copies find them by canonical link.
    ingest(&store, &batch("b", 50..150), now, &rules);
    for n in [50, 99, 100, 149] {
        assert_eq!(sources(&store, n), ["a", "b"], "story {n}");
    }
    assert_eq!(sources(&store, 10), ["a"]);
    assert_eq!(store.entry_count(), 300);
}

#[test]
fn a_changed_guid_with_the_same_link_is_the_same_entry() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::with_cache(1 << 20)).unwrap();
    let now = at("2025-04-01T00:00:00Z");
    let rules = Rules::default();
    let mut first = entry("guid-1", "T", None);
    first.canonical = Some("x.example/post".into());
    ingest(&store, &[first], now, &rules);
    let mut renamed = entry("guid-2", "T", None);
    renamed.canonical = Some("x.example/post".into());
    let counts = ingest(&store, &[renamed], now, &rules);
    assert_eq!(counts.new, 0);
    assert_eq!(store.entry_count(), 1);
}

#[test]
fn a_story_outlives_its_first_copy() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::with_cache(1 << 20)).unwrap();
    let rules = Rules::default();
    let t0 = at("2025-04-01T00:00:00Z");
    let copy = |source: &str, seen: DateTime<Utc>| {
        let mut e = entry("1", "Talks in Doha", Some("2025-03-31T10:00:00Z"));
        e.source = source.into();
        e.id = dedup::entry_id(source, "1");
        e.canonical = Some("x.example/doha".into());
        (e, seen)
    };
    let (first, seen) = copy("a", t0);
    ingest(&store, std::slice::from_ref(&first), seen, &rules);
    let (second, seen) = copy("b", t0 + chrono::Duration::days(20));
    ingest(&store, std::slice::from_ref(&second), seen, &rules);
    assert_eq!(copies(&store, &first.id).len(), 2);

    // The first copy ages out; the story keeps its id and its other copy.
    let later = t0 + chrono::Duration::days(100);
    assert_eq!(
        store.prune(later, &Retention::default()).unwrap(),
        PruneCounts {
            pruned: 1,
            tombstones_expired: 0,
            archives: 0,
        }
    );
    assert_eq!(store.entry(&first.id).unwrap(), None);
    let copies = copies(&store, &first.id);
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0].source, "b");
    let stories = store.newest_stories(10, &all()).unwrap();
    assert_eq!(stories.len(), 1);
    assert_eq!(stories[0].id, first.id);
    assert_eq!(
        store.t.stories.len(),
        1,
        "a story of other copies than its first keeps a value"
    );
    let none = Retention {
        max_total: 0,
        ..Retention::default()
    };
    assert_eq!(store.prune(later, &none).unwrap().pruned, 1);
    assert_eq!(
        store.t.stories.len(),
        0,
        "a story with no copy left keeps none"
    );
    // The source still lists the pruned copy: it stays out.
    let counts = ingest(&store, &[first], later, &rules);
    assert_eq!((counts.new, counts.suppressed), (0, 1));
}

#[test]
fn a_store_in_the_first_layout_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::open(dir.path()).unwrap();
        db.open_tree("entries").unwrap().insert("k", "v").unwrap();
        db.flush().unwrap();
    }
    let err = Store::open(dir.path(), StoreOptions::with_cache(1 << 20)).unwrap_err();
    assert!(matches!(err, StoreError::OldLayout { .. }), "{err}");
    assert!(err.to_string().contains(&dir.path().display().to_string()));
}

#[test]
fn second_open_reports_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let _held = Store::open(dir.path(), StoreOptions::with_cache(1 << 20)).unwrap();
    let err = Store::open(dir.path(), StoreOptions::with_cache(1 << 20)).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
}

#[test]
fn an_undecodable_record_is_skipped_counted_and_stops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::with_cache(1 << 20)).unwrap();
    let now = at("2025-04-01T00:00:00Z");
    let batch = [
        entry("a", "A", Some("2025-03-01T00:00:00Z")),
        entry("b", "B", Some("2025-03-02T00:00:00Z")),
        entry("c", "C", Some("2025-03-03T00:00:00Z")),
    ];
    ingest(&store, &batch, now, &Rules::default());
    let Some(codec::Slot::Stored(seq)) = store.slot(&batch[1].id).unwrap() else {
        panic!("b is stored");
    };
    store
        .t
        .records
        .insert(keys::record_key(seq), &b"\x03not an entry"[..])
        .unwrap();
    assert_eq!(titles(&store), ["C", "A"]);
    assert_eq!(store.newest_stories(10, &all()).unwrap().len(), 2);
    assert!(store.health().corrupt_values >= 1);
    // Retention goes on past it.
    let one = Retention {
        max_per_source: 1,
        ..Retention::default()
    };
    assert_eq!(store.prune(now, &one).unwrap().pruned, 1);
    assert_eq!(titles(&store), ["C"]);
}

#[test]
fn a_store_from_a_newer_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), StoreOptions::with_cache(1 << 20)).unwrap();
        store
            .t
            .meta
            .insert(META_VERSION, &99u32.to_be_bytes())
            .unwrap();
        store.flush_blocking().unwrap();
    }
    let err = Store::open(dir.path(), StoreOptions::with_cache(1 << 20)).unwrap_err();
    assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
    assert!(err.to_string().contains("newer"), "{err}");
}

#[test]
fn counts_are_counters_kept_across_opening() {
    let dir = tempfile::tempdir().unwrap();
    let now = at("2025-04-01T00:00:00Z");
    {
        let store = Store::open(dir.path(), StoreOptions::with_cache(1 << 20)).unwrap();
        let batch = [entry("a", "A", None), entry("b", "B", None)];
        ingest(&store, &batch, now, &Rules::default());
        ingest(&store, &batch, now, &Rules::default());
        assert_eq!(store.entry_count(), 2);
        store.flush_blocking().unwrap();
    }
    let store = Store::open(dir.path(), StoreOptions::with_cache(1 << 20)).unwrap();
    assert_eq!(store.entry_count(), 2);
    assert_eq!(store.t.records.len() as u64, store.entry_count());
}

/// A copy of the store directory `from`: what a crash (SIGKILL) at this
/// moment leaves on disk, since sled has written there all it would keep.
fn crash_copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for item in std::fs::read_dir(from).unwrap() {
        let item = item.unwrap();
        let target = to.join(item.file_name());
        if item.file_type().unwrap().is_dir() {
            crash_copy(&item.path(), &target);
        } else {
            std::fs::copy(item.path(), &target).unwrap();
        }
    }
}

#[test]
fn an_entry_is_shown_only_once_its_write_is_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::with_cache(1 << 20)).unwrap();
    let now = at("2025-04-01T00:00:00Z");
    ingest(&store, &[entry("a", "A", None)], now, &Rules::default());
    let b = entry("b", "B", None);
    let counts = store
        .ingest(std::slice::from_ref(&b), now, &Rules::default())
        .unwrap();
    assert_eq!(counts.new, 1);
    // Written, not flushed: a crash now loses it, so no reader sees it.
    let crashed = tempfile::tempdir().unwrap();
    crash_copy(dir.path(), crashed.path());
    let after_crash = Store::open(crashed.path(), StoreOptions::with_cache(1 << 20)).unwrap();
    assert_eq!(titles(&after_crash), ["A"], "sled kept an unflushed write");
    drop(after_crash);
    assert_eq!(titles(&store), ["A"]);
    assert_eq!(store.newest_stories(10, &all()).unwrap().len(), 1);
    assert_eq!(store.entry(&b.id).unwrap(), None);
    assert!(store.story(&b.id).unwrap().is_none());
    assert_eq!(store.entry_count(), 1);
    assert_eq!(store.health().entries, 1);
    // The writer sees it: the same entry again is unchanged, not new.
    let counts = store
        .ingest(std::slice::from_ref(&b), now, &Rules::default())
        .unwrap();
    assert_eq!((counts.new, counts.unchanged), (0, 1));

    store.flush_blocking().unwrap();
    assert_eq!(titles(&store), ["B", "A"]);
    assert_eq!(store.newest_stories(10, &all()).unwrap().len(), 2);
    assert!(store.entry(&b.id).unwrap().is_some());
    assert_eq!(copies(&store, &b.id).len(), 1);
    assert_eq!(store.entry_count(), 2);
    let crashed = tempfile::tempdir().unwrap();
    crash_copy(dir.path(), crashed.path());
    let after_crash = Store::open(crashed.path(), StoreOptions::with_cache(1 << 20)).unwrap();
    assert_eq!(titles(&after_crash), ["B", "A"]);
}

#[test]
fn an_entry_stored_again_under_its_kept_slot_is_shown_once_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::with_cache(1 << 20)).unwrap();
    let now = at("2025-04-01T00:00:00Z");
    let a = entry("a", "A", None);
    ingest(&store, std::slice::from_ref(&a), now, &Rules::default());
    // A crash between the `ids` and `records` writes leaves the slot.
    let Some(codec::Slot::Stored(seq)) = store.slot(&a.id).unwrap() else {
        panic!("a is stored");
    };
    store.t.records.remove(keys::record_key(seq)).unwrap();
    assert!(titles(&store).is_empty());
    let counts = store
        .ingest(std::slice::from_ref(&a), now, &Rules::default())
        .unwrap();
    assert_eq!(counts.new, 1);
    assert!(titles(&store).is_empty(), "shown before its flush");
    assert_eq!(store.entry(&a.id).unwrap(), None);
    store.flush_blocking().unwrap();
    assert_eq!(titles(&store), ["A"]);
}

#[test]
fn status_reads_a_source_state_as_of_the_last_flush() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::with_cache(1 << 20)).unwrap();
    let state = |seen: usize| SourceState {
        entries_seen: seen,
        ..SourceState::default()
    };
    store.put_source_state("a", &state(1)).unwrap();
    assert_eq!(store.flushed_source_state("a").unwrap(), None);
    assert_eq!(store.source_state("a").unwrap(), Some(state(1)));
    store.flush_blocking().unwrap();
    store.put_source_state("a", &state(2)).unwrap();
    store.put_source_state("a", &state(3)).unwrap();
    assert_eq!(store.flushed_source_state("a").unwrap(), Some(state(1)));
    assert_eq!(store.source_state("a").unwrap(), Some(state(3)));
    store.flush_blocking().unwrap();
    assert_eq!(store.flushed_source_state("a").unwrap(), Some(state(3)));
}

#[test]
fn a_store_whose_log_is_damaged_says_so_and_how_to_recover() {
    let now = at("2025-04-01T00:00:00Z");
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), StoreOptions::with_cache(1 << 20)).unwrap();
        let batch: Vec<Entry> = (0..50)
            .map(|i| entry(&format!("e{i}"), &format!("Entry {i}"), None))
            .collect();
        ingest(&store, &batch, now, &Rules::default());
    }
    // Garbage over the start of the log: sled 0.34 then opens an empty
    // database without a word.
    let db = dir.path().join("db");
    let mut bytes = std::fs::read(&db).unwrap();
    for (i, b) in bytes.iter_mut().take(4096).enumerate() {
        *b = (i as u8).wrapping_mul(37) ^ 0x5a;
    }
    std::fs::write(&db, bytes).unwrap();
    let err = Store::open(dir.path(), StoreOptions::with_cache(1 << 20)).unwrap_err();
    assert!(matches!(err, StoreError::Damaged { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("restore it from a backup"), "{message}");
    assert!(message.contains("move it aside"), "{message}");
    // A new directory is a new store, not a damaged one.
    let fresh = tempfile::tempdir().unwrap();
    Store::open(fresh.path(), StoreOptions::with_cache(1 << 20)).unwrap();
    Store::open(&fresh.path().join("sub"), StoreOptions::with_cache(1 << 20)).unwrap();
}

/// One poll of `guids` (newest first) through the ids normalize gives them.
fn poll_of(guids: &[&str]) -> Vec<Entry> {
    let ids = dedup::document_ids("src", guids);
    guids
        .iter()
        .zip(ids)
        .map(|(guid, id)| {
            let mut e = entry(guid, &format!("item {guid}"), None);
            e.id = id;
            e
        })
        .collect()
}

#[test]
fn guids_that_differ_only_in_their_fragment_are_one_entry_only_over_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::with_cache(1 << 20)).unwrap();
    let now = at("2025-04-01T00:00:00Z");
    let rules = Rules::default();
    let day = "http://scriptingnews.userland.com/backissues/2002/09/29";
    let (noon, evening, night) = (
        format!("{day}#When:12:59:01PM"),
        format!("{day}#When:6:52:02PM"),
        format!("{day}#When:11:02:00PM"),
    );
    let count = |c: IngestCounts| (c.new, c.updated, c.unchanged);
    // Side by side: two entries.
    assert_eq!(
        count(ingest(&store, &poll_of(&[&evening, &noon]), now, &rules)),
        (2, 0, 0)
    );
    // One left alone is still the one it was.
    assert_eq!(
        count(ingest(&store, &poll_of(&[&evening]), now, &rules)),
        (0, 0, 1)
    );
    // A new one beside it is a third.
    assert_eq!(
        count(ingest(&store, &poll_of(&[&night, &evening]), now, &rules)),
        (1, 0, 1)
    );
    assert_eq!(store.source_entries("src", 10).unwrap().len(), 3);

    // A `#0` variant replacing the guid over time is the same entry...
    let (page, page0) = ("https://example.org/?p=7", "https://example.org/?p=7#0");
    assert_eq!(
        count(ingest(&store, &poll_of(&[page]), now, &rules)),
        (1, 0, 0)
    );
    let mut replaced = poll_of(&[page0]);
    replaced[0].title = format!("item {page}");
    assert_eq!(count(ingest(&store, &replaced, now, &rules)), (0, 0, 1));
    // ...but the two listed side by side are two: the stored copy is the
    // guid it was stored from, and the other is new.
    let both = poll_of(&[page, page0]);
    assert_eq!(count(ingest(&store, &both, now, &rules)), (1, 0, 1));
    assert_eq!(store.source_entries("src", 10).unwrap().len(), 5);
}

#[test]
fn archives_freeze_once_survive_reopening_and_age_out() {
    let dir = tempfile::tempdir().unwrap();
    let old = chrono::NaiveDate::from_ymd_opt(2024, 12, 20).unwrap();
    let recent = chrono::NaiveDate::from_ymd_opt(2025, 3, 30).unwrap();
    {
        let store = Store::open(dir.path(), StoreOptions::with_cache(1 << 20)).unwrap();
        assert_eq!(
            store.archive(old, "feed.atom?archive=2024-12-20").unwrap(),
            None
        );
        let first = store
            .freeze_archive(
                old,
                "feed.atom?archive=2024-12-20",
                "<feed>يوم</feed>".into(),
            )
            .unwrap();
        // A second freeze keeps the first bytes.
        let again = store
            .freeze_archive(
                old,
                "feed.atom?archive=2024-12-20",
                "<feed>other</feed>".into(),
            )
            .unwrap();
        assert_eq!(again, first);
        store
            .freeze_archive(
                recent,
                "feed.atom?archive=2025-03-30",
                "<feed>r</feed>".into(),
            )
            .unwrap();
    }
    // Durable: frozen before the store closed, read back after.
    let store = Store::open(dir.path(), StoreOptions::with_cache(1 << 20)).unwrap();
    assert_eq!(
        store
            .archive(old, "feed.atom?archive=2024-12-20")
            .unwrap()
            .as_deref(),
        Some("<feed>يوم</feed>")
    );
    // Retention (90 days by default) drops the old day's, keeps the other.
    let counts = store
        .prune(at("2025-04-01T00:00:00Z"), &Retention::default())
        .unwrap();
    assert_eq!(counts.archives, 1);
    assert_eq!(
        store.archive(old, "feed.atom?archive=2024-12-20").unwrap(),
        None
    );
    assert!(store
        .archive(recent, "feed.atom?archive=2025-03-30")
        .unwrap()
        .is_some());
}

/// The schema 4 folder's store (`tests/fixtures/store-v4.tar.gz`, written
/// by the schema 4 release), unpacked into `dir`; its directory.
fn unpack_v4_store(dir: &Path) -> std::path::PathBuf {
    unpack_store("store-v4.tar.gz", dir)
}

/// The store of the config folder `name` in `tests/fixtures` (written by
/// an earlier release), unpacked into `dir`; its directory.
fn unpack_store(name: &str, dir: &Path) -> std::path::PathBuf {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let status = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(fixture)
        .arg("-C")
        .arg(dir)
        .arg("store")
        .status()
        .expect("tar runs");
    assert!(status.success());
    dir.join("store")
}

/// Each story's copies as schema 4 kept them (`by_story`), and its id.
fn schema_4_stories(path: &Path) -> BTreeMap<u64, (Vec<u64>, String)> {
    let db = sled::Config::new().path(path).open().unwrap();
    let by_story = db.open_tree("by_story").unwrap();
    let stories = db.open_tree("stories").unwrap();
    let mut out: BTreeMap<u64, (Vec<u64>, String)> = BTreeMap::new();
    for key in by_story.iter().keys() {
        let key = key.unwrap();
        let (story, seq) = (
            keys::number_at(&key, 0).unwrap(),
            keys::number_at(&key, 8).unwrap(),
        );
        let id = codec::decode_story_id(&stories.get(keys::record_key(story)).unwrap().unwrap())
            .unwrap();
        let slot = out.entry(story).or_insert_with(|| (Vec::new(), id));
        slot.0.push(seq);
    }
    out
}

#[test]
fn a_schema_4_store_keeps_every_story_with_its_copies_in_two_trees_fewer() {
    let dir = tempfile::tempdir().unwrap();
    let path = unpack_v4_store(dir.path());
    let before = schema_4_stories(&path);
    assert!(
        before.values().any(|(members, _)| members.len() == 3),
        "{before:?}"
    );
    // A story that is its first copy alone keeps no value.
    let kept: BTreeMap<u64, (Vec<u64>, String)> = before
        .iter()
        .filter(|(story, (members, _))| members[..] != [**story])
        .map(|(story, value)| (*story, value.clone()))
        .collect();
    assert!(!kept.is_empty() && kept.len() < before.len());
    let read_back = |store: &Store| -> BTreeMap<u64, (Vec<u64>, String)> {
        store
            .t
            .stories
            .iter()
            .map(|item| {
                let (key, value) = item.unwrap();
                let story = codec::decode_story(&value).unwrap();
                (
                    keys::number_at(&key, 0).unwrap(),
                    (story.members, story.id.unwrap()),
                )
            })
            .collect()
    };
    {
        let store = Store::open(&path, StoreOptions::with_cache(1 << 20)).unwrap();
        assert_eq!(read_back(&store), kept);
        // Every story reads back whole, with its id.
        for (story, (members, id)) in &before {
            let item = store.story(id).unwrap().unwrap();
            assert_eq!(item.id, *id);
            assert_eq!(item.copies.len(), members.len(), "story {story}");
        }
        let names = migrate::tree_names(&store);
        assert!(
            !names.iter().any(|n| n == "by_time" || n == "by_story"),
            "{names:?}"
        );
        // Every record's story lists it.
        for item in store.t.records.iter() {
            let (key, value) = item.unwrap();
            let seq = keys::number_at(&key, 0).unwrap();
            let story_seq = codec::decode_entry(&value).unwrap().story_seq;
            assert!(before[&story_seq].0.contains(&seq));
        }
        // Run again, as after a stop between dropping the old trees and
        // raising the version: nothing is lost.
        store
            .t
            .meta
            .insert(META_VERSION, &4u32.to_be_bytes())
            .unwrap();
        store.flush_blocking().unwrap();
    }
    let store = Store::open(&path, StoreOptions::with_cache(1 << 20)).unwrap();
    assert_eq!(read_back(&store), kept);
    assert_eq!(
        store.t.meta.get(META_VERSION).unwrap().unwrap().as_ref(),
        &codec::SCHEMA_VERSION.to_be_bytes()
    );
    assert_eq!(store.health().corrupt_values, 0);
}

/// Retention counts newest first per source and in all, from the
/// per-source index alone; a story goes with its last copy.
#[test]
fn retention_limits_each_source_and_the_total_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::with_cache(1 << 20)).unwrap();
    let now = at("2025-04-01T00:00:00Z");
    let rules = Rules::default();
    let mut all_entries = Vec::new();
    for (source, days) in [("a", [1, 4, 7]), ("b", [2, 5, 8]), ("c", [3, 6, 9])] {
        let batch: Vec<Entry> = days
            .iter()
            .map(|day| {
                let mut e = entry(
                    &format!("{source}{day}"),
                    &format!("{source}{day}"),
                    Some(&format!("2025-03-{day:02}T00:00:00Z")),
                );
                e.source = source.into();
                e.id = dedup::entry_id(source, &e.source_id);
                e
            })
            .collect();
        ingest(&store, &batch, now, &rules);
        all_entries.extend(batch);
    }
    let keep = Retention {
        max_per_source: 2,
        max_total: 4,
        ..Retention::default()
    };
    // Newest first: c9 b8 a7 c6 are the four kept in all; b5 and a4 are
    // past that, and a1, b2, c3 are past two per source as well.
    assert_eq!(store.prune(now, &keep).unwrap().pruned, 5);
    store.flush_blocking().unwrap();
    let kept: Vec<String> = store
        .newest_stories(10, &all())
        .unwrap()
        .into_iter()
        .map(|story| story.copies[0].title.clone())
        .collect();
    assert_eq!(kept, ["c9", "b8", "a7", "c6"]);
    assert_eq!(store.entry_count(), 4);
    // Stories of one copy keep no value.
    assert_eq!(store.t.stories.len(), 0);
    assert_eq!(store.health().corrupt_values, 0);
}

/// Every key and value of the tree `name` in the sled directory `path`.
fn raw_tree(path: &Path, name: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let db = sled::Config::new().path(path).open().unwrap();
    let tree = db.open_tree(name).unwrap();
    tree.iter()
        .map(|item| {
            let (k, v) = item.unwrap();
            (k.to_vec(), v.to_vec())
        })
        .collect()
}

/// Every key and value the bucketed tree holds.
fn bucketed(store: &Store, tree: &super::buckets::Bucketed) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut keys = Vec::new();
    store.bucket_keys(tree, |k| keys.push(k.to_vec())).unwrap();
    keys.into_iter()
        .map(|k| {
            let v = store
                .bucket_get(tree, &k)
                .unwrap()
                .expect("a listed key reads back");
            (k, v)
        })
        .collect()
}

#[test]
fn a_schema_5_store_moves_ids_and_links_into_buckets_and_a_rerun_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = unpack_store("store-v5.tar.gz", dir.path());
    let (ids, canons) = (raw_tree(&path, "ids"), raw_tree(&path, "by_canon"));
    assert!(
        ids.len() >= 16 && canons.len() >= 10,
        "{} {}",
        ids.len(),
        canons.len()
    );
    assert!(!ids
        .keys()
        .chain(canons.keys())
        .any(|k| buckets::is_bucket_key(k)));
    let check = |store: &Store| {
        assert_eq!(bucketed(store, &store.t.ids), ids);
        assert_eq!(bucketed(store, &store.t.by_canon), canons);
        // A link's copies are one bucket's prefix scan.
        for key in canons.keys() {
            let found = store.bucket_prefix(&store.t.by_canon, &key[..8]).unwrap();
            assert!(found.iter().any(|(k, _)| k == key));
        }
        for tree in [&store.t.ids.tree, &store.t.by_canon.tree] {
            assert!(tree
                .iter()
                .keys()
                .all(|k| buckets::is_bucket_key(&k.unwrap())));
            assert!(tree.len() <= ids.len());
        }
        let version = store.t.meta.get(super::META_VERSION).unwrap().unwrap();
        assert_eq!(&version[..], &6u32.to_be_bytes());
        // Rebuilt after moving the keys: no flag, no copy left behind.
        assert!(!store.t.meta.contains_key(super::META_REBUILD).unwrap());
        assert!(!store.path().join("rebuild").exists());
    };
    {
        let store = Store::open(&path, StoreOptions::with_cache(1 << 20)).unwrap();
        check(&store);
        // Every stored entry is found under its id.
        for (key, value) in &ids {
            if let Ok(codec::Slot::Stored(seq)) = codec::Slot::decode(value) {
                let record = store.record(seq).unwrap().expect("its record");
                assert_eq!(keys::compact_id(&record.id), *key);
            }
        }
        assert_eq!(store.health().corrupt_values, 0);
    }
    // Interrupted after moving a batch, before raising the version: an old
    // key is still there (its bucket holds it already). The rerun moves it
    // again, changing nothing.
    {
        let db = sled::Config::new().path(&path).open().unwrap();
        let (key, value) = ids.iter().next().unwrap();
        db.open_tree("ids")
            .unwrap()
            .insert(key, value.clone())
            .unwrap();
        let meta = db.open_tree("meta").unwrap();
        meta.insert(super::META_VERSION, &5u32.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let store = Store::open(&path, StoreOptions::with_cache(1 << 20)).unwrap();
    check(&store);
}

/// Every tree's name, keys and values.
type AllTrees = BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>>;

/// Every key and value of every tree of the open store.
fn all_trees(store: &Store) -> AllTrees {
    store
        .db
        .tree_names()
        .into_iter()
        .map(|name| {
            let tree = store.db.open_tree(&name).unwrap();
            let kv = tree
                .iter()
                .map(|item| {
                    let (k, v) = item.unwrap();
                    (k.to_vec(), v.to_vec())
                })
                .collect();
            (name.to_vec(), kv)
        })
        .collect()
}

/// A store of a few stories, flushed; its trees and highest seq.
fn small_store(path: &Path) -> (AllTrees, u64) {
    let store = Store::open(path, StoreOptions::with_cache(1 << 20)).unwrap();
    let entries: Vec<Entry> = (0..40)
        .map(|i| {
            entry(
                &format!("g{i}"),
                &format!("story {i}"),
                Some("2025-03-31T00:00:00Z"),
            )
        })
        .collect();
    ingest(
        &store,
        &entries,
        at("2025-04-01T00:00:00Z"),
        &Rules::default(),
    );
    let top = store.db.generate_id().unwrap();
    store.flush_blocking().unwrap();
    (all_trees(&store), top)
}

#[test]
fn a_compacted_store_keeps_every_key_and_goes_on_with_new_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let (trees, top) = small_store(dir.path());
    {
        // Not while it is open elsewhere.
        let _held = Store::open(dir.path(), StoreOptions::with_cache(1 << 20)).unwrap();
        let held = Store::compact(dir.path(), StoreOptions::with_cache(1 << 20));
        assert!(matches!(held, Err(StoreError::Locked { .. })), "{held:?}");
    }
    // A `rebuild` folder that is not a copy of ours is left alone.
    let stray = tempfile::tempdir().unwrap();
    std::fs::create_dir(stray.path().join("rebuild")).unwrap();
    std::fs::write(stray.path().join("rebuild/notes.txt"), b"mine").unwrap();
    assert!(Store::open(stray.path(), StoreOptions::with_cache(1 << 20)).is_err());
    assert!(stray.path().join("rebuild/notes.txt").exists());
    let rebuilt = Store::compact(dir.path(), StoreOptions::with_cache(1 << 20)).unwrap();
    assert_eq!(rebuilt.trees, trees.len());
    assert_eq!(
        rebuilt.keys,
        trees.values().map(|t| t.len() as u64).sum::<u64>()
    );
    assert!(!dir.path().join("rebuild").exists());
    let store = Store::open(dir.path(), StoreOptions::with_cache(1 << 20)).unwrap();
    assert_eq!(all_trees(&store), trees);
    assert!(
        store.db.generate_id().unwrap() > top,
        "seqs are never reused"
    );
    assert_eq!(titles(&store).len(), 10);
    let counts = ingest(
        &store,
        &[entry("new", "a new story", Some("2025-04-01T00:00:00Z"))],
        at("2025-04-01T01:00:00Z"),
        &Rules::default(),
    );
    assert_eq!(counts.new, 1);
    assert_eq!(titles(&store)[0], "a new story");
}

#[test]
fn an_interrupted_rebuild_is_finished_or_undone_on_open() {
    let options = StoreOptions::with_cache(1 << 20);
    // Which point the rebuild stopped at.
    for stop in [
        "copying",
        "copied",
        "old files removed",
        "half moved",
        "all moved",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (trees, _) = small_store(dir.path());
        {
            let store = Store::open(dir.path(), options).unwrap();
            let (_, held) = super::rebuild::copy(&store.db, dir.path(), options).unwrap();
            drop(store);
            // While held, another opener leaves the copy alone (and finds
            // the store is being rebuilt, or locked, not a half-moved one).
            super::rebuild::finish(dir.path()).unwrap();
            assert!(dir.path().join("rebuild/COPIED").exists());
            drop(held);
        }
        let folder = dir.path().join("rebuild");
        match stop {
            "copying" => std::fs::remove_file(folder.join("COPIED")).unwrap(),
            "copied" => {}
            _ => {
                for entry in std::fs::read_dir(dir.path()).unwrap() {
                    let entry = entry.unwrap();
                    if entry.file_name() != "rebuild" {
                        let p = entry.path();
                        if p.is_dir() {
                            std::fs::remove_dir_all(p).unwrap();
                        } else {
                            std::fs::remove_file(p).unwrap();
                        }
                    }
                }
                std::fs::write(folder.join("MOVING"), b"").unwrap();
                if stop == "half moved" {
                    std::fs::rename(folder.join("conf"), dir.path().join("conf")).unwrap();
                }
                if stop == "all moved" {
                    for name in ["conf", "blobs", "db"] {
                        std::fs::rename(folder.join(name), dir.path().join(name)).unwrap();
                    }
                    for entry in std::fs::read_dir(&folder).unwrap() {
                        let entry = entry.unwrap();
                        let name = entry.file_name();
                        if name.to_string_lossy().starts_with("snap.") {
                            std::fs::rename(entry.path(), dir.path().join(&name)).unwrap();
                        }
                    }
                }
            }
        }
        let store = Store::open(dir.path(), options).unwrap();
        assert!(!folder.exists(), "{stop}");
        assert_eq!(all_trees(&store), trees, "{stop}");
    }
}
