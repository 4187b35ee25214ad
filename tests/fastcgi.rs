//! The FastCGI backend against real php-fpm, through a running fe-php-host:
//! failures and recovery, timeouts, pooling, sizes, streaming, health.

mod common;

use common::diff::{self, Case};
use common::peers::*;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// Scripts of the tests' own document root.
const SCRIPTS: &[(&str, &str)] = &[
    ("hello.php", "<?php echo 'Hello, World!';"),
    ("pid.php", "<?php echo 'ok ', getmypid(), \"\\n\";"),
    ("slow.php", "<?php usleep((int) (($_GET['s'] ?? 2) * 1e6)); echo 'slow done';"),
    // Every X-Big-* request header back as X-Echo-*, and the cookie back as a Set-Cookie.
    (
        "echo.php",
        r#"<?php
foreach ($_SERVER as $k => $v) {
    if (strncmp($k, 'HTTP_X_BIG_', 11) === 0) {
        header('X-Echo-' . substr($k, 11) . ': ' . $v);
    }
}
$c = $_SERVER['HTTP_COOKIE'] ?? '';
if ($c !== '') {
    header('Set-Cookie: ' . $c);
}
header('Content-Type: application/json');
echo json_encode(['cookie_len' => strlen($c), 'cookie_md5' => md5($c), 'content_length' => $_SERVER['CONTENT_LENGTH']]);
"#,
    ),
    ("bad_status.php", "<?php header('Status: abc'); echo 'x';"),
    // A Location with status 200: PHP sends no Status line, so the server decides.
    ("location_200.php", "<?php header('Location: /hello.php'); http_response_code(200); echo 'moved';"),
    ("status_hdr.php", "<?php header('Status: 404 Not Found'); setcookie('a', '1'); setcookie('b', '2'); echo 'nf';"),
    ("stderr.php", "<?php error_log('fephp-stderr-marker ' . ($_GET['n'] ?? '')); echo 'logged';"),
    (
        "output.php",
        "<?php $mib = (int) $_GET['mib']; $c = str_repeat('0123456789abcdef', 65536); header('Content-Type: application/octet-stream'); for ($i = 0; $i < $mib; $i++) { echo $c; }",
    ),
    // Debian's php.ini has output_buffering = 4096: end it, then flush().
    (
        "flush.php",
        "<?php echo \"first\\n\"; while (ob_get_level() > 0) { ob_end_flush(); } flush(); sleep(1); echo \"second\\n\";",
    ),
    ("style.css", "body{}"),
];

fn site() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in SCRIPTS {
        std::fs::write(dir.path().join(name), body).unwrap();
    }
    dir
}

/// fe-php-host, FastCGI by default, serving `root`; `php` adds `[php]` keys.
fn fe(root: &Path, fpm_socket: &str, workers: usize, php: &str) -> Host {
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{{port}}"
workers = {workers}
access_log = "off"

[backend]
default_backend = "fastcgi"

[backend.static_files]
enable = true
root = "{root}"

[php]
libphp_path = "/nonexistent/libphp.so"
fpm_socket = "{fpm_socket}"
{php}
"#,
        root = root.display(),
    );
    Host::start(&config, |_| {})
}

fn health(h: &Host) -> (u16, Value) {
    let r = get(&h.url("/_health"));
    (r.status, serde_json::from_slice(&r.body).unwrap())
}

