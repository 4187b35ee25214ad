//! The proxy backend through a running fe-php-host, against real upstreams: other
//! fe-php-host processes (embedded PHP and static files) and a raw-socket HTTP
//! server that records the exact bytes it receives.

mod common;

use common::upstream::{ok, RawUpstream, Reaction};
use common::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A fe-php-host whose default backend is the proxy to `upstreams`.
fn proxy_host(upstreams: &[String], extra: &str) -> Host {
    let list: Vec<String> = upstreams.iter().map(|u| format!("\"{u}\"")).collect();
    Host::start(
        &format!(
            r#"
[server]
listen = "127.0.0.1:{{port}}"
workers = 1
access_log = "off"

[backend]
default_backend = "proxy"

[backend.proxy]
upstreams = [{}]
{extra}

[php]
libphp_path = "/nonexistent/libphp.so"
"#,
            list.join(", ")
        ),
        |_| {},
    )
}

/// An upstream fe-php-host running PHP (embedded) and static files from `www`.
fn php_upstream(files: &[(&str, &str)]) -> Host {
    let files: Vec<(String, String)> = files
        .iter()
        .map(|(n, c)| (n.to_string(), c.to_string()))
        .collect();
    Host::start(
        r#"
[server]
listen = "127.0.0.1:{port}"
workers = 2
access_log = "off"

[backend]
default_backend = "embedded"

[backend.static_files]
enable = true
root = "{dir}/www"

[php.ini]
display_errors = false
"#,
        move |dir| write_files(dir, &files),
    )
}

/// An upstream fe-php-host serving static files only.
fn static_upstream(setup: impl FnOnce(&Path)) -> Host {
    Host::start(
        r#"
[server]
listen = "127.0.0.1:{port}"
workers = 1
access_log = "off"

[backend]
default_backend = "static"

[backend.static_files]
enable = true
root = "{dir}/www"

[php]
libphp_path = "/nonexistent/libphp.so"
"#,
        |dir| {
            std::fs::create_dir_all(dir.join("www")).unwrap();
            setup(&dir.join("www"))
        },
    )
}

fn write_files(dir: &Path, files: &[(String, String)]) {
    for (name, content) in files {
        let p = dir.join("www").join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
}

fn base(h: &Host) -> String {
    format!("http://127.0.0.1:{}", h.port)
}

/// The value of one series in `/_metrics` (0 when absent).
fn metric(h: &Host, series: &str) -> f64 {
    let text = get(&h.url("/_metrics")).text();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.parse().unwrap())
}

fn json(r: &Reply) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

const ECHO: &str = r#"<?php
setcookie('a', '1');
setcookie('b', 'two', ['httponly' => true]);
header('X-Upstream: php');
http_response_code((int)($_GET['code'] ?? 200));
header('Content-Type: application/json');
$h = fn($k) => $_SERVER[$k] ?? null;
echo json_encode([
    'method' => $h('REQUEST_METHOD'), 'uri' => $h('REQUEST_URI'), 'host' => $h('HTTP_HOST'),
    'xff' => $h('HTTP_X_FORWARDED_FOR'), 'xfp' => $h('HTTP_X_FORWARDED_PROTO'),
    'xfh' => $h('HTTP_X_FORWARDED_HOST'), 'keep_alive' => $h('HTTP_KEEP_ALIVE'),
    'secret' => $h('HTTP_X_SECRET'), 'te' => $h('HTTP_TE'), 'custom' => $h('HTTP_X_CUSTOM'),
    'type' => $h('CONTENT_TYPE'), 'length' => $h('CONTENT_LENGTH'),
    'body_md5' => md5(file_get_contents('php://input')), 'post' => $_POST,
]);
"#;

