//! The configuration file: serde TOML structs, checked into a [`Config`].
//!
//! Every error names the file, the line and column, and the key at fault
//! (`config/feedmerge.toml:12:8: sources[1].name: ...`). Unknown keys are
//! errors. Paths in the file are relative to the file's own directory.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;
use toml::Spanned;
use url::Url;

use crate::filter::{EntryFilter, FilterKey};
use crate::schedule;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read config: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The file was read but is not a valid configuration.
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// 1-based line of the offending key or value.
        line: usize,
        /// 1-based column of the offending key or value.
        column: usize,
        /// What is wrong, naming the key.
        message: String,
    },
}

/// A checked configuration, ready for the daemon.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file this configuration was read from.
    pub path: PathBuf,
    /// The HTTP server.
    pub server: ServerConfig,
    /// The sled store.
    pub storage: StorageConfig,
    /// The merged feed.
    pub feed: MergedFeedConfig,
    /// How polling is paced and limited.
    pub poll: PollConfig,
    /// Which deduplication layers run, and how.
    pub dedup: DedupConfig,
    /// What one fetched document may bring in (`[intake]`).
    pub intake: crate::parse::Limits,
    /// How long entries are kept.
    pub retention: RetentionConfig,
    /// Defaults for every source.
    pub defaults: Defaults,
    /// The polled sources, in file order.
    pub sources: Vec<SourceConfig>,
    /// More published feeds, selected by tags.
    pub feeds: Vec<OutputFeedConfig>,
    /// Logging.
    pub log: LogConfig,
}

/// Logging settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// What is logged, as `tracing_subscriber::EnvFilter` directives
    /// (`"info"`, `"warn,feedmerge::poll=debug"`); `FEEDMERGE_LOG`, when
    /// set, takes its place.
    pub level: String,
    /// Whether the file sets `level` (else it is the default): the
    /// one-shot commands log at warn unless it does.
    pub level_set: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: DEFAULT_LOG_LEVEL.to_string(),
            level_set: false,
        }
    }
}

/// Where and how the HTTP server listens.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Socket address to bind.
    pub listen: SocketAddr,
    /// Public base URL for self links; always ends with `/`.
    pub base_url: Option<Url>,
    /// Longest wait for a request's headers, from the first byte awaited;
    /// it also closes idle keep-alive connections.
    pub header_read_timeout: Duration,
    /// Longest time to answer one request.
    pub request_timeout: Duration,
    /// Most connections open at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Whether a change to the config file on disk reloads it, as SIGHUP
    /// does.
    pub watch_config: bool,
}

impl ServerConfig {
    /// The keys of this section a running daemon cannot change: the
    /// listener is bound and configured once.
    pub fn needs_restart(&self, new: &ServerConfig) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.listen != new.listen {
            keys.push("server.listen");
        }
        if self.header_read_timeout != new.header_read_timeout {
            keys.push("server.header_read_timeout");
        }
        if self.request_timeout != new.request_timeout {
            keys.push("server.request_timeout");
        }
        if self.max_connections != new.max_connections {
            keys.push("server.max_connections");
        }
        keys
    }
}

/// The sled store's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageConfig {
    /// The sled directory, absolute.
    pub path: PathBuf,
    /// sled's page cache size in bytes.
    pub cache_capacity: u64,
}

/// The merged feed served at `/feed.atom`.
#[derive(Debug, Clone, PartialEq)]
pub struct MergedFeedConfig {
    /// Feed title.
    pub title: String,
    /// Most entries in one published document.
    pub max_entries: usize,
    /// How long readers and proxies may reuse a published document
    /// (`Cache-Control: max-age`).
    pub max_age: Duration,
    /// Whether published links drop `[dedup] tracking_params` (the rest of
    /// the URL is kept as the publisher wrote it).
    pub clean_links: bool,
    /// A WebSub hub: every feed names it (`rel="hub"`), and the daemon
    /// tells it when a feed changes. Needs `server.base_url`.
    pub websub_hub: Option<Url>,
}

/// How polling is paced and limited, across all sources.
#[derive(Debug, Clone, PartialEq)]
pub struct PollConfig {
    /// Most fetches in flight at once.
    pub max_in_flight: usize,
    /// Most fetches in flight to one host at once.
    pub per_host: usize,
    /// A scheduled poll starts up to this long after its cron time (a fixed
    /// offset per source), so sources sharing a schedule spread out.
    pub jitter: Duration,
    /// Longest wait after failures (exponential backoff cap).
    pub max_backoff: Duration,
    /// Whether any host may be a private or local address. Off by default:
    /// only hosts written in the sources' URLs may be, so a redirect or a
    /// stored move cannot reach the operator's network.
    pub allow_private_networks: bool,
}

/// Deduplication settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DedupConfig {
    /// Within one source, an entry whose id changed but whose canonical link
    /// did not is the same entry.
    pub same_link: bool,
    /// Across sources, entries with the same canonical link are one story.
    pub canonical_urls: bool,
    /// Across sources, near-duplicate texts are one story.
    pub near_duplicates: bool,
    /// Query parameters dropped from canonical links (`*` ends a prefix).
    pub tracking_params: Vec<String>,
    /// Near-duplicates are only looked for among entries published this
    /// close in time.
    pub window: Duration,
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self {
            same_link: true,
            canonical_urls: true,
            near_duplicates: true,
            tracking_params: crate::dedup::default_tracking(),
            window: Duration::from_secs(3 * 24 * 3600),
        }
    }
}

