//! Conformance with feedparser 6.0.11's test feeds: read every `.xml` file
//! in a few folders of the sdist's `tests/` through [`document::read`], the
//! path the poller takes (decode, parse, intake limits, normalize, feed
//! facts), check the `Expect:` expression in the file's header comment, and
//! count passes per folder. The test fails when a folder passes fewer files
//! than its recorded baseline, or when an `encoding` file whose label a
//! WHATWG decoder knows fails.
//!
//! The feeds are not vendored: `.ci/run` unpacks the sdist into
//! `target/conformance/`, and `FEEDPARSER_TESTS` may point at another copy of
//! its `tests` folder. Without them this test fails and says how to get them.
//!
//! Each file is read the way feedparser's own runner serves it: its
//! `Header:` lines give the `Content-Type` (whose charset labels the
//! encoding), the `Content-Language` (the HTTP language) and
//! the `Content-Location` (resolved against the document URL). The document
//! URL is `http://127.0.0.1:8097/tests/<folder>/<file>`, where runtests.py
//! serves its `http*` files; it reads the others from disk with no base URL,
//! so their expectations only make links absolute through `xml:base`.
//!
//! Which files count, and how a clause is judged:
//!
//! - The expression must consist only of clauses joined by `and`. `bozo` and
//!   `not bozo` are ignored (we have no bozo bit) and are not counted. The
//!   others must read `X == 'literal'` (`u'..'`, `'..'`, `".."` or
//!   triple-quoted, possibly joined with `+`), where X is `feed['title']`,
//!   `feed['link']`, `feed['language']`, `feed['title_detail']['language']`,
//!   `entries[N]['title']`, `entries[N]['link']`,
//!   `entries[N]['title_detail']['language']` or `encoding`. In
//!   `wellformed/sanitize` X may also be `entries[0]['content'][0]['value']`,
//!   `entries[0]['summary']` or `entries[0]['description']`. A file with any
//!   other clause, or with no counted clause at all, is skipped.
//! - Titles must be equal; links equal as text or as parsed URLs; languages
//!   equal ignoring case, with `_` the same as `-`. `encoding` is read as a
//!   WHATWG label (`encoding_rs::Encoding::for_label`) and compared with the
//!   encoding we decoded with; any UTF-16 or UTF-32 variant matches its
//!   family. When the two differ but decode the document to the same text
//!   (GBK for feedparser's gb18030; UTF-8 for RFC 3023's us-ascii default of
//!   an ASCII-only `text/*` document), the clause passes as a naming
//!   difference, counted apart. A value we do not have counts as `''`.
//! - Sanitized HTML: content is compared with our content (else our
//!   summary), summary and description with our summary (else our content,
//!   as feedparser copies content into the summary). It passes when equal
//!   after collapsing whitespace, or when we are at least as safe as
//!   feedparser and show what it shows: neither our HTML nor the expected
//!   one contains `<script`, `javascript:`, `vbscript:`, `<iframe`,
//!   `<object`, `<embed`, `<style`, `expression(` or an event handler
//!   attribute (whitespace, `on`, letters, `=`), all case-insensitively, and
//!   every word of three or more letters or digits in the expected text
//!   (tags stripped, entities decoded) is also a word of ours. So an
//!   expectation without such words (an empty `<span>` with some attribute)
//!   passes on safety alone: this folder measures safety, not fidelity.
//! - A file passes when all its counted clauses pass; a parse error fails
//!   them all.
//!
//! The per-folder table is printed (see it with `--nocapture`), with the
//! naming differences, the `encoding` failures by the kind of label they
//! carry (WHATWG, IBM/EBCDIC code page, other), and the most common
//! failures; all but the last are written to `target/conformance/report.txt`.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chrono::Utc;
use encoding_rs::{Encoding, UTF_16BE, UTF_16LE};
use feedmerge::document::{self, Document, DocumentMeta, Reading};
use feedmerge::parse::{self, Limits, ParseError};
use url::Url;

/// The sdist the feeds come from, as unpacked under `target/conformance/`.
const SDIST: &str = "feedparser-6.0.11";

/// The folders run, each with the number of its files that must keep
/// passing. Raise a baseline when normalize gets better.
const BASELINES: &[(&str, usize)] = &[
    ("encoding", 114),
    ("wellformed/base", 4),
    ("wellformed/lang", 20),
    ("wellformed/sanitize", 562),
    ("entities", 244),
];

/// The folder whose point is the HTML, where content and summary count.
const SANITIZE: &str = "wellformed/sanitize";

