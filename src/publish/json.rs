//! Stories to JSON Feed 1.1 documents, with serde_json.
//!
//! Pure, and the twin of the Atom writer in [`super`]: the same inputs, the
//! same choices (which copy speaks for a story, its dates, which other
//! copies are named), so the two formats always say the same thing. Absent
//! fields are left out, never written as `null`. Provenance, which Atom
//! carries in `atom:source` and `rel="related"` links, goes in the item's
//! `_feedmerge` extension object (JSON Feed's convention for extensions).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{escape, without_userinfo, FeedInfo, PublishError, SourceInfo};
use crate::model::{Entry, Item};
use crate::normalize::plain_text;

/// The `Content-Type` a JSON Feed document is served with.
pub const JSON_FEED_CONTENT_TYPE: &str = "application/feed+json; charset=utf-8";

#[derive(Serialize)]
struct Feed<'a> {
    version: &'static str,
    title: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    feed_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hubs: Vec<Hub<'a>>,
    authors: Vec<Author<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    language: Option<&'a str>,
    /// RFC 5005's archive links, which JSON Feed has no words for.
    #[serde(rename = "_feedmerge", skip_serializing_if = "Option::is_none")]
    history: Option<History<'a>>,
    items: Vec<JsonItem<'a>>,
}

/// An archive document's marks, or the subscription document's link to
/// its newest archive.
#[derive(Serialize)]
struct History<'a> {
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    archive: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    current: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev_archive: Option<&'a str>,
}

#[derive(Serialize)]
struct Hub<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    url: &'a str,
}

#[derive(Serialize)]
struct Author<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct JsonItem<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    external_url: Option<&'a str>,
    title: &'a str,
    content_html: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    date_published: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    date_modified: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    authors: Vec<Author<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tags: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    language: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    attachments: Vec<Attachment<'a>>,
    #[serde(rename = "_feedmerge")]
    feedmerge: Provenance<'a>,
}

#[derive(Serialize)]
struct Attachment<'a> {
    url: &'a str,
    mime_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    size_in_bytes: Option<u64>,
}

/// Where the item's text came from, and the story's other copies.
#[derive(Serialize)]
struct Provenance<'a> {
    source: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_title: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_home_page_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    copies: Vec<Copy<'a>>,
}

#[derive(Serialize)]
struct Copy<'a> {
    source: &'a str,
    url: &'a str,
}

/// Renders `items` (already in order) as a compact JSON Feed 1.1 document
/// ending in a newline. Takes the Atom writer's inputs; `_empty_updated`
/// is unused, as JSON Feed has no feed-level date.
pub fn render(
    info: &FeedInfo,
    items: &[Item],
    sources: &HashMap<String, SourceInfo>,
    _empty_updated: DateTime<Utc>,
) -> Result<String, PublishError> {
    let items: Vec<JsonItem<'_>> = items.iter().filter_map(|i| json_item(i, sources)).collect();
    // The feed has a language only when every item says the same one.
    let first = items.first().and_then(|i| i.language);
    let language = first.filter(|_| items.iter().all(|i| i.language == first));
    let feed = Feed {
        version: "https://jsonfeed.org/version/1.1",
        title: &info.title,
        feed_url: info.self_link.as_deref(),
        next_url: info.next_link.as_deref(),
        hubs: info
            .hub
            .iter()
            .map(|url| Hub {
                kind: "WebSub",
                url,
            })
            .collect(),
        authors: vec![Author { name: "feedmerge" }],
        language,
        history: (info.archive || info.prev_archive_link.is_some()).then_some(History {
            archive: info.archive,
            current: info.current_link.as_deref(),
            prev_archive: info.prev_archive_link.as_deref(),
        }),
        items,
    };
    let mut json =
        serde_json::to_string(&feed).map_err(|e| PublishError(format!("json feed: {e}")))?;
    json.push('\n');
    Ok(json)
}

