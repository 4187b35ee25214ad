//! A script's own `Content-Length` and hop-by-hop headers never decide how a
//! response is framed: over raw kept-alive connections, for both PHP backends, a
//! length that disagrees with the body, a malformed one, or `Transfer-Encoding`
//! from PHP never lets one response end early, swallow the next, or arrive empty.

mod common;

use common::peers::{FpmListen, PhpFpm};
use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

/// A complete second response, as an attacker would put it in the output.
const SMUGGLED: &str = "HTTP/1.1 200 OK\r\nContent-Length: 8\r\nX-Smuggled: yes\r\n\r\nsmuggled";

const SCRIPTS: &[(&str, &str)] = &[
    ("hello.php", "<?php echo 'Hello, World!';"),
    // Sets the length it is given, then prints `hello` and `v`.
    (
        "cl.php",
        "<?php header('Content-Length: ' . $_GET['cl']); echo 'hello' . ($_GET['v'] ?? '');",
    ),
    // The same, streamed: `hello` is flushed before the rest is printed.
    (
        "cl_flush.php",
        "<?php while (ob_get_level()) { ob_end_flush(); } header('Content-Length: ' . $_GET['cl']); echo 'hello'; flush(); usleep(20000); echo $_GET['v'] ?? '';",
    ),
    // Past 1 MiB of output, so it streams without flush().
    (
        "cl_big.php",
        "<?php header('Content-Length: ' . $_GET['cl']); echo str_repeat('b', 2 << 20);",
    ),
    // Two equal lines: one length.
    (
        "cl_twice.php",
        "<?php header('Content-Length: 5'); header('Content-Length: 5', false); echo 'hello';",
    ),
    // Any header, then `hello`.
    (
        "hdr.php",
        "<?php header($_GET['h']); echo 'hello';",
    ),
];

fn site(www: &Path) {
    std::fs::create_dir_all(www).unwrap();
    for (name, body) in SCRIPTS {
        std::fs::write(www.join(name), body).unwrap();
    }
}

