//! Identity: which stored entry an incoming one is, whether it changed, and
//! which story it belongs to.
//!
//! Pure functions only; the store applies them with its indexes. Three
//! layers:
//! 1. same source, same entry: the publisher's id (scheme, host and
//!    fragment variants of URL-like ids folded together over time, but two
//!    items of one document are never one entry: [`document_ids`],
//!    [`stored_under`]), or the same canonical link when a publisher
//!    changes ids (unless the stored copy is listed beside it);
//! 2. same canonical URL across sources ([`canonical_url`]);
//! 3. near-duplicate text across sources ([`fingerprint`], MinHash over word
//!    pairs after script-aware normalization, [`similarity`]).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;
use url::Url;

use crate::model::{Entry, Fingerprint, FingerprintView, MergeRule, Merged};

/// Query parameters that only track readers, dropped from canonical URLs.
/// A trailing `*` matches any suffix.
pub const DEFAULT_TRACKING_PARAMS: &[&str] = &[
    "utm_*",
    "fbclid",
    "gclid",
    "dclid",
    "gclsrc",
    "msclkid",
    "yclid",
    "mc_cid",
    "mc_eid",
    "ref",
    "ref_src",
    "ref_url",
    "cmpid",
    "cmp",
    "igshid",
    "_hsenc",
    "_hsmi",
    "mkt_tok",
    "ocid",
    "ncid",
    "sr_share",
    "s_kwcid",
    "at_medium",
    "at_campaign",
    "wt.mc_id",
    "xtor",
    "__twitter_impression",
    "rss",
    "from",
    "cid",
];

/// A URL reduced to what identifies the page: any scheme of http(s) the
/// same, host lowercased, default port, fragment and tracking parameters
/// dropped, the remaining query sorted, no trailing slash. `None` for
/// anything that is not an http(s) URL.
pub fn canonical_url(url: &str, tracking: &[String]) -> Option<String> {
    let parsed = Url::parse(url.trim()).ok()?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return None;
    }
    let host = parsed.host_str()?.to_ascii_lowercase();
    let port = match parsed.port() {
        Some(443) | Some(80) | None => String::new(),
        Some(p) => format!(":{p}"),
    };
    let path = parsed.path().trim_end_matches('/');
    let mut pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(k, _)| !is_tracking(k, tracking))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    pairs.sort();
    let query = if pairs.is_empty() {
        String::new()
    } else {
        let mut q = url::form_urlencoded::Serializer::for_suffix(String::from("?"), 1);
        q.extend_pairs(&pairs);
        q.finish()
    };
    Some(format!("{host}{port}{path}{query}"))
}

/// `url` as published: its tracking parameters (`tracking`, as for
/// [`canonical_url`]) removed, and everything else (scheme, host, path,
/// the other parameters in their order and spelling, fragment) exactly as
/// the publisher wrote it. A URL that does not parse, is not http(s) or has
/// no tracking parameter comes back unchanged.
pub fn without_tracking(url: &str, tracking: &[String]) -> String {
    let Ok(mut parsed) = Url::parse(url) else {
        return url.to_string();
    };
    if !matches!(parsed.scheme(), "http" | "https") {
        return url.to_string();
    }
    let Some(query) = parsed.query() else {
        return url.to_string();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let name = pair.split('=').next().unwrap_or_default();
            let name: String = url::form_urlencoded::parse(name.as_bytes())
                .next()
                .map(|(k, _)| k.into_owned())
                .unwrap_or_default();
            pair.is_empty() || !is_tracking(&name, tracking)
        })
        .collect();
    if kept.len() == query.split('&').count() {
        return url.to_string();
    }
    let kept: Vec<&str> = kept.into_iter().filter(|p| !p.is_empty()).collect();
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.set_query(Some(&kept.join("&")));
    }
    parsed.into()
}

fn is_tracking(name: &str, tracking: &[String]) -> bool {
    let name = name.to_ascii_lowercase();
    tracking.iter().any(|t| match t.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == *t,
    })
}

