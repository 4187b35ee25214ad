//! The embedded backend against real libphp, through a running fe-php-host:
//! OPcache, faults, streaming, isolation of slow requests, crash isolation.

mod common;

use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

fn config() -> String {
    HostConfig::embedded_site(
        r#"memory_limit = "32M"
max_execution_time = 1
display_errors = false
log_errors = true
upload_max_filesize = "16M"
post_max_size = "64M"
# Files written by the test are younger than OPcache's default 2 s protection.
"opcache.file_update_protection" = 0
# crash.php dereferences a bad pointer through FFI: a real segfault in an extension.
"ffi.enable" = true"#,
    )
    .toml()
}

const SCRIPTS: &[(&str, &str)] = &[
    ("hello.php", "<?php echo 'Hello, World!';"),
    ("info.php", "<?php header('Content-Type: application/json'); echo json_encode(['sapi' => PHP_SAPI, 'pid' => getmypid(), 'opcache' => opcache_get_status(false)['opcache_enabled'] ?? false]);"),
    ("compile.php", "<?php include __DIR__ . '/target.php'; echo getmypid();"),
    ("target.php", "<?php $compiled_once = true;"),
    ("check.php", "<?php echo json_encode(['pid' => getmypid(), 'cached' => opcache_is_script_cached(__DIR__ . '/target.php')]);"),
    ("fatal.php", "<?php echo 'before'; undefined_function_xyz();"),
    ("exception.php", "<?php throw new RuntimeException('boom');"),
    ("memory.php", "<?php $a = []; while (true) { $a[] = str_repeat('x', 1 << 20); }"),
    ("timeout.php", "<?php $i = 0; while (true) { $i++; }"),
    ("exit.php", "<?php echo 'partial'; exit(); echo 'never';"),
    ("flush.php", "<?php echo str_repeat('a', 100), \"\\n\"; flush(); sleep(1); echo \"second\\n\";"),
    ("slow.php", "<?php sleep(2); echo 'slow done';"),
    ("finish.php", "<?php echo 'done early'; fastcgi_finish_request(); sleep(1); file_put_contents(__DIR__ . '/after-finish.txt', 'ran');"),
    ("cookies.php", "<?php setcookie('a', '1'); setcookie('b', 'two', ['httponly' => true, 'path' => '/x']); echo 'ok';"),
    ("errorlog.php", "<?php error_log('fephp-test-marker ' . $_GET['n']); echo 'logged';"),
    ("status.php", "<?php http_response_code((int)$_GET['code']); echo 'code';"),
    ("redirect.php", "<?php header('Location: /hello.php'); "),
    ("statushdr.php", "<?php header('Status: 404 Not Found'); echo 'nf';"),
    ("crash.php", "<?php $p = FFI::cast('int*', 16); echo $p[0];"),
    ("post.php", "<?php header('Content-Type: application/json'); echo json_encode(['post' => $_POST, 'files' => array_map(fn($f) => [$f['name'], $f['size'], md5_file($f['tmp_name'])], $_FILES), 'input' => strlen(file_get_contents('php://input'))]);"),
    ("big.php", "<?php for ($i = 0; $i < 40000; $i++) { echo str_pad((string)$i, 99, '.'), \"\\n\"; }"),
    ("abort.php", "<?php while (ob_get_level()) { ob_end_flush(); } ignore_user_abort(true); for ($i = 0; $i < 100; $i++) { echo str_repeat('x', 100), \"\\n\"; flush(); if (connection_aborted()) { file_put_contents(__DIR__ . '/aborted.txt', (string)$i); exit; } usleep(50000); } file_put_contents(__DIR__ . '/aborted.txt', 'never');"),
    ("cwd.php", "<?php echo getcwd(), '|'; chdir('/'); echo getcwd();"),
    ("sub/cwd.php", "<?php echo getcwd();"),
    ("style.css", "body{}"),
];

