//! The HTTP server (axum): the published feeds and a health check.
//!
//! Routes: `GET /feed.atom` (the merged feed, one entry per story),
//! `GET /feeds/NAME.atom` (each `[[feeds]]` output), `GET /sources/NAME.atom`
//! (one source's own copies), `GET /api/sources` (each source's status),
//! `GET /api/entries/ID` (which copies a story merged, and why),
//! `GET /sources.opml` (the sources as OPML 2.0), `GET /healthz`. Unknown names are 404.
//!
//! [`serve`] runs the routes on hyper with limits axum's own `serve` does
//! not set: a header-read timeout (which also closes idle keep-alive
//! connections), a cap on open connections, a request timeout, a cap on the
//! request head's size and the URI's length, and GET and HEAD only.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{MatchedPath, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, Request as HttpRequest, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;
use tracing::{error, warn};

use crate::config::{Config, ServerConfig};
use crate::documents::{self, Documents, RenderFailure};
use crate::feeds::{self, Format, Request, Selector};
use crate::metrics::{self, Metrics};
use crate::status::{self, ReloadStatus};
use crate::store::{Cursor, Store};
use chrono::{Datelike, NaiveDate};

/// The content type of every published Atom feed.
pub use crate::publish::ATOM_CONTENT_TYPE;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ServerState {
    /// The configuration in force; a reload replaces it.
    pub config: watch::Receiver<Arc<Config>>,
    /// The open store.
    pub store: Store,
    /// The last config reload's result, if there was one.
    pub last_reload: Arc<Mutex<Option<ReloadStatus>>>,
    /// What `/metrics` shows.
    pub metrics: Arc<Metrics>,
    /// True once the first poll round is done (`/readyz`).
    pub ready: watch::Receiver<bool>,
    /// The published documents, rendered once per change.
    pub documents: Arc<Documents>,
}

impl ServerState {
    /// The configuration in force now.
    fn config(&self) -> Arc<Config> {
        Arc::clone(&self.config.borrow())
    }
}

