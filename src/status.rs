//! Per-source status: what `GET /api/sources` and `feedmerge sources` show.
//!
//! Built from the config (what should be polled) and each source's stored
//! state (what happened). Rendering the table is pure.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{Config, SourceLocation};
use crate::publish::without_userinfo;
use crate::store::{Store, StoreError};

/// One source's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStatus {
    /// The source's name.
    pub name: String,
    /// The URL in the config, without userinfo; for a file, `file:` and the
    /// file's name only.
    pub url: String,
    /// The URL polled now: where it permanently moved, else `url`.
    pub current_url: String,
    /// Why the source is not polled any more, if it is disabled.
    pub disabled: Option<String>,
    /// When the last poll started.
    pub last_attempt: Option<DateTime<Utc>>,
    /// When a poll last succeeded.
    pub last_success: Option<DateTime<Utc>>,
    /// HTTP status of the last response.
    pub http_status: Option<u16>,
    /// The last poll's error, if it failed.
    pub last_error: Option<String>,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Not polled before this time (backoff, Retry-After, TTL).
    pub next_due: Option<DateTime<Utc>>,
    /// Entries in the last document read.
    pub entries_seen: usize,
    /// The feed's own title.
    pub title: Option<String>,
    /// The feed's home page, without userinfo.
    #[serde(default)]
    pub home_page: Option<String>,
    /// How the last document was decoded: its encoding, and when its label
    /// did not hold or bytes were replaced, what was used instead (that
    /// line is also among the notes).
    pub encoding: Option<String>,
    /// What the last document had to give up to the intake limits.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// What `feedmerge fetch` prints: a line per source polled, and the totals
/// for its closing line. The same whether the CLI polled or the daemon did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchSummary {
    /// One line per source, `name: what happened`.
    pub lines: Vec<String>,
    /// Entries stored for the first time.
    pub new: usize,
    /// Entries updated.
    pub updated: usize,
    /// Sources whose poll failed.
    pub failed: usize,
}

impl FetchSummary {
    /// The summary of `reports`.
    pub fn of(reports: &[crate::poll::PollReport]) -> Self {
        let mut summary = Self::default();
        for report in reports {
            summary.lines.push(printable(&report.to_string()));
            match &report.outcome {
                Ok(crate::poll::PollOutcome::Stored(counts)) => {
                    summary.new += counts.new;
                    summary.updated += counts.updated;
                }
                Ok(_) => {}
                Err(_) => summary.failed += 1,
            }
        }
        summary
    }

    /// `N sources: N new, N updated, N failed`.
    pub fn closing_line(&self) -> String {
        let sources = self.lines.len();
        format!(
            "{sources} {}: {} new, {} updated, {} failed",
            if sources == 1 { "source" } else { "sources" },
            self.new,
            self.updated,
            self.failed
        )
    }
}

/// The result of the daemon's last config reload, for `/healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadStatus {
    /// When it finished.
    pub at: DateTime<Utc>,
    /// Whether the new config is in force.
    pub ok: bool,
    /// What changed, or why the file was refused (FILE:LINE:COL: key: ...).
    pub message: String,
}

/// The status of every configured source, in config order.
pub fn statuses(config: &Config, store: &Store) -> Result<Vec<SourceStatus>, StoreError> {
    let mut out = Vec::with_capacity(config.sources.len());
    for source in &config.sources {
        let configured = source.location.to_string();
        // As of the last flush: a poll is reported once it is durable.
        let state = store
            .flushed_source_state(&source.name)?
            .unwrap_or_default();
        // State recorded for another URL no longer applies: the next poll
        // starts that source over.
        let current = state.config_url == configured;
        let url = shown_location(&source.location);
        let moved_to = state
            .moved_to
            .as_deref()
            .filter(|_| current)
            .map(without_userinfo);
        // Messages may quote the URL (with its userinfo) or the file's path.
        let scrub = |text: &str| {
            let text = match &source.location {
                SourceLocation::File(path) => text.replace(&path.display().to_string(), &url),
                SourceLocation::Http(_) => text.to_string(),
            };
            without_userinfo(&text)
        };
        out.push(SourceStatus {
            name: source.name.clone(),
            current_url: moved_to.unwrap_or_else(|| url.clone()),
            disabled: state.disabled.as_deref().filter(|_| current).map(scrub),
            last_attempt: state.last_attempt,
            last_success: state.last_success,
            http_status: state.http_status,
            last_error: state.last_error.as_deref().map(scrub),
            url,
            consecutive_failures: if current {
                state.consecutive_failures
            } else {
                0
            },
            next_due: state.next_due.filter(|_| current),
            entries_seen: state.entries_seen,
            title: state.title.clone(),
            home_page: state.home_page.as_deref().map(without_userinfo),
            encoding: state.encoding.clone(),
            notes: state.notes.clone(),
        });
    }
    Ok(out)
}

