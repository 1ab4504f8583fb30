//! What systemd sees of the real binary: the notify protocol on a socket
//! this test binds as systemd would (READY, WATCHDOG while it runs,
//! RELOADING then READY on SIGHUP, STOPPING on SIGTERM), and the log lines
//! on stderr (JSON with `--log-format json`, no timestamps when stderr is
//! the journal stream, the level from `[log]` or `FEEDMERGE_LOG`).

use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::BIN;

const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/samples");

fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

/// A config with one file source, listening on `port`, logging at `level`.
fn write_config(dir: &Path, port: u16, level: &str) -> std::path::PathBuf {
    let path = dir.join("feedmerge.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[storage]\npath = \"store\"\n\
             [log]\nlevel = \"{level}\"\n\
             [[sources]]\nname = \"ar\"\nurl = \"file://{SAMPLES}/centcom-ar.xml\"\n"
        ),
    )
    .unwrap();
    path
}

/// The lines systemd would have received, in order, as they come.
struct Notifications {
    socket: UnixDatagram,
    seen: Vec<String>,
}

impl Notifications {
    fn bind(path: &Path) -> Self {
        let socket = UnixDatagram::bind(path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Self {
            socket,
            seen: Vec::new(),
        }
    }

    /// Reads until a line equal to `line` arrives (up to 20 s); returns the
    /// lines that came before it.
    fn until(&mut self, line: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut before = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            let Ok(n) = self.socket.recv(&mut buf) else {
                continue;
            };
            for got in String::from_utf8_lossy(&buf[..n]).lines() {
                self.seen.push(got.to_string());
                if got == line {
                    return before;
                }
                before.push(got.to_string());
            }
        }
        panic!("no {line} in 20 s; systemd was told: {:?}", self.seen);
    }
}

fn signal(child: &Child, name: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

#[test]
fn systemd_hears_ready_watchdog_pings_reloading_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, "warn");
    let log_path = dir.path().join("stderr");
    let socket = dir.path().join("notify.sock");
    let mut notes = Notifications::bind(&socket);
    // systemd names the main process in WATCHDOG_PID; a shell that execs
    // the daemon knows that pid before the daemon starts.
    let mut child = Command::new("sh")
        .args([
            "-c",
            "WATCHDOG_PID=$$ exec \"$0\" run --config \"$1\"",
            BIN,
            config.to_str().unwrap(),
        ])
        .env("NOTIFY_SOCKET", &socket)
        // Pings every 200 ms.
        .env("WATCHDOG_USEC", "400000")
        .env_remove("FEEDMERGE_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();

    let before_ready = notes.until("READY=1");
    assert!(before_ready.is_empty(), "before READY=1: {before_ready:?}");
    for _ in 0..3 {
        notes.until("WATCHDOG=1");
    }

    // The reload also puts the file's new log level in force.
    let log = || std::fs::read_to_string(&log_path).unwrap();
    assert!(!log().contains("INFO"), "{}", log());
    write_config(dir.path(), port, "info");
    signal(&child, "HUP");
    notes.until("RELOADING=1");
    let during_reload = notes.until("READY=1");
    assert!(
        during_reload.iter().all(|l| l == "WATCHDOG=1"),
        "between RELOADING=1 and READY=1: {during_reload:?}"
    );
    notes.until("WATCHDOG=1");
    assert!(log().contains("config reloaded"), "{}", log());

    signal(&child, "TERM");
    notes.until("STOPPING=1");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "exit after SIGTERM");
}

