//! One poll of one source, through every stage: fetch, parse, normalize,
//! store (dedup happens in the store's ingest), then record the source's
//! state. Miniflux calls this `RefreshFeed`.
//!
//! A failing source is data, not a crash: the error is logged with the
//! source's name, written to its state, and returned in the report; nothing
//! already stored is touched.

use chrono::Utc;
use tracing::{info, instrument, warn};

use crate::config::SourceConfig;
use crate::fetch::{FetchError, Fetcher, Limits};
use crate::model::{IngestCounts, SourceState};
use crate::normalize::{self, Context};
use crate::parse::{self, ParseError};
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
}

/// What one poll did.
#[derive(Debug)]
pub struct PollReport {
    /// The source's name.
    pub source: String,
    /// What was stored, or why nothing was.
    pub outcome: Result<IngestCounts, PollError>,
}

impl std::fmt::Display for PollReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.outcome {
            Ok(c) => write!(
                f,
                "{}: {} new, {} updated, {} unchanged",
                self.source, c.new, c.updated, c.unchanged
            ),
            Err(e) => write!(f, "{}: error: {e}", self.source),
        }
    }
}

/// Polls `source` once and records the result in the store.
#[instrument(skip_all, fields(source = %source.name))]
pub async fn poll_source(fetcher: &Fetcher, store: &Store, source: &SourceConfig) -> PollReport {
    let started = Utc::now();
    let mut state = match store.source_state(&source.name) {
        Ok(state) => state.unwrap_or_default(),
        Err(e) => {
            warn!(error = %e, "cannot read source state");
            SourceState::default()
        }
    };
    state.last_attempt = Some(started);

    let outcome = run_stages(fetcher, store, source, &mut state).await;
    match &outcome {
        Ok(counts) => {
            state.last_success = Some(started);
            state.last_error = None;
            state.consecutive_failures = 0;
            info!(
                new = counts.new,
                updated = counts.updated,
                unchanged = counts.unchanged,
                "poll done"
            );
        }
        Err(e) => {
            state.last_error = Some(e.to_string());
            state.consecutive_failures = state.consecutive_failures.saturating_add(1);
            if let PollError::Fetch(fetch) = e {
                state.http_status = fetch.http_status();
            }
            warn!(error = %e, failures = state.consecutive_failures, "poll failed");
        }
    }
    let recorded = store.put_source_state(&source.name, &state);
    let flushed = match recorded {
        Ok(()) => store.flush().await,
        Err(e) => Err(e),
    };
    let outcome = match (outcome, flushed) {
        (Ok(_), Err(e)) => Err(PollError::Store(e)),
        (outcome, Err(e)) => {
            warn!(error = %e, "cannot record source state");
            outcome
        }
        (outcome, Ok(())) => outcome,
    };
    PollReport {
        source: source.name.clone(),
        outcome,
    }
}

async fn run_stages(
    fetcher: &Fetcher,
    store: &Store,
    source: &SourceConfig,
    state: &mut SourceState,
) -> Result<IngestCounts, PollError> {
    let fetched = fetcher
        .fetch(
            &source.location,
            Limits {
                timeout: source.timeout,
                max_body: source.max_body_size,
            },
        )
        .await?;
    state.http_status = fetched.status;

    // Parsing, normalizing and the store transaction are CPU and disk work:
    // keep them off the async workers.
    let store = store.clone();
    let name = source.name.clone();
    let (counts, parsed_state) = tokio::task::spawn_blocking(move || {
        let parsed = parse::parse(
            &fetched.body,
            fetched.content_type.as_deref(),
            fetched.final_url.as_ref(),
        )?;
        let now = Utc::now();
        let entries = normalize::normalize(
            &parsed.feed,
            &Context {
                source: &name,
                document_url: fetched.final_url.as_ref(),
                http_language: fetched.content_language.as_deref(),
                now,
            },
        );
        let counts = store.ingest(&entries, now)?;
        let title = parsed
            .feed
            .title
            .as_ref()
            .map(|t| normalize::plain_text(&t.content))
            .filter(|t| !t.is_empty());
        let home_page = parsed
            .feed
            .links
            .iter()
            .find(|l| l.rel.as_deref().is_none_or(|r| r == "alternate"))
            .map(|l| l.href.clone())
            .filter(|h| h.starts_with("http"));
        let encoding = if parsed.had_replacements {
            format!("{} (invalid bytes replaced)", parsed.encoding)
        } else {
            parsed.encoding.to_string()
        };
        Ok::<_, PollError>((counts, (entries.len(), title, home_page, encoding)))
    })
    .await
    .map_err(|e| PollError::Task(e.to_string()))??;

    let (seen, title, home_page, encoding) = parsed_state;
    if encoding.contains("replaced") {
        warn!(encoding = %encoding, "document had bytes invalid in its encoding");
    }
    state.entries_seen = seen;
    state.title = title.or(state.title.take());
    state.home_page = home_page.or(state.home_page.take());
    state.encoding = Some(encoding);
    Ok(counts)
}
