//! Bytes to a feed-rs model: decide the encoding, transcode to UTF-8, parse.
//!
//! feed-rs ignores the HTTP charset and trips over some XML declarations, so
//! the encoding is decided here (`encoding`: byte-order mark, the HTTP
//! `Content-Type` charset, the XML declaration, then UTF-8; chardetng when
//! that label does not hold). The document is transcoded with encoding_rs,
//! its declaration rewritten to say UTF-8, and handed to feed-rs inside a
//! panic guard. Dates go through [`parse_date`], which reads the RFC 822
//! and ISO 8601 variants real feeds use. This module does no I/O.

mod content;

use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Utc};
use url::Url;

mod encoding;

pub use encoding::{
    charset_param, detect_encoding, EncodingStatus, Label, LabelSource, DETECT_BOUND,
};

/// Why a document could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The document is empty.
    #[error("empty document")]
    Empty,
    /// feed-rs refused the document.
    #[error("not a valid feed: {0}")]
    Invalid(String),
    /// feed-rs panicked on the document.
    #[error("feed parser crashed on this document: {0}")]
    Panicked(String),
    /// Elements nest deeper than the limit: refused before parsing.
    #[error("elements nest deeper than {limit} levels ([intake] max_depth)")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
}

/// What one document may bring in. A body within its size cap can still
/// hold tens of thousands of tiny items or one enormous title; these bound
/// what is parsed, normalized and stored of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Deepest element nesting read; a deeper document is refused.
    pub max_depth: usize,
    /// Entries taken from one document (the first ones, which feeds list
    /// newest first); the rest are left out.
    pub max_entries: usize,
    /// Longest title, author name or category, in bytes; longer ones are cut.
    pub max_title: usize,
    /// Longest summary or content, in bytes; longer ones are cut (the
    /// sanitizer closes what the cut left open).
    pub max_text: usize,
    /// Longest URL or id, in bytes; a longer URL is dropped (a cut one would
    /// lead elsewhere), a longer id is replaced by a derived one.
    pub max_url: usize,
    /// Most links, authors, categories or media items of one entry.
    pub max_list: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_depth: 64,
            max_entries: 2_000,
            max_title: 4 * 1024,
            max_text: 1024 * 1024,
            max_url: 8 * 1024,
            max_list: 64,
        }
    }
}

/// What [`bound`] cut from a document, to be said in the source's status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cuts {
    /// Entries in the document, when more than the limit.
    pub entries_over: Option<usize>,
    /// Titles, names and categories cut.
    pub titles: usize,
    /// Summaries and contents cut.
    pub texts: usize,
    /// URLs dropped and ids replaced.
    pub urls: usize,
    /// List items (links, authors, categories, media) left out.
    pub list_items: usize,
}

impl Cuts {
    /// One line per kind of cut, naming the limit that made it.
    pub fn notes(&self, limits: &Limits) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(total) = self.entries_over {
            notes.push(format!(
                "kept the first {} of {total} entries ([intake] max_entries)",
                limits.max_entries
            ));
        }
        let mut say = |count: usize, what: &str, key: &str, limit: usize| {
            if count > 0 {
                notes.push(format!("{what}: {count} ([intake] {key} = {limit})"));
            }
        };
        say(
            self.titles,
            "titles or names cut",
            "max_title",
            limits.max_title,
        );
        say(self.texts, "texts cut", "max_text", limits.max_text);
        say(self.urls, "urls or ids too long", "max_url", limits.max_url);
        say(
            self.list_items,
            "list items left out",
            "max_list",
            limits.max_list,
        );
        notes
    }
}

/// What feed-rs drops of an entry's XML, found by a second, light pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryHints {
    /// The entry's effective `xml:lang` (its own, or inherited).
    pub lang: Option<String>,
    /// The entry's effective `xml:base`, resolved against its ancestors'.
    pub base: Option<String>,
    /// The entry's media as written (`enclosure`, `media:content`,
    /// `media:thumbnail`), URLs not yet resolved: feed-rs resolves them
    /// against the document alone, and keeps a thumbnail only beside
    /// media:content.
    pub media: Vec<MediaHint>,
    /// `feedburner:origLink`: the page a proxied link stands for.
    pub orig_link: Option<String>,
    /// The `xml:lang` the entry's title declares itself, which speaks for
    /// the entry (publish labels the entry and its texts with one language).
    pub title_lang: Option<String>,
    /// RSS `<body>` / `xhtml:body` (its markup) or `<fullitem>` (its
    /// escaped HTML, unescaped): the entry's content, as HTML, where
    /// feed-rs reads none.
    pub body: Option<String>,
    /// JSON Feed's `external_url`: the page elsewhere the item is about
    /// (feed-rs keeps it only as a second, unlabelled link).
    pub external: Option<String>,
}

/// One media element of an entry, as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaHint {
    /// The `url` attribute, unresolved.
    pub url: String,
    /// The `type` attribute.
    pub mime_type: Option<String>,
    /// The `length` (or `fileSize`) attribute.
    pub length: Option<u64>,
}

/// A parsed document and how it was decoded.
#[derive(Debug)]
pub struct Parsed {
    /// The feed as feed-rs reads it.
    pub feed: feed_rs::model::Feed,
    /// One per entry of `feed`, in order; empty when the second pass could
    /// not match the entries up.
    pub hints: Vec<EntryHints>,
    /// How the bytes were decoded: the encoding, what named it, the label
    /// it replaced when that did not hold, and whether bytes were replaced.
    pub encoding: EncodingStatus,
}

/// Parses `body`, given the HTTP `Content-Type` (if any) and the document's
/// URL, against which feed-rs resolves relative links, with the default
/// [`Limits`] on nesting.
pub fn parse(
    body: &[u8],
    content_type: Option<&str>,
    base: Option<&Url>,
) -> Result<Parsed, ParseError> {
    parse_with(body, content_type, base, &Limits::default())
}

/// [`parse`], refusing documents nested deeper than `limits.max_depth`
/// before feed-rs reads them.
pub fn parse_with(
    body: &[u8],
    content_type: Option<&str>,
    base: Option<&Url>,
    limits: &Limits,
) -> Result<Parsed, ParseError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ParseError::Empty);
    }
    let charset = content_type.and_then(charset_param);
    let tld = base
        .and_then(Url::domain)
        .and_then(|domain| domain.rsplit('.').next());
    let (text, encoding) = encoding::decode_document(body, charset, tld);
    let text = with_utf8_declaration(&text);
    let text = with_fixups(&text);

    let parser = feed_rs::parser::Builder::new()
        .base_uri(base.map(Url::as_str))
        // Never let feed-rs invent ids: an empty id tells normalize to
        // derive a stable one itself.
        .id_generator(|_, _, _| String::new())
        // Sanitizing is normalize's job, with settings that keep `dir`/`lang`.
        .sanitize_content(false)
        .timestamp_parser(parse_date)
        .build();
    // The light pass runs first: it is also the depth check, so nothing
    // deeper than the limit reaches feed-rs.
    let mut hints = if text.trim_start().starts_with('<') {
        xml_hints(&text, base, limits.max_depth)?
    } else {
        json_hints(&text)
    };
    let result = catch_unwind(AssertUnwindSafe(|| parser.parse(text.as_bytes())));
    match result {
        Ok(Ok(mut feed)) => {
            if feed.language.is_none() && text.trim_start().starts_with('<') {
                feed.language = feed_language_hint(&text);
            }
            if hints.len() != feed.entries.len() {
                hints.clear();
            }
            Ok(Parsed {
                feed,
                hints,
                encoding,
            })
        }
        Ok(Err(err)) => Err(ParseError::Invalid(err.to_string())),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(ParseError::Panicked(what))
        }
    }
}

