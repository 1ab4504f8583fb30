//! OPML in and out: subscription lists from other readers become
//! `[[sources]]` TOML, and the configured sources become an OPML 2.0
//! document (`feedmerge import-opml`, `feedmerge export-opml`,
//! `GET /sources.opml`). Pure: bytes and the config in, text out.
//!
//! Import decodes the file first (BOM, then the XML declaration's charset,
//! then UTF-8, as feeds are), reads it with quick-xml without recursion,
//! and takes every outline with an `xmlUrl`: its name is slugged from its
//! title (else its URL's host, else `source-N`) and made unique, and its
//! tags are its folders and its `category` paths. A feed listed in several
//! folders becomes one source with all their tags. The TOML is written by
//! the `toml` crate, never by hand.
//!
//! Export lists each http(s) source with its title (the feed's own, when
//! the store knows it, else the name), its URL without userinfo, its home
//! page and its tags as `category`. Header values are never written. File
//! sources (a path is nobody else's business) and sources with
//! `publish_url = false` (their URL carries a key) are left out, and the
//! caller is told which.

use std::collections::{HashMap, HashSet};

use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesDecl, BytesStart, BytesText, Event};
use serde::Serialize;
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;
use url::Url;

use crate::config::{Config, SourceLocation};
use crate::publish::without_userinfo;
use crate::status::SourceStatus;

/// Deepest element nesting read; a deeper document is refused (real
/// subscription lists nest a few folders deep).
pub const MAX_DEPTH: usize = 64;

/// Most outlines read from one document.
pub const MAX_OUTLINES: usize = 100_000;

/// Longest source name made from a title.
const MAX_NAME: usize = 40;

/// Why an OPML document could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpmlError {
    /// The document is not well-formed XML.
    #[error("line {line}: not well-formed XML: {message}")]
    Xml {
        /// 1-based line of the error.
        line: usize,
        /// What the XML reader said.
        message: String,
    },
    /// The document is XML but not OPML.
    #[error("not an OPML document (the root element is <{root}>)")]
    NotOpml {
        /// The root element's name.
        root: String,
    },
    /// Elements nest deeper than [`MAX_DEPTH`].
    #[error("line {line}: elements nest deeper than {limit} levels")]
    TooDeep {
        /// 1-based line of the element too deep.
        line: usize,
        /// The limit.
        limit: usize,
    },
    /// More outlines than [`MAX_OUTLINES`].
    #[error("more than {limit} outlines")]
    TooMany {
        /// The limit.
        limit: usize,
    },
    /// The output could not be written.
    #[error("cannot write {what}: {message}")]
    Write {
        /// `TOML` or `OPML`.
        what: &'static str,
        /// Why.
        message: String,
    },
}

/// One source read from an OPML outline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportedSource {
    /// A unique name, `[a-z0-9-]+`.
    pub name: String,
    /// The feed's http(s) URL.
    pub url: String,
    /// The outline's folders and categories, in document order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// What an OPML document gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Import {
    /// The sources, in document order.
    pub sources: Vec<ImportedSource>,
    /// One line per outline left out, and why.
    pub notes: Vec<String>,
}

/// Names and URLs the imported sources must not repeat: those of an
/// existing config.
#[derive(Debug, Clone, Default)]
pub struct Taken {
    /// Source names in use.
    pub names: HashSet<String>,
    /// Source URLs in use, each with its source's name.
    pub urls: HashMap<String, String>,
}

impl Taken {
    /// The names and http(s) URLs of `config`'s sources.
    pub fn from_config(config: &Config) -> Self {
        let mut taken = Taken::default();
        for source in &config.sources {
            taken.names.insert(source.name.clone());
            if let SourceLocation::Http(url) = &source.location {
                taken.urls.insert(url.to_string(), source.name.clone());
            }
        }
        taken
    }
}

/// One outline being read: the folder it opens, if it is a folder.
struct Frame {
    /// The tag this outline gives its children (folders only).
    folder: Option<String>,
}

