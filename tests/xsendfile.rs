//! `X-Sendfile` / `X-Accel-Redirect` (`[backend.sendfile]`) through a running
//! fe-php-host, with real libphp (embedded) and real php-fpm (FastCGI), and curl:
//! a download behind an authorization check, ranges and conditionals from the
//! client, the script's headers kept, and nothing outside the configured roots
//! ever sent (traversal, encoded traversal, symlinks out, directories, missing
//! files, NUL bytes). Disabled, the headers pass through untouched.

mod common;

use common::peers::*;
use common::*;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use std::os::unix::fs::symlink;
use std::path::PathBuf;

/// The script behind the check: a cookie decides, then it names the file in the
/// header `h` (default X-Sendfile) with the value `v`, sets the headers a
/// download sets, and writes a body of its own that must never reach the client.
const DOWNLOAD_PHP: &str = r#"<?php
if (($_COOKIE['auth'] ?? '') !== 'letmein') {
    http_response_code(403);
    echo "denied\n";
    exit;
}
header('Content-Disposition: attachment; filename="' . basename($_GET['v']) . '"');
header('Cache-Control: private, max-age=60');
setcookie('downloaded', '1');
if (isset($_GET['ct'])) {
    header('Content-Type: ' . $_GET['ct']);
}
header(($_GET['h'] ?? 'X-Sendfile') . ': ' . $_GET['v']);
echo "PHP BODY\n";
"#;

const SECRET: &[u8] = b"TOP SECRET: outside every root\n";

/// A site: `www/download.php`; `protected/` (the root, and the location
/// `/protected/`) with `data.bin` (200 KiB, so the host sends it with
/// `sendfile`), `report.pdf`, `notes.txt`, a directory `sub/`, and symlinks out
/// of it to `secret.txt`, which lies beside it.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let www = dir.path().join("www");
        let protected = dir.path().join("protected");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::create_dir_all(protected.join("sub")).unwrap();
        std::fs::write(www.join("download.php"), DOWNLOAD_PHP).unwrap();
        std::fs::write(protected.join("data.bin"), data()).unwrap();
        std::fs::write(protected.join("report.pdf"), b"%PDF-1.4 report\n").unwrap();
        std::fs::write(protected.join("notes.txt"), b"notes\n").unwrap();
        std::fs::write(protected.join("sub/inner.txt"), b"inner\n").unwrap();
        std::fs::write(dir.path().join("secret.txt"), SECRET).unwrap();
        symlink("../secret.txt", protected.join("escape.txt")).unwrap();
        symlink(
            dir.path().join("secret.txt"),
            protected.join("abs-escape.txt"),
        )
        .unwrap();
        symlink(dir.path(), protected.join("up")).unwrap();
        Site { dir }
    }

    fn www(&self) -> PathBuf {
        self.dir.path().join("www")
    }

    fn protected(&self) -> PathBuf {
        self.dir.path().join("protected")
    }

    /// An absolute path below the site.
    fn path(&self, rel: &str) -> String {
        format!("{}/{rel}", self.dir.path().display())
    }

    /// `[backend.sendfile]` for this site.
    fn sendfile_section(&self) -> String {
        let p = self.protected().display().to_string();
        format!(
            "[backend.sendfile]\nenable = true\nroots = [\"{p}\"]\n\n[[backend.sendfile.locations]]\nprefix = \"/protected/\"\nroot = \"{p}\"\n"
        )
    }
}

