//! Worker mode through fe-php-host: a worker script boots once per runner and
//! loops on `frankenphp_handle_request()`. What the application keeps (objects,
//! statics, counters) survives from request to request; what a request owns
//! ($_GET, $_POST, $_FILES and its temp files, $_COOKIE, $_SERVER, $_SESSION,
//! headers, status, output buffers, shutdown functions, memory_limit, the time
//! limit) does not. A thrown exception costs one response (500); exit() or a
//! fatal error restarts the worker; a script that cannot boot is restarted with a
//! back-off; classic scripts and static files work beside the worker pool.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// The application: a counter and a static that live across requests, and a
/// handler that reports the request state it sees and changes it on demand.
const WORKER: &str = r#"<?php
ignore_user_abort(true);
// A worker script often lifts the time limit for itself: each request still gets
// max_execution_time.
set_time_limit(0);
require __DIR__ . '/lib.php';
$bootWorker = $_SERVER['FRANKENPHP_WORKER'] ?? null;
$GLOBALS['booted_at'] = 'boot-' . getmypid();
$kept = fopen('php://memory', 'w+');
$count = 0;
class App { public static array $seen = []; public static array $kept = []; }
register_shutdown_function(function () { file_put_contents(__DIR__ . '/../boot-shutdown.txt', 'ran'); });
$handler = function () use (&$count, $bootWorker, $kept) {
    global $booted_at;
    $count++;
    fwrite($kept, 'x');
    $q = $_GET;
    if (isset($q['abort'])) { $was = ignore_user_abort(false); echo json_encode(['was' => $was]); return; }
    if (isset($q['spin'])) { while (true) { } }
    App::$seen[] = $_SERVER['REQUEST_URI'];
    if (str_starts_with($_SERVER['REQUEST_URI'], '/app/leaky')) { App::$kept[] = str_repeat('x', 100000); }
    if (isset($q['session'])) { session_start(); $_SESSION['v'] = $q['session']; }
    if (isset($q['resume'])) { session_start(); }
    if (isset($q['status'])) { http_response_code((int) $q['status']); }
    if (isset($q['header'])) { header('X-Once: yes'); }
    if (isset($q['ob'])) { ob_start(); echo '[buffered]'; }
    if (isset($q['shutdown'])) { register_shutdown_function(function () { echo '[shutdown]'; }); }
    if (isset($q['memory'])) { ini_set('memory_limit', '512M'); }
    if (isset($q['limit'])) { set_time_limit(0); }
    if (isset($q['sleep'])) { usleep((int) $q['sleep'] * 1000); }
    if (isset($q['stream'])) { echo 'a'; flush(); usleep(300000); echo 'b'; return; }
    if (isset($q['finish'])) { echo 'done'; frankenphp_finish_request(); usleep(1500000); return; }
    echo json_encode([
        'pid' => getmypid(),
        'count' => $count,
        'seen' => count(App::$seen),
        'boot_worker' => $bootWorker,
        'get' => $_GET,
        'post' => $_POST,
        'cookie' => $_COOKIE,
        'uri' => $_SERVER['REQUEST_URI'],
        'method' => $_SERVER['REQUEST_METHOD'],
        'files' => array_map(fn($f) => ['name' => $f['name'], 'tmp' => $f['tmp_name'], 'exists' => is_file($f['tmp_name'])], $_FILES),
        'session_id' => session_id(),
        'session' => $_SESSION ?? null,
        'memory_limit' => ini_get('memory_limit'),
        'time_limit' => ini_get('max_execution_time'),
        'tmp_gone' => isset($q['check']) ? !is_file($q['check']) : null,
        'ob_level' => ob_get_level(),
        'version' => APP_VERSION,
        'request' => $_REQUEST,
        'input' => file_get_contents('php://input'),
        'filter_get' => filter_input(INPUT_GET, 'x'),
        'ignore_user_abort' => ignore_user_abort(),
        'global' => $booted_at,
        'kept_resource' => is_resource($kept) ? ftell($kept) : null,
    ]);
    if (isset($q['throw'])) { throw new RuntimeException('thrown by the handler'); }
    if (isset($q['exit'])) { exit(0); }
    if (isset($q['fatal'])) { ini_set('memory_limit', '16M'); $a = str_repeat('x', 64 << 20); }
};
while (frankenphp_handle_request($handler)) {
    gc_collect_cycles();
}
"#;

