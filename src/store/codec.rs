//! The stored forms: what the store writes, apart from `model`'s types.
//!
//! Every value starts with a format byte naming its form, so a reader
//! knows what it holds, and the store's schema version (in `meta`) says
//! which forms a store may hold. Changing a stored form means a new format
//! byte, a new schema version and a migration (see `migrate`); the
//! golden-bytes tests below fail when a form changes without one.
//!
//! Forms:
//! - entry, version 4 ([`EntryV4`], postcard, schema 5): the version 3
//!   fields with ids in 16 bytes, a guid that is the link and a canonical
//!   link inside the link not repeated, the MinHash in 2 bytes a value;
//! - entry, versions 2 and 3 ([`StoredEntry`], postcard): the entry, its
//!   story's seq, summary and content packed and compressed together
//!   (version 3 adds `external`), read as they are;
//! - entry, version 1 ([`legacy`], postcard): `{ story_seq, entry }` with
//!   the domain entry as it was, read only by the migration;
//! - slot: stored under a seq, or pruned at a time (what `ids` holds of
//!   an entry id);
//! - bucket (`ids` and `by_canon` values, schema 6): many small keys and
//!   their values in one sled value ([`encode_bucket`]; see `buckets`);
//! - source state (JSON, [`StoredSource`]): few values that grow fields, so
//!   JSON, which reads old values with new fields defaulted;
//! - story (`stories` values, [`StoredStory`]): its copies' seqs and its
//!   id, compact; schema versions 2 to 4 held the id alone (read only by
//!   the migration).

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{Enclosure, Entry, Fingerprint, MergeRule, Merged, SourceState};

use super::keys::{compact_id, number_at, u32_at};

/// The schema version this build writes and reads.
pub(super) const SCHEMA_VERSION: u32 = 6;

/// Format byte of a JSON value (source states).
const JSON_V1: u8 = 1;
/// Format byte of a version 1 entry record.
pub(super) const ENTRY_V1: u8 = 2;
/// Format byte of a version 2 entry record.
pub(super) const ENTRY_V2: u8 = 3;
/// Format byte of a version 3 entry record: the version 2 fields, then
/// `external`.
pub(super) const ENTRY_V3: u8 = 4;
/// Format byte of a version 4 entry record ([`EntryV4`], schema 5).
pub(super) const ENTRY_V4: u8 = 5;

/// Format byte of a frozen archive document: zstd of its UTF-8 bytes.
const ARCHIVE_V1: u8 = 1;

/// Packed text: stored as it is.
const TEXT_PLAIN: u8 = 0;
/// Packed text: zstd.
const TEXT_ZSTD: u8 = 1;
/// Packed texts shorter than this are not compressed.
const COMPRESS_FROM: usize = 200;
/// zstd level: fast; feed HTML compresses well at any level.
const ZSTD_LEVEL: i32 = 1;
/// Most bytes a packed text may unpack to (a bound on a corrupt value).
const MAX_TEXT: usize = 64 << 20;

/// An entry as stored: the domain entry's fields, its story's seq (the one
/// story identity), times as seconds and nanoseconds. Serialized as the
/// version 2 fields; version 3 appends `external` after them
/// ([`encode_entry`]), so a version 2 record reads with it absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct StoredEntry {
    pub story_seq: u64,
    pub id: String,
    pub source: String,
    pub source_id: String,
    pub title: String,
    pub link: Option<String>,
    /// Summary and content, packed ([`pack_texts`]).
    pub texts: Vec<u8>,
    pub authors: Vec<String>,
    pub categories: Vec<String>,
    pub published: Option<StoredTime>,
    pub updated: Option<StoredTime>,
    pub first_seen: StoredTime,
    pub changed: StoredTime,
    pub language: Option<String>,
    pub enclosures: Vec<StoredEnclosure>,
    pub canonical: Option<String>,
    pub fingerprint: Option<StoredFingerprint>,
    pub merged: Option<StoredMerged>,
    /// Version 3: the page elsewhere the entry points to; written after the
    /// version 2 fields by [`encode_entry`], not by serde.
    #[serde(skip)]
    pub external: Option<String>,
}

/// A UTC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct StoredTime {
    pub secs: i64,
    pub nanos: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct StoredEnclosure {
    pub url: String,
    pub mime_type: Option<String>,
    pub length: Option<u64>,
}

/// A fingerprint: the MinHash as little-endian bytes (random values gain
/// nothing from varints), the number hashes as they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct StoredFingerprint {
    pub minhash: Vec<u8>,
    pub numbers: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct StoredMerged {
    pub with: String,
    pub rule: StoredRule,
}

/// The dedup rule, with its tags fixed here (never reorder: add at the end
/// with a new version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum StoredRule {
    CanonicalUrl,
    NearDuplicate { similarity: u8 },
}

impl StoredTime {
    fn of(t: DateTime<Utc>) -> Self {
        Self {
            secs: t.timestamp(),
            nanos: t.timestamp_subsec_nanos(),
        }
    }

    fn time(self) -> Result<DateTime<Utc>, String> {
        Utc.timestamp_opt(self.secs, self.nanos)
            .single()
            .ok_or_else(|| format!("time out of range: {}s", self.secs))
    }
}

impl StoredFingerprint {
    pub(super) fn of(f: &Fingerprint) -> Self {
        Self {
            minhash: f
                .minhash
                .iter()
                .flat_map(|h| u32::from(*h).to_le_bytes())
                .collect(),
            numbers: f.numbers.clone(),
        }
    }

    pub(super) fn fingerprint(&self) -> Result<Fingerprint, String> {
        if self.minhash.len() % 4 != 0 {
            return Err("minhash of odd length".into());
        }
        // Fingerprints of 32-bit values (records before version 4) read
        // as their low 16 bits, as `dedup` makes them now.
        let minhash = self
            .minhash
            .chunks_exact(4)
            .map(|c| {
                (u32::from_le_bytes([c[0], c[1], c[2], c[3]]) & crate::dedup::FINGERPRINT_MASK)
                    as u16
            })
            .collect();
        Ok(Fingerprint {
            minhash,
            numbers: self.numbers.clone(),
        })
    }
}

impl StoredRule {
    fn of(rule: &MergeRule) -> Self {
        match rule {
            MergeRule::CanonicalUrl => StoredRule::CanonicalUrl,
            MergeRule::NearDuplicate { similarity } => StoredRule::NearDuplicate {
                similarity: *similarity,
            },
        }
    }