/// 200 KiB of bytes that differ from offset to offset.
fn data() -> Vec<u8> {
    (0..200 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

#[derive(Clone, Copy, Debug)]
enum Php {
    Embedded,
    FastCgi,
}

/// A host serving `site` with the PHP backend `php`; `sections` after the static
/// section (`[backend.sendfile]`, or nothing). The php-fpm it uses, if any, lives
/// as long as it.
struct Server {
    host: Host,
    _fpm: Option<PhpFpm>,
}

fn server(site: &Site, php: Php, sections: &str) -> Server {
    let www = site.www().display().to_string();
    let (config, fpm) = match php {
        Php::Embedded => (
            HostConfig::embedded_site("display_errors = \"0\"").root(&www),
            None,
        ),
        Php::FastCgi => {
            let fpm = PhpFpm::start(&site.www(), FpmListen::Unix);
            (
                HostConfig::fastcgi_site(&site.www(), fpm.address(), ""),
                Some(fpm),
            )
        }
    };
    let host = Host::start(&config.sections(sections).toml(), |_| {});
    Server { host, _fpm: fpm }
}

fn enabled(site: &Site, php: Php) -> Server {
    server(site, php, &site.sendfile_section())
}

/// The download URL naming `value` in `header`, with `extra` query text.
fn download_url(s: &Server, header: &str, value: &str, extra: &str) -> String {
    s.host.url(&format!(
        "/download.php?h={header}&v={}{extra}",
        utf8_percent_encode(value, NON_ALPHANUMERIC)
    ))
}

/// GET with the authorization cookie (and more curl arguments).
fn fetch(url: &str, args: &[&str]) -> Reply {
    let mut all = vec!["-H", "Cookie: auth=letmein"];
    all.extend_from_slice(args);
    all.push(url);
    curl(&all)
}

fn assert_no_sendfile_headers(r: &Reply) {
    assert!(
        r.header("x-sendfile").is_none() && r.header("x-accel-redirect").is_none(),
        "the header reached the client: {:?}",
        r.headers
    );
}

// --- a download behind an authorization check ---------------------------------

fn download_behind_an_auth_check(php: Php) {
    let site = Site::new();
    let s = enabled(&site, php);
    let data_path = site.protected().join("data.bin").display().to_string();
    for (header, value) in [
        ("X-Sendfile", data_path.as_str()),
        ("X-Accel-Redirect", "/protected/data.bin"),
    ] {
        // No cookie: the script refuses, and its own answer goes out.
        let url = download_url(&s, header, value, "");
        let r = curl(&[&url]);
        assert_eq!(r.status, 403, "{php:?} {header}");
        assert_eq!(r.text(), "denied\n");
        assert_no_sendfile_headers(&r);

        let r = fetch(&url, &[]);
        assert_eq!(r.status, 200, "{php:?} {header}: {}", r.text());
        assert!(r.body == data(), "{php:?} {header}: not the file's bytes");
        assert_eq!(r.header("content-length"), Some("204800"));
        assert_eq!(
            r.header("content-type"),
            Some("application/octet-stream"),
            "{php:?} {header}: the extension decides, not PHP's default text/html"
        );
        assert_eq!(
            r.header("content-disposition"),
            Some("attachment; filename=\"data.bin\"")
        );
        assert_eq!(r.header("cache-control"), Some("private, max-age=60"));
        assert_eq!(r.header("set-cookie"), Some("downloaded=1"));
        assert_eq!(r.header("accept-ranges"), Some("bytes"));
        assert!(r.header("etag").is_some() && r.header("last-modified").is_some());
        assert_no_sendfile_headers(&r);

        // HEAD: the same headers, no body.
        let r = fetch(&url, &["-I"]);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-length"), Some("204800"));
        assert!(r.body.is_empty());
    }
}

#[test]
fn embedded_download_behind_an_auth_check() {
    download_behind_an_auth_check(Php::Embedded);
}

#[test]
fn fastcgi_download_behind_an_auth_check() {
    download_behind_an_auth_check(Php::FastCgi);
}

// --- ranges and conditionals are the client's ---------------------------------

fn ranges_and_conditionals(php: Php) {
    let site = Site::new();
    let s = enabled(&site, php);
    let data_path = site.protected().join("data.bin").display().to_string();
    for (header, value) in [
        ("X-Sendfile", data_path.as_str()),
        ("X-Accel-Redirect", "/protected/data.bin"),
    ] {
        let url = download_url(&s, header, value, "");
        let r = fetch(&url, &["-H", "Range: bytes=1000-1999"]);
        assert_eq!(r.status, 206, "{php:?} {header}");
        assert!(
            r.body == data()[1000..2000],
            "{php:?} {header}: wrong bytes"
        );
        assert_eq!(r.header("content-range"), Some("bytes 1000-1999/204800"));
        assert_eq!(r.header("content-length"), Some("1000"));
        assert_eq!(
            r.header("content-disposition"),
            Some("attachment; filename=\"data.bin\"")
        );

        let r = fetch(&url, &["-H", "Range: bytes=-10"]);
        assert_eq!(r.status, 206);
        assert!(r.body == data()[204790..]);

        let r = fetch(&url, &["-H", "Range: bytes=999999-"]);
        assert_eq!(r.status, 416);
        assert_eq!(r.header("content-range"), Some("bytes */204800"));
        assert!(r.body != data());

        let full = fetch(&url, &[]);
        let etag = full.header("etag").unwrap().to_owned();
        let last_modified = full.header("last-modified").unwrap().to_owned();
        let inm = format!("If-None-Match: {etag}");
        let r = fetch(&url, &["-H", &inm]);
        assert_eq!(r.status, 304, "{php:?} {header}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag"), Some(etag.as_str()));
        assert_eq!(r.header("set-cookie"), Some("downloaded=1"));
        assert_no_sendfile_headers(&r);

        let ims = format!("If-Modified-Since: {last_modified}");
        let r = fetch(&url, &["-H", &ims]);
        assert_eq!(r.status, 304, "{php:?} {header}");

        let r = fetch(&url, &["-H", "If-None-Match: \"other\""]);
        assert_eq!(r.status, 200);
        assert!(r.body == data());

        // If-Range with the current ETag: the range; with another: the whole file.
        let ir = format!("If-Range: {etag}");
        let r = fetch(&url, &["-H", "Range: bytes=0-9", "-H", &ir]);
        assert_eq!((r.status, r.body.len()), (206, 10));
        let r = fetch(&url, &["-H", "Range: bytes=0-9", "-H", "If-Range: \"old\""]);
        assert_eq!((r.status, r.body.len()), (200, 204800));
    }
}

#[test]
fn embedded_ranges_and_conditionals_are_the_clients() {
    ranges_and_conditionals(Php::Embedded);
}

#[test]
fn fastcgi_ranges_and_conditionals_are_the_clients() {
    ranges_and_conditionals(Php::FastCgi);
}

// --- Content-Type: the extension's, or the script's own -----------------------

fn content_type_and_disposition(php: Php) {
    let site = Site::new();
    let s = enabled(&site, php);
    let pdf = site.protected().join("report.pdf").display().to_string();
    let r = fetch(&download_url(&s, "X-Sendfile", &pdf, ""), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"%PDF-1.4 report\n");
    assert_eq!(r.header("content-type"), Some("application/pdf"), "{php:?}");
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=\"report.pdf\"")
    );
    let r = fetch(
        &download_url(&s, "X-Accel-Redirect", "/protected/notes.txt", ""),
        &[],
    );
    assert_eq!(r.body, b"notes\n");
    assert_eq!(r.header("content-type"), Some("text/plain"), "{php:?}");
    // A Content-Type the script chose is kept, once.
    let r = fetch(
        &download_url(&s, "X-Sendfile", &pdf, "&ct=application%2Fx-report"),
        &[],
    );
    assert_eq!(r.body, b"%PDF-1.4 report\n");
    let types: Vec<_> = r
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        .collect();
    assert_eq!(types.len(), 1, "{:?}", r.headers);
    assert_eq!(types[0].1, "application/x-report", "{php:?}");
}

