//! On-the-fly compression (`[backend.compression]`) through a running
//! fe-php-host, for every backend — embedded PHP (libphp), PHP-FPM, static files
//! and the proxy — with real clients (curl, with `--compressed` and with explicit
//! `Accept-Encoding`) and the codecs' own command-line tools decoding what came
//! (`gzip -d`, `brotli -d`, `zstd -d`): negotiation with q-values, Vary, ETag
//! weakening, what is never compressed (HEAD, ranges, no-transform, small bodies,
//! types not listed, responses already encoded), precompressed sidecars first,
//! large files and streams compressed as they go, and a PHP `flush()` that still
//! reaches the client, compressed, before the script ends.

mod common;

use common::peers::*;
use common::upstream::{RawUpstream, Reaction};
use common::*;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CODINGS: [&str; 3] = ["gzip", "br", "zstd"];

/// A page of `n` rows; the query says which headers to set: `ct` Content-Type,
/// `cc` Cache-Control, `vary`, `etag` (strong), `gz` (the script gzips itself).
const PAGE_PHP: &str = r#"<?php
$n = (int) ($_GET['n'] ?? 400);
foreach (['ct' => 'Content-Type', 'cc' => 'Cache-Control', 'vary' => 'Vary'] as $k => $h) {
    if (isset($_GET[$k])) {
        header("$h: " . $_GET[$k]);
    }
}
if (isset($_GET['etag'])) {
    header('ETag: "' . $_GET['etag'] . '"');
}
$body = '';
for ($i = 0; $i < $n; $i++) {
    $body .= "<p class=\"row\">row $i</p>\n";
}
if (isset($_GET['gz'])) {
    header('Content-Encoding: gzip');
    echo gzencode($body);
} else {
    echo $body;
}
"#;

/// A part, flush(), a second's work, the rest.
const STREAM_PHP: &str = r#"<?php
while (ob_get_level() > 0) {
    ob_end_flush();
}
echo str_repeat("<p>first part</p>\n", 50);
flush();
sleep(1);
echo "<p>second part</p>\n";
"#;

/// What `page.php?n=N` sends.
fn page(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| format!("<p class=\"row\">row {i}</p>\n"))
        .collect::<String>()
        .into_bytes()
}

fn stream_body() -> String {
    "<p>first part</p>\n".repeat(50) + "<p>second part</p>\n"
}