fn site(dir: &Path) {
    let www = dir.join("www");
    std::fs::create_dir_all(www.join("app")).unwrap();
    std::fs::create_dir_all(dir.join("sessions")).unwrap();
    std::fs::write(www.join("app/worker.php"), WORKER).unwrap();
    std::fs::write(www.join("app/lib.php"), "<?php const APP_VERSION = 'v1';").unwrap();
    std::fs::write(
        www.join("classic.php"),
        "<?php try { frankenphp_handle_request(fn() => null); } catch (RuntimeException $e) { echo 'classic: ', $e->getMessage(); }",
    )
    .unwrap();
    std::fs::write(www.join("style.css"), "body{}").unwrap();
    std::fs::write(
        www.join("app/broken.php"),
        "<?php echo 'booting'; throw new LogicException('cannot boot');",
    )
    .unwrap();
}

/// Requests under /app go to the worker pool `app` (`pool` = its settings);
/// everything else to classic PHP and static files.
fn host(pool: &str) -> Host {
    let config = HostConfig::embedded_site("\"session.save_path\" = \"{dir}/sessions\"")
        .sections(
            r#"
[[backend.routing_rules]]
pattern = { type = "prefix", value = "/app" }
backend = "embedded"
pool = "app"
priority = 10
"#,
        )
        .php("front_controller = \"app/worker.php\"")
        .toml()
        + "\n[php.pools.app]\n"
        + pool;
    Host::start(&config, site)
}

