//! `/_metrics` through fe-php-host: Prometheus text format, per-backend series that
//! move by exactly what the requests did, totals of every worker process whoever
//! answers the scrape, crash counting, FastCGI pool gauges, and the path's
//! configuration.

mod common;

use common::peers::*;
use common::*;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

fn config() -> String {
    HostConfig::static_site()
        .workers(2)
        .access_log("off")
        .root("{dir}/www")
        .sections("\n[[backend.routing_rules]]\npattern = { type = \"suffix\", value = \".php\" }\nbackend = \"embedded\"\n")
        .php("")
        .toml()
        // Two PHP runners, fixed: the interpreter gauges are known.
        + "\n[php.pool]\nmin_runners = 2\nmax_runners = 2\n"
}

fn site(dir: &Path) {
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("a.txt"), vec![b'a'; 1000]).unwrap();
    std::fs::write(www.join("pid.php"), "<?php echo getmypid();").unwrap();
    std::fs::write(www.join("big.php"), "<?php echo str_repeat('x', 2 << 20);").unwrap();
}

/// Series → value, after checking the whole text against the exposition format.
type Scrape = BTreeMap<String, f64>;

fn is_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

/// Splits `name{a="b",c="d"}` into the name and its labels.
fn split_series(series: &str) -> (String, Vec<(String, String)>) {
    let Some((name, rest)) = series.split_once('{') else {
        return (series.to_owned(), Vec::new());
    };
    let body = rest.strip_suffix('}').expect("labels end with }");
    let mut labels = Vec::new();
    let mut chars = body.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        assert!(is_name(&key), "label name {key:?} in {series}");
        assert_eq!(chars.next(), Some('"'), "label value quoted in {series}");
        let mut value = String::new();
        loop {
            match chars.next().expect("closing quote") {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c @ ('\\' | '"')) => value.push(c),
                    other => panic!("bad escape {other:?} in {series}"),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.push((key, value));
        match chars.next() {
            None => break,
            Some(',') => {}
            other => panic!("unexpected {other:?} in {series}"),
        }
    }
    (name.to_owned(), labels)
}

/// A line checker for Prometheus' text format 0.0.4: `# HELP` and `# TYPE` once per
/// family before its samples, valid names and labels, numeric values, no
/// duplicate series, counters named `_total`, histogram buckets cumulative with
/// `+Inf` equal to `_count`.
fn parse_prometheus(text: &str) -> Scrape {
    assert!(text.ends_with('\n'), "the text ends with a newline");
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps = HashSet::new();
    let mut out = Scrape::new();
    let mut last_bucket: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for line in text.lines() {
        assert!(!line.is_empty(), "empty line in\n{text}");
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP has text");
            assert!(is_name(name) && !help.trim().is_empty(), "{line}");
            assert!(helps.insert(name.to_owned()), "second HELP: {line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a type");
            assert!(is_name(name), "{line}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(helps.contains(name), "TYPE before HELP: {line}");
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "second TYPE: {line}"
            );
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter without _total: {line}");
            }
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment: {line}");
        let (series, value) = line.rsplit_once(' ').expect("series and value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("value of {line}")),
        };
        let (name, labels) = split_series(series);
        assert!(is_name(&name) && name.starts_with("fephp_"), "{line}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                let base = name.strip_suffix(s)?;
                (types.get(base).map(String::as_str) == Some("histogram")).then(|| base.to_owned())
            })
            .unwrap_or_else(|| name.clone());
        let kind = types
            .get(&family)
            .unwrap_or_else(|| panic!("sample before its TYPE: {line}"));
        if kind != "gauge" {
            assert!(value >= 0.0, "negative {kind}: {line}");
        }
        if name.ends_with("_bucket") && kind == "histogram" {
            let le = labels
                .iter()
                .find(|(k, _)| k == "le")
                .map(|(_, v)| v.clone())
                .expect("bucket has le");
            let le: f64 = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            let others: Vec<_> = labels.iter().filter(|(k, _)| k != "le").collect();
            let key = format!("{family}{others:?}");
            if let Some(&(prev_le, prev)) = last_bucket.get(&key) {
                assert!(
                    le > prev_le && value >= prev,
                    "buckets not cumulative: {line}"
                );
            }
            last_bucket.insert(key, (le, value));
        }
        assert!(
            out.insert(series.to_owned(), value).is_none(),
            "duplicate series {series}"
        );
    }
    // +Inf bucket == _count for every histogram series, and each has a _sum.
    for (family, _) in types.iter().filter(|(_, k)| *k == "histogram") {
        for (series, value) in &out {
            let Some(rest) = series.strip_prefix(&format!("{family}_count")) else {
                continue;
            };
            let inf = match rest.strip_suffix('}') {
                Some(labels) => format!("{family}_bucket{labels},le=\"+Inf\"}}"),
                None => format!("{family}_bucket{{le=\"+Inf\"}}"),
            };
            assert_eq!(out.get(&inf), Some(value), "{inf}");
            assert!(
                out.contains_key(&format!("{family}_sum{rest}")),
                "{family}_sum{rest}"
            );
        }
    }
    out
}

