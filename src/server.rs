//! The HTTP server (axum): the published feeds and a health check.
//!
//! Routes: `GET /feed.atom` (the merged feed, one entry per story),
//! `GET /feeds/NAME.atom` (each `[[feeds]]` output), `GET /sources/NAME.atom`
//! (one source's own copies), `GET /api/sources` (each source's status),
//! `GET /api/entries/ID` (which copies a story merged, and why),
//! `GET /healthz`. Unknown names are 404.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tracing::error;

use crate::config::Config;
use crate::feeds::{self, Selector};
use crate::status;
use crate::store::Store;

/// The content type of every published feed.
pub const ATOM_CONTENT_TYPE: &str = "application/atom+xml; charset=utf-8";

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ServerState {
    /// The configuration the daemon runs with.
    pub config: Arc<Config>,
    /// The open store.
    pub store: Store,
}

/// The daemon's routes.
pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/feed.atom", get(merged_feed))
        .route("/feeds/{file}", get(named_feed))
        .route("/sources/{file}", get(source_feed))
        .route("/api/entries/{id}", get(entry_story))
        .route("/healthz", get(healthz))
        .route("/api/sources", get(sources))
        .with_state(state)
}

async fn merged_feed(State(state): State<ServerState>) -> Response {
    feed_response(state, Wanted::Merged).await
}

async fn named_feed(State(state): State<ServerState>, Path(file): Path<String>) -> Response {
    match file.strip_suffix(".atom") {
        Some(name) => feed_response(state, Wanted::Output(name.to_string())).await,
        None => not_found(),
    }
}

async fn source_feed(State(state): State<ServerState>, Path(file): Path<String>) -> Response {
    match file.strip_suffix(".atom") {
        Some(name) => feed_response(state, Wanted::Source(name.to_string())).await,
        None => not_found(),
    }
}

/// A feed asked for, owned, so it can go to a blocking thread.
#[derive(Debug)]
enum Wanted {
    Merged,
    Output(String),
    Source(String),
}

impl Wanted {
    fn selector(&self) -> Selector<'_> {
        match self {
            Wanted::Merged => Selector::Merged,
            Wanted::Output(name) => Selector::Output(name),
            Wanted::Source(name) => Selector::Source(name),
        }
    }
}

async fn entry_story(State(state): State<ServerState>, Path(id): Path<String>) -> Response {
    match status::explain(&state.store, &id) {
        Ok(Some(report)) => axum::Json(report).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no such entry\n").into_response(),
        Err(e) => {
            error!(error = %e, "cannot read entry");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot read entry\n").into_response()
        }
    }
}

/// Renders a feed on a blocking thread: store reads and rendering never
/// hold an async worker.
async fn feed_response(state: ServerState, wanted: Wanted) -> Response {
    let rendered = tokio::task::spawn_blocking(move || {
        let result = feeds::render(&state.config, &state.store, wanted.selector());
        (result, wanted)
    })
    .await;
    match rendered {
        Ok((Ok(Some(xml)), _)) => {
            ([(header::CONTENT_TYPE, ATOM_CONTENT_TYPE)], xml).into_response()
        }
        Ok((Ok(None), _)) => not_found(),
        Ok((Err(e), wanted)) => {
            error!(error = %e, feed = ?wanted, "cannot render feed");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot render feed\n").into_response()
        }
        Err(e) => {
            error!(error = %e, "render task failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot render feed\n").into_response()
        }
    }
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "no such feed\n").into_response()
}

async fn sources(State(state): State<ServerState>) -> Response {
    match status::statuses(&state.config, &state.store) {
        Ok(list) => axum::Json(list).into_response(),
        Err(e) => {
            error!(error = %e, "cannot read source status");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot read source status\n",
            )
                .into_response()
        }
    }
}

async fn healthz(State(state): State<ServerState>) -> Response {
    let health = state.store.health();
    let body = serde_json::json!({
        "status": "ok",
        "entries": health.entries,
        "sources": state.config.sources.len(),
        "corrupt_values": health.corrupt_values,
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
