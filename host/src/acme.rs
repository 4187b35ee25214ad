//! `[server.tls.acme]`: certificates from an ACME CA (Let's Encrypt or any RFC
//! 8555 directory), obtained and renewed by a process of their own
//! (`fe-php: acme`, a child of the master) with the TLS-ALPN-01 challenge, which
//! needs nothing but the TLS listener itself.
//!
//! Everything goes through the storage directory: the ACME process writes the
//! challenge certificate there (`challenge/NAME.pem`, `.key`) for the workers'
//! certificate resolver to present to the CA's validator, then the certificate
//! and its key (`cert.pem`, `key.pem`), and sends the master SIGHUP: the reload
//! gives new workers the new certificate, as for one renewed by hand.

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// ALPN protocol of TLS-ALPN-01 (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// First wait after a failure; doubled up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Longest sleep between two looks at the certificate.
const MAX_SLEEP: Duration = Duration::from_secs(12 * 3600);

/// `[server.tls.acme]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeConfig {
    /// The CA's directory URL, e.g. "https://acme-v02.api.letsencrypt.org/directory".
    pub directory: String,
    /// The names the certificate is for (one certificate, all of them).
    pub domains: Vec<String>,
    /// Contact addresses for the account ("mailto:admin@example.com").
    #[serde(default)]
    pub contact: Vec<String>,
    /// Where the account, the certificate and its key are kept (relative: to the
    /// configuration file's directory).
    #[serde(default = "default_storage")]
    pub storage: String,
    /// A PEM file of the CA's root, when the directory is not served under a
    /// publicly trusted certificate (a test CA such as pebble).
    #[serde(default)]
    pub ca_root: Option<String>,
    /// Renew when the certificate has less than this left.
    #[serde(default = "default_renew_before")]
    pub renew_before: fe_php_units::ConfigDuration,
}

fn default_storage() -> String {
    "acme".to_owned()
}

fn default_renew_before() -> fe_php_units::ConfigDuration {
    fe_php_units::ConfigDuration(Duration::from_secs(30 * 86400))
}

impl AcmeConfig {
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.directory.starts_with("https://") {
            problems.push(format!(
                "[server.tls.acme] directory = \"{}\" is not an https:// URL: use the CA's directory, e.g. \"https://acme-v02.api.letsencrypt.org/directory\".",
                self.directory.escape_debug()
            ));
        }
        if self.domains.is_empty() {
            problems.push("[server.tls.acme] domains is empty: name the host names the certificate is for, e.g. domains = [\"example.com\", \"www.example.com\"].".to_owned());
        }
        for d in &self.domains {
            if !is_host_name(d) {
                problems.push(format!(
                    "[server.tls.acme] domains: \"{}\" is not a host name this server can prove with TLS-ALPN-01 (no wildcards, no IP addresses).",
                    d.escape_debug()
                ));
            }
        }
        problems
    }

    /// The storage directory, absolute.
    pub fn storage_dir(&self, base: &Path) -> PathBuf {
        crate::tls::resolve(base, &self.storage)
    }
}

/// Whether `name` is made of a host name's characters (letters, digits, '-' and
/// '.'): no wildcard, no IP address, nothing that could leave a directory when
/// it becomes a file name.
pub fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// The certificate and key files in `storage`.
pub fn cert_files(storage: &Path) -> (PathBuf, PathBuf) {
    (storage.join("cert.pem"), storage.join("key.pem"))
}

/// The challenge certificate and key for `name` in `storage`.
pub fn challenge_files(storage: &Path, name: &str) -> (PathBuf, PathBuf) {
    let dir = storage.join("challenge");
    (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    )
}

