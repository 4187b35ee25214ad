//! Settings: the TOML file as typed structs (serde), and the validation that decides
//! which backends are available. Runtime state lives elsewhere (`engine`).

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default `[php] libphp_path`.
pub const DEFAULT_LIBPHP_PATH: &str = "/usr/lib/libphp.so";
/// Default `[server] listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default `[php] fpm_max_connections` (per worker process).
pub const DEFAULT_FPM_MAX_CONNECTIONS: usize = 8;
/// Upper bound of `[php] fpm_max_connections`.
pub const MAX_FPM_MAX_CONNECTIONS: usize = 1024;
/// Longest duration a timeout setting accepts.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub backend: BackendConfig,
    pub php: PhpConfig,
}

/// `[server]`: settings for hosts that own the socket (`fe-php-host`); an embedding
/// server such as nginx ignores them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Worker processes; 0 means one per CPU core.
    pub workers: usize,
    pub listen: String,
    /// Access log in combined log format: "-" (stdout), "off", or a file path.
    pub access_log: String,
    /// Longest time to receive a request's head, counted from its first byte (from
    /// the connection's start for the first request); exceeded → 408 and close.
    pub header_read_timeout: ConfigDuration,
    /// Longest wait between two reads of a request body (nginx's
    /// `client_body_timeout`); exceeded → 408 and close.
    pub body_read_timeout: ConfigDuration,
    /// How long an idle keep-alive connection waits for its next request.
    pub keepalive_timeout: ConfigDuration,
    /// Longest wait for a client to take more of a response (nginx's
    /// `send_timeout`); exceeded → the connection closes, and a PHP script still
    /// writing to it ends as when the client leaves.
    pub send_timeout: ConfigDuration,
    /// Largest request head (request line and headers); larger → 431.
    pub max_header_size: ConfigSize,
    /// Largest request body; larger → 413.
    pub max_body_size: ConfigSize,
    /// Connections one worker process serves at once; at the limit it stops accepting
    /// and its listening socket's backlog holds new connections.
    pub max_connections: usize,
    /// User the worker processes run as: the master starts as root, binds the
    /// socket, and workers drop to this user before serving. Unset: no change.
    pub user: Option<String>,
    /// Group of the workers; unset: the user's primary group. Needs `user`.
    pub group: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            workers: 0,
            listen: DEFAULT_LISTEN.to_owned(),
            access_log: "-".to_owned(),
            header_read_timeout: ConfigDuration(Duration::from_secs(10)),
            body_read_timeout: ConfigDuration(Duration::from_secs(60)),
            keepalive_timeout: ConfigDuration(Duration::from_secs(75)),
            send_timeout: ConfigDuration(Duration::from_secs(60)),
            max_header_size: ConfigSize(DEFAULT_MAX_HEADER_SIZE),
            max_body_size: ConfigSize(DEFAULT_MAX_BODY_SIZE),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            user: None,
            group: None,
        }
    }
}

/// Default `[server] max_header_size`: more than the largest header php-fpm takes
/// (64 KiB, one FastCGI record), so any header PHP can receive gets through.
pub const DEFAULT_MAX_HEADER_SIZE: u64 = 128 << 10;
/// Accepted range of `[server] max_header_size`.
pub const MAX_HEADER_SIZE_RANGE: std::ops::RangeInclusive<u64> = (1 << 10)..=(1 << 20);
/// Default `[server] max_body_size` (bodies are held in memory before PHP runs).
pub const DEFAULT_MAX_BODY_SIZE: u64 = 64 << 20;
/// Default `[server] max_connections` (per worker process).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Upper bound of `[server] max_connections`.
pub const MAX_MAX_CONNECTIONS: usize = 1_000_000;

/// `[backend]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackendConfig {
    pub enable_hybrid: bool,
    /// Backend for requests no rule matches. Unset: "embedded" in hybrid mode, the
    /// selected PHP backend otherwise.
    pub default_backend: Option<String>,
    pub static_files: StaticFilesConfig,
    pub routing_rules: Vec<RoutingRule>,
    /// Path answered by the engine with the health JSON; "" disables it.
    pub health_path: String,
    /// Path answered by the engine with Prometheus metrics; "" disables it.
    pub metrics_path: String,
    /// `[backend.proxy]`: the HTTP upstreams of the `proxy` backend.
    pub proxy: ProxyConfig,
    /// `[backend.split]`: settings shared by the rules that split traffic.
    pub split: SplitConfig,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            enable_hybrid: true,
            default_backend: None,
            static_files: StaticFilesConfig::default(),
            routing_rules: Vec::new(),
            health_path: "/_health".to_owned(),
            metrics_path: "/_metrics".to_owned(),
            proxy: ProxyConfig::default(),
            split: SplitConfig::default(),
        }
    }
}

/// Default `[backend.proxy] max_connections` (per upstream, per worker process).
pub const DEFAULT_PROXY_MAX_CONNECTIONS: usize = 256;
/// Upper bound of `[backend.proxy] max_connections`.
pub const MAX_PROXY_MAX_CONNECTIONS: usize = 65_536;
/// Default `[backend.split] cookie`.
pub const DEFAULT_SPLIT_COOKIE: &str = "fephp_arm";
/// Largest weight of one split arm.
pub const MAX_SPLIT_WEIGHT: u32 = 1_000_000;

/// `[backend.proxy]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// One upstream server, "http://host:port".
    pub upstream: Option<String>,
    /// Several upstream servers, taken in turn (round-robin).
    pub upstreams: Vec<String>,
    /// How long connecting to an upstream may take; exceeded → 504.
    pub connect_timeout: ConfigDuration,
    /// Longest silence from an upstream: for the response head after the request
    /// was sent, and between two reads of the body; exceeded → 504.
    pub read_timeout: ConfigDuration,
    /// Idle kept-alive connections are closed after this long; keep it below the
    /// upstream's own keep-alive timeout.
    pub idle_timeout: ConfigDuration,
    /// Requests in flight to one upstream per worker process (each holds one
    /// connection); also the most idle connections kept to it.
    pub max_connections: usize,
    /// Failures (connect errors, resets, timeouts) within `fail_timeout` that take
    /// an upstream out of the rotation for `fail_timeout`; 0 never does.
    pub max_fails: u32,
    pub fail_timeout: ConfigDuration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            upstream: None,
            upstreams: Vec::new(),
            connect_timeout: ConfigDuration(Duration::from_secs(5)),
            read_timeout: ConfigDuration(Duration::from_secs(60)),
            idle_timeout: ConfigDuration(Duration::from_secs(4)),
            max_connections: DEFAULT_PROXY_MAX_CONNECTIONS,
            max_fails: 1,
            fail_timeout: ConfigDuration(Duration::from_secs(10)),
        }
    }
}

impl ProxyConfig {
    /// The upstreams as written (`upstream` or `upstreams`).
    pub fn upstream_list(&self) -> Vec<&str> {
        match &self.upstream {
            Some(u) => vec![u.as_str()],
            None => self.upstreams.iter().map(String::as_str).collect(),
        }
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

/// `[backend.split]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SplitConfig {
    /// Cookie that keeps a client on its arm (rules with `sticky = "cookie"` that
    /// name no cookie of their own).
    pub cookie: String,
    /// Response header naming the arm that answered; unset: none.
    pub expose_header: Option<String>,
}

impl Default for SplitConfig {
    fn default() -> Self {
        SplitConfig {
            cookie: DEFAULT_SPLIT_COOKIE.to_owned(),
            expose_header: None,
        }
    }
}

/// One arm of `split = [{ backend = "embedded", weight = 90 }, …]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitArm {
    pub backend: String,
    pub weight: u32,
}

/// How a split rule keeps a client on its arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sticky {
    /// A cookie names the arm; a client without a valid one is assigned by weight.
    #[default]
    Cookie,
    /// A hash of the client's IP address picks the arm.
    ClientAddr,
    /// Every request is assigned by weight.
    None,
}

/// `[backend.static_files]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StaticFilesConfig {
    pub enable: bool,
    pub root: PathBuf,
    pub index_files: Vec<String>,
}

impl Default for StaticFilesConfig {
    fn default() -> Self {
        StaticFilesConfig {
            enable: false,
            root: PathBuf::new(),
            index_files: vec!["index.html".to_owned(), "index.htm".to_owned()],
        }
    }
}