    fn rule(&self) -> MergeRule {
        match self {
            StoredRule::CanonicalUrl => MergeRule::CanonicalUrl,
            StoredRule::NearDuplicate { similarity } => MergeRule::NearDuplicate {
                similarity: *similarity,
            },
        }
    }
}

impl StoredEntry {
    /// The stored form of `entry`, a copy in the story whose seq is
    /// `story_seq`.
    #[cfg(test)]
    pub(super) fn of(entry: &Entry, story_seq: u64) -> Result<Self, String> {
        Self::of_packed(entry, story_seq, None)
    }

    /// [`StoredEntry::of`], taking the texts from `ahead` when it packed
    /// this entry's summary and content (packing is the costly part, and
    /// can run before the writer lock is taken).
    pub(super) fn of_packed(
        entry: &Entry,
        story_seq: u64,
        ahead: Option<&PackedTexts<'_>>,
    ) -> Result<Self, String> {
        let (summary, content) = (entry.summary.as_deref(), entry.content.as_deref());
        let texts = match ahead {
            Some(p) if p.summary == summary && p.content == content => p.bytes.clone(),
            _ => pack_texts(summary, content)?,
        };
        Ok(Self {
            story_seq,
            id: entry.id.clone(),
            source: entry.source.clone(),
            source_id: entry.source_id.clone(),
            title: entry.title.clone(),
            link: entry.link.clone(),
            texts,
            authors: entry.authors.clone(),
            categories: entry.categories.clone(),
            published: entry.published.map(StoredTime::of),
            updated: entry.updated.map(StoredTime::of),
            first_seen: StoredTime::of(entry.first_seen),
            changed: StoredTime::of(entry.changed),
            language: entry.language.clone(),
            enclosures: entry
                .enclosures
                .iter()
                .map(|e| StoredEnclosure {
                    url: e.url.clone(),
                    mime_type: e.mime_type.clone(),
                    length: e.length,
                })
                .collect(),
            canonical: entry.canonical.clone(),
            fingerprint: entry.fingerprint.as_ref().map(StoredFingerprint::of),
            merged: entry.merged.as_ref().map(|m| StoredMerged {
                with: m.with.clone(),
                rule: StoredRule::of(&m.rule),
            }),
            external: entry.external.clone(),
        })
    }

    /// The domain entry (the stored form moved into it, not copied).
    pub(super) fn entry(self) -> Result<Entry, String> {
        let (summary, content) = unpack_texts(&self.texts)?;
        let fingerprint = self
            .fingerprint
            .as_ref()
            .map(StoredFingerprint::fingerprint)
            .transpose()?;
        Ok(Entry {
            published: self.published.map(StoredTime::time).transpose()?,
            updated: self.updated.map(StoredTime::time).transpose()?,
            first_seen: self.first_seen.time()?,
            changed: self.changed.time()?,
            id: self.id,
            source: self.source,
            source_id: self.source_id,
            title: self.title,
            link: self.link,
            summary,
            content,
            authors: self.authors,
            categories: self.categories,
            language: self.language,
            enclosures: self
                .enclosures
                .into_iter()
                .map(|e| Enclosure {
                    url: e.url,
                    mime_type: e.mime_type,
                    length: e.length,
                })
                .collect(),
            canonical: self.canonical,
            fingerprint,
            merged: self.merged.map(|m| Merged {
                with: m.with,
                rule: m.rule.rule(),
            }),
            external: self.external,
        })
    }

    /// The time the entry is sorted by (as `Entry::published_or_seen`).
    pub(super) fn sort_time(&self) -> Result<DateTime<Utc>, String> {
        self.published
            .or(self.updated)
            .unwrap_or(self.first_seen)
            .time()
    }

    /// When the entry was first stored.
    pub(super) fn first_seen(&self) -> Result<DateTime<Utc>, String> {
        self.first_seen.time()
    }
}

/// An entry's summary and content, packed ahead of its write (the texts
/// borrowed from the incoming entry, to tell whether the write's are the
/// same).
pub(super) struct PackedTexts<'a> {
    summary: Option<&'a str>,
    content: Option<&'a str>,
    bytes: Vec<u8>,
}

impl<'a> PackedTexts<'a> {
    /// Packs `entry`'s texts (`None` when they do not pack: the write
    /// then packs them again and reports why).
    pub(super) fn of(entry: &'a Entry) -> Option<Self> {
        let (summary, content) = (entry.summary.as_deref(), entry.content.as_deref());
        let bytes = pack_texts(summary, content).ok()?;
        Some(Self {
            summary,
            content,
            bytes,
        })
    }
}

/// Summary and content in one value: compressed together, since a derived
/// summary repeats the content's start.
fn pack_texts(summary: Option<&str>, content: Option<&str>) -> Result<Vec<u8>, String> {
    let plain = postcard::to_stdvec(&(summary, content)).map_err(|e| e.to_string())?;
    if plain.len() < COMPRESS_FROM {
        let mut out = Vec::with_capacity(plain.len() + 1);
        out.push(TEXT_PLAIN);
        out.extend_from_slice(&plain);
        return Ok(out);
    }
    let packed = compress(&plain)?;
    let mut out = Vec::with_capacity(packed.len() + 5);
    out.push(TEXT_ZSTD);
    out.extend_from_slice(&(plain.len() as u32).to_be_bytes());
    out.extend_from_slice(&packed);
    Ok(out)
}

thread_local! {
    /// Each thread's zstd contexts, made once: a context per call was a
    /// visible share of a feed's render (ZSTD_createDCtx and the
    /// allocations and page faults of its buffers, in perf).
    static ZSTD: std::cell::RefCell<Option<(zstd::bulk::Compressor<'static>, zstd::bulk::Decompressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f` with this thread's zstd contexts.
fn with_zstd<T>(
    f: impl FnOnce(
        &mut zstd::bulk::Compressor<'static>,
        &mut zstd::bulk::Decompressor<'static>,
    ) -> std::io::Result<T>,
) -> Result<T, String> {
    ZSTD.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            let compressor = zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(|e| e.to_string())?;
            let decompressor = zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?;
            *cell = Some((compressor, decompressor));
        }
        match cell.as_mut() {
            Some((c, d)) => f(c, d).map_err(|e| e.to_string()),
            None => Err("no zstd context".into()),
        }
    })
}

