//! A source's manners as pure functions of its state, what happened, and
//! the time: whether to poll now ([`before`]), what the transport said
//! ([`note_response`]), and what follows from the outcome ([`after`]).
//! `poll_source` does the I/O around them and nothing clever.
//!
//! The rules: a changed URL in the config starts over; a disabled source is
//! never polled; a source is not polled before `next_due` (unless asked to
//! be); 410 disables; 429/503 wait as long as `Retry-After` says (at most a
//! week); other failures back off exponentially; a success clears the
//! failures and sets a TTL floor; a permanent redirect moves the source.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::fetch::Meta;
use crate::model::SourceState;
use crate::schedule;

/// Longest `Retry-After` honoured; beyond it the server is not believed.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

/// Whether a poll honours the source's `next_due` (backoff, Retry-After,
/// TTL). Disabled sources are never polled either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Skip the source if it is not due yet (the daemon).
    Respect,
    /// Poll it now (an explicit `feedmerge fetch`).
    Ignore,
}

/// What to do about a source now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Poll it.
    Poll,
    /// Not before this time.
    NotDue(DateTime<Utc>),
    /// Never, for this reason (until its URL changes in the config).
    Disabled(String),
}

/// The source's settings the rules read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Manners {
    /// Whether the publisher's TTL is a floor on the next poll.
    pub respect_ttl: bool,
    /// Longest backoff, and longest TTL floor.
    pub max_backoff: Duration,
}

/// How a poll ended, as far as the rules care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A document was stored, or the server said 304.
    Success,
    /// 410 Gone.
    Gone,
    /// Anything else that failed.
    Failed {
        /// The HTTP status of the response, if there was one (for a
        /// failure after the transport, the document's).
        http_status: Option<u16>,
        /// What a 429 or 503 asked us to wait.
        retry_after: Option<Duration>,
        /// The error, one line.
        error: String,
    },
}

/// The state to poll with (started over when the config's URL changed) and
/// whether to poll now.
pub fn before(
    mut state: SourceState,
    configured_url: &str,
    due: Due,
    now: DateTime<Utc>,
) -> (SourceState, Decision) {
    if state.config_url != configured_url {
        // A new (or changed) URL in the config starts over: no move, no
        // disabling, no validators, no waiting.
        state.config_url = configured_url.to_string();
        state.moved_to = None;
        state.disabled = None;
        state.etag = None;
        state.last_modified = None;
        state.next_due = None;
        state.consecutive_failures = 0;
    }
    let decision = match (&state.disabled, due, state.next_due) {
        (Some(why), _, _) => Decision::Disabled(why.clone()),
        (None, Due::Respect, Some(next)) if next > now => Decision::NotDue(next),
        _ => Decision::Poll,
    };
    (state, decision)
}

/// Records what the transport said: status, validators, a permanent move,
/// `Cache-Control: max-age` (kept as the TTL when longer).
pub fn note_response(state: &mut SourceState, meta: &Meta) {
    state.http_status = meta.status;
    if meta.etag.is_some() || meta.last_modified.is_some() || meta.status != Some(304) {
        state.etag = meta.etag.clone();
        state.last_modified = meta.last_modified.clone();
    }
    if let Some(moved) = &meta.moved_permanently {
        state.moved_to = Some(moved.to_string());
    }
    if let Some(max_age) = meta.max_age {
        state.ttl_secs = Some(max_age.as_secs().max(state.ttl_secs.unwrap_or(0)));
    }
}

