//! Certificates for TLS tests, made by the openssl command line tool.

use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `openssl ARGS` in `dir`; panics with what it printed when it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed P-256 certificate with subject CN=`cn`, valid `days`, for the
/// names in `san` (e.g. "DNS:a.test,DNS:*.a.test"), as `{stem}.pem` and
/// `{stem}.key` in `dir`.
pub fn self_signed(dir: &Path, stem: &str, cn: &str, san: &str, days: u32) {
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
            &days.to_string(),
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            &format!("subjectAltName={san}"),
            "-keyout",
            &format!("{stem}.key"),
            "-out",
            &format!("{stem}.pem"),
        ],
    );
}

/// `openssl s_client` to 127.0.0.1:`port` with `args`, its session ended at
/// once: (a cipher was agreed, what it printed).
pub fn s_client(port: u16, args: &[&str]) -> (bool, String) {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Closing stdin ends the session once the handshake is done.
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ok =
        out.status.success() && text.contains("Cipher is") && !text.contains("Cipher is (NONE)");
    (ok, text)
}