/// The default tracking parameters as owned strings.
pub fn default_tracking() -> Vec<String> {
    DEFAULT_TRACKING_PARAMS
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// The part of a publisher's id that identifies the entry: URL-like ids
/// (with or without a scheme) compare by canonical URL, so `http://`,
/// `https://`, `#0` suffixes and tracking parameters do not make new
/// entries.
pub fn identity_key(source_id: &str) -> String {
    let id = source_id.trim();
    let looks_like_host = id
        .split('/')
        .next()
        .is_some_and(|h| h.contains('.') && !h.contains(' ') && !h.contains(':'))
        && id.contains('/');
    let as_url = if id.starts_with("http://") || id.starts_with("https://") {
        Some(id.to_string())
    } else if let Some(rest) = id.strip_prefix("//") {
        Some(format!("https://{rest}"))
    } else if looks_like_host {
        Some(format!("https://{id}"))
    } else {
        None
    };
    static TRACKING: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(default_tracking);
    as_url
        .and_then(|u| canonical_url(&u, &TRACKING))
        .unwrap_or_else(|| id.to_string())
}

/// [`identity_key`] with the id's fragment kept: what tells apart two items
/// of one document whose guids differ only after the `#` (Scripting News
/// writes `.../2002/09/29#When:12:59:01PM` and `...#When:6:52:02PM`).
pub fn exact_key(source_id: &str) -> String {
    exact_key_of(source_id, identity_key(source_id))
}

/// [`exact_key`], given the id's [`identity_key`].
fn exact_key_of(source_id: &str, key: String) -> String {
    let id = source_id.trim();
    match id.split_once('#') {
        Some((_, fragment)) if !fragment.is_empty() && key != id => format!("{key}#{fragment}"),
        _ => key,
    }
}

/// The id of each item of one document (`source_ids`, in order), from
/// source `source`. Guids that differ only in their fragment are one entry
/// over time (one replacing the other between fetches), but two items
/// listed side by side are never one entry: an item whose fragment-free
/// key another item of the document shares, under a different guid, gets
/// the id of its exact key; every other item the id of its fragment-free
/// key ([`entry_id`]).
pub fn document_ids(source: &str, source_ids: &[&str]) -> Vec<String> {
    let document = DocumentGuids::new(source_ids);
    source_ids
        .iter()
        .map(|id| {
            let key = identity_key(id);
            if document.shared(&key) {
                id_of_key(source, &exact_key_of(id, key))
            } else {
                id_of_key(source, &key)
            }
        })
        .collect()
}

/// The publisher ids of one document, by fragment-free key: each key's
/// distinct exact keys. Built once per document, so looking every entry up
/// costs one key per entry, not one per pair.
#[derive(Debug, Default)]
pub struct DocumentGuids {
    exact_by_key: HashMap<String, Vec<String>>,
}

impl DocumentGuids {
    /// The keys of `source_ids` (one document's guids).
    pub fn new(source_ids: &[&str]) -> Self {
        let mut exact_by_key: HashMap<String, Vec<String>> = HashMap::new();
        for id in source_ids {
            let key = identity_key(id);
            let exact = exact_key_of(id, key.clone());
            let variants = exact_by_key.entry(key).or_default();
            if !variants.contains(&exact) {
                variants.push(exact);
            }
        }
        Self { exact_by_key }
    }

    /// Whether several distinct exact keys of the document share `key`.
    fn shared(&self, key: &str) -> bool {
        self.exact_by_key.get(key).is_some_and(|v| v.len() > 1)
    }

    /// Whether the document lists, under `key`, an exact key other than
    /// `exact`.
    fn shares_with_other(&self, key: &str, exact: &str) -> bool {
        self.exact_by_key
            .get(key)
            .is_some_and(|v| v.iter().any(|other| other != exact))
    }
}

/// Where an incoming entry may already be stored, in the order to look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUnder {
    /// The stored id to look up.
    pub id: String,
    /// Accept what is stored there only when its publisher id has the same
    /// exact key (fragment included) as the incoming one.
    pub same_guid_only: bool,
}

/// The ids to look an incoming entry up under, given the publisher ids of
/// the whole document it came in (`document`, [`DocumentGuids`];
/// [`document_ids`] gave the ids). An item alone with its fragment-free
/// key looks under its exact key first (it was stored there while a
/// sibling was listed beside it), then under the fragment-free key, which
/// it takes over whatever guid variant is stored there. An item sharing
/// its key looks under its exact key, then under the fragment-free key
/// only for a copy stored from the same guid.
pub fn stored_under(source: &str, source_id: &str, document: &DocumentGuids) -> Vec<StoredUnder> {
    let key = identity_key(source_id);
    let exact_key = exact_key_of(source_id, key.clone());
    let shared = document.shares_with_other(&key, &exact_key);
    let exact = id_of_key(source, &exact_key);
    let family = id_of_key(source, &key);
    let mut out = vec![StoredUnder {
        id: exact.clone(),
        same_guid_only: false,
    }];
    if family != exact {
        out.push(StoredUnder {
            id: family,
            same_guid_only: shared,
        });
    } else if shared {
        out[0].same_guid_only = true;
    }
    out
}

/// True when two publisher ids are the same guid, fragment included.
pub fn same_guid(a: &str, b: &str) -> bool {
    exact_key(a) == exact_key(b)
}

/// What every feedmerge entry id starts with.
pub const ENTRY_ID_PREFIX: &str = "urn:feedmerge:entry:";

/// The stable feedmerge id of the entry `source_id` of source `source`.
pub fn entry_id(source: &str, source_id: &str) -> String {
    id_of_key(source, &identity_key(source_id))
}

/// The entry id of an identity key of source `source`.
fn id_of_key(source: &str, key: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(source.as_bytes());
    hasher.update([0]);
    hasher.update(key.as_bytes());
    let digest = hasher.finalize();
    entry_id_of_hash(digest.get(..16).unwrap_or_default())
}

/// The entry id made of `hash`, the 16 bytes an id's hex digits spell
/// (the form the store keeps ids in).
pub fn entry_id_of_hash(hash: &[u8]) -> String {
    let mut id = String::with_capacity(ENTRY_ID_PREFIX.len() + 2 * hash.len());
    push_entry_id(hash, &mut id);
    id
}

/// The 16 bytes an entry id's hex digits spell, when it is spelled as
/// [`entry_id_of_hash`] spells one (lower-case digits); the inverse of that.
pub fn entry_id_hash(id: &str) -> Option<[u8; 16]> {
    let digits = id.strip_prefix(ENTRY_ID_PREFIX)?.as_bytes();
    if digits.len() != 32 {
        return None;
    }
    let value = |d: u8| match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        _ => None,
    };
    let mut hash = [0u8; 16];
    for (byte, pair) in hash.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = value(pair[0])? << 4 | value(pair[1])?;
    }
    Some(hash)
}

