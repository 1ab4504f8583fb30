//! Stored entries to Atom 1.0 documents, with atom_syndication.
//!
//! Pure: the entries, the feed's identity and the sources' descriptions come
//! in; a UTF-8 XML string comes out. Every entry says which source it came
//! from (`atom:source`), keeps its language (`xml:lang` on the entry and on
//! its text constructs) and its media (`rel="enclosure"` links).

use std::collections::HashMap;

use atom_syndication::{
    Category, Content, Entry as AtomEntry, Feed, FixedDateTime, Generator, Link, Person, Source,
    Text, WriteConfig,
};
use chrono::{DateTime, Utc};

use crate::model::{Entry, Item};

pub mod json;

/// The content type of every published Atom document.
pub const ATOM_CONTENT_TYPE: &str = "application/atom+xml; charset=utf-8";

/// Identity of one published document.
#[derive(Debug, Clone)]
pub struct FeedInfo {
    /// `atom:id`: the document's URL when a base URL is configured, else a URN.
    pub id: String,
    /// `atom:title`.
    pub title: String,
    /// The document's own URL, for `rel="self"`.
    pub self_link: Option<String>,
    /// The next page of this document (RFC 5005 paging; JSON Feed `next_url`).
    pub next_link: Option<String>,
    /// The same document as JSON Feed: Atom's `rel="alternate"`.
    pub json_link: Option<String>,
    /// The WebSub hub that hears of the document's changes (`rel="hub"`,
    /// JSON Feed `hubs`).
    pub hub: Option<String>,
    /// Whether this is an archive document (RFC 5005 `fh:archive`): a
    /// complete day that never changes.
    pub archive: bool,
    /// The archive before this document (`rel="prev-archive"`).
    pub prev_archive_link: Option<String>,
    /// An archive's subscription document (`rel="current"`).
    pub current_link: Option<String>,
}

/// RFC 5005's namespace (`fh:archive`).
pub const FEED_HISTORY_NS: &str = "http://purl.org/syndication/history/1.0";

/// What the published feed says about a source.
#[derive(Debug, Clone)]
pub struct SourceInfo {
    /// The source's configured name.
    pub name: String,
    /// The source's own title, when known.
    pub title: Option<String>,
    /// Where the source is polled (its `rel="self"` when http), `None` when
    /// the source's URL is not published. Userinfo is dropped when written.
    pub url: Option<String>,
    /// The source's home page, when known.
    pub home_page: Option<String>,
}

/// `text` with the userinfo (`user:password@`) of every URL in it removed:
/// what we publish, serve from the API or print never carries a source's
/// credentials. Works on a URL alone and on URLs inside a message (an error
/// naming the URL it failed on).
pub fn without_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority ends where the path, query or fragment starts, or
        // where the URL does.
        let end = tail
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | '"' | '\'' | '<' | '>' | ')' | ']')
                    || c.is_whitespace()
            })
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(user_end) => out.push_str(&authority[user_end + 1..]),
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Why a document could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write feed document: {0}")]
pub struct PublishError(String);

/// Renders `entries` (already in order) as an Atom document. `empty_updated`
/// is the feed's `atom:updated` when there are no entries.
pub fn render(
    info: &FeedInfo,
    items: Vec<Item>,
    sources: &HashMap<String, SourceInfo>,
    empty_updated: DateTime<Utc>,
) -> Result<String, PublishError> {
    let items: Vec<Item> = items.into_iter().filter(|i| !i.copies.is_empty()).collect();
    let languages: Vec<Option<String>> = items
        .iter()
        .map(|i| i.representative().and_then(|e| e.language.clone()))
        .collect();
    let updated = items
        .iter()
        .filter_map(|i| i.updated())
        .max()
        .unwrap_or(empty_updated);
    let mut feed = Feed {
        id: info.id.clone(),
        title: Text::plain(info.title.clone()),
        updated: fixed(updated),
        authors: vec![Person {
            name: "feedmerge".into(),
            ..Person::default()
        }],
        generator: Some(Generator {
            value: "feedmerge".into(),
            uri: Some(env!("CARGO_PKG_REPOSITORY").into()),
            version: Some(env!("CARGO_PKG_VERSION").into()),
        }),
        entries: items
            .into_iter()
            .filter_map(|i| atom_item(i, sources))
            .collect(),
        ..Feed::default()
    };
    for (href, rel, mime_type) in [
        (&info.self_link, "self", "application/atom+xml"),
        (&info.json_link, "alternate", "application/feed+json"),
        (&info.next_link, "next", "application/atom+xml"),
        (&info.current_link, "current", "application/atom+xml"),
        (
            &info.prev_archive_link,
            "prev-archive",
            "application/atom+xml",
        ),
    ] {
        if let Some(href) = href {
            feed.links.push(Link {
                href: href.clone(),
                rel: rel.into(),
                mime_type: Some(mime_type.into()),
                ..Link::default()
            });
        }
    }
    if info.archive {
        feed.namespaces.insert("fh".into(), FEED_HISTORY_NS.into());
    }
    if let Some(hub) = &info.hub {
        feed.links.push(Link {
            href: hub.clone(),
            rel: "hub".into(),
            ..Link::default()
        });
    }
    let bytes = feed
        .write_with_config(
            Vec::new(),
            WriteConfig {
                write_document_declaration: true,
                indent_size: Some(2),
            },
        )
        .map_err(|e| PublishError(e.to_string()))?;
    let xml = String::from_utf8(bytes).map_err(|e| PublishError(e.to_string()))?;
    let languages: Vec<Option<&str>> = languages.iter().map(Option::as_deref).collect();
    let xml = with_entry_languages(xml, &languages);
    Ok(if info.archive {
        with_archive_mark(xml)
    } else {
        xml
    })
}

