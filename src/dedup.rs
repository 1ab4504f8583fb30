//! Identity: which stored entry an incoming one is, and whether it changed.
//!
//! Pure functions only. Today this is deduplication within a source (the
//! same entry fetched again is the same entry; a changed one is updated in
//! place); cross-source merging grows here.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::model::Entry;

/// The stable feedmerge id of the entry `source_id` of source `source`.
pub fn entry_id(source: &str, source_id: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(source.as_bytes());
    hasher.update([0]);
    hasher.update(source_id.as_bytes());
    let digest = hasher.finalize();
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("urn:feedmerge:entry:{hex}")
}

/// What to do with an incoming entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merge {
    /// Not stored yet: store it.
    New(Entry),
    /// Stored, but the publisher changed it: replace it.
    Updated(Entry),
    /// Stored and unchanged: nothing to write.
    Unchanged,
}

/// Decides what `incoming` (seen at `now`) does to `existing`, the stored
/// entry with the same id, if any. The first-seen time survives updates, so
/// undated entries keep their place; the change time moves on updates.
pub fn merge(existing: Option<&Entry>, mut incoming: Entry, now: DateTime<Utc>) -> Merge {
    match existing {
        None => {
            incoming.first_seen = now;
            incoming.changed = now;
            Merge::New(incoming)
        }
        Some(old) if same_publisher_fields(old, &incoming) => Merge::Unchanged,
        Some(old) => {
            incoming.first_seen = old.first_seen;
            // When the publisher moved its own update date, that date tells
            // readers of the change; otherwise the time we saw it does.
            let publisher_moved = incoming.updated > old.updated;
            incoming.changed = if publisher_moved {
                old.changed
            } else {
                now.max(old.changed)
            };
            Merge::Updated(incoming)
        }
    }
}

fn same_publisher_fields(a: &Entry, b: &Entry) -> bool {
    a.title == b.title
        && a.link == b.link
        && a.summary == b.summary
        && a.content == b.content
        && a.authors == b.authors
        && a.categories == b.categories
        && a.published == b.published
        && a.updated == b.updated
        && a.language == b.language
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn entry(title: &str, seen: &str) -> Entry {
        Entry {
            id: entry_id("src", "guid-1"),
            source: "src".into(),
            source_id: "guid-1".into(),
            title: title.into(),
            link: None,
            summary: None,
            content: Some("<p>x</p>".into()),
            authors: vec![],
            categories: vec![],
            published: None,
            updated: None,
            first_seen: at(seen),
            changed: at(seen),
            language: None,
            enclosures: vec![],
        }
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        assert_eq!(entry_id("a", "1"), entry_id("a", "1"));
        assert_ne!(entry_id("a", "1"), entry_id("b", "1"));
        assert_ne!(entry_id("a", "1"), entry_id("a", "2"));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(entry_id("ab", "c"), entry_id("a", "bc"));
        assert!(entry_id("a", "1").starts_with("urn:feedmerge:entry:"));
    }

    #[test]
    fn merging() {
        let t0 = "2025-03-01T00:00:00Z";
        let t1 = at("2025-03-02T00:00:00Z");
        let stored = entry("Title", t0);

        match merge(None, entry("Title", "2025-03-02T00:00:00Z"), t1) {
            Merge::New(e) => assert_eq!(e.first_seen, t1),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            merge(Some(&stored), entry("Title", "2025-03-02T00:00:00Z"), t1),
            Merge::Unchanged
        );
        match merge(
            Some(&stored),
            entry("New title", "2025-03-02T00:00:00Z"),
            t1,
        ) {
            Merge::Updated(e) => {
                assert_eq!(e.title, "New title");
                assert_eq!(e.first_seen, at(t0), "first seen survives");
                assert_eq!(e.changed, t1, "change time moves");
                assert_eq!(
                    e.published_or_seen(),
                    at(t0),
                    "undated entry keeps its place"
                );
                assert_eq!(e.updated_or_changed(), t1);
            }
            other => panic!("{other:?}"),
        }
        let mut dated = entry("New title", "2025-03-02T00:00:00Z");
        dated.updated = Some(at("2025-03-01T12:00:00Z"));
        match merge(Some(&stored), dated, t1) {
            Merge::Updated(e) => {
                assert_eq!(
                    e.changed,
                    at(t0),
                    "the publisher's date tells of the change"
                );
                assert_eq!(e.updated_or_changed(), at("2025-03-01T12:00:00Z"));
            }
            other => panic!("{other:?}"),
        }
    }
}
