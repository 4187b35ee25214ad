//! FastCGI upstream groups against several real php-fpm instances, through a
//! running fe-php-host: balancing, failover and recovery, no retry of a request
//! already sent, named pools picked by routing rules, a POST body across a
//! failover. Each php-fpm names itself to the scripts through `env[FPM_NAME]`.

mod common;

use common::peers::*;
use common::*;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SCRIPTS: &[(&str, &str)] = &[
    ("who.php", "<?php echo getenv('FPM_NAME'), \"\\n\";"),
    ("legacy/who.php", "<?php echo 'legacy:', getenv('FPM_NAME'), \"\\n\";"),
    // Notes that it ran (and where) before it sleeps.
    (
        "append.php",
        "<?php file_put_contents($_GET['f'], getenv('FPM_NAME') . \"\\n\", FILE_APPEND); sleep((int) $_GET['s']); echo 'done';",
    ),
    (
        "post.php",
        "<?php $b = file_get_contents('php://input'); echo getenv('FPM_NAME'), ' ', strlen($b), ' ', md5($b);",
    ),
];

fn site() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("legacy")).unwrap();
    for (name, body) in SCRIPTS {
        std::fs::write(dir.path().join(name), body).unwrap();
    }
    dir
}

/// A php-fpm that answers `name` in `FPM_NAME` and `pong` at /ping.
fn fpm(root: &Path, name: &str, listen: FpmListen) -> PhpFpm {
    PhpFpm::builder(root, listen)
        .max_children(4)
        .pool_line(&format!("env[FPM_NAME] = {name}"))
        .pool_line("ping.path = /ping")
        .start()
}

/// `address = "…"` for fe-php (Unix sockets as "unix:/path").
fn addr(f: &PhpFpm) -> String {
    match f.listen() {
        FpmListen::Tcp => f.address().to_owned(),
        FpmListen::Unix => format!("unix:{}", f.address()),
    }
}

fn config(root: &Path, workers: usize, php: &str, rest: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{{port}}"
workers = {workers}
access_log = "off"

[backend]
default_backend = "fastcgi"
{rest}

[backend.static_files]
enable = true
root = "{root}"

[php]
libphp_path = "/nonexistent/libphp.so"
{php}
"#,
        root = root.display(),
    )
}

fn fe(root: &Path, workers: usize, php: &str) -> Host {
    Host::start(&config(root, workers, php, ""), |_| {})
}

