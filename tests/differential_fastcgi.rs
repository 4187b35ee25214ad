//! Differential test: the same requests to fe-php-host (FastCGI backend) and to
//! nginx + php-fpm, both in front of the same php-fpm pool, must give the same
//! status, relevant headers and body (tests/common/diff.rs says what "same" means).
//! Over TCP in hybrid mode, over a Unix socket in FastCGI-only mode (`use_fpm`).

mod common;

use common::diff::*;
use common::peers::*;
use common::Host;

/// fe-php-host with 2 workers × 2 connections: with nginx's `keepalive 2` that is 6
/// kept-alive connections at most, one per php-fpm child (each holds a child).
const CHILDREN: usize = 6;

fn fe_php(fpm_socket: &str, php_mode: &str) -> Host {
    let docroot = fixture_docroot();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{{port}}"
workers = 2
access_log = "off"

[backend.static_files]
enable = true
root = "{root}"

{php_mode}
fpm_socket = "{fpm_socket}"
fpm_max_connections = 2
"#,
        root = docroot.display(),
    );
    Host::start(&config, |_| {})
}

fn check(fpm: &PhpFpm, fe: &Host, nginx: &Nginx) {
    let cases = standard_cases();
    let mut failures = Vec::new();
    // The reference gives what the cases expect, and fe-php gives the same.
    for case in &cases {
        match send(case, &fe.url("")) {
            Ok(reply) => failures.extend(check_expected(case, &reply).err()),
            Err(e) => failures.push(format!("case {}: {e}", case.name)),
        }
    }
    failures.extend(run_all(&fe.url(""), &nginx.base_url(), &cases));
    assert!(
        failures.is_empty(),
        "{} failure(s) of {} cases:\n{}\n--- fe-php-host stderr:\n{}\n--- php-fpm log:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n"),
        fe.stderr(),
        fpm.error_log()
    );
}

#[test]
fn fastcgi_matches_nginx_over_tcp() {
    let fpm = PhpFpm::builder(&fixture_docroot(), FpmListen::Tcp)
        .max_children(CHILDREN)
        .start();
    let nginx = Nginx::start(&fixture_docroot(), &fpm);
    // Hybrid mode without libphp: the FastCGI backend serves by default.
    let fe = fe_php(
        fpm.address(),
        "[backend]\ndefault_backend = \"fastcgi\"\n\n[php]\nlibphp_path = \"/nonexistent/libphp.so\"",
    );
    check(&fpm, &fe, &nginx);
}

#[test]
fn fastcgi_only_mode_matches_nginx_over_unix_socket() {
    let fpm = PhpFpm::builder(&fixture_docroot(), FpmListen::Unix)
        .max_children(CHILDREN)
        .start();
    let nginx = Nginx::start(&fixture_docroot(), &fpm);
    // Non-hybrid mode: FastCGI only, with the "unix:" spelling of the socket.
    let fe = fe_php(
        &fpm.nginx_target(),
        "[backend]\nenable_hybrid = false\n\n[php]\nuse_fpm = true",
    );
    assert!(fpm.nginx_target().starts_with("unix:/"));
    let health: serde_json::Value =
        serde_json::from_slice(&common::get(&fe.url("/_health")).body).unwrap();
    assert_eq!(health["backends"]["fastcgi"]["healthy"], true, "{health}");
    assert_eq!(health["backends"]["embedded"]["enabled"], false, "{health}");
    check(&fpm, &fe, &nginx);
}
