//! The static backend over real HTTP: a running fe-php-host, curl as the client.

mod common;

use common::*;
use std::os::unix::fs::symlink;
use std::path::Path;

fn config() -> String {
    HostConfig::static_site().toml()
}

fn big() -> Vec<u8> {
    (0..20u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect()
}

fn site(dir: &Path) {
    let p = dir.join("public");
    for d in ["docs", "empty", "uploads", ".git", ".well-known", "assets"] {
        std::fs::create_dir_all(p.join(d)).unwrap();
    }
    let files: &[(&str, &[u8])] = &[
        ("index.html", b"<h1>home</h1>\n"),
        ("docs/index.html", b"<h1>docs</h1>\n"),
        ("style.css", b"body { color: red }\n"),
        ("app.js", b"console.log('hi');\n"),
        ("app.js.gz", b"GZIP-SIDECAR"),
        ("app.js.br", b"BROTLI-SIDECAR"),
        ("font.woff2", b"wOF2fake"),
        ("img.png", b"\x89PNG fake"),
        ("digits.txt", b"0123456789abcdefghij"),
        ("hello.php", b"<?php echo 'secret source';"),
        ("upper.PHP", b"<?php echo 'secret source';"),
        ("trail.php.", b"<?php echo 'secret source';"),
        ("inc.phtml", b"<?php echo 'secret source';"),
        (".env", b"DB_PASSWORD=secret"),
        (".git/config", b"[core]"),
        (".well-known/acme.txt", b"token"),
        ("uploads/a.jpg", b"JPEGDATA"),
        ("caf\u{e9}.txt", b"unicode name"),
        ("a b.txt", b"space name"),
    ];
    for (name, data) in files {
        std::fs::write(p.join(name), data).unwrap();
    }
    std::fs::write(p.join("big.bin"), big()).unwrap();
    std::fs::write(dir.join("secret.txt"), b"outside the root").unwrap();
    symlink(dir.join("secret.txt"), p.join("secret-link.txt")).unwrap();
    symlink("/etc", p.join("etc-link")).unwrap();
    symlink("style.css", p.join("inside-link.css")).unwrap();
}

fn host() -> Host {
    Host::start(&config(), site)
}

#[test]
fn serves_a_file_with_validators_and_type() {
    let h = host();
    let r = get(&h.url("/style.css"));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"body { color: red }\n");
    assert_eq!(r.header("content-type"), Some("text/css"));
    assert_eq!(r.header("content-length"), Some("20"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    let etag = r.header("etag").unwrap();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"),
        "{etag}"
    );
    let lm = r.header("last-modified").unwrap();
    assert!(
        lm.ends_with(" GMT") && httpdate::parse_http_date(lm).is_ok(),
        "{lm}"
    );
}

#[test]
fn head_has_get_headers_and_no_body() {
    let h = host();
    let g = get(&h.url("/index.html"));
    let r = curl(&["-I", &h.url("/index.html")]);
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    for name in [
        "content-type",
        "content-length",
        "etag",
        "last-modified",
        "cache-control",
    ] {
        assert_eq!(r.header(name), g.header(name), "{name}");
    }
}

#[test]
fn cache_control_policy() {
    let h = host();
    let cases = [
        ("/font.woff2", Some("public, max-age=31536000, immutable")),
        ("/img.png", Some("public, max-age=86400")),
        ("/uploads/a.jpg", Some("public, max-age=86400")),
        ("/style.css", Some("public, max-age=3600")),
        ("/app.js", Some("public, max-age=3600")),
        ("/index.html", Some("no-cache")),
        ("/digits.txt", None),
    ];
    for (path, want) in cases {
        assert_eq!(get(&h.url(path)).header("cache-control"), want, "{path}");
    }
}

#[test]
fn conditional_requests_follow_rfc9110_order() {
    let h = host();
    let url = h.url("/style.css");
    let first = get(&url);
    let etag = first.header("etag").unwrap().to_owned();
    let lm = first.header("last-modified").unwrap().to_owned();
    let past = "Sun, 06 Nov 1994 08:49:37 GMT";
    let future = "Fri, 01 Jan 2100 00:00:00 GMT";

    let r = curl(&["-H", &format!("If-None-Match: {etag}"), &url]);
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(r.header("cache-control"), Some("public, max-age=3600"));
    // Weak comparison for If-None-Match, and lists.
    assert_eq!(
        curl(&["-H", &format!("If-None-Match: \"x\", W/{etag}"), &url]).status,
        304
    );
    assert_eq!(curl(&["-H", "If-None-Match: *", &url]).status, 304);
    assert_eq!(curl(&["-H", "If-None-Match: \"other\"", &url]).status, 200);
    // If-None-Match present: If-Modified-Since is ignored.
    assert_eq!(
        curl(&[
            "-H",
            "If-None-Match: \"other\"",
            "-H",
            &format!("If-Modified-Since: {future}"),
            &url
        ])
        .status,
        200
    );
    assert_eq!(
        curl(&["-H", &format!("If-Modified-Since: {lm}"), &url]).status,
        304
    );
    assert_eq!(
        curl(&["-H", &format!("If-Modified-Since: {past}"), &url]).status,
        200
    );
    assert_eq!(
        curl(&["-H", "If-Modified-Since: not a date", &url]).status,
        200
    );

    assert_eq!(curl(&["-H", "If-Match: \"other\"", &url]).status, 412);
    assert_eq!(
        curl(&["-H", &format!("If-Match: {etag}"), &url]).status,
        200
    );
    assert_eq!(curl(&["-H", "If-Match: *", &url]).status, 200);
    // If-Match uses strong comparison.
    assert_eq!(
        curl(&["-H", &format!("If-Match: W/{etag}"), &url]).status,
        412
    );
    assert_eq!(
        curl(&["-H", &format!("If-Unmodified-Since: {past}"), &url]).status,
        412
    );
    assert_eq!(
        curl(&["-H", &format!("If-Unmodified-Since: {future}"), &url]).status,
        200
    );
    // If-Match is evaluated before If-None-Match.
    assert_eq!(
        curl(&[
            "-H",
            "If-Match: \"other\"",
            "-H",
            &format!("If-None-Match: {etag}"),
            &url
        ])
        .status,
        412
    );
}

#[test]
fn ranges() {
    let h = host();
    let url = h.url("/digits.txt");
    let r = curl(&["-H", "Range: bytes=2-5", &url]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, b"2345");
    assert_eq!(r.header("content-range"), Some("bytes 2-5/20"));
    assert_eq!(r.header("content-length"), Some("4"));

    let r = curl(&["-H", "Range: bytes=-3", &url]);
    assert_eq!((r.status, r.body.as_slice()), (206, &b"hij"[..]));
    let r = curl(&["-H", "Range: bytes=18-", &url]);
    assert_eq!((r.status, r.body.as_slice()), (206, &b"ij"[..]));

    let r = curl(&["-H", "Range: bytes=0-1,10-11", &url]);
    assert_eq!(r.status, 206);
    let ct = r.header("content-type").unwrap();
    let boundary = ct
        .strip_prefix("multipart/byteranges; boundary=")
        .expect(ct);
    let body = r.text();
    assert!(
        body.contains("Content-Range: bytes 0-1/20\r\n\r\n01\r\n"),
        "{body}"
    );
    assert!(
        body.contains("Content-Range: bytes 10-11/20\r\n\r\nab\r\n"),
        "{body}"
    );
    assert!(body.ends_with(&format!("--{boundary}--\r\n")), "{body}");
    assert_eq!(
        r.header("content-length")
            .unwrap()
            .parse::<usize>()
            .unwrap(),
        r.body.len()
    );

    let r = curl(&["-H", "Range: bytes=50-60", &url]);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */20"));
    // A malformed Range is ignored.
    assert_eq!(curl(&["-H", "Range: bytes=x-y", &url]).status, 200);

    // If-Range: a matching strong ETag or date honours the Range, anything else sends all.
    let etag = get(&url).header("etag").unwrap().to_owned();
    let lm = get(&url).header("last-modified").unwrap().to_owned();
    assert_eq!(
        curl(&[
            "-H",
            "Range: bytes=0-0",
            "-H",
            &format!("If-Range: {etag}"),
            &url
        ])
        .status,
        206
    );
    assert_eq!(
        curl(&[
            "-H",
            "Range: bytes=0-0",
            "-H",
            &format!("If-Range: {lm}"),
            &url
        ])
        .status,
        206
    );
    let r = curl(&["-H", "Range: bytes=0-0", "-H", "If-Range: \"stale\"", &url]);
    assert_eq!((r.status, r.body.len()), (200, 20));
}

#[test]
fn directories() {
    let h = host();
    let r = get(&h.url("/docs?x=1&y=%20"));
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/docs/?x=1&y=%20"));
    let r = get(&h.url("/docs/"));
    assert_eq!((r.status, r.text().as_str()), (200, "<h1>docs</h1>\n"));
    assert_eq!(get(&h.url("/")).text(), "<h1>home</h1>\n");
    assert_eq!(get(&h.url("/empty/")).status, 403);
    assert_eq!(get(&h.url("/missing.txt")).status, 404);
    assert_eq!(get(&h.url("/style.css/x")).status, 404);
}

#[test]
fn encoded_names() {
    let h = host();
    assert_eq!(get(&h.url("/caf%C3%A9.txt")).text(), "unicode name");
    assert_eq!(get(&h.url("/a%20b.txt")).text(), "space name");
    assert_eq!(get(&h.url("//docs//./index.html")).status, 200);
}

#[test]
fn dotfiles_and_php_source_are_never_served() {
    let h = host();
    for path in [
        "/.env",
        "/.git/config",
        "/.git/",
        "/%2eenv",
        "/hello.php",
        "/upper.PHP",
        "/trail.php.",
        "/inc.phtml",
        "/hello.php%20",
        "/HELLO.php",
    ] {
        let r = get(&h.url(path));
        assert_eq!(r.status, 404, "{path}");
        assert!(!r.text().contains("secret"), "{path}");
    }
    assert_eq!(get(&h.url("/.well-known/acme.txt")).text(), "token");
    assert_eq!(get(&h.url("/hello.php%00.txt")).status, 400);
}

#[test]
fn traversal_attempts_never_escape_the_root() {
    let h = host();
    let attempts = [
        ("/../secret.txt", 400),
        ("/%2e%2e/secret.txt", 400),
        ("/%2E%2E%2Fsecret.txt", 400),
        ("/..%2f..%2f..%2fetc/passwd", 400),
        ("/docs/../../secret.txt", 400),
        ("/..%5c..%5csecret.txt", 404),
        ("/%252e%252e/secret.txt", 404),
        ("//etc/passwd", 404),
        ("/secret-link.txt", 404),
        ("/etc-link/passwd", 404),
        ("/etc-link/", 404),
        ("/%00", 400),
        ("/digits.txt%00", 400),
    ];
    for (path, want) in attempts {
        let r = get(&h.url(path));
        assert_eq!(r.status, want, "{path}");
        let body = r.text();
        assert!(
            !body.contains("outside the root") && !body.contains("root:"),
            "{path}: {body}"
        );
    }
    // A symlink that stays inside the root is fine.
    assert_eq!(get(&h.url("/inside-link.css")).status, 200);
    // A raw NUL byte in the request line.
    let raw = raw_request(
        h.port,
        b"GET /digits.txt\0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        raw.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
}

#[test]
fn other_methods_get_405_with_allow() {
    let h = host();
    for m in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let r = curl(&["-X", m, &h.url("/style.css")]);
        assert_eq!(r.status, 405, "{m}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
    }
}

#[test]
fn precompressed_sidecars() {
    let h = host();
    let url = h.url("/app.js");
    let r = curl(&["-H", "Accept-Encoding: gzip, br", &url]);
    assert_eq!(r.text(), "BROTLI-SIDECAR");
    assert_eq!(r.header("content-encoding"), Some("br"));
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    assert_eq!(r.header("content-type"), Some("text/javascript"));
    let r = curl(&["-H", "Accept-Encoding: gzip", &url]);
    assert_eq!(
        (r.text().as_str(), r.header("content-encoding")),
        ("GZIP-SIDECAR", Some("gzip"))
    );
    let gz_etag = r.header("etag").unwrap().to_owned();
    let r = curl(&["-H", "Accept-Encoding: identity", &url]);
    assert_eq!(r.text(), "console.log('hi');\n");
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    assert_ne!(r.header("etag"), Some(gz_etag.as_str()));
    // A text file without sidecars varies all the same: on-the-fly compression
    // (tests/compression.rs) codes it for clients that take it once it is long
    // enough. An image never varies.
    assert_eq!(
        curl(&["-H", "Accept-Encoding: gzip", &h.url("/style.css")]).header("vary"),
        Some("Accept-Encoding")
    );
    assert_eq!(
        curl(&["-H", "Accept-Encoding: gzip", &h.url("/img.png")]).header("vary"),
        None
    );
}

#[test]
fn large_file_streams_intact() {
    let h = host();
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "-", &h.url("/big.bin")])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        out.stdout == big(),
        "20 MiB body differs (got {} bytes)",
        out.stdout.len()
    );
    let r = curl(&["-H", "Range: bytes=10485760-10485775", &h.url("/big.bin")]);
    assert_eq!(r.body, big()[10485760..10485776]);
}