/// Who served each of `n` GETs of `path` (one curl, one kept-alive connection),
/// with any status other than 200 counted under "status NNN".
fn served(h: &Host, path: &str, n: usize) -> HashMap<String, usize> {
    let mut args = vec![
        "-s".to_owned(),
        "-w".to_owned(),
        "%{http_code}\n".to_owned(),
    ];
    args.extend(std::iter::repeat_n(h.url(path), n));
    let out = std::process::Command::new("curl")
        .args(&args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut counts = HashMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let key = if line.len() == 3 && line.parse::<u16>().is_ok() {
            format!("status {line}")
        } else {
            assert_eq!(lines.next(), Some("200"), "{text}");
            line.to_owned()
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

fn health(h: &Host) -> (u16, Value) {
    let r = get(&h.url("/_health"));
    (r.status, serde_json::from_slice(&r.body).unwrap())
}

/// The `upstreams` entry of `address` in the health document.
fn upstream<'a>(doc: &'a Value, address: &str) -> &'a Value {
    doc["backends"]["fastcgi"]["upstreams"]
        .as_array()
        .unwrap_or_else(|| panic!("no upstreams in {doc}"))
        .iter()
        .find(|u| u["address"] == address)
        .unwrap_or_else(|| panic!("{address} missing in {doc}"))
}

fn metric(h: &Host, name: &str, address: &str) -> f64 {
    let text = get(&h.url("/_metrics")).text();
    metric_sum(&text, name, &[&format!("upstream=\"{address}\"")])
}

fn eventually(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn least_conn_and_weighted_round_robin_spread_requests() {
    let www = site();
    let a = fpm(www.path(), "a", FpmListen::Tcp);
    let b = fpm(www.path(), "b", FpmListen::Unix);
    let h = fe(
        www.path(),
        1,
        &format!(
            "fpm_upstreams = [{{ address = \"{}\" }}, {{ address = \"{}\" }}]",
            addr(&a),
            addr(&b)
        ),
    );
    // least_conn (the default): one at a time, ties go by weight: half each.
    let c = served(&h, "/who.php", 40);
    assert_eq!(
        c.get("a").copied().unwrap_or(0) + c.get("b").copied().unwrap_or(0),
        40,
        "{c:?}"
    );
    assert!((15..=25).contains(&c["a"]), "{c:?}");
    // Concurrent requests: both are used.
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let url = h.url("/append.php?s=1&f=/dev/null");
            std::thread::spawn(move || get(&url).status)
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
    let m = get(&h.url("/_metrics")).text();
    let reqs = |addr: &str| {
        metric_sum(
            &m,
            "fephp_fastcgi_upstream_requests_total",
            &[&format!("upstream=\"{addr}\"")],
        )
    };
    assert_eq!(reqs(&addr(&a)) + reqs(&addr(&b)), 44.0, "{m}");
    assert!(reqs(&addr(&a)) >= 21.0 && reqs(&addr(&b)) >= 21.0, "{m}");
    // Each upstream's duration histogram counted exactly its requests.
    for up in [addr(&a), addr(&b)] {
        let label = format!("upstream=\"{up}\"");
        let hist = |suffix: &str, extra: &[&str]| {
            let mut want = vec![label.as_str()];
            want.extend_from_slice(extra);
            metric_sum(
                &m,
                &format!("fephp_fastcgi_upstream_duration_seconds{suffix}"),
                &want,
            )
        };
        let count = hist("_count", &[]);
        assert_eq!(count, reqs(&up), "{up}: {m}");
        assert_eq!(hist("_bucket", &["le=\"+Inf\""]), count, "{m}");
        let sum = hist("_sum", &[]);
        assert!(sum > 0.0 && sum < 5.0 * count, "{up}: sum {sum}: {m}");
    }
    drop(h);

    // Weighted round-robin, 3:1.
    let h = fe(
        www.path(),
        1,
        &format!(
            "fpm_balance = \"round_robin\"\nfpm_upstreams = [{{ address = \"{}\", weight = 3 }}, {{ address = \"{}\" }}]",
            addr(&a),
            addr(&b)
        ),
    );
    let c = served(&h, "/who.php", 80);
    assert_eq!(c.get("a").copied(), Some(60), "{c:?}");
    assert_eq!(c.get("b").copied(), Some(20), "{c:?}");
    // Two workers, each with its own turn: still about 3:1.
    drop(h);
    let h = fe(
        www.path(),
        2,
        &format!(
            "fpm_balance = \"round_robin\"\nfpm_upstreams = [{{ address = \"{}\", weight = 3 }}, {{ address = \"{}\" }}]",
            addr(&a),
            addr(&b)
        ),
    );
    let mut total: HashMap<String, usize> = HashMap::new();
    for _ in 0..8 {
        for (k, v) in served(&h, "/who.php", 10) {
            *total.entry(k).or_insert(0) += v;
        }
    }
    assert_eq!(total.values().sum::<usize>(), 80, "{total:?}");
    assert!((50..=70).contains(&total["a"]), "{total:?}");
}

#[test]
fn a_killed_upstream_is_skipped_reported_down_and_comes_back_via_ping() {
    let www = site();
    let mut a = fpm(www.path(), "a", FpmListen::Tcp);
    let b = fpm(www.path(), "b", FpmListen::Tcp);
    let (aa, ba) = (addr(&a), addr(&b));
    // A long fail_timeout: only the active ping can bring `a` back in time.
    let h = fe(
        www.path(),
        2,
        &format!(
            "fpm_upstreams = [{{ address = \"{aa}\" }}, {{ address = \"{ba}\" }}]\nfpm_fail_timeout = \"60s\"\nfpm_ping_path = \"/ping\"\nfpm_health_interval = \"300ms\"",
        ),
    );
    assert_eq!(health(&h).0, 200);

    // Four clients, one request in flight each, all the time.
    const CLIENTS: usize = 4;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
            let port = h.port;
            std::thread::spawn(move || {
                let mut bad = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let out = std::process::Command::new("curl")
                        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
                        .arg(format!("http://127.0.0.1:{port}/who.php"))
                        .output()
                        .unwrap();
                    sent.fetch_add(1, Ordering::Relaxed);
                    let code = String::from_utf8_lossy(&out.stdout).into_owned();
                    if code != "200" {
                        failed.fetch_add(1, Ordering::Relaxed);
                        bad.push(code);
                    }
                }
                bad
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1000));
    let before = sent.load(Ordering::Relaxed);
    a.stop();
    std::thread::sleep(Duration::from_millis(2000));
    stop.store(true, Ordering::Relaxed);
    let bad: Vec<String> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!(
        "failover: {sent} requests sent ({before} before the kill), {failed} failed {bad:?}, at most {CLIENTS} in flight"
    );
    assert!(
        sent > before + 20,
        "too few requests after the kill: {sent}"
    );
    assert!(
        failed <= CLIENTS,
        "{failed} of {sent} failed: {bad:?}\n{}",
        h.stderr()
    );

    // Every request now goes to b.
    assert_eq!(served(&h, "/who.php", 10).get("b").copied(), Some(10));
    // Reported down in /_metrics (whichever worker answers) and /_health.
    assert_eq!(metric(&h, "fephp_fastcgi_upstream_up", &aa), 0.0);
    assert_eq!(metric(&h, "fephp_fastcgi_upstream_up", &ba), 1.0);
    assert!(metric(&h, "fephp_fastcgi_upstream_failures_total", &aa) >= 1.0);
    let (status, doc) = health(&h);
    assert_eq!(status, 200, "one upstream answering is healthy: {doc}");
    assert_eq!(upstream(&doc, &aa)["up"], false, "{doc}");
    assert_eq!(upstream(&doc, &ba)["up"], true, "{doc}");
    assert!(
        upstream(&doc, &aa)["error"]
            .as_str()
            .unwrap()
            .contains("connection refused"),
        "{doc}"
    );
    let message = doc["backends"]["fastcgi"]["message"].as_str().unwrap();
    assert!(
        message.contains("1 of 2 PHP-FPM upstreams answered"),
        "{message}"
    );
    assert!(
        h.stderr()
            .contains(&format!("PHP-FPM upstream {aa} is out of the turn")),
        "{}",
        h.stderr()
    );

    // Back: the active ping notices it long before fail_timeout ends, and both
    // workers send it requests again.
    a.start_again();
    eventually("the ping to bring a back", Duration::from_secs(10), || {
        metric(&h, "fephp_fastcgi_upstream_up", &aa) == 1.0
    });
    eventually("requests to reach a again", Duration::from_secs(10), || {
        served(&h, "/who.php", 10).get("a").copied().unwrap_or(0) >= 3
    });
    assert!(h
        .stderr()
        .contains(&format!("PHP-FPM upstream {aa} answers again")));
}

#[test]
fn a_request_already_sent_is_never_retried_on_another_upstream() {
    let www = site();
    let mut fpms = [
        fpm(www.path(), "a", FpmListen::Tcp),
        fpm(www.path(), "b", FpmListen::Tcp),
    ];
    let h = fe(
        www.path(),
        1,
        &format!(
            "fpm_upstreams = [{{ address = \"{}\" }}, {{ address = \"{}\" }}]\nfpm_read_timeout = \"30s\"",
            addr(&fpms[0]),
            addr(&fpms[1])
        ),
    );
    // Warm both up so the slow request may ride a kept-alive connection too.
    served(&h, "/who.php", 4);
    let ran = www.path().join("ran.txt");
    let slow = std::thread::spawn({
        let url = h.url(&format!("/append.php?s=5&f={}", ran.display()));
        move || get(&url)
    });
    eventually("the script to start", Duration::from_secs(10), || {
        std::fs::read_to_string(&ran).is_ok_and(|t| t.ends_with('\n'))
    });
    let first = std::fs::read_to_string(&ran).unwrap();
    let killed = if first.trim() == "a" { 0 } else { 1 };
    fpms[killed].stop();
    let r = slow.join().unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    // Give a wrongful retry on the other php-fpm the time to note itself.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        std::fs::read_to_string(&ran).unwrap(),
        first,
        "the script ran again"
    );
    // The other one still serves.
    let c = served(&h, "/who.php", 4);
    assert_eq!(c.values().sum::<usize>(), 4, "{c:?}");
    assert!(!c.contains_key(first.trim()), "{c:?}");
}

