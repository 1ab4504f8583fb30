//! The published feeds: which stored entries each one holds, rendered.
//!
//! This is the glue between the store (which entries, newest first) and
//! publish (the Atom document); the HTTP server and `feedmerge export` both
//! go through [`render`], so they always agree.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use crate::config::{Config, SourceLocation};
use crate::model::Item;
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

/// Which published feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector<'a> {
    /// The merged feed: one entry per story.
    Merged,
    /// A `[[feeds]]` output: one entry per story, from its tagged sources.
    Output(&'a str),
    /// One source's own copies, nothing merged or hidden.
    Source(&'a str),
}

/// Renders the selected feed; `Ok(None)` when there is no such feed.
pub fn render(
    config: &Config,
    store: &Store,
    selector: Selector<'_>,
) -> Result<Option<String>, FeedError> {
    // Entries of sources no longer in the config stay stored but are not
    // published.
    let configured: HashSet<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
    let (info, items) = match selector {
        Selector::Merged => {
            let info = feed_info(config, "feed.atom", "merged", &config.feed.title);
            let stories = store.newest_stories(config.feed.max_entries, &configured)?;
            (info, stories)
        }
        Selector::Output(name) => {
            let Some(out) = config.output_feed(name) else {
                return Ok(None);
            };
            let allowed: HashSet<&str> = config
                .sources
                .iter()
                .filter(|s| s.tags.iter().any(|t| out.tags.contains(t)))
                .map(|s| s.name.as_str())
                .collect();
            let info = feed_info(config, &format!("feeds/{name}.atom"), name, &out.title);
            let stories = store.newest_stories(out.max_entries, &allowed)?;
            (info, stories)
        }
        Selector::Source(name) => {
            if config.source(name).is_none() {
                return Ok(None);
            }
            let title = format!("{} ({name})", config.feed.title);
            let info = feed_info(config, &format!("sources/{name}.atom"), name, &title);
            let entries = store.source_entries(name, config.feed.max_entries)?;
            (info, entries.into_iter().map(Item::single).collect())
        }
    };
    // Only the sources the document names: each entry's atom:source.
    let shown: HashSet<&str> = items
        .iter()
        .flat_map(|item| item.copies.iter().map(|e| e.source.as_str()))
        .collect();
    let mut sources = HashMap::new();
    for s in config
        .sources
        .iter()
        .filter(|s| shown.contains(s.name.as_str()))
    {
        let state = store.source_state(&s.name)?.unwrap_or_default();
        sources.insert(
            s.name.clone(),
            SourceInfo {
                name: s.name.clone(),
                title: state.title,
                // A file's path is never published, nor a URL the config
                // keeps private; userinfo is dropped from the rest.
                url: match &s.location {
                    SourceLocation::Http(url) if s.publish_url => {
                        Some(publish::without_userinfo(url.as_str()))
                    }
                    _ => None,
                },
                home_page: state.home_page,
            },
        );
    }
    let epoch = DateTime::<Utc>::UNIX_EPOCH;
    Ok(Some(publish::render(&info, &items, &sources, epoch)?))
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
        next_link: None,
    }
}