/// `[[backend.routing_rules]]`: a pattern and either one `backend` or a `split`
/// of traffic between several.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingRule {
    pub pattern: Pattern,
    #[serde(default)]
    pub backend: Option<String>,
    #[serde(default)]
    pub split: Option<Vec<SplitArm>>,
    /// Split rules only: how a client stays on its arm (default: cookie).
    #[serde(default)]
    pub sticky: Option<Sticky>,
    /// Split rules with `sticky = "cookie"`: the cookie's name (default:
    /// `[backend.split] cookie`).
    #[serde(default)]
    pub cookie: Option<String>,
    #[serde(default)]
    pub priority: i32,
}

impl RoutingRule {
    #[cfg_attr(not(feature = "internals"), allow(dead_code))]
    /// A rule sending `pattern` to one backend.
    pub fn new(kind: PatternKind, value: &str, backend: &str, priority: i32) -> RoutingRule {
        RoutingRule {
            pattern: Pattern {
                kind,
                value: value.to_owned(),
            },
            backend: Some(backend.to_owned()),
            split: None,
            sticky: None,
            cookie: None,
            priority,
        }
    }

    /// The backend `fephp_route` reports: the rule's backend, or for a split the
    /// arm with the largest weight (the first of equal ones).
    pub fn primary_backend(&self) -> Option<&str> {
        match (&self.backend, &self.split) {
            (Some(b), _) => Some(b),
            (None, Some(arms)) => arms
                .iter()
                .rev()
                .max_by_key(|a| a.weight)
                .map(|a| a.backend.as_str()),
            (None, None) => None,
        }
    }
}

/// `pattern = { type = "prefix", value = "/api/" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pattern {
    #[serde(rename = "type")]
    pub kind: PatternKind,
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PatternKind {
    Exact,
    Prefix,
    Suffix,
    Regex,
}

impl fmt::Display for PatternKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PatternKind::Exact => "exact",
            PatternKind::Prefix => "prefix",
            PatternKind::Suffix => "suffix",
            PatternKind::Regex => "regex",
        })
    }
}

/// `[php]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PhpConfig {
    pub libphp_path: PathBuf,
    /// "host:port", "[v6]:port", "/path.sock" or "unix:/path.sock"; "" = not configured.
    pub fpm_socket: String,
    /// Non-hybrid mode only: true selects FastCGI, false embedded.
    pub use_fpm: bool,
    /// Where PHP scripts live; defaults to the static root.
    pub document_root: Option<PathBuf>,
    /// Script that receives requests matching no file (e.g. "index.php").
    pub front_controller: Option<String>,
    /// Connections to PHP-FPM one worker process may hold (busy and idle together).
    /// Keep `workers × fpm_max_connections` ≤ the pool's `pm.max_children`: an open
    /// connection holds a php-fpm child even while idle.
    pub fpm_max_connections: usize,
    /// How long connecting to PHP-FPM may take.
    pub fpm_connect_timeout: ConfigDuration,
    /// Longest silence from PHP-FPM between two reads of a response.
    pub fpm_read_timeout: ConfigDuration,
    /// Longest wait for PHP-FPM to take more of the request.
    pub fpm_send_timeout: ConfigDuration,
    /// Idle pooled connections are closed after this long.
    pub fpm_idle_timeout: ConfigDuration,
    /// Health probe: request this path (e.g. php-fpm's `ping.path`) instead of
    /// FCGI_GET_VALUES.
    pub fpm_ping_path: Option<String>,
    /// php.ini overrides.
    pub ini: BTreeMap<String, IniValue>,
}

impl Default for PhpConfig {
    fn default() -> Self {
        PhpConfig {
            libphp_path: PathBuf::from(DEFAULT_LIBPHP_PATH),
            fpm_socket: String::new(),
            use_fpm: false,
            document_root: None,
            front_controller: None,
            fpm_max_connections: DEFAULT_FPM_MAX_CONNECTIONS,
            fpm_connect_timeout: ConfigDuration(Duration::from_secs(5)),
            fpm_read_timeout: ConfigDuration(Duration::from_secs(60)),
            fpm_send_timeout: ConfigDuration(Duration::from_secs(60)),
            fpm_idle_timeout: ConfigDuration(Duration::from_secs(30)),
            fpm_ping_path: None,
            ini: BTreeMap::new(),
        }
    }
}

