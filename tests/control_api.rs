//! The control API of fe-php-host (`[server.control]`) with real clients: curl
//! over the Unix socket and over TCP with a bearer token. What each GET shows,
//! changes applied under load without a failed request and written to the file,
//! refusals with `--check`'s messages that change nothing, concurrent changes,
//! who may connect, and restarting one PHP pool.

mod common;

use common::load::{Load, LoadSpec, Req};
use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// `[server.control]` on a Unix socket in the host's directory.
const UNIX: &str = "\n[server.control]\nsocket = \"{dir}/control.sock\"\n";

fn site(dir: &Path) {
    for (d, body) in [("www", "one\n"), ("www2", "two\n")] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
        std::fs::write(dir.join(d).join("a.txt"), body).unwrap();
    }
    std::fs::write(dir.join("www2/new.txt"), "new\n").unwrap();
}

fn static_host(control: &str) -> Host {
    let config = HostConfig::static_site()
        .workers(2)
        .access_log("off")
        .root("{dir}/www")
        .server(control)
        .toml();
    Host::start(&config, site)
}

fn socket(h: &Host) -> String {
    h.dir.path().join("control.sock").display().to_string()
}

/// curl over the control socket: `args` then the API path.
fn ctl(h: &Host, args: &[&str], path: &str) -> Reply {
    let sock = socket(h);
    let url = format!("http://localhost{path}");
    let mut all = vec!["--unix-socket", &sock];
    all.extend_from_slice(args);
    all.push(&url);
    curl(&all)
}

fn json(r: &Reply) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.text()))
}

fn file_table(h: &Host) -> toml::Table {
    std::fs::read_to_string(&h.config).unwrap().parse().unwrap()
}

fn body(h: &Host, path: &str) -> String {
    get(&h.url(path)).text()
}