/// Reads an OPML 1.0 or 2.0 document from `bytes` in any encoding, taking
/// every outline with an `xmlUrl` as a source whose name and URL are not
/// in `taken`.
pub fn import(bytes: &[u8], taken: &Taken) -> Result<Import, OpmlError> {
    let encoding = crate::parse::detect_encoding(bytes, None);
    let (text, _, _) = encoding.decode(bytes);
    let mut reader = quick_xml::Reader::from_str(&text);
    let mut lines = Lines::new(&text);

    let mut out = Import::default();
    let mut names = taken.names.clone();
    // Index in `out.sources` of each URL taken from this document.
    let mut by_url: HashMap<String, usize> = HashMap::new();
    // Every open element, and for open outlines their folder.
    let mut open: Vec<Option<Frame>> = Vec::new();
    let mut seen_root = false;
    let mut in_body = false;
    let mut outlines = 0usize;
    loop {
        let event = reader.read_event().map_err(|e| OpmlError::Xml {
            line: lines.at(reader.error_position()),
            message: e.to_string(),
        })?;
        let (element, has_children) = match &event {
            Event::Start(e) => (e, true),
            Event::Empty(e) => (e, false),
            Event::End(e) => {
                open.pop();
                if e.local_name().as_ref().eq_ignore_ascii_case("body") {
                    in_body = false;
                }
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        let name = element.local_name().as_ref().to_ascii_lowercase();
        if !seen_root {
            if name != "opml" {
                return Err(OpmlError::NotOpml { root: name });
            }
            seen_root = true;
        }
        if has_children && open.len() >= MAX_DEPTH {
            return Err(OpmlError::TooDeep {
                line: lines.at(reader.buffer_position()),
                limit: MAX_DEPTH,
            });
        }
        let mut frame = None;
        if name == "body" && has_children {
            in_body = true;
        } else if name == "outline" && in_body {
            outlines += 1;
            if outlines > MAX_OUTLINES {
                return Err(OpmlError::TooMany {
                    limit: MAX_OUTLINES,
                });
            }
            let line = lines.at(reader.buffer_position());
            let outline = Outline::read(element);
            let folders = open.iter().flatten().filter_map(|f| f.folder.clone());
            match &outline.xml_url {
                Some(url) => {
                    let tags: Vec<String> = folders.chain(outline.categories()).collect();
                    add_source(
                        &mut out,
                        &mut names,
                        &mut by_url,
                        taken,
                        &outline,
                        url,
                        tags,
                        line,
                    );
                    frame = Some(Frame { folder: None });
                }
                None if has_children => {
                    frame = Some(Frame {
                        folder: tag(outline.label().unwrap_or_default()),
                    });
                }
                None => out.notes.push(format!(
                    "line {line}: outline {:?} has no xmlUrl; left out",
                    outline.label().unwrap_or_default()
                )),
            }
        }
        if has_children {
            open.push(frame);
        }
    }
    if !seen_root {
        return Err(OpmlError::NotOpml {
            root: String::new(),
        });
    }
    for source in &mut out.sources {
        dedup(&mut source.tags);
    }
    Ok(out)
}

/// Line numbers of byte offsets met in increasing order, each byte counted
/// once (a document of many outlines costs no more than one pass).
struct Lines<'a> {
    text: &'a [u8],
    at: usize,
    line: usize,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text: text.as_bytes(),
            at: 0,
            line: 1,
        }
    }

    /// The 1-based line of byte offset `at` (not before the last one asked).
    fn at(&mut self, at: u64) -> usize {
        let at = usize::try_from(at)
            .unwrap_or(usize::MAX)
            .min(self.text.len());
        if at > self.at {
            let newlines = self.text[self.at..at].iter().filter(|&&b| b == b'\n');
            self.line += newlines.count();
            self.at = at;
        }
        self.line
    }
}