/// Where feedparser's runtests.py serves the test files from.
const SERVED_AT: &str = "http://127.0.0.1:8097/tests/";

/// Markup that sanitized HTML must not contain (besides event handlers).
const UNSAFE: &[&str] = &[
    "<script",
    "javascript:",
    "vbscript:",
    "<iframe",
    "<object",
    "<embed",
    "<style",
    "expression(",
];

/// How many failure groups the summary prints, and examples per group.
const TOP_GROUPS: usize = 15;
const EXAMPLES: usize = 3;

#[test]
fn feedparser_test_feeds() {
    let tests = tests_dir();
    assert!(tests.is_dir(), "{}", missing_message(&tests));

    let mut failures = Failures::new();
    let rows: Vec<Row> = BASELINES
        .iter()
        .map(|&(folder, baseline)| run_folder(&tests, folder, baseline, &mut failures))
        .collect();

    let mut table = table(&rows);
    let encoding = rows.iter().find(|r| r.folder == "encoding").unwrap();
    let losses = encoding_losses(encoding);
    table.push_str(&encoding_report(&losses));
    println!("{table}");
    println!("{}", failure_summary(&failures));
    let report_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/conformance");
    std::fs::create_dir_all(&report_dir).unwrap();
    std::fs::write(report_dir.join("report.txt"), &table).unwrap();

    // No case a WHATWG-label decoder can do is lost.
    assert!(
        losses.whatwg.is_empty(),
        "encoding files with a WHATWG label fail: {}",
        losses.whatwg.join(", ")
    );
    let regressions: Vec<String> = rows
        .iter()
        .filter(|r| r.passed < r.baseline)
        .map(|r| format!("{}: {} passed, baseline {}", r.folder, r.passed, r.baseline))
        .collect();
    assert!(
        regressions.is_empty(),
        "feedparser conformance fell below its baseline: {}\n{table}",
        regressions.join("; ")
    );
}

/// `$FEEDPARSER_TESTS`, else the sdist's `tests` under `target/conformance/`.
pub(crate) fn tests_dir() -> PathBuf {
    match std::env::var_os("FEEDPARSER_TESTS") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/conformance")
            .join(SDIST)
            .join("tests"),
    }
}

pub(crate) fn missing_message(tests: &Path) -> String {
    format!(
        "feedparser's test feeds are not at {}: run .ci/run, which fetches them, or run \
         `python3 -m pip download --no-binary :all: --no-deps feedparser==6.0.11 -d target/conformance \
         && tar -xzf target/conformance/{SDIST}.tar.gz -C target/conformance`, \
         or set FEEDPARSER_TESTS to the tests folder of an unpacked {SDIST} sdist",
        tests.display()
    )
}

// ---- running and reporting ----------------------------------------------

/// One folder's counts.
struct Row {
    folder: &'static str,
    files: usize,
    evaluated: usize,
    passed: usize,
    skipped: usize,
    baseline: usize,
    /// Of the passed files, those whose encoding differs from feedparser's
    /// in name only, by what differs.
    naming: BTreeMap<String, usize>,
    /// The files that failed, with the encoding label each carries.
    lost: Vec<Lost>,
}

/// A file that failed, and the encoding it is labelled with.
struct Lost {
    file: String,
    label: Option<String>,
}

/// Failure details by group ("feed['title'] differs"), in file order.
type Failures = BTreeMap<String, Vec<String>>;

fn run_folder(tests: &Path, folder: &'static str, baseline: usize, failures: &mut Failures) -> Row {
    let dir = tests.join(folder);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}\n{}", dir.display(), missing_message(tests)))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "xml"))
        .collect();
    paths.sort();

    let mut row = Row {
        folder,
        files: paths.len(),
        evaluated: 0,
        passed: 0,
        skipped: 0,
        baseline,
        naming: BTreeMap::new(),
        lost: Vec::new(),
    };
    for path in paths {
        let file = path.file_name().unwrap().to_string_lossy();
        let name = format!("{folder}/{file}");
        let bytes = std::fs::read(&path).unwrap();
        let Some(case) = read_case(&bytes, folder) else {
            row.skipped += 1;
            continue;
        };
        row.evaluated += 1;
        let (failed, naming) = check(&name, &bytes, &case);
        if failed.is_empty() {
            row.passed += 1;
            if let Some(what) = naming {
                *row.naming.entry(what).or_default() += 1;
            }
        } else {
            row.lost.push(Lost {
                file: file.to_string(),
                label: encoding_label(&bytes, &case),
            });
        }
        for failure in failed {
            failures
                .entry(failure.group)
                .or_default()
                .push(format!("{name}: {}", failure.detail));
        }
    }
    row
}

fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let line = |out: &mut String, cells: [&str; 6]| {
        let [folder, files, evaluated, passed, naming, skipped] = cells;
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "{folder:<20} {files:>6} {evaluated:>10} {passed:>7} {naming:>7} {skipped:>8}"
        );
    };
    line(
        &mut out,
        [
            "folder",
            "files",
            "evaluated",
            "passed",
            "naming",
            "skipped",
        ],
    );
    let mut total = [0; 5];
    for row in rows {
        let naming = row.naming.values().sum();
        let counts = [row.files, row.evaluated, row.passed, naming, row.skipped];
        for (sum, n) in total.iter_mut().zip(counts) {
            *sum += n;
        }
        let [a, b, c, d, e] = counts.map(|n| n.to_string());
        line(&mut out, [row.folder, &a, &b, &c, &d, &e]);
    }
    let [a, b, c, d, e] = total.map(|n| n.to_string());
    line(&mut out, ["total", &a, &b, &c, &d, &e]);
    out.push_str("naming: passed, our encoding not the one feedparser names, the text equal:\n");
    for row in rows {
        for (what, count) in &row.naming {
            let _ = writeln!(out, "{count:>5}  {}: {what}", row.folder);
        }
    }
    out
}

/// What the encoding folder's failures are labelled with, in three lists:
/// labels a WHATWG decoder knows (the target is none), IBM and EBCDIC code
/// pages, and other labels that are not WHATWG encodings.
struct EncodingLosses {
    /// File and label.
    whatwg: Vec<String>,
    /// Files, and their labels (each once).
    ibm: (usize, Vec<String>),
    other: (usize, Vec<String>),
}

fn encoding_losses(row: &Row) -> EncodingLosses {
    let mut losses = EncodingLosses {
        whatwg: Vec::new(),
        ibm: (0, Vec::new()),
        other: (0, Vec::new()),
    };
    for lost in &row.lost {
        let Some(label) = lost.label.clone() else {
            // Unlabelled: UTF-8, which any decoder reads.
            losses.whatwg.push(format!("{} (no label)", lost.file));
            continue;
        };
        if Encoding::for_label(label.as_bytes()).is_some() || utf32_label(&label) {
            losses.whatwg.push(format!("{} ({label})", lost.file));
        } else {
            let (files, labels) = if ibm_code_page(&label) {
                &mut losses.ibm
            } else {
                &mut losses.other
            };
            *files += 1;
            labels.push(label);
        }
    }
    for (_, labels) in [&mut losses.ibm, &mut losses.other] {
        labels.sort();
        labels.dedup();
    }
    losses
}

fn utf32_label(label: &str) -> bool {
    unicode_family(label) == Some("utf-32")
}

/// IBM's code pages, EBCDIC and PC (DOS): `cp037`, `ebcdic-cp-us`,
/// `csibm500`, `ibm850`, `437`, `cspc8codepage437`, `cp_is`...
fn ibm_code_page(label: &str) -> bool {
    let label = label.to_ascii_lowercase();
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    label.contains("ibm")
        || label.contains("ebcdic")
        || label.starts_with("cspc")
        || label == "cp_is"
        || digits(&label)
        || label.strip_prefix("cp").is_some_and(digits)
}

fn encoding_report(losses: &EncodingLosses) -> String {
    let mut out = String::from("encoding failures by label:\n");
    let mut list = |what: &str, files: usize, items: &[String]| {
        let _ = writeln!(out, "{files:>5}  {what}: {}", items.join(", "));
    };
    let whatwg = &losses.whatwg;
    list(
        "with a WHATWG label (a WHATWG decoder can do these)",
        whatwg.len(),
        whatwg,
    );
    let (files, labels) = &losses.ibm;
    list(
        "IBM/EBCDIC code pages, not WHATWG encodings",
        *files,
        labels,
    );
    let (files, labels) = &losses.other;
    list("other labels that are not WHATWG encodings", *files, labels);
    out
}

fn failure_summary(failures: &Failures) -> String {
    let mut groups: Vec<_> = failures.iter().collect();
    groups.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
    let mut out = String::from("most common failures:\n");
    for (group, details) in groups.into_iter().take(TOP_GROUPS) {
        let _ = writeln!(out, "{:>5}  {group}", details.len());
        for detail in details.iter().take(EXAMPLES) {
            let _ = writeln!(out, "         {detail}");
        }
    }
    out
}