#[test]
fn embedded_content_type_from_the_extension_and_disposition_kept() {
    content_type_and_disposition(Php::Embedded);
}

#[test]
fn fastcgi_content_type_from_the_extension_and_disposition_kept() {
    content_type_and_disposition(Php::FastCgi);
}

// --- nothing outside the roots ------------------------------------------------

fn nothing_outside_the_roots(php: Php) {
    let site = Site::new();
    let s = enabled(&site, php);
    let p = site.protected().display().to_string();
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("X-Sendfile", site.path("secret.txt"), 403, "outside"),
        ("X-Sendfile", format!("{p}/../secret.txt"), 403, "'..'"),
        (
            "X-Sendfile",
            format!("{p}/sub/../../secret.txt"),
            403,
            "'..'",
        ),
        ("X-Sendfile", format!("{p}/escape.txt"), 403, "symlink"),
        ("X-Sendfile", format!("{p}/abs-escape.txt"), 403, "symlink"),
        ("X-Sendfile", format!("{p}/up/secret.txt"), 403, "symlink"),
        ("X-Sendfile", format!("{p}/sub"), 403, "directory"),
        ("X-Sendfile", format!("{p}/"), 403, "directory"),
        (
            "X-Sendfile",
            format!("{p}/missing.bin"),
            404,
            "does not exist",
        ),
        // Taken literally: a file named `%2e%2e` is looked for.
        (
            "X-Sendfile",
            format!("{p}/%2e%2e/secret.txt"),
            404,
            "does not exist",
        ),
        ("X-Sendfile", "secret.txt".to_owned(), 403, "not absolute"),
        (
            "X-Accel-Redirect",
            "/protected/../secret.txt".to_owned(),
            403,
            "'..'",
        ),
        (
            "X-Accel-Redirect",
            "/protected/%2e%2e/secret.txt".to_owned(),
            403,
            "'..'",
        ),
        (
            "X-Accel-Redirect",
            "/protected/%2E%2E%2Fsecret.txt".to_owned(),
            403,
            "'..'",
        ),
        (
            "X-Accel-Redirect",
            "/protected/escape.txt".to_owned(),
            403,
            "symlink",
        ),
        (
            "X-Accel-Redirect",
            "/protected/up/secret.txt".to_owned(),
            403,
            "symlink",
        ),
        (
            "X-Accel-Redirect",
            "/protected/sub/".to_owned(),
            403,
            "directory",
        ),
        (
            "X-Accel-Redirect",
            "/protected/missing.bin".to_owned(),
            404,
            "does not exist",
        ),
        (
            "X-Accel-Redirect",
            "/protected/notes.txt%00.pdf".to_owned(),
            403,
            "NUL",
        ),
        (
            "X-Accel-Redirect",
            format!("{}/secret.txt", site.dir.path().display()),
            403,
            "no [[backend.sendfile.locations]]",
        ),
    ];
    for (header, value, status, why) in &cases {
        let r = fetch(&download_url(&s, header, value, ""), &[]);
        assert_eq!(r.status, *status, "{php:?} {header}: {value}: {}", r.text());
        assert!(
            !r.body.windows(10).any(|w| w == &SECRET[..10]),
            "{php:?} {header}: {value} leaked the secret"
        );
        assert!(r.body != b"notes\n" && r.body != data(), "{php:?} {value}");
        assert!(!r.text().contains("PHP BODY"), "{php:?} {value}");
        assert_no_sendfile_headers(&r);
        let log = s.host.stderr();
        let line = log
            .lines()
            .find(|l| l.contains(&format!("path=\"{value}\"")) && l.contains(header))
            .unwrap_or_else(|| panic!("{php:?} no log line for {header}: {value}:\n{log}"));
        assert!(
            line.contains("download.php") && line.contains(why),
            "{line}"
        );
    }
    // A raw NUL byte: PHP itself refuses to set such a header, so the script's
    // own body goes out, never a file.
    let r = fetch(
        &download_url(&s, "X-Sendfile", &format!("{p}/notes.txt\0.pdf"), ""),
        &[],
    );
    assert_eq!(r.status, 200);
    assert!(r.text().contains("PHP BODY"), "{php:?}: {}", r.text());
    assert!(r.body != b"notes\n");
    assert_no_sendfile_headers(&r);
}