/// `plain`, zstd-compressed at [`ZSTD_LEVEL`] (one frame, as
/// `zstd::bulk::compress` writes it).
fn compress(plain: &[u8]) -> Result<Vec<u8>, String> {
    with_zstd(|c, _| c.compress(plain))
}

/// One zstd frame of at most `capacity` bytes, decompressed.
fn decompress(packed: &[u8], capacity: usize) -> Result<Vec<u8>, String> {
    with_zstd(|_, d| d.decompress(packed, capacity))
}

type Texts = (Option<String>, Option<String>);

fn unpack_texts(bytes: &[u8]) -> Result<Texts, String> {
    let plain = match bytes.split_first() {
        Some((&TEXT_PLAIN, rest)) => return postcard::from_bytes(rest).map_err(|e| e.to_string()),
        Some((&TEXT_ZSTD, rest)) => {
            let len = u32_at(rest, 0).ok_or("short packed text")? as usize;
            if len > MAX_TEXT {
                return Err(format!("packed text claims {len} bytes"));
            }
            decompress(&rest[4..], len)?
        }
        Some((kind, _)) => return Err(format!("unknown text packing {kind}")),
        None => return Err("empty packed text".into()),
    };
    postcard::from_bytes(&plain).map_err(|e| e.to_string())
}

/// A canonical link as version 4 records keep it: most are the entry's
/// link without its scheme, so only where they start in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum StoredCanonical {
    /// The link from this byte on.
    InLink(u16),
    Text(String),
}

/// The version 4 record (format byte 5): the version 3 fields, smaller.
/// Ids are in the story id form (a feedmerge id's 16 bytes), a guid that
/// is the link is not repeated, a canonical link inside the link is where
/// it starts, and the MinHash takes 2 bytes a value (its values are 16
/// bits: see `dedup::FINGERPRINT_BITS`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct EntryV4 {
    story_seq: u64,
    id: Vec<u8>,
    source: String,
    /// `None`: the same as `link`.
    source_id: Option<String>,
    title: String,
    link: Option<String>,
    texts: Vec<u8>,
    authors: Vec<String>,
    categories: Vec<String>,
    published: Option<StoredTime>,
    updated: Option<StoredTime>,
    first_seen: StoredTime,
    changed: StoredTime,
    language: Option<String>,
    enclosures: Vec<StoredEnclosure>,
    canonical: Option<StoredCanonical>,
    /// The MinHash (2 bytes a value, little-endian) and the number hashes.
    fingerprint: Option<(Vec<u8>, Vec<u32>)>,
    /// The copy it matched (its id in the story id form), and why.
    merged: Option<(Vec<u8>, StoredRule)>,
    external: Option<String>,
}

impl EntryV4 {
    fn of(s: StoredEntry) -> Self {
        let source_id = (s.link.as_deref() != Some(s.source_id.as_str())).then_some(s.source_id);
        let canonical = s.canonical.map(|canon| {
            let start = s
                .link
                .as_deref()
                .and_then(|link| link.len().checked_sub(canon.len()))
                .filter(|&at| s.link.as_deref().and_then(|l| l.get(at..)) == Some(canon.as_str()));
            match start.and_then(|at| u16::try_from(at).ok()) {
                Some(at) => StoredCanonical::InLink(at),
                None => StoredCanonical::Text(canon),
            }
        });
        let fingerprint = s.fingerprint.map(|f| {
            let minhash = f
                .minhash
                .chunks_exact(4)
                .flat_map(|c| (u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u16).to_le_bytes())
                .collect();
            (minhash, f.numbers)
        });
        Self {
            story_seq: s.story_seq,
            id: encode_story_id(&s.id),
            source: s.source,
            source_id,
            title: s.title,
            link: s.link,
            texts: s.texts,
            authors: s.authors,
            categories: s.categories,
            published: s.published,
            updated: s.updated,
            first_seen: s.first_seen,
            changed: s.changed,
            language: s.language,
            enclosures: s.enclosures,
            canonical,
            fingerprint,
            merged: s.merged.map(|m| (encode_story_id(&m.with), m.rule)),
            external: s.external,
        }
    }

    fn stored(self) -> Result<StoredEntry, String> {
        let source_id = match self.source_id {
            Some(id) => id,
            None => self.link.clone().ok_or("no guid and no link")?,
        };
        let canonical = match self.canonical {
            Some(StoredCanonical::Text(text)) => Some(text),
            Some(StoredCanonical::InLink(at)) => Some(
                self.link
                    .as_deref()
                    .and_then(|l| l.get(usize::from(at)..))
                    .ok_or("canonical link outside the link")?
                    .to_string(),
            ),
            None => None,
        };
        let fingerprint = match self.fingerprint {
            Some((minhash, numbers)) => {
                if minhash.len() % 2 != 0 {
                    return Err("minhash of odd length".into());
                }
                let minhash = minhash
                    .chunks_exact(2)
                    .flat_map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])).to_le_bytes())
                    .collect();
                Some(StoredFingerprint { minhash, numbers })
            }
            None => None,
        };
        let merged = match self.merged {
            Some((with, rule)) => Some(StoredMerged {
                with: decode_story_id(&with)?,
                rule,
            }),
            None => None,
        };
        Ok(StoredEntry {
            story_seq: self.story_seq,
            id: decode_story_id(&self.id)?,
            source: self.source,
            source_id,
            title: self.title,
            link: self.link,
            texts: self.texts,
            authors: self.authors,
            categories: self.categories,
            published: self.published,
            updated: self.updated,
            first_seen: self.first_seen,
            changed: self.changed,
            language: self.language,
            enclosures: self.enclosures,
            canonical,
            fingerprint,
            merged,
            external: self.external,
        })
    }
}

/// Writes an entry record (version 4).
pub(super) fn encode_entry(stored: StoredEntry) -> Result<Vec<u8>, String> {
    postcard::to_extend(&EntryV4::of(stored), vec![ENTRY_V4]).map_err(|e| e.to_string())
}