fn site(dir: &Path) {
    let www = dir.join("www");
    std::fs::create_dir_all(www.join("uploads")).unwrap();
    std::fs::create_dir_all(www.join("sub")).unwrap();
    for (name, body) in SCRIPTS {
        std::fs::write(www.join(name), body).unwrap();
    }
    std::fs::write(www.join("uploads/a.jpg"), "<?php echo 'EXECUTED';").unwrap();
}

fn host(workers: usize) -> Host {
    Host::start(
        &config().replace("workers = 1", &format!("workers = {workers}")),
        site,
    )
}

#[test]
fn runs_php_with_opcache_on() {
    let h = host(1);
    let r = get(&h.url("/hello.php"));
    assert_eq!((r.status, r.text().as_str()), (200, "Hello, World!"));
    assert_eq!(r.header("content-type"), Some("text/html; charset=UTF-8"));
    let v: serde_json::Value = serde_json::from_slice(&get(&h.url("/info.php")).body).unwrap();
    assert_eq!(v["sapi"], "fpm-fcgi");
    assert_eq!(
        v["opcache"], true,
        "OPcache must be enabled under the embedded backend"
    );
}

#[test]
fn opcache_is_shared_by_all_workers() {
    let h = host(2);
    let compiled_by: i64 = get(&h.url("/compile.php")).text().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = curl(&["-H", "Connection: close", &h.url("/check.php")]);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        if v["pid"].as_i64() != Some(compiled_by) {
            assert_eq!(
                v["cached"], true,
                "a script compiled by worker {compiled_by} is not in worker {}'s OPcache",
                v["pid"]
            );
            break;
        }
        assert!(Instant::now() < deadline, "never reached the second worker");
    }
}

#[test]
fn faults_are_500_and_the_next_request_is_served() {
    let h = host(1);
    for path in [
        "/fatal.php",
        "/exception.php",
        "/memory.php",
        "/timeout.php",
    ] {
        let r = get(&h.url(path));
        assert_eq!(r.status, 500, "{path}: {}", r.text());
        let next = get(&h.url("/hello.php"));
        assert_eq!(
            (next.status, next.text().as_str()),
            (200, "Hello, World!"),
            "after {path}"
        );
    }
    let log = h.stderr();
    assert!(
        log.contains("undefined_function_xyz"),
        "fatal error not logged:\n{log}"
    );
    assert!(log.contains("Uncaught RuntimeException: boom"), "{log}");
    assert!(log.contains("Allowed memory size"), "{log}");
    assert!(log.contains("Maximum execution time"), "{log}");
}

#[test]
fn exit_keeps_the_output() {
    let h = host(1);
    let r = get(&h.url("/exit.php"));
    assert_eq!((r.status, r.text().as_str()), (200, "partial"));
}

#[test]
fn status_location_and_cookies() {
    let h = host(1);
    assert_eq!(get(&h.url("/status.php?code=418")).status, 418);
    let r = get(&h.url("/redirect.php"));
    assert_eq!((r.status, r.header("location")), (302, Some("/hello.php")));
    let r = get(&h.url("/statushdr.php"));
    assert_eq!(r.status, 404);
    assert_eq!(
        r.header("status"),
        None,
        "the Status header must not reach the client"
    );
    let r = get(&h.url("/cookies.php"));
    let cookies: Vec<&str> = r
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(cookies, ["a=1", "b=two; path=/x; HttpOnly"]);
}

#[test]
fn flush_streams_and_large_output_arrives_whole() {
    let h = host(1);
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-N",
            "-o",
            "/dev/null",
            "-w",
            "%{time_starttransfer} %{time_total} %{size_download}",
            &h.url("/flush.php"),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let v: Vec<f64> = text
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert!(
        v[0] < 0.5 && v[1] >= 0.9,
        "first byte {}s, total {}s: flush() did not stream",
        v[0],
        v[1]
    );
    assert_eq!(v[2] as usize, 101 + 7);
    let r = get(&h.url("/big.php"));
    assert_eq!(r.body.len(), 40000 * 100);
    assert!(r.text().ends_with(&format!("{}\n", str_pad(39999))));
}

