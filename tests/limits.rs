//! `[server]` limits of fe-php-host over real sockets: header, body and keep-alive
//! timeouts, header and body sizes, connections per worker.

mod common;

use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn config() -> String {
    HostConfig::static_site().server("{limits}").toml()
}

fn site(dir: &Path) {
    std::fs::create_dir_all(dir.join("public")).unwrap();
    std::fs::write(dir.join("public/hello.txt"), "hello\n").unwrap();
}

fn host(limits: &str) -> Host {
    Host::start(&config().replace("{limits}", limits), site)
}

fn connect(h: &Host) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", h.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

const GET: &[u8] = b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n";

/// Reads one response whose body is `hello\n` (or any response with a
/// Content-Length) from a kept-alive connection.
fn read_response(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while !out.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => out.push(byte[0]),
            other => panic!(
                "connection ended inside a response head ({other:?}): {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    let head = String::from_utf8_lossy(&out).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    head + &String::from_utf8_lossy(&body)
}

/// Reads until the server closes; returns what arrived and when the close came.
fn read_to_close(s: &mut TcpStream) -> (String, Instant) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "the server did not close the connection: {e}; got {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), Instant::now())
}

/// True when nothing arrives (and the connection stays open) for `wait`.
fn stays_silent(s: &mut TcpStream, wait: Duration) -> bool {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 64];
    let silent = matches!(s.read(&mut buf), Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    silent
}

#[test]
fn header_read_timeout_answers_408_to_a_slow_head_and_closes() {
    let h = host("header_read_timeout = \"1s\"\nkeepalive_timeout = \"30s\"");
    // Slowloris: a header line every 200 ms, never the blank line.
    let mut s = connect(&h);
    let started = Instant::now();
    s.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    for i in 0..3 {
        std::thread::sleep(Duration::from_millis(200));
        s.write_all(format!("X-Drip-{i}: x\r\n").as_bytes())
            .unwrap();
    }
    let (answer, closed) = read_to_close(&mut s);
    let took = closed - started;
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer:?}"
    );
    assert!(answer.contains("Connection: close"), "{answer:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "closed after {took:?}"
    );

    // A connection that never sends a byte is closed (no response) after the same time.
    let mut s = connect(&h);
    let started = Instant::now();
    let (answer, closed) = read_to_close(&mut s);
    assert_eq!(answer, "");
    let took = closed - started;
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "closed after {took:?}"
    );

    // Between requests the keep-alive timeout applies (30 s here), and the next
    // head gets its own second from its first byte.
    let mut s = connect(&h);
    s.write_all(GET).unwrap();
    assert!(read_response(&mut s).starts_with("HTTP/1.1 200"));
    std::thread::sleep(Duration::from_millis(1500));
    s.write_all(b"GET /hello.txt HTTP/1.1\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(600));
    s.write_all(b"Host: x\r\n\r\n").unwrap();
    assert!(read_response(&mut s).starts_with("HTTP/1.1 200"));

    // Well-behaved clients are unaffected.
    assert_eq!(get(&h.url("/hello.txt")).status, 200);
}

#[test]
fn keepalive_timeout_closes_idle_connections_and_only_those() {
    let h = host("header_read_timeout = \"10s\"\nkeepalive_timeout = \"1s\"");
    let mut s = connect(&h);
    s.write_all(GET).unwrap();
    assert!(read_response(&mut s).ends_with("hello\n"));
    // Idle for less than the timeout: the connection still serves.
    std::thread::sleep(Duration::from_millis(500));
    s.write_all(GET).unwrap();
    assert!(read_response(&mut s).ends_with("hello\n"));
    // Then idle: closed (without a response) about 1 s after the last response.
    let idle_from = Instant::now();
    let (answer, closed) = read_to_close(&mut s);
    assert_eq!(answer, "");
    let idle = closed - idle_from;
    assert!(
        idle >= Duration::from_millis(800) && idle < Duration::from_secs(4),
        "closed after {idle:?}"
    );

    // A short header timeout does not cut idle keep-alive connections short.
    let h = host("header_read_timeout = \"1s\"\nkeepalive_timeout = \"5s\"");
    let mut s = connect(&h);
    s.write_all(GET).unwrap();
    assert!(read_response(&mut s).ends_with("hello\n"));
    assert!(stays_silent(&mut s, Duration::from_millis(2500)));
    s.write_all(GET).unwrap();
    assert!(read_response(&mut s).ends_with("hello\n"));
}