/// Holds a parsed document to `limits`: leaves out the entries past
/// `max_entries` and list items past `max_list`, cuts over-long titles and
/// texts (at a character boundary), drops over-long URLs, and blanks
/// over-long ids (normalize then derives a stable one). Returns what it cut.
pub fn bound(parsed: &mut Parsed, limits: &Limits) -> Cuts {
    let mut cuts = Cuts::default();
    let feed = &mut parsed.feed;
    if feed.entries.len() > limits.max_entries {
        cuts.entries_over = Some(feed.entries.len());
        feed.entries.truncate(limits.max_entries);
        if !parsed.hints.is_empty() {
            parsed.hints.truncate(limits.max_entries);
        }
    }
    if let Some(title) = feed.title.as_mut() {
        cuts.titles += usize::from(cut(&mut title.content, limits.max_title));
    }
    for entry in &mut feed.entries {
        if entry.id.len() > limits.max_url {
            entry.id.clear();
            cuts.urls += 1;
        }
        if let Some(title) = entry.title.as_mut() {
            cuts.titles += usize::from(cut(&mut title.content, limits.max_title));
        }
        if let Some(summary) = entry.summary.as_mut() {
            cuts.texts += usize::from(cut(&mut summary.content, limits.max_text));
        }
        if let Some(body) = entry.content.as_mut().and_then(|c| c.body.as_mut()) {
            cuts.texts += usize::from(cut(body, limits.max_text));
        }
        cuts.list_items += shorten(&mut entry.links, limits.max_list)
            + shorten(&mut entry.authors, limits.max_list)
            + shorten(&mut entry.contributors, limits.max_list)
            + shorten(&mut entry.categories, limits.max_list)
            + shorten(&mut entry.media, limits.max_list);
        let before = entry.links.len();
        entry.links.retain(|link| link.href.len() <= limits.max_url);
        cuts.urls += before - entry.links.len();
        for person in entry
            .authors
            .iter_mut()
            .chain(entry.contributors.iter_mut())
        {
            if let Some(name) = person.name.as_mut() {
                cuts.titles += usize::from(cut(name, limits.max_title));
            }
            for url in [&mut person.uri, &mut person.email] {
                if url.as_ref().is_some_and(|u| u.len() > limits.max_url) {
                    *url = None;
                    cuts.urls += 1;
                }
            }
        }
        for category in &mut entry.categories {
            cuts.titles += usize::from(cut(&mut category.term, limits.max_title));
            if let Some(label) = category.label.as_mut() {
                cuts.titles += usize::from(cut(label, limits.max_title));
            }
        }
        for media in &mut entry.media {
            cuts.list_items += shorten(&mut media.content, limits.max_list)
                + shorten(&mut media.thumbnails, limits.max_list);
            let before = media.content.len() + media.thumbnails.len();
            media.content.retain(|c| {
                c.url
                    .as_ref()
                    .is_none_or(|u| u.as_str().len() <= limits.max_url)
            });
            media
                .thumbnails
                .retain(|t| t.image.uri.len() <= limits.max_url);
            cuts.urls += before - media.content.len() - media.thumbnails.len();
            if let Some(description) = media.description.as_mut() {
                cuts.texts += usize::from(cut(&mut description.content, limits.max_text));
            }
        }
    }
    for hints in &mut parsed.hints {
        cuts.list_items += shorten(&mut hints.media, limits.max_list);
        let before = hints.media.len();
        hints.media.retain(|m| m.url.len() <= limits.max_url);
        cuts.urls += before - hints.media.len();
        for url in [&mut hints.orig_link, &mut hints.external, &mut hints.base] {
            if url.as_ref().is_some_and(|u| u.len() > limits.max_url) {
                *url = None;
                cuts.urls += 1;
            }
        }
        // A language tag is short (BCP 47 tags in use are under 35 bytes).
        if hints.lang.as_ref().is_some_and(|l| l.len() > 64) {
            hints.lang = None;
        }
    }
    cuts
}

/// Cuts `text` to at most `max` bytes at a character boundary; true if it
/// was longer.
fn cut(text: &mut String, max: usize) -> bool {
    if text.len() <= max {
        return false;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    true
}

/// Leaves out the items of `list` past `max`; returns how many.
fn shorten<T>(list: &mut Vec<T>, max: usize) -> usize {
    let over = list.len().saturating_sub(max);
    list.truncate(max);
    over
}

/// Effective (lang, base, base set by some xml:base) of an open element.
/// Shared: an element without `xml:lang` or `xml:base` reuses its parent's.
type Frame = std::rc::Rc<(Option<String>, Option<Url>, bool)>;

/// An entry child whose text the light pass keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Capture {
    /// `feedburner:origLink`: its text.
    OrigLink,
    /// `dc:language` (or `language`) of an item: its text.
    Language,
    /// RSS `<body>` / `xhtml:body`: its XHTML markup, as written.
    Body,
    /// RSS `<fullitem>`: its text, which is escaped HTML.
    FullItem,
}

