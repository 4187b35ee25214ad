//! The sections of the configuration file and their defaults: what the file may
//! say. `deny_unknown_fields` everywhere, so a misspelt key is an error naming it
//! (except inside `[server]`: the library leaves that table to the host, which
//! checks its keys).

use super::{ConfigDuration, ConfigSize, IniValue};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Default `[php] libphp_path`.
pub const DEFAULT_LIBPHP_PATH: &str = "/usr/lib/libphp.so";
/// Default `[php] fpm_max_connections` (per worker process).
pub const DEFAULT_FPM_MAX_CONNECTIONS: usize = 8;
/// Upper bound of `[php] fpm_max_connections`.
pub const MAX_FPM_MAX_CONNECTIONS: usize = 1024;

/// `[server]`: the section of hosts that own the socket. fe-php-host reads it
/// itself (listen address, workers, access log, connection limits, user) from
/// the same file; an embedding server such as nginx ignores it. The library
/// accepts any table here and reads nothing of it.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostSection;

impl<'de> Deserialize<'de> for HostSection {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        toml::Table::deserialize(d).map(|_| HostSection)
    }
}

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
    /// `[backend.sendfile]`: PHP responses that name a file to send instead of
    /// their body (`X-Sendfile`, `X-Accel-Redirect`).
    pub sendfile: SendfileConfig,
    /// `[backend.compression]`: on-the-fly compression of text responses.
    pub compression: CompressionConfig,
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
            sendfile: SendfileConfig::default(),
            compression: CompressionConfig::default(),
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

/// `[backend.sendfile]`: a PHP script (embedded or FastCGI) answers with
/// `X-Sendfile: /absolute/path` or `X-Accel-Redirect: /uri`, and the engine sends
/// that file as the static backend would, instead of the script's body — only
/// from these directories.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SendfileConfig {
    /// Off (the default): both headers reach the client as the script set them.
    pub enable: bool,
    /// `X-Sendfile` paths must name a file below one of these directories.
    pub roots: Vec<PathBuf>,
    /// `X-Accel-Redirect` URIs are mapped to files through these.
    pub locations: Vec<SendfileLocation>,
}

/// `[[backend.sendfile.locations]]`: an `X-Accel-Redirect` URI starting with
/// `prefix` names the file at the rest of the URI below `root` (as nginx's
/// `location /prefix/ { internal; alias /root/; }`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendfileLocation {
    pub prefix: String,
    pub root: PathBuf,
}

/// `[backend.compression]`: responses of the listed text types are compressed
/// with the best coding the client accepts (zstd, br or gzip), whichever backend
/// produced them (src/http/compress.rs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompressionConfig {
    /// On by default, at fast levels (see DEFAULT_* below).
    pub enable: bool,
    /// The codings offered, in the server's order of preference among those the
    /// client weighs the same: "zstd", "br", "gzip".
    pub encodings: Vec<String>,
    /// Media types compressed (without parameters; "text/*" for a whole type).
    pub types: Vec<String>,
    /// Bodies known to be shorter than this go out as they are.
    pub min_length: ConfigSize,
    /// 1 (fastest) to 9 (smallest).
    pub gzip_level: u32,
    /// 0 (fastest) to 11 (smallest).
    pub brotli_level: u32,
    /// 1 (fastest) to 19 (smallest).
    pub zstd_level: i32,
}

