//! When each source is polled: one tokio-cron-scheduler cron job per source.
//!
//! The scheduler only says "source X is due"; what a poll does lives in
//! `poll.rs`, and keeping polls of one source from overlapping is the
//! caller's job (see `app.rs`). Cron jobs are used rather than the crate's
//! repeated jobs, which can stop firing (tokio-cron-scheduler #113).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};

use crate::config::SourceConfig;

/// Why the scheduler could not start.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The scheduler itself failed.
    #[error("scheduler: {0}")]
    Scheduler(#[from] JobSchedulerError),
    /// A source's cron expression was refused.
    #[error("source {name:?}: schedule {schedule:?}: {reason}")]
    BadSchedule {
        /// The source's name.
        name: String,
        /// Its cron expression.
        schedule: String,
        /// Why it was refused.
        reason: String,
    },
}

/// Checks that `expr` is a six-field cron expression (seconds first) that
/// the scheduler accepts.
pub fn validate_cron(expr: &str) -> Result<(), String> {
    let fields = expr.split_whitespace().count();
    if fields != 6 {
        return Err(format!(
            "{expr:?} has {fields} fields; feedmerge wants 6, seconds first (e.g. \"0 */15 * * * *\")"
        ));
    }
    // An empty list item (", */15 * * * *") leaves a field matching no
    // value, and croner then searches for the next time forever.
    if expr
        .split_whitespace()
        .any(|field| field.split(',').any(str::is_empty))
    {
        return Err(format!("{expr:?} has an empty item in a list"));
    }
    Job::new_async(expr, |_, _| Box::pin(async {}))
        .map(|_| ())
        .map_err(|_| format!("{expr:?} is not a valid cron expression"))
}

/// The running scheduler; dropping it does not stop it, [`Scheduler::shutdown`] does.
pub struct Scheduler {
    inner: JobScheduler,
}

impl Scheduler {
    /// Starts one cron job per source; each firing calls `on_due` with the
    /// source's name.
    pub async fn start<F>(sources: &[SourceConfig], on_due: F) -> Result<Self, ScheduleError>
    where
        F: Fn(&str) + Send + Sync + 'static,
    {
        // Firings reach the scheduler's runner through a broadcast channel;
        // sized under the number of jobs that can fire in one second, it
        // overruns and drops firings (the soak bench lost 6 % of polls to
        // its default 200 with 1,000 sources on one schedule).
        let capacity = sources.len().saturating_mul(4).max(200);
        let inner = JobScheduler::new_with_channel_size(capacity).await?;
        let on_due = Arc::new(on_due);
        for source in sources {
            let name: Arc<str> = Arc::from(source.name.as_str());
            let on_due = Arc::clone(&on_due);
            let job = Job::new_async(source.schedule.as_str(), move |_, _| {
                on_due(&name);
                Box::pin(async {})
            })
            .map_err(|e| ScheduleError::BadSchedule {
                name: source.name.clone(),
                schedule: source.schedule.clone(),
                reason: e.to_string(),
            })?;
            inner.add(job).await?;
        }
        inner.start().await?;
        Ok(Self { inner })
    }

    /// Stops firing; polls already started are not touched.
    pub async fn shutdown(mut self) -> Result<(), ScheduleError> {
        self.inner.shutdown().await?;
        Ok(())
    }
}

/// First wait after a failure; it doubles with each failure in a row.
const BACKOFF_BASE: Duration = Duration::from_secs(60);

/// How long to wait after `failures` failures in a row: exponential from
/// one minute, capped at `max`, spread by ±20 % with `random` in `[0, 1)`
/// so sources that failed together do not retry together.
pub fn backoff(failures: u32, max: Duration, random: f64) -> Duration {
    let exponent = failures.saturating_sub(1).min(30);
    let plain = BACKOFF_BASE.saturating_mul(1u32 << exponent).min(max);
    let factor = 0.8 + 0.4 * random.clamp(0.0, 1.0);
    // Past what a Duration holds (a backoff cap of a billion years) is the cap.
    Duration::try_from_secs_f64(plain.as_secs_f64() * factor)
        .unwrap_or(max)
        .min(max)
}

/// The shortest gap between the next few firings of cron `expr` after
/// `now`: the schedule's interval. `None` for an expression that does not
/// parse or fires fewer than twice.
pub fn interval(expr: &str, now: DateTime<Utc>) -> Option<Duration> {
    let cron = parser().parse(expr).ok()?;
    let firings: Vec<DateTime<Utc>> = cron.iter_after(now).take(6).collect();
    firings
        .windows(2)
        .filter_map(|pair| (pair[1] - pair[0]).to_std().ok())
        .min()
}

