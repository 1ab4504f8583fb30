//! Getting a source's bytes: HTTP(S) with reqwest, or a local file.
//!
//! A well-mannered client: conditional GET (ETag / Last-Modified), every
//! compression reqwest decodes, a configurable `User-Agent`, at most
//! [`MAX_REDIRECTS`] redirects followed by hand (so loops are caught and a
//! permanent move is reported), and limits on fetches in flight, overall and
//! per host. And a hard one to kill: a total timeout (a server dripping one
//! byte at a time cannot hold a poll) and a cap on the decoded body (a gzip
//! bomb stops at the cap, not when memory runs out). And one that cannot be
//! steered: the [`guard`] keeps feeds, redirects and stored moves off
//! private networks the config does not name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use reqwest::header::{self, HeaderMap};
use reqwest::StatusCode;
use tokio::io::AsyncReadExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use url::Url;

use crate::config::PollConfig;

mod guard;

pub use guard::{is_private, Guard, Refused};

/// Redirects followed before giving up.
pub const MAX_REDIRECTS: usize = 5;

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The whole fetch took longer than allowed.
    #[error("timed out after {} s", .0.as_secs_f32())]
    Timeout(Duration),
    /// The server answered with a non-success status.
    #[error("http {status}")]
    Status {
        /// The HTTP status code.
        status: u16,
    },
    /// 410 Gone: the publisher says the feed is gone for good.
    #[error("http 410 gone")]
    Gone,
    /// 429 or 503: the server asks us to come back later.
    #[error("http {status}{}", retry_after.map(|d| format!(", retry after {} s", d.as_secs())).unwrap_or_default())]
    RetryLater {
        /// 429 or 503.
        status: u16,
        /// The `Retry-After` the server gave, if any.
        retry_after: Option<Duration>,
    },
    /// The body went past the size cap.
    #[error("body larger than {limit} bytes")]
    TooLarge {
        /// The cap, in bytes.
        limit: u64,
    },
    /// A redirect led back to a URL already visited.
    #[error("redirect loop at {0}")]
    RedirectLoop(String),
    /// More redirects than [`MAX_REDIRECTS`].
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
    /// A redirect without a usable `Location`.
    #[error("bad redirect: {0}")]
    BadRedirect(String),
    /// The private-network guard refused the address.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// No fetch slot for the host came free in time: other fetches to it
    /// are slow or hung.
    #[error(
        "waited {} s for a fetch slot to {host} (other fetches to it are slow)",
        waited.as_secs_f32()
    )]
    Queued {
        /// The host (and port).
        host: String,
        /// How long the fetch waited.
        waited: Duration,
    },
    /// The request failed (DNS, connect, TLS, protocol, decoding...).
    #[error("{0}")]
    Request(String),
    /// A local file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Client(String),
}

impl FetchError {
    /// The HTTP status this error carries, if any.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            FetchError::Status { status } | FetchError::RetryLater { status, .. } => Some(*status),
            FetchError::Gone => Some(410),
            _ => None,
        }
    }
}

/// Where to fetch from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An http(s) URL.
    Http(Url),
    /// A local file.
    File(PathBuf),
}

/// One fetch: where, within which limits, with which headers and validators.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// Where to fetch from.
    pub target: &'a Target,
    /// Total time allowed, headers and body.
    pub timeout: Duration,
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// Largest decoded body accepted, in bytes.
    pub max_body: u64,
    /// `User-Agent` to send.
    pub user_agent: &'a str,
    /// Extra headers, sent only to the origin of [`Request::headers_for`].
    pub headers: &'a [(String, String)],
    /// The URL written in the config: `headers` go only to its origin
    /// (scheme, host and port), whatever the target is after a stored move
    /// and wherever a redirect leads. `None` sends them nowhere.
    pub headers_for: Option<&'a Url>,
    /// `ETag` from the last response, for `If-None-Match`.
    pub etag: Option<&'a str>,
    /// `Last-Modified` from the last response, for `If-Modified-Since`.
    pub last_modified: Option<&'a str>,
}