impl DedupConfig {
    /// The story rules the store applies.
    pub fn rules(&self) -> crate::dedup::Rules {
        crate::dedup::Rules {
            same_link: self.same_link,
            canonical_urls: self.canonical_urls,
            near_duplicates: self.near_duplicates,
            // A century is forever here, and keeps date arithmetic in range.
            window: chrono::Duration::from_std(self.window.min(CENTURY))
                .unwrap_or(chrono::Duration::days(3)),
        }
    }
}

/// Retention settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionConfig {
    /// Entries first seen longer ago than this are pruned.
    pub max_age: Duration,
    /// Most entries kept per source (the newest).
    pub max_per_source: usize,
    /// Most entries kept in all.
    pub max_total: usize,
    /// How long a pruned entry's tombstone keeps it from coming back.
    pub tombstone_age: Duration,
    /// How often the daemon prunes.
    pub every: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        let day = Duration::from_secs(24 * 3600);
        Self {
            max_age: 90 * day,
            max_per_source: 2_000,
            max_total: 200_000,
            tombstone_age: 180 * day,
            every: Duration::from_secs(3600),
        }
    }
}

/// Values every source gets unless it overrides them.
#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    /// Six-field cron expression (seconds first).
    pub schedule: String,
    /// Total time allowed for one fetch.
    pub timeout: Duration,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Largest body read, in bytes.
    pub max_body_size: u64,
    /// `User-Agent` header sent with every request.
    pub user_agent: String,
    /// Whether RSS `<ttl>` and `Cache-Control: max-age` delay the next poll.
    pub respect_ttl: bool,
}

/// Where a source's document comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceLocation {
    /// Fetched over HTTP(S).
    Http(Url),
    /// Read from a local file.
    File(PathBuf),
}

impl SourceLocation {
    /// The location as a URL (for `file` sources, a `file://` URL), used as
    /// the document's base when resolving relative links.
    pub fn url(&self) -> Option<Url> {
        match self {
            SourceLocation::Http(url) => Some(url.clone()),
            SourceLocation::File(path) => Url::from_file_path(path).ok(),
        }
    }
}

impl std::fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceLocation::Http(url) => write!(f, "{url}"),
            SourceLocation::File(path) => write!(f, "file://{}", path.display()),
        }
    }
}

/// One polled source.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceConfig {
    /// Unique name, `[a-z0-9-]+`.
    pub name: String,
    /// Where the feed is read from.
    pub location: SourceLocation,
    /// Six-field cron expression (seconds first).
    pub schedule: String,
    /// Tags that select this source into `[[feeds]]` outputs.
    pub tags: Vec<String>,
    /// Total time allowed for one fetch.
    pub timeout: Duration,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Largest body read, in bytes.
    pub max_body_size: u64,
    /// `User-Agent` header for this source.
    pub user_agent: String,
    /// Whether RSS `<ttl>` and `Cache-Control: max-age` delay the next poll.
    pub respect_ttl: bool,
    /// Extra request headers (values may be secrets: never log them).
    pub headers: Vec<(String, String)>,
    /// Whether the source's URL appears in published feeds (its
    /// `atom:source` self link). Userinfo is never published either way.
    pub publish_url: bool,
    /// Which of the source's entries are taken in (`include`, `exclude`,
    /// `match`); the others are dropped before they are stored.
    pub filter: EntryFilter,
}

/// One more published feed, served at `/feeds/NAME.atom`.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputFeedConfig {
    /// Unique name, `[a-z0-9-]+`.
    pub name: String,
    /// Feed title.
    pub title: String,
    /// Entries of sources carrying any of these tags are included.
    pub tags: Vec<String>,
    /// Entries of these sources are included too (by name).
    pub sources: Vec<String>,
    /// Most entries in one published document.
    pub max_entries: usize,
    /// Which of the selected sources' entries the feed shows (`include`,
    /// `exclude`, `match`).
    pub filter: EntryFilter,
}

impl Config {
    /// The configured source called `name`.
    pub fn source(&self, name: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.name == name)
    }

    /// The configured output feed called `name`.
    pub fn output_feed(&self, name: &str) -> Option<&OutputFeedConfig> {
        self.feeds.iter().find(|f| f.name == name)
    }
}

/// The default `User-Agent`.
pub fn default_user_agent() -> String {
    format!(
        "feedmerge/{} (+{})",
        env!("CARGO_PKG_VERSION"),
        env!("CARGO_PKG_REPOSITORY")
    )
}