/// A story as one Atom entry: the representative copy's text, the story's
/// id and earliest publication, and a `rel="related"` link to every other
/// copy (titled with its source's name).
/// (The item is consumed: the representative's text moves into the
/// entry, uncopied.)
fn atom_item(mut item: Item, sources: &HashMap<String, SourceInfo>) -> Option<AtomEntry> {
    let at = item.representative_at()?;
    let published = item.published();
    let updated = item.updated();
    let rep = item.copies.remove(at);
    let mut related = Vec::new();
    for copy in item.copies.drain(..) {
        if copy.id == rep.id {
            continue;
        }
        if let Some(href) = copy.link {
            if rep.link.as_ref() != Some(&href) && rep.external.as_ref() != Some(&href) {
                related.push(Link {
                    href,
                    rel: "related".into(),
                    title: Some(copy.source),
                    ..Link::default()
                });
            }
        }
    }
    let source = sources.get(&rep.source);
    let mut entry = atom_entry(rep, source);
    entry.id = item.id;
    if let Some(published) = published {
        entry.published = Some(fixed(published));
    }
    if let Some(updated) = updated {
        entry.updated = fixed(updated);
    }
    entry.links.extend(related);
    Some(entry)
}

/// Marks an archive document with `<fh:archive/>` among the feed's own
/// elements, before the entries as RFC 4287 wants extension elements
/// (atom_syndication writes its extensions after them). Entry text is
/// escaped, so the first literal `<entry` is the first entry.
fn with_archive_mark(mut xml: String) -> String {
    let at = xml
        .find("  <entry")
        .or_else(|| xml.find("</feed>"))
        .unwrap_or(xml.len());
    xml.insert_str(at, "  <fh:archive/>\n");
    xml
}

/// Puts each entry's `xml:lang` on its `<entry>` element, which
/// atom_syndication cannot write. Entry text is escaped, so the literal
/// `<entry>` tags are exactly the entries, in order.
fn with_entry_languages(xml: String, languages: &[Option<&str>]) -> String {
    let parts: Vec<&str> = xml.split("<entry>").collect();
    if parts.len() != languages.len() + 1 || languages.iter().all(Option::is_none) {
        return xml;
    }
    let mut out = String::with_capacity(xml.len() + languages.len() * 16);
    out.push_str(parts[0]);
    for (language, part) in languages.iter().zip(&parts[1..]) {
        match language {
            Some(lang) => {
                out.push_str("<entry xml:lang=\"");
                out.push_str(lang);
                out.push_str("\">");
            }
            None => out.push_str("<entry>"),
        }
        out.push_str(part);
    }
    out
}

fn atom_entry(mut entry: Entry, source: Option<&SourceInfo>) -> AtomEntry {
    let lang = entry.language.clone();
    let (content, summary) = (entry.content.take(), entry.summary.take());
    let text = |value: &str, html: bool| {
        let mut t = if html {
            Text::html(value)
        } else {
            Text::plain(value)
        };
        t.lang = lang.clone();
        t
    };
    let title = if entry.title.is_empty() {
        "(untitled)"
    } else {
        &entry.title
    };
    let mut links = Vec::new();
    if let Some(href) = &entry.link {
        links.push(Link {
            href: href.clone(),
            rel: "alternate".into(),
            hreflang: lang.clone(),
            ..Link::default()
        });
    }
    if let Some(href) = &entry.external {
        links.push(Link {
            href: href.clone(),
            rel: "related".into(),
            ..Link::default()
        });
    }
    for enclosure in &entry.enclosures {
        links.push(Link {
            href: enclosure.url.clone(),
            rel: "enclosure".into(),
            mime_type: enclosure.mime_type.clone(),
            length: enclosure.length.map(|l| l.to_string()),
            ..Link::default()
        });
    }
    // An entry needs an alternate link or content; give linkless entries
    // their summary (or title) as content.
    let content_html = content.or_else(|| {
        entry
            .link
            .is_none()
            .then(|| summary.clone().unwrap_or_else(|| escape(title)))
    });
    let updated = entry.updated_or_changed();
    AtomEntry {
        id: entry.id.clone(),
        title: text(title, false),
        updated: fixed(updated),
        published: Some(fixed(entry.published_or_seen())),
        authors: entry
            .authors
            .iter()
            .map(|name| Person {
                name: name.clone(),
                ..Person::default()
            })
            .collect(),
        categories: entry
            .categories
            .iter()
            .map(|term| Category {
                term: term.clone(),
                ..Category::default()
            })
            .collect(),
        links,
        summary: summary.map(|s| {
            let mut t = Text::html(s);
            t.lang = lang.clone();
            t
        }),
        content: content_html.map(|value| Content {
            value: Some(value),
            content_type: Some("html".into()),
            lang: lang.clone(),
            ..Content::default()
        }),
        source: Some(atom_source(&entry, source, updated)),
        ..AtomEntry::default()
    }
}

