//! `[server.tls]`: the listener speaks TLS (rustls, TLS 1.2 and 1.3) with one
//! certificate or several chosen by the name the client asks for (SNI), and
//! offers HTTP/2 by ALPN. Certificates are read when the host starts and at each
//! reload (the new workers get them; a file that cannot be used refuses the
//! reload and the old ones keep serving).

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One certificate chain and its key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertFiles {
    pub cert: String,
    pub key: String,
}

/// `[server.tls]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The certificate chain (PEM, leaf first), when there is one certificate.
    pub cert: Option<String>,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: Option<String>,
    /// More certificates; a client's SNI name picks the first that is valid for
    /// it, and `cert` (else the first of these) serves clients that name none
    /// or a name no certificate has.
    pub certificates: Vec<CertFiles>,
    /// Oldest protocol offered: "1.2" (default) or "1.3".
    pub min_version: String,
    /// Offer HTTP/2 (ALPN "h2") besides HTTP/1.1.
    pub http2: bool,
    /// A plain-HTTP address whose requests are all redirected to HTTPS.
    pub redirect_http: Option<String>,
    /// `[server.tls.acme]`: certificates from an ACME CA.
    pub acme: Option<crate::acme::AcmeConfig>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: None,
            key: None,
            certificates: Vec::new(),
            min_version: "1.2".to_owned(),
            http2: true,
            redirect_http: None,
            acme: None,
        }
    }
}

impl TlsConfig {
    /// Problems visible without reading files, one message each.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match (&self.cert, &self.key) {
            (Some(_), None) | (None, Some(_)) => problems.push(
                "[server.tls] needs both cert and key (the certificate chain and its private key, PEM files).".to_owned(),
            ),
            (None, None) if self.certificates.is_empty() && self.acme.is_none() => problems.push(
                "[server.tls] names no certificate: add cert = \"/path/fullchain.pem\" and key = \"/path/privkey.pem\" (or certificates = [{ cert = …, key = … }]), or remove [server.tls] to serve plain HTTP.".to_owned(),
            ),
            _ => {}
        }
        if let Some(acme) = &self.acme {
            problems.extend(acme.problems());
        }
        if !matches!(self.min_version.as_str(), "1.2" | "1.3") {
            problems.push(format!(
                "[server.tls] min_version = \"{}\" is not offered: use \"1.2\" (the default) or \"1.3\". Older versions are not safe.",
                self.min_version.escape_debug()
            ));
        }
        problems
    }

    /// The certificate files, the default one first (an ACME certificate, once
    /// obtained, then `cert`, then `certificates`).
    fn files(&self, base: &Path) -> Vec<CertFiles> {
        let mut all = Vec::new();
        if let Some(acme) = &self.acme {
            let (cert, key) = crate::acme::cert_files(&acme.storage_dir(base));
            if cert.exists() && key.exists() {
                all.push(CertFiles {
                    cert: cert.display().to_string(),
                    key: key.display().to_string(),
                });
            }
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            all.push(CertFiles {
                cert: cert.clone(),
                key: key.clone(),
            });
        }
        all.extend(self.certificates.iter().cloned());
        all
    }

    /// Reads every certificate and key (paths relative to `base`, the
    /// configuration file's directory) into a server configuration. Errors name
    /// the file and what is wrong with it.
    pub fn load(&self, base: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&'static rustls::SupportedProtocolVersion] = match self.min_version.as_str()
        {
            "1.3" => &[&rustls::version::TLS13],
            _ => &[&rustls::version::TLS13, &rustls::version::TLS12],
        };
        let mut certs = Vec::new();
        for files in self.files(base) {
            certs.push(load_pair(&files, base, &provider)?);
        }
        let acme_storage = self.acme.as_ref().map(|a| a.storage_dir(base));
        if certs.is_empty() && acme_storage.is_some() {
            tracing::info!("[server.tls.acme]: no certificate yet; TLS clients are refused until the ACME process has one");
        }
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| format!("[server.tls]: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(BySni {
                certs,
                acme_storage: acme_storage.clone(),
                provider,
            }));
        config.alpn_protocols = if self.http2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        if acme_storage.is_some() {
            // Only a validator asks for it (and gets the challenge certificate).
            config
                .alpn_protocols
                .push(crate::acme::ACME_TLS_ALPN.to_vec());
        }
        // The server's order of cipher suites (rustls's: AES-GCM, then
        // ChaCha20), not the client's, as testssl.sh asks of a server.
        config.ignore_client_order = true;
        // Stateless tickets and a session cache: returning clients skip the full
        // handshake.
        config.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
        config.ticketer = rustls::crypto::ring::Ticketer::new()
            .map_err(|e| format!("[server.tls]: cannot make session tickets: {e}"))?;
        Ok(Arc::new(config))
    }
}