/// Adds the outline's feed as a source, or its tags to the source already
/// taken for the same URL.
#[allow(clippy::too_many_arguments)]
fn add_source(
    out: &mut Import,
    names: &mut HashSet<String>,
    by_url: &mut HashMap<String, usize>,
    taken: &Taken,
    outline: &Outline,
    url: &str,
    tags: Vec<String>,
    line: usize,
) {
    let Some(url) = feed_url(url) else {
        out.notes.push(format!(
            "line {line}: xmlUrl {:?} is not an http(s) URL; left out",
            url.trim()
        ));
        return;
    };
    if let Some(name) = taken.urls.get(&url) {
        out.notes.push(format!(
            "line {line}: {url} is already in the config as {name:?}; left out"
        ));
        return;
    }
    if let Some(&index) = by_url.get(&url) {
        if let Some(source) = out.sources.get_mut(index) {
            source.tags.extend(tags);
        }
        return;
    }
    let base = outline
        .label()
        .map(slug)
        .filter(|s| !s.is_empty())
        .or_else(|| host_slug(&url))
        .unwrap_or_else(|| format!("source-{}", out.sources.len() + 1));
    let name = unique(&base, names);
    by_url.insert(url.clone(), out.sources.len());
    out.sources.push(ImportedSource { name, url, tags });
}

/// The attributes of one outline that matter.
#[derive(Debug, Default)]
struct Outline {
    text: Option<String>,
    title: Option<String>,
    xml_url: Option<String>,
    category: Option<String>,
}

impl Outline {
    fn read(element: &BytesStart<'_>) -> Self {
        let mut outline = Outline::default();
        for attr in element.attributes().with_checks(false).flatten() {
            let key = attr.key.local_name().as_ref().to_ascii_lowercase();
            let slot = match key.as_str() {
                "text" => &mut outline.text,
                "title" => &mut outline.title,
                "xmlurl" => &mut outline.xml_url,
                "category" => &mut outline.category,
                _ => continue,
            };
            *slot = Some(value(&attr)).filter(|v| !v.trim().is_empty());
        }
        outline
    }

    /// The outline's title, else its text.
    fn label(&self) -> Option<&str> {
        self.title.as_deref().or(self.text.as_deref())
    }

    /// Tags from the `category` attribute: comma-separated slash paths
    /// (`/News/World,tech`), each path segment a tag.
    fn categories(&self) -> Vec<String> {
        self.category
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .flat_map(|path| path.split('/'))
            .filter_map(tag)
            .collect()
    }
}

/// An attribute's value with references resolved. A reference to an
/// entity the document declares itself (or any other unknown one) is kept
/// as written: nothing is expanded, so no entity can multiply the text.
fn value(attr: &Attribute<'_>) -> String {
    attr.normalized_value(quick_xml::XmlVersion::Implicit1_0)
        .map(|v| v.into_owned())
        .unwrap_or_else(|_| attr.value.to_string())
}

/// The URL a feed is polled at: `feed://` and `feed:` prefixes taken off,
/// http(s) only, as the config will read it.
fn feed_url(text: &str) -> Option<String> {
    let text = text.trim();
    let text = match text.strip_prefix("feed:") {
        Some(rest) if rest.starts_with("//") => format!("http:{rest}"),
        Some(rest) => rest.to_string(),
        None => text.to_string(),
    };
    let url = Url::parse(&text).ok()?;
    (matches!(url.scheme(), "http" | "https") && url.host_str().is_some()).then(|| url.to_string())
}

/// A tag from a folder's or category's text: trimmed, lowercased, runs of
/// whitespace made one `-`, control characters dropped; `None` if empty.
fn tag(text: &str) -> Option<String> {
    let words: Vec<String> = text
        .split_whitespace()
        .map(|w| w.chars().filter(|c| !c.is_control()).collect::<String>())
        .filter(|w| !w.is_empty())
        .collect();
    (!words.is_empty()).then(|| words.join("-").to_lowercase())
}

/// `text` as a source name: accents taken off (NFKD, combining marks
/// dropped), ASCII letters and digits kept in lowercase, every other run
/// of characters one `-`, at most [`MAX_NAME`] characters. Empty when no
/// Latin letter or digit is left (an Arabic title, say).
pub fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.nfkd().filter(|c| !is_combining_mark(*c)) {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    if out.len() > MAX_NAME {
        out.truncate(MAX_NAME);
        // Cut at a word boundary when there is one.
        if let Some(at) = out.rfind('-').filter(|&at| at > MAX_NAME / 2) {
            out.truncate(at);
        }
    }
    out.trim_end_matches('-').to_string()
}

