//! The PHP runner pool through fe-php-host: fast requests never wait behind slow
//! ones, the pool grows while requests wait and shrinks when idle, a full queue
//! is a 503, the request deadline kills a stuck runner (504, the connection stays
//! usable), runners are recycled after max_requests or past their memory budget,
//! and runners take the workers' identity.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

const SCRIPTS: &[(&str, &str)] = &[
    ("fast.php", "<?php echo 'fast';"),
    ("pid.php", "<?php echo getmypid();"),
    ("slow.php", "<?php usleep((int) ($_GET['ms'] ?? 500) * 1000); echo 'slow';"),
    // sleep() is wall time: max_execution_time (CPU time on Linux) never fires.
    ("stuck.php", "<?php sleep(30); echo 'never';"),
    ("whoami.php", "<?php echo posix_geteuid(), ' ', posix_getegid();"),
    // Computes for a second (wall time): a runner that keeps a CPU busy.
    ("spin.php", "<?php $t = microtime(true); while (microtime(true) - $t < 1.0) {} echo 'spun';"),
    // Holds a lock on its own file for 200 ms: one request at a time, as PHP's
    // file sessions serialize the requests of one session.
    (
        "locked.php",
        "<?php $f = fopen(__FILE__, 'r'); flock($f, LOCK_EX); usleep(200000); flock($f, LOCK_UN); echo 'locked';",
    ),
    (
        "nested.php",
        "<?php\nfunction inner() { usleep(1200000); }\nfunction outer() { inner(); }\nouter();\necho 'done';",
    ),
];

fn site(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    // Readable by an unprivileged worker (runners_take_the_workers_identity).
    for d in [dir, &www] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for (name, body) in SCRIPTS {
        std::fs::write(www.join(name), body).unwrap();
    }
}

/// fe-php-host with `workers` workers, embedded PHP, `[php.pool]` = `pool`.
fn host(workers: usize, pool: &str) -> Host {
    host_with(workers, pool, "")
}

fn host_with(workers: usize, pool: &str, server: &str) -> Host {
    let config = HostConfig::embedded_site("")
        .workers(workers)
        .server(server)
        .toml()
        + "\n[php.pool]\n"
        + pool;
    Host::start(&config, site)
}

fn eventually(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn metrics(h: &Host) -> String {
    get(&h.url("/_metrics")).text()
}

/// One worker: with PHP on the worker's own thread, a fast request would wait for
/// every slow one before it. With the pool it is answered at once.
#[test]
fn fast_requests_do_not_wait_behind_slow_ones() {
    let h = host(1, "min_runners = 2\nmax_runners = 8\n");
    let slow: Vec<_> = (0..4)
        .map(|_| {
            let url = h.url("/slow.php?ms=1500");
            std::thread::spawn(move || get(&url))
        })
        .collect();
    // The four are running (the pool grew for them).
    eventually("four runners busy", Duration::from_secs(5), || {
        metric_sum(&metrics(&h), "fephp_embedded_workers_busy", &[]) == 4.0
    });
    for _ in 0..20 {
        let t = Instant::now();
        let r = get(&h.url("/fast.php"));
        assert_eq!(r.text(), "fast");
        assert!(
            t.elapsed() < Duration::from_millis(300),
            "a fast request took {:?} while slow ones ran",
            t.elapsed()
        );
    }
    for s in slow {
        assert_eq!(s.join().unwrap().text(), "slow");
    }
}

/// The pool grows to max_runners while requests wait, the rest queue (and are
/// served), and runners above min_runners leave after idle_timeout.
#[test]
fn the_pool_grows_while_requests_wait_and_shrinks_when_idle() {
    let h = host(
        2,
        "min_runners = 1\nmax_runners = 3\nidle_timeout = \"1s\"\n",
    );
    eventually("one runner", Duration::from_secs(5), || {
        h.runners().len() == 1
    });
    let started = Instant::now();
    let slow: Vec<_> = (0..6)
        .map(|_| {
            let url = h.url("/slow.php?ms=700");
            std::thread::spawn(move || get(&url))
        })
        .collect();
    let mut most = 0;
    let mut queued = 0.0f64;
    while most < 3 || queued == 0.0 {
        most = most.max(h.runners().len());
        queued = queued.max(metric_sum(&metrics(&h), "fephp_php_queue_depth", &[]));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "runners {most}, queue {queued}"
        );
    }
    for s in slow {
        assert_eq!(s.join().unwrap().text(), "slow");
    }
    // Six requests of 0.7 s on three runners: two rounds.
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1400), "{took:?}");
    assert!(h.runners().len() <= 3, "{:?}", h.runners());
    eventually("back to one runner", Duration::from_secs(10), || {
        h.runners().len() == 1
    });
    let m = metrics(&h);
    assert_eq!(
        metric_sum(&m, "fephp_php_runner_exits_total", &["reason=\"idle\""]),
        2.0
    );
    // Three of the six waited a whole round (0.7 s): the histogram says so.
    assert!(
        metric_sum(&m, "fephp_php_queue_wait_seconds_sum", &[]) > 1.5,
        "{m}"
    );
    assert_eq!(
        metric_sum(&m, "fephp_php_queue_wait_seconds_count", &[]),
        6.0,
        "{m}"
    );
    assert!(
        metric_sum(&m, "fephp_php_queue_wait_seconds_bucket", &["le=\"0.1\""]) <= 3.0,
        "{m}"
    );
    assert_eq!(
        metric_sum(&m, "fephp_php_queue_wait_seconds_bucket", &["le=\"+Inf\""]),
        6.0,
        "{m}"
    );
}

