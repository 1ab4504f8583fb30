//! The systemd watchdog. When the unit sets `WatchdogSec=` (the daemon
//! sees `WATCHDOG_USEC` and `WATCHDOG_PID`), the daemon sends `WATCHDOG=1`
//! at half that interval, but only while it makes progress: the check must
//! run on time on the async workers, and a probe of the store on a
//! blocking thread ([`Store::probe`]: the writer lock and a sled read) must
//! answer within a quarter of the interval. A hung writer, flush or sled,
//! a starved blocking pool or starved async workers get no pings, and
//! systemd restarts the daemon.
//!
//! [`verdict`] decides; [`pinger`] measures and sends.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::store::{Store, StoreError, StoreHealth};

/// Sends watchdog pings while the service manager asks for them, until
/// `shutdown`. Returns at once when no watchdog is set for this process.
pub(crate) async fn run(store: Store, shutdown: CancellationToken) {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let interval = Duration::from_micros(usec);
    info!(interval = ?interval, "systemd watchdog on");
    pinger(store, interval, shutdown, || {
        sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog])
    })
    .await;
}

/// What the probe of one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Probe {
    /// The store answered within the bound.
    Answered,
    /// The store answered with an error.
    Failed(String),
    /// The probe thread panicked or was cancelled.
    Lost(String),
    /// No answer within the bound; the probe is left running.
    TimedOut,
    /// An earlier probe has not come back yet, so none was started.
    StillWaiting,
}

/// Whether a check pings.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// Send `WATCHDOG=1`.
    Ping,
    /// Send nothing, for this reason.
    Withhold(String),
}

/// The decision for one check: ping only if the check itself ran within
/// `bound` of when it was due (`late`) and the probe answered.
fn verdict(late: Duration, probe: &Probe, bound: Duration) -> Verdict {
    if late > bound {
        return Verdict::Withhold(format!(
            "the check ran {} ms late: the async workers are starved",
            late.as_millis()
        ));
    }
    match probe {
        Probe::Answered => Verdict::Ping,
        Probe::Failed(e) => Verdict::Withhold(format!("the store probe failed: {e}")),
        Probe::Lost(e) => Verdict::Withhold(format!("the store probe was lost: {e}")),
        Probe::TimedOut => Verdict::Withhold(format!(
            "the store probe did not answer in {} ms",
            bound.as_millis()
        )),
        Probe::StillWaiting => {
            Verdict::Withhold("an earlier store probe has still not answered".into())
        }
    }
}

/// A probe in flight on a blocking thread (it cannot be cancelled).
type Pending = JoinHandle<Result<StoreHealth, StoreError>>;

/// Every `interval / 2`: probes the store (bound: `interval / 4`), asks
/// [`verdict`], and calls `ping` when it says so; until `shutdown`.
async fn pinger<F>(store: Store, interval: Duration, shutdown: CancellationToken, mut ping: F)
where
    F: FnMut() -> std::io::Result<()>,
{
    let bound = interval / 4;
    let mut ticks = tokio::time::interval(interval / 2);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut pending: Option<Pending> = None;
    let mut withheld = false;
    loop {
        let due = tokio::select! {
            due = ticks.tick() => due,
            () = shutdown.cancelled() => return,
        };
        let late = Instant::now().saturating_duration_since(due);
        let probe = tokio::select! {
            probe = probe(&store, &mut pending, bound) => probe,
            () = shutdown.cancelled() => return,
        };
        match verdict(late, &probe, bound) {
            Verdict::Ping => {
                if withheld {
                    info!("the daemon makes progress again; watchdog pings resumed");
                    withheld = false;
                }
                if let Err(e) = ping() {
                    warn!(error = %e, "cannot send the watchdog ping");
                }
            }
            Verdict::Withhold(reason) => {
                withheld = true;
                warn!(%reason, "watchdog ping withheld; systemd restarts the daemon if this goes on");
            }
        }
    }
}

/// Runs [`Store::probe`] on a blocking thread and waits up to `bound` for
/// it. A probe that does not answer stays in `pending`, and no other is
/// started until it has.
async fn probe(store: &Store, pending: &mut Option<Pending>, bound: Duration) -> Probe {
    let mut handle = match pending.take() {
        Some(handle) if !handle.is_finished() => {
            *pending = Some(handle);
            return Probe::StillWaiting;
        }
        // A late answer from an earlier probe: the store is back; ask anew.
        Some(_) | None => {
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.probe())
        }
    };
    match tokio::time::timeout(bound, &mut handle).await {
        Ok(Ok(Ok(_health))) => Probe::Answered,
        Ok(Ok(Err(e))) => Probe::Failed(e.to_string()),
        Ok(Err(e)) => Probe::Lost(e.to_string()),
        Err(_) => {
            *pending = Some(handle);
            Probe::TimedOut
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{mpsc, Arc};

    use super::*;
    use crate::store::StoreOptions;

    #[test]
    fn only_a_timely_check_with_an_answered_probe_pings() {
        let bound = Duration::from_secs(15);
        let ms = Duration::from_millis;
        let withheld = |reason: &str| Verdict::Withhold(reason.to_string());
        for (late, probe, expected) in [
            (ms(0), Probe::Answered, Verdict::Ping),
            (bound, Probe::Answered, Verdict::Ping),
            (
                bound + ms(1),
                Probe::Answered,
                withheld("the check ran 15001 ms late: the async workers are starved"),
            ),
            (
                ms(3),
                Probe::Failed("disk gone".into()),
                withheld("the store probe failed: disk gone"),
            ),
            (
                ms(3),
                Probe::Lost("panicked".into()),
                withheld("the store probe was lost: panicked"),
            ),
            (
                ms(3),
                Probe::TimedOut,
                withheld("the store probe did not answer in 15000 ms"),
            ),
            (
                ms(3),
                Probe::StillWaiting,
                withheld("an earlier store probe has still not answered"),
            ),
        ] {
            assert_eq!(verdict(late, &probe, bound), expected, "{late:?} {probe:?}");
        }
    }

    /// Pings counted over `window`.
    async fn pings_during(count: &AtomicUsize, window: Duration) -> usize {
        let before = count.load(Ordering::SeqCst);
        tokio::time::sleep(window).await;
        count.load(Ordering::SeqCst) - before
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hung_store_writer_stops_the_pings_and_its_end_resumes_them() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Store::open(&dir.path().join("store"), StoreOptions::with_cache(1 << 20)).unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&count);
        let shutdown = CancellationToken::new();
        // Pings every 200 ms; a probe may take 100 ms.
        let pings = tokio::spawn(pinger(
            store.clone(),
            Duration::from_millis(400),
            shutdown.clone(),
            move || {
                counter.fetch_add(1, Ordering::SeqCst);
                Ok(())
            },
        ));
        assert!(pings_during(&count, Duration::from_millis(1200)).await >= 3);

        // A writer that never lets go of the lock.
        let (release, released) = mpsc::channel::<()>();
        let (held, holding) = mpsc::channel::<()>();
        let hung = store.clone();
        let writer = std::thread::spawn(move || {
            let _lock = hung.hold_writer();
            held.send(()).unwrap();
            released.recv().unwrap();
        });
        holding.recv().unwrap();
        // A probe that got the lock just before has answered by now.
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(pings_during(&count, Duration::from_millis(1200)).await, 0);

        release.send(()).unwrap();
        writer.join().unwrap();
        assert!(pings_during(&count, Duration::from_millis(1200)).await >= 3);

        shutdown.cancel();
        pings.await.unwrap();
    }
}
