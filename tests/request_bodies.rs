//! Request bodies through a running fe-php-host over raw sockets: transfer
//! codings, spooling to temporary files, the memory cap on bodies in flight, and
//! bodies reaching embedded PHP, PHP-FPM and a proxied upstream intact.

mod common;

use common::peers::{FpmListen, PhpFpm};
use common::proc::rss_kib;
use common::upstream::{ok, RawUpstream, Reaction};
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:{port}"
workers = 1
access_log = "off"
{server}

[backend]
default_backend = "embedded"

[backend.static_files]
enable = true
root = "{dir}/www"

[php.ini]
upload_tmp_dir = "{dir}/tmp"
upload_max_filesize = "64M"
post_max_size = "64M"
memory_limit = "32M"
display_errors = false
log_errors = true
{ini}
"#;

/// What PHP saw of its request body, as JSON.
const BODY_PHP: &str = r#"<?php
header('Content-Type: application/json');
$in = fopen('php://input', 'rb');
$md5 = hash_init('md5');
$len = 0;
while (!feof($in)) {
    $piece = fread($in, 65536);
    $len += strlen($piece);
    hash_update($md5, $piece);
}
$files = [];
foreach ($_FILES as $k => $f) {
    $files[$k] = ['size' => $f['size'], 'error' => $f['error'], 'md5' => $f['error'] === 0 ? md5_file($f['tmp_name']) : null];
}
echo json_encode([
    'length' => $_SERVER['CONTENT_LENGTH'] ?? null,
    'input' => $len,
    'md5' => hash_final($md5),
    'post' => $_POST,
    'files' => $files,
]);
"#;

/// Answers (flush() starts the response) before it reads its body.
const FLUSH_FIRST_PHP: &str = "<?php echo 'started|'; flush(); $in = file_get_contents('php://input'); echo strlen($in), '|', md5($in);";

fn site(dir: &Path) {
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    std::fs::write(dir.join("www/body.php"), BODY_PHP).unwrap();
    std::fs::write(dir.join("www/flush-first.php"), FLUSH_FIRST_PHP).unwrap();
}

fn host(server: &str, ini: &str) -> Host {
    Host::start(
        &CONFIG.replace("{server}", server).replace("{ini}", ini),
        site,
    )
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Everything the server sends until it closes the connection.
fn read_to_close(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn json_body(raw: &[u8]) -> serde_json::Value {
    let r = parse_reply(raw);
    if r.status != 200 {
        eprintln!("{}", String::from_utf8_lossy(raw));
    }
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

/// A deterministic body of `n` bytes that is not one repeated byte.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn md5(data: &[u8]) -> String {
    let mut child = std::process::Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)[..32].to_owned()
}

/// Descriptors of `pid` open on files in `dir` (spooled bodies: unlinked, so
/// shown as "dir/#inode (deleted)" or "dir/name (deleted)").
fn spool_files(pid: i32, dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|t| t.starts_with(dir))
        .count()
}

#[test]
fn transfer_codings_other_than_one_chunked_are_400_and_close() {
    let h = host("", "");
    let smuggled = "GET /body.php?smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    for te in [
        "foo, chunked",
        "gzip, chunked",
        "identity, chunked",
        "chunked, chunked",
        "gzip,chunked",
        "x-custom ,  CHUNKED",
    ] {
        let req = format!(
            "POST /body.php HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {te}\r\n\r\n5\r\nhello\r\n0\r\n\r\n{smuggled}"
        );
        let mut s = connect(h.port);
        s.write_all(req.as_bytes()).unwrap();
        let answer = read_to_close(&mut s);
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "Transfer-Encoding: {te}: {answer:?}"
        );
        assert_eq!(
            answer.matches("HTTP/1.1 ").count(),
            1,
            "Transfer-Encoding: {te}: the connection must close after the 400: {answer:?}"
        );
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer:?}"
        );
    }
    // Exactly one chunked coding, in any case and with surrounding whitespace, is
    // the body PHP reads, decoded.
    for te in ["chunked", "Chunked", "  CHUNKED  "] {
        let req = format!(
            "POST /body.php HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {te}\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        );
        let v = json_body(&raw_request(h.port, req.as_bytes()));
        assert_eq!(v["input"], 5, "Transfer-Encoding: {te}: {v}");
        assert_eq!(v["md5"], md5(b"hello"), "{v}");
    }
}