// ---- the file as written --------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    storage: RawStorage,
    #[serde(default)]
    feed: RawMergedFeed,
    #[serde(default)]
    poll: RawPoll,
    #[serde(default)]
    dedup: RawDedup,
    #[serde(default)]
    intake: RawIntake,
    #[serde(default)]
    retention: RawRetention,
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    sources: Vec<RawSource>,
    #[serde(default)]
    feeds: Vec<RawOutputFeed>,
    #[serde(default)]
    log: RawLog,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    /// EnvFilter directives; default "info".
    level: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    /// Socket address to bind; default `127.0.0.1:8080`.
    listen: Option<Spanned<String>>,
    /// Public base URL for self links.
    base_url: Option<Spanned<String>>,
    #[serde(default, with = "humantime_serde")]
    header_read_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    request_timeout: Option<Duration>,
    max_connections: Option<Spanned<usize>>,
    watch_config: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    /// sled directory, relative to the config file.
    path: String,
    /// sled page cache; default 16 MiB.
    cache_size: Option<ByteSize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMergedFeed {
    /// Feed title; default "feedmerge".
    title: Option<String>,
    /// Most entries per document; default 200.
    max_entries: Option<Spanned<usize>>,
    /// `Cache-Control: max-age` of published documents; default 5 min.
    #[serde(default, with = "humantime_serde")]
    max_age: Option<Duration>,
    /// Drop tracking parameters from published links; default true.
    clean_links: Option<bool>,
    /// WebSub hub URL; default none.
    websub_hub: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPoll {
    max_in_flight: Option<Spanned<usize>>,
    per_host: Option<Spanned<usize>>,
    #[serde(default, with = "humantime_serde")]
    jitter: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    max_backoff: Option<Duration>,
    allow_private_networks: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDedup {
    same_link: Option<bool>,
    canonical_urls: Option<bool>,
    near_duplicates: Option<bool>,
    tracking_params: Option<Vec<String>>,
    #[serde(default, with = "humantime_serde")]
    window: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIntake {
    max_depth: Option<Spanned<usize>>,
    max_entries: Option<Spanned<usize>>,
    max_title: Option<Spanned<ByteSize>>,
    max_text: Option<Spanned<ByteSize>>,
    max_url: Option<Spanned<ByteSize>>,
    max_list: Option<Spanned<usize>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    #[serde(default, with = "humantime_serde")]
    max_age: Option<Duration>,
    max_per_source: Option<Spanned<usize>>,
    max_total: Option<Spanned<usize>>,
    #[serde(default, with = "humantime_serde")]
    tombstone_age: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    every: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    /// Cron schedule; default every 15 minutes.
    schedule: Option<Spanned<String>>,
    /// Fetch timeout; default 30 s.
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    connect_timeout: Option<Duration>,
    respect_ttl: Option<bool>,
    /// Body cap; default 10 MiB.
    max_body_size: Option<ByteSize>,
    /// User-Agent; default names feedmerge and its version.
    user_agent: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    name: Spanned<String>,
    url: Spanned<String>,
    schedule: Option<Spanned<String>>,
    #[serde(default)]
    tags: Vec<Spanned<String>>,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    connect_timeout: Option<Duration>,
    max_body_size: Option<ByteSize>,
    user_agent: Option<String>,
    respect_ttl: Option<bool>,
    #[serde(default)]
    headers: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    headers_from_env: BTreeMap<String, Spanned<String>>,
    publish_url: Option<bool>,
    /// Regexes an entry must match one of (when any are given).
    include: Option<Spanned<Vec<Spanned<String>>>>,
    /// Regexes an entry matching any of is dropped.
    exclude: Option<Spanned<Vec<Spanned<String>>>>,
    /// The fields the regexes look at; default all.
    #[serde(rename = "match")]
    fields: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutputFeed {
    name: Spanned<String>,
    title: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    /// Sources included by name, besides those the tags select.
    #[serde(default)]
    sources: Vec<Spanned<String>>,
    max_entries: Option<Spanned<usize>>,
    /// As in `[[sources]]`.
    include: Option<Spanned<Vec<Spanned<String>>>>,
    /// As in `[[sources]]`.
    exclude: Option<Spanned<Vec<Spanned<String>>>>,
    /// As in `[[sources]]`.
    #[serde(rename = "match")]
    fields: Option<Spanned<Vec<Spanned<String>>>>,
}

/// The longest window the story rules use.
const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_MAX_CONNECTIONS: usize = 512;
const DEFAULT_SCHEDULE: &str = "0 */15 * * * *";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_MAX_IN_FLIGHT: usize = 32;
const DEFAULT_PER_HOST: usize = 2;
/// Default `[feed] max_age`: readers may reuse a document for 5 minutes.
const DEFAULT_FEED_MAX_AGE: Duration = Duration::from_secs(300);
const DEFAULT_JITTER: Duration = Duration::from_secs(30);
const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_MAX_BODY: u64 = 10 * 1024 * 1024;
const DEFAULT_CACHE: u64 = 16 * 1024 * 1024;
const DEFAULT_MAX_ENTRIES: usize = 200;
const DEFAULT_LOG_LEVEL: &str = "info";

/// Reads and checks the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Checks configuration `text`, read from `path` (used for error messages
/// and to resolve relative paths).
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let located = |start: usize, message: String| {
        let (line, column) = line_column(text, start);
        ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            column,
            message,
        }
    };
    let raw: RawConfig = toml::from_str(text).map_err(|err| {
        let start = err.span().map(|s| s.start).unwrap_or(0);
        located(start, err.message().trim().to_string())
    })?;
    // Paths in the file are relative to the file; made absolute (without
    // touching the disk) so logs and status show where things really are.
    let parent = path.parent().unwrap_or(Path::new(""));
    let base_dir = std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf());

    let listen = match &raw.server.listen {
        Some(s) => s.get_ref().parse::<SocketAddr>().map_err(|e| {
            located(
                s.span().start,
                format!("server.listen: {e}: {:?} (want HOST:PORT)", s.get_ref()),
            )
        })?,
        None => DEFAULT_LISTEN
            .parse()
            .map_err(|e| located(0, format!("server.listen default: {e}")))?,
    };
    let base_url = match &raw.server.base_url {
        Some(s) => {
            let mut text = s.get_ref().clone();
            if !text.ends_with('/') {
                text.push('/');
            }
            let url = Url::parse(&text)
                .map_err(|e| located(s.span().start, format!("server.base_url: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(located(
                    s.span().start,
                    "server.base_url: must be an http:// or https:// URL".into(),
                ));
            }
            Some(url)
        }
        None => None,
    };

    let websub_hub = match &raw.feed.websub_hub {
        Some(s) => {
            let at = s.span().start;
            let url = Url::parse(s.get_ref())
                .map_err(|e| located(at, format!("feed.websub_hub: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(located(
                    at,
                    "feed.websub_hub: must be an http:// or https:// URL".into(),
                ));
            }
            if base_url.is_none() {
                return Err(located(
                    at,
                    "feed.websub_hub: needs server.base_url, the feeds' public address the hub is told"
                        .into(),
                ));
            }
            Some(url)
        }
        None => None,
    };

    let defaults = Defaults {
        schedule: match &raw.defaults.schedule {
            Some(s) => checked_schedule(s, "defaults.schedule", &located)?,
            None => DEFAULT_SCHEDULE.to_string(),
        },
        timeout: raw.defaults.timeout.unwrap_or(DEFAULT_TIMEOUT),
        connect_timeout: raw
            .defaults
            .connect_timeout
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        respect_ttl: raw.defaults.respect_ttl.unwrap_or(true),
        max_body_size: raw
            .defaults
            .max_body_size
            .map(|b| b.as_u64())
            .unwrap_or(DEFAULT_MAX_BODY),
        user_agent: raw
            .defaults
            .user_agent
            .clone()
            .unwrap_or_else(default_user_agent),
    };

    let at_least_one = |value: &Option<Spanned<usize>>, key: &str, default: usize| match value {
        Some(v) if *v.get_ref() == 0 => Err(located(
            v.span().start,
            format!("{key}: must be at least 1"),
        )),
        Some(v) => Ok(*v.get_ref()),
        None => Ok(default),
    };
    let poll = PollConfig {
        max_in_flight: at_least_one(
            &raw.poll.max_in_flight,
            "poll.max_in_flight",
            DEFAULT_MAX_IN_FLIGHT,
        )?,
        per_host: at_least_one(&raw.poll.per_host, "poll.per_host", DEFAULT_PER_HOST)?,
        jitter: raw.poll.jitter.unwrap_or(DEFAULT_JITTER),
        max_backoff: raw.poll.max_backoff.unwrap_or(DEFAULT_MAX_BACKOFF),
        allow_private_networks: raw.poll.allow_private_networks.unwrap_or(false),
    };

    let dedup_defaults = DedupConfig::default();
    let dedup = DedupConfig {
        same_link: raw.dedup.same_link.unwrap_or(dedup_defaults.same_link),
        canonical_urls: raw
            .dedup
            .canonical_urls
            .unwrap_or(dedup_defaults.canonical_urls),
        near_duplicates: raw
            .dedup
            .near_duplicates
            .unwrap_or(dedup_defaults.near_duplicates),
        tracking_params: raw
            .dedup
            .tracking_params
            .clone()
            .map(|list| list.iter().map(|p| p.to_ascii_lowercase()).collect())
            .unwrap_or(dedup_defaults.tracking_params),
        window: raw.dedup.window.unwrap_or(dedup_defaults.window),
    };
    let bytes = |value: &Option<Spanned<ByteSize>>, key: &str, default: usize| match value {
        Some(v) if v.get_ref().as_u64() == 0 => Err(located(
            v.span().start,
            format!("{key}: must be at least 1 byte"),
        )),
        Some(v) => Ok(usize::try_from(v.get_ref().as_u64()).unwrap_or(usize::MAX)),
        None => Ok(default),
    };
    let intake_defaults = crate::parse::Limits::default();
    let intake = crate::parse::Limits {
        max_depth: at_least_one(
            &raw.intake.max_depth,
            "intake.max_depth",
            intake_defaults.max_depth,
        )?,
        max_entries: at_least_one(
            &raw.intake.max_entries,
            "intake.max_entries",
            intake_defaults.max_entries,
        )?,
        max_title: bytes(
            &raw.intake.max_title,
            "intake.max_title",
            intake_defaults.max_title,
        )?,
        max_text: bytes(
            &raw.intake.max_text,
            "intake.max_text",
            intake_defaults.max_text,
        )?,
        max_url: bytes(
            &raw.intake.max_url,
            "intake.max_url",
            intake_defaults.max_url,
        )?,
        max_list: at_least_one(
            &raw.intake.max_list,
            "intake.max_list",
            intake_defaults.max_list,
        )?,
    };
    let kept = RetentionConfig::default();
    let retention = RetentionConfig {
        max_age: raw.retention.max_age.unwrap_or(kept.max_age),
        max_per_source: at_least_one(
            &raw.retention.max_per_source,
            "retention.max_per_source",
            kept.max_per_source,
        )?,
        max_total: at_least_one(
            &raw.retention.max_total,
            "retention.max_total",
            kept.max_total,
        )?,
        tombstone_age: raw.retention.tombstone_age.unwrap_or(kept.tombstone_age),
        every: raw
            .retention
            .every
            .unwrap_or(kept.every)
            .max(Duration::from_secs(1)),
    };

    let mut names = HashSet::new();
    let mut sources = Vec::with_capacity(raw.sources.len());
    for (i, s) in raw.sources.iter().enumerate() {
        let key = format!("sources[{i}]");
        let name = checked_name(&s.name, &format!("{key}.name"), &located)?;
        if !names.insert(name.clone()) {
            return Err(located(
                s.name.span().start,
                format!("{key}.name: source {name:?} is defined twice"),
            ));
        }
        let location = checked_location(&s.url, &format!("{key}.url"), &base_dir, &located)?;
        let schedule = match &s.schedule {
            Some(sch) => checked_schedule(sch, &format!("{key}.schedule"), &located)?,
            None => defaults.schedule.clone(),
        };
        for tag in &s.tags {
            if tag.get_ref().trim().is_empty() {
                return Err(located(tag.span().start, format!("{key}.tags: empty tag")));
            }
        }
        let mut headers = Vec::new();
        for (header, value) in &s.headers {
            let key = format!("{key}.headers.{header}");
            checked_header(header, value.get_ref(), value.span().start, &key, &located)?;
            headers.push((header.clone(), value.get_ref().clone()));
        }
        for (header, var) in &s.headers_from_env {
            let key = format!("{key}.headers_from_env.{header}");
            let at = var.span().start;
            let value = std::env::var(var.get_ref()).map_err(|_| {
                located(
                    at,
                    format!("{key}: environment variable {:?} is not set", var.get_ref()),
                )
            })?;
            checked_header(header, &value, at, &key, &located)?;
            headers.push((header.clone(), value));
        }
        if let Some(ua) = &s.user_agent {
            checked_header(
                "user-agent",
                ua,
                s.name.span().start,
                &format!("{key}.user_agent"),
                &located,
            )?;
        }
        sources.push(SourceConfig {
            name,
            location,
            schedule,
            tags: s.tags.iter().map(|t| t.get_ref().clone()).collect(),
            timeout: s.timeout.unwrap_or(defaults.timeout),
            connect_timeout: s.connect_timeout.unwrap_or(defaults.connect_timeout),
            max_body_size: s
                .max_body_size
                .map(|b| b.as_u64())
                .unwrap_or(defaults.max_body_size),
            user_agent: s
                .user_agent
                .clone()
                .unwrap_or_else(|| defaults.user_agent.clone()),
            respect_ttl: s.respect_ttl.unwrap_or(defaults.respect_ttl),
            headers,
            publish_url: s.publish_url.unwrap_or(true),
            filter: checked_filter([&s.include, &s.exclude, &s.fields], &key, &located)?,
        });
    }

    let max_entries =
        |value: &Option<Spanned<usize>>, key: &str| at_least_one(value, key, DEFAULT_MAX_ENTRIES);

    let mut feed_names = HashSet::new();
    let mut feeds = Vec::with_capacity(raw.feeds.len());
    for (i, f) in raw.feeds.iter().enumerate() {
        let key = format!("feeds[{i}]");
        let name = checked_name(&f.name, &format!("{key}.name"), &located)?;
        if !feed_names.insert(name.clone()) {
            return Err(located(
                f.name.span().start,
                format!("{key}.name: feed {name:?} is defined twice"),
            ));
        }
        if f.tags.is_empty() && f.sources.is_empty() {
            return Err(located(
                f.name.span().start,
                format!("{key}: list at least one tag (tags) or source (sources)"),
            ));
        }
        let mut chosen = Vec::with_capacity(f.sources.len());
        for (j, source) in f.sources.iter().enumerate() {
            if !sources.iter().any(|s| &s.name == source.get_ref()) {
                return Err(located(
                    source.span().start,
                    format!(
                        "{key}.sources[{j}]: no source is named {:?}",
                        source.get_ref()
                    ),
                ));
            }
            chosen.push(source.get_ref().clone());
        }
        feeds.push(OutputFeedConfig {
            title: f.title.clone().unwrap_or_else(|| name.clone()),
            name,
            tags: f.tags.clone(),
            sources: chosen,
            max_entries: max_entries(&f.max_entries, &format!("{key}.max_entries"))?,
            filter: checked_filter([&f.include, &f.exclude, &f.fields], &key, &located)?,
        });
    }

    let log = match &raw.log.level {
        Some(level) => LogConfig {
            level: checked_log_level(level, &located)?,
            level_set: true,
        },
        None => LogConfig::default(),
    };

    Ok(Config {
        path: path.to_path_buf(),
        server: ServerConfig {
            listen,
            base_url,
            header_read_timeout: raw
                .server
                .header_read_timeout
                .unwrap_or(DEFAULT_HEADER_READ_TIMEOUT)
                .max(Duration::from_millis(100)),
            request_timeout: raw
                .server
                .request_timeout
                .unwrap_or(DEFAULT_REQUEST_TIMEOUT)
                .max(Duration::from_millis(100)),
            max_connections: at_least_one(
                &raw.server.max_connections,
                "server.max_connections",
                DEFAULT_MAX_CONNECTIONS,
            )?,
            watch_config: raw.server.watch_config.unwrap_or(false),
        },
        storage: StorageConfig {
            path: base_dir.join(&raw.storage.path),
            cache_capacity: raw
                .storage
                .cache_size
                .map(|b| b.as_u64())
                .unwrap_or(DEFAULT_CACHE),
        },
        feed: MergedFeedConfig {
            title: raw.feed.title.clone().unwrap_or_else(|| "feedmerge".into()),
            max_entries: max_entries(&raw.feed.max_entries, "feed.max_entries")?,
            max_age: raw.feed.max_age.unwrap_or(DEFAULT_FEED_MAX_AGE),
            clean_links: raw.feed.clean_links.unwrap_or(true),
            websub_hub,
        },
        poll,
        dedup,
        intake,
        retention,
        defaults,
        sources,
        feeds,
        log,
    })
}

/// Log levels a bare directive may name.
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Checks `log.level`: EnvFilter directives, where a directive without
/// `=` must be a level (EnvFilter would take a misspelt level for a
/// target and log nothing of it).
fn checked_log_level(
    level: &Spanned<String>,
    located: &impl Fn(usize, String) -> ConfigError,
) -> Result<String, ConfigError> {
    let at = level.span().start;
    let text = level.get_ref().trim();
    if text.is_empty() {
        return Err(located(
            at,
            format!("log.level: empty (want a level: {})", LEVELS.join(", ")),
        ));
    }
    for directive in text.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare = !directive.contains('=') && !directive.contains('[');
        if bare && !LEVELS.contains(&directive.to_ascii_lowercase().as_str()) {
            return Err(located(
                at,
                format!(
                    "log.level: {directive:?} is neither a level ({}) nor TARGET=LEVEL",
                    LEVELS.join(", ")
                ),
            ));
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(text)
        .map_err(|e| located(at, format!("log.level: {e}: {text:?}")))?;
    Ok(text.to_string())
}

/// A filter's three keys as written: `include`, `exclude`, `match`.
type RawFilter<'a> = [&'a Option<Spanned<Vec<Spanned<String>>>>; 3];

/// Checks and compiles the `include`, `exclude` and `match` keys of the
/// table at `key`; an error points at the pattern or field name at fault
/// (or at the list, when the list as a whole is).
fn checked_filter(
    [include, exclude, fields]: RawFilter<'_>,
    key: &str,
    located: &impl Fn(usize, String) -> ConfigError,
) -> Result<EntryFilter, ConfigError> {
    let items = |list: &Option<Spanned<Vec<Spanned<String>>>>| -> Vec<String> {
        list.iter()
            .flat_map(|l| l.get_ref())
            .map(|item| item.get_ref().clone())
            .collect()
    };
    let names = fields.as_ref().map(|_| items(fields));
    EntryFilter::new(&items(include), &items(exclude), names.as_deref()).map_err(|e| {
        let (which, index) = e.at();
        let list = match which {
            FilterKey::Include => include,
            FilterKey::Exclude => exclude,
            FilterKey::Match => fields,
        };
        let at = list.as_ref().map_or(0, |l| {
            index
                .and_then(|i| l.get_ref().get(i))
                .map_or(l.span().start, |item| item.span().start)
        });
        located(at, format!("{key}.{e}"))
    })
}

fn checked_header(
    name: &str,
    value: &str,
    at: usize,
    key: &str,
    located: &impl Fn(usize, String) -> ConfigError,
) -> Result<(), ConfigError> {
    if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(located(
            at,
            format!("{key}: {name:?} is not a valid header name"),
        ));
    }
    if reqwest::header::HeaderValue::from_str(value).is_err() {
        // Never echo the value: it may be a secret.
        return Err(located(
            at,
            format!("{key}: the value is not a valid header value"),
        ));
    }
    Ok(())
}