/// Large files go out by sendfile from stand-in chunks: several of them, ranges and
/// small files mixed on one kept-alive connection must each arrive exact.
#[test]
fn file_bodies_in_sequence_on_one_connection() {
    let h = host();
    std::fs::write(h.dir.path().join("public/mid.bin"), &big()[..100 << 10]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let urls = [
        "/big.bin",
        "/mid.bin",
        "/digits.txt",
        "/big.bin",
        "/mid.bin",
    ];
    let mut args = vec!["-s".to_owned(), "-S".to_owned()];
    for (i, u) in urls.iter().enumerate() {
        args.push(h.url(u));
        args.push("-o".to_owned());
        args.push(dir.path().join(i.to_string()).display().to_string());
    }
    let out = std::process::Command::new("curl")
        .args(&args)
        .arg("-w")
        .arg("%{num_connects} ")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One connection for all five.
    let connects: Vec<&str> = std::str::from_utf8(&out.stdout)
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        connects.iter().filter(|c| **c == "1").count(),
        1,
        "{connects:?}"
    );
    let want: [&[u8]; 5] = [
        &big(),
        &big()[..100 << 10],
        b"0123456789abcdefghij",
        &big(),
        &big()[..100 << 10],
    ];
    for (i, w) in want.iter().enumerate() {
        let got = std::fs::read(dir.path().join(i.to_string())).unwrap();
        assert!(
            got == *w,
            "response {i} ({}) differs: {} bytes",
            urls[i],
            got.len()
        );
    }
    // A range in the middle of a sendfile chunk, and one across two chunks.
    for (from, to) in [(1_500_000usize, 1_500_099usize), (1_048_000, 1_049_999)] {
        let r = curl(&[
            "-H",
            &format!("Range: bytes={from}-{to}"),
            &h.url("/big.bin"),
        ]);
        assert_eq!(r.status, 206);
        assert!(r.body == big()[from..=to], "range {from}-{to}");
    }
}