fn atom_source(entry: &Entry, source: Option<&SourceInfo>, updated: DateTime<Utc>) -> Source {
    let name = &entry.source;
    let mut links = Vec::new();
    if let Some(info) = source {
        if let Some(home) = &info.home_page {
            links.push(Link {
                href: home.clone(),
                rel: "alternate".into(),
                ..Link::default()
            });
        }
        if let Some(url) = info.url.as_ref().filter(|u| u.starts_with("http")) {
            links.push(Link {
                href: without_userinfo(url),
                rel: "self".into(),
                ..Link::default()
            });
        }
    }
    let title = source
        .and_then(|s| s.title.clone())
        .map(|t| format!("{t} ({name})"))
        .unwrap_or_else(|| name.clone());
    Source {
        id: format!("urn:feedmerge:source:{name}"),
        title: Text::plain(title),
        updated: fixed(updated),
        links,
        ..Source::default()
    }
}

fn fixed(t: DateTime<Utc>) -> FixedDateTime {
    t.fixed_offset()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_never_survives() {
        let check = |text: &str, expected: &str| assert_eq!(without_userinfo(text), expected);
        check(
            "http://user:hunter2@127.0.0.1:8080/feed",
            "http://127.0.0.1:8080/feed",
        );
        check("https://token@feeds.example", "https://feeds.example");
        check(
            "https://a:b@c@feeds.example/x?y=@z",
            "https://feeds.example/x?y=@z",
        );
        check(
            "https://medium.com/@someone/feed",
            "https://medium.com/@someone/feed",
        );
        check("https://feeds.example/feed", "https://feeds.example/feed");
        check(
            "error sending request for url (http://u:p@h/feed): refused; also https://x:y@g/",
            "error sending request for url (http://h/feed): refused; also https://g/",
        );
        check("redirect loop at http://u:p@h", "redirect loop at http://h");
        check("no url here: a@b", "no url here: a@b");
        check("", "");
        check("://@", "://");
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn renders_language_source_and_order() {
        let entry = Entry {
            id: "urn:feedmerge:entry:1".into(),
            source: "centcom-ar".into(),
            source_id: "g1".into(),
            title: "قائد القيادة المركزية يزور قطر".into(),
            link: Some("https://www.centcom.mil/AR/1/".into()),
            summary: Some("<p>نص</p>".into()),
            content: None,
            authors: vec!["CENTCOM".into()],
            categories: vec!["أخبار".into()],
            published: Some(at("2025-03-27T10:00:00Z")),
            updated: None,
            first_seen: at("2025-04-01T00:00:00Z"),
            changed: at("2025-04-01T00:00:00Z"),
            language: Some("ar".into()),
            enclosures: vec![crate::model::Enclosure {
                url: "https://www.centcom.mil/ssc/images/1.webp".into(),
                mime_type: Some("image/webp".into()),
                length: Some(2048),
            }],
            canonical: None,
            fingerprint: None,
            merged: None,
            external: None,
        };
        let sources = HashMap::from([(
            "centcom-ar".to_string(),
            SourceInfo {
                name: "centcom-ar".into(),
                title: Some("القيادة المركزية".into()),
                url: Some("https://www.centcom.mil/rss".into()),
                home_page: None,
            },
        )]);
        let info = FeedInfo {
            id: "urn:feedmerge:feed:merged".into(),
            title: "News".into(),
            self_link: None,
            next_link: None,
            json_link: None,
            hub: None,
            archive: false,
            prev_archive_link: None,
            current_link: None,
        };
        let xml = render(
            &info,
            vec![Item::single(entry)],
            &sources,
            at("2025-01-01T00:00:00Z"),
        )
        .unwrap();
        assert!(
            xml.contains(r#"<title xml:lang="ar">قائد القيادة المركزية يزور قطر</title>"#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<summary xml:lang="ar" type="html">&lt;p&gt;نص&lt;/p&gt;</summary>"#),
            "{xml}"
        );
        assert!(xml.contains(r#"<entry xml:lang="ar">"#), "{xml}");
        assert!(
            xml.contains(r#"<link href="https://www.centcom.mil/ssc/images/1.webp" rel="enclosure" type="image/webp" length="2048"/>"#),
            "{xml}"
        );
        assert!(
            xml.contains("<id>urn:feedmerge:source:centcom-ar</id>"),
            "{xml}"
        );
        assert!(
            xml.contains("<published>2025-03-27T10:00:00+00:00</published>"),
            "{xml}"
        );
        // An entry never changed since first seen is as new as its publisher says.
        assert!(
            xml.contains("<updated>2025-03-27T10:00:00+00:00</updated>"),
            "{xml}"
        );
    }
}
