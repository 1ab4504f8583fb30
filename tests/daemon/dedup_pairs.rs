//! Precision and recall of near-duplicate detection on a labelled set
//! (issue 5): `tests/fixtures/dedup-pairs.tsv` holds pairs of news entries
//! in Arabic and English, each labelled `same` (one story, two outlets) or
//! `different` (two stories, often sharing boilerplate or a template).
//! A pair counts as merged as the store decides it: the two share an LSH
//! band (so one is found as the other's candidate) and pass the same-story
//! test. Run with `--nocapture` to see the figures; the README reports them.

use feedmerge::dedup::{band_keys, fingerprint, same_story, similarity, SAME_STORY};

const PAIRS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/dedup-pairs.tsv"
);

#[derive(Default)]
struct Tally {
    true_pos: usize,
    false_pos: usize,
    false_neg: usize,
    true_neg: usize,
}

#[test]
fn near_duplicates_precision_and_recall() {
    let text = std::fs::read_to_string(PAIRS).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("label\tlang\ta_title\ta_text\tb_title\tb_text")
    );
    let mut by_lang: std::collections::BTreeMap<String, Tally> = Default::default();
    let mut all = Tally::default();
    let mut misses = Vec::new();
    for (n, line) in lines.enumerate() {
        let fields: Vec<&str> = line.split('\t').collect();
        assert_eq!(fields.len(), 6, "line {}", n + 2);
        let same = match fields[0] {
            "same" => true,
            "different" => false,
            other => panic!("line {}: label {other:?}", n + 2),
        };
        let a = fingerprint(fields[2], fields[3]);
        let b = fingerprint(fields[4], fields[5]);
        let (score, predicted) = match (&a, &b) {
            (Some(a), Some(b)) => {
                let bands = band_keys(&a.minhash);
                let candidate = band_keys(&b.minhash).iter().any(|k| bands.contains(k));
                (
                    similarity(&a.minhash, &b.minhash),
                    candidate && same_story(a.view(), b.view()).is_some(),
                )
            }
            _ => (0.0, false),
        };
        if std::env::var("DEDUP_SCORES").is_ok() {
            println!("score {score:.2} {} {} {predicted}", fields[0], fields[1]);
        }
        let tally = by_lang.entry(fields[1].to_string()).or_default();
        for t in [&mut *tally, &mut all] {
            match (same, predicted) {
                (true, true) => t.true_pos += 1,
                (false, true) => t.false_pos += 1,
                (true, false) => t.false_neg += 1,
                (false, false) => t.true_neg += 1,
            }
        }
        if same != predicted {
            misses.push(format!(
                "line {} ({}, {}): {score:.2} {}",
                n + 2,
                fields[0],
                fields[1],
                fields[2]
            ));
        }
    }
    let figures = |t: &Tally| {
        let precision = t.true_pos as f64 / (t.true_pos + t.false_pos).max(1) as f64;
        let recall = t.true_pos as f64 / (t.true_pos + t.false_neg).max(1) as f64;
        (precision, recall)
    };
    let mut report = format!("near-duplicates at similarity >= {SAME_STORY}\n");
    for (lang, t) in by_lang.iter().chain([(&"all".to_string(), &all)]) {
        let (p, r) = figures(t);
        report.push_str(&format!(
            "{lang:>4}: pairs {:>3}  tp {:>3} fp {:>3} fn {:>3} tn {:>3}  precision {p:.3}  recall {r:.3}\n",
            t.true_pos + t.false_pos + t.false_neg + t.true_neg,
            t.true_pos,
            t.false_pos,
            t.false_neg,
            t.true_neg
        ));
    }
    println!("{report}");
    for miss in &misses {
        println!("miss: {miss}");
    }
    let (precision, recall) = figures(&all);
    assert!(all.true_pos + all.false_neg >= 50 && all.false_pos + all.true_neg >= 50);
    assert_eq!(
        precision, 1.0,
        "unrelated stories merged:\n{report}{misses:#?}"
    );
    assert!(recall >= 0.9, "recall below 0.9:\n{report}{misses:#?}");
}