/// Polls `f` until it holds (or panics with `what` after 10 s).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stopped_and_restarted(listen: FpmListen) {
    let www = site();
    let mut fpm = PhpFpm::start(www.path(), listen);
    let h = fe(www.path(), fpm.address(), 1, "fpm_read_timeout = \"10s\"");
    let hello = h.url("/hello.php");
    assert_eq!(get(&hello).text(), "Hello, World!");
    let (status, doc) = health(&h);
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["backends"]["fastcgi"]["healthy"], true);
    assert!(doc["backends"]["fastcgi"]["latency_ms"].is_u64(), "{doc}");

    // A request in flight when php-fpm stops gets 502, not a hang.
    let slow = std::thread::spawn({
        let url = h.url("/slow.php?s=5");
        move || get(&url)
    });
    std::thread::sleep(Duration::from_millis(500));
    fpm.stop();
    let r = slow.join().unwrap();
    assert_eq!(r.status, 502, "{}", r.text());

    let r = get(&hello);
    assert_eq!(r.status, 502);
    assert!(
        r.text().contains("PHP-FPM is not reachable"),
        "{}",
        r.text()
    );
    let (status, doc) = health(&h);
    assert_eq!(status, 503, "{doc}");
    assert_eq!(doc["status"], "unhealthy");
    let fastcgi = &doc["backends"]["fastcgi"];
    assert_eq!(fastcgi["healthy"], false);
    let message = fastcgi["message"].as_str().unwrap();
    assert!(message.contains(fpm.address()), "{message}");
    // The engine still serves what needs no PHP: static files, and 404 for a
    // missing script (php-fpm is never asked about it).
    assert_eq!(get(&h.url("/style.css")).text(), "body{}");
    assert_eq!(get(&h.url("/missing.php")).status, 404);
    let log = h.stderr();
    assert!(
        log.contains(
            "PHP-FPM is not running or fpm_socket is wrong: check `ps aux | grep php-fpm`"
        ),
        "{log}"
    );
    assert!(log.contains("GET /hello.php"), "{log}");

    fpm.start_again();
    let r = get(&hello);
    assert_eq!((r.status, r.text().as_str()), (200, "Hello, World!"));
    assert_eq!(health(&h).0, 200);
}

#[test]
fn php_fpm_stopped_then_restarted_over_tcp() {
    stopped_and_restarted(FpmListen::Tcp);
}

#[test]
fn php_fpm_stopped_then_restarted_over_unix_socket() {
    stopped_and_restarted(FpmListen::Unix);
}

#[test]
fn slow_script_is_504_at_the_read_timeout() {
    let www = site();
    let fpm = PhpFpm::start(www.path(), FpmListen::Tcp);
    let h = fe(www.path(), fpm.address(), 1, "fpm_read_timeout = \"1s\"");
    let start = Instant::now();
    let r = get(&h.url("/slow.php?s=4"));
    let took = start.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_millis(2500),
        "504 after {took:?}"
    );
    assert!(h.stderr().contains("fpm_read_timeout"), "{}", h.stderr());
    // Other children still serve; a quick script is not affected.
    assert_eq!(get(&h.url("/slow.php?s=0.1")).text(), "slow done");
}

#[test]
fn send_timeout_when_php_fpm_takes_nothing() {
    // One child, busy with a slow script: a second connection waits in php-fpm's
    // backlog and a 10 MiB body fills the socket buffers.
    let www = site();
    let fpm = PhpFpm::builder(www.path(), FpmListen::Tcp)
        .max_children(1)
        .start();
    let h = fe(
        www.path(),
        fpm.address(),
        1,
        "fpm_send_timeout = \"1s\"\nfpm_read_timeout = \"20s\"",
    );
    let busy = std::thread::spawn({
        let url = h.url("/slow.php?s=4");
        move || get(&url)
    });
    std::thread::sleep(Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    std::fs::write(&body, diff::pattern(10 << 20, 3)).unwrap();
    let start = Instant::now();
    let r = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", body.display()),
        &h.url("/hello.php"),
    ]);
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert!(h.stderr().contains("fpm_send_timeout"), "{}", h.stderr());
    assert_eq!(busy.join().unwrap().text(), "slow done");
}

