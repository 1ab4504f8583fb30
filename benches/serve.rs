//! Serving benchmark: a cached feed against a static file.
//!
//! Run: `cargo bench --bench serve` (needs `wrk` and `nginx`, Debian
//! packages). `SERVE_SECS` sets each wrk run's length (default 5 s),
//! `SERVE_ROUNDS` the rounds (default 5), `SERVE_CONNECTIONS` wrk's open
//! connections (default 16).
//!
//! The real daemon (`feedmerge run`, a child process) publishes 200
//! generated entries (four file sources of 50, English and Arabic, with
//! relative links and images). Its `/feed.atom`, fetched with gzip, is
//! written to a directory that nginx (one worker per core, `gzip_static`,
//! no access log) serves as a static file. wrk, on loopback, then measures
//! requests/s for:
//!
//! - `/feed.atom` with `Accept-Encoding: gzip` (the whole compressed feed);
//! - the same with `If-None-Match` set to the current ETag (a 304);
//!
//! against both servers, alternating them within each round so a slow
//! moment of the machine falls on both, and prints the medians and the
//! ratio daemon/nginx beside the target (≥ 0.5×).

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{median, xml_escape, Rng, Script, Vocabulary};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// An RSS 2.0 document of 50 generated stories.
fn rss(vocabulary: &Vocabulary, source: usize, script: Script) -> String {
    let mut rng = Rng::new(source as u64 + 1);
    let lang = match script {
        Script::English => "en",
        Script::Arabic => "ar",
    };
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<rss version=\"2.0\"><channel>\
         <title>Source {source}</title><link>https://news{source}.example/</link>\
         <language>{lang}</language>\n"
    );
    for i in 0..50u64 {
        let seed = source as u64 * 1000 + i;
        let words = rng.range(60, 130) as usize;
        let story = vocabulary.story(seed, script, words);
        out.push_str(&format!(
            "<item><guid>https://news{source}.example/{i}</guid><title>{}</title>\
             <link>https://news{source}.example/{}/{i}?utm_source=rss</link>\
             <description>{}</description>\
             <pubDate>{}</pubDate></item>\n",
            xml_escape(&story.title),
            story.slug,
            xml_escape(&story.html(seed)),
            (chrono::DateTime::<chrono::Utc>::UNIX_EPOCH
                + chrono::Duration::seconds(1_740_000_000 + (i as i64) * 3600 + source as i64))
            .to_rfc2822(),
        ));
    }
    out.push_str("</channel></rss>\n");
    out
}

/// One request's status, headers and body, over a fresh connection.
fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    use std::io::{BufRead, BufReader, Read};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect {port}: {e}"));
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let _ = reader.read_line(&mut line);
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut out = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            out.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let mut body = Vec::new();
    let _ = reader.read_to_end(&mut body);
    (status, out, body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} header"))
}

/// wrk's requests/s for `url` with `headers`, and the non-2xx/3xx count.
fn wrk(url: &str, headers: &[String], secs: u64, connections: u64) -> (f64, u64) {
    let mut command = Command::new("wrk");
    command.args([
        "-t1",
        &format!("-c{connections}"),
        &format!("-d{secs}s"),
        "--latency",
    ]);
    for h in headers {
        command.args(["-H", h]);
    }
    let output = command
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("cannot run wrk ({e}): apt-get install wrk"));
    let text = String::from_utf8_lossy(&output.stdout);
    let rate = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("wrk said:\n{text}"));
    let errors = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    (rate, errors)
}

