//! The published feeds: which stored entries each one holds, rendered.
//!
//! This is the glue between the store (which entries, newest first, a page
//! at a time) and publish (the Atom and JSON Feed documents); the HTTP
//! server and `feedmerge export` both go through [`render_document`], so
//! they always agree. Published links lose their tracking parameters here
//! (`[feed] clean_links`).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};

use crate::config::{Config, SourceLocation};
use crate::dedup;
use crate::model::Item;
use crate::publish::{self, FeedInfo, PublishError, SourceInfo};
use crate::store::{Cursor, Page, Store, StoreError};

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

/// A document's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Atom 1.0 (`.atom`).
    Atom,
    /// JSON Feed 1.1 (`.json`).
    Json,
}

impl Format {
    /// The file extension it is served under.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Atom => "atom",
            Format::Json => "json",
        }
    }

    /// Its media type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Atom => publish::ATOM_CONTENT_TYPE,
            Format::Json => publish::json::JSON_FEED_CONTENT_TYPE,
        }
    }
}

/// One published document: a feed, its format, and which page (RFC 5005
/// paging: the newest `limit` entries older than `before`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// Which feed.
    pub selector: Selector<'a>,
    /// Which format.
    pub format: Format,
    /// Entries per page, capped at the feed's `max_entries`; `None`: the
    /// subscription document (`max_entries`).
    pub limit: Option<usize>,
    /// Where the page starts; `None`: at the newest entry.
    pub before: Option<Cursor>,
    /// The archive document of this day (RFC 5005 archived feeds), not a
    /// page.
    pub archive: Option<NaiveDate>,
}

impl<'a> Request<'a> {
    /// The subscription document of `selector`, in Atom.
    pub fn atom(selector: Selector<'a>) -> Self {
        Self {
            selector,
            format: Format::Atom,
            limit: None,
            before: None,
            archive: None,
        }
    }

    /// The document's path under the server's root, without query.
    pub fn path(&self) -> String {
        let ext = self.format.extension();
        match self.selector {
            Selector::Merged => format!("feed.{ext}"),
            Selector::Output(name) => format!("feeds/{name}.{ext}"),
            Selector::Source(name) => format!("sources/{name}.{ext}"),
        }
    }

    /// The path with the paging query, if paged: what the document is
    /// served at, and its cache key.
    pub fn path_and_query(&self) -> String {
        let mut out = self.path();
        let mut sep = '?';
        if let Some(limit) = self.limit {
            out.push_str(&format!("{sep}limit={limit}"));
            sep = '&';
        }
        if let Some(before) = self.before {
            out.push_str(&format!("{sep}before={}", before.to_hex()));
            sep = '&';
        }
        if let Some(day) = self.archive {
            out.push_str(&format!("{sep}archive={}", day.format("%Y-%m-%d")));
        }
        out
    }
}

/// Renders the selected feed's subscription document in Atom; `Ok(None)`
/// when there is no such feed.
pub fn render(
    config: &Config,
    store: &Store,
    selector: Selector<'_>,
) -> Result<Option<String>, FeedError> {
    render_document(config, store, &Request::atom(selector))
}

/// The configured sources whose entries `selector` publishes (what its
/// documents depend on, with the config); `None` when there is no such
/// feed.
pub fn sources_behind<'c>(config: &'c Config, selector: Selector<'_>) -> Option<Vec<&'c str>> {
    let names = |keep: &dyn Fn(&crate::config::SourceConfig) -> bool| {
        config
            .sources
            .iter()
            .filter(|s| keep(s))
            .map(|s| s.name.as_str())
            .collect()
    };
    match selector {
        Selector::Merged => Some(names(&|_| true)),
        Selector::Output(name) => {
            let out = config.output_feed(name)?;
            Some(names(&|s| {
                out.sources.contains(&s.name) || s.tags.iter().any(|t| out.tags.contains(t))
            }))
        }
        Selector::Source(name) => config.source(name).map(|s| vec![s.name.as_str()]),
    }
}

/// Most stories in one archive document (a day of a feed); a busier day
/// keeps its newest this many in the archive, the rest reachable by paging.
pub const ARCHIVE_MAX: usize = 10_000;

