//! Atom text constructs and contents that feed-rs refuses, rewritten so it
//! reads them.
//!
//! feed-rs knows the `type` values `text`, `html`, `xhtml` and `text/html`
//! on titles and summaries, and fails the whole document on any other (an
//! Atom 0.3 `application/xhtml+xml` title, a `text/plain` one). RFC 4287
//! also allows any XML media type inline in `<content>`, and any other
//! media type as base64; Atom 0.3 says the same with its `mode` attribute
//! (`xml`, `escaped`, `base64`). feed-rs hands base64 on as the raw string.
//!
//! [`rewrite`] turns each such element into one feed-rs reads: XHTML as
//! `xhtml`, other XML as `html` (the sanitizer keeps its text), text media
//! types as `text`, and base64 decoded into an escaped `html` or `text`
//! element. Base64 of a non-text media type (an image inline) carries no
//! text and no URL: the element is left out, and the entry kept. This
//! module does no I/O.

use std::borrow::Cow;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use quick_xml::events::{BytesStart, Event};

/// Elements of an Atom feed, entry or source that are text constructs (or
/// content), as feed-rs names them after the Atom 0.3 renaming.
const TEXT_CONSTRUCTS: &[&str] = &["title", "subtitle", "summary", "rights", "content"];

/// Elements whose children are text constructs.
const CONTAINERS: &[&str] = &["feed", "entry", "source"];

/// Base64 as feeds write it: standard alphabet, padding optional.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// What one text construct becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Plan {
    /// Only the `type` attribute changes (and `mode` goes).
    Type(&'static str),
    /// The body is base64 of this media type.
    Base64(String),
}

/// What a base64 body becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decoded {
    /// Text of this Atom type (`html` or `text`).
    Text(&'static str, String),
    /// Not text, or not base64: left out.
    Dropped,
}