#[test]
fn recycled_children_under_keep_alive_load() {
    let www = site();
    let fpm = PhpFpm::builder(www.path(), FpmListen::Tcp)
        .max_children(2)
        .pool_line("pm.max_requests = 5")
        .start();
    let h = fe(
        www.path(),
        fpm.address(),
        1,
        "fpm_max_connections = 2\nfpm_keep_alive = true",
    );
    // 4 clients, each sending 40 requests on one kept-alive connection.
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let url = h.url("/pid.php");
            std::thread::spawn(move || {
                let mut args = vec![
                    "-s".to_owned(),
                    "-w".to_owned(),
                    "%{http_code}\n".to_owned(),
                ];
                args.extend(std::iter::repeat_n(url, 40));
                let out = std::process::Command::new("curl")
                    .args(&args)
                    .output()
                    .unwrap();
                String::from_utf8(out.stdout).unwrap()
            })
        })
        .collect();
    let mut pids = std::collections::HashSet::new();
    let mut answers = 0;
    for c in clients {
        let out = c.join().unwrap();
        let lines: Vec<&str> = out.lines().collect();
        for pair in lines.chunks(2) {
            assert_eq!(pair.len(), 2, "{out}");
            assert_eq!(pair[1], "200", "a request failed: {pair:?}\n{}", h.stderr());
            let pid = pair[0]
                .strip_prefix("ok ")
                .unwrap_or_else(|| panic!("{pair:?}"));
            pids.insert(pid.to_owned());
            answers += 1;
        }
    }
    assert_eq!(answers, 160);
    // 160 requests at 5 per child: php-fpm replaced its 2 children many times.
    assert!(pids.len() > 20, "only {} children served", pids.len());
}

#[test]
fn large_cookie_and_header_set_round_trip() {
    let www = site();
    let fpm = PhpFpm::start(www.path(), FpmListen::Tcp);
    let h = fe(www.path(), fpm.address(), 1, "");
    let url = h.url("/echo.php");

    // The largest Cookie php-fpm takes: one FastCGI record per variable, so 65,528
    // bytes minus the name and lengths (nginx refuses anything whose variables
    // together exceed one record: 500 "fastcgi request record is too big").
    let cookie = format!("big={}", "c".repeat(65_512 - 4));
    let r = curl(&["-H", &format!("Cookie: {cookie}"), &url]);
    assert_eq!(r.status, 200, "{}", r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["cookie_len"], 65_512);
    assert_eq!(v["cookie_md5"], diff::md5_hex(cookie.as_bytes()));
    assert_eq!(r.header("set-cookie"), Some(cookie.as_str()));

    // One byte more cannot be sent: a clear 431, not a broken request.
    let r = curl(&["-H", &format!("Cookie: {cookie}c"), &url]);
    assert_eq!(r.status, 431, "{}", r.text());
    assert!(
        r.text()
            .contains("The Cookie header is 65513 bytes; PHP-FPM takes at most 65512."),
        "{}",
        r.text()
    );

    // 70 KiB of headers: several PARAMS records in, a 70 KiB header block out.
    let mut args = Vec::new();
    for i in 0..35 {
        args.push("-H".to_owned());
        args.push(format!(
            "X-Big-{i:02}: {}",
            ((b'a' + i % 26) as char).to_string().repeat(2048)
        ));
    }
    args.push(url.clone());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let r = curl(&args);
    assert_eq!(r.status, 200, "{}", r.text());
    for i in 0..35u8 {
        let want = ((b'a' + i % 26) as char).to_string().repeat(2048);
        assert_eq!(
            r.header(&format!("x-echo-{i:02}")),
            Some(want.as_str()),
            "header {i}"
        );
    }
}

#[test]
fn ten_mib_upload() {
    let docroot = fixture_docroot();
    let fpm = PhpFpm::builder(&docroot, FpmListen::Unix)
        .ini("upload_max_filesize", "16M")
        .ini("post_max_size", "32M")
        .start();
    let h = fe(&docroot, fpm.address(), 1, "");
    let file = diff::pattern(10 << 20, 11);
    let md5 = diff::md5_hex(&file);
    let multipart = Case::new("upload", "/dump.php")
        .method("POST")
        .body(diff::Body::Multipart {
            fields: vec![("title".into(), "ten".into())],
            files: vec![diff::FilePart::new(
                "upload",
                "ten.bin",
                file.clone(),
                "application/octet-stream",
            )],
        });
    let r = diff::send(&multipart, &h.url("")).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["files"]["upload"]["size"], 10 << 20, "{}", v["files"]);
    assert_eq!(v["files"]["upload"]["md5"], md5.as_str());
    assert_eq!(v["post"]["title"], "ten");
    // The same bytes as a raw body: STDIN across 161 records, CONTENT_LENGTH exact.
    let raw = Case::new("raw", "/dump.php")
        .method("PUT")
        .raw_body("application/octet-stream", &file);
    let r = diff::send(&raw, &h.url("")).unwrap();
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["input"]["length"], 10 << 20);
    assert_eq!(v["input"]["md5"], md5.as_str());
    assert_eq!(v["server"]["CONTENT_LENGTH"], (10 << 20).to_string());
}

/// Peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn output_is_streamed_not_buffered() {
    let www = site();
    let fpm = PhpFpm::start(www.path(), FpmListen::Unix);
    let h = fe(www.path(), fpm.address(), 1, "");
    // flush() reaches the client as it happens.
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-N",
            "-w",
            "\n%{time_starttransfer} %{time_total}",
            &h.url("/flush.php"),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, times) = text.rsplit_once('\n').unwrap();
    assert_eq!(body, "first\nsecond\n");
    let t: Vec<f64> = times.split(' ').map(|x| x.parse().unwrap()).collect();
    assert!(
        t[0] < 0.7 && t[1] >= 0.9,
        "first byte {}s, total {}s",
        t[0],
        t[1]
    );

    // 1 GiB of output passes through a worker whose memory does not grow with it.
    let worker = h.workers()[0];
    assert_eq!(get(&h.url("/hello.php")).status, 200);
    let before = peak_rss_kib(worker);
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            "--max-time",
            "120",
        ])
        .arg(h.url("/output.php?mib=1024"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200 1073741824");
    let grown = peak_rss_kib(worker).saturating_sub(before);
    assert!(
        grown < 32 * 1024,
        "the worker's peak RSS grew by {grown} KiB"
    );
}

#[test]
fn status_location_cookies_and_stderr() {
    let www = site();
    let fpm = PhpFpm::start(www.path(), FpmListen::Tcp);
    let h = fe(www.path(), fpm.address(), 1, "");
    let r = get(&h.url("/bad_status.php"));
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(
        h.stderr().contains("malformed Status header \"abc\""),
        "{}",
        h.stderr()
    );

    let r = get(&h.url("/location_200.php"));
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("/hello.php"));

    let r = get(&h.url("/status_hdr.php"));
    assert_eq!((r.status, r.text().as_str()), (404, "nf"));
    assert!(r.header("status").is_none(), "{:?}", r.headers);
    assert_eq!(diff::header_values(&r, "set-cookie"), ["a=1", "b=2"]);

    let r = get(&h.url("/stderr.php?n=42"));
    assert_eq!(r.text(), "logged");
    eventually("the STDERR line in fe-php's log", || {
        h.stderr().contains("fephp-stderr-marker 42")
    });
    let line = h
        .stderr()
        .lines()
        .find(|l| l.contains("fephp-stderr-marker 42"))
        .unwrap()
        .to_owned();
    assert!(line.contains("GET /stderr.php?n=42"), "{line}");

    // HEAD: headers only.
    let r = curl(&["-I", &h.url("/hello.php")]);
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
}

/// Established TCP connections (IPv4) whose remote port is `port`.
fn connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let remote_port = f[2]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            remote_port == Some(port) && f[3] == "01"
        })
        .count()
}

#[test]
fn connections_are_reused_bounded_and_closed_when_idle() {
    let www = site();
    let fpm = PhpFpm::builder(www.path(), FpmListen::Tcp)
        .max_children(8)
        .start();
    let port: u16 = fpm.address().rsplit(':').next().unwrap().parse().unwrap();
    let h = fe(
        www.path(),
        fpm.address(),
        1,
        "fpm_max_connections = 2\nfpm_idle_timeout = \"1s\"\nfpm_keep_alive = true",
    );
    // Sequential requests ride one kept-alive connection, so one php-fpm child.
    let pids: std::collections::HashSet<String> =
        (0..20).map(|_| get(&h.url("/pid.php")).text()).collect();
    assert_eq!(pids.len(), 1, "{pids:?}");
    assert_eq!(connections_to(port), 1);

    // 6 concurrent 0.5 s requests on at most 2 connections: 3 rounds.
    let start = Instant::now();
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let url = h.url("/slow.php?s=0.5");
            std::thread::spawn(move || get(&url))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(250));
    assert!(
        connections_to(port) <= 2,
        "{} connections",
        connections_to(port)
    );
    for c in clients {
        assert_eq!(c.join().unwrap().text(), "slow done");
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1400),
        "6 requests took {took:?}"
    );

    // Idle connections are closed after fpm_idle_timeout.
    assert!(connections_to(port) >= 1);
    eventually("idle connections to close", || connections_to(port) == 0);
}

