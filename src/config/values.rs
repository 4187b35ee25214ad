//! Values with a syntax of their own: PHP-FPM and upstream addresses, php.ini
//! values, backend names; durations (`"5s"`) come from `fe-php-units`, shared
//! with fe-php-host.

use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;

pub use fe_php_units::{ConfigDuration, ConfigSize};

/// An upstream of the proxy backend, from `[backend.proxy] upstream(s)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamAddress {
    /// "127.0.0.1:9001", "[::1]:9001", "app.internal:80" (resolved when connecting).
    pub authority: String,
    pub host: String,
    pub port: u16,
}

impl UpstreamAddress {
    /// The accepted forms, for messages.
    pub const FORMS: &'static str = "\"http://127.0.0.1:9001\", \"http://[::1]:9001\" or \"http://app.internal:8080\" (http://, a host, optionally a port; no path)";

    /// Parses one upstream URL; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<UpstreamAddress, String> {
        let t = text.trim();
        let lower = t.to_ascii_lowercase();
        let rest = if lower.starts_with("http://") {
            &t[7..]
        } else if lower.starts_with("https://") {
            return Err("https upstreams are not supported: fe-php speaks plain HTTP to upstreams (terminate TLS in front of fe-php, or use http:// on a private network)".to_owned());
        } else if t.contains("://") {
            return Err("the scheme must be http://".to_owned());
        } else {
            return Err("it needs the scheme, e.g. http://127.0.0.1:9001".to_owned());
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return Err("an upstream names a server only, without a path: the request's own path and query are forwarded as the client sent them".to_owned());
        }
        if authority.contains('@') {
            return Err("user information (user@host) is not supported".to_owned());
        }
        let (host, port) = if let Some(after) = authority.strip_prefix('[') {
            let Some((v6, port)) = after.split_once(']') else {
                return Err("an IPv6 address needs its closing ']'".to_owned());
            };
            if v6.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("'{v6}' is not an IPv6 address"));
            }
            match port.strip_prefix(':') {
                Some(p) => (v6, Some(p)),
                None if port.is_empty() => (v6, None),
                None => return Err(format!("unexpected '{port}' after the IPv6 address")),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, _)) if h.contains(':') => {
                    return Err("write an IPv6 address in brackets".to_owned())
                }
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let valid_host = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'));
        if !valid_host {
            return Err(format!("'{host}' is not a host name or IP address"));
        }
        let port = match port {
            None => 80,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(format!("'{p}' is not a port (1-65535)")),
            },
        };
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(UpstreamAddress {
            authority,
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for UpstreamAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}", self.authority)
    }
}

/// Where PHP-FPM listens, from `[php] fpm_socket`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FpmAddress {
    /// "127.0.0.1:9000", "[::1]:9000" or "host:9000" (resolved when connecting).
    Tcp(String),
    /// "/run/php/php8.2-fpm.sock" or "unix:/run/php/php8.2-fpm.sock".
    Unix(PathBuf),
}

impl FpmAddress {
    /// The accepted forms, for messages.
    pub const FORMS: &'static str = "\"127.0.0.1:9000\", \"[::1]:9000\", \"localhost:9000\", \"/run/php/php8.2-fpm.sock\" or \"unix:/run/php/php8.2-fpm.sock\"";

    /// Parses a non-empty `fpm_socket`; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<FpmAddress, String> {
        let t = text.trim();
        if let Some(path) = t.strip_prefix("unix:") {
            return if path.starts_with('/') {
                Ok(FpmAddress::Unix(PathBuf::from(path)))
            } else {
                Err("a Unix socket path must be absolute".to_owned())
            };
        }
        if t.starts_with('/') {
            return Ok(FpmAddress::Unix(PathBuf::from(t)));
        }
        let (host, port) = if let Some(rest) = t.strip_prefix('[') {
            let Some((v6, port)) = rest.split_once(']') else {
                return Err("an IPv6 address needs its closing ']'".to_owned());
            };
            if v6.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("'{v6}' is not an IPv6 address"));
            }
            let Some(port) = port.strip_prefix(':') else {
                return Err("a TCP address needs a port".to_owned());
            };
            (v6, port)
        } else {
            match t.rsplit_once(':') {
                None if t.contains('/') || t.ends_with(".sock") => {
                    return Err("a Unix socket path must be absolute".to_owned())
                }
                None => return Err("a TCP address needs a port".to_owned()),
                Some((host, _)) if host.contains(':') => {
                    return Err("write an IPv6 address in brackets".to_owned())
                }
                Some((host, port)) => (host, port),
            }
        };
        let valid_host = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'));
        if !valid_host {
            return Err(format!("'{host}' is not a host name or IP address"));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => Ok(FpmAddress::Tcp(t.to_owned())),
            _ => Err(format!("'{port}' is not a port (1-65535)")),
        }
    }
}

impl fmt::Display for FpmAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FpmAddress::Tcp(a) => f.write_str(a),
            FpmAddress::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A php.ini value as TOML writes it: `memory_limit = "256M"`, `display_errors = false`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum IniValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
}

impl fmt::Display for IniValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IniValue::Bool(b) => f.write_str(if *b { "1" } else { "0" }),
            IniValue::Int(i) => write!(f, "{i}"),
            IniValue::Float(x) => write!(f, "{x}"),
            IniValue::String(s) => f.write_str(s),
        }
    }
}

/// The backends a rule can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    Embedded,
    FastCgi,
    Static,
    Proxy,
}

impl BackendKind {
    pub const ALL: [BackendKind; 4] = [
        BackendKind::Embedded,
        BackendKind::FastCgi,
        BackendKind::Static,
        BackendKind::Proxy,
    ];

    /// The names, for messages.
    pub const NAMES: &'static str = "\"embedded\", \"fastcgi\", \"static\" or \"proxy\"";

    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Embedded => "embedded",
            BackendKind::FastCgi => "fastcgi",
            BackendKind::Static => "static",
            BackendKind::Proxy => "proxy",
        }
    }

    pub fn from_name(name: &str) -> Option<BackendKind> {
        match name {
            "embedded" => Some(BackendKind::Embedded),
            "fastcgi" => Some(BackendKind::FastCgi),
            "static" => Some(BackendKind::Static),
            "proxy" => Some(BackendKind::Proxy),
            _ => None,
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