#[test]
fn send_timeout_closes_a_connection_that_stops_reading() {
    let h = host("send_timeout = \"1s\"");
    let big = vec![b'z'; 32 << 20];
    std::fs::write(h.dir.path().join("public/big.bin"), &big).unwrap();
    // Reads the answer to the end; a reset counts as the end.
    let drain = |s: &mut TcpStream| {
        let mut got = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return got,
                Ok(n) => got += n,
            }
        }
    };
    // A client that takes nothing: the server gives up on it.
    let mut s = connect(&h);
    s.write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let got = drain(&mut s);
    assert!(
        got < big.len(),
        "the whole file arrived ({got} bytes): the connection was not closed"
    );

    // A slow client that keeps taking bytes is served to the end, however long
    // (longer than send_timeout here), even when the socket reports room for more
    // less often than every send_timeout.
    let twelve = vec![b'y'; 12 << 20];
    std::fs::write(h.dir.path().join("public/twelve.bin"), &twelve).unwrap();
    let mut s = connect(&h);
    s.write_all(b"GET /twelve.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut got = 0usize;
    // At most 64 KiB per read, 20 ms apart: at least 3.8 s for 12 MiB, whatever
    // the socket buffers hold.
    let mut buf = vec![0u8; 64 << 10];
    let started = Instant::now();
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => panic!("after {got} bytes: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(got > twelve.len(), "{got} bytes");
    assert!(
        started.elapsed() > Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn send_timeout_cuts_a_client_that_takes_a_trickle() {
    // A "slow read": the client takes a few KiB now and then, which keeps its
    // window from staying shut and would hold the connection (and the response)
    // for ever if any byte counted. Under 256 KiB per send_timeout it is cut.
    let h = host("send_timeout = \"1s\"");
    let size = 32 << 20;
    std::fs::write(h.dir.path().join("public/trickle.bin"), vec![b't'; size]).unwrap();
    let mut s = connect(&h);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /trickle.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut got = 0usize;
    // 4 KiB every 40 ms (100 KiB/s) for 4 s ...
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        match s.read(&mut buf[..4096]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
        std::thread::sleep(Duration::from_millis(40));
    }
    // ... then all that comes.
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    assert!(
        got < size,
        "a client taking 100 KiB/s with send_timeout = 1s got the whole file ({got} bytes)"
    );
}

/// A client that takes part of a 32 MiB file, stops reading for `stall`, then
/// reads on: how many bytes it got in all.
fn bytes_after_a_stall(port: u16, stall: Duration) -> usize {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /stall.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut got = 0usize;
    while got < 1 << 20 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return got,
            Ok(n) => got += n,
        }
    }
    std::thread::sleep(stall);
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return got,
            Ok(n) => got += n,
        }
    }
}

#[test]
fn send_timeout_acts_at_its_value() {
    let h = host("send_timeout = \"3s\"");
    let size = 32 << 20;
    std::fs::write(h.dir.path().join("public/stall.bin"), vec![b's'; size]).unwrap();
    let head = "HTTP/1.1 200 OK\r\n".len();
    let port = h.port;
    // Side by side: a 2 s stall is within the timeout, a 4.5 s one is not (the
    // connection must close between 3 and 4 s after the client's last byte).
    let short = std::thread::spawn(move || bytes_after_a_stall(port, Duration::from_secs(2)));
    let long = std::thread::spawn(move || bytes_after_a_stall(port, Duration::from_millis(4500)));
    let (short, long) = (short.join().unwrap(), long.join().unwrap());
    assert!(short > size + head, "a 2 s stall was cut: {short} bytes");
    assert!(
        long < size,
        "a 4.5 s stall survived send_timeout = 3s: {long} bytes"
    );
}