#[test]
fn round_trip_through_a_php_upstream() {
    let up = php_upstream(&[("echo.php", ECHO), ("style.css", "body { color: red }\n")]);
    let px = proxy_host(&[base(&up)], "");

    let r = curl(&[
        &px.url("/echo.php?x=1&y=%20z"),
        "-H",
        "Host: example.test:8080",
        "-H",
        "X-Forwarded-For: 203.0.113.9",
        "-H",
        "X-Forwarded-Proto: https",
        "-H",
        "Connection: keep-alive, X-Secret",
        "-H",
        "X-Secret: s3",
        "-H",
        "Keep-Alive: timeout=300",
        "-H",
        "TE: trailers",
        "-H",
        "X-Custom: kept",
    ]);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = json(&r);
    assert_eq!(v["method"], "GET");
    assert_eq!(v["uri"], "/echo.php?x=1&y=%20z");
    assert_eq!(v["host"], "example.test:8080");
    assert_eq!(v["xff"], "203.0.113.9, 127.0.0.1");
    assert_eq!(v["xfp"], "http");
    assert_eq!(v["xfh"], "example.test:8080");
    assert_eq!(v["custom"], "kept");
    for hop in ["keep_alive", "secret", "te"] {
        assert!(v[hop].is_null(), "{hop} was forwarded: {v}");
    }
    assert_eq!(r.header("x-upstream"), Some("php"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let cookies: Vec<&str> = r
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(cookies, ["a=1", "b=two; HttpOnly"]);

    // POST: form fields, and a body larger than one read.
    let r = curl(&[&px.url("/echo.php?code=201"), "-d", "name=fe&lang=php"]);
    assert_eq!(r.status, 201);
    let v = json(&r);
    assert_eq!(v["method"], "POST");
    assert_eq!(v["post"]["name"], "fe");
    assert_eq!(v["length"], "16");
    assert_eq!(v["type"], "application/x-www-form-urlencoded");
    let big = diff::pattern(300_000, 7);
    let file = px.dir.path().join("big.bin");
    std::fs::write(&file, &big).unwrap();
    let r = curl(&[
        &px.url("/echo.php"),
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", file.display()),
    ]);
    assert_eq!(json(&r)["body_md5"], diff::md5_hex(&big));

    // Statuses pass through; HEAD has GET's headers and no body.
    assert_eq!(get(&px.url("/echo.php?code=404")).status, 404);
    assert_eq!(get(&px.url("/missing.txt")).status, 404);
    let r = curl(&["-I", &px.url("/style.css")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("20"));
    assert!(r.body.is_empty());
    let r = get(&px.url("/style.css"));
    assert_eq!(r.text(), "body { color: red }\n");
    let etag = r.header("etag").unwrap().to_owned();
    let r = curl(&[
        &px.url("/style.css"),
        "-H",
        &format!("If-None-Match: {etag}"),
    ]);
    assert_eq!(r.status, 304);

    // Counted as proxy.
    assert!(metric(&px, "fephp_requests_total{backend=\"proxy\",code=\"200\"}") >= 3.0);
    assert_eq!(
        metric(&px, "fephp_requests_total{backend=\"proxy\",code=\"404\"}"),
        2.0
    );
    assert_eq!(
        metric(&px, "fephp_requests_total{backend=\"proxy\",code=\"304\"}"),
        1.0
    );
    assert!(
        metric(
            &px,
            "fephp_request_duration_seconds_count{backend=\"proxy\"}"
        ) >= 7.0
    );
    assert_eq!(
        metric(&px, "fephp_requests_in_flight{backend=\"proxy\"}"),
        0.0
    );
    assert!(metric(&px, "fephp_response_bytes_total{backend=\"proxy\"}") > 20.0);
}

#[test]
fn exact_bytes_both_ways() {
    let up = RawUpstream::start(|_| {
        Reaction::Reply(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nUpgrade: h2c\r\nTrailer: X-T\r\nSet-Cookie: s=1\r\nSet-Cookie: t=2\r\nX-Kept: yes\r\n\r\nok"
                .to_vec(),
        )
    });
    let px = proxy_host(&[up.url()], "");
    let r = curl(&[
        &px.url("/a%2Fb/./c?x=1&&y=%41"),
        "-H",
        "Proxy: http://evil.test:3128",
        "-H",
        "Proxy-Authorization: Basic eDp5",
        "-H",
        "Proxy-Connection: keep-alive",
        "-H",
        "Upgrade: websocket",
        "-H",
        "Connection: Upgrade",
        "-H",
        "Expect:",
    ]);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok");
    assert_eq!(r.header("x-kept"), Some("yes"));
    for hop in [
        "x-hop",
        "keep-alive",
        "proxy-authenticate",
        "upgrade",
        "trailer",
    ] {
        assert!(
            r.header(hop).is_none(),
            "{hop} reached the client: {:?}",
            r.headers
        );
    }
    let cookies = r
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
        .count();
    assert_eq!(cookies, 2);

    let got = up.received();
    assert_eq!(got.len(), 1);
    let req = &got[0];
    assert_eq!(req.request_line(), "GET /a%2Fb/./c?x=1&&y=%41 HTTP/1.1");
    assert_eq!(req.header("host"), [format!("127.0.0.1:{}", px.port)]);
    for hop in [
        "proxy",
        "proxy-authorization",
        "proxy-connection",
        "upgrade",
        "connection",
        "te",
        "keep-alive",
    ] {
        assert!(
            req.header(hop).is_empty(),
            "{hop} was forwarded:\n{}",
            req.head
        );
    }
    assert_eq!(req.header("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(req.header("x-forwarded-proto"), ["http"]);
    assert_eq!(
        req.header("x-forwarded-host"),
        [format!("127.0.0.1:{}", px.port)]
    );
}

#[test]
fn keep_alive_connections_are_reused() {
    let up = RawUpstream::start(|_| Reaction::Reply(ok("hello")));
    let px = proxy_host(&[up.url()], "max_connections = 4");
    for i in 0..100 {
        let r = get(&px.url(&format!("/n/{i}")));
        assert_eq!((r.status, r.text().as_str()), (200, "hello"));
    }
    assert_eq!(
        up.connections(),
        1,
        "100 sequential requests, one connection"
    );

    // 16 concurrent clients, at most 4 connections per worker to the upstream.
    let out = Command::new("wrk")
        .args(["-t1", "-c16", "-d2s", &px.url("/load")])
        .output()
        .expect("wrk is installed");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(
        !report.contains("Non-2xx") && !report.contains("Socket errors"),
        "{report}"
    );
    let requests = up.received().len();
    assert!(requests > 200, "{report}");
    assert!(
        up.connections() <= 5,
        "{} connections for {requests} requests",
        up.connections()
    );
}

#[test]
fn round_robin_and_passive_health() {
    let a = static_upstream(|www| std::fs::write(www.join("who.txt"), "A").unwrap());
    let mut b = Some(static_upstream(|www| {
        std::fs::write(www.join("who.txt"), "B").unwrap()
    }));
    let b_url = base(b.as_ref().unwrap());
    let px = proxy_host(
        &[base(&a), b_url.clone()],
        "max_fails = 1\nfail_timeout = \"30s\"",
    );

    let answers: Vec<String> = (0..20).map(|_| get(&px.url("/who.txt")).text()).collect();
    let from_a = answers.iter().filter(|s| *s == "A").count();
    assert_eq!(from_a, 10, "{answers:?}");
    assert!(
        answers.windows(2).all(|w| w[0] != w[1]),
        "alternates: {answers:?}"
    );
    let health = json(&get(&px.url("/_health")));
    assert_eq!(health["status"], "healthy");
    let p = &health["backends"]["proxy"];
    assert_eq!(p["enabled"], true);
    assert_eq!(p["healthy"], true);
    assert!(p["latency_ms"].is_u64(), "{p}");
    assert_eq!(
        p["message"],
        "Proxy backend is healthy (2 of 2 upstreams reachable)"
    );
    for kept in ["embedded", "fastcgi", "static"] {
        assert_eq!(health["backends"][kept]["enabled"], false, "{health}");
    }

    // B stops: every request still succeeds, on A; after max_fails (1) B is out of
    // the turn and no longer tried.
    drop(b.take());
    for _ in 0..20 {
        let r = get(&px.url("/who.txt"));
        assert_eq!((r.status, r.text().as_str()), (200, "A"));
    }
    assert_eq!(metric(&px, "fephp_proxy_upstream_failures_total"), 1.0);
    assert_eq!(metric(&px, "fephp_proxy_retries_total"), 1.0);
    let err = px.stderr();
    assert!(
        err.contains(&format!(
            "cannot connect to upstream {b_url}: connection refused"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "upstream {b_url} is out of the turn for 30s after 1 failure(s)"
        )),
        "{err}"
    );
    let r = get(&px.url("/_health"));
    assert_eq!(r.status, 200);
    let p = &json(&r)["backends"]["proxy"];
    let msg = p["message"].as_str().unwrap();
    assert!(
        msg.starts_with("Proxy backend is healthy (1 of 2 upstreams reachable: "),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("{b_url}: Connection refused")),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("{b_url}: out of the turn for")),
        "{msg}"
    );

    // Both gone: 502, and the server is unhealthy.
    let a_url = base(&a);
    drop(a);
    let r = get(&px.url("/who.txt"));
    assert_eq!(r.status, 502);
    assert_eq!(
        r.text(),
        "502 Bad Gateway\nThe upstream server is not reachable.\n"
    );
    let r = get(&px.url("/_health"));
    assert_eq!(r.status, 503);
    let p = &json(&r)["backends"]["proxy"];
    assert_eq!(p["healthy"], false);
    assert!(p["latency_ms"].is_null());
    assert!(p["message"].as_str().unwrap().contains(&a_url), "{p}");
}

#[test]
fn failures_are_502_and_504_with_a_hint() {
    // Nothing listens.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let px = proxy_host(std::slice::from_ref(&closed), "");
    let r = get(&px.url("/x"));
    assert_eq!(r.status, 502);
    assert_eq!(
        r.text(),
        "502 Bad Gateway\nThe upstream server is not reachable.\n"
    );
    let r = curl(&["-I", &px.url("/x")]);
    assert_eq!(r.status, 502);
    assert!(r.body.is_empty());
    let err = px.stderr();
    assert!(err.contains(&format!("cannot connect to upstream {closed}: connection refused: the upstream server is not running or [backend.proxy] names the wrong address")), "{err}");
    drop(px);

    // Slow upstream: 504 after read_timeout; closing without an answer: 502.
    let up = RawUpstream::start(|r| {
        if r.request_line().contains("/slow") {
            Reaction::After(Duration::from_secs(3), ok("late"))
        } else if r.request_line().contains("/close") {
            Reaction::Close
        } else {
            Reaction::Reply(ok("fine"))
        }
    });
    let px = proxy_host(&[up.url()], "read_timeout = \"1s\"\nmax_fails = 0");
    let started = Instant::now();
    let r = get(&px.url("/slow"));
    assert_eq!(r.status, 504);
    assert_eq!(
        r.text(),
        "504 Gateway Timeout\nThe upstream server did not answer in time.\n"
    );
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    let r = curl(&["-X", "POST", "-d", "x", &px.url("/close")]);
    assert_eq!(r.status, 502);
    assert_eq!(
        r.text(),
        "502 Bad Gateway\nThe upstream server closed the connection before the response ended.\n"
    );
    assert_eq!(get(&px.url("/fine")).text(), "fine");
    let err = px.stderr();
    assert!(err.contains(&format!("upstream {} sent nothing for 1s before the response head ([backend.proxy] read_timeout)", up.url())), "{err}");
    assert!(
        err.contains(&format!(
            "upstream {} closed the connection before sending a complete response head",
            up.url()
        )),
        "{err}"
    );
    assert_eq!(
        metric(&px, "fephp_requests_total{backend=\"proxy\",code=\"504\"}"),
        1.0
    );
}

#[test]
fn connections_the_upstream_closed_are_replaced() {
    // The upstream closes every connection after its response, without a
    // `Connection: close`: the kept-alive connection is found closed before reuse.
    let up = RawUpstream::start(|_| Reaction::ReplyAndClose(ok("once")));
    let px = proxy_host(&[up.url()], "");
    for i in 0..20 {
        let r = if i % 2 == 0 {
            get(&px.url("/get"))
        } else {
            curl(&["-d", "x=1", &px.url("/post")])
        };
        assert_eq!((r.status, r.text().as_str()), (200, "once"), "request {i}");
    }
    assert_eq!(up.connections(), 20);
    assert_eq!(metric(&px, "fephp_proxy_upstream_failures_total"), 0.0);
}

#[test]
fn a_body_that_breaks_off_truncates_the_response() {
    let mut head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n".to_vec();
    head.extend(std::iter::repeat_n(b'x', 200_000));
    let up = RawUpstream::start(move |_| Reaction::ReplyAndClose(head.clone()));
    let px = proxy_host(&[up.url()], "max_fails = 0");
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            "--max-time",
            "10",
        ])
        .arg(px.url("/big"))
        .output()
        .unwrap();
    // The client never gets a complete body: curl sees it cut short after the 200
    // head (exit 18), or, when the break comes before the host has flushed the
    // head, no reply at all (52): the host closes the connection either way.
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    match out.status.code() {
        Some(18) => {
            let (code, size) = stdout.split_once(' ').unwrap();
            assert_eq!(code, "200");
            assert!(size.parse::<u64>().unwrap() <= 200_000, "{stdout}");
        }
        Some(52) => {}
        other => panic!("curl exit {other:?}: {stdout}"),
    }
    let err = px.stderr();
    assert!(
        err.contains(&format!(
            "upstream {} broke off the response body",
            up.url()
        )),
        "{err}"
    );
    // The worker goes on serving.
    assert_eq!(get(&px.url("/_health")).status, 200);
}

#[test]
fn a_connect_timeout_is_504() {
    // A listener whose accept queue is full and never drained: the kernel drops
    // further SYNs, so connecting hangs.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&addr.into());
        fillers.push(s);
    }
    std::thread::sleep(Duration::from_millis(100));
    let url = format!("http://{addr}");
    let px = proxy_host(std::slice::from_ref(&url), "connect_timeout = \"500ms\"");
    let started = Instant::now();
    let r = get(&px.url("/x"));
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(
        r.text(),
        "504 Gateway Timeout\nThe upstream server did not accept the connection in time.\n"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let err = px.stderr();
    assert!(
        err.contains(&format!(
            "connecting to upstream {url} took longer than 500ms ([backend.proxy] connect_timeout)"
        )),
        "{err}"
    );
    drop(fillers);
}

/// Peak resident memory of a process (VmHWM), in bytes.
fn peak_rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[test]
fn a_large_response_streams_with_bounded_memory() {
    const SIZE: u64 = 200 << 20;
    let up = static_upstream(|www| {
        let f = std::fs::File::create(www.join("big.bin")).unwrap();
        f.set_len(SIZE).unwrap();
    });
    let px = proxy_host(&[base(&up)], "");
    let worker = px.workers()[0];
    // A slow client: the proxy must hold back, not buffer the upstream's body.
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            "--limit-rate",
            "50M",
        ])
        .arg(px.url("/big.bin"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("200 {SIZE}"));
    let peak = peak_rss(worker);
    eprintln!("proxy worker peak RSS: {} MiB", peak >> 20);
    assert!(
        peak < 64 << 20,
        "worker peak RSS {} MiB for a 200 MiB response",
        peak >> 20
    );
    assert_eq!(
        metric(&px, "fephp_response_bytes_total{backend=\"proxy\"}"),
        SIZE as f64
    );
}

#[test]
fn shipped_proxy_and_split_examples_pass_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for name in ["proxy.toml", "ab_split.toml"] {
        let out = Command::new(HOST_BIN)
            .arg("--check")
            .arg("--config")
            .arg(dir.join(name))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_reload_switches_upstreams_without_failing_requests() {
    let a = static_upstream(|www| std::fs::write(www.join("who.txt"), "A").unwrap());
    let b = static_upstream(|www| std::fs::write(www.join("who.txt"), "B").unwrap());
    let px = proxy_host(&[base(&a)], "");
    assert_eq!(get(&px.url("/who.txt")).text(), "A");
    let text = std::fs::read_to_string(&px.config).unwrap();
    std::fs::write(&px.config, text.replace(&base(&a), &base(&b))).unwrap();
    px.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(&px.url("/who.txt"));
        assert_eq!(r.status, 200, "{}", r.text());
        if r.text() == "B" {
            break;
        }
        assert!(Instant::now() < deadline, "the reload never took effect");
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..10 {
        assert_eq!(get(&px.url("/who.txt")).text(), "B");
    }
}
