//! When each source is polled: one tokio-cron-scheduler cron job per source.
//!
//! The scheduler only says "source X is due"; what a poll does lives in
//! `poll.rs`, and keeping polls of one source from overlapping is the
//! caller's job (see `app.rs`). Cron jobs are used rather than the crate's
//! repeated jobs, which can stop firing (tokio-cron-scheduler #113).

use std::sync::Arc;

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
        let inner = JobScheduler::new().await?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