/// Appends to `out` the entry id made of `hash` (see [`entry_id_of_hash`]).
pub fn push_entry_id(hash: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push_str(ENTRY_ID_PREFIX);
    for b in hash {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
}

/// Hashes in a fingerprint.
pub const FINGERPRINT_HASHES: usize = 64;
/// The bits kept of each MinHash minimum: its low 16 (b-bit MinHash). Two
/// different minimums then agree by chance once in 65,536, which moves a
/// similarity by nothing a threshold sees, and a fingerprint is stored in
/// half the bytes.
pub const FINGERPRINT_MASK: u32 = 0xffff;
/// Rows per LSH band.
pub const BAND_ROWS: usize = 2;
/// LSH bands, over the first `BANDS * BAND_ROWS` hashes: pairs at the
/// threshold (0.46) meet in some band with probability 0.98, at 0.6 with
/// 0.9997; fewer bands keep the index small.
pub const BANDS: usize = 16;
/// Texts with fewer words than this get no fingerprint: a title alone is
/// too short to tell stories apart.
pub const MIN_WORDS: usize = 20;
/// Estimated Jaccard similarity (over word pairs) from which two texts are
/// the same story. Chosen on the labelled set in
/// `tests/fixtures/dedup-pairs.tsv`: same-story pairs there score 0.39 and
/// up, different stories built from one template up to 0.45.
pub const SAME_STORY: f64 = 0.46;
/// Words of the body that go into a fingerprint (leads survive trimming).
const BODY_WORDS: usize = 80;

/// A text's words for comparison: NFKC, lowercase, punctuation dropped;
/// Arabic without tashkeel and tatweel, with alef, ya, ta marbuta and hamza
/// carriers unified.
pub fn comparable_words(text: &str) -> Vec<String> {
    comparable_words_upto(text, usize::MAX)
}

/// The first `limit` of [`comparable_words`].
fn comparable_words_upto(text: &str, limit: usize) -> Vec<String> {
    let mut words = Words::default();
    words.push_text(text, limit);
    words.iter().map(str::to_string).collect()
}

/// Comparable words (see [`comparable_words`]) in one buffer: the folded
/// text, and where each word is in it.
#[derive(Default)]
struct Words {
    folded: String,
    spans: Vec<(usize, usize)>,
}

impl Words {
    /// Adds the first `limit` words of `text`, folding it a
    /// whitespace-separated token at a time and stopping there.
    fn push_text(&mut self, text: &str, limit: usize) {
        let limit = self.spans.len().saturating_add(limit);
        for token in text.split_whitespace() {
            if self.spans.len() >= limit {
                break;
            }
            let start = self.folded.len();
            if token.is_ascii() {
                // Nothing for NFKC or the Arabic foldings to do: ASCII
                // letters and digits lowercased, each other byte a space
                // between words (as `fold`).
                for (i, part) in token
                    .split(|c: char| !c.is_ascii_alphanumeric())
                    .enumerate()
                {
                    if i > 0 {
                        self.folded.push(' ');
                    }
                    let at = self.folded.len();
                    self.folded.push_str(part);
                    if let Some(pushed) = self.folded.get_mut(at..) {
                        pushed.make_ascii_lowercase();
                    }
                    if !part.is_empty() {
                        self.spans.push((at, at + part.len()));
                    }
                }
            } else {
                // A token NFKC leaves as it is (most are) skips it.
                let chars: &mut dyn Iterator<Item = char> =
                    if unicode_normalization::is_nfkc_quick(token.chars())
                        == unicode_normalization::IsNormalized::Yes
                    {
                        &mut token.chars()
                    } else {
                        &mut token.nfkc()
                    };
                for c in chars {
                    if is_uncased_letter(c) {
                        // An Arabic letter: no case, alphanumeric (`fold`'s
                        // last arms), one of the foldings or itself.
                        self.folded.push(fold_arabic(c));
                        continue;
                    }
                    for c in c.to_lowercase() {
                        if let Some(c) = fold(c) {
                            self.folded.push(c);
                        }
                    }
                }
                // Folding leaves no whitespace but the spaces `fold` made.
                let mut at = start;
                for word in self.folded[start..].split(' ') {
                    if !word.is_empty() {
                        self.spans.push((at, at + word.len()));
                    }
                    at += word.len() + 1;
                }
            }
            self.folded.push(' ');
        }
        self.spans.truncate(limit);
    }

    fn iter(&self) -> impl Iterator<Item = &str> {
        self.spans
            .iter()
            .map(|&(start, end)| self.folded.get(start..end).unwrap_or_default())
    }
}

/// Arabic letters (U+0621 to U+064A, without the tatweel): no case
/// mapping, alphanumeric, nothing `fold` drops. A test checks each.
fn is_uncased_letter(c: char) -> bool {
    matches!(c, '\u{0621}'..='\u{063F}' | '\u{0641}'..='\u{064A}')
}

/// [`fold`] of an [`is_uncased_letter`] character.
fn fold_arabic(c: char) -> char {
    match c {
        'أ' | 'إ' | 'آ' => 'ا',
        'ى' => 'ي',
        'ة' => 'ه',
        'ؤ' => 'و',
        'ئ' => 'ي',
        c => c,
    }
}

/// One character of a word for comparison (see [`comparable_words`]).
fn fold(c: char) -> Option<char> {
    match c {
        '\u{064B}'..='\u{065F}' | '\u{0670}' | '\u{0640}' => None,
        'أ' | 'إ' | 'آ' | 'ٱ' => Some('ا'),
        'ى' => Some('ي'),
        'ة' => Some('ه'),
        'ؤ' => Some('و'),
        'ئ' => Some('ي'),
        c if c.is_alphanumeric() => Some(c),
        _ => Some(' '),
    }
}

/// The fingerprint of a title and body (plain text), or `None` when the
/// text is too short to trust.
pub fn fingerprint(title: &str, body: &str) -> Option<Fingerprint> {
    let mut words = Words::default();
    words.push_text(title, usize::MAX);
    words.push_text(body, BODY_WORDS);
    if words.spans.len() < MIN_WORDS {
        return None;
    }
    let minhash = minhash(&words.iter().collect::<Vec<_>>());
    let mut numbers = Vec::new();
    number_hashes(title, &mut numbers);
    number_hashes(body, &mut numbers);
    numbers.sort_unstable();
    numbers.dedup();
    Some(Fingerprint { minhash, numbers })
}

/// Whether two fingerprints are the same story: similar enough text, and
/// numbers that do not contradict each other.
pub fn same_story(a: FingerprintView<'_>, b: FingerprintView<'_>) -> Option<f64> {
    let score = similarity(a.minhash, b.minhash);
    (score >= SAME_STORY && numbers_agree(a.numbers, b.numbers)).then_some(score)
}

/// Numbers agree when either text has none, or most of the smaller set is
/// in the larger one (a trimmed copy keeps a subset of the numbers).
fn numbers_agree(a: &[u32], b: &[u32]) -> bool {
    if a.is_empty() || b.is_empty() {
        return true;
    }
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    let shared = small
        .iter()
        .filter(|n| large.binary_search(n).is_ok())
        .count();
    shared * 2 >= small.len()
}

/// Adds to `out` the hash of each number in `text` (as [`numbers_in`]
/// finds them): the high 32 bits of FNV-1a over its digits and a zero
/// byte, made as the digits are read.
fn number_hashes(text: &str, out: &mut Vec<u32>) {
    let mut hash = FNV_OFFSET;
    let mut digits = 0usize;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let digit = match c {
            '0'..='9' => Some(c as u32 - '0' as u32),
            '\u{0660}'..='\u{0669}' => Some(c as u32 - 0x0660),
            '\u{06F0}'..='\u{06F9}' => Some(c as u32 - 0x06F0),
            _ => None,
        };
        match digit {
            Some(d) => {
                hash = fnv_step(hash, b'0' + d as u8);
                digits += 1;
            }
            None if matches!(c, ',' | '.' | '٬' | '٫')
                && digits > 0
                && chars.peek().is_some_and(|n| {
                    n.is_ascii_digit() || ('\u{0660}'..='\u{0669}').contains(n)
                }) => {}
            None => {
                if digits > 0 {
                    out.push((fnv_step(hash, 0) >> 32) as u32);
                    hash = FNV_OFFSET;
                    digits = 0;
                }
            }
        }
    }
    if digits > 0 {
        out.push((fnv_step(hash, 0) >> 32) as u32);
    }
}

