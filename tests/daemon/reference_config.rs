//! `config/feedmerge.toml` is the reference: every value it sets is the
//! built-in default (except the lines marked `# example` and the
//! `[[sources]]` and `[[feeds]]` tables), and every key the config accepts
//! appears in it. The accepted keys come from the config's own serde
//! structs (their "unknown field, expected one of ..." errors), so a key
//! added to the code is missed here the moment it is missed in the file.

use std::collections::BTreeSet;
use std::path::Path;

use feedmerge::config::{self, Config};
use toml::de::{DeTable, DeValue};

const REFERENCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/feedmerge.toml");

/// A key no version of the config will ever accept.
const PROBE: &str = "zz_not_a_key";

/// Where the probes pretend to live; nothing is read or written there.
fn probe_path() -> &'static Path {
    Path::new("/nonexistent/feedmerge-probe.toml")
}

fn parse(text: &str) -> Result<Config, config::ConfigError> {
    config::parse(text, probe_path())
}

/// The store path every probe sets, since `[storage] path` is required.
const STORAGE: &str = "[storage]\npath = \"store\"\n";

/// Where a set of keys lives: a table (`[server]`) or an array of tables
/// (`[[sources]]`), by its dotted path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Section {
    path: Vec<String>,
    array: bool,
}

impl Section {
    fn header(&self) -> String {
        let name = self.path.join(".");
        if self.array {
            format!("[[{name}]]\n")
        } else {
            format!("[{name}]\n")
        }
    }

    /// A document with `body` in this section (and a store path, which every
    /// config needs).
    fn document(&self, body: &str) -> String {
        match self.path.first().map(String::as_str) {
            None => format!("{body}{STORAGE}"),
            Some("storage") if self.path.len() == 1 => format!("{STORAGE}{body}"),
            _ => format!("{STORAGE}{}{body}", self.header()),
        }
    }
}

/// The fields serde lists for the section at `section`, or `None` when the
/// section is not a struct with fixed fields (a map, a list, a value).
fn accepted_fields(section: &Section) -> Option<Vec<String>> {
    let text = section.document(&format!("{PROBE} = 1\n"));
    let message = match parse(&text) {
        Ok(_) => return None,
        Err(e) => e.to_string(),
    };
    let unknown = format!("unknown field `{PROBE}`");
    let (_, expected) = message.split_once(&unknown)?;
    // serde writes "expected one of `a`, `b`", "expected `a` or `b`",
    // "expected `a`" or "there are no fields": every name is in backticks.
    let fields: Vec<String> = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some(fields)
}

/// Every key the config accepts, as (section, key), found by asking serde:
/// the top level's fields are sections; each is probed as a table and, if
/// serde wants a list there, as an array of tables; a field that takes a
/// table of fixed fields is probed in turn.
fn accepted_keys() -> BTreeSet<(Section, String)> {
    let mut keys = BTreeSet::new();
    let top = Section {
        path: Vec::new(),
        array: false,
    };
    let mut pending = vec![top];
    while let Some(section) = pending.pop() {
        let Some(fields) = accepted_fields(&section) else {
            continue;
        };
        assert!(
            !fields.is_empty() || !section.path.is_empty(),
            "serde listed no fields at the top level"
        );
        for field in fields {
            let mut path = section.path.clone();
            path.push(field.clone());
            let table = Section {
                path: path.clone(),
                array: false,
            };
            let array = Section { path, array: true };
            let child = if accepted_fields(&table).is_some() {
                Some(table)
            } else if section.path.is_empty() && accepted_fields(&array).is_some() {
                Some(array)
            } else {
                None
            };
            match child {
                Some(child) => pending.push(child),
                None => {
                    keys.insert((section.clone(), field));
                }
            }
        }
    }
    keys
}

/// One key set in the reference file: its section, its name, the value's
/// text as written, and whether the line marks it `# example`.
#[derive(Debug)]
struct SetKey {
    section: Section,
    key: String,
    value: String,
    example: bool,
}

/// Every key the reference file sets, with the value's text as written.
fn set_keys(text: &str) -> Vec<SetKey> {
    let document = DeTable::parse(text).unwrap_or_else(|e| panic!("{REFERENCE}: {e}"));
    let mut out = Vec::new();
    let top = Section {
        path: Vec::new(),
        array: false,
    };
    walk(text, &top, document.get_ref(), &mut out);
    out
}

fn walk(text: &str, section: &Section, table: &DeTable<'_>, out: &mut Vec<SetKey>) {
    for (key, value) in table {
        let mut path = section.path.clone();
        path.push(key.get_ref().to_string());
        match value.get_ref() {
            // A section header (`[server]`), not an inline table value.
            DeValue::Table(inner) if !is_inline(text, value.span()) => {
                let child = Section { path, array: false };
                walk(text, &child, inner, out);
            }
            DeValue::Array(items)
                if !items.is_empty()
                    && items
                        .iter()
                        .all(|item| matches!(item.get_ref(), DeValue::Table(_)))
                    && !is_inline(text, value.span()) =>
            {
                let child = Section { path, array: true };
                for item in items.iter() {
                    if let DeValue::Table(inner) = item.get_ref() {
                        walk(text, &child, inner, out);
                    }
                }
            }
            _ => {
                let span = value.span();
                let rest_of_line = text[span.end..].split('\n').next().unwrap_or("");
                out.push(SetKey {
                    section: section.clone(),
                    key: key.get_ref().to_string(),
                    value: text[span].to_string(),
                    example: rest_of_line.trim() == "# example",
                });
            }
        }
    }
}

