//! Real frameworks from Debian's packages in both PHP modes: the Symfony 5.4 app
//! of tests/apps/symfony and the Laravel 8 app of tests/apps/laravel, each
//! through fe-php-host's worker mode (`public/worker.php` loops on
//! `frankenphp_handle_request()`), through its classic front controller, and
//! through nginx + php-fpm. The same requests give the same pages, and in worker
//! mode a session set by one client is never seen by the next.

mod common;

use common::peers::{FpmListen, Nginx, PhpFpm};
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A copy of app `name` (tests/apps/NAME) in `dir`, made writable, with
/// Symfony's prod cache warmed once by PHP's CLI (so that three servers do not
/// build it at once). Its public directory.
fn app(name: &str, dir: &Path) -> PathBuf {
    let app = dir.join(name);
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/apps")
        .join(name);
    let out = Command::new("cp")
        .arg("-r")
        .arg(&src)
        .arg(&app)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if name == "symfony" {
        let warm = format!(
            "require '{}/bootstrap.php'; (new App\\Kernel('prod', false))->boot();",
            app.display()
        );
        let out = Command::new("php").args(["-r", &warm]).output().unwrap();
        assert!(
            out.status.success(),
            "warming Symfony's cache: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    app.join("public")
}

fn symfony(dir: &Path) -> PathBuf {
    app("symfony", dir)
}

fn host(public: &Path, pool: &str) -> Host {
    host_with(public, pool, "")
}

fn host_with(public: &Path, pool: &str, php: &str) -> Host {
    let config = HostConfig::embedded_site("")
        .workers(2)
        .root(&public.display().to_string())
        .php(&format!("front_controller = \"index.php\"\n{php}"))
        .toml()
        + "\n[php.pool]\n"
        + pool;
    Host::start(&config, |_| {})
}

/// Paths each app serves the same way: a template page, JSON, a 404.
const PAGES: [&str; 6] = [
    "/page/alice?q=worker",
    "/api/items?n=5",
    "/api/items",
    "/page/b%C3%A9b",
    "/page/alice?q=%3Cscript%3E",
    "/missing/page",
];

fn same_pages_in_every_mode(name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let public = app(name, dir.path());
    let worker = host(&public, "worker = \"worker.php\"\nmin_runners = 2\n");
    let classic = host(&public, "");
    let fpm = PhpFpm::builder(&public, FpmListen::Unix)
        .max_children(4)
        .start();
    // The frameworks' nginx recipe: everything that is not a file goes to index.php.
    let nginx = Nginx::start_with(
        &public,
        &fpm,
        "location ~ ^/(page|api|visit|missing) { try_files $uri /index.php$is_args$args; }",
    );
    for path in PAGES {
        let w = get(&worker.url(path));
        let c = get(&classic.url(path));
        let n = get(&nginx.url(path));
        assert_eq!((w.status, c.status), (n.status, n.status), "{name} {path}");
        assert_eq!(
            w.text(),
            n.text(),
            "{name} {path}: worker mode differs from php-fpm"
        );
        assert_eq!(
            c.text(),
            n.text(),
            "{name} {path}: classic mode differs from php-fpm"
        );
        assert_eq!(
            w.header("content-type"),
            n.header("content-type"),
            "{name} {path}"
        );
    }
    let page = get(&worker.url("/page/alice?q=worker")).text();
    assert!(page.contains("Hello alice"), "{page}");
    assert!(page.contains("Item 20 of alice"), "{page}");
    assert_eq!(get(&worker.url("/missing/page")).status, 404);
    // A worker serves many requests with one boot: the same page each time.
    for _ in 0..20 {
        assert_eq!(get(&worker.url("/page/alice?q=worker")).text(), page);
    }
    for h in [&worker, &classic] {
        assert!(!h.stderr().contains("ERROR"), "{}", h.stderr());
    }
}

#[test]
fn symfony_pages_are_the_same_in_worker_mode_classic_mode_and_php_fpm() {
    same_pages_in_every_mode("symfony");
}

#[test]
fn laravel_pages_are_the_same_in_worker_mode_classic_mode_and_php_fpm() {
    same_pages_in_every_mode("laravel");
}

/// The cookies a reply sets, as a `Cookie` header value.
fn cookies(r: &Reply) -> String {
    r.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.split(';').next().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join("; ")
}

fn sessions_stay_with_their_client(name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let public = app(name, dir.path());
    // One runner: every request goes through the same interpreter.
    let h = host(
        &public,
        "worker = \"worker.php\"\nmin_runners = 1\nmax_runners = 1\n",
    );
    for round in 0..5 {
        let who = format!("alice{round}");
        let alice = get(&h.url(&format!("/visit?name={who}")));
        assert_eq!(alice.status, 200, "{}", alice.text());
        assert_eq!(alice.text(), format!(r#"{{"before":null,"now":"{who}"}}"#));
        let jar = cookies(&alice);
        assert!(!jar.is_empty(), "{name}: alice gets a session cookie");

        // The next client, without a cookie, sees nothing of alice's session.
        let bob = get(&h.url("/visit"));
        assert_eq!(bob.text(), r#"{"before":null,"now":null}"#, "{name}");
        assert!(cookies(&bob) != jar, "{name}: bob gets alice's cookies");

        // Alice, with her cookies, finds what she stored.
        let back = curl(&["-b", &jar, &h.url("/visit")]);
        assert_eq!(
            back.text(),
            format!(r#"{{"before":"{who}","now":"{who}"}}"#),
            "{name}"
        );
    }
}

#[test]
fn symfony_sessions_stay_with_their_client_in_worker_mode() {
    sessions_stay_with_their_client("symfony");
}

#[test]
fn laravel_sessions_stay_with_their_client_in_worker_mode() {
    sessions_stay_with_their_client("laravel");
}

/// `front_controller_internal`: the front controller answers only as the
/// fallback, as Symfony's nginx recipe marks it `internal`; each page has one URL.
#[test]
fn an_internal_front_controller_has_no_url_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let public = symfony(dir.path());
    let open = host(&public, "");
    let internal = host_with(
        &public,
        "worker = \"worker.php\"\n",
        "front_controller_internal = true",
    );
    assert_eq!(get(&open.url("/index.php/page/x")).status, 200);
    for path in ["/index.php", "/index.php/page/x", "/index.php?q=1"] {
        assert_eq!(get(&internal.url(path)).status, 404, "{path}");
    }
    let page = get(&internal.url("/page/x"));
    assert_eq!(page.status, 200);
    assert!(page.text().contains("Hello x"), "{}", page.text());
}