// ---- reading a test file ------------------------------------------------

/// What a test file asks for.
struct Case {
    /// The `Header:` lines, as (name, value).
    headers: Vec<(String, String)>,
    /// The counted clauses; never empty.
    clauses: Vec<Clause>,
}

impl Case {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// `Some` when the file's expression has only clauses we can evaluate.
fn read_case(bytes: &[u8], folder: &str) -> Option<Case> {
    let text = header_text(bytes);
    let expect = text.split_once("Expect:")?.1.lines().next()?;
    let expect = expect.trim().trim_end_matches("-->").trim();
    let clauses = parse_expect(expect, folder)?;
    if clauses.is_empty() {
        return None;
    }
    let headers = text
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("Header:")?;
            if !rest.starts_with(char::is_whitespace) {
                return None;
            }
            let (name, value) = rest.split_once(':')?;
            Some((name.trim().to_string(), value.trim().to_string()))
        })
        .collect();
    Some(Case { headers, clauses })
}

/// The encoding a test file is labelled with: its HTTP charset, else its
/// XML declaration's (read from the file as runtests.py decodes it).
fn encoding_label(bytes: &[u8], case: &Case) -> Option<String> {
    if let Some(charset) = case.header("Content-Type").and_then(parse::charset_param) {
        return Some(charset.to_string());
    }
    let text = header_text(bytes);
    let decl = text.trim_start_matches('\u{feff}').strip_prefix("<?xml")?;
    let decl = &decl[..decl.find("?>")?];
    let after = decl[decl.find("encoding")? + "encoding".len()..]
        .trim_start()
        .strip_prefix('=')?
        .trim_start();
    let quote = after.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let value = &after[1..];
    Some(value[..value.find(quote)?].to_string())
}

/// The file as text for reading its header comment, decoded the way
/// runtests.py's `convert_to_utf8` does: by byte-order mark or the pattern
/// of `<?`, with EBCDIC (code page 037) recognized by its `<?xm`.
fn header_text(bytes: &[u8]) -> String {
    match bytes {
        [0x4C, 0x6F, 0xA7, 0x94, ..] => bytes.iter().map(|&b| cp037(b)).collect(),
        [0x00, 0x00, 0xFE, 0xFF, ..] | [0x00, 0x00, 0x00, 0x3C, ..] => {
            utf32(bytes, u32::from_be_bytes)
        }
        [0xFF, 0xFE, 0x00, 0x00, ..] | [0x3C, 0x00, 0x00, 0x00, ..] => {
            utf32(bytes, u32::from_le_bytes)
        }
        [0x00, 0x3C, 0x00, 0x3F, ..] | [0xFE, 0xFF, ..] => {
            UTF_16BE.decode_with_bom_removal(bytes).0.into_owned()
        }
        [0x3C, 0x00, 0x3F, 0x00, ..] | [0xFF, 0xFE, ..] => {
            UTF_16LE.decode_with_bom_removal(bytes).0.into_owned()
        }
        _ => String::from_utf8_lossy(bytes).into_owned(),
    }
}

