//! How much memory glibc's malloc keeps: its arenas, capped once at
//! startup.
//!
//! glibc gives each thread that meets a busy arena one of its own, up to
//! eight per core, and each keeps what it freed. sled's node churn and the
//! poller's blocking threads leave every arena holding some: two arenas cut
//! the first poll's peak RSS by about a seventh (59 -> 51 MB in `cargo
//! bench --bench pipeline`), at no cost in speed the bench can see.

/// Arenas the process uses, unless `MALLOC_ARENA_MAX` says otherwise.
pub const ARENAS: i32 = 2;

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