/// The numbers in a text, digits only ("2,500" and "2500" are one number;
/// Arabic-Indic digits count).
#[cfg(test)]
fn numbers_in(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let digit = match c {
            '0'..='9' => Some(c),
            '\u{0660}'..='\u{0669}' => char::from_digit(c as u32 - 0x0660, 10),
            '\u{06F0}'..='\u{06F9}' => char::from_digit(c as u32 - 0x06F0, 10),
            _ => None,
        };
        match digit {
            Some(d) => current.push(d),
            // Separators inside a number are dropped, decimal or thousands
            // alike: "2,3" (a decimal comma) and "2.3" are one number.
            None if matches!(c, ',' | '.' | '٬' | '٫')
                && !current.is_empty()
                && chars.peek().is_some_and(|n| {
                    n.is_ascii_digit() || ('\u{0660}'..='\u{0669}').contains(n)
                }) => {}
            None => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// MinHash signature of a word sequence's word pairs.
fn minhash(words: &[&str]) -> Vec<u16> {
    let mut shingles: Vec<u64> = words
        .windows(2)
        .map(|pair| fnv1a(pair[0].as_bytes(), pair[1].as_bytes()))
        .collect();
    shingles.sort_unstable();
    shingles.dedup();
    // The mask keeps 16 bits: the cast drops nothing.
    minimums(&shingles)
        .iter()
        .map(|m| (m & FINGERPRINT_MASK) as u16)
        .collect()
}

/// The MinHash seeds: one odd number per hash.
const SEEDS: [u64; FINGERPRINT_HASHES] = {
    let mut seeds = [0u64; FINGERPRINT_HASHES];
    let mut i = 0;
    while i < FINGERPRINT_HASHES {
        seeds[i] = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        i += 1;
    }
    seeds
};

/// Each seed's minimum over the shingles of the high 32 bits of
/// `mix(shingle ^ seed)`. Shingle by shingle over all seeds at once: the
/// same minimums as seed by seed, in a loop the compiler vectorizes. The
/// copies built for AVX-512 and AVX2 (chosen at run time) do the same
/// arithmetic in wider registers, so every machine stores the same
/// fingerprints; AVX-512DQ multiplies 64-bit lanes in one instruction.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512dq+avx512vl", "x86_64+avx2"))]
fn minimums(shingles: &[u64]) -> [u32; FINGERPRINT_HASHES] {
    let mut mins = [u32::MAX; FINGERPRINT_HASHES];
    for &s in shingles {
        for (min, seed) in mins.iter_mut().zip(SEEDS) {
            *min = (*min).min((mix(s ^ seed) >> 32) as u32);
        }
    }
    mins
}

/// Estimated Jaccard similarity of two fingerprints.
pub fn similarity(a: &[u16], b: &[u16]) -> f64 {
    if a.is_empty() || a.len() != b.len() {
        return 0.0;
    }
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    same as f64 / a.len() as f64
}

/// The LSH band keys of a MinHash signature (band number, then a 32-bit
/// hash of its rows): entries sharing a band key are candidates for the
/// same story.
pub fn band_keys(signature: &[u16]) -> Vec<[u8; 5]> {
    signature
        .chunks(BAND_ROWS)
        .take(BANDS)
        .enumerate()
        .map(|(band, rows)| {
            let mut h: u64 = FNV_OFFSET;
            for r in rows {
                h = mix(h ^ u64::from(*r));
            }
            let mut key = [0u8; 5];
            key[0] = band as u8;
            key[1..].copy_from_slice(&((h >> 32) as u32).to_be_bytes());
            key
        })
        .collect()
}

/// FNV-1a's 64-bit offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// One byte of FNV-1a.
fn fnv_step(h: u64, byte: u8) -> u64 {
    (h ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
}

/// FNV-1a over `a`, a zero byte, then `b`.
fn fnv1a(a: &[u8], b: &[u8]) -> u64 {
    a.iter()
        .chain(&[0u8])
        .chain(b)
        .fold(FNV_OFFSET, |h, byte| fnv_step(h, *byte))
}

/// splitmix64's finalizer: a cheap, well-mixed hash of a u64.
#[inline(always)]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
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

/// The story rules an ingest applies (built from the config by `app`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Within one source, an entry whose id changed but whose canonical
    /// link did not is the same entry.
    pub same_link: bool,
    /// Across sources, entries with the same canonical link are one story.
    pub canonical_urls: bool,
    /// Across sources, near-duplicate texts are one story.
    pub near_duplicates: bool,
    /// Near-duplicates are only looked for among entries published this
    /// close in time.
    pub window: chrono::Duration,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            same_link: true,
            canonical_urls: true,
            near_duplicates: true,
            window: chrono::Duration::days(3),
        }
    }
}