fn checked_name(
    name: &Spanned<String>,
    key: &str,
    located: &impl Fn(usize, String) -> ConfigError,
) -> Result<String, ConfigError> {
    let value = name.get_ref();
    let ok = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(value.clone())
    } else {
        Err(located(
            name.span().start,
            format!("{key}: {value:?} is not a valid name (use a-z, 0-9 and -)"),
        ))
    }
}

fn checked_schedule(
    schedule: &Spanned<String>,
    key: &str,
    located: &impl Fn(usize, String) -> ConfigError,
) -> Result<String, ConfigError> {
    schedule::validate_cron(schedule.get_ref())
        .map(|()| schedule.get_ref().clone())
        .map_err(|reason| located(schedule.span().start, format!("{key}: {reason}")))
}

fn checked_location(
    url: &Spanned<String>,
    key: &str,
    base_dir: &Path,
    located: &impl Fn(usize, String) -> ConfigError,
) -> Result<SourceLocation, ConfigError> {
    let text = url.get_ref().trim();
    let at = url.span().start;
    // `file:relative/path` (no `//`) is a path relative to the config file.
    if let Some(rest) = text.strip_prefix("file:") {
        if !rest.starts_with('/') && !rest.is_empty() {
            return Ok(SourceLocation::File(base_dir.join(rest)));
        }
    }
    let parsed = Url::parse(text).map_err(|e| located(at, format!("{key}: {e}: {text:?}")))?;
    match parsed.scheme() {
        "http" | "https" => Ok(SourceLocation::Http(parsed)),
        "file" => parsed
            .to_file_path()
            .map(SourceLocation::File)
            .map_err(|()| located(at, format!("{key}: {text:?} is not a local file path"))),
        other => Err(located(
            at,
            format!("{key}: unsupported scheme {other:?} (use http, https or file)"),
        )),
    }
}

