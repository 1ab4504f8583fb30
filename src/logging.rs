//! Logging: tracing events to stderr, as text or as JSON lines.
//!
//! The level is the config's `[log] level` unless `FEEDMERGE_LOG` is set;
//! both are `tracing_subscriber::EnvFilter` directives. A reload applies a
//! new `[log] level` (not while `FEEDMERGE_LOG` overrides it). Under
//! systemd, when `JOURNAL_STREAM` names the stream stderr is, journald
//! stamps every line with its own time, so ours carry none.

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{fmt, reload, EnvFilter, Layer, Registry};

/// The environment variable that overrides `[log] level`.
pub const ENV_FILTER: &str = "FEEDMERGE_LOG";

/// Directives added to a configured level that does not mention these
/// targets: the scheduler crate is chatty at info.
const QUIET: &[(&str, &str)] = &[("tokio_cron_scheduler", "warn")];

/// How each event is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Human-readable lines.
    Text,
    /// One JSON object a line, the event's fields at the top level.
    Json,
}

/// Where the filter in force can be replaced; set once by [`init`].
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Starts logging to stderr in `format`, filtered by `FEEDMERGE_LOG` if it
/// is set, else by `level` (the config's `[log] level`). Called once, by
/// the command line.
pub fn init(format: Format, level: &str) {
    let env = std::env::var(ENV_FILTER)
        .ok()
        .filter(|v| !v.trim().is_empty());
    let (filter, bad_env) = match &env {
        Some(text) => match EnvFilter::builder().parse(text) {
            Ok(filter) => (filter, None),
            Err(e) => (configured(level), Some(format!("{e}: {text:?}"))),
        },
        None => (configured(level), None),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let journal = stderr_is_journal();
    let ansi = !journal && std::io::stderr().is_terminal();
    let output: Box<dyn Layer<_> + Send + Sync> = match (format, journal) {
        (Format::Text, false) => {
            Box::new(fmt::layer().with_writer(std::io::stderr).with_ansi(ansi))
        }
        (Format::Text, true) => Box::new(
            fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .without_time(),
        ),
        (Format::Json, false) => Box::new(
            fmt::layer()
                .json()
                .flatten_event(true)
                .with_writer(std::io::stderr),
        ),
        (Format::Json, true) => Box::new(
            fmt::layer()
                .json()
                .flatten_event(true)
                .without_time()
                .with_writer(std::io::stderr),
        ),
    };
    if tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .is_ok()
        && env.is_none()
    {
        // Only a configured level may be replaced by a reload.
        let _ = FILTER.set(handle);
    }
    if let Some(reason) = bad_env {
        tracing::warn!(error = %reason, "{ENV_FILTER} is not a valid filter; using [log] level");
    }
}

/// Puts a reloaded config's `[log] level` in force, unless
/// `FEEDMERGE_LOG` overrides it (or logging was not started by [`init`]).
pub fn set_level(level: &str) {
    if let Some(handle) = FILTER.get() {
        if let Err(e) = handle.reload(configured(level)) {
            tracing::warn!(error = %e, "cannot change the log level");
        }
    }
}

/// The filter for a configured level (checked by the config), with the
/// [`QUIET`] directives it does not override.
fn configured(level: &str) -> EnvFilter {
    let directives = with_quiet(level);
    EnvFilter::builder()
        .parse(&directives)
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// `level` plus each [`QUIET`] directive whose target it does not name.
fn with_quiet(level: &str) -> String {
    let mut directives = level.trim().to_string();
    for (target, quiet) in QUIET {
        if !directives.contains(target) {
            directives.push_str(&format!(",{target}={quiet}"));
        }
    }
    directives
}

/// Whether stderr is the journal stream systemd connected: `JOURNAL_STREAM`
/// is `DEVICE:INODE` of that stream, and a redirected stderr no longer
/// matches it (sd_journal_stream_fd(3)).
fn stderr_is_journal() -> bool {
    let Some(expected) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((device, inode)) = stderr_identity() else {
        return false;
    };
    expected.to_str() == Some(format!("{device}:{inode}").as_str())
}

/// The device and inode numbers of stderr.
#[cfg(unix)]
fn stderr_identity() -> Option<(u64, u64)> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn stderr_identity() -> Option<(u64, u64)> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_level_keeps_the_scheduler_quiet_unless_it_names_it() {
        for (level, expected) in [
            ("info", "info,tokio_cron_scheduler=warn"),
            (" debug ", "debug,tokio_cron_scheduler=warn"),
            (
                "warn,feedmerge::poll=debug",
                "warn,feedmerge::poll=debug,tokio_cron_scheduler=warn",
            ),
            (
                "info,tokio_cron_scheduler=debug",
                "info,tokio_cron_scheduler=debug",
            ),
        ] {
            assert_eq!(with_quiet(level), expected, "{level:?}");
        }
    }
}
