//! Any entry we store publishes to a document that parses back to the same
//! entry.
//!
//! proptest generates entries as normalize would make them from hostile
//! input (titles and names with Arabic, RTL marks, control characters and
//! markup characters, cleaned by `clean_text`; HTML through the real
//! sanitizer; links with non-ASCII paths and hosts; dates from year 1 to
//! now; language tags), stores them through the real store on a temporary
//! sled directory (`Store::ingest`, as a poll does), renders the source's
//! feed through `feeds::render` (as the server does), parses the Atom back
//! with feed-rs, and checks every stored entry comes back with the same id,
//! title, link, dates (to the second), authors, categories, language,
//! summary, content and enclosures.

use chrono::{DateTime, Timelike, Utc};
use feedmerge::config;
use feedmerge::dedup;
use feedmerge::feeds::{self, Selector};
use feedmerge::model::{Enclosure, Entry};
use feedmerge::normalize::{clean_text, sanitize_html};
use feedmerge::store::{Store, StoreOptions};
use proptest::prelude::*;
use url::Url;

/// The source every generated entry belongs to.
const SOURCE: &str = "prop";

/// The time of the generated poll: 2025-04-01T12:00:00Z.
const NOW_SECS: i64 = 1_743_508_800;

/// Hosts of generated links: ASCII, Arabic (IDNA), punycode, and an address
/// with a port.
const HOSTS: [&str; 4] = [
    "news.example",
    "أخبار.example",
    "xn--mgbh0fb.example",
    "127.0.0.1:8080",
];

/// Text as feeds carry it: words in several scripts, bidi marks, control
/// characters (C0, DEL, C1), markup characters and any character at all.
fn raw_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => prop::sample::select(vec![
            "خبر", "القيادة المركزية", "سلام", "שלום", "خبرنگار", "news", "Zürich",
            "日本語", "🙂", " ", "  ", "\t", "\n",
        ])
        .prop_map(String::from),
        1 => prop::sample::select(vec![
            "\u{0}", "\u{1}", "\u{8}", "\u{b}", "\u{c}", "\u{1b}", "\u{1f}", "\u{7f}",
            "\u{85}", "\u{9f}", "\u{200f}", "\u{202e}", "\u{fffe}", "\u{ffff}", "\u{feff}",
        ])
        .prop_map(String::from),
        1 => prop::sample::select(vec!["&", "<", ">", "\"", "'", "&amp;", "<b>", "]]>", "&#0;"])
            .prop_map(String::from),
        1 => any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
}

/// Plain text as normalize leaves it: cleaned and whitespace collapsed.
fn plain(raw: &str) -> String {
    clean_text(raw)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// HTML fragments with what the sanitizer keeps, rewrites and drops.
fn raw_html() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        2 => raw_text(),
        2 => prop::sample::select(vec![
            "<p>", "</p>", "<b>عاجل</b>", "<br>", "<div dir=\"rtl\" lang=\"ar\">نص</div>",
            "<a href=\"https://news.example/a?b=1&amp;c=2\">link</a>",
            "<a href=\"/relative/مقال\">rel</a>", "<img src=\"/i.png\" alt=\"x\">",
            "<script>alert(1)</script>", "<iframe src=\"https://evil.example/\"></iframe>",
            "<!-- comment -->", "<![CDATA[x]]>", "&nbsp;", "&lt;", "&#x202E;",
        ])
        .prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..6).prop_map(|pieces| pieces.concat())
}

/// A time from year 1 to now, with nanoseconds, mostly in recent years.
fn date() -> impl Strategy<Value = DateTime<Utc>> {
    let secs = prop_oneof![
        4 => 946_684_800i64..=NOW_SECS,
        1 => -62_135_596_800i64..=946_684_800,
    ];
    (secs, 0u32..1_000_000_000)
        .prop_map(|(s, n)| DateTime::from_timestamp(s, n).unwrap_or(DateTime::<Utc>::UNIX_EPOCH))
}

/// What one generated entry is made from.
#[derive(Debug, Clone)]
struct Raw {
    guid: String,
    title: String,
    link: Option<(usize, String, String)>,
    summary: Option<String>,
    content: Option<String>,
    authors: Vec<String>,
    categories: Vec<String>,
    published: Option<DateTime<Utc>>,
    updated: Option<DateTime<Utc>>,
    language: Option<String>,
    enclosures: Vec<(Option<String>, Option<u64>)>,
}

