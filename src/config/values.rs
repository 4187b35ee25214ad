//! Values with a syntax of their own: durations (`"5s"`), sizes (`"64M"`), PHP-FPM
//! and upstream addresses, php.ini values, backend names.

use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Longest duration a timeout setting accepts.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// `"64M"` → (64, "M"), `"500 ms"` → (500, " ms"): the leading whole number and
/// what follows it; None without digits or past u64.
fn number_and_unit(text: &str) -> Option<(u64, &str)> {
    let t = text.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = t.split_at(digits);
    Some((number.parse().ok()?, unit))
}

/// A duration as the configuration writes it: a whole number with a unit,
/// `"500ms"`, `"5s"` or `"2m"` (like nginx's and php-fpm's own settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    /// Parses `"500ms"`, `"5s"`, `"2m"`; the error says what is accepted.
    pub fn parse(text: &str) -> Result<ConfigDuration, String> {
        let bad = || {
            format!("invalid duration \"{text}\": write a whole number with a unit, e.g. \"500ms\", \"5s\" or \"2m\"")
        };
        let (n, unit) = number_and_unit(text).ok_or_else(bad)?;
        let d = match unit.trim() {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            _ => return Err(bad()),
        };
        if d.is_zero() {
            return Err(format!(
                "invalid duration \"{text}\": it must be more than 0"
            ));
        }
        if d > MAX_DURATION {
            return Err(format!(
                "invalid duration \"{text}\": at most 24 hours (\"1440m\")"
            ));
        }
        Ok(ConfigDuration(d))
    }
}

impl fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms % 1000 == 0 {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl UnitValue for ConfigDuration {
    const EXPECTING: &'static str = "a duration with a unit, e.g. \"500ms\", \"5s\" or \"2m\"";

    fn parse(text: &str) -> Result<Self, String> {
        ConfigDuration::parse(text)
    }

    fn from_integer(v: i128) -> Result<Self, String> {
        Err(format!(
            "durations need a unit: write \"{v}s\" (or \"500ms\", \"2m\"), not {v}"
        ))
    }

    fn from_float(v: f64) -> Result<Self, String> {
        Err(format!(
            "durations need a unit: write e.g. \"500ms\" or \"5s\", not {v}"
        ))
    }
}

/// A size in bytes as the configuration writes it: a number of bytes (`65536` or
/// `"65536"`) or a whole number with a binary unit, `"16K"`, `"64M"`, `"1G"`
/// (like nginx's sizes and php.ini's; `k`, `m`, `g` work too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigSize(pub u64);

impl ConfigSize {
    /// Parses `"16K"`, `"64M"`, `"1G"` or `"4096"`; the error says what is accepted.
    pub fn parse(text: &str) -> Result<ConfigSize, String> {
        let bad = || {
            format!("invalid size \"{text}\": write a number of bytes or a whole number with K, M or G, e.g. \"16K\", \"64M\" or \"1G\"")
        };
        let (n, unit) = number_and_unit(text).ok_or_else(bad)?;
        let shift = match unit {
            "" => 0,
            "k" | "K" => 10,
            "m" | "M" => 20,
            "g" | "G" => 30,
            _ => return Err(bad()),
        };
        n.checked_mul(1 << shift)
            .map(ConfigSize)
            .ok_or_else(|| format!("invalid size \"{text}\": too large"))
    }
}

impl fmt::Display for ConfigSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (shift, unit) in [(30, "G"), (20, "M"), (10, "K")] {
            if n != 0 && n % (1 << shift) == 0 {
                return write!(f, "\"{}{unit}\"", n >> shift);
            }
        }
        write!(f, "{n}")
    }
}

impl UnitValue for ConfigSize {
    const EXPECTING: &'static str = "a size: a number of bytes or e.g. \"16K\", \"64M\", \"1G\"";

    fn parse(text: &str) -> Result<Self, String> {
        ConfigSize::parse(text)
    }

    fn from_integer(v: i128) -> Result<Self, String> {
        u64::try_from(v)
            .map(ConfigSize)
            .map_err(|_| format!("invalid size {v}: sizes cannot be negative"))
    }

    fn from_float(v: f64) -> Result<Self, String> {
        Err(format!(
            "invalid size {v}: write a whole number of bytes or e.g. \"1536K\""
        ))
    }
}

/// A value written as text with a unit (`"5s"`, `"64M"`), with its own answer to a
/// bare TOML number; one serde visitor serves every such type.
trait UnitValue: Sized {
    /// What the error for a wrong TOML type says was expected.
    const EXPECTING: &'static str;
    fn parse(text: &str) -> Result<Self, String>;
    fn from_integer(v: i128) -> Result<Self, String>;
    fn from_float(v: f64) -> Result<Self, String>;
}

struct UnitVisitor<T>(std::marker::PhantomData<T>);

impl<T: UnitValue> serde::de::Visitor<'_> for UnitVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
        T::parse(v).map_err(E::custom)
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<T, E> {
        T::from_integer(v.into()).map_err(E::custom)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<T, E> {
        T::from_integer(v.into()).map_err(E::custom)
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<T, E> {
        T::from_float(v).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UnitVisitor(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for ConfigSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UnitVisitor(std::marker::PhantomData))
    }
}

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
