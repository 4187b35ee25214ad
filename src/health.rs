//! The `/_health` document: one entry per backend, in the seed's format.

use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Health {
    pub status: &'static str,
    pub backends: Backends,
}

#[derive(Debug, Serialize)]
pub struct Backends {
    pub embedded: BackendHealth,
    pub fastcgi: BackendHealth,
    #[serde(rename = "static")]
    pub static_files: BackendHealth,
    pub proxy: BackendHealth,
}

#[derive(Debug, Serialize)]
pub struct BackendHealth {
    /// False when the backend is not available in this configuration; such a
    /// backend does not make the whole server unhealthy.
    pub enabled: bool,
    pub healthy: bool,
    pub message: String,
    /// Probe time; null where nothing is probed.
    pub latency_ms: Option<u64>,
    /// FastCGI: each php-fpm upstream of each group (absent elsewhere).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<UpstreamHealth>,
}

/// One php-fpm upstream in the `fastcgi` entry: its group (`pool`: "default" for
/// `[php]`), whether it is in the turn and answered the probe, and the totals of
/// every worker process.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamHealth {
    pub pool: String,
    pub address: String,
    pub up: bool,
    /// Drained (control API, `fephp_engine_upstream_drain`): no new requests
    /// while another upstream of its pool can take them.
    pub drained: bool,
    pub active_connections: u64,
    pub requests: u64,
    pub failures: u64,
    /// Why the probe failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl BackendHealth {
    /// One entry for several probed groups (the FastCGI backend's default group
    /// and its named pools): healthy when every one is.
    pub fn merge(mut all: Vec<BackendHealth>) -> Option<BackendHealth> {
        if all.len() <= 1 {
            return all.pop();
        }
        let healthy = all.iter().all(|h| h.healthy);
        Some(BackendHealth {
            enabled: all.iter().any(|h| h.enabled),
            healthy,
            message: all
                .iter()
                .map(|h| h.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
            latency_ms: if healthy {
                all.iter().filter_map(|h| h.latency_ms).max()
            } else {
                None
            },
            upstreams: all.into_iter().flat_map(|h| h.upstreams).collect(),
        })
    }
}

impl Health {
    pub fn new(backends: Backends) -> Health {
        let all = [
            &backends.embedded,
            &backends.fastcgi,
            &backends.static_files,
            &backends.proxy,
        ];
        let ok = all.iter().all(|b| !b.enabled || b.healthy);
        Health {
            status: if ok { "healthy" } else { "unhealthy" },
            backends,
        }
    }

    pub fn http_status(&self) -> u16 {
        if self.status == "healthy" {
            200
        } else {
            503
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("health serializes")
    }
}
