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
