//! Configuration reload: fe-php-host on SIGHUP (workers rolled over, nothing lost
//! under load), refusals that keep the running configuration, and
//! `fephp_engine_reload` through the C ABI in this process.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Two configurations that route `/x.txt` differently: to the static file
/// ("static") or to PHP's front controller ("php").
const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:{port}"
workers = 2
access_log = "off"

[backend]
default_backend = "static"

[backend.static_files]
enable = true
root = "{dir}/www"

[[backend.routing_rules]]
pattern = { type = "exact", value = "/x.txt" }
backend = "ROUTE"

[[backend.routing_rules]]
pattern = { type = "suffix", value = ".php" }
backend = "embedded"

[php]
document_root = "{dir}/php"
front_controller = "front.php"
"#;

fn site(dir: &Path) {
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::create_dir_all(dir.join("php")).unwrap();
    std::fs::write(dir.join("www/x.txt"), "static\n").unwrap();
    std::fs::write(dir.join("php/front.php"), "<?php echo \"php\\n\";").unwrap();
}

fn config(route: &str) -> String {
    CONFIG.replace("ROUTE", route)
}

/// Rewrites the host's config file (placeholders filled) and sends SIGHUP.
fn reload_with(h: &Host, text: &str) {
    let text = text
        .replace("{port}", &h.port.to_string())
        .replace("{dir}", h.dir.path().to_str().unwrap());
    std::fs::write(&h.config, text).unwrap();
    h.signal(libc::SIGHUP);
}

