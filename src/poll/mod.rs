//! One poll of one source, through every stage: fetch, parse, normalize,
//! the source's include/exclude filters, store (dedup happens in the
//! store's ingest), then record the source's state. Miniflux calls this
//! `RefreshFeed`.
//!
//! This is where a source's manners live: a 304 costs no parse and no entry
//! write; 410 disables the source until its URL changes in the config; 429
//! and 503 wait as long as `Retry-After` says; other failures back off
//! exponentially; a permanent redirect moves the source; a publisher's TTL is
//! a floor on the next poll. A failing source is data, not a crash: the
//! error is logged with the source's name and written to its state, and
//! nothing already stored is touched.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument, warn};

use crate::config::{DedupConfig, SourceConfig, SourceLocation};
use crate::dedup::Rules;
use crate::document::{self, DocumentMeta, Reading};
use crate::fetch::{FetchError, Fetched, Fetcher, Meta, Request, Target};
use crate::metrics::{Metrics, PollResult};
use crate::model::{IngestCounts, SourceState};
use crate::parse::{Limits, ParseError};
use crate::schedule;
use crate::store::{Store, StoreError};

/// Why a poll failed.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// Fetching failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The document is not a feed feedmerge can read.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The blocking parse task died.
    #[error("parse task failed: {0}")]
    Task(String),
    /// A config reload removed or changed the source mid-poll; nothing of
    /// this poll was stored.
    #[error("cancelled: a config reload removed or changed the source")]
    Cancelled,
}

mod policy;

pub use policy::{Decision, Due, Manners, Outcome, MAX_RETRY_AFTER};

/// What a poll that did not fail did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollOutcome {
    /// A document was read and its entries stored.
    Stored(IngestCounts),
    /// The server said 304 Not Modified.
    NotModified,
    /// Skipped: the source is not due before this time.
    NotDue(DateTime<Utc>),
    /// Skipped: the source is disabled, for this reason.
    Disabled(String),
}

/// What one poll did.
#[derive(Debug)]
pub struct PollReport {
    /// The source's name.
    pub source: String,
    /// What happened, or why the poll failed.
    pub outcome: Result<PollOutcome, PollError>,
}

impl std::fmt::Display for PollReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = &self.source;
        match &self.outcome {
            Ok(PollOutcome::Stored(c)) => write!(
                f,
                "{name}: {} new, {} updated, {} unchanged",
                c.new, c.updated, c.unchanged
            ),
            Ok(PollOutcome::NotModified) => write!(f, "{name}: not modified"),
            Ok(PollOutcome::NotDue(at)) => {
                write!(f, "{name}: skipped: not due until {}", at.to_rfc3339())
            }
            Ok(PollOutcome::Disabled(why)) => write!(f, "{name}: skipped: disabled: {why}"),
            Err(e) => write!(f, "{name}: error: {e}"),
        }
    }
}

/// What every poll shares: the fetcher, the store, and the limits.
#[derive(Debug)]
pub struct Pipeline {
    fetcher: Fetcher,
    store: Store,
    /// One permit per core for the CPU stage (parse, normalize, store), so
    /// a round of thousands of polls does not become thousands of threads.
    cpu: Arc<Semaphore>,
    /// Documents between parsing and the end of their store write: two per
    /// core. The store's writer is the slower stage, so documents parsed
    /// further ahead would only wait in memory for it.
    parsed: Arc<Semaphore>,
    /// Longest backoff after failures, and longest TTL floor.
    max_backoff: Duration,
    /// Deduplication settings, for normalize (tracking parameters).
    dedup: DedupConfig,
    /// The story rules, for the store.
    rules: Rules,
    /// What one document may bring in.
    limits: Limits,
    /// Where polls are counted.
    metrics: Arc<Metrics>,
}

impl Pipeline {
    /// A pipeline storing into `store`, backing off at most `max_backoff`,
    /// taking from each document what `limits` let in.
    pub fn new(
        fetcher: Fetcher,
        store: Store,
        max_backoff: Duration,
        dedup: DedupConfig,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            fetcher,
            store,
            cpu: Arc::new(Semaphore::new(cores)),
            parsed: Arc::new(Semaphore::new(2 * cores)),
            max_backoff,
            rules: dedup.rules(),
            dedup,
            limits,
            metrics,
        }
    }

    /// The store polls write to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The fetcher polls share.
    pub fn fetcher(&self) -> &Fetcher {
        &self.fetcher
    }
}