/// The header-read (and idle) timeout of connections accepted when the
/// last tenth of `server.max_connections` is in use.
pub const PRESSED_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// Longest request URI accepted, in bytes; longer ones get 414.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// Largest request head (request line and headers) read, in bytes; past it
/// hyper answers 431 and closes the connection.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Why a request is refused before it reaches the routes, if it is: a method
/// other than GET and HEAD (405, whatever the path), a URI longer than
/// [`MAX_URI_BYTES`] (414).
fn refusal(method: &Method, uri_len: usize) -> Option<StatusCode> {
    if method != Method::GET && method != Method::HEAD {
        Some(StatusCode::METHOD_NOT_ALLOWED)
    } else if uri_len > MAX_URI_BYTES {
        Some(StatusCode::URI_TOO_LONG)
    } else {
        None
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown`; then
/// stops accepting, lets the requests in progress finish, and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &ServerConfig,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    let builder = |header_read_timeout| {
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .max_buf_size(MAX_HEAD_BYTES)
            .keep_alive(true);
        builder
    };
    let relaxed = builder(limits.header_read_timeout);
    // Near the cap, connections that hold a slot without sending a request
    // (slowloris, idle keep-alives) would keep new clients in the backlog
    // for a whole header-read timeout: the last tenth of the slots gets a
    // short one, so they come free quickly.
    let pressed = builder(limits.header_read_timeout.min(PRESSED_HEADER_READ_TIMEOUT));
    let pressed_below = limits.max_connections.div_ceil(10);
    let request_timeout = limits.request_timeout;
    loop {
        // At the cap, connections wait in the listen backlog, not in memory.
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, most likely: wait, do not spin.
                    warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let router = router.clone();
        let service = service_fn(move |request: HttpRequest<Incoming>| {
            let mut router = router.clone();
            async move {
                let uri_len = request.uri().to_string().len();
                if let Some(status) = refusal(request.method(), uri_len) {
                    let mut response = status.into_response();
                    if status == StatusCode::METHOD_NOT_ALLOWED {
                        response
                            .headers_mut()
                            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
                    }
                    return Ok::<_, Infallible>(response);
                }
                let request = request.map(Body::new);
                match tokio::time::timeout(request_timeout, router.call(request)).await {
                    Ok(response) => response,
                    Err(_) => Ok(StatusCode::SERVICE_UNAVAILABLE.into_response()),
                }
            }
        });
        let builder = if permits.available_permits() < pressed_below {
            &pressed
        } else {
            &relaxed
        };
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let stop = shutdown.clone();
        connections.spawn(async move {
            let _permit = permit;
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                () = stop.cancelled() => connection.as_mut().graceful_shutdown(),
            }
            let _ = connection.await;
        });
    }
    connections.close();
    connections.wait().await;
}

/// The daemon's routes.
pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/feed.atom", get(merged_feed))
        .route("/feed.json", get(merged_json))
        .route("/feeds/{file}", get(named_feed))
        .route("/sources/{file}", get(source_feed))
        .route("/api/entries/{id}", get(entry_story))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/sources", get(sources))
        .route("/sources.opml", get(sources_opml))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

/// Counts every answer by route template (never the raw path, so the
/// label stays bounded) and status.
async fn count_requests(
    State(state): State<ServerState>,
    route: Option<MatchedPath>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    state.metrics.request(route, response.status().as_u16());
    response
}

/// Ready once the store is open (it is, or nothing is served) and the
/// first poll round is done: 200, else 503.
async fn readyz(State(state): State<ServerState>) -> Response {
    let ready = *state.ready.borrow();
    let (status, text) = if ready {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "first poll round not done\n",
        )
    };
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

async fn metrics(State(state): State<ServerState>) -> Response {
    let entries = state.store.health().entries;
    let text = tokio::task::spawn_blocking(move || state.metrics.render(entries))
        .await
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
}

async fn merged_feed(
    State(state): State<ServerState>,
    Query(page): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    feed_response(state, Wanted::Merged, Format::Atom, page, &headers).await
}

async fn merged_json(
    State(state): State<ServerState>,
    Query(page): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    feed_response(state, Wanted::Merged, Format::Json, page, &headers).await
}

async fn named_feed(
    State(state): State<ServerState>,
    Path(file): Path<String>,
    Query(page): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    by_file(state, &file, Wanted::Output, page, &headers).await
}

async fn source_feed(
    State(state): State<ServerState>,
    Path(file): Path<String>,
    Query(page): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    by_file(state, &file, Wanted::Source, page, &headers).await
}

/// The feed `NAME.atom` or `NAME.json` names, as `wanted` reads the name.
async fn by_file(
    state: ServerState,
    file: &str,
    wanted: fn(String) -> Wanted,
    page: PageQuery,
    headers: &HeaderMap,
) -> Response {
    match split_file(file) {
        Some((name, format)) => {
            feed_response(state, wanted(name.into()), format, page, headers).await
        }
        None => not_found(),
    }
}

/// `NAME.atom` or `NAME.json`, split.
fn split_file(file: &str) -> Option<(&str, Format)> {
    if let Some(name) = file.strip_suffix(".atom") {
        Some((name, Format::Atom))
    } else {
        file.strip_suffix(".json").map(|name| (name, Format::Json))
    }
}

/// A feed's paging query (RFC 5005): `?limit=N` (capped at the feed's
/// `max_entries`), `&before=CURSOR` (from a `next` link), or
/// `?archive=YYYY-MM-DD` (an archive document, from a `prev-archive`
/// link). Other parameters (a reader's cache-buster) are ignored.
#[derive(Debug, Default, serde::Deserialize)]
struct PageQuery {
    limit: Option<String>,
    before: Option<String>,
    archive: Option<String>,
}

/// The page asked for: limit, cursor, archive day.
type Paging = (Option<usize>, Option<Cursor>, Option<NaiveDate>);

impl PageQuery {
    /// The page asked for, or why the query is refused.
    fn parse(&self) -> Result<Paging, &'static str> {
        let archive = match &self.archive {
            None => None,
            Some(_) if self.limit.is_some() || self.before.is_some() => {
                return Err("an archive is a whole day: no limit or before with it\n")
            }
            Some(text) => match NaiveDate::parse_from_str(text, "%Y-%m-%d") {
                Ok(day) if text.len() == 10 => Some(day),
                _ => return Err("archive must be a day, YYYY-MM-DD, from a prev-archive link\n"),
            },
        };
        let limit = match &self.limit {
            None => None,
            Some(text) => match text.parse::<usize>() {
                Ok(n) if n > 0 => Some(n),
                _ => return Err("limit must be a positive whole number\n"),
            },
        };
        let before = match &self.before {
            None => None,
            Some(text) => match Cursor::from_hex(text) {
                Some(cursor) => Some(cursor),
                None => return Err("before must be a cursor from a next link\n"),
            },
        };
        Ok((limit, before, archive))
    }
}

/// A feed asked for, owned, so it can go to a blocking thread.
#[derive(Debug, Clone)]
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

/// Serves a published document from the cache of rendered documents,
/// rendering it (on a blocking thread, once however many ask) only when
/// the config or the entries and sources behind it changed; then answers
/// conditional requests with 304 and compresses by `Accept-Encoding`.
async fn feed_response(
    state: ServerState,
    wanted: Wanted,
    format: Format,
    page: PageQuery,
    headers: &HeaderMap,
) -> Response {
    let (limit, before, archive) = match page.parse() {
        Ok(page) => page,
        Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
    };
    let config = state.config();
    let request = Request {
        selector: wanted.selector(),
        format,
        limit,
        before,
        archive,
    };
    let Some(behind) = feeds::sources_behind(&config, request.selector) else {
        return not_found();
    };
    let now = chrono::Utc::now();
    // An archive never changes once frozen (only its day's ageing out
    // matters); any other document changes with its sources, and the
    // subscription document also with the newest complete day it links.
    let stamp = match archive {
        Some(_) => (
            0,
            feeds::oldest_kept_day(&config, now)
                .num_days_from_ce()
                .into(),
        ),
        None => (
            state.store.generation(behind),
            feeds::settled_day(&config, now).num_days_from_ce().into(),
        ),
    };
    let key = request.path_and_query();
    let render = {
        let (config, store) = (Arc::clone(&config), state.store.clone());
        let wanted = wanted.clone();
        move || {
            let request = Request {
                selector: wanted.selector(),
                format,
                limit,
                before,
                archive,
            };
            let doc = match archive {
                Some(_) => feeds::archive_document(&config, &store, &request, now),
                None => feeds::render_document(&config, &store, &request),
            };
            doc.map(|doc| doc.map(|body| (body, format.content_type())))
        }
    };
    let doc = match state
        .documents
        .get(key, Arc::clone(&config), stamp, render)
        .await
    {
        Ok(Some(doc)) => doc,
        Ok(None) => return not_found(),
        Err(RenderFailure::Render(e)) => {
            error!(error = %e, feed = ?wanted, "cannot render feed");
            return (StatusCode::INTERNAL_SERVER_ERROR, "cannot render feed\n").into_response();
        }
        Err(RenderFailure::Task(e)) => {
            error!(error = %e, feed = ?wanted, "render task failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, "cannot render feed\n").into_response();
        }
    };
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let coding = documents::negotiate(text(header::ACCEPT_ENCODING));
    let mut response =
        if doc.not_modified(text(header::IF_NONE_MATCH), text(header::IF_MODIFIED_SINCE)) {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            let body = if doc.ready(coding) {
                doc.encoded(coding)
            } else {
                let doc = Arc::clone(&doc);
                match tokio::task::spawn_blocking(move || doc.encoded(coding)).await {
                    Ok(body) => body,
                    Err(e) => {
                        error!(error = %e, "compression task failed");
                        return (StatusCode::INTERNAL_SERVER_ERROR, "cannot render feed\n")
                            .into_response();
                    }
                }
            };
            let mut response = Body::from(body).into_response();
            let h = response.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(doc.content_type),
            );
            if let Some(value) = coding.header() {
                h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(value));
            }
            response
        };
    let h = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&doc.etag(coding)) {
        h.insert(header::ETAG, etag);
    }
    if let Ok(date) = HeaderValue::from_str(&httpdate::fmt_http_date(doc.last_modified)) {
        h.insert(header::LAST_MODIFIED, date);
    }
    if let Ok(cache) = HeaderValue::from_str(&cache_control(&config, archive.is_some())) {
        h.insert(header::CACHE_CONTROL, cache);
    }
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    response
}

/// `Cache-Control` of a published document: an archive is frozen, so it
/// may be kept for good; everything else for `[feed] max_age`, every page
/// alike (a page past a cursor can still change: a copy joins one of its
/// stories, retention prunes one).
fn cache_control(config: &Config, archive: bool) -> String {
    if archive {
        "public, max-age=31536000, immutable".into()
    } else {
        format!("public, max-age={}", config.feed.max_age.as_secs())
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

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "no such feed\n").into_response()
}

async fn sources(State(state): State<ServerState>) -> Response {
    match status::statuses(&state.config(), &state.store) {
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

/// The configured sources as OPML 2.0 (`crate::opml::export`: no
/// userinfo, header values, file paths or unpublished URLs).
async fn sources_opml(State(state): State<ServerState>) -> Response {
    let config = state.config();
    let export = status::statuses(&config, &state.store)
        .map_err(|e| e.to_string())
        .and_then(|known| crate::opml::export(&config, &known).map_err(|e| e.to_string()));
    match export {
        Ok(export) => (
            [(header::CONTENT_TYPE, crate::opml::OPML_CONTENT_TYPE)],
            export.xml,
        )
            .into_response(),
        Err(e) => {
            error!(error = %e, "cannot write sources.opml");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot write sources.opml\n",
            )
                .into_response()
        }
    }
}

async fn healthz(State(state): State<ServerState>) -> Response {
    let health = state.store.health();
    let last_reload = state
        .last_reload
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let body = serde_json::json!({
        "status": "ok",
        "entries": health.entries,
        "sources": state.config().sources.len(),
        "corrupt_values": health.corrupt_values,
        "last_reload": last_reload,
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod limits_tests {
    use super::*;

    #[test]
    fn only_short_gets_and_heads_reach_the_routes() {
        let check = |method: Method, len: usize, expected: Option<StatusCode>| {
            assert_eq!(refusal(&method, len), expected, "{method} {len}");
        };
        check(Method::GET, 11, None);
        check(Method::HEAD, MAX_URI_BYTES, None);
        check(
            Method::GET,
            MAX_URI_BYTES + 1,
            Some(StatusCode::URI_TOO_LONG),
        );
        for method in [
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
            Method::PATCH,
            Method::TRACE,
            Method::CONNECT,
        ] {
            check(method, 1, Some(StatusCode::METHOD_NOT_ALLOWED));
        }
    }
}