/// queue_size requests wait; the next one is answered 503 at once, and the log
/// names the setting.
#[test]
fn a_full_queue_is_a_503_naming_the_setting() {
    let h = host(1, "min_runners = 1\nmax_runners = 1\nqueue_size = 2\n");
    let busy = {
        let url = h.url("/slow.php?ms=1500");
        std::thread::spawn(move || get(&url))
    };
    eventually("the runner busy", Duration::from_secs(5), || {
        metric_sum(&metrics(&h), "fephp_embedded_workers_busy", &[]) == 1.0
    });
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let url = h.url("/slow.php?ms=10");
            std::thread::spawn(move || get(&url))
        })
        .collect();
    eventually("two queued", Duration::from_secs(5), || {
        metric_sum(&metrics(&h), "fephp_php_queue_depth", &[]) == 2.0
    });
    // /_health says so: a balancer sends PHP traffic elsewhere meanwhile.
    let health = get(&h.url("/_health"));
    assert_eq!(health.status, 503, "{}", health.text());
    assert!(
        health.text().contains("Embedded backend is saturated: 2 requests wait for a PHP runner ([php.pool] queue_size = 2), 1 of 1 runners busy"),
        "{}",
        health.text()
    );
    let t = Instant::now();
    let r = get(&h.url("/fast.php"));
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(t.elapsed() < Duration::from_millis(500));
    assert_eq!(busy.join().unwrap().text(), "slow");
    for w in waiting {
        assert_eq!(w.join().unwrap().text(), "slow");
    }
    assert!(
        h.stderr().contains("[php.pool] queue_size = 2"),
        "{}",
        h.stderr()
    );
    assert_eq!(
        metric_sum(&metrics(&h), "fephp_php_queue_rejected_total", &[]),
        1.0
    );
    assert_eq!(get(&h.url("/_health")).status, 200);
}