/// A stored copy, as a [`StoryIndex`] names it: keys are the index's own
/// (the store's sequence numbers); a story's key is its first copy's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCopy {
    /// The copy's key.
    pub key: u64,
    /// Its story's key.
    pub story: u64,
    /// Its entry id.
    pub id: String,
}

/// The first stored copies with a canonical link, from the entry's own
/// source and from another.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkCopies {
    /// A copy from the same source.
    pub same_source: Option<StoredCopy>,
    /// A copy from another source.
    pub other_source: Option<StoredCopy>,
}

/// A near-duplicate candidate an index offers.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// The copy's key.
    pub key: u64,
    /// Its story's key.
    pub story: u64,
    /// Its entry id.
    pub id: &'a str,
    /// Its source.
    pub source: &'a str,
    /// Its fingerprint.
    pub fingerprint: FingerprintView<'a>,
}

/// What story assignment asks of the stored copies (the store implements
/// it with its indexes; tests with a list).
pub trait StoryIndex {
    /// Why a lookup failed.
    type Error;
    /// The first stored copies whose canonical link is `canon`.
    fn by_link(&mut self, canon: &str, source: &str) -> Result<LinkCopies, Self::Error>;
    /// Offers `visit` stored copies that may be near-duplicates of
    /// `fingerprint` (sharing an LSH band), published within `window` of
    /// `at`: a bounded number, the likeliest first.
    fn near(
        &mut self,
        fingerprint: &Fingerprint,
        at: DateTime<Utc>,
        window: chrono::Duration,
        visit: &mut dyn FnMut(Candidate<'_>),
    ) -> Result<(), Self::Error>;
}

/// Where an entry not stored under its own id belongs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// A copy from the same source with the same canonical link: the
    /// publisher changed the entry's id, and this is that entry.
    pub same_entry: Option<StoredCopy>,
    /// The story a new entry joins (its key), and why.
    pub join: Option<(u64, Merged)>,
    /// Another story (its key) the new entry also matches: it joins the
    /// first, and its first copy says why.
    pub absorb: Option<(u64, Merged)>,
}

/// Places `entry` (not stored under its id): the same entry under another
/// id (same link, same source), else the story of a copy from another
/// source with the same canonical URL, else of the most similar
/// near-duplicate in the window. A copy that matches one story by URL and
/// another by text joins the two. `listed` holds the ids of the entries of
/// the document `entry` came in: a stored copy listed there is another
/// item beside it, never this entry under an old id.
pub fn place<I: StoryIndex>(
    entry: &Entry,
    listed: &HashSet<&str>,
    rules: &Rules,
    index: &mut I,
) -> Result<Placement, I::Error> {
    let mut placement = Placement::default();
    let by_url = match &entry.canonical {
        Some(canon) if rules.same_link || rules.canonical_urls => {
            let found = index.by_link(canon, &entry.source)?;
            let same = found
                .same_source
                .filter(|copy| rules.same_link && !listed.contains(copy.id.as_str()));
            if let Some(same) = same {
                placement.same_entry = Some(same);
                return Ok(placement);
            }
            found.other_source.filter(|_| rules.canonical_urls)
        }
        _ => None,
    };
    let by_text = match (&entry.fingerprint, rules.near_duplicates) {
        (Some(fingerprint), true) => nearest(entry, fingerprint, rules, index)?,
        _ => None,
    };
    let text_rule = |similarity: f64| MergeRule::NearDuplicate {
        similarity: (similarity * 100.0).round().clamp(0.0, 100.0) as u8,
    };
    match (by_url, by_text) {
        (Some(copy), text) => {
            placement.join = Some((
                copy.story,
                Merged {
                    with: copy.id,
                    rule: MergeRule::CanonicalUrl,
                },
            ));
            placement.absorb =
                text.filter(|(_, t)| t.story != copy.story)
                    .map(|(similarity, t)| {
                        let link = Merged {
                            with: entry.id.clone(),
                            rule: text_rule(similarity),
                        };
                        (t.story, link)
                    });
        }
        (None, Some((similarity, copy))) => {
            placement.join = Some((
                copy.story,
                Merged {
                    with: copy.id,
                    rule: text_rule(similarity),
                },
            ));
        }
        (None, None) => {}
    }
    Ok(placement)
}