/// A name from the URL's host, without a leading `www.`.
fn host_slug(url: &str) -> Option<String> {
    let url = Url::parse(url).ok()?;
    let host = url.host_str()?;
    let name = slug(host.strip_prefix("www.").unwrap_or(host));
    (!name.is_empty()).then_some(name)
}

/// `base`, or `base-2`, `base-3`... whichever is not in `names`; the name
/// chosen is added to `names`.
fn unique(base: &str, names: &mut HashSet<String>) -> String {
    let mut name = base.to_string();
    let mut n = 1;
    while names.contains(&name) {
        n += 1;
        name = format!("{base}-{n}");
    }
    names.insert(name.clone());
    name
}

/// Drops repeated tags, keeping the first of each.
fn dedup(tags: &mut Vec<String>) {
    let mut seen = HashSet::new();
    tags.retain(|t| seen.insert(t.clone()));
}

/// `sources` as `[[sources]]` tables, ready to append to a config.
pub fn to_toml(sources: &[ImportedSource]) -> Result<String, OpmlError> {
    #[derive(Serialize)]
    struct Document<'a> {
        sources: &'a [ImportedSource],
    }
    if sources.is_empty() {
        return Ok(String::new());
    }
    toml::to_string(&Document { sources }).map_err(|e| OpmlError::Write {
        what: "TOML",
        message: e.to_string(),
    })
}

/// The content type of an OPML document.
pub const OPML_CONTENT_TYPE: &str = "text/x-opml; charset=utf-8";

/// The configured sources as OPML 2.0, and which were left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// The document.
    pub xml: String,
    /// One line per source not listed, saying why.
    pub notes: Vec<String>,
}

/// The sources of `config` as an OPML 2.0 document. `known` is what the
/// store says of the sources (their titles and home pages); a source
/// missing from it is titled by its name.
pub fn export(config: &Config, known: &[SourceStatus]) -> Result<Export, OpmlError> {
    let write_err = |e: std::io::Error| OpmlError::Write {
        what: "OPML",
        message: e.to_string(),
    };
    let mut notes = Vec::new();
    let mut writer = quick_xml::Writer::new_with_indent(Vec::new(), b' ', 2);
    writer
        .write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))
        .map_err(write_err)?;
    writer
        .create_element("opml")
        .with_attribute(("version", "2.0"))
        .write_inner_content(|w| {
            w.create_element("head").write_inner_content(|w| {
                w.create_element("title")
                    .write_text_content(BytesText::new(&xml_text(&config.feed.title)))?;
                Ok(())
            })?;
            w.create_element("body").write_inner_content(|w| {
                for source in &config.sources {
                    let url = match &source.location {
                        SourceLocation::Http(url) if source.publish_url => url,
                        SourceLocation::Http(_) => {
                            notes.push(format!(
                                "source {:?} left out: publish_url = false",
                                source.name
                            ));
                            continue;
                        }
                        SourceLocation::File(_) => {
                            notes.push(format!("source {:?} left out: a file source", source.name));
                            continue;
                        }
                    };
                    let state = known.iter().find(|k| k.name == source.name);
                    let title = state
                        .and_then(|s| s.title.as_deref())
                        .map(xml_text)
                        .filter(|t| !t.trim().is_empty())
                        .unwrap_or_else(|| source.name.clone());
                    let xml_url = without_userinfo(url.as_str());
                    let html_url = state
                        .and_then(|s| s.home_page.as_deref())
                        .filter(|h| {
                            Url::parse(h).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
                        })
                        .map(|h| xml_text(&without_userinfo(h)));
                    let category = source
                        .tags
                        .iter()
                        .map(|t| xml_text(t))
                        .collect::<Vec<_>>()
                        .join(",");
                    let mut outline = w.create_element("outline").with_attributes([
                        ("type", "rss"),
                        ("text", title.as_str()),
                        ("title", title.as_str()),
                        ("xmlUrl", xml_url.as_str()),
                    ]);
                    if let Some(html_url) = &html_url {
                        outline = outline.with_attribute(("htmlUrl", html_url.as_str()));
                    }
                    if !category.is_empty() {
                        outline = outline.with_attribute(("category", category.as_str()));
                    }
                    outline.write_empty()?;
                }
                Ok(())
            })?;
            Ok(())
        })
        .map_err(write_err)?;
    let mut xml = String::from_utf8(writer.into_inner()).map_err(|e| OpmlError::Write {
        what: "OPML",
        message: e.to_string(),
    })?;
    xml.push('\n');
    Ok(Export { xml, notes })
}