/// The newest day whose archive is complete at `now`: ended at least
/// `[dedup] window` ago, so late copies no longer join its stories.
pub fn settled_day(config: &Config, now: DateTime<Utc>) -> NaiveDate {
    let settled = chrono::Duration::from_std(config.dedup.window)
        .ok()
        .and_then(|w| now.checked_sub_signed(w))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    settled.date_naive().pred_opt().unwrap_or(NaiveDate::MIN)
}

/// The oldest day whose archive is still served at `now`: retention drops
/// (and never freezes again) the days older than `[retention] max_age`.
pub fn oldest_kept_day(config: &Config, now: DateTime<Utc>) -> NaiveDate {
    chrono::Duration::from_std(config.retention.max_age)
        .ok()
        .and_then(|age| now.checked_sub_signed(age))
        .map_or(NaiveDate::MIN, |t| t.date_naive())
}

fn day_start(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(chrono::NaiveTime::MIN).and_utc()
}

/// Renders one document as it is now; `Ok(None)` when there is no such
/// feed (or archive day).
pub fn render_document(
    config: &Config,
    store: &Store,
    request: &Request<'_>,
) -> Result<Option<String>, FeedError> {
    render_at(config, store, request, Utc::now())
}

/// The archive document `request` names (`request.archive` is a day): the
/// frozen bytes when it was frozen, else rendered and frozen now, so it
/// never changes again. `Ok(None)` for no such feed, a day not complete
/// yet or no longer kept, and a day with no stories.
pub fn archive_document(
    config: &Config,
    store: &Store,
    request: &Request<'_>,
    now: DateTime<Utc>,
) -> Result<Option<String>, FeedError> {
    let Some(day) = request.archive else {
        return Ok(None);
    };
    if sources_behind(config, request.selector).is_none()
        || day > settled_day(config, now)
        || day < oldest_kept_day(config, now)
    {
        return Ok(None);
    }
    let name = request.path_and_query();
    if let Some(frozen) = store.archive(day, &name)? {
        return Ok(Some(frozen));
    }
    match render_at(config, store, request, now)? {
        Some(doc) => Ok(Some(store.freeze_archive(day, &name, doc)?)),
        None => Ok(None),
    }
}

/// Up to `limit` stories of `selector` between `before` and `after`.
fn read_page(
    config: &Config,
    store: &Store,
    selector: Selector<'_>,
    limit: usize,
    before: Option<Cursor>,
    after: Option<Cursor>,
) -> Result<Option<Page<Item>>, FeedError> {
    let Some(behind) = sources_behind(config, selector) else {
        return Ok(None);
    };
    // Entries of sources no longer in the config stay stored but are not
    // published.
    let behind: HashSet<&str> = behind.into_iter().collect();
    Ok(Some(match selector {
        Selector::Merged => store.stories_between(limit, &behind, &|_| true, before, after)?,
        Selector::Output(name) => {
            let Some(out) = config.output_feed(name) else {
                return Ok(None);
            };
            store.stories_between(limit, &behind, &|e| out.filter.admits(e), before, after)?
        }
        Selector::Source(name) => {
            let page = store.source_between(name, limit, before, after)?;
            Page {
                items: page.items.into_iter().map(Item::single).collect(),
                next: page.next,
                first: page.first,
            }
        }
    }))
}

/// The newest day before `before` with a story of `selector`, if it is
/// still kept: where a `prev-archive` link points.
fn newest_day_before(
    config: &Config,
    store: &Store,
    selector: Selector<'_>,
    before: Cursor,
    now: DateTime<Utc>,
) -> Result<Option<NaiveDate>, FeedError> {
    let page = read_page(config, store, selector, 1, Some(before), None)?;
    Ok(page
        .and_then(|p| p.first)
        .map(|at| at.time().date_naive())
        .filter(|day| *day >= oldest_kept_day(config, now)))
}