/// Reads an entry record of this version or of an earlier one that
/// schema 5 may hold (versions 2 and 3 are read as they are, and take the
/// version 4 form when next written).
pub(super) fn decode_entry(bytes: &[u8]) -> Result<StoredEntry, String> {
    match bytes.split_first() {
        Some((&ENTRY_V4, data)) => postcard::from_bytes::<EntryV4>(data)
            .map_err(|e| e.to_string())?
            .stored(),
        Some((&ENTRY_V3, data)) => {
            let (mut stored, rest) =
                postcard::take_from_bytes::<StoredEntry>(data).map_err(|e| e.to_string())?;
            stored.external = postcard::from_bytes(rest).map_err(|e| e.to_string())?;
            Ok(stored)
        }
        Some((&ENTRY_V2, data)) => postcard::from_bytes(data).map_err(|e| e.to_string()),
        Some((&ENTRY_V1, _)) => Err("entry in the version 1 form (not migrated)".into()),
        Some((kind, _)) => Err(format!("unknown entry form {kind}")),
        None => Err("empty value".into()),
    }
}

/// What `ids` says of an entry id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    /// Stored under this seq.
    Stored(u64),
    /// Pruned at this time (milliseconds since the epoch); it was stored
    /// under this seq, which its story's copies may still use.
    Pruned { seq: u64, at_millis: i64 },
}

/// Format byte of a stored slot.
const SLOT_STORED: u8 = 1;
/// Format byte of a pruned slot.
const SLOT_PRUNED: u8 = 2;

impl Slot {
    pub(super) fn seq(self) -> u64 {
        match self {
            Slot::Stored(seq) | Slot::Pruned { seq, .. } => seq,
        }
    }

    pub(super) fn encode(self) -> Vec<u8> {
        match self {
            Slot::Stored(seq) => [&[SLOT_STORED][..], &seq.to_be_bytes()].concat(),
            Slot::Pruned { seq, at_millis } => [
                &[SLOT_PRUNED][..],
                &seq.to_be_bytes(),
                &at_millis.to_be_bytes(),
            ]
            .concat(),
        }
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Self, String> {
        match bytes.split_first() {
            Some((&SLOT_STORED, rest)) => Ok(Slot::Stored(number_at(rest, 0).ok_or("short slot")?)),
            Some((&SLOT_PRUNED, rest)) => Ok(Slot::Pruned {
                seq: number_at(rest, 0).ok_or("short slot")?,
                at_millis: number_at(rest, 8).ok_or("short slot")? as i64,
            }),
            Some((kind, _)) => Err(format!("unknown slot kind {kind}")),
            None => Err("empty slot".into()),
        }
    }
}

/// Story id forms: a feedmerge id's 16 hash bytes, or the id's text.
/// Alone, they are the `stories` values of schema versions 2 to 4; after
/// a story's copies, part of [`StoredStory`]'s form.
const STORY_HASH: u8 = 1;
const STORY_TEXT: u8 = 2;
/// A story without a recorded id (its first copy's id stands in).
const STORY_NO_ID: u8 = 0;
/// Format byte of a story with its copies (schema version 5).
const STORY_V3: u8 = 3;
/// Most copies a stored story may list (a bound on a corrupt value).
const MAX_MEMBERS: usize = 1 << 20;

/// A story as stored (`stories` values, schema version 5): its copies'
/// seqs, ascending, and the story's id (its first copy's, kept after that
/// copy is pruned). Form: format byte 3, the number of copies (u32), each
/// copy's seq (u64), then the id in a story id form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct StoredStory {
    pub id: Option<String>,
    pub members: Vec<u64>,
}

impl StoredStory {
    /// Adds copy `seq` (kept in order; once).
    pub(super) fn add(&mut self, seq: u64) {
        if let Err(at) = self.members.binary_search(&seq) {
            self.members.insert(at, seq);
        }
    }

    /// Removes copy `seq`.
    pub(super) fn remove(&mut self, seq: u64) {
        if let Ok(at) = self.members.binary_search(&seq) {
            self.members.remove(at);
        }
    }
}

pub(super) fn encode_story(story: &StoredStory) -> Vec<u8> {
    let count = u32::try_from(story.members.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(5 + 8 * story.members.len() + 17);
    out.push(STORY_V3);
    out.extend_from_slice(&count.to_be_bytes());
    for seq in story.members.iter().take(count as usize) {
        out.extend_from_slice(&seq.to_be_bytes());
    }
    match &story.id {
        Some(id) => out.extend_from_slice(&encode_story_id(id)),
        None => out.push(STORY_NO_ID),
    }
    out
}

pub(super) fn decode_story(bytes: &[u8]) -> Result<StoredStory, String> {
    let Some((&STORY_V3, rest)) = bytes.split_first() else {
        return Err(match bytes.first() {
            Some(&(STORY_HASH | STORY_TEXT)) => "story in the schema 4 form (not migrated)".into(),
            Some(kind) => format!("unknown story form {kind}"),
            None => "empty value".into(),
        });
    };
    let count = u32_at(rest, 0).ok_or("short story")? as usize;
    if count > MAX_MEMBERS {
        return Err(format!("story lists {count} copies"));
    }
    let seqs = rest.get(4..4 + 8 * count).ok_or("short story")?;
    let members: Vec<u64> = seqs
        .chunks_exact(8)
        .filter_map(|c| number_at(c, 0))
        .collect();
    if members.windows(2).any(|w| w[0] >= w[1]) {
        return Err("story copies out of order".into());
    }
    let id = match rest.get(4 + 8 * count..) {
        Some([STORY_NO_ID]) => None,
        Some(id) => Some(decode_story_id(id)?),
        None => return Err("short story".into()),
    };
    Ok(StoredStory { id, members })
}

pub(super) fn encode_story_id(id: &str) -> Vec<u8> {
    let compact = compact_id(id);
    let kind = if compact.len() == 16 && compact != id.as_bytes() {
        STORY_HASH
    } else {
        STORY_TEXT
    };
    [&[kind][..], &compact].concat()
}

/// A story id form (alone: a `stories` value of schema versions 2 to 4).
pub(super) fn decode_story_id(bytes: &[u8]) -> Result<String, String> {
    match bytes.split_first() {
        Some((&STORY_HASH, hash)) if hash.len() == 16 => Ok(crate::dedup::entry_id_of_hash(hash)),
        Some((&STORY_TEXT, text)) => String::from_utf8(text.to_vec()).map_err(|e| e.to_string()),
        _ => Err("bad story id".into()),
    }
}

/// A source's state as stored (JSON; every field defaults, so values
/// written before a field existed still read).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(super) struct StoredSource {
    last_attempt: Option<DateTime<Utc>>,
    last_success: Option<DateTime<Utc>>,
    http_status: Option<u16>,
    last_error: Option<String>,
    consecutive_failures: u32,
    entries_seen: usize,
    title: Option<String>,
    home_page: Option<String>,
    encoding: Option<String>,
    config_url: String,
    moved_to: Option<String>,
    disabled: Option<String>,
    etag: Option<String>,
    last_modified: Option<String>,
    next_due: Option<DateTime<Utc>>,
    ttl_secs: Option<u64>,
    /// Added in 0.1 after schema 2 shipped: values written before it read
    /// as empty, and older builds ignore it (JSON fields by name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    notes: Vec<String>,
}

