//! Plain types shared by every stage: the normalized [`Entry`], what a poll
//! reports, and the per-source state the store keeps.
//!
//! Nothing here does I/O; these are the nouns the pipeline passes along.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One feed entry in feedmerge's own schema, whatever format it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Stable feedmerge id (`urn:feedmerge:entry:<hex>`), derived from the
    /// source name and the source's own id; never random.
    pub id: String,
    /// Name of the configured source the entry came from.
    pub source: String,
    /// The publisher's id for the entry (guid / atom:id / JSON `id`), or the
    /// fallback feedmerge derived when the publisher gave none.
    pub source_id: String,
    /// Title as plain text (no markup, entities decoded, whitespace collapsed).
    pub title: String,
    /// Absolute link to the article, when the publisher gave one.
    pub link: Option<String>,
    /// Sanitized HTML summary.
    pub summary: Option<String>,
    /// Sanitized HTML content.
    pub content: Option<String>,
    /// Author names.
    pub authors: Vec<String>,
    /// Category terms.
    pub categories: Vec<String>,
    /// Publication time given by the publisher, in UTC.
    pub published: Option<DateTime<Utc>>,
    /// Last update time given by the publisher, in UTC.
    pub updated: Option<DateTime<Utc>>,
    /// When feedmerge first stored this entry.
    pub first_seen: DateTime<Utc>,
    /// When feedmerge last stored a change to this entry's text.
    pub changed: DateTime<Utc>,
    /// Language tag (BCP 47, e.g. `ar`, `en-us`), when known.
    pub language: Option<String>,
    /// Attached media: enclosures, media:content and media:thumbnail, JSON
    /// Feed attachments and images.
    pub enclosures: Vec<Enclosure>,
    /// The link reduced to what identifies the page (see
    /// `dedup::canonical_url`), from `feedburner:origLink` when given.
    pub canonical: Option<String>,
    /// MinHash of the text, when it is long enough to compare.
    pub fingerprint: Option<Fingerprint>,
    /// Why this entry joined another's story, if it did.
    pub merged: Option<Merged>,
    /// A page elsewhere the entry is about (JSON Feed's `external_url`, a
    /// linkblog's target), published as a `rel="related"` link.
    #[serde(default)]
    pub external: Option<String>,
}

/// What near-duplicate detection compares (see `dedup::fingerprint`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// MinHash signature over word pairs: the low 16 bits of each minimum
    /// (`dedup::FINGERPRINT_MASK`).
    pub minhash: Vec<u16>,
    /// Hashes of the numbers in the text, sorted: templated reports (prices,
    /// scores, casualty counts) differ mostly in them.
    pub numbers: Vec<u32>,
}

impl Fingerprint {
    /// The fingerprint, borrowed.
    pub fn view(&self) -> FingerprintView<'_> {
        FingerprintView {
            minhash: &self.minhash,
            numbers: &self.numbers,
        }
    }
}

/// A fingerprint borrowed from wherever it is held (an entry, or the
/// store's near-duplicate index, which keeps it in its own form).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FingerprintView<'a> {
    /// See [`Fingerprint::minhash`].
    pub minhash: &'a [u16],
    /// See [`Fingerprint::numbers`].
    pub numbers: &'a [u32],
}

/// How an entry joined a story.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Merged {
    /// The stored entry it matched.
    pub with: String,
    /// The rule that matched.
    pub rule: MergeRule,
}

/// The dedup rule that put two copies in one story.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MergeRule {
    /// Both links have the same canonical URL.
    CanonicalUrl,
    /// The texts are near-duplicates (estimated Jaccard similarity, %).
    NearDuplicate {
        /// Similarity in percent.
        similarity: u8,
    },
}

impl std::fmt::Display for MergeRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MergeRule::CanonicalUrl => write!(f, "same canonical url"),
            MergeRule::NearDuplicate { similarity } => {
                write!(f, "near-duplicate text ({similarity}% similar)")
            }
        }
    }
}

/// A media file attached to an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enclosure {
    /// Absolute http(s) URL.
    pub url: String,
    /// Media type, e.g. `image/webp`, when known.
    pub mime_type: Option<String>,
    /// Size in bytes, when given.
    pub length: Option<u64>,
}

impl Entry {
    /// The time the entry is sorted and published by: the publisher's
    /// publication date, or when feedmerge first saw it.
    pub fn published_or_seen(&self) -> DateTime<Utc> {
        self.published.or(self.updated).unwrap_or(self.first_seen)
    }

