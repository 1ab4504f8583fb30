//! feed-rs entries to feedmerge [`Entry`]s: absolute links, UTC dates,
//! plain-text titles, sanitized HTML, a language, a stable id.
//!
//! This module is pure: the time and the document's URL come in through
//! [`Context`]; it does no I/O.

use ammonia::UrlRelative;
use chrono::{DateTime, Duration, Utc};
use feed_rs::model::{Feed, Text};
use sha2::{Digest, Sha256};
use url::Url;

use crate::dedup;
use crate::model::Entry;

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
}

/// Dates further ahead than this are not believed.
const FUTURE_SLACK: Duration = Duration::days(1);

/// Normalizes every entry of `feed`.
pub fn normalize(feed: &Feed, ctx: &Context<'_>) -> Vec<Entry> {
    let feed_language = feed_language(feed, ctx.http_language);
    let home_page = feed_home_page(feed, ctx.document_url);

    feed.entries
        .iter()
        .map(|e| {
            let entry_base = e
                .base
                .as_deref()
                .and_then(|b| absolute_url(b, ctx.document_url));
            let doc_base = entry_base.as_ref().or(ctx.document_url);
            let link = e
                .links
                .iter()
                .find(|l| l.rel.as_deref().is_none_or(|r| r == "alternate"))
                .or_else(|| e.links.first())
                .and_then(|l| absolute_url(&l.href, doc_base))
                .filter(|u| matches!(u.scheme(), "http" | "https"));
            // Relative URLs in the HTML resolve against xml:base, then the
            // entry's own link, then the document (a local file's home page
            // stands in for its file:// URL).
            let html_base = entry_base
                .clone()
                .or_else(|| link.clone())
                .or_else(|| match ctx.document_url {
                    Some(u) if u.scheme() != "file" => Some(u.clone()),
                    _ => home_page.clone(),
                })
                .or_else(|| ctx.document_url.cloned());

            let title = e.title.as_ref().map(text_as_plain).unwrap_or_default();
            let summary = e
                .summary
                .as_ref()
                .map(|t| sanitize_html(&text_as_html(t), html_base.as_ref()))
                .filter(|s| !s.trim().is_empty());
            let content = e
                .content
                .as_ref()
                .and_then(|c| {
                    let body = c.body.as_deref()?;
                    let html = if is_plain(&c.content_type) {
                        escape_html(body)
                    } else {
                        body.to_string()
                    };
                    Some(sanitize_html(&html, html_base.as_ref()))
                })
                .filter(|s| !s.trim().is_empty());

            let source_id = if !e.id.trim().is_empty() {
                clean_text(e.id.trim())
            } else if let Some(link) = &link {
                link.to_string()
            } else {
                let mut hasher = Sha256::new();
                hasher.update(title.as_bytes());
                hasher.update([0]);
                hasher.update(
                    content
                        .as_deref()
                        .or(summary.as_deref())
                        .unwrap_or("")
                        .as_bytes(),
                );
                format!("sha256:{}", hex(&hasher.finalize()))
            };

            let believable = |d: Option<DateTime<Utc>>| d.filter(|d| *d <= ctx.now + FUTURE_SLACK);
            Entry {
                id: dedup::entry_id(ctx.source, &source_id),
                source: ctx.source.to_string(),
                source_id,
                title,
                link: link.map(String::from),
                summary,
                content,
                authors: e
                    .authors
                    .iter()
                    .map(|p| collapse_whitespace(&clean_text(p.name.as_deref().unwrap_or(""))))
                    .filter(|n| !n.is_empty())
                    .collect(),
                categories: e
                    .categories
                    .iter()
                    .map(|c| {
                        collapse_whitespace(&clean_text(c.label.as_deref().unwrap_or(&c.term)))
                    })
                    .filter(|c| !c.is_empty())
                    .collect(),
                published: believable(e.published),
                updated: believable(e.updated),
                first_seen: ctx.now,
                changed: ctx.now,
                language: e
                    .language
                    .as_deref()
                    .and_then(language_tag)
                    .or_else(|| feed_language.clone()),
            }
        })
        .collect()
}

/// The feed's own title, as plain text.
pub fn feed_title(feed: &Feed) -> Option<String> {
    feed.title
        .as_ref()
        .map(text_as_plain)
        .filter(|t| !t.is_empty())
}

/// The feed's language: its `xml:lang` / `<language>` / JSON `language`,
/// else the HTTP `Content-Language`.
pub fn feed_language(feed: &Feed, http_language: Option<&str>) -> Option<String> {
    feed.language
        .as_deref()
        .and_then(language_tag)
        .or_else(|| http_language.and_then(first_language).and_then(language_tag))
}