/// Per entry (`entry` or `item` element): effective `xml:lang` and
/// `xml:base`, and `*:thumbnail` URLs. Empty if the XML cannot be read; an
/// error if elements nest deeper than `max_depth`.
fn xml_hints(
    text: &str,
    document: Option<&Url>,
    max_depth: usize,
) -> Result<Vec<EntryHints>, ParseError> {
    use quick_xml::events::Event;

    let mut reader = quick_xml::Reader::from_str(text);
    // The bottom frame is the document's.
    let mut stack: Vec<Frame> = vec![Frame::new((None, document.cloned(), false))];
    let mut out: Vec<EntryHints> = Vec::new();
    // Stack depth at which the current entry opened.
    let mut open_entry: Option<usize> = None;
    // The entry child being captured: what, the stack depth inside it, and
    // where its content starts.
    let mut capture: Option<(Capture, usize, usize)> = None;
    let mut captured = String::new();
    loop {
        let before = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        let event = match reader.read_event() {
            Ok(event) => event,
            Err(_) => return Ok(Vec::new()),
        };
        if let Some((Capture::OrigLink | Capture::Language, _, _)) = capture {
            match &event {
                Event::Text(text) => captured.push_str(text.xml10_content().trim()),
                Event::CData(text) => captured.push_str(text.xml10_content().trim()),
                Event::GeneralRef(r) => captured.push_str(match r.xml10_content().as_ref() {
                    "amp" => "&",
                    "lt" => "<",
                    "gt" => ">",
                    "quot" => "\"",
                    "apos" => "'",
                    _ => "",
                }),
                _ => {}
            }
        }
        let (element, has_children) = match &event {
            Event::Start(e) => (e, true),
            Event::Empty(e) => (e, false),
            Event::End(_) => {
                if let Some((what, depth, content_start)) = capture {
                    if depth == stack.len() {
                        capture = None;
                        let value = std::mem::take(&mut captured);
                        if let Some(hints) = out.last_mut() {
                            let inner = text.get(content_start..before).unwrap_or("");
                            keep_capture(hints, what, value, inner);
                        }
                    }
                }
                stack.pop();
                if open_entry == Some(stack.len()) {
                    open_entry = None;
                }
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        if has_children && stack.len() > max_depth {
            return Err(ParseError::TooDeep { limit: max_depth });
        }
        let parent = stack.last().cloned().unwrap_or_default();
        let (mut lang, mut base, mut explicit) = (None, None, false);
        let mut own = false;
        let mut own_lang = None;
        let mut media = MediaHint::default();
        for attr in element.attributes().flatten() {
            let Ok(value) = attr.normalized_value(quick_xml::XmlVersion::Implicit1_0) else {
                continue;
            };
            if attr.key.as_ref() == "xml:lang" {
                own_lang = Some(value.trim().to_string());
            }
            match attr.key.as_ref() {
                // An empty xml:lang means "no language".
                "xml:lang" | "xml:base" if !own => {
                    own = true;
                    (lang, base, explicit) = (*parent).clone();
                    apply_xml_attr(
                        attr.key.as_ref(),
                        &value,
                        &mut lang,
                        &mut base,
                        &mut explicit,
                    );
                }
                "xml:lang" | "xml:base" => {
                    apply_xml_attr(
                        attr.key.as_ref(),
                        &value,
                        &mut lang,
                        &mut base,
                        &mut explicit,
                    );
                }
                "url" => media.url = value.trim().to_string(),
                "type" => media.mime_type = Some(value.trim().to_string()),
                "length" | "fileSize" => media.length = value.trim().parse().ok(),
                _ => {}
            }
        }
        let frame = if own {
            Frame::new((lang, base, explicit))
        } else {
            parent
        };
        let local = element.local_name();
        let name = local.as_ref();
        // A child of the open entry (the entry's frame is on the stack).
        let entry_child = open_entry.is_some_and(|depth| depth + 1 == stack.len());
        if (name == "entry" || name == "item") && open_entry.is_none() {
            out.push(EntryHints {
                lang: frame.0.clone(),
                base: frame.1.clone().filter(|_| frame.2).map(String::from),
                ..EntryHints::default()
            });
            if has_children {
                open_entry = Some(stack.len());
            }
        } else {
            if entry_child && has_children && capture.is_none() {
                let what = match name {
                    "origLink" => Some(Capture::OrigLink),
                    "language" => Some(Capture::Language),
                    "body" => Some(Capture::Body),
                    "fullitem" => Some(Capture::FullItem),
                    _ => None,
                };
                if let Some(what) = what {
                    let content_start =
                        usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
                    capture = Some((what, stack.len() + 1, content_start));
                }
            }
            if entry_child && name == "title" {
                if let (Some(lang), Some(hints)) = (own_lang.clone(), out.last_mut()) {
                    hints.title_lang = Some(lang).filter(|l| !l.is_empty());
                }
            }
            if matches!(name, "enclosure" | "content" | "thumbnail")
                && open_entry.is_some()
                && !media.url.is_empty()
            {
                if let Some(hints) = out.last_mut() {
                    hints.media.push(media);
                }
            }
        }
        if has_children {
            stack.push(frame);
        }
    }
    Ok(out)
}

/// Keeps what was captured of an entry child in its hints.
fn keep_capture(hints: &mut EntryHints, what: Capture, value: String, inner: &str) {
    match what {
        Capture::OrigLink => {
            hints.orig_link = Some(value).filter(|v| !v.is_empty());
        }
        Capture::Language => {
            if hints.lang.is_none() {
                hints.lang = Some(value).filter(|v| !v.is_empty());
            }
        }
        Capture::Body => {
            hints.body = Some(inner.trim().to_string()).filter(|b| !b.is_empty());
        }
        Capture::FullItem => {
            let text = content::text_of(inner);
            hints.body = Some(text.trim().to_string()).filter(|b| !b.is_empty());
        }
    }
}

/// What the document says of its own language where feed-rs does not look:
/// a channel's `dc:language`, else the `xml:lang` of the feed's title.
/// Reads up to the first entry.
fn feed_language_hint(text: &str) -> Option<String> {
    use quick_xml::events::Event;

    let mut reader = quick_xml::Reader::from_str(text);
    let mut depth = 0usize;
    let mut in_language = false;
    let mut title_lang = None;
    loop {
        let event = reader.read_event().ok()?;
        match &event {
            Event::Start(e) => {
                depth += 1;
                let local = e.local_name();
                let name = local.as_ref();
                if matches!(name, "entry" | "item") {
                    break;
                }
                // Atom: feed > title; RSS: rss > channel > language.
                in_language = name == "language" && depth <= 3;
                if name == "title" && depth == 2 && title_lang.is_none() {
                    title_lang = e
                        .attributes()
                        .flatten()
                        .find(|a| a.key.as_ref() == "xml:lang")
                        .and_then(|a| a.normalized_value(quick_xml::XmlVersion::Implicit1_0).ok())
                        .map(|v| v.trim().to_string())
                        .filter(|v| !v.is_empty());
                }
            }
            Event::Text(t) if in_language => {
                let value = t.xml10_content().trim().to_string();
                if !value.is_empty() {
                    return Some(value);
                }
            }
            Event::Empty(e) if matches!(e.local_name().as_ref(), "entry" | "item") => break,
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                in_language = false;
            }
            Event::Eof => break,
            _ => {}
        }
    }
    title_lang
}

/// Applies one `xml:lang` or `xml:base` attribute to an element's frame.
fn apply_xml_attr(
    key: &str,
    value: &str,
    lang: &mut Option<String>,
    base: &mut Option<Url>,
    explicit: &mut bool,
) {
    if key == "xml:lang" {
        // An empty xml:lang means "no language".
        *lang = Some(value.trim().to_string()).filter(|v| !v.is_empty());
    } else {
        *base = match base.as_ref() {
            Some(parent) => parent.join(value.trim()).ok(),
            None => Url::parse(value.trim()).ok(),
        };
        *explicit = true;
    }
}

/// Per JSON Feed item: its `image` and `banner_image`, and its `language`
/// (JSON Feed 1.1), which feed-rs drops.
fn json_hints(text: &str) -> Vec<EntryHints> {
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(text) else {
        return Vec::new();
    };
    let Some(items) = doc.get("items").and_then(|i| i.as_array()) else {
        return Vec::new();
    };
    items
        .iter()
        .map(|item| EntryHints {
            media: ["image", "banner_image"]
                .iter()
                .filter_map(|key| item.get(*key)?.as_str())
                .map(|url| MediaHint {
                    url: url.trim().to_string(),
                    ..MediaHint::default()
                })
                .collect(),
            lang: item
                .get("language")
                .and_then(|l| l.as_str())
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty()),
            external: item
                .get("external_url")
                .and_then(|u| u.as_str())
                .map(|u| u.trim().to_string())
                .filter(|u| !u.is_empty()),
            ..EntryHints::default()
        })
        .collect()
}