/// Default `[backend.compression] gzip_level`: speed first, as nginx's
/// `gzip_comp_level` 1. Measured on a 260 KiB HTML page (one core): level 1
/// leaves 32 % at 134 MB/s, 3 leaves 23 % at 63 MB/s, 6 leaves 22 % at 29 MB/s;
/// served whole (bench/compress.py, a 100 KiB page, 2 cores), level 1 gives 2.8×
/// level 3's requests per second.
pub const DEFAULT_GZIP_LEVEL: u32 = 1;
/// Default `[backend.compression] brotli_level`: 1 gives 1.8× level 3's requests
/// per second (bench/compress.py), still smaller than gzip 1 (18 against 22 KB
/// of a 100 KiB page).
pub const DEFAULT_BROTLI_LEVEL: u32 = 1;
/// Default `[backend.compression] zstd_level`: 1, the fastest, already smaller
/// than brotli 1 (17 KB of the same page).
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;
/// Default `[backend.compression] min_length`.
pub const DEFAULT_COMPRESSION_MIN_LENGTH: u64 = 1024;
/// Default `[backend.compression] types`: text that compresses well.
pub const DEFAULT_COMPRESSION_TYPES: &[&str] = &[
    "text/html",
    "text/css",
    "text/plain",
    "text/xml",
    "text/javascript",
    "text/markdown",
    "text/csv",
    "application/javascript",
    "application/json",
    "application/ld+json",
    "application/manifest+json",
    "application/xml",
    "application/xhtml+xml",
    "application/rss+xml",
    "application/atom+xml",
    "application/wasm",
    "image/svg+xml",
    "image/x-icon",
    "font/ttf",
    "font/otf",
];

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig {
            enable: true,
            encodings: ["zstd", "br", "gzip"].map(str::to_owned).to_vec(),
            types: DEFAULT_COMPRESSION_TYPES
                .iter()
                .map(|t| (*t).to_owned())
                .collect(),
            min_length: ConfigSize(DEFAULT_COMPRESSION_MIN_LENGTH),
            gzip_level: DEFAULT_GZIP_LEVEL,
            brotli_level: DEFAULT_BROTLI_LEVEL,
            zstd_level: DEFAULT_ZSTD_LEVEL,
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
    /// Embedded PHP: the named runner pool (`[php.pools.NAME]`) that runs this
    /// rule's scripts, instead of `[php.pool]`. FastCGI (`backend = "fastcgi"`):
    /// the named upstream group (`[php.fpm_pools.NAME]`) instead of `[php]`'s.
    #[serde(default)]
    pub pool: Option<String>,
    /// The rule's name in `/_metrics` (`fephp_rule_request_duration_seconds`):
    /// unique, letters, digits, '_', '.' and '-'.
    #[serde(default)]
    pub name: Option<String>,
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
            pool: None,
            name: None,
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

impl Sticky {
    pub fn name(self) -> &'static str {
        match self {
            Sticky::Cookie => "cookie",
            Sticky::ClientAddr => "client_addr",
            Sticky::None => "none",
        }
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
    /// The front controller is reachable only as the fallback, never by its own
    /// URL (`/index.php`, `/index.php/...` answer 404), as frameworks' nginx
    /// recipes mark it `internal`: each page then has one URL.
    pub front_controller_internal: bool,
    /// Connections to PHP-FPM one worker process may hold (busy and idle together).
    pub fpm_max_connections: usize,
    /// Keep connections to PHP-FPM open between requests (FCGI_KEEP_CONN). Off by
    /// default: a kept connection holds a php-fpm child even while idle, and more
    /// of them than `pm.max_children` (`workers × fpm_max_connections` across
    /// every fe-php instance) leave new connections waiting in php-fpm's backlog
    /// with no child to take them. On, keep that product ≤ `pm.max_children`.
    pub fpm_keep_alive: bool,
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
    /// Several php-fpm instances (instead of `fpm_socket`), with weights.
    pub fpm_upstreams: Vec<super::FpmUpstream>,
    /// How a request picks among `fpm_upstreams`.
    pub fpm_balance: super::FpmBalance,
    /// Failures (connect errors, resets, timeouts) within `fpm_fail_timeout` that
    /// take an upstream out of the turn for `fpm_fail_timeout`; 0 never does.
    pub fpm_max_fails: u32,
    pub fpm_fail_timeout: ConfigDuration,
    /// Active probing of every upstream with `fpm_ping_path` this often; unset: off.
    pub fpm_health_interval: Option<ConfigDuration>,
    /// `[php.fpm_pools.NAME]`: more FastCGI upstream groups, for the routing rules
    /// that name them (`backend = "fastcgi", pool = "NAME"`).
    pub fpm_pools: BTreeMap<String, super::FpmPoolConfig>,
    /// php.ini overrides.
    pub ini: BTreeMap<String, IniValue>,
    /// `[php.pool]`: the embedded backend's runner processes.
    pub pool: PoolConfig,
    /// `[php.pools.NAME]`: more runner pools, each with its own sizes, limits and
    /// php.ini overrides, for the routing rules that name them (`pool = "NAME"`).
    pub pools: BTreeMap<String, PoolConfig>,
}

/// `[php.pool]`: PHP interpreters (runners) shared by every worker process through
/// one queue, so that whichever runner is free takes the next request.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// false: each worker process runs PHP on its own thread instead (one
    /// interpreter per worker; a slow request holds up the next ones there).
    pub enabled: bool,
    /// Runners kept even when idle.
    pub min_runners: usize,
    /// Most runners at once; more are started while requests wait.
    pub max_runners: usize,
    /// Requests that may wait for a runner; past it, 503.
    pub queue_size: usize,
    /// A request still running after this long is stopped (its runner is killed
    /// and replaced) and answered 504.
    pub request_deadline: ConfigDuration,
    /// Requests before a runner is replaced; 0: never.
    pub max_requests: u64,
    /// A runner whose own memory (not shared with others) exceeds this after a
    /// request is replaced; 0 disables it.
    pub memory_budget: ConfigSize,
    /// Runners above `min_runners` idle this long exit.
    pub idle_timeout: ConfigDuration,
    /// A request running longer than this has its PHP stack written to the log
    /// once; unset: no slow log.
    pub slowlog_timeout: Option<ConfigDuration>,
    /// php.ini overrides for this pool's runners, on top of `[php.ini]` (applied
    /// in each runner after it starts, as php-fpm's `php_value` in a pool).
    pub ini: BTreeMap<String, IniValue>,
    /// Worker mode: a script, relative to `[php] document_root`, that each runner
    /// runs once; it boots the application and loops on
    /// `frankenphp_handle_request()`, which hands it every request of the pool.
    pub worker: Option<PathBuf>,
    /// Worker mode: name the routes whose requests leave memory or state behind
    /// in a worker (log and `/_metrics`).
    pub leak_report: bool,
    /// Worker mode, for development: this often, each worker checks whether a
    /// file it loaded has changed and restarts if one has; unset: only on reload.
    pub watch: Option<ConfigDuration>,
}

