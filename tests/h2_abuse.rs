//! HTTP/2 abuse against fe-php-host (h2c; TLS connections run the same HTTP/2
//! code): rapid reset (CVE-2023-44487), a CONTINUATION flood (CVE-2024-27316's
//! family) and an HPACK bomb. tests/h2/abuse.py writes the frames (Debian's
//! python3-h2 gives it hyperframe and hpack).

mod common;

use common::{proc, Host};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:{port}"
workers = 1
access_log = "off"
h2c = true

[backend]
default_backend = "embedded"

[backend.static_files]
enable = true
root = "{dir}/www"

[php]
document_root = "{dir}/www"
"#;

fn site(dir: &Path) {
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(
        www.join("count.php"),
        "<?php file_put_contents(__DIR__ . '/count.txt', 'x', FILE_APPEND); echo 'counted';",
    )
    .unwrap();
    std::fs::write(www.join("hello.php"), "<?php echo 'Hello, World!';").unwrap();
}

/// Runs tests/h2/abuse.py with `args`; its JSON report as text.
fn abuse(h: &Host, args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/h2/abuse.py");
    let out = Command::new("/usr/bin/python3")
        .arg(script)
        .arg(h.port.to_string())
        .args(args)
        .output()
        .expect("python3 is installed");
    assert!(
        out.status.success(),
        "abuse.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The host still serves HTTP/2 and HTTP/1.1 normally, with the same worker.
fn still_serves(h: &Host, worker: i32) {
    let out = Command::new("curl")
        .args(["-s", "--http2-prior-knowledge", &h.url("/hello.php")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Hello, World!");
    assert_eq!(common::get(&h.url("/hello.php")).text(), "Hello, World!");
    assert_eq!(h.workers(), vec![worker], "the worker was replaced");
}

#[test]
fn rapid_reset_ends_the_connection_before_php_runs_the_flood() {
    let h = Host::start(CONFIG, site);
    let worker = h.workers()[0];
    let report = abuse(&h, &["rapid-reset", "5000", "/count.php"]);
    assert!(report.contains("\"closed\": true"), "{report}");
    let counted = std::fs::read(h.dir.path().join("www/count.txt"))
        .map(|c| c.len())
        .unwrap_or(0);
    assert!(
        counted < 200,
        "{counted} of 5000 cancelled requests ran PHP: {report}"
    );
    assert!(
        h.stderr().contains("reached limit"),
        "no log line: {}",
        h.stderr()
    );
    still_serves(&h, worker);
}

#[test]
fn a_continuation_flood_is_cut_early() {
    let h = Host::start(CONFIG, site);
    let worker = h.workers()[0];
    let rss = proc::rss_kib(worker);
    let started = Instant::now();
    // Up to 64 MiB of one header block: the server must stop taking it long before.
    let report = abuse(&h, &["continuation", "64"]);
    assert!(report.contains("\"closed\": true"), "{report}");
    let sent: u64 = report
        .split("\"sent\": ")
        .nth(1)
        .and_then(|t| t.split(['}', ',']).next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap();
    assert!(
        sent < 16 << 20,
        "the server took {sent} bytes of headers: {report}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    let grown = proc::rss_kib(worker).saturating_sub(rss);
    assert!(grown < 16 * 1024, "the worker grew by {grown} KiB");
    still_serves(&h, worker);
}

#[test]
fn an_hpack_bomb_is_refused() {
    let h = Host::start(CONFIG, site);
    let worker = h.workers()[0];
    let rss = proc::rss_kib(worker);
    // 50 requests of ~4 KB on the wire that each decode to 400 KB of headers
    // (past max_header_size = 128K).
    let report = abuse(&h, &["hpack-bomb", "50", "/count.php"]);
    assert!(!report.contains("\"200\""), "a bomb was served: {report}");
    assert!(
        report.contains("\"431\": 50") || report.contains("\"closed\": true"),
        "{report}"
    );
    assert!(
        !h.dir.path().join("www/count.txt").exists(),
        "PHP ran a bomb's request"
    );
    let grown = proc::rss_kib(worker).saturating_sub(rss);
    assert!(grown < 16 * 1024, "the worker grew by {grown} KiB");
    still_serves(&h, worker);
}
