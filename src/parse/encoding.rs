//! A document's encoding: what labels it, whether the label holds, and what
//! a detector finds when it does not.
//!
//! The label is read in order: byte-order mark, the HTTP `Content-Type`
//! charset, the XML declaration (or the byte pattern of an unmarked UTF-16
//! or UTF-32 `<?`), then UTF-8 by default. A document that decodes cleanly
//! in the encoding so named is done: it never meets the detector.
//!
//! Labels lie. An Arabic or Russian news site that says `charset=utf-8`
//! and sends windows-1256 or windows-1251, or a feed that says nothing and
//! is not UTF-8, would come out as U+FFFD. So when the named encoding is
//! ASCII-compatible, was not named by a byte-order mark, and does not
//! decode cleanly, the XML declaration is tried (if the HTTP charset was
//! the one that lied), then chardetng, the detector Firefox uses, over
//! [`DETECT_BOUND`] bytes from the first non-ASCII one. Its guess is used
//! only when it decodes the whole document cleanly. A document that is UTF-8 but for a few stray
//! bytes (most of its non-ASCII sequences valid) stays UTF-8 with those
//! bytes replaced: reading it as a legacy encoding would garble all its
//! good text to mend a few bad bytes.
//!
//! UTF-32, which the WHATWG standard (and so encoding_rs) leaves out, is
//! decoded here by hand.

use std::fmt;

use chardetng::{EncodingDetector, Iso2022JpDetection, Utf8Detection};
use encoding_rs::{Encoding, UTF_16BE, UTF_16LE, UTF_8};

/// How much of a document the detector reads, from its first non-ASCII
/// byte: dozens of entries' text, where a mislabeled document's legacy
/// bytes show many times over; its cost is linear in what it reads (see
/// the README).
pub const DETECT_BOUND: usize = 64 * 1024;

/// What named the encoding a document was read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelSource {
    /// A byte-order mark.
    Bom,
    /// The `charset` of the HTTP `Content-Type`.
    Http,
    /// The `encoding` of the XML declaration.
    Declaration,
    /// The byte pattern of an unmarked UTF-16 or UTF-32 `<?`.
    BytePattern,
    /// Nothing: UTF-8 is the default.
    Default,
    /// The detector, because the label did not hold.
    Detector,
}

impl LabelSource {
    /// Where the label was, for a status line.
    fn place(self) -> &'static str {
        match self {
            Self::Bom => "byte-order mark",
            Self::Http => "HTTP charset",
            Self::Declaration => "XML declaration",
            Self::BytePattern => "byte pattern",
            Self::Default => "default",
            Self::Detector => "detector",
        }
    }
}

/// An encoding, by its WHATWG name (or `UTF-32BE`/`UTF-32LE`), and what
/// named it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label {
    /// The encoding's name, as encoding_rs spells it (`windows-1256`).
    pub encoding: &'static str,
    /// What named it.
    pub source: LabelSource,
}

/// How a document's bytes became text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodingStatus {
    /// The encoding the text was decoded from.
    pub used: Label,
    /// The label the bytes were not valid in, when `used` took its place:
    /// the declared encoding that lied, or UTF-8 for an undeclared
    /// document that is not UTF-8.
    pub rejected: Option<Label>,
    /// Some bytes were invalid in `used` and became U+FFFD.
    pub replaced: bool,
}

impl EncodingStatus {
    /// The name of the encoding the text was decoded from.
    pub fn name(&self) -> &'static str {
        self.used.encoding
    }

    /// True when the document was what its label (or the default) said:
    /// no label was rejected and no byte replaced.
    pub fn is_clean(&self) -> bool {
        self.rejected.is_none() && !self.replaced
    }

    /// The line the source's status shows, when there is something to say.
    pub fn note(&self) -> Option<String> {
        (!self.is_clean()).then(|| self.to_string())
    }
}

