//! Published documents rendered once: their bytes, validators and
//! compressed forms, kept until the entries or sources behind them change.
//!
//! A document is rendered on the first request after a change (one render
//! however many requests wait, on a blocking thread) and stamped with the
//! config it was rendered under and the store's generation of the sources
//! behind it (`Store::generation`). Every later request compares the stamp
//! and answers from memory: no request scans the store or renders again.
//!
//! The HTTP decisions (which encoding, whether a conditional request is
//! answered 304) are pure functions here, with table tests; the server
//! applies them.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::config::Config;

/// Most bytes of rendered documents kept (their identity forms); past it
/// the least recently used go first. Compressed forms are smaller and come
/// on top.
pub const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// What a document was rendered from, besides the config: the store's
/// generation of the sources behind it, and the day that decides which
/// archive it links (archives: which days are still kept).
pub type Stamp = (u64, i64);

/// A content coding of a document's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// The bytes as rendered.
    Identity,
    /// gzip (RFC 1952).
    Gzip,
    /// brotli (RFC 7932).
    Brotli,
}

impl Coding {
    /// The `Content-Encoding` value, `None` for identity.
    pub fn header(self) -> Option<&'static str> {
        match self {
            Coding::Identity => None,
            Coding::Gzip => Some("gzip"),
            Coding::Brotli => Some("br"),
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Coding::Identity => "",
            Coding::Gzip => "-gz",
            Coding::Brotli => "-br",
        }
    }
}

/// A rendered document.
#[derive(Debug)]
pub struct Rendered {
    /// The document as rendered.
    pub body: Bytes,
    /// Its media type.
    pub content_type: &'static str,
    /// Hex of the first 16 bytes of the body's SHA-256: the base of every
    /// form's strong `ETag`.
    digest: String,
    /// When these bytes were first served (whole seconds): the document's
    /// `Last-Modified`.
    pub last_modified: SystemTime,
    gzip: OnceLock<Bytes>,
    brotli: OnceLock<Bytes>,
    config: Arc<Config>,
    stamp: Stamp,
}

impl Rendered {
    /// `body` rendered under `config` at `stamp`;
    /// `previous` is what it replaces, whose `Last-Modified` it keeps when
    /// the bytes did not change.
    pub fn new(
        body: String,
        content_type: &'static str,
        config: Arc<Config>,
        stamp: Stamp,
        previous: Option<&Rendered>,
        now: SystemTime,
    ) -> Self {
        let digest: String = Sha256::digest(body.as_bytes())[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let last_modified = match previous {
            Some(previous) if previous.digest == digest => previous.last_modified,
            _ => whole_seconds(now),
        };
        Self {
            body: Bytes::from(body),
            content_type,
            digest,
            last_modified,
            gzip: OnceLock::new(),
            brotli: OnceLock::new(),
            config,
            stamp,
        }
    }

    /// Whether it was rendered from what `config` and `stamp` say is
    /// there now.
    pub fn current(&self, config: &Arc<Config>, stamp: Stamp) -> bool {
        Arc::ptr_eq(&self.config, config) && self.stamp == stamp
    }

    /// The strong `ETag` of the form in `coding` (each form its own, as
    /// RFC 9110 asks of strong validators).
    pub fn etag(&self, coding: Coding) -> String {
        format!("\"{}{}\"", self.digest, coding.suffix())
    }

    /// Whether the compressed form in `coding` is at hand (no compressing
    /// needed to serve it).
    pub fn ready(&self, coding: Coding) -> bool {
        match coding {
            Coding::Identity => true,
            Coding::Gzip => self.gzip.get().is_some(),
            Coding::Brotli => self.brotli.get().is_some(),
        }
    }

    /// The bytes in `coding`, compressing them the first time (blocking:
    /// call from a blocking thread unless [`Rendered::ready`]).
    pub fn encoded(&self, coding: Coding) -> Bytes {
        match coding {
            Coding::Identity => self.body.clone(),
            Coding::Gzip => self.gzip.get_or_init(|| gzip(&self.body)).clone(),
            Coding::Brotli => self.brotli.get_or_init(|| brotli(&self.body)).clone(),
        }
    }

    /// Whether a request with these validators already holds this
    /// document: `If-None-Match` (weak comparison, any of the document's
    /// forms, `*`) and, only without it, `If-Modified-Since`.
    pub fn not_modified(
        &self,
        if_none_match: Option<&str>,
        if_modified_since: Option<&str>,
    ) -> bool {
        if let Some(tags) = if_none_match {
            return tags.split(',').map(str::trim).any(|tag| {
                let tag = tag.strip_prefix("W/").unwrap_or(tag);
                let Some(opaque) = tag.strip_prefix('"').and_then(|t| t.strip_suffix('"')) else {
                    return tag == "*";
                };
                let base = opaque
                    .strip_suffix("-gz")
                    .or_else(|| opaque.strip_suffix("-br"))
                    .unwrap_or(opaque);
                base == self.digest
            });
        }
        if_modified_since
            .and_then(|since| httpdate::parse_http_date(since.trim()).ok())
            .is_some_and(|since| self.last_modified <= since)
    }
}

/// `t` without its fraction of a second: HTTP dates have none, so a
/// `Last-Modified` read back must compare equal.
fn whole_seconds(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn gzip(bytes: &[u8]) -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4),
        flate2::Compression::best(),
    );
    // Writing into a Vec cannot fail.
    let compressed = encoder
        .write_all(bytes)
        .and_then(|()| encoder.finish())
        .unwrap_or_default();
    Bytes::from(compressed)
}

