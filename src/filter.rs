//! Include and exclude filters: which entries a source takes in and which
//! an output feed shows, by regexes over the entry's title, text,
//! categories and authors.
//!
//! Pure: an [`EntryFilter`] is built once from the config's patterns
//! ([`EntryFilter::new`], whose [`FilterError`] names the list and the
//! pattern at fault) and then only answers [`EntryFilter::admits`]. What a
//! hostile config can cost is bounded: at most [`MAX_PATTERNS`] patterns per
//! list, each at most [`MAX_PATTERN_LEN`] bytes and compiling to at most
//! [`SIZE_LIMIT`] bytes, and each list compiled into one regex set of at
//! most [`LIST_SIZE_LIMIT`] bytes.

use std::cell::OnceCell;

use regex::{RegexBuilder, RegexSet, RegexSetBuilder};

use crate::model::Entry;

/// Most patterns in one `include` or `exclude` list.
pub const MAX_PATTERNS: usize = 64;
/// Longest pattern, in bytes.
pub const MAX_PATTERN_LEN: usize = 1024;
/// Largest compiled form of one pattern (and of its lazy DFA cache), in
/// bytes.
pub const SIZE_LIMIT: usize = 1 << 20;
/// Largest compiled form of one list's set (and of its lazy DFA cache), in
/// bytes: room for a full list of Unicode-aware word patterns (`\w*` is
/// some 50 KB compiled).
pub const LIST_SIZE_LIMIT: usize = 4 << 20;

/// An entry field the patterns look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// The title, as plain text.
    Title,
    /// The summary and the content, each as plain text.
    Text,
    /// Each category term alone.
    Categories,
    /// Each author name alone.
    Authors,
}

impl Field {
    /// Every field, in the order they are tried (the cheap ones first).
    const ALL: [Field; 4] = [Field::Title, Field::Categories, Field::Authors, Field::Text];

    fn name(self) -> &'static str {
        match self {
            Field::Title => "title",
            Field::Text => "text",
            Field::Categories => "categories",
            Field::Authors => "authors",
        }
    }

    fn named(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The bit of this field in a [`Fields`] set.
    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of fields, as bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fields(u8);

impl Fields {
    const ALL: Fields = Fields(0b1111);

    fn contains(self, field: Field) -> bool {
        self.0 & field.bit() != 0
    }
}

/// The config key a pattern or field name was written under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterKey {
    /// `include`: an entry must match one of these.
    Include,
    /// `exclude`: an entry matching one of these is dropped.
    Exclude,
    /// `match`: the fields the patterns look at.
    Match,
}

impl std::fmt::Display for FilterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FilterKey::Include => "include",
            FilterKey::Exclude => "exclude",
            FilterKey::Match => "match",
        })
    }
}

/// Why the patterns do not make a filter. Each names its key and, for one
/// item, its index; [`FilterError::at`] says which, so the config can point
/// at it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The list holds more than [`MAX_PATTERNS`] patterns.
    #[error("{key}: {count} patterns, at most {MAX_PATTERNS}")]
    TooMany {
        /// The list.
        key: FilterKey,
        /// How many it holds.
        count: usize,
    },
    /// A pattern is empty: it would match every entry.
    #[error("{key}[{index}]: empty pattern (it would match every entry)")]
    Empty {
        /// The list.
        key: FilterKey,
        /// The pattern's index in it.
        index: usize,
    },
    /// A pattern is longer than [`MAX_PATTERN_LEN`] bytes.
    #[error("{key}[{index}]: pattern of {len} bytes, at most {MAX_PATTERN_LEN}")]
    TooLong {
        /// The list.
        key: FilterKey,
        /// The pattern's index in it.
        index: usize,
        /// Its length in bytes.
        len: usize,
    },
    /// A pattern is not a regex the `regex` crate accepts, or compiles to
    /// more than [`SIZE_LIMIT`] bytes.
    #[error("{key}[{index}]: invalid regex: {reason}")]
    Invalid {
        /// The list.
        key: FilterKey,
        /// The pattern's index in it.
        index: usize,
        /// What the regex crate said, on one line.
        reason: String,
    },
    /// Each pattern compiles, but the list together is over
    /// [`LIST_SIZE_LIMIT`].
    #[error("{key}: the patterns together compile to more than {LIST_SIZE_LIMIT} bytes")]
    TooBig {
        /// The list.
        key: FilterKey,
    },
    /// `match` names a field there is not.
    #[error("match[{index}]: unknown field {name:?} (use title, text, categories or authors)")]
    UnknownField {
        /// The name's index in `match`.
        index: usize,
        /// The name as written.
        name: String,
    },
    /// `match` is an empty list: the patterns would look at nothing.
    #[error("match: list at least one field (title, text, categories or authors)")]
    NoFields,
}

