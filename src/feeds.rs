//! The published feeds: which stored entries each one holds, rendered.
//!
//! This is the glue between the store (which entries, newest first) and
//! publish (the Atom document); the HTTP server and `feedmerge export` both
//! go through [`render`], so they always agree.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::publish::{self, FeedInfo, PublishError, SourceInfo};
use crate::store::{Store, StoreError};

/// Why a feed could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing the document failed.
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Renders the merged feed (`name` = `None`) or the `[[feeds]]` output
/// called `name`; `Ok(None)` when there is no such feed.
pub fn render(
    config: &Config,
    store: &Store,
    name: Option<&str>,
) -> Result<Option<String>, FeedError> {
    let (info, limit, allowed): (FeedInfo, usize, Option<HashSet<&str>>) = match name {
        None => (
            feed_info(config, "feed.atom", "merged", &config.feed.title),
            config.feed.max_entries,
            None,
        ),
        Some(name) => {
            let Some(out) = config.output_feed(name) else {
                return Ok(None);
            };
            let sources = config
                .sources
                .iter()
                .filter(|s| s.tags.iter().any(|t| out.tags.contains(t)))
                .map(|s| s.name.as_str())
                .collect();
            (
                feed_info(config, &format!("feeds/{name}.atom"), name, &out.title),
                out.max_entries,
                Some(sources),
            )
        }
    };
    // Entries of sources no longer in the config stay stored but are not
    // published.
    let configured: HashSet<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
    let entries = store.newest(limit, |e| {
        configured.contains(e.source.as_str())
            && allowed
                .as_ref()
                .is_none_or(|a| a.contains(e.source.as_str()))
    })?;
    let mut sources = HashMap::new();
    for s in &config.sources {
        let state = store.source_state(&s.name)?.unwrap_or_default();
        sources.insert(
            s.name.clone(),
            SourceInfo {
                name: s.name.clone(),
                title: state.title,
                url: s.location.url().map(String::from),
                home_page: state.home_page,
            },
        );
    }
    let epoch = DateTime::<Utc>::UNIX_EPOCH;
    Ok(Some(publish::render(&info, &entries, &sources, epoch)?))
}

fn feed_info(config: &Config, path: &str, name: &str, title: &str) -> FeedInfo {
    let self_link = config
        .server
        .base_url
        .as_ref()
        .and_then(|base| base.join(path).ok())
        .map(String::from);
    FeedInfo {
        id: self_link
            .clone()
            .unwrap_or_else(|| format!("urn:feedmerge:feed:{name}")),
        title: title.to_string(),
        self_link,
    }
}