/// A duration as the configuration writes it: a whole number with a unit,
/// `"500ms"`, `"5s"` or `"2m"` (like nginx's and php-fpm's own settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    /// Parses `"500ms"`, `"5s"`, `"2m"`; the error says what is accepted.
    pub fn parse(text: &str) -> Result<ConfigDuration, String> {
        let t = text.trim();
        let digits = t.bytes().take_while(u8::is_ascii_digit).count();
        let (number, unit) = t.split_at(digits);
        let bad = || {
            format!("invalid duration \"{text}\": write a whole number with a unit, e.g. \"500ms\", \"5s\" or \"2m\"")
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
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

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ConfigDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration with a unit, e.g. \"500ms\", \"5s\" or \"2m\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ConfigDuration, E> {
                ConfigDuration::parse(v).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ConfigDuration, E> {
                Err(E::custom(format!(
                    "durations need a unit: write \"{v}s\" (or \"500ms\", \"2m\"), not {v}"
                )))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<ConfigDuration, E> {
                Err(E::custom(format!(
                    "durations need a unit: write e.g. \"500ms\" or \"5s\", not {v}"
                )))
            }
        }
        d.deserialize_any(Visitor)
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
        let t = text.trim();
        let digits = t.bytes().take_while(u8::is_ascii_digit).count();
        let (number, unit) = t.split_at(digits);
        let bad = || {
            format!("invalid size \"{text}\": write a number of bytes or a whole number with K, M or G, e.g. \"16K\", \"64M\" or \"1G\"")
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
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

impl<'de> Deserialize<'de> for ConfigSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ConfigSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: a number of bytes or e.g. \"16K\", \"64M\", \"1G\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ConfigSize, E> {
                ConfigSize::parse(v).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ConfigSize, E> {
                u64::try_from(v)
                    .map(ConfigSize)
                    .map_err(|_| E::custom(format!("invalid size {v}: sizes cannot be negative")))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ConfigSize, E> {
                Ok(ConfigSize(v))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<ConfigSize, E> {
                Err(E::custom(format!(
                    "invalid size {v}: write a whole number of bytes or e.g. \"1536K\""
                )))
            }
        }
        d.deserialize_any(Visitor)
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

/// The directory the process was in when it first read a configuration; PHP
/// requests change the working directory later, so relative paths are taken
/// against this one.
static START_DIR: once_cell::sync::Lazy<PathBuf> =
    once_cell::sync::Lazy::new(|| std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")));

/// `path` made absolute against the start directory ("" stays empty).
pub fn absolute(path: &Path) -> PathBuf {
    if path.as_os_str().is_empty() || path.is_absolute() {
        path.to_owned()
    } else {
        START_DIR.join(path)
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

/// A configuration that cannot be used. `Display` gives every problem, one per
/// paragraph, each naming the cause and the fix.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problems.join("\n"))
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn one(msg: String) -> Self {
        ConfigError {
            problems: vec![msg],
        }
    }
}

/// Which backends this build of the library contains. The engine passes the real
/// answer; tests pass whatever they need.
#[derive(Debug, Clone, Copy)]
pub struct Built {
    pub embedded: bool,
    pub fastcgi: bool,
}

/// Why a backend is not available (shown in `/_health` and in errors).
#[derive(Debug, Clone, PartialEq)]
pub enum Availability {
    Available,
    Unavailable(String),
}

impl Availability {
    pub fn is_available(&self) -> bool {
        matches!(self, Availability::Available)
    }
}

/// The outcome of validation: which backends serve, and the `[i]` lines to show.
#[derive(Debug, Clone)]
pub struct Validated {
    pub config: Config,
    pub embedded: Availability,
    pub fastcgi: Availability,
    pub static_files: Availability,
    pub proxy: Availability,
    pub default_backend: BackendKind,
    /// Informational lines in the seed's format (`[i] …`), in order.
    pub messages: Vec<String>,
}

impl Validated {
    pub fn availability(&self, kind: BackendKind) -> &Availability {
        match kind {
            BackendKind::Embedded => &self.embedded,
            BackendKind::FastCgi => &self.fastcgi,
            BackendKind::Static => &self.static_files,
            BackendKind::Proxy => &self.proxy,
        }
    }

    /// The directory PHP scripts are resolved in.
    pub fn php_document_root(&self) -> Option<&Path> {
        self.config.php.document_root.as_deref().or_else(|| {
            let s = &self.config.backend.static_files;
            (!s.root.as_os_str().is_empty()).then_some(s.root.as_path())
        })
    }
}

impl ServerConfig {
    /// What is wrong with the `[server]` limits and identity, one message each.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !MAX_HEADER_SIZE_RANGE.contains(&self.max_header_size.0) {
            problems.push(format!(
                "[server] max_header_size = {} is out of range: use \"1K\" to \"1M\".\n    It bounds the request line and headers together; the default is \"128K\".",
                self.max_header_size
            ));
        }
        if self.max_body_size.0 == 0 {
            problems.push("[server] max_body_size = 0 is out of range: use at least 1 byte, e.g. \"64M\".\n    Bodies are held in memory before the backend runs, so there is no \"unlimited\".".to_owned());
        }
        if self.max_connections == 0 || self.max_connections > MAX_MAX_CONNECTIONS {
            problems.push(format!(
                "[server] max_connections = {} is out of range: use 1 to {MAX_MAX_CONNECTIONS}.\n    It bounds the connections each worker process serves at once.",
                self.max_connections
            ));
        }
        for (key, value) in [("user", &self.user), ("group", &self.group)] {
            if let Some(name) = value {
                if name.is_empty() || name.bytes().any(|b| b <= b' ' || b == b':' || b == 0x7f) {
                    problems.push(format!(
                        "[server] {key} \"{}\" is not a {key} name.\n    Name an existing {key}, e.g. {key} = \"www-data\", or remove the key.",
                        name.escape_debug()
                    ));
                }
            }
        }
        if self.group.is_some() && self.user.is_none() {
            problems.push("[server] group is set without [server] user.\n    Workers change their group together with their user: add user = \"www-data\" (group defaults to the user's own).".to_owned());
        }
        problems
    }
}

impl Config {
    /// Parses TOML text. Unknown keys and wrong types are errors naming the key and line.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::one(format!("invalid configuration: {e}")))
    }

    /// Reads and parses a file; errors name the file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let path = &absolute(path);
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::one(format!(
                "cannot read configuration file {}: {e}\n    Check the path given to --config (or fephp_init) and its permissions.",
                path.display()
            ))
        })?;
        toml::from_str(&text).map_err(|e| {
            ConfigError::one(format!(
                "invalid configuration file {}: {e}",
                path.display()
            ))
        })
    }

    /// Decides which backends are available and checks every rule against them.
    pub fn validate(mut self, built: Built) -> Result<Validated, ConfigError> {
        // Relative paths mean relative to where the process started: the PHP thread
        // moves the working directory to each script's directory.
        for p in [
            &mut self.backend.static_files.root,
            &mut self.php.libphp_path,
        ] {
            *p = absolute(p);
        }
        if let Some(p) = &mut self.php.document_root {
            *p = absolute(p);
        }
        let mut messages = Vec::new();
        let mut problems = Vec::new();
        let php = &self.php;
        let libphp_found = php.libphp_path.is_file();
        let fpm_configured = !php.fpm_socket.trim().is_empty();
        let libphp_missing = format!(
            "[i] libphp.so not found at: {}.\n    Embedded backend will not be available (FastCGI/Static only mode)",
            php.libphp_path.display()
        );
        let fpm_missing = "[i] fpm_socket not configured.\n    FastCGI backend will not be available (Embedded/Static only mode)".to_owned();

        let (embedded, fastcgi) = if self.backend.enable_hybrid {
            let embedded = if !libphp_found {
                messages.push(libphp_missing);
                Availability::Unavailable(format!(
                    "libphp.so not found at: {}",
                    php.libphp_path.display()
                ))
            } else if !built.embedded {
                messages.push("[i] Embedded backend is not built yet in this version of fe-php.\n    Embedded backend will not be available (FastCGI/Static only mode)".to_owned());
                Availability::Unavailable("embedded backend is not built yet".to_owned())
            } else {
                Availability::Available
            };
            let fastcgi = if !fpm_configured {
                messages.push(fpm_missing);
                Availability::Unavailable("fpm_socket not configured".to_owned())
            } else if !built.fastcgi {
                messages.push("[i] FastCGI backend is not built yet in this version of fe-php.\n    FastCGI backend will not be available (Embedded/Static only mode)".to_owned());
                Availability::Unavailable("FastCGI backend is not built yet".to_owned())
            } else {
                Availability::Available
            };
            (embedded, fastcgi)
        } else if php.use_fpm {
            let fastcgi = if !fpm_configured {
                problems.push("[php] fpm_socket is required when enable_hybrid = false and use_fpm = true.\n    Set fpm_socket = \"127.0.0.1:9000\" (or the php-fpm socket path), or set use_fpm = false to use the embedded backend.".to_owned());
                Availability::Unavailable("fpm_socket not configured".to_owned())
            } else if !built.fastcgi {
                problems.push("FastCGI backend is not built yet in this version of fe-php (use_fpm = true).\n    Use enable_hybrid = true with the static backend until it is.".to_owned());
                Availability::Unavailable("FastCGI backend is not built yet".to_owned())
            } else {
                Availability::Available
            };
            (
                Availability::Unavailable(
                    "not selected: enable_hybrid = false and use_fpm = true".to_owned(),
                ),
                fastcgi,
            )
        } else {
            let embedded = if !libphp_found {
                problems.push(format!(
                    "libphp.so not found at: {} (required when enable_hybrid = false and use_fpm = false).\n    Install it (apt-get install libphp8.2-embed), set [php] libphp_path, or set use_fpm = true with fpm_socket.",
                    php.libphp_path.display()
                ));
                Availability::Unavailable(format!(
                    "libphp.so not found at: {}",
                    php.libphp_path.display()
                ))
            } else if !built.embedded {
                problems.push("Embedded backend is not built yet in this version of fe-php (use_fpm = false).\n    Use enable_hybrid = true with the static backend until it is.".to_owned());
                Availability::Unavailable("embedded backend is not built yet".to_owned())
            } else {
                Availability::Available
            };
            (
                embedded,
                Availability::Unavailable(
                    "not selected: enable_hybrid = false and use_fpm = false".to_owned(),
                ),
            )
        };

        let sf = &self.backend.static_files;
        let static_files = if !sf.enable {
            Availability::Unavailable(
                "static backend disabled ([backend.static_files] enable = false)".to_owned(),
            )
        } else if sf.root.as_os_str().is_empty() {
            problems.push("[backend.static_files] root is required when enable = true.\n    Set root = \"/absolute/path/to/public\".".to_owned());
            Availability::Unavailable("no root".to_owned())
        } else if !sf.root.is_dir() {
            problems.push(format!(
                "[backend.static_files] root {} is not a readable directory.\n    Use an absolute path to an existing directory (chmod 755 it if needed).",
                sf.root.display()
            ));
            Availability::Unavailable(format!("root {} is not a directory", sf.root.display()))
        } else {
            Availability::Available
        };

        let px = &self.backend.proxy;
        let upstreams = px.upstream_list();
        if px.upstream.is_some() && !px.upstreams.is_empty() {
            problems.push("[backend.proxy] has both upstream and upstreams.\n    Use upstream = \"http://127.0.0.1:9001\" for one server, or upstreams = [\"http://127.0.0.1:9001\", \"http://127.0.0.1:9002\"] for several, not both.".to_owned());
        }
        for u in &upstreams {
            if let Err(why) = UpstreamAddress::parse(u) {
                let key = if px.upstream.is_some() {
                    "upstream"
                } else {
                    "upstreams"
                };
                problems.push(format!(
                    "[backend.proxy] {key} \"{u}\" is not an upstream URL: {why}.\n    Use {}.",
                    UpstreamAddress::FORMS
                ));
            }
        }
        if px.max_connections == 0 || px.max_connections > MAX_PROXY_MAX_CONNECTIONS {
            problems.push(format!(
                "[backend.proxy] max_connections = {} is out of range: use 1 to {MAX_PROXY_MAX_CONNECTIONS}.\n    It bounds the requests each worker process has in flight to one upstream (one connection each).",
                px.max_connections
            ));
        }
        let proxy = if upstreams.iter().all(|u| u.trim().is_empty()) {
            Availability::Unavailable(
                "no upstream configured ([backend.proxy] upstream)".to_owned(),
            )
        } else {
            Availability::Available
        };

        let availability = |k: BackendKind| match k {
            BackendKind::Embedded => &embedded,
            BackendKind::FastCgi => &fastcgi,
            BackendKind::Static => &static_files,
            BackendKind::Proxy => &proxy,
        };
        let how_to_enable = |k: BackendKind| {
            match k {
            BackendKind::Embedded => {
                "install libphp (apt-get install libphp8.2-embed) and set [php] libphp_path"
            }
            BackendKind::FastCgi => {
                "set [php] fpm_socket = \"127.0.0.1:9000\" (or the php-fpm socket path)"
            }
            BackendKind::Static => {
                "set [backend.static_files] enable = true and root = \"/var/www/public\""
            }
            BackendKind::Proxy => {
                "set [backend.proxy] upstream = \"http://127.0.0.1:9001\" (the HTTP server to forward to)"
            }
        }
        };

        let default_name = self.backend.default_backend.clone().unwrap_or_else(|| {
            if !self.backend.enable_hybrid && php.use_fpm {
                "fastcgi"
            } else {
                "embedded"
            }
            .to_owned()
        });
        let default_backend = match BackendKind::from_name(&default_name) {
            Some(k) if availability(k).is_available() => k,
            known => {
                let fix = match known {
                    Some(k) => format!(
                        "To use it, {}; or choose another default_backend.",
                        how_to_enable(k)
                    ),
                    None => format!("Use default_backend = {}.", BackendKind::NAMES),
                };
                problems.push(format!(
                    "Default backend '{default_name}' is not registered\n    {fix}"
                ));
                known.unwrap_or(BackendKind::Static)
            }
        };

        let check_backend = |problems: &mut Vec<String>, what: &str, name: &str| {
            match BackendKind::from_name(name) {
            None => problems.push(format!(
                "{what} uses backend '{name}', which is unknown.\n    Use backend = {}.",
                BackendKind::NAMES
            )),
            Some(k) if !availability(k).is_available() => problems.push(format!(
                "{what} uses backend '{name}', which is not registered.\n    To use it, {}; or route this rule to another backend.",
                how_to_enable(k)
            )),
            Some(_) => {}
        }
        };
        // Cookie name → the first split rule keeping its arm in it.
        let mut cookies: BTreeMap<String, usize> = BTreeMap::new();
        for (i, rule) in self.backend.routing_rules.iter().enumerate() {
            let n = i + 1;
            let what = format!(
                "Routing rule #{n} ({} \"{}\")",
                rule.pattern.kind, rule.pattern.value
            );
            match (&rule.backend, &rule.split) {
                (Some(_), Some(_)) => problems.push(format!(
                    "{what} has both backend and split.\n    Use backend = \"embedded\" to send it to one backend, or split = [{{ backend = \"embedded\", weight = 90 }}, {{ backend = \"fastcgi\", weight = 10 }}] to divide its traffic, not both."
                )),
                (None, None) => problems.push(format!(
                    "{what} names no backend.\n    Add backend = \"embedded\" (or {}), or split = [{{ backend = \"embedded\", weight = 90 }}, {{ backend = \"fastcgi\", weight = 10 }}].",
                    BackendKind::NAMES
                )),
                (Some(b), None) => {
                    check_backend(&mut problems, &what, b);
                    if rule.sticky.is_some() || rule.cookie.is_some() {
                        problems.push(format!(
                            "{what} sets sticky or cookie without split.\n    They choose how a client stays on its arm of a split = [...]; remove them, or replace backend with a split."
                        ));
                    }
                }
                (None, Some(arms)) => {
                    if arms.is_empty() {
                        problems.push(format!(
                            "{what} has an empty split.\n    List the arms with their weights: split = [{{ backend = \"embedded\", weight = 90 }}, {{ backend = \"fastcgi\", weight = 10 }}]."
                        ));
                    }
                    for (j, arm) in arms.iter().enumerate() {
                        let arm_what = format!("{what} split arm #{}", j + 1);
                        check_backend(&mut problems, &arm_what, &arm.backend);
                        if arm.weight == 0 || arm.weight > MAX_SPLIT_WEIGHT {
                            problems.push(format!(
                                "{arm_what} (backend '{}') has weight {}: weights must be positive whole numbers up to {MAX_SPLIT_WEIGHT}.\n    Each arm gets weight / (sum of weights) of the traffic, e.g. weight = 90 and weight = 10.",
                                arm.backend, arm.weight
                            ));
                        }
                        if arms[..j].iter().any(|a| a.backend == arm.backend) {
                            problems.push(format!(
                                "{arm_what} names backend '{}' again.\n    Give each backend one arm and add up the weights.",
                                arm.backend
                            ));
                        }
                    }
                    let sticky = rule.sticky.unwrap_or_default();
                    if rule.cookie.is_some() && sticky != Sticky::Cookie {
                        problems.push(format!(
                            "{what} sets cookie with sticky = \"{}\".\n    The cookie is only used with sticky = \"cookie\"; remove it or change sticky.",
                            sticky.name()
                        ));
                    }
                    if sticky == Sticky::Cookie {
                        let name = rule.cookie.as_deref().unwrap_or(&self.backend.split.cookie);
                        // The default cookie's name is checked once, below.
                        if rule.cookie.is_some() && !is_token(name) {
                            problems.push(format!(
                                "{what}: cookie \"{}\" is not a cookie name.\n    Use letters, digits and - _ . only, e.g. cookie = \"fephp_arm\".",
                                name.escape_debug()
                            ));
                        } else if let Some(first) = cookies.get(name) {
                            problems.push(format!(
                                "{what} keeps its arm in cookie '{name}', like routing rule #{first}.\n    Give one of them its own cookie = \"fephp_arm_{n}\": one cookie cannot hold the arms of two splits."
                            ));
                        } else {
                            cookies.insert(name.to_owned(), n);
                        }
                    }
                }
            }
            match rule.pattern.kind {
                PatternKind::Regex => {
                    if let Err(e) = regex::Regex::new(&rule.pattern.value) {
                        problems.push(format!(
                            "Routing rule #{n}: invalid regex '{}': {e}",
                            rule.pattern.value
                        ));
                    }
                }
                PatternKind::Exact | PatternKind::Prefix => {
                    if !rule.pattern.value.starts_with('/') {
                        problems.push(format!(
                            "{what}: the value must start with '/'; rules match the normalized request path."
                        ));
                    }
                }
                PatternKind::Suffix => {
                    if rule.pattern.value.is_empty() {
                        problems.push(format!("{what}: the value must not be empty."));
                    }
                }
            }
        }

        if let Some(fc) = &php.front_controller {
            if fc.is_empty() || fc.contains("..") || fc.as_bytes().contains(&0) {
                problems.push(format!(
                    "[php] front_controller '{fc}' is not a script path inside the document root.\n    Use e.g. front_controller = \"index.php\"."
                ));
            }
        }
        if fpm_configured {
            if let Err(why) = FpmAddress::parse(&php.fpm_socket) {
                problems.push(format!(
                    "[php] fpm_socket \"{}\" is not a PHP-FPM address: {why}.\n    Use {}.",
                    php.fpm_socket,
                    FpmAddress::FORMS
                ));
            }
        }
        if php.fpm_max_connections == 0 || php.fpm_max_connections > MAX_FPM_MAX_CONNECTIONS {
            problems.push(format!(
                "[php] fpm_max_connections = {} is out of range: use 1 to {MAX_FPM_MAX_CONNECTIONS}.\n    It bounds the connections each worker process opens to PHP-FPM; keep workers × fpm_max_connections ≤ the pool's pm.max_children.",
                php.fpm_max_connections
            ));
        }
        if let Some(p) = &php.fpm_ping_path {
            if !p.starts_with('/') || p.bytes().any(|b| b <= b' ' || b == 0x7f) {
                problems.push(format!(
                    "[php] fpm_ping_path '{p}' must be a path starting with '/' without spaces (e.g. \"/ping\", php-fpm's ping.path)."
                ));
            }
        }
        if !is_token(&self.backend.split.cookie) {
            problems.push(format!(
                "[backend.split] cookie \"{}\" is not a cookie name.\n    Use letters, digits and - _ . only, e.g. cookie = \"fephp_arm\".",
                self.backend.split.cookie.escape_debug()
            ));
        }
        if let Some(h) = &self.backend.split.expose_header {
            if !is_token(h) {
                problems.push(format!(
                    "[backend.split] expose_header \"{}\" is not a header name.\n    Use e.g. expose_header = \"X-FePHP-Arm\", or remove the key to send none.",
                    h.escape_debug()
                ));
            }
        }
        problems.extend(self.server.problems());
        if !self.backend.health_path.is_empty() && !self.backend.health_path.starts_with('/') {
            problems.push(format!(
                "[backend] health_path '{}' must start with '/' (or be \"\" to disable it).",
                self.backend.health_path
            ));
        }
        let mp = &self.backend.metrics_path;
        if !mp.is_empty() && !mp.starts_with('/') {
            problems.push(format!(
                "[backend] metrics_path '{mp}' must start with '/' (or be \"\" to disable it)."
            ));
        } else if !mp.is_empty() && *mp == self.backend.health_path {
            problems.push(format!(
                "[backend] metrics_path '{mp}' is also the health_path: give each its own path."
            ));
        }

        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        Ok(Validated {
            config: self,
            embedded,
            fastcgi,
            static_files,
            proxy,
            default_backend,
            messages,
        })
    }
}