fn utf32(bytes: &[u8], word: fn([u8; 4]) -> u32) -> String {
    bytes
        .chunks_exact(4)
        .map(|c| word([c[0], c[1], c[2], c[3]]))
        .map(|n| char::from_u32(n).unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}

/// Code page 037, enough of it to read a header comment.
fn cp037(byte: u8) -> char {
    const FROM_0X40: &str =
        " \u{a0}âäàáãåçñ¢.<(+|&éêëèíîïìß!$*);¬-/ÂÄÀÁÃÅÇÑ¦,%_>?øÉÊËÈÍÎÏÌ`:#@'=\"\
        Øabcdefghi«»ðýþ±°jklmnopqrªºæ¸Æ¤µ~stuvwxyz¡¿ÐÝÞ®^£¥·©§¶¼½¾[]¯¨´×{ABCDEFGHI\u{ad}ôöòóõ\
        }JKLMNOPQR¹ûüùúÿ\\÷STUVWXYZ²ÔÖÒÓÕ0123456789³ÛÜÙÚ\u{9f}";
    match byte {
        0x05 => '\t',
        0x0D => '\r',
        0x15 => '\u{85}',
        0x25 => '\n',
        0x40.. => FROM_0X40
            .chars()
            .nth(usize::from(byte - 0x40))
            .unwrap_or(char::REPLACEMENT_CHARACTER),
        _ => char::REPLACEMENT_CHARACTER,
    }
}

// ---- the Expect expression ----------------------------------------------

/// One `X == 'literal'` clause.
struct Clause {
    /// X as written, for reports: `entries[0]['title']`.
    label: String,
    target: Target,
    expected: String,
}

/// The values we can compare.
enum Target {
    FeedTitle,
    FeedLink,
    FeedLanguage,
    Encoding,
    EntryTitle(usize),
    EntryLink(usize),
    EntryLanguage(usize),
    /// `entries[0]['content'][0]['value']`, sanitize folder only.
    EntryContent,
    /// `entries[0]['summary']` or `['description']`, sanitize folder only.
    EntrySummary,
}

/// The clauses of `expr` other than `bozo` / `not bozo`, or `None` when
/// any clause is beyond us.
fn parse_expect(expr: &str, folder: &str) -> Option<Vec<Clause>> {
    let mut cursor = Cursor(expr);
    let mut clauses = Vec::new();
    loop {
        match cursor.peek_word() {
            Some("not") => {
                cursor.word();
                if cursor.word()? != "bozo" {
                    return None;
                }
            }
            Some("bozo") => {
                cursor.word();
            }
            _ => clauses.push(clause(&mut cursor, folder)?),
        }
        if cursor.at_end() {
            return Some(clauses);
        }
        if cursor.word()? != "and" {
            return None;
        }
    }
}

fn clause(cursor: &mut Cursor<'_>, folder: &str) -> Option<Clause> {
    let name = cursor.word()?;
    let mut label = name.to_string();
    let mut shape = name.to_string();
    let mut indices = Vec::new();
    while cursor.punct("[") {
        if let Some(key) = cursor.string() {
            label.push_str(&format!("['{key}']"));
            shape.push_str(&format!("['{key}']"));
        } else {
            let index: usize = cursor.word()?.parse().ok()?;
            label.push_str(&format!("[{index}]"));
            shape.push_str("[N]");
            indices.push(index);
        }
        if !cursor.punct("]") {
            return None;
        }
    }
    if !cursor.punct("==") {
        return None;
    }
    let mut expected = cursor.string()?;
    while cursor.punct("+") {
        expected.push_str(&cursor.string()?);
    }

    let html = folder == SANITIZE;
    let first = indices.first().copied().unwrap_or(0);
    let target = match shape.as_str() {
        "feed['title']" => Target::FeedTitle,
        "feed['link']" => Target::FeedLink,
        "feed['language']" | "feed['title_detail']['language']" => Target::FeedLanguage,
        "encoding" => Target::Encoding,
        "entries[N]['title']" => Target::EntryTitle(first),
        "entries[N]['link']" => Target::EntryLink(first),
        "entries[N]['title_detail']['language']" => Target::EntryLanguage(first),
        "entries[N]['content'][N]['value']" if html && indices == [0, 0] => Target::EntryContent,
        "entries[N]['summary']" | "entries[N]['description']" if html && indices == [0] => {
            Target::EntrySummary
        }
        _ => return None,
    };
    Some(Clause {
        label,
        target,
        expected,
    })
}

/// A little reader for the Python expressions in `Expect:` lines.
struct Cursor<'a>(&'a str);

impl<'a> Cursor<'a> {
    fn at_end(&mut self) -> bool {
        self.0 = self.0.trim_start();
        self.0.is_empty()
    }

    /// Consumes `token` if it comes next.
    fn punct(&mut self, token: &str) -> bool {
        self.0 = self.0.trim_start();
        match self.0.strip_prefix(token) {
            Some(rest) => {
                self.0 = rest;
                true
            }
            None => false,
        }
    }

    /// An identifier or a number.
    fn word(&mut self) -> Option<&'a str> {
        self.0 = self.0.trim_start();
        let end = self
            .0
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(self.0.len());
        if end == 0 {
            return None;
        }
        let (word, rest) = self.0.split_at(end);
        self.0 = rest;
        Some(word)
    }

    fn peek_word(&self) -> Option<&'a str> {
        Cursor(self.0).word()
    }

    /// A Python string literal (`u'..'`, `'..'`, `".."`, or triple-quoted),
    /// unescaped; consumes nothing when there is none.
    fn string(&mut self) -> Option<String> {
        let start = self.0.trim_start();
        let body = start.strip_prefix(['u', 'U']).unwrap_or(start);
        let quote = ["\"\"\"", "'''", "\"", "'"]
            .into_iter()
            .find(|quote| body.starts_with(quote))?;
        let mut rest = &body[quote.len()..];
        let mut out = String::new();
        loop {
            if let Some(after) = rest.strip_prefix(quote) {
                self.0 = after;
                return Some(out);
            }
            let mut chars = rest.chars();
            match chars.next()? {
                '\\' => match chars.next()? {
                    escaped @ ('\\' | '\'' | '"') => out.push(escaped),
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'x' => out.push(hex_char(&mut chars, 2)?),
                    'u' => out.push(hex_char(&mut chars, 4)?),
                    'U' => out.push(hex_char(&mut chars, 8)?),
                    '\n' => {}
                    other => {
                        out.push('\\');
                        out.push(other);
                    }
                },
                c => out.push(c),
            }
            rest = chars.as_str();
        }
    }
}

