//! Automatic certificates end to end: fe-php-host's ACME process against Debian's
//! pebble (an RFC 8555 test CA) on loopback, validated by TLS-ALPN-01 on the
//! host's own TLS listener; pebble-challtestsrv answers pebble's DNS lookups.

mod common;

use common::{free_port, Host};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::certs::openssl;

/// A CA and a certificate it signs for 127.0.0.1 (pebble's own HTTPS).
fn pebble_tls(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "pebble.key",
            "-out",
            "pebble.csr",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "pebble.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "pebble.pem",
        ],
    );
}

/// pebble and its DNS (every name is 127.0.0.1), validating TLS-ALPN-01 on
/// `tls_port`. Killed when dropped.
struct Pebble {
    children: Vec<Child>,
    dir: tempfile::TempDir,
    api: u16,
    management: u16,
}

impl Pebble {
    fn start(tls_port: u16) -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        pebble_tls(dir.path());
        let (api, management, dns, http) = (free_port(), free_port(), free_port(), free_port());
        let config = format!(
            r#"{{"pebble": {{"listenAddress": "127.0.0.1:{api}", "managementListenAddress": "127.0.0.1:{management}",
"certificate": "{d}/pebble.pem", "privateKey": "{d}/pebble.key", "httpPort": {http}, "tlsPort": {tls_port},
"ocspResponderURL": "", "externalAccountBindingRequired": false}}}}"#,
            d = dir.path().display()
        );
        std::fs::write(dir.path().join("pebble.json"), config).unwrap();
        let log = |name: &str| Stdio::from(std::fs::File::create(dir.path().join(name)).unwrap());
        let challtest = Command::new("pebble-challtestsrv")
            .args([
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
            ])
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-management", &format!("127.0.0.1:{}", free_port())])
            .stdout(log("challtestsrv.log"))
            .stderr(log("challtestsrv.err"))
            .spawn()
            .expect("pebble-challtestsrv is installed (Debian package pebble)");
        let pebble = Command::new("pebble")
            .args([
                "-config",
                &dir.path().join("pebble.json").display().to_string(),
            ])
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"))
            .spawn()
            .expect("pebble is installed");
        let p = Pebble {
            children: vec![challtest, pebble],
            dir,
            api,
            management,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", api)).is_err() {
            assert!(
                Instant::now() < deadline,
                "pebble did not start: {}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    fn log(&self) -> String {
        ["pebble.log", "pebble.err"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default())
            .collect()
    }

    /// pebble's root certificate (it makes a new one at each start).
    fn root(&self, to: &Path) {
        let out = Command::new("curl")
            .args([
                "-s",
                "-k",
                &format!("https://127.0.0.1:{}/roots/0", self.management),
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        std::fs::write(to, out.stdout).unwrap();
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The issuer of the certificate the host presents for `name`.
fn issuer(port: u16, name: &str) -> String {
    let (_, text) = common::certs::s_client(port, &["-servername", name]);
    text.lines()
        .find(|l| l.starts_with("issuer="))
        .unwrap_or("")
        .to_owned()
}

#[test]
fn a_certificate_is_obtained_and_renewed_without_a_restart() {
    let port = free_port();
    let pebble = Pebble::start(port);
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{{port}}"
workers = 2
access_log = "off"

[server.tls]
[server.tls.acme]
directory = "https://127.0.0.1:{api}/dir"
domains = ["acme.test", "www.acme.test"]
contact = ["mailto:admin@acme.test"]
storage = "acme-store"
ca_root = "{ca}"

[backend]
default_backend = "embedded"

[backend.static_files]
enable = true
root = "{{dir}}/www"

[php]
document_root = "{{dir}}/www"
"#,
        api = pebble.api,
        ca = pebble.dir.path().join("ca.pem").display()
    );
    let h = Host::start_on(
        port,
        &config,
        |d| {
            std::fs::create_dir_all(d.join("www")).unwrap();
            std::fs::write(
                d.join("www/hello.php"),
                "<?php echo 'Hello over ', $_SERVER['HTTPS'];",
            )
            .unwrap();
            // A certificate about to expire (one day left, renew_before is 30 days).
            let store = d.join("acme-store");
            std::fs::create_dir_all(&store).unwrap();
            common::certs::self_signed(&store, "cert", "old", "DNS:acme.test,DNS:www.acme.test", 1);
            std::fs::rename(store.join("cert.key"), store.join("key.pem")).unwrap();
        },
        |_| {},
    );
    let master = h.child.id();
    // The old certificate serves at first...
    assert!(
        issuer(port, "acme.test").contains("old"),
        "{}",
        issuer(port, "acme.test")
    );
    // ... until the ACME process has renewed it (pebble validates on this
    // listener) and the master has reloaded.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = issuer(port, "acme.test");
        if now.contains("Pebble") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no certificate from pebble (serving {now}); host:\n{}\npebble:\n{}",
            h.stderr(),
            pebble.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(h.child.id(), master);
    assert!(
        h.stderr()
            .contains("ACME: new certificate for acme.test, www.acme.test"),
        "{}",
        h.stderr()
    );
    // A real client trusting pebble's root reaches PHP over it, on both names.
    let root = h.dir.path().join("pebble-root.pem");
    pebble.root(&root);
    for name in ["acme.test", "www.acme.test"] {
        let out = Command::new("curl")
            .args(["-s", "--cacert", &root.display().to_string()])
            .args(["--resolve", &format!("{name}:{port}:127.0.0.1")])
            .arg(format!("https://{name}:{port}/hello.php"))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "Hello over on",
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Kept on disk: the key private to its owner, the account for next time.
    use std::os::unix::fs::PermissionsExt;
    let store = h.dir.path().join("acme-store");
    let mode = std::fs::metadata(store.join("key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "key.pem is {mode:o}");
    assert!(store.join("account.json").exists());
    // No challenge certificate left behind.
    let left: Vec<_> = std::fs::read_dir(store.join("challenge"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn an_unreachable_ca_is_logged_and_retried() {
    let port = free_port();
    let dead = free_port();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{{port}}"
workers = 1
access_log = "off"

[server.tls.acme]
directory = "https://127.0.0.1:{dead}/dir"
domains = ["acme.test"]

[backend]
default_backend = "static"

[backend.static_files]
enable = true
root = "{{dir}}"
"#
    );
    let h = Host::start_on(port, &config, |_| {}, |_| {});
    let deadline = Instant::now() + Duration::from_secs(20);
    while h
        .stderr()
        .matches("ACME: no certificate for acme.test")
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "{}", h.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(h.stderr().contains("trying again in"), "{}", h.stderr());
    // Until there is a certificate, TLS clients are refused (not served a
    // certificate for another name).
    assert!(!issuer(port, "acme.test").contains("issuer="));
}
