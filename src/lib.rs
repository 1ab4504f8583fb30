//! feedmerge polls news feeds, normalizes their entries into one schema,
//! deduplicates them, stores them in sled, and republishes them as merged
//! Atom feeds over HTTP.
//!
//! The modules, in the order the data flows through them:
//!
//! - [`config`]: the TOML file, checked into a [`config::Config`]
//! - [`schedule`]: when each source is due (cron jobs)
//! - [`poll`]: one source through every stage below
//! - [`fetch`]: HTTP or file bytes, bounded in time and size
//! - [`document`]: one document's path, bytes to entries and feed facts
//!   (parse, the intake limits, normalize), the one the poller and the
//!   conformance test both take
//! - [`parse`]: encoding detection, transcoding, feed-rs under a panic guard
//! - [`normalize`]: feed-rs entries to [`model::Entry`]
//! - [`filter`]: include and exclude regexes over entries (pure)
//! - [`dedup`]: entry identity and change detection (pure)
//! - [`store`]: sled, and only sled
//! - [`feeds`] and [`publish`]: stored entries to Atom and JSON Feed documents
//! - [`documents`]: rendered documents cached until what is behind them
//!   changes, with their validators and compressed forms
//! - [`status`]: per-source status for the API and `feedmerge sources`
//! - [`opml`]: subscription lists in (as `[[sources]]` TOML) and out
//! - [`server`]: the HTTP routes
//! - [`websub`]: pings to a WebSub hub when a published feed changes
//! - [`app`]: wiring, tasks and shutdown
//! - `watchdog`: the systemd watchdog's pings, while the daemon makes
//!   progress
//! - [`logging`]: stderr, text or JSON, levels from the config
//! - [`malloc`]: glibc's malloc arenas, capped at startup

#![warn(missing_docs, clippy::unwrap_used, clippy::expect_used)]

pub mod app;
pub mod config;
pub mod control;
pub mod dedup;
pub mod document;
pub mod documents;
pub mod feeds;
pub mod fetch;
pub mod filter;
pub mod logging;
pub mod malloc;
pub mod metrics;
pub mod model;
pub mod normalize;
pub mod opml;
pub mod parse;
pub mod poll;
pub mod publish;
pub mod schedule;
pub mod server;
pub mod status;
pub mod store;
mod watchdog;
pub mod websub;
