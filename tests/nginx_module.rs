//! The nginx module (`nginx-module/`) loaded into Debian's nginx with `load_module`:
//! embedded PHP, FastCGI and static routes through a real nginx on loopback,
//! request bodies (in memory and spooled to nginx's temp files), health, PHP
//! faults, clients that leave, slow PHP not delaying other responses, reload and
//! graceful shutdown.
//!
//! Builds nothing: `make nginx-module` builds the library and
//! `target/nginx-module/ngx_http_fephp_module.so` first.

mod common;

use common::peers::{FpmListen, PhpFpm};
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const NGINX: &str = "/usr/sbin/nginx";

fn module() -> PathBuf {
    let module =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/nginx-module/ngx_http_fephp_module.so");
    let library = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/debug/libfe_php.so");
    assert!(
        module.is_file() && library.is_file(),
        "{} or {} is missing: run `make nginx-module` first (it builds the library and the nginx module)",
        module.display(),
        library.display()
    );
    module
}

const TOML: &str = r#"
[backend]
default_backend = "embedded"
health_path = "{health}"

[backend.static_files]
enable = true
root = "{d}/www"
{rules}
[php]
libphp_path = "/usr/lib/libphp.so"
{fpm}

[php.ini]
upload_max_filesize = "16M"
# Above the 80 MiB body of the large-body tests (nginx's limit is the one tested).
post_max_size = "128M"
display_errors = false
log_errors = true
# Under nginx, PHP's messages reach no log unless error_log names a file.
error_log = "{d}/php_errors.log"
# Files written by the test are younger than OPcache's default 2 s protection.
"opcache.file_update_protection" = 0
"#;

const NGINX_CONF: &str = r#"
load_module {module};
daemon off;
master_process on;
worker_processes {workers};
{user}
pid {d}/nginx.pid;
error_log {d}/error.log info;

events {
    worker_connections 512;
}

http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    client_body_temp_path {d}/client_body;
    client_max_body_size 64m;
    # Bodies above this go to a temp file: the multipart test needs that path.
    client_body_buffer_size 16k;

    fephp_config {d}/fe-php.toml;

    server {
        listen 127.0.0.1:{port}{listen_extra};

        location / {
            fephp;
        }

        # A rewritten URI and a short engine timeout.
        location /short/ {
            fephp_timeout 1s;
            rewrite ^/short(/.*)$ $1 break;
            fephp;
        }

        # Request bodies: client_max_body_size per location, and the shapes
        # nginx gives a body (memory buffers, one buffer, a temp file only).
        location /small/ {
            client_max_body_size 1m;
            rewrite ^/small(/.*)$ $1 break;
            fephp;
        }

        location /big/ {
            client_max_body_size 128m;
            rewrite ^/big(/.*)$ $1 break;
            fephp;
        }

        location /single/ {
            client_body_in_single_buffer on;
            client_body_buffer_size 1m;
            rewrite ^/single(/.*)$ $1 break;
            fephp;
        }

        location /fileonly/ {
            client_body_in_file_only clean;
            rewrite ^/fileonly(/.*)$ $1 break;
            fephp;
        }

        # nginx's own static handler, next to the module.
        location /plain/ {
            alias {d}/www/;
        }
    }
}
"#;

const SITE: &[(&str, &str)] = &[
    ("hello.php", "<?php echo 'Hello, World!';"),
    // worker_mode_through_nginx: a worker script that counts its requests.
    ("app/worker.php", "<?php $n = 0; while (frankenphp_handle_request(function () use (&$n) { $n++; echo getmypid(), ' ', $n; })) {}"),
    ("info.php", "<?php header('Content-Type: application/json'); echo json_encode(['sapi' => PHP_SAPI, 'pid' => getmypid(), 'opcache' => opcache_get_status(false)['opcache_enabled'] ?? false, 'uri' => $_SERVER['REQUEST_URI'], 'script' => $_SERVER['SCRIPT_NAME'], 'https' => $_SERVER['HTTPS'] ?? null, 'remote' => $_SERVER['REMOTE_ADDR'], 'port' => $_SERVER['SERVER_PORT']]);"),
    ("slow.php", "<?php $s = (float) ($_GET['s'] ?? 2); usleep((int) ($s * 1000000)); echo \"slept $s\";"),
    ("fatal.php", "<?php echo 'before'; undefined_function_xyz();"),
    ("post.php", "<?php header('Content-Type: application/json'); echo json_encode(['post' => $_POST, 'files' => array_map(fn($f) => ['name' => $f['name'], 'size' => $f['size'], 'error' => $f['error'], 'md5' => $f['error'] === 0 ? md5_file($f['tmp_name']) : null], $_FILES), 'input' => strlen(file_get_contents('php://input'))]);"),
    ("raw.php", "<?php header('Content-Type: application/json'); $in = file_get_contents('php://input'); echo json_encode(['length' => strlen($in), 'md5' => md5($in)]);"),
    ("headers.php", "<?php setcookie('a', '1'); setcookie('b', 'two'); header('X-Custom: yes'); header('Content-Type: text/plain; charset=iso-8859-1'); echo 'headers';"),
    ("redirect.php", "<?php header('Location: /hello.php');"),
    ("big.php", "<?php for ($i = 0; $i < 40000; $i++) { echo str_pad((string) $i, 99, '.'), \"\\n\"; }"),
    ("flush.php", "<?php while (ob_get_level()) { ob_end_flush(); } echo str_repeat('a', 100), \"\\n\"; flush(); sleep(1); echo \"second\\n\";"),
    ("buffered.php", "<?php echo 'held'; flush(); sleep(1); echo ' back';"),
    ("abort.php", "<?php while (ob_get_level()) { ob_end_flush(); } ignore_user_abort(true); for ($i = 0; $i < 200; $i++) { echo str_repeat('x', 100), \"\\n\"; flush(); if (connection_aborted()) { file_put_contents(__DIR__ . '/aborted.txt', (string) $i); exit; } usleep(50000); } file_put_contents(__DIR__ . '/aborted.txt', 'never');"),
    ("compile.php", "<?php include __DIR__ . '/target.php'; echo getmypid();"),
    ("target.php", "<?php $compiled_once = true;"),
    ("check.php", "<?php echo json_encode(['pid' => getmypid(), 'cached' => opcache_is_script_cached(__DIR__ . '/target.php')]);"),
    ("fpm/info.php", "<?php header('Content-Type: application/json'); echo json_encode(['sapi' => PHP_SAPI, 'pid' => getmypid(), 'input' => strlen(file_get_contents('php://input'))]);"),
    ("stream.php", STREAM_PHP),
    ("fpm/stream.php", STREAM_PHP),
    ("style.css", "body { color: #333; }\n"),
];

