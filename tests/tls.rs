//! fe-php-host's front door: TLS (rustls) with SNI, ALPN, HTTP/2 over TLS and
//! h2c, every backend over HTTP/2, certificates re-read on reload — checked with
//! real clients (curl, openssl s_client, h2load, wrk) against certificates made
//! by openssl.

mod common;

use common::{parse_reply, Host, HOST_BIN};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:{port}"
workers = 2
access_log = "off"
{server}

[backend]
default_backend = "embedded"

[backend.static_files]
enable = true
root = "{dir}/www"

[php]
document_root = "{dir}/www"
"#;

const TLS: &str = r#"
[server.tls]
cert = "a.pem"
key = "a.key"
certificates = [{ cert = "b.pem", key = "b.key" }]
"#;

/// A self-signed certificate for `name` (and `*.name`), as `{stem}.pem` and
/// `{stem}.key` in `dir`.
fn make_cert(dir: &Path, stem: &str, name: &str) {
    common::certs::self_signed(dir, stem, name, &format!("DNS:{name},DNS:*.{name}"), 2);
}

fn site(dir: &Path) {
    make_cert(dir, "a", "a.test");
    make_cert(dir, "b", "b.test");
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(
        www.join("info.php"),
        "<?php foreach (['HTTPS','REQUEST_SCHEME','SERVER_PORT','SERVER_PROTOCOL','HTTP_HOST','SERVER_NAME','SSL_PROTOCOL','SSL_CIPHER','SSL_TLS_SNI'] as $k) echo $k, '=', $_SERVER[$k] ?? '-', \"\\n\";",
    )
    .unwrap();
    std::fs::write(www.join("hello.php"), "<?php echo 'Hello, World!';").unwrap();
    std::fs::write(
        www.join("stream.php"),
        "<?php for ($i = 0; $i < 5; $i++) { echo str_repeat(chr(97 + $i), 100000), \"\\n\"; flush(); usleep(20000); }",
    )
    .unwrap();
    std::fs::write(
        www.join("upload.php"),
        "<?php $f = $_FILES['file'] ?? null; echo $f ? md5_file($f['tmp_name']) . ' ' . $f['size'] : 'none', ' ', $_POST['note'] ?? '-';",
    )
    .unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(www.join("big.bin"), &big).unwrap();
    std::fs::write(www.join("small.txt"), "0123456789abcdefghij").unwrap();
}

fn start(server: &str, tls: &str) -> Host {
    Host::start(
        &format!("{}{tls}", CONFIG.replace("{server}", server)),
        site,
    )
}

/// curl over TLS to `name` (resolved to loopback), trusting `ca`; extra args
/// before the URL. Returns the reply and curl's `%{http_version}`.
fn curl_tls(h: &Host, name: &str, ca: &str, args: &[&str], path: &str) -> (common::Reply, String) {
    let ca = h.dir.path().join(ca);
    let url = format!("https://{name}:{}{path}", h.port);
    let resolve = format!("{name}:{}:127.0.0.1", h.port);
    let out = Command::new("curl")
        .args([
            "-s",
            "-S",
            "-i",
            "--max-time",
            "20",
            "--resolve",
            &resolve,
            "--cacert",
        ])
        .arg(&ca)
        .args(["-w", "\n%{http_version}"])
        .args(args)
        .arg(&url)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {args:?} {url} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        h.stderr()
    );
    let raw = out.stdout;
    let cut = raw.iter().rposition(|&b| b == b'\n').unwrap();
    let version = String::from_utf8_lossy(&raw[cut + 1..]).into_owned();
    (parse_reply(&raw[..cut]), version)
}

/// `openssl s_client` to the host with `args`: (succeeded, what it printed).
fn s_client(h: &Host, args: &[&str]) -> (bool, String) {
    common::certs::s_client(h.port, args)
}