/// Whether the value at `span` is written in the line (`{ ... }`,
/// `[ ... ]`) rather than as a section of its own.
fn is_inline(text: &str, span: std::ops::Range<usize>) -> bool {
    matches!(text.as_bytes().get(span.start), Some(b'{') | Some(b'['))
        && !text[..span.start].ends_with('\n')
        && text[..span.start]
            .rsplit('\n')
            .next()
            .is_some_and(|line| line.contains('='))
}

fn reference() -> String {
    std::fs::read_to_string(REFERENCE).unwrap_or_else(|e| panic!("{REFERENCE}: {e}"))
}

#[test]
fn every_value_the_reference_config_sets_is_the_built_in_default() {
    let text = reference();
    let default = parse(STORAGE).unwrap();
    let keys = set_keys(&text);
    let mut checked = 0;
    for key in &keys {
        if key.example || key.section.array {
            continue;
        }
        let line = format!("{} = {}\n", key.key, key.value);
        let config = parse(&key.section.document(&line)).unwrap_or_else(|e| {
            panic!("{}{line}: {e}", key.section.header());
        });
        assert!(
            config == default,
            "config/feedmerge.toml: {}{} = {} is not the built-in default \
             (mark the line `# example` if it is meant as one)\n\
             left (as written): {config:#?}\nright (default): {default:#?}",
            key.section.path.join("."),
            if key.section.path.is_empty() {
                String::new()
            } else {
                ".".to_string() + &key.key
            },
            key.value
        );
        checked += 1;
    }
    // The file sets the defaults of every section; far fewer would mean the
    // walk missed them.
    assert!(checked >= 30, "only {checked} defaults checked: {keys:#?}");
    // The marked examples are few and deliberate (in key order).
    let examples: Vec<String> = keys
        .iter()
        .filter(|k| k.example)
        .map(|k| format!("{}.{}", k.section.path.join("."), k.key))
        .collect();
    assert_eq!(
        examples,
        ["feed.title", "server.base_url", "storage.path"],
        "the keys marked `# example`"
    );
}

#[test]
fn every_key_the_config_accepts_appears_in_the_reference_config() {
    let text = reference();
    let accepted = accepted_keys();
    // The probe itself is checked: the sections and keys known today.
    for (section, key) in [
        ("server", "listen"),
        ("server", "watch_config"),
        ("log", "level"),
        ("storage", "path"),
        ("intake", "max_depth"),
        ("poll", "allow_private_networks"),
        ("sources", "headers_from_env"),
        ("feeds", "max_entries"),
    ] {
        assert!(
            accepted
                .iter()
                .any(|(s, k)| s.path == [section] && k == key),
            "the probe did not find {section}.{key}: {accepted:#?}"
        );
    }
    let set: BTreeSet<(Vec<String>, String)> = set_keys(&text)
        .into_iter()
        .map(|k| (k.section.path, k.key))
        .collect();
    let mut missing = Vec::new();
    for (section, key) in &accepted {
        let present = set.contains(&(section.path.clone(), key.clone()))
            || commented_out(&text, section, key);
        if !present {
            missing.push(format!("{}{key}", section.header()));
        }
    }
    assert!(
        missing.is_empty(),
        "config/feedmerge.toml does not mention these keys the config accepts:\n{}",
        missing.join("\n")
    );
}

/// Whether `key` appears as a commented-out setting (`# key = ...`) in one
/// of `section`'s tables: for keys that cannot be set in a reference file
/// (`headers_from_env` needs its variables set).
fn commented_out(text: &str, section: &Section, key: &str) -> bool {
    let header = section.header();
    let header = header.trim_end();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            inside = line == header;
        } else if inside {
            if let Some(rest) = line.strip_prefix('#') {
                if let Some((name, _)) = rest.split_once('=') {
                    if name.trim() == key {
                        return true;
                    }
                }
            }
        }
    }
    false
}

#[test]
fn the_probe_tells_a_changed_default_and_a_missing_key() {
    // The two tests above would pass on an empty file if the walk or the
    // probe found nothing; both are shown to see what they must.
    let changed = "[poll]\njitter = \"31s\"\n[server]\nlisten = \"127.0.0.1:8080\"  # example\n";
    let keys = set_keys(changed);
    assert_eq!(keys.len(), 2);
    assert!(!keys[0].example && keys[1].example, "{keys:#?}");
    let default = parse(STORAGE).unwrap();
    let line = format!("{} = {}\n", keys[0].key, keys[0].value);
    assert_ne!(parse(&keys[0].section.document(&line)).unwrap(), default);
    let server = Section {
        path: vec!["server".into()],
        array: false,
    };
    assert!(!commented_out(changed, &server, "watch_config"));
    assert!(commented_out(
        "[server]\n# watch_config = true\n",
        &server,
        "watch_config"
    ));
}
