//! How much memory glibc's malloc keeps: its arenas, capped once at
//! startup.
//!
//! glibc gives each thread that meets a busy arena one of its own, up to
//! eight per core, and each keeps what it freed. sled's node churn and the
//! poller's blocking threads leave every arena holding some: a cap cuts
//! the first poll's peak RSS (59 MB uncapped in `cargo bench --bench
//! pipeline`). Too few arenas cost speed instead: threads then queue for
//! an arena's lock (thousands of futex waits in a first poll of 200
//! feeds). Measured on the bench's first poll, medians of three (eight:
//! two runs, on the earlier thin-LTO build, whose RSS is about 1.5 MB
//! higher):
//!
//! | arenas | first poll | peak RSS |
//! |---|---:|---:|
//! | 2 | 1.01 s | 47.3 MB |
//! | 3 | 0.92 s | 48.5 MB |
//! | 4 | 0.88 s | 49.6 MB |
//! | 8 | 0.80 s | 52.5-54 MB |
//!
//! Three keeps the bench's first poll under its 50 MB target.

/// Arenas the process uses, unless `MALLOC_ARENA_MAX` says otherwise.
pub const ARENAS: i32 = 3;

/// Caps glibc's malloc arenas at [`ARENAS`], unless the environment set
/// `MALLOC_ARENA_MAX` (glibc read it at startup, and it wins). Call it
/// first thing in `main`, before any thread starts. Elsewhere than Linux
/// with glibc it does nothing.
pub fn cap_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt sets one of malloc's tunables and touches no
        // memory of ours; M_ARENA_MAX takes any positive count. It returns
        // 0 on failure, which leaves glibc's default: nothing to undo.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, ARENAS);
        }
    }
}