#[test]
fn a_post_body_arrives_whole_after_failing_over() {
    let www = site();
    let live = fpm(www.path(), "live", FpmListen::Tcp);
    // Nothing listens there: connection refused.
    let dead = format!("127.0.0.1:{}", free_port());
    // 10 kB is read ahead into memory; 3 MiB is handed over by the host as it is
    // read (or kept whole in a file): both must reach the next upstream intact.
    for size in [10_000usize, 3 << 20] {
        // A fresh host per size: its round-robin turn starts with the dead one.
        let h = fe(
            www.path(),
            1,
            &format!(
                "fpm_balance = \"round_robin\"\nfpm_upstreams = [{{ address = \"{dead}\" }}, {{ address = \"{}\" }}]",
                addr(&live)
            ),
        );
        let body: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        let path = h.dir.path().join("body.bin");
        std::fs::write(&path, &body).unwrap();
        let r = curl(&[
            "--data-binary",
            &format!("@{}", path.display()),
            "-H",
            "Content-Type: application/octet-stream",
            &h.url("/post.php"),
        ]);
        assert_eq!(r.status, 200, "{}\n{}", r.text(), h.stderr());
        let md5 = std::process::Command::new("md5sum")
            .arg(&path)
            .output()
            .unwrap();
        let md5 = String::from_utf8_lossy(&md5.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned();
        assert_eq!(r.text(), format!("live {size} {md5}"));
        let log = h.stderr();
        assert!(
            log.contains("trying the next PHP-FPM upstream (nothing of the request was sent)"),
            "{size} bytes: {log}"
        );
        assert!(
            log.contains(&format!("cannot connect to PHP-FPM at {dead}")),
            "{log}"
        );
        assert_eq!(
            metric(&h, "fephp_fastcgi_upstream_failures_total", &dead),
            1.0
        );
        assert_eq!(
            metric(&h, "fephp_fastcgi_upstream_requests_total", &addr(&live)),
            1.0
        );
    }
}

#[test]
fn every_upstream_down_still_gets_a_try_and_the_log_names_them() {
    let www = site();
    let (d1, d2) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let h = fe(
        www.path(),
        1,
        &format!("fpm_upstreams = [{{ address = \"{d1}\" }}, {{ address = \"{d2}\" }}]"),
    );
    let r = get(&h.url("/who.php"));
    assert_eq!(r.status, 502);
    assert!(
        r.text().contains("(2 PHP-FPM upstreams tried)"),
        "{}",
        r.text()
    );
    let log = h.stderr();
    assert!(
        log.contains("[php] fpm_upstreams: 2 PHP-FPM upstreams tried, none answered"),
        "{log}"
    );
    assert!(log.contains(&d1) && log.contains(&d2), "{log}");
    // Both are out of the turn now; the next request still tries them.
    let r = get(&h.url("/who.php"));
    assert_eq!(r.status, 502);
    assert_eq!(
        metric(&h, "fephp_fastcgi_upstream_requests_total", &d1),
        2.0
    );
}

#[test]
fn a_named_pool_is_reached_through_its_rule() {
    let www = site();
    let a = fpm(www.path(), "a", FpmListen::Tcp);
    let old = fpm(www.path(), "old", FpmListen::Unix);
    let rule = "[[backend.routing_rules]]\npattern = { type = \"prefix\", value = \"/legacy/\" }\nbackend = \"fastcgi\"\npool = \"legacy\"\npriority = 10";
    let php = format!(
        "fpm_socket = \"{}\"\n[php.fpm_pools.legacy]\nsocket = \"{}\"\nmax_connections = 2",
        addr(&a),
        addr(&old)
    );
    let h = Host::start(&config(www.path(), 1, &php, rule), |_| {});
    assert_eq!(get(&h.url("/who.php")).text(), "a\n");
    assert_eq!(get(&h.url("/legacy/who.php")).text(), "legacy:old\n");
    let (status, doc) = health(&h);
    assert_eq!(status, 200, "{doc}");
    let legacy = upstream(&doc, &addr(&old));
    assert_eq!(legacy["pool"], "legacy");
    assert_eq!(legacy["requests"], 1);
    assert_eq!(upstream(&doc, &addr(&a))["pool"], "default");
    let message = doc["backends"]["fastcgi"]["message"].as_str().unwrap();
    assert!(
        message.contains("FastCGI pool 'legacy' is healthy"),
        "{message}"
    );
    let m = get(&h.url("/_metrics")).text();
    assert_eq!(
        metric_sum(
            &m,
            "fephp_fastcgi_upstream_requests_total",
            &["pool=\"legacy\""]
        ),
        1.0,
        "{m}"
    );
    drop(h);

    // An unknown pool is refused by --check, naming the ones that exist.
    let bad_rule = rule.replace("pool = \"legacy\"", "pool = \"php74\"");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fe-php.toml");
    std::fs::write(
        &file,
        config(www.path(), 1, &php, &bad_rule).replace("{port}", "1"),
    )
    .unwrap();
    let out = std::process::Command::new(HOST_BIN)
        .arg("--check")
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("Routing rule #1 (prefix \"/legacy/\") uses FastCGI pool 'php74', which is not defined (defined: legacy).\n    Define it as [php.fpm_pools.php74]"),
        "{err}"
    );
}