/// A source's location as the API and `feedmerge sources` show it: an
/// http(s) URL without its userinfo; for a file, only its name (the path
/// says where the operator keeps things).
fn shown_location(location: &SourceLocation) -> String {
    match location {
        SourceLocation::Http(url) => without_userinfo(url.as_str()),
        SourceLocation::File(path) => format!(
            "file:{}",
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ),
    }
}

/// Which copies a story holds, and why each joined it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoryReport {
    /// The story's id (its first copy's id), the merged feed's `atom:id`.
    pub story: String,
    /// The copies, oldest first.
    pub copies: Vec<CopyReport>,
}

/// One copy of a story.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyReport {
    /// The copy's entry id.
    pub id: String,
    /// Its source.
    pub source: String,
    /// Its title.
    pub title: String,
    /// Its link.
    pub link: Option<String>,
    /// Its publication time (or first-seen time).
    pub published: DateTime<Utc>,
    /// How it joined the story: `None` for the copy that started it.
    pub rule: Option<String>,
    /// The copy it matched, when it joined.
    pub matched: Option<String>,
}

/// The story of entry (or story) `id`, or `None` when neither is stored.
pub fn explain(store: &Store, id: &str) -> Result<Option<StoryReport>, StoreError> {
    let Some(item) = store.story(id)? else {
        return Ok(None);
    };
    Ok(Some(StoryReport {
        story: item.id,
        copies: item
            .copies
            .into_iter()
            .map(|e| CopyReport {
                published: e.published_or_seen(),
                rule: e.merged.as_ref().map(|m| m.rule.to_string()),
                matched: e.merged.map(|m| m.with),
                id: e.id,
                source: e.source,
                title: e.title,
                link: e.link,
            })
            .collect(),
    }))
}