fn body(h: &Host, path: &str) -> String {
    let r = get(&h.url(path));
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

/// Polls until `path` answers `want` on fresh connections three times in a row.
fn wait_for_body(h: &Host, path: &str, want: &str) -> Duration {
    let start = Instant::now();
    let mut streak = 0;
    while streak < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{path} never answered {want:?}; stderr:\n{}",
            h.stderr()
        );
        if body(h, path) == want {
            streak += 1;
        } else {
            streak = 0;
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    start.elapsed()
}

fn wait_for_log(h: &Host, needle: &str, times: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.stderr().matches(needle).count() < times {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} (x{times}) in stderr:\n{}",
            h.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn workers_settled(h: &Host, n: usize) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let w = h.workers();
        if w.len() == n {
            return w;
        }
        assert!(Instant::now() < deadline, "workers: {w:?}, want {n}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn twenty_reloads_under_load_lose_no_request() {
    let h = Host::start(&config("static"), site);
    assert_eq!(body(&h, "/x.txt"), "static\n");
    let url = h.url("/x.txt");
    let wrk = std::thread::spawn(move || {
        let out = Command::new("wrk")
            // 20 reloads take 3 s unhindered; the rest is room for a busy
            // machine (the other tests of this file run at the same time).
            .args(["-t2", "-c16", "-d8s", &url])
            .output()
            .expect("wrk is installed");
        (out, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let (route, want) = if i % 2 == 0 {
            ("embedded", "php\n")
        } else {
            ("static", "static\n")
        };
        reload_with(&h, &config(route));
        slowest = slowest.max(wait_for_body(&h, "/x.txt", want));
        // Spread over the run: one reload every 150 ms.
        let next = Duration::from_millis(150 * (i + 1));
        std::thread::sleep(next.saturating_sub(started.elapsed()));
    }
    let reloading = started.elapsed();
    let reloaded = Instant::now();
    let (out, wrk_ended) = wrk.join().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(
        reloaded < wrk_ended,
        "20 reloads took {reloading:?}, longer than the wrk run"
    );
    assert!(
        !report.contains("Non-2xx") && !report.contains("Socket errors"),
        "failed requests during reloads:\n{report}\nstderr:\n{}",
        h.stderr()
    );
    let requests: u64 = report
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .map(|(n, _)| n.parse().unwrap())
        .expect("wrk's summary");
    assert!(requests > 1000, "{report}");
    eprintln!("20 reloads in {reloading:?} (slowest until visible: {slowest:?}); wrk: {requests} requests, none failed");
    assert_eq!(h.stderr().matches("configuration reloaded").count(), 20);
    // The old workers have all drained and gone.
    workers_settled(&h, 2);
}

/// A change of `[php.ini]` or `[php] libphp_path` cannot be applied by a reload
/// (PHP starts once per process): the master re-executes itself in place — same
/// pid, same listening sockets — and drains the old workers, while wrk runs.
#[test]
fn php_runtime_changes_restart_the_master_in_place_under_load() {
    let php = |libphp: &str, memory: &str| {
        format!(
            "{}libphp_path = \"{libphp}\"\n[php.ini]\nmemory_limit = \"{memory}\"\n",
            config("embedded")
        )
    };
    let h = Host::start(&php("/usr/lib/libphp.so", "64M"), |dir| {
        site(dir);
        std::fs::write(
            dir.join("php/ini.php"),
            "<?php echo ini_get('memory_limit');",
        )
        .unwrap();
    });
    let master = h.child.id();
    assert_eq!(body(&h, "/ini.php"), "64M");
    let url = h.url("/x.txt");
    let wrk = std::thread::spawn(move || {
        Command::new("wrk")
            .args(["-t1", "-c8", "-d5s", &url])
            .output()
            .expect("wrk is installed")
    });
    std::thread::sleep(Duration::from_millis(300));
    let steps = [
        ("/usr/lib/libphp.so", "96M"),
        ("/usr/lib/libphp8.2.so", "96M"),
        ("/usr/lib/libphp8.2.so", "128M"),
        ("/usr/lib/libphp.so", "64M"),
    ];
    for (i, (libphp, memory)) in steps.iter().enumerate() {
        reload_with(&h, &php(libphp, memory));
        wait_for_body(&h, "/ini.php", memory);
        wait_for_log(&h, "restarted with a new PHP runtime", i + 1);
    }
    let out = wrk.join().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        !report.contains("Non-2xx") && !report.contains("Socket errors"),
        "failed requests during restarts:\n{report}\nstderr:\n{}",
        h.stderr()
    );
    assert!(report.contains("requests in"), "{report}");
    // Same master process, two workers left once the old ones drained.
    assert_eq!(h.child.id(), master);
    assert!(unsafe { libc::kill(master as i32, 0) } == 0);
    workers_settled(&h, 2);
    // The handed-over variables never reach PHP.
    std::fs::write(
        h.dir.path().join("php/env.php"),
        "<?php echo getenv('FEPHP_INHERITED_LISTENERS') === false ? 'clean' : 'leaked';",
    )
    .unwrap();
    wait_for_body(&h, "/env.php", "clean");
}

#[test]
fn refused_reloads_keep_the_running_configuration() {
    let h = Host::start(&config("static"), site);
    let before = workers_settled(&h, 2);

    // Invalid: refused with the validation message, nothing restarted.
    reload_with(
        &h,
        &config("static").replace("default_backend = \"static\"", "default_backend = \"xxx\""),
    );
    wait_for_log(&h, "reload refused", 1);
    let err = h.stderr();
    assert!(
        err.contains("Default backend 'xxx' is not registered"),
        "{err}"
    );
    assert!(err.contains("the running configuration keeps serving"));
    assert_eq!(body(&h, "/x.txt"), "static\n");

    // A TOML error names the line.
    reload_with(
        &h,
        &format!("{}\n[server]\nworkers = 2\n", config("static")),
    );
    wait_for_log(&h, "reload refused", 2);

    // A PHP runtime that cannot load: the restart it would need is checked in a
    // child process first, fails there, and nothing changes.
    reload_with(
        &h,
        &format!("{}libphp_path = \"/etc/hostname\"\n", config("embedded")),
    );
    wait_for_log(&h, "reload refused", 3);
    assert!(
        h.stderr().contains("cannot load libphp from /etc/hostname"),
        "{}",
        h.stderr()
    );
    assert_eq!(body(&h, "/x.txt"), "static\n");

    let mut after = workers_settled(&h, 2);
    after.sort();
    let mut before = before;
    before.sort();
    assert_eq!(before, after, "a refused reload must not restart workers");

    // A valid one with another worker count: three new workers, old ones gone.
    reload_with(
        &h,
        &config("embedded").replace("workers = 2", "workers = 3"),
    );
    wait_for_body(&h, "/x.txt", "php\n");
    let three = workers_settled(&h, 3);
    assert!(three.iter().all(|p| !before.contains(p)), "{three:?}");
}

/// The C ABI in this process: a reload switches routing for new requests, a
/// request in flight finishes on the old configuration, a refused one changes
/// nothing.
#[test]
fn engine_reload_through_the_c_abi() {
    use fe_php::ffi::*;
    use std::ffi::{c_char, c_void, CString};
    use std::ptr;

    let dir = tempfile::tempdir().unwrap();
    site(dir.path());
    std::fs::write(
        dir.path().join("php/slow.php"),
        "<?php usleep(400000); echo 'slow old';",
    )
    .unwrap();
    // PHP in this process (no runner pool): it moves the process into its
    // script's directory, which a relative root must survive.
    let toml = |route: &str| {
        CString::new(
            config(route)
                .replace("{dir}", dir.path().to_str().unwrap())
                .replace("{port}", "1")
                + "\n[php.pool]\nenabled = false\n",
        )
        .unwrap()
    };
    let last_error = || {
        let mut buf = vec![0 as c_char; 4096];
        let mut len = 0;
        unsafe { fephp_last_error(buf.as_mut_ptr(), buf.len(), &mut len) };
        String::from_utf8(buf[..len].iter().map(|&c| c as u8).collect()).unwrap()
    };
    let s = |t: &'static str| fephp_str {
        ptr: t.as_ptr() as *const c_char,
        len: t.len(),
    };
    let request = |target: &'static str| fephp_request {
        method: s("GET"),
        target: s(target),
        protocol: s("HTTP/1.1"),
        headers: ptr::null(),
        header_count: 0,
        body: ptr::null(),
        body_len: 0,
        body_read: None,
        body_read_ctx: ptr::null_mut(),
        remote_addr: s("127.0.0.1"),
        remote_port: 1,
        local_addr: s("127.0.0.1"),
        local_port: 2,
        tls: false,
    };
    let read_all = |resp: *mut fephp_response| unsafe {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let mut n = 0;
            assert_eq!(
                fephp_response_body_read(resp, buf.as_mut_ptr(), buf.len(), &mut n),
                fephp_result::Ok
            );
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        fephp_response_free(resp);
        String::from_utf8(out).unwrap()
    };
    let get = |engine: *const fephp_engine, target: &'static str| unsafe {
        let mut resp = ptr::null_mut();
        let req = request(target);
        assert_eq!(
            fephp_handle_request(engine, &req, &mut resp),
            fephp_result::Ok
        );
        read_all(resp)
    };

    unsafe {
        let mut engine = ptr::null();
        let a = toml("static");
        assert_eq!(
            fephp_init(ptr::null(), a.as_ptr(), &mut engine),
            fephp_result::Ok,
            "{}",
            last_error()
        );
        assert_eq!(fephp_worker_start(engine), fephp_result::Ok);
        assert_eq!(get(engine, "/x.txt"), "static\n");
        let mut backend = fephp_backend::Internal;
        assert_eq!(
            fephp_route(engine, s("GET"), s("/x.txt"), &mut backend),
            fephp_result::Ok
        );
        assert_eq!(backend, fephp_backend::Static);

        // A PHP request in flight across the reload.
        unsafe extern "C" fn done(ud: *mut c_void, r: fephp_result, resp: *mut fephp_response) {
            assert_eq!(r, fephp_result::Ok);
            let tx = Box::from_raw(ud as *mut std::sync::mpsc::Sender<usize>);
            tx.send(resp as usize).unwrap();
        }
        let (tx, rx) = std::sync::mpsc::channel::<usize>();
        let slow = request("/slow.php");
        assert_eq!(
            fephp_handle_request_async(
                engine,
                &slow,
                Some(done),
                Box::into_raw(Box::new(tx)) as *mut c_void
            ),
            fephp_result::Ok
        );

        let b = toml("embedded");
        assert_eq!(
            fephp_engine_reload(engine, ptr::null(), b.as_ptr()),
            fephp_result::Ok,
            "{}",
            last_error()
        );
        assert_eq!(get(engine, "/x.txt"), "php\n");
        assert_eq!(
            fephp_route(engine, s("GET"), s("/x.txt"), &mut backend),
            fephp_result::Ok
        );
        assert_eq!(backend, fephp_backend::Embedded);
        let resp = rx.recv_timeout(Duration::from_secs(10)).unwrap() as *mut fephp_response;
        assert_eq!(fephp_response_status(resp), 200);
        assert_eq!(read_all(resp), "slow old");

        // Refused: invalid TOML, invalid config, a php.ini change, bad arguments;
        // nothing changes (checked below).
        let broken = CString::new("[backend\n").unwrap();
        assert_eq!(
            fephp_engine_reload(engine, ptr::null(), broken.as_ptr()),
            fephp_result::ConfigError
        );
        let invalid = CString::new(
            b.to_str()
                .unwrap()
                .replace("default_backend = \"static\"", "default_backend = \"nope\""),
        )
        .unwrap();
        assert_eq!(
            fephp_engine_reload(engine, ptr::null(), invalid.as_ptr()),
            fephp_result::ConfigError
        );
        assert!(
            last_error().starts_with("Default backend 'nope' is not registered"),
            "{}",
            last_error()
        );
        let ini = CString::new(format!(
            "{}\n[php.ini]\nmemory_limit = \"99M\"\n",
            b.to_str().unwrap()
        ))
        .unwrap();
        // A PHP runtime change cannot happen in this process: the host must restart.
        assert_eq!(
            fephp_engine_reload(engine, ptr::null(), ini.as_ptr()),
            fephp_result::RestartRequired
        );
        assert!(last_error().contains("needs a restart"), "{}", last_error());
        assert_eq!(
            fephp_engine_reload(engine, ptr::null(), ptr::null()),
            fephp_result::InvalidArgument
        );
        assert_eq!(
            fephp_engine_reload(ptr::null(), ptr::null(), b.as_ptr()),
            fephp_result::NullParameter
        );
        let missing = CString::new("/no/such/fe-php.toml").unwrap();
        assert_eq!(
            fephp_engine_reload(engine, missing.as_ptr(), ptr::null()),
            fephp_result::ConfigError
        );
        // Still the last good configuration.
        assert_eq!(get(engine, "/x.txt"), "php\n");

        // PHP has moved the process into its script's directory; a relative root
        // in a reloaded file still means what it meant at start.
        assert_ne!(
            std::env::current_dir().unwrap(),
            Path::new(env!("CARGO_MANIFEST_DIR"))
        );
        let relative = CString::new(
            b.to_str()
                .unwrap()
                .replace(&format!("{}/www", dir.path().display()), "examples/public"),
        )
        .unwrap();
        assert_eq!(
            fephp_engine_reload(engine, ptr::null(), relative.as_ptr()),
            fephp_result::Ok,
            "{}",
            last_error()
        );
        assert!(get(engine, "/css/site.css").contains("font-family"));

        // From a file, back to static; the metrics counted every outcome.
        let path = dir.path().join("a.toml");
        std::fs::write(&path, a.to_str().unwrap()).unwrap();
        let path = CString::new(path.to_str().unwrap()).unwrap();
        assert_eq!(
            fephp_engine_reload(engine, path.as_ptr(), ptr::null()),
            fephp_result::Ok
        );
        assert_eq!(get(engine, "/x.txt"), "static\n");
        let mut buf = vec![0 as c_char; 64 << 10];
        let mut len = 0;
        assert_eq!(
            fephp_metrics(engine, buf.as_mut_ptr(), buf.len(), &mut len),
            fephp_result::Ok
        );
        let text = String::from_utf8(buf[..len].iter().map(|&c| c as u8).collect()).unwrap();
        assert!(text.contains("\nfephp_config_reloads_total 3\n"), "{text}");
        assert!(
            text.contains("\nfephp_config_reload_failures_total 4\n"),
            "{text}"
        );
        fephp_engine_free(engine);
    }
}