/// `file` as a path: absolute, or relative to `base` (the configuration file's
/// directory).
pub fn resolve(base: &Path, file: &str) -> PathBuf {
    let p = Path::new(file);
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

fn load_pair(
    files: &CertFiles,
    base: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<Arc<CertifiedKey>, String> {
    load_pair_checked(files, base, provider, true)
}

/// `load_pair`; `parse_leaf`: check that webpki can read the certificate (not
/// for an ACME challenge certificate, whose critical acmeIdentifier extension
/// webpki does not know — only the validator reads it).
fn load_pair_checked(
    files: &CertFiles,
    base: &Path,
    provider: &rustls::crypto::CryptoProvider,
    parse_leaf: bool,
) -> Result<Arc<CertifiedKey>, String> {
    let cert_path = resolve(base, &files.cert);
    let key_path = resolve(base, &files.key);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|e| pem_error(&cert_path, "certificate", e))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error(&cert_path, "certificate", e))?;
    if chain.is_empty() {
        return Err(format!(
            "[server.tls] cert {}: no certificate in it (expected PEM blocks \"-----BEGIN CERTIFICATE-----\", the server's certificate first, then its intermediates)",
            cert_path.display()
        ));
    }
    if let (true, Err(e)) = (parse_leaf, webpki::EndEntityCert::try_from(&chain[0])) {
        return Err(format!(
            "[server.tls] cert {}: its first certificate cannot be parsed ({e:?})",
            cert_path.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| pem_error(&key_path, "private key", e))?;
    let signing = provider.key_provider.load_private_key(key).map_err(|e| {
        format!(
            "[server.tls] key {}: not a usable private key ({e}); use an RSA, ECDSA (P-256/P-384) or Ed25519 key in PEM",
            key_path.display()
        )
    })?;
    let certified = CertifiedKey::new(chain, signing);
    if let (true, Err(e)) = (parse_leaf, certified.keys_match()) {
        return Err(format!(
            "[server.tls] key {} does not belong to the certificate in {} ({e})",
            key_path.display(),
            cert_path.display()
        ));
    }
    Ok(Arc::new(certified))
}

fn pem_error(path: &Path, what: &str, e: rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error;
    let why = match e {
        Error::Io(e) => format!("cannot read it: {e}"),
        Error::NoItemsFound => format!("no {what} in it (expected a PEM file)"),
        other => format!("not a valid PEM {what} ({other:?})"),
    };
    let key = if what == "certificate" { "cert" } else { "key" };
    format!("[server.tls] {key} {}: {why}", path.display())
}

/// Picks the certificate for the client's SNI name: the first valid for it, else
/// the default (the first configured). An ACME validator (ALPN "acme-tls/1") gets
/// the challenge certificate the ACME process left in storage for that name.
#[derive(Debug)]
struct BySni {
    certs: Vec<Arc<CertifiedKey>>,
    acme_storage: Option<PathBuf>,
    /// Reads the challenge certificates' keys.
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl BySni {
    fn challenge(&self, storage: &Path, name: &str) -> Option<Arc<CertifiedKey>> {
        // The name becomes a file name: a host name's characters only.
        if !crate::acme::is_host_name(name) {
            return None;
        }
        let (cert, key) = crate::acme::challenge_files(storage, name);
        let files = CertFiles {
            cert: cert.display().to_string(),
            key: key.display().to_string(),
        };
        match load_pair_checked(&files, storage, &self.provider, false) {
            Ok(key) => Some(key),
            Err(e) => {
                tracing::warn!("an ACME validation for {name} found no challenge certificate: {e}");
                None
            }
        }
    }
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(storage) = &self.acme_storage {
            let validator = hello
                .alpn()
                .is_some_and(|mut p| p.any(|p| p == crate::acme::ACME_TLS_ALPN));
            if validator {
                return self.challenge(storage, hello.server_name().unwrap_or_default());
            }
        }
        if let Some(name) = hello
            .server_name()
            .and_then(|n| ServerName::try_from(n).ok())
        {
            for c in &self.certs {
                let Some(leaf) = c.end_entity_cert().ok() else {
                    continue;
                };
                if webpki::EndEntityCert::try_from(leaf)
                    .is_ok_and(|ee| ee.verify_is_valid_for_subject_name(&name).is_ok())
                {
                    return Some(c.clone());
                }
            }
        }
        self.certs.first().cloned()
    }
}

/// What PHP is told of a TLS connection.
#[derive(Debug)]
pub struct Facts {
    /// "TLSv1.3" (mod_ssl's `SSL_PROTOCOL`).
    pub protocol: String,
    /// "TLS_AES_128_GCM_SHA256" (`SSL_CIPHER`).
    pub cipher: String,
    /// The SNI name, empty without one (`SSL_TLS_SNI`).
    pub server_name: String,
}

/// The facts of an established connection.
pub fn describe(conn: &rustls::ServerConnection) -> Facts {
    let protocol = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
        Some(v) => format!("{v:?}"),
        None => String::new(),
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .and_then(|s| s.suite().as_str())
        .map(openssl_name)
        .unwrap_or_default()
        .to_owned();
    Facts {
        protocol,
        cipher,
        server_name: conn.server_name().unwrap_or_default().to_owned(),
    }
}

/// The OpenSSL name of a cipher suite (what mod_ssl puts in `SSL_CIPHER`) from
/// its IANA-style name as rustls gives it; other names pass unchanged.
fn openssl_name(iana: &str) -> &str {
    match iana {
        "TLS13_AES_128_GCM_SHA256" => "TLS_AES_128_GCM_SHA256",
        "TLS13_AES_256_GCM_SHA384" => "TLS_AES_256_GCM_SHA384",
        "TLS13_CHACHA20_POLY1305_SHA256" => "TLS_CHACHA20_POLY1305_SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => "ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => "ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => "ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => "ECDHE-RSA-AES128-GCM-SHA256",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => "ECDHE-RSA-AES256-GCM-SHA384",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => "ECDHE-RSA-CHACHA20-POLY1305",
        other => other,
    }
}
