//! One document, bytes to entries: the path every fetched document takes.
//!
//! [`read`] decodes and parses the body (`parse`, which decides the
//! encoding), holds it to the intake limits (`parse::bound`), normalizes its
//! entries, and reads the feed's own facts: title, home page, language, TTL
//! and how its bytes were decoded. The poller calls it, and so does the
//! conformance test, so the test checks the pipeline itself rather than a
//! copy of it. [`Document::filter`] then drops what the source's
//! include/exclude filters keep out, before anything is stored. It is pure:
//! the time and the URLs come in as arguments.

use chrono::{DateTime, Utc};
use url::Url;

use crate::filter::EntryFilter;
use crate::model::Entry;
use crate::normalize::{self, Context};
use crate::parse::{self, Cuts, EncodingStatus, Limits, ParseError};

/// What the transport says about a document.
#[derive(Debug, Clone, Copy, Default)]
pub struct DocumentMeta<'a> {
    /// The HTTP `Content-Type`, whose charset is a label of the encoding.
    pub content_type: Option<&'a str>,
    /// The URL the document was read from, after redirects and without
    /// userinfo: relative links resolve against it.
    pub url: Option<&'a Url>,
    /// The HTTP `Content-Language`.
    pub content_language: Option<&'a str>,
}

/// What reading a document takes besides the document.
#[derive(Debug, Clone, Copy)]
pub struct Reading<'a> {
    /// The source's configured name.
    pub source: &'a str,
    /// What one document may bring in.
    pub limits: &'a Limits,
    /// Query parameters dropped from canonical links.
    pub tracking: &'a [String],
    /// The time of this poll.
    pub now: DateTime<Utc>,
}

/// A document read: its entries and the feed's own facts.
#[derive(Debug)]
pub struct Document {
    /// The entries, normalized, within the intake limits.
    pub entries: Vec<Entry>,
    /// The feed's own title, as plain text.
    pub title: Option<String>,
    /// The feed's home page, absolute.
    pub home_page: Option<String>,
    /// The feed's language (its own, else the HTTP `Content-Language`).
    pub language: Option<String>,
    /// How the bytes were decoded.
    pub encoding: EncodingStatus,
    /// The publisher's minimum poll interval (RSS `<ttl>`), in seconds.
    pub ttl_secs: Option<u64>,
    /// What the intake limits cut.
    pub cuts: Cuts,
    /// What the intake limits cut, one line per kind of cut, naming the
    /// limit.
    pub cut_notes: Vec<String>,
    /// How many entries [`Document::filter`] dropped.
    pub excluded: usize,
}

impl Document {
    /// What the source's status says about this document, one line each:
    /// a label that did not hold or bytes replaced, each kind of cut, then
    /// how many entries the source's filters excluded.
    pub fn notes(&self) -> Vec<String> {
        let excluded = match self.excluded {
            0 => None,
            1 => Some("1 entry excluded by the source's filters".to_string()),
            n => Some(format!("{n} entries excluded by the source's filters")),
        };
        self.encoding
            .note()
            .into_iter()
            .chain(self.cut_notes.iter().cloned())
            .chain(excluded)
            .collect()
    }

    /// Drops the entries `filter` does not admit (a source's `include` and
    /// `exclude`), counting them in [`Document::excluded`].
    pub fn filter(&mut self, filter: &EntryFilter) {
        if filter.is_empty() {
            return;
        }
        let before = self.entries.len();
        self.entries.retain(|entry| filter.admits(entry));
        self.excluded += before - self.entries.len();
    }
}

/// Reads `body`: decodes, parses, bounds and normalizes it, and gathers the
/// feed's facts.
pub fn read(
    body: &[u8],
    meta: &DocumentMeta<'_>,
    reading: &Reading<'_>,
) -> Result<Document, ParseError> {
    let limits = reading.limits;
    let mut parsed = parse::parse_with(body, meta.content_type, meta.url, limits)?;
    let cuts = parse::bound(&mut parsed, limits);
    let entries = normalize::normalize_with_hints(
        &parsed.feed,
        &parsed.hints,
        &Context {
            source: reading.source,
            document_url: meta.url,
            http_language: meta.content_language,
            now: reading.now,
            tracking: reading.tracking,
        },
    );
    let feed = &parsed.feed;
    let cut_notes = cuts.notes(limits);
    Ok(Document {
        entries,
        title: normalize::feed_title(feed),
        home_page: normalize::feed_home_page(feed, meta.url).map(String::from),
        language: normalize::feed_language(feed, meta.content_language),
        encoding: parsed.encoding,
        ttl_secs: feed.ttl.map(|minutes| u64::from(minutes) * 60),
        cuts,
        cut_notes,
        excluded: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_brings_its_entries_facts_and_notes() {
        let (body, _, _) = encoding_rs::WINDOWS_1251.encode(
            "<rss version=\"2.0\"><channel><title>Новости</title><link>/</link>\
             <language>ru</language><ttl>30</ttl>\
             <item><guid>1</guid><title>Правительство утвердило новый бюджет</title></item>\
             <item><guid>2</guid><title>второй</title></item></channel></rss>",
        );
        let url = Url::parse("https://news.example.ru/rss").unwrap();
        let limits = Limits {
            max_entries: 1,
            ..Limits::default()
        };
        let doc = read(
            &body,
            &DocumentMeta {
                content_type: Some("application/rss+xml; charset=utf-8"),
                url: Some(&url),
                content_language: None,
            },
            &Reading {
                source: "ru",
                limits: &limits,
                tracking: &[],
                now: Utc::now(),
            },
        )
        .unwrap();
        assert_eq!(doc.entries.len(), 1);
        assert_eq!(doc.entries[0].title, "Правительство утвердило новый бюджет");
        assert_eq!(doc.title.as_deref(), Some("Новости"));
        assert_eq!(doc.home_page.as_deref(), Some("https://news.example.ru/"));
        assert_eq!(doc.language.as_deref(), Some("ru"));
        assert_eq!(doc.ttl_secs, Some(1800));
        assert_eq!(doc.encoding.name(), "windows-1251");
        assert_eq!(
            doc.notes(),
            [
                "declared UTF-8 (HTTP charset), not valid; detected windows-1251",
                "kept the first 1 of 2 entries ([intake] max_entries)",
            ]
        );
    }

    #[test]
    fn the_source_filter_drops_entries_and_says_how_many() {
        let body = "<rss version=\"2.0\"><channel><title>t</title>\
                    <item><guid>1</guid><title>Sponsored: buy now</title></item>\
                    <item><guid>2</guid><title>News</title></item>\
                    <item><guid>3</guid><title>Ad: flights</title></item></channel></rss>";
        let mut doc = read(
            body.as_bytes(),
            &DocumentMeta::default(),
            &Reading {
                source: "s",
                limits: &Limits::default(),
                tracking: &[],
                now: Utc::now(),
            },
        )
        .unwrap();
        doc.filter(&EntryFilter::default());
        assert_eq!((doc.entries.len(), doc.excluded), (3, 0));
        assert!(doc.notes().is_empty(), "{:?}", doc.notes());
        doc.filter(&EntryFilter::new(&[], &["(?i)^sponsored"], None).unwrap());
        assert_eq!(doc.notes(), ["1 entry excluded by the source's filters"]);
        doc.filter(&EntryFilter::new(&["^News$", "^Sponsored"], &["^Ad:"], None).unwrap());
        let titles: Vec<&str> = doc.entries.iter().map(|e| e.title.as_str()).collect();
        assert_eq!(titles, ["News"]);
        assert_eq!(doc.notes(), ["2 entries excluded by the source's filters"]);
    }
}