#[test]
fn health_probe_forms() {
    let www = site();
    let fpm = PhpFpm::builder(www.path(), FpmListen::Tcp)
        .pool_line("ping.path = /fpm-ping")
        .start();
    // FCGI_GET_VALUES by default.
    let h = fe(www.path(), fpm.address(), 1, "");
    let (status, doc) = health(&h);
    assert_eq!(status, 200, "{doc}");
    let message = doc["backends"]["fastcgi"]["message"].as_str().unwrap();
    assert!(message.contains("answered FCGI_GET_VALUES"), "{message}");
    assert!(message.contains(fpm.address()), "{message}");
    // HEAD gives the same status without a body.
    let r = curl(&["-I", &h.url("/_health")]);
    assert_eq!(r.status, 200);
    drop(h);

    // fpm_ping_path: a request to php-fpm's ping.path.
    let h = fe(
        www.path(),
        fpm.address(),
        1,
        "fpm_ping_path = \"/fpm-ping\"",
    );
    let (status, doc) = health(&h);
    assert_eq!(status, 200, "{doc}");
    let message = doc["backends"]["fastcgi"]["message"].as_str().unwrap();
    assert!(
        message.contains("answered GET /fpm-ping with 200"),
        "{message}"
    );
    drop(h);

    // A ping path php-fpm does not know answers 404: unhealthy.
    let h = fe(www.path(), fpm.address(), 1, "fpm_ping_path = \"/nope\"");
    let (status, doc) = health(&h);
    assert_eq!(status, 503, "{doc}");
    let message = doc["backends"]["fastcgi"]["message"].as_str().unwrap();
    assert!(message.contains("GET /nope answered 404"), "{message}");
}

#[test]
fn ipv6_and_plain_socket_path() {
    let www = site();
    let v6 = format!("[::1]:{}", free_port());
    let fpm = PhpFpm::builder(www.path(), FpmListen::Tcp)
        .tcp_address(&v6)
        .start();
    let h = fe(www.path(), &v6, 1, "");
    assert_eq!(get(&h.url("/hello.php")).text(), "Hello, World!");
    assert_eq!(health(&h).0, 200);
    drop((h, fpm));

    let fpm = PhpFpm::start(www.path(), FpmListen::Unix);
    assert!(fpm.address().starts_with('/'));
    let h = fe(www.path(), fpm.address(), 1, "");
    assert_eq!(get(&h.url("/hello.php")).text(), "Hello, World!");
}

