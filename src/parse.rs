//! Bytes to a feed-rs model: decide the encoding, transcode to UTF-8, parse.
//!
//! feed-rs ignores the HTTP charset and trips over some XML declarations, so
//! the encoding is decided here, in order: byte-order mark, the HTTP
//! `Content-Type` charset, the XML declaration, then UTF-8. The document is
//! transcoded with encoding_rs, its declaration rewritten to say UTF-8, and
//! handed to feed-rs inside a panic guard. UTF-32 (which the WHATWG
//! standard, and so encoding_rs, leaves out) is decoded here by hand. Dates
//! go through [`parse_date`], which reads the RFC 822 and ISO 8601 variants
//! real feeds use. This module does no I/O.

use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Utc};
use encoding_rs::{Encoding, UTF_16BE, UTF_16LE, UTF_8};
use url::Url;

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
    /// Name of the encoding the bytes were decoded from.
    pub encoding: &'static str,
    /// True when some bytes were not valid in that encoding and were
    /// replaced with U+FFFD.
    pub had_replacements: bool,
}

/// Parses `body`, given the HTTP `Content-Type` (if any) and the document's
/// URL, against which feed-rs resolves relative links.
pub fn parse(
    body: &[u8],
    content_type: Option<&str>,
    base: Option<&Url>,
) -> Result<Parsed, ParseError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ParseError::Empty);
    }
    let charset = content_type.and_then(charset_param);
    let (text, encoding, had_replacements) = match utf32(body, charset) {
        Some(big_endian) => {
            let (text, replaced) = decode_utf32(body, big_endian);
            let name = if big_endian { "UTF-32BE" } else { "UTF-32LE" };
            (text, name, replaced)
        }
        None => {
            let encoding = detect_encoding(body, charset);
            let (text, replaced) = decode(body, encoding);
            (text, encoding.name(), replaced)
        }
    };
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
    let result = catch_unwind(AssertUnwindSafe(|| parser.parse(text.as_bytes())));
    match result {
        Ok(Ok(feed)) => {
            let mut hints = if text.trim_start().starts_with('<') {
                xml_hints(&text, base)
            } else {
                json_hints(&text)
            };
            if hints.len() != feed.entries.len() {
                hints.clear();
            }
            Ok(Parsed {
                feed,
                hints,
                encoding,
                had_replacements,
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

/// Per entry (`entry` or `item` element): effective `xml:lang` and
/// `xml:base`, and `*:thumbnail` URLs. Empty if the XML cannot be read.
fn xml_hints(text: &str, document: Option<&Url>) -> Vec<EntryHints> {
    use quick_xml::events::Event;

    let mut reader = quick_xml::Reader::from_str(text);
    // Effective (lang, base, base set by some xml:base) of each open
    // element; the bottom is the document.
    let mut stack: Vec<(Option<String>, Option<Url>, bool)> =
        vec![(None, document.cloned(), false)];
    let mut out: Vec<EntryHints> = Vec::new();
    // Stack depth at which the current entry opened.
    let mut open_entry: Option<usize> = None;
    // Inside an entry's origLink element, whose text is wanted.
    let mut in_orig_link = false;
    loop {
        let event = match reader.read_event() {
            Ok(event) => event,
            Err(_) => return Vec::new(),
        };
        if in_orig_link {
            let piece = match &event {
                Event::Text(text) => Some(text.xml10_content().trim().to_string()),
                Event::GeneralRef(r) => match r.xml10_content().as_ref() {
                    "amp" => Some("&".to_string()),
                    "lt" => Some("<".to_string()),
                    "gt" => Some(">".to_string()),
                    "quot" => Some("\"".to_string()),
                    "apos" => Some("'".to_string()),
                    _ => None,
                },
                _ => None,
            };
            if let (Some(piece), Some(hints)) = (piece, out.last_mut()) {
                hints
                    .orig_link
                    .get_or_insert_with(String::new)
                    .push_str(&piece);
                continue;
            }
        }
        let (element, has_children) = match &event {
            Event::Start(e) => (e, true),
            Event::Empty(e) => (e, false),
            Event::End(_) => {
                in_orig_link = false;
                stack.pop();
                if open_entry == Some(stack.len()) {
                    open_entry = None;
                }
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        let (mut lang, mut base, mut explicit) = stack.last().cloned().unwrap_or_default();
        let mut media = MediaHint::default();
        for attr in element.attributes().flatten() {
            let Ok(value) = attr.normalized_value(quick_xml::XmlVersion::Implicit1_0) else {
                continue;
            };
            match attr.key.as_ref() {
                // An empty xml:lang means "no language".
                "xml:lang" => lang = Some(value.trim().to_string()).filter(|v| !v.is_empty()),
                "xml:base" => {
                    base = match &base {
                        Some(parent) => parent.join(value.trim()).ok(),
                        None => Url::parse(value.trim()).ok(),
                    };
                    explicit = true;
                }
                "url" => media.url = value.trim().to_string(),
                "type" => media.mime_type = Some(value.trim().to_string()),
                "length" | "fileSize" => media.length = value.trim().parse().ok(),
                _ => {}
            }
        }
        let local = element.local_name();
        let name = local.as_ref();
        if (name == "entry" || name == "item") && open_entry.is_none() {
            out.push(EntryHints {
                lang: lang.clone(),
                base: base.clone().filter(|_| explicit).map(String::from),
                media: Vec::new(),
                orig_link: None,
            });
            if has_children {
                open_entry = Some(stack.len());
            }
        } else if name == "origLink" && open_entry.is_some() && has_children {
            in_orig_link = true;
        } else if matches!(name, "enclosure" | "content" | "thumbnail")
            && open_entry.is_some()
            && !media.url.is_empty()
        {
            if let Some(hints) = out.last_mut() {
                hints.media.push(media);
            }
        }
        if has_children {
            stack.push((lang, base, explicit));
        }
    }
    out
}

/// Per JSON Feed item: its `image` and `banner_image`, which feed-rs drops.
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
            ..EntryHints::default()
        })
        .collect()
}

/// The `charset` parameter of a `Content-Type` header value.
pub fn charset_param(content_type: &str) -> Option<&str> {
    content_type.split(';').skip(1).find_map(|param| {
        let (key, value) = param.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim().trim_matches(|c| c == '"' || c == '\''))
    })
}

/// Decides the document's encoding: BOM, then HTTP charset, then the XML
/// declaration (or the byte pattern of an unmarked UTF-16 one), then UTF-8.
pub fn detect_encoding(body: &[u8], http_charset: Option<&str>) -> &'static Encoding {
    if let Some((encoding, _)) = Encoding::for_bom(body) {
        return encoding;
    }
    if let Some(encoding) = http_charset.and_then(|label| Encoding::for_label(label.as_bytes())) {
        return without_utf16_guess(encoding, body);
    }
    match body {
        [0x3C, 0x00, 0x3F, 0x00, ..] => return UTF_16LE,
        [0x00, 0x3C, 0x00, 0x3F, ..] => return UTF_16BE,
        _ => {}
    }
    declared_encoding(body)
        .and_then(|label| Encoding::for_label(label.as_bytes()))
        .map(|encoding| without_utf16_guess(encoding, body))
        .unwrap_or(UTF_8)
}

/// A declaration read as ASCII cannot truthfully say UTF-16 (the bytes
/// would not have been ASCII); such a document is really ASCII-compatible.
fn without_utf16_guess(encoding: &'static Encoding, body: &[u8]) -> &'static Encoding {
    let looks_utf16 = matches!(body, [0x3C, 0x00, ..] | [0x00, 0x3C, ..]);
    if (encoding == UTF_16LE || encoding == UTF_16BE) && !looks_utf16 {
        UTF_8
    } else {
        encoding
    }
}

/// The `encoding` pseudo-attribute of an ASCII-compatible XML declaration.
fn declared_encoding(body: &[u8]) -> Option<String> {
    let start = body.iter().position(|b| !b.is_ascii_whitespace())?;
    let head = body.get(start..)?;
    if !head.starts_with(b"<?xml") {
        return None;
    }
    let end = head.iter().take(1024).position(|&b| b == b'>')?;
    let decl = std::str::from_utf8(head.get(..end)?).ok()?;
    let after = &decl[decl.find("encoding")? + "encoding".len()..];
    let after = after.trim_start().strip_prefix('=')?.trim_start();
    let quote = after.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let value = &after[1..];
    Some(value[..value.find(quote)?].trim().to_string())
}

/// `Some(big_endian)` when the document is UTF-32: by BOM, by the byte
/// pattern of a leading `<`, or by an HTTP charset naming it.
fn utf32(body: &[u8], http_charset: Option<&str>) -> Option<bool> {
    match body {
        [0x00, 0x00, 0xFE, 0xFF, ..] | [0x00, 0x00, 0x00, 0x3C, ..] => return Some(true),
        [0xFF, 0xFE, 0x00, 0x00, ..] | [0x3C, 0x00, 0x00, 0x00, ..] => return Some(false),
        _ => {}
    }
    let label = http_charset?.trim().to_ascii_lowercase();
    match label.as_str() {
        "utf-32be" => Some(true),
        "utf-32" | "utf-32le" => Some(false),
        _ => None,
    }
}

/// Decodes UTF-32 (BOM dropped); invalid code points become U+FFFD.
fn decode_utf32(body: &[u8], big_endian: bool) -> (String, bool) {
    let mut replaced = body.len() % 4 != 0;
    let text = body
        .chunks_exact(4)
        .filter_map(|b| {
            let bytes = [b[0], b[1], b[2], b[3]];
            let unit = if big_endian {
                u32::from_be_bytes(bytes)
            } else {
                u32::from_le_bytes(bytes)
            };
            match char::from_u32(unit) {
                Some('\u{feff}') => None,
                Some(c) => Some(c),
                None => {
                    replaced = true;
                    Some('\u{fffd}')
                }
            }
        })
        .collect();
    (text, replaced)
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

fn decode(body: &[u8], encoding: &'static Encoding) -> (String, bool) {
    let (text, had_errors) = encoding.decode_with_bom_removal(body);
    (text.into_owned(), had_errors)
}

/// Atom 0.3's namespace, which feed-rs does not know.
const ATOM_03: &str = "http://purl.org/atom/ns#";
/// RSS versions feed-rs reads; any other `<rss>` is read as 2.0.
const RSS_VERSIONS: &[&str] = &["2.0", "0.91", "0.92"];

/// Rewrites what feed-rs refuses but feeds in the wild send: an `<rss>`
/// root without a version it knows (read as 2.0), and Atom 0.3 (read as
/// Atom 1.0, with its renamed elements renamed back).
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
                parsed.encoding,
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
                    orig_link: None,
                },
                EntryHints {
                    lang: Some("en".into()),
                    base: Some("https://example.org/blog/".into()),
                    media: vec![],
                    orig_link: None,
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
            let encoding = Encoding::for_label(label.as_bytes()).unwrap();
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
            assert!(!parsed.had_replacements, "{label}");
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
    fn invalid_bytes_are_replaced_and_reported() {
        // Declared UTF-8, but a windows-1252 byte slipped in.
        let doc = b"<?xml version=\"1.0\" encoding=\"utf-8\"?><rss version=\"2.0\"><channel><title>t</title><item><guid>1</guid><title>caf\xe9</title></item></channel></rss>";
        let parsed = parse(doc, None, None).unwrap();
        assert!(parsed.had_replacements);
        assert_eq!(
            parsed.feed.entries[0].title.as_ref().unwrap().content,
            "caf\u{fffd}"
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
        assert_eq!(parsed.encoding, "windows-1256");
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