fn hex_char(chars: &mut std::str::Chars<'_>, digits: usize) -> Option<char> {
    let mut value = 0u32;
    for _ in 0..digits {
        value = value * 16 + chars.next()?.to_digit(16)?;
    }
    char::from_u32(value)
}

// ---- judging ------------------------------------------------------------

/// Why a clause failed: a group for the summary, and the particulars.
struct Failure {
    group: String,
    detail: String,
}

/// What we make of one document, and the bytes it came from.
struct Ours<'a> {
    bytes: &'a [u8],
    document: Document,
}

/// The failures of a file's clauses (empty when it passes), and how an
/// encoding clause passed if it did so only as a naming difference.
fn check(name: &str, bytes: &[u8], case: &Case) -> (Vec<Failure>, Option<String>) {
    let served = Url::parse(SERVED_AT).and_then(|u| u.join(name)).unwrap();
    let url = case
        .header("Content-Location")
        .and_then(|location| served.join(location).ok())
        .unwrap_or(served);
    let content_type = case.header("Content-Type");
    let tracking = feedmerge::dedup::default_tracking();
    let meta = DocumentMeta {
        content_type,
        url: Some(&url),
        content_language: case.header("Content-Language"),
    };
    let reading = Reading {
        source: "conformance",
        limits: &Limits::default(),
        tracking: &tracking,
        now: Utc::now(),
    };
    let document = match document::read(bytes, &meta, &reading) {
        Ok(document) => document,
        Err(err) => {
            // The encoding is decided before feed-rs runs; say which label
            // it had, as the encoding tests fail here on a feed-rs refusal.
            let charset = content_type.and_then(parse::charset_param);
            let decoded = parse::detect_encoding(bytes, charset).name();
            let group = match err {
                ParseError::Empty => "parse error: empty document",
                ParseError::Invalid(_) => "parse error: not a valid feed",
                ParseError::Panicked(_) => "parse error: feed-rs panicked",
                ParseError::TooDeep { .. } => "parse error: nested too deep",
            };
            let failure = Failure {
                group: group.to_string(),
                detail: format!("{} (labelled {decoded})", short(&err.to_string())),
            };
            return (vec![failure], None);
        }
    };
    let ours = Ours { bytes, document };
    let mut naming = None;
    let failures = case
        .clauses
        .iter()
        .filter_map(|clause| match judge(clause, &ours) {
            Ok(Judged::Same) => None,
            Ok(Judged::Naming(what)) => {
                naming = Some(what);
                None
            }
            Err(failure) => Some(failure),
        })
        .collect();
    (failures, naming)
}

/// How a clause passed.
enum Judged {
    Same,
    /// Our encoding is not the one feedparser names, and the document's
    /// text is the same under both: what differs, in a few words.
    Naming(String),
}

