//! HTML: sanitizing (ammonia), absolute URLs, tracking pixels, right-to-left
//! wrapping, and HTML to plain text.

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::OnceLock;

use ammonia::UrlRelative;
use regex::Regex;
use url::Url;

use super::language;

/// Sanitizes HTML: no script, style, iframe, object, event handler,
/// `javascript:` or `data:` URL; figures, tables, lists, code, quotes,
/// `dir` and `lang` kept; every `href`, `src`, `srcset`, `poster` and
/// `cite` made absolute http(s) against `base` (or dropped when there is
/// none, or when the result is not http(s)); tracking pixels removed;
/// XML-forbidden characters dropped.
pub fn sanitize(html: &str, base: Option<&Url>) -> String {
    BASE.with_borrow_mut(|b| *b = base.cloned());
    let cleaned = SANITIZER.with(|builder| builder.clean(html).to_string());
    BASE.with_borrow_mut(|b| *b = None);
    let cleaned = without_tracking_pixels(&cleaned);
    super::clean_text(cleaned.trim())
}

thread_local! {
    /// The base URL of the HTML [`sanitize`] is cleaning on this thread:
    /// the sanitizer is built once per thread, and its URL callbacks read
    /// the base from here.
    static BASE: RefCell<Option<Url>> = const { RefCell::new(None) };
    /// The sanitizer (building one costs more than cleaning a short entry).
    static SANITIZER: ammonia::Builder<'static> = sanitizer();
    /// A builder that keeps no tag at all, for plain text.
    static STRIPPER: ammonia::Builder<'static> = ammonia::Builder::empty();
}

/// A relative URL resolved against [`BASE`]; `None` drops it. Only an
/// http(s) result is kept: ammonia checks the scheme of absolute URLs, not
/// of what this makes of relative ones, and a feed's `xml:base` can be
/// `javascript:...//` (which `#top` or `x.png` would join) or a local
/// file's `file:` URL.
fn against_base(url: &str) -> Option<Cow<'_, str>> {
    BASE.with_borrow(|base| {
        let joined = base.as_ref()?.join(url).ok()?;
        matches!(joined.scheme(), "http" | "https").then(|| Cow::Owned(String::from(joined)))
    })
}

/// The sanitizer's policy; relative URLs resolve against [`BASE`] (and go
/// when there is none).
fn sanitizer() -> ammonia::Builder<'static> {
    let mut builder = ammonia::Builder::default();
    builder
        .add_generic_attributes(["dir", "lang"])
        .add_tags(["picture", "source", "video", "audio"])
        .add_tag_attributes("img", ["srcset", "sizes", "loading"])
        .add_tag_attributes("source", ["srcset", "src", "type", "media", "sizes"])
        .add_tag_attributes("video", ["src", "poster", "controls", "width", "height"])
        .add_tag_attributes("audio", ["src", "controls"]);
    builder.url_relative(UrlRelative::Custom(Box::new(against_base)));
    builder.attribute_filter(|_element, attribute, value| match attribute {
        "srcset" => Some(Cow::Owned(
            BASE.with_borrow(|base| absolute_srcset(value, base.as_ref())),
        )),
        // Ammonia keeps `cite` (on blockquote, q, del, ins) without
        // checking it as a URL.
        "poster" | "cite" => BASE
            .with_borrow(|base| absolute_http(value, base.as_ref()))
            .map(Cow::Owned),
        _ => Some(Cow::Borrowed(value)),
    });
    builder
}

/// `value` as an absolute http(s) URL, or `None`.
fn absolute_http(value: &str, base: Option<&Url>) -> Option<String> {
    let url = match Url::parse(value.trim()) {
        Ok(url) => url,
        Err(url::ParseError::RelativeUrlWithoutBase) => base?.join(value.trim()).ok()?,
        Err(_) => return None,
    };
    matches!(url.scheme(), "http" | "https").then(|| url.to_string())
}