impl StoredSource {
    fn of(s: &SourceState) -> Self {
        Self {
            last_attempt: s.last_attempt,
            last_success: s.last_success,
            http_status: s.http_status,
            last_error: s.last_error.clone(),
            consecutive_failures: s.consecutive_failures,
            entries_seen: s.entries_seen,
            title: s.title.clone(),
            home_page: s.home_page.clone(),
            encoding: s.encoding.clone(),
            config_url: s.config_url.clone(),
            moved_to: s.moved_to.clone(),
            disabled: s.disabled.clone(),
            etag: s.etag.clone(),
            last_modified: s.last_modified.clone(),
            next_due: s.next_due,
            ttl_secs: s.ttl_secs,
            notes: s.notes.clone(),
        }
    }

    fn state(self) -> SourceState {
        SourceState {
            last_attempt: self.last_attempt,
            last_success: self.last_success,
            http_status: self.http_status,
            last_error: self.last_error,
            consecutive_failures: self.consecutive_failures,
            entries_seen: self.entries_seen,
            title: self.title,
            home_page: self.home_page,
            encoding: self.encoding,
            config_url: self.config_url,
            moved_to: self.moved_to,
            disabled: self.disabled,
            etag: self.etag,
            last_modified: self.last_modified,
            next_due: self.next_due,
            ttl_secs: self.ttl_secs,
            notes: self.notes,
        }
    }
}

/// Writes a source state.
pub(super) fn encode_source(state: &SourceState) -> Result<Vec<u8>, String> {
    let mut out = vec![JSON_V1];
    serde_json::to_writer(&mut out, &StoredSource::of(state)).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Reads a source state (the same form in versions 1 and 2).
pub(super) fn decode_source(bytes: &[u8]) -> Result<SourceState, String> {
    match bytes.split_first() {
        Some((&JSON_V1, json)) => serde_json::from_slice::<StoredSource>(json)
            .map(StoredSource::state)
            .map_err(|e| e.to_string()),
        Some((kind, _)) => Err(format!("unknown source state form {kind}")),
        None => Err("empty value".into()),
    }
}

/// The version 1 record, kept only for the migration: the domain types as
/// they were when version 1 was written (postcard reads fields by order, so
/// these must never change).
pub(super) mod legacy {
    use chrono::{DateTime, Utc};
    use serde::Deserialize;

    use super::{pack_texts, StoredTime, ENTRY_V1};
    use super::{StoredEnclosure, StoredEntry, StoredFingerprint, StoredMerged, StoredRule};

    #[derive(Debug, Deserialize)]
    struct RecordV1 {
        story_seq: u64,
        entry: EntryV1,
    }

    #[derive(Debug, Deserialize)]
    struct EntryV1 {
        id: String,
        source: String,
        source_id: String,
        title: String,
        link: Option<String>,
        summary: Option<String>,
        content: Option<String>,
        authors: Vec<String>,
        categories: Vec<String>,
        published: Option<DateTime<Utc>>,
        updated: Option<DateTime<Utc>>,
        first_seen: DateTime<Utc>,
        changed: DateTime<Utc>,
        language: Option<String>,
        enclosures: Vec<EnclosureV1>,
        canonical: Option<String>,
        fingerprint: Option<FingerprintV1>,
        story: String,
        merged: Option<MergedV1>,
    }

    #[derive(Debug, Deserialize)]
    struct EnclosureV1 {
        url: String,
        mime_type: Option<String>,
        length: Option<u64>,
    }

    #[derive(Debug, Deserialize)]
    struct FingerprintV1 {
        minhash: Vec<u32>,
        numbers: Vec<u32>,
    }

    #[derive(Debug, Deserialize)]
    struct MergedV1 {
        with: String,
        rule: RuleV1,
    }

    #[derive(Debug, Deserialize)]
    enum RuleV1 {
        CanonicalUrl,
        NearDuplicate { similarity: u8 },
    }

    /// A version 1 record as a version 2 entry, and its story's id.
    pub(in crate::store) fn upgrade(bytes: &[u8]) -> Result<(StoredEntry, String), String> {
        let data = match bytes.split_first() {
            Some((&ENTRY_V1, data)) => data,
            _ => return Err("not a version 1 record".into()),
        };
        let RecordV1 {
            story_seq,
            entry: e,
        } = postcard::from_bytes(data).map_err(|e| e.to_string())?;
        let stored = StoredEntry {
            story_seq,
            id: e.id,
            source: e.source,
            source_id: e.source_id,
            title: e.title,
            link: e.link,
            texts: pack_texts(e.summary.as_deref(), e.content.as_deref())?,
            authors: e.authors,
            categories: e.categories,
            published: e.published.map(StoredTime::of),
            updated: e.updated.map(StoredTime::of),
            first_seen: StoredTime::of(e.first_seen),
            changed: StoredTime::of(e.changed),
            language: e.language,
            enclosures: e
                .enclosures
                .into_iter()
                .map(|x| StoredEnclosure {
                    url: x.url,
                    mime_type: x.mime_type,
                    length: x.length,
                })
                .collect(),
            canonical: e.canonical,
            fingerprint: e.fingerprint.map(|f| {
                StoredFingerprint::of(&crate::model::Fingerprint {
                    minhash: f
                        .minhash
                        .into_iter()
                        .map(|h| (h & crate::dedup::FINGERPRINT_MASK) as u16)
                        .collect(),
                    numbers: f.numbers,
                })
            }),
            merged: e.merged.map(|m| StoredMerged {
                with: m.with,
                rule: match m.rule {
                    RuleV1::CanonicalUrl => StoredRule::CanonicalUrl,
                    RuleV1::NearDuplicate { similarity } => {
                        StoredRule::NearDuplicate { similarity }
                    }
                },
            }),
            external: None,
        };
        Ok((stored, e.story))
    }
}

/// Format byte of a bucket (the `ids` and `by_canon` values of schema 6):
/// its members in key order, each its key's length (LEB128), the key, its
/// value's length (LEB128) and the value.
const BUCKET_V1: u8 = 1;
/// Most bytes a bucket member's key or value may take (a bound on a
/// corrupt length).
const MAX_MEMBER: u64 = 1 << 20;

/// A bucket member: a key and its value.
pub(super) type Member<'a> = (&'a [u8], &'a [u8]);

/// A bucket's bytes for `members`, which are in key order without repeats.
pub(super) fn encode_bucket<'a>(
    members: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Vec<u8> {
    let mut out = vec![BUCKET_V1];
    for (key, value) in members {
        for part in [key, value] {
            push_leb128(&mut out, part.len() as u64);
            out.extend_from_slice(part);
        }
    }
    out
}

/// A bucket's members, in key order, borrowed from its bytes.
pub(super) fn decode_bucket(bytes: &[u8]) -> Result<Vec<Member<'_>>, String> {
    let Some((&BUCKET_V1, mut rest)) = bytes.split_first() else {
        return Err(match bytes.first() {
            Some(kind) => format!("unknown bucket form {kind}"),
            None => "empty bucket".into(),
        });
    };
    let mut members = Vec::new();
    while !rest.is_empty() {
        let (key, after) = take_part(rest)?;
        let (value, after) = take_part(after)?;
        members.push((key, value));
        rest = after;
    }
    Ok(members)
}

