//! What sled 0.34 charges per key, apart from feedmerge: the figure that
//! bounds the store's ingest (issue 10's first-poll target).
//!
//! Run: `cargo bench --bench sled_keys`. It writes 70,000 keys into fresh
//! databases in batches of 50 (as `Store::ingest` does, one batch per tree
//! per document), with the store's own settings (16 MiB cache, flushed at
//! the end), and prints for each layout the median over 3 runs of the
//! microseconds per key, and the bytes on disk per logical byte:
//!
//! - index-like keys (16 bytes, 8-byte value), in key order and at random,
//!   over 7 trees (one per index, as the store has) and over one tree;
//! - record-like values (1,200 bytes, the bench corpus's average record)
//!   in key order, one tree;
//!
//! then what that means for an entry written as 7, 5 or 4 keys. This bench
//! uses sled directly on purpose: it measures the backend, not the store.

use std::time::Instant;

/// Keys written per layout.
const KEYS: usize = 70_000;
/// Keys per tree per batch.
const BATCH: usize = 50;
/// Runs per layout; the median is printed.
const RUNS: usize = 3;

struct Layout {
    name: &'static str,
    trees: usize,
    random: bool,
    value: usize,
}

/// One run: microseconds per key, and disk bytes over logical bytes.
fn run(layout: &Layout) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sled::Config::new()
        .path(dir.path())
        .cache_capacity(16 << 20)
        .open()
        .expect("open sled");
    let trees: Vec<sled::Tree> = (0..layout.trees)
        .map(|i| db.open_tree(format!("t{i}")).expect("tree"))
        .collect();
    let value = vec![7u8; layout.value];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut batches: Vec<sled::Batch> = trees.iter().map(|_| sled::Batch::default()).collect();
    let started = Instant::now();
    for i in 0..KEYS {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let first = if layout.random { state } else { i as u64 };
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&first.to_be_bytes());
        key[8..].copy_from_slice(&(i as u64).to_be_bytes());
        let tree = i % trees.len();
        batches[tree].insert(&key[..], &value[..]);
        let round_done = tree == trees.len() - 1 && (i / trees.len()) % BATCH == BATCH - 1;
        if round_done {
            for (t, b) in trees.iter().zip(batches.iter_mut()) {
                t.apply_batch(std::mem::take(b)).expect("apply");
            }
        }
    }
    for (t, b) in trees.iter().zip(batches) {
        t.apply_batch(b).expect("apply");
    }
    db.flush().expect("flush");
    let micros = started.elapsed().as_secs_f64() * 1e6 / KEYS as f64;
    drop(trees);
    drop(db);
    let disk: u64 = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    let logical = (KEYS * (16 + layout.value)) as f64;
    (micros, disk as f64 / logical)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let layouts = [
        Layout {
            name: "index keys, in order, 7 trees",
            trees: 7,
            random: false,
            value: 8,
        },
        Layout {
            name: "index keys, in order, 1 tree",
            trees: 1,
            random: false,
            value: 8,
        },
        Layout {
            name: "index keys, random, 7 trees",
            trees: 7,
            random: true,
            value: 8,
        },
        Layout {
            name: "index keys, random, 1 tree",
            trees: 1,
            random: true,
            value: 8,
        },
        Layout {
            name: "records (1,200 B), in order",
            trees: 1,
            random: false,
            value: 1_200,
        },
    ];
    println!("sled 0.34 per-key cost ({KEYS} keys, batches of {BATCH} per tree, median of {RUNS})");
    let mut index_cost = Vec::new();
    let mut record_cost = 0.0;
    for layout in &layouts {
        let runs: Vec<(f64, f64)> = (0..RUNS).map(|_| run(layout)).collect();
        let micros = median(runs.iter().map(|r| r.0).collect());
        let amplification = median(runs.iter().map(|r| r.1).collect());
        println!(
            "  {:<32} {micros:>6.1} µs a key, disk {amplification:>5.1}× the logical bytes",
            layout.name
        );
        if layout.value > 8 {
            record_cost = micros;
        } else if layout.trees == 7 {
            index_cost.push(micros);
        }
    }
    let index = index_cost.iter().sum::<f64>() / index_cost.len().max(1) as f64;
    println!("an entry as its record plus N-1 index keys (the 7-tree figures, order and random averaged):");
    for keys in [7usize, 5, 4] {
        let micros = record_cost + index * (keys - 1) as f64;
        println!(
            "  {keys} keys: {micros:>5.0} µs an entry, at most {:>6.0} entries/s through one writer",
            1e6 / micros
        );
    }
}