#[test]
fn https_over_http1_and_http2_with_sni() {
    let h = start("", TLS);
    let port = h.port.to_string();
    for (flag, version, proto) in [
        ("--http1.1", "1.1", "HTTP/1.1"),
        ("--http2", "2", "HTTP/2.0"),
    ] {
        let (r, v) = curl_tls(&h, "a.test", "a.pem", &[flag], "/info.php");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(v, version);
        let text = r.text();
        for want in [
            "HTTPS=on".to_owned(),
            "REQUEST_SCHEME=https".to_owned(),
            format!("SERVER_PORT={port}"),
            format!("SERVER_PROTOCOL={proto}"),
            format!("HTTP_HOST=a.test:{port}"),
            "SERVER_NAME=a.test".to_owned(),
            // mod_ssl's names.
            "SSL_PROTOCOL=TLSv1.3".to_owned(),
            "SSL_CIPHER=TLS_".to_owned(),
            "SSL_TLS_SNI=a.test".to_owned(),
        ] {
            assert!(text.contains(&want), "{flag}: {want} missing from\n{text}");
        }
    }
    // SNI: b.test gets b's certificate (curl trusts only b.pem here), and a
    // subdomain matches the wildcard.
    let (r, _) = curl_tls(&h, "b.test", "b.pem", &["--http2"], "/hello.php");
    assert_eq!(r.text(), "Hello, World!");
    let (r, _) = curl_tls(&h, "www.b.test", "b.pem", &[], "/hello.php");
    assert_eq!(r.status, 200);
    // No SNI, or a name no certificate has: the default (first) certificate.
    let (ok, text) = s_client(&h, &["-noservername"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("CN = a.test") || text.contains("CN=a.test"),
        "{text}"
    );
    let (ok, text) = s_client(&h, &["-servername", "unknown.example"]);
    assert!(ok, "{text}");
    assert!(
        text.contains("CN = a.test") || text.contains("CN=a.test"),
        "{text}"
    );
    let (_, text) = s_client(&h, &["-servername", "b.test"]);
    assert!(
        text.contains("CN = b.test") || text.contains("CN=b.test"),
        "{text}"
    );
}

#[test]
fn php_fpm_gets_the_tls_parameters_too() {
    use common::peers::{FpmListen, PhpFpm};
    let dir = tempfile::tempdir().unwrap();
    site(dir.path());
    let fpm = PhpFpm::builder(&dir.path().join("www"), FpmListen::Tcp).start();
    let config = CONFIG
        .replace("{server}", "")
        .replace(
            "default_backend = \"embedded\"",
            "default_backend = \"fastcgi\"",
        )
        .replace(
            "[php]\n",
            &format!("[php]\nfpm_socket = \"{}\"\n", fpm.address()),
        );
    let h = Host::start(&format!("{config}{TLS}"), |d| {
        for f in ["a.pem", "a.key", "b.pem", "b.key"] {
            std::fs::copy(dir.path().join(f), d.join(f)).unwrap();
        }
        // The same document root as php-fpm's.
        std::os::unix::fs::symlink(dir.path().join("www"), d.join("www")).unwrap();
    });
    let (r, _) = curl_tls(
        &h,
        "b.test",
        "b.pem",
        &["--http2", "--tlsv1.2", "--tls-max", "1.2"],
        "/info.php",
    );
    let text = r.text();
    for want in [
        "HTTPS=on",
        "REQUEST_SCHEME=https",
        "SERVER_PROTOCOL=HTTP/2.0",
        "SSL_PROTOCOL=TLSv1.2",
        "SSL_CIPHER=ECDHE-ECDSA-",
        "SSL_TLS_SNI=b.test",
    ] {
        assert!(text.contains(want), "{want} missing from\n{text}");
    }
}

#[test]
fn protocols_and_alpn() {
    let h = start("", TLS);
    // TLS 1.0 and 1.1 are refused; 1.2 and 1.3 are offered.
    for old in ["-tls1", "-tls1_1"] {
        let (ok, text) = s_client(&h, &[old, "-servername", "a.test"]);
        assert!(!ok, "{old} was accepted:\n{text}");
    }
    let (ok, text) = s_client(&h, &["-tls1_2", "-servername", "a.test"]);
    assert!(ok && text.contains("TLSv1.2"), "{text}");
    let (ok, text) = s_client(&h, &["-tls1_3", "-servername", "a.test"]);
    assert!(ok && text.contains("TLSv1.3"), "{text}");
    // ALPN: h2 when offered, http/1.1 otherwise.
    let (_, text) = s_client(&h, &["-alpn", "h2,http/1.1", "-servername", "a.test"]);
    assert!(text.contains("ALPN protocol: h2"), "{text}");
    let (_, text) = s_client(&h, &["-alpn", "http/1.1", "-servername", "a.test"]);
    assert!(text.contains("ALPN protocol: http/1.1"), "{text}");

    // min_version = "1.3" refuses 1.2; http2 = false offers HTTP/1.1 only.
    let h = start(
        "",
        &TLS.replace(
            "[server.tls]",
            "[server.tls]\nmin_version = \"1.3\"\nhttp2 = false",
        ),
    );
    let (ok, text) = s_client(&h, &["-tls1_2", "-servername", "a.test"]);
    assert!(!ok, "TLS 1.2 accepted with min_version 1.3:\n{text}");
    let (_, v) = curl_tls(&h, "a.test", "a.pem", &["--http2"], "/hello.php");
    assert_eq!(v, "1.1");
}

#[test]
fn every_backend_over_http2() {
    let h = start("", TLS);
    // Streamed PHP output, whole.
    let (r, v) = curl_tls(&h, "a.test", "a.pem", &["--http2"], "/stream.php");
    assert_eq!(v, "2");
    assert_eq!(r.body.len(), 5 * 100_001);
    assert!(r.body.starts_with(b"aaaa") && r.body.ends_with(b"eee\n"));
    // A static file (no sendfile over TLS: the bytes pass through rustls).
    let (r, _) = curl_tls(&h, "a.test", "a.pem", &["--http2"], "/big.bin");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        std::fs::read(h.dir.path().join("www/big.bin")).unwrap()
    );
    // Over HTTP/1.1 and TLS too.
    let (r, _) = curl_tls(&h, "a.test", "a.pem", &["--http1.1"], "/big.bin");
    assert_eq!(r.body.len(), 3_000_000);
    // A range.
    let (r, _) = curl_tls(
        &h,
        "a.test",
        "a.pem",
        &["--http2", "-r", "5-9"],
        "/small.txt",
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.text(), "56789");
    // A conditional request.
    let (r, _) = curl_tls(&h, "a.test", "a.pem", &["--http2"], "/small.txt");
    let etag = r.header("etag").expect("an ETag").to_owned();
    let (r, _) = curl_tls(
        &h,
        "a.test",
        "a.pem",
        &["--http2", "-H", &format!("If-None-Match: {etag}")],
        "/small.txt",
    );
    assert_eq!(r.status, 304);
    // An upload (multipart) with a form field.
    let upload = h.dir.path().join("upload.bin");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 256) as u8).collect();
    std::fs::write(&upload, &data).unwrap();
    let (r, _) = curl_tls(
        &h,
        "a.test",
        "a.pem",
        &[
            "--http2",
            "-F",
            &format!("file=@{}", upload.display()),
            "-F",
            "note=hi",
        ],
        "/upload.php",
    );
    let md5 = Command::new("md5sum").arg(&upload).output().unwrap();
    let md5 = String::from_utf8_lossy(&md5.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(r.text(), format!("{md5} 200000 hi"));
    // Not found stays 404.
    let (r, _) = curl_tls(&h, "a.test", "a.pem", &["--http2"], "/nope.txt");
    assert_eq!(r.status, 404);
}