fn judge(clause: &Clause, ours: &Ours<'_>) -> Result<Judged, Failure> {
    let label = &clause.label;
    let expected = clause.expected.as_str();
    let doc = &ours.document;
    let entry = |n: usize| {
        doc.entries.get(n).ok_or_else(|| Failure {
            group: format!("{label}: no such entry"),
            detail: format!("we have {} entries", doc.entries.len()),
        })
    };
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    let (mine, same): (String, fn(&str, &str) -> bool) = match clause.target {
        Target::FeedTitle => (value(&doc.title), |a, b| a == b),
        Target::FeedLink => (value(&doc.home_page), same_url),
        Target::FeedLanguage => (value(&doc.language), same_language),
        Target::Encoding => {
            let ours_name = doc.encoding.name();
            if let Some(naming) = naming_difference(ours_name, expected, ours.bytes) {
                return Ok(Judged::Naming(naming));
            }
            (ours_name.to_string(), same_encoding)
        }
        Target::EntryTitle(n) => (entry(n)?.title.clone(), |a, b| a == b),
        Target::EntryLink(n) => (value(&entry(n)?.link), same_url),
        Target::EntryLanguage(n) => (value(&entry(n)?.language), same_language),
        Target::EntryContent => {
            let e = entry(0)?;
            let html = e.content.as_ref().or(e.summary.as_ref());
            return judge_html(label, &value(&html.cloned()), expected).map(|()| Judged::Same);
        }
        Target::EntrySummary => {
            let e = entry(0)?;
            let html = e.summary.as_ref().or(e.content.as_ref());
            return judge_html(label, &value(&html.cloned()), expected).map(|()| Judged::Same);
        }
    };
    if same(&mine, expected) {
        return Ok(Judged::Same);
    }
    let what = if mine.is_empty() {
        "missing"
    } else {
        "differs"
    };
    Err(Failure {
        group: format!("{label} {what}"),
        detail: format!("ours {} vs expected {}", short(&mine), short(expected)),
    })
}

fn same_url(ours: &str, expected: &str) -> bool {
    ours == expected || matches!((Url::parse(ours), Url::parse(expected)), (Ok(a), Ok(b)) if a == b)
}

fn same_language(ours: &str, expected: &str) -> bool {
    ours.replace('_', "-")
        .eq_ignore_ascii_case(&expected.replace('_', "-"))
}

fn same_encoding(ours: &str, expected: &str) -> bool {
    if let Some(family) = unicode_family(expected) {
        return unicode_family(ours) == Some(family);
    }
    ours.eq_ignore_ascii_case(expected)
        || Encoding::for_label(expected.as_bytes())
            .is_some_and(|encoding| encoding.name().eq_ignore_ascii_case(ours))
}

/// `Some("ours GBK, feedparser gb18030")` when our encoding and the one
/// feedparser names differ but decode this document to the same text: GBK
/// is GB18030's two-byte part (Python's codecs make gb18030 of a gb2312
/// label, encoding_rs makes GBK), and an ASCII-only document reads the
/// same in us-ascii (RFC 3023's default for `text/*`, which feedparser
/// applies) as in the UTF-8 we read it in (RFC 7303, which replaced it,
/// defers to the XML declaration).
fn naming_difference(ours: &str, expected: &str, bytes: &[u8]) -> Option<String> {
    let ours_encoding = Encoding::for_label(ours.as_bytes())?;
    let theirs = Encoding::for_label(expected.as_bytes())?;
    let differs = ours_encoding != theirs && !same_encoding(ours, expected);
    let ascii_compatible = ours_encoding.is_ascii_compatible() && theirs.is_ascii_compatible();
    (differs && ascii_compatible && ours_encoding.decode(bytes).0 == theirs.decode(bytes).0)
        .then(|| format!("ours {ours}, feedparser {expected}"))
}

/// `utf-16` or `utf-32` for any of their variants (`UTF-16LE`, `utf_32be`).
fn unicode_family(name: &str) -> Option<&'static str> {
    let name = name.to_ascii_lowercase().replace('_', "-");
    ["utf-16", "utf-32"]
        .into_iter()
        .find(|family| name.starts_with(family))
}

fn judge_html(label: &str, ours: &str, expected: &str) -> Result<(), Failure> {
    if collapse(ours) == collapse(expected) {
        return Ok(());
    }
    let fail = |why: &str, extra: String| Failure {
        group: format!("{label} (sanitize): {why}"),
        detail: format!(
            "{extra}ours {} vs expected {}",
            short(&collapse(ours)),
            short(&collapse(expected))
        ),
    };
    if let Some(marker) = unsafe_marker(ours) {
        return Err(fail("ours is unsafe", format!("ours has {marker:?}; ")));
    }
    if let Some(marker) = unsafe_marker(expected) {
        return Err(fail(
            "differs from an expectation with unsafe-looking text",
            format!("expected has {marker:?}; "),
        ));
    }
    let have: HashSet<String> = words(&visible_text(ours)).into_iter().collect();
    let missing: Vec<String> = words(&visible_text(expected))
        .into_iter()
        .filter(|word| !have.contains(word))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(fail(
        "expected text missing",
        format!("missing {missing:?}; "),
    ))
}