/// `UTF-8` when clean; `UTF-8 (invalid bytes replaced)`; `declared UTF-8
/// (HTTP charset), not valid; detected windows-1256`; `undeclared, not
/// UTF-8; detected windows-1251`.
impl fmt::Display for EncodingStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(rejected) = &self.rejected {
            match rejected.source {
                LabelSource::Default => write!(f, "undeclared, not {}; ", rejected.encoding)?,
                source => write!(
                    f,
                    "declared {} ({}), not valid; ",
                    rejected.encoding,
                    source.place()
                )?,
            }
            match self.used.source {
                LabelSource::Detector => write!(f, "detected {}", self.used.encoding)?,
                source => write!(f, "used {} ({})", self.used.encoding, source.place())?,
            }
        } else {
            f.write_str(self.used.encoding)?;
        }
        if self.replaced {
            f.write_str(" (invalid bytes replaced)")?;
        }
        Ok(())
    }
}

/// Decodes `body` to text, given the HTTP charset (if any) and the
/// top-level domain it was served from (lowercase ASCII, for the
/// detector), and says how.
pub(crate) fn decode_document(
    body: &[u8],
    http_charset: Option<&str>,
    tld: Option<&str>,
) -> (String, EncodingStatus) {
    if let Some((big_endian, source)) = utf32(body, http_charset) {
        let (text, replaced) = decode_utf32(body, big_endian);
        let encoding = if big_endian { "UTF-32BE" } else { "UTF-32LE" };
        let status = EncodingStatus {
            used: Label { encoding, source },
            rejected: None,
            replaced,
        };
        return (text, status);
    }
    let (encoding, source) = labelled(body, http_charset);
    let (text, replaced) = decode(body, encoding);
    let label = Label {
        encoding: encoding.name(),
        source,
    };
    let status = EncodingStatus {
        used: label,
        rejected: None,
        replaced,
    };
    let may_relabel = replaced
        && source != LabelSource::Bom
        && encoding.is_ascii_compatible()
        && !(encoding == UTF_8 && mostly_utf8(body));
    if !may_relabel {
        return (text, status);
    }
    match relabel(body, encoding, source, tld) {
        Some((text, used)) => (
            text,
            EncodingStatus {
                used,
                rejected: Some(label),
                replaced: false,
            },
        ),
        None => (text, status),
    }
}

/// The encoding that decodes `body` cleanly in place of `rejected`: the
/// XML declaration's when the HTTP charset was rejected, else the
/// detector's guess. `None` when neither decodes cleanly.
fn relabel(
    body: &[u8],
    rejected: &'static Encoding,
    source: LabelSource,
    tld: Option<&str>,
) -> Option<(String, Label)> {
    let clean = |encoding: &'static Encoding, source: LabelSource| {
        let (text, replaced) = decode(body, encoding);
        (!replaced).then_some((
            text,
            Label {
                encoding: encoding.name(),
                source,
            },
        ))
    };
    if source == LabelSource::Http {
        let declared = declared_encoding(body)
            .and_then(|label| Encoding::for_label(label.as_bytes()))
            .filter(|e| *e != rejected && e.is_ascii_compatible());
        if let Some(found) = declared.and_then(|e| clean(e, LabelSource::Declaration)) {
            return Some(found);
        }
    }
    let guess = detect(body, rejected, tld);
    if guess == rejected {
        return None;
    }
    clean(guess, LabelSource::Detector)
}

