//! Bytes to a feed-rs model: decide the encoding, transcode to UTF-8, parse.
//!
//! feed-rs ignores the HTTP charset and trips over some XML declarations, so
//! the encoding is decided here, in order: byte-order mark, the HTTP
//! `Content-Type` charset, the XML declaration, then UTF-8. The document is
//! transcoded with encoding_rs, its declaration rewritten to say UTF-8, and
//! handed to feed-rs inside a panic guard. This module does no I/O.

use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};

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

/// A parsed document and how it was decoded.
#[derive(Debug)]
pub struct Parsed {
    /// The feed as feed-rs reads it.
    pub feed: feed_rs::model::Feed,
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
    let encoding = detect_encoding(body, content_type.and_then(charset_param));
    let (text, had_replacements) = decode(body, encoding);
    let text = with_utf8_declaration(&text);

    let parser = feed_rs::parser::Builder::new()
        .base_uri(base.map(Url::as_str))
        // Never let feed-rs invent ids: an empty id tells normalize to
        // derive a stable one itself.
        .id_generator(|_, _, _| String::new())
        // Sanitizing is normalize's job, with settings that keep `dir`/`lang`.
        .sanitize_content(false)
        .build();
    let result = catch_unwind(AssertUnwindSafe(|| parser.parse(text.as_bytes())));
    match result {
        Ok(Ok(feed)) => Ok(Parsed {
            feed,
            encoding: encoding.name(),
            had_replacements,
        }),
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

fn decode(body: &[u8], encoding: &'static Encoding) -> (String, bool) {
    let (text, had_errors) = encoding.decode_with_bom_removal(body);
    (text.into_owned(), had_errors)
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