/// A `srcset` with every candidate URL absolute; unsafe candidates dropped.
fn absolute_srcset(value: &str, base: Option<&Url>) -> String {
    value
        .split(',')
        .filter_map(|candidate| {
            let mut parts = candidate.split_whitespace();
            let url = absolute_http(parts.next()?, base)?;
            let descriptor: Vec<&str> = parts.collect();
            Some(if descriptor.is_empty() {
                url
            } else {
                format!("{url} {}", descriptor.join(" "))
            })
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Removes 1×1 (or 0×0) images and images from known tracking hosts.
fn without_tracking_pixels(html: &str) -> Cow<'_, str> {
    static IMG: OnceLock<Option<Regex>> = OnceLock::new();
    static TINY: OnceLock<Option<Regex>> = OnceLock::new();
    let (Some(img), Some(tiny)) = (
        IMG.get_or_init(|| Regex::new(r#"<img\b[^>]*>"#).ok()),
        TINY.get_or_init(|| Regex::new(r#"\b(width|height)="?([01])(px)?"?"#).ok()),
    ) else {
        return Cow::Borrowed(html);
    };
    const TRACKERS: &[&str] = &[
        "feeds.feedburner.com/~r/",
        "feeds.feedburner.com/~ff/",
        "pixel.wp.com/",
        "stats.wordpress.com/",
        "pixel.quantserve.com/",
        "www.google-analytics.com/",
        "/pixel.gif",
        "/tracking.gif",
    ];
    img.replace_all(html, |caps: &regex::Captures<'_>| {
        let tag = &caps[0];
        let tiny_sides = tiny.captures_iter(tag).count();
        let tracker = TRACKERS.iter().any(|t| tag.contains(t));
        if tiny_sides >= 2 || tracker {
            String::new()
        } else {
            tag.to_string()
        }
    })
}

/// Wraps right-to-left content that carries no `dir` of its own in
/// `<div dir="rtl">`, so readers lay it out right.
pub fn with_direction(html: String, language: Option<&str>) -> String {
    match language {
        Some(lang) if language::is_rtl(lang) && !html.contains("dir=") => {
            format!("<div dir=\"rtl\">{html}</div>")
        }
        _ => html,
    }
}

/// HTML to plain text: tags dropped (script and style with their content),
/// entities decoded, whitespace collapsed, and the control characters that
/// decoding made (`&#3;`, or HTML's `&#3` without its semicolon) dropped.
pub fn plain_text(html: &str) -> String {
    // Without a tag or an entity there is nothing to parse: the parser
    // would hand the text back as it is (most titles).
    if !html.contains(['<', '&']) {
        return collapse_whitespace(&super::clean_text(html));
    }
    parsed_plain_text(html)
}

/// [`plain_text`] through the HTML parser.
fn parsed_plain_text(html: &str) -> String {
    let stripped = STRIPPER.with(|builder| builder.clean(html).to_string());
    // Characters XML forbids go before whitespace is collapsed, so none
    // leaves a stray space.
    serialized_text(&super::clean_text(&stripped))
}

/// Text as html5ever serializes it, entities decoded and whitespace
/// collapsed.
fn serialized_text(text: &str) -> String {
    if !text.contains('&') {
        return collapse_whitespace(text);
    }
    // One pass: no decoded character is a `&`, so no decoding makes an
    // entity for another to decode.
    const ENTITIES: [(&str, char); 6] = [
        ("&nbsp;", '\u{a0}'),
        ("&lt;", '<'),
        ("&gt;", '>'),
        ("&quot;", '"'),
        ("&#39;", '\''),
        ("&amp;", '&'),
    ];
    let mut decoded = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        decoded.push_str(&rest[..at]);
        rest = &rest[at..];
        match ENTITIES.iter().find(|(name, _)| rest.starts_with(name)) {
            Some((name, c)) => {
                decoded.push(*c);
                rest = &rest[name.len()..];
            }
            None => {
                decoded.push('&');
                rest = &rest[1..];
            }
        }
    }
    decoded.push_str(rest);
    collapse_whitespace(&decoded)
}

/// The plain text of HTML that [`sanitize`] wrote: the same as
/// [`plain_text`], without parsing it again. Sanitized HTML is
/// html5ever's serialization: no comments, no script or style, attribute
/// values in double quotes (where `>` may appear), text with `&`, `<`, `>`
/// escaped; so dropping every tag is a scan.
pub fn sanitized_text(html: &str) -> String {
    let mut text = String::with_capacity(html.len());
    let (mut in_tag, mut in_quotes) = (false, false);
    let mut start = 0;
    for (i, c) in html.char_indices() {
        match (in_tag, in_quotes, c) {
            (false, _, '<') => {
                text.push_str(&html[start..i]);
                in_tag = true;
            }
            (true, false, '"') | (true, true, '"') => in_quotes = !in_quotes,
            (true, false, '>') => {
                in_tag = false;
                start = i + 1;
            }
            _ => {}
        }
    }
    if !in_tag {
        text.push_str(&html[start..]);
    }
    serialized_text(&text)
}

/// Whether text given as plain looks like HTML after all (a tag or an
/// entity), as RSS titles often do.
pub fn looks_like_html(text: &str) -> bool {
    static PATTERN: OnceLock<Option<Regex>> = OnceLock::new();
    PATTERN
        .get_or_init(|| {
            Regex::new(r"</?[a-zA-Z][a-zA-Z0-9]*(\s[^<>]*)?/?>|&(#[0-9]{1,7}|#x[0-9a-fA-F]{1,6}|[a-zA-Z][a-zA-Z0-9]{1,31});").ok()
        })
        .as_ref()
        .is_some_and(|re| re.is_match(text))
}

/// Plain text escaped for HTML.
pub fn escape(text: &str) -> String {
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

/// Whitespace runs to single spaces, trimmed.
pub fn collapse_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Longest derived summary, in characters.
const SUMMARY_CHARS: usize = 280;

/// A summary for an entry that has content but none: the content's plain
/// text, cut at a word boundary, as escaped HTML.
pub fn summary_from_text(text: &str) -> Option<String> {
    if text.is_empty() {
        return None;
    }
    if text.chars().count() <= SUMMARY_CHARS {
        return Some(escape(text));
    }
    let cut: String = text.chars().take(SUMMARY_CHARS).collect();
    let at_word = match cut.rfind(char::is_whitespace) {
        Some(space) if space > SUMMARY_CHARS / 2 => &cut[..space],
        _ => cut.as_str(),
    };
    Some(format!(
        "{}…",
        escape(at_word.trim_end_matches(|c: char| c.is_ascii_punctuation()))
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Text with no tag and no entity comes out of the fast path as
        /// the parser would give it.
        #[test]
        fn plain_text_without_markup_skips_the_parser(
            text in "[a-zA-Z0-9 \t\r\n\u{0}-\u{1f}\u{7f}-\u{a0}>\"'=/;#\u{600}-\u{6ff}\u{fdd0}\u{fffd}-\u{ffff}\u{2028}\u{3000}]{0,40}"
        ) {
            proptest::prop_assert_eq!(plain_text(&text), parsed_plain_text(&text));
        }
    }

    #[test]
    fn entities_decode_in_one_pass_as_in_sequence() {
        let sequential = |text: &str| {
            collapse_whitespace(
                &text
                    .replace("&nbsp;", "\u{a0}")
                    .replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&quot;", "\"")
                    .replace("&#39;", "'")
                    .replace("&amp;", "&"),
            )
        };
        for text in [
            "a &amp;lt; b &lt;&gt; &quot;q&quot; &#39;s&#39;&nbsp;x",
            "&&amp;&amp;amp;&nbsp &lt &;",
            "tail &",
            "&amp;nbsp; و&nbsp;ب  \n c",
            "",
        ] {
            assert_eq!(serialized_text(text), sequential(text), "{text}");
        }
    }

    #[test]
    fn sanitized_text_is_plain_text_without_a_parse() {
        let base = Url::parse("https://example.org/a/b").unwrap();
        for html in [
            "<p>One &amp; two</p><p>three&nbsp;four</p>",
            "<a href=\"/x?a=1&b=2\" title=\"a > b\">link</a> after",
            "<div dir=\"rtl\"><p>اجتماع في الدوحة</p></div>",
            "<table><tr><td>cell</td></tr></table> x &lt;tag&gt;",
            "<figure><img src=\"/i.webp\" alt='q \"x\" >'><figcaption>cap</figcaption></figure>",
            "plain <b>bold</b> <script>gone()</script> &quot;q&quot; it&#39;s",
        ] {
            let clean = sanitize(html, Some(&base));
            assert_eq!(sanitized_text(&clean), plain_text(&clean), "{clean}");
        }
    }

    fn summary_from(content_html: &str) -> Option<String> {
        summary_from_text(&plain_text(content_html))
    }

    fn check(html: &str, expected: &str) {
        let base = Url::parse("https://example.org/a/b").unwrap();
        assert_eq!(sanitize(html, Some(&base)), expected, "{html}");
    }

    #[test]
    fn unsafe_markup_goes() {
        check(
            "<p onclick=\"x()\">hi<script>alert(1)</script></p>",
            "<p>hi</p>",
        );
        check(
            "<a href=\"javascript:alert(1)\">x</a>",
            "<a rel=\"noopener noreferrer\">x</a>",
        );
        check(
            "<iframe src=\"https://evil/\"></iframe><style>p{}</style>ok",
            "ok",
        );
        check(
            "<object data=\"x.swf\"></object><embed src=\"x.swf\">ok",
            "ok",
        );
        check("<img src=\"data:image/png;base64,AAAA\">", "<img>");
        check("<form action=\"/x\"><input name=\"a\"></form>ok", "ok");
        check("bad\u{1}char", "badchar");
    }

    #[test]
    fn structure_and_direction_stay() {
        check(
            "<p dir=\"rtl\" lang=\"ar\">نص</p>",
            "<p dir=\"rtl\" lang=\"ar\">نص</p>",
        );
        check(
            "<figure><img src=\"/i.webp\" alt=\"a\"><figcaption>c</figcaption></figure>",
            "<figure><img src=\"https://example.org/i.webp\" alt=\"a\"><figcaption>c</figcaption></figure>",
        );
        check(
            "<table><tr><td>1</td></tr></table><ul><li>a</li></ul><pre><code>x</code></pre><blockquote>q</blockquote>",
            "<table><tbody><tr><td>1</td></tr></tbody></table><ul><li>a</li></ul><pre><code>x</code></pre><blockquote>q</blockquote>",
        );
    }

    #[test]
    fn every_url_is_absolute() {
        check(
            "<a href=\"/about\">a</a>",
            "<a href=\"https://example.org/about\" rel=\"noopener noreferrer\">a</a>",
        );
        check(
            "<img src=\"x.jpg\" srcset=\"x-2.jpg 2x, /y.jpg 600w\">",
            "<img src=\"https://example.org/a/x.jpg\" srcset=\"https://example.org/a/x-2.jpg 2x, https://example.org/y.jpg 600w\">",
        );
        check(
            "<video poster=\"/p.jpg\" src=\"/v.mp4\"></video>",
            "<video poster=\"https://example.org/p.jpg\" src=\"https://example.org/v.mp4\"></video>",
        );
        check("<img srcset=\"javascript:x 1x\">", "<img srcset=\"\">");
        check(
            "<blockquote cite=\"/src\">q</blockquote><q cite=\"javascript:alert(1)\">q</q>",
            "<blockquote cite=\"https://example.org/src\">q</blockquote><q>q</q>",
        );
    }

    #[test]
    fn a_hostile_base_makes_no_relative_url_dangerous() {
        for base in [
            "javascript:alert(1)//",
            "javascript://%0Aalert(1)",
            "data:text/html,x",
            "file:///etc/feeds/",
        ] {
            let base = Url::parse(base).unwrap();
            let clean = sanitize(
                "<a href=\"#top\">t</a><a href=\"?q\">q</a><img src=\"i.png\">",
                Some(&base),
            );
            assert_eq!(
                clean,
                "<a rel=\"noopener noreferrer\">t</a><a rel=\"noopener noreferrer\">q</a><img>",
                "{base}"
            );
        }
    }

    #[test]
    fn tracking_pixels_go() {
        check(
            "<p>a</p><img src=\"/t.gif\" width=\"1\" height=\"1\">",
            "<p>a</p>",
        );
        check("<img src=\"https://feeds.feedburner.com/~r/x/~4/abc\">", "");
        check(
            "<img src=\"/photo.jpg\" width=\"600\" height=\"1\">",
            "<img src=\"https://example.org/photo.jpg\" width=\"600\" height=\"1\">",
        );
    }

    #[test]
    fn text() {
        assert_eq!(
            plain_text("<b>Rust</b> &amp; <i>feeds</i>\n  today"),
            "Rust & feeds today"
        );
        assert_eq!(plain_text("a &lt; b<script>x</script>"), "a < b");
        assert!(looks_like_html("Tom &amp; Jerry"));
        assert!(looks_like_html("<b>bold</b> move"));
        assert!(!looks_like_html("x < y and y > z"));
        assert!(!looks_like_html("AT&T results"));
        assert_eq!(
            with_direction("<p>نص</p>".into(), Some("ar")),
            "<div dir=\"rtl\"><p>نص</p></div>"
        );
        assert_eq!(
            with_direction("<p dir=\"rtl\">نص</p>".into(), Some("ar")),
            "<p dir=\"rtl\">نص</p>"
        );
        assert_eq!(with_direction("<p>x</p>".into(), Some("en")), "<p>x</p>");
    }

    #[test]
    fn derived_summaries() {
        assert_eq!(
            summary_from("<p>Short &amp; sweet.</p>").as_deref(),
            Some("Short &amp; sweet.")
        );
        let long = format!("<p>{}</p>", "word ".repeat(100));
        let summary = summary_from(&long).unwrap();
        assert!(summary.ends_with("word…"), "{summary}");
        assert!(summary.chars().count() <= 281);
        assert_eq!(summary_from("<img src=\"x\">"), None);
    }
}