/// Polls until `path` answers `want` (a reload's new workers take over).
fn wait_for_body(h: &Host, path: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while body(h, path) != want {
        assert!(
            Instant::now() < deadline,
            "{path} never answered {want:?}; stderr:\n{}",
            h.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn every_get_shows_what_runs() {
    let h = Host::start(
        &HostConfig::embedded_site("memory_limit = \"64M\"")
            .workers(2)
            .server(UNIX)
            .sections("\n[backend.proxy]\nupstreams = [\"http://127.0.0.1:9\", \"http://127.0.0.1:10\"]\n")
            .toml(),
        |dir| {
            std::fs::create_dir_all(dir.join("www")).unwrap();
            std::fs::write(dir.join("www/index.php"), "<?php echo 'php';").unwrap();
        },
    );
    // The configuration as TOML reads back to what the file says; as JSON too.
    let r = ctl(&h, &[], "/config");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/toml"));
    let shown: toml::Table = r.text().parse().expect("GET /config is TOML");
    assert_eq!(shown, file_table(&h));
    let as_json = json(&ctl(&h, &["-H", "Accept: application/json"], "/config"));
    assert_eq!(as_json, json(&ctl(&h, &[], "/config?format=json")));
    assert_eq!(as_json["server"]["workers"], 2);
    assert_eq!(as_json["php"]["ini"]["memory_limit"], "64M");
    let section = json(&ctl(&h, &[], "/config/backend/static_files?format=json"));
    assert_eq!(section["root"], format!("{}/www", h.dir.path().display()));
    assert_eq!(ctl(&h, &[], "/config/backend/nothing").status, 404);

    // Workers: the master's children, generation 0.
    let w = json(&ctl(&h, &[], "/workers"));
    let mut pids: Vec<i64> = w["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["pid"].as_i64().unwrap())
        .collect();
    pids.sort();
    let mut real: Vec<i64> = h.workers().into_iter().map(i64::from).collect();
    real.sort();
    assert_eq!(pids, real);
    assert_eq!(w["generation"], 0);
    assert_eq!(w["master_pid"], h.child.id());
    assert!(w["workers"][0]["uptime_seconds"].as_f64().unwrap() >= 0.0);

    // Pools: the default runner pool, its runners' pids.
    let p = json(&ctl(&h, &[], "/pools"));
    let pool = &p["pools"][0];
    assert_eq!(pool["name"], "default");
    assert_eq!(pool["worker"], false);
    let mut runner_pids: Vec<i64> = pool["pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_i64().unwrap())
        .collect();
    runner_pids.sort();
    let mut real: Vec<i64> = h.runners().into_iter().map(i64::from).collect();
    real.sort();
    assert_eq!(runner_pids, real);
    assert_eq!(pool["runners"].as_i64().unwrap(), runner_pids.len() as i64);
    assert!(
        pool["idle"].as_i64().unwrap() + pool["busy"].as_i64().unwrap()
            == pool["runners"].as_i64().unwrap()
    );

    // Upstreams: the proxy's, one list per kind.
    let u = json(&ctl(&h, &[], "/upstreams"));
    assert_eq!(u["proxy"][1]["url"], "http://127.0.0.1:10");
    // The drain route is reserved.
    assert_eq!(
        ctl(&h, &["-X", "POST"], "/upstreams/proxy/x/drain").status,
        501
    );
    assert_eq!(ctl(&h, &[], "/nothing").status, 404);
    assert_eq!(ctl(&h, &["-X", "DELETE"], "/workers").status, 405);
}

#[test]
fn a_whole_configuration_change_is_applied_under_load_and_written() {
    let h = static_host(UNIX);
    assert_eq!(body(&h, "/a.txt"), "one\n");
    assert_eq!(get(&h.url("/new.txt")).status, 404);
    let load = Load::start(LoadSpec::new(h.port, 4, vec![Req::get("/a.txt", 200)]));
    load.wait_ok(200, Duration::from_secs(10));
    // The new file: another root, with a comment that is kept as sent.
    let new = std::fs::read_to_string(&h.config)
        .unwrap()
        .replace("/www\"", "/www2\"")
        + "# changed through the control API\n";
    let old = std::fs::read_to_string(&h.config).unwrap();
    // Ten changes back and forth, the new file last.
    for i in 0..10 {
        let (text, want) = if i % 2 == 0 {
            (&old, "one\n")
        } else {
            (&new, "two\n")
        };
        let r = ctl(&h, &["-X", "PUT", "--data-binary", text], "/config");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(json(&r)["generation"], i + 1);
        wait_for_body(&h, "/a.txt", want);
    }
    wait_for_body(&h, "/new.txt", "new\n");
    load.wait_ok(200, Duration::from_secs(10));
    let report = load.stop();
    eprintln!(
        "10 x PUT /config under load: {} requests sent, {} failed",
        report.total(),
        report.failed.len()
    );
    assert!(
        report.failed.is_empty(),
        "failed: {:?}",
        &report.failed[..report.failed.len().min(5)]
    );
    assert!(report.total() > 400);
    assert_eq!(
        std::fs::read_to_string(&h.config).unwrap(),
        new,
        "the file is what was sent"
    );
    assert_eq!(body(&h, "/a.txt"), "two\n");
    let w = json(&ctl(&h, &[], "/workers"));
    assert_eq!(w["generation"], 10);
    assert!(w["workers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w["generation"] == 10));

    // The same as JSON: written as the TOML it amounts to.
    let mut doc = json(&ctl(&h, &[], "/config?format=json"));
    doc["backend"]["static_files"]["root"] = Value::from(format!("{}/www", h.dir.path().display()));
    let r = ctl(
        &h,
        &[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &doc.to_string(),
        ],
        "/config",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    wait_for_body(&h, "/a.txt", "one\n");
    let file = file_table(&h);
    assert_eq!(
        file["backend"]["static_files"]["root"].as_str(),
        doc["backend"]["static_files"]["root"].as_str()
    );
    // A later SIGHUP reads the file: it keeps the change.
    h.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(body(&h, "/a.txt"), "one\n");
}

#[test]
fn a_section_change_leaves_the_other_sections_as_they_are() {
    let h = static_host(UNIX);
    let before = file_table(&h);
    let root = format!("{}/www2", h.dir.path().display());
    let r = ctl(
        &h,
        &[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &format!("{{\"enable\": true, \"root\": \"{root}\"}}"),
        ],
        "/config/backend/static_files",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    wait_for_body(&h, "/new.txt", "new\n");
    let after = file_table(&h);
    assert_eq!(
        after["backend"]["static_files"]["root"].as_str(),
        Some(root.as_str())
    );
    for section in ["server", "php"] {
        assert_eq!(after[section], before[section], "[{section}] changed");
    }
    assert_eq!(
        after["backend"]["default_backend"],
        before["backend"]["default_backend"]
    );
    // One value, as TOML; and a key removed (its default applies).
    let r = ctl(
        &h,
        &["-X", "PUT", "--data-binary", "3"],
        "/config/server/workers",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json(&r)["workers"], 3);
    assert_eq!(file_table(&h)["server"]["workers"].as_integer(), Some(3));
    let r = ctl(&h, &["-X", "DELETE"], "/config/server/workers");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(file_table(&h)["server"].get("workers").is_none());
    assert_eq!(
        ctl(&h, &["-X", "DELETE"], "/config/server/workers").status,
        404
    );
    // The running configuration is the file's.
    let shown: toml::Table = ctl(&h, &[], "/config").text().parse().unwrap();
    assert_eq!(shown, file_table(&h));
}

/// What `fe-php-host --check` prints for `text` as the host's configuration file
/// (the messages, without its last "test failed" line).
fn check_messages(h: &Host, text: &str) -> String {
    let candidate = h.dir.path().join("candidate.toml");
    std::fs::write(&candidate, text).unwrap();
    let out = Command::new(HOST_BIN)
        .args(["--config", candidate.to_str().unwrap(), "--check"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr)
        .replace(candidate.to_str().unwrap(), h.config.to_str().unwrap());
    let mut lines: Vec<&str> = stderr.trim_end().lines().collect();
    assert!(lines.pop().unwrap().ends_with("test failed"));
    lines.join("\n").trim_end().to_owned()
}

#[test]
fn an_invalid_change_is_refused_with_the_check_messages_and_changes_nothing() {
    let h = static_host(UNIX);
    let file = std::fs::read(&h.config).unwrap();
    let running = ctl(&h, &[], "/config").text();
    let unknown = String::from_utf8(file.clone())
        .unwrap()
        .replace("[backend]\n", "[backend]\nno_such_key = 1\n");
    let bad_value = String::from_utf8(file.clone())
        .unwrap()
        .replace("workers = 2", "workers = 2\nmax_connections = 0");
    for text in [&unknown, &bad_value] {
        let r = ctl(&h, &["-X", "PUT", "--data-binary", text], "/config");
        assert_eq!(r.status, 422, "{}", r.text());
        assert_eq!(r.text().trim_end(), check_messages(&h, text));
    }
    assert!(check_messages(&h, &unknown).contains("unknown field `no_such_key`"));
    // A section change with a bad value: the same message as --check gives.
    let r = ctl(
        &h,
        &["-X", "PUT", "--data-binary", "0"],
        "/config/server/max_connections",
    );
    assert_eq!(r.status, 422);
    assert!(
        r.text()
            .starts_with("[server] max_connections = 0 is out of range"),
        "{}",
        r.text()
    );
    let r = ctl(
        &h,
        &[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "{\"enable\": \"yes\"}",
        ],
        "/config/backend/static_files",
    );
    assert_eq!(r.status, 422);
    assert!(
        r.text()
            .contains("invalid type: string \"yes\", expected a boolean"),
        "{}",
        r.text()
    );
    // Not even JSON: 400.
    let r = ctl(
        &h,
        &[
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "{",
        ],
        "/config",
    );
    assert_eq!(r.status, 400);
    // Nothing changed: the file, the running configuration, what is served.
    assert_eq!(std::fs::read(&h.config).unwrap(), file);
    assert_eq!(ctl(&h, &[], "/config").text(), running);
    assert_eq!(body(&h, "/a.txt"), "one\n");
    assert_eq!(json(&ctl(&h, &[], "/workers"))["generation"], 0);
    let leftovers: Vec<_> = std::fs::read_dir(h.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn concurrent_changes_are_applied_one_after_the_other() {
    let h = static_host(UNIX);
    for i in 0..6 {
        let d = h.dir.path().join(format!("w{i}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("a.txt"), format!("w{i}\n")).unwrap();
    }
    let sock = socket(&h);
    let dir = h.dir.path().to_owned();
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let (sock, dir) = (sock.clone(), dir.clone());
            std::thread::spawn(move || {
                let body = format!("{{\"enable\": true, \"root\": \"{}/w{i}\"}}", dir.display());
                curl(&[
                    "--unix-socket",
                    &sock,
                    "-X",
                    "PUT",
                    "-H",
                    "Content-Type: application/json",
                    "--data-binary",
                    &body,
                    "http://localhost/config/backend/static_files",
                ])
            })
        })
        .collect();
    let mut generations = Vec::new();
    for t in threads {
        let r = t.join().unwrap();
        assert!(
            r.status == 200 || r.status == 409,
            "{}: {}",
            r.status,
            r.text()
        );
        if r.status == 200 {
            generations.push(json(&r)["generation"].as_u64().unwrap());
        }
    }
    generations.sort();
    generations.dedup();
    assert_eq!(
        generations.len(),
        6,
        "each change got a generation of its own: {generations:?}"
    );
    // The file is whole and is what runs; what is served is its root.
    let file = file_table(&h);
    let shown: toml::Table = ctl(&h, &[], "/config").text().parse().unwrap();
    assert_eq!(shown, file);
    let root = file["backend"]["static_files"]["root"]
        .as_str()
        .unwrap()
        .to_owned();
    let want = format!("{}\n", root.rsplit('/').next().unwrap());
    wait_for_body(&h, "/a.txt", &want);
}

#[test]
fn tcp_needs_the_token_and_public_addresses_fail_the_check() {
    let port = free_port();
    let control = format!(
        "\n[server.control]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"control.token\"\n"
    );
    let token = "s3cret-token-0123456789abcdef";
    let config = HostConfig::static_site()
        .root("{dir}/www")
        .server(&control)
        .toml();
    let h = Host::start(&config, |dir| {
        site(dir);
        std::fs::write(dir.join("control.token"), format!("{token}\n")).unwrap();
    });
    let url = format!("http://127.0.0.1:{port}/workers");
    let r = curl(&[&url]);
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    let r = curl(&["-H", "Authorization: Bearer wrong-token-0123456789", &url]);
    assert_eq!(r.status, 403);
    let auth = format!("Authorization: Bearer {token}");
    let r = curl(&["-H", &auth, &url]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json(&r)["workers"].as_array().unwrap().len(), 1);
    // The token file is not in the configuration the API shows: only its name.
    let shown = curl(&["-H", &auth, &format!("http://127.0.0.1:{port}/config")]).text();
    assert!(
        !shown.contains(token) && shown.contains("control.token"),
        "{shown}"
    );

    // What --check says of an address others could reach, or TCP without a token.
    let check = |control: &str| {
        let path = h.dir.path().join("check.toml");
        std::fs::write(
            &path,
            HostConfig::static_site()
                .server(control)
                .toml()
                .replace("{port}", "1")
                .replace("{dir}", h.dir.path().to_str().unwrap()),
        )
        .unwrap();
        let out = Command::new(HOST_BIN)
            .args(["--config", path.to_str().unwrap(), "--check"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let public =
        check("\n[server.control]\nlisten = \"0.0.0.0:8081\"\ntoken_file = \"control.token\"\n");
    assert!(
        public.contains("[server.control] listen = \"0.0.0.0:8081\" is not a loopback address"),
        "{public}"
    );
    let tokenless = check("\n[server.control]\nlisten = \"127.0.0.1:8081\"\n");
    assert!(
        tokenless.contains("[server.control] listen needs token_file"),
        "{tokenless}"
    );
}

#[test]
fn the_unix_socket_is_for_its_owner_only() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    let h = static_host(UNIX);
    let meta = std::fs::metadata(socket(&h)).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), unsafe { libc::geteuid() });
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: the other-user half of this test needs runuser");
        return;
    }
    // The directory lets everyone through: only the socket's own mode stops them.
    std::fs::set_permissions(h.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("runuser")
        .args([
            "-u",
            "nobody",
            "--",
            "curl",
            "-s",
            "-S",
            "--unix-socket",
            &socket(&h),
            "http://localhost/workers",
        ])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "nobody got in: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Couldn't connect") || err.contains("Permission denied"),
        "{err}"
    );
    // Root (the owner) still can.
    assert_eq!(ctl(&h, &[], "/workers").status, 200);
}

const WORKER: &str = "<?php while (frankenphp_handle_request(function () { echo getmypid(); })) {}";

#[test]
fn restarting_one_pool_changes_its_runners_only() {
    let config = HostConfig::embedded_site("")
        .php("front_controller = \"w.php\"")
        .workers(2)
        .server(UNIX)
        .sections(
            r#"
[[backend.routing_rules]]
pattern = { type = "prefix", value = "/app" }
backend = "embedded"
pool = "app"
priority = 10

[[backend.routing_rules]]
pattern = { type = "prefix", value = "/adm" }
backend = "embedded"
pool = "adm"
priority = 10
"#,
        )
        .toml()
        + "\n[php.pools.app]\nworker = \"w.php\"\nmin_runners = 2\nmax_runners = 2\n"
        + "\n[php.pools.adm]\nworker = \"w.php\"\nmin_runners = 1\nmax_runners = 1\n";
    let h = Host::start(&config, |dir| {
        std::fs::create_dir_all(dir.join("www")).unwrap();
        std::fs::write(dir.join("www/w.php"), WORKER).unwrap();
    });
    let pids = |name: &str| -> Vec<i64> {
        let p = json(&ctl(&h, &[], "/pools"));
        let pool = p["pools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap();
        assert_eq!(pool["worker"], true);
        let mut v: Vec<i64> = pool["pids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_i64().unwrap())
            .collect();
        v.sort();
        v
    };
    // Both pools answer (their runners have booted).
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&h.url("/app/x")).status != 200
        || get(&h.url("/adm/x")).status != 200
        || pids("app").len() != 2
    {
        assert!(
            Instant::now() < deadline,
            "app: {}, adm: {}, pools: {}\n{}",
            get(&h.url("/app/x")).text(),
            get(&h.url("/adm/x")).text(),
            ctl(&h, &[], "/pools").text(),
            h.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (app, adm) = (pids("app"), pids("adm"));
    let load = Load::start(LoadSpec::new(
        h.port,
        4,
        vec![Req::get("/app/x", 200), Req::get("/adm/x", 200)],
    ));
    load.wait_ok(100, Duration::from_secs(10));
    let r = ctl(&h, &["-X", "POST"], "/pools/app/restart");
    assert_eq!(r.status, 200, "{}", r.text());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = pids("app");
        if now.len() == 2 && now.iter().all(|p| !app.contains(p)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "app's runners {app:?} are still {now:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    load.wait_ok(100, Duration::from_secs(10));
    let report = load.stop();
    eprintln!(
        "POST /pools/app/restart under load: {} requests sent, {} failed",
        report.total(),
        report.failed.len()
    );
    assert!(
        report.failed.is_empty(),
        "failed: {:?}",
        &report.failed[..report.failed.len().min(5)]
    );
    assert_eq!(pids("adm"), adm, "the other pool's runners stayed");
    // A pool that is not a worker pool (or does not exist) cannot be restarted.
    let r = ctl(&h, &["-X", "POST"], "/pools/default/restart");
    assert_eq!(r.status, 404);
    assert!(
        r.text().contains("there is no worker pool 'default'"),
        "{}",
        r.text()
    );
}

/// Control clients that stall (a head never finished, a flood of idle
/// connections) hold up neither the master's care of its workers nor the
/// next control client.
#[test]
fn stalled_control_clients_never_hold_up_the_master() {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    let h = static_host(UNIX);
    let before = h.workers();
    assert_eq!(before.len(), 2, "{}", h.stderr());
    // One client stops in the middle of its head; twenty more connect and say nothing.
    let mut half = UnixStream::connect(socket(&h)).unwrap();
    half.write_all(b"GET /workers HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let idle: Vec<UnixStream> = (0..20)
        .map(|_| UnixStream::connect(socket(&h)).unwrap())
        .collect();

    // A worker dies: the master replaces it as it would with no control client.
    let killed = before[0];
    unsafe { libc::kill(killed, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = h.workers();
        if now.len() == 2 && !now.contains(&killed) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the master did not replace worker {killed} while control clients stalled: {now:?}\n{}",
            h.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(body(&h, "/a.txt"), "one\n");

    // Those beyond the master's 16 clients wait in the backlog; once the stalled
    // ones go, a well-behaved client is answered at once.
    drop(idle);
    let r = ctl(&h, &["-m", "5"], "/workers");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        json(&r)["workers"].as_array().map(Vec::len),
        Some(2),
        "{}",
        r.text()
    );
    drop(half);
}

/// A php-fpm on TCP that answers `name` to /who.php (`env[FPM_NAME]`), with
/// children enough for every connection both workers may keep alive to it
/// (a kept-alive connection holds a child: one php-fpm takes the whole load
/// while the other is drained).
fn named_fpm(root: &Path, name: &str) -> common::peers::PhpFpm {
    common::peers::PhpFpm::builder(root, common::peers::FpmListen::Tcp)
        .max_children(20)
        .pool_line(&format!("env[FPM_NAME] = {name}"))
        .start()
}

/// fe-php-host with two workers, the control socket and `fpm_upstreams`.
fn fastcgi_host(root: &Path, upstreams: &[&str]) -> Host {
    let list: Vec<String> = upstreams
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
        .collect();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{{port}}"
workers = 2
access_log = "off"
{UNIX}
[backend]
default_backend = "fastcgi"

[backend.static_files]
enable = true
root = "{root}"

[php]
libphp_path = "/nonexistent/libphp.so"
fpm_upstreams = [{list}]
"#,
        root = root.display(),
        list = list.join(", "),
    );
    Host::start(&config, |_| {})
}

/// The `fastcgi` entry of `address` in GET /upstreams.
fn fastcgi_upstream(h: &Host, address: &str) -> Value {
    let u = json(&ctl(h, &[], "/upstreams"));
    u["fastcgi"]
        .as_array()
        .unwrap_or_else(|| panic!("no fastcgi list in {u}"))
        .iter()
        .find(|u| u["address"] == address)
        .cloned()
        .unwrap_or_else(|| panic!("{address} missing in {u}"))
}

/// `total` requests of /who.php on connections spread over both workers, each
/// expected to answer `want` (another answer counts as failed): the workers'
/// pids that served them.
fn all_answer(h: &Host, want: &str, total: u64) -> std::collections::BTreeSet<i32> {
    let mut spec = LoadSpec::new(
        h.port,
        4,
        vec![Req::get("/who.php", 200).body(format!("{want}\n").as_bytes())],
    );
    spec.probe = Some("/who.php".to_owned());
    spec.spread_over = Some(2);
    spec.total = Some(total);
    let report = Load::start(spec).join();
    assert!(
        report.failed.is_empty(),
        "{} of {total} did not answer {want}: {:?}",
        report.failed.len(),
        &report.failed[..report.failed.len().min(5)]
    );
    report.samples.iter().map(|s| s.pid).collect()
}

fn drain(h: &Host, address: &str, action: &str) -> Value {
    let r = ctl(
        h,
        &["-X", "POST"],
        &format!("/upstreams/fastcgi/default/{address}/{action}"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    json(&r)
}

#[test]
fn draining_a_fastcgi_upstream_under_load_moves_new_requests_to_the_other() {
    let www = tempfile::tempdir().unwrap();
    std::fs::write(
        www.path().join("who.php"),
        "<?php echo getenv('FPM_NAME'), \"\\n\";",
    )
    .unwrap();
    let a = named_fpm(www.path(), "a");
    let b = named_fpm(www.path(), "b");
    let (aa, ba) = (a.address().to_owned(), b.address().to_owned());
    let h = fastcgi_host(www.path(), &[&aa, &ba]);

    let u = fastcgi_upstream(&h, &aa);
    assert_eq!(
        (&u["pool"], &u["weight"], &u["up"], &u["drained"]),
        (&json!("default"), &json!(1), &json!(true), &json!(false)),
        "{u}"
    );
    let load = Load::start(LoadSpec::new(h.port, 4, vec![Req::get("/who.php", 200)]));
    load.wait_ok(100, Duration::from_secs(10));
    assert!(fastcgi_upstream(&h, &aa)["requests"].as_u64().unwrap() > 0);

    // Drained: every new request goes to b, in both workers.
    let d = drain(&h, &aa, "drain");
    assert_eq!(
        (&d["address"], &d["drained"]),
        (&json!(aa), &json!(true)),
        "{d}"
    );
    std::thread::sleep(Duration::from_millis(200));
    let before = fastcgi_upstream(&h, &aa)["requests"].as_u64().unwrap();
    let pids = all_answer(&h, "b", 300);
    assert_eq!(pids.len(), 2, "both workers served: {pids:?}");
    load.wait_ok(200, Duration::from_secs(10));
    let u = fastcgi_upstream(&h, &aa);
    assert_eq!(u["requests"].as_u64().unwrap(), before, "{u}");
    assert_eq!(u["drained"], true);
    let health: Value = serde_json::from_slice(&get(&h.url("/_health")).body).unwrap();
    let entry = health["backends"]["fastcgi"]["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["address"] == aa.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("{health}"));
    assert_eq!(entry["drained"], true, "{health}");
    let metrics = get(&h.url("/_metrics")).text();
    let drained = |addr: &str| {
        metric_sum(
            &metrics,
            "fephp_fastcgi_upstream_drained",
            &[&format!("upstream=\"{addr}\"")],
        )
    };
    assert_eq!((drained(&aa), drained(&ba)), (1.0, 0.0), "{metrics}");

    // The only upstream left undrained drained too: both serve (last resort).
    drain(&h, &ba, "drain");
    load.wait_ok(200, Duration::from_secs(10));
    let (ra, rb) = (
        fastcgi_upstream(&h, &aa)["requests"].as_u64().unwrap(),
        fastcgi_upstream(&h, &ba)["requests"].as_u64().unwrap(),
    );
    load.wait_ok(200, Duration::from_secs(10));
    assert!(fastcgi_upstream(&h, &aa)["requests"].as_u64().unwrap() > ra);
    assert!(fastcgi_upstream(&h, &ba)["requests"].as_u64().unwrap() > rb);
    assert!(
        h.stderr().contains("is drained but takes requests"),
        "{}",
        h.stderr()
    );

    // Undrained: both serve again.
    drain(&h, &ba, "undrain");
    let d = drain(&h, &aa, "undrain");
    assert_eq!(d["drained"], false, "{d}");
    let ra = fastcgi_upstream(&h, &aa)["requests"].as_u64().unwrap();
    let rb = fastcgi_upstream(&h, &ba)["requests"].as_u64().unwrap();
    load.wait_ok(200, Duration::from_secs(10));
    assert!(fastcgi_upstream(&h, &aa)["requests"].as_u64().unwrap() > ra);
    assert!(fastcgi_upstream(&h, &ba)["requests"].as_u64().unwrap() > rb);

    // Unknown names: 404 naming what exists. A proxy upstream: 501.
    let r = ctl(
        &h,
        &["-X", "POST"],
        "/upstreams/fastcgi/default/127.0.0.1:1/drain",
    );
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(
        r.text().contains(&aa) && r.text().contains(&ba),
        "{}",
        r.text()
    );
    let r = ctl(
        &h,
        &["-X", "POST"],
        &format!("/upstreams/fastcgi/legacy/{aa}/drain"),
    );
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("\"default\""), "{}", r.text());
    assert_eq!(
        ctl(&h, &["-X", "POST"], "/upstreams/proxy/x/drain").status,
        501
    );
    assert_eq!(
        ctl(&h, &[], &format!("/upstreams/fastcgi/default/{aa}/drain")).status,
        405
    );

    let report = load.stop();
    eprintln!(
        "drain/undrain under load: {} requests, {} failed",
        report.total(),
        report.failed.len()
    );
    assert!(
        report.failed.is_empty(),
        "failed: {:?}",
        &report.failed[..report.failed.len().min(5)]
    );
}

#[test]
fn a_drain_stays_over_a_reload_that_keeps_the_upstreams_and_goes_with_one_that_changes_them() {
    let www = tempfile::tempdir().unwrap();
    std::fs::write(
        www.path().join("who.php"),
        "<?php echo getenv('FPM_NAME'), \"\\n\";",
    )
    .unwrap();
    let a = named_fpm(www.path(), "a");
    let b = named_fpm(www.path(), "b");
    let (aa, ba) = (a.address().to_owned(), b.address().to_owned());
    let h = fastcgi_host(www.path(), &[&aa, &ba]);
    drain(&h, &aa, "drain");
    // A change elsewhere: the same upstreams, the drain stays.
    let r = ctl(&h, &["-X", "PUT", "-d", "3"], "/config/server/workers");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(fastcgi_upstream(&h, &aa)["drained"], true);
    all_answer(&h, "b", 100);
    // The list changes (b first): every moved upstream's drain is cleared.
    let r = ctl(
        &h,
        &[
            "-X",
            "PUT",
            "-d",
            &format!("[{{ address = \"{ba}\" }}, {{ address = \"{aa}\" }}]"),
        ],
        "/config/php/fpm_upstreams",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(fastcgi_upstream(&h, &aa)["drained"], false);
    assert_eq!(fastcgi_upstream(&h, &ba)["drained"], false);
}