#[test]
fn h2load_many_streams_over_tls() {
    let h = start("", TLS);
    let out = Command::new("h2load")
        .args(["-n", "4000", "-c", "4", "-m", "10"])
        .arg(format!("https://127.0.0.1:{}/hello.php", h.port))
        .output()
        .expect("h2load is installed (nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("4000 succeeded, 0 failed, 0 errored"),
        "{text}\n{}",
        h.stderr()
    );
    assert!(text.contains("status codes: 4000 2xx"), "{text}");
    assert!(text.contains("h2"), "{text}");
}

#[test]
fn h2c_by_prior_knowledge() {
    let h = start("h2c = true", "");
    let url = h.url("/info.php");
    let out = Command::new("curl")
        .args([
            "-s",
            "--http2-prior-knowledge",
            "-w",
            "\n%{http_version}",
            &url,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("\n2"), "{text}");
    assert!(text.contains("SERVER_PROTOCOL=HTTP/2.0"), "{text}");
    assert!(text.contains("HTTPS=-"), "{text}");
    // HTTP/1.1 on the same listener.
    let r = common::get(&url);
    assert!(
        r.text().contains("SERVER_PROTOCOL=HTTP/1.1"),
        "{}",
        r.text()
    );
    // And h2load's cleartext HTTP/2.
    let out = Command::new("h2load")
        .args(["-n", "1000", "-c", "2", "-m", "10"])
        .arg(h.url("/hello.php"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("1000 succeeded, 0 failed"), "{text}");
}

/// `fe-php-host --check` on a config whose `[server.tls]` is `tls`: (exit
/// status, stderr).
fn check(dir: &Path, tls: &str) -> (bool, String) {
    let text = format!("{}{tls}", CONFIG.replace("{server}", ""))
        .replace("{port}", "0")
        .replace("{dir}", dir.to_str().unwrap());
    let config = dir.join("check.toml");
    std::fs::write(&config, text).unwrap();
    let out = Command::new(HOST_BIN)
        .arg("--config")
        .arg(&config)
        .arg("--check")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unusable_certificates_are_named_at_check() {
    let dir = tempfile::tempdir().unwrap();
    site(dir.path());
    let d = dir.path();
    let (ok, err) = check(d, TLS);
    assert!(ok, "{err}");
    std::fs::write(d.join("junk.pem"), "not a certificate\n").unwrap();
    for (tls, wants) in [
        (
            "[server.tls]\ncert = \"missing.pem\"\nkey = \"a.key\"\n",
            vec!["missing.pem", "cannot read it"],
        ),
        (
            "[server.tls]\ncert = \"junk.pem\"\nkey = \"a.key\"\n",
            vec!["junk.pem", "no certificate"],
        ),
        (
            "[server.tls]\ncert = \"a.pem\"\nkey = \"b.key\"\n",
            vec!["b.key", "does not belong", "a.pem"],
        ),
        (
            "[server.tls]\ncert = \"a.pem\"\nkey = \"a.pem\"\n",
            vec!["a.pem", "private key"],
        ),
        (
            "[server.tls]\ncert = \"a.pem\"\n",
            vec!["needs both cert and key"],
        ),
        (
            "[server.tls]\ncert = \"a.pem\"\nkey = \"a.key\"\nmin_version = \"1.0\"\n",
            vec!["min_version", "\"1.2\""],
        ),
        (
            "[server.tls]\ncert = \"a.pem\"\nkey = \"a.key\"\nciphers = \"x\"\n",
            vec!["unknown field", "ciphers"],
        ),
    ] {
        let (ok, err) = check(d, tls);
        assert!(!ok, "{tls} passed --check");
        for w in wants {
            assert!(err.contains(w), "{tls}: {w:?} missing from\n{err}");
        }
        assert!(err.contains("test failed"), "{err}");
    }
}

/// The serial of the certificate the host presents for a.test.
fn served_serial(h: &Host) -> String {
    let (_, text) = s_client(h, &["-servername", "a.test"]);
    let pem_start = text
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a certificate");
    let pem_end = text.find("-----END CERTIFICATE-----").unwrap() + 25;
    let mut child = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&text.as_bytes()[pem_start..pem_end])
        .unwrap();
    String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned()
}

#[test]
fn certificates_are_reread_on_reload_without_a_failed_request() {
    let h = start("", TLS);
    let before = served_serial(&h);
    // Load over TLS (new connections too: -H Connection: close for half).
    let url = format!("https://127.0.0.1:{}/hello.php", h.port);
    let wrk = Command::new("wrk")
        .args(["-t1", "-c8", "-d5s", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wrk is installed");
    std::thread::sleep(Duration::from_millis(1000));
    // Renewed files, then SIGHUP.
    make_cert(h.dir.path(), "a", "a.test");
    h.signal(libc::SIGHUP);
    let start = Instant::now();
    let mut after = served_serial(&h);
    while after == before && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
        after = served_serial(&h);
    }
    assert_ne!(after, before, "the old certificate is still served");
    let out = wrk.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("requests in"), "{text}");
    assert!(!text.contains("Socket errors"), "{text}");
    assert!(!text.contains("Non-2xx"), "{text}");

    // A renewal that cannot be used refuses the reload: the old one serves on.
    std::fs::write(h.dir.path().join("a.pem"), "broken").unwrap();
    h.signal(libc::SIGHUP);
    let start = Instant::now();
    while !h.stderr().contains("a.pem") && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        h.stderr().contains("a.pem: no certificate"),
        "{}",
        h.stderr()
    );
    assert_eq!(served_serial(&h), after);
}

#[test]
fn plain_http_is_redirected_to_https() {
    let plain = common::free_port();
    let h = start(
        "",
        &TLS.replace(
            "[server.tls]",
            &format!("[server.tls]\nredirect_http = \"127.0.0.1:{plain}\""),
        ),
    );
    let url = format!("http://127.0.0.1:{plain}/info.php?x=1&y=%20");
    let r = common::curl(&["-H", &format!("Host: a.test:{plain}"), &url]);
    assert_eq!(r.status, 308, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some(format!("https://a.test:{}/info.php?x=1&y=%20", h.port).as_str())
    );
    // Followed by curl, it reaches PHP over TLS.
    let out = Command::new("curl")
        .args(["-s", "-L", "--cacert"])
        .arg(h.dir.path().join("a.pem"))
        .args([
            "--resolve",
            &format!("a.test:{plain}:127.0.0.1"),
            "--resolve",
            &format!("a.test:{}:127.0.0.1", h.port),
            &format!("http://a.test:{plain}/info.php"),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("HTTPS=on"), "{text}");
    // No usable Host: 400, not a redirect to a name the client did not give.
    let raw = common::raw_request(plain, b"GET / HTTP/1.0\r\n\r\n");
    assert!(
        raw.starts_with(b"HTTP/1.0 400"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    let raw = common::raw_request(plain, b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n");
    assert!(
        raw.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
}

/// testssl.sh (Debian's) on protocols, cipher categories, server preferences and
/// known vulnerabilities: no finding of high or critical severity. (Its
/// certificate checks are left out: the test certificate is self-signed.)
#[test]
fn testssl_finds_nothing_severe() {
    let h = start("", TLS);
    let report = h.dir.path().join("testssl.json");
    let out = Command::new("testssl")
        .args([
            "--quiet",
            "--color",
            "0",
            "--warnings",
            "batch",
            "-p",
            "-s",
            "-P",
            "-U",
        ])
        .arg("--jsonfile")
        .arg(&report)
        .arg(format!("https://127.0.0.1:{}/", h.port))
        .output()
        .expect("testssl is installed (Debian package testssl.sh)");
    let text = std::fs::read_to_string(&report).unwrap_or_else(|_| {
        panic!(
            "testssl wrote no report: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert!(text.contains("\"id\""), "{text}");
    let severe: Vec<&str> = text
        .split("},")
        .filter(|f| {
            f.contains("\"severity\": \"HIGH\"")
                || f.contains("\"severity\": \"CRITICAL\"")
                || f.contains("\"severity\":\"HIGH\"")
                || f.contains("\"severity\":\"CRITICAL\"")
        })
        .collect();
    assert!(severe.is_empty(), "testssl: {severe:#?}");
    // It did test: protocols and the vulnerabilities are in the report.
    for id in ["\"TLS1_3\"", "\"heartbleed\"", "\"cipher_order\""] {
        assert!(text.contains(id), "{id} missing from the report");
    }
}