/// The first unsafe construct in `html`, if any.
fn unsafe_marker(html: &str) -> Option<String> {
    let lower = html.to_lowercase();
    if let Some(marker) = UNSAFE.iter().find(|m| lower.contains(*m)) {
        return Some(marker.to_string());
    }
    // An event handler: whitespace, "on", letters, optional whitespace, "=".
    lower.match_indices("on").find_map(|(at, _)| {
        let before = lower[..at].chars().next_back()?;
        if !before.is_whitespace() {
            return None;
        }
        let rest = &lower[at + 2..];
        let letters = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let after = rest[letters..].trim_start();
        (letters > 0 && after.starts_with('=')).then(|| format!("on{}=", &rest[..letters]))
    })
}

/// HTML with tags and comments dropped and common entities decoded.
fn visible_text(html: &str) -> String {
    let mut text = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                text.push(' ');
            }
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    decode_entities(&text)
}

fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let decoded = rest.find(';').filter(|&end| end <= 10).and_then(|end| {
            let name = &rest[1..end];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some('\u{a0}'),
                _ => name
                    .strip_prefix("#x")
                    .or_else(|| name.strip_prefix("#X"))
                    .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                    .or_else(|| name.strip_prefix('#').and_then(|dec| dec.parse().ok()))
                    .and_then(char::from_u32),
            };
            c.map(|c| (c, end))
        });
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The words of three or more letters or digits in `text`.
fn words(text: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| word.chars().count() >= 3)
        .filter(|word| seen.insert(word.to_string()))
        .map(str::to_string)
        .collect()
}

fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A value for a report line: quoted, escaped, cut at 100 characters.
fn short(text: &str) -> String {
    let mut cut: String = text.chars().take(100).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

// ---- the harness itself -------------------------------------------------

#[test]
fn expect_expressions() {
    let check = |expr: &str, folder: &str, expected: Option<&[(&str, &str)]>| {
        let clauses = parse_expect(expr, folder);
        let got: Option<Vec<(&str, &str)>> = clauses.as_ref().map(|clauses| {
            clauses
                .iter()
                .map(|c| (c.label.as_str(), c.expected.as_str()))
                .collect()
        });
        assert_eq!(got.as_deref(), expected, "{expr}");
    };
    check(
        r"not bozo and feed['title'] == u'Tom and \'Jerry\''",
        "entities",
        Some(&[("feed['title']", "Tom and 'Jerry'")]),
    );
    check(
        r#"entries[1]['link'] == "a\x41\u00e9\U0001F600\n" + 'b'"#,
        "encoding",
        Some(&[("entries[1]['link']", "aA\u{e9}\u{1f600}\nb")]),
    );
    check(
        "not bozo and entries[0]['summary'] == '''it's'''",
        SANITIZE,
        Some(&[("entries[0]['summary']", "it's")]),
    );
    check("bozo", "encoding", Some(&[]));
    check(
        "not bozo and entries[0]['summary'] == 'x'",
        "encoding",
        None,
    );
    check("not bozo and feed.title == 'x'", "encoding", None);
    check(
        "feed['title_detail']['language'] == None",
        "wellformed/lang",
        None,
    );
    check("bozo and isinstance(bozo_exception, Foo)", "encoding", None);
    check("not feed.has_key('language')", "wellformed/lang", None);
    check("1", "encoding", None);

    // An EBCDIC header, as in encoding/x80_cp037.xml.
    assert_eq!(
        header_text(b"\x4C\x6F\xA7\x94\x25\xC5\xA7\x97\x7A\x40\xBA\x7D\xE0\x7D\xBB\xFF"),
        "<?xm\nExp: ['\\']\u{9f}"
    );
}

#[test]
fn sanitize_rule() {
    let label = "entries[0]['summary']";
    assert!(judge_html(label, "<p>a  b</p>", "<p>a\nb</p>").is_ok());
    assert!(judge_html(
        label,
        "<span>Some text</span>",
        "<span style=\"x\">Some text</span>"
    )
    .is_ok());
    assert!(judge_html(label, "safe", "safe description").is_err());
    assert!(judge_html(
        label,
        "<a onclick=\"x\">safe description</a>",
        "safe description"
    )
    .is_err());
    assert!(judge_html(label, "<p>&lt;script&gt; safe</p>", "<p>safe</p>").is_ok());
    assert_eq!(
        unsafe_marker("<A OnMouseOver = 'x'>").as_deref(),
        Some("onmouseover=")
    );
    assert_eq!(unsafe_marker("<p>only = once</p>"), None);
    assert!(same_encoding("windows-1252", "us-ascii"));
    assert!(same_encoding("UTF-16LE", "utf-16"));
    assert!(!same_encoding("UTF-8", "utf-32be"));
    assert!(same_language("en-US", "en_us"));
}