fn raw_entry() -> impl Strategy<Value = Raw> {
    let languages = vec!["ar", "fa", "he", "ur", "en", "en-us", "zh-hant-tw", "fr-ca"];
    (
        (
            raw_text(),
            raw_text(),
            prop::option::of((0..HOSTS.len(), raw_text(), raw_text())),
            prop::option::of(raw_html()),
            prop::option::of(raw_html()),
            prop::collection::vec(raw_text(), 0..3),
            prop::collection::vec(raw_text(), 0..3),
        ),
        (
            prop::option::of(date()),
            prop::option::of(date()),
            prop::option::of(prop::sample::select(languages)),
            prop::collection::vec(
                (
                    prop::option::of(prop::sample::select(vec!["image/webp", "audio/mpeg"])),
                    prop::option::of(0u64..u64::MAX),
                ),
                0..3,
            ),
        ),
    )
        .prop_map(
            move |(
                (guid, title, link, summary, content, authors, categories),
                (published, updated, language, enclosures),
            )| Raw {
                guid,
                title,
                link,
                summary,
                content,
                authors,
                categories,
                published,
                updated,
                language: language.map(String::from),
                enclosures: enclosures
                    .into_iter()
                    .map(|(m, l)| (m.map(String::from), l))
                    .collect(),
            },
        )
}

/// The entry normalize would make of `raw`, the `index`th of its document.
fn entry(index: usize, raw: &Raw, now: DateTime<Utc>) -> Entry {
    let base = Url::parse("https://news.example/feed.xml").ok();
    let source_id = format!("{index} {}", plain(&raw.guid));
    let link = raw.link.as_ref().and_then(|(h, path, query)| {
        let text = format!("https://{}/{index}/{path}?q={query}", HOSTS[*h]);
        Url::parse(&text).ok().map(String::from)
    });
    let html = |h: &Option<String>| {
        h.as_deref()
            .map(|h| sanitize_html(h, base.as_ref()))
            .filter(|h| !h.trim().is_empty())
    };
    let title = plain(&raw.title);
    let content = html(&raw.content);
    let tracking = dedup::default_tracking();
    Entry {
        id: dedup::entry_id(SOURCE, &source_id),
        source: SOURCE.into(),
        source_id,
        canonical: link
            .as_deref()
            .and_then(|l| dedup::canonical_url(l, &tracking)),
        fingerprint: dedup::fingerprint(&title, content.as_deref().unwrap_or("")),
        title,
        link,
        summary: html(&raw.summary),
        content,
        authors: raw
            .authors
            .iter()
            .map(|a| plain(a))
            .filter(|a| !a.is_empty())
            .collect(),
        categories: raw
            .categories
            .iter()
            .map(|c| plain(c))
            .filter(|c| !c.is_empty())
            .collect(),
        published: raw.published,
        updated: raw.updated,
        first_seen: now,
        changed: now,
        language: raw.language.clone(),
        enclosures: raw
            .enclosures
            .iter()
            .enumerate()
            .map(|(j, (mime_type, length))| Enclosure {
                url: format!("https://cdn.example/{index}/{j}.bin"),
                mime_type: mime_type.clone(),
                length: *length,
            })
            .collect(),
        merged: None,
        external: None,
    }
}

/// The `xml:lang` of each `<entry>` of `xml`, in order.
fn entry_languages(xml: &str) -> Vec<Option<String>> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut out = Vec::new();
    loop {
        match reader.read_event().unwrap() {
            Event::Start(e) if e.name().as_ref() == "entry" => out.push(
                e.attributes()
                    .flatten()
                    .find(|a| a.key.as_ref() == "xml:lang")
                    .map(|a| a.value.to_string()),
            ),
            Event::Eof => return out,
            _ => {}
        }
    }
}

fn to_second(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(0).unwrap_or(t)
}