/// What the server said besides the body.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    /// The HTTP status, for HTTP fetches.
    pub status: Option<u16>,
    /// The URL finally read, after redirects.
    pub final_url: Option<Url>,
    /// Set when at least one redirect was followed and every one was
    /// permanent (301/308): the source's new URL.
    pub moved_permanently: Option<Url>,
    /// The `ETag` header.
    pub etag: Option<String>,
    /// The `Last-Modified` header.
    pub last_modified: Option<String>,
    /// `Cache-Control: max-age`.
    pub max_age: Option<Duration>,
    /// The `Content-Type` header.
    pub content_type: Option<String>,
    /// The `Content-Language` header.
    pub content_language: Option<String>,
}

/// The result of a successful fetch.
#[derive(Debug)]
pub enum Fetched {
    /// 304: the document did not change since the validators were issued.
    NotModified(Meta),
    /// A document.
    Document {
        /// The decoded body.
        body: Vec<u8>,
        /// What the server said about it.
        meta: Meta,
        /// The fetch's in-flight slot, still held: drop it once the body
        /// is in the hands of the CPU stage, so fetched bodies waiting for
        /// a core are bounded by the fetches in flight.
        slot: Slot,
    },
}

/// One of the fetcher's in-flight slots; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    _permit: Option<OwnedSemaphorePermit>,
}

/// A reusable HTTP client with feedmerge's settings and fetch limits.
#[derive(Debug, Clone)]
pub struct Fetcher {
    /// One client per connect timeout in use (reqwest sets it per client).
    clients: Arc<Mutex<HashMap<Duration, reqwest::Client>>>,
    in_flight: Arc<Semaphore>,
    per_host: usize,
    hosts: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
    /// The private-network guard; `None` when the config turns it off.
    guard: Option<Guard>,
}

