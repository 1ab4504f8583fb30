//! WebSub publishing (W3C WebSub §5, "publish" pings): after an ingest
//! changes a published feed, the configured hub is told its URL, so
//! subscribers hear of it without polling.
//!
//! Its own task, woken by the store's change signal: polls never wait on
//! it. Changes close together are told once (a short pause gathers them),
//! each ping is retried a bounded number of times, and a hub that stays
//! down only costs a warning per feed. Which feeds changed is a pure
//! function of the generations, tested beside it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use url::Url;

use crate::config::Config;
use crate::feeds::{self, Format, Request, Selector};
use crate::store::Store;

/// How long after a change the pings go out, so the changes of one round
/// of polls are told together.
pub const GATHER: Duration = Duration::from_secs(1);

/// Attempts per ping, and the pause before each retry (doubling).
pub const ATTEMPTS: u32 = 3;
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Time allowed for one ping.
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// Every published subscription document's public URL (under
/// `server.base_url`, both formats) with the store generation behind it;
/// empty without a base URL.
pub fn topics(config: &Config, generation: &dyn Fn(&[&str]) -> u64) -> Vec<(String, u64)> {
    let Some(base) = &config.server.base_url else {
        return Vec::new();
    };
    let mut selectors = vec![Selector::Merged];
    selectors.extend(config.feeds.iter().map(|f| Selector::Output(&f.name)));
    selectors.extend(config.sources.iter().map(|s| Selector::Source(&s.name)));
    let mut out = Vec::new();
    for selector in selectors {
        let Some(behind) = feeds::sources_behind(config, selector) else {
            continue;
        };
        let now = generation(&behind);
        for format in [Format::Atom, Format::Json] {
            let request = Request {
                format,
                ..Request::atom(selector)
            };
            if let Ok(url) = base.join(&request.path()) {
                out.push((url.to_string(), now));
            }
        }
    }
    out
}

/// The topics of `now` whose generation differs from what the hub was
/// last told (`told`), in order. A generation of 0 (nothing stored since
/// opening) is news only if the hub was told something else.
pub fn changed(told: &HashMap<String, u64>, now: &[(String, u64)]) -> Vec<String> {
    now.iter()
        .filter(|(url, generation)| told.get(url).copied().unwrap_or(0) != *generation)
        .map(|(url, _)| url.clone())
        .collect()
}

/// The body of a publish ping for `topic`.
pub fn ping_body(topic: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("hub.mode", "publish")
        .append_pair("hub.url", topic)
        .finish()
}

/// Tells the config's hub (when there is one) of every feed change, until
/// `shutdown`.
pub async fn run(config: watch::Receiver<Arc<Config>>, store: Store, shutdown: CancellationToken) {
    let client = match reqwest::Client::builder()
        .timeout(PING_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("feedmerge/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            warn!(error = %e, "websub: cannot build an HTTP client; no pings");
            return;
        }
    };
    let mut changes = store.changes();
    let mut told: HashMap<String, u64> = HashMap::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(GATHER) => {}
        }
        let config = Arc::clone(&config.borrow());
        let Some(hub) = config.feed.websub_hub.clone() else {
            continue;
        };
        let now = topics(&config, &|sources| {
            store.generation(sources.iter().copied())
        });
        let generations: HashMap<&str, u64> = now.iter().map(|(u, g)| (u.as_str(), *g)).collect();
        for topic in changed(&told, &now) {
            if !ping(&client, &hub, &topic, &shutdown).await {
                if shutdown.is_cancelled() {
                    return;
                }
                warn!(hub = %crate::publish::without_userinfo(hub.as_str()), topic, attempts = ATTEMPTS, "websub: the hub did not take the ping; gave up until the feed changes again");
            }
            // Told, or given up on: either way not again until it changes.
            if let Some(generation) = generations.get(topic.as_str()) {
                told.insert(topic, *generation);
            }
        }
    }
}

/// One publish ping with its retries; whether the hub took it (2xx).
async fn ping(
    client: &reqwest::Client,
    hub: &Url,
    topic: &str,
    shutdown: &CancellationToken,
) -> bool {
    let mut pause = FIRST_RETRY;
    for attempt in 1..=ATTEMPTS {
        let sent = client
            .post(hub.clone())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(ping_body(topic))
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {
                debug!(topic, attempt, "websub: hub told");
                return true;
            }
            Ok(response) => {
                debug!(
                    topic,
                    attempt,
                    status = response.status().as_u16(),
                    "websub: hub refused the ping"
                );
            }
            Err(e) => {
                debug!(topic, attempt, error = %crate::publish::without_userinfo(&e.to_string()), "websub: ping failed")
            }
        }
        if attempt < ATTEMPTS {
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(pause) => {}
            }
            pause *= 2;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        crate::config::parse(text, std::path::Path::new("feedmerge.toml")).unwrap()
    }

    const CONFIG: &str = r#"
[server]
base_url = "https://news.example/merged/"
[storage]
path = "s"
[[sources]]
name = "a"
url = "https://a.example/feed"
tags = ["t"]
[[sources]]
name = "b"
url = "https://b.example/feed"
[[feeds]]
name = "t"
tags = ["t"]
"#;

    #[test]
    fn every_document_is_a_topic_with_the_generation_behind_it() {
        let config = config(CONFIG);
        let generations = HashMap::from([("a", 5u64), ("b", 2)]);
        let topics = topics(&config, &|sources| {
            sources.iter().map(|s| generations[s]).max().unwrap_or(0)
        });
        let base = "https://news.example/merged";
        assert_eq!(
            topics,
            vec![
                (format!("{base}/feed.atom"), 5),
                (format!("{base}/feed.json"), 5),
                (format!("{base}/feeds/t.atom"), 5),
                (format!("{base}/feeds/t.json"), 5),
                (format!("{base}/sources/a.atom"), 5),
                (format!("{base}/sources/a.json"), 5),
                (format!("{base}/sources/b.atom"), 2),
                (format!("{base}/sources/b.json"), 2),
            ]
        );
        let without_base = config.clone();
        let mut without_base = without_base;
        without_base.server.base_url = None;
        assert!(super::topics(&without_base, &|_| 1).is_empty());
    }

    #[test]
    fn only_changed_topics_are_told() {
        let now = vec![
            ("f".to_string(), 3),
            ("g".to_string(), 0),
            ("h".to_string(), 2),
            ("i".to_string(), 4),
        ];
        let told = HashMap::from([("f".to_string(), 3), ("h".to_string(), 1)]);
        // f unchanged, g never stored anything, h moved, i new.
        assert_eq!(changed(&told, &now), ["h", "i"]);
        assert!(changed(&HashMap::new(), &[("g".into(), 0)]).is_empty());
    }

    #[test]
    fn the_ping_is_a_form() {
        assert_eq!(
            ping_body("https://news.example/feed.atom?x=1&y"),
            "hub.mode=publish&hub.url=https%3A%2F%2Fnews.example%2Ffeed.atom%3Fx%3D1%26y"
        );
    }
}