/// The candidate from another source most like `entry` that passes the
/// same-story test.
fn nearest<I: StoryIndex>(
    entry: &Entry,
    fingerprint: &Fingerprint,
    rules: &Rules,
    index: &mut I,
) -> Result<Option<(f64, StoredCopy)>, I::Error> {
    let mut best: Option<(f64, StoredCopy)> = None;
    let at = entry.published_or_seen();
    index.near(fingerprint, at, rules.window, &mut |c| {
        if c.source == entry.source || c.id == entry.id {
            return;
        }
        if let Some(similarity) = same_story(fingerprint.view(), c.fingerprint) {
            if best.as_ref().is_none_or(|(s, _)| similarity > *s) {
                best = Some((
                    similarity,
                    StoredCopy {
                        key: c.key,
                        story: c.story,
                        id: c.id.to_string(),
                    },
                ));
            }
        }
    })?;
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn published_links_lose_only_their_trackers() {
        let tracking = default_tracking();
        let cases = [
            (
                "https://news.example/a/1?utm_source=rss&utm_medium=feed",
                "https://news.example/a/1",
            ),
            (
                "https://news.example/a?id=7&utm_campaign=x&Page=2#top",
                "https://news.example/a?id=7&Page=2#top",
            ),
            // Order and spelling of what stays are the publisher's.
            (
                "https://news.example/a?z=1&fbclid=abc&a=%20b",
                "https://news.example/a?z=1&a=%20b",
            ),
            // Prefix rules (utm_*) and case.
            (
                "https://news.example/?UTM_Term=q&q=1",
                "https://news.example/?q=1",
            ),
            // Nothing to drop, not http, not a URL: unchanged.
            ("https://news.example/a?b=1", "https://news.example/a?b=1"),
            (
                "ftp://news.example/a?utm_source=x",
                "ftp://news.example/a?utm_source=x",
            ),
            ("not a url?utm_source=x", "not a url?utm_source=x"),
        ];
        for (url, want) in cases {
            assert_eq!(without_tracking(url, &tracking), want, "{url}");
        }
        assert_eq!(
            without_tracking("https://news.example/a?utm_source=x", &[]),
            "https://news.example/a?utm_source=x"
        );
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
            canonical: None,
            fingerprint: None,
            merged: None,
            external: None,
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
    fn canonical_urls() {
        let tracking = default_tracking();
        let check = |a: &str, b: &str| {
            assert_eq!(
                canonical_url(a, &tracking),
                canonical_url(b, &tracking),
                "{a} vs {b}"
            );
        };
        check(
            "https://www.centcom.mil/MEDIA/Article/4139312/?utm_source=rss&utm_medium=feed",
            "http://WWW.CENTCOM.MIL:80/MEDIA/Article/4139312#top",
        );
        check(
            "https://example.org/a?b=2&a=1&fbclid=x",
            "https://example.org/a/?a=1&b=2",
        );
        check(
            "https://example.org/a?ref=rss&gclid=1&mc_cid=2&mc_eid=3",
            "https://example.org/a",
        );
        check("https://example.org:443/", "https://example.org");
        let differ = |a: &str, b: &str| {
            assert_ne!(
                canonical_url(a, &tracking),
                canonical_url(b, &tracking),
                "{a} vs {b}"
            );
        };
        differ("https://example.org/a?id=1", "https://example.org/a?id=2");
        differ("https://example.org/a", "https://example.org/b");
        differ("https://example.org:8080/a", "https://example.org/a");
        differ("https://a.example.org/x", "https://b.example.org/x");
        assert_eq!(canonical_url("javascript:alert(1)", &tracking), None);
        assert_eq!(
            canonical_url("https://Example.org/News/?utm_campaign=x&page=2", &tracking).as_deref(),
            Some("example.org/News?page=2")
        );
    }

    #[test]
    fn guid_variants_are_one_entry() {
        let id = entry_id("s", "https://example.org/?p=123");
        assert_eq!(entry_id("s", "http://example.org/?p=123"), id);
        assert_eq!(entry_id("s", "https://example.org/?p=123#0"), id);
        assert_eq!(entry_id("s", "example.org/?p=123"), id);
        assert_eq!(entry_id("s", "//example.org/?p=123"), id);
        assert_ne!(entry_id("s", "https://example.org/?p=124"), id);
        assert_eq!(
            identity_key("tag:example.org,2025:1"),
            "tag:example.org,2025:1"
        );
        assert_eq!(identity_key("12345"), "12345");
    }

    #[test]
    fn guids_differing_in_their_fragment() {
        let noon = "http://scriptingnews.userland.com/backissues/2002/09/29#When:12:59:01PM";
        let evening = "http://scriptingnews.userland.com/backissues/2002/09/29#When:6:52:02PM";
        let page = "https://example.org/?p=1";
        let page0 = "https://example.org/?p=1#0";
        // (the document's guids, the ids they get, by which key)
        let family = |id: &str| entry_id("s", id);
        let exact = |id: &str| id_of_key("s", &exact_key(id));
        let cases: &[(&[&str], Vec<String>)] = &[
            // Side by side: two entries, each by its exact key.
            (&[noon, evening], vec![exact(noon), exact(evening)]),
            (&[page, page0], vec![exact(page), exact(page0)]),
            // Alone: the fragment-free key, so a variant replacing it over
            // time is the same entry.
            (&[noon], vec![family(noon)]),
            (&[page0], vec![family(page)]),
            (&[page], vec![family(page0)]),
            // The same guid twice is not two variants (normalize tells
            // such repeats apart by link or text).
            (&[page, page], vec![family(page), family(page)]),
            // Not URL-like: the whole id is the key.
            (
                &["tag:x,2025:1#a", "tag:x,2025:1#b"],
                vec![family("tag:x,2025:1#a"), family("tag:x,2025:1#b")],
            ),
        ];
        for (guids, expected) in cases {
            assert_eq!(&document_ids("s", guids), expected, "{guids:?}");
        }
        assert_ne!(exact(noon), exact(evening));
        assert_eq!(exact(page), family(page));

        // Where to look an entry up: (its guid, the document's, expected).
        let under = |id: String, same_guid_only: bool| StoredUnder { id, same_guid_only };
        let lookups: &[(&str, &[&str], Vec<StoredUnder>)] = &[
            // Alone: where it was stored beside a sibling, then the family.
            (
                evening,
                &[evening],
                vec![under(exact(evening), false), under(family(evening), false)],
            ),
            (page, &[page], vec![under(family(page), false)]),
            // Beside a sibling: the family's copy only if it is this guid's.
            (
                evening,
                &[noon, evening],
                vec![under(exact(evening), false), under(family(evening), true)],
            ),
            (page, &[page, page0], vec![under(family(page), true)]),
        ];
        for (guid, document, expected) in lookups {
            assert_eq!(
                &stored_under("s", guid, &DocumentGuids::new(document)),
                expected,
                "{guid} in {document:?}"
            );
        }
        assert!(same_guid(noon, noon) && !same_guid(noon, evening));
    }

    #[test]
    fn arabic_normalization() {
        assert_eq!(
            comparable_words("أعلنَ الوزيرُ، إنّ القيادةَ «آمنة» ـــ على"),
            ["اعلن", "الوزير", "ان", "القياده", "امنه", "علي"]
        );
        assert_eq!(
            comparable_words("Ｆｕｌｌ-width TEXT!"),
            ["full", "width", "text"]
        );
    }

    /// [`comparable_words`] by its definition: NFKC, lowercase and `fold`
    /// over the whole text at once.
    fn whole_text_words(text: &str) -> Vec<String> {
        let folded: String = text
            .nfkc()
            .flat_map(char::to_lowercase)
            .filter_map(fold)
            .collect();
        folded.split_whitespace().map(str::to_string).collect()
    }

    /// The Arabic letters' fast path is `fold` after lowercasing, char by
    /// char.
    #[test]
    fn uncased_letters_fold_as_fold_does() {
        let mut checked = 0;
        for c in '\u{0600}'..='\u{06FF}' {
            if !is_uncased_letter(c) {
                continue;
            }
            let plain: Vec<char> = c.to_lowercase().filter_map(fold).collect();
            assert_eq!(plain, vec![fold_arabic(c)], "U+{:04X}", u32::from(c));
            assert!(c.is_alphanumeric(), "U+{:04X}", u32::from(c));
            checked += 1;
        }
        assert_eq!(checked, 41);
    }

    /// Fingerprints are stored: the fast paths must give exactly what the
    /// plain definitions give (NFKC, lowercase and `fold` on every token;
    /// each seed's minimum over the set of shingles).
    #[test]
    fn fast_paths_give_the_stored_fingerprints() {
        let slow_minhash = |words: &[&str]| -> Vec<u16> {
            let shingles: HashSet<u64> = words
                .windows(2)
                .map(|pair| fnv1a(pair[0].as_bytes(), pair[1].as_bytes()))
                .collect();
            (0..FINGERPRINT_HASHES as u64)
                .map(|i| {
                    let seed = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                    shingles
                        .iter()
                        .map(|s| (mix(s ^ seed) >> 32) as u32)
                        .min()
                        .unwrap_or(u32::MAX) as u16
                })
                .collect()
        };
        let texts = [
            "U.S. officials said on Tuesday (local time) that 2,500 troops -- \"a first\" -- would go; it's done.",
            "e-mail/web: AT&T's CEO, Jane O'Neil, said [sic] {x} <b>hi</b> 50% of $3.5bn #1 @home_page",
            "أعلنَ الوزيرُ، إنّ القيادةَ «آمنة» ـــ على mixed ASCII, and Ｆｕｌｌ-width TEXT!",
            "the the the the the the the the the the the the the the the the the the the the the the",
            "سجّلت ١٢٤٠ حالة، و٢٬٥ مليون دينار في ۱۹۹۸؛ 3.5. and 7,",
        ];
        for text in texts {
            assert_eq!(comparable_words(text), whole_text_words(text), "{text}");
            let words = comparable_words(text);
            let words: Vec<&str> = words.iter().map(String::as_str).collect();
            assert_eq!(minhash(&words), slow_minhash(&words), "{text}");
            // The numbers' hashes, made as the digits are read, are those
            // of the numbers as strings.
            let mut hashes = Vec::new();
            number_hashes(text, &mut hashes);
            let want: Vec<u32> = numbers_in(text)
                .iter()
                .map(|n| (fnv1a(n.as_bytes(), b"") >> 32) as u32)
                .collect();
            assert_eq!(hashes, want, "{text}");
        }
        assert_eq!(minhash(&[]), slow_minhash(&[]));
    }

    #[test]
    fn fingerprints() {
        let body = "The central bank raised its main interest rate by a quarter of a point on Tuesday, \
                    citing persistent inflation in food and housing, and said further increases were possible.";
        let a = fingerprint("Central bank raises rates", body).unwrap();
        let b = fingerprint(
            "UPDATE: Central bank raises rates",
            &format!("{body} Markets were little changed."),
        )
        .unwrap();
        assert!(
            same_story(a.view(), b.view()).is_some(),
            "{}",
            similarity(&a.minhash, &b.minhash)
        );
        let other = fingerprint(
            "Central bank holds rates",
            "The central bank kept its main interest rate unchanged on Thursday, saying inflation \
             had eased in recent months while growth remained weak across most sectors of the economy.",
        )
        .unwrap();
        assert!(
            same_story(a.view(), other.view()).is_none(),
            "{}",
            similarity(&a.minhash, &other.minhash)
        );
        assert_eq!(fingerprint("Short title", "and a few words"), None);
        assert_eq!(band_keys(&a.minhash).len(), BANDS);
        assert_eq!(band_keys(&a.minhash), band_keys(&a.minhash.clone()));
        assert_eq!(
            numbers_in("2,500 troops, 3.5% and ١٢٤٠ cases; 6-4"),
            ["2500", "35", "1240", "6", "4"]
        );
        assert!(numbers_agree(&[1, 2, 3], &[1, 2]));
        assert!(!numbers_agree(&[1, 2, 3], &[4, 5, 6]));
        assert!(numbers_agree(&[], &[4]));
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

    /// Stored copies in a list: the index `place` is tested with.
    #[derive(Default)]
    struct Listed(Vec<(StoredCopy, String, Entry)>);

    impl Listed {
        fn add(&mut self, key: u64, story: u64, e: &Entry) {
            let copy = StoredCopy {
                key,
                story,
                id: e.id.clone(),
            };
            self.0.push((copy, e.source.clone(), e.clone()));
        }
    }

    impl StoryIndex for Listed {
        type Error = std::convert::Infallible;
        fn by_link(&mut self, canon: &str, source: &str) -> Result<LinkCopies, Self::Error> {
            let mut found = LinkCopies::default();
            for (copy, from, e) in &self.0 {
                if e.canonical.as_deref() != Some(canon) {
                    continue;
                }
                let slot = if from == source {
                    &mut found.same_source
                } else {
                    &mut found.other_source
                };
                slot.get_or_insert_with(|| copy.clone());
            }
            Ok(found)
        }
        fn near(
            &mut self,
            fingerprint: &Fingerprint,
            at: DateTime<Utc>,
            window: chrono::Duration,
            visit: &mut dyn FnMut(Candidate<'_>),
        ) -> Result<(), Self::Error> {
            let bands = band_keys(&fingerprint.minhash);
            for (copy, from, e) in self.0.iter().rev() {
                let Some(f) = &e.fingerprint else { continue };
                let shares = band_keys(&f.minhash).iter().any(|b| bands.contains(b));
                if shares && (e.published_or_seen() - at).abs() <= window {
                    visit(Candidate {
                        key: copy.key,
                        story: copy.story,
                        id: &copy.id,
                        source: from,
                        fingerprint: f.view(),
                    });
                }
            }
            Ok(())
        }
    }

    const BODY: &str = "Officials met in Doha on Thursday to discuss regional security, maritime \
                        cooperation and the protection of shipping lanes in the Gulf, a statement said.";
    const OTHER: &str = "The city council approved a new budget for public libraries on Monday, adding \
                         evening hours and a mobile branch that will visit outlying villages each week.";

    const DIFFERENT: &str = "Heavy rain flooded several roads in the north of the country overnight, and \
                             forecasters expect more storms before the weekend, the weather service said.";

    fn copy(source: &str, guid: &str, link: Option<&str>, body: Option<&str>) -> Entry {
        let mut e = entry("Talks in Doha", "2025-03-27T10:00:00Z");
        e.source = source.into();
        e.source_id = guid.into();
        e.id = entry_id(source, guid);
        e.canonical = link.and_then(|l| canonical_url(l, &default_tracking()));
        e.fingerprint = body.and_then(|b| fingerprint("Talks in Doha", b));
        e
    }

    #[test]
    fn placement() {
        let rules = Rules::default();
        let a = copy(
            "a",
            "1",
            Some("https://x.example/doha?utm_source=rss"),
            Some(BODY),
        );
        let b_text = copy("b", "2", Some("https://b.example/other-link"), Some(BODY));
        let c_other = copy("c", "3", Some("https://c.example/budget"), Some(OTHER));
        let mut index = Listed::default();
        index.add(10, 10, &a);
        index.add(11, 11, &c_other);

        struct Case {
            name: &'static str,
            entry: Entry,
            rules: Rules,
            same_entry: Option<u64>,
            join: Option<(u64, &'static str)>,
            absorb: Option<u64>,
        }
        let off = |f: fn(&mut Rules)| {
            let mut r = Rules::default();
            f(&mut r);
            r
        };
        let cases = [
            Case {
                name: "a changed guid under the same link is the same entry",
                entry: copy("a", "renamed", Some("http://x.example/doha/"), None),
                rules: rules.clone(),
                same_entry: Some(10),
                join: None,
                absorb: None,
            },
            Case {
                name: "without same_link it is a copy of its own",
                entry: copy("a", "renamed", Some("http://x.example/doha/"), None),
                rules: off(|r| r.same_link = false),
                same_entry: None,
                join: None,
                absorb: None,
            },
            Case {
                name: "the same canonical url from another source joins the story",
                entry: copy("b", "9", Some("https://x.example/doha"), None),
                rules: rules.clone(),
                same_entry: None,
                join: Some((10, "same canonical url")),
                absorb: None,
            },
            Case {
                name: "canonical urls off: no join by url",
                entry: copy("b", "9", Some("https://x.example/doha"), None),
                rules: off(|r| r.canonical_urls = false),
                same_entry: None,
                join: None,
                absorb: None,
            },
            Case {
                name: "the same text from another source joins the story",
                entry: b_text.clone(),
                rules: rules.clone(),
                same_entry: None,
                join: Some((10, "near-duplicate text")),
                absorb: None,
            },
            Case {
                name: "near duplicates off: no join by text",
                entry: b_text.clone(),
                rules: off(|r| r.near_duplicates = false),
                same_entry: None,
                join: None,
                absorb: None,
            },
            Case {
                name: "the same text from the same source is not a copy",
                entry: copy("a", "other-guid", None, Some(BODY)),
                rules: rules.clone(),
                same_entry: None,
                join: None,
                absorb: None,
            },
            Case {
                name: "a different story stays apart",
                entry: copy("d", "4", Some("https://d.example/x"), Some(DIFFERENT)),
                rules: rules.clone(),
                same_entry: None,
                join: None,
                absorb: None,
            },
            Case {
                name: "a url match and a text match in two stories join them",
                entry: copy("d", "5", Some("https://c.example/budget"), Some(BODY)),
                rules: rules.clone(),
                same_entry: None,
                join: Some((11, "same canonical url")),
                absorb: Some(10),
            },
        ];
        for case in cases {
            let placed = place(&case.entry, &HashSet::new(), &case.rules, &mut index).unwrap();
            assert_eq!(
                placed.same_entry.map(|c| c.key),
                case.same_entry,
                "{}",
                case.name
            );
            let join = placed.join.map(|(story, m)| (story, m.rule.to_string()));
            match (join, case.join) {
                (None, None) => {}
                (Some((story, rule)), Some((want, prefix))) => {
                    assert_eq!(story, want, "{}", case.name);
                    assert!(rule.starts_with(prefix), "{}: {rule}", case.name);
                }
                (got, want) => panic!("{}: joined {got:?}, wanted {want:?}", case.name),
            }
            assert_eq!(placed.absorb.map(|(s, _)| s), case.absorb, "{}", case.name);
        }
    }

    #[test]
    fn words_fold_token_by_token_as_over_the_whole_text() {
        // The whole-text folding the token-by-token one must equal.
        let reference = whole_text_words;
        for text in [
            "Officials met in Doha, on Thursday; \u{a0}to discuss (regional) security.",
            "اجتمعَ المسؤولونَ في الدّوحة ـ يومَ الخميس؛ لمناقشة أمن الملاحة",
            "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ ﬁne — ´ x²  Straße İstanbul",
            "2,500 people; 3.5% rise… e-mail foo@bar.example",
        ] {
            assert_eq!(comparable_words(text), reference(text), "{text}");
            let all = reference(text);
            assert_eq!(
                comparable_words_upto(text, 4),
                all[..4.min(all.len())],
                "{text}"
            );
        }
    }
}
