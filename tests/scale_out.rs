//! Scale-out, on one machine: the topology docs/OPERATIONS.md recommends, built
//! from network namespaces joined by a bridge (one namespace per "machine"):
//!
//! ```text
//!   load clients ─▶ HAProxy (health-checks /_health)
//!                     ├─▶ fe-php-host "fe1" ─┐   FastCGI upstream group
//!                     └─▶ fe-php-host "fe2" ─┼─▶ php-fpm "fpm1"
//!                                            └─▶ php-fpm "fpm2" ─▶ Redis (sessions)
//! ```
//!
//! Under load, one fe-php instance is killed (SIGKILL, as a crashed machine), then
//! one php-fpm. Only requests in flight at a kill may fail; a logged-in user (a
//! PHP session in Redis) stays logged in whichever instance and php-fpm serve
//! them; no session write is lost. Real HAProxy, Redis, php-fpm and phpredis from
//! Debian; skipped, saying why, where the machine cannot (not root, no
//! namespaces, a package missing).

mod common;

use common::load::{Load, LoadSpec, Req, Sample};
use common::netns::Lan;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HAPROXY: &str = "/usr/sbin/haproxy";
const REDIS: &str = "/usr/bin/redis-server";
const FPM: &str = common::peers::PHP_FPM_BIN;
const REDIS_INI: &str = "/etc/php/8.2/mods-available/redis.ini";

/// Why this machine cannot run the test, if it cannot.
fn missing() -> Option<String> {
    for (path, package) in [
        (HAPROXY, "haproxy"),
        (REDIS, "redis-server"),
        (FPM, "php8.2-fpm"),
        (REDIS_INI, "php8.2-redis"),
    ] {
        if !Path::new(path).exists() {
            return Some(format!("{path} is missing (apt-get install {package})"));
        }
    }
    None
}

const LOGIN: &str = r#"<?php
session_start();
$_SESSION['user'] = $_GET['user'] ?? 'nobody';
$_SESSION['count'] = 0;
echo "logged in\n";
"#;

/// Counts the user's requests in the session; says who served it.
const COUNT: &str = r#"<?php
session_start();
if (!isset($_SESSION['user'])) {
    http_response_code(401);
    echo "not logged in\n";
    return;
}
$_SESSION['count']++;
printf("%s %d %s %s\n", $_SESSION['user'], $_SESSION['count'], getenv('FPM_NAME'), $_SERVER['SERVER_ADDR']);
"#;

const HELLO: &str = "<?php echo 'hello from ', getenv('FPM_NAME'), \"\\n\";\n";

