//! Fault injection against a running fe-php-host under load: workers killed or
//! crashing, PHP faults of every kind, php-fpm going away, a full upload
//! directory, running out of file descriptors. Each test counts every request
//! of a multi-threaded keep-alive load (tests/common/load.rs) and proves that only
//! the requests a fault must cost were lost.

mod common;

use common::load::{Load, LoadSpec, Report, Req};
use common::proc;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
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

[php.ini]
memory_limit = "32M"
max_execution_time = 1
display_errors = false
log_errors = true
"opcache.file_update_protection" = 0
# crash.php dereferences a bad pointer through FFI: a real segfault in an extension.
"ffi.enable" = true
{ini}
"#;

const SCRIPTS: &[(&str, &str)] = &[
    ("pid.php", "<?php echo getmypid();"),
    ("hello.php", "<?php echo 'Hello, World!';"),
    ("style.css", "body{}"),
    ("crash.php", "<?php $p = FFI::cast('int*', 16); echo $p[0];"),
    ("fatal.php", "<?php echo 'before'; undefined_function_xyz();"),
    ("exit.php", "<?php echo 'partial'; exit(); echo 'never';"),
    ("memory.php", "<?php $a = []; while (true) { $a[] = str_repeat('x', 1 << 20); }"),
    ("timeout.php", "<?php $i = 0; while (true) { $i++; }"),
    // PHP 8.2 runs user functions without C recursion: this one ends at memory_limit.
    ("recurse.php", "<?php ini_set('memory_limit', '256M'); function f($n) { return f($n + 1); } f(0);"),
    // Recursion through an internal function recurses in C: the PHP thread's stack
    // overflows and the worker dies (PHP 8.2 has no zend.max_allowed_stack_size).
    ("overflow.php", "<?php ini_set('memory_limit', '1G'); function f($n) { return array_map('f', [$n + 1]); } f(0);"),
    // Output without end; the shutdown function proves the script was ended.
    (
        "endless.php",
        "<?php $sent = 0; register_shutdown_function(function () use (&$sent) { file_put_contents(__DIR__ . '/endless-' . $_GET['tag'] . '.txt', (string) $sent); }); $c = str_repeat('x', 65536); while (true) { echo $c; $sent += 65536; }",
    ),
    (
        "post.php",
        "<?php header('Content-Type: application/json'); echo json_encode(['files' => array_map(fn($f) => ['error' => $f['error'], 'size' => $f['size']], $_FILES), 'input' => strlen(file_get_contents('php://input')), 'md5' => md5(file_get_contents('php://input'))]);",
    ),
];

fn site(dir: &Path) {
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    for (name, body) in SCRIPTS {
        std::fs::write(www.join(name), body).unwrap();
    }
}

fn host(server: &str, ini: &str) -> Host {
    Host::start(
        &CONFIG.replace("{server}", server).replace("{ini}", ini),
        site,
    )
}

/// Good requests: PHP and static files, each checked by its body.
fn good_mix() -> Vec<Req> {
    vec![
        Req::get("/hello.php", 200).body(b"Hello, World!"),
        Req::get("/style.css", 200).body(b"body{}"),
    ]
}

fn load(h: &Host, clients: usize) -> Load {
    let mut spec = LoadSpec::new(h.port, clients, good_mix());
    spec.probe = Some("/pid.php".to_owned());
    spec.spread_over = Some(h.workers().len());
    let load = Load::start(spec);
    load.wait_ok(200, Duration::from_secs(20));
    // Every client has learnt its worker (a lookup with `ss`, slower than the
    // first requests of the clients that already have).
    eventually("every client's worker", || {
        load.conn_pids
            .iter()
            .all(|p| p.load(std::sync::atomic::Ordering::SeqCst) != 0)
    });
    for w in h.workers() {
        assert!(load.clients_on(w) > 0, "no load connection on worker {w}");
    }
    load
}