impl FilterError {
    /// The key at fault, and the index of the item in it (`None`: the list
    /// as a whole).
    pub fn at(&self) -> (FilterKey, Option<usize>) {
        match self {
            FilterError::TooMany { key, .. } | FilterError::TooBig { key } => (*key, None),
            FilterError::Empty { key, index }
            | FilterError::TooLong { key, index, .. }
            | FilterError::Invalid { key, index, .. } => (*key, Some(*index)),
            FilterError::UnknownField { index, .. } => (FilterKey::Match, Some(*index)),
            FilterError::NoFields => (FilterKey::Match, None),
        }
    }
}

/// Which entries pass: those matching an `include` pattern (when there are
/// any) and no `exclude` pattern, in the selected fields. The default
/// admits every entry.
#[derive(Debug, Clone)]
pub struct EntryFilter {
    /// An entry must match one of these, unless there are none (`None`:
    /// no patterns, and nothing compiled: a source without filters costs
    /// no regex).
    include: Option<RegexSet>,
    /// An entry matching any of these is dropped.
    exclude: Option<RegexSet>,
    /// The fields the patterns look at.
    fields: Fields,
}

impl Default for EntryFilter {
    fn default() -> Self {
        Self {
            include: None,
            exclude: None,
            fields: Fields::ALL,
        }
    }
}

/// Two filters are the same when their patterns and fields are (a config
/// reload compares sources so).
impl PartialEq for EntryFilter {
    fn eq(&self, other: &Self) -> bool {
        patterns(&self.include) == patterns(&other.include)
            && patterns(&self.exclude) == patterns(&other.exclude)
            && self.fields == other.fields
    }
}

impl EntryFilter {
    /// A filter from the config's `include` and `exclude` patterns and its
    /// `match` field names (`None`: every field).
    pub fn new<S: AsRef<str>>(
        include: &[S],
        exclude: &[S],
        fields: Option<&[S]>,
    ) -> Result<Self, FilterError> {
        let fields = match fields {
            None => Fields::ALL,
            Some([]) => return Err(FilterError::NoFields),
            Some(names) => {
                let mut set = Fields(0);
                for (index, name) in names.iter().enumerate() {
                    let name = name.as_ref();
                    let field = Field::named(name).ok_or_else(|| FilterError::UnknownField {
                        index,
                        name: name.to_string(),
                    })?;
                    set.0 |= field.bit();
                }
                set
            }
        };
        Ok(Self {
            include: compiled(FilterKey::Include, include)?,
            exclude: compiled(FilterKey::Exclude, exclude)?,
            fields,
        })
    }

    /// Whether the filter admits every entry (it has no patterns).
    pub fn is_empty(&self) -> bool {
        self.include.is_none() && self.exclude.is_none()
    }

    /// Whether `entry` passes: it matches an `include` pattern (or there are
    /// none) and no `exclude` pattern. A pattern matches an entry when it
    /// matches any selected field: the title, the summary's or the
    /// content's plain text, or one category or author alone.
    pub fn admits(&self, entry: &Entry) -> bool {
        if self.is_empty() {
            return true;
        }
        // The text is made from the HTML only when a pattern gets that far,
        // and only once for both lists.
        let text = OnceCell::new();
        let view = View {
            entry,
            fields: self.fields,
            text: &text,
        };
        self.include.as_ref().is_none_or(|set| view.matches(set))
            && !self.exclude.as_ref().is_some_and(|set| view.matches(set))
    }
}