impl Sticky {
    pub fn name(self) -> &'static str {
        match self {
            Sticky::Cookie => "cookie",
            Sticky::ClientAddr => "client_addr",
            Sticky::None => "none",
        }
    }
}

/// A non-empty name of letters, digits and `-`, `_`, `.` (a safe cookie or header
/// name).
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUILT: Built = Built {
        embedded: true,
        fastcgi: true,
    };

    fn static_root() -> String {
        env!("CARGO_MANIFEST_DIR").to_owned() + "/examples/public"
    }

    fn parse(text: &str) -> Config {
        Config::from_toml(text).unwrap()
    }

    fn libphp_present() -> String {
        // Any existing file stands in for libphp: validation only checks presence.
        env!("CARGO_MANIFEST_DIR").to_owned() + "/Cargo.toml"
    }

    fn err(text: &str, built: Built) -> String {
        parse(text).validate(built).unwrap_err().to_string()
    }

    #[test]
    fn parses_every_seed_key() {
        let c = parse(&format!(
            r#"
            [server]
            workers = 16
            listen = "0.0.0.0:9090"
            [backend]
            enable_hybrid = true
            default_backend = "static"
            [backend.static_files]
            enable = true
            root = "{root}"
            index_files = ["index.html"]
            [[backend.routing_rules]]
            pattern = {{ type = "exact", value = "/_health" }}
            backend = "embedded"
            priority = 100
            [[backend.routing_rules]]
            pattern = {{ type = "regex", value = "^/api/v\\d+/" }}
            backend = "static"
            [php]
            libphp_path = "/nonexistent/libphp.so"
            fpm_socket = "127.0.0.1:9000"
            use_fpm = false
            front_controller = "index.php"
            [php.ini]
            memory_limit = "256M"
            display_errors = false
            max_execution_time = 30
            "#,
            root = static_root()
        ));
        assert_eq!(c.server.workers, 16);
        assert_eq!(c.server.listen, "0.0.0.0:9090");
        assert_eq!(c.backend.default_backend.as_deref(), Some("static"));
        assert_eq!(c.backend.static_files.index_files, ["index.html"]);
        assert_eq!(c.backend.routing_rules.len(), 2);
        assert_eq!(c.backend.routing_rules[0].priority, 100);
        assert_eq!(c.backend.routing_rules[1].priority, 0);
        assert_eq!(c.backend.routing_rules[1].pattern.kind, PatternKind::Regex);
        assert_eq!(c.backend.routing_rules[1].pattern.value, "^/api/v\\d+/");
        assert_eq!(c.php.ini["memory_limit"].to_string(), "256M");
        assert_eq!(c.php.ini["display_errors"].to_string(), "0");
        assert_eq!(c.php.ini["max_execution_time"].to_string(), "30");
        assert_eq!(c.php.front_controller.as_deref(), Some("index.php"));
    }

    #[test]
    fn defaults() {
        let c = parse("");
        assert!(c.backend.enable_hybrid);
        assert_eq!(c.server.listen, DEFAULT_LISTEN);
        assert_eq!(c.php.libphp_path, PathBuf::from(DEFAULT_LIBPHP_PATH));
        assert_eq!(c.static_index(), ["index.html", "index.htm"]);
        assert_eq!(c.backend.health_path, "/_health");
    }

    impl Config {
        fn static_index(&self) -> &[String] {
            &self.backend.static_files.index_files
        }
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_key_and_line() {
        let e = Config::from_toml("[server]\nworkers = 2\nlistn = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("unknown field `listn`"), "{e}");
        let e = Config::from_toml("[server]\n\nworkers = \"two\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("invalid type"), "{e}");
        let e = Config::from_toml("[[backend.routing_rules]]\npattern = { type = \"glob\", value = \"/\" }\nbackend = \"static\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 2") && e.contains("unknown variant `glob`"),
            "{e}"
        );
    }

    #[test]
    fn full_hybrid_has_no_message() {
        let v = parse(&format!(
            "[php]\nlibphp_path = \"{}\"\nfpm_socket = \"127.0.0.1:9000\"\n",
            libphp_present()
        ))
        .validate(BUILT)
        .unwrap();
        assert!(v.messages.is_empty(), "{:?}", v.messages);
        assert!(v.embedded.is_available() && v.fastcgi.is_available());
        assert_eq!(v.default_backend, BackendKind::Embedded);
    }

    #[test]
    fn fastcgi_static_only_mode_message() {
        let v = parse(
            "[backend]\ndefault_backend = \"fastcgi\"\n[php]\nlibphp_path = \"/usr/lib/nope/libphp.so\"\nfpm_socket = \"127.0.0.1:9000\"\n",
        )
        .validate(BUILT)
        .unwrap();
        assert_eq!(
            v.messages,
            ["[i] libphp.so not found at: /usr/lib/nope/libphp.so.\n    Embedded backend will not be available (FastCGI/Static only mode)"]
        );
        assert!(!v.embedded.is_available());
        assert_eq!(v.default_backend, BackendKind::FastCgi);
    }

    #[test]
    fn embedded_static_only_mode_message() {
        let v = parse(&format!(
            "[php]\nlibphp_path = \"{}\"\nfpm_socket = \"\"\n",
            libphp_present()
        ))
        .validate(BUILT)
        .unwrap();
        assert_eq!(
            v.messages,
            ["[i] fpm_socket not configured.\n    FastCGI backend will not be available (Embedded/Static only mode)"]
        );
        assert!(!v.fastcgi.is_available());
    }

    #[test]
    fn backends_not_built_yet_say_so() {
        let v = parse(&format!(
            "[backend]\ndefault_backend = \"static\"\n[backend.static_files]\nenable = true\nroot = \"{}\"\n[php]\nlibphp_path = \"{}\"\nfpm_socket = \"127.0.0.1:9000\"\n",
            static_root(),
            libphp_present()
        ))
        .validate(Built { embedded: false, fastcgi: false })
        .unwrap();
        assert_eq!(v.messages.len(), 2);
        assert!(v.messages[0].starts_with("[i] Embedded backend is not built yet"));
        assert!(v.messages[0]
            .ends_with("Embedded backend will not be available (FastCGI/Static only mode)"));
        assert!(v.messages[1].starts_with("[i] FastCGI backend is not built yet"));
    }

    #[test]
    fn default_backend_not_registered() {
        let e = err("[backend]\ndefault_backend = \"xxx\"\n", BUILT);
        assert!(
            e.starts_with("Default backend 'xxx' is not registered\n"),
            "{e}"
        );
        let e = err(
            "[php]\nfpm_socket = \"\"\n[backend]\ndefault_backend = \"fastcgi\"\n",
            BUILT,
        );
        assert!(
            e.contains("Default backend 'fastcgi' is not registered\n"),
            "{e}"
        );
        assert!(e.contains("fpm_socket = \"127.0.0.1:9000\""), "{e}");
        let e = err("[backend]\ndefault_backend = \"static\"\n", BUILT);
        assert!(
            e.contains("Default backend 'static' is not registered\n"),
            "{e}"
        );
    }

    #[test]
    fn non_hybrid_exclusivity() {
        // use_fpm = true needs fpm_socket.
        let e = err(
            "[backend]\nenable_hybrid = false\n[php]\nuse_fpm = true\n",
            BUILT,
        );
        assert!(
            e.contains(
                "[php] fpm_socket is required when enable_hybrid = false and use_fpm = true."
            ),
            "{e}"
        );
        // use_fpm = true with a socket: FastCGI only, default follows it.
        let v = parse(&format!(
            "[backend]\nenable_hybrid = false\n[php]\nuse_fpm = true\nfpm_socket = \"127.0.0.1:9000\"\nlibphp_path = \"{}\"\n",
            libphp_present()
        ))
        .validate(BUILT)
        .unwrap();
        assert!(v.fastcgi.is_available() && !v.embedded.is_available());
        assert_eq!(v.default_backend, BackendKind::FastCgi);
        // use_fpm = false needs libphp.
        let e = err(
            "[backend]\nenable_hybrid = false\n[php]\nlibphp_path = \"/nope/libphp.so\"\n",
            BUILT,
        );
        assert!(e.contains("libphp.so not found at: /nope/libphp.so (required when enable_hybrid = false and use_fpm = false)"), "{e}");
        // use_fpm = false with libphp: embedded only, a fastcgi rule is refused.
        let e = err(
            &format!(
                "[backend]\nenable_hybrid = false\n[[backend.routing_rules]]\npattern = {{ type = \"prefix\", value = \"/admin/\" }}\nbackend = \"fastcgi\"\n[php]\nlibphp_path = \"{}\"\nfpm_socket = \"127.0.0.1:9000\"\n",
                libphp_present()
            ),
            BUILT,
        );
        assert!(e.contains("Routing rule #1 (prefix \"/admin/\") uses backend 'fastcgi', which is not registered."), "{e}");
    }

    #[test]
    fn rule_problems() {
        let base = format!(
            "[backend]\ndefault_backend = \"static\"\n[backend.static_files]\nenable = true\nroot = \"{}\"\n",
            static_root()
        );
        let e = err(&format!("{base}[[backend.routing_rules]]\npattern = {{ type = \"prefix\", value = \"/api/\" }}\nbackend = \"php\"\n"), BUILT);
        assert!(
            e.contains("Routing rule #1 (prefix \"/api/\") uses backend 'php', which is unknown."),
            "{e}"
        );
        let e = err(&format!("{base}[[backend.routing_rules]]\npattern = {{ type = \"regex\", value = \"^/api/(v\\\\d+\" }}\nbackend = \"static\"\n"), BUILT);
        assert!(
            e.starts_with("Routing rule #1: invalid regex '^/api/(v\\d+': "),
            "{e}"
        );
        assert!(e.contains("unclosed group"), "{e}");
        let e = err(&format!("{base}[[backend.routing_rules]]\npattern = {{ type = \"exact\", value = \"api\" }}\nbackend = \"static\"\n"), BUILT);
        assert!(e.contains("must start with '/'"), "{e}");
    }

    #[test]
    fn static_root_problems() {
        let e = err(
            "[backend]\ndefault_backend = \"static\"\n[backend.static_files]\nenable = true\n",
            BUILT,
        );
        assert!(
            e.contains("[backend.static_files] root is required when enable = true."),
            "{e}"
        );
        let e = err("[backend]\ndefault_backend = \"static\"\n[backend.static_files]\nenable = true\nroot = \"/no/such/dir\"\n", BUILT);
        assert!(
            e.contains("root /no/such/dir is not a readable directory"),
            "{e}"
        );
    }

    #[test]
    fn fastcgi_keys_and_defaults() {
        let php = parse("").php;
        assert_eq!(php.fpm_max_connections, 8);
        assert_eq!(php.fpm_connect_timeout.0, Duration::from_secs(5));
        assert_eq!(php.fpm_read_timeout.0, Duration::from_secs(60));
        assert_eq!(php.fpm_send_timeout.0, Duration::from_secs(60));
        assert_eq!(php.fpm_idle_timeout.0, Duration::from_secs(30));
        assert_eq!(php.fpm_ping_path, None);
        let php = parse(
            "[php]\nfpm_max_connections = 4\nfpm_connect_timeout = \"500ms\"\nfpm_read_timeout = \"2m\"\nfpm_send_timeout = \"10s\"\nfpm_idle_timeout = \"1s\"\nfpm_ping_path = \"/ping\"\n",
        )
        .php;
        assert_eq!(php.fpm_max_connections, 4);
        assert_eq!(php.fpm_connect_timeout.0, Duration::from_millis(500));
        assert_eq!(php.fpm_read_timeout.0, Duration::from_secs(120));
        assert_eq!(php.fpm_send_timeout.0, Duration::from_secs(10));
        assert_eq!(php.fpm_idle_timeout.0, Duration::from_secs(1));
        assert_eq!(php.fpm_ping_path.as_deref(), Some("/ping"));
        assert_eq!(php.fpm_connect_timeout.to_string(), "500ms");
        assert_eq!(php.fpm_read_timeout.to_string(), "120s");
    }

    #[test]
    fn durations_need_a_unit() {
        let e = Config::from_toml("[php]\n\nfpm_read_timeout = 60\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("fpm_read_timeout = 60"), "{e}");
        assert!(
            e.contains("durations need a unit: write \"60s\" (or \"500ms\", \"2m\"), not 60"),
            "{e}"
        );
        for (value, why) in [
            ("\"5 sec\"", "invalid duration \"5 sec\": write a whole number with a unit, e.g. \"500ms\", \"5s\" or \"2m\""),
            ("\"1.5s\"", "invalid duration \"1.5s\": write a whole number with a unit"),
            ("\"s\"", "invalid duration \"s\": write a whole number"),
            ("\"0s\"", "invalid duration \"0s\": it must be more than 0"),
            ("\"1441m\"", "invalid duration \"1441m\": at most 24 hours (\"1440m\")"),
            ("1.5", "durations need a unit: write e.g. \"500ms\" or \"5s\", not 1.5"),
        ] {
            let e = Config::from_toml(&format!("[php]\nfpm_connect_timeout = {value}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{value}: {e}");
            assert!(e.contains("line 2"), "{value}: {e}");
        }
    }

    #[test]
    fn fpm_socket_forms() {
        for ok in [
            "127.0.0.1:9000",
            "[::1]:9000",
            "localhost:9000",
            "php-fpm_1.internal:9000",
            "/run/php/php8.2-fpm.sock",
            "unix:/run/php/php8.2-fpm.sock",
        ] {
            assert!(FpmAddress::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            FpmAddress::parse("unix:/run/php/x.sock").unwrap(),
            FpmAddress::Unix(PathBuf::from("/run/php/x.sock"))
        );
        assert_eq!(
            FpmAddress::parse("[::1]:9000").unwrap(),
            FpmAddress::Tcp("[::1]:9000".to_owned())
        );
        for (bad, why) in [
            ("localhost", "a TCP address needs a port"),
            ("[::1]", "a TCP address needs a port"),
            ("::1:9000", "write an IPv6 address in brackets"),
            ("[::1:9000", "an IPv6 address needs its closing ']'"),
            ("[nope]:9000", "'nope' is not an IPv6 address"),
            ("127.0.0.1:0", "'0' is not a port (1-65535)"),
            ("127.0.0.1:99999", "'99999' is not a port (1-65535)"),
            (":9000", "'' is not a host name or IP address"),
            ("php fpm:9000", "'php fpm' is not a host name or IP address"),
            ("unix:run/php.sock", "a Unix socket path must be absolute"),
            (
                "run/php/php8.2-fpm.sock",
                "a Unix socket path must be absolute",
            ),
        ] {
            assert_eq!(FpmAddress::parse(bad).unwrap_err(), why, "{bad}");
        }
        let e = err(
            "[backend]\ndefault_backend = \"fastcgi\"\n[php]\nfpm_socket = \"localhost\"\n",
            BUILT,
        );
        assert!(
            e.contains("[php] fpm_socket \"localhost\" is not a PHP-FPM address: a TCP address needs a port.\n    Use \"127.0.0.1:9000\", \"[::1]:9000\", \"localhost:9000\", \"/run/php/php8.2-fpm.sock\" or \"unix:/run/php/php8.2-fpm.sock\"."),
            "{e}"
        );
    }

    #[test]
    fn fastcgi_limits_are_validated() {
        let base =
            "[backend]\ndefault_backend = \"fastcgi\"\n[php]\nfpm_socket = \"127.0.0.1:9000\"\n";
        let e = err(&format!("{base}fpm_max_connections = 0\n"), BUILT);
        assert!(
            e.contains("[php] fpm_max_connections = 0 is out of range: use 1 to 1024.\n    It bounds the connections each worker process opens to PHP-FPM; keep workers × fpm_max_connections ≤ the pool's pm.max_children."),
            "{e}"
        );
        let e = err(&format!("{base}fpm_max_connections = 5000\n"), BUILT);
        assert!(
            e.contains("fpm_max_connections = 5000 is out of range"),
            "{e}"
        );
        let e = err(&format!("{base}fpm_ping_path = \"ping\"\n"), BUILT);
        assert!(
            e.contains("[php] fpm_ping_path 'ping' must be a path starting with '/' without spaces (e.g. \"/ping\", php-fpm's ping.path)."),
            "{e}"
        );
        assert!(parse(&format!(
            "{base}fpm_max_connections = 1\nfpm_ping_path = \"/ping\"\n"
        ))
        .validate(BUILT)
        .is_ok());
    }

    #[test]
    fn server_limits_defaults_and_forms() {
        let server = parse("").server;
        assert_eq!(server.header_read_timeout.0, Duration::from_secs(10));
        assert_eq!(server.body_read_timeout.0, Duration::from_secs(60));
        assert_eq!(server.keepalive_timeout.0, Duration::from_secs(75));
        assert_eq!(server.send_timeout.0, Duration::from_secs(60));
        assert_eq!(server.max_header_size.0, 128 << 10);
        assert_eq!(server.max_body_size.0, 64 << 20);
        assert_eq!(server.max_connections, 10_000);
        assert_eq!((server.user, server.group), (None, None));
        let server = parse(
            "[server]\nheader_read_timeout = \"500ms\"\nbody_read_timeout = \"2m\"\nkeepalive_timeout = \"5s\"\nsend_timeout = \"3s\"\nmax_header_size = \"8k\"\nmax_body_size = 1048576\nmax_connections = 3\nuser = \"www-data\"\ngroup = \"nogroup\"\n",
        )
        .server;
        assert_eq!(server.header_read_timeout.0, Duration::from_millis(500));
        assert_eq!(server.body_read_timeout.0, Duration::from_secs(120));
        assert_eq!(server.keepalive_timeout.0, Duration::from_secs(5));
        assert_eq!(server.send_timeout.0, Duration::from_secs(3));
        assert_eq!(server.max_header_size.0, 8192);
        assert_eq!(server.max_body_size.0, 1 << 20);
        assert_eq!(server.max_connections, 3);
        assert_eq!(server.user.as_deref(), Some("www-data"));
        assert_eq!(server.group.as_deref(), Some("nogroup"));
        for (text, bytes) in [
            ("0", 0),
            ("4096", 4096),
            ("16K", 16 << 10),
            ("64M", 64 << 20),
            ("1G", 1 << 30),
            ("3g", 3 << 30),
        ] {
            assert_eq!(ConfigSize::parse(text), Ok(ConfigSize(bytes)), "{text}");
        }
        assert_eq!(ConfigSize(64 << 20).to_string(), "\"64M\"");
        assert_eq!(ConfigSize(1536).to_string(), "1536");
        assert_eq!(ConfigSize(0).to_string(), "0");
    }

    #[test]
    fn sizes_are_bytes_or_have_a_binary_unit() {
        for (value, why) in [
            ("\"64 MB\"", "invalid size \"64 MB\": write a number of bytes or a whole number with K, M or G, e.g. \"16K\", \"64M\" or \"1G\""),
            ("\"64MB\"", "invalid size \"64MB\": write a number of bytes"),
            ("\"1.5M\"", "invalid size \"1.5M\": write a number of bytes"),
            ("\"M\"", "invalid size \"M\": write a number of bytes"),
            ("\"1T\"", "invalid size \"1T\": write a number of bytes"),
            ("\"99999999999G\"", "invalid size \"99999999999G\": too large"),
            ("-1", "invalid size -1: sizes cannot be negative"),
            ("1.5", "invalid size 1.5: write a whole number of bytes or e.g. \"1536K\""),
        ] {
            let e = Config::from_toml(&format!("[server]\nmax_body_size = {value}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{value}: {e}");
            assert!(e.contains("line 2"), "{value}: {e}");
        }
        let e = Config::from_toml("[server]\nkeepalive_timeout = 75\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("durations need a unit: write \"75s\" (or \"500ms\", \"2m\"), not 75"),
            "{e}"
        );
    }

    #[test]
    fn server_limits_are_validated() {
        let base = format!(
            "[backend]\ndefault_backend = \"static\"\n[backend.static_files]\nenable = true\nroot = \"{}\"\n[server]\n",
            static_root()
        );
        for (keys, want) in [
            ("max_header_size = 512", "[server] max_header_size = 512 is out of range: use \"1K\" to \"1M\".\n    It bounds the request line and headers together; the default is \"128K\"."),
            ("max_header_size = \"2M\"", "[server] max_header_size = \"2M\" is out of range: use \"1K\" to \"1M\"."),
            ("max_body_size = 0", "[server] max_body_size = 0 is out of range: use at least 1 byte, e.g. \"64M\".\n    Bodies are held in memory before the backend runs, so there is no \"unlimited\"."),
            ("max_connections = 0", "[server] max_connections = 0 is out of range: use 1 to 1000000.\n    It bounds the connections each worker process serves at once."),
            ("max_connections = 1000001", "[server] max_connections = 1000001 is out of range"),
            ("user = \"\"", "[server] user \"\" is not a user name.\n    Name an existing user, e.g. user = \"www-data\", or remove the key."),
            ("user = \"www data\"", "[server] user \"www data\" is not a user name."),
            ("user = \"a:b\"", "[server] user \"a:b\" is not a user name."),
            ("user = \"www-data\"\ngroup = \"\\n\"", "[server] group \"\\n\" is not a group name."),
            ("group = \"www-data\"", "[server] group is set without [server] user.\n    Workers change their group together with their user: add user = \"www-data\" (group defaults to the user's own)."),
        ] {
            let e = err(&format!("{base}{keys}\n"), BUILT);
            assert!(e.contains(want), "{keys}: {e}");
        }
        let v = parse(&format!(
            "{base}max_header_size = \"1K\"\nmax_body_size = 1\nmax_connections = 1\nuser = \"nobody\"\ngroup = \"nogroup\"\n"
        ))
        .validate(BUILT)
        .unwrap();
        assert_eq!(v.config.server.max_header_size.0, 1024);
        assert!(parse(&format!(
            "{base}max_header_size = \"1M\"\nmax_connections = 1000000\n"
        ))
        .validate(BUILT)
        .is_ok());
    }

    #[test]
    fn proxy_keys_defaults_and_validation() {
        let px = parse("").backend.proxy;
        assert_eq!(px.upstream_list(), Vec::<&str>::new());
        assert_eq!(px.connect_timeout.0, Duration::from_secs(5));
        assert_eq!(px.read_timeout.0, Duration::from_secs(60));
        assert_eq!(px.idle_timeout.0, Duration::from_secs(4));
        assert_eq!(px.max_connections, 256);
        assert_eq!(px.max_fails, 1);
        assert_eq!(px.fail_timeout.0, Duration::from_secs(10));
        let base = format!(
            "[backend.static_files]\nenable = true\nroot = \"{}\"\n",
            static_root()
        );
        // A rule naming proxy without an upstream is refused like the others.
        let e = err(&format!("{base}[backend]\ndefault_backend = \"static\"\n[[backend.routing_rules]]\npattern = {{ type = \"prefix\", value = \"/api/\" }}\nbackend = \"proxy\"\n"), BUILT);
        assert!(e.contains("Routing rule #1 (prefix \"/api/\") uses backend 'proxy', which is not registered.\n    To use it, set [backend.proxy] upstream = \"http://127.0.0.1:9001\" (the HTTP server to forward to); or route this rule to another backend."), "{e}");
        let e = err(
            &format!("{base}[backend]\ndefault_backend = \"proxy\"\n"),
            BUILT,
        );
        assert!(e.contains("Default backend 'proxy' is not registered\n    To use it, set [backend.proxy] upstream"), "{e}");
        let e = err(
            &format!("{base}[backend]\ndefault_backend = \"php\"\n"),
            BUILT,
        );
        assert!(
            e.contains("Use default_backend = \"embedded\", \"fastcgi\", \"static\" or \"proxy\"."),
            "{e}"
        );

        let ok = parse(&format!("{base}[backend]\ndefault_backend = \"proxy\"\n[backend.proxy]\nupstreams = [\"http://127.0.0.1:9001\", \"http://[::1]:9002/\", \"http://app.internal\"]\nconnect_timeout = \"1s\"\nread_timeout = \"2s\"\nidle_timeout = \"3s\"\nmax_connections = 4\nmax_fails = 0\nfail_timeout = \"5s\"\n"))
            .validate(BUILT)
            .unwrap();
        assert!(ok.proxy.is_available());
        assert_eq!(ok.default_backend, BackendKind::Proxy);
        assert_eq!(ok.config.backend.proxy.upstream_list().len(), 3);

        for (keys, want) in [
            ("upstream = \"http://a:1\"\nupstreams = [\"http://b:2\"]", "[backend.proxy] has both upstream and upstreams.\n    Use upstream = \"http://127.0.0.1:9001\" for one server, or upstreams = [\"http://127.0.0.1:9001\", \"http://127.0.0.1:9002\"] for several, not both."),
            ("upstream = \"127.0.0.1:9001\"", "[backend.proxy] upstream \"127.0.0.1:9001\" is not an upstream URL: it needs the scheme, e.g. http://127.0.0.1:9001.\n    Use \"http://127.0.0.1:9001\", \"http://[::1]:9001\" or \"http://app.internal:8080\""),
            ("upstreams = [\"http://ok:1\", \"https://secure:443\"]", "[backend.proxy] upstreams \"https://secure:443\" is not an upstream URL: https upstreams are not supported"),
            ("upstream = \"http://127.0.0.1:9001/app\"", "an upstream names a server only, without a path"),
            ("upstream = \"http://127.0.0.1:0\"", "'0' is not a port (1-65535)"),
            ("upstream = \"http://::1:9001\"", "write an IPv6 address in brackets"),
            ("upstream = \"http://bad host:9001\"", "'bad host' is not a host name or IP address"),
            ("upstream = \"ftp://x:21\"", "the scheme must be http://"),
            ("upstream = \"http://u@x:1\"", "user information (user@host) is not supported"),
            ("upstream = \"http://x:1\"\nmax_connections = 0", "[backend.proxy] max_connections = 0 is out of range: use 1 to 65536.\n    It bounds the requests each worker process has in flight to one upstream (one connection each)."),
        ] {
            let e = err(&format!("{base}[backend]\ndefault_backend = \"static\"\n[backend.proxy]\n{keys}\n"), BUILT);
            assert!(e.contains(want), "{keys}: {e}");
        }
        assert_eq!(
            UpstreamAddress::parse("http://[::1]:9002/")
                .unwrap()
                .authority,
            "[::1]:9002"
        );
        assert_eq!(
            UpstreamAddress::parse("HTTP://example.test").unwrap().port,
            80
        );
    }

    #[test]
    fn split_rules_are_validated() {
        let base = format!(
            "[backend]\ndefault_backend = \"static\"\n[backend.static_files]\nenable = true\nroot = \"{}\"\n[php]\nlibphp_path = \"{}\"\n",
            static_root(),
            libphp_present()
        );
        let rule = |body: &str| {
            format!("{base}[[backend.routing_rules]]\npattern = {{ type = \"prefix\", value = \"/app/\" }}\n{body}\n")
        };
        let v = parse(&rule("split = [{ backend = \"embedded\", weight = 10 }, { backend = \"static\", weight = 90 }]\nsticky = \"client_addr\""))
            .validate(BUILT)
            .unwrap();
        let r = &v.config.backend.routing_rules[0];
        assert_eq!(r.sticky, Some(Sticky::ClientAddr));
        assert_eq!(r.primary_backend(), Some("static"));
        assert_eq!(v.config.backend.split.cookie, "fephp_arm");
        assert_eq!(v.config.backend.split.expose_header, None);

        for (body, want) in [
            ("backend = \"static\"\nsplit = [{ backend = \"static\", weight = 1 }]", "Routing rule #1 (prefix \"/app/\") has both backend and split.\n    Use backend = \"embedded\" to send it to one backend, or split = [{ backend = \"embedded\", weight = 90 }, { backend = \"fastcgi\", weight = 10 }] to divide its traffic, not both."),
            ("priority = 1", "Routing rule #1 (prefix \"/app/\") names no backend.\n    Add backend = \"embedded\""),
            ("split = []", "Routing rule #1 (prefix \"/app/\") has an empty split."),
            ("split = [{ backend = \"static\", weight = 0 }]", "Routing rule #1 (prefix \"/app/\") split arm #1 (backend 'static') has weight 0: weights must be positive whole numbers up to 1000000."),
            ("split = [{ backend = \"static\", weight = 1 }, { backend = \"fastcgi\", weight = 1 }]", "Routing rule #1 (prefix \"/app/\") split arm #2 uses backend 'fastcgi', which is not registered.\n    To use it, set [php] fpm_socket"),
            ("split = [{ backend = \"static\", weight = 1 }, { backend = \"php\", weight = 1 }]", "Routing rule #1 (prefix \"/app/\") split arm #2 uses backend 'php', which is unknown."),
            ("split = [{ backend = \"static\", weight = 1 }, { backend = \"static\", weight = 2 }]", "split arm #2 names backend 'static' again."),
            ("backend = \"static\"\nsticky = \"cookie\"", "Routing rule #1 (prefix \"/app/\") sets sticky or cookie without split."),
            ("split = [{ backend = \"static\", weight = 1 }]\nsticky = \"none\"\ncookie = \"ab\"", "Routing rule #1 (prefix \"/app/\") sets cookie with sticky = \"none\"."),
            ("split = [{ backend = \"static\", weight = 1 }]\ncookie = \"a b\"", "Routing rule #1 (prefix \"/app/\"): cookie \"a b\" is not a cookie name."),
        ] {
            let e = err(&rule(body), BUILT);
            assert!(e.contains(want), "{body}: {e}");
        }
        // Negative and fractional weights are type errors naming the line.
        let e = Config::from_toml("[[backend.routing_rules]]\npattern = { type = \"prefix\", value = \"/a/\" }\nsplit = [{ backend = \"static\", weight = -1 }]\n").unwrap_err().to_string();
        assert!(e.contains("line 3"), "{e}");
        // Two cookie rules need two cookies.
        let two = format!("{}[[backend.routing_rules]]\npattern = {{ type = \"prefix\", value = \"/b/\" }}\nsplit = [{{ backend = \"static\", weight = 1 }}]\n", rule("split = [{ backend = \"static\", weight = 1 }]"));
        let e = err(&two, BUILT);
        assert!(e.contains("Routing rule #2 (prefix \"/b/\") keeps its arm in cookie 'fephp_arm', like routing rule #1.\n    Give one of them its own cookie = \"fephp_arm_2\""), "{e}");
        assert!(parse(&format!("{two}cookie = \"other\"\n"))
            .validate(BUILT)
            .is_ok());
        let e = err(
            &format!(
                "{}[backend.split]\nexpose_header = \"X Arm\"\ncookie = \"\"\n",
                rule("split = [{ backend = \"static\", weight = 1 }]")
            ),
            BUILT,
        );
        assert!(
            e.contains("[backend.split] expose_header \"X Arm\" is not a header name."),
            "{e}"
        );
        assert!(
            e.contains("[backend.split] cookie \"\" is not a cookie name."),
            "{e}"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let e = parse("[backend]\ndefault_backend = \"xxx\"\n[[backend.routing_rules]]\npattern = { type = \"regex\", value = \"(\" }\nbackend = \"nope\"\n")
            .validate(BUILT)
            .unwrap_err();
        assert_eq!(e.problems.len(), 3, "{e}");
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    #[test]
    fn shipped_examples_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let hybrid = Config::from_file(&dir.join("hybrid_backend_config.toml")).unwrap();
        assert_eq!(hybrid.backend.routing_rules.len(), 5);
        Config::from_file(&dir.join("demo.toml")).unwrap();
    }
}