impl Fetcher {
    /// A fetcher with `poll`'s limits on fetches in flight, letting the
    /// hosts of `configured` (the sources' URLs as written in the config)
    /// be private.
    pub fn new<'a>(poll: &PollConfig, configured: impl IntoIterator<Item = &'a Url>) -> Self {
        Self {
            clients: Arc::default(),
            in_flight: Arc::new(Semaphore::new(poll.max_in_flight)),
            per_host: poll.per_host,
            hosts: Arc::default(),
            guard: (!poll.allow_private_networks).then(|| Guard::new(configured)),
        }
    }

    /// Replaces the hosts that may be private with those of `configured`
    /// (after a config reload).
    pub fn name_hosts<'a>(&self, configured: impl IntoIterator<Item = &'a Url>) {
        if let Some(guard) = &self.guard {
            guard.name_hosts(configured);
        }
    }

    fn client(&self, connect_timeout: Duration) -> Result<reqwest::Client, FetchError> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(&connect_timeout) {
            return Ok(client.clone());
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(guard) = &self.guard {
            builder = builder.dns_resolver(Arc::new(guard::GuardedResolver(guard.clone())));
        }
        let client = builder.build().map_err(|e| FetchError::Client(chain(&e)))?;
        clients.insert(connect_timeout, client.clone());
        Ok(client)
    }

    /// Waits, at most `wait`, for a slot to `url`'s host and then for one
    /// of the overall slots. The host's comes first, so fetches queued
    /// behind a slow host hold none of the slots other hosts need.
    async fn permits(&self, url: &Url, wait: Duration) -> Result<Permits, FetchError> {
        let host = match (url.host_str(), url.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            _ => url.as_str().to_string(),
        };
        let semaphore = {
            let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(
                hosts
                    .entry(host.clone())
                    .or_insert_with(|| Arc::new(Semaphore::new(self.per_host))),
            )
        };
        let in_flight = Arc::clone(&self.in_flight);
        let both = async move {
            let host = semaphore.acquire_owned().await.ok();
            let overall = in_flight.acquire_owned().await.ok();
            Permits {
                _host: host,
                overall,
            }
        };
        tokio::time::timeout(wait, both)
            .await
            .map_err(|_| FetchError::Queued { host, waited: wait })
    }

    /// Fetches `request.target`.
    pub async fn fetch(&self, request: &Request<'_>) -> Result<Fetched, FetchError> {
        match request.target {
            Target::Http(url) => self.fetch_http(url, request).await,
            Target::File(path) => {
                tokio::time::timeout(request.timeout, fetch_file(path, request.max_body))
                    .await
                    .map_err(|_| FetchError::Timeout(request.timeout))?
            }
        }
    }

    async fn fetch_http(&self, start: &Url, request: &Request<'_>) -> Result<Fetched, FetchError> {
        let client = self.client(request.connect_timeout)?;
        let timeout = request.timeout;
        // The clock starts once the first slots are held: waiting behind
        // other fetches is not this fetch's time, and has its own bound.
        let mut started: Option<Instant> = None;
        let remaining = |started: Instant| {
            let left = (started + timeout).saturating_duration_since(Instant::now());
            if left.is_zero() {
                Err(FetchError::Timeout(timeout))
            } else {
                Ok(left)
            }
        };

        let mut url = start.clone();
        let mut visited = vec![start.clone()];
        let mut all_permanent = true;
        loop {
            if let Some(guard) = &self.guard {
                guard.check_url(&url)?;
            }
            let mut permits = self.permits(&url, timeout).await?;
            let started = *started.get_or_insert_with(Instant::now);
            let mut builder = client
                .get(url.clone())
                .header(header::USER_AGENT, request.user_agent)
                .header(
                    header::ACCEPT,
                    "application/atom+xml, application/rss+xml, application/feed+json, \
                     application/xml;q=0.9, text/xml;q=0.9, application/json;q=0.8, */*;q=0.5",
                );
            if sends_headers(request.headers_for, &url) {
                for (name, value) in request.headers {
                    builder = builder.header(name.as_str(), value.as_str());
                }
            }
            if let Some(etag) = request.etag {
                builder = builder.header(header::IF_NONE_MATCH, etag);
            }
            if let Some(date) = request.last_modified {
                builder = builder.header(header::IF_MODIFIED_SINCE, date);
            }
            let response = tokio::time::timeout(remaining(started)?, builder.send())
                .await
                .map_err(|_| FetchError::Timeout(timeout))?
                .map_err(request_error)?;
            let status = response.status();

            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                let next = redirect_target(&url, response.headers())?;
                if visited.contains(&next) {
                    return Err(FetchError::RedirectLoop(next.to_string()));
                }
                if visited.len() > MAX_REDIRECTS {
                    return Err(FetchError::TooManyRedirects);
                }
                all_permanent &= matches!(status.as_u16(), 301 | 308);
                visited.push(next.clone());
                url = next;
                continue;
            }

            let headers = response.headers();
            let text = |name: header::HeaderName| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let meta = Meta {
                status: Some(status.as_u16()),
                final_url: Some(url.clone()),
                moved_permanently: (visited.len() > 1 && all_permanent).then(|| url.clone()),
                etag: text(header::ETAG),
                last_modified: text(header::LAST_MODIFIED),
                max_age: text(header::CACHE_CONTROL).and_then(|v| max_age(&v)),
                content_type: text(header::CONTENT_TYPE),
                content_language: text(header::CONTENT_LANGUAGE),
            };
            match status.as_u16() {
                304 => return Ok(Fetched::NotModified(meta)),
                410 => return Err(FetchError::Gone),
                429 | 503 => {
                    let retry_after =
                        text(header::RETRY_AFTER).and_then(|v| parse_retry_after(&v, Utc::now()));
                    return Err(FetchError::RetryLater {
                        status: status.as_u16(),
                        retry_after,
                    });
                }
                _ if !status.is_success() => {
                    return Err(FetchError::Status {
                        status: status.as_u16(),
                    })
                }
                _ => {}
            }
            if response
                .content_length()
                .is_some_and(|len| len > request.max_body)
            {
                return Err(FetchError::TooLarge {
                    limit: request.max_body,
                });
            }
            let body =
                tokio::time::timeout(remaining(started)?, read_capped(response, request.max_body))
                    .await
                    .map_err(|_| FetchError::Timeout(timeout))??;
            return Ok(Fetched::Document {
                body,
                meta,
                slot: Slot {
                    _permit: permits.overall.take(),
                },
            });
        }
    }
}