/// A file cut short while it is being sent ends the connection early, before its
/// announced length, and the worker keeps serving.
#[test]
fn a_file_truncated_while_sent_closes_the_connection() {
    use std::io::{Read, Write};
    let h = host();
    let path = h.dir.path().join("public/shrinks.bin");
    let data: Vec<u8> = big().into_iter().chain(big()).chain(big()).collect(); // 60 MiB
    std::fs::write(&path, &data).unwrap();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", h.port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(b"GET /shrinks.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut got = vec![0u8; 64 << 10];
    let n = s.read(&mut got).unwrap();
    got.truncate(n);
    // The client stops reading; the socket buffers fill; the file shrinks to 1 MiB.
    std::thread::sleep(std::time::Duration::from_millis(300));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    got.extend_from_slice(&rest);
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(std::str::from_utf8(&got[..head_end])
        .unwrap()
        .contains("content-length: 62914560"));
    let body = &got[head_end..];
    assert!(
        body.len() < data.len(),
        "the whole file arrived although it shrank"
    );
    // What the socket already held past the new end is the kernel's business (a
    // sendfile'd page may be dropped from the page cache under it, as with nginx);
    // what lies before it is the file.
    let bad = body[..body.len().min(1 << 20)]
        .iter()
        .zip(&data)
        .position(|(a, b)| a != b);
    assert!(bad.is_none(), "the file's first MiB differs at {bad:?}");
    // The worker goes on serving.
    assert_eq!(get(&h.url("/digits.txt")).body, b"0123456789abcdefghij");
}

