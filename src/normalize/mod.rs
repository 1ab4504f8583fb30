//! feed-rs entries to feedmerge [`Entry`]s: absolute links, UTC dates,
//! plain-text titles, sanitized HTML, a language and direction, enclosures,
//! a stable id.
//!
//! This module is pure: the time and the document's URL come in through
//! [`Context`]; it does no I/O. HTML work lives in `html`, languages in
//! `language`.

mod html;
mod language;

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use feed_rs::model::{Feed, FeedType, Text};
use sha2::{Digest, Sha256};
use url::Url;

use crate::dedup;
use crate::model::{Enclosure, Entry};
use crate::parse::{EntryHints, MediaHint};

pub use html::{plain_text, sanitize as sanitize_html};

/// What normalize needs to know besides the document.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The source's configured name.
    pub source: &'a str,
    /// The URL the document was read from, after redirects.
    pub document_url: Option<&'a Url>,
    /// The HTTP `Content-Language` header, if any.
    pub http_language: Option<&'a str>,
    /// The time of this poll.
    pub now: DateTime<Utc>,
    /// Query parameters dropped from canonical links (`dedup`).
    pub tracking: &'a [String],
}

/// Dates further ahead than this are not believed.
const FUTURE_SLACK: Duration = Duration::days(1);

/// What every entry of one document shares.
struct DocumentFacts<'a> {
    ctx: &'a Context<'a>,
    feed_type: FeedType,
    language: Option<String>,
    home_page: Option<Url>,
    /// Publisher ids used by more than one entry of the document.
    repeated_ids: HashSet<&'a str>,
}

/// Normalizes every entry of `feed`.
pub fn normalize(feed: &Feed, ctx: &Context<'_>) -> Vec<Entry> {
    normalize_with_hints(feed, &[], ctx)
}

/// Normalizes every entry of `feed`, with what the parser's second pass
/// found of each entry's XML (`hints`: one per entry, or none).
pub fn normalize_with_hints(feed: &Feed, hints: &[EntryHints], ctx: &Context<'_>) -> Vec<Entry> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for e in &feed.entries {
        let id = e.id.trim();
        if !id.is_empty() {
            *seen.entry(id).or_default() += 1;
        }
    }
    let facts = DocumentFacts {
        ctx,
        feed_type: feed.feed_type.clone(),
        language: feed_language(feed, ctx.http_language),
        home_page: feed_home_page(feed, ctx.document_url),
        repeated_ids: seen
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(id, _)| id)
            .collect(),
    };
    let none = EntryHints::default();
    let mut detected = language::DocumentLanguage::default();
    let mut entries: Vec<Entry> = feed
        .entries
        .iter()
        .enumerate()
        .map(|(i, e)| entry(e, hints.get(i).unwrap_or(&none), &facts, &mut detected))
        .collect();
    // Ids are the document's to give: guids that differ only in their
    // fragment are two entries when listed side by side.
    let guids: Vec<&str> = entries.iter().map(|e| e.source_id.as_str()).collect();
    let ids = dedup::document_ids(ctx.source, &guids);
    for (entry, id) in entries.iter_mut().zip(ids) {
        entry.id = id;
    }
    entries
}