#[test]
fn embedded_nothing_outside_the_roots_is_ever_sent() {
    nothing_outside_the_roots(Php::Embedded);
}

#[test]
fn fastcgi_nothing_outside_the_roots_is_ever_sent() {
    nothing_outside_the_roots(Php::FastCgi);
}

// --- disabled: the headers pass -----------------------------------------------

fn disabled_passes_the_header_through(php: Php) {
    let site = Site::new();
    let p = site.protected().display().to_string();
    for sections in [
        String::new(),
        format!("[backend.sendfile]\nenable = false\nroots = [\"{p}\"]\n"),
    ] {
        let s = server(&site, php, &sections);
        let value = format!("{p}/notes.txt");
        let r = fetch(&download_url(&s, "X-Sendfile", &value, ""), &[]);
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "PHP BODY\n", "{php:?}");
        assert_eq!(r.header("x-sendfile"), Some(value.as_str()), "{php:?}");
        let r = fetch(
            &download_url(&s, "X-Accel-Redirect", "/protected/notes.txt", ""),
            &[],
        );
        assert_eq!(r.text(), "PHP BODY\n");
        assert_eq!(r.header("x-accel-redirect"), Some("/protected/notes.txt"));
    }
}

#[test]
fn embedded_disabled_feature_passes_the_header_through() {
    disabled_passes_the_header_through(Php::Embedded);
}

#[test]
fn fastcgi_disabled_feature_passes_the_header_through() {
    disabled_passes_the_header_through(Php::FastCgi);
}

/// The roots must exist: fe-php-host refuses to start, naming the path.
#[test]
fn a_missing_root_is_refused_at_start() {
    let site = Site::new();
    let config = HostConfig::static_site()
        .access_log("off")
        .root(&site.www().display().to_string())
        .sections("[backend.sendfile]\nenable = true\nroots = [\"/no/such/protected\"]\n")
        .toml();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fe-php.toml");
    std::fs::write(
        &file,
        config.replace("{port}", "1").replace("{dir}", "/tmp"),
    )
    .unwrap();
    let out = std::process::Command::new(HOST_BIN)
        .arg("--config")
        .arg(&file)
        .arg("--check")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("[backend.sendfile] roots: /no/such/protected is not a readable directory"),
        "{text}"
    );
}