/// The feed's home page (its alternate link), absolute, http(s) only.
pub fn feed_home_page(feed: &Feed, document_url: Option<&Url>) -> Option<Url> {
    feed.links
        .iter()
        .find(|l| l.rel.as_deref().is_none_or(|r| r == "alternate"))
        .and_then(|l| absolute_url(&l.href, document_url))
        .filter(|u| matches!(u.scheme(), "http" | "https"))
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

/// Sanitizes HTML: no scripts, styles, frames, event handlers or
/// `javascript:` URLs; `dir` and `lang` kept; relative URLs made absolute
/// against `base` (or dropped when there is none).
pub fn sanitize_html(html: &str, base: Option<&Url>) -> String {
    let mut builder = ammonia::Builder::default();
    builder.add_generic_attributes(["dir", "lang"]);
    builder.url_relative(match base {
        Some(base) => UrlRelative::RewriteWithBase(base.clone()),
        None => UrlRelative::Deny,
    });
    clean_text(builder.clean(html).to_string().trim())
}

/// A text construct as plain text: HTML markup stripped for HTML types.
fn text_as_plain(text: &Text) -> String {
    let raw = clean_text(&text.content);
    if is_plain(&text.content_type) {
        collapse_whitespace(&raw)
    } else {
        plain_text(&raw)
    }
}

/// A text construct as HTML: plain text escaped.
fn text_as_html(text: &Text) -> String {
    if is_plain(&text.content_type) {
        escape_html(&text.content)
    } else {
        text.content.clone()
    }
}

/// True for a `text/plain` media type (parameters ignored).
fn is_plain(media_type: &impl std::fmt::Display) -> bool {
    let text = media_type.to_string();
    let essence = text.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("text/plain")
}

/// HTML to plain text: tags dropped (script and style with their content),
/// entities decoded, whitespace collapsed.
pub fn plain_text(html: &str) -> String {
    let stripped = ammonia::Builder::empty().clean(html).to_string();
    let decoded = stripped
        .replace("&nbsp;", "\u{a0}")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&");
    collapse_whitespace(&decoded)
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Drops characters XML 1.0 forbids, so they never reach the output.
pub fn clean_text(text: &str) -> String {
    text.chars()
        .filter(|&c| {
            matches!(c, '\t' | '\n' | '\r') || (c >= '\u{20}' && c != '\u{fffe}' && c != '\u{ffff}')
        })
        .collect()
}

/// The first tag of a `Content-Language` list.
fn first_language(header: &str) -> Option<&str> {
    header.split(',').next().map(str::trim)
}

/// A well-formed BCP 47-ish language tag (`ar`, `en-us`), or `None`.
fn language_tag(raw: &str) -> Option<String> {
    let tag = raw.trim().replace('_', "-").to_ascii_lowercase();
    let mut parts = tag.split('-');
    let primary = parts.next()?;
    let primary_ok =
        (1..=8).contains(&primary.len()) && primary.bytes().all(|b| b.is_ascii_alphabetic());
    let rest_ok =
        parts.all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric()));
    (primary_ok && rest_ok).then_some(tag)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(doc: &str, url: &str) -> Vec<Entry> {
        let url = Url::parse(url).unwrap();
        let parsed = crate::parse::parse(doc.as_bytes(), None, Some(&url)).unwrap();
        let now = DateTime::parse_from_rfc3339("2025-04-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        normalize(
            &parsed.feed,
            &Context {
                source: "test",
                document_url: Some(&url),
                http_language: None,
                now,
            },
        )
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
            Some("<p>نص</p><img src=\"https://www.centcom.mil/ssc/images/2025/03/27/49771-Kurilla-Qatar-conference-600_384.webp\">")
        );
        assert_eq!(e.language.as_deref(), Some("ar"));
        assert_eq!(e.source_id, "g1");
    }

    #[test]
    fn sanitizing() {
        let check = |html: &str, expected: &str| {
            let base = Url::parse("https://example.org/a/b").unwrap();
            assert_eq!(sanitize_html(html, Some(&base)), expected, "{html}");
        };
        check(
            "<p onclick=\"x()\">hi<script>alert(1)</script></p>",
            "<p>hi</p>",
        );
        check(
            "<a href=\"javascript:alert(1)\">x</a>",
            "<a rel=\"noopener noreferrer\">x</a>",
        );
        check(
            "<p dir=\"rtl\" lang=\"ar\">نص</p>",
            "<p dir=\"rtl\" lang=\"ar\">نص</p>",
        );
        check(
            "<iframe src=\"https://evil/\"></iframe><style>p{}</style>ok",
            "ok",
        );
        check(
            "<a href=\"/about\">a</a>",
            "<a href=\"https://example.org/about\" rel=\"noopener noreferrer\">a</a>",
        );
        check("bad\u{1}char", "badchar");
    }

    #[test]
    fn titles_are_plain_text() {
        assert_eq!(
            plain_text("<b>Rust</b> &amp; <i>feeds</i>\n  today"),
            "Rust & feeds today"
        );
        assert_eq!(plain_text("a &lt; b<script>x</script>"), "a < b");
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
    fn language_tags() {
        assert_eq!(language_tag("en_US"), Some("en-us".into()));
        assert_eq!(language_tag(" AR "), Some("ar".into()));
        assert_eq!(language_tag("not a tag"), None);
        assert_eq!(language_tag(""), None);
    }

    #[test]
    fn future_dates_are_not_believed() {
        let doc = r#"<rss version="2.0"><channel><title>t</title>
            <item><guid>1</guid><title>x</title><pubDate>Mon, 01 Jan 2035 00:00:00 GMT</pubDate></item>
            </channel></rss>"#;
        assert_eq!(entries(doc, "https://example.org/")[0].published, None);
    }
}
