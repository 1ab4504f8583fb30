//! What the pipeline and read benchmarks share: a seeded generator, news-like
//! text over a real vocabulary (about 2,600 English and 470 Arabic words,
//! common ones more often, as in real text), and the process figures both
//! report. Each benchmark uses part of it.

#![allow(dead_code)]

use std::path::Path;

/// English words, the commonest first.
const ENGLISH: &str = include_str!("words-en.txt");
/// Arabic words, function words first.
const ARABIC: &str = include_str!("words-ar.txt");
/// How many words at the head of each list are function words.
const FUNCTION_WORDS: usize = 40;

/// A deterministic generator (xorshift64), so runs are comparable.
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value; mixed so nearby seeds differ).
    pub fn new(seed: u64) -> Self {
        let mut rng = Rng((seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x2545_F491_4F6C_DD1D) | 1);
        for _ in 0..4 {
            rng.next();
        }
        rng
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// A uniform number in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Which language a text is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// English.
    English,
    /// Arabic.
    Arabic,
}

/// The two word lists.
pub struct Vocabulary {
    english: Vec<&'static str>,
    arabic: Vec<&'static str>,
}

impl Vocabulary {
    /// Both lists, each word once, in file order.
    pub fn load() -> Self {
        fn list(text: &'static str) -> Vec<&'static str> {
            let mut seen = std::collections::HashSet::new();
            text.split_whitespace()
                .filter(|w| seen.insert(*w))
                .collect()
        }
        Vocabulary {
            english: list(ENGLISH),
            arabic: list(ARABIC),
        }
    }

    /// How many distinct words each list holds.
    pub fn sizes(&self) -> (usize, usize) {
        (self.english.len(), self.arabic.len())
    }

    /// One word: a function word about a third of the time, otherwise a
    /// skewed draw over the list (its head, the common words, most often);
    /// now and then a number, as news carries dates, counts and prices.
    fn word(&self, rng: &mut Rng, script: Script) -> String {
        let list = match script {
            Script::English => &self.english,
            Script::Arabic => &self.arabic,
        };
        if rng.chance(3) {
            return rng.range(2, 2_500).to_string();
        }
        let i = if rng.chance(33) {
            rng.below(FUNCTION_WORDS as u64) as usize
        } else {
            let u = rng.unit();
            FUNCTION_WORDS + ((u * u) * (list.len() - FUNCTION_WORDS) as f64) as usize
        };
        list[i.min(list.len() - 1)].to_string()
    }

    /// `n` words as a sentence: capitalized (English), ending with a stop.
    pub fn sentence(&self, rng: &mut Rng, script: Script, n: usize) -> String {
        let mut words: Vec<String> = (0..n.max(1)).map(|_| self.word(rng, script)).collect();
        if script == Script::English {
            words[0] = capitalize(&words[0]);
        }
        let mut out = words.join(" ");
        out.push('.');
        out
    }

    /// A headline of `n` words, without a stop.
    pub fn headline(&self, rng: &mut Rng, script: Script, n: usize) -> String {
        let words: Vec<String> = (0..n.max(1))
            .map(|i| {
                let w = self.word(rng, script);
                if script == Script::English && (i == 0 || rng.chance(30)) {
                    capitalize(&w)
                } else {
                    w
                }
            })
            .collect();
        words.join(" ")
    }

    /// A story of `words` words in paragraphs of 2 to 4 sentences.
    pub fn story(&self, seed: u64, script: Script, words: usize) -> Story {
        let mut rng = Rng::new(seed);
        let title_words = rng.range(6, 12) as usize;
        let title = self.headline(&mut rng, script, title_words);
        let mut paragraphs = Vec::new();
        let mut left = words;
        while left > 0 {
            let mut paragraph = Vec::new();
            for _ in 0..rng.range(2, 4) {
                if left == 0 {
                    break;
                }
                let n = (rng.range(8, 24) as usize).min(left);
                left -= n;
                paragraph.push(self.sentence(&mut rng, script, n));
            }
            paragraphs.push(paragraph.join(" "));
        }
        let slug = format!("{:x}", rng.next() >> 24);
        Story {
            title,
            paragraphs,
            slug,
        }
    }
}

/// A generated news story: its text, before any markup.
#[derive(Debug, Clone)]
pub struct Story {
    /// The headline.
    pub title: String,
    /// The body, in paragraphs.
    pub paragraphs: Vec<String>,
    /// A short hex string for the story's URL.
    pub slug: String,
}

impl Story {
    /// The body as publishers write it: paragraphs, a relative link to a
    /// related page after the first one, a relative image after the second.
    pub fn html(&self, seed: u64) -> String {
        let mut out = String::new();
        for (i, p) in self.paragraphs.iter().enumerate() {
            out.push_str("<p>");
            out.push_str(p);
            if i == 0 {
                out.push_str(&format!(
                    " <a href=\"/ssc/news/{}/related-{}\">{}</a>",
                    seed % 97,
                    seed,
                    first_words(&self.title, 3)
                ));
            }
            out.push_str("</p>");
            if i == 1 || (i == 0 && self.paragraphs.len() == 1) {
                out.push_str(&format!(
                    "<p><img src=\"/ssc/images/{}/{}.jpg\" alt=\"{}\" width=\"640\" height=\"360\"></p>",
                    seed % 31,
                    self.slug,
                    first_words(&self.title, 4)
                ));
            }
        }
        out
    }

    /// The first sentence or so, as a teaser.
    pub fn teaser(&self) -> String {
        let first = self.paragraphs.first().map(String::as_str).unwrap_or("");
        first
            .split_inclusive('.')
            .next()
            .unwrap_or(first)
            .to_string()
    }

    /// How many words the body holds.
    pub fn word_count(&self) -> usize {
        self.paragraphs
            .iter()
            .map(|p| p.split_whitespace().count())
            .sum()
    }
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn first_words(text: &str, n: usize) -> String {
    text.split_whitespace()
        .take(n)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Escapes text for an XML element or attribute.
pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

/// The median of `values` (0 when empty).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Peak resident memory (VmHWM) of process `pid` ("self" for this one), in
/// MB (2^20 bytes); 0 when /proc does not say.
pub fn peak_rss_mb(pid: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// Bytes of every file under `dir`, recursively.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Megabytes (2^20 bytes) of `bytes`.
pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}
