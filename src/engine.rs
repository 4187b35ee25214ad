//! The host-neutral core: a validated configuration, its router and its backends.
//! Hosts reach it through the C ABI (`ffi`); tests drive it directly.

use crate::backends::static_files::StaticFiles;
use crate::backends::BUILT;
use crate::config::{Availability, BackendKind, Config, ConfigError, Validated};
use crate::health::{BackendHealth, Backends, Health};
use crate::http::{Body, Request, Response};
use crate::path::{self, PathError};
use crate::router::{Route, Router};
use std::sync::atomic::{AtomicU32, Ordering};

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Answered by the engine itself (`/_health`).
    Internal,
    Backend(Route),
}

pub struct Engine {
    validated: Validated,
    router: Router,
    static_files: Option<StaticFiles>,
    /// Process that called `worker_start` last (0 = none).
    worker_pid: AtomicU32,
}

impl Engine {
    /// Validates `config` and builds the router and backends.
    pub fn new(config: Config) -> Result<Engine, ConfigError> {
        let validated = config.validate(BUILT)?;
        let router = Router::new(
            &validated.config.backend.routing_rules,
            validated.default_backend,
        )
        .map_err(|e| ConfigError { problems: vec![e] })?;
        let static_files = match validated.static_files {
            Availability::Available => {
                let sf = &validated.config.backend.static_files;
                Some(
                    StaticFiles::new(&sf.root, &sf.index_files).map_err(|e| ConfigError {
                        problems: vec![e.to_string()],
                    })?,
                )
            }
            Availability::Unavailable(_) => None,
        };
        Ok(Engine {
            validated,
            router,
            static_files,
            worker_pid: AtomicU32::new(0),
        })
    }

    pub fn config(&self) -> &Config {
        &self.validated.config
    }

    /// The seed's `[i]` lines for this configuration.
    pub fn messages(&self) -> &[String] {
        &self.validated.messages
    }

    pub fn availability(&self, kind: BackendKind) -> &Availability {
        self.validated.availability(kind)
    }

    /// Per-process start, after a host forks its workers. Threads and runtimes a
    /// backend needs start here, never before the fork.
    pub fn worker_start(&self) {
        self.worker_pid.store(std::process::id(), Ordering::Relaxed);
    }

    /// Decides where a request goes without running it.
    pub fn route(&self, target: &str) -> Result<Decision, PathError> {
        let t = path::split_target(target)?;
        if self.is_health(t.raw_path) {
            return Ok(Decision::Internal);
        }
        let normalized = path::normalize(t.raw_path)?;
        Ok(Decision::Backend(self.router.route(&normalized)))
    }

    fn is_health(&self, raw_path: &str) -> bool {
        let hp = &self.validated.config.backend.health_path;
        !hp.is_empty() && raw_path == hp
    }

    /// Runs a request to completion of its headers.
    pub fn handle(&self, req: &Request<'_>) -> Response {
        let t = match path::split_target(req.target) {
            Ok(t) => t,
            Err(e) => return bad_request(e),
        };
        if self.is_health(t.raw_path) {
            return self.health_response(req);
        }
        let normalized = match path::normalize(t.raw_path) {
            Ok(p) => p,
            Err(e) => return bad_request(e),
        };
        let route = self.router.route(&normalized);
        match route.backend {
            BackendKind::Static => match &self.static_files {
                Some(sf) => sf.serve(req, &normalized, t.query),
                None => unavailable(BackendKind::Static, self.availability(BackendKind::Static)),
            },
            kind => unavailable(kind, self.availability(kind)),
        }
    }

    fn health_response(&self, req: &Request<'_>) -> Response {
        if req.method != "GET" && req.method != "HEAD" {
            return Response::error(405, None).header("Allow", "GET, HEAD");
        }
        let health = self.health();
        let json = health.to_json().into_bytes();
        let resp = Response::new(health.http_status())
            .header("Content-Type", "application/json")
            .header("Cache-Control", "no-store")
            .header("Content-Length", json.len().to_string())
            .with_body(Body::Bytes(json));
        if req.is_head() {
            resp.for_head()
        } else {
            resp
        }
    }

    /// Checks every backend.
    pub fn health(&self) -> Health {
        let unavailable = |kind: BackendKind| {
            let why = match self.availability(kind) {
                Availability::Unavailable(w) => w.clone(),
                Availability::Available => String::new(),
            };
            let name = match kind {
                BackendKind::Embedded => "Embedded",
                BackendKind::FastCgi => "FastCGI",
                BackendKind::Static => "Static",
            };
            BackendHealth {
                enabled: false,
                healthy: false,
                message: format!("{name} backend is not available: {why}"),
                latency_ms: None,
            }
        };
        let static_files = match &self.static_files {
            Some(sf) => match sf.check() {
                Ok(()) => BackendHealth {
                    enabled: true,
                    healthy: true,
                    message: format!("Static backend is healthy (root: {})", sf.root().display()),
                    latency_ms: None,
                },
                Err(e) => BackendHealth {
                    enabled: true,
                    healthy: false,
                    message: format!("Static backend is unhealthy: {e}"),
                    latency_ms: None,
                },
            },
            None => unavailable(BackendKind::Static),
        };
        Health::new(Backends {
            embedded: unavailable(BackendKind::Embedded),
            fastcgi: unavailable(BackendKind::FastCgi),
            static_files,
        })
    }

    /// Worker processes a host should run: `[server] workers`, 0 meaning one per core.
    pub fn workers(&self) -> usize {
        match self.validated.config.server.workers {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            n => n,
        }
    }
}

fn bad_request(e: PathError) -> Response {
    tracing::debug!(error = %e, "rejected request target");
    Response::error(400, Some(&e.to_string()))
}

fn unavailable(kind: BackendKind, why: &Availability) -> Response {
    let hint = match why {
        Availability::Unavailable(w) => format!("{kind} backend is not available: {w}"),
        Availability::Available => format!("{kind} backend is not available"),
    };
    tracing::error!("{hint}");
    Response::error(503, Some(&hint))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(extra: &str) -> Engine {
        let root = env!("CARGO_MANIFEST_DIR").to_owned() + "/examples/public";
        let text = format!(
            "[backend]\ndefault_backend = \"static\"\n[backend.static_files]\nenable = true\nroot = \"{root}\"\n[php]\nlibphp_path = \"/nonexistent\"\n{extra}"
        );
        Engine::new(Config::from_toml(&text).unwrap()).unwrap()
    }

    #[test]
    fn health_is_answered_before_routing() {
        let e = engine("");
        assert_eq!(e.route("/_health").unwrap(), Decision::Internal);
        let resp = e.handle(&Request::get("/_health"));
        assert_eq!(resp.status, 200);
        let Body::Bytes(b) = &resp.body else { panic!() };
        let v: serde_json::Value = serde_json::from_slice(b).unwrap();
        assert_eq!(v["status"], "healthy");
        assert_eq!(v["backends"]["static"]["healthy"], true);
        assert!(v["backends"]["static"]["latency_ms"].is_null());
        assert_eq!(v["backends"]["embedded"]["enabled"], false);
        assert!(v["backends"]["embedded"]["message"]
            .as_str()
            .unwrap()
            .contains("libphp.so not found at: /nonexistent"));
    }

    #[test]
    fn bad_targets_are_400() {
        let e = engine("");
        for t in ["/../etc/passwd", "/a%00b", "/%2e%2e/x", "*", "/%ff"] {
            assert_eq!(e.handle(&Request::get(t)).status, 400, "{t}");
        }
    }
}