/// A script blocked where max_execution_time does not fire: past the deadline
/// its runner is killed and replaced, the client gets 504 on a connection it can
/// keep using, and the log names the script and the setting.
#[test]
fn the_request_deadline_kills_a_stuck_runner_and_answers_504() {
    let h = host(
        1,
        "min_runners = 1\nmax_runners = 2\nrequest_deadline = \"1s\"\n",
    );
    let mut s = TcpStream::connect(("127.0.0.1", h.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t = Instant::now();
    s.write_all(b"GET /stuck.php HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let head = read_response(&mut s);
    assert!(head.starts_with("HTTP/1.1 504"), "{head}");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // The same connection serves the next request.
    s.write_all(b"GET /fast.php HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let next = read_response(&mut s);
    assert!(
        next.starts_with("HTTP/1.1 200") && next.ends_with("fast"),
        "{next}"
    );
    let log = h.stderr();
    assert!(
        log.contains("GET /stuck.php")
            && log.contains("stuck.php)")
            && log.contains("[php.pool] request_deadline = \"1s\"")
            && log.contains("answered 504"),
        "{log}"
    );
    assert_eq!(
        metric_sum(
            &metrics(&h),
            "fephp_php_runner_exits_total",
            &["reason=\"deadline\""]
        ),
        1.0
    );
    eventually("a runner again", Duration::from_secs(5), || {
        !h.runners().is_empty()
    });
}

/// Reads one response with a Content-Length body; gives head and body as text.
fn read_response(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return text;
            }
        }
    }
}

/// max_requests: a runner is replaced after that many requests, without a
/// failed request.
#[test]
fn runners_are_recycled_after_max_requests() {
    let h = host(1, "min_runners = 1\nmax_runners = 1\nmax_requests = 5\n");
    let mut pids = std::collections::BTreeMap::new();
    for _ in 0..16 {
        let r = get(&h.url("/pid.php"));
        assert_eq!(r.status, 200);
        *pids.entry(r.text()).or_insert(0) += 1;
    }
    assert!(pids.len() >= 3, "{pids:?}");
    assert!(pids.values().all(|&n| n <= 5), "{pids:?}");
    eventually("the recycled count", Duration::from_secs(5), || {
        metric_sum(
            &metrics(&h),
            "fephp_php_runner_exits_total",
            &["reason=\"recycled\""],
        ) >= 3.0
    });
}

/// memory_budget: a runner above it after a request is replaced (checked every
/// 16 requests); here every runner is above 1 MiB of its own.
#[test]
fn runners_past_their_memory_budget_are_replaced() {
    let h = host(
        1,
        "min_runners = 1\nmax_runners = 1\nmemory_budget = \"1M\"\n",
    );
    let mut pids = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let r = get(&h.url("/pid.php"));
        assert_eq!(r.status, 200);
        pids.insert(r.text());
    }
    assert!(pids.len() >= 2, "{pids:?}");
    assert!(
        h.stderr().contains("[php.pool] memory_budget = \"1M\""),
        "{}",
        h.stderr()
    );
    assert!(
        metric_sum(
            &metrics(&h),
            "fephp_php_runner_exits_total",
            &["reason=\"memory\""]
        ) >= 1.0
    );
}

/// Runners run as the workers do: fe-php-host started as root with
/// `[server] user = "nobody"` switches both.
#[test]
fn runners_take_the_workers_identity() {
    // SAFETY: plain query.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: the identity switch cannot be tested");
        return;
    }
    let h = host_with(1, "", "user = \"nobody\"\ngroup = \"nogroup\"");
    let r = get(&h.url("/whoami.php"));
    assert_eq!(r.status, 200, "{}", r.text());
    let (uid, gid) = unsafe {
        let pw = libc::getpwnam(c"nobody".as_ptr());
        let gr = libc::getgrnam(c"nogroup".as_ptr());
        ((*pw).pw_uid, (*gr).gr_gid)
    };
    assert_eq!(r.text(), format!("{uid} {gid}"));
    for pid in h.runners() {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert!(
            line.split_whitespace()
                .skip(1)
                .all(|u| u == uid.to_string()),
            "runner {pid}: {line}"
        );
    }
}

/// slowlog_timeout: the PHP stack of a request running longer is logged once,
/// while it runs, without disturbing it (its usleep still lasts).
#[test]
fn the_slow_log_writes_the_stack_of_a_long_request() {
    let h = host(1, "min_runners = 1\nslowlog_timeout = \"300ms\"\n");
    let t = Instant::now();
    let r = get(&h.url("/nested.php"));
    assert_eq!(r.text(), "done");
    assert!(
        t.elapsed() >= Duration::from_millis(1200),
        "{:?}",
        t.elapsed()
    );
    let log = h.stderr();
    let at = log
        .find("slowlog_timeout = \"300ms\"")
        .unwrap_or_else(|| panic!("no slow log:\n{log}"));
    let entry = &log[at..];
    for frame in [
        "#0 usleep()",
        "#1 inner() ",
        "nested.php:3",
        "#2 outer() ",
        "nested.php:4",
        "{main}",
    ] {
        assert!(entry.contains(frame), "{frame} missing:\n{entry}");
    }
    assert!(log[..at].contains("GET /nested.php"), "{log}");
    assert_eq!(log.matches("its PHP stack").count(), 1, "{log}");
}