/// Parses the dates real feeds carry: RFC 3339 and its sloppy ISO 8601
/// cousins (no zone means UTC; a date alone means midnight UTC), and
/// RFC 822 with named zones, long, lowercase or non-English month and day
/// names, single-digit hours, and missing seconds or zone. Only years 1 to
/// 9999 are dates: Atom's dates (RFC 3339) cannot write any other.
pub fn parse_date(text: &str) -> Option<DateTime<Utc>> {
    any_date(text).filter(|t| (1..=9999).contains(&t.year()))
}

fn any_date(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    if text.as_bytes().first().is_some_and(u8::is_ascii_digit) && text.contains('-') {
        if let Some(t) = parse_iso(text) {
            return Some(t);
        }
    }
    parse_rfc822(text)
}

fn parse_iso(text: &str) -> Option<DateTime<Utc>> {
    let text = text.replacen(' ', "T", 1);
    if let Ok(t) = DateTime::parse_from_rfc3339(&text) {
        return Some(t.with_timezone(&Utc));
    }
    // A zone without a colon: +0300.
    for format in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M%z"] {
        if let Ok(t) = DateTime::parse_from_str(&text, format) {
            return Some(t.with_timezone(&Utc));
        }
    }
    let bare = text.trim_end_matches('Z');
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(bare, format) {
            return Some(t.and_utc());
        }
    }
    NaiveDate::parse_from_str(bare, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// Month names (English, French, German, Spanish, Italian, Portuguese,
/// Dutch), lowercase, by their first letters, to the month number.
const MONTHS: &[(&str, u32)] = &[
    ("jan", 1),
    ("janv", 1),
    ("januar", 1),
    ("enero", 1),
    ("ene", 1),
    ("gen", 1),
    ("genn", 1),
    ("janeiro", 1),
    ("januari", 1),
    ("feb", 2),
    ("févr", 2),
    ("fevr", 2),
    ("février", 2),
    ("februar", 2),
    ("febrero", 2),
    ("febbraio", 2),
    ("fev", 2),
    ("fevereiro", 2),
    ("februari", 2),
    ("mar", 3),
    ("mars", 3),
    ("märz", 3),
    ("mär", 3),
    ("marzo", 3),
    ("março", 3),
    ("maart", 3),
    ("mrt", 3),
    ("apr", 4),
    ("avr", 4),
    ("avril", 4),
    ("april", 4),
    ("abril", 4),
    ("abr", 4),
    ("aprile", 4),
    ("may", 5),
    ("mai", 5),
    ("mayo", 5),
    ("maggio", 5),
    ("mag", 5),
    ("maio", 5),
    ("mei", 5),
    ("jun", 6),
    ("juin", 6),
    ("juni", 6),
    ("junio", 6),
    ("giugno", 6),
    ("giu", 6),
    ("junho", 6),
    ("jul", 7),
    ("juil", 7),
    ("juillet", 7),
    ("juli", 7),
    ("julio", 7),
    ("luglio", 7),
    ("lug", 7),
    ("julho", 7),
    ("aug", 8),
    ("août", 8),
    ("aout", 8),
    ("august", 8),
    ("agosto", 8),
    ("ago", 8),
    ("augustus", 8),
    ("sep", 9),
    ("sept", 9),
    ("septembre", 9),
    ("september", 9),
    ("septiembre", 9),
    ("settembre", 9),
    ("set", 9),
    ("setembro", 9),
    ("oct", 10),
    ("octobre", 10),
    ("oktober", 10),
    ("okt", 10),
    ("octubre", 10),
    ("ottobre", 10),
    ("ott", 10),
    ("outubro", 10),
    ("out", 10),
    ("nov", 11),
    ("novembre", 11),
    ("november", 11),
    ("noviembre", 11),
    ("novembro", 11),
    ("dec", 12),
    ("déc", 12),
    ("décembre", 12),
    ("decembre", 12),
    ("dezember", 12),
    ("dez", 12),
    ("diciembre", 12),
    ("dic", 12),
    ("dicembre", 12),
    ("dezembro", 12),
    ("december", 12),
];

/// Named zones seen in feeds, as offsets in minutes east of UTC.
const ZONES: &[(&str, i32)] = &[
    ("UT", 0),
    ("UTC", 0),
    ("GMT", 0),
    ("Z", 0),
    ("WET", 0),
    ("EST", -300),
    ("EDT", -240),
    ("CST", -360),
    ("CDT", -300),
    ("MST", -420),
    ("MDT", -360),
    ("PST", -480),
    ("PDT", -420),
    ("AKST", -540),
    ("AKDT", -480),
    ("HST", -600),
    ("BST", 60),
    ("CET", 60),
    ("CEST", 120),
    ("MET", 60),
    ("MEST", 120),
    ("EET", 120),
    ("EEST", 180),
    ("MSK", 180),
    ("JST", 540),
    ("KST", 540),
    ("AEST", 600),
    ("AEDT", 660),
    ("NZST", 720),
    ("NZDT", 780),
];

fn parse_rfc822(text: &str) -> Option<DateTime<Utc>> {
    // Words, without commas; a leading day name (any language) dropped.
    let cleaned = text.replace(',', " ");
    let mut words: Vec<&str> = cleaned.split_whitespace().collect();
    if words
        .first()
        .is_some_and(|w| w.chars().all(char::is_alphabetic) && w.chars().count() > 1)
        && words
            .get(1)
            .is_some_and(|w| w.chars().any(|c| c.is_ascii_digit()))
        // "Mar 27 2025" starts with the month, not a day name.
        && !(month(words[0]).is_some() && words.get(1).is_some_and(|w| w.len() <= 2))
    {
        words.remove(0);
    }
    // Day, month (either order), year.
    let (day, month_no, year, rest) = match words.as_slice() {
        [d, m, y, rest @ ..] if d.parse::<u32>().is_ok() && month(m).is_some() => {
            (d.parse::<u32>().ok()?, month(m)?, *y, rest)
        }
        [m, d, y, rest @ ..] if month(m).is_some() => (
            d.trim_end_matches(|c: char| !c.is_ascii_digit())
                .parse::<u32>()
                .ok()?,
            month(m)?,
            *y,
            rest,
        ),
        _ => return None,
    };
    // Negative years are not news; two-digit years are 1970-2069.
    let year: i32 = match year.parse().ok()? {
        y @ 0..=69 => y + 2000,
        y @ 70..=99 => y + 1900,
        y @ 100.. => y,
        _ => return None,
    };
    let date = NaiveDate::from_ymd_opt(year, month_no, day)?;
    let (time, zone) = match rest {
        [] => ("00:00:00", None),
        [t] if t.contains(':') => (*t, None),
        [t, z, ..] => (*t, Some(*z)),
        [_] => return None,
    };
    let parts: Vec<u32> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let (h, m, sec) = match parts.as_slice() {
        [h, m] => (*h, *m, 0),
        [h, m, s] => (*h, *m, *s),
        _ => return None,
    };
    // Some feeds say 24:00 for midnight.
    let naive = date.and_hms_opt(h % 24, m, sec.min(59))?;
    let offset_minutes = match zone {
        None => 0,
        Some(z) => zone_offset(z)?,
    };
    // Checked: a date at the end of chrono's range plus an offset is past it.
    let utc = naive.checked_sub_signed(chrono::Duration::minutes(i64::from(offset_minutes)))?;
    Some(utc.and_utc())
}

fn month(word: &str) -> Option<u32> {
    let word = word.trim_end_matches('.').to_lowercase();
    MONTHS
        .iter()
        .find(|(name, _)| *name == word)
        .map(|(_, n)| *n)
        .or_else(|| {
            // Long English names: "March", "September".
            let short: String = word.chars().take(3).collect();
            MONTHS
                .iter()
                .find(|(name, _)| *name == short && word.len() > 3)
                .map(|(_, n)| *n)
        })
}

fn zone_offset(zone: &str) -> Option<i32> {
    if let Some((_, minutes)) = ZONES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(zone))
    {
        return Some(*minutes);
    }
    let (sign, digits) = match zone.as_bytes().first()? {
        b'+' => (1, &zone[1..]),
        b'-' => (-1, &zone[1..]),
        _ => return None,
    };
    let digits: String = digits.chars().filter(char::is_ascii_digit).collect();
    if digits.len() != 4 {
        return None;
    }
    let hours: i32 = digits[..2].parse().ok()?;
    let minutes: i32 = digits[2..].parse().ok()?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some(sign * (hours * 60 + minutes))
}