/// Reads php://input 64 KiB at a time (never the whole body in PHP's memory),
/// after sleeping `s` seconds; reports length and md5, also into the file `out`.
const STREAM_PHP: &str = "<?php usleep((int) ((float) ($_GET['s'] ?? 0) * 1000000)); $h = hash_init('md5'); $n = 0; $in = fopen('php://input', 'rb'); while (!feof($in)) { $c = fread($in, 65536); if ($c === false || $c === '') { break; } $n += strlen($c); hash_update($h, $c); } $r = json_encode(['length' => $n, 'md5' => hash_final($h)]); if (isset($_GET['out'])) { file_put_contents(__DIR__ . '/' . basename($_GET['out']), $r); } header('Content-Type: application/json'); echo $r;";

/// What to start.
struct Opts {
    workers: usize,
    listen_extra: &'static str,
    fpm: Option<String>,
    /// An HTTP upstream for a `/up/` proxy rule.
    proxy: Option<String>,
    /// Route `/fpm/` to `fpm` from the start.
    fastcgi_rule: bool,
    /// Leave `[php.ini] error_log` unset: PHP then hands its messages to the
    /// SAPI, which logs them through the library.
    php_log_to_sapi: bool,
    /// Workers as `nobody` instead of root (the test dir is opened to them).
    unprivileged: bool,
    /// Appended to the fe-php TOML (more pools and rules).
    extra_toml: &'static str,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            workers: 1,
            listen_extra: "",
            fpm: None,
            proxy: None,
            fastcgi_rule: false,
            php_log_to_sapi: false,
            unprivileged: false,
            extra_toml: "",
        }
    }
}

/// A fe-php TOML for `dir`.
fn toml(dir: &Path, health: &str, fpm: Option<&str>, fastcgi_rule: bool) -> String {
    let rules = if fastcgi_rule {
        "\n[[backend.routing_rules]]\npattern = { type = \"prefix\", value = \"/fpm/\" }\nbackend = \"fastcgi\"\npriority = 10\n"
    } else {
        ""
    };
    TOML.replace("{health}", health)
        .replace("{rules}", rules)
        .replace(
            "{fpm}",
            &fpm.map(|a| format!("fpm_socket = \"{a}\""))
                .unwrap_or_default(),
        )
        .replace("{d}", dir.to_str().unwrap())
}