/// A story as one item, as [`super::render`] makes its Atom entry: the
/// representative copy's text, the story's id and dates, and every other
/// copy whose link is not already the item's `url` or `external_url`.
fn json_item<'a>(item: &'a Item, sources: &'a HashMap<String, SourceInfo>) -> Option<JsonItem<'a>> {
    let rep = item.representative()?;
    let source = sources.get(&rep.source);
    let title = if rep.title.is_empty() {
        "(untitled)"
    } else {
        &rep.title
    };
    let copies = item
        .copies
        .iter()
        .filter(|copy| copy.id != rep.id)
        .filter_map(|copy| Some((copy, copy.link.as_deref()?)))
        .filter(|(_, url)| rep.link.as_deref() != Some(url) && rep.external.as_deref() != Some(url))
        .map(|(copy, url)| Copy {
            source: &copy.source,
            url,
        })
        .collect();
    Some(JsonItem {
        id: &item.id,
        url: rep.link.as_deref(),
        external_url: rep.external.as_deref(),
        title,
        content_html: content_html(rep, title),
        summary: summary_text(rep),
        date_published: item.published().map(|t| t.to_rfc3339()),
        date_modified: item.updated().map(|t| t.to_rfc3339()),
        authors: rep.authors.iter().map(|name| Author { name }).collect(),
        tags: rep.categories.iter().map(String::as_str).collect(),
        language: rep.language.as_deref(),
        attachments: rep
            .enclosures
            .iter()
            .map(|e| Attachment {
                url: &e.url,
                mime_type: e.mime_type.as_deref().unwrap_or("application/octet-stream"),
                size_in_bytes: e.length,
            })
            .collect(),
        feedmerge: Provenance {
            source: &rep.source,
            source_title: source.and_then(|s| s.title.as_deref()),
            source_url: source
                .and_then(|s| s.url.as_deref())
                .filter(|u| u.starts_with("http"))
                .map(without_userinfo),
            source_home_page_url: source.and_then(|s| s.home_page.as_deref()),
            copies,
        },
    })
}

/// JSON Feed needs `content_html` or `content_text`: the content, else the
/// summary, else the title (what Atom gives a linkless entry).
fn content_html(entry: &Entry, title: &str) -> String {
    entry
        .content
        .clone()
        .or_else(|| entry.summary.clone())
        .unwrap_or_else(|| escape(title))
}