/// One entry as the patterns see it.
struct View<'a> {
    entry: &'a Entry,
    fields: Fields,
    /// The summary's and the content's plain text, made on first use.
    text: &'a OnceCell<Vec<String>>,
}

impl View<'_> {
    /// Whether a pattern of `set` matches a selected field.
    fn matches(&self, set: &RegexSet) -> bool {
        let entry = self.entry;
        Field::ALL
            .into_iter()
            .filter(|f| self.fields.contains(*f))
            .any(|field| match field {
                Field::Title => set.is_match(&entry.title),
                Field::Categories => entry.categories.iter().any(|c| set.is_match(c)),
                Field::Authors => entry.authors.iter().any(|a| set.is_match(a)),
                Field::Text => self
                    .text
                    .get_or_init(|| {
                        [&entry.summary, &entry.content]
                            .into_iter()
                            .flatten()
                            .map(|html| crate::normalize::plain_text(html))
                            .collect()
                    })
                    .iter()
                    .any(|t| set.is_match(t)),
            })
    }
}

/// One list's patterns, checked one by one (so an error names its
/// pattern), then compiled together.
fn compiled<S: AsRef<str>>(
    key: FilterKey,
    patterns: &[S],
) -> Result<Option<RegexSet>, FilterError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    if patterns.len() > MAX_PATTERNS {
        return Err(FilterError::TooMany {
            key,
            count: patterns.len(),
        });
    }
    for (index, pattern) in patterns.iter().enumerate() {
        let pattern = pattern.as_ref();
        if pattern.is_empty() {
            return Err(FilterError::Empty { key, index });
        }
        if pattern.len() > MAX_PATTERN_LEN {
            return Err(FilterError::TooLong {
                key,
                index,
                len: pattern.len(),
            });
        }
        RegexBuilder::new(pattern)
            .size_limit(SIZE_LIMIT)
            .dfa_size_limit(SIZE_LIMIT)
            .build()
            .map_err(|e| FilterError::Invalid {
                key,
                index,
                reason: one_line(&e),
            })?;
    }
    RegexSetBuilder::new(patterns.iter().map(AsRef::as_ref))
        .size_limit(LIST_SIZE_LIMIT)
        .dfa_size_limit(LIST_SIZE_LIMIT)
        .build()
        .map(Some)
        .map_err(|_| FilterError::TooBig { key })
}

/// A list's patterns as written (none when it has none).
fn patterns(set: &Option<RegexSet>) -> &[String] {
    set.as_ref().map_or(&[], RegexSet::patterns)
}