/// Writes the site, the fe-php TOML and nginx.conf into `dir`; returns the port.
fn write_setup(dir: &Path, opts: &Opts) -> u16 {
    for (name, body) in SITE {
        let path = dir.join("www").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    std::fs::create_dir_all(dir.join("client_body")).unwrap();
    let mut text = toml(dir, "/_health", opts.fpm.as_deref(), opts.fastcgi_rule);
    if opts.php_log_to_sapi {
        text = text
            .lines()
            .filter(|l| !l.starts_with("error_log"))
            .collect::<Vec<_>>()
            .join("\n");
    }
    if let Some(up) = &opts.proxy {
        let proxy = format!("\n[[backend.routing_rules]]\npattern = {{ type = \"prefix\", value = \"/up/\" }}\nbackend = \"proxy\"\n\n[backend.proxy]\nupstream = \"{up}\"\n");
        text = text.replacen("\n[php]\n", &format!("{proxy}\n[php]\n"), 1);
    }
    text.push_str(opts.extra_toml);
    std::fs::write(dir.join("fe-php.toml"), text).unwrap();
    let port = free_port();
    // Workers of a root master would drop to `nobody`, which cannot use the 0700
    // temp dir.
    let root = unsafe { libc::geteuid() } == 0;
    let user = if root && opts.unprivileged {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        "user nobody nogroup;"
    } else if root {
        "user root;"
    } else {
        ""
    };
    let conf = NGINX_CONF
        .replace("{module}", module().to_str().unwrap())
        .replace("{workers}", &opts.workers.to_string())
        .replace("{user}", user)
        .replace("{port}", &port.to_string())
        .replace("{listen_extra}", opts.listen_extra)
        .replace("{d}", dir.to_str().unwrap());
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    port
}

/// Runs `nginx` with this setup's prefix, configuration and startup log.
fn nginx_cmd(dir: &Path) -> Command {
    let mut cmd = Command::new(NGINX);
    cmd.arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdin(Stdio::null());
    cmd
}

/// A running nginx with the module, in its own process group; stopped (by its
/// own pid and group) when dropped.
struct ModNginx {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl ModNginx {
    fn start(opts: Opts) -> ModNginx {
        let dir = tempfile::Builder::new()
            .prefix("nginx-fephp.")
            .tempdir()
            .unwrap();
        let port = write_setup(dir.path(), &opts);
        let mut cmd = nginx_cmd(dir.path());
        cmd.stdout(std::fs::File::create(dir.path().join("stdout.log")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
            .process_group(0);
        let child = cmd.spawn().expect("nginx is installed");
        let n = ModNginx {
            child: Some(child),
            port,
            dir,
        };
        n.wait_ready();
        n
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() && !self.workers().is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("nginx did not start; log:\n{}", self.log());
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    fn master(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// nginx's worker processes (the master's children but fe-php's PHP pool
    /// manager).
    fn workers(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = children(self.master())
            .into_iter()
            .filter(|&p| comm(p) != "fe-php: pool")
            .collect();
        pids.sort();
        pids
    }

    /// The PHP runners: children of the pool manager the library forked from
    /// nginx's master in `fephp_init`.
    fn runners(&self) -> Vec<i32> {
        children(self.master())
            .into_iter()
            .filter(|&p| comm(p) == "fe-php: pool")
            .flat_map(children)
            .collect()
    }

    /// error.log and stderr.
    fn log(&self) -> String {
        let mut s = std::fs::read_to_string(self.dir().join("error.log")).unwrap_or_default();
        s.push_str(&std::fs::read_to_string(self.dir().join("stderr.log")).unwrap_or_default());
        s
    }

    /// `nginx -s SIGNAL` (the signaller process parses the configuration too).
    fn signal(&self, sig: &str) {
        let out = nginx_cmd(self.dir()).arg("-s").arg(sig).output().unwrap();
        assert!(
            out.status.success(),
            "nginx -s {sig}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Waits for the master to exit (after `nginx -s quit`).
    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// No crash, no alert, no leftover in the log.
    fn assert_clean_log(&self) {
        let log = self.log();
        for bad in [
            "exited on signal",
            "[alert]",
            "[crit]",
            "still in the engine at exit",
        ] {
            assert!(!log.contains(bad), "log contains {bad:?}:\n{log}");
        }
    }
}

impl Drop for ModNginx {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id() as i32;
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The leader is not reaped yet, so -pid still names our group only.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = child.wait();
    }
}

fn json(r: &Reply) -> serde_json::Value {
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", r.status, r.text()))
}

fn md5_hex(path: &Path) -> String {
    let out = Command::new("md5sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The peak resident set (VmHWM) of a process so far, in bytes.
fn peak_rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM in /proc/PID/status");
    kib * 1024
}

/// The one worker of `n` (the large-body tests run one).
fn only_worker(n: &ModNginx) -> i32 {
    let workers = n.workers();
    assert_eq!(workers.len(), 1, "{workers:?}");
    workers[0]
}

/// POSTs the file `path` as a raw body (the library is a debug build: a long
/// timeout for the large ones).
fn post_file(url: &str, path: &Path, extra: &[&str]) -> Reply {
    let at = format!("@{}", path.display());
    let mut args = vec![
        "--max-time",
        "180",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &at,
    ];
    args.extend_from_slice(extra);
    args.push(url);
    curl(&args)
}

/// Sends `head`, then as much of `body` as nginx takes, and returns the status
/// line of the answer (without waiting for nginx's lingering close).
fn raw_status(port: u16, head: &str, body: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    // nginx may answer and stop reading before the end: not an error here.
    let _ = s.write_all(body);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(2).any(|w| w == b"\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => got.extend_from_slice(&buf[..k]),
        }
    }
    String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

/// Descriptors of `pid` open on a file in the test's client_body directory
/// (nginx's request body temp files, and the module's duplicates of them).
fn body_files_open(n: &ModNginx, pid: i32) -> usize {
    let dir = n.dir().join("client_body");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(&dir))
        .count()
}

/// `nginx -t` on a setup whose fe-php TOML and nginx.conf were edited by `edit`.
fn config_test(edit: impl FnOnce(&Path)) -> (bool, String) {
    let dir = tempfile::Builder::new()
        .prefix("nginx-fephp-t.")
        .tempdir()
        .unwrap();
    write_setup(dir.path(), &Opts::default());
    edit(dir.path());
    let out = nginx_cmd(dir.path()).arg("-t").output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.push_str(&std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default());
    (out.status.success(), text)
}

#[test]
fn nginx_t_loads_the_module_and_reports_invalid_configurations() {
    let (ok, out) = config_test(|_| {});
    assert!(ok, "{out}");
    assert!(out.contains("test is successful"), "{out}");
    // The library's informational line reaches nginx's log.
    assert!(out.contains("[i] fpm_socket not configured."), "{out}");

    // An invalid fe-php configuration: nginx refuses it with the library's message.
    let (ok, out) = config_test(|d| {
        let path = d.join("fe-php.toml");
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "default_backend = \"embedded\"",
            "default_backend = \"xxx\"",
        );
        std::fs::write(path, text).unwrap();
    });
    assert!(!ok, "{out}");
    assert!(out.contains("invalid fe-php configuration"), "{out}");
    assert!(
        out.contains("Default backend 'xxx' is not registered"),
        "{out}"
    );

    // A TOML syntax error names the line.
    let (ok, out) = config_test(|d| std::fs::write(d.join("fe-php.toml"), "[backend\n").unwrap());
    assert!(!ok, "{out}");
    assert!(out.contains("invalid fe-php configuration"), "{out}");

    // A missing file.
    let (ok, out) = config_test(|d| std::fs::remove_file(d.join("fe-php.toml")).unwrap());
    assert!(!ok, "{out}");
    assert!(out.contains("fe-php.toml"), "{out}");

    // "fephp" without "fephp_config".
    let (ok, out) = config_test(|d| {
        let path = d.join("nginx.conf");
        let text = std::fs::read_to_string(&path).unwrap();
        let text: String = text
            .lines()
            .filter(|l| !l.contains("fephp_config"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(path, text).unwrap();
    });
    assert!(!ok, "{out}");
    assert!(out.contains("needs \"fephp_config"), "{out}");

    // "fephp maybe;".
    let (ok, out) = config_test(|d| {
        let path = d.join("nginx.conf");
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replacen("fephp;", "fephp maybe;", 1);
        std::fs::write(path, text).unwrap();
    });
    assert!(!ok, "{out}");
    assert!(out.contains("it must be \"on\" or \"off\""), "{out}");
}

#[test]
fn embedded_static_and_health_through_nginx() {
    let n = ModNginx::start(Opts::default());
    let workers = n.workers();

    // Embedded PHP runs in a runner of the library's pool, under nginx's master.
    let r = get(&n.url("/hello.php"));
    assert_eq!((r.status, r.text().as_str()), (200, "Hello, World!"));
    assert_eq!(r.header("content-type"), Some("text/html; charset=UTF-8"));
    assert_eq!(r.header("content-length"), Some("13"));
    let v = json(&get(&n.url("/info.php?x=1")));
    assert_eq!(v["sapi"], "fpm-fcgi");
    assert_eq!(v["opcache"], true);
    assert_eq!(v["uri"], "/info.php?x=1");
    assert_eq!(v["remote"], "127.0.0.1");
    assert_eq!(v["port"], n.port.to_string());
    assert!(v["https"].is_null());
    let pid = v["pid"].as_i64().unwrap() as i32;
    let runners = n.runners();
    assert!(
        runners.contains(&pid) && !workers.contains(&pid),
        "PHP ran in pid {pid}, not in a PHP runner {runners:?}"
    );

    // A rewritten URI reaches the engine as the current URI (escaped again).
    let v = json(&get(&n.url("/short/info.php?y=2")));
    assert_eq!(v["uri"], "/info.php?y=2");
    assert_eq!(v["script"], "/info.php");

    // PHP's headers: repeated Set-Cookie, a custom header, Content-Type with charset.
    let r = get(&n.url("/headers.php"));
    assert_eq!(r.status, 200);
    let cookies: Vec<&str> = r
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(cookies, ["a=1", "b=two"]);
    assert_eq!(r.header("x-custom"), Some("yes"));
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; charset=iso-8859-1")
    );
    // One Content-Length, from the body.
    assert_eq!(
        r.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .count(),
        1
    );

    // A relative Location stays relative (as nginx does for upstreams).
    let r = get(&n.url("/redirect.php"));
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("/hello.php"));

    // Static: the library's headers, the file's bytes (a file buffer: sendfile).
    let r = get(&n.url("/style.css"));
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "body { color: #333; }\n");
    assert_eq!(r.header("content-type"), Some("text/css"));
    assert_eq!(r.header("cache-control"), Some("public, max-age=3600"));
    assert_eq!(r.header("content-length"), Some("22"));
    let etag = r.header("etag").expect("ETag").to_owned();
    let last_modified = r.header("last-modified").expect("Last-Modified").to_owned();
    // Same bytes and validators' format as nginx's own static handler.
    let plain = get(&n.url("/plain/style.css"));
    assert_eq!(plain.body, r.body);
    assert_eq!(plain.header("last-modified"), Some(last_modified.as_str()));

    // Conditional and range requests (evaluated once, by the library).
    let r = curl(&[
        "-H",
        &format!("If-None-Match: {etag}"),
        &n.url("/style.css"),
    ]);
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    let r = curl(&[
        "-H",
        &format!("If-Modified-Since: {last_modified}"),
        &n.url("/style.css"),
    ]);
    assert_eq!(r.status, 304);
    let r = curl(&["-H", "Range: bytes=0-3", &n.url("/style.css")]);
    assert_eq!((r.status, r.text().as_str()), (206, "body"));
    assert_eq!(r.header("content-range"), Some("bytes 0-3/22"));
    let r = curl(&["-H", "Range: bytes=100-", &n.url("/style.css")]);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */22"));
    let r = curl(&["-I", &n.url("/style.css")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("22"));
    // PHP source is never served as a file, traversal is refused.
    let r = curl(&[&n.url("/%2e%2e/%2e%2e/etc/passwd")]);
    assert_eq!(r.status, 400);
    let r = get(&n.url("/missing.css"));
    assert_eq!(r.status, 404);

    // Health through nginx.
    let r = get(&n.url("/_health"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = json(&r);
    assert_eq!(v["status"], "healthy");
    assert_eq!(v["backends"]["embedded"]["healthy"], true);
    assert_eq!(v["backends"]["static"]["healthy"], true);

    // Keep-alive: several responses of every kind on one connection.
    let r = curl(&[
        &n.url("/hello.php"),
        &n.url("/style.css"),
        &n.url("/_health"),
        &n.url("/hello.php"),
    ]);
    assert_eq!(r.status, 200);

    n.assert_clean_log();
}

#[test]
fn php_fatal_error_is_500_and_the_worker_keeps_serving() {
    let n = ModNginx::start(Opts::default());
    let workers = n.workers();
    for _ in 0..3 {
        let r = get(&n.url("/fatal.php"));
        assert_eq!(r.status, 500, "{}", r.text());
        let r = get(&n.url("/hello.php"));
        assert_eq!((r.status, r.text().as_str()), (200, "Hello, World!"));
    }
    assert_eq!(n.workers(), workers, "a worker was replaced");
    let php_log = std::fs::read_to_string(n.dir().join("php_errors.log")).unwrap_or_default();
    assert!(
        php_log.contains("undefined_function_xyz"),
        "PHP's error is not in [php.ini] error_log:\n{php_log}"
    );
    n.assert_clean_log();
}

#[test]
fn http2_requests() {
    let n = ModNginx::start(Opts {
        listen_extra: " http2",
        ..Opts::default()
    });
    let h2 = |args: &[&str]| {
        let mut all = vec!["--http2-prior-knowledge"];
        all.extend_from_slice(args);
        curl(&all)
    };
    let r = h2(&[&n.url("/hello.php")]);
    assert_eq!((r.status, r.text().as_str()), (200, "Hello, World!"));
    let r = h2(&[&n.url("/style.css")]);
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "body { color: #333; }\n")
    );
    assert_eq!(r.header("content-type"), Some("text/css"));

    // A body spooled to a temp file, and a streamed response, over HTTP/2.
    let file = n.dir().join("h2.bin");
    let data: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let r = h2(&[
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", file.display()),
        &n.url("/raw.php"),
    ]);
    let v = json(&r);
    assert_eq!(v["length"], data.len());
    assert_eq!(v["md5"], md5_hex(&file));
    let r = h2(&[&n.url("/big.php")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 40000 * 100);
    let r = h2(&[&n.url("/fatal.php")]);
    assert_eq!(r.status, 500);
    n.assert_clean_log();
}

#[test]
fn request_bodies_in_memory_and_spooled_to_a_temp_file() {
    let n = ModNginx::start(Opts::default());

    // Small urlencoded body: in memory.
    let r = curl(&["-d", "a=1&b=two", &n.url("/post.php")]);
    let v = json(&r);
    assert_eq!(v["post"]["a"], "1");
    assert_eq!(v["post"]["b"], "two");

    // A 3 MiB multipart upload: above client_body_buffer_size, so nginx spools it
    // to a temp file and the module reads it back.
    let file = n.dir().join("upload.bin");
    let data: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&file, &data).unwrap();
    let r = curl(&[
        "-F",
        &format!("f=@{};type=application/octet-stream", file.display()),
        "-F",
        "field=value",
        &n.url("/post.php"),
    ]);
    let v = json(&r);
    assert_eq!(v["post"]["field"], "value");
    assert_eq!(v["files"]["f"]["name"], "upload.bin");
    assert_eq!(v["files"]["f"]["error"], 0, "{v}");
    assert_eq!(v["files"]["f"]["size"], data.len());
    assert_eq!(v["files"]["f"]["md5"], md5_hex(&file));
    assert!(
        n.log()
            .contains("a client request body is buffered to a temporary file"),
        "the upload was not spooled to a file; log:\n{}",
        n.log()
    );

    // A raw chunked body (no Content-Length from the client).
    let r = curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", file.display()),
        &n.url("/raw.php"),
    ]);
    let v = json(&r);
    assert_eq!(v["length"], data.len());
    assert_eq!(v["md5"], md5_hex(&file));

    // Every shape nginx gives a body: in the header buffer and a body buffer
    // (`/`), in one buffer (`/single/`), only in a temp file (`/fileonly/`),
    // and past client_body_buffer_size in a temp file; with a length and chunked.
    for size in [0usize, 1, 1000, 5000, 20_000, 100_000, 1 << 20] {
        let body = n.dir().join(format!("body-{size}.bin"));
        std::fs::write(&body, common::diff::pattern(size, size as u32)).unwrap();
        let md5 = md5_hex(&body);
        for prefix in ["", "/single", "/fileonly"] {
            for chunked in [false, true] {
                let te: &[&str] = if chunked {
                    &["-H", "Transfer-Encoding: chunked"]
                } else {
                    &[]
                };
                let r = post_file(&n.url(&format!("{prefix}/stream.php")), &body, te);
                let v = json(&r);
                assert_eq!(
                    (v["length"].as_u64(), v["md5"].as_str()),
                    (Some(size as u64), Some(md5.as_str())),
                    "{size} bytes through {prefix}/ (chunked: {chunked})"
                );
            }
        }
    }
    // Nothing of them stays open in the worker.
    for pid in n.workers() {
        assert_eq!(body_files_open(&n, pid), 0);
    }

    n.assert_clean_log();
}

/// nginx's `client_max_body_size` is the limit (the module had a 256 MiB cap of
/// its own): 413 for an announced length and for a chunked body past it, per
/// location, and what fits passes.
#[test]
fn client_max_body_size_is_the_request_body_limit() {
    let n = ModNginx::start(Opts::default());
    let workers = n.workers();

    // 64m in the http block: an announced 100 MiB is refused from the head.
    let status = raw_status(
        n.port,
        "POST /stream.php HTTP/1.1\r\nHost: localhost\r\nContent-Length: 104857600\r\n\r\n",
        b"",
    );
    assert!(status.contains(" 413 "), "{status}");

    // 1m in /small/: an announced 2 MiB, and 2 MiB chunked (counted as it comes).
    let two = common::diff::pattern(2 << 20, 3);
    let head = format!(
        "POST /small/stream.php HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        two.len()
    );
    let status = raw_status(n.port, &head, &two);
    assert!(status.contains(" 413 "), "{status}");
    let mut chunked = format!("{:x}\r\n", two.len()).into_bytes();
    chunked.extend_from_slice(&two);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let status = raw_status(
        n.port,
        "POST /small/stream.php HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n",
        &chunked,
    );
    assert!(status.contains(" 413 "), "{status}");
    let log = n.log();
    assert!(
        log.contains("client intended to send too large body")
            && log.contains("client intended to send too large chunked body"),
        "{log}"
    );

    // Just under the limit passes, whole.
    let file = n.dir().join("fits.bin");
    std::fs::write(&file, &two[..1000 * 1024]).unwrap();
    let v = json(&post_file(&n.url("/small/stream.php"), &file, &[]));
    assert_eq!(v["length"], 1000 * 1024);
    assert_eq!(v["md5"], md5_hex(&file));

    assert_eq!(get(&n.url("/hello.php")).status, 200);
    assert_eq!(n.workers(), workers, "a worker was replaced");
    n.assert_clean_log();
}

/// The size of the large bodies, and how much the worker may grow meanwhile.
const LARGE_BODY: usize = 80 << 20;
const LARGE_BODY_GROWTH: u64 = 32 << 20;

/// Sends a warm-up body, then an 80 MiB one through `url`; checks that both
/// reach PHP whole and that the worker's peak RSS grows by far less than the
/// body: the body stays in nginx's temp file on its way to PHP.
fn large_body_stays_on_disk(n: &ModNginx, url: &str) {
    let worker = only_worker(n);
    let warm = n.dir().join("warm.bin");
    std::fs::write(&warm, common::diff::pattern(4 << 20, 1)).unwrap();
    let v = json(&post_file(url, &warm, &[]));
    assert_eq!(v["md5"], md5_hex(&warm));

    let file = n.dir().join("large.bin");
    std::fs::write(&file, common::diff::pattern(LARGE_BODY, 2)).unwrap();
    let before = peak_rss(worker);
    let v = json(&post_file(url, &file, &[]));
    let after = peak_rss(worker);
    assert_eq!(v["length"], LARGE_BODY);
    assert_eq!(v["md5"], md5_hex(&file));
    eprintln!(
        "{url}: worker peak RSS {} -> {} MiB for a {} MiB body",
        before >> 20,
        after >> 20,
        LARGE_BODY >> 20
    );
    assert!(
        after - before < LARGE_BODY_GROWTH,
        "the worker's peak RSS grew by {} MiB ({} -> {} MiB) for a {} MiB body",
        (after - before) >> 20,
        before >> 20,
        after >> 20,
        LARGE_BODY >> 20
    );
    assert_eq!(only_worker(n), worker, "the worker was replaced");
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn large_bodies_reach_embedded_php_from_nginx_temp_file() {
    let n = ModNginx::start(Opts::default());
    large_body_stays_on_disk(&n, &n.url("/big/stream.php"));
    assert_eq!(body_files_open(&n, only_worker(&n)), 0);
    n.assert_clean_log();
}

/// A client sends its body and leaves while PHP sleeps; nginx then closes and
/// deletes its temp file (`client_body_in_file_only clean`), and PHP still
/// reads the whole body, from the module's own descriptor, which is closed
/// with the request's job. PUT, because PHP reads a POST body of any type at
/// request startup, before the script runs; a PUT body only when the script
/// reads php://input.
fn client_leaves_before_php_reads_its_body(n: &ModNginx, path: &str, marker: &Path) {
    let worker = only_worker(n);
    let data = common::diff::pattern(8 << 20, 9);
    let spool = n.dir().join("client_body");
    let mut s = TcpStream::connect(("127.0.0.1", n.port)).unwrap();
    s.write_all(
        format!(
            "PUT {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            data.len()
        )
        .as_bytes(),
    )
    .unwrap();
    s.write_all(&data).unwrap();
    let spooled = || {
        std::fs::read_dir(&spool)
            .unwrap()
            .filter_map(|e| e.ok()?.metadata().ok())
            .any(|m| m.len() == data.len() as u64)
    };
    wait_for(
        "nginx to spool the whole body",
        Duration::from_secs(10),
        spooled,
    );
    std::thread::sleep(Duration::from_millis(200));
    drop(s);

    wait_for(
        "nginx to delete its temp file",
        Duration::from_secs(10),
        || std::fs::read_dir(&spool).unwrap().next().is_none(),
    );
    assert!(
        !marker.exists(),
        "PHP read the body before the client left: make it sleep longer"
    );
    wait_for("PHP to read the body", Duration::from_secs(20), || {
        std::fs::read_to_string(marker).is_ok_and(|s| s.ends_with('}'))
    });
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(marker).unwrap()).unwrap();
    assert_eq!(v["length"], data.len());
    assert_eq!(v["md5"], common::diff::md5_hex(&data));
    wait_for(
        "the late response to be discarded",
        Duration::from_secs(10),
        || n.log().contains("discarded a response"),
    );
    assert_eq!(body_files_open(n, worker), 0, "a body file is left open");
    assert_eq!(get(&n.url("/hello.php")).status, 200);
    assert_eq!(only_worker(n), worker, "the worker was replaced");
}

#[test]
fn a_client_that_leaves_while_php_has_yet_to_read_its_body() {
    let n = ModNginx::start(Opts::default());
    client_leaves_before_php_reads_its_body(
        &n,
        "/fileonly/stream.php?s=2&out=left.json",
        &n.dir().join("www/left.json"),
    );
    assert!(n.log().contains("client prematurely closed connection"));

    // Nothing is left in the engine when the worker exits.
    let mut n = n;
    n.signal("quit");
    assert!(n.wait_exit(Duration::from_secs(10)).success());
    n.assert_clean_log();
}

#[test]
fn slow_php_does_not_delay_static_responses() {
    let n = ModNginx::start(Opts::default());
    assert_eq!(
        n.workers().len(),
        1,
        "one worker: the slow request shares it"
    );
    // Warm up (PHP thread started, first compilation done).
    assert_eq!(get(&n.url("/hello.php")).status, 200);

    let slow_url = n.url("/slow.php?s=2");
    let started = Instant::now();
    let slow = std::thread::spawn(move || {
        let r = get(&slow_url);
        (r, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));

    for path in ["/style.css", "/_health", "/style.css", "/_health"] {
        let t = Instant::now();
        let r = get(&n.url(path));
        let took = t.elapsed();
        assert_eq!(r.status, 200, "{path}");
        assert!(
            took < Duration::from_millis(500),
            "{path} took {took:?} while PHP slept in the same worker"
        );
    }
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "the fast requests were not answered while PHP slept"
    );

    let (r, took) = slow.join().unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "slept 2"));
    assert!(took >= Duration::from_millis(1900), "{took:?}");
    n.assert_clean_log();
}

#[test]
fn streamed_php_responses() {
    let n = ModNginx::start(Opts::default());

    // 4 MB of output: streamed by the engine (over 1 MiB), read by a client slower
    // than PHP (backpressure through the module's buffers).
    let out = Command::new("curl")
        .args(["-s", "-S", "--limit-rate", "8M", "-o", "-"])
        .arg(n.url("/big.php"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut expected = Vec::new();
    for i in 0..40000 {
        expected.extend_from_slice(format!("{i:.<99}\n").as_bytes());
    }
    assert_eq!(out.stdout.len(), expected.len());
    assert!(out.stdout == expected, "streamed body differs");

    // flush() (with PHP's output buffering ended) brings the bytes to the client
    // before the script ends.
    let t = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", n.port)).unwrap();
    s.write_all(b"GET /flush.php HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(100).any(|w| w.iter().all(|&b| b == b'a')) {
        let k = s.read(&mut buf).unwrap();
        assert!(
            k > 0,
            "connection closed early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..k]);
    }
    let first = t.elapsed();
    assert!(
        first < Duration::from_millis(800),
        "flushed bytes after {first:?}"
    );
    s.read_to_end(&mut seen).unwrap();
    assert!(t.elapsed() >= Duration::from_millis(950));
    let text = String::from_utf8_lossy(&seen).into_owned();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("Transfer-Encoding: chunked"), "{text}");
    assert!(text.contains("second\n"), "{text}");

    // With PHP's output buffer still on, flush() streams the head at once and
    // the body when PHP releases it.
    let out = Command::new("curl")
        .args(["-s", "-S", "-w", "\n%{time_starttransfer} %{time_total}"])
        .arg(n.url("/buffered.php"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, times) = text.rsplit_once('\n').unwrap();
    assert_eq!(body, "held back");
    let times: Vec<f64> = times
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    assert!(times[0] < 0.8, "head after {}s", times[0]);
    assert!(times[1] >= 0.95, "{text}");
    n.assert_clean_log();
}

/// The engine compresses for nginx as for every host (tests/compression.rs has
/// the rules): a 4 MB PHP stream in each coding, and a flush() that reaches the
/// client compressed before the script ends.
#[test]
fn responses_are_compressed_through_nginx() {
    let n = ModNginx::start(Opts::default());
    let mut expected = Vec::new();
    for i in 0..40000 {
        expected.extend_from_slice(format!("{i:.<99}\n").as_bytes());
    }
    for coding in ["gzip", "br", "zstd"] {
        let ae = format!("Accept-Encoding: {coding}");
        let r = curl(&["--compressed", "-H", &ae, &n.url("/big.php")]);
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("content-encoding"),
            Some(coding),
            "{:?}",
            r.headers
        );
        assert_eq!(r.header("vary"), Some("Accept-Encoding"));
        assert!(r.body == expected, "{coding}: the decoded body differs");
    }

    let t = Instant::now();
    let mut child = Command::new("curl")
        .args(["-s", "-S", "-N", "-i", "--compressed"])
        .args(["-H", "Accept-Encoding: br", &n.url("/flush.php")])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(100).any(|w| w.iter().all(|&b| b == b'a')) {
        let k = out.read(&mut buf).unwrap();
        assert!(k > 0, "ended early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..k]);
    }
    let first = t.elapsed();
    assert!(
        first < Duration::from_millis(800),
        "flushed bytes after {first:?}"
    );
    out.read_to_end(&mut seen).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(t.elapsed() >= Duration::from_millis(950));
    let text = String::from_utf8_lossy(&seen).to_ascii_lowercase();
    assert!(text.contains("\r\ncontent-encoding: br\r\n"), "{text}");
    assert!(text.ends_with("second\n"), "{text}");
    n.assert_clean_log();
}

#[test]
fn clients_that_leave_and_engine_timeouts() {
    let n = ModNginx::start(Opts::default());
    let workers = n.workers();
    assert_eq!(get(&n.url("/hello.php")).status, 200);

    // 1. The client closes while PHP runs: 499 in nginx, the late response is freed.
    let mut s = TcpStream::connect(("127.0.0.1", n.port)).unwrap();
    s.write_all(b"GET /slow.php?s=1 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(s);

    // 2. The client closes in the middle of a streamed response: PHP sees
    //    connection_aborted() and stops.
    let mut s = TcpStream::connect(("127.0.0.1", n.port)).unwrap();
    s.write_all(b"GET /abort.php HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 2048];
    let mut got = 0;
    while got < 1000 {
        let k = s.read(&mut buf).unwrap();
        assert!(k > 0, "abort.php ended early");
        got += k;
    }
    drop(s);
    let marker = n.dir().join("www/aborted.txt");
    wait_for(
        "abort.php to notice the client left",
        Duration::from_secs(10),
        || std::fs::read_to_string(&marker).is_ok_and(|s| !s.is_empty()),
    );
    let at = std::fs::read_to_string(&marker).unwrap();
    assert!(
        at.parse::<u32>().is_ok_and(|i| i < 100),
        "PHP did not notice the abort: {at}"
    );

    // 3. fephp_timeout (1 s in /short/): 504, and the response PHP sends later is freed.
    let t = Instant::now();
    let r = get(&n.url("/short/slow.php?s=2"));
    assert_eq!(r.status, 504);
    assert!(
        t.elapsed() < Duration::from_millis(1900),
        "{:?}",
        t.elapsed()
    );

    // 4. A client that sends half a body and leaves: nginx's part, no job started.
    let mut s = TcpStream::connect(("127.0.0.1", n.port)).unwrap();
    s.write_all(
        b"POST /post.php HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\nContent-Type: application/octet-stream\r\n\r\nabc",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    drop(s);

    // The abandoned requests finish in PHP, and their responses are discarded.
    wait_for(
        "both late responses to be discarded",
        Duration::from_secs(10),
        || n.log().matches("discarded a response").count() >= 2,
    );
    assert!(n.log().contains("client prematurely closed connection"));
    assert!(n
        .log()
        .contains("no answer from the engine within fephp_timeout"));

    // Same worker, still serving.
    assert_eq!(get(&n.url("/hello.php")).status, 200);
    assert_eq!(get(&n.url("/style.css")).status, 200);
    assert_eq!(n.workers(), workers, "a worker was replaced");

    // Nothing is left in the engine when the worker exits.
    let mut n = n;
    n.signal("quit");
    assert!(n.wait_exit(Duration::from_secs(10)).success());
    assert!(n.log().contains("exit"), "{}", n.log());
    n.assert_clean_log();
}

#[test]
fn reload_picks_up_a_changed_config_and_quit_is_clean() {
    let mut n = ModNginx::start(Opts::default());
    let toml_path = n.dir().join("fe-php.toml");
    let good = std::fs::read_to_string(&toml_path).unwrap();
    assert_eq!(get(&n.url("/_health")).status, 200);
    let first_workers = n.workers();

    // An invalid fe-php configuration: the reload is refused, the old one serves.
    std::fs::write(
        &toml_path,
        good.replace(
            "default_backend = \"embedded\"",
            "default_backend = \"xxx\"",
        ),
    )
    .unwrap();
    n.signal("reload");
    wait_for(
        "the refused reload to be logged",
        Duration::from_secs(10),
        || n.log().contains("Default backend 'xxx' is not registered"),
    );
    assert_eq!(get(&n.url("/_health")).status, 200);
    assert_eq!(n.workers(), first_workers);

    // A changed, valid one: new workers with the new engine.
    std::fs::write(
        &toml_path,
        good.replace("health_path = \"/_health\"", "health_path = \"/_status\""),
    )
    .unwrap();
    n.signal("reload");
    wait_for("the new configuration", Duration::from_secs(10), || {
        let r = get(&n.url("/_status"));
        r.status == 200 && r.header("content-type") == Some("application/json")
    });
    wait_for("the old workers to exit", Duration::from_secs(10), || {
        n.workers().iter().all(|w| !first_workers.contains(w))
    });
    assert_eq!(get(&n.url("/_health")).status, 404);
    // PHP still runs in the new workers.
    assert_eq!(get(&n.url("/hello.php")).text(), "Hello, World!");

    // Graceful quit lets an in-flight PHP request finish.
    let slow_url = n.url("/slow.php?s=1");
    let slow = std::thread::spawn(move || get(&slow_url));
    std::thread::sleep(Duration::from_millis(300));
    n.signal("quit");
    let r = slow.join().unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "slept 1"));
    let status = n.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "nginx exited with {status}");
    let log = n.log();
    assert!(log.contains("gracefully shutting down"), "{log}");
    for bad in [
        "exited on signal",
        "[alert]",
        "[crit]",
        "still in the engine",
    ] {
        assert!(!log.contains(bad), "{bad}:\n{log}");
    }
}

#[test]
fn signals_sent_to_a_worker_reach_nginx_after_php_ran() {
    // PHP's signal layer takes over process signals in the worker; the module makes
    // it forward to nginx's handlers (a worker must not die on SIGUSR1 or SIGTERM).
    let n = ModNginx::start(Opts::default());
    for _ in 0..3 {
        assert_eq!(get(&n.url("/hello.php")).status, 200);
    }
    let worker = n.workers()[0];
    unsafe { libc::kill(worker, libc::SIGUSR1) };
    wait_for(
        "the worker to reopen its logs",
        Duration::from_secs(5),
        || {
            n.log()
                .contains(&format!("{worker}#{worker}: reopening logs"))
        },
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(n.workers(), vec![worker], "the worker died on SIGUSR1");
    assert_eq!(get(&n.url("/hello.php")).status, 200);

    // SIGTERM: a fast shutdown of that worker (exit code 0); the master replaces it.
    unsafe { libc::kill(worker, libc::SIGTERM) };
    wait_for("a replacement worker", Duration::from_secs(10), || {
        let w = n.workers();
        w.len() == 1 && w[0] != worker
    });
    assert!(
        n.log()
            .contains(&format!("worker process {worker} exited with code 0")),
        "{}",
        n.log()
    );
    assert_eq!(get(&n.url("/hello.php")).status, 200);
    n.assert_clean_log();
}

#[test]
fn opcache_is_shared_by_nginx_workers() {
    // fephp_init runs in the master before the fork: both workers use one OPcache.
    let n = ModNginx::start(Opts {
        workers: 2,
        listen_extra: " reuseport",
        ..Opts::default()
    });
    let compiled_by: i32 = curl(&["-H", "Connection: close", &n.url("/compile.php")])
        .text()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = json(&curl(&["-H", "Connection: close", &n.url("/check.php")]));
        if v["pid"].as_i64() != Some(compiled_by as i64) {
            assert_eq!(
                v["cached"], true,
                "compiled by worker {compiled_by}, not in worker {}'s OPcache",
                v["pid"]
            );
            break;
        }
        assert!(Instant::now() < deadline, "never reached the second worker");
    }
    n.assert_clean_log();
}

/// Inside nginx nothing but the module's log callback receives the library's
/// log lines: PHP's errors and warnings, PHP-FPM's stderr and the library's own
/// errors land in nginx's error_log, with the request they belong to.
#[test]
fn library_log_lines_reach_nginx_error_log() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED library_log_lines_reach_nginx_error_log: needs root to make a script its workers cannot read");
        return;
    }
    let fpm_root = tempfile::tempdir().unwrap();
    let fpm = PhpFpm::start(fpm_root.path(), FpmListen::Tcp);
    let n = ModNginx::start(Opts {
        fpm: Some(fpm.address().to_owned()),
        fastcgi_rule: true,
        php_log_to_sapi: true,
        unprivileged: true,
        ..Opts::default()
    });
    let www = n.dir().join("www");
    std::fs::write(
        www.join("warn.php"),
        "<?php echo $warn_marker_variable; echo 'ok';",
    )
    .unwrap();
    std::fs::write(www.join("secret.php"), "<?php echo 'never';").unwrap();
    std::fs::set_permissions(
        www.join("secret.php"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    // php-fpm runs the file the engine names, in the engine's document root.
    std::fs::write(
        www.join("fpm/stderr.php"),
        "<?php error_log('fpm-stderr-marker'); echo 'ok';",
    )
    .unwrap();

    assert_eq!(get(&n.url("/fatal.php")).status, 500);
    let r = get(&n.url("/warn.php"));
    assert_eq!(r.text(), "ok", "{} {}", r.status, n.log());
    assert_eq!(get(&n.url("/fpm/stderr.php")).text(), "ok");
    let r = get(&n.url("/secret.php"));
    assert!(r.status >= 400, "{} {}", r.status, r.text());

    let expect = [
        (
            "[error]",
            "fe-php php:",
            "undefined_function_xyz",
            "/fatal.php",
        ),
        (
            "[error]",
            "fe-php php:",
            "$warn_marker_variable",
            "/warn.php",
        ),
        (
            "[error]",
            "fe-php php:",
            "fpm-stderr-marker",
            "/fpm/stderr.php",
        ),
        ("[error]", "fe-php php:", "secret.php", "/secret.php"),
    ];
    // One record per log entry (PHP's messages may span lines).
    let found = |log: &str, (level, who, what, uri): &(&str, &str, &str, &str)| {
        let mut records: Vec<String> = Vec::new();
        for line in log.lines() {
            match records.last_mut() {
                Some(r) if !line.starts_with("20") => {
                    r.push('\n');
                    r.push_str(line);
                }
                _ => records.push(line.to_owned()),
            }
        }
        records.iter().any(|r| {
            r.contains(level)
                && r.contains(who)
                && r.contains(what)
                && r.ends_with(&format!("request: \"GET {uri}\""))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !expect.iter().all(|e| found(&n.log(), e)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = n.log();
    let missing: Vec<_> = expect.iter().filter(|e| !found(&log, e)).collect();
    assert!(missing.is_empty(), "missing {missing:?} in:\n{log}");
    n.assert_clean_log();
}

#[test]
fn fastcgi_routes_when_the_backend_is_available() {
    let fpm_root = tempfile::tempdir().unwrap();
    let fpm = PhpFpm::start(fpm_root.path(), FpmListen::Tcp);
    let n = ModNginx::start(Opts {
        fpm: Some(fpm.address().to_owned()),
        ..Opts::default()
    });
    let health = json(&get(&n.url("/_health")));
    let fastcgi = &health["backends"]["fastcgi"];
    if fastcgi["enabled"] != true || fastcgi["healthy"] != true {
        eprintln!(
            "SKIPPED fastcgi_routes_when_the_backend_is_available: the FastCGI backend \
             is not available in this build of the library ({})",
            fastcgi["message"]
        );
        return;
    }

    eprintln!("FastCGI backend available: testing /fpm/ through php-fpm");

    // Route /fpm/ to php-fpm, through a reload.
    std::fs::write(
        n.dir().join("fe-php.toml"),
        toml(n.dir(), "/_health", Some(fpm.address()), true),
    )
    .unwrap();
    n.signal("reload");
    let nginx_pids = |n: &ModNginx| {
        let mut p = n.workers();
        p.push(n.master());
        p.extend(n.runners());
        p
    };
    wait_for("the FastCGI route", Duration::from_secs(10), || {
        let r = get(&n.url("/fpm/info.php"));
        r.status == 200
            && json(&r)["pid"]
                .as_i64()
                .is_some_and(|p| !nginx_pids(&n).contains(&(p as i32)))
    });
    let v = json(&get(&n.url("/fpm/info.php")));
    assert_eq!(v["sapi"], "fpm-fcgi");
    let r = curl(&["--data-binary", "0123456789", &n.url("/fpm/info.php")]);
    assert_eq!(json(&r)["input"], 10);
    // Embedded next to it still runs in the library's runners under nginx.
    let v = json(&get(&n.url("/info.php")));
    assert!(nginx_pids(&n).contains(&(v["pid"].as_i64().unwrap() as i32)));
    n.assert_clean_log();
}

/// Large bodies through php-fpm: the library's I/O thread reads them from the
/// module as it sends them, so they too stay in nginx's temp file; and a client
/// that leaves before the script reads its body.
#[test]
fn large_bodies_reach_php_fpm_from_nginx_temp_file() {
    let fpm_root = tempfile::tempdir().unwrap();
    let fpm = PhpFpm::builder(fpm_root.path(), FpmListen::Tcp)
        .ini("post_max_size", "128M")
        .start();
    let n = ModNginx::start(Opts {
        fpm: Some(fpm.address().to_owned()),
        fastcgi_rule: true,
        ..Opts::default()
    });
    let health = json(&get(&n.url("/_health")));
    let fastcgi = &health["backends"]["fastcgi"];
    if fastcgi["enabled"] != true || fastcgi["healthy"] != true {
        eprintln!(
            "SKIPPED large_bodies_reach_php_fpm_from_nginx_temp_file: the FastCGI \
             backend is not available in this build of the library ({})",
            fastcgi["message"]
        );
        return;
    }
    let worker = only_worker(&n);
    let v = json(&get(&n.url("/fpm/info.php")));
    assert_eq!(v["sapi"], "fpm-fcgi");
    assert_ne!(v["pid"].as_i64(), Some(worker as i64));

    large_body_stays_on_disk(&n, &n.url("/big/fpm/stream.php"));
    client_leaves_before_php_reads_its_body(
        &n,
        "/fileonly/fpm/stream.php?s=2&out=left.json",
        &n.dir().join("www/fpm/left.json"),
    );
    n.assert_clean_log();
}

#[test]
fn proxy_routes_through_nginx() {
    // The upstream: a fe-php-host serving static files, one small and one large.
    let big = common::diff::pattern(3 << 20, 11);
    let upstream = Host::start(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nworkers = 1\naccess_log = \"off\"\n[backend]\ndefault_backend = \"static\"\n[backend.static_files]\nenable = true\nroot = \"{dir}/www\"\n[php]\nlibphp_path = \"/nonexistent/libphp.so\"\n",
        |dir| {
            std::fs::create_dir_all(dir.join("www/up")).unwrap();
            std::fs::write(dir.join("www/up/small.txt"), "from the upstream\n").unwrap();
            std::fs::write(dir.join("www/up/big.bin"), &big).unwrap();
        },
    );
    let n = ModNginx::start(Opts {
        proxy: Some(format!("http://127.0.0.1:{}", upstream.port)),
        ..Opts::default()
    });
    let r = get(&n.url("/up/small.txt"));
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "from the upstream\n");
    let out = n.dir().join("big.out");
    let code = Command::new("curl")
        .args(["-s", "-o", out.to_str().unwrap(), "-w", "%{http_code}"])
        .arg(n.url("/up/big.bin"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&code.stdout), "200");
    assert_eq!(md5_hex(&out), common::diff::md5_hex(&big));
    assert_eq!(get(&n.url("/up/missing")).status, 404);
    let health = json(&get(&n.url("/_health")));
    assert_eq!(health["backends"]["proxy"]["healthy"], true, "{health}");
    n.assert_clean_log();
}

/// Worker mode under nginx: the engine's worker pool serves nginx's workers,
/// the application stays booted across requests, and survives `nginx -s reload`
/// (its code did not change, so the same worker goes on).
#[test]
fn worker_mode_through_nginx() {
    let n = ModNginx::start(Opts {
        workers: 2,
        extra_toml: "\n[[backend.routing_rules]]\npattern = { type = \"prefix\", value = \"/app/\" }\nbackend = \"embedded\"\npool = \"app\"\npriority = 10\n\n[php.pools.app]\nworker = \"app/worker.php\"\nmin_runners = 1\nmax_runners = 1\n",
        ..Opts::default()
    });
    let counts: Vec<String> = (0..3)
        .map(|_| get(&n.url("/app/worker.php?x")).text())
        .collect();
    let pid = counts[0].split(' ').next().unwrap().to_owned();
    assert_eq!(
        counts,
        [format!("{pid} 1"), format!("{pid} 2"), format!("{pid} 3")]
    );
    assert_eq!(
        get(&n.url("/hello.php")).text(),
        "Hello, World!",
        "classic PHP beside it"
    );
    n.signal("reload");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        get(&n.url("/app/worker.php?y")).text(),
        format!("{pid} 4"),
        "the worker survives the reload"
    );
    n.assert_clean_log();
}