/// The state after a poll that ended with `outcome` at `now`; `spread` in
/// `[0, 1)` spreads backoffs of sources that failed together.
pub fn after(
    mut state: SourceState,
    outcome: &Outcome,
    manners: Manners,
    now: DateTime<Utc>,
    spread: f64,
) -> SourceState {
    let later = |wait: Duration| {
        chrono::Duration::from_std(wait)
            .ok()
            .and_then(|wait| now.checked_add_signed(wait))
    };
    match outcome {
        Outcome::Success => {
            state.last_success = Some(now);
            state.last_error = None;
            state.consecutive_failures = 0;
            state.next_due = match (manners.respect_ttl, state.ttl_secs) {
                (true, Some(ttl)) => later(Duration::from_secs(ttl).min(manners.max_backoff)),
                _ => None,
            };
        }
        Outcome::Gone => {
            state.consecutive_failures = state.consecutive_failures.saturating_add(1);
            state.last_error = Some("http 410 gone".into());
            state.http_status = Some(410);
            state.disabled = Some(format!(
                "gone (http 410) since {}; change its url in the config to poll it again",
                now.to_rfc3339()
            ));
            state.next_due = None;
        }
        Outcome::Failed {
            http_status,
            retry_after,
            error,
        } => {
            state.consecutive_failures = state.consecutive_failures.saturating_add(1);
            state.last_error = Some(error.clone());
            state.http_status = *http_status;
            let wait = match retry_after {
                Some(wait) => (*wait).min(MAX_RETRY_AFTER),
                None => schedule::backoff(state.consecutive_failures, manners.max_backoff, spread),
            };
            state.next_due = later(wait);
        }
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    const URL: &str = "https://example.org/feed";

    fn known() -> SourceState {
        SourceState {
            config_url: URL.into(),
            ..SourceState::default()
        }
    }

    #[test]
    fn before_decides_from_state_and_time() {
        let now = at("2025-03-27T10:00:00Z");
        let check = |state: SourceState, due: Due, expected: Decision| {
            let (_, decision) = before(state.clone(), URL, due, now);
            assert_eq!(decision, expected, "{state:?} {due:?}");
        };
        check(known(), Due::Respect, Decision::Poll);
        let waiting = SourceState {
            next_due: Some(at("2025-03-27T11:00:00Z")),
            ..known()
        };
        check(
            waiting.clone(),
            Due::Respect,
            Decision::NotDue(at("2025-03-27T11:00:00Z")),
        );
        check(waiting, Due::Ignore, Decision::Poll);
        let past = SourceState {
            next_due: Some(at("2025-03-27T09:00:00Z")),
            ..known()
        };
        check(past, Due::Respect, Decision::Poll);
        let gone = SourceState {
            disabled: Some("gone".into()),
            ..known()
        };
        check(gone.clone(), Due::Ignore, Decision::Disabled("gone".into()));
        // A changed URL starts over: the disabling, the move, the
        // validators and the wait are the old URL's.
        let old = SourceState {
            config_url: "https://old.example/feed".into(),
            moved_to: Some("https://moved.example/".into()),
            etag: Some("\"e\"".into()),
            last_modified: Some("yesterday".into()),
            next_due: Some(at("2025-03-28T00:00:00Z")),
            consecutive_failures: 4,
            title: Some("kept".into()),
            ..gone
        };
        let (state, decision) = before(old, URL, Due::Respect, now);
        assert_eq!(decision, Decision::Poll);
        assert_eq!(
            state,
            SourceState {
                title: Some("kept".into()),
                ..known()
            }
        );
    }

    #[test]
    fn after_applies_the_manners() {
        let now = at("2025-03-27T10:00:00Z");
        let manners = Manners {
            respect_ttl: true,
            max_backoff: Duration::from_secs(24 * 3600),
        };
        let failing = SourceState {
            consecutive_failures: 2,
            last_error: Some("http 500".into()),
            ..known()
        };
        let check =
            |state: &SourceState, outcome: Outcome, manners: Manners, expected: SourceState| {
                let got = after(state.clone(), &outcome, manners, now, 0.5);
                assert_eq!(got, expected, "{outcome:?}");
            };
        // A success clears the failures; no TTL, no wait.
        check(
            &failing,
            Outcome::Success,
            manners,
            SourceState {
                last_success: Some(now),
                ..known()
            },
        );
        // A TTL is a floor on the next poll, capped by max_backoff, unless
        // the source ignores it.
        let with_ttl = SourceState {
            ttl_secs: Some(3600),
            ..known()
        };
        check(
            &with_ttl,
            Outcome::Success,
            manners,
            SourceState {
                last_success: Some(now),
                next_due: Some(at("2025-03-27T11:00:00Z")),
                ..with_ttl.clone()
            },
        );
        check(
            &with_ttl,
            Outcome::Success,
            Manners {
                respect_ttl: true,
                max_backoff: Duration::from_secs(600),
            },
            SourceState {
                last_success: Some(now),
                next_due: Some(at("2025-03-27T10:10:00Z")),
                ..with_ttl.clone()
            },
        );
        check(
            &with_ttl,
            Outcome::Success,
            Manners {
                respect_ttl: false,
                ..manners
            },
            SourceState {
                last_success: Some(now),
                ..with_ttl.clone()
            },
        );
        // The third failure in a row waits 4 minutes (spread 0.5: ±0).
        check(
            &failing,
            Outcome::Failed {
                http_status: Some(502),
                retry_after: None,
                error: "http 502".into(),
            },
            manners,
            SourceState {
                consecutive_failures: 3,
                last_error: Some("http 502".into()),
                http_status: Some(502),
                next_due: Some(at("2025-03-27T10:04:00Z")),
                ..known()
            },
        );
        // Retry-After is honoured, up to a week.
        check(
            &known(),
            Outcome::Failed {
                http_status: Some(429),
                retry_after: Some(Duration::from_secs(3600)),
                error: "http 429, retry after 3600 s".into(),
            },
            manners,
            SourceState {
                consecutive_failures: 1,
                last_error: Some("http 429, retry after 3600 s".into()),
                http_status: Some(429),
                next_due: Some(at("2025-03-27T11:00:00Z")),
                ..known()
            },
        );
        check(
            &known(),
            Outcome::Failed {
                http_status: Some(503),
                retry_after: Some(Duration::from_secs(365 * 24 * 3600)),
                error: "http 503".into(),
            },
            manners,
            SourceState {
                consecutive_failures: 1,
                last_error: Some("http 503".into()),
                http_status: Some(503),
                next_due: Some(at("2025-04-03T10:00:00Z")),
                ..known()
            },
        );
        // 410 disables until the URL changes.
        let gone = after(known(), &Outcome::Gone, manners, now, 0.5);
        assert_eq!(
            gone.disabled.as_deref(),
            Some(
                "gone (http 410) since 2025-03-27T10:00:00+00:00; \
                 change its url in the config to poll it again"
            )
        );
        assert_eq!(gone.next_due, None);
        assert_eq!(
            before(gone, URL, Due::Ignore, now).1,
            Decision::Disabled(
                "gone (http 410) since 2025-03-27T10:00:00+00:00; \
             change its url in the config to poll it again"
                    .into()
            )
        );
        // A backoff cap past any date means no date, not a crash.
        let huge = Manners {
            respect_ttl: true,
            max_backoff: Duration::from_secs(u64::MAX / 4),
        };
        let mut many = failing.clone();
        many.consecutive_failures = 40;
        let after_many = after(
            many,
            &Outcome::Failed {
                http_status: None,
                retry_after: None,
                error: "x".into(),
            },
            huge,
            now,
            0.9,
        );
        assert!(after_many.next_due.is_none_or(|d| d > now));
    }

    #[test]
    fn responses_set_validators_moves_and_ttl() {
        let mut state = SourceState {
            etag: Some("\"old\"".into()),
            ttl_secs: Some(60),
            ..known()
        };
        // A 304 without validators keeps the old ones.
        note_response(
            &mut state,
            &Meta {
                status: Some(304),
                ..Meta::default()
            },
        );
        assert_eq!(state.etag.as_deref(), Some("\"old\""));
        assert_eq!(state.http_status, Some(304));
        note_response(
            &mut state,
            &Meta {
                status: Some(200),
                moved_permanently: Some(url::Url::parse("https://new.example/feed").unwrap()),
                max_age: Some(Duration::from_secs(600)),
                ..Meta::default()
            },
        );
        assert_eq!(state.etag, None);
        assert_eq!(state.moved_to.as_deref(), Some("https://new.example/feed"));
        assert_eq!(state.ttl_secs, Some(600));
    }
}
