//! fe-php-host as a process: `--check`, the master respawning workers, graceful stop.

mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

fn config() -> String {
    HostConfig::static_site()
        .workers(2)
        .access_log("off")
        .toml()
}

fn site(dir: &std::path::Path) {
    std::fs::create_dir_all(dir.join("public")).unwrap();
    std::fs::write(dir.join("public/hello.txt"), "hello\n").unwrap();
    std::fs::write(dir.join("public/five.bin"), vec![7u8; 5 << 20]).unwrap();
}

fn check(config: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    site(dir.path());
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        config
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
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_a_usable_config_and_prints_the_seed_messages() {
    let (code, err) = check(&config());
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("[i] libphp.so not found at: /nonexistent/libphp.so.\n    Embedded backend will not be available (FastCGI/Static only mode)"), "{err}");
    assert!(err.contains("[i] fpm_socket not configured.\n    FastCGI backend will not be available (Embedded/Static only mode)"), "{err}");
    assert!(err.contains("test is successful"), "{err}");
}

#[test]
fn check_refuses_a_broken_config() {
    let (code, err) =
        check(&config().replace("default_backend = \"static\"", "default_backend = \"xxx\""));
    assert_eq!(code, 1);
    assert!(
        err.contains("Default backend 'xxx' is not registered"),
        "{err}"
    );
    assert!(err.contains("test failed"), "{err}");

    let (code, err) = check(&config().replace("workers = 2", "workers = 2\nthreads = 4"));
    assert_eq!(code, 1);
    assert!(
        err.contains("unknown field `threads`") && err.contains("line 5"),
        "{err}"
    );

    let (code, err) = check(&format!("{}\n[[backend.routing_rules]]\npattern = {{ type = \"regex\", value = \"^/(a\" }}\nbackend = \"static\"\n", config()));
    assert_eq!(code, 1);
    assert!(
        err.contains("Routing rule #1: invalid regex '^/(a'"),
        "{err}"
    );

    let out = Command::new(HOST_BIN)
        .args(["--config", "/no/such/file.toml", "--check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("cannot read configuration file /no/such/file.toml"));
}

#[test]
fn workers_run_and_a_killed_worker_is_replaced() {
    let h = Host::start(&config(), site);
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.workers().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = h.workers();
    assert_eq!(before.len(), 2, "{before:?}");
    unsafe { libc::kill(before[0], libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut after = h.workers();
    while (after.len() < 2 || after.contains(&before[0])) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        after = h.workers();
    }
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(!after.contains(&before[0]));
    for _ in 0..20 {
        assert_eq!(get(&h.url("/hello.txt")).status, 200);
    }
    assert!(h.stderr().contains("killed by signal 9"), "{}", h.stderr());
}

/// Socket inodes a process holds open.
fn socket_inodes(pid: i32) -> std::collections::HashSet<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// How many of the established connections to `port` each worker holds.
fn connections_per_worker(h: &Host) -> Vec<usize> {
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let server_side: Vec<u64> = tcp
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = u16::from_str_radix(f[1].rsplit(':').next()?, 16).ok()?;
            (local_port == h.port && f[3] == "01").then(|| f[9].parse().ok())?
        })
        .collect();
    h.workers()
        .into_iter()
        .map(|pid| {
            let mine = socket_inodes(pid);
            server_side.iter().filter(|i| mine.contains(i)).count()
        })
        .collect()
}

fn wait_for_workers(h: &Host, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.workers().len() != n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(h.workers().len(), n);
}

/// 40 connections opened at once spread over the workers (one listening socket per
/// worker with SO_REUSEPORT), also after a reload raises the worker count.
#[test]
fn connections_spread_over_all_workers() {
    use std::io::{Read, Write};
    let h = Host::start(&config(), site);
    for workers in [2usize, 3] {
        wait_for_workers(&h, workers);
        std::thread::sleep(Duration::from_millis(200));
        let mut conns: Vec<std::net::TcpStream> = (0..40)
            .map(|_| std::net::TcpStream::connect(("127.0.0.1", h.port)).unwrap())
            .collect();
        for c in &mut conns {
            c.write_all(b"GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap();
        }
        for c in &mut conns {
            let mut buf = [0u8; 512];
            let n = c.read(&mut buf).unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        }
        let spread = connections_per_worker(&h);
        assert_eq!(spread.iter().sum::<usize>(), 40, "{spread:?}");
        // Binomial spread: each worker gets a fair share (p ≈ 1e-4 to fail by chance).
        let least = if workers == 2 { 8 } else { 4 };
        assert!(
            spread.len() == workers && spread.iter().all(|&n| n >= least),
            "{workers} workers hold {spread:?} of 40 connections"
        );
        drop(conns);
        if workers == 2 {
            let text = std::fs::read_to_string(&h.config).unwrap();
            std::fs::write(&h.config, text.replace("workers = 2", "workers = 3")).unwrap();
            h.signal(libc::SIGHUP);
            let deadline = Instant::now() + Duration::from_secs(5);
            while !h.stderr().contains("configuration reloaded") && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

#[test]
fn sigterm_lets_in_flight_responses_finish() {
    let mut h = Host::start(&config(), site);
    // A 5 MiB download throttled to ~1.5 s.
    // A client that reads 5 MiB slowly through a small receive buffer (~1.5 s).
    let started = Instant::now();
    let port = h.port;
    let download = std::thread::spawn(move || slow_download(port, "/five.bin"));
    std::thread::sleep(Duration::from_millis(400));
    h.signal(libc::SIGTERM);
    let body = download.join().unwrap();
    assert!(
        started.elapsed() > Duration::from_millis(1000),
        "the download was not in flight at SIGTERM"
    );
    let head_end = body.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(body.starts_with(b"HTTP/1.1 200"));
    assert_eq!(body.len() - head_end, 5 << 20, "download cut short");
    let status = h.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    // New connections are refused once it has stopped.
    assert!(std::net::TcpStream::connect(("127.0.0.1", h.port)).is_err());
}

#[test]
fn listen_flag_overrides_the_config() {
    let dir = tempfile::tempdir().unwrap();
    site(dir.path());
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        config()
            .replace("{dir}", dir.path().to_str().unwrap())
            .replace("{port}", "1"),
    )
    .unwrap();
    let port = free_port();
    let mut child = Command::new(HOST_BIN)
        .arg("--config")
        .arg(&path)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--workers", "1"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = get(&format!("http://127.0.0.1:{port}/hello.txt"));
    assert_eq!(r.text(), "hello\n");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();
}

/// GETs `path` reading 64 KiB every 20 ms through a 64 KiB receive buffer.
fn slow_download(port: u16, path: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(64 * 1024).unwrap();
    sock.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    let mut s: std::net::TcpStream = sock.into();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