fn brotli(bytes: &[u8]) -> Bytes {
    let params = brotli::enc::BrotliEncoderParams {
        quality: 9,
        lgwin: 22,
        ..Default::default()
    };
    let mut out = Vec::with_capacity(bytes.len() / 5);
    let mut input = bytes;
    if brotli::BrotliCompress(&mut input, &mut out, &params).is_err() {
        out.clear();
    }
    Bytes::from(out)
}

/// The coding to answer with, from `Accept-Encoding` (RFC 9110 §12.5.3):
/// brotli, then gzip, among those with a nonzero q (or `*`); identity
/// when neither is acceptable or the header is absent.
pub fn negotiate(accept_encoding: Option<&str>) -> Coding {
    let Some(header) = accept_encoding else {
        return Coding::Identity;
    };
    let mut br = None;
    let mut gz = None;
    let mut any = None;
    for part in header.split(',') {
        let mut fields = part.split(';');
        let name = fields
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let q = fields
            .filter_map(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .or_else(|| p.trim().strip_prefix("Q="))
            })
            .filter_map(|q| q.trim().parse::<f32>().ok())
            .next()
            .unwrap_or(1.0);
        match name.as_str() {
            "br" => br = Some(q),
            "gzip" | "x-gzip" => gz = Some(q),
            "*" => any = Some(q),
            _ => {}
        }
    }
    let br = br.or(any).unwrap_or(0.0);
    let gz = gz.or(any).unwrap_or(0.0);
    if br > 0.0 && br >= gz {
        Coding::Brotli
    } else if gz > 0.0 {
        Coding::Gzip
    } else {
        Coding::Identity
    }
}

/// The rendered documents, by request (path and paging).
#[derive(Debug, Default)]
pub struct Documents {
    slots: Mutex<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    by_key: HashMap<String, Slot>,
    /// Use counter: the least recently used slot has the smallest tick.
    tick: u64,
}

#[derive(Debug)]
struct Slot {
    /// One render at a time per document; the others wait for it.
    doc: Arc<tokio::sync::Mutex<Option<Arc<Rendered>>>>,
    used: u64,
    bytes: usize,
}

