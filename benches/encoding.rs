//! Encoding benchmark: what a label that lies costs, and that a clean
//! document does not pay it.
//!
//! Run: `cargo bench --bench encoding`. For three corpus sentences (Russian
//! in windows-1251, Arabic in windows-1256, Japanese in Shift_JIS; from
//! `tests/fixtures/encodings/corpus.toml`) repeated as RSS items up to 16
//! KiB, 64 KiB, 256 KiB and 1 MiB, it prints the median time of
//! `parse::parse` (decoding and feed-rs) for:
//!
//! - the text in UTF-8, labelled so (the detector never runs: checked);
//! - the legacy bytes, correctly labelled (never runs either: checked);
//! - the legacy bytes labelled `charset=utf-8` (the detector runs: checked);
//!
//! the difference between the last two per KiB of document (the whole cost
//! of a lie: the failed UTF-8 decode, the UTF-8 share count, chardetng over
//! at most 64 KiB, the second decode), and chardetng alone over the first
//! `parse::DETECT_BOUND` bytes, per KiB it reads.

use std::hint::black_box;
use std::time::{Duration, Instant};

use chardetng::{EncodingDetector, Iso2022JpDetection, Utf8Detection};
use encoding_rs::Encoding;
use feedmerge::parse::{self, LabelSource, DETECT_BOUND};
use serde::Deserialize;

const CORPUS: &str = include_str!("../tests/fixtures/encodings/corpus.toml");
const CASES: &[&str] = &["ru-windows-1251", "ar-windows-1256", "ja-shift-jis"];
const SIZES: &[usize] = &[16 << 10, 64 << 10, 256 << 10, 1 << 20];
const RUNS: usize = 9;

#[derive(Deserialize)]
struct Corpus {
    case: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    encoding: String,
    title: String,
}

/// An RSS document of about `size` bytes (in `encoding`) of items titled
/// `title`.
fn document(title: &str, encoding: &'static Encoding, size: usize) -> String {
    let mut doc =
        String::from("<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>t</title>");
    let item_bytes = encoding.encode(title).0.len() + 80;
    for i in 0..size / item_bytes {
        doc.push_str(&format!(
            "<item><guid>https://news.example/{i}</guid><title>{title}</title></item>"
        ));
    }
    doc.push_str("</channel></rss>");
    doc
}

fn median(mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[RUNS / 2]
}

fn parse_time(body: &[u8], content_type: &str, detector: bool) -> Duration {
    let parsed = parse::parse(body, Some(content_type), None).unwrap();
    let ran = parsed.encoding.used.source == LabelSource::Detector;
    assert_eq!(ran, detector, "{content_type}: {}", parsed.encoding);
    median(|| {
        black_box(parse::parse(black_box(body), Some(content_type), None).unwrap());
    })
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let corpus: Corpus = toml::from_str(CORPUS).unwrap();
    println!(
        "{:<16} {:>8} {:>12} {:>12} {:>12} {:>14} {:>14}",
        "case", "KiB", "utf-8 µs", "labelled µs", "lying µs", "lie µs/KiB", "chardetng µs/KiB"
    );
    for name in CASES {
        let case = corpus.case.iter().find(|c| c.name == *name).unwrap();
        let encoding = Encoding::for_label(case.encoding.as_bytes()).unwrap();
        for &size in SIZES {
            let text = document(&case.title, encoding, size);
            let legacy = encoding.encode(&text).0.into_owned();
            let kib = legacy.len() as f64 / 1024.0;
            let utf8 = parse_time(text.as_bytes(), "application/rss+xml; charset=utf-8", false);
            let labelled = parse_time(
                &legacy,
                &format!("application/rss+xml; charset={}", case.encoding),
                false,
            );
            let lying = parse_time(&legacy, "application/rss+xml; charset=utf-8", true);
            let sample = &legacy[..legacy.len().min(DETECT_BOUND)];
            let detector = median(|| {
                let mut detector = EncodingDetector::new(Iso2022JpDetection::Deny);
                detector.feed(black_box(sample), sample.len() == legacy.len());
                black_box(detector.guess(None, Utf8Detection::Deny));
            });
            println!(
                "{:<16} {:>8.0} {:>12.0} {:>12.0} {:>12.0} {:>14.2} {:>14.2}",
                name,
                kib,
                micros(utf8),
                micros(labelled),
                micros(lying),
                (micros(lying) - micros(labelled)) / kib,
                micros(detector) / (sample.len() as f64 / 1024.0),
            );
        }
    }
}