/// Renders one document as it is at `now`.
fn render_at(
    config: &Config,
    store: &Store,
    request: &Request<'_>,
    now: DateTime<Utc>,
) -> Result<Option<String>, FeedError> {
    let (title, max_entries) = match request.selector {
        Selector::Merged => (config.feed.title.clone(), config.feed.max_entries),
        Selector::Output(name) => match config.output_feed(name) {
            Some(out) => (out.title.clone(), out.max_entries),
            None => return Ok(None),
        },
        Selector::Source(name) => (
            format!("{} ({name})", config.feed.title),
            config.feed.max_entries,
        ),
    };
    let limit = request
        .limit
        .unwrap_or(max_entries)
        .clamp(1, max_entries.max(1));
    let (limit, before, after) = match request.archive {
        Some(day) => (
            ARCHIVE_MAX,
            day.succ_opt().map(|next| Cursor::at(day_start(next))),
            Some(Cursor::at(day_start(day))),
        ),
        None => (limit, request.before, None),
    };
    let Some(page) = read_page(config, store, request.selector, limit, before, after)? else {
        return Ok(None);
    };
    if request.archive.is_some() && page.items.is_empty() {
        return Ok(None);
    }
    // The subscription document and each archive link the archive before
    // them (RFC 5005 §4).
    let prev_before = match request.archive {
        Some(day) => Some(Cursor::at(day_start(day))),
        None if request.limit.is_none() && request.before.is_none() => settled_day(config, now)
            .succ_opt()
            .map(|next| Cursor::at(day_start(next))),
        None => None,
    };
    let prev_archive = match prev_before {
        Some(before) => newest_day_before(config, store, request.selector, before, now)?,
        None => None,
    };
    let mut items = page.items;
    if config.feed.clean_links {
        for copy in items.iter_mut().flat_map(|item| item.copies.iter_mut()) {
            let tracking = &config.dedup.tracking_params;
            copy.link = copy
                .link
                .as_deref()
                .map(|l| dedup::without_tracking(l, tracking));
            copy.external = copy
                .external
                .as_deref()
                .map(|l| dedup::without_tracking(l, tracking));
        }
    }
    let next = match request.archive {
        Some(_) => None,
        None => page.next.map(|next| Request {
            limit: Some(limit),
            before: Some(next),
            ..*request
        }),
    };
    let prev_archive = prev_archive.map(|day| Request {
        limit: None,
        before: None,
        archive: Some(day),
        ..*request
    });
    let info = feed_info(config, request, &title, next, prev_archive);
    let sources = sources_shown(config, store, &items)?;
    let epoch = DateTime::<Utc>::UNIX_EPOCH;
    Ok(Some(match request.format {
        Format::Atom => publish::render(&info, items, &sources, epoch)?,
        Format::Json => publish::json::render(&info, &items, &sources, epoch)?,
    }))
}

/// What the document says of the sources it names (each entry's
/// `atom:source`).
fn sources_shown(
    config: &Config,
    store: &Store,
    items: &[Item],
) -> Result<HashMap<String, SourceInfo>, FeedError> {
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
    Ok(sources)
}

/// The document's identity and links: its id is the subscription
/// document's (every page of a feed is the same feed), its `self` the URL
/// it is served at, `next` the next page's.
fn feed_info(
    config: &Config,
    request: &Request<'_>,
    title: &str,
    next: Option<Request<'_>>,
    prev_archive: Option<Request<'_>>,
) -> FeedInfo {
    let base = config.server.base_url.as_ref();
    // Without a base URL, links are absolute paths on this server.
    let link = |path: &str| match base {
        Some(base) => base.join(path).ok().map(String::from),
        None => Some(format!("/{path}")),
    };
    let subscription = Request {
        limit: None,
        before: None,
        archive: None,
        format: Format::Atom,
        ..*request
    };
    let name = match request.selector {
        Selector::Merged => "merged",
        Selector::Output(name) | Selector::Source(name) => name,
    };
    FeedInfo {
        id: base
            .and_then(|base| base.join(&subscription.path()).ok())
            .map(String::from)
            .unwrap_or_else(|| format!("urn:feedmerge:feed:{name}")),
        title: title.to_string(),
        self_link: base
            .and_then(|base| base.join(&request.path_and_query()).ok())
            .map(String::from),
        next_link: next.and_then(|next| link(&next.path_and_query())),
        archive: request.archive.is_some(),
        prev_archive_link: prev_archive.and_then(|prev| link(&prev.path_and_query())),
        current_link: request.archive.and_then(|_| {
            link(
                &Request {
                    format: request.format,
                    ..subscription
                }
                .path_and_query(),
            )
        }),
        // A hub URL's userinfo is the daemon's to use, never to publish.
        hub: config
            .feed
            .websub_hub
            .as_ref()
            .map(|hub| publish::without_userinfo(hub.as_str())),
        json_link: link(
            &Request {
                format: Format::Json,
                ..*request
            }
            .path_and_query(),
        ),
    }
}
