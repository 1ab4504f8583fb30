//! Fuzz target `feed`: see `checks::feed` (shared with the stable regression
//! test, tests/daemon/fuzz_corpora.rs).

#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(
    init: {
        // feedmerge::parse runs feed-rs under catch_unwind and turns its
        // panics into a parse error; libfuzzer-sys's hook would abort on
        // them before they are caught. A panic nothing catches still aborts:
        // libfuzzer-sys's own catch_unwind around each input does that.
        std::panic::set_hook(Box::new(|info| {
            let guarded = info
                .location()
                .is_some_and(|l| l.file().contains("/feed-rs-") || l.file().contains("/quick-xml-"));
            if !guarded {
                eprintln!("{info}");
            }
        }));
    },
    |data: &[u8]| checks::feed(data)
);