fn entry(
    e: &feed_rs::model::Entry,
    hints: &EntryHints,
    facts: &DocumentFacts<'_>,
    detected: &mut language::DocumentLanguage,
) -> Entry {
    let ctx = facts.ctx;
    // feed-rs keeps the xml:base of <content>; the entry's own (or
    // inherited) one comes from the hints.
    let entry_base = e
        .base
        .as_deref()
        .or(hints.base.as_deref())
        .and_then(|b| absolute_url(b, ctx.document_url));
    let doc_base = entry_base.as_ref().or(ctx.document_url);
    let link = e
        .links
        .iter()
        .find(|l| l.rel.as_deref().is_none_or(|r| r == "alternate"))
        .or_else(|| e.links.first())
        .and_then(|l| absolute_url(&l.href, doc_base))
        .filter(is_http);
    // Relative URLs in the HTML resolve against xml:base, then the entry's
    // own link, then the document (a local file's home page stands in for
    // its file:// URL).
    let html_base = entry_base
        .clone()
        .or_else(|| link.clone())
        .or_else(|| match ctx.document_url {
            Some(u) if u.scheme() != "file" => Some(u.clone()),
            _ => facts.home_page.clone(),
        })
        .or_else(|| ctx.document_url.cloned());

    let title = e.title.as_ref().map(text_as_plain).unwrap_or_default();
    // feed-rs reads no RSS `<body>` or `<fullitem>`: the hints carry them.
    let content = e
        .content
        .as_ref()
        .and_then(|c| {
            let body = c.body.as_deref()?;
            let html = if is_plain(&c.content_type) {
                html::escape(body)
            } else {
                body.to_string()
            };
            Some(html::sanitize(&html, html_base.as_ref()))
        })
        .filter(|s| !s.trim().is_empty())
        .or_else(|| {
            let body = hints.body.as_deref()?;
            Some(html::sanitize(body, html_base.as_ref())).filter(|s| !s.trim().is_empty())
        });
    let content_text = content.as_deref().map(html::sanitized_text);
    let summary = e
        .summary
        .as_ref()
        .map(|t| html::sanitize(&text_as_html(t), html_base.as_ref()))
        .filter(|s| !s.trim().is_empty())
        .or_else(|| content_text.as_deref().and_then(html::summary_from_text));
    // The text that language detection and the fingerprint read.
    let body_text = content_text
        .or_else(|| summary.as_deref().map(html::sanitized_text))
        .unwrap_or_default();

    // A language the title declares itself speaks for the entry; then the
    // entry's own (or inherited), then its content's.
    let language = hints
        .title_lang
        .as_deref()
        .or(hints.lang.as_deref())
        .or(e.language.as_deref())
        .and_then(language::language_tag)
        .or_else(|| facts.language.clone())
        .or_else(|| detected.detect(&format!("{title}. {body_text}")));
    let content = content.map(|c| html::with_direction(c, language.as_deref()));
    let summary = summary.map(|s| html::with_direction(s, language.as_deref()));

    let publisher_id = e.id.trim();
    let source_id = if publisher_id.is_empty() {
        match &link {
            Some(link) => link.to_string(),
            None => text_hash(&title, content.as_deref().or(summary.as_deref())),
        }
    } else if facts.repeated_ids.contains(publisher_id) {
        // One guid for several entries (Miniflux #4197): tell them apart by
        // link, else by text, so each is kept and keeps its id.
        let tail = match &link {
            Some(link) => link.to_string(),
            None => text_hash(&title, content.as_deref().or(summary.as_deref())),
        };
        format!("{} {tail}", clean_text(publisher_id))
    } else {
        clean_text(publisher_id)
    };

    let believable = |d: Option<DateTime<Utc>>| d.filter(|d| *d <= ctx.now + FUTURE_SLACK);
    let id = dedup::entry_id(ctx.source, &source_id);
    // The publisher's canonical hint (feedburner:origLink) wins over the
    // link it proxies.
    let canonical = hints
        .orig_link
        .as_deref()
        .and_then(|l| dedup::canonical_url(l, ctx.tracking))
        .or_else(|| {
            link.as_ref()
                .and_then(|l| dedup::canonical_url(l.as_str(), ctx.tracking))
        });
    let fingerprint = dedup::fingerprint(&title, &body_text);
    Entry {
        merged: None,
        canonical,
        fingerprint,
        id,
        source: ctx.source.to_string(),
        source_id,
        title,
        enclosures: enclosures(
            e,
            &hints.media,
            facts.feed_type == FeedType::JSON,
            link.as_ref(),
            html_base.as_ref(),
        ),
        external: hints
            .external
            .as_deref()
            .or_else(|| {
                e.links
                    .iter()
                    .find(|l| l.rel.as_deref() == Some("related"))
                    .map(|l| l.href.as_str())
            })
            .and_then(|href| absolute_url(href, doc_base))
            .filter(is_http)
            .map(String::from)
            .filter(|external| Some(external) != link.as_ref().map(|l| l.to_string()).as_ref()),
        link: link.map(String::from),
        summary,
        content,
        authors: e
            .authors
            .iter()
            .map(|p| html::collapse_whitespace(&clean_text(p.name.as_deref().unwrap_or(""))))
            .filter(|n| !n.is_empty())
            .collect(),
        categories: e
            .categories
            .iter()
            .map(|c| html::collapse_whitespace(&clean_text(c.label.as_deref().unwrap_or(&c.term))))
            .filter(|c| !c.is_empty())
            .collect(),
        published: believable(e.published),
        updated: believable(e.updated),
        first_seen: ctx.now,
        changed: ctx.now,
        language,
    }
}

