//! Clients that never read do not hold PHP: their responses go to memory (1 MiB
//! each) and then to temporary files, so the embedded PHP thread and php-fpm's
//! children move on to the next request at once, and the worker's memory stays
//! bounded.

mod common;

use common::peers::{FpmListen, PhpFpm};
use common::*;
use socket2::{Domain, Socket, Type};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// 8 MiB: 8192 numbered lines of 1 KiB.
const BIG: &str =
    r#"<?php for ($i = 0; $i < 8192; $i++) { echo str_pad((string)$i, 1023, '.'), "\n"; }"#;
const BIG_LEN: usize = 8 << 20;

fn site(www: &Path) {
    std::fs::create_dir_all(www).unwrap();
    std::fs::write(www.join("big.php"), BIG).unwrap();
    std::fs::write(www.join("hello.php"), "<?php echo 'Hello, World!';").unwrap();
}

fn expected_big() -> Vec<u8> {
    let mut out = Vec::with_capacity(BIG_LEN);
    for i in 0..8192 {
        let mut line = i.to_string().into_bytes();
        line.resize(1023, b'.');
        line.push(b'\n');
        out.extend_from_slice(&line);
    }
    out
}

/// Asks for `/big.php` with a 4 KiB receive window and reads nothing.
fn non_reader(port: u16) -> TcpStream {
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    sock.connect(&addr.into()).unwrap();
    let mut s: TcpStream = sock.into();
    s.write_all(b"GET /big.php HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    s
}

/// Reads a whole response (Connection: close after it is not asked, so by length).
fn read_all(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
            let chunked = head.contains("transfer-encoding: chunked");
            let body = &out[end + 4..];
            if chunked && body.ends_with(b"\r\n0\r\n\r\n") {
                return out;
            }
            if let Some(cl) = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse::<usize>().unwrap())
            {
                if body.len() >= cl {
                    return out;
                }
            }
        }
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => panic!("after {} bytes: {e}", out.len()),
        }
    }
}

/// The body of a chunked response.
fn dechunk(raw: &[u8]) -> Vec<u8> {
    let start = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let mut rest = &raw[start..];
    let mut body = Vec::new();
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
        rest = &rest[eol + 2 + size + 2..];
    }
}

/// A quick request, timed.
fn fast(port: u16) -> Duration {
    let started = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /hello.php HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let took = started.elapsed();
    assert!(
        out.starts_with(b"HTTP/1.1 200") && out.ends_with(b"Hello, World!"),
        "after {took:?}: {:?}",
        String::from_utf8_lossy(&out)
    );
    took
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Open temporary files of the process: unnamed ones read "/dir/#inode (deleted)".
fn temp_files(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|t| t.to_string_lossy().ends_with(" (deleted)"))
        .count()
}

/// Six clients that never read, then a fast request; then one of the six reads
/// its 8 MiB and gets every byte in order.
fn six_non_readers_then_a_fast_request(h: &Host) {
    let worker = h.workers()[0];
    // Warm up: the big response once, read whole.
    let mut s = non_reader(h.port);
    let raw = read_all(&mut s);
    assert_eq!(dechunk(&raw), expected_big());
    drop(s);
    fast(h.port);
    std::thread::sleep(Duration::from_millis(200));
    let rss_before = rss_kib(worker);
    // PHP's own (its shim's memfd, OPcache's lock file) are there already.
    let files_before = temp_files(worker);

    let mut slow: Vec<TcpStream> = (0..6).map(|_| non_reader(h.port)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let took = fast(h.port);
    assert!(
        took < Duration::from_secs(1),
        "a fast request waited {took:?} behind clients that do not read"
    );
    let grown = rss_kib(worker).saturating_sub(rss_before);
    eprintln!("worker RSS grew by {grown} KiB");
    assert!(temp_files(worker) > files_before, "nothing was spilled");
    assert!(
        grown < 24 << 10,
        "the worker grew by {grown} KiB for 48 MiB of unread output"
    );

    // What was spilled comes back whole and in order.
    let raw = read_all(&mut slow[0]);
    assert_eq!(dechunk(&raw), expected_big());

    // The temporary files go with their responses.
    drop(slow);
    let deadline = Instant::now() + Duration::from_secs(5);
    while temp_files(worker) > files_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        temp_files(worker),
        files_before,
        "temporary files left open"
    );
}

#[test]
fn clients_that_never_read_do_not_hold_embedded_php() {
    let h = Host::start(
        &HostConfig::embedded_site(
            r#"upload_tmp_dir = "{dir}/tmp"
"opcache.file_update_protection" = 0"#,
        )
        .toml(),
        |dir| {
            site(&dir.join("www"));
            std::fs::create_dir_all(dir.join("tmp")).unwrap();
        },
    );
    six_non_readers_then_a_fast_request(&h);
    assert!(!h.stderr().contains("temporary file"), "{}", h.stderr());
}

#[test]
fn clients_that_never_read_do_not_hold_php_fpm_children() {
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    site(&www);
    // Two children for six slow responses and the fast one.
    let fpm = PhpFpm::builder(&www, FpmListen::Tcp)
        .max_children(2)
        .start();
    let config =
        HostConfig::fastcgi_site(www.as_ref(), fpm.address(), "fpm_max_connections = 2").toml();
    let h = Host::start(&config, |_| {});
    six_non_readers_then_a_fast_request(&h);
}