/// The worker's RSS in KiB, after giving the worker time to return freed memory
/// (it does once a second).
fn settled_rss(pid: i32) -> u64 {
    std::thread::sleep(Duration::from_millis(2500));
    rss_kib(pid)
}

#[test]
fn a_body_flood_is_spooled_and_memory_returns() {
    let h = host("", "");
    let tmp = h.dir.path().join("tmp");
    let worker = h.workers()[0];
    // Warm up: PHP, a small and a spooled body.
    for n in [10, 200_000] {
        let body = pattern(n);
        let mut req = format!(
            "POST /body.php HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
        )
        .into_bytes();
        req.extend_from_slice(&body);
        let v = json_body(&raw_request(h.port, &req));
        assert_eq!(v["md5"], md5(&body), "{v}");
    }
    let start = settled_rss(worker);

    // Eight connections announce 64,000,000 bytes each, send 60 MiB and pause.
    const ANNOUNCED: usize = 64_000_000;
    const SENT: usize = 60 << 20;
    let chunk = pattern(1 << 20);
    let mut conns: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = connect(h.port);
            s.write_all(
                format!(
                    "POST /body.php HTTP/1.1\r\nHost: x\r\nContent-Length: {ANNOUNCED}\r\n\r\n"
                )
                .as_bytes(),
            )
            .unwrap();
            s
        })
        .collect();
    let mut peak = 0;
    for _ in 0..SENT / chunk.len() {
        for s in &mut conns {
            s.write_all(&chunk).unwrap();
        }
        peak = peak.max(rss_kib(worker));
    }
    // Everything sent has arrived once the spool files hold it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        peak = peak.max(rss_kib(worker));
        let spooled: u64 = spooled_bytes(worker, &tmp);
        if spooled >= 8 * SENT as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the bodies did not reach the temp dir ({spooled} bytes there):\n{}",
            h.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    peak = peak.max(settled_rss(worker));
    assert_eq!(
        spool_files(worker, &tmp),
        8,
        "one spool file per paused body"
    );
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "spool files must have no name"
    );

    // One body completes and PHP reads every byte of it; the others are abandoned.
    let rest = ANNOUNCED - SENT;
    let mut first = conns.remove(0);
    first.write_all(&pattern(rest)).unwrap();
    let answer = {
        let mut buf = Vec::new();
        let mut tmpbuf = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(30);
        while !String::from_utf8_lossy(&buf).contains("\"files\"") {
            assert!(Instant::now() < deadline, "no answer: {buf:?}");
            match first.read(&mut tmpbuf) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&tmpbuf[..n]),
            }
        }
        buf
    };
    let mut whole = Vec::with_capacity(ANNOUNCED);
    for _ in 0..SENT / chunk.len() {
        whole.extend_from_slice(&chunk);
    }
    whole.extend_from_slice(&pattern(rest));
    let v = json_body(&answer);
    assert_eq!(v["input"], ANNOUNCED, "{v}");
    assert_eq!(v["length"], ANNOUNCED.to_string(), "{v}");
    assert_eq!(v["md5"], md5(&whole), "{v}");
    drop(whole);
    drop(first);
    drop(conns);

    let deadline = Instant::now() + Duration::from_secs(10);
    while spool_files(worker, &tmp) > 0 {
        assert!(Instant::now() < deadline, "spool files left open");
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = settled_rss(worker);
    eprintln!(
        "worker RSS: start {} KiB, peak {} KiB, after {} KiB",
        start, peak, after
    );
    assert!(
        peak < start + 64 * 1024,
        "eight paused 60 MiB bodies must not be held in memory: {start} KiB -> {peak} KiB"
    );
    assert!(
        after <= start + start / 10,
        "memory must return after the flood: {start} KiB at the start, {after} KiB after"
    );
}

/// Bytes held by `pid`'s open files in `dir`.
fn spooled_bytes(pid: i32, dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.starts_with(dir)))
        .filter_map(|e| std::fs::metadata(e.path()).ok())
        .map(|m| m.len())
        .sum()
}

