//! PHP-FPM upstream groups as the file writes them — `[php] fpm_*` (the default
//! group) and `[php.fpm_pools.NAME]` (named groups a routing rule picks with
//! `pool = "NAME"`) — and resolved into the one shape the FastCGI backend takes.
//! A named group's unset keys take the `[php] fpm_*` value, so shared settings
//! (timeouts, the ping path) are written once.

use super::{ConfigDuration, PhpConfig};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// The default group's name: in metrics, health and messages.
pub const DEFAULT_FPM_POOL: &str = "default";
/// Upstreams of all groups together (their counters have fixed shared slots).
pub const MAX_FPM_UPSTREAMS: usize = 64;
/// Largest weight of one upstream.
pub const MAX_FPM_WEIGHT: u32 = 1000;

/// One php-fpm of `fpm_upstreams = [{ address = "…", weight = 2 }]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FpmUpstream {
    /// As `fpm_socket`: "host:port", "[v6]:port", "/path.sock" or "unix:/path.sock".
    pub address: String,
    #[serde(default = "weight_one")]
    pub weight: u32,
}

fn weight_one() -> u32 {
    1
}

/// How a request picks its upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FpmBalance {
    /// The upstream with the fewest requests in flight (relative to its weight).
    #[default]
    LeastConn,
    /// In turn, each upstream as often as its weight says (smooth, as nginx's).
    RoundRobin,
}

/// `[php.fpm_pools.NAME]`: the `[php] fpm_*` keys without their prefix; unset
/// ones take `[php]`'s value.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FpmPoolConfig {
    pub socket: Option<String>,
    pub upstreams: Vec<FpmUpstream>,
    pub balance: Option<FpmBalance>,
    pub max_connections: Option<usize>,
    pub keep_alive: Option<bool>,
    pub connect_timeout: Option<ConfigDuration>,
    pub read_timeout: Option<ConfigDuration>,
    pub send_timeout: Option<ConfigDuration>,
    pub idle_timeout: Option<ConfigDuration>,
    pub ping_path: Option<String>,
    pub max_fails: Option<u32>,
    pub fail_timeout: Option<ConfigDuration>,
    pub health_interval: Option<ConfigDuration>,
    /// Scripts of this pool live here (default: `[php] document_root`).
    pub document_root: Option<PathBuf>,
}

/// One group of php-fpm upstreams, resolved.
#[derive(Debug, Clone)]
pub struct FpmGroup {
    /// `DEFAULT_FPM_POOL` for `[php]`, else the `fpm_pools` name.
    pub name: String,
    /// `socket` / `fpm_socket` when set (trimmed, non-empty).
    pub socket: Option<String>,
    /// `upstreams` / `fpm_upstreams` as written.
    pub upstream_list: Vec<FpmUpstream>,
    pub balance: FpmBalance,
    pub max_connections: usize,
    /// FCGI_KEEP_CONN: connections pooled between requests.
    pub keep_alive: bool,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub send_timeout: Duration,
    pub idle_timeout: Duration,
    pub ping_path: Option<String>,
    pub max_fails: u32,
    pub fail_timeout: Duration,
    pub health_interval: Option<Duration>,
    pub document_root: Option<PathBuf>,
}

impl FpmGroup {
    pub fn is_default(&self) -> bool {
        self.name == DEFAULT_FPM_POOL
    }

    /// "[php]" or "[php.fpm_pools.NAME]".
    pub fn section(&self) -> String {
        if self.is_default() {
            "[php]".to_owned()
        } else {
            format!("[php.fpm_pools.{}]", self.name)
        }
    }

    /// A key as the file spells it in this group: "fpm_socket" or "socket".
    pub fn key(&self, key: &str) -> String {
        if self.is_default() {
            format!("fpm_{key}")
        } else {
            key.to_owned()
        }
    }

    /// "[php] fpm_socket" or "[php.fpm_pools.NAME] socket", for messages.
    pub fn full_key(&self, key: &str) -> String {
        format!("{} {}", self.section(), self.key(key))
    }

    /// The upstreams: the one `socket` (weight 1), or `upstreams`.
    pub fn upstreams(&self) -> Vec<FpmUpstream> {
        match &self.socket {
            Some(s) => vec![FpmUpstream {
                address: s.clone(),
                weight: 1,
            }],
            None => self.upstream_list.clone(),
        }
    }

    /// Whether it names any php-fpm.
    pub fn is_configured(&self) -> bool {
        self.socket.is_some() || !self.upstream_list.is_empty()
    }
}

impl PhpConfig {
    /// The default group, from the `[php] fpm_*` keys.
    pub fn fpm_default_group(&self) -> FpmGroup {
        let socket = self.fpm_socket.trim();
        FpmGroup {
            name: DEFAULT_FPM_POOL.to_owned(),
            socket: (!socket.is_empty()).then(|| socket.to_owned()),
            upstream_list: self.fpm_upstreams.clone(),
            balance: self.fpm_balance,
            max_connections: self.fpm_max_connections,
            keep_alive: self.fpm_keep_alive,
            connect_timeout: self.fpm_connect_timeout.0,
            read_timeout: self.fpm_read_timeout.0,
            send_timeout: self.fpm_send_timeout.0,
            idle_timeout: self.fpm_idle_timeout.0,
            ping_path: self.fpm_ping_path.clone(),
            max_fails: self.fpm_max_fails,
            fail_timeout: self.fpm_fail_timeout.0,
            health_interval: self.fpm_health_interval.map(|d| d.0),
            document_root: None,
        }
    }

    /// `[php.fpm_pools.NAME]`, its unset keys taken from `[php]`.
    pub fn fpm_pool_group(&self, name: &str) -> Option<FpmGroup> {
        let p = self.fpm_pools.get(name)?;
        let d = self.fpm_default_group();
        let socket = p.socket.as_deref().map(str::trim).unwrap_or("");
        Some(FpmGroup {
            name: name.to_owned(),
            socket: (!socket.is_empty()).then(|| socket.to_owned()),
            upstream_list: p.upstreams.clone(),
            balance: p.balance.unwrap_or(d.balance),
            max_connections: p.max_connections.unwrap_or(d.max_connections),
            keep_alive: p.keep_alive.unwrap_or(d.keep_alive),
            connect_timeout: p.connect_timeout.map_or(d.connect_timeout, |t| t.0),
            read_timeout: p.read_timeout.map_or(d.read_timeout, |t| t.0),
            send_timeout: p.send_timeout.map_or(d.send_timeout, |t| t.0),
            idle_timeout: p.idle_timeout.map_or(d.idle_timeout, |t| t.0),
            ping_path: p.ping_path.clone().or(d.ping_path),
            max_fails: p.max_fails.unwrap_or(d.max_fails),
            fail_timeout: p.fail_timeout.map_or(d.fail_timeout, |t| t.0),
            health_interval: p.health_interval.map(|t| t.0).or(d.health_interval),
            document_root: p.document_root.clone(),
        })
    }

    /// Every group: the default one first, then the named ones by name.
    pub fn fpm_groups(&self) -> Vec<FpmGroup> {
        std::iter::once(self.fpm_default_group())
            .chain(self.fpm_pools.keys().filter_map(|n| self.fpm_pool_group(n)))
            .collect()
    }
}