fn str_pad(i: usize) -> String {
    format!("{i:.<99}")
}

#[test]
fn fastcgi_finish_request_ends_the_response_early() {
    let h = host(1);
    let started = Instant::now();
    let r = get(&h.url("/finish.php"));
    assert_eq!(r.text(), "done early");
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "the response waited for the script"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        h.dir.path().join("www/after-finish.txt").exists(),
        "the script did not run on after the response"
    );
}

#[test]
fn error_log_reaches_the_host_log() {
    let h = host(1);
    assert_eq!(get(&h.url("/errorlog.php?n=42")).text(), "logged");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        h.stderr().contains("fephp-test-marker 42"),
        "{}",
        h.stderr()
    );
}

#[test]
fn post_bodies_and_uploads() {
    let h = host(1);
    let file = h.dir.path().join("upload.bin");
    let data: Vec<u8> = (0..3 << 20).map(|i: u32| (i * 7) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let r = curl(&[
        "-F",
        "field=value",
        "-F",
        &format!("up=@{}", file.display()),
        &h.url("/post.php"),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["post"]["field"], "value");
    assert_eq!(v["files"]["up"][1], 3 << 20);
    assert_eq!(v["files"]["up"][2], md5(&data));
    let r = curl(&["-d", "a=1&b=%C3%A9+x", &h.url("/post.php")]);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["post"]["b"], "é x");
    let r = curl(&[
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        "{\"k\":[1,2]}",
        &h.url("/post.php"),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["input"], 11);
}

/// md5 through PHP's CLI, so the test needs no hashing crate.
fn md5(data: &[u8]) -> String {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), data).unwrap();
    let out = std::process::Command::new("php")
        .args(["-r", &format!("echo md5_file('{}');", f.path().display())])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn non_php_files_are_served_never_executed() {
    let h = host(1);
    let r = get(&h.url("/style.css"));
    assert_eq!((r.status, r.text().as_str()), (200, "body{}"));
    assert_eq!(r.header("cache-control"), Some("public, max-age=3600"));
    let r = get(&h.url("/uploads/a.jpg"));
    assert_eq!(r.text(), "<?php echo 'EXECUTED';");
    for path in [
        "/uploads/a.jpg/x.php",
        "/uploads/a.jpg/x.php/y",
        "/missing.php",
    ] {
        let r = get(&h.url(path));
        assert_eq!(r.status, 404, "{path}");
        assert!(!r.text().contains("EXECUTED"));
    }
}

#[test]
fn a_slow_script_does_not_delay_static_files() {
    let h = host(1);
    let url = h.url("/slow.php");
    let slow = std::thread::spawn(move || get(&url));
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let r = get(&h.url("/style.css"));
    let took = started.elapsed();
    assert_eq!(r.status, 200);
    assert!(
        took < Duration::from_millis(300),
        "static file took {took:?} behind a slow PHP request"
    );
    assert_eq!(get(&h.url("/_health")).status, 200);
    assert_eq!(slow.join().unwrap().text(), "slow done");
}

#[test]
fn a_crashing_runner_is_replaced_and_only_its_request_fails() {
    let h = host(2);
    // Load on static files and PHP while one worker dies.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for i in 0..4 {
        let url = h.url(if i % 2 == 0 {
            "/hello.php"
        } else {
            "/style.css"
        });
        let stop = stop.clone();
        clients.push(std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let out = std::process::Command::new("curl")
                    .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &url])
                    .output()
                    .unwrap();
                if out.stdout == b"200" {
                    ok += 1
                } else {
                    failed += 1
                }
            }
            (ok, failed)
        }));
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = h.workers();
    let runners = h.runners();
    let crash = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &h.url("/crash.php"),
        ])
        .output()
        .unwrap();
    assert_eq!(crash.stdout, b"502");
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0, 0);
    for c in clients {
        let (o, f) = c.join().unwrap();
        ok += o;
        failed += f;
    }
    // The crash cost its runner, not a worker: no other request failed.
    assert_eq!(h.workers(), before, "a worker died");
    assert!(h.stderr().contains("killed by signal 11"), "{}", h.stderr());
    let now = h.runners();
    assert!(
        runners.iter().any(|r| !now.contains(r)) && !now.is_empty(),
        "the crashed runner was not replaced: {runners:?} -> {now:?}"
    );
    assert_eq!(failed, 0, "{failed} failed, {ok} succeeded");
    assert!(ok > 20, "{ok}");
}