/// The entry's media: `rel="enclosure"` links, JSON Feed attachments, and
/// `enclosure`, media:content and media:thumbnail elements (from the
/// parser's hints when it has them, so relative URLs resolve against
/// `base`, else from feed-rs); absolute http(s) URLs only, each once.
fn enclosures(
    e: &feed_rs::model::Entry,
    hinted: &[MediaHint],
    json_feed: bool,
    link: Option<&Url>,
    base: Option<&Url>,
) -> Vec<Enclosure> {
    let mut out: Vec<Enclosure> = Vec::new();
    let mut push = |href: &str, mime_type: Option<String>, length: Option<u64>| {
        let Some(url) = absolute_url(href, base).filter(is_http) else {
            return;
        };
        if Some(&url) == link || out.iter().any(|e| e.url == url.as_str()) {
            return;
        }
        out.push(Enclosure {
            url: url.to_string(),
            mime_type: mime_type.map(|m| clean_text(&m)).filter(|m| !m.is_empty()),
            length,
        });
    };
    // Content by reference (`<content src>`) of a media type that is not
    // text is a file, not the entry's text.
    if let Some(content) = &e.content {
        if let Some(src) = &content.src {
            let media_type = src.media_type.clone().unwrap_or_default();
            if !is_text_type(&media_type) {
                push(&src.href, Some(media_type), None);
            }
        }
    }
    for l in &e.links {
        let attachment = json_feed && l.rel.is_none() && l.media_type.is_some();
        if l.rel.as_deref() == Some("enclosure") || attachment {
            push(&l.href, l.media_type.clone(), l.length);
        }
    }
    if hinted.is_empty() {
        for media in &e.media {
            for c in &media.content {
                if let Some(url) = &c.url {
                    let mime = c.content_type.as_ref().map(|m| m.to_string());
                    push(url.as_str(), mime, c.size);
                }
            }
            for t in &media.thumbnails {
                push(&t.image.uri, image_type(&t.image.uri), None);
            }
        }
    }
    for m in hinted {
        let mime = m.mime_type.clone().or_else(|| image_type(&m.url));
        push(&m.url, mime, m.length);
    }
    out
}

/// An image's media type, guessed from its extension.
fn image_type(url: &str) -> Option<String> {
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let ext = path.rsplit('.').next()?;
    let mime = match ext {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "svg" => "image/svg+xml",
        _ => return None,
    };
    Some(mime.to_string())
}