/// The ACME process: keeps a valid certificate in storage, forever. Returns only
/// when it cannot run at all.
pub fn run(acme: AcmeConfig, base: PathBuf) -> i32 {
    crate::set_process_name("fe-php: acme");
    let storage = acme.storage_dir(&base);
    let ca_root = acme.ca_root.as_ref().map(|r| crate::tls::resolve(&base, r));
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("ACME: cannot start: {e}");
            return 1;
        }
    };
    rt.block_on(async move {
        let mut backoff = FIRST_BACKOFF;
        loop {
            match renew_if_due(&acme, &storage, ca_root.as_deref()).await {
                Ok(sleep) => {
                    backoff = FIRST_BACKOFF;
                    tokio::time::sleep(sleep).await;
                }
                Err(e) => {
                    tracing::error!(
                        "ACME: no certificate for {} from {}: {e}; trying again in {backoff:?}",
                        acme.domains.join(", "),
                        acme.directory
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    })
}

/// Obtains a certificate when there is none for every domain, or it expires
/// within `renew_before`; returns how long to sleep before looking again.
async fn renew_if_due(
    acme: &AcmeConfig,
    storage: &Path,
    ca_root: Option<&Path>,
) -> Result<Duration, String> {
    let (cert_path, key_path) = cert_files(storage);
    if let Some(left) = time_left(&cert_path, &acme.domains) {
        if left > acme.renew_before.0 {
            return Ok((left - acme.renew_before.0).min(MAX_SLEEP));
        }
        tracing::info!(
            "ACME: the certificate for {} expires in {}h: renewing",
            acme.domains.join(", "),
            left.as_secs() / 3600
        );
    }
    create_dir(storage)?;
    create_dir(&storage.join("challenge"))?;
    let account = account(acme, storage, ca_root).await?;
    let identifiers: Vec<Identifier> = acme
        .domains
        .iter()
        .map(|d| Identifier::Dns(d.clone()))
        .collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(|e| format!("the CA refused the order: {e}"))?;
    let mut written = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.map_err(|e| format!("cannot read an authorization: {e}"))?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => return Err(format!("an authorization is {other:?}")),
        }
        let mut challenge = authz
            .challenge(ChallengeType::TlsAlpn01)
            .ok_or("the CA offers no tls-alpn-01 challenge")?;
        let name = challenge.identifier().to_string();
        let digest = challenge.key_authorization().digest();
        let (pem, key) = challenge_cert(&name, digest.as_ref())?;
        let (pem_path, key_path) = challenge_files(storage, &name);
        write_file(&key_path, key.as_bytes(), 0o600)?;
        write_file(&pem_path, pem.as_bytes(), 0o644)?;
        written.push((pem_path, key_path));
        challenge
            .set_ready()
            .await
            .map_err(|e| format!("cannot tell the CA that {name} is ready: {e}"))?;
    }
    let status = order
        .poll_ready(&RetryPolicy::default())
        .await
        .map_err(|e| format!("the CA did not validate: {e}"));
    for (pem, key) in &written {
        let _ = std::fs::remove_file(pem);
        let _ = std::fs::remove_file(key);
    }
    match status? {
        OrderStatus::Ready => {}
        other => {
            return Err(format!(
                "the order is {other:?} after validation (the CA could not reach this server's TLS listener as {} on port 443, or the challenge certificate was not presented)",
                acme.domains.join(", ")
            ))
        }
    }
    let key_pem = order
        .finalize()
        .await
        .map_err(|e| format!("finalizing the order failed: {e}"))?;
    let chain = order
        .poll_certificate(&RetryPolicy::default())
        .await
        .map_err(|e| format!("the certificate did not arrive: {e}"))?;
    write_file(&key_path, key_pem.as_bytes(), 0o600)?;
    write_file(&cert_path, chain.as_bytes(), 0o644)?;
    let left = time_left(&cert_path, &acme.domains).unwrap_or_default();
    tracing::info!(
        "ACME: new certificate for {} (valid for {} more days); reloading",
        acme.domains.join(", "),
        left.as_secs() / 86400
    );
    // SAFETY: plain kill(2) of our parent, the master.
    unsafe { libc::kill(libc::getppid(), libc::SIGHUP) };
    Ok(left
        .saturating_sub(acme.renew_before.0)
        .clamp(Duration::from_secs(3600), MAX_SLEEP))
}

/// The account kept in `storage/account.json`, or a new one (saved there).
async fn account(
    acme: &AcmeConfig,
    storage: &Path,
    ca_root: Option<&Path>,
) -> Result<Account, String> {
    let builder = || match ca_root {
        Some(root) => Account::builder_with_root(root)
            .map_err(|e| format!("cannot use ca_root {}: {e}", root.display())),
        None => Account::builder().map_err(|e| format!("cannot make an HTTPS client: {e}")),
    };
    let saved = storage.join("account.json");
    if let Ok(text) = std::fs::read_to_string(&saved) {
        if let Ok(credentials) = serde_json::from_str::<AccountCredentials>(&text) {
            return builder()?
                .from_credentials(credentials)
                .await
                .map_err(|e| format!("the account in {} was refused: {e}", saved.display()));
        }
    }
    let contact: Vec<&str> = acme.contact.iter().map(String::as_str).collect();
    let (account, credentials) = builder()?
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            acme.directory.clone(),
            None,
        )
        .await
        .map_err(|e| format!("cannot create an account: {e}"))?;
    let text = serde_json::to_string(&credentials).map_err(|e| e.to_string())?;
    write_file(&saved, text.as_bytes(), 0o600)?;
    Ok(account)
}

/// A self-signed certificate for `name` carrying the acmeIdentifier extension
/// (RFC 8737): (certificate PEM, key PEM).
fn challenge_cert(name: &str, digest: &[u8]) -> Result<(String, String), String> {
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()])
        .map_err(|e| format!("cannot make the challenge certificate for {name}: {e}"))?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// How long the certificate in `path` stays valid, when it covers every one of
/// `domains`; None when it is missing, unreadable or for other names.
fn time_left(path: &Path, domains: &[String]) -> Option<Duration> {
    let pem = std::fs::read(path).ok()?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).ok()?;
    let cert = pem.parse_x509().ok()?;
    let names: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if !domains.iter().all(|d| names.iter().any(|n| n == d)) {
        return None;
    }
    let end = cert.validity().not_after.timestamp();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs() as i64;
    Some(Duration::from_secs(end.saturating_sub(now).max(0) as u64))
}

fn create_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

/// Writes `path` whole (a temporary file renamed over it), with `mode`.
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
