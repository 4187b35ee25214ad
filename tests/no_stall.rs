//! No delayed-ACK stalls: a peer that leaves Nagle's algorithm on and writes a
//! message in two pieces holds the second until the first is acknowledged, and a
//! kept-alive Linux receiver delays that ACK by up to 40 ms. php-fpm writes every
//! response over 8 KiB that way; HTTP clients may send a request's head and body
//! that way. Each test counts requests slower than `SLOW`: a stall makes most of
//! them slow, while a loaded test machine makes at most one or two slow.

mod common;

use common::peers::{FpmListen, PhpFpm};
use common::upstream::{RawUpstream, Reaction};
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Far above a loopback request of these sizes, well under the 40 ms stall.
const SLOW: Duration = Duration::from_millis(30);
const SIZES: &[usize] = &[1024, 4096, 9000, 20_000, 65_536, 100_000, 1 << 20];
const ROUNDS: usize = 4;

/// Times `GET path` `ROUNDS` times per size on one kept-alive curl, checking
/// each body's size; returns the slow ones as "size: ms". A stall repeats at
/// every run, a busy machine's hiccups do not: with more than two slow, the
/// run is repeated once (on a fresh connection) and its count stands.
fn slow_sizes(h: &Host, path: impl Fn(usize) -> String) -> Vec<String> {
    let first = slow_sizes_once(h, &path);
    if first.len() <= 2 {
        return first;
    }
    eprintln!("slow responses (run again): {first:?}");
    slow_sizes_once(h, &path)
}

fn slow_sizes_once(h: &Host, path: &impl Fn(usize) -> String) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "-s".into(),
        "-w".into(),
        "%{size_download} %{time_total}\\n".into(),
    ];
    let mut expected = Vec::new();
    for _ in 0..ROUNDS {
        for &n in SIZES {
            args.push("-o".into());
            args.push("/dev/null".into());
            args.push(h.url(&path(n)));
            expected.push(n);
        }
    }
    let out = std::process::Command::new("curl")
        .args(&args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{text}");
    let mut slow = Vec::new();
    for (line, n) in lines.iter().zip(expected) {
        let (size, secs) = line.split_once(' ').unwrap();
        assert_eq!(size.parse::<usize>().unwrap(), n, "{text}");
        let t = Duration::from_secs_f64(secs.parse().unwrap());
        if t > SLOW {
            slow.push(format!("{n}: {} ms", t.as_millis()));
        }
    }
    slow
}

const SCRIPTS: &[(&str, &str)] = &[
    ("n.php", "<?php echo str_repeat('x', (int) $_GET['n']);"),
    // Half, flush() (with PHP's output buffers ended first), the other half.
    (
        "flush.php",
        "<?php $n = (int) $_GET['n']; echo str_repeat('a', intdiv($n, 2)); while (ob_get_level() > 0) { ob_end_flush(); } flush(); echo str_repeat('b', $n - intdiv($n, 2));",
    ),
    ("post.php", "<?php echo strlen(file_get_contents('php://input'));"),
];

fn site() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in SCRIPTS {
        std::fs::write(dir.path().join(name), body).unwrap();
    }
    dir
}

fn fastcgi_host(root: &std::path::Path, fpm: &PhpFpm) -> Host {
    Host::start(
        &format!(
            r#"
[server]
listen = "127.0.0.1:{{port}}"
workers = 1
access_log = "off"

[backend]
default_backend = "fastcgi"

[php]
libphp_path = "/nonexistent/libphp.so"
fpm_socket = "{}"
document_root = "{}"
"#,
            fpm.address(),
            root.display()
        ),
        |_| {},
    )
}

/// Over TCP php-fpm writes an 8 KiB record, then the rest; the pooled, kept-alive
/// connection must acknowledge the first at once.
#[test]
fn fastcgi_responses_of_every_size_arrive_without_a_stall() {
    let www = site();
    let fpm = PhpFpm::start(www.path(), FpmListen::Tcp);
    let h = fastcgi_host(www.path(), &fpm);
    let slow = slow_sizes(&h, |n| format!("/n.php?n={n}"));
    assert!(slow.len() <= 2, "slow FastCGI responses: {slow:?}");
    let slow = slow_sizes(&h, |n| format!("/flush.php?n={n}"));
    assert!(
        slow.len() <= 2,
        "slow FastCGI responses with a flush(): {slow:?}"
    );
}

/// An upstream with Nagle on that writes 8 KiB, then the rest.
#[test]
fn proxied_responses_of_every_size_arrive_without_a_stall() {
    let upstream = RawUpstream::start(|req| {
        let n: usize = req
            .request_line()
            .split("n=")
            .nth(1)
            .and_then(|v| v.split(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n").into_bytes();
        reply.resize(reply.len() + n, b'x');
        let tail = reply.split_off(reply.len().min(8192));
        Reaction::Pieces(vec![reply, tail])
    });
    let h = Host::start(
        &format!(
            r#"
[server]
listen = "127.0.0.1:{{port}}"
workers = 1
access_log = "off"

[backend]
default_backend = "proxy"

[backend.proxy]
upstreams = ["{}"]

[php]
libphp_path = "/nonexistent/libphp.so"
"#,
            upstream.url()
        ),
        |_| {},
    );
    let slow = slow_sizes(&h, |n| format!("/big?n={n}"));
    assert!(slow.len() <= 2, "slow proxied responses: {slow:?}");
}

/// A client with Nagle on (Python's, Go's and many others' default) that writes a
/// POST's head and body apart, on a kept-alive connection.
#[test]
fn a_request_body_written_apart_from_its_head_arrives_without_a_stall() {
    let www = site();
    let fpm = PhpFpm::start(www.path(), FpmListen::Unix);
    let h = fastcgi_host(www.path(), &fpm);
    let mut s = TcpStream::connect(("127.0.0.1", h.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = [b'y'; 100];
    let mut slow = Vec::new();
    for i in 0..12 {
        let t = Instant::now();
        s.write_all(b"POST /post.php HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n")
            .unwrap();
        s.write_all(&body).unwrap();
        let reply = read_one_response(&mut s);
        assert!(
            reply.ends_with(b"\r\n\r\n100"),
            "{}",
            String::from_utf8_lossy(&reply)
        );
        if t.elapsed() > SLOW {
            slow.push(format!("request {i}: {} ms", t.elapsed().as_millis()));
        }
    }
    assert!(slow.len() <= 2, "slow requests: {slow:?}");
}

/// One response with a Content-Length, read whole.
fn read_one_response(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .expect("a Content-Length");
            if buf.len() >= end + 4 + len {
                return buf;
            }
        }
        let n = s.read(&mut chunk).unwrap();
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}