/// The regex crate's error on one line: a syntax error's own message (its
/// `error: ...` line, without the pattern and the caret drawn above it).
fn one_line(error: &regex::Error) -> String {
    match error {
        regex::Error::Syntax(text) => text
            .lines()
            .find_map(|line| line.strip_prefix("error: "))
            .map(str::to_string)
            .unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" ")),
        regex::Error::CompiledTooBig(limit) => {
            format!("compiles to more than {limit} bytes")
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(title: &str, summary: Option<&str>, categories: &[&str], authors: &[&str]) -> Entry {
        let now = chrono::Utc::now();
        Entry {
            id: "urn:feedmerge:entry:1".into(),
            source: "s".into(),
            source_id: "1".into(),
            title: title.into(),
            link: None,
            summary: summary.map(String::from),
            content: None,
            authors: authors.iter().map(|a| a.to_string()).collect(),
            categories: categories.iter().map(|c| c.to_string()).collect(),
            published: None,
            updated: None,
            first_seen: now,
            changed: now,
            language: None,
            enclosures: Vec::new(),
            canonical: None,
            fingerprint: None,
            merged: None,
            external: None,
        }
    }

    /// Which of `entries` (by title) the filter admits.
    fn check(
        include: &[&str],
        exclude: &[&str],
        fields: Option<&[&str]>,
        entries: &[Entry],
        expected: &[&str],
    ) {
        let filter = EntryFilter::new(include, exclude, fields).unwrap();
        let admitted: Vec<&str> = entries
            .iter()
            .filter(|e| filter.admits(e))
            .map(|e| e.title.as_str())
            .collect();
        assert_eq!(
            admitted, expected,
            "include {include:?}, exclude {exclude:?}, match {fields:?}"
        );
    }

    fn news() -> Vec<Entry> {
        vec![
            entry(
                "Climate talks open",
                Some("<p>Delegates <b>arrive</b></p>"),
                &["world"],
                &["Ana"],
            ),
            entry(
                "Sponsored: buy now",
                Some("<p>A great deal</p>"),
                &["ads"],
                &[],
            ),
            entry(
                "Ad: cheap flights",
                None,
                &["travel", "Climate desk"],
                &["Ben"],
            ),
            entry(
                "Rust 1.85 released",
                Some("<p>Now with the <em>climate</em> edition</p>"),
                &["tech"],
                &["Sponsored Content Team"],
            ),
        ]
    }

    #[test]
    fn the_default_filter_admits_everything() {
        let filter = EntryFilter::default();
        assert!(filter.is_empty());
        assert!(news().iter().all(|e| filter.admits(e)));
        assert_eq!(filter, EntryFilter::new::<&str>(&[], &[], None).unwrap());
    }

    #[test]
    fn include_only() {
        check(
            &["(?i)climate"],
            &[],
            None,
            &news(),
            &[
                "Climate talks open",
                "Ad: cheap flights",
                "Rust 1.85 released",
            ],
        );
        // Any of several patterns will do.
        check(
            &["^Rust", "talks"],
            &[],
            None,
            &news(),
            &["Climate talks open", "Rust 1.85 released"],
        );
    }

    #[test]
    fn exclude_only() {
        check(
            &[],
            &["(?i)sponsored", "(?i)^ad:"],
            None,
            &news(),
            &["Climate talks open"],
        );
    }

    #[test]
    fn include_and_exclude() {
        check(
            &["(?i)climate"],
            &["(?i)^ad:"],
            None,
            &news(),
            &["Climate talks open", "Rust 1.85 released"],
        );
    }

    #[test]
    fn match_limited_to_the_title() {
        // The author "Sponsored Content Team" and the "climate" in a summary
        // are not looked at.
        check(
            &["(?i)climate"],
            &["(?i)sponsored"],
            Some(&["title"]),
            &news(),
            &["Climate talks open"],
        );
    }

    #[test]
    fn text_is_the_plain_text_of_summary_and_content() {
        // Tags are gone and entities decoded before matching.
        check(
            &[],
            &["arrive</b>"],
            Some(&["text"]),
            &news(),
            &[
                "Climate talks open",
                "Sponsored: buy now",
                "Ad: cheap flights",
                "Rust 1.85 released",
            ],
        );
        check(
            &["Delegates arrive", "with the climate edition"],
            &[],
            Some(&["text"]),
            &news(),
            &["Climate talks open", "Rust 1.85 released"],
        );
        let mut in_content = entry("t", None, &[], &[]);
        in_content.content = Some("<p>fish &amp; chips</p>".into());
        check(&["^fish & chips$"], &[], None, &[in_content], &["t"]);
    }

    #[test]
    fn categories_and_authors_are_matched_one_by_one() {
        // Anchors hold per category: "Climate desk" is a category of its
        // own, not the tail of "travel, Climate desk".
        check(
            &["^Climate desk$"],
            &[],
            Some(&["categories"]),
            &news(),
            &["Ad: cheap flights"],
        );
        check(
            &["travel.*Climate"],
            &[],
            Some(&["categories"]),
            &news(),
            &[],
        );
        check(
            &["^Ben$"],
            &[],
            Some(&["authors", "authors"]),
            &news(),
            &["Ad: cheap flights"],
        );
    }

    #[test]
    fn arabic_text() {
        let entries = [
            entry("قائد القيادة المركزية يزور قطر", None, &["أمن"], &[]),
            entry(
                "اجتماع وزراء الخارجية في الرياض",
                Some("<p>بيان <b>إعلان</b> مدفوع</p>"),
                &[],
                &[],
            ),
        ];
        check(
            &["قطر"],
            &[],
            None,
            &entries,
            &["قائد القيادة المركزية يزور قطر"],
        );
        check(
            &[],
            &["إعلان مدفوع"],
            None,
            &entries,
            &["قائد القيادة المركزية يزور قطر"],
        );
        check(
            &[r"^\p{Arabic}+$"],
            &[],
            Some(&["categories"]),
            &entries,
            &["قائد القيادة المركزية يزور قطر"],
        );
    }

    #[test]
    fn case_matters_unless_the_pattern_says_otherwise() {
        check(&["climate"], &[], Some(&["title"]), &news(), &[]);
        check(
            &["(?i)CLIMATE"],
            &[],
            Some(&["title"]),
            &news(),
            &["Climate talks open"],
        );
        // Unicode case folding: "Ä" and "ä".
        let entries = [entry("Ärger im Bundestag", None, &[], &[])];
        check(
            &["(?i)^ärger"],
            &[],
            None,
            &entries,
            &["Ärger im Bundestag"],
        );
    }

    #[test]
    fn bad_patterns_and_fields_are_named() {
        let err = |include: &[&str], exclude: &[&str], fields: Option<&[&str]>| {
            let e = EntryFilter::new(include, exclude, fields).unwrap_err();
            (e.to_string(), e.at())
        };
        assert_eq!(
            err(&["ok"], &["fine", "(unclosed"], None),
            (
                "exclude[1]: invalid regex: unclosed group".to_string(),
                (FilterKey::Exclude, Some(1))
            )
        );
        assert_eq!(
            err(&[""], &[], None),
            (
                "include[0]: empty pattern (it would match every entry)".to_string(),
                (FilterKey::Include, Some(0))
            )
        );
        let long = "a".repeat(MAX_PATTERN_LEN + 1);
        assert_eq!(
            err(&[long.as_str()], &[], None).0,
            "include[0]: pattern of 1025 bytes, at most 1024"
        );
        let many = vec!["a"; MAX_PATTERNS + 1];
        assert_eq!(
            err(&[], &many, None),
            (
                "exclude: 65 patterns, at most 64".to_string(),
                (FilterKey::Exclude, None)
            )
        );
        assert_eq!(
            err(&["a"], &[], Some(&["title", "body"])),
            (
                "match[1]: unknown field \"body\" (use title, text, categories or authors)"
                    .to_string(),
                (FilterKey::Match, Some(1))
            )
        );
        assert_eq!(
            err(&["a"], &[], Some(&[])).0,
            "match: list at least one field (title, text, categories or authors)"
        );
        // A pattern that would compile to more than the limit.
        let (message, at) = err(&[r"\w{1000}"], &[], None);
        assert!(
            message.starts_with("include[0]: invalid regex: compiles to more than"),
            "{message}"
        );
        assert_eq!(at, (FilterKey::Include, Some(0)));
    }

    #[test]
    fn the_limits_leave_room_for_ordinary_lists() {
        // A full list of Unicode-aware, case-insensitive word patterns fits.
        let patterns: Vec<String> = (0..MAX_PATTERNS)
            .map(|i| format!(r"(?i)\bword{i}\w*\b"))
            .collect();
        let filter = EntryFilter::new(&patterns, &patterns, None).unwrap();
        assert!(!filter.admits(&entry("A Word63s here", None, &[], &[])));
        // Patterns that each fit but together do not.
        let big = vec![r"\w{4}"; MAX_PATTERNS];
        assert_eq!(
            EntryFilter::new(&[], &big, None).unwrap_err().to_string(),
            "exclude: the patterns together compile to more than 4194304 bytes"
        );
    }

    #[test]
    fn filters_are_equal_when_their_patterns_and_fields_are() {
        let a = EntryFilter::new(&["x"], &["y"], None).unwrap();
        assert_eq!(a, EntryFilter::new(&["x"], &["y"], None).unwrap());
        assert_ne!(a, EntryFilter::new(&["x"], &["z"], None).unwrap());
        assert_ne!(
            a,
            EntryFilter::new(&["x"], &["y"], Some(&["title"])).unwrap()
        );
        assert_eq!(
            a,
            EntryFilter::new(
                &["x"],
                &["y"],
                Some(&["title", "text", "categories", "authors"])
            )
            .unwrap()
        );
    }
}