fn embedded_host() -> Host {
    Host::start(
        &HostConfig::embedded_site(r#""opcache.file_update_protection" = 0"#).toml(),
        |dir| site(&dir.join("www")),
    )
}

fn fastcgi_host(www: &Path, fpm: &PhpFpm) -> Host {
    let config = HostConfig::fastcgi_site(www, fpm.address(), "").toml();
    Host::start(&config, |_| {})
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One response as it came off the wire, framed as its head says.
#[derive(Debug)]
struct Wire {
    head: String,
    body: Vec<u8>,
    /// The connection ended (or broke) inside this body.
    cut: bool,
}

impl Wire {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }

    fn status(&self) -> u16 {
        self.head
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap()
    }
}

/// A kept-alive client connection that reads responses by their framing, keeping
/// whatever follows a response for the next one.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

impl Conn {
    fn open(port: u16) -> Conn {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        Conn {
            s,
            buf: Vec::new(),
            eof: false,
        }
    }

    fn send(&mut self, method: &str, target: &str) {
        write!(self.s, "{method} {target} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    }

    /// More bytes; false at the end of the connection. A read that times out
    /// panics: the client would hang there.
    fn fill(&mut self, what: &str) -> bool {
        if self.eof {
            return false;
        }
        let mut chunk = [0u8; 65536];
        match self.s.read(&mut chunk) {
            Ok(0) => {
                self.eof = true;
                false
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                panic!(
                    "the client hangs waiting for {what}; it has {:?}",
                    String::from_utf8_lossy(&self.buf[..self.buf.len().min(300)])
                )
            }
            Err(_) => {
                self.eof = true;
                false
            }
        }
    }

    /// The next response, or None when the connection ended before one.
    fn response(&mut self, head_request: bool) -> Option<Wire> {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if !self.fill("a response head") {
                assert!(self.buf.is_empty(), "a partial head: {:?}", self.buf);
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..end - 4]).into_owned();
        self.buf.drain(..end);
        let mut w = Wire {
            head,
            body: Vec::new(),
            cut: false,
        };
        let status = w.status();
        if head_request || status == 204 || status == 304 {
            return Some(w);
        }
        let chunked = w
            .header("transfer-encoding")
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
        if chunked {
            loop {
                let line_end = loop {
                    if let Some(i) = self.buf.windows(2).position(|x| x == b"\r\n") {
                        break i;
                    }
                    if !self.fill("a chunk size") {
                        w.cut = true;
                        return Some(w);
                    }
                };
                let size = usize::from_str_radix(
                    std::str::from_utf8(&self.buf[..line_end]).unwrap().trim(),
                    16,
                )
                .unwrap();
                while self.buf.len() < line_end + 2 + size + 2 {
                    if !self.fill("a chunk") {
                        w.cut = true;
                        return Some(w);
                    }
                }
                w.body
                    .extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
                self.buf.drain(..line_end + 2 + size + 2);
                if size == 0 {
                    return Some(w);
                }
            }
        }
        match w.header("content-length") {
            Some(cl) => {
                let cl: usize = cl.parse().expect("a numeric Content-Length");
                while self.buf.len() < cl {
                    if !self.fill("the declared body") {
                        w.cut = true;
                        w.body = std::mem::take(&mut self.buf);
                        return Some(w);
                    }
                }
                w.body = self.buf.drain(..cl).collect();
            }
            None => {
                while self.fill("a body framed by the connection's end") {}
                w.body = std::mem::take(&mut self.buf);
            }
        }
        Some(w)
    }
}

/// Asks `target`, then `/hello.php` on the same connection. The first answer must
/// be framed as it says; after it comes either the true second answer or the end
/// of the connection — never a response the script wrote, nor a hang.
fn exchange(port: u16, method: &str, target: &str) -> (Wire, Option<Wire>) {
    let mut c = Conn::open(port);
    c.send(method, target);
    let first = c
        .response(method == "HEAD")
        .unwrap_or_else(|| panic!("no answer to {target}"));
    assert!(
        first.header("x-smuggled").is_none(),
        "{target}: a response the script wrote: {first:?}"
    );
    if first.cut || c.eof {
        return (first, None);
    }
    c.send("GET", "/hello.php");
    let second = c.response(false);
    if let Some(s) = &second {
        assert!(
            s.header("x-smuggled").is_none() && s.body == b"Hello, World!",
            "{target}: after it, the connection gave {s:?} instead of the next answer"
        );
    }
    (first, second)
}

fn declared_lengths_never_desync(port: u16) {
    let v = enc(SMUGGLED);
    let full = format!("hello{SMUGGLED}");

    // Buffered bodies: sent whole, with their true length, and the connection lives.
    for cl in [
        "5",
        "1000",
        "0",
        "-1",
        "abc",
        &enc("5, 5"),
        "99999999999999999999",
    ] {
        let (first, second) = exchange(port, "GET", &format!("/cl.php?cl={cl}&v={v}"));
        assert_eq!(first.status(), 200, "cl={cl}");
        assert_eq!(first.body, full.as_bytes(), "cl={cl}");
        assert_eq!(
            first.header("content-length"),
            Some(full.len().to_string()),
            "cl={cl}"
        );
        assert!(second.is_some(), "cl={cl}: the connection ended");
    }
    let (first, second) = exchange(port, "GET", "/cl.php?cl=1000");
    assert_eq!(
        (first.body.as_slice(), first.header("content-length")),
        (&b"hello"[..], Some("5".to_owned()))
    );
    assert!(second.is_some());
    let (first, second) = exchange(port, "GET", "/cl_twice.php");
    assert_eq!(first.header("content-length"), Some("5".to_owned()));
    assert!(second.is_some());

    // Streamed bodies (flush(), or past 1 MiB). The declared length is kept only
    // when exactly that much comes; otherwise the body is cut to it, or the
    // connection closes after what came: either way nothing desyncs.
    let (first, second) = exchange(port, "GET", &format!("/cl_flush.php?cl=5&v={v}"));
    assert_eq!(first.body, b"hello");
    assert!(!first.cut);
    let _ = second;
    let (first, second) = exchange(port, "GET", "/cl_flush.php?cl=1000");
    assert!(first.cut, "{first:?}");
    assert_eq!(first.body, b"hello");
    assert!(second.is_none());
    let (first, second) = exchange(port, "GET", &format!("/cl_flush.php?cl=-1&v={v}"));
    assert_eq!(first.body, full.as_bytes());
    assert!(first.header("content-length").is_none());
    assert!(second.is_some());
    let exact = format!("/cl_flush.php?cl={}&v={v}", full.len());
    let (first, second) = exchange(port, "GET", &exact);
    assert_eq!(first.body, full.as_bytes());
    assert!(!first.cut);
    assert!(
        second.is_some(),
        "an exact streamed length keeps the connection"
    );
    let big = 2usize << 20;
    let (first, second) = exchange(port, "GET", &format!("/cl_big.php?cl={}", big + 1000));
    // The host may drop what it still held when it closes.
    assert!(first.cut && first.body.len() <= big, "{}", first.body.len());
    assert!(first.body.iter().all(|&b| b == b'b'));
    assert!(second.is_none());
    let (first, second) = exchange(port, "GET", "/cl_big.php?cl=100");
    assert_eq!(first.body.len(), 100);
    let _ = second;
    let (first, second) = exchange(port, "GET", &format!("/cl_big.php?cl={big}"));
    assert_eq!(first.body.len(), big);
    assert!(second.is_some());

    // HEAD keeps a valid declared length: the one GET would have.
    let (first, second) = exchange(port, "HEAD", "/cl.php?cl=1234");
    assert_eq!(first.header("content-length"), Some("1234".to_owned()));
    assert!(second.is_some());
    let (first, second) = exchange(port, "HEAD", "/cl.php?cl=abc");
    assert_eq!(first.header("content-length"), None);
    assert!(second.is_some());
}

fn hop_by_hop_headers_are_dropped(port: u16) {
    for h in [
        "Transfer-Encoding: chunked",
        "Transfer-Encoding: identity",
        "Transfer-Encoding: gzip, chunked",
        "Connection: close",
        "Connection: X-Secret",
        "Keep-Alive: timeout=1",
        "TE: trailers",
        "Trailer: X-Sum",
        "Upgrade: websocket",
        "Proxy-Connection: keep-alive",
    ] {
        let (first, second) = exchange(port, "GET", &format!("/hdr.php?h={}", enc(h)));
        assert_eq!(first.status(), 200, "{h}");
        assert_eq!(first.body, b"hello", "{h}: {first:?}");
        assert_eq!(first.header("content-length"), Some("5".to_owned()), "{h}");
        let name = h.split(':').next().unwrap();
        assert!(
            first.header(name).is_none() || name == "Connection",
            "{h}: {first:?}"
        );
        assert!(
            first
                .header("connection")
                .is_none_or(|c| c.eq_ignore_ascii_case("keep-alive")),
            "{h}: {first:?}"
        );
        assert!(
            first.header("transfer-encoding").is_none(),
            "{h}: {first:?}"
        );
        assert!(second.is_some(), "{h}: the connection ended");
    }
}

#[test]
fn php_content_length_never_desyncs_under_embedded() {
    let h = embedded_host();
    declared_lengths_never_desync(h.port);
    let log = h.stderr();
    assert!(
        log.contains("cl.php") && log.contains("declared Content-Length 5 for a body of"),
        "the mismatch is logged with the script: {log}"
    );
    assert!(log.contains("malformed Content-Length"), "{log}");
    assert!(
        log.contains("short of its declared Content-Length"),
        "{log}"
    );
    assert!(
        log.contains("more than its declared Content-Length"),
        "{log}"
    );
    assert_eq!(h.workers().len(), 1);
}

#[test]
fn php_content_length_never_desyncs_under_fastcgi() {
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    site(&www);
    let fpm = PhpFpm::start(&www, FpmListen::Tcp);
    let h = fastcgi_host(&www, &fpm);
    declared_lengths_never_desync(h.port);
}

#[test]
fn hop_by_hop_headers_from_php_are_dropped_under_embedded() {
    let h = embedded_host();
    hop_by_hop_headers_are_dropped(h.port);
    assert!(
        h.stderr().contains("Transfer-Encoding: chunked"),
        "{}",
        h.stderr()
    );
}

#[test]
fn hop_by_hop_headers_from_php_are_dropped_under_fastcgi() {
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    site(&www);
    let fpm = PhpFpm::start(&www, FpmListen::Tcp);
    let h = fastcgi_host(&www, &fpm);
    hop_by_hop_headers_are_dropped(h.port);
}