/// chardetng's guess over [`DETECT_BOUND`] bytes from the first non-ASCII
/// one (ASCII does not count for it, and a long ASCII head would leave it
/// nothing to read). UTF-8 is a possible guess unless it is the encoding
/// being replaced.
pub(crate) fn detect(
    body: &[u8],
    rejected: &'static Encoding,
    tld: Option<&str>,
) -> &'static Encoding {
    // One byte before the first non-ASCII one: chardetng scores a letter
    // by its neighbour.
    let start = Encoding::ascii_valid_up_to(body).saturating_sub(1);
    let end = body.len().min(start.saturating_add(DETECT_BOUND));
    let mut detector = EncodingDetector::new(Iso2022JpDetection::Deny);
    detector.feed(&body[start..end], end == body.len());
    // chardetng panics on a TLD with a period, upper case or non-ASCII.
    let tld = tld
        .filter(|t| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
        .map(str::as_bytes);
    let utf8 = if rejected == UTF_8 {
        Utf8Detection::Deny
    } else {
        Utf8Detection::Allow
    };
    detector.guess(tld, utf8)
}

/// True when most non-ASCII sequences of `body` are valid UTF-8: at least
/// twice as many valid characters as invalid sequences. Text in a legacy
/// encoding forms valid multi-byte UTF-8 only by chance (windows-1251,
/// -1253, -1256 almost never; the CJK encodings in well under half their
/// characters). The whole body is read: a stray byte may come late.
fn mostly_utf8(body: &[u8]) -> bool {
    let mut rest = body;
    let (mut valid, mut invalid) = (0usize, 0usize);
    // Lead bytes of multi-byte sequences: one per non-ASCII character.
    let leads = |bytes: &[u8]| bytes.iter().filter(|&&b| b >= 0xC0).count();
    loop {
        match std::str::from_utf8(rest) {
            Ok(text) => {
                valid += leads(text.as_bytes());
                break;
            }
            Err(err) => {
                let (good, bad) = rest.split_at(err.valid_up_to());
                valid += leads(good);
                match err.error_len() {
                    Some(len) => {
                        invalid += 1;
                        rest = &bad[len..];
                    }
                    // A sequence cut by the end of the body.
                    None => {
                        invalid += 1;
                        break;
                    }
                }
            }
        }
    }
    valid > 0 && valid >= 2 * invalid
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

/// The document's labelled encoding: BOM, then HTTP charset, then the XML
/// declaration (or the byte pattern of an unmarked UTF-16 one), then
/// UTF-8. This is the label alone; [`decode_document`] checks it.
pub fn detect_encoding(body: &[u8], http_charset: Option<&str>) -> &'static Encoding {
    labelled(body, http_charset).0
}

/// [`detect_encoding`], with what named the encoding.
fn labelled(body: &[u8], http_charset: Option<&str>) -> (&'static Encoding, LabelSource) {
    if let Some((encoding, _)) = Encoding::for_bom(body) {
        return (encoding, LabelSource::Bom);
    }
    if let Some(encoding) = http_charset.and_then(|label| Encoding::for_label(label.as_bytes())) {
        return without_utf16_guess(encoding, body, LabelSource::Http);
    }
    match body {
        [0x3C, 0x00, 0x3F, 0x00, ..] => return (UTF_16LE, LabelSource::BytePattern),
        [0x00, 0x3C, 0x00, 0x3F, ..] => return (UTF_16BE, LabelSource::BytePattern),
        _ => {}
    }
    declared_encoding(body)
        .and_then(|label| Encoding::for_label(label.as_bytes()))
        .map(|encoding| without_utf16_guess(encoding, body, LabelSource::Declaration))
        .unwrap_or((UTF_8, LabelSource::Default))
}

