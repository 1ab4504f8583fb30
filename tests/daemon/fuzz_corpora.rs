//! The fuzz targets' committed corpora (fuzz/corpus/TARGET/), crash and
//! timeout inputs included, as regression tests on stable: every file goes
//! through the same check its fuzz target runs (fuzz/checks.rs, included
//! here and by the targets).

use std::path::Path;

#[path = "../../fuzz/checks.rs"]
mod checks;

/// Runs `check` on every file of the committed corpus of `target`, naming
/// the file that fails.
fn run(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|f| f.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "{}: only {} inputs",
        dir.display(),
        files.len()
    );
    for file in &files {
        let data = std::fs::read(file).unwrap();
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            panic!("fuzz input {} fails its check", file.display());
        }
    }
}

#[test]
fn every_feed_in_the_fuzz_corpus_publishes_well_formed_atom() {
    run("feed", checks::feed);
}

#[test]
fn no_config_in_the_fuzz_corpus_panics() {
    run("config", checks::config);
}

#[test]
fn every_date_in_the_fuzz_corpus_parses_to_a_sane_time() {
    run("date", checks::date);
}