/// The slots one fetch holds: its host's, and one of the overall ones.
struct Permits {
    _host: Option<OwnedSemaphorePermit>,
    overall: Option<OwnedSemaphorePermit>,
}

/// A failed request as a [`FetchError`]: the guard's refusal (which reqwest
/// wraps as a connect error) as itself, anything else as one line.
fn request_error(err: reqwest::Error) -> FetchError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(inner) = cause {
        if let Some(refused) = inner.downcast_ref::<Refused>() {
            return FetchError::Refused(refused.clone());
        }
        cause = inner.source();
    }
    FetchError::Request(chain(&err))
}

/// Whether a source's configured headers may go to `url`: only when it has
/// the same origin (scheme, host and port) as the URL written in the config,
/// `configured`. So never to a host the source moved or redirected to, and
/// never over http when the config says https.
fn sends_headers(configured: Option<&Url>, url: &Url) -> bool {
    configured.is_some_and(|configured| {
        let origin = configured.origin();
        origin.is_tuple() && origin == url.origin()
    })
}

/// Reads a response body, stopping with an error past `max_body` decoded
/// bytes.
async fn read_capped(response: reqwest::Response, max_body: u64) -> Result<Vec<u8>, FetchError> {
    // The announced length, trusted up to `RESERVE_AT_MOST`, saves the
    // doublings of growing the body; a body waits for a core once read, so
    // room it does not use is given back.
    const RESERVE_AT_MOST: u64 = 1 << 20;
    let announced = response
        .content_length()
        .map_or(0, |len| len.min(max_body).min(RESERVE_AT_MOST));
    let mut body = Vec::with_capacity(usize::try_from(announced).unwrap_or(0));
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| FetchError::Request(chain(&e)))?;
        if (body.len() + chunk.len()) as u64 > max_body {
            return Err(FetchError::TooLarge { limit: max_body });
        }
        body.extend_from_slice(&chunk);
    }
    if body.capacity() - body.len() > body.len() / 8 {
        body.shrink_to_fit();
    }
    Ok(body)
}

/// The http(s) URL a redirect response points to.
fn redirect_target(from: &Url, headers: &HeaderMap) -> Result<Url, FetchError> {
    let location = headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| FetchError::BadRedirect("no Location header".into()))?;
    let next = from
        .join(location)
        .map_err(|e| FetchError::BadRedirect(format!("{location:?}: {e}")))?;
    if !matches!(next.scheme(), "http" | "https") {
        return Err(FetchError::BadRedirect(format!(
            "{location:?}: only http and https redirects are followed"
        )));
    }
    Ok(next)
}

/// `Retry-After` as a wait from `now`: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// The `max-age` directive of a `Cache-Control` header.
pub fn max_age(cache_control: &str) -> Option<Duration> {
    cache_control.split(',').find_map(|directive| {
        let (name, value) = directive.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("max-age")
            .then(|| value.trim().trim_matches('"').parse::<u64>().ok())
            .flatten()
            .map(Duration::from_secs)
    })
}