/// 1-based line and column of byte offset `at` in `text`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map(|nl| before[nl + 1..].chars().count() + 1)
        .unwrap_or_else(|| before.chars().count() + 1);
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_err(text: &str, expected: &str) {
        let err = parse(text, Path::new("conf/x.toml"))
            .unwrap_err()
            .to_string();
        assert_eq!(err, expected);
    }

    const MINIMAL: &str = "[storage]\npath = \"data\"\n";

    #[test]
    fn bundled_configs_parse() {
        for file in ["config/feedmerge.toml", "config/demo.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
            let config = load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(!config.sources.is_empty(), "{file} has no sources");
        }
    }

    #[test]
    fn defaults_fill_in() {
        let config = parse(MINIMAL, Path::new("conf/x.toml")).unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(config.storage.path, cwd.join("conf/data"));
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.defaults.schedule, DEFAULT_SCHEDULE);
        assert_eq!(config.feed.max_entries, 200);
    }

    #[test]
    fn the_log_level_is_a_filter_and_a_misspelt_level_is_named() {
        let config = parse(MINIMAL, Path::new("conf/x.toml")).unwrap();
        assert_eq!(config.log.level, "info");
        let with = |level: &str| format!("{MINIMAL}[log]\nlevel = {level:?}\n");
        let config = parse(
            &with(" warn,feedmerge::poll=debug "),
            Path::new("conf/x.toml"),
        )
        .unwrap();
        assert_eq!(config.log.level, "warn,feedmerge::poll=debug");
        check_err(
            &with("verbose"),
            "conf/x.toml:4:9: log.level: \"verbose\" is neither a level (off, error, warn, info, debug, trace) nor TARGET=LEVEL",
        );
        check_err(
            &with("feedmerge=loud"),
            "conf/x.toml:4:9: log.level: error parsing level filter: expected one of \"off\", \"error\", \"warn\", \"info\", \"debug\", \"trace\", or a number 0-5: \"feedmerge=loud\"",
        );
        check_err(
            &with(""),
            "conf/x.toml:4:9: log.level: empty (want a level: off, error, warn, info, debug, trace)",
        );
        check_err(
            &format!("{MINIMAL}[log]\ncolour = \"red\"\n"),
            "conf/x.toml:4:1: unknown field `colour`, expected `level`",
        );
    }

    #[test]
    fn a_source_can_keep_its_url_unpublished() {
        let text = format!(
            "{MINIMAL}[[sources]]\nname = \"a\"\nurl = \"http://a/\"\n\
             [[sources]]\nname = \"b\"\nurl = \"http://b/?key=k\"\npublish_url = false\n"
        );
        let config = parse(&text, Path::new("conf/x.toml")).unwrap();
        let published: Vec<bool> = config.sources.iter().map(|s| s.publish_url).collect();
        assert_eq!(published, [true, false]);
    }

    #[test]
    fn sources_are_checked() {
        let source = |body: &str| format!("{MINIMAL}[[sources]]\n{body}");
        check_err(
            &source("name = \"Bad Name\"\nurl = \"http://a/\"\n"),
            "conf/x.toml:4:8: sources[0].name: \"Bad Name\" is not a valid name (use a-z, 0-9 and -)",
        );
        check_err(
            &source("name = \"a\"\nurl = \"ftp://a/\"\n"),
            "conf/x.toml:5:7: sources[0].url: unsupported scheme \"ftp\" (use http, https or file)",
        );
        check_err(
            &source("name = \"a\"\nurl = \"http://a/\"\nschedule = \"*/5 * * * *\"\n"),
            "conf/x.toml:6:12: sources[0].schedule: \"*/5 * * * *\" has 5 fields; feedmerge wants 6, seconds first (e.g. \"0 */15 * * * *\")",
        );
        check_err(
            &source("name = \"a\"\nurl = \"http://a/\"\ncolour = \"red\"\n"),
            "conf/x.toml:6:1: unknown field `colour`, expected one of `name`, `url`, `schedule`, `tags`, `timeout`, `connect_timeout`, `max_body_size`, `user_agent`, `respect_ttl`, `headers`, `headers_from_env`, `publish_url`, `include`, `exclude`, `match`",
        );
        check_err(
            &format!(
                "{MINIMAL}[[sources]]\nname = \"a\"\nurl = \"http://a/\"\n[[sources]]\nname = \"a\"\nurl = \"http://b/\"\n"
            ),
            "conf/x.toml:7:8: sources[1].name: source \"a\" is defined twice",
        );
    }

    #[test]
    fn file_urls_resolve_relative_to_the_config() {
        let config = parse(
            &format!("{MINIMAL}[[sources]]\nname = \"a\"\nurl = \"file:samples/a.xml\"\n[[sources]]\nname = \"b\"\nurl = \"file:///srv/b.xml\"\n"),
            Path::new("conf/x.toml"),
        )
        .unwrap();
        assert_eq!(
            config.sources[0].location,
            SourceLocation::File(std::env::current_dir().unwrap().join("conf/samples/a.xml"))
        );
        assert_eq!(
            config.sources[1].location,
            SourceLocation::File(PathBuf::from("/srv/b.xml"))
        );
    }

    #[test]
    fn headers_and_secrets_from_the_environment() {
        let text = format!(
            "{MINIMAL}[[sources]]\nname = \"a\"\nurl = \"http://a/\"\nheaders = {{ X-Api = \"k\" }}\nheaders_from_env = {{ Authorization = \"FEEDMERGE_TEST_TOKEN\" }}\n"
        );
        // SAFETY of the test: no other test reads this variable.
        std::env::set_var("FEEDMERGE_TEST_TOKEN", "Bearer s3cret");
        let config = parse(&text, Path::new("conf/x.toml")).unwrap();
        assert_eq!(
            config.sources[0].headers,
            [
                ("X-Api".to_string(), "k".to_string()),
                ("Authorization".to_string(), "Bearer s3cret".to_string())
            ]
        );
        let missing = text.replace("FEEDMERGE_TEST_TOKEN", "FEEDMERGE_TEST_UNSET");
        check_err(
            &missing,
            "conf/x.toml:7:38: sources[0].headers_from_env.Authorization: environment variable \"FEEDMERGE_TEST_UNSET\" is not set",
        );
    }

    #[test]
    fn sources_and_feeds_take_include_and_exclude_filters() {
        let text = format!(
            "{MINIMAL}[[sources]]\nname = \"a\"\nurl = \"http://a/\"\n\
             exclude = [\"(?i)sponsored\", \"(?i)^ad:\"]\n\
             [[sources]]\nname = \"b\"\nurl = \"http://b/\"\n\
             [[feeds]]\nname = \"climate\"\ntags = [\"news\"]\n\
             include = [\"(?i)climate\"]\nmatch = [\"title\", \"categories\"]\n"
        );
        let config = parse(&text, Path::new("conf/x.toml")).unwrap();
        let expected = |include: &[&str], exclude: &[&str], fields: Option<&[&str]>| {
            EntryFilter::new(include, exclude, fields).unwrap()
        };
        assert_eq!(
            config.sources[0].filter,
            expected(&[], &["(?i)sponsored", "(?i)^ad:"], None)
        );
        assert!(config.sources[1].filter.is_empty());
        assert_eq!(
            config.feeds[0].filter,
            expected(&["(?i)climate"], &[], Some(&["title", "categories"]))
        );
        assert_ne!(
            config.feeds[0].filter,
            expected(&["(?i)climate"], &[], None)
        );
    }

    #[test]
    fn output_feeds_choose_sources_by_tag_and_by_name() {
        let sources = format!(
            "{MINIMAL}[[sources]]\nname = \"a\"\nurl = \"http://a/\"\ntags = [\"t\"]\n\
             [[sources]]\nname = \"b\"\nurl = \"http://b/\"\n"
        );
        let config = parse(
            &format!("{sources}[[feeds]]\nname = \"f\"\ntags = [\"t\"]\nsources = [\"b\"]\n"),
            Path::new("conf/x.toml"),
        )
        .unwrap();
        assert_eq!(config.feeds[0].tags, ["t"]);
        assert_eq!(config.feeds[0].sources, ["b"]);
        let only = parse(
            &format!("{sources}[[feeds]]\nname = \"g\"\nsources = [\"a\"]\n"),
            Path::new("conf/x.toml"),
        )
        .unwrap();
        assert!(only.feeds[0].tags.is_empty());
        check_err(
            &format!("{sources}[[feeds]]\nname = \"f\"\nsources = [\"a\", \"nope\"]\n"),
            "conf/x.toml:12:17: feeds[0].sources[1]: no source is named \"nope\"",
        );
        check_err(
            &format!("{sources}[[feeds]]\nname = \"f\"\n"),
            "conf/x.toml:11:8: feeds[0]: list at least one tag (tags) or source (sources)",
        );
    }

    #[test]
    fn a_bad_filter_is_named_where_it_is_written() {
        let source =
            |body: &str| format!("{MINIMAL}[[sources]]\nname = \"a\"\nurl = \"http://a/\"\n{body}");
        check_err(
            &source("exclude = [\"ok\", \"(unclosed\"]\n"),
            "conf/x.toml:6:18: sources[0].exclude[1]: invalid regex: unclosed group",
        );
        check_err(
            &source("include = [\"a\"]\nmatch = [\"title\",\n  \"body\"]\n"),
            "conf/x.toml:8:3: sources[0].match[1]: unknown field \"body\" (use title, text, categories or authors)",
        );
        check_err(
            &source("match = []\n"),
            "conf/x.toml:6:9: sources[0].match: list at least one field (title, text, categories or authors)",
        );
        check_err(
            &source(&format!("include = [\"{}\"]\n", "a".repeat(1025))),
            "conf/x.toml:6:12: sources[0].include[0]: pattern of 1025 bytes, at most 1024",
        );
        check_err(
            &source(&format!("include = [{}]\n", vec!["\"a\""; 65].join(", "))),
            "conf/x.toml:6:11: sources[0].include: 65 patterns, at most 64",
        );
        check_err(
            &format!(
                "{MINIMAL}[[feeds]]\nname = \"one\"\ntags = [\"x\"]\n\
                 [[feeds]]\nname = \"two\"\ntags = [\"x\"]\nexclude = [\"\\\\p{{Nope}}\"]\n"
            ),
            "conf/x.toml:9:12: feeds[1].exclude[0]: invalid regex: Unicode property not found",
        );
        check_err(
            &source("exclude = \"sponsored\"\n"),
            "conf/x.toml:6:11: invalid type: string \"sponsored\", expected a sequence",
        );
    }

    #[test]
    fn missing_storage_is_named() {
        check_err("", "conf/x.toml:1:1: missing field `storage`");
    }
}
