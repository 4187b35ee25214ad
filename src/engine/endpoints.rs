//! The two answers the engine gives itself, before routing: `/_health` (with
//! live probes of PHP-FPM and the upstreams where configured) and `/_metrics`.

use super::Engine;
use crate::config::{Availability, BackendKind};
use crate::health::{BackendHealth, Backends, Health};
use crate::http::{Body, Completion, Request, Response};

impl Engine {
    pub(super) fn is_health(&self, raw_path: &str) -> bool {
        let hp = &self.validated.config.backend.health_path;
        !hp.is_empty() && raw_path == hp
    }

    pub(super) fn is_metrics(&self, raw_path: &str) -> bool {
        let mp = &self.validated.config.backend.metrics_path;
        !mp.is_empty() && raw_path == mp
    }

    /// The metrics text (for GET and HEAD).
    pub(super) fn metrics_response(&self, req: &Request<'_>) -> Response {
        if req.method != "GET" && req.method != "HEAD" {
            return Response::error(405, None).header("Allow", "GET, HEAD");
        }
        let text = self.metrics.render().into_bytes();
        // HEAD loses the body in handle_async_metered, like every response.
        Response::new(200)
            .header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            .header("Cache-Control", "no-store")
            .header("Content-Length", text.len().to_string())
            .with_body(Body::Bytes(text))
    }

    /// Answers the health path; PHP-FPM and the upstreams are probed on the FastCGI
    /// and proxy threads (one after the other), so the host's thread never waits.
    pub(super) fn health_response(&self, req: &Request<'_>, complete: Completion) {
        if req.method != "GET" && req.method != "HEAD" {
            return complete(Response::error(405, None).header("Allow", "GET, HEAD"));
        }
        let head = req.is_head();
        let backends = self.health_without_probes();
        let proxy = self.proxy.as_ref().map(|p| p.prober());
        let then_proxy = move |mut backends: Backends| match proxy {
            Some(probe) => probe(Box::new(move |health| {
                backends.proxy = health;
                complete(health_document(Health::new(backends), head))
            })),
            None => complete(health_document(Health::new(backends), head)),
        };
        // Each FastCGI group is probed on its own thread, one after the other.
        let fastcgi: Vec<Prober> = self
            .fastcgi
            .iter()
            .chain(self.fastcgi_pools.values())
            .map(|f| Box::new(f.prober()) as Prober)
            .collect();
        if fastcgi.is_empty() {
            return then_proxy(backends);
        }
        let mut backends = backends;
        probe_in_turn(
            fastcgi,
            Vec::new(),
            Box::new(move |all| {
                if let Some(h) = BackendHealth::merge(all) {
                    backends.fastcgi = h;
                }
                then_proxy(backends)
            }),
        );
    }

    /// Checks every backend (PHP-FPM and the upstreams probed from this thread).
    pub fn health(&self) -> Health {
        let mut backends = self.health_without_probes();
        let fastcgi = self
            .fastcgi
            .iter()
            .chain(self.fastcgi_pools.values())
            .map(|f| f.probe_blocking())
            .collect();
        if let Some(h) = BackendHealth::merge(fastcgi) {
            backends.fastcgi = h;
        }
        if let Some(p) = &self.proxy {
            backends.proxy = p.probe_blocking();
        }
        Health::new(backends)
    }

    /// Every entry; the FastCGI and proxy ones say "not available" until probed.
    fn health_without_probes(&self) -> Backends {
        let unavailable = |kind: BackendKind| {
            let why = match self.availability(kind) {
                Availability::Unavailable(w) => w.clone(),
                Availability::Available => String::new(),
            };
            BackendHealth {
                enabled: false,
                healthy: false,
                message: format!("{} backend is not available: {why}", title(kind)),
                latency_ms: None,
                upstreams: Vec::new(),
            }
        };
        let static_files = match &self.static_files {
            Some(sf) => match sf.check() {
                Ok(()) => BackendHealth {
                    enabled: true,
                    healthy: true,
                    message: format!("Static backend is healthy (root: {})", sf.root().display()),
                    latency_ms: None,
                    upstreams: Vec::new(),
                },
                Err(e) => BackendHealth {
                    enabled: true,
                    healthy: false,
                    message: format!("Static backend is unhealthy: {e}"),
                    latency_ms: None,
                    upstreams: Vec::new(),
                },
            },
            None => unavailable(BackendKind::Static),
        };
        let embedded = match &self.embedded {
            Some(_) => match crate::backends::embedded::pool_stats()
                .into_iter()
                .find(|p| p.queued >= p.queue_size as i64)
            {
                // Saturated: every runner busy and the queue full, so new PHP
                // requests get 503 (a balancer should send them elsewhere).
                Some(p) => BackendHealth {
                    enabled: true,
                    healthy: false,
                    message: format!(
                        "Embedded backend is saturated: {} requests wait for a PHP runner ([{}] queue_size = {}), {} of {} runners busy",
                        p.queued,
                        if p.name == crate::backends::embedded::DEFAULT_POOL {
                            "php.pool".to_owned()
                        } else {
                            format!("php.pools.{}", p.name)
                        },
                        p.queue_size,
                        p.busy,
                        p.max
                    ),
                    latency_ms: Some(0),
                    upstreams: Vec::new(),
                },
                _ => BackendHealth {
                    enabled: true,
                    healthy: true,
                    message: "Embedded backend is healthy".to_owned(),
                    latency_ms: Some(0),
                    upstreams: Vec::new(),
                },
            },
            None => unavailable(BackendKind::Embedded),
        };
        Backends {
            embedded,
            fastcgi: unavailable(BackendKind::FastCgi),
            static_files,
            proxy: unavailable(BackendKind::Proxy),
        }
    }
}

type ProbeDone = Box<dyn FnOnce(BackendHealth) + Send>;
type Prober = Box<dyn FnOnce(ProbeDone) + Send>;

/// Runs `probers` one after the other (each answers from its own thread), then
/// hands every entry to `then`.
fn probe_in_turn(
    mut probers: Vec<Prober>,
    mut got: Vec<BackendHealth>,
    then: Box<dyn FnOnce(Vec<BackendHealth>) + Send>,
) {
    if probers.is_empty() {
        return then(got);
    }
    let first = probers.remove(0);
    first(Box::new(move |h| {
        got.push(h);
        probe_in_turn(probers, got, then)
    }))
}

fn title(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Embedded => "Embedded",
        BackendKind::FastCgi => "FastCGI",
        BackendKind::Static => "Static",
        BackendKind::Proxy => "Proxy",
    }
}

/// The health JSON as a response (headers only for HEAD).
fn health_document(health: Health, head: bool) -> Response {
    let json = health.to_json().into_bytes();
    let resp = Response::new(health.http_status())
        .header("Content-Type", "application/json")
        .header("Cache-Control", "no-store")
        .header("Content-Length", json.len().to_string())
        .with_body(Body::Bytes(json));
    if head {
        resp.for_head()
    } else {
        resp
    }
}