fn wait_for(port: u16, path: &str, want: u16) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && get(port, path, &[]).0 == want
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("port {port} never answered {path} with {want}");
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let secs = env_or("SERVE_SECS", 5);
    let rounds = env_or("SERVE_ROUNDS", 5);
    let connections = env_or("SERVE_CONNECTIONS", 16);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let root = dir.path();
    let vocabulary = Vocabulary::load();
    let mut sources = String::new();
    for source in 0..4 {
        let script = if source == 3 {
            Script::Arabic
        } else {
            Script::English
        };
        let file = root.join(format!("source-{source}.xml"));
        std::fs::write(&file, rss(&vocabulary, source, script)).unwrap_or_else(|e| panic!("{e}"));
        sources.push_str(&format!(
            "[[sources]]\nname = \"s{source}\"\nurl = \"file:{}\"\n",
            file.display()
        ));
    }
    let port = free_port();
    let config = root.join("feedmerge.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nbase_url = \"http://127.0.0.1:{port}/\"\n\
             max_connections = 512\n[storage]\npath = \"store\"\n[feed]\nmax_entries = 200\n\
             [log]\nlevel = \"warn\"\n[defaults]\nschedule = \"0 0 0 1 1 *\"\n{sources}"
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let daemon = Killed(
        Command::new(env!("CARGO_BIN_EXE_feedmerge"))
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the daemon: {e}")),
    );
    wait_for(port, "/readyz", 200);

    let (_, plain_headers, plain) = get(port, "/feed.atom", &[]);
    let entries = String::from_utf8_lossy(&plain).matches("<entry").count();
    let gz_request = [("Accept-Encoding", "gzip")];
    let (status, headers, gz) = get(port, "/feed.atom", &gz_request);
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-encoding"), "gzip");
    let daemon_etag = header(&headers, "etag").to_string();
    assert_ne!(daemon_etag, header(&plain_headers, "etag"));

    // nginx serves the same bytes as a static file.
    let www = root.join("www");
    std::fs::create_dir_all(&www).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(www.join("feed.atom"), &plain).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(www.join("feed.atom.gz"), &gz).unwrap_or_else(|e| panic!("{e}"));
    let nginx_port = free_port();
    let nginx_conf = root.join("nginx.conf");
    std::fs::write(
        &nginx_conf,
        format!(
            "worker_processes auto;\npid {pid};\nerror_log {err} warn;\ndaemon off;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  types {{ application/atom+xml atom; }}\n\
             keepalive_requests 1000000;\n\
             server {{\n    listen 127.0.0.1:{nginx_port};\n    root {www};\n    gzip_static on;\n\
             gzip_vary on;\n  }}\n\
             client_body_temp_path {tmp}/body;\n  proxy_temp_path {tmp}/proxy;\n\
             fastcgi_temp_path {tmp}/fcgi;\n  uwsgi_temp_path {tmp}/uwsgi;\n  scgi_temp_path {tmp}/scgi;\n}}\n",
            pid = root.join("nginx.pid").display(),
            err = root.join("nginx-error.log").display(),
            www = www.display(),
            tmp = root.display(),
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let nginx_bin = ["/usr/sbin/nginx", "nginx"]
        .into_iter()
        .find(|b| Path::new(b).exists() || *b == "nginx")
        .unwrap_or("nginx");
    let nginx = Killed(
        Command::new(nginx_bin)
            .arg("-c")
            .arg(&nginx_conf)
            .arg("-p")
            .arg(root)
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nginx ({e}): apt-get install nginx-light")),
    );
    wait_for(nginx_port, "/feed.atom", 200);
    let (_, nginx_headers, nginx_gz) = get(nginx_port, "/feed.atom", &gz_request);
    assert_eq!(nginx_gz, gz, "nginx serves other bytes");
    let nginx_etag = header(&nginx_headers, "etag").to_string();
    for (p, etag) in [(port, &daemon_etag), (nginx_port, &nginx_etag)] {
        let (status, _, body) = get(
            p,
            "/feed.atom",
            &[("Accept-Encoding", "gzip"), ("If-None-Match", etag)],
        );
        assert_eq!(status, 304, "port {p}");
        assert!(body.is_empty());
    }

    println!(
        "serving /feed.atom: {entries} entries, {} bytes ({} gzip); wrk -t1 -c{connections} -d{secs}s, {rounds} rounds",
        plain.len(),
        gz.len()
    );
    let gzip = "Accept-Encoding: gzip".to_string();
    let cases = [
        ("200, gzip", vec![gzip.clone()], vec![gzip.clone()]),
        (
            "304",
            vec![gzip.clone(), format!("If-None-Match: {daemon_etag}")],
            vec![gzip.clone(), format!("If-None-Match: {nginx_etag}")],
        ),
    ];
    let daemon_url = format!("http://127.0.0.1:{port}/feed.atom");
    let nginx_url = format!("http://127.0.0.1:{nginx_port}/feed.atom");
    let mut results: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); cases.len()];
    let mut errors = 0;
    for round in 0..rounds {
        for (i, (_, ours, theirs)) in cases.iter().enumerate() {
            // Alternate which server goes first.
            let order: [bool; 2] = if round % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for daemon_first in order {
                let (url, headers) = if daemon_first {
                    (&daemon_url, ours)
                } else {
                    (&nginx_url, theirs)
                };
                let (rate, failed) = wrk(url, headers, secs, connections);
                errors += failed;
                if daemon_first {
                    results[i].0.push(rate);
                } else {
                    results[i].1.push(rate);
                }
            }
        }
    }
    println!(
        "{:<12} {:>16} {:>16} {:>8}  target",
        "request", "feedmerge req/s", "nginx req/s", "ratio"
    );
    for ((name, _, _), (ours, theirs)) in cases.iter().zip(results) {
        let (ours, theirs) = (median(ours), median(theirs));
        let ratio = ours / theirs;
        println!(
            "{name:<12} {ours:>16.0} {theirs:>16.0} {ratio:>7.2}×  ≥ 0.50×: {}",
            if ratio >= 0.5 { "met" } else { "NOT met" }
        );
    }
    println!("responses other than 2xx/3xx: {errors}");
    drop(nginx);
    drop(daemon);
}