#[test]
fn body_read_timeout_is_the_longest_pause_between_reads() {
    let h = host("body_read_timeout = \"1s\"");
    // A body that stops arriving: 408, then the connection closes.
    let mut s = connect(&h);
    s.write_all(b"POST /hello.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .unwrap();
    let started = Instant::now();
    let (answer, closed) = read_to_close(&mut s);
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer:?}"
    );
    assert!(answer.contains("connection: close"), "{answer:?}");
    let took = closed - started;
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "closed after {took:?}"
    );

    // A slow but steady upload takes longer than the timeout in all, and passes:
    // the static handler answers it (405 for POST), so the whole body was read.
    let mut s = connect(&h);
    s.write_all(b"POST /hello.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(400));
        s.write_all(b"0123456789").unwrap();
    }
    let answer = read_response(&mut s);
    assert!(started.elapsed() > Duration::from_millis(1900));
    assert!(
        answer.starts_with("HTTP/1.1 405 Method Not Allowed"),
        "{answer:?}"
    );
    // The 408 is in the access log (flushed every 500 ms).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = std::fs::read_to_string(h.dir.path().join("access.log")).unwrap_or_default();
        if log.contains("\"POST /hello.txt HTTP/1.1\" 408 ") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "408 not in the access log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn max_body_size_is_413() {
    let h = host("max_body_size = \"1K\"");
    let url = h.url("/hello.txt");
    // Announced too large: 413 at once, without waiting for the body.
    let mut s = connect(&h);
    s.write_all(b"POST /hello.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 1025\r\n\r\n")
        .unwrap();
    let (answer, _) = read_to_close(&mut s);
    assert!(
        answer.starts_with("HTTP/1.1 413 Payload Too Large\r\n"),
        "{answer:?}"
    );
    assert!(answer.contains("connection: close"), "{answer:?}");
    // Chunked, so only counting finds out.
    let big = "x".repeat(1025);
    let r = curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &big,
        &url,
    ]);
    assert_eq!(r.status, 413);
    // `Expect: 100-continue`: refused before the body is sent.
    let r = curl(&["-H", "Expect: 100-continue", "--data-binary", &big, &url]);
    assert_eq!(r.status, 413);
    // Exactly the limit passes (405: the static handler got the request).
    let r = curl(&["--data-binary", &big[..1024], &url]);
    assert_eq!(r.status, 405, "{}", r.text());
    let r = curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &big[..1024],
        &url,
    ]);
    assert_eq!(r.status, 405, "{}", r.text());
}

#[test]
fn max_header_size_is_431() {
    let h = host("max_header_size = \"4K\"");
    let url = h.url("/hello.txt");
    let r = curl(&["-H", &format!("X-Big: {}", "a".repeat(5000)), &url]);
    assert_eq!(r.status, 431);
    let r = curl(&["-H", &format!("X-Big: {}", "a".repeat(3000)), &url]);
    assert_eq!(r.status, 200);
    // The request line counts too.
    let r = get(&format!("{url}?{}", "q".repeat(5000)));
    assert_eq!(r.status, 431);

    // The default (128K) takes the largest cookie php-fpm accepts plus more.
    let h = host("");
    let url = h.url("/hello.txt");
    let r = curl(&[
        "-H",
        &format!("Cookie: c={}", "c".repeat(65_000)),
        "-H",
        &format!("X-Big: {}", "b".repeat(60_000)),
        &url,
    ]);
    assert_eq!(r.status, 200);
    // (A single argument of curl's cannot exceed 128 KiB: raw bytes instead.)
    let mut req = b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..3 {
        req.extend_from_slice(format!("X-Big-{i}: {}\r\n", "b".repeat(45_000)).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    let answer = raw_request(h.port, &req);
    assert!(
        answer.starts_with(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[test]
fn max_connections_stops_accepting_until_a_connection_closes() {
    let h = host("max_connections = 2\nkeepalive_timeout = \"30s\"");
    let mut a = connect(&h);
    a.write_all(GET).unwrap();
    assert!(read_response(&mut a).ends_with("hello\n"));
    let mut b = connect(&h);
    b.write_all(GET).unwrap();
    assert!(read_response(&mut b).ends_with("hello\n"));
    // The third connection waits in the backlog: not refused, not answered.
    let mut c = connect(&h);
    c.write_all(GET).unwrap();
    assert!(stays_silent(&mut c, Duration::from_millis(1000)));
    // A slot frees: the waiting connection is accepted and served.
    drop(a);
    let started = Instant::now();
    assert!(read_response(&mut c).ends_with("hello\n"));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        h.stderr()
            .contains("[server] max_connections (2) reached in this worker"),
        "{}",
        h.stderr()
    );
}

#[test]
fn check_reports_bad_limits() {
    let dir = tempfile::tempdir().unwrap();
    site(dir.path());
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        config()
            .replace(
                "{limits}",
                "max_body_size = 0\nmax_connections = 0\nkeepalive_timeout = 75",
            )
            .replace("{dir}", dir.path().to_str().unwrap())
            .replace("{port}", "1"),
    )
    .unwrap();
    let out = Command::new(HOST_BIN)
        .arg("--config")
        .arg(&path)
        .arg("--check")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("durations need a unit: write \"75s\""),
        "{err}"
    );
    std::fs::write(
        &path,
        config()
            .replace("{limits}", "max_body_size = 0\nmax_connections = 0")
            .replace("{dir}", dir.path().to_str().unwrap())
            .replace("{port}", "1"),
    )
    .unwrap();
    let out = Command::new(HOST_BIN)
        .arg("--config")
        .arg(&path)
        .arg("--check")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("[server] max_body_size = 0 is out of range"),
        "{err}"
    );
    assert!(
        err.contains("[server] max_connections = 0 is out of range: use 1 to 1000000."),
        "{err}"
    );
}