/// A declaration read as ASCII cannot truthfully say UTF-16 (the bytes
/// would not have been ASCII); such a document is really ASCII-compatible,
/// and read as UTF-8 by default.
fn without_utf16_guess(
    encoding: &'static Encoding,
    body: &[u8],
    source: LabelSource,
) -> (&'static Encoding, LabelSource) {
    let looks_utf16 = matches!(body, [0x3C, 0x00, ..] | [0x00, 0x3C, ..]);
    if (encoding == UTF_16LE || encoding == UTF_16BE) && !looks_utf16 {
        (UTF_8, LabelSource::Default)
    } else {
        (encoding, source)
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

/// `Some((big_endian, what said so))` when the document is UTF-32: by BOM,
/// by the byte pattern of a leading `<`, or by an HTTP charset naming it.
fn utf32(body: &[u8], http_charset: Option<&str>) -> Option<(bool, LabelSource)> {
    match body {
        [0x00, 0x00, 0xFE, 0xFF, ..] => return Some((true, LabelSource::Bom)),
        [0xFF, 0xFE, 0x00, 0x00, ..] => return Some((false, LabelSource::Bom)),
        [0x00, 0x00, 0x00, 0x3C, ..] => return Some((true, LabelSource::BytePattern)),
        [0x3C, 0x00, 0x00, 0x00, ..] => return Some((false, LabelSource::BytePattern)),
        _ => {}
    }
    let label = http_charset?.trim().to_ascii_lowercase();
    match label.as_str() {
        "utf-32be" => Some((true, LabelSource::Http)),
        "utf-32" | "utf-32le" => Some((false, LabelSource::Http)),
        _ => None,
    }
}

/// Decodes UTF-32 (BOM dropped); invalid code points become U+FFFD.
fn decode_utf32(body: &[u8], big_endian: bool) -> (String, bool) {
    let mut replaced = body.len() % 4 != 0;
    let text = body
        .chunks_exact(4)
        .filter_map(|b| {
            let bytes = [b[0], b[1], b[2], b[3]];
            let unit = if big_endian {
                u32::from_be_bytes(bytes)
            } else {
                u32::from_le_bytes(bytes)
            };
            match char::from_u32(unit) {
                Some('\u{feff}') => None,
                Some(c) => Some(c),
                None => {
                    replaced = true;
                    Some('\u{fffd}')
                }
            }
        })
        .collect();
    (text, replaced)
}

fn decode(body: &[u8], encoding: &'static Encoding) -> (String, bool) {
    let (text, had_errors) = encoding.decode_with_bom_removal(body);
    (text.into_owned(), had_errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rss(title: &str) -> String {
        format!(
            "<rss version=\"2.0\"><channel><title>t</title><item><guid>1</guid>\
             <title>{title}</title></item></channel></rss>"
        )
    }

    #[test]
    fn clean_labelled_documents_keep_their_label() {
        let check = |body: &[u8], charset: Option<&str>, encoding: &'static str, source| {
            let (_, status) = decode_document(body, charset, None);
            assert_eq!(
                status,
                EncodingStatus {
                    used: Label { encoding, source },
                    rejected: None,
                    replaced: false
                },
                "{charset:?}"
            );
            assert_eq!(status.note(), None);
            assert_eq!(status.to_string(), encoding);
        };
        let doc = rss("Новости дня");
        let (cyrillic, _, _) = encoding_rs::WINDOWS_1251.encode(&doc);
        check(
            &cyrillic,
            Some("windows-1251"),
            "windows-1251",
            LabelSource::Http,
        );
        let doc = format!("<?xml version=\"1.0\" encoding=\"utf-8\"?>{}", rss("日本"));
        check(doc.as_bytes(), None, "UTF-8", LabelSource::Declaration);
        check(rss("plain").as_bytes(), None, "UTF-8", LabelSource::Default);
        let bom = [b"\xEF\xBB\xBF".as_slice(), rss("x").as_bytes()].concat();
        check(&bom, Some("windows-1252"), "UTF-8", LabelSource::Bom);
    }

    #[test]
    fn labels_that_lie_are_detected() {
        let sentence = "أعلنت وزارة الصحة اليوم عن افتتاح مستشفى جديد في المدينة، \
                        وقال الوزير إن المشروع سيخدم أكثر من مئة ألف مواطن";
        let doc = rss(sentence);
        let (bytes, _, _) = encoding_rs::WINDOWS_1256.encode(&doc);
        let (text, status) = decode_document(&bytes, Some("utf-8"), None);
        assert!(text.contains(sentence));
        assert_eq!(
            status.to_string(),
            "declared UTF-8 (HTTP charset), not valid; detected windows-1256"
        );
        assert_eq!(status.note().as_deref(), Some(status.to_string().as_str()));

        let (text, status) = decode_document(&bytes, None, None);
        assert!(text.contains(sentence));
        assert_eq!(
            status.to_string(),
            "undeclared, not UTF-8; detected windows-1256"
        );

        // The HTTP charset lied, the declaration did not.
        let doc = format!(
            "<?xml version=\"1.0\" encoding=\"koi8-r\"?>{}",
            rss("Новости дня")
        );
        let (bytes, _, _) = encoding_rs::KOI8_R.encode(&doc);
        let (text, status) = decode_document(&bytes, Some("utf-8"), None);
        assert!(text.contains("Новости дня"));
        assert_eq!(
            status.to_string(),
            "declared UTF-8 (HTTP charset), not valid; used KOI8-R (XML declaration)"
        );
    }

    #[test]
    fn utf8_with_a_few_stray_bytes_stays_utf8() {
        let doc = [
            rss("Съезд партии — итоги").as_bytes(),
            b"<!-- caf\xe9 -->".as_slice(),
        ]
        .concat();
        let (text, status) = decode_document(&doc, None, None);
        assert!(text.contains("Съезд партии — итоги"));
        assert_eq!(status.to_string(), "UTF-8 (invalid bytes replaced)");
        assert!(status.rejected.is_none() && status.replaced);
    }

    #[test]
    fn a_late_stray_byte_after_a_long_ascii_head_keeps_utf8() {
        let head = format!("<!-- {} -->", "x".repeat(2 * DETECT_BOUND));
        let doc = [
            head.as_bytes(),
            rss("Grüße — “quoted” café").as_bytes(),
            b"<!-- \x92 -->".as_slice(),
        ]
        .concat();
        let (text, status) = decode_document(&doc, Some("utf-8"), None);
        assert!(text.contains("Grüße — “quoted” café"));
        assert_eq!(status.to_string(), "UTF-8 (invalid bytes replaced)");
    }

    #[test]
    fn the_detector_reads_past_a_long_ascii_head() {
        let head = format!("<!-- {} -->", "x".repeat(2 * DETECT_BOUND));
        let doc = format!("{head}{}", rss("Правительство утвердило проект бюджета"));
        let (bytes, _, _) = encoding_rs::WINDOWS_1251.encode(&doc);
        let (text, status) = decode_document(&bytes, None, None);
        assert!(text.contains("Правительство утвердило проект бюджета"));
        assert_eq!(
            status.to_string(),
            "undeclared, not UTF-8; detected windows-1251"
        );
    }

    #[test]
    fn mostly_utf8_counts_sequences() {
        assert!(mostly_utf8("Съезд".as_bytes()));
        assert!(!mostly_utf8(b"caf\xe9"));
        assert!(!mostly_utf8(b"ascii only"));
        let (cyrillic, _, _) = encoding_rs::WINDOWS_1251.encode("Съезд партии");
        assert!(!mostly_utf8(&cyrillic));
        let (korean, _, _) =
            encoding_rs::EUC_KR.encode("오늘의 주요 뉴스와 날씨 정보를 전해 드립니다");
        assert!(!mostly_utf8(&korean));
    }

    #[test]
    fn the_detector_takes_a_tld_and_refuses_none() {
        let (bytes, _, _) = encoding_rs::WINDOWS_1251.encode("Новости дня");
        for tld in [
            Some("ru"),
            Some("RU"),
            Some("xn--p1ai"),
            Some("a.b"),
            Some(""),
            None,
        ] {
            assert_eq!(
                detect(&bytes, UTF_8, tld),
                encoding_rs::WINDOWS_1251,
                "{tld:?}"
            );
        }
    }
}