async fn fetch_file(path: &Path, max_body: u64) -> Result<Fetched, FetchError> {
    let file_error = |source| FetchError::File {
        path: path.to_path_buf(),
        source,
    };
    let file = tokio::fs::File::open(path).await.map_err(file_error)?;
    let mut body = Vec::new();
    file.take(max_body.saturating_add(1))
        .read_to_end(&mut body)
        .await
        .map_err(file_error)?;
    if body.len() as u64 > max_body {
        return Err(FetchError::TooLarge { limit: max_body });
    }
    Ok(Fetched::Document {
        body,
        meta: Meta {
            final_url: Url::from_file_path(path).ok(),
            ..Meta::default()
        },
        slot: Slot { _permit: None },
    })
}

/// An error and its causes on one line, `outer: inner: innermost`.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        cause = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll_config() -> PollConfig {
        PollConfig {
            max_in_flight: 4,
            per_host: 2,
            jitter: Duration::ZERO,
            max_backoff: Duration::from_secs(3600),
            allow_private_networks: false,
        }
    }

    fn request(target: &Target, max_body: u64) -> Request<'_> {
        Request {
            target,
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            max_body,
            user_agent: "test",
            headers: &[],
            headers_for: None,
            etag: None,
            last_modified: None,
        }
    }

    #[tokio::test]
    async fn file_fetch_respects_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("feed.xml");
        std::fs::write(&path, vec![b'x'; 100]).unwrap();
        let fetcher = Fetcher::new(&poll_config(), []);
        let target = Target::File(path.clone());
        match fetcher.fetch(&request(&target, 100)).await.unwrap() {
            Fetched::Document { body, .. } => assert_eq!(body.len(), 100),
            other => panic!("{other:?}"),
        }
        let err = fetcher.fetch(&request(&target, 99)).await.unwrap_err();
        assert_eq!(err.to_string(), "body larger than 99 bytes");
        let missing = Target::File(dir.path().join("missing.xml"));
        let err = fetcher.fetch(&request(&missing, 99)).await.unwrap_err();
        assert!(err.to_string().starts_with("cannot read "), "{err}");
    }

    /// A listener that accepts connections and never answers.
    async fn hung_host() -> (Url, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/feed", listener.local_addr().unwrap())).unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        (url, task)
    }

    /// A listener that answers every request with a tiny feed at once.
    async fn quick_host() -> (Url, tokio::task::JoinHandle<()>) {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/feed", listener.local_addr().unwrap())).unwrap();
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = socket.read(&mut buf).await;
                    let _ = socket
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                });
            }
        });
        (url, task)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fetches_queued_behind_a_hung_host_leave_other_hosts_alone() {
        let (hung, _hung_task) = hung_host().await;
        let (quick, _quick_task) = quick_host().await;
        let fetcher = Fetcher::new(
            &PollConfig {
                max_in_flight: 2,
                per_host: 1,
                ..poll_config()
            },
            [&hung, &quick],
        );
        let hung_target = Target::Http(hung.clone());
        let mut stuck = Vec::new();
        for _ in 0..6 {
            let fetcher = fetcher.clone();
            let target = hung_target.clone();
            stuck.push(tokio::spawn(async move {
                let mut req = request(&target, 1 << 20);
                req.timeout = Duration::from_secs(30);
                fetcher.fetch(&req).await.map(|_| ())
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Six fetches wait on the hung host; only one of them holds an
        // overall slot, so the other host still has one.
        let target = Target::Http(quick.clone());
        let quick_request = request(&target, 1 << 20);
        let quick_fetch = fetcher.fetch(&quick_request);
        let fetched = tokio::time::timeout(Duration::from_secs(10), quick_fetch)
            .await
            .expect("the quick host waited behind the hung one")
            .unwrap();
        assert!(matches!(fetched, Fetched::Document { ref body, .. } if body == b"ok"));
        for task in stuck {
            task.abort();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fetched_body_holds_its_slot_until_it_is_handed_on() {
        let (quick, _quick_task) = quick_host().await;
        let fetcher = Fetcher::new(
            &PollConfig {
                max_in_flight: 1,
                ..poll_config()
            },
            [&quick],
        );
        let target = Target::Http(quick.clone());
        let mut req = request(&target, 1 << 20);
        req.timeout = Duration::from_millis(500);
        let first = fetcher.fetch(&req).await.unwrap();
        // The body waits (for a core, say): no other fetch may start, so
        // bodies in memory are bounded by the slots.
        let err = fetcher.fetch(&req).await.unwrap_err();
        assert!(matches!(err, FetchError::Queued { .. }), "{err}");
        drop(first);
        assert!(matches!(
            fetcher.fetch(&req).await.unwrap(),
            Fetched::Document { .. }
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_for_a_host_slot_is_bounded_by_the_timeout() {
        let (hung, _hung_task) = hung_host().await;
        let fetcher = Fetcher::new(
            &PollConfig {
                per_host: 1,
                ..poll_config()
            },
            [&hung],
        );
        let target = Target::Http(hung.clone());
        let holder = {
            let fetcher = fetcher.clone();
            let target = target.clone();
            tokio::spawn(async move {
                let mut req = request(&target, 1 << 20);
                req.timeout = Duration::from_secs(30);
                fetcher.fetch(&req).await.map(|_| ())
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut req = request(&target, 1 << 20);
        req.timeout = Duration::from_millis(500);
        let err = tokio::time::timeout(Duration::from_secs(10), fetcher.fetch(&req))
            .await
            .expect("the wait for a host slot was not bounded")
            .unwrap_err();
        assert!(matches!(err, FetchError::Queued { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("waited 0.5 s for a fetch slot to 127.0.0.1:"),
            "{err}"
        );
        holder.abort();
    }

    #[test]
    fn retry_after_forms() {
        let now = DateTime::parse_from_rfc3339("2025-03-27T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_retry_after("3600", now),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            parse_retry_after("Thu, 27 Mar 2025 11:00:00 GMT", now),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            parse_retry_after("Thu, 27 Mar 2025 09:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn cache_control_max_age() {
        assert_eq!(
            max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(max_age("no-cache"), None);
        assert_eq!(max_age("max-age=abc"), None);
    }

    #[test]
    fn configured_headers_go_only_to_the_configured_origin() {
        let check = |configured: Option<&str>, url: &str, expected: bool| {
            let configured = configured.map(|c| Url::parse(c).unwrap());
            let url = Url::parse(url).unwrap();
            assert_eq!(
                sends_headers(configured.as_ref(), &url),
                expected,
                "{configured:?} -> {url}"
            );
        };
        let config = Some("https://feeds.example/a?x=1");
        check(config, "https://feeds.example/a?x=1", true);
        check(config, "https://feeds.example/other", true);
        check(config, "https://feeds.example:443/b", true);
        check(config, "http://feeds.example/a?x=1", false);
        check(config, "https://feeds.example:8443/a", false);
        check(config, "https://elsewhere.example/a", false);
        check(config, "https://sub.feeds.example/a", false);
        check(
            Some("http://127.0.0.1:8000/a"),
            "http://127.0.0.1:8001/a",
            false,
        );
        check(
            Some("http://127.0.0.1:8000/a"),
            "http://127.0.0.2:8000/a",
            false,
        );
        check(
            Some("http://127.0.0.1:8000/a"),
            "http://127.0.0.1:8000/b",
            true,
        );
        check(None, "https://feeds.example/a", false);
    }

    #[test]
    fn redirects_stay_on_http() {
        let from = Url::parse("https://a.example/feed").unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::LOCATION, "/new".parse().unwrap());
        assert_eq!(
            redirect_target(&from, &headers).unwrap().as_str(),
            "https://a.example/new"
        );
        headers.insert(header::LOCATION, "file:///etc/passwd".parse().unwrap());
        assert!(redirect_target(&from, &headers).is_err());
        assert!(redirect_target(&from, &HeaderMap::new()).is_err());
    }
}