fn scrape(h: &Host) -> Scrape {
    let r = get(&h.url("/_metrics"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    parse_prometheus(&r.text())
}

fn v(s: &Scrape, series: &str) -> f64 {
    s.get(series).copied().unwrap_or(0.0)
}

/// The series that requests other than scrapes move (scrapes count as internal).
fn without_internal(s: &Scrape) -> Scrape {
    s.iter()
        .filter(|(k, _)| !k.contains("backend=\"internal\""))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn series_move_by_what_requests_did_in_every_worker() {
    let h = Host::start(&config(), site);
    // Both PHP runners are up.
    eventually("two idle PHP runners", || {
        v(&scrape(&h), "fephp_embedded_workers_idle") == 2.0
    });
    let before = scrape(&h);

    for _ in 0..3 {
        let r = get(&h.url("/a.txt"));
        assert_eq!((r.status, r.body.len()), (200, 1000));
    }
    let etag = get(&h.url("/a.txt")).header("etag").unwrap().to_owned();
    let r = curl(&["-H", &format!("If-None-Match: {etag}"), &h.url("/a.txt")]);
    assert_eq!(r.status, 304);
    let r = curl(&["-H", "Range: bytes=0-99", &h.url("/a.txt")]);
    assert_eq!((r.status, r.body.len()), (206, 100));
    let missing = get(&h.url("/missing.txt"));
    assert_eq!(missing.status, 404);
    // PHP on fresh connections until both workers have answered.
    let mut pids = HashSet::new();
    let mut php_bytes = 0;
    let mut php_requests = 0;
    while pids.len() < 2 {
        assert!(php_requests < 200, "one worker answered everything");
        // The worker is the process holding the server end of the connection.
        let mut s = std::net::TcpStream::connect(("127.0.0.1", h.port)).unwrap();
        use std::io::{Read, Write};
        let worker = common::load::server_pid(&s);
        s.write_all(b"GET /pid.php HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let r = parse_reply(&raw);
        assert_eq!(r.status, 200);
        php_bytes += r.body.len();
        php_requests += 1;
        pids.insert(worker.expect("the connection's worker"));
    }
    let nope = get(&h.url("/nope.php"));
    assert_eq!(nope.status, 404);
    // A streamed body (past 1 MiB): counted as the host reads it.
    let big = get(&h.url("/big.php"));
    assert_eq!(big.body.len(), 2 << 20);

    // Every scrape, whichever worker answers it, has the same totals.
    let after = scrape(&h);
    for _ in 0..5 {
        assert_eq!(without_internal(&scrape(&h)), without_internal(&after));
    }
    let d = |series: &str| v(&after, series) - v(&before, series);
    let total = |backend: &str, code: u16| {
        d(&format!(
            "fephp_requests_total{{backend=\"{backend}\",code=\"{code}\"}}"
        ))
    };
    // 3 + the ETag fetch.
    assert_eq!(total("static", 200), 4.0);
    assert_eq!(total("static", 304), 1.0);
    assert_eq!(total("static", 206), 1.0);
    assert_eq!(total("static", 404), 1.0);
    assert_eq!(total("embedded", 200), php_requests as f64 + 1.0);
    assert_eq!(total("embedded", 404), 1.0);
    assert_eq!(d("fephp_static_not_modified_total"), 1.0);
    assert_eq!(d("fephp_static_range_responses_total"), 1.0);
    // a.txt (1,000 bytes) is kept in memory: no file range goes to the host
    // (tests/compression.rs counts the bytes of a larger file).
    assert_eq!(d("fephp_static_sendfile_bytes_total"), 0.0);
    assert_eq!(
        d("fephp_response_bytes_total{backend=\"static\"}"),
        4100.0 + missing.body.len() as f64
    );
    assert_eq!(
        d("fephp_response_bytes_total{backend=\"embedded\"}"),
        (php_bytes + nope.body.len() + (2 << 20)) as f64
    );
    assert_eq!(
        d("fephp_request_duration_seconds_count{backend=\"static\"}"),
        7.0
    );
    assert_eq!(
        d("fephp_request_duration_seconds_count{backend=\"embedded\"}"),
        php_requests as f64 + 2.0
    );
    assert!(d("fephp_request_duration_seconds_sum{backend=\"embedded\"}") > 0.0);
    // The scrapes themselves are the engine's own answers.
    assert!(total("internal", 200) >= 1.0);
    for b in ["embedded", "fastcgi", "static", "internal"] {
        assert_eq!(
            v(
                &after,
                &format!("fephp_requests_in_flight{{backend=\"{b}\"}}")
            ),
            0.0
        );
    }
    assert_eq!(v(&after, "fephp_embedded_workers_busy"), 0.0);
    assert_eq!(v(&after, "fephp_fastcgi_connections_open"), 0.0);

    // HEAD has the headers only; other methods are refused.
    let head = curl(&["-I", &h.url("/_metrics")]);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    let post = curl(&["-X", "POST", &h.url("/_metrics")]);
    assert_eq!(post.status, 405);

    // A worker killed by a signal: a crash and a restart, its gauges gone.
    let workers = h.workers();
    unsafe { libc::kill(workers[0], libc::SIGKILL) };
    eventually("the crash counted and the worker replaced", || {
        let s = scrape(&h);
        v(&s, "fephp_worker_crashes_total") == 1.0
            && v(&s, "fephp_worker_restarts_total") == 1.0
            && v(&s, "fephp_embedded_workers_idle") == 2.0
    });
    // Counters of the dead worker stay.
    let s = scrape(&h);
    assert_eq!(
        v(&s, "fephp_requests_total{backend=\"static\",code=\"200\"}"),
        v(
            &after,
            "fephp_requests_total{backend=\"static\",code=\"200\"}"
        )
    );
}

#[test]
fn a_slow_script_is_in_flight_and_busy() {
    let one = config().replace("workers = 2", "workers = 1").replace(
        "min_runners = 2\nmax_runners = 2",
        "min_runners = 1\nmax_runners = 1",
    );
    let h = Host::start(&one, |dir| {
        site(dir);
        std::fs::write(dir.join("www/slow.php"), "<?php usleep(800000); echo 'ok';").unwrap();
    });
    let url = h.url("/slow.php");
    let slow = std::thread::spawn(move || get(&url));
    eventually("the slow script in flight", || {
        let s = scrape(&h);
        v(&s, "fephp_requests_in_flight{backend=\"embedded\"}") == 1.0
            && v(&s, "fephp_embedded_workers_busy") == 1.0
            && v(&s, "fephp_embedded_workers_idle") == 0.0
    });
    assert_eq!(slow.join().unwrap().text(), "ok");
    let s = scrape(&h);
    assert_eq!(v(&s, "fephp_requests_in_flight{backend=\"embedded\"}"), 0.0);
    assert_eq!(v(&s, "fephp_embedded_workers_busy"), 0.0);
    // 0.8 s lands above the 0.5 bucket and within the 1 s one.
    assert_eq!(
        v(
            &s,
            "fephp_request_duration_seconds_bucket{backend=\"embedded\",le=\"0.5\"}"
        ),
        0.0
    );
    assert_eq!(
        v(
            &s,
            "fephp_request_duration_seconds_bucket{backend=\"embedded\",le=\"1\"}"
        ),
        1.0
    );
}

#[test]
fn fastcgi_pool_gauges_and_streamed_bytes() {
    let www = tempfile::tempdir().unwrap();
    std::fs::write(
        www.path().join("slow.php"),
        "<?php usleep(300000); echo 'slow';",
    )
    .unwrap();
    std::fs::write(
        www.path().join("big.php"),
        "<?php echo str_repeat('y', 3 << 20);",
    )
    .unwrap();
    let fpm = PhpFpm::start(www.path(), FpmListen::Tcp);
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{{port}}"
workers = 1
access_log = "off"

[backend]
default_backend = "fastcgi"

[php]
libphp_path = "/nonexistent/libphp.so"
document_root = "{root}"
fpm_socket = "{socket}"
fpm_max_connections = 1
fpm_keep_alive = true
"#,
        root = www.path().display(),
        socket = fpm.address(),
    );
    let h = Host::start(&config, |_| {});
    let before = scrape(&h);
    assert_eq!(v(&before, "fephp_fastcgi_connections_open"), 0.0);

    // Two at once over one allowed connection: the second waits for it.
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let url = h.url("/slow.php");
            std::thread::spawn(move || get(&url).text())
        })
        .collect();
    for t in slow {
        assert_eq!(t.join().unwrap(), "slow");
    }
    let big = get(&h.url("/big.php"));
    assert_eq!(big.body.len(), 3 << 20);
    eventually("one kept-alive idle connection", || {
        let s = scrape(&h);
        v(&s, "fephp_fastcgi_connections_open") == 1.0
            && v(&s, "fephp_fastcgi_connections_idle") == 1.0
    });
    let after = scrape(&h);
    let d = |series: &str| v(&after, series) - v(&before, series);
    assert_eq!(d("fephp_fastcgi_pool_waits_total"), 1.0);
    // Every request's wait for a connection: two got one at once, the second
    // slow one waited for the first (about 0.3 s).
    assert_eq!(d("fephp_fastcgi_queue_wait_seconds_count"), 3.0);
    assert_eq!(
        d("fephp_fastcgi_queue_wait_seconds_bucket{le=\"0.01\"}"),
        2.0
    );
    assert!(d("fephp_fastcgi_queue_wait_seconds_sum") >= 0.1);
    assert_eq!(
        d("fephp_php_ttfb_seconds_count{backend=\"fastcgi\",pool=\"default\"}"),
        3.0
    );
    assert_eq!(
        d("fephp_php_ttfb_seconds_bucket{backend=\"fastcgi\",pool=\"default\",le=\"0.25\"}"),
        1.0
    );
    assert_eq!(
        d("fephp_requests_total{backend=\"fastcgi\",code=\"200\"}"),
        3.0
    );
    // The 3 MiB body streamed (past 1 MiB): every byte read counts.
    assert_eq!(
        d("fephp_response_bytes_total{backend=\"fastcgi\"}"),
        (8 + (3 << 20)) as f64
    );
}

#[test]
fn the_metrics_path_moves_or_turns_off() {
    let moved = Host::start(
        &config().replace(
            "default_backend = \"static\"",
            "default_backend = \"static\"\nmetrics_path = \"/internal/stats\"",
        ),
        site,
    );
    let r = get(&moved.url("/internal/stats"));
    assert_eq!(r.status, 200);
    parse_prometheus(&r.text());
    // The old path is routed like any other: a missing static file.
    assert_eq!(get(&moved.url("/_metrics")).status, 404);

    let off = Host::start(
        &config().replace(
            "default_backend = \"static\"",
            "default_backend = \"static\"\nmetrics_path = \"\"",
        ),
        site,
    );
    assert_eq!(get(&off.url("/_metrics")).status, 404);
    assert_eq!(get(&off.url("/_health")).status, 200);

    // Validated like health_path.
    for (value, message) in [
        (
            "\"stats\"",
            "[backend] metrics_path 'stats' must start with '/'",
        ),
        ("\"/_health\"", "is also the health_path"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        site(dir.path());
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            config()
                .replace("{dir}", dir.path().to_str().unwrap())
                .replace("{port}", "1")
                .replace(
                    "default_backend = \"static\"",
                    &format!("default_backend = \"static\"\nmetrics_path = {value}"),
                ),
        )
        .unwrap();
        let out = std::process::Command::new(HOST_BIN)
            .arg("--config")
            .arg(&path)
            .arg("--check")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(message), "{err}");
    }
}