fn text_hash(title: &str, body: Option<&str>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(title.as_bytes());
    hasher.update([0]);
    hasher.update(body.unwrap_or("").as_bytes());
    let digest = hasher.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn is_http(url: &Url) -> bool {
    matches!(url.scheme(), "http" | "https")
}

/// The feed's own title, as plain text.
pub fn feed_title(feed: &Feed) -> Option<String> {
    feed.title
        .as_ref()
        .map(text_as_plain)
        .filter(|t| !t.is_empty())
}

/// The feed's language: its `xml:lang` / `<language>` / `dc:language` /
/// JSON `language`, else the HTTP `Content-Language`.
pub fn feed_language(feed: &Feed, http_language: Option<&str>) -> Option<String> {
    feed.language
        .as_deref()
        .and_then(language::language_tag)
        .or_else(|| {
            http_language
                .and_then(language::first_language)
                .and_then(language::language_tag)
        })
}

/// The feed's home page (its alternate link), absolute, http(s) only.
pub fn feed_home_page(feed: &Feed, document_url: Option<&Url>) -> Option<Url> {
    feed.links
        .iter()
        .find(|l| l.rel.as_deref().is_none_or(|r| r == "alternate"))
        .and_then(|l| absolute_url(&l.href, document_url))
        .filter(is_http)
}

/// Resolves `href` against `base`; `None` when it is neither absolute nor
/// resolvable.
fn absolute_url(href: &str, base: Option<&Url>) -> Option<Url> {
    let href = href.trim();
    if href.is_empty() {
        return None;
    }
    match Url::parse(href) {
        Ok(url) => Some(url),
        Err(url::ParseError::RelativeUrlWithoutBase) => base?.join(href).ok(),
        Err(_) => None,
    }
}

/// A text construct as plain text: markup stripped and entities decoded
/// for HTML types, and for "plain" text that is HTML after all.
fn text_as_plain(text: &Text) -> String {
    let raw = clean_text(&text.content);
    if is_plain(&text.content_type) && !html::looks_like_html(&raw) {
        html::collapse_whitespace(&raw)
    } else {
        html::plain_text(&raw)
    }
}

/// A text construct as HTML: plain text escaped.
fn text_as_html(text: &Text) -> String {
    if is_plain(&text.content_type) {
        html::escape(&text.content)
    } else {
        text.content.clone()
    }
}

/// True for the Atom text types and text or XML media types: content that
/// is read, not downloaded.
fn is_text_type(media_type: &str) -> bool {
    let essence = media_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    matches!(essence.as_str(), "" | "text" | "html" | "xhtml")
        || essence.starts_with("text/")
        || essence.ends_with("/xml")
        || essence.ends_with("+xml")
}

/// True for a `text/plain` media type (parameters ignored).
fn is_plain(media_type: &impl std::fmt::Display) -> bool {
    let text = media_type.to_string();
    let essence = text.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("text/plain")
}

/// Drops characters XML 1.0 forbids and every other control character (C0,
/// DEL and C1, U+0080 to U+009F), so none reaches a published document or a
/// terminal. Tab, newline and carriage return stay.
pub fn clean_text(text: &str) -> String {
    let allowed = |c: char| {
        matches!(c, '\t' | '\n' | '\r') || !(c.is_control() || c == '\u{fffe}' || c == '\u{ffff}')
    };
    // Most text has nothing to drop: one copy, no character-wise growth.
    if text.chars().all(allowed) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    out.extend(text.chars().filter(|&c| allowed(c)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_dropped() {
        let check = |text: &str, expected: &str| assert_eq!(clean_text(text), expected, "{text:?}");
        check("plain title", "plain title");
        check("tab\tnew\nline\r", "tab\tnew\nline\r");
        check("nul\u{0}bell\u{7}esc\u{1b}[31mred", "nulbellesc[31mred");
        check("del\u{7f}", "del");
        check("c1\u{80}\u{85}\u{9b}31m\u{9f}end", "c131mend");
        check("\u{fffe}\u{ffff}", "");
        check(
            "\u{a0}nbsp and é, مرحبا, \u{200f}rlm",
            "\u{a0}nbsp and é, مرحبا, \u{200f}rlm",
        );
    }

    #[test]
    fn control_characters_from_html_references_are_dropped() {
        let doc = "<feed xmlns=\"http://www.w3.org/2005/Atom\"><entry><id>1</id>\
            <title type=\"html\">a&amp;#3;b &amp;#3z c&amp;#x1b;[2J</title></entry></feed>";
        let entries = entries_with(doc, "https://example.org/feed", None);
        assert_eq!(entries[0].title, "ab z c[2J");
    }

    #[test]
    fn titles_lose_their_control_characters() {
        let doc = "<rss version=\"2.0\"><channel><title>t</title><item><guid>1</guid>\
            <title>bad\u{9b}2J &#x85;&#155;title</title>\
            <description>&lt;p&gt;x\u{9d}y&lt;/p&gt;</description></item></channel></rss>";
        let entries = entries_with(doc, "https://example.org/feed", None);
        assert_eq!(entries[0].title, "bad2J title");
        assert_eq!(entries[0].summary.as_deref(), Some("<p>xy</p>"));
    }

    fn entries_with(doc: &str, url: &str, http_language: Option<&str>) -> Vec<Entry> {
        let url = Url::parse(url).unwrap();
        let parsed = crate::parse::parse(doc.as_bytes(), None, Some(&url)).unwrap();
        let now = DateTime::parse_from_rfc3339("2025-04-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        normalize_with_hints(
            &parsed.feed,
            &parsed.hints,
            &Context {
                source: "test",
                document_url: Some(&url),
                http_language,
                now,
                tracking: &dedup::default_tracking(),
            },
        )
    }

    fn entries(doc: &str, url: &str) -> Vec<Entry> {
        entries_with(doc, url, None)
    }

    #[test]
    fn relative_image_resolves_against_the_entry_link() {
        let doc = r#"<?xml version="1.0"?><rss version="2.0"><channel><title>t</title><language>ar</language>
            <item><guid>g1</guid><title>خبر</title><link>https://www.centcom.mil/AR/MEDIA/1/</link>
            <description>&lt;p&gt;نص&lt;/p&gt;&lt;img src="/ssc/images/2025/03/27/49771-Kurilla-Qatar-conference-600_384.webp"&gt;</description>
            </item></channel></rss>"#;
        let e = &entries(doc, "http://127.0.0.1:1/feed.xml")[0];
        assert_eq!(
            e.summary.as_deref(),
            Some("<div dir=\"rtl\"><p>نص</p><img src=\"https://www.centcom.mil/ssc/images/2025/03/27/49771-Kurilla-Qatar-conference-600_384.webp\"></div>")
        );
        assert_eq!(e.language.as_deref(), Some("ar"));
        assert_eq!(e.source_id, "g1");
    }

    #[test]
    fn ids_are_stable_without_guids() {
        let doc = r#"<rss version="2.0"><channel><title>t</title>
            <item><title>with link</title><link>/posts/1</link></item>
            <item><title>no link</title><description>body</description></item>
            </channel></rss>"#;
        let first = entries(doc, "https://example.org/feed.xml");
        let again = entries(doc, "https://example.org/feed.xml");
        assert_eq!(first[0].source_id, "https://example.org/posts/1");
        assert!(first[1].source_id.starts_with("sha256:"));
        assert_eq!(first[0].id, again[0].id);
        assert_eq!(first[1].id, again[1].id);
        assert_ne!(first[0].id, first[1].id);
    }

    #[test]
    fn one_guid_for_every_item_keeps_every_item() {
        // Miniflux #4197.
        let doc = r#"<rss version="2.0"><channel><title>t</title>
            <item><guid>same</guid><title>one</title><link>https://example.org/1</link></item>
            <item><guid>same</guid><title>two</title><link>https://example.org/2</link></item>
            <item><guid>same</guid><title>three</title></item>
            <item><guid>unique</guid><title>four</title></item>
            </channel></rss>"#;
        let first = entries(doc, "https://example.org/feed.xml");
        let ids: HashSet<&str> = first.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids.len(), 4);
        assert_eq!(first[3].source_id, "unique");
        let again = entries(doc, "https://example.org/feed.xml");
        assert_eq!(
            first.iter().map(|e| &e.id).collect::<Vec<_>>(),
            again.iter().map(|e| &e.id).collect::<Vec<_>>()
        );
    }

    #[test]
    fn language_order() {
        let long_en =
            "The council approved the new budget after a long debate about schools and roads.";
        let doc = |feed_lang: &str, item_lang: &str| {
            format!(
                r#"<feed xmlns="http://www.w3.org/2005/Atom" {feed_lang}><title>t</title><id>f</id><updated>2025-03-01T00:00:00Z</updated>
                <entry {item_lang}><id>1</id><title>{long_en}</title><updated>2025-03-01T00:00:00Z</updated></entry></feed>"#
            )
        };
        let lang = |d: String, http: Option<&str>| {
            entries_with(&d, "https://example.org/", http)[0]
                .language
                .clone()
        };
        assert_eq!(
            lang(doc("xml:lang=\"fr\"", "xml:lang=\"de\""), Some("es")).as_deref(),
            Some("de")
        );
        assert_eq!(
            lang(doc("xml:lang=\"fr\"", ""), Some("es")).as_deref(),
            Some("fr")
        );
        assert_eq!(
            lang(doc("", ""), Some("es-MX, en")).as_deref(),
            Some("es-mx")
        );
        assert_eq!(lang(doc("", ""), None).as_deref(), Some("en"), "detected");
    }

    #[test]
    fn titles_marked_plain_that_are_html() {
        let doc = r#"<rss version="2.0"><channel><title>t</title>
            <item><guid>1</guid><title>Tom &amp;amp; Jerry &lt;b&gt;return&lt;/b&gt;</title></item>
            <item><guid>2</guid><title>Why x &lt; y matters</title></item>
            </channel></rss>"#;
        let e = entries(doc, "https://example.org/");
        assert_eq!(e[0].title, "Tom & Jerry return");
        assert_eq!(e[1].title, "Why x < y matters");
    }

    #[test]
    fn enclosures_from_every_kind() {
        let rss = r#"<rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/"><channel><title>t</title>
            <item><guid>1</guid><title>x</title><link>https://example.org/1</link>
            <enclosure url="/audio/1.mp3" length="12345" type="audio/mpeg"/>
            <media:thumbnail url="https://cdn.example.org/1.webp"/>
            </item></channel></rss>"#;
        let e = &entries(rss, "https://example.org/feed.xml")[0];
        assert_eq!(
            e.enclosures,
            [
                Enclosure {
                    url: "https://example.org/audio/1.mp3".into(),
                    mime_type: Some("audio/mpeg".into()),
                    length: Some(12345)
                },
                Enclosure {
                    url: "https://cdn.example.org/1.webp".into(),
                    mime_type: Some("image/webp".into()),
                    length: None
                },
            ]
        );
        let json = r#"{"version": "https://jsonfeed.org/version/1.1", "title": "t", "items": [
            {"id": "1", "url": "https://example.org/1", "content_text": "x", "image": "/img/1.png",
             "attachments": [{"url": "https://example.org/a.pdf", "mime_type": "application/pdf", "size_in_bytes": 99}]}]}"#;
        let e = &entries(json, "https://example.org/feed.json")[0];
        assert_eq!(e.link.as_deref(), Some("https://example.org/1"));
        assert_eq!(
            e.enclosures,
            [
                Enclosure {
                    url: "https://example.org/a.pdf".into(),
                    mime_type: Some("application/pdf".into()),
                    length: Some(99)
                },
                Enclosure {
                    url: "https://example.org/img/1.png".into(),
                    mime_type: Some("image/png".into()),
                    length: None
                }
            ]
        );
    }

    #[test]
    fn summaries_derive_from_content() {
        let doc = r#"<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title><id>f</id><updated>2025-03-01T00:00:00Z</updated>
            <entry><id>1</id><title>x</title><updated>2025-03-01T00:00:00Z</updated>
            <content type="html">&lt;p&gt;Only &lt;b&gt;content&lt;/b&gt; here.&lt;/p&gt;</content></entry></feed>"#;
        let e = &entries(doc, "https://example.org/")[0];
        assert_eq!(e.summary.as_deref(), Some("Only content here."));
    }

    #[test]
    fn future_dates_are_not_believed() {
        let doc = r#"<rss version="2.0"><channel><title>t</title>
            <item><guid>1</guid><title>x</title><pubDate>Mon, 01 Jan 2035 00:00:00 GMT</pubDate></item>
            </channel></rss>"#;
        assert_eq!(entries(doc, "https://example.org/")[0].published, None);
    }
}