/// Atom 0.3's namespace, which feed-rs does not know.
const ATOM_03: &str = "http://purl.org/atom/ns#";
/// RSS versions feed-rs reads; any other `<rss>` is read as 2.0.
const RSS_VERSIONS: &[&str] = &["2.0", "0.91", "0.92"];

/// Rewrites what feed-rs refuses but feeds in the wild send: an `<rss>`
/// root without a version it knows (read as 2.0), Atom 0.3 (read as Atom
/// 1.0, with its renamed elements renamed back), and Atom text constructs
/// of media types or modes feed-rs refuses or passes on undecoded
/// (`content::rewrite`).
fn with_fixups(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    if let Some((start, end)) = root_tag(text) {
        let tag = &text[start..end];
        if tag.starts_with("<rss")
            && tag[4..].starts_with(|c: char| c.is_whitespace() || c == '>' || c == '/')
        {
            let version = tag.find("version=").and_then(|at| {
                let rest = &tag[at + "version=".len()..];
                let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
                let value = &rest[1..];
                Some((at, value[..value.find(quote)?].to_string()))
            });
            let fixed = match version {
                Some((_, v)) if RSS_VERSIONS.contains(&v.trim()) => None,
                Some((at, v)) => Some(tag.replacen(
                    &tag[at..at + "version=".len() + v.len() + 2],
                    "version=\"2.0\"",
                    1,
                )),
                None => Some(format!("<rss version=\"2.0\"{}", &tag[4..])),
            };
            if let Some(fixed) = fixed {
                out = Cow::Owned(format!("{}{fixed}{}", &text[..start], &text[end..]));
            }
        }
    }
    // An `<rss>` without a channel is an empty feed, not a broken one.
    if root_tag(&out).is_some_and(|(start, _)| out[start..].starts_with("<rss"))
        && !out.contains("<channel")
    {
        if let (Some((_, end)), Some(close)) = (root_tag(&out), out.rfind("</rss>")) {
            if close >= end {
                out = Cow::Owned(format!(
                    "{}<channel>{}</channel>{}",
                    &out[..end],
                    &out[end..close],
                    &out[close..]
                ));
            }
        }
    }
    if out.contains(ATOM_03) {
        let mut atom = out.replace(ATOM_03, "http://www.w3.org/2005/Atom");
        for (old, new) in [
            ("modified", "updated"),
            ("issued", "published"),
            ("tagline", "subtitle"),
            ("copyright", "rights"),
        ] {
            atom = atom
                .replace(&format!("<{old}>"), &format!("<{new}>"))
                .replace(&format!("<{old} "), &format!("<{new} "))
                .replace(&format!("</{old}>"), &format!("</{new}>"));
        }
        out = Cow::Owned(atom);
    }
    if let Some(rewritten) = content::rewrite(&out) {
        out = Cow::Owned(rewritten);
    }
    out
}

/// Byte range of the root element's start tag, skipping the declaration,
/// processing instructions, comments and the doctype.
fn root_tag(text: &str) -> Option<(usize, usize)> {
    let mut at = 0;
    loop {
        let start = at + text.get(at..)?.find('<')?;
        let rest = &text[start..];
        let skip_to = if rest.starts_with("<?") {
            rest.find("?>").map(|e| e + 2)
        } else if rest.starts_with("<!--") {
            rest.find("-->").map(|e| e + 3)
        } else if rest.starts_with("<!") {
            rest.find('>').map(|e| e + 1)
        } else {
            let end = rest.find('>')? + 1;
            return Some((start, start + end));
        };
        at = start + skip_to?;
    }
}

