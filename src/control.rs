//! The local control channel: HTTP over a Unix socket (mode 0600) inside
//! the store's directory, so the CLI works the same whether or not a daemon
//! holds the store. `fetch`, `export`, `sources`, `explain` and `reload`
//! ask the daemon here when the store is locked; the public listener gains
//! no route that changes anything.
//!
//! Only the daemon's user can open the socket (its mode, and the store
//! directory's); nothing on it is reachable over the network.

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::Router;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

/// The socket's file name, inside the store directory.
const SOCKET_NAME: &str = "control.sock";

/// Longest wait for the daemon's answer (a `fetch` of every source can
/// take as long as the slowest source's timeout, and more).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(600);

/// Why the daemon could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No daemon listens on the socket.
    #[error("the store is locked, but no daemon answers on {}: {source}", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why the connection failed.
        source: std::io::Error,
    },
    /// The exchange failed midway.
    #[error("asking the daemon on {}: {message}", path.display())]
    Exchange {
        /// The socket.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The daemon refused the request, saying why.
    #[error("{0}")]
    Refused(String),
}

/// Where the control socket of the store at `store` is.
pub fn socket_path(store: &Path) -> PathBuf {
    store.join(SOCKET_NAME)
}

/// Serves `router` on the control socket of the store at `store` until
/// `shutdown`. A socket file left by a daemon that died is replaced: the
/// store's lock, held by the caller, says no other daemon uses it.
pub async fn serve(
    store: &Path,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let path = socket_path(store);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = tokio::net::UnixListener::bind(&path)?;
    set_owner_only(&path)?;
    let result = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    let _ = std::fs::remove_file(&path);
    result
}

#[cfg(unix)]
fn set_owner_only(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn set_owner_only(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

/// Sends `method path` to the daemon of the store at `store` and returns
/// the body of a 2xx answer; any other answer is [`ControlError::Refused`]
/// with the daemon's text.
pub async fn ask(store: &Path, method: &str, path: &str) -> Result<Vec<u8>, ControlError> {
    let socket = socket_path(store);
    let exchange = |message: String| ControlError::Exchange {
        path: socket.clone(),
        message,
    };
    let stream = tokio::net::UnixStream::connect(&socket)
        .await
        .map_err(|source| ControlError::Connect {
            path: socket.clone(),
            source,
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| exchange(e.to_string()))?;
    let driver = tokio::spawn(connection);
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "feedmerge")
        .body(Empty::<Bytes>::new())
        .map_err(|e| exchange(e.to_string()))?;
    let answer = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| exchange(e.to_string()))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| exchange(e.to_string()))?
            .to_bytes()
            .to_vec();
        Ok::<_, ControlError>((status, body))
    };
    let (status, body) = tokio::time::timeout(ANSWER_TIMEOUT, answer)
        .await
        .map_err(|_| exchange(format!("no answer in {} s", ANSWER_TIMEOUT.as_secs())))??;
    driver.abort();
    if status.is_success() {
        Ok(body)
    } else {
        Err(ControlError::Refused(
            String::from_utf8_lossy(&body).trim().to_string(),
        ))
    }
}