/// A named rule to a named pool, whose script sleeps 30 ms: the rule's, the
/// pool's and PHP's time-to-first-byte histograms put every request of both
/// workers between 25 and 50 ms; the default pool has its own series.
#[test]
fn named_rules_and_pools_have_latency_histograms() {
    let config = config().replace(
        "\n[[backend.routing_rules]]\n",
        "\n[[backend.routing_rules]]\npattern = { type = \"prefix\", value = \"/reports/\" }\nbackend = \"embedded\"\npool = \"reports\"\nname = \"reports.v1\"\npriority = 10\n\n[[backend.routing_rules]]\n",
    ) + "\n[php.pools.reports]\nmin_runners = 2\nmax_runners = 2\n";
    let h = Host::start(&config, |dir| {
        site(dir);
        std::fs::create_dir_all(dir.join("www/reports")).unwrap();
        std::fs::write(
            dir.join("www/reports/slow.php"),
            "<?php usleep(30000); echo getmypid();",
        )
        .unwrap();
    });
    eventually("four idle PHP runners", || {
        v(&scrape(&h), "fephp_embedded_workers_idle") == 4.0
    });
    let before = scrape(&h);
    let rule = "fephp_rule_request_duration_seconds";
    let pool = "fephp_php_request_duration_seconds";
    let ttfb = "fephp_php_ttfb_seconds";
    // Claimed when the engine was built: there before any request.
    for series in [
        format!("{rule}_count{{rule=\"reports.v1\"}}"),
        format!("{pool}_count{{pool=\"reports\"}}"),
        format!("{pool}_count{{pool=\"default\"}}"),
        format!("{ttfb}_count{{backend=\"embedded\",pool=\"reports\"}}"),
    ] {
        assert_eq!(before.get(&series), Some(&0.0), "{series}");
    }

    // On fresh connections until both workers have answered.
    let mut pids = HashSet::new();
    let mut n = 0;
    while pids.len() < 2 {
        assert!(n < 100, "one worker answered everything");
        let mut s = std::net::TcpStream::connect(("127.0.0.1", h.port)).unwrap();
        use std::io::{Read, Write};
        let worker = common::load::server_pid(&s);
        s.write_all(b"GET /reports/slow.php HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        assert_eq!(parse_reply(&raw).status, 200);
        n += 1;
        pids.insert(worker.expect("the connection's worker"));
    }
    assert_eq!(get(&h.url("/pid.php")).status, 200);

    let after = scrape(&h);
    let d = |series: String| v(&after, &series) - v(&before, &series);
    let n = n as f64;
    for (family, labels) in [
        (rule, "rule=\"reports.v1\""),
        (pool, "pool=\"reports\""),
        (ttfb, "backend=\"embedded\",pool=\"reports\""),
    ] {
        let bucket = |le: &str| d(format!("{family}_bucket{{{labels},le=\"{le}\"}}"));
        assert_eq!(
            bucket("0.025"),
            0.0,
            "{family}{{{labels}}}: none under 25 ms"
        );
        assert_eq!(bucket("0.05"), n, "{family}{{{labels}}}: all under 50 ms");
        assert_eq!(bucket("+Inf"), n, "{family}{{{labels}}}");
        assert_eq!(d(format!("{family}_count{{{labels}}}")), n);
        let sum = d(format!("{family}_sum{{{labels}}}"));
        assert!(
            sum >= 0.03 * n && sum <= 0.05 * n,
            "{family}{{{labels}}}: {sum}"
        );
    }
    // The unnamed .php rule: the default pool, no rule series.
    assert_eq!(d(format!("{pool}_count{{pool=\"default\"}}")), 1.0);
    assert_eq!(
        d(format!(
            "{ttfb}_count{{backend=\"embedded\",pool=\"default\"}}"
        )),
        1.0
    );
    assert_eq!(
        after
            .keys()
            .filter(|k| k.starts_with(&format!("{rule}_count")))
            .count(),
        1
    );
    // Totals of both workers, whichever answers the scrape.
    for _ in 0..5 {
        assert_eq!(without_internal(&scrape(&h)), without_internal(&after));
    }
}