#[test]
fn past_the_memory_cap_even_small_bodies_spill() {
    let h = host("", "");
    let tmp = h.dir.path().join("tmp");
    let worker = h.workers()[0];
    // 400 bodies of 60 KB in flight are 24 MB: more than the 16 MiB all bodies of a
    // worker may hold in memory together, though each is under 64 KiB.
    let conns: Vec<TcpStream> = (0..400)
        .map(|_| {
            let mut s = connect(h.port);
            s.write_all(b"POST /body.php HTTP/1.1\r\nHost: x\r\nContent-Length: 60001\r\n\r\n")
                .unwrap();
            s.write_all(&pattern(60_000)).unwrap();
            s
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut spilled = 0;
    while Instant::now() < deadline {
        spilled = spool_files(worker, &tmp);
        if spilled >= 400 - (16 << 20) / 60_000 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        (400 - (16 << 20) / 60_000..400).contains(&spilled),
        "{spilled} of 400 small bodies spilled"
    );
    // Every one still completes with its body intact.
    let body = {
        let mut b = pattern(60_000);
        b.push(b'!');
        b
    };
    let want = md5(&body);
    for mut s in conns {
        s.write_all(b"!").unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while !out.ends_with(b"}") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        let v = json_body(&out);
        assert_eq!(v["md5"], want, "{v}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while spool_files(worker, &tmp) > 0 {
        assert!(Instant::now() < deadline, "spool files left open");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A multipart body with one file field and one text field.
fn multipart(file: &[u8]) -> (String, Vec<u8>) {
    let boundary = "----fephpboundary7MA4YWxk";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi there\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"up\"; filename=\"a.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn post(port: u16, path: &str, content_type: &str, body: &[u8], chunked: bool) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nConnection: close\r\n"
    )
    .into_bytes();
    if chunked {
        req.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
        for piece in body.chunks(100_000) {
            req.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            req.extend_from_slice(piece);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"0\r\n\r\n");
    } else {
        req.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
        req.extend_from_slice(body);
    }
    raw_request(port, &req)
}

/// Raw bodies (in memory and spooled, with a length and chunked) and multipart
/// uploads reach PHP whole.
fn bodies_reach_php(port: u16, path: &str) {
    for n in [0, 1, 3000, 64 << 10, (64 << 10) + 1, 3 << 20] {
        let body = pattern(n);
        for chunked in [false, true] {
            let v = json_body(&post(
                port,
                path,
                "application/octet-stream",
                &body,
                chunked,
            ));
            assert_eq!(v["input"], n, "{n} bytes, chunked {chunked}: {v}");
            assert_eq!(v["md5"], md5(&body), "{n} bytes, chunked {chunked}");
            if n > 0 || !chunked {
                assert_eq!(v["length"], n.to_string(), "{v}");
            }
        }
    }
    for n in [100, 5 << 20] {
        let file = pattern(n);
        let (ct, body) = multipart(&file);
        for chunked in [false, true] {
            let v = json_body(&post(port, path, &ct, &body, chunked));
            assert_eq!(v["post"]["note"], "hi there", "{v}");
            assert_eq!(v["files"]["up"]["size"], n, "{v}");
            assert_eq!(v["files"]["up"]["md5"], md5(&file), "{v}");
        }
    }
    let v = json_body(&post(
        port,
        path,
        "application/x-www-form-urlencoded",
        b"a=1&b=two",
        false,
    ));
    assert_eq!(v["post"]["b"], "two", "{v}");
}

#[test]
fn bodies_reach_embedded_php_and_php_fpm_whole() {
    // One document root: embedded PHP runs /body.php, PHP-FPM /fpm/body.php.
    let www = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(www.path().join("fpm")).unwrap();
    std::fs::write(www.path().join("body.php"), BODY_PHP).unwrap();
    std::fs::write(www.path().join("fpm/body.php"), BODY_PHP).unwrap();
    let fpm = PhpFpm::builder(www.path(), FpmListen::Unix)
        .ini("upload_max_filesize", "64M")
        .ini("post_max_size", "64M")
        .start();
    let php = format!(
        "[php]\nfpm_socket = \"{}\"\ndocument_root = \"{}\"\n\n[[backend.routing_rules]]\npattern = {{ type = \"prefix\", value = \"/fpm/\" }}\nbackend = \"fastcgi\"\n\n[php.ini]",
        fpm.address(),
        www.path().display()
    );
    let h = Host::start(
        &CONFIG
            .replace("{server}", "")
            .replace("{ini}", "")
            .replace("[php.ini]", &php),
        site,
    );
    bodies_reach_php(h.port, "/body.php");
    bodies_reach_php(h.port, "/fpm/body.php");
    assert_eq!(
        std::fs::read_dir(h.dir.path().join("tmp")).unwrap().count(),
        0,
        "temporary files left behind"
    );
}

#[test]
fn proxied_bodies_reach_the_upstream_whole() {
    let up = RawUpstream::start(|r| Reaction::Reply(ok(&format!("{}", r.body.len()))));
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{{port}}"
workers = 1
access_log = "off"

[backend]
default_backend = "proxy"

[backend.proxy]
upstream = "{}"

[php]
libphp_path = "/nonexistent/libphp.so"

[php.ini]
upload_tmp_dir = "{{dir}}/tmp"
"#,
        up.url()
    );
    let h = Host::start(&config, |dir| {
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
    });
    let sizes = [0usize, 10, 64 << 10, (64 << 10) + 1, 3 << 20];
    for &n in &sizes {
        for chunked in [false, true] {
            let body = pattern(n);
            let r = parse_reply(&post(
                h.port,
                "/p",
                "application/octet-stream",
                &body,
                chunked,
            ));
            assert_eq!(
                (r.status, r.text()),
                (200, n.to_string()),
                "{n} chunked {chunked}"
            );
        }
    }
    let got = up.received();
    let mut i = 0;
    for &n in &sizes {
        for _ in 0..2 {
            assert_eq!(got[i].body, pattern(n), "request {i}");
            if n > 0 {
                assert_eq!(
                    got[i].header("content-length"),
                    vec![n.to_string()],
                    "{}",
                    got[i].head
                );
            }
            i += 1;
        }
    }
}

#[test]
fn a_full_temp_dir_is_500_and_named_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mnt: PathBuf = dir.path().join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let out = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m,mode=0777", "tmpfs"])
        .arg(&mnt)
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!("SKIPPED: cannot mount a tmpfs; run as root with CAP_SYS_ADMIN");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let h = Host::start(
        &CONFIG
            .replace("{server}", "")
            .replace("{ini}", "")
            .replace("{dir}/tmp", &mnt.display().to_string()),
        site,
    );
    // 3 MiB cannot be spooled into a 1 MiB directory.
    let body = pattern(3 << 20);
    let r = parse_reply(&post(
        h.port,
        "/body.php",
        "application/octet-stream",
        &body,
        false,
    ));
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(
        !r.text().contains(&mnt.display().to_string()),
        "no server paths in the page"
    );
    let log = h.stderr();
    let line = log
        .lines()
        .find(|l| {
            l.contains("cannot spool the request body") && l.contains(&mnt.display().to_string())
        })
        .unwrap_or_else(|| panic!("no log line naming the directory:\n{log}"));
    assert!(line.contains("POST /body.php"), "{line}");
    // What fits still works.
    let body = pattern(100_000);
    let v = json_body(&post(
        h.port,
        "/body.php",
        "application/octet-stream",
        &body,
        false,
    ));
    assert_eq!(v["md5"], md5(&body), "{v}");
}

#[test]
fn a_script_that_answers_before_reading_its_body_still_gets_all_of_it() {
    // The response starts (and the host hears of it) before PHP reads the body:
    // the library keeps the rest in a file of its own, as the C ABI allows no
    // body_read after the completion.
    let h = host("", "");
    for n in [10, 300_000] {
        let body = pattern(n);
        let mut req = format!(
            "PUT /flush-first.php HTTP/1.1\r\nHost: x\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
        )
        .into_bytes();
        req.extend_from_slice(&body);
        let r = parse_reply(&raw_request(h.port, &req));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            r.header("transfer-encoding"),
            Some("chunked"),
            "the response must have started before the script read its body"
        );
        let text = r.text();
        let text = text.trim_end_matches(['\r', '\n']);
        // A streamed response: chunked framing around the pieces.
        let joined: String = text.split("\r\n").filter(|l| l.contains('|')).collect();
        assert_eq!(joined, format!("started|{n}|{}", md5(&body)), "{text:?}");
    }
    assert_eq!(
        std::fs::read_dir(h.dir.path().join("tmp")).unwrap().count(),
        0,
        "temporary files left behind"
    );
}