/// Polls `f` until it holds (panics with `what` after 15 s).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the master has replaced `dead` and runs `n` workers again.
fn respawned(h: &Host, dead: i32, n: usize) -> Vec<i32> {
    let mut now = Vec::new();
    eventually("the dead worker's replacement", || {
        now = h.workers();
        now.len() == n && !now.contains(&dead)
    });
    now
}

/// Every failure of `report` was on a connection to worker `dead`, at most one per
/// client, and no more than `on_dead` (the clients connected to it when it died).
fn only_the_dead_workers_requests_failed(report: &Report, dead: i32, on_dead: usize) {
    let strays: Vec<_> = report.failed.iter().filter(|f| f.pid != dead).collect();
    assert!(
        strays.is_empty(),
        "requests failed on live workers (dead: {dead}): {strays:#?}"
    );
    assert!(
        report.failures_by_client().values().all(|&n| n <= 1),
        "a client failed more than once: {:#?}",
        report.failed
    );
    assert!(
        report.failed.len() <= on_dead,
        "{} requests failed, but only {on_dead} connections were on the dead worker",
        report.failed.len()
    );
}

fn raw_get(port: u16, path: &str) -> Vec<u8> {
    raw_request(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

fn status_of(raw: &[u8]) -> u16 {
    if raw.is_empty() {
        return 0;
    }
    parse_reply(raw).status
}

#[test]
fn a_worker_killed_under_load_costs_only_its_connections() {
    let h = host("", "");
    let load = load(&h, 8);
    let workers = h.workers();
    assert_eq!(workers.len(), 2);
    // The worker holding the most connections dies.
    let victim = *workers.iter().max_by_key(|&&w| load.clients_on(w)).unwrap();
    let on_victim = load.clients_on(victim);
    let ok_before = load.ok.load(std::sync::atomic::Ordering::SeqCst);
    unsafe { libc::kill(victim, libc::SIGKILL) };
    let after = respawned(&h, victim, 2);
    load.wait_ok(2000, Duration::from_secs(20));
    let report = load.stop();
    only_the_dead_workers_requests_failed(&report, victim, on_victim);
    eprintln!(
        "SIGKILL under load: {} of {} requests failed ({on_victim} connections on the killed worker), {} succeeded before, workers {workers:?} -> {after:?}",
        report.failed.len(),
        report.total(),
        ok_before
    );
    assert!(h.stderr().contains("killed by signal 9"), "{}", h.stderr());
    let m = get(&h.url("/_metrics")).text();
    assert_eq!(metric_sum(&m, "fephp_worker_crashes_total", &[]), 1.0);
    assert_eq!(metric_sum(&m, "fephp_worker_restarts_total", &[]), 1.0);
}

#[test]
fn a_segfault_in_php_costs_only_its_own_request() {
    let h = host("", "");
    let load = load(&h, 8);
    let (line, report) = php_crash_costs_only_itself(&h, load, "/crash.php");
    assert!(line.contains("killed by signal 11"), "{line}");
    eprintln!(
        "SIGSEGV in PHP under load: {} of {} other requests failed; {line}",
        report.failed.len(),
        report.total()
    );
}

/// Runs `path`, which kills the PHP runner that takes it, under `load`: that
/// request gets 502, no worker dies, no other request fails, a new runner takes
/// the dead one's place, and the log names the request. Gives the log line.
fn php_crash_costs_only_itself(h: &Host, load: Load, path: &str) -> (String, Report) {
    let workers = h.workers();
    let runners = h.runners();
    assert!(!runners.is_empty(), "no PHP runner");
    let crash = raw_get(h.port, path);
    assert_eq!(
        status_of(&crash),
        502,
        "{}",
        String::from_utf8_lossy(&crash)
    );
    load.wait_ok(1000, Duration::from_secs(20));
    let report = load.stop();
    assert!(
        report.failed.is_empty(),
        "other requests failed: {:#?}",
        report.failed
    );
    assert_eq!(h.workers(), workers, "a worker died");
    let log = h.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("PHP runner") && l.contains(path) && l.contains("answered 502"))
        .unwrap_or_else(|| panic!("no log line for the dead runner:\n{log}"))
        .to_owned();
    let dead: i32 = line
        .split("(pid ")
        .nth(1)
        .and_then(|t| t.split(')').next()?.parse().ok())
        .expect("the line names the runner's pid");
    assert!(
        runners.contains(&dead),
        "{dead} was not a runner: {runners:?}"
    );
    eventually("a runner in the dead one's place", || {
        let now = h.runners();
        !now.contains(&dead) && !now.is_empty()
    });
    (line, report)
}

#[test]
fn php_fpm_stopped_and_restarted_under_load() {
    use common::peers::{FpmListen, PhpFpm};
    let dir = tempfile::tempdir().unwrap();
    site(dir.path());
    let www = dir.path().join("www");
    std::fs::create_dir_all(www.join("fpm")).unwrap();
    std::fs::write(www.join("fpm/hello.php"), "<?php echo 'Hello from FPM';").unwrap();
    let mut fpm = PhpFpm::builder(&www, FpmListen::Tcp)
        .max_children(8)
        .start();
    let config = CONFIG.replace("{server}", "").replace("{ini}", "").replace(
        "[php.ini]",
        &format!(
            "[php]\nfpm_socket = \"{}\"\ndocument_root = \"{}\"\nfpm_max_connections = 4\nfpm_keep_alive = true\n\n[[backend.routing_rules]]\npattern = {{ type = \"prefix\", value = \"/fpm/\" }}\nbackend = \"fastcgi\"\n\n[php.ini]",
            fpm.address(),
            www.display()
        ),
    );
    let h = Host::start(&config, site);
    let workers = h.workers();
    let mut mix = good_mix();
    mix.push(Req::get("/fpm/hello.php", 200).body(b"Hello from FPM"));
    let fpm_req = (mix.len() - 1) as u32;
    let mut spec = LoadSpec::new(h.port, 8, mix);
    spec.probe = Some("/pid.php".to_owned());
    let load = Load::start(spec);
    load.wait_ok(300, Duration::from_secs(20));

    let stopped = load.started.elapsed();
    fpm.stop();
    std::thread::sleep(Duration::from_millis(1500));
    fpm.start_again();
    let restarted = load.started.elapsed();
    load.wait_ok(1500, Duration::from_secs(20));
    let report = load.stop();

    // Embedded and static requests never fail; FastCGI ones fail only with 502,
    // only while php-fpm is down, and quickly.
    let fastcgi: Vec<_> = report.samples.iter().filter(|s| s.req == fpm_req).collect();
    let bad: Vec<_> = report.failed.iter().filter(|s| s.req != fpm_req).collect();
    assert!(bad.is_empty(), "non-FastCGI requests failed: {bad:#?}");
    let failed: Vec<_> = fastcgi.iter().filter(|s| !s.ok).collect();
    assert!(!failed.is_empty(), "no request saw the outage");
    for f in &failed {
        assert_eq!(f.status, 502, "{f:?}");
        assert!(
            f.at + f.took >= stopped && f.at <= restarted,
            "a 502 outside the outage ({stopped:?} .. {restarted:?}): {f:?}"
        );
        assert!(f.took < Duration::from_secs(1), "a 502 took {:?}", f.took);
    }
    let ok_after = fastcgi.iter().filter(|s| s.at > restarted && s.ok).count();
    assert!(
        ok_after > 100,
        "{ok_after} FastCGI requests after the restart"
    );
    let during = fastcgi
        .iter()
        .filter(|s| s.at > stopped + Duration::from_millis(200) && s.at + s.took < restarted)
        .count();
    let slowest = failed.iter().map(|s| s.took).max().unwrap();
    eprintln!(
        "php-fpm outage under load: {} of {} FastCGI requests got 502 (slowest {slowest:?}), {during} sent during the outage, {ok_after} succeeded after the restart; {} embedded/static requests, none failed",
        failed.len(),
        fastcgi.len(),
        report.total() as usize - fastcgi.len()
    );

    assert_eq!(h.workers(), workers, "a worker died");
    let m = get(&h.url("/_metrics")).text();
    assert_eq!(metric_sum(&m, "fephp_worker_crashes_total", &[]), 0.0);
    assert_eq!(
        metric_sum(
            &m,
            "fephp_requests_total",
            &["backend=\"fastcgi\"", "code=\"502\""]
        ),
        failed.len() as f64
    );
    assert_eq!(
        metric_sum(&m, "fephp_requests_in_flight", &["backend=\"fastcgi\""]),
        0.0
    );
    let open = metric_sum(&m, "fephp_fastcgi_connections_open", &[]);
    let idle = metric_sum(&m, "fephp_fastcgi_connections_idle", &[]);
    assert!(
        open <= 2.0 * 4.0 && idle <= open && open >= 1.0,
        "open {open}, idle {idle}"
    );
    assert!(h.stderr().contains("connection refused"), "{}", h.stderr());
}

/// A tmpfs of `size` mounted on a fresh temp dir, unmounted when dropped; None
/// when this process may not mount (not root, or no CAP_SYS_ADMIN in a container).
struct SmallTmpfs {
    dir: tempfile::TempDir,
}

impl SmallTmpfs {
    fn mount(size: &str) -> Option<SmallTmpfs> {
        let dir = tempfile::Builder::new()
            .prefix("full-tmp.")
            .tempdir()
            .unwrap();
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0777"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs ({}); run as root with CAP_SYS_ADMIN",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(SmallTmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn entries(&self) -> Vec<String> {
        std::fs::read_dir(self.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn an_upload_into_a_full_temp_dir_is_500_and_leaves_nothing() {
    let Some(tmp) = SmallTmpfs::mount("1m") else {
        return;
    };
    let ini = format!(
        "upload_tmp_dir = \"{}\"\nupload_max_filesize = \"16M\"\npost_max_size = \"64M\"",
        tmp.path().display()
    );
    let h = host("", &ini);
    let dir = tmp.path().display().to_string();
    // 600 KiB: fe-php-host spools it into the directory (bodies over 64 KiB), then
    // PHP's own copy no longer fits.
    let big = h.dir.path().join("big.bin");
    std::fs::write(&big, vec![b'u'; 600 << 10]).unwrap();
    let small = h.dir.path().join("small.bin");
    std::fs::write(&small, vec![b's'; 100 << 10]).unwrap();

    // A file larger than the directory: PHP cannot write it (UPLOAD_ERR_CANT_WRITE).
    let r = curl(&["-F", &format!("up=@{}", big.display()), &h.url("/post.php")]);
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(
        !r.text().contains(&dir),
        "the page must not show server paths"
    );
    // A non-multipart body past 16 KiB is kept in a temporary file by PHP too; when
    // that fails PHP would run the script with an empty body.
    let r = curl(&[
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", big.display()),
        &h.url("/post.php"),
    ]);
    assert_eq!(r.status, 500, "{}", r.text());
    let log = h.stderr();
    for what in ["an uploaded file", "the request body"] {
        let line = log
            .lines()
            .find(|l| {
                l.contains(&format!(
                    "PHP could not store {what} in its temporary directory {dir}: "
                ))
            })
            .unwrap_or_else(|| panic!("no log line for {what}:\n{log}"));
        assert!(
            line.contains("the request carries 600 KiB, the directory has ")
                && line.contains(" free of 1.0 MiB")
                && line.contains("upload_tmp_dir")
                && line.contains("POST /post.php"),
            "{line}"
        );
    }
    assert_eq!(
        tmp.entries(),
        Vec::<String>::new(),
        "temporary files left behind"
    );

    // A body larger than the directory cannot even be spooled by fe-php-host:
    // 500 before PHP, with its own line naming the directory.
    let huge = h.dir.path().join("huge.bin");
    std::fs::write(&huge, vec![b'h'; 3 << 20]).unwrap();
    let r = curl(&[
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", huge.display()),
        &h.url("/post.php"),
    ]);
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(
        !r.text().contains(&dir),
        "the page must not show server paths"
    );
    let log = h.stderr();
    assert!(
        log.lines().any(|l| l.contains(&format!(
            "cannot spool the request body of POST /post.php into {dir}: "
        )) && l.contains("upload_tmp_dir")),
        "no log line naming the directory:\n{log}"
    );

    // What fits still works, and leaves nothing behind either.
    let r = curl(&[
        "-F",
        &format!("up=@{}", small.display()),
        &h.url("/post.php"),
    ]);
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        (
            v["files"]["up"]["error"].as_i64(),
            v["files"]["up"]["size"].as_i64()
        ),
        (Some(0), Some(100 << 10))
    );
    let r = curl(&[
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", small.display()),
        &h.url("/post.php"),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["input"], 100 << 10);
    assert_eq!(
        tmp.entries(),
        Vec::<String>::new(),
        "temporary files left behind"
    );
    eprintln!(
        "{}",
        log.lines()
            .filter(|l| l.contains("could not store"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A host serving `SCRIPTS`, with `/fpm/` routed to php-fpm, started with
/// RLIMIT_NOFILE (soft and hard) set to `limit`.
fn host_with_fd_limit(server: &str, fpm: &common::peers::PhpFpm, limit: u64) -> Host {
    use std::os::unix::process::CommandExt;
    let config = CONFIG
        .replace("{server}", server)
        .replace("{ini}", "")
        .replace("workers = 2", "workers = 1")
        .replace(
            "[php.ini]",
            &format!(
                "[php]\nfpm_socket = \"{}\"\n\n[[backend.routing_rules]]\npattern = {{ type = \"prefix\", value = \"/fpm/\" }}\nbackend = \"fastcgi\"\n\n[[backend.routing_rules]]\npattern = {{ type = \"prefix\", value = \"/static/\" }}\nbackend = \"static\"\n\n[php.ini]",
                fpm.address()
            ),
        );
    Host::start_with(&config, site, |cmd| {
        // SAFETY: setrlimit is async-signal-safe and touches nothing but the child.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    })
}

/// Sends `path` on a kept-alive connection and reads one answer with a body of
/// at most a few KiB: (status, body).
fn ask(c: &mut TcpStream, path: &str) -> (u16, String) {
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = c.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let r = parse_reply(&got);
            let len: usize = r.header("content-length").map_or(0, |l| l.parse().unwrap());
            if got.len() >= end + 4 + len {
                return (r.status, r.text());
            }
        }
    }
    (0, String::from_utf8_lossy(&got).into_owned())
}

#[test]
fn running_out_of_file_descriptors() {
    use common::peers::{FpmListen, PhpFpm};
    const LIMIT: u64 = 64;
    // php-fpm runs whatever SCRIPT_FILENAME names: the host's own document root.
    let unused = tempfile::tempdir().unwrap();
    let fpm = PhpFpm::start(unused.path(), FpmListen::Tcp);
    let h = host_with_fd_limit("header_read_timeout = \"30s\"", &fpm, LIMIT);
    std::fs::create_dir_all(h.dir.path().join("www/fpm")).unwrap();
    std::fs::write(
        h.dir.path().join("www/fpm/hello.php"),
        "<?php echo 'Hello from FPM';",
    )
    .unwrap();
    std::fs::create_dir_all(h.dir.path().join("www/static")).unwrap();
    std::fs::write(h.dir.path().join("www/static/a.txt"), "a").unwrap();
    assert_eq!(get(&h.url("/hello.php")).text(), "Hello, World!");
    let worker = h.workers()[0];
    let idle_fds = proc::fd_count(worker);

    // More connections than descriptors: the worker takes what it can.
    let mut conns: Vec<TcpStream> = (0..150)
        .map(|_| {
            let c = TcpStream::connect(("127.0.0.1", h.port)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            c
        })
        .collect();
    eventually("the worker at its descriptor limit", || {
        proc::fd_count(worker) as u64 >= LIMIT
    });
    let cpu = proc::cpu_time(worker);
    std::thread::sleep(Duration::from_secs(2));
    let cpu = proc::cpu_time(worker) - cpu;
    assert!(
        cpu < Duration::from_millis(300),
        "the worker spent {cpu:?} of CPU in 2 s at the limit"
    );

    // A connection it did accept gets answers that say what is wrong: opening a
    // file, connecting to php-fpm or looking up a script needs a descriptor.
    for path in [
        "/static/a.txt",
        "/style.css",
        "/fpm/hello.php",
        "/hello.php",
    ] {
        let (status, body) = ask(&mut conns[0], path);
        assert_eq!(status, 503, "{path}: {body}");
    }
    // The last one waits in the backlog; its request is sent already.
    let mut waiting = conns.pop().unwrap();
    waiting
        .write_all(b"GET /hello.php HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();

    let log = h.stderr();
    assert_eq!(
        log.matches("cannot accept connections: Too many open files")
            .count(),
        1,
        "one warning per minute:\n{log}"
    );
    assert!(
        log.contains(&format!(
            "all of its {LIMIT} file descriptors open (RLIMIT_NOFILE): raise the limit"
        )),
        "{log}"
    );
    for what in ["static: cannot open file", "cannot tell what the path is"] {
        assert!(log.contains(what), "{what}:\n{log}");
    }

    // The clients go away: the waiting one is served, then everyone.
    drop(conns);
    let mut answer = Vec::new();
    waiting.read_to_end(&mut answer).unwrap();
    let r = parse_reply(&answer);
    assert_eq!((r.status, r.text().as_str()), (200, "Hello, World!"));
    assert_eq!(get(&h.url("/hello.php")).text(), "Hello, World!");
    assert_eq!(get(&h.url("/style.css")).text(), "body{}");
    assert_eq!(get(&h.url("/fpm/hello.php")).text(), "Hello from FPM");
    assert_eq!(get(&h.url("/static/a.txt")).text(), "a");
    eventually("the worker's descriptors back to idle", || {
        proc::fd_count(worker) <= idle_fds + 2
    });
    assert_eq!(h.workers(), vec![worker], "the worker died");
    let log = h.stderr();
    assert!(log.contains("accepting connections again after"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    eprintln!(
        "out of descriptors: worker at {LIMIT} fds used {cpu:?} of CPU in 2 s; 503 for files and scripts; the waiting connection was served once clients left"
    );
}

/// Waits for the marker `endless.php?tag=TAG` writes when it ends: (bytes it
/// wrote, when it was seen).
fn endless_ended(h: &Host, tag: &str, limit: Duration) -> Option<(u64, Instant)> {
    let marker = h.dir.path().join(format!("www/endless-{tag}.txt"));
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(&marker) {
            if !text.is_empty() {
                return Some((text.parse().unwrap(), Instant::now()));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn php_faults_under_load_cost_only_their_own_request() {
    let h = host("send_timeout = \"2s\"", "");
    let load = load(&h, 8);
    let mut observed = Vec::new();

    // Faults PHP survives: each is its own request's answer only.
    for (path, status, body) in [
        ("/fatal.php", 500, None),
        ("/exit.php", 200, Some("partial")),
        ("/memory.php", 500, None),
        ("/timeout.php", 500, None),
        ("/recurse.php", 500, None),
    ] {
        let started = Instant::now();
        let r = parse_reply(&raw_get(h.port, path));
        assert_eq!(r.status, status, "{path}: {}", r.text());
        if let Some(b) = body {
            assert_eq!(r.text(), b, "{path}");
        }
        observed.push(format!("{path} {} in {:?}", r.status, started.elapsed()));
        load.wait_ok(100, Duration::from_secs(20));
    }

    // Endless output to a client that stops reading: memory stays bounded (what
    // the client does not take goes to a temporary file), and the script ends by
    // its own limit (max_execution_time) or, once that file is full, with the
    // connection at send_timeout.
    let workers = h.workers();
    let rss_before: Vec<u64> = workers.iter().map(|&w| proc::rss_kib(w)).collect();
    let mut stalled = TcpStream::connect(("127.0.0.1", h.port)).unwrap();
    stalled
        .write_all(b"GET /endless.php?tag=stalled HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let stalled_at = Instant::now();
    let mut grown = 0u64;
    let ended = loop {
        for (w, before) in workers.iter().zip(&rss_before) {
            grown = grown.max(proc::rss_kib(*w).saturating_sub(*before));
        }
        if let Some(end) = endless_ended(&h, "stalled", Duration::from_millis(100)) {
            break end;
        }
        assert!(
            stalled_at.elapsed() < Duration::from_secs(15),
            "the script writing to a stalled client never ended"
        );
    };
    let took = ended.1 - stalled_at;
    // About 2.5 s; more only on a machine whose disk is busy: the script's
    // output goes to a temporary file at hundreds of MiB/s, and the kernel holds
    // such a writer back while other processes' writes are flushed (it took 6.4 s
    // once with cargo building beside it).
    assert!(
        took < Duration::from_secs(10),
        "the stalled client's script ended after {took:?} (send_timeout 2 s)"
    );
    assert!(grown < 16 * 1024, "a worker grew by {grown} KiB");
    // Still not reading past send_timeout: the server closes it, and what the
    // socket holds ends.
    std::thread::sleep(
        (stalled_at + Duration::from_millis(4500)).saturating_duration_since(Instant::now()),
    );
    stalled
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut sink = vec![0u8; 1 << 20];
    let mut received = 0u64;
    loop {
        match stalled.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => received += n as u64,
        }
    }
    assert!(received < ended.0, "{received} of {} bytes", ended.0);
    observed.push(format!(
        "endless output to a stalled client: script ended after {took:?}, {} MiB written, {received} bytes buffered in sockets, worker RSS +{grown} KiB",
        ended.0 >> 20
    ));
    load.wait_ok(100, Duration::from_secs(20));

    // The same to a client that leaves: the script ends at once.
    let mut leaving = TcpStream::connect(("127.0.0.1", h.port)).unwrap();
    leaving
        .write_all(b"GET /endless.php?tag=closed HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 64 << 10];
    leaving.read_exact(&mut head).unwrap();
    drop(leaving);
    let left = Instant::now();
    let (_, seen) = endless_ended(&h, "closed", Duration::from_secs(10))
        .expect("the script writing to a client that left never ended");
    assert!(seen - left < Duration::from_secs(1), "{:?}", seen - left);
    observed.push(format!(
        "endless output, client leaves: script ended after {:?}",
        seen - left
    ));
    load.wait_ok(100, Duration::from_secs(20));

    // Recursion through array_map recurses in C: the stack overflows and the
    // runner dies; only that request fails.
    let (how, report) = php_crash_costs_only_itself(&h, load, "/overflow.php");
    let log = h.stderr();
    observed.push(format!(
        "stack overflow: {how}; {} of {} good requests failed",
        report.failed.len(),
        report.total()
    ));
    for needle in [
        "undefined_function_xyz",
        "Allowed memory size of 33554432 bytes",
        "Allowed memory size of 268435456 bytes",
        "Maximum execution time of 1 second",
    ] {
        assert!(log.contains(needle), "{needle}:\n{log}");
    }
    eprintln!("PHP faults under load:\n  {}", observed.join("\n  "));
}