impl Documents {
    /// The document under `key`, rendered by `render` (on a blocking
    /// thread) unless the cached one is current for `config` and
    /// `stamp`. `render` gives the body and media type, or `None`
    /// when there is no such document (nothing is cached then).
    pub async fn get<E, F>(
        &self,
        key: String,
        config: Arc<Config>,
        stamp: Stamp,
        render: F,
    ) -> Result<Option<Arc<Rendered>>, RenderFailure<E>>
    where
        E: Send + 'static,
        F: FnOnce() -> Result<Option<(String, &'static str)>, E> + Send + 'static,
    {
        let doc = self.slot(&key);
        let mut held = doc.lock().await;
        if let Some(rendered) = held.as_ref() {
            if rendered.current(&config, stamp) {
                return Ok(Some(Arc::clone(rendered)));
            }
        }
        let previous = held.clone();
        let rendered = tokio::task::spawn_blocking(move || {
            let Some((body, content_type)) = render().map_err(RenderFailure::Render)? else {
                return Ok(None);
            };
            Ok(Some(Arc::new(Rendered::new(
                body,
                content_type,
                config,
                stamp,
                previous.as_deref(),
                SystemTime::now(),
            ))))
        })
        .await
        .map_err(|e| RenderFailure::Task(e.to_string()))??;
        match &rendered {
            Some(rendered) => {
                *held = Some(Arc::clone(rendered));
                drop(held);
                self.sized(&key, rendered.body.len());
            }
            None => {
                *held = None;
                drop(held);
                self.forget(&key);
            }
        }
        Ok(rendered)
    }

    /// The slot of `key`, made if new, marked used.
    fn slot(&self, key: &str) -> Arc<tokio::sync::Mutex<Option<Arc<Rendered>>>> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.tick += 1;
        let tick = slots.tick;
        let slot = slots.by_key.entry(key.to_string()).or_insert_with(|| Slot {
            doc: Arc::default(),
            used: tick,
            bytes: 0,
        });
        slot.used = tick;
        Arc::clone(&slot.doc)
    }

    /// Records the size of `key`'s document, then drops the least recently
    /// used others while the total is over [`CACHE_BYTES`].
    fn sized(&self, key: &str, bytes: usize) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = slots.by_key.get_mut(key) {
            slot.bytes = bytes;
        }
        let mut total: usize = slots.by_key.values().map(|s| s.bytes).sum();
        while total > CACHE_BYTES {
            let Some(oldest) = slots
                .by_key
                .iter()
                .filter(|(k, _)| k.as_str() != key)
                .min_by_key(|(_, s)| s.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(slot) = slots.by_key.remove(&oldest) {
                total -= slot.bytes;
            }
        }
    }