/// `text` safe for a terminal: control characters (C0, DEL, C1, and so
/// newlines inside a cell) written as `\u{..}` escapes, so a feed or a
/// server cannot move the cursor, retitle the window or fake a line.
fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            match c {
                '\r' => out.push_str("\\r"),
                '\n' => out.push_str("\\n"),
                _ => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `report` as text, one paragraph per copy (no control characters but
/// its own newlines).
pub fn explain_text(report: &StoryReport) -> String {
    let mut out = format!(
        "story {} ({} copies)\n",
        printable(&report.story),
        report.copies.len()
    );
    for copy in &report.copies {
        out.push_str(&format!(
            "\n{}\n  source:    {}\n  title:     {}\n  link:      {}\n  published: {}\n  joined:    {}\n",
            printable(&copy.id),
            printable(&copy.source),
            printable(&copy.title),
            printable(copy.link.as_deref().unwrap_or("-")),
            copy.published.to_rfc3339_opts(SecondsFormat::Secs, true),
            printable(&match (&copy.rule, &copy.matched) {
                (Some(rule), Some(with)) => format!("{rule}, matching {with}"),
                _ => "first copy".to_string(),
            })
        ));
    }
    out
}

/// A fixed-width table of `statuses`, one line per source, with no control
/// characters but the line ends.
pub fn table(statuses: &[SourceStatus]) -> String {
    let time = |t: Option<DateTime<Utc>>| {
        t.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
            .unwrap_or_else(|| "-".into())
    };
    let mut rows = vec![[
        "NAME".to_string(),
        "STATE".into(),
        "HTTP".into(),
        "LAST SUCCESS".into(),
        "FAILS".into(),
        "NEXT DUE".into(),
        "ENTRIES".into(),
        "NOTE".into(),
    ]];
    for s in statuses {
        let state = if s.disabled.is_some() {
            "disabled"
        } else if s.last_attempt.is_none() {
            "new"
        } else if s.last_error.is_some() {
            "failing"
        } else {
            "ok"
        };
        let mut notes = Vec::new();
        if let Some(why) = &s.disabled {
            notes.push(why.clone());
        } else if let Some(error) = &s.last_error {
            notes.push(error.clone());
        }
        if s.current_url != s.url {
            notes.push(format!("moved to {}", s.current_url));
        }
        notes.extend(s.notes.iter().cloned());
        rows.push([
            printable(&s.name),
            state.into(),
            s.http_status
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            time(s.last_success),
            s.consecutive_failures.to_string(),
            time(s.next_due),
            s.entries_seen.to_string(),
            printable(&notes.join("; ")),
        ]);
    }
    let mut widths = [0usize; 8];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lines_up_and_explains() {
        let at = DateTime::parse_from_rfc3339("2025-03-27T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let ok = SourceStatus {
            name: "centcom-ar".into(),
            url: "https://a/feed".into(),
            current_url: "https://b/feed".into(),
            disabled: None,
            last_attempt: Some(at),
            last_success: Some(at),
            http_status: Some(200),
            last_error: None,
            consecutive_failures: 0,
            next_due: None,
            entries_seen: 3,
            title: None,
            home_page: None,
            encoding: Some("UTF-8".into()),
            notes: Vec::new(),
        };
        let gone = SourceStatus {
            name: "old".into(),
            url: "https://c/feed".into(),
            current_url: "https://c/feed".into(),
            disabled: Some("gone (http 410)".into()),
            http_status: Some(410),
            last_error: Some("http 410 gone".into()),
            consecutive_failures: 1,
            last_success: None,
            entries_seen: 0,
            ..ok.clone()
        };
        let text = table(&[ok.clone(), gone]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "NAME        STATE     HTTP  LAST SUCCESS          FAILS  NEXT DUE  ENTRIES  NOTE"
        );
        assert_eq!(lines[1], "centcom-ar  ok        200   2025-03-27T10:00:00Z  0      -         3        moved to https://b/feed");
        assert_eq!(lines[2], "old         disabled  410   -                     1      -         0        gone (http 410)");
    }

    #[test]
    fn terminal_output_has_no_control_characters() {
        let at = DateTime::parse_from_rfc3339("2025-03-27T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let status = SourceStatus {
            name: "evil".into(),
            url: "https://a/feed".into(),
            current_url: "https://b/\u{1b}]0;pwned\u{7}".into(),
            disabled: None,
            last_attempt: Some(at),
            last_success: None,
            http_status: Some(500),
            last_error: Some("http 500\u{1b}[2J\u{9b}31m\r\nfake line".into()),
            consecutive_failures: 1,
            next_due: None,
            entries_seen: 0,
            title: None,
            home_page: None,
            encoding: None,
            notes: Vec::new(),
        };
        let text = table(&[status]);
        assert_eq!(text.lines().count(), 2, "{text:?}");
        assert!(text.lines().nth(1).unwrap().ends_with(
            "http 500\\u{1b}[2J\\u{9b}31m\\r\\nfake line; moved to https://b/\\u{1b}]0;pwned\\u{7}"
        ), "{text:?}");
        let report = StoryReport {
            story: "s\u{9b}".into(),
            copies: vec![CopyReport {
                id: "i".into(),
                source: "evil".into(),
                title: "bad\u{85}\u{1b}[31mtitle".into(),
                link: Some("https://x/\u{7}".into()),
                published: at,
                rule: None,
                matched: None,
            }],
        };
        let text = explain_text(&report);
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        assert!(
            text.contains("title:     bad\\u{85}\\u{1b}[31mtitle"),
            "{text}"
        );
    }
}