/// `text` without the characters XML 1.0 forbids (and C1 controls).
fn xml_text(text: &str) -> String {
    text.chars()
        .filter(|&c| matches!(c, '\t' | '\n' | '\r') || !c.is_control())
        .filter(|&c| !matches!(c, '\u{fffe}' | '\u{ffff}'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn sources(opml: &str) -> Vec<(String, String, Vec<String>)> {
        let import = import(opml.as_bytes(), &Taken::default()).unwrap();
        import
            .sources
            .into_iter()
            .map(|s| (s.name, s.url, s.tags))
            .collect()
    }

    fn source(name: &str, url: &str, tags: &[&str]) -> (String, String, Vec<String>) {
        (
            name.to_string(),
            url.to_string(),
            tags.iter().map(|t| t.to_string()).collect(),
        )
    }

    fn opml(body: &str) -> String {
        format!("<?xml version=\"1.0\"?>\n<opml version=\"2.0\"><head><title>t</title></head><body>{body}</body></opml>")
    }

    #[test]
    fn nested_folders_and_categories_become_tags() {
        let doc = opml(
            r#"<outline text="Tech News">
                 <outline text="Rust">
                   <outline text="Rust Blog" type="rss" xmlUrl="https://blog.rust-lang.org/feed.xml" category="/Lang/Systems,weekly"/>
                 </outline>
                 <outline title="LWN.net" text="lwn" xmlUrl="https://lwn.net/headlines/rss"/>
               </outline>
               <outline text="Top" xmlUrl="http://example.org/top.xml"/>"#,
        );
        assert_eq!(
            sources(&doc),
            [
                source(
                    "rust-blog",
                    "https://blog.rust-lang.org/feed.xml",
                    &["tech-news", "rust", "lang", "systems", "weekly"]
                ),
                source("lwn-net", "https://lwn.net/headlines/rss", &["tech-news"]),
                source("top", "http://example.org/top.xml", &[]),
            ]
        );
    }

    #[test]
    fn names_are_slugged_and_unique() {
        let doc = opml(
            r#"<outline text="Café Société!" xmlUrl="https://a.example/1"/>
               <outline text="News" xmlUrl="https://a.example/2"/>
               <outline text="news" xmlUrl="https://a.example/3"/>
               <outline text="NEWS" xmlUrl="https://a.example/4"/>
               <outline text="???" xmlUrl="https://www.bbc.co.uk/feed"/>
               <outline xmlUrl="https://1.2.3.4/feed"/>"#,
        );
        let names: Vec<String> = sources(&doc).into_iter().map(|s| s.0).collect();
        assert_eq!(
            names,
            [
                "cafe-societe",
                "news",
                "news-2",
                "news-3",
                "bbc-co-uk",
                "1-2-3-4"
            ]
        );
        // Names already in the config are taken too, and so are its URLs.
        let mut taken = Taken::default();
        taken.names.insert("news".into());
        taken.names.insert("news-2".into());
        taken
            .urls
            .insert("https://a.example/1".into(), "mine".into());
        let import = import(doc.as_bytes(), &taken).unwrap();
        let names: Vec<&str> = import.sources.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["news-3", "news-4", "news-5", "bbc-co-uk", "1-2-3-4"]
        );
        assert_eq!(
            import.notes,
            ["line 2: https://a.example/1 is already in the config as \"mine\"; left out"]
        );
        // A long title is cut at a word boundary; nothing at all gives source-N.
        assert_eq!(
            slug("The Quite Remarkably Long Title of Some Weekly Newsletter"),
            "the-quite-remarkably-long-title-of-some"
        );
        assert_eq!(slug("أخبار"), "");
    }

    #[test]
    fn a_feed_in_two_folders_is_one_source_with_both_tags() {
        let doc = opml(
            r#"<outline text="A"><outline text="F" xmlUrl="https://f.example/rss"/></outline>
               <outline text="B"><outline text="F again" xmlUrl="https://f.example/rss"/></outline>"#,
        );
        assert_eq!(
            sources(&doc),
            [source("f", "https://f.example/rss", &["a", "b"])]
        );
    }

    #[test]
    fn outlines_without_a_feed_url_are_left_out_and_said() {
        let doc = opml(
            r#"<outline text="just a note"/>
<outline text="ftp" xmlUrl="ftp://x.example/feed"/>
<outline text="feed scheme" xmlUrl="feed://x.example/rss"/>
<outline text="empty folder"></outline>"#,
        );
        let import = import(doc.as_bytes(), &Taken::default()).unwrap();
        assert_eq!(
            import.sources,
            [ImportedSource {
                name: "feed-scheme".into(),
                url: "http://x.example/rss".into(),
                tags: vec![]
            }]
        );
        assert_eq!(
            import.notes,
            [
                "line 2: outline \"just a note\" has no xmlUrl; left out",
                "line 3: xmlUrl \"ftp://x.example/feed\" is not an http(s) URL; left out",
            ]
        );
    }

    #[test]
    fn a_windows_1256_file_with_arabic_titles_is_transcoded() {
        let (body, _, _) = encoding_rs::WINDOWS_1256.encode(
            r#"<outline text="أخبار"><outline text="الجزيرة" xmlUrl="https://www.aljazeera.net/rss"/><outline text="بي بي سي عربي" xmlUrl="https://feeds.bbci.co.uk/arabic/rss.xml"/><outline text="قناة" xmlUrl="http://192.0.2.1/"/></outline>"#,
        );
        let mut doc =
            b"<?xml version=\"1.0\" encoding=\"windows-1256\"?><opml version=\"1.0\"><body>"
                .to_vec();
        doc.extend_from_slice(&body);
        doc.extend_from_slice(b"</body></opml>");
        assert!(
            std::str::from_utf8(&doc).is_err(),
            "the test file must not be UTF-8"
        );
        let import = import(&doc, &Taken::default()).unwrap();
        let got: Vec<(String, String, Vec<String>)> = import
            .sources
            .into_iter()
            .map(|s| (s.name, s.url, s.tags))
            .collect();
        assert_eq!(
            got,
            [
                source("aljazeera-net", "https://www.aljazeera.net/rss", &["أخبار"]),
                source(
                    "feeds-bbci-co-uk",
                    "https://feeds.bbci.co.uk/arabic/rss.xml",
                    &["أخبار"]
                ),
                source("192-0-2-1", "http://192.0.2.1/", &["أخبار"]),
            ]
        );
    }

    #[test]
    fn entities_are_never_expanded_and_references_are_read() {
        let laughs = r#"<?xml version="1.0"?>
<!DOCTYPE opml [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<opml version="2.0"><body><outline text="&lol2;" xmlUrl="https://x.example/?a=1&amp;b=2"/><outline text="R&#233;sum&#xE9;" xmlUrl="https://y.example/"/></body></opml>"#;
        assert_eq!(
            sources(laughs),
            [
                source("lol2", "https://x.example/?a=1&b=2", &[]),
                source("resume", "https://y.example/", &[]),
            ]
        );
    }

    #[test]
    fn hostile_documents_are_refused_with_a_reason() {
        let deep = format!(
            "<opml><body>{}{}</body></opml>",
            "<outline text=\"f\">".repeat(100_000),
            "</outline>".repeat(100_000)
        );
        let check = |doc: &str, expected: &str| {
            let err = import(doc.as_bytes(), &Taken::default()).unwrap_err();
            assert_eq!(err.to_string(), expected);
        };
        check(&deep, "line 1: elements nest deeper than 64 levels");
        check(
            "<rss version=\"2.0\"><channel/></rss>",
            "not an OPML document (the root element is <rss>)",
        );
        check("", "not an OPML document (the root element is <>)");
        assert!(matches!(
            import(
                b"<opml><body>\n<outline text='a'></body></opml>",
                &Taken::default()
            ),
            Err(OpmlError::Xml { line: 2, .. })
        ));
        let many = opml(&"<outline text=\"n\"/>".repeat(MAX_OUTLINES + 1));
        check(&many, "more than 100000 outlines");
    }

    #[test]
    fn imported_sources_are_toml_the_config_accepts() {
        let doc = opml(
            r#"<outline text="Quotes &quot;and&quot; \ backslashes" xmlUrl="https://q.example/?x=&quot;1&quot;"/>
               <outline text="Folder &quot;x&quot;"><outline text="Ctl" xmlUrl="https://c.example/"/></outline>"#,
        );
        let import = import(doc.as_bytes(), &Taken::default()).unwrap();
        let text = to_toml(&import.sources).unwrap();
        let config = crate::config::parse(
            &format!("[storage]\npath = \"s\"\n{text}"),
            Path::new("/tmp/x.toml"),
        )
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
        let got: Vec<(String, String, Vec<String>)> = config
            .sources
            .iter()
            .map(|s| (s.name.clone(), s.location.to_string(), s.tags.clone()))
            .collect();
        assert_eq!(
            got,
            [
                source(
                    "quotes-and-backslashes",
                    "https://q.example/?x=%221%22",
                    &[]
                ),
                source("ctl", "https://c.example/", &["folder-\"x\""]),
            ]
        );
        assert_eq!(to_toml(&[]).unwrap(), "");
    }

    fn config(sources: &str) -> Config {
        crate::config::parse(
            &format!("[storage]\npath = \"s\"\n[feed]\ntitle = \"Mine & <yours>\"\n{sources}"),
            Path::new("/tmp/x.toml"),
        )
        .unwrap()
    }

    #[test]
    fn export_lists_sources_without_secrets() {
        let config = config(
            r#"[[sources]]
name = "a"
url = "https://user:s3cret@a.example/feed?x=1&y=2"
tags = ["news", "ar"]
headers = { Authorization = "Bearer h3ader" }
[[sources]]
name = "b"
url = "http://b.example/rss"
[[sources]]
name = "keyed"
url = "https://k.example/feed?key=k3y"
publish_url = false
[[sources]]
name = "local"
url = "file:///srv/private/feed.xml"
"#,
        );
        let known = [SourceStatus {
            name: "a".into(),
            url: String::new(),
            current_url: String::new(),
            disabled: None,
            last_attempt: None,
            last_success: None,
            http_status: None,
            last_error: None,
            consecutive_failures: 0,
            next_due: None,
            entries_seen: 0,
            title: Some("A \"news\"\u{1b}".into()),
            home_page: Some("https://user:pw@a.example/".into()),
            encoding: None,
            notes: Vec::new(),
        }];
        let export = export(&config, &known).unwrap();
        assert_eq!(
            export.xml,
            r#"<?xml version="1.0" encoding="UTF-8"?>
<opml version="2.0">
  <head>
    <title>Mine &amp; &lt;yours&gt;</title>
  </head>
  <body>
    <outline type="rss" text="A &quot;news&quot;" title="A &quot;news&quot;" xmlUrl="https://a.example/feed?x=1&amp;y=2" htmlUrl="https://a.example/" category="news,ar"/>
    <outline type="rss" text="b" title="b" xmlUrl="http://b.example/rss"/>
  </body>
</opml>
"#
        );
        for secret in ["user", "s3cret", "pw@", "h3ader", "k3y", "/srv/private"] {
            assert!(!export.xml.contains(secret), "{secret} in {}", export.xml);
        }
        assert_eq!(
            export.notes,
            [
                "source \"keyed\" left out: publish_url = false",
                "source \"local\" left out: a file source"
            ]
        );
    }

    #[test]
    fn exported_sources_import_as_they_were() {
        let config = config(
            "[[sources]]\nname = \"a\"\nurl = \"https://a.example/feed\"\ntags = [\"news\", \"ar\"]\n\
             [[sources]]\nname = \"b\"\nurl = \"http://b.example/rss\"\n",
        );
        let xml = export(&config, &[]).unwrap().xml;
        assert_eq!(
            sources(&xml),
            [
                source("a", "https://a.example/feed", &["news", "ar"]),
                source("b", "http://b.example/rss", &[]),
            ]
        );
    }
}