    /// The entry's `atom:updated`: the publisher's update date, or the time
    /// feedmerge stored a later change to it, whichever is later.
    pub fn updated_or_changed(&self) -> DateTime<Utc> {
        let publisher = self.updated.unwrap_or_else(|| self.published_or_seen());
        if self.changed > self.first_seen {
            publisher.max(self.changed)
        } else {
            publisher
        }
    }
}

/// What storing one poll's entries did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestCounts {
    /// Entries stored for the first time.
    pub new: usize,
    /// Entries whose text changed and were updated in place.
    pub updated: usize,
    /// Entries already stored unchanged.
    pub unchanged: usize,
    /// Entries pruned or merged away earlier that the source still lists
    /// (kept out by their tombstones).
    #[serde(default)]
    pub suppressed: usize,
    /// Of the new entries, those that joined another source's story.
    #[serde(default)]
    pub merged: usize,
}

/// The state feedmerge keeps per source between polls.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceState {
    /// When the last poll started.
    pub last_attempt: Option<DateTime<Utc>>,
    /// When a poll last succeeded.
    pub last_success: Option<DateTime<Utc>>,
    /// HTTP status of the last response, when there was one.
    pub http_status: Option<u16>,
    /// The last poll's error, one line; `None` after a success.
    pub last_error: Option<String>,
    /// Failures in a row since the last success.
    pub consecutive_failures: u32,
    /// Entries in the last successfully parsed document.
    pub entries_seen: usize,
    /// The source's own title, from its last parsed document.
    pub title: Option<String>,
    /// The source's home page, from its last parsed document.
    pub home_page: Option<String>,
    /// How the last document was decoded, rendered from
    /// [`crate::parse::EncodingStatus`]: `UTF-8`, or e.g. `declared UTF-8
    /// (HTTP charset), not valid; detected windows-1256`.
    pub encoding: Option<String>,
    /// The configured URL this state belongs to; when the config changes it,
    /// the moved URL, the disabled flag and the validators are dropped.
    #[serde(default)]
    pub config_url: String,
    /// Where the source permanently moved (301/308), polled instead of the
    /// configured URL.
    #[serde(default)]
    pub moved_to: Option<String>,
    /// Why the source is no longer polled (e.g. 410 Gone), until its URL
    /// changes in the config.
    #[serde(default)]
    pub disabled: Option<String>,
    /// The last response's `ETag`, sent back as `If-None-Match`.
    #[serde(default)]
    pub etag: Option<String>,
    /// The last response's `Last-Modified`, sent back as `If-Modified-Since`.
    #[serde(default)]
    pub last_modified: Option<String>,
    /// The source is not polled before this time (backoff, Retry-After, TTL).
    #[serde(default)]
    pub next_due: Option<DateTime<Utc>>,
    /// The publisher's minimum poll interval in seconds (RSS `<ttl>` or
    /// `Cache-Control: max-age`), from the last document.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    /// What the last parsed document had to give up to the intake limits,
    /// one line each (empty when it fit).
    #[serde(default)]
    pub notes: Vec<String>,
}

/// One published entry: a story and the copies of it this feed shows
/// (never empty; a source's own feed shows each copy alone).
#[derive(Debug, Clone)]
pub struct Item {
    /// The `atom:id`: the story's id (its first copy's), or the copy's own.
    pub id: String,
    /// The copies, oldest first.
    pub copies: Vec<Entry>,
}

impl Item {
    /// One copy, published as itself.
    pub fn single(entry: Entry) -> Self {
        Self {
            id: entry.id.clone(),
            copies: vec![entry],
        }
    }

    /// The copy whose text is shown: the most complete one (longest
    /// content, else summary); the earliest among equals.
    pub fn representative(&self) -> Option<&Entry> {
        self.copies.get(self.representative_at()?)
    }

    /// Where [`Item::representative`] is among the copies.
    pub fn representative_at(&self) -> Option<usize> {
        let size = |e: &Entry| {
            e.content
                .as_ref()
                .or(e.summary.as_ref())
                .map_or(0, String::len)
        };
        self.copies
            .iter()
            .enumerate()
            .rev()
            .max_by_key(|(_, e)| size(e))
            .map(|(at, _)| at)
    }

    /// The earliest publication among the copies.
    pub fn published(&self) -> Option<DateTime<Utc>> {
        self.copies.iter().map(Entry::published_or_seen).min()
    }

    /// The latest update among the copies.
    pub fn updated(&self) -> Option<DateTime<Utc>> {
        self.copies.iter().map(Entry::updated_or_changed).max()
    }
}