/// The Atom document `text` with every text construct feed-rs would refuse
/// rewritten; `None` when nothing needs it, the document is not Atom, or it
/// is not well-formed enough to tell (feed-rs then says why).
pub(super) fn rewrite(text: &str) -> Option<String> {
    let (start, end) = super::root_tag(text)?;
    let root = text.get(start + 1..end)?;
    let root_name = root
        .split(|c: char| c.is_whitespace() || c == '>' || c == '/')
        .next()?;
    let prefix = match root_name.split_once(':') {
        Some((prefix, "feed")) => Some(prefix),
        None if root_name == "feed" => None,
        _ => return None,
    };
    let mut reader = quick_xml::Reader::from_str(text);
    // Per open element: whether its children are text constructs.
    let mut open: Vec<bool> = Vec::new();
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    loop {
        let before = usize::try_from(reader.buffer_position()).ok()?;
        let event = reader.read_event().ok()?;
        let (element, has_children) = match &event {
            Event::Start(e) => (e, true),
            Event::Empty(e) => (e, false),
            Event::End(_) => {
                open.pop();
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        let qname = element.name();
        let name = qname.as_ref();
        let (element_prefix, local) = match name.split_once(':') {
            Some((p, l)) => (Some(p), l),
            None => (None, name),
        };
        let ours = element_prefix == prefix;
        let parent_holds_text = open.last().copied().unwrap_or(false);
        let plan = if ours && has_children && parent_holds_text && TEXT_CONSTRUCTS.contains(&local)
        {
            plan(element, local == "content")
        } else {
            None
        };
        let after_start = usize::try_from(reader.buffer_position()).ok()?;
        match plan {
            None => {
                if has_children {
                    open.push(ours && CONTAINERS.contains(&local));
                }
            }
            Some(Plan::Type(kind)) => {
                edits.push((before, after_start, start_tag(element, name, kind)?));
                open.push(false);
            }
            Some(Plan::Base64(media_type)) => {
                let span = reader.read_to_end(qname).ok()?;
                let end = usize::try_from(reader.buffer_position()).ok()?;
                let inner =
                    text.get(usize::try_from(span.start).ok()?..usize::try_from(span.end).ok()?)?;
                let replacement = match decode(&text_of(inner), &media_type) {
                    Decoded::Text(kind, body) => format!(
                        "{}{}</{name}>",
                        start_tag(element, name, kind)?,
                        quick_xml::escape::escape(body.as_str())
                    ),
                    Decoded::Dropped => String::new(),
                };
                edits.push((before, end, replacement));
            }
        }
    }
    if edits.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end, replacement) in edits {
        out.push_str(text.get(at..start)?);
        out.push_str(&replacement);
        at = end;
    }
    out.push_str(text.get(at..)?);
    Some(out)
}

/// The attribute `key` of `element`, unescaped.
fn attribute(element: &BytesStart<'_>, key: &str) -> Option<String> {
    element
        .attributes()
        .flatten()
        .find(|a| a.key.as_ref() == key)
        .and_then(|a| a.normalized_value(quick_xml::XmlVersion::Implicit1_0).ok())
        .map(|v| v.trim().to_string())
}

/// What a text construct with these attributes needs, if anything.
fn plan(element: &BytesStart<'_>, is_content: bool) -> Option<Plan> {
    // Content by reference carries no body: feed-rs reads it as it is.
    if is_content && attribute(element, "src").is_some() {
        return None;
    }
    let written = attribute(element, "type").unwrap_or_default();
    let media_type = written
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let mode = attribute(element, "mode").map(|m| m.to_ascii_lowercase());
    let xhtml = matches!(media_type.as_str(), "xhtml" | "application/xhtml+xml");
    let markup = xhtml || matches!(media_type.as_str(), "html" | "text/html");
    let xml = media_type.ends_with("/xml") || media_type.ends_with("+xml");
    let kind = match mode.as_deref() {
        Some("base64") => {
            let media_type = if media_type.is_empty() {
                "text/plain".to_string()
            } else {
                media_type
            };
            return Some(Plan::Base64(media_type));
        }
        Some("escaped") if markup || xml => "html",
        Some("escaped") => "text",
        Some("xml") if xhtml => "xhtml",
        Some("xml") if media_type.is_empty() || media_type.starts_with("text/") && !markup => {
            "text"
        }
        Some("xml") => "html",
        _ => match media_type.as_str() {
            "" | "text" => "text",
            "html" | "text/html" => "html",
            _ if xhtml => "xhtml",
            _ if xml => "html",
            t if t.starts_with("text/") => "text",
            // RFC 4287: any other media type in content is base64.
            t if is_content && t.contains('/') => return Some(Plan::Base64(t.to_string())),
            _ => "text",
        },
    };
    // Nothing to do when feed-rs reads the element as written.
    let as_is = mode.is_none() && (written == kind || (kind == "html" && written == "text/html"));
    let defaulted = mode.is_none() && written.is_empty();
    (!as_is && !defaulted).then_some(Plan::Type(kind))
}

/// `element`'s start tag with `type="kind"` and without `mode`.
fn start_tag(element: &BytesStart<'_>, name: &str, kind: &str) -> Option<String> {
    let mut tag = format!("<{name}");
    for attr in element.attributes() {
        let attr = attr.ok()?;
        let key = attr.key.as_ref();
        if key == "type" || key == "mode" {
            continue;
        }
        let value = attr
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .ok()?;
        tag.push_str(&format!(
            " {key}=\"{}\"",
            quick_xml::escape::escape(value.as_ref())
        ));
    }
    tag.push_str(&format!(" type=\"{kind}\">"));
    Some(tag)
}

/// The text of an XML fragment: character data, CDATA sections and
/// references resolved, markup dropped.
pub(super) fn text_of(fragment: &str) -> String {
    let mut reader = quick_xml::Reader::from_str(fragment);
    let mut out = String::new();
    loop {
        match reader.read_event() {
            Ok(Event::Text(t)) => out.push_str(&t.xml10_content()),
            Ok(Event::CData(c)) => out.push_str(&c.xml10_content()),
            Ok(Event::GeneralRef(r)) => {
                if let Ok(Some(c)) = r.resolve_char_ref() {
                    out.push(c);
                } else {
                    let name = r.xml10_content();
                    out.push_str(match name.as_ref() {
                        "amp" => "&",
                        "lt" => "<",
                        "gt" => ">",
                        "quot" => "\"",
                        "apos" => "'",
                        _ => "",
                    });
                }
            }
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => {}
        }
    }
    out
}

/// A base64 body of `media_type`, decoded: markup as `html`, other text as
/// `text`, anything else left out.
fn decode(body: &str, media_type: &str) -> Decoded {
    let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let Ok(bytes) = BASE64.decode(compact.as_bytes()) else {
        return Decoded::Dropped;
    };
    let kind = match media_type {
        "html" | "xhtml" | "text/html" | "application/xhtml+xml" => "html",
        t if t.ends_with("+xml") || t.ends_with("/xml") => "html",
        "text" => "text",
        t if t.starts_with("text/") => "text",
        _ => return Decoded::Dropped,
    };
    match String::from_utf8_lossy(&bytes) {
        Cow::Borrowed(s) => Decoded::Text(kind, s.to_string()),
        Cow::Owned(s) => Decoded::Text(kind, s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(entry: &str) -> String {
        format!(
            "<feed xmlns=\"http://www.w3.org/2005/Atom\"><title>f</title><entry>{entry}</entry></feed>"
        )
    }

    #[test]
    fn types_feed_rs_refuses_are_renamed() {
        let check = |entry: &str, expected: Option<&str>| {
            let got = rewrite(&feed(entry));
            assert_eq!(got, expected.map(feed), "{entry}");
        };
        // Read as written: nothing to do.
        check(
            "<title>x</title><content type=\"html\">&lt;b&gt;</content>",
            None,
        );
        check("<title type=\"text/html\">x</title>", None);
        check("<content type=\"xhtml\"><div>x</div></content>", None);
        check(
            "<content src=\"https://example.org/a.png\" type=\"image/png\"/>",
            None,
        );
        // XHTML, other XML, text media types.
        check(
            "<title type=\"application/xhtml+xml\" xml:lang=\"en\"><div>x</div></title>",
            Some("<title xml:lang=\"en\" type=\"xhtml\"><div>x</div></title>"),
        );
        check(
            "<content type=\"application/xml\"><doc>x</doc></content>",
            Some("<content type=\"html\"><doc>x</doc></content>"),
        );
        check(
            "<title type=\"text/plain\">x</title>",
            Some("<title type=\"text\">x</title>"),
        );
        // Atom 0.3 modes.
        check(
            "<content type=\"text/html\" mode=\"escaped\">&lt;b&gt;</content>",
            Some("<content type=\"html\">&lt;b&gt;</content>"),
        );
        check(
            "<content type=\"application/xhtml+xml\" mode=\"xml\"><div>x</div></content>",
            Some("<content type=\"xhtml\"><div>x</div></content>"),
        );
    }

    #[test]
    fn base64_is_decoded_or_left_out() {
        let check = |entry: &str, expected: &str| {
            assert_eq!(rewrite(&feed(entry)), Some(feed(expected)), "{entry}");
        };
        // "safe<script>x</script> description"
        check(
            "<content type=\"text/html\" mode=\"base64\">\n  c2FmZTxzY3JpcHQ+eDwvc2NyaXB0PiBk\nZXNjcmlwdGlvbg==\n</content>",
            "<content type=\"html\">safe&lt;script&gt;x&lt;/script&gt; description</content>",
        );
        check(
            "<summary mode=\"base64\">aGVsbG8</summary>",
            "<summary type=\"text\">hello</summary>",
        );
        // RFC 4287: a non-text, non-XML media type is base64.
        check(
            "<content type=\"text/csv\">a,b</content>",
            "<content type=\"text\">a,b</content>",
        );
        check(
            "<title>t</title><content type=\"image/png\">iVBORw0KGgo=</content>",
            "<title>t</title>",
        );
        check("<content mode=\"base64\">not base64!</content>", "");
    }

    #[test]
    fn only_atom_text_constructs_are_touched() {
        // Not Atom.
        assert_eq!(
            rewrite("<rss><channel><title type=\"text/plain\">x</title></channel></rss>"),
            None
        );
        // Inside XHTML content, a `title` is not a text construct.
        assert_eq!(
            rewrite(&feed(
                "<content type=\"xhtml\"><div><title type=\"text/plain\">x</title></div></content>"
            )),
            None
        );
        // A prefixed Atom document.
        assert_eq!(
            rewrite("<a:feed xmlns:a=\"http://www.w3.org/2005/Atom\"><a:entry><a:title type=\"text/plain\">x</a:title></a:entry></a:feed>").as_deref(),
            Some("<a:feed xmlns:a=\"http://www.w3.org/2005/Atom\"><a:entry><a:title type=\"text\">x</a:title></a:entry></a:feed>")
        );
        assert_eq!(
            text_of("a &amp; <![CDATA[<b>]]> &#x41;<i>z</i>"),
            "a & <b> Az"
        );
    }
}