#[test]
fn connection_aborted_tells_the_script_the_client_left() {
    use std::io::{Read, Write};
    let h = host(1);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", h.port)).unwrap();
    s.write_all(b"GET /abort.php HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap();
    assert!(n > 0 && buf.starts_with(b"HTTP/1.1 200"));
    drop(s);
    let marker = h.dir.path().join("www/aborted.txt");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !marker.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let at = std::fs::read_to_string(&marker)
        .unwrap_or_else(|_| panic!("the script never finished; log:\n{}", h.stderr()));
    assert_ne!(at, "never", "connection_aborted() never became true");
    assert!(
        at.parse::<u32>().unwrap() < 20,
        "noticed only after {at} iterations"
    );
}

#[test]
fn a_slow_embedded_script_does_not_delay_fastcgi_responses() {
    use common::peers::{FpmListen, PhpFpm};
    let dir = tempfile::tempdir().unwrap();
    site(dir.path());
    let www = dir.path().join("www");
    let fpm = PhpFpm::start(&www, FpmListen::Unix);
    let config = format!(
        "{}\n[[backend.routing_rules]]\npattern = {{ type = \"exact\", value = \"/hello.php\" }}\nbackend = \"fastcgi\"\n",
        config().replacen(
            "[php]\n",
            &format!(
                "[php]\nfpm_socket = \"{}\"\ndocument_root = \"{}\"\n",
                fpm.address(),
                www.display()
            ),
            1
        )
    );
    let h = Host::start(&config, site);
    let url = h.url("/slow.php");
    let slow = std::thread::spawn(move || get(&url));
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let r = get(&h.url("/hello.php"));
    let took = started.elapsed();
    assert_eq!((r.status, r.text().as_str()), (200, "Hello, World!"));
    assert!(
        took < Duration::from_millis(500),
        "a FastCGI request took {took:?} behind a slow embedded one"
    );
    assert_eq!(slow.join().unwrap().text(), "slow done");
}

#[test]
fn sigterm_lets_a_running_php_request_finish() {
    let mut h = host(1);
    let url = h.url("/slow.php");
    let slow = std::thread::spawn(move || {
        std::process::Command::new("curl")
            .args(["-s", "-w", " %{http_code}", &url])
            .output()
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(400));
    h.signal(libc::SIGTERM);
    let out = slow.join().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "slow done 200",
        "{}",
        h.stderr()
    );
    assert!(h.child.wait().unwrap().success());
}

#[test]
fn scripts_run_in_their_own_directory() {
    let h = host(1);
    let www = h.dir.path().join("www").canonicalize().unwrap();
    let www = www.display().to_string();
    for _ in 0..2 {
        // A script that moves away does not move the next one.
        assert_eq!(get(&h.url("/cwd.php")).text(), format!("{www}|/"));
        assert_eq!(get(&h.url("/sub/cwd.php")).text(), format!("{www}/sub"));
    }
}

#[test]
fn head_of_a_php_response_has_no_body_and_no_false_length() {
    let h = host(1);
    let r = curl(&["-I", &h.url("/hello.php")]);
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_ne!(
        r.header("content-length"),
        Some("0"),
        "HEAD must not claim an empty body"
    );
}