/// Named pools: a rule sends /admin/ to a pool with its own php.ini, sizes and
/// deadline; everything else stays on `[php.pool]`.
#[test]
fn a_rule_sends_its_scripts_to_a_named_pool_with_its_own_ini() {
    let config = HostConfig::embedded_site("")
        .workers(2)
        .sections(
            "\n[[backend.routing_rules]]\npattern = { type = \"prefix\", value = \"/admin/\" }\nbackend = \"embedded\"\npool = \"admin\"\n",
        )
        .toml()
        + "\n[php.pool]\nmin_runners = 1\nmax_runners = 2\n"
        + "\n[php.pools.admin]\nmin_runners = 1\nmax_runners = 1\nrequest_deadline = \"1s\"\n"
        + "\n[php.pools.admin.ini]\nmemory_limit = \"77M\"\n";
    let h = Host::start(&config, |dir| {
        site(dir);
        let admin = dir.join("www/admin");
        std::fs::create_dir_all(&admin).unwrap();
        let ini = "<?php echo ini_get('memory_limit'), ' ', getmypid();";
        std::fs::write(dir.join("www/ini.php"), ini).unwrap();
        std::fs::write(admin.join("ini.php"), ini).unwrap();
        std::fs::write(admin.join("stuck.php"), "<?php sleep(30);").unwrap();
    });
    let managers: Vec<i32> = children(h.child.id() as i32)
        .into_iter()
        .filter(|&p| comm(p) == "fe-php: pool")
        .collect();
    assert_eq!(managers.len(), 2, "one manager per pool: {managers:?}");
    let runners_of = |m: i32| children(m);
    let admin = get(&h.url("/admin/ini.php")).text();
    let plain = get(&h.url("/ini.php")).text();
    let (admin_limit, admin_pid) = admin.split_once(' ').unwrap();
    let (plain_limit, plain_pid) = plain.split_once(' ').unwrap();
    assert_eq!(admin_limit, "77M", "{admin}");
    assert_ne!(plain_limit, "77M", "{plain}");
    let admin_pid: i32 = admin_pid.parse().unwrap();
    let plain_pid: i32 = plain_pid.parse().unwrap();
    let owner = |pid: i32| managers.iter().position(|&m| runners_of(m).contains(&pid));
    assert!(owner(admin_pid).is_some() && owner(plain_pid).is_some());
    assert_ne!(
        owner(admin_pid),
        owner(plain_pid),
        "the two ran in different pools"
    );
    // The admin pool's deadline is its own.
    let t = Instant::now();
    assert_eq!(get(&h.url("/admin/stuck.php")).status, 504);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    let m = metrics(&h);
    assert_eq!(
        metric_sum(&m, "fephp_php_runners_max", &["pool=\"admin\""]),
        1.0
    );
    assert_eq!(
        metric_sum(&m, "fephp_php_runners_max", &["pool=\"default\""]),
        2.0
    );
    assert_eq!(
        metric_sum(
            &m,
            "fephp_php_runner_exits_total",
            &["pool=\"admin\"", "reason=\"deadline\""]
        ),
        1.0
    );
    assert!(
        h.stderr().contains("[php.pools.admin] request_deadline"),
        "{}",
        h.stderr()
    );
}

/// Sends `n` concurrent requests for `path` to `h`; each must answer `body`.
/// Returns the most runners the pool had while they ran (watched for `watch`).
fn most_runners_during(h: &Host, path: &str, n: usize, body: &str, watch: Duration) -> usize {
    let requests: Vec<_> = (0..n)
        .map(|_| {
            let url = h.url(path);
            std::thread::spawn(move || get(&url))
        })
        .collect();
    let mut most = 0;
    let t = Instant::now();
    while t.elapsed() < watch {
        most = most.max(h.runners().len());
        std::thread::sleep(Duration::from_millis(20));
    }
    for r in requests {
        assert_eq!(r.join().unwrap().text(), body);
    }
    most
}

/// Requests that wait because the runners keep every CPU busy do not grow the
/// pool: more runners would only share the same CPUs, in more memory.
#[test]
fn the_pool_does_not_grow_past_the_cpus_for_computing_scripts() {
    let h = host(1, "min_runners = 1\nmax_runners = 16\n");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let most = most_runners_during(
        &h,
        "/spin.php",
        2 * cores + 4,
        "spun",
        Duration::from_millis(1500),
    );
    assert!(
        most >= cores.min(16),
        "the pool did not use the CPUs: {most} runners"
    );
    assert!(most <= cores + 2, "{most} runners for {cores} cores");
}

/// Requests queued behind one file lock do not grow the pool either: another
/// runner would queue behind the same lock. (Without the lock rule the pool took
/// a runner per request here.)
#[test]
fn requests_queued_for_one_file_lock_do_not_grow_the_pool() {
    let h = host(1, "min_runners = 1\nmax_runners = 16\n");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let n = 2 * cores + 6;
    let most = most_runners_during(&h, "/locked.php", n, "locked", Duration::from_millis(1200));
    assert!(
        most <= cores + 2,
        "{most} runners for {n} requests queued behind one lock on {cores} cores"
    );
}