fn push_leb128(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// One length-prefixed part of a bucket, and what follows it.
fn take_part(bytes: &[u8]) -> Result<(&[u8], &[u8]), String> {
    let mut len: u64 = 0;
    let mut at = 0;
    loop {
        let byte = *bytes.get(at).ok_or("bucket ends inside a length")?;
        len |= u64::from(byte & 0x7f) << (7 * at);
        at += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if at >= 4 {
            return Err("bucket length too long".into());
        }
    }
    if len > MAX_MEMBER {
        return Err(format!("bucket member of {len} bytes"));
    }
    let end = at + len as usize;
    let part = bytes.get(at..end).ok_or("bucket ends inside a member")?;
    Ok((part, &bytes[end..]))
}

/// A frozen archive document as stored (`archives` values, schema 4).
pub(super) fn encode_archive(doc: &str) -> Result<Vec<u8>, String> {
    let packed = compress(doc.as_bytes())?;
    let mut out = Vec::with_capacity(packed.len() + 9);
    out.push(ARCHIVE_V1);
    out.extend_from_slice(&(doc.len() as u64).to_be_bytes());
    out.extend_from_slice(&packed);
    Ok(out)
}

/// A frozen archive document back.
pub(super) fn decode_archive(bytes: &[u8]) -> Result<String, String> {
    match bytes.split_first() {
        Some((&ARCHIVE_V1, rest)) => {
            let len = number_at(rest, 0).ok_or("archive: no length")?;
            let len = usize::try_from(len).map_err(|e| e.to_string())?;
            if len > MAX_ARCHIVE_BYTES {
                return Err(format!("archive: {len} bytes is past any archive written"));
            }
            let plain = decompress(rest.get(8..).unwrap_or_default(), len)?;
            String::from_utf8(plain).map_err(|e| e.to_string())
        }
        Some((other, _)) => Err(format!("archive: unknown format byte {other}")),
        None => Err("archive: empty value".into()),
    }
}

/// Largest archive document decoded (a bound against a damaged length).
const MAX_ARCHIVE_BYTES: usize = 1 << 30;

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn sample() -> Entry {
        Entry {
            id: crate::dedup::entry_id("centcom-ar", "guid-1"),
            source: "centcom-ar".into(),
            source_id: "guid-1".into(),
            title: "اجتماع في الدوحة".into(),
            link: Some("https://x.example/ssc/1".into()),
            summary: Some("<p>short</p>".into()),
            content: Some(format!(
                "<div dir=\"rtl\"><p>{}</p></div>",
                "نص الخبر ".repeat(40)
            )),
            authors: vec!["A. Writer".into()],
            categories: vec!["security".into()],
            published: Some(at("2025-03-27T10:00:00Z")),
            updated: None,
            first_seen: at("2025-03-27T10:05:00.123456789Z"),
            changed: at("2025-03-27T10:05:00.123456789Z"),
            language: Some("ar".into()),
            enclosures: vec![Enclosure {
                url: "https://x.example/ssc/images/1.webp".into(),
                mime_type: Some("image/webp".into()),
                length: Some(1234),
            }],
            canonical: Some("x.example/ssc/1".into()),
            fingerprint: Some(Fingerprint {
                minhash: (0..64).map(|i| i * 0x0101).collect(),
                numbers: vec![7, 9],
            }),
            merged: Some(Merged {
                with: crate::dedup::entry_id("other", "9"),
                rule: MergeRule::NearDuplicate { similarity: 61 },
            }),
            external: Some("https://elsewhere.example/linked".into()),
        }
    }

    #[test]
    fn an_entry_round_trips() {
        let e = sample();
        let stored = StoredEntry::of(&e, 42).unwrap();
        let bytes = encode_entry(stored).unwrap();
        let back = decode_entry(&bytes).unwrap();
        assert_eq!(back.story_seq, 42);
        // The long content was compressed.
        assert_eq!(back.texts[0], TEXT_ZSTD);
        assert_eq!(back.entry().unwrap(), e);
        let mut short = e.clone();
        short.content = None;
        let stored = StoredEntry::of(&short, 1).unwrap();
        assert_eq!(stored.texts[0], TEXT_PLAIN);
        assert_eq!(stored.entry().unwrap(), short);
    }

    #[test]
    fn texts_packed_ahead_are_used_only_for_the_same_texts() {
        let e = sample();
        let ahead = PackedTexts::of(&e).unwrap();
        let direct = StoredEntry::of(&e, 7).unwrap();
        assert_eq!(StoredEntry::of_packed(&e, 7, Some(&ahead)).unwrap(), direct);
        // An entry whose content changed after packing packs its own.
        let mut changed = e.clone();
        changed.content = Some("<p>another text</p>".into());
        let stored = StoredEntry::of_packed(&changed, 7, Some(&ahead)).unwrap();
        assert_eq!(stored.entry().unwrap(), changed);
    }

    /// The stored forms, byte for byte. When this fails, the stored form
    /// changed: give it a new format byte, raise `SCHEMA_VERSION` and add a
    /// migration, then pin the new bytes here.
    #[test]
    fn stored_forms_are_pinned() {
        let mut e = sample();
        // Compressed bytes depend on the zstd build; pin the plain form.
        e.content = None;
        let bytes = encode_entry(StoredEntry::of(&e, 42).unwrap()).unwrap();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, GOLDEN_ENTRY, "entry form changed");
        assert_eq!(decode_entry(&bytes).unwrap().entry().unwrap(), e);
        let unhex = |hex: &str| -> Vec<u8> {
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect()
        };
        // The version 3 form (32-bit MinHash values) still reads: the same
        // entry, its MinHash values cut to their low 16 bits.
        let v3 = unhex(GOLDEN_ENTRY_V3);
        assert_eq!(v3[0], ENTRY_V3);
        let old = decode_entry(&v3).unwrap();
        assert_eq!(old.story_seq, 42);
        assert_eq!(old.entry().unwrap(), e);
        // The version 2 form, written before `external` existed, still
        // reads: the same entry, without it.
        let v2 = unhex(GOLDEN_ENTRY_V2);
        assert_eq!(v2[0], ENTRY_V2);
        let old = decode_entry(&v2).unwrap();
        assert_eq!(old.story_seq, 42);
        let mut without = e.clone();
        without.external = None;
        assert_eq!(old.entry().unwrap(), without);
        // A version 3 record is the version 2 one, then `external`.
        assert_eq!(&v3[1..v2.len()], &v2[1..]);
        // The version 4 form is smaller: the ids, the canonical link and the
        // MinHash.
        assert!(
            bytes.len() + 150 < v3.len(),
            "{} vs {}",
            bytes.len(),
            v3.len()
        );
        // A guid that is the link is kept once, and read back.
        let mut permalink = e.clone();
        permalink.source_id = permalink.link.clone().unwrap();
        let once = encode_entry(StoredEntry::of(&permalink, 1).unwrap()).unwrap();
        assert!(once.len() < bytes.len());
        assert_eq!(decode_entry(&once).unwrap().entry().unwrap(), permalink);
        // A canonical link that is not inside the link is kept whole.
        let mut elsewhere = e.clone();
        elsewhere.canonical = Some("x.example/other".into());
        let whole = encode_entry(StoredEntry::of(&elsewhere, 1).unwrap()).unwrap();
        assert_eq!(decode_entry(&whole).unwrap().entry().unwrap(), elsewhere);
        let state = SourceState {
            etag: Some("\"v1\"".into()),
            last_modified: Some("Thu, 27 Mar 2025 10:00:00 GMT".into()),
            consecutive_failures: 2,
            ..SourceState::default()
        };
        let json = encode_source(&state).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&json[1..]),
            GOLDEN_SOURCE,
            "source form changed"
        );
        assert_eq!(json[0], JSON_V1);
        assert_eq!(Slot::Stored(5).encode(), [1, 0, 0, 0, 0, 0, 0, 0, 5]);
        assert_eq!(
            Slot::Pruned {
                seq: 5,
                at_millis: 1
            }
            .encode(),
            [2, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 1]
        );
        let story = encode_story_id(&e.id);
        assert_eq!(story.len(), 17);
        assert_eq!(decode_story_id(&story).unwrap(), e.id);
        assert_eq!(decode_story_id(&encode_story_id("plain")).unwrap(), "plain");
        // A story: form 3, two copies, then the id in the form above.
        let mut stored = StoredStory {
            id: Some(e.id.clone()),
            members: Vec::new(),
        };
        stored.add(9);
        stored.add(7);
        stored.add(9);
        let bytes = encode_story(&stored);
        assert_eq!(
            &bytes[..21],
            &[3, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 9]
        );
        assert_eq!(&bytes[21..], &story[..]);
        assert_eq!(decode_story(&bytes).unwrap(), stored);
        let nameless = StoredStory {
            id: None,
            members: vec![1],
        };
        assert_eq!(
            encode_story(&nameless),
            [3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0]
        );
        assert_eq!(decode_story(&encode_story(&nameless)).unwrap(), nameless);
        // The schema 4 form (the id alone) is the migration's to read.
        assert!(decode_story(&story).is_err());
        assert_eq!(SCHEMA_VERSION, 6);
        // A bucket: format byte 1, then each member's key and value, each
        // after its LEB128 length, in key order.
        let long = [7u8; 130];
        let bucket = encode_bucket([(&b"ab"[..], &[1u8][..]), (&b"c"[..], &long[..])]);
        assert_eq!(&bucket[..9], &[1, 2, b'a', b'b', 1, 1, 1, b'c', 0x82]);
        assert_eq!(bucket[9], 0x01);
        assert_eq!(bucket.len(), 10 + 130);
        assert_eq!(
            decode_bucket(&bucket).unwrap(),
            vec![(&b"ab"[..], &[1u8][..]), (&b"c"[..], &long[..])]
        );
        assert_eq!(decode_bucket(&[1]).unwrap(), vec![]);
        assert!(decode_bucket(&[1, 5, b'a']).is_err());
        assert!(decode_bucket(&[2]).is_err());
        assert!(decode_bucket(&[]).is_err());
        assert!(decode_bucket(&[1, 0xff, 0xff, 0xff, 0xff, 0x7f]).is_err());
        // A frozen archive: format byte 1, the length, then zstd (whose
        // bytes depend on the zstd build, so only the frame is pinned).
        let archive = encode_archive("<feed>أرشيف</feed>").unwrap();
        assert_eq!(&archive[..9], &[1, 0, 0, 0, 0, 0, 0, 0, 23]);
        assert_eq!(&archive[9..13], &[0x28, 0xb5, 0x2f, 0xfd]);
        assert_eq!(decode_archive(&archive).unwrap(), "<feed>أرشيف</feed>");
        assert!(decode_archive(&[9, 0]).is_err());
        assert!(decode_archive(&[]).is_err());
    }

    /// The entry form of schema version 5 (format byte 5).
    const GOLDEN_ENTRY: &str = concat!(
        "052a110160afa9fd085f7b8c72e903b36e9381490a63656e74636f6d2d61720106677569642d311e",
        "d8a7d8acd8aad985d8a7d8b920d981d98a20d8a7d984d8afd988d8add8a9011768747470733a2f2f",
        "782e6578616d706c652f7373632f311000010c3c703e73686f72743c2f703e000109412e20577269",
        "7465720108736563757269747901c086a9fe0c0000988ba9fe0c959aef3a988ba9fe0c959aef3a01",
        "026172012368747470733a2f2f782e6578616d706c652f7373632f696d616765732f312e77656270",
        "010a696d6167652f7765627001d20901000801800100000101020203030404050506060707080809",
        "090a0a0b0b0c0c0d0d0e0e0f0f10101111121213131414151516161717181819191a1a1b1b1c1c1d",
        "1d1e1e1f1f20202121222223232424252526262727282829292a2a2b2b2c2c2d2d2e2e2f2f303031",
        "31323233333434353536363737383839393a3a3b3b3c3c3d3d3e3e3f3f0207090111018024c0d6b8",
        "fa727ba60539dd6031b097013d012068747470733a2f2f656c736577686572652e6578616d706c65",
        "2f6c696e6b6564",
    );

    /// The entry form of schema versions 3 and 4 (format byte 4).
    const GOLDEN_ENTRY_V3: &str = concat!(
        "042a3475726e3a666565646d657267653a656e7472793a3630616661396664303835663762386337",
        "3265393033623336653933383134390a63656e74636f6d2d617206677569642d311ed8a7d8acd8aa",
        "d985d8a7d8b920d981d98a20d8a7d984d8afd988d8add8a9011768747470733a2f2f782e6578616d",
        "706c652f7373632f311000010c3c703e73686f72743c2f703e000109412e20577269746572010873",
        "6563757269747901c086a9fe0c0000988ba9fe0c959aef3a988ba9fe0c959aef3a01026172012368",
        "747470733a2f2f782e6578616d706c652f7373632f696d616765732f312e77656270010a696d6167",
        "652f7765627001d209010f782e6578616d706c652f7373632f310180020000000001010101020202",
        "02030303030404040405050505060606060707070708080808090909090a0a0a0a0b0b0b0b0c0c0c",
        "0c0d0d0d0d0e0e0e0e0f0f0f0f101010101111111112121212131313131414141415151515161616",
        "161717171718181818191919191a1a1a1a1b1b1b1b1c1c1c1c1d1d1d1d1e1e1e1e1f1f1f1f202020",
        "202121212122222222232323232424242425252525262626262727272728282828292929292a2a2a",
        "2a2b2b2b2b2c2c2c2c2d2d2d2d2e2e2e2e2f2f2f2f30303030313131313232323233333333343434",
        "3435353535363636363737373738383838393939393a3a3a3a3b3b3b3b3c3c3c3c3d3d3d3d3e3e3e",
        "3e3f3f3f3f020709013475726e3a666565646d657267653a656e7472793a38303234633064366238",
        "66613732376261363035333964643630333162303937013d012068747470733a2f2f656c73657768",
        "6572652e6578616d706c652f6c696e6b6564",
    );

    /// The entry form of schema version 2 (format byte 3).
    const GOLDEN_ENTRY_V2: &str = concat!(
        "032a3475726e3a666565646d657267653a656e7472793a3630616661396664303835663762386337",
        "3265393033623336653933383134390a63656e74636f6d2d617206677569642d311ed8a7d8acd8aa",
        "d985d8a7d8b920d981d98a20d8a7d984d8afd988d8add8a9011768747470733a2f2f782e6578616d",
        "706c652f7373632f311000010c3c703e73686f72743c2f703e000109412e20577269746572010873",
        "6563757269747901c086a9fe0c0000988ba9fe0c959aef3a988ba9fe0c959aef3a01026172012368",
        "747470733a2f2f782e6578616d706c652f7373632f696d616765732f312e77656270010a696d6167",
        "652f7765627001d209010f782e6578616d706c652f7373632f310180020000000001010101020202",
        "02030303030404040405050505060606060707070708080808090909090a0a0a0a0b0b0b0b0c0c0c",
        "0c0d0d0d0d0e0e0e0e0f0f0f0f101010101111111112121212131313131414141415151515161616",
        "161717171718181818191919191a1a1a1a1b1b1b1b1c1c1c1c1d1d1d1d1e1e1e1e1f1f1f1f202020",
        "202121212122222222232323232424242425252525262626262727272728282828292929292a2a2a",
        "2a2b2b2b2b2c2c2c2c2d2d2d2d2e2e2e2e2f2f2f2f30303030313131313232323233333333343434",
        "3435353535363636363737373738383838393939393a3a3a3a3b3b3b3b3c3c3c3c3d3d3d3d3e3e3e",
        "3e3f3f3f3f020709013475726e3a666565646d657267653a656e7472793a38303234633064366238",
        "66613732376261363035333964643630333162303937013d",
    );
    const GOLDEN_SOURCE: &str = concat!(
        r#"{"last_attempt":null,"last_success":null,"http_status":null,"last_error":null,"#,
        r#""consecutive_failures":2,"entries_seen":0,"title":null,"home_page":null,"#,
        r#""encoding":null,"config_url":"","moved_to":null,"disabled":null,"etag":"\"v1\"","#,
        r#""last_modified":"Thu, 27 Mar 2025 10:00:00 GMT","next_due":null,"ttl_secs":null}"#,
    );

    #[test]
    fn bad_values_are_errors_not_panics() {
        for bytes in [
            &b""[..],
            b"\x03",
            b"\x03\xff\xff\xff",
            b"\x09abc",
            b"\x02\x00",
        ] {
            assert!(decode_entry(bytes).is_err(), "{bytes:?}");
        }
        assert!(unpack_texts(&[TEXT_ZSTD, 0xff, 0xff, 0xff, 0xff, 1, 2]).is_err());
        assert!(decode_source(b"\x01{not json").is_err());
        assert!(Slot::decode(b"\x01\x00").is_err());
        for bytes in [
            &b""[..],
            b"\x03",
            b"\x03\x00\x00\x00\x02\x00",
            b"\x03\xff\xff\xff\xff",
            b"\x03\x00\x00\x00\x00",
            b"\x03\x00\x00\x00\x00\x07",
            b"\x03\x00\x00\x00\x02\0\0\0\0\0\0\0\x02\0\0\0\0\0\0\0\x01\x00",
        ] {
            assert!(decode_story(bytes).is_err(), "{bytes:?}");
        }
        assert!(legacy::upgrade(b"\x02\x00").is_err());
    }
}