fn json(reply: &Reply) -> Value {
    serde_json::from_slice(&reply.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", reply.text()))
}

fn app(h: &Host, target: &str) -> Value {
    let r = get(&h.url(target));
    assert_eq!(r.status, 200, "{target}: {}", r.text());
    json(&r)
}

const ONE: &str = "worker = \"app/worker.php\"\nmin_runners = 1\nmax_runners = 1\n";

#[test]
fn the_app_state_lives_on_and_each_request_gets_its_own() {
    let h = host(ONE);
    let first = app(&h, "/app/a?x=1");
    assert_eq!(first["count"], 1);
    assert_eq!(
        first["boot_worker"], "1",
        "the worker script sees FRANKENPHP_WORKER"
    );
    assert_eq!(first["get"]["x"], "1");
    assert_eq!(first["uri"], "/app/a?x=1");

    // A form post, then a GET: $_POST and the method are the request's own.
    let posted = json(&curl(&["-d", "name=alice", &h.url("/app/form")]));
    assert_eq!(posted["post"]["name"], "alice");
    assert_eq!(posted["method"], "POST");
    let after = app(&h, "/app/b");
    assert_eq!(after["count"], 3, "the same interpreter keeps its counter");
    assert_eq!(after["seen"], 3, "statics live on");
    assert_eq!(after["pid"], first["pid"]);
    assert_eq!(
        after["post"],
        serde_json::json!([]),
        "$_POST of the last request is gone"
    );
    assert_eq!(
        after["get"],
        serde_json::json!([]),
        "$_GET of the first request is gone"
    );
    assert_eq!(after["method"], "GET");

    // An upload: the temp file exists during its request and is gone after.
    let up = json(&curl(&[
        "-F",
        "doc=@/etc/hostname",
        "-b",
        "k=v",
        &h.url("/app/upload"),
    ]));
    assert_eq!(up["files"]["doc"]["exists"], true, "{up}");
    assert_eq!(up["cookie"]["k"], "v");
    let tmp = up["files"]["doc"]["tmp"].as_str().unwrap().to_owned();
    let next = app(&h, &format!("/app/c?check={tmp}"));
    assert_eq!(next["files"], serde_json::json!([]), "$_FILES is reset");
    assert_eq!(
        next["tmp_gone"], true,
        "the uploaded temp file {tmp} is deleted"
    );
    assert_eq!(next["cookie"], serde_json::json!([]), "$_COOKIE is reset");
}

#[test]
fn headers_status_buffers_and_limits_are_per_request() {
    let h = host(ONE);
    let r = get(&h.url("/app/h?header=1&status=404"));
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-once"), Some("yes"));
    let r = get(&h.url("/app/h"));
    assert_eq!(r.status, 200, "the status is reset");
    assert_eq!(r.header("x-once"), None, "headers are reset");

    // An output buffer left open is flushed into its own response only.
    let levels = app(&h, "/app/before-ob")["ob_level"].clone();
    let r = get(&h.url("/app/ob?ob=1"));
    assert!(r.text().starts_with("[buffered]"), "{}", r.text());
    let v = app(&h, "/app/after-ob");
    assert_eq!(
        v["ob_level"], levels,
        "no buffer is left open (output_buffering's own is new)"
    );

    // A shutdown function registered by a request runs when that request ends.
    let r = get(&h.url("/app/s?shutdown=1"));
    assert!(r.text().ends_with("[shutdown]"), "{}", r.text());
    let r = get(&h.url("/app/s2"));
    assert!(!r.text().contains("[shutdown]"), "{}", r.text());

    // ini changes a request makes to its limits are undone.
    let base = app(&h, "/app/l");
    let changed = app(&h, "/app/l?memory=1&limit=1");
    assert_eq!(changed["memory_limit"], "512M");
    assert_eq!(changed["time_limit"], "0");
    let back = app(&h, "/app/l2");
    assert_eq!(back["memory_limit"], base["memory_limit"]);
    assert_eq!(back["time_limit"], base["time_limit"]);
}

/// A session started for one client is never seen by the next (the bug class
/// of FrankenPHP's GHSA-r3xh-3r3w-47gp and GHSA-v3ph-cgqh-r8p5).
#[test]
fn sessions_never_leak_between_clients() {
    let h = host(ONE);
    let alice = get(&h.url("/app/login?session=alice"));
    assert_eq!(alice.status, 200);
    let cookie = alice
        .header("set-cookie")
        .expect("a session cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let alice_id = cookie.split('=').nth(1).unwrap().to_owned();

    let bob = app(&h, "/app/anonymous");
    assert_eq!(
        bob["session_id"], "",
        "no session is active for the next client"
    );
    assert_eq!(bob["session"], Value::Null, "$_SESSION is gone");
    assert!(bob["cookie"].as_object().is_none());

    let bob = app(&h, "/app/bob?resume=1");
    assert_ne!(
        bob["session_id"],
        alice_id.as_str(),
        "a new client gets a new id"
    );
    assert_eq!(bob["session"], serde_json::json!([]), "and no data");

    let back = json(&curl(&["-b", &cookie, &h.url("/app/again?resume=1")]));
    assert_eq!(back["session_id"], alice_id.as_str());
    assert_eq!(back["session"]["v"], "alice", "alice's session was saved");
}

#[test]
fn an_exception_costs_one_response_and_exit_restarts_the_worker() {
    let h = host(ONE);
    let first = app(&h, "/app/one");
    let r = get(&h.url("/app/throw?throw=1"));
    assert_eq!(r.status, 500, "an uncaught exception is a 500");
    let same = app(&h, "/app/two");
    assert_eq!(
        same["pid"], first["pid"],
        "the worker goes on after an exception"
    );
    assert_eq!(same["count"], 3);
    assert!(
        h.stderr().contains("thrown by the handler"),
        "{}",
        h.stderr()
    );

    // exit() ends the response normally, then the worker script.
    let r = get(&h.url("/app/exit?exit=1"));
    assert_eq!(r.status, 200);
    let fresh = app(&h, "/app/three");
    assert_eq!(fresh["count"], 1, "a new worker booted");
    assert!(
        h.stderr().contains("ended after 4 requests"),
        "{}",
        h.stderr()
    );
    let m = get(&h.url("/_metrics")).text();
    assert_eq!(
        metric_sum(
            &m,
            "fephp_php_runner_exits_total",
            &["pool=\"app\"", "reason=\"worker_ended\""]
        ),
        1.0,
        "{m}"
    );

    // A fatal error (memory exhausted) is a 500 and costs the worker only.
    let r = get(&h.url("/app/fatal?fatal=1"));
    assert_eq!(r.status, 500, "{}", r.text());
    let again = app(&h, "/app/four");
    assert_eq!(again["count"], 1);
    assert_eq!(app(&h, "/app/five")["count"], 2);
}

#[test]
fn streaming_and_finish_request_work_in_a_worker() {
    let h = host(ONE);
    let r = get(&h.url("/app/stream?stream=1"));
    assert_eq!(r.text(), "ab");
    let t = Instant::now();
    let r = get(&h.url("/app/finish?finish=1"));
    assert_eq!(r.text(), "done");
    assert!(
        t.elapsed() < Duration::from_millis(1200),
        "frankenphp_finish_request() ends the response at once ({:?})",
        t.elapsed()
    );
    // The worker is busy for the rest of that job, then serves again.
    assert_eq!(app(&h, "/app/next")["count"], 3);
}

#[test]
fn max_requests_restarts_the_worker_script() {
    let h =
        host("worker = \"app/worker.php\"\nmin_runners = 1\nmax_runners = 1\nmax_requests = 3\n");
    let counts: Vec<_> = (0..5)
        .map(|i| app(&h, &format!("/app/r{i}"))["count"].clone())
        .collect();
    assert_eq!(counts, [1, 2, 3, 1, 2]);
    // handle_request() returned false: the script ended, and the shutdown
    // function it registered while booting ran then.
    let marker = h.dir.path().join("www/boot-shutdown.txt");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !marker.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        marker.exists(),
        "the boot's shutdown function ran at the script's end"
    );
}

#[test]
fn classic_scripts_and_static_files_work_beside_a_worker_pool() {
    let h = host(ONE);
    assert_eq!(app(&h, "/app/x")["count"], 1);
    let r = get(&h.url("/classic.php"));
    assert_eq!(
        r.text(),
        "classic: frankenphp_handle_request() works only in a worker script (a pool with worker = \"...\" runs one)"
    );
    assert_eq!(get(&h.url("/style.css")).text(), "body{}");
    assert_eq!(app(&h, "/app/y")["count"], 2);
}

/// A worker script that cannot boot is logged with what it printed and
/// restarted with a back-off, not in a loop that spins the CPU.
#[test]
fn a_worker_that_cannot_boot_backs_off() {
    let h = host("worker = \"app/broken.php\"\nmin_runners = 1\nmax_runners = 1\n");
    std::thread::sleep(Duration::from_secs(3));
    let log = h.stderr();
    let failures = log.matches("ended before it took a request").count();
    assert!(failures >= 2, "{log}");
    assert!(
        failures <= 8,
        "{failures} restarts in 3 s: no back-off\n{log}"
    );
    assert!(log.contains("app/broken.php"), "{log}");
    assert!(
        log.contains("booting"),
        "what the script printed is in the log: {log}"
    );
    // Its requests do not wait for request_deadline: 503 at once.
    let t = Instant::now();
    let r = get(&h.url("/app/broken.php"));
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(
        h.stderr()
            .contains("fails to boot (see above): its requests are answered 503"),
        "{}",
        h.stderr()
    );
}

/// A reload restarts the workers whose loaded code changed (and only those),
/// between requests: no request fails meanwhile. SIGUSR2 restarts them whatever
/// changed.
#[test]
fn a_reload_restarts_workers_whose_code_changed_without_failing_a_request() {
    let h = host(ONE);
    let first = app(&h, "/app/v");
    assert_eq!(first["version"], "v1");

    // Nothing changed: the worker stays.
    h.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(1500));
    let same = app(&h, "/app/v");
    assert_eq!(
        same["pid"], first["pid"],
        "a reload without changes keeps the worker"
    );
    assert_eq!(same["version"], "v1");

    // A file the worker loaded changes: under load, reload.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..3)
        .map(|_| {
            let (url, stop) = (h.url("/app/load"), stop.clone());
            std::thread::spawn(move || {
                let mut statuses = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    statuses.push(get(&url).status);
                }
                statuses
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(
        h.dir.path().join("www/app/lib.php"),
        "<?php const APP_VERSION = 'v2';",
    )
    .unwrap();
    h.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while app(&h, "/app/v")["version"] != "v2" {
        assert!(
            Instant::now() < deadline,
            "the worker never restarted:\n{}",
            h.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let statuses: Vec<u16> = load.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert!(statuses.len() > 10, "{statuses:?}");
    assert!(
        statuses.iter().all(|&s| s == 200),
        "a request failed during the restart: {statuses:?}"
    );
    assert!(
        h.stderr()
            .contains("lib.php changed since the worker script of [php.pools.app] booted"),
        "{}",
        h.stderr()
    );

    // SIGUSR2: a restart whatever changed. The worker is idle, waiting for a
    // job: it is woken to restart at once, not at its next job.
    let before = app(&h, "/app/v")["pid"].clone();
    std::thread::sleep(Duration::from_millis(300));
    let asked = Instant::now();
    h.signal(libc::SIGUSR2);
    while !h.stderr().contains("restarts, as asked") {
        assert!(asked.elapsed() < Duration::from_secs(5), "{}", h.stderr());
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        asked.elapsed() < Duration::from_millis(300),
        "an idle worker took {:?} to notice the restart",
        asked.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while app(&h, "/app/v")["pid"] == before {
        assert!(
            Instant::now() < deadline,
            "SIGUSR2 did not restart the worker:\n{}",
            h.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let m = get(&h.url("/_metrics")).text();
    assert_eq!(
        metric_sum(
            &m,
            "fephp_php_runner_exits_total",
            &["pool=\"app\"", "reason=\"restarted\""]
        ),
        2.0,
        "{m}"
    );
}

/// The leak report names the route whose requests leave memory behind, and
/// not the others.
#[test]
fn the_leak_report_names_the_route_that_leaks() {
    let h =
        host("worker = \"app/worker.php\"\nmin_runners = 1\nmax_runners = 1\nleak_report = true\n");
    for i in 0..30 {
        app(&h, &format!("/app/fine?i={i}"));
        app(&h, &format!("/app/leaky?i={i}"));
    }
    let log = h.stderr();
    assert!(log.contains("route GET /app/leaky left"), "{log}");
    assert!(!log.contains("route GET /app/fine left"), "{log}");
    let m = get(&h.url("/_metrics")).text();
    let leaked = metric_sum(
        &m,
        "fephp_worker_growth_bytes",
        &["pool=\"app\"", "route=\"GET /app/leaky\""],
    );
    assert!(leaked > 1e6, "{m}");
    assert!(!m.contains("route=\"GET /app/fine\""), "{m}");
}

/// `watch` (development): a worker restarts by itself when a file it loaded
/// changes, without a reload.
#[test]
fn watch_restarts_a_worker_when_its_code_changes() {
    let h =
        host("worker = \"app/worker.php\"\nmin_runners = 1\nmax_runners = 1\nwatch = \"200ms\"\n");
    assert_eq!(app(&h, "/app/w")["version"], "v1");
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        app(&h, "/app/w")["count"],
        2,
        "nothing changed: the same worker"
    );
    std::fs::write(
        h.dir.path().join("www/app/lib.php"),
        "<?php const APP_VERSION = 'v3';",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while app(&h, "/app/w")["version"] != "v3" {
        assert!(
            Instant::now() < deadline,
            "the change was never picked up:\n{}",
            h.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A worker that crashes (an extension that aborts; a kill()-sent SIGSEGV would
/// only reach Rust's stack-overflow handler, which lets it pass) costs only the
/// request it ran: that client gets 502, the other worker goes on serving, and a new worker
/// boots in its place.
#[test]
fn a_crashing_worker_costs_only_its_own_request() {
    let h = host("worker = \"app/worker.php\"\nmin_runners = 2\nmax_runners = 2\n");
    let mut pids: std::collections::BTreeSet<String> = (0..10)
        .map(|_| app(&h, "/app/p")["pid"].to_string())
        .collect();
    // Both runners, also one the ten requests did not reach (a busy machine may
    // send them all to one): a pid outside this set is a new worker's.
    pids.extend(h.runners().iter().map(|p| p.to_string()));
    let slow = {
        let url = h.url("/app/slow?sleep=3000");
        std::thread::spawn(move || get(&url))
    };
    // The runner running the slow request is the busy one.
    std::thread::sleep(Duration::from_millis(500));
    let busy: Vec<i32> = h
        .runners()
        .into_iter()
        .filter(|pid| {
            // Its PHP thread sleeps in usleep().
            std::fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|tasks| {
                tasks.flatten().any(|t| {
                    std::fs::read_to_string(t.path().join("wchan"))
                        .is_ok_and(|w| w.contains("nanosleep"))
                })
            })
        })
        .collect();
    assert_eq!(
        busy.len(),
        1,
        "one runner sleeps in the slow request: {busy:?} of {:?}",
        h.runners()
    );
    // SAFETY: signals a runner process of this test's host.
    unsafe { libc::kill(busy[0], libc::SIGABRT) };
    for _ in 0..5 {
        assert_eq!(get(&h.url("/app/meanwhile")).status, 200);
    }
    let r = slow.join().unwrap();
    assert_eq!(r.status, 502, "{}", r.text());
    let deadline = Instant::now() + Duration::from_secs(10);
    let fresh = loop {
        let v = app(&h, "/app/after");
        if !pids.contains(&v["pid"].to_string()) {
            break v;
        }
        assert!(Instant::now() < deadline, "no new worker:\n{}", h.stderr());
    };
    assert_eq!(fresh["count"], 1, "a new worker booted");
    assert!(
        h.stderr().contains("was killed by signal 6"),
        "{}",
        h.stderr()
    );
}

/// More of what a request owns: $_REQUEST, php://input, the filter extension's
/// copy of the input, ignore_user_abort(); and more of what the application
/// keeps: globals and open resources.
#[test]
fn request_inputs_are_per_request_and_app_resources_are_kept() {
    let h = host(ONE);
    let raw = json(&curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: text/plain",
        "--data-binary",
        "raw body",
        &h.url("/app/in?x=1&r=get"),
    ]));
    assert_eq!(raw["input"], "raw body");
    assert_eq!(raw["filter_get"], "1");
    assert_eq!(raw["request"]["r"], "get");
    let next = app(&h, "/app/in2");
    assert_eq!(next["input"], "", "php://input is the request's own");
    assert_eq!(
        next["filter_get"],
        Value::Null,
        "filter_input() sees this request"
    );
    assert_eq!(
        next["request"],
        serde_json::json!([]),
        "$_REQUEST is rebuilt"
    );
    assert_eq!(
        next["global"],
        format!("boot-{}", next["pid"]),
        "globals are kept"
    );
    assert_eq!(
        next["kept_resource"], 2,
        "an open stream is kept (written once per request)"
    );

    let was = json(&get(&h.url("/app/a?abort=1")));
    assert_eq!(was["was"], 1, "ignore_user_abort is on in a worker");
    let after = app(&h, "/app/after-abort");
    assert_eq!(
        after["ignore_user_abort"], 1,
        "ignore_user_abort(false) lasted one request"
    );
}

/// max_execution_time fires in every request even though the script lifted it
/// for itself while booting; the worker is replaced (a timeout is fatal).
#[test]
fn the_time_limit_is_armed_for_every_request() {
    let config = HostConfig::embedded_site("\"session.save_path\" = \"{dir}/sessions\"")
        .sections(
            r#"
[[backend.routing_rules]]
pattern = { type = "prefix", value = "/app" }
backend = "embedded"
pool = "app"
priority = 10
"#,
        )
        .php("front_controller = \"app/worker.php\"")
        .toml()
        + "\n[php.pools.app]\n"
        + ONE
        + "[php.pools.app.ini]\nmax_execution_time = 1\n";
    let h = Host::start(&config, site);
    assert_eq!(app(&h, "/app/t")["time_limit"], "1");
    let t = Instant::now();
    let r = get(&h.url("/app/spin?spin=1"));
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(
        app(&h, "/app/t2")["count"],
        1,
        "a new worker after the timeout"
    );
}

/// request_deadline stops a worker stuck past it (504, a new worker), and
/// memory_budget replaces a worker that grows past it.
#[test]
fn the_deadline_and_the_memory_budget_apply_to_workers() {
    let h = host("worker = \"app/worker.php\"\nmin_runners = 1\nmax_runners = 1\nrequest_deadline = \"1s\"\nmemory_budget = \"24M\"\n");
    let first = app(&h, "/app/d");
    let r = get(&h.url("/app/stuck?sleep=5000"));
    assert_eq!(r.status, 504);
    let fresh = app(&h, "/app/d2");
    assert_ne!(fresh["pid"], first["pid"], "the stuck worker was replaced");
    assert_eq!(fresh["count"], 1);

    // 100 KB kept per request: past 24 MiB of its own memory the worker goes.
    let pid = fresh["pid"].clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = app(&h, "/app/leaky");
        if v["pid"] != pid {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the memory budget never replaced the worker:\n{}",
            h.stderr()
        );
    }
    let m = get(&h.url("/_metrics")).text();
    assert_eq!(
        metric_sum(
            &m,
            "fephp_php_runner_exits_total",
            &["pool=\"app\"", "reason=\"memory\""]
        ),
        1.0,
        "{m}"
    );
}
