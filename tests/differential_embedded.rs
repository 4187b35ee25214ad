//! Differential test: the same requests to fe-php-host (embedded backend) and to
//! nginx + php-fpm on the same PHP scripts must give the same status, relevant
//! headers and body (tests/common/diff.rs says what "same" means).

mod common;

use common::diff::*;
use common::peers::*;
use common::Host;

fn fe_php_embedded() -> Host {
    let docroot = fixture_docroot();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{{port}}"
workers = 2
access_log = "off"

[backend]
default_backend = "embedded"

[backend.static_files]
enable = true
root = "{root}"

{ini}
"#,
        root = docroot.display(),
        ini = fixture_ini_toml()
    );
    Host::start(&config, |_| {})
}

#[test]
fn embedded_matches_nginx_and_php_fpm() {
    let docroot = fixture_docroot();
    let fpm = PhpFpm::start(&docroot, FpmListen::Unix);
    let nginx = Nginx::start(&docroot, &fpm);
    let fe = fe_php_embedded();
    let cases = standard_cases();
    let failures = run_all(&fe.url(""), &nginx.base_url(), &cases);
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