/// Cores of this machine (at least 1).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Upper bound of `[php.pool] max_runners`.
pub const MAX_RUNNERS: usize = 4096;

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            enabled: true,
            min_runners: cores().max(2),
            max_runners: (16 * cores()).clamp(32, 256),
            queue_size: 1024,
            request_deadline: ConfigDuration(Duration::from_secs(300)),
            max_requests: 10_000,
            memory_budget: ConfigSize(256 << 20),
            idle_timeout: ConfigDuration(Duration::from_secs(10)),
            slowlog_timeout: None,
            ini: BTreeMap::new(),
            worker: None,
            leak_report: false,
            watch: None,
        }
    }
}

impl Default for PhpConfig {
    fn default() -> Self {
        PhpConfig {
            libphp_path: PathBuf::from(DEFAULT_LIBPHP_PATH),
            fpm_socket: String::new(),
            use_fpm: false,
            document_root: None,
            front_controller: None,
            front_controller_internal: false,
            fpm_max_connections: DEFAULT_FPM_MAX_CONNECTIONS,
            fpm_keep_alive: false,
            fpm_connect_timeout: ConfigDuration(Duration::from_secs(5)),
            fpm_read_timeout: ConfigDuration(Duration::from_secs(60)),
            fpm_send_timeout: ConfigDuration(Duration::from_secs(60)),
            fpm_idle_timeout: ConfigDuration(Duration::from_secs(30)),
            fpm_ping_path: None,
            fpm_upstreams: Vec::new(),
            fpm_balance: super::FpmBalance::default(),
            fpm_max_fails: 1,
            fpm_fail_timeout: ConfigDuration(Duration::from_secs(10)),
            fpm_health_interval: None,
            fpm_pools: BTreeMap::new(),
            ini: BTreeMap::new(),
            pool: PoolConfig::default(),
            pools: BTreeMap::new(),
        }
    }
}
