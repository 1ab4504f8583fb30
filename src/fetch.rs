//! Getting a source's bytes: HTTP(S) with reqwest, or a local file.
//!
//! Every fetch is bounded: a total timeout (a server dripping one byte at a
//! time cannot hold a poll forever) and a cap on the decoded body (a gzip
//! bomb stops at the cap, not when memory runs out).

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::AsyncReadExt;
use url::Url;

use crate::config::SourceLocation;

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
    /// The body went past the size cap.
    #[error("body larger than {limit} bytes")]
    TooLarge {
        /// The cap, in bytes.
        limit: u64,
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
            FetchError::Status { status } => Some(*status),
            _ => None,
        }
    }
}

/// Limits for one fetch.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Total time allowed, headers and body.
    pub timeout: Duration,
    /// Largest decoded body accepted, in bytes.
    pub max_body: u64,
}

/// A fetched document and what the transport said about it.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The (decompressed) body.
    pub body: Vec<u8>,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The `Content-Language` header, if any.
    pub content_language: Option<String>,
    /// The URL the document was finally read from, after redirects.
    pub final_url: Option<Url>,
    /// The HTTP status, for HTTP fetches.
    pub status: Option<u16>,
}

/// A reusable HTTP client with feedmerge's settings.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_REDIRECTS: usize = 5;

impl Fetcher {
    /// Builds a client that sends `user_agent`.
    pub fn new(user_agent: &str) -> Result<Self, FetchError> {
        let client = reqwest::Client::builder()
            .user_agent(user_agent)
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
            .build()
            .map_err(|e| FetchError::Client(chain(&e)))?;
        Ok(Self { client })
    }

    /// Fetches `location` within `limits`.
    pub async fn fetch(
        &self,
        location: &SourceLocation,
        limits: Limits,
    ) -> Result<Fetched, FetchError> {
        let work = async {
            match location {
                SourceLocation::Http(url) => self.fetch_http(url, limits.max_body).await,
                SourceLocation::File(path) => fetch_file(path, limits.max_body).await,
            }
        };
        tokio::time::timeout(limits.timeout, work)
            .await
            .map_err(|_| FetchError::Timeout(limits.timeout))?
    }

    async fn fetch_http(&self, url: &Url, max_body: u64) -> Result<Fetched, FetchError> {
        let response = self
            .client
            .get(url.clone())
            .header(
                reqwest::header::ACCEPT,
                "application/atom+xml, application/rss+xml, application/feed+json, \
                 application/xml;q=0.9, text/xml;q=0.9, application/json;q=0.8, */*;q=0.5",
            )
            .send()
            .await
            .map_err(|e| FetchError::Request(chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status {
                status: status.as_u16(),
            });
        }
        let header = |name: reqwest::header::HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header(reqwest::header::CONTENT_TYPE);
        let content_language = header(reqwest::header::CONTENT_LANGUAGE);
        let final_url = response.url().clone();
        if response.content_length().is_some_and(|len| len > max_body) {
            return Err(FetchError::TooLarge { limit: max_body });
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| FetchError::Request(chain(&e)))?;
            if (body.len() + chunk.len()) as u64 > max_body {
                return Err(FetchError::TooLarge { limit: max_body });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched {
            body,
            content_type,
            content_language,
            final_url: Some(final_url),
            status: Some(status.as_u16()),
        })
    }
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
    Ok(Fetched {
        body,
        content_type: None,
        content_language: None,
        final_url: Url::from_file_path(path).ok(),
        status: None,
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

    #[tokio::test]
    async fn file_fetch_respects_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("feed.xml");
        std::fs::write(&path, vec![b'x'; 100]).unwrap();
        let fetcher = Fetcher::new("test").unwrap();
        let location = SourceLocation::File(path.clone());
        let ok = fetcher
            .fetch(
                &location,
                Limits {
                    timeout: Duration::from_secs(5),
                    max_body: 100,
                },
            )
            .await
            .unwrap();
        assert_eq!(ok.body.len(), 100);
        let err = fetcher
            .fetch(
                &location,
                Limits {
                    timeout: Duration::from_secs(5),
                    max_body: 99,
                },
            )
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "body larger than 99 bytes");
        let missing = SourceLocation::File(dir.path().join("missing.xml"));
        let err = fetcher
            .fetch(
                &missing,
                Limits {
                    timeout: Duration::from_secs(5),
                    max_body: 99,
                },
            )
            .await
            .unwrap_err();
        assert!(err.to_string().starts_with("cannot read "), "{err}");
    }
}
