//! The checks behind the fuzz targets, in one file that both the cargo-fuzz
//! targets (fuzz/fuzz_targets/) and the stable regression test
//! (tests/daemon/fuzz_corpora.rs) include with `#[path]`, so what is fuzzed
//! and what the committed corpora are tested against can never drift.
//!
//! Each check takes the fuzzer's bytes and panics when a property fails.

// Each fuzz target uses one check; the regression test uses them all.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use feedmerge::model::Item;
use feedmerge::normalize::{self, Context};
use feedmerge::publish::{self, FeedInfo, SourceInfo};
use quick_xml::events::Event;
use url::Url;

/// The content types the first byte of a `feed` input picks from: none,
/// the feed types, charsets that disagree with the document, and a page.
pub const CONTENT_TYPES: &[Option<&str>] = &[
    None,
    Some("application/rss+xml"),
    Some("application/atom+xml; charset=utf-8"),
    Some("application/feed+json"),
    Some("text/xml; charset=ISO-8859-6"),
    Some("application/xml; charset=windows-1256"),
    Some("text/xml; charset=utf-16"),
    Some("application/rss+xml; charset=utf-32"),
    Some("text/html; charset=utf-8"),
    Some("text/plain; charset=bogus"),
];

/// Where every fuzzed document claims to come from.
const DOCUMENT_URL: &str = "https://feeds.example/news/feed.xml";

/// The time every fuzzed document is polled at.
fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 4, 1, 12, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// Bytes and a content type through parse, normalize and publish: nothing
/// panics, and whenever parsing succeeds the published document is
/// well-formed XML that feed-rs reads back with the same entries.
pub fn feed(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(pick) % CONTENT_TYPES.len()];
    let base = Url::parse(DOCUMENT_URL).ok();
    let Ok(parsed) = feedmerge::parse::parse(body, content_type, base.as_ref()) else {
        return;
    };
    let tracking = feedmerge::dedup::default_tracking();
    let entries = normalize::normalize_with_hints(
        &parsed.feed,
        &parsed.hints,
        &Context {
            source: "fuzz",
            document_url: base.as_ref(),
            http_language: None,
            now: now(),
            tracking: &tracking,
        },
    );
    let sources = HashMap::from([(
        "fuzz".to_string(),
        SourceInfo {
            name: "fuzz".into(),
            title: normalize::feed_title(&parsed.feed),
            url: Some(DOCUMENT_URL.into()),
            home_page: normalize::feed_home_page(&parsed.feed, base.as_ref()).map(String::from),
        },
    )]);
    let info = FeedInfo {
        id: "urn:feedmerge:feed:fuzz".into(),
        title: "fuzz".into(),
        self_link: Some("https://merged.example/feed.atom".into()),
        next_link: Some("https://merged.example/feed.atom?limit=3&before=00".into()),
        json_link: Some("https://merged.example/feed.json".into()),
        hub: Some("https://hub.example/".into()),
        archive: true,
        prev_archive_link: Some("https://merged.example/feed.atom?archive=2025-03-26".into()),
        current_link: Some("https://merged.example/feed.atom".into()),
    };
    let items: Vec<Item> = entries.into_iter().map(Item::single).collect();
    let xml = publish::render(&info, items.clone(), &sources, DateTime::<Utc>::UNIX_EPOCH)
        .expect("publishing normalized entries never fails");
    assert_well_formed(&xml);
    let back = feed_rs::parser::parse(xml.as_bytes())
        .unwrap_or_else(|e| panic!("feed-rs cannot read what we published: {e}\n{xml}"));
    let ids: Vec<&str> = back.entries.iter().map(|e| e.id.as_str()).collect();
    let expected: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(
        ids, expected,
        "entries published != entries read back\n{xml}"
    );
    let json = publish::json::render(&info, &items, &sources, DateTime::<Utc>::UNIX_EPOCH)
        .expect("publishing normalized entries as JSON Feed never fails");
    let back = feed_rs::parser::parse(json.as_bytes())
        .unwrap_or_else(|e| panic!("feed-rs cannot read the JSON Feed we published: {e}\n{json}"));
    let json_ids: Vec<&str> = back.entries.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        json_ids, expected,
        "entries published != entries read back from JSON Feed\n{json}"
    );
    for e in &back.entries {
        assert!(
            e.published.is_some() && e.updated.is_some(),
            "entry {} has a date feed-rs cannot read back\n{xml}",
            e.id
        );
    }
}

/// Panics unless `xml` is one well-formed XML 1.0 element: only legal
/// characters, matching tags, well-formed attributes and references.
pub fn assert_well_formed(xml: &str) {
    if let Some(c) = xml.chars().find(|&c| !is_xml_char(c)) {
        panic!("character {c:?} is not allowed in XML 1.0\n{xml}");
    }
    let mut reader = quick_xml::Reader::from_str(xml);
    reader.config_mut().check_end_names = true;
    let (mut depth, mut roots) = (0usize, 0usize);
    loop {
        let event = reader
            .read_event()
            .unwrap_or_else(|e| panic!("ill-formed at {}: {e}\n{xml}", reader.error_position()));
        match &event {
            Event::Start(e) | Event::Empty(e) => {
                if depth == 0 {
                    roots += 1;
                }
                for attr in e.attributes().with_checks(true) {
                    let attr = attr.unwrap_or_else(|e| panic!("ill-formed attribute: {e}\n{xml}"));
                    attr.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                        .unwrap_or_else(|e| panic!("ill-formed attribute value: {e}\n{xml}"));
                }
                if matches!(event, Event::Start(_)) {
                    depth += 1;
                }
            }
            Event::End(_) => depth -= 1,
            Event::GeneralRef(r) => match r.resolve_char_ref() {
                Ok(Some(c)) => assert!(is_xml_char(c), "reference to {c:?}\n{xml}"),
                Ok(None) => assert!(
                    matches!(r.as_ref(), "lt" | "gt" | "amp" | "apos" | "quot"),
                    "undeclared entity &{};\n{xml}",
                    r.as_ref()
                ),
                Err(e) => panic!("bad character reference: {e}\n{xml}"),
            },
            Event::Text(t) => assert!(
                depth > 0 || t.as_ref().chars().all(|c| c.is_ascii_whitespace()),
                "text outside the root element\n{xml}"
            ),
            Event::CData(_) => assert!(depth > 0, "CDATA outside the root element\n{xml}"),
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
        }
    }
    assert_eq!(depth, 0, "unclosed elements at the end\n{xml}");
    assert_eq!(roots, 1, "not exactly one root element\n{xml}");
}

/// XML 1.0's `Char` production.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Any text as a config file: checked or refused with an error that
/// formats, never a panic.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("/etc/feedmerge/fuzz.toml");
    if let Err(err) = feedmerge::config::parse(&text, path) {
        assert!(!with_causes(&err).is_empty(), "an empty error message");
    }
}

/// An error with its causes, as `main` prints it.
fn with_causes(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// Any text as a date: `parse_date` never panics, and what it returns is a
/// date RFC 3339 can write (years 1 to 9999) that formats and parses back.
pub fn date(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Some(t) = feedmerge::parse::parse_date(&text) {
        assert!(
            (1..=9999).contains(&t.year()),
            "{text:?} parsed to {t}, outside years 1 to 9999"
        );
        let written = t.to_rfc3339();
        let back = DateTime::parse_from_rfc3339(&written)
            .unwrap_or_else(|e| panic!("{text:?} -> {written:?}, which does not parse back: {e}"));
        assert_eq!(back, t, "{text:?} -> {written:?}");
    }
}