/// Replaces the XML declaration (if any) with one that says UTF-8, so
/// feed-rs does not decode the already-decoded text a second time.
fn with_utf8_declaration(text: &str) -> Cow<'_, str> {
    let trimmed = text.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    if let Some(rest) = trimmed.strip_prefix("<?xml") {
        if rest.starts_with(|c: char| c.is_whitespace()) {
            if let Some(end) = rest.find("?>") {
                let mut out = String::with_capacity(text.len());
                out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
                out.push_str(&rest[end + 2..]);
                return Cow::Owned(out);
            }
        }
    }
    if trimmed.len() != text.len() {
        return Cow::Owned(trimmed.to_string());
    }
    Cow::Borrowed(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RSS document of `items` items, each built by `item(i)`.
    fn rss(items: usize, item: impl Fn(usize) -> String) -> String {
        let mut doc =
            String::from("<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>t</title>");
        for i in 0..items {
            doc.push_str(&item(i));
        }
        doc.push_str("</channel></rss>");
        doc
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_refused_before_feed_rs() {
        let nested = |depth: usize| {
            // rss, channel, item, then `depth - 3` more levels.
            let open = "<x>".repeat(depth - 3);
            let close = "</x>".repeat(depth - 3);
            format!("<rss version=\"2.0\"><channel><item><title>deep</title>{open}{close}</item></channel></rss>")
        };
        let limits = Limits::default();
        let fits = parse_with(nested(64).as_bytes(), None, None, &limits).unwrap();
        assert_eq!(fits.feed.entries.len(), 1);
        for depth in [65, 100_000] {
            let err = parse_with(nested(depth).as_bytes(), None, None, &limits).unwrap_err();
            assert!(
                matches!(err, ParseError::TooDeep { limit: 64 }),
                "{depth}: {err}"
            );
        }
        assert_eq!(
            parse_with(nested(65).as_bytes(), None, None, &limits)
                .unwrap_err()
                .to_string(),
            "elements nest deeper than 64 levels ([intake] max_depth)"
        );
        // xml:lang on every level shares nothing it does not change.
        let langs = format!(
            "<rss version=\"2.0\"><channel>{}<item><title>x</title></item>{}</channel></rss>",
            "<g xml:lang=\"ar\">".repeat(50),
            "</g>".repeat(50)
        );
        let hints = xml_hints(&langs, None, limits.max_depth).unwrap();
        assert_eq!(hints.len(), 1);
        assert_eq!(hints[0].lang.as_deref(), Some("ar"));
    }

    #[test]
    fn bound_cuts_to_the_limits_and_says_what() {
        let limits = Limits {
            max_depth: 64,
            max_entries: 3,
            max_title: 10,
            max_text: 20,
            max_url: 40,
            max_list: 2,
        };
        let long_link = format!("https://example.com/{}", "a".repeat(40));
        let doc = rss(5, |i| {
            format!(
                "<item><guid>g{i}</guid><title>عنوان طويل جدا {i}</title>\
                 <link>{}</link><description>{}</description>\
                 <category>a</category><category>b</category><category>c</category></item>",
                if i == 0 {
                    long_link.as_str()
                } else {
                    "https://example.com/ok"
                },
                "x".repeat(if i == 1 { 50 } else { 5 }),
            )
        });
        let mut parsed = parse(doc.as_bytes(), None, None).unwrap();
        let cuts = bound(&mut parsed, &limits);
        assert_eq!(
            cuts,
            Cuts {
                entries_over: Some(5),
                titles: 3,
                texts: 1,
                urls: 1,
                list_items: 3,
            }
        );
        let entries = &parsed.feed.entries;
        assert_eq!(entries.len(), 3);
        assert_eq!(parsed.hints.len(), 3);
        let title = &entries[0].title.as_ref().unwrap().content;
        // Cut at a character boundary: "عنوان" is ten bytes.
        assert_eq!(title, "عنوان");
        assert!(entries[0].links.is_empty());
        assert_eq!(entries[1].links.len(), 1);
        assert_eq!(entries[1].summary.as_ref().unwrap().content.len(), 20);
        assert_eq!(entries[2].categories.len(), 2);
        assert_eq!(
            cuts.notes(&limits),
            [
                "kept the first 3 of 5 entries ([intake] max_entries)",
                "titles or names cut: 3 ([intake] max_title = 10)",
                "texts cut: 1 ([intake] max_text = 20)",
                "urls or ids too long: 1 ([intake] max_url = 40)",
                "list items left out: 3 ([intake] max_list = 2)",
            ]
        );
        // Within the limits, nothing is touched.
        let mut small = parse(
            rss(2, |i| {
                format!("<item><guid>g{i}</guid><title>t</title></item>")
            })
            .as_bytes(),
            None,
            None,
        )
        .unwrap();
        assert_eq!(bound(&mut small, &Limits::default()), Cuts::default());
        assert!(Cuts::default().notes(&limits).is_empty());
    }

    fn check_encoding(body: &[u8], http: Option<&str>, expected: &str) {
        assert_eq!(
            detect_encoding(body, http).name(),
            expected,
            "{body:?} / {http:?}"
        );
    }

    #[test]
    fn encoding_order() {
        let decl_1256 = b"<?xml version=\"1.0\" encoding=\"windows-1256\"?><rss/>";
        check_encoding(decl_1256, None, "windows-1256");
        check_encoding(decl_1256, Some("iso-8859-6"), "ISO-8859-6");
        check_encoding(
            b"\xEF\xBB\xBF<?xml version=\"1.0\" encoding=\"windows-1256\"?>",
            Some("iso-8859-6"),
            "UTF-8",
        );
        check_encoding(b"<?xml version='1.0' encoding='koi8-r'?>", None, "KOI8-R");
        check_encoding(b"<?xml version=\"1.0\"?><rss/>", None, "UTF-8");
        check_encoding(b"<rss/>", None, "UTF-8");
        check_encoding(b"<\0?\0x\0m\0l\0", None, "UTF-16LE");
        check_encoding(
            b"<?xml version=\"1.0\" encoding=\"utf-16\"?>",
            None,
            "UTF-8",
        );
        check_encoding(b"<rss/>", Some("no-such-charset"), "UTF-8");
    }

    #[test]
    fn dates() {
        let check = |text: &str, expected: Option<&str>| {
            let got = parse_date(text).map(|t| t.to_rfc3339());
            assert_eq!(got.as_deref(), expected, "{text:?}");
        };
        let t = Some("2025-03-27T10:00:00+00:00");
        check("2025-03-27T10:00:00Z", t);
        check("2025-03-27T13:00:00+03:00", t);
        check("2025-03-27T13:00:00+0300", t);
        check("2025-03-27 10:00:00", t);
        check("2025-03-27T10:00:00", t);
        check("2025-03-27T10:00", t);
        check("2025-03-27", Some("2025-03-27T00:00:00+00:00"));
        check("Thu, 27 Mar 2025 10:00:00 GMT", t);
        check("Thu, 27 Mar 2025 10:00:00 +0000", t);
        check("Thu, 27 Mar 2025 06:00:00 EDT", t);
        check("Thu, 27 Mar 2025 03:00:00 PDT", t);
        check("Thursday, 27 March 2025 10:00:00 UTC", t);
        check("Thu, 27 Mar 2025 10:00 GMT", t);
        check("27 Mar 2025 10:00:00", t);
        check("Thu, 27 Mar 25 10:00:00 GMT", t);
        check("Thu, 27 Mar 2025 9:00:00 -0100", t);
        check("Jeu, 27 mars 2025 11:00:00 +0100", t);
        check("Do, 27 Mär 2025 11:00:00 CET", t);
        check("jue, 27 marzo 2025 10:00:00 GMT", t);
        check("Mar 27 2025 10:00:00 GMT", t);
        check("not a date", None);
        check("", None);
        check("Thu, 32 Mar 2025 10:00:00 GMT", None);
    }

    #[test]
    fn hostile_dates_are_no_dates() {
        let check = |text: &str, expected: Option<&str>| {
            let got = std::panic::catch_unwind(|| parse_date(text).map(|t| t.to_rfc3339()));
            let got = got.unwrap_or_else(|_| panic!("{text:?} panics"));
            assert_eq!(got.as_deref(), expected, "{text:?}");
        };
        // Past the largest year chrono holds (262142), and an offset that
        // pushes the largest one past it.
        check("31 Dec 262143 23:59 -2359", None);
        check("31 Dec 262142 23:59 -2359", None);
        check("Fri, 31 Dec 262142 23:59:59 -2359", None);
        check("31 Dec 262142 00:00 -2359", None);
        check("1 Jan -262144 00:00 +2359", None);
        check("1 Jan -262143 00:00 +2359", None);
        // Years far out of range, negative, zero, and ones that overflow
        // the two-digit-year rule.
        check("1 Jan 99999999999 00:00 GMT", None);
        check("1 Jan -2147483648 00:00 GMT", None);
        check("1 Jan 2147483647 00:00 GMT", None);
        check("1 Jan 0 00:00 GMT", Some("2000-01-01T00:00:00+00:00"));
        check("1 Jan 0000 00:00 GMT", Some("2000-01-01T00:00:00+00:00"));
        check("1 Jan -5 00:00 GMT", None);
        // Huge offsets, hours and minutes.
        check("1 Jan 2025 00:00 +9999", None);
        check("1 Jan 2025 00:00 -99999999", None);
        check("1 Jan 2025 99999999999:00 GMT", None);
        check("1 Jan 2025 23:99:99 GMT", None);
        check("99999999999 Jan 2025 00:00 GMT", None);
        // ISO forms at the edges.
        check("+262143-12-31T23:59:59-23:59", None);
        check("262143-12-31T23:59:59-2359", None);
        check("262143-12-31 23:59:59", None);
        check("-262144-01-01T00:00:00+23:59", None);
        check("0000-01-01T00:00:00+23:59", None);
        // Years RFC 3339 (and so Atom) cannot write are no dates.
        check("1 Jan 10000 00:00 GMT", None);
        check("0001-01-01T00:00:00+00:01", None);
        check("0001-01-01T00:00:00Z", Some("0001-01-01T00:00:00+00:00"));
        check("9999-12-31T23:59:59Z", Some("9999-12-31T23:59:59+00:00"));
    }

    #[test]
    fn a_feed_with_a_hostile_date_keeps_its_entries() {
        let doc = "<rss version=\"2.0\"><channel><title>t</title>\
            <item><guid>1</guid><title>one</title><pubDate>31 Dec 262142 23:59 -2359</pubDate></item>\
            <item><guid>2</guid><title>two</title><pubDate>Thu, 27 Mar 2025 10:00:00 GMT</pubDate></item>\
            </channel></rss>";
        let parsed = parse(doc.as_bytes(), None, None).unwrap();
        let entries: Vec<_> = parsed
            .feed
            .entries
            .iter()
            .map(|e| {
                (
                    e.title.as_ref().map(|t| t.content.clone()),
                    e.published.map(|d| d.to_rfc3339()),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                (Some("one".to_string()), None),
                (
                    Some("two".to_string()),
                    Some("2025-03-27T10:00:00+00:00".to_string())
                )
            ]
        );
    }

    #[test]
    fn utf32_documents() {
        let doc = "<?xml version=\"1.0\" encoding=\"utf-32\"?><rss version=\"2.0\"><channel><title>t</title><item><guid>1</guid><title>مرحبا</title></item></channel></rss>";
        for big_endian in [true, false] {
            let mut bytes: Vec<u8> = Vec::new();
            for c in std::iter::once('\u{feff}').chain(doc.chars()) {
                let unit = c as u32;
                bytes.extend(if big_endian {
                    unit.to_be_bytes()
                } else {
                    unit.to_le_bytes()
                });
            }
            let parsed = parse(&bytes, None, None).unwrap();
            assert_eq!(
                parsed.feed.entries[0].title.as_ref().unwrap().content,
                "مرحبا"
            );
            assert_eq!(
                parsed.encoding.name(),
                if big_endian { "UTF-32BE" } else { "UTF-32LE" }
            );
            // Without the BOM, the byte pattern of `<` tells.
            let parsed = parse(&bytes[4..], None, None).unwrap();
            assert_eq!(
                parsed.feed.entries[0].title.as_ref().unwrap().content,
                "مرحبا"
            );
        }
    }

    #[test]
    fn hints_fill_what_feed_rs_drops() {
        let doc = r#"<feed xmlns="http://www.w3.org/2005/Atom" xmlns:media="http://search.yahoo.com/mrss/" xml:lang="en" xml:base="https://example.org/blog/">
            <title>t</title><id>f</id><updated>2025-03-01T00:00:00Z</updated>
            <entry xml:lang="ar" xml:base="posts/"><id>1</id><title>x</title><updated>2025-03-01T00:00:00Z</updated>
              <media:thumbnail url="/t/1.webp"/></entry>
            <entry><id>2</id><title>y</title><updated>2025-03-01T00:00:00Z</updated></entry>
            </feed>"#;
        let parsed = parse(doc.as_bytes(), None, None).unwrap();
        assert_eq!(
            parsed.hints,
            [
                EntryHints {
                    lang: Some("ar".into()),
                    base: Some("https://example.org/blog/posts/".into()),
                    media: vec![MediaHint {
                        url: "/t/1.webp".into(),
                        ..MediaHint::default()
                    }],
                    ..EntryHints::default()
                },
                EntryHints {
                    lang: Some("en".into()),
                    base: Some("https://example.org/blog/".into()),
                    media: vec![],
                    ..EntryHints::default()
                },
            ]
        );
    }

    #[test]
    fn legacy_encodings_round_trip() {
        // (label in the declaration, a title that encoding can carry)
        let cases = [
            ("windows-1250", "Zażółć gęślą jaźń"),
            ("windows-1251", "Новости дня"),
            ("windows-1252", "Café déjà vu"),
            ("windows-1253", "Ειδήσεις"),
            ("windows-1254", "Güncel haberler"),
            ("windows-1255", "חדשות"),
            ("windows-1256", "قائد القيادة المركزية يزور قطر"),
            ("windows-1257", "Žinios šiandien"),
            ("windows-1258", "Hà và đà"),
            ("iso-8859-2", "Zażółć gęślą"),
            ("iso-8859-5", "Новости"),
            ("iso-8859-6", "اجتماع وزراء الخارجية"),
            ("iso-8859-7", "Ειδήσεις"),
            ("iso-8859-8", "חדשות"),
            ("iso-8859-15", "Prix en €"),
            ("koi8-r", "Новости дня"),
            ("koi8-u", "Новини дня"),
            ("shift_jis", "今日のニュース"),
            ("euc-jp", "今日のニュース"),
            ("euc-kr", "오늘의 뉴스"),
            ("big5", "今日新聞"),
            ("gb18030", "今日新闻"),
            ("gbk", "今日新闻"),
        ];
        for (label, title) in cases {
            let encoding = encoding_rs::Encoding::for_label(label.as_bytes()).unwrap();
            let doc = format!(
                "<?xml version=\"1.0\" encoding=\"{label}\"?><rss version=\"2.0\"><channel><title>t</title><item><guid>1</guid><title>{title}</title></item></channel></rss>"
            );
            let (bytes, _, unmappable) = encoding.encode(&doc);
            assert!(!unmappable, "{label} cannot carry {title}");
            let parsed = parse(&bytes, None, None).unwrap_or_else(|e| panic!("{label}: {e}"));
            assert_eq!(
                parsed.feed.entries[0].title.as_ref().unwrap().content,
                title,
                "{label}"
            );
            assert!(parsed.encoding.is_clean(), "{label}");
        }
    }

    #[test]
    fn utf16_with_and_without_bom() {
        let doc = "<?xml version=\"1.0\" encoding=\"utf-16\"?><rss version=\"2.0\"><channel><title>t</title><item><guid>1</guid><title>عربي 日本</title></item></channel></rss>";
        for big_endian in [true, false] {
            for bom in [true, false] {
                let mut bytes = Vec::new();
                let units = std::iter::once(0xFEFF)
                    .filter(|_| bom)
                    .chain(doc.encode_utf16());
                for unit in units {
                    bytes.extend(if big_endian {
                        unit.to_be_bytes()
                    } else {
                        unit.to_le_bytes()
                    });
                }
                let parsed = parse(&bytes, None, None).unwrap();
                let title = &parsed.feed.entries[0].title.as_ref().unwrap().content;
                assert_eq!(title, "عربي 日本", "big endian {big_endian}, bom {bom}");
            }
        }
    }

    #[test]
    fn invalid_bytes_are_replaced_or_the_label_replaced_and_reported() {
        // Declared UTF-8, but a windows-1252 byte slipped into UTF-8 text:
        // the byte is replaced, the rest kept.
        let doc = [
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><rss version=\"2.0\"><channel><title>Ünïcödé</title><item><guid>1</guid><title>caf".as_bytes(),
            b"\xe9",
            b"</title></item></channel></rss>",
        ]
        .concat();
        let parsed = parse(&doc, None, None).unwrap();
        assert!(parsed.encoding.replaced && parsed.encoding.rejected.is_none());
        assert_eq!(
            parsed.feed.entries[0].title.as_ref().unwrap().content,
            "caf\u{fffd}"
        );
        // Declared UTF-8, and all of it windows-1252: the label is replaced.
        let doc = b"<?xml version=\"1.0\" encoding=\"utf-8\"?><rss version=\"2.0\"><channel><title>t</title><item><guid>1</guid><title>Caf\xe9 cr\xe8me br\xfbl\xe9e</title></item></channel></rss>";
        let parsed = parse(doc, None, None).unwrap();
        assert_eq!(
            parsed.feed.entries[0].title.as_ref().unwrap().content,
            "Café crème brûlée"
        );
        assert_eq!(
            parsed.encoding.to_string(),
            "declared UTF-8 (XML declaration), not valid; detected windows-1252"
        );
    }

    #[test]
    fn fixups_for_what_feed_rs_refuses() {
        let title = |doc: &str| {
            let parsed = parse(doc.as_bytes(), None, None).unwrap_or_else(|e| panic!("{doc}: {e}"));
            parsed.feed.entries[0]
                .title
                .as_ref()
                .unwrap()
                .content
                .clone()
        };
        let items = "<channel><title>c</title><item><title>x</title></item></channel>";
        assert_eq!(
            title(&format!(
                "<?xml version=\"1.0\"?><!-- hi --><rss>{items}</rss>"
            )),
            "x"
        );
        assert_eq!(title(&format!("<rss version=\"0.90\">{items}</rss>")), "x");
        assert_eq!(title(&format!("<rss version='2.0'>{items}</rss>")), "x");
        let empty = parse(b"<?xml version=\"1.0\"?><rss>\n</rss>", None, None).unwrap();
        assert!(empty.feed.entries.is_empty());
        let atom03 = r#"<feed version="0.3" xmlns="http://purl.org/atom/ns#"><title>f</title>
            <entry><title>old</title><id>1</id><modified>2004-01-01T00:00:00Z</modified><issued>2004-01-01T00:00:00Z</issued></entry></feed>"#;
        assert_eq!(title(atom03), "old");
        let parsed = parse(atom03.as_bytes(), None, None).unwrap();
        assert!(parsed.feed.entries[0].updated.is_some());
        assert!(parsed.feed.entries[0].published.is_some());
    }

    #[test]
    fn charset_parameter() {
        assert_eq!(
            charset_param("text/xml; charset=ISO-8859-6"),
            Some("ISO-8859-6")
        );
        assert_eq!(charset_param("text/xml;Charset=\"utf-8\""), Some("utf-8"));
        assert_eq!(charset_param("text/xml"), None);
    }

    #[test]
    fn windows_1256_declaration_past_byte_64_parses() {
        // The declaration is long, which trips feed-rs when it decodes itself.
        let (bytes, _, _) = encoding_rs::WINDOWS_1256.encode(
            "<?xml version=\"1.0\"      encoding=\"windows-1256\"     standalone=\"yes\"   ?>\
             <rss version=\"2.0\"><channel><title>أخبار</title>\
             <item><guid>1</guid><title>قائد القيادة المركزية يزور قطر</title></item></channel></rss>",
        );
        let parsed = parse(&bytes, None, None).unwrap();
        assert_eq!(parsed.encoding.name(), "windows-1256");
        let title = parsed.feed.entries[0].title.as_ref().unwrap();
        assert_eq!(title.content, "قائد القيادة المركزية يزور قطر");
    }

    #[test]
    fn bad_documents_are_errors_not_panics() {
        for body in [
            &b""[..],
            b"   ",
            b"<html><body>hello</body></html>",
            b"<rss version=\"2.0\"><channel><item><title>cut",
            b"\x00\xff\xfe\x01garbage",
            b"{\"not\": \"a feed\"}",
        ] {
            assert!(parse(body, None, None).is_err(), "{body:?}");
        }
    }

    #[test]
    fn missing_ids_stay_empty() {
        let parsed = parse(
            b"<rss version=\"2.0\"><channel><item><title>t</title><link>http://a/1</link></item></channel></rss>",
            None,
            None,
        )
        .unwrap();
        assert_eq!(parsed.feed.entries[0].id, "");
    }
}