/// How long after its latest firing (at or before `now`) cron `expr` is:
/// a poll's lag behind its schedule.
pub fn lag(expr: &str, now: DateTime<Utc>) -> Option<Duration> {
    let cron = parser().parse(expr).ok()?;
    let fired = cron.find_previous_occurrence(&now, true).ok()?;
    (now - fired).to_std().ok()
}

fn parser() -> croner::parser::CronParser {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
}

/// The largest jitter a source with schedule `interval` gets: a tenth of
/// its interval, and never more than `jitter` (the config's). A source
/// polled every 2 s starts at most 0.2 s late, not 30 s.
pub fn jitter_bound(jitter: Duration, interval: Option<Duration>) -> Duration {
    match interval {
        Some(interval) => jitter.min(interval / 10),
        None => jitter,
    }
}

/// A fixed offset in `[0, jitter)` for source `name`: each source starts
/// its scheduled polls this long after the cron time, so sources sharing a
/// schedule do not all fire in the same second. Stable across restarts.
pub fn jitter_offset(name: &str, jitter: Duration) -> Duration {
    let digest = Sha256::digest(name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let fraction = (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64;
    jitter.mul_f64(fraction)
}

/// A number in `[0, 1)` that differs between calls (for backoff spread;
/// not for anything that needs real randomness).
pub fn spread() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let day = Duration::from_secs(24 * 3600);
        assert_eq!(backoff(1, day, 0.5), Duration::from_secs(60));
        assert_eq!(backoff(2, day, 0.5), Duration::from_secs(120));
        assert_eq!(backoff(5, day, 0.5), Duration::from_secs(960));
        assert_eq!(backoff(40, day, 0.5), day);
        assert_eq!(backoff(40, day, 0.99), day, "the cap holds with spread");
        assert_eq!(backoff(1, day, 0.0), Duration::from_secs(48));
    }

    #[test]
    fn jitter_is_bounded_by_the_schedule() {
        let now = DateTime::parse_from_rfc3339("2025-03-27T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let check = |expr: &str, jitter: u64, expected: Option<u64>, bound_ms: u64| {
            let got = interval(expr, now);
            assert_eq!(got, expected.map(Duration::from_secs), "{expr}");
            assert_eq!(
                jitter_bound(Duration::from_secs(jitter), got),
                Duration::from_millis(bound_ms),
                "{expr}"
            );
        };
        check("*/2 * * * * *", 30, Some(2), 200);
        check("0 */15 * * * *", 30, Some(900), 30_000);
        check("0 */1 * * * *", 30, Some(60), 6_000);
        check("0 0 */6 * * *", 60, Some(6 * 3600), 60_000);
        // Irregular: the shortest gap counts.
        check("0 0,5 * * * *", 60, Some(300), 30_000);
        check("not cron", 30, None, 30_000);
        // Every offset stays under the bound.
        let bound = jitter_bound(Duration::from_secs(30), Some(Duration::from_secs(2)));
        assert!((0..200).all(|i| jitter_offset(&format!("s{i}"), bound) < bound));
    }

    #[test]
    fn jitter_spreads_sources() {
        let jitter = Duration::from_secs(60);
        let offsets: Vec<u64> = (0..100)
            .map(|i| jitter_offset(&format!("source-{i}"), jitter).as_secs())
            .collect();
        assert!(offsets.iter().all(|&o| o < 60));
        let distinct: std::collections::HashSet<_> = offsets.iter().collect();
        assert!(distinct.len() > 30, "offsets bunch up: {offsets:?}");
        assert_eq!(jitter_offset("a", jitter), jitter_offset("a", jitter));
        assert_eq!(jitter_offset("a", Duration::ZERO), Duration::ZERO);
        let s = spread();
        assert!((0.0..1.0).contains(&s));
    }

    #[test]
    fn cron_expressions() {
        assert_eq!(validate_cron("0 */15 * * * *"), Ok(()));
        assert_eq!(validate_cron("*/30 * * * * *"), Ok(()));
        assert!(validate_cron("*/15 * * * *")
            .unwrap_err()
            .contains("5 fields"));
        assert!(validate_cron("0 */15 * * * nonsense")
            .unwrap_err()
            .contains("not a valid cron"));
        for empty_item in [", */15 * * * *", "0 1,,2 * * * *", "0 */15, * * * *"] {
            assert!(validate_cron(empty_item)
                .unwrap_err()
                .contains("empty item"));
        }
    }
}