/// JSON Feed's `summary` is plain text, so the HTML summary goes through
/// normalize's tag stripper (ammonia, a real HTML parser). Only when there
/// is content too: without it the summary is already `content_html`.
fn summary_text(entry: &Entry) -> Option<String> {
    entry.content.as_ref()?;
    let text = plain_text(entry.summary.as_deref()?);
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::model::Enclosure;

    const TITLE: &str = "قائد القيادة المركزية يزور قطر";

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn entry(id: &str, source: &str, link: &str) -> Entry {
        Entry {
            id: id.into(),
            source: source.into(),
            source_id: id.into(),
            title: TITLE.into(),
            link: Some(link.into()),
            summary: Some("<p>نص &amp; <b>صورة</b></p>".into()),
            content: None,
            authors: vec![],
            categories: vec![],
            published: Some(at("2025-03-27T10:00:00Z")),
            updated: None,
            first_seen: at("2025-04-01T00:00:00Z"),
            changed: at("2025-04-01T00:00:00Z"),
            language: Some("ar".into()),
            enclosures: vec![],
            canonical: None,
            fingerprint: None,
            merged: None,
            external: None,
        }
    }

    fn source(name: &str, url: &str) -> (String, SourceInfo) {
        let info = SourceInfo {
            name: name.into(),
            title: Some("القيادة المركزية".into()),
            url: Some(url.into()),
            home_page: None,
        };
        (name.to_string(), info)
    }

    fn info(next_link: Option<&str>) -> FeedInfo {
        FeedInfo {
            id: "urn:feedmerge:feed:merged".into(),
            title: "News".into(),
            self_link: Some("https://news.example/feed.json".into()),
            next_link: next_link.map(Into::into),
            json_link: None,
            hub: None,
            archive: false,
            prev_archive_link: None,
            current_link: None,
        }
    }

    fn render_value(items: &[Item], sources: &HashMap<String, SourceInfo>) -> (String, Value) {
        let json = render(&info(None), items, sources, DateTime::UNIX_EPOCH).unwrap();
        assert!(json.ends_with("}\n"), "{json}");
        let value = serde_json::from_str(&json).unwrap();
        (json, value)
    }

    fn has_null(value: &Value) -> bool {
        match value {
            Value::Null => true,
            Value::Array(a) => a.iter().any(has_null),
            Value::Object(o) => o.values().any(has_null),
            _ => false,
        }
    }

    #[test]
    fn a_story_reads_back_with_its_language_media_and_copies() {
        let mut first = entry("e1", "centcom-ar", "https://www.centcom.mil/AR/1/");
        first.content = Some("<p>النص الكامل للخبر</p>".into());
        first.enclosures = vec![Enclosure {
            url: "https://www.centcom.mil/ssc/images/1.webp".into(),
            mime_type: Some("image/webp".into()),
            length: Some(2048),
        }];
        let second = entry("e2", "wire-ar", "https://wire.example/ar/1");
        let item = Item {
            id: "story".into(),
            copies: vec![first, second],
        };
        let sources = HashMap::from([
            source("centcom-ar", "https://www.centcom.mil/rss"),
            source("wire-ar", "https://wire.example/rss"),
        ]);
        let (json, value) = render_value(&[item], &sources);

        let feed = feed_rs::parser::parse(json.as_bytes()).unwrap();
        assert_eq!(feed.language.as_deref(), Some("ar"));
        let read = &feed.entries[0];
        assert_eq!(read.id, "story");
        assert_eq!(read.title.as_ref().unwrap().content, TITLE);
        assert_eq!(read.links[0].href, "https://www.centcom.mil/AR/1/");
        let media = &read.links[1];
        assert_eq!(media.href, "https://www.centcom.mil/ssc/images/1.webp");
        assert_eq!(media.media_type.as_deref(), Some("image/webp"));
        assert_eq!(media.length, Some(2048));
        assert_eq!(read.summary.as_ref().unwrap().content, "نص & صورة");

        assert_eq!(value["version"], "https://jsonfeed.org/version/1.1");
        let it = &value["items"][0];
        assert_eq!(it["language"], "ar");
        assert_eq!(it["attachments"][0]["mime_type"], "image/webp");
        assert_eq!(it["date_published"], "2025-03-27T10:00:00+00:00");
        assert_eq!(it["_feedmerge"]["source"], "centcom-ar");
        assert_eq!(
            it["_feedmerge"]["copies"],
            serde_json::json!([{"source": "wire-ar", "url": "https://wire.example/ar/1"}])
        );
        assert!(!has_null(&value), "{json}");
    }

    #[test]
    fn a_source_url_never_carries_its_credentials() {
        let item = Item::single(entry("e", "private", "https://feeds.example/1"));
        let sources = HashMap::from([source("private", "https://user:pass@feeds.example/rss")]);
        let (json, value) = render_value(&[item], &sources);
        assert!(!json.contains("user") && !json.contains("pass"), "{json}");
        let url = &value["items"][0]["_feedmerge"]["source_url"];
        assert_eq!(url, "https://feeds.example/rss");
    }

    #[test]
    fn an_empty_feed_is_valid_json_feed() {
        let storyless = Item {
            id: "none".into(),
            copies: vec![],
        };
        let (json, value) = render_value(&[storyless], &HashMap::new());
        assert_eq!(value["items"], serde_json::json!([]));
        assert!(value.get("language").is_none(), "{json}");
        assert!(!has_null(&value), "{json}");
        let feed = feed_rs::parser::parse(json.as_bytes()).unwrap();
        assert!(feed.entries.is_empty());
    }

    #[test]
    fn next_url_only_with_a_next_page() {
        for next in [None, Some("https://news.example/feed.json?page=2")] {
            let json = render(&info(next), &[], &HashMap::new(), DateTime::UNIX_EPOCH).unwrap();
            let value: Value = serde_json::from_str(&json).unwrap();
            let read = value.get("next_url").and_then(Value::as_str);
            assert_eq!(read, next, "{json}");
        }
    }
}