#[test]
fn health_reports_backends() {
    let h = host();
    let r = get(&h.url("/_health"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["status"], "healthy");
    let s = &v["backends"]["static"];
    assert_eq!(s["healthy"], true);
    assert!(s["message"]
        .as_str()
        .unwrap()
        .starts_with("Static backend is healthy (root: "));
    assert!(s["latency_ms"].is_null());
    for b in ["embedded", "fastcgi"] {
        assert_eq!(v["backends"][b]["healthy"], false, "{b}");
        assert_eq!(v["backends"][b]["enabled"], false, "{b}");
    }
    // The static root disappears: unhealthy, 503.
    std::fs::rename(h.dir.path().join("public"), h.dir.path().join("gone")).unwrap();
    let r = get(&h.url("/_health"));
    assert_eq!(r.status, 503);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["status"], "unhealthy");
    assert_eq!(v["backends"]["static"]["healthy"], false);
}

#[test]
fn access_log_is_combined_format() {
    let h = host();
    curl(&[
        "-A",
        "agent/1.0",
        "-e",
        "http://ref.example/",
        &h.url("/style.css?q=1"),
    ]);
    std::thread::sleep(std::time::Duration::from_millis(800));
    let log = std::fs::read_to_string(h.dir.path().join("access.log")).unwrap();
    let line = log.lines().last().unwrap();
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(
        line.ends_with(
            "\"GET /style.css?q=1 HTTP/1.1\" 200 20 \"http://ref.example/\" \"agent/1.0\""
        ),
        "{line}"
    );
}

/// Small files are served from memory for up to a second: a changed or removed
/// file shows within that second, never later.
#[test]
fn a_small_file_changed_or_removed_shows_within_a_second() {
    let h = host();
    let file = h.dir.path().join("public/changing.txt");
    std::fs::write(&file, b"first").unwrap();
    assert_eq!(get(&h.url("/changing.txt")).text(), "first");
    // Same size, so only the content (and the modification time) differs.
    std::fs::write(&file, b"later").unwrap();
    let changed = std::time::Instant::now();
    loop {
        let r = get(&h.url("/changing.txt"));
        assert_eq!(r.status, 200);
        if r.text() == "later" {
            break;
        }
        assert_eq!(r.text(), "first");
        assert!(
            changed.elapsed() < std::time::Duration::from_millis(1500),
            "the old content was still served after {:?}",
            changed.elapsed()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::fs::remove_file(&file).unwrap();
    let removed = std::time::Instant::now();
    while get(&h.url("/changing.txt")).status != 404 {
        assert!(
            removed.elapsed() < std::time::Duration::from_millis(1500),
            "a removed file was still served after {:?}",
            removed.elapsed()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