#[test]
fn no_watchdog_pings_when_systemd_names_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), free_port(), "warn");
    let socket = dir.path().join("notify.sock");
    let mut notes = Notifications::bind(&socket);
    let mut child = Command::new(BIN)
        .args(["run", "--config", config.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &socket)
        .env("WATCHDOG_USEC", "400000")
        // This test's own pid: the watchdog is for a parent, not for us.
        .env("WATCHDOG_PID", std::process::id().to_string())
        .env_remove("FEEDMERGE_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    notes.until("READY=1");
    // Four ping intervals, then stop: nothing but STOPPING=1 may come.
    std::thread::sleep(Duration::from_millis(800));
    signal(&child, "TERM");
    let between = notes.until("STOPPING=1");
    assert!(between.is_empty(), "after READY=1: {between:?}");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// Runs `feedmerge [args] fetch` on a one-source config at `level` with
/// `env` set, stderr into a file; returns stderr's lines.
fn fetch_log(args: &[&str], level: &str, env: &[(&str, &str)], journal: Journal) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), free_port(), level);
    let log_path = dir.path().join("stderr");
    let log = std::fs::File::create(&log_path).unwrap();
    let meta = log.metadata().unwrap();
    let mut command = Command::new(BIN);
    command
        .args(args)
        .args(["fetch", "--config", config.to_str().unwrap()])
        .env_remove("FEEDMERGE_LOG")
        .env_remove("JOURNAL_STREAM")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(log);
    match journal {
        Journal::IsStderr => {
            command.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
        }
        Journal::IsElsewhere => {
            command.env(
                "JOURNAL_STREAM",
                format!("{}:{}", meta.dev(), meta.ino() + 1),
            );
        }
        Journal::None => {}
    }
    let status = command.status().unwrap();
    assert!(status.success());
    std::fs::read_to_string(&log_path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Where `JOURNAL_STREAM` points.
#[derive(Clone, Copy)]
enum Journal {
    /// Unset.
    None,
    /// At stderr: systemd connected stderr to journald.
    IsStderr,
    /// At another stream: stderr was redirected since.
    IsElsewhere,
}

/// Whether `line` starts with an RFC 3339 UTC time (`2025-01-02T03:04:05`).
fn stamped(line: &str) -> bool {
    let head: Vec<char> = line.chars().take(20).collect();
    head.len() == 20 && head[4] == '-' && head[10] == 'T' && head[13] == ':' && head[19] == '.'
}

#[test]
fn log_lines_are_json_with_log_format_json() {
    let lines = fetch_log(&["--log-format", "json"], "info", &[], Journal::None);
    assert!(!lines.is_empty());
    for line in &lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(value["level"].is_string(), "{line}");
        assert!(value["timestamp"].is_string(), "{line}");
    }
    assert!(
        lines.iter().any(|l| l.contains(r#""message":"poll done""#)),
        "{lines:?}"
    );
}

#[test]
fn journald_stamps_the_lines_when_stderr_is_the_journal_stream() {
    let journal = fetch_log(&[], "info", &[], Journal::IsStderr);
    assert!(!journal.is_empty());
    for line in &journal {
        assert!(line.trim_start().starts_with("INFO"), "{line}");
    }
    let json = fetch_log(&["--log-format", "json"], "info", &[], Journal::IsStderr);
    for line in &json {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(value.get("timestamp").is_none(), "{line}");
    }
    // A redirected stderr is no longer the journal: lines keep their time.
    for line in fetch_log(&[], "info", &[], Journal::IsElsewhere) {
        assert!(stamped(&line), "{line}");
    }
    for line in fetch_log(&[], "info", &[], Journal::None) {
        assert!(stamped(&line), "{line}");
    }
}

#[test]
fn the_config_sets_the_log_level_and_feedmerge_log_overrides_it() {
    let quiet = fetch_log(&[], "warn", &[], Journal::None);
    assert!(quiet.is_empty(), "{quiet:?}");
    let loud = fetch_log(&[], "warn", &[("FEEDMERGE_LOG", "info")], Journal::None);
    assert!(loud.iter().any(|l| l.contains("poll done")), "{loud:?}");
    let targeted = fetch_log(&[], "warn,feedmerge::poll=info", &[], Journal::None);
    assert!(
        targeted.iter().any(|l| l.contains("poll done")),
        "{targeted:?}"
    );
}