/// Polls `source` once and records the result in the store. Once `stop` is
/// cancelled (a reload removed or changed the source), the poll ends at the
/// next step and writes nothing: no entries, no state under the old config.
#[instrument(skip_all, fields(source = %source.name))]
pub async fn poll_source(
    pipeline: &Pipeline,
    source: &SourceConfig,
    due: Due,
    stop: &CancellationToken,
) -> PollReport {
    let store = &pipeline.store;
    let now = Utc::now();
    let state = match store.source_state(&source.name) {
        Ok(state) => state.unwrap_or_default(),
        Err(e) => {
            warn!(error = %e, "cannot read source state");
            SourceState::default()
        }
    };
    let report = |outcome| PollReport {
        source: source.name.clone(),
        outcome,
    };
    let (mut state, decision) = policy::before(state, &source.location.to_string(), due, now);
    match decision {
        Decision::Poll => {}
        Decision::NotDue(at) => {
            pipeline.metrics.poll(&source.name, PollResult::Skipped);
            return report(Ok(PollOutcome::NotDue(at)));
        }
        Decision::Disabled(why) => {
            pipeline.metrics.poll(&source.name, PollResult::Skipped);
            return report(Ok(PollOutcome::Disabled(why)));
        }
    }
    state.last_attempt = Some(now);

    let outcome = run_stages(pipeline, source, &mut state, now, stop).await;
    if matches!(outcome, Err(PollError::Cancelled)) {
        info!("poll cancelled by a config reload");
        pipeline.metrics.poll(&source.name, PollResult::Cancelled);
        return report(outcome);
    }
    let fact = match &outcome {
        Ok(_) => Outcome::Success,
        Err(PollError::Fetch(FetchError::Gone)) => Outcome::Gone,
        Err(e) => Outcome::Failed {
            http_status: match e {
                PollError::Fetch(fetch) => fetch.http_status(),
                _ => state.http_status,
            },
            retry_after: match e {
                PollError::Fetch(FetchError::RetryLater { retry_after, .. }) => *retry_after,
                _ => None,
            },
            error: e.to_string(),
        },
    };
    let manners = Manners {
        respect_ttl: source.respect_ttl,
        max_backoff: pipeline.max_backoff,
    };
    let state = policy::after(state, &fact, manners, now, schedule::spread());
    if let Err(e) = &outcome {
        warn!(
            error = %e,
            failures = state.consecutive_failures,
            next_due = ?state.next_due,
            disabled = state.disabled.is_some(),
            "poll failed"
        );
    }
    let recorded = store.put_source_state(&source.name, &state);
    // A 304 changes nothing but times in the source's state: the next flush
    // (any poll that stores, retention, shutdown) makes it durable, and a
    // crash before then only repeats a poll. Everything else is flushed
    // before the poll reports.
    let flushed = match (recorded, &outcome) {
        (Ok(()), Ok(PollOutcome::NotModified)) => Ok(()),
        (Ok(()), _) => store.flush().await,
        (Err(e), _) => Err(e),
    };
    let outcome = match (outcome, flushed) {
        (Ok(_), Err(e)) => Err(PollError::Store(e)),
        (outcome, Err(e)) => {
            warn!(error = %e, "cannot record source state");
            outcome
        }
        (outcome, Ok(())) => outcome,
    };
    // Reported only now: a poll's entries count as stored once flushed.
    let metrics = &pipeline.metrics;
    match &outcome {
        Ok(PollOutcome::Stored(c)) => {
            info!(
                new = c.new,
                updated = c.updated,
                unchanged = c.unchanged,
                "poll done"
            );
            metrics.entries(c, 0);
            metrics.poll(&source.name, PollResult::Stored);
        }
        Ok(PollOutcome::NotModified) => {
            info!("not modified");
            metrics.poll(&source.name, PollResult::NotModified);
        }
        Ok(_) => metrics.poll(&source.name, PollResult::Skipped),
        Err(PollError::Cancelled) => metrics.poll(&source.name, PollResult::Cancelled),
        Err(_) => metrics.poll(&source.name, PollResult::Failed),
    }
    report(outcome)
}

/// Notes what the transport said in the state, and logs a permanent move.
fn note_response(state: &mut SourceState, meta: &Meta, now: DateTime<Utc>) {
    if let Some(moved) = &meta.moved_permanently {
        info!(to = %moved, at = %now.to_rfc3339(), "source moved permanently");
    }
    policy::note_response(state, meta);
}