/// Stores `raws` as one poll, publishes the source's feed, and checks every
/// stored entry against what feed-rs reads back.
fn check(raws: &[Raw]) -> Result<(), TestCaseError> {
    let now = DateTime::from_timestamp(NOW_SECS, 0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[storage]\npath = {:?}\n[[sources]]\nname = \"{SOURCE}\"\nurl = \"file:///dev/null\"\n",
        dir.path().join("store").display().to_string()
    );
    let config = config::parse(&text, &dir.path().join("feedmerge.toml")).unwrap();
    let store = Store::open(&config.storage.path, StoreOptions::with_cache(1 << 20)).unwrap();

    let entries: Vec<Entry> = raws
        .iter()
        .enumerate()
        .map(|(i, raw)| entry(i, raw, now))
        .collect();
    store.ingest(&entries, now, &config.dedup.rules()).unwrap();
    // As a poll does: what is not flushed is not shown.
    store.flush_blocking().unwrap();
    let stored = store.source_entries(SOURCE, entries.len() + 1).unwrap();
    // Every entry is stored (each has its own id and link), as it was made.
    prop_assert_eq!(stored.len(), entries.len());
    for e in &stored {
        let made = entries.iter().find(|m| m.id == e.id);
        prop_assert!(made.is_some(), "stored an entry never made: {:?}", e);
        let mut made = made.unwrap().clone();
        made.merged = e.merged.clone();
        prop_assert_eq!(&made, e);
    }

    let xml = feeds::render(&config, &store, Selector::Source(SOURCE))
        .unwrap()
        .unwrap();
    let back = feed_rs::parser::Builder::new()
        .sanitize_content(false)
        .build()
        .parse(xml.as_bytes());
    prop_assert!(
        back.is_ok(),
        "feed-rs cannot read it: {:?}\n{}",
        back.err(),
        xml
    );
    let back = back.unwrap();
    prop_assert_eq!(back.entries.len(), stored.len(), "{}", xml);
    let entry_languages = entry_languages(&xml);
    prop_assert_eq!(entry_languages.len(), back.entries.len(), "{}", xml);
    for e in &stored {
        let got = back.entries.iter().find(|b| b.id == e.id);
        prop_assert!(got.is_some(), "{} is not in\n{}", e.id, xml);
        let got = got.unwrap();
        let title = if e.title.is_empty() {
            "(untitled)"
        } else {
            &e.title
        };
        prop_assert_eq!(
            got.title.as_ref().map(|t| t.content.as_str()),
            Some(title),
            "title\n{}",
            xml
        );
        let alternate: Vec<&str> = got
            .links
            .iter()
            .filter(|l| l.rel.as_deref().unwrap_or("alternate") == "alternate")
            .map(|l| l.href.as_str())
            .collect();
        prop_assert_eq!(
            alternate,
            e.link.iter().map(String::as_str).collect::<Vec<_>>(),
            "link\n{}",
            xml
        );
        prop_assert_eq!(
            got.published.map(to_second),
            Some(to_second(e.published_or_seen())),
            "published\n{}",
            xml
        );
        prop_assert_eq!(
            got.updated.map(to_second),
            Some(to_second(e.updated_or_changed())),
            "updated\n{}",
            xml
        );
        let authors: Vec<&str> = got
            .authors
            .iter()
            .map(|p| p.name.as_deref().unwrap_or(""))
            .collect();
        prop_assert_eq!(
            authors,
            e.authors.iter().map(String::as_str).collect::<Vec<_>>(),
            "authors\n{}",
            xml
        );
        let categories: Vec<&str> = got.categories.iter().map(|c| c.term.as_str()).collect();
        prop_assert_eq!(
            categories,
            e.categories.iter().map(String::as_str).collect::<Vec<_>>(),
            "categories\n{}",
            xml
        );
        // feed-rs reads `xml:lang` only from `<content>`; the entry's own
        // is read here.
        let position = back.entries.iter().position(|b| b.id == e.id);
        let language = position.and_then(|i| entry_languages[i].as_deref());
        prop_assert_eq!(language, e.language.as_deref(), "language\n{}", xml);
        if got.content.is_some() {
            prop_assert_eq!(&got.language, &e.language, "content language\n{}", xml);
        }
        // HTML as stored, but for the whitespace at its ends, which feed-rs
        // trims (and which HTML does not show).
        prop_assert_eq!(
            got.summary.as_ref().map(|s| s.content.trim()),
            e.summary.as_deref().map(str::trim),
            "summary\n{}",
            xml
        );
        // A linkless entry without content carries its summary (or title)
        // as content instead.
        if let Some(content) = &e.content {
            let body = got.content.as_ref().and_then(|c| c.body.as_deref());
            prop_assert_eq!(
                body.map(str::trim),
                Some(content.trim()),
                "content\n{}",
                xml
            );
        }
        let enclosures: Vec<(String, Option<String>, Option<u64>)> = got
            .links
            .iter()
            .filter(|l| l.rel.as_deref() == Some("enclosure"))
            .map(|l| (l.href.clone(), l.media_type.clone(), l.length))
            .collect();
        let expected: Vec<(String, Option<String>, Option<u64>)> = e
            .enclosures
            .iter()
            .map(|x| (x.url.clone(), x.mime_type.clone(), x.length))
            .collect();
        prop_assert_eq!(enclosures, expected, "enclosures\n{}", xml);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_stored_entry_publishes_and_parses_back_the_same(raws in prop::collection::vec(raw_entry(), 1..6)) {
        check(&raws)?;
    }
}