/// One HTTP/1.1 request on a fresh connection to 127.0.0.1:`port`: (status, the
/// Set-Cookie value's first part, body); None when the exchange failed.
fn request(port: u16, path: &str, cookie: Option<&str>) -> Option<(u16, Option<String>, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let cookie = cookie
        .map(|c| format!("Cookie: {c}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: app\r\n{cookie}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let status = line.split(' ').nth(1)?.parse().ok()?;
    let mut set_cookie = None;
    loop {
        line.clear();
        r.read_line(&mut line).ok()?;
        if line.trim().is_empty() {
            break;
        }
        if let Some((n, v)) = line.split_once(':') {
            if n.eq_ignore_ascii_case("set-cookie") {
                set_cookie = v.trim().split(';').next().map(str::to_owned);
            }
        }
    }
    let mut body = String::new();
    r.read_to_string(&mut body).ok()?;
    Some((status, set_cookie, body))
}

/// What the logged-in user's client saw.
#[derive(Default, Debug)]
struct UserLog {
    ok: u64,
    failed: u64,
    /// Answers that did not know the user (a lost session): must stay empty.
    anonymous: Vec<String>,
    /// The session's counter as each answer gave it.
    counts: Vec<u64>,
    fpms: std::collections::BTreeSet<String>,
    instances: std::collections::BTreeSet<String>,
}

/// The requests of `samples` in flight over [from, to] (sent before `to`, not
/// answered before `from`).
fn in_flight(samples: &[Sample], from: Duration, to: Duration) -> usize {
    samples
        .iter()
        .filter(|s| s.at <= to && s.at + s.took >= from)
        .count()
}

#[test]
fn two_instances_behind_haproxy_survive_losing_one_instance_then_one_php_fpm() {
    if let Some(why) = missing() {
        eprintln!("skipped: {why}");
        return;
    }
    let mut lan = match Lan::new() {
        Ok(lan) => lan,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let build = |lan: &mut Lan, name: &str, n: u8| {
        lan.host(name, n)
            .unwrap_or_else(|e| panic!("cannot create namespace {name}: {e}"))
    };
    let ns_fe = [build(&mut lan, "fe1", 11), build(&mut lan, "fe2", 12)];
    let ns_fpm = [build(&mut lan, "fpm1", 21), build(&mut lan, "fpm2", 22)];
    let ns_redis = build(&mut lan, "redis", 31);

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let docroot = d.join("www");
    std::fs::create_dir(&docroot).unwrap();
    std::fs::write(docroot.join("login.php"), LOGIN).unwrap();
    std::fs::write(docroot.join("count.php"), COUNT).unwrap();
    std::fs::write(docroot.join("hello.php"), HELLO).unwrap();

    // Redis, the sessions' home.
    let redis_addr = lan.addr(31);
    lan.spawn(
        &ns_redis,
        "redis",
        REDIS,
        &[
            "--bind",
            &redis_addr,
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--daemonize",
            "no",
        ],
        &d.join("redis.log"),
    );
    lan.wait_tcp(&redis_addr, 6379, Duration::from_secs(10))
        .expect("redis-server did not start");

    // Two php-fpm hosts, sessions in Redis (phpredis' save handler).
    for (i, ns) in ns_fpm.iter().enumerate() {
        let name = format!("fpm{}", i + 1);
        let addr = lan.addr(21 + i as u8);
        let conf = d.join(format!("{name}.conf"));
        std::fs::write(
            &conf,
            format!(
                "[global]\nerror_log = {d}/{name}-error.log\ndaemonize = no\n\
                 [app]\nlisten = {addr}:9000\npm = static\npm.max_children = 8\n\
                 clear_env = yes\nenv[FPM_NAME] = {name}\n\
                 php_value[session.save_handler] = redis\n\
                 php_value[session.save_path] = \"tcp://{redis_addr}:6379\"\n\
                 catch_workers_output = yes\n",
                d = d.display()
            ),
        )
        .unwrap();
        lan.spawn(
            ns,
            &name,
            FPM,
            &["-F", "-R", "-y", conf.to_str().unwrap()],
            &d.join(format!("{name}.log")),
        );
    }
    for i in 0..2 {
        lan.wait_tcp(&lan.addr(21 + i), 9000, Duration::from_secs(10))
            .expect("php-fpm did not start");
    }

    // Two fe-php instances, each balancing over both php-fpm hosts.
    for (i, ns) in ns_fe.iter().enumerate() {
        let name = format!("fe{}", i + 1);
        let conf = d.join(format!("{name}.toml"));
        std::fs::write(
            &conf,
            format!(
                r#"[server]
listen = "0.0.0.0:8080"
workers = 2
access_log = "off"

[backend]
default_backend = "fastcgi"

[php]
document_root = "{root}"
fpm_upstreams = [{{ address = "{a}:9000" }}, {{ address = "{b}:9000" }}]
fpm_max_fails = 1
fpm_fail_timeout = "10s"
"#,
                root = docroot.display(),
                a = lan.addr(21),
                b = lan.addr(22),
            ),
        )
        .unwrap();
        lan.spawn(
            ns,
            &name,
            common::HOST_BIN,
            &["--config", conf.to_str().unwrap()],
            &d.join(format!("{name}.log")),
        );
    }
    for i in 0..2 {
        if let Err(e) = lan.wait_tcp(&lan.addr(11 + i), 8080, Duration::from_secs(20)) {
            let log =
                std::fs::read_to_string(d.join(format!("fe{}.log", i + 1))).unwrap_or_default();
            panic!("{e}; fe-php-host said:\n{log}");
        }
    }

    // HAProxy in front, as its users run it: health checks on /_health; a request
    // that could not reach an instance (connection refused) retried on the other
    // one. Not `empty-response`: a request whose instance died after passing it
    // to php-fpm ran there anyway, and resending it ran the script twice (seen
    // here as the session counter skipping a value). Not 502s either: those are
    // the requests fe-php had sent to a php-fpm that died.
    let port = common::free_port();
    let haproxy_conf = d.join("haproxy.cfg");
    std::fs::write(
        &haproxy_conf,
        format!(
            "global\n  maxconn 2000\n\
             defaults\n  mode http\n  timeout connect 1s\n  timeout client 20s\n  timeout server 20s\n  timeout check 1s\n\
             \x20 retries 2\n  option redispatch\n  retry-on conn-failure\n\
             frontend web\n  bind 127.0.0.1:{port}\n  default_backend fephp\n\
             backend fephp\n  balance roundrobin\n  option httpchk GET /_health\n  http-check expect status 200\n\
             \x20 default-server inter 250ms fall 2 rise 2\n\
             \x20 server fe1 {}:8080 check\n  server fe2 {}:8080 check\n",
            lan.addr(11),
            lan.addr(12)
        ),
    )
    .unwrap();
    lan.spawn_here(
        "haproxy",
        HAPROXY,
        &["-db", "-f", haproxy_conf.to_str().unwrap()],
        &d.join("haproxy.log"),
    );
    lan.wait_tcp("127.0.0.1", port, Duration::from_secs(10))
        .expect("haproxy did not start");

    // Every path works through the whole chain before the faults.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the chain never answered from both php-fpm hosts: {seen:?}"
        );
        if let Some((200, _, body)) = request(port, "/hello.php", None) {
            seen.insert(body.trim().to_owned());
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    // The logged-in user: one client, one request after the other.
    let (status, cookie, body) =
        request(port, "/login.php?user=alice", None).expect("login failed");
    assert_eq!((status, body.as_str()), (200, "logged in\n"));
    let cookie = cookie.expect("no session cookie");
    // Before the faults: the session follows the user over both instances and
    // both php-fpm hosts.
    let mut before = UserLog::default();
    while before.instances.len() < 2 || before.fpms.len() < 2 {
        assert!(
            before.counts.len() < 400,
            "400 requests of the user did not meet both instances and both php-fpm hosts: {before:?}"
        );
        let (status, _, body) =
            request(port, "/count.php", Some(&cookie)).expect("the user's request failed");
        let f: Vec<&str> = body.split_whitespace().collect();
        assert!(
            status == 200 && f.len() == 4 && f[0] == "alice",
            "the user was logged out: {status} {body}"
        );
        assert_eq!(
            f[1].parse::<usize>().unwrap(),
            before.counts.len() + 1,
            "a session write was lost: {body}"
        );
        before.counts.push(f[1].parse().unwrap());
        before.fpms.insert(f[2].to_owned());
        before.instances.insert(f[3].to_owned());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let user = {
        let (stop, cookie) = (stop.clone(), cookie.clone());
        std::thread::spawn(move || {
            let mut log = UserLog::default();
            while !stop.load(Ordering::SeqCst) {
                match request(port, "/count.php", Some(&cookie)) {
                    Some((200, _, body)) => {
                        let f: Vec<&str> = body.split_whitespace().collect();
                        if f.len() != 4 || f[0] != "alice" {
                            log.anonymous.push(body);
                            continue;
                        }
                        log.ok += 1;
                        log.counts.push(f[1].parse().unwrap());
                        log.fpms.insert(f[2].to_owned());
                        log.instances.insert(f[3].to_owned());
                    }
                    Some((401, _, body)) => log.anonymous.push(body),
                    _ => log.failed += 1,
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            log
        })
    };

    // Anonymous load: 16 keep-alive clients.
    let mut spec = LoadSpec::new(
        port,
        16,
        vec![Req::get("/hello.php", 200).body(b"hello from fpm")],
    );
    spec.read_timeout = Duration::from_secs(15);
    let load = Load::start(spec);
    load.wait_ok(500, Duration::from_secs(30));

    // One fe-php instance dies.
    let kill1_from = load.started.elapsed();
    lan.kill("fe1");
    let kill1_to = load.started.elapsed();
    load.wait_ok(4_000, Duration::from_secs(30));

    // Then one php-fpm host.
    let kill2_from = load.started.elapsed();
    lan.kill("fpm1");
    let kill2_to = load.started.elapsed();
    load.wait_ok(4_000, Duration::from_secs(30));

    let report = load.stop();
    stop.store(true, Ordering::SeqCst);
    let user = user.join().unwrap();

    let at_kill1 = in_flight(&report.samples, kill1_from, kill1_to);
    let at_kill2 = in_flight(&report.samples, kill2_from, kill2_to);
    let late: Vec<&Sample> = report
        .failed
        .iter()
        .filter(|s| {
            let during = |from: Duration, to: Duration| s.at <= to && s.at + s.took >= from;
            !during(kill1_from, kill1_to) && !during(kill2_from, kill2_to)
        })
        .collect();
    eprintln!(
        "scale-out: {} requests sent, {} failed; in flight when fe1 was killed \
         ({kill1_from:?}..{kill1_to:?}): {at_kill1}, when fpm1 was killed \
         ({kill2_from:?}..{kill2_to:?}): {at_kill2}; failures not in flight at a kill: {}; \
         logged-in user: {} ok, {} failed during the faults, served by {:?} through {:?}",
        report.total(),
        report.failed.len(),
        late.len(),
        user.ok,
        user.failed,
        user.fpms,
        user.instances,
    );
    let logs = || {
        ["fe1", "fe2", "fpm1", "fpm2", "haproxy"]
            .iter()
            .map(|n| {
                format!(
                    "--- {n}:\n{}",
                    std::fs::read_to_string(d.join(format!("{n}.log"))).unwrap_or_default()
                )
            })
            .collect::<String>()
    };
    assert!(
        late.is_empty(),
        "{} requests failed that were not in flight at a kill (first: {:?}); statuses {:?}\n{}",
        late.len(),
        late.first(),
        report.statuses,
        logs()
    );
    assert!(
        report.failed.len() <= at_kill1 + at_kill2,
        "more failures ({}) than requests in flight at the kills ({at_kill1} + {at_kill2})",
        report.failed.len()
    );

    // Through the faults the user stayed logged in, and no session write was
    // lost: the counter rose by one with every answered request (a request that
    // failed in flight may or may not have counted).
    assert!(
        user.anonymous.is_empty(),
        "the user was logged out: {:?}",
        user.anonymous
    );
    assert!(
        user.ok > 20,
        "too few of the user's requests succeeded: {user:?}"
    );
    let mut previous = before.counts.len() as u64;
    let mut skipped = 0;
    for &n in &user.counts {
        assert!(
            n > previous,
            "the session counter went back: {:?}",
            user.counts
        );
        skipped += n - previous - 1;
        previous = n;
    }
    assert!(
        skipped <= user.failed,
        "the counter skipped {skipped} values but only {} of the user's requests failed: {:?}",
        user.failed,
        user.counts
    );

    // After the faults the survivor reports itself healthy: one php-fpm host of
    // two is enough to serve.
    let health = request(port, "/_health", None).expect("no /_health through haproxy");
    assert_eq!(health.0, 200, "{}", health.2);
}