/// The place to fetch from: where the source moved, else the config's URL.
fn target(source: &SourceConfig, state: &SourceState) -> Target {
    if let Some(url) = state
        .moved_to
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
    {
        return Target::Http(url);
    }
    match &source.location {
        SourceLocation::Http(url) => Target::Http(url.clone()),
        SourceLocation::File(path) => Target::File(path.clone()),
    }
}

async fn run_stages(
    pipeline: &Pipeline,
    source: &SourceConfig,
    state: &mut SourceState,
    now: DateTime<Utc>,
    stop: &CancellationToken,
) -> Result<PollOutcome, PollError> {
    let target = target(source, state);
    let request = Request {
        target: &target,
        timeout: source.timeout,
        connect_timeout: source.connect_timeout,
        max_body: source.max_body_size,
        user_agent: &source.user_agent,
        headers: &source.headers,
        headers_for: match &source.location {
            SourceLocation::Http(url) => Some(url),
            SourceLocation::File(_) => None,
        },
        etag: state.etag.as_deref(),
        last_modified: state.last_modified.as_deref(),
    };
    let started = std::time::Instant::now();
    let fetched = tokio::select! {
        fetched = pipeline.fetcher.fetch(&request) => fetched?,
        () = stop.cancelled() => return Err(PollError::Cancelled),
    };
    let (body, meta, slot) = match fetched {
        Fetched::NotModified(meta) => {
            pipeline.metrics.fetch(started.elapsed(), 0);
            note_response(state, &meta, now);
            return Ok(PollOutcome::NotModified);
        }
        Fetched::Document { body, meta, slot } => (body, meta, slot),
    };
    pipeline.metrics.fetch(started.elapsed(), body.len());

    // Parsing, normalizing and the store transaction are CPU and disk work:
    // keep them off the async workers, one poll per core at a time.
    // The permit covers parsing and normalizing; the store's writes are
    // serialized by its own lock, and a poll waiting for it holds no core.
    let parsed = Arc::clone(&pipeline.parsed).acquire_owned().await.ok();
    let cpu = Arc::clone(&pipeline.cpu).acquire_owned().await.ok();
    drop(slot);
    let store = pipeline.store.clone();
    let dedup = pipeline.dedup.clone();
    let rules = pipeline.rules.clone();
    let name = source.name.clone();
    // Relative links resolve against the document's URL: without its
    // userinfo, or the source's password would be in every entry's link.
    let mut parse_meta = meta.clone();
    if let Some(url) = parse_meta.final_url.as_mut() {
        let _ = url.set_username("");
        let _ = url.set_password(None);
    }
    let limits = pipeline.limits.clone();
    let filter = source.filter.clone();
    let stop = stop.clone();
    let (counts, document) = tokio::task::spawn_blocking(move || {
        let meta = parse_meta;
        let now = Utc::now();
        let mut document = document::read(
            &body,
            &DocumentMeta {
                content_type: meta.content_type.as_deref(),
                url: meta.final_url.as_ref(),
                content_language: meta.content_language.as_deref(),
            },
            &Reading {
                source: &name,
                limits: &limits,
                tracking: &dedup.tracking_params,
                now,
            },
        )?;
        // What the source's filters keep out is never stored.
        document.filter(&filter);
        drop(body);
        drop(cpu);
        // The last point a reload can stop this poll: past it, the
        // entries are written (and the reload waits for that).
        if stop.is_cancelled() {
            return Err(PollError::Cancelled);
        }
        let counts = store.ingest(&document.entries, now, &rules)?;
        drop(parsed);
        Ok::<_, PollError>((counts, document))
    })
    .await
    .map_err(|e| PollError::Task(e.to_string()))??;

    let left_out = document
        .cuts
        .entries_over
        .map_or(0, |n| n - pipeline.limits.max_entries);
    pipeline.metrics.entries(&IngestCounts::default(), left_out);
    if !document.encoding.is_clean() {
        warn!(encoding = %document.encoding, "document bytes were not valid in their labelled encoding");
    }
    for note in &document.cut_notes {
        warn!(limit = %note, "document held more than the intake limits let in");
    }
    if document.excluded > 0 {
        debug!(
            excluded = document.excluded,
            "entries excluded by the source's filters"
        );
    }
    state.notes = document.notes();
    state.encoding = Some(document.encoding.to_string());
    state.ttl_secs = document.ttl_secs;
    note_response(state, &meta, now);
    state.entries_seen = document.entries.len() + document.excluded;
    state.title = document.title.or(state.title.take());
    state.home_page = document.home_page.or(state.home_page.take());
    Ok(PollOutcome::Stored(counts))
}