/// Text that compresses, `len` bytes.
fn text(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 0;
    while out.len() < len {
        out.extend_from_slice(
            format!(
                ".rule-{i} {{ margin: {}px; color: #{:06x}; }}\n",
                i % 17,
                i * 7919 % 0xffffff
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.truncate(len);
    out
}

/// Bytes that do not compress (a PNG's worth).
fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push((x >> 24) as u8);
    }
    out
}

/// Runs `tool args` with `input` on its standard input; its standard output.
fn pipe(tool: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{tool} is not installed (scripts/install-deps.sh): {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `data` decoded by the coding's own tool.
fn decode(coding: &str, data: &[u8]) -> Vec<u8> {
    let tool = match coding {
        "gzip" => "gzip",
        "br" => "brotli",
        "zstd" => "zstd",
        other => panic!("no decoder for {other}"),
    };
    pipe(tool, &["-d", "-c"], data)
}

/// `data` compressed by the coding's own tool (for sidecars).
fn encode(coding: &str, data: &[u8]) -> Vec<u8> {
    match coding {
        "gzip" => pipe("gzip", &["-9", "-c"], data),
        "br" => pipe("brotli", &["-c"], data),
        "zstd" => pipe("zstd", &["-19", "-c", "-q"], data),
        other => panic!("no encoder for {other}"),
    }
}

/// GET with `Accept-Encoding: ae` (and more curl arguments), body as sent.
fn fetch(url: &str, ae: &str, args: &[&str]) -> Reply {
    let header = format!("Accept-Encoding: {ae}");
    let mut all = vec!["-H", header.as_str()];
    all.extend_from_slice(args);
    all.push(url);
    curl(&all)
}

/// The values of every line of header `name`.
fn all(r: &Reply, name: &str) -> Vec<String> {
    r.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
        .collect()
}

/// The body as the client reads it: decoded with the tool of its coding.
fn decoded(r: &Reply) -> Vec<u8> {
    match r.header("content-encoding") {
        Some(c) => decode(c, &r.body),
        None => r.body.clone(),
    }
}

/// Asserts `r` is `expected` compressed with `coding`, with Vary; when `whole`
/// (a body compressed at once) its Content-Length is the compressed length,
/// else there is none (chunked).
fn assert_compressed(r: &Reply, coding: &str, expected: &[u8], whole: bool, what: &str) {
    assert_eq!(r.status, 200, "{what}");
    assert_eq!(
        r.header("content-encoding"),
        Some(coding),
        "{what}: {:?}",
        r.headers
    );
    assert_eq!(r.header("vary"), Some("Accept-Encoding"), "{what}");
    assert!(
        r.body.len() < expected.len() / 2,
        "{what}: {} bytes for {}",
        r.body.len(),
        expected.len()
    );
    assert!(
        decode(coding, &r.body) == expected,
        "{what}: decodes to something else"
    );
    let length = r.header("content-length");
    if whole {
        assert_eq!(length, Some(r.body.len().to_string().as_str()), "{what}");
    } else {
        assert_eq!(length, None, "{what}: a streamed compression has no length");
    }
    assert!(r.header("accept-ranges").is_none(), "{what}");
}

fn assert_identity(r: &Reply, expected: &[u8], what: &str) {
    assert_eq!(
        r.header("content-encoding"),
        None,
        "{what}: {:?}",
        r.headers
    );
    assert!(r.body == expected, "{what}: not the body as it is");
}

/// The site every test serves from `www/`: the scripts, static files of each
/// kind, and a file with precompressed sidecars.
fn write_site(www: &Path) {
    std::fs::create_dir_all(www).unwrap();
    let write = |name: &str, data: &[u8]| std::fs::write(www.join(name), data).unwrap();
    write("page.php", PAGE_PHP.as_bytes());
    write("stream.php", STREAM_PHP.as_bytes());
    write("style.css", &text(20_000));
    write("big.js", &text(600_000));
    write("tiny.txt", b"tiny\n");
    write("logo.png", &noise(20_000));
    // Sidecars whose content differs from the file's, so the test sees which one came.
    write("app.js", &text(5_000));
    for (coding, ext) in [("br", "br"), ("gzip", "gz"), ("zstd", "zst")] {
        let marked = format!("/* the {coding} sidecar */\n").into_bytes();
        write(
            &format!("app.js.{ext}"),
            &encode(coding, &[marked, text(5_000)].concat()),
        );
    }
    write("only-gz.css", &text(5_000));
    write(
        "only-gz.css.gz",
        &encode("gzip", b"/* the gzip sidecar */\n"),
    );
}

fn sidecar_text(coding: &str) -> Vec<u8> {
    [
        format!("/* the {coding} sidecar */\n").into_bytes(),
        text(5_000),
    ]
    .concat()
}

#[derive(Clone, Copy, Debug)]
enum Php {
    Embedded,
    FastCgi,
}

/// A host serving the site with `php` (and `sections` after the static section);
/// the php-fpm it uses, if any, lives as long as it.
struct Server {
    host: Host,
    _fpm: Option<PhpFpm>,
    _site: tempfile::TempDir,
}

fn php_server(php: Php, sections: &str) -> Server {
    let site = tempfile::tempdir().unwrap();
    let www = site.path().join("www");
    write_site(&www);
    let (config, fpm) = match php {
        Php::Embedded => (
            HostConfig::embedded_site("display_errors = \"0\"").root(&www.display().to_string()),
            None,
        ),
        Php::FastCgi => {
            let fpm = PhpFpm::start(&www, FpmListen::Unix);
            (HostConfig::fastcgi_site(&www, fpm.address(), ""), Some(fpm))
        }
    };
    let host = Host::start(&config.sections(sections).toml(), |_| {});
    // The first script starts PHP's runners: out of the timings below.
    assert_eq!(get(&host.url("/page.php?n=1")).status, 200);
    Server {
        host,
        _fpm: fpm,
        _site: site,
    }
}

fn static_server(sections: &str) -> Host {
    Host::start(
        &HostConfig::static_site().sections(sections).toml(),
        |dir| write_site(&dir.join("public")),
    )
}

// --- PHP: negotiation, q-values, Vary -----------------------------------------

fn php_is_compressed_as_negotiated(php: Php) {
    let s = php_server(php, "");
    let url = s.host.url("/page.php?n=800");
    let body = page(800);
    for coding in CODINGS {
        let r = fetch(&url, coding, &[]);
        assert_compressed(&r, coding, &body, true, &format!("{php:?} {coding}"));
    }
    // q-values: the highest weight wins; among equal ones zstd > br > gzip; q=0
    // refuses; `*` stands for the rest; x-gzip is gzip.
    for (ae, coding) in [
        ("gzip, br, zstd", Some("zstd")),
        ("gzip, br", Some("br")),
        ("gzip;q=1, br;q=0.5, zstd;q=0.2", Some("gzip")),
        ("br;q=0.8, gzip;q=0.9", Some("gzip")),
        ("zstd;q=0, *", Some("br")),
        ("zstd;q=0, br;q=0, *;q=0.3", Some("gzip")),
        ("*", Some("zstd")),
        ("x-gzip", Some("gzip")),
        ("GZIP;Q=0.5", Some("gzip")),
        ("identity", None),
        ("gzip;q=0", None),
        ("*;q=0", None),
        ("deflate", None),
        ("", None),
    ] {
        let r = fetch(&url, ae, &[]);
        assert_eq!(
            r.header("content-encoding"),
            coding,
            "{php:?} Accept-Encoding: {ae}"
        );
        assert_eq!(r.header("vary"), Some("Accept-Encoding"), "{php:?} {ae}");
        assert!(decoded(&r) == body, "{php:?} {ae}");
    }
    // No Accept-Encoding at all: as it is, but with Vary.
    let r = get(&url);
    assert_identity(&r, &body, &format!("{php:?} no Accept-Encoding"));
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    assert_eq!(
        r.header("content-length"),
        Some(body.len().to_string().as_str())
    );
    // curl --compressed (it offers what it decodes) reads the page.
    let r = curl(&["--compressed", &url]);
    assert!(
        r.header("content-encoding").is_some(),
        "{php:?}: {:?}",
        r.headers
    );
    assert!(r.body == body, "{php:?}: curl --compressed");
    // A Vary of the script's own is kept, Accept-Encoding added to it once.
    let r = fetch(&s.host.url("/page.php?n=800&vary=Cookie"), "gzip", &[]);
    assert_eq!(all(&r, "vary"), ["Cookie, Accept-Encoding"], "{php:?}");
    let r = fetch(
        &s.host.url("/page.php?n=800&vary=accept-encoding"),
        "gzip",
        &[],
    );
    assert_eq!(all(&r, "vary"), ["accept-encoding"], "{php:?}");
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    // JSON is listed, its charset parameter does not matter.
    let r = fetch(
        &s.host
            .url("/page.php?n=800&ct=application/json;%20charset=utf-8"),
        "br",
        &[],
    );
    assert_compressed(&r, "br", &body, true, &format!("{php:?} json"));
}

#[test]
fn embedded_php_is_compressed_as_negotiated() {
    php_is_compressed_as_negotiated(Php::Embedded);
}

#[test]
fn fastcgi_php_is_compressed_as_negotiated() {
    php_is_compressed_as_negotiated(Php::FastCgi);
}

// --- PHP: what is never compressed --------------------------------------------

fn php_exceptions(php: Php) {
    let s = php_server(php, "");
    let body = page(800);
    let url = |q: &str| s.host.url(&format!("/page.php?n=800{q}"));
    // Cache-Control: no-transform: as it is, and no Vary (no client gets it coded).
    let r = fetch(&url("&cc=no-transform"), "gzip, br, zstd", &[]);
    assert_identity(&r, &body, &format!("{php:?} no-transform"));
    assert_eq!(r.header("vary"), None);
    let r = fetch(
        &url("&cc=public,%20No-Transform,%20max-age=60"),
        "gzip",
        &[],
    );
    assert_identity(&r, &body, &format!("{php:?} no-transform among others"));
    // A small body: as it is, with Vary.
    let r = fetch(&s.host.url("/page.php?n=10"), "gzip", &[]);
    assert_identity(&r, &page(10), &format!("{php:?} small"));
    assert!(page(10).len() < 1024);
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    // A type not listed (an image the script makes): as it is, no Vary.
    let r = fetch(&url("&ct=image/png"), "gzip", &[]);
    assert_identity(&r, &body, &format!("{php:?} image"));
    assert_eq!(r.header("vary"), None);
    // The script gzips itself (ob_gzhandler, gzencode): never twice.
    let r = fetch(&url("&gz=1"), "gzip, br, zstd", &[]);
    assert_eq!(all(&r, "content-encoding"), ["gzip"], "{php:?}");
    assert!(decode("gzip", &r.body) == body, "{php:?}: coded twice?");
    // HEAD: no coding, Vary.
    let r = fetch(&url(""), "gzip", &["-I"]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), None, "{php:?} HEAD");
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    // A request with Range: PHP answers 200 with the whole body, not coded.
    let r = fetch(&url(""), "gzip", &["-H", "Range: bytes=0-99"]);
    assert_identity(&r, &body, &format!("{php:?} Range"));
}

#[test]
fn embedded_php_exceptions() {
    php_exceptions(Php::Embedded);
}

#[test]
fn fastcgi_php_exceptions() {
    php_exceptions(Php::FastCgi);
}

// --- PHP: flush() still streams -------------------------------------------------

/// What curl --compressed -N made of a streamed response: its head, when the
/// decoded body first held `marker`, when it ended, and the decoded body.
struct Streamed {
    head: String,
    marker_at: Option<Duration>,
    total: Duration,
    body: Vec<u8>,
}

fn stream(url: &str, ae: &str, marker: &[u8]) -> Streamed {
    let started = Instant::now();
    let mut child = Command::new("curl")
        .args(["-s", "-S", "-N", "-i", "--compressed", "--max-time", "20"])
        .args(["-H", &format!("Accept-Encoding: {ae}"), url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut got = Vec::new();
    let mut marker_at = None;
    let mut buf = [0u8; 4096];
    loop {
        let n = out.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if marker_at.is_none() && got.windows(marker.len()).any(|w| w == marker) {
            marker_at = Some(started.elapsed());
        }
    }
    let total = started.elapsed();
    assert!(child.wait().unwrap().success());
    let split = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    Streamed {
        head: String::from_utf8_lossy(&got[..split]).to_ascii_lowercase(),
        marker_at,
        total,
        body: got[split + 4..].to_vec(),
    }
}

/// The first part, flushed before a second's sleep, reaches the client decoded
/// well before the script ends, in every coding.
fn assert_flush_streams(url: &str, what: &str) {
    for coding in CODINGS {
        let s = stream(url, coding, b"<p>first part</p>\n");
        assert!(
            s.head.contains(&format!("\r\ncontent-encoding: {coding}")),
            "{what} {coding}: {}",
            s.head
        );
        assert!(
            !s.head.contains("content-length"),
            "{what} {coding}: {}",
            s.head
        );
        let first = s.marker_at.expect("the first part arrived");
        assert!(
            first < Duration::from_millis(500),
            "{what} {coding}: the flushed part took {first:?}: flush() did not reach the client"
        );
        assert!(
            s.total >= Duration::from_millis(900),
            "{what} {coding}: {:?}",
            s.total
        );
        assert_eq!(
            String::from_utf8_lossy(&s.body),
            stream_body(),
            "{what} {coding}"
        );
    }
}

#[test]
fn embedded_flush_reaches_the_client_compressed() {
    let s = php_server(Php::Embedded, "");
    assert_flush_streams(&s.host.url("/stream.php"), "embedded");
}

#[test]
fn fastcgi_flush_reaches_the_client_compressed() {
    let s = php_server(Php::FastCgi, "");
    assert_flush_streams(&s.host.url("/stream.php"), "fastcgi");
}

// --- static files ----------------------------------------------------------------

#[test]
fn static_files_are_compressed_and_keep_their_validators() {
    let h = static_server("");
    let css = text(20_000);
    for coding in CODINGS {
        let r = fetch(&h.url("/style.css"), coding, &[]);
        assert_compressed(&r, coding, &css, true, &format!("style.css {coding}"));
        assert_eq!(r.header("content-type"), Some("text/css"));
        assert!(r.header("last-modified").is_some(), "Last-Modified is kept");
        assert!(r.header("cache-control").is_some());
    }
    // The strong tag of the file, weakened for the coded body.
    let plain = fetch(&h.url("/style.css"), "identity", &[]);
    assert_identity(&plain, &css, "identity");
    assert_eq!(plain.header("vary"), Some("Accept-Encoding"));
    assert_eq!(plain.header("accept-ranges"), Some("bytes"));
    let strong = plain.header("etag").unwrap().to_owned();
    assert!(strong.starts_with('"'), "{strong}");
    let r = fetch(&h.url("/style.css"), "gzip", &[]);
    let weak = r.header("etag").unwrap().to_owned();
    assert_eq!(weak, format!("W/{strong}"));
    // Revalidation: each client's tag validates, and the 304 carries the tag the
    // client holds.
    let r = fetch(
        &h.url("/style.css"),
        "gzip",
        &["-H", &format!("If-None-Match: {weak}")],
    );
    assert_eq!(r.status, 304);
    assert_eq!(r.header("etag"), Some(weak.as_str()));
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    let r = fetch(
        &h.url("/style.css"),
        "identity",
        &["-H", &format!("If-None-Match: {strong}")],
    );
    assert_eq!(r.status, 304);
    assert_eq!(r.header("etag"), Some(strong.as_str()));
    // A range: the bytes asked for, never coded; If-Range with the weak tag
    // cannot match (a strong comparison), so the whole file, not coded.
    let r = fetch(&h.url("/style.css"), "gzip", &["-H", "Range: bytes=0-99"]);
    assert_eq!(r.status, 206);
    assert_identity(&r, &css[..100], "range");
    let r = fetch(
        &h.url("/style.css"),
        "gzip",
        &[
            "-H",
            "Range: bytes=0-99",
            "-H",
            &format!("If-Range: {weak}"),
        ],
    );
    assert_eq!(r.status, 200);
    assert_identity(&r, &css, "If-Range with the weak tag");
    // HEAD: not coded.
    let r = fetch(&h.url("/style.css"), "gzip", &["-I"]);
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.header("content-length"), Some("20000"));
    assert_eq!(r.header("etag"), Some(strong.as_str()));
    // Small, and curl --compressed.
    let r = fetch(&h.url("/tiny.txt"), "gzip", &[]);
    assert_identity(&r, b"tiny\n", "tiny.txt");
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    let r = curl(&["--compressed", &h.url("/style.css")]);
    assert!(r.header("content-encoding").is_some() && r.body == css);
}

#[test]
fn large_static_files_are_compressed_as_they_are_sent() {
    let h = static_server("");
    let js = text(600_000);
    for coding in CODINGS {
        let r = fetch(&h.url("/big.js"), coding, &[]);
        assert_compressed(&r, coding, &js, false, &format!("big.js {coding}"));
        let r = curl(&[
            "--compressed",
            "-H",
            &format!("Accept-Encoding: {coding}"),
            &h.url("/big.js"),
        ]);
        assert!(r.body == js, "{coding}: curl --compressed");
    }
}

/// Images stay files the host sends with sendfile: not read, not coded, no Vary.
#[test]
fn already_compressed_types_keep_their_zero_copy_path() {
    let h = static_server("");
    let metrics = |h: &Host| {
        metric_sum(
            &get(&h.url("/_metrics")).text(),
            "fephp_static_sendfile_bytes_total",
            &[],
        )
    };
    let before = metrics(&h);
    let png = noise(20_000);
    let r = fetch(&h.url("/logo.png"), "gzip, br, zstd", &[]);
    assert_identity(&r, &png, "logo.png");
    assert_eq!(r.header("vary"), None);
    assert_eq!(r.header("content-length"), Some("20000"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(
        metrics(&h) - before,
        20_000.0,
        "the PNG went out as a file range"
    );
    // A compressed CSS is not a file range any more.
    let before = metrics(&h);
    let r = fetch(&h.url("/style.css"), "gzip", &[]);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(metrics(&h) - before, 0.0);
}

#[test]
fn precompressed_sidecars_are_preferred() {
    let h = static_server("");
    let url = h.url("/app.js");
    for (ae, coding) in [
        ("gzip, br, zstd", "br"),
        ("zstd, gzip", "zstd"),
        ("gzip", "gzip"),
        ("br;q=0.5, zstd;q=0.4, gzip", "gzip"),
        ("br;q=0, *", "zstd"),
    ] {
        let r = fetch(&url, ae, &[]);
        assert_eq!(r.header("content-encoding"), Some(coding), "{ae}");
        assert!(
            decode(coding, &r.body) == sidecar_text(coding),
            "{ae}: not the {coding} sidecar"
        );
        assert_eq!(r.header("vary"), Some("Accept-Encoding"), "{ae}");
        // The sidecar's own strong tag and length.
        let etag = r.header("etag").unwrap();
        assert!(
            etag.starts_with('"') && etag.ends_with(&format!("-{coding}\"")),
            "{etag}"
        );
        assert_eq!(
            r.header("content-length"),
            Some(r.body.len().to_string().as_str())
        );
    }
    let r = fetch(&url, "identity", &[]);
    assert_identity(&r, &text(5_000), "app.js identity");
    // A sidecar wins over a better on-the-fly coding the client also takes...
    let r = fetch(&h.url("/only-gz.css"), "zstd, br, gzip", &[]);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(decode("gzip", &r.body), b"/* the gzip sidecar */\n");
    // ...and a client that does not take it gets the file compressed on the fly.
    let r = fetch(&h.url("/only-gz.css"), "br", &[]);
    assert_compressed(&r, "br", &text(5_000), true, "only-gz.css br");
    assert_eq!(all(&r, "vary"), ["Accept-Encoding"]);
}

// --- the proxy -------------------------------------------------------------------

fn proxy_host(upstream: &str, sections: &str) -> Host {
    Host::start(
        &HostConfig::static_site()
            .default_backend("proxy")
            .sections(&format!(
                "[backend.proxy]\nupstream = \"{upstream}\"\n{sections}"
            ))
            .toml(),
        |dir| std::fs::create_dir_all(dir.join("public")).unwrap(),
    )
}

#[test]
fn proxied_responses_are_compressed() {
    let body = page(800);
    let plain = body.clone();
    let gz = encode("gzip", &body);
    let upstream = RawUpstream::start(move |req| {
        let (ce, data): (&str, &[u8]) = if req.request_line().contains("/coded") {
            ("Content-Encoding: gzip\r\n", &gz)
        } else {
            ("", &plain)
        };
        let mut r = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nETag: \"v1\"\r\n{ce}Content-Length: {}\r\n\r\n",
            data.len()
        )
        .into_bytes();
        r.extend_from_slice(data);
        Reaction::Reply(r)
    });
    let h = proxy_host(&upstream.url(), "");
    for coding in CODINGS {
        let r = fetch(&h.url("/page"), coding, &[]);
        assert_compressed(&r, coding, &body, true, &format!("proxy {coding}"));
        assert_eq!(r.header("etag"), Some("W/\"v1\""));
    }
    // The client's Accept-Encoding reached the upstream, which may code itself:
    // then its coding goes through as it is.
    assert!(upstream
        .received()
        .iter()
        .any(|r| r.header("accept-encoding") == ["zstd"]));
    let r = fetch(&h.url("/coded"), "gzip, br, zstd", &[]);
    assert_eq!(all(&r, "content-encoding"), ["gzip"]);
    assert!(decode("gzip", &r.body) == body);
    assert_eq!(r.header("etag"), Some("\"v1\""));
}

/// A streamed upstream (another fe-php-host running the script, with
/// compression off) is compressed as it streams, flush() for flush().
#[test]
fn proxied_streams_are_compressed_as_they_stream() {
    let upstream = Host::start(
        &HostConfig::embedded_site("display_errors = \"0\"")
            .root("{dir}/www")
            .sections("[backend.compression]\nenable = false\n")
            .toml(),
        |dir| write_site(&dir.join("www")),
    );
    assert_eq!(get(&upstream.url("/page.php?n=1")).status, 200);
    let h = proxy_host(&format!("http://127.0.0.1:{}", upstream.port), "");
    assert_flush_streams(&h.url("/stream.php"), "proxy");
}

// --- settings --------------------------------------------------------------------

#[test]
fn compression_is_configurable() {
    // Off: nothing coded, no Vary.
    let h = static_server("[backend.compression]\nenable = false\n");
    let r = fetch(&h.url("/style.css"), "gzip, br, zstd", &[]);
    assert_identity(&r, &text(20_000), "off");
    assert_eq!(r.header("vary"), None);
    // Sidecars are the static backend's and still served.
    let r = fetch(&h.url("/app.js"), "br", &[]);
    assert_eq!(r.header("content-encoding"), Some("br"));
    drop(h);

    // Only gzip, at its smallest, for text/* only, from 32 KiB on.
    let h = static_server(
        "[backend.compression]\nencodings = [\"gzip\"]\ngzip_level = 9\ntypes = [\"text/*\"]\nmin_length = \"32K\"\n",
    );
    let r = fetch(&h.url("/big.js"), "zstd, br, gzip", &[]);
    assert_compressed(&r, "gzip", &text(600_000), false, "gzip only");
    let r = fetch(&h.url("/big.js"), "zstd, br", &[]);
    assert_identity(&r, &text(600_000), "no gzip accepted");
    let r = fetch(&h.url("/style.css"), "gzip", &[]);
    assert_identity(&r, &text(20_000), "below min_length");
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    drop(h);

    // A type list without CSS.
    let h = static_server("[backend.compression]\ntypes = [\"text/html\"]\n");
    let r = fetch(&h.url("/style.css"), "gzip", &[]);
    assert_identity(&r, &text(20_000), "CSS not listed");
    assert_eq!(r.header("vary"), None);
}

/// A bad section stops the host at start, naming the key and the fix.
#[test]
fn a_bad_compression_section_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fe-php.toml");
    std::fs::create_dir_all(dir.path().join("public")).unwrap();
    std::fs::write(
        &config,
        HostConfig::static_site()
            .sections("[backend.compression]\nbrotli_level = 12\ntypes = [\"image/jpeg\"]\n")
            .toml()
            .replace("{port}", &free_port().to_string())
            .replace("{dir}", dir.path().to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new(HOST_BIN)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("[backend.compression] brotli_level = 12 is out of range: use 0 (fastest) to 11 (smallest)."),
        "{err}"
    );
    assert!(err.contains("[backend.compression] types: \"image/jpeg\" is (or includes) a type whose bodies are compressed already"), "{err}");
}