    fn forget(&self, key: &str) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.by_key.remove(key);
    }

    /// Documents cached now.
    pub fn len(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_key
            .len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a document could not be had.
#[derive(Debug)]
pub enum RenderFailure<E> {
    /// The render failed.
    Render(E),
    /// The blocking task running it failed.
    Task(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_are_negotiated_by_q() {
        let cases = [
            (None, Coding::Identity),
            (Some(""), Coding::Identity),
            (Some("gzip"), Coding::Gzip),
            (Some("gzip, deflate, br"), Coding::Brotli),
            (Some("br;q=0.5, gzip;q=0.8"), Coding::Gzip),
            (Some("br;q=0, gzip"), Coding::Gzip),
            (Some("gzip;q=0"), Coding::Identity),
            (Some("deflate"), Coding::Identity),
            (Some("*"), Coding::Brotli),
            (Some("*;q=0.1, br;q=0"), Coding::Gzip),
            (Some("identity"), Coding::Identity),
            (Some("x-gzip"), Coding::Gzip),
            (Some("GZIP"), Coding::Gzip),
        ];
        for (header, want) in cases {
            assert_eq!(negotiate(header), want, "{header:?}");
        }
    }

    fn config() -> Arc<Config> {
        Arc::new(
            crate::config::parse("[storage]\npath = \"s\"\n", std::path::Path::new("t.toml"))
                .unwrap(),
        )
    }

    fn doc(body: &str, previous: Option<&Rendered>, now: SystemTime) -> Rendered {
        let config = config();
        Rendered::new(body.into(), "text/plain", config, (1, 0), previous, now)
    }

    #[test]
    fn validators_answer_304_only_for_the_same_bytes() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_500);
        let d = doc("<feed/>", None, t);
        assert_eq!(
            d.last_modified,
            UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
        let lm = httpdate::fmt_http_date(d.last_modified);
        let etag = d.etag(Coding::Identity);
        let gz = d.etag(Coding::Gzip);
        assert_ne!(etag, gz);
        let cases: Vec<(Option<String>, Option<String>, bool)> = vec![
            (None, None, false),
            (Some(etag.clone()), None, true),
            (Some(gz.clone()), None, true),
            (Some(format!("W/{etag}")), None, true),
            (Some(format!("\"other\", {gz}")), None, true),
            (Some("*".into()), None, true),
            (Some("\"other\"".into()), None, false),
            // If-None-Match wins over If-Modified-Since.
            (Some("\"other\"".into()), Some(lm.clone()), false),
            (None, Some(lm.clone()), true),
            (
                None,
                Some(httpdate::fmt_http_date(t + Duration::from_secs(60))),
                true,
            ),
            (
                None,
                Some(httpdate::fmt_http_date(t - Duration::from_secs(60))),
                false,
            ),
            (None, Some("not a date".into()), false),
        ];
        for (inm, ims, want) in cases {
            assert_eq!(
                d.not_modified(inm.as_deref(), ims.as_deref()),
                want,
                "{inm:?} {ims:?}"
            );
        }
    }

    #[test]
    fn last_modified_moves_only_when_the_bytes_do() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000);
        let t1 = UNIX_EPOCH + Duration::from_secs(2_000);
        let first = doc("a", None, t0);
        let same = doc("a", Some(&first), t1);
        assert_eq!(same.last_modified, t0);
        assert_eq!(same.etag(Coding::Identity), first.etag(Coding::Identity));
        let changed = doc("b", Some(&first), t1);
        assert_eq!(changed.last_modified, t1);
        assert_ne!(changed.etag(Coding::Identity), first.etag(Coding::Identity));
    }

    #[test]
    fn compressed_forms_round_trip() {
        use std::io::Read;
        let body = "<feed>مرحبا</feed>".repeat(500);
        let d = doc(&body, None, SystemTime::now());
        assert!(!d.ready(Coding::Gzip));
        let gz = d.encoded(Coding::Gzip);
        assert!(d.ready(Coding::Gzip));
        let mut out = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, body);
        let br = d.encoded(Coding::Brotli);
        let mut out = Vec::new();
        brotli::BrotliDecompress(&mut &br[..], &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), body);
        assert!(gz.len() < body.len() / 5 && br.len() < body.len() / 5);
    }

    #[tokio::test]
    async fn one_render_per_change() {
        let docs = Documents::default();
        let config = config();
        let renders = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let get = |generation: u64| {
            let renders = Arc::clone(&renders);
            docs.get::<(), _>(
                "feed.atom".into(),
                Arc::clone(&config),
                (generation, 0),
                move || {
                    renders.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Ok(Some((format!("g{generation}"), "text/plain")))
                },
            )
        };
        for _ in 0..3 {
            get(1).await.unwrap().unwrap();
        }
        assert_eq!(renders.load(std::sync::atomic::Ordering::SeqCst), 1);
        let doc = get(2).await.unwrap().unwrap();
        assert_eq!(&doc.body[..], b"g2");
        assert_eq!(renders.load(std::sync::atomic::Ordering::SeqCst), 2);
        // A new config is a change too.
        let other = super::tests::config();
        docs.get::<(), _>("feed.atom".into(), other, (2, 0), || {
            Ok(Some(("x".into(), "text/plain")))
        })
        .await
        .unwrap();
        assert_eq!(docs.len(), 1);
        // No such document: nothing kept.
        let none = docs
            .get::<(), _>(
                "feeds/nope.atom".into(),
                Arc::clone(&config),
                (2, 0),
                || Ok(None),
            )
            .await
            .unwrap();
        assert!(none.is_none());
        assert_eq!(docs.len(), 1);
    }
}