#[test]
fn connect_timeout_is_504() {
    // One busy child and an accept queue of one (listen.backlog = 0): a third
    // connection's SYN is dropped by the kernel, so connecting hangs.
    let www = site();
    let fpm = PhpFpm::builder(www.path(), FpmListen::Tcp)
        .max_children(1)
        .pool_line("listen.backlog = 0")
        .start();
    let h = fe(
        www.path(),
        fpm.address(),
        1,
        // The idle timeout frees the child from the first kept-alive connection
        // so it can accept the queued one.
        "fpm_connect_timeout = \"1s\"\nfpm_read_timeout = \"20s\"\nfpm_idle_timeout = \"1s\"",
    );
    let busy: Vec<_> = (0..2)
        .map(|i| {
            let url = h.url("/slow.php?s=3");
            std::thread::sleep(Duration::from_millis(200 * i));
            std::thread::spawn(move || get(&url))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    let r = get(&h.url("/hello.php"));
    let took = start.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_millis(2500),
        "504 after {took:?}"
    );
    assert!(h.stderr().contains("fpm_connect_timeout"), "{}", h.stderr());
    for b in busy {
        assert_eq!(b.join().unwrap().text(), "slow done");
    }
}

/// The defaults never starve a small php-fpm pool: two workers may open up to
/// 16 connections, php-fpm has 2 children. With connections kept open between
/// requests (`fpm_keep_alive = true`) idle ones would hold both children and a
/// new connection (here /_health's probe, once no request answered within the
/// last second) would wait in php-fpm's backlog; by default php-fpm closes each
/// connection after its response and every child goes back to accept.
#[test]
fn default_connections_never_starve_a_small_php_fpm_pool() {
    let www = site();
    let fpm = PhpFpm::builder(www.path(), FpmListen::Unix)
        .max_children(2)
        .start();
    let h = fe(www.path(), fpm.address(), 2, "");
    let started = std::time::Instant::now();
    let clients: Vec<_> = (0..12)
        .map(|_| {
            let url = h.url("/pid.php");
            std::thread::spawn(move || {
                let mut args = vec!["-s", "-m", "20", "-w", "%{http_code}\n"]
                    .into_iter()
                    .map(str::to_owned)
                    .collect::<Vec<_>>();
                args.extend(std::iter::repeat_n(url, 30));
                let out = std::process::Command::new("curl")
                    .args(&args)
                    .output()
                    .unwrap();
                String::from_utf8(out.stdout).unwrap()
            })
        })
        .collect();
    for c in clients {
        let out = c.join().unwrap();
        let codes: Vec<&str> = out.lines().filter(|l| l.len() == 3).collect();
        assert_eq!(codes.len(), 30, "{out}\n{}", h.stderr());
        assert!(codes.iter().all(|c| *c == "200"), "{out}\n{}", h.stderr());
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "360 requests took {:?}: requests waited for a php-fpm child",
        started.elapsed()
    );
    // Idle now: the probe needs a child of its own.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let t = std::time::Instant::now();
    let (status, doc) = health(&h);
    assert_eq!(status, 200, "{doc}");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        t.elapsed()
    );
}

/// A script that notes its run in a file, then kills its own php-fpm child: to
/// fe-php the connection closes before any response byte, as a kept-alive
/// connection that php-fpm closed would.
const DIE_PHP: &str = r#"<?php
file_put_contents($_GET['f'], "ran\n", FILE_APPEND);
if (function_exists('posix_kill')) { posix_kill(getmypid(), 9); }
exec('kill -9 ' . getmypid());
"#;

#[test]
fn a_post_is_never_run_twice_when_php_fpm_dies_in_it() {
    let www = site();
    std::fs::write(www.path().join("die.php"), DIE_PHP).unwrap();
    let marks = tempfile::tempdir().unwrap();
    // php-fpm's children may run as another user.
    std::fs::set_permissions(
        marks.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let fpm = PhpFpm::builder(www.path(), FpmListen::Tcp)
        .max_children(2)
        .start();
    // One kept-alive connection, so each request below goes out on a reused one.
    let h = fe(
        www.path(),
        fpm.address(),
        1,
        "fpm_max_connections = 1\nfpm_keep_alive = true",
    );
    let runs = |name: &str| {
        std::fs::read_to_string(marks.path().join(name))
            .unwrap_or_default()
            .lines()
            .count()
    };
    let warm = || {
        eventually("php-fpm to answer again", || {
            get(&h.url("/hello.php")).status == 200
        })
    };

    warm();
    let post = marks.path().join("post");
    let r = curl(&[
        "--data",
        "x=1",
        &h.url(&format!("/die.php?f={}", post.display())),
    ]);
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(runs("post"), 1, "a POST ran twice:\n{}", h.stderr());

    // A GET on a kept-alive connection found closed goes once more, on a fresh
    // connection (php-fpm closes connections when it recycles a child): here
    // the script dies again, so it ran twice.
    warm();
    let once_more = marks.path().join("get");
    let r = get(&h.url(&format!("/die.php?f={}", once_more.display())));
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(runs("get"), 2, "{}", h.stderr());
}
