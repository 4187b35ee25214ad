//! The host-neutral core: a validated configuration, its router and its backends.
//! Hosts reach it through the C ABI (`ffi`); tests drive it directly.

mod check;
mod endpoints;
mod reload;
mod series;

pub use check::check;
pub use reload::ReloadableEngine;
use series::EngineSeries;

use crate::backends::embedded::{self, Embedded};
use crate::backends::fastcgi::FastCgi;
use crate::backends::php::sendfile::Sendfile;
use crate::backends::php::{Php, Site};
use crate::backends::proxy::Proxy;
use crate::backends::serve::{Backend, Reply, Target};
use crate::backends::static_files::StaticFiles;
use crate::backends::BUILT;
use crate::config::{Availability, BackendKind, Config, ConfigError, Validated};
use crate::http::body;
use crate::http::compress::Compression;
use crate::http::head;
use crate::http::{Completion, Request, Response};
use crate::metrics::{Metrics, Source, StreamBytes};
use crate::routing::path::{self, PathError};
use crate::routing::router::{Route, Router};
use crate::routing::split::{Choice, Split};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

pub use crate::metrics::MeteredCompletion;

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Answered by the engine itself (`/_health`, `/_metrics`).
    Internal,
    Backend(Route),
}

pub struct Engine {
    validated: Validated,
    router: Router,
    static_files: Option<StaticFiles>,
    embedded: Option<Php<Embedded>>,
    fastcgi: Option<Php<FastCgi>>,
    /// `[php.fpm_pools.NAME]`: the named FastCGI upstream groups, by name.
    fastcgi_pools: NamedFastCgi,
    /// The FastCGI pool of each fastcgi rule that names one, by rule index.
    fastcgi_rules: HashMap<usize, String>,
    proxy: Option<Proxy>,
    /// Rules that split traffic, by their index in the configuration.
    splits: HashMap<usize, Split>,
    /// Embedded PHP of the rules that name a runner pool, by rule index.
    pooled: HashMap<usize, Php<Embedded>>,
    /// `[backend.compression]` when enabled: every backend's responses.
    compression: Option<Arc<Compression>>,
    metrics: Arc<Metrics>,
    /// The labelled histograms of named rules and PHP pools.
    series: EngineSeries,
}

impl Engine {
    #[cfg_attr(not(feature = "internals"), allow(dead_code))]
    /// Validates `config`, builds the router and backends, and (when the embedded
    /// backend is available) starts PHP in this process. The engine gets metrics
    /// of its own.
    pub fn new(config: Config) -> Result<Engine, ConfigError> {
        Engine::with_metrics(config, Arc::new(Metrics::new()))
    }

    /// As `new`, adding to `metrics` (which a reload carries over).
    pub fn with_metrics(config: Config, metrics: Arc<Metrics>) -> Result<Engine, ConfigError> {
        let validated = config.validate(BUILT)?;
        let fail = |msg: String| ConfigError {
            problems: vec![msg],
        };
        let router = Router::new(
            &validated.config.backend.routing_rules,
            validated.default_backend,
        )
        .map_err(fail)?;
        let sf = &validated.config.backend.static_files;
        let static_files = match validated.static_files {
            Availability::Available => {
                Some(StaticFiles::new(&sf.root, &sf.index_files).map_err(|e| fail(e.to_string()))?)
            }
            Availability::Unavailable(_) => None,
        };

        let php_enabled = validated.embedded.is_available() || validated.fastcgi.is_available();
        let php = if php_enabled {
            let Some(root) = validated.php_document_root() else {
                return Err(fail(
                    "PHP backends need a document root.\n    Set [php] document_root = \"/var/www/public\" (or [backend.static_files] root, which it defaults to).".to_owned(),
                ));
            };
            let files = StaticFiles::new(root, &sf.index_files)
                .map_err(|e| fail(format!("[php] document_root: {e}")))?;
            let sendfile = &validated.config.backend.sendfile;
            let sendfile = if sendfile.enable {
                Some(Arc::new(Sendfile::new(sendfile).map_err(fail)?))
            } else {
                None
            };
            Some(Arc::new(Site {
                files,
                root: embedded::absolute_root(root),
                front_controller: validated.config.php.front_controller.clone(),
                front_controller_internal: validated.config.php.front_controller_internal,
                serve_static: static_files.is_some(),
                sendfile,
            }))
        } else {
            None
        };

        // Streamed bodies a slow client is behind on go where PHP keeps its own
        // temporary files.
        body::set_spill_dir(
            validated
                .config
                .php
                .ini
                .get("upload_tmp_dir")
                .map(|d| PathBuf::from(d.to_string()))
                .filter(|d| !d.as_os_str().is_empty()),
        );
        let embedded = match (&php, validated.embedded.is_available()) {
            (Some(site), true) => Some(Php {
                site: site.clone(),
                runner: Embedded::start(
                    &validated.config.php.libphp_path,
                    &validated.config.php.ini,
                    embedded::DEFAULT_POOL,
                    &validated.config.php.pool,
                    &site.root,
                    metrics.clone(),
                )
                .map_err(fail)?,
            }),
            _ => None,
        };
        // Rules that name a runner pool of their own (`pool = "NAME"`), by index.
        let mut pooled = HashMap::new();
        if let (Some(site), true) = (&php, validated.embedded.is_available()) {
            let php_config = &validated.config.php;
            for (i, rule) in validated.config.backend.routing_rules.iter().enumerate() {
                let Some(name) = &rule.pool else {
                    continue;
                };
                // A fastcgi rule's pool is a FastCGI upstream group (below).
                if rule.backend.as_deref() == Some("fastcgi") {
                    continue;
                }
                let settings = &php_config.pools[name];
                let runner = Embedded::start(
                    &php_config.libphp_path,
                    &php_config.ini,
                    name,
                    settings,
                    &site.root,
                    metrics.clone(),
                )
                .map_err(fail)?;
                pooled.insert(
                    i,
                    Php {
                        site: site.clone(),
                        runner,
                    },
                );
            }
        }
        let (fastcgi, fastcgi_pools) = match (&php, validated.fastcgi.is_available()) {
            (Some(site), true) => {
                let (default, named) = fastcgi_groups(&validated, site, &metrics).map_err(fail)?;
                (Some(default), named)
            }
            _ => (None, BTreeMap::new()),
        };
        let fastcgi_rules = validated
            .config
            .backend
            .routing_rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.backend.as_deref() == Some("fastcgi"))
            .filter_map(|(i, r)| Some((i, r.pool.clone()?)))
            .collect();
        let proxy = if validated.proxy.is_available() {
            Some(Proxy::new(&validated.config.backend.proxy, metrics.clone()).map_err(fail)?)
        } else {
            None
        };
        let backend = &validated.config.backend;
        let splits = backend
            .routing_rules
            .iter()
            .enumerate()
            .filter_map(|(i, rule)| Some((i, Split::new(i, rule, &backend.split)?)))
            .collect();
        let compression = Compression::new(&backend.compression);
        let series = EngineSeries::new(&metrics, &validated, &router);
        Ok(Engine {
            validated,
            router,
            static_files,
            embedded,
            fastcgi,
            fastcgi_pools,
            fastcgi_rules,
            proxy,
            splits,
            pooled,
            compression,
            metrics,
            series,
        })
    }

    #[cfg_attr(not(feature = "internals"), allow(dead_code))]
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The seed's `[i]` lines for this configuration.
    pub fn messages(&self) -> &[String] {
        &self.validated.messages
    }

    pub fn availability(&self, kind: BackendKind) -> &Availability {
        self.validated.availability(kind)
    }

    /// Where request bodies too large for memory are kept: PHP's `upload_tmp_dir`
    /// when `[php.ini]` sets it, else its `sys_temp_dir`, else `$TMPDIR`, else
    /// `/tmp` — the directory PHP itself puts uploads and large bodies in.
    pub fn temp_dir(&self) -> PathBuf {
        let ini = &self.validated.config.php.ini;
        ["upload_tmp_dir", "sys_temp_dir"]
            .iter()
            .filter_map(|k| ini.get(*k))
            .map(|v| v.to_string())
            .find(|v| !v.trim().is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir)
    }

    #[cfg_attr(not(feature = "internals"), allow(dead_code))]
    /// The PHP version the embedded backend runs, when it is available.
    pub fn php_version(&self) -> Option<String> {
        self.embedded.as_ref().map(|e| e.php_version())
    }

    /// Per-process start, after a host forks its workers: threads (the PHP thread,
    /// the FastCGI and proxy threads) start here, never before the fork.
    pub fn worker_start(&self) -> Result<(), String> {
        if let Some(e) = &self.embedded {
            e.worker_start()?;
        }
        for e in self.pooled.values() {
            e.worker_start()?;
        }
        for f in self.fastcgi.iter().chain(self.fastcgi_pools.values()) {
            f.worker_start()?;
        }
        match &self.proxy {
            Some(p) => p.worker_start(),
            None => Ok(()),
        }
    }

    /// Decides where a request goes without running it. A rule that splits its
    /// traffic answers with its arm of the largest weight (the first of equal
    /// ones): no request, so no cookie or address to pick by.
    pub fn route(&self, target: &str) -> Result<Decision, PathError> {
        let t = path::split_target(target)?;
        if self.is_health(t.raw_path) || self.is_metrics(t.raw_path) {
            return Ok(Decision::Internal);
        }
        let normalized = path::normalize(t.raw_path)?;
        Ok(Decision::Backend(self.router.route(&normalized)))
    }

    #[cfg_attr(not(feature = "internals"), allow(dead_code))]
    /// Runs a request and waits for its response head.
    pub fn handle(&self, req: &Request<'_>) -> Response {
        self.handle_metered(req).0
    }

    /// As `handle`, with the byte counter of a streamed body (see
    /// `MeteredCompletion`).
    pub fn handle_metered(&self, req: &Request<'_>) -> (Response, Option<StreamBytes>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle_async_metered(
            req,
            Box::new(move |resp, bytes| {
                let _ = tx.send((resp, bytes));
            }),
        );
        rx.recv()
            .unwrap_or_else(|_| (Response::error(500, None), None))
    }

    #[cfg_attr(not(feature = "internals"), allow(dead_code))]
    /// Runs a request; `complete` gets the response exactly once — before this
    /// returns for static files, health and errors, later (from the PHP or FastCGI
    /// thread) for PHP, and for health when PHP-FPM is probed.
    pub fn handle_async(&self, req: &Request<'_>, complete: Completion) {
        self.handle_async_metered(req, Box::new(move |resp, _| complete(resp)))
    }

    /// As `handle_async`, recording the request in the metrics by the backend that
    /// answers it (a PHP route's existing non-PHP file counts as static).
    pub fn handle_async_metered(&self, req: &Request<'_>, complete: MeteredCompletion) {
        let answered = self.dispatch(req, complete, true);
        debug_assert!(answered, "a request with its body is always answered");
    }

    /// As `handle_async_metered`, for a request whose body the host has not read
    /// yet (`req.body` is ignored): answers it and returns true when the answer
    /// cannot depend on the body — a refused head or target, health, metrics, a
    /// static file, a PHP route's 404, redirect or non-PHP file, an unavailable
    /// backend. Returns false, having done nothing (`complete` is dropped
    /// uncalled, nothing is counted), when a PHP script or the proxy would run, or
    /// a split rule would pick an arm: the host reads the body, then calls
    /// `handle_async_metered`. So a client waiting on `Expect: 100-continue` gets
    /// a 404 at once rather than `100 Continue` first.
    pub fn handle_async_before_body(&self, req: &Request<'_>, complete: MeteredCompletion) -> bool {
        let req = Request {
            body: b"",
            ..req.clone()
        };
        self.dispatch(&req, complete, false)
    }

    /// Runs `req`, or, when `body_read` is false and a backend that takes the body
    /// would run, returns false at once (see `handle_async_before_body`).
    fn dispatch(&self, req: &Request<'_>, complete: MeteredCompletion, body_read: bool) -> bool {
        // HEAD gets GET's headers and never a body, whatever answers (400, 404, 503 too).
        let complete: MeteredCompletion = if req.is_head() {
            Box::new(move |resp, backend| complete(resp.for_head(), backend))
        } else {
            complete
        };
        let started = Instant::now();
        if let Err(e) = head::check(req, head::MAX_HEAD_SIZE) {
            tracing::debug!(error = %e, method = %req.method.escape_debug(), "refused a request head");
            return self.answer(Source::Internal, started, e.response(), complete);
        }
        if req.target == "*" && req.method == "OPTIONS" {
            // The asterisk-form asks about the server itself (RFC 9110 §9.3.7): a
            // no-op. Any other method with it is a bad target (400 below).
            let resp = Response::new(200).header("Content-Length", "0");
            return self.answer(Source::Internal, started, resp, complete);
        }
        let t = match path::split_target(req.target) {
            Ok(t) => t,
            Err(e) => return self.answer(Source::Internal, started, bad_request(e), complete),
        };
        if self.is_health(t.raw_path) {
            let complete = self.metered(Source::Internal, started, complete);
            self.health_response(req, complete);
            return true;
        }
        if self.is_metrics(t.raw_path) {
            let resp = self.metrics_response(req);
            return self.answer(Source::Internal, started, resp, complete);
        }
        let normalized = match path::normalize(t.raw_path) {
            Ok(p) => p,
            Err(e) => return self.answer(Source::Internal, started, bad_request(e), complete),
        };
        let route = self.router.route(&normalized);
        let (backend, complete) = match route.rule.and_then(|r| self.splits.get(&r)) {
            // Choosing an arm counts it and may set a cookie: only once, with the body.
            Some(_) if !body_read => return false,
            Some(split) => self.split_arm(split, req, complete),
            None => (route.backend, complete),
        };
        let target = Target {
            normalized: &normalized,
            raw_path: t.raw_path,
            query: t.query,
        };
        let reply = Reply::new(self.metrics.clone(), started, complete)
            .compressing(self.compression.as_ref().map(|c| c.negotiate(req)))
            .recording(self.series.of(backend, route.rule));
        let pooled = match (backend, route.rule) {
            (BackendKind::Embedded, Some(r)) => self.pooled.get(&r).map(|b| b as &dyn Backend),
            (BackendKind::FastCgi, Some(r)) => self
                .fastcgi_rules
                .get(&r)
                .and_then(|name| self.fastcgi_pools.get(name))
                .map(|b| b as &dyn Backend),
            _ => None,
        };
        match pooled.or_else(|| self.backend(backend)) {
            Some(b) => b.serve(req, &target, reply, body_read).is_ok(),
            None => {
                let why = unavailable(backend, self.availability(backend));
                reply.now(source_of(backend), why);
                true
            }
        }
    }

    /// The backend of `kind`, when it is available.
    fn backend(&self, kind: BackendKind) -> Option<&dyn Backend> {
        match kind {
            BackendKind::Static => self.static_files.as_ref().map(|b| b as &dyn Backend),
            BackendKind::Embedded => self.embedded.as_ref().map(|b| b as &dyn Backend),
            BackendKind::FastCgi => self.fastcgi.as_ref().map(|b| b as &dyn Backend),
            BackendKind::Proxy => self.proxy.as_ref().map(|b| b as &dyn Backend),
        }
    }

    /// The arm of a split rule for `req`, counted in the metrics; the completion
    /// adds the cookie that keeps the client there and, when configured, the header
    /// naming the arm.
    fn split_arm(
        &self,
        split: &Split,
        req: &Request<'_>,
        complete: MeteredCompletion,
    ) -> (BackendKind, MeteredCompletion) {
        let Choice {
            backend,
            set_cookie,
        } = split.choose(req);
        let arm = BackendKind::ALL
            .iter()
            .position(|&b| b == backend)
            .unwrap_or(0);
        self.metrics.split_request(split.rule, arm);
        let expose = self.validated.config.backend.split.expose_header.clone();
        if set_cookie.is_none() && expose.is_none() {
            return (backend, complete);
        }
        let complete: MeteredCompletion = Box::new(move |mut resp, bytes| {
            if let Some(c) = set_cookie {
                resp.push_header("Set-Cookie", c);
            }
            if let Some(h) = expose {
                resp.push_header(&h, backend.name());
            }
            complete(resp, bytes)
        });
        (backend, complete)
    }

    /// Records a response produced right here and hands it on.
    fn answer(
        &self,
        source: Source,
        started: Instant,
        resp: Response,
        complete: MeteredCompletion,
    ) -> bool {
        Reply::new(self.metrics.clone(), started, complete).now(source, resp);
        true
    }

    /// A completion for an answer the engine gives later (health with probes).
    fn metered(&self, source: Source, started: Instant, complete: MeteredCompletion) -> Completion {
        Reply::new(self.metrics.clone(), started, complete).later(source)
    }
}

/// The `[php.fpm_pools.NAME]` groups, by name.
type NamedFastCgi = BTreeMap<String, Php<FastCgi>>;

/// The FastCGI upstream groups: `[php]`'s and each `[php.fpm_pools.NAME]` (with
/// a site of its own when it has its own document root). Their upstreams take
/// consecutive metric slots, registered here.
fn fastcgi_groups(
    validated: &Validated,
    site: &Arc<Site>,
    metrics: &Arc<Metrics>,
) -> Result<(Php<FastCgi>, NamedFastCgi), String> {
    let php = &validated.config.php;
    let default = FastCgi::new(&php.fpm_default_group(), 0, &site.root, metrics.clone())?;
    let mut names = default.upstream_names();
    let mut named = BTreeMap::new();
    for name in php.fpm_pools.keys() {
        let Some(group) = php.fpm_pool_group(name) else {
            continue;
        };
        let site = match &group.document_root {
            None => site.clone(),
            Some(root) => {
                let index_files = &validated.config.backend.static_files.index_files;
                let files = StaticFiles::new(root, index_files).map_err(|e| {
                    format!(
                        "[php.fpm_pools.{name}] document_root {}: {e}",
                        root.display()
                    )
                })?;
                Arc::new(Site {
                    files,
                    root: embedded::absolute_root(root),
                    front_controller: site.front_controller.clone(),
                    front_controller_internal: site.front_controller_internal,
                    serve_static: site.serve_static,
                    sendfile: site.sendfile.clone(),
                })
            }
        };
        let runner = FastCgi::new(&group, names.len(), &site.root, metrics.clone())?;
        names.extend(runner.upstream_names());
        named.insert(name.clone(), Php { site, runner });
    }
    metrics.fpm_register(&names);
    Ok((
        Php {
            site: site.clone(),
            runner: default,
        },
        named,
    ))
}

/// Whom the answers of a backend kind are counted for.
fn source_of(kind: BackendKind) -> Source {
    match kind {
        BackendKind::Embedded => Source::Embedded,
        BackendKind::FastCgi => Source::FastCgi,
        BackendKind::Static => Source::Static,
        BackendKind::Proxy => Source::Proxy,
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
    use crate::http::Body;

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
    fn fastcgi_unreachable_is_502_and_unhealthy() {
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let missing = "/nonexistent/php-fpm.sock";
        for socket in [closed.as_str(), missing] {
            let e = engine(&format!(
                "fpm_socket = \"{socket}\"\n[[backend.routing_rules]]\npattern = {{ type = \"suffix\", value = \".php\" }}\nbackend = \"fastcgi\"\n"
            ));
            e.worker_start().unwrap();
            assert_eq!(
                e.route("/hello.php").unwrap(),
                Decision::Backend(Route {
                    backend: BackendKind::FastCgi,
                    rule: Some(0)
                })
            );
            let resp = e.handle(&Request::get("/hello.php"));
            assert_eq!(resp.status, 502, "{socket}");
            let Body::Bytes(b) = &resp.body else { panic!() };
            assert_eq!(
                b.as_slice(),
                b"502 Bad Gateway\nPHP-FPM is not reachable.\n"
            );
            // A missing script is 404 without asking PHP-FPM.
            assert_eq!(e.handle(&Request::get("/missing.php")).status, 404);

            let health = e.health();
            assert_eq!(health.http_status(), 503);
            let f = &health.backends.fastcgi;
            assert!(f.enabled && !f.healthy && f.latency_ms.is_none());
            assert!(f.message.contains(socket), "{}", f.message);
            let resp = e.handle(&Request::get("/_health"));
            assert_eq!(resp.status, 503);
        }
    }

    #[test]
    fn head_errors_have_no_body() {
        let e = engine("");
        for t in ["/../etc/passwd", "/missing.txt"] {
            let mut req = Request::get(t);
            req.method = "HEAD";
            let resp = e.handle(&req);
            assert!(resp.status >= 400, "{t}");
            assert!(matches!(resp.body, Body::Empty), "{t}: {:?}", resp.body);
            assert!(resp.get_header("content-length").is_some(), "{t}");
        }
    }

    #[test]
    fn bad_targets_are_400() {
        let e = engine("");
        for t in [
            "/../etc/passwd",
            "/a%00b",
            "/%2e%2e/x",
            "*",
            "/%ff",
            "example.com:80",
            "server.php",
        ] {
            assert_eq!(e.handle(&Request::get(t)).status, 400, "{t}");
        }
        let mut options = Request::get("*");
        options.method = "OPTIONS";
        assert_eq!(e.handle(&options).status, 200);
    }

    /// Checks every host gets from the engine (src/head.rs), whatever parsed the
    /// request: a C host may pass any bytes.
    #[test]
    fn bad_heads_are_refused_before_routing() {
        let e = engine("");
        let status = |method: &str, target: &str, headers: Vec<(&[u8], &[u8])>| {
            let mut req = Request::get(target);
            req.method = method;
            req.headers = headers;
            e.handle(&req).status
        };
        for method in ["", "\0", "GET\r\n", "G T", " GET", "GET\0"] {
            assert_eq!(status(method, "/index.html", vec![]), 400, "{method:?}");
        }
        assert_eq!(status("TRACE", "/index.html", vec![]), 501);
        assert_eq!(status("CONNECT", "example.com:443", vec![]), 501);
        // Tokens other than GET and HEAD are methods the static backend refuses.
        assert_eq!(status("get", "/index.html", vec![]), 405);
        assert_eq!(status("helloGET", "/index.html", vec![]), 405);
        for host in ["../../etc", "a b", "evil/../x", "", "x:80x", "[::1"] {
            let h = vec![(&b"Host"[..], host.as_bytes())];
            assert_eq!(status("GET", "/index.html", h), 400, "{host:?}");
        }
        let h = vec![(&b"Host"[..], &b"a"[..]), (&b"host"[..], &b"a"[..])];
        assert_eq!(status("GET", "/index.html", h), 400);
        for host in ["example.com", "example.com:8080", "[::1]:80", "10.0.0.1"] {
            let h = vec![(&b"Host"[..], host.as_bytes())];
            assert_eq!(status("GET", "/index.html", h), 200, "{host:?}");
        }
        for target in ["/index.html x", "/a\r\nb", "/\t"] {
            assert_eq!(status("GET", target, vec![]), 400, "{target:?}");
        }
        let many = vec![(&b"X-A"[..], &b"1"[..]); head::MAX_HEADER_LINES + 1];
        assert_eq!(status("GET", "/index.html", many), 431);
        // The engine's own limit on a head's size, whatever the host let through.
        let big = vec![0x61u8; head::MAX_HEAD_SIZE as usize];
        let h = vec![(&b"X-Big"[..], &big[..])];
        assert_eq!(status("GET", "/index.html", h), 431);
        let h = vec![(&b"X-Big"[..], &big[..(512 << 10)])];
        assert_eq!(status("GET", "/index.html", h), 200);
    }

    fn text(resp: Response) -> String {
        let Body::Bytes(b) = resp.body else { panic!() };
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn metrics_are_answered_before_routing_and_count_who_answered() {
        let e = engine("");
        assert_eq!(e.route("/_metrics").unwrap(), Decision::Internal);
        assert_eq!(e.handle(&Request::get("/index.html")).status, 200);
        assert_eq!(e.handle(&Request::get("/nope")).status, 404);
        assert_eq!(e.handle(&Request::get("/%00")).status, 400);
        let resp = e.handle(&Request::get("/_metrics"));
        assert_eq!(resp.status, 200);
        assert_eq!(
            resp.get_header("content-type"),
            Some(&b"text/plain; version=0.0.4; charset=utf-8"[..])
        );
        let t = text(resp);
        for line in [
            "fephp_requests_total{backend=\"static\",code=\"200\"} 1\n",
            "fephp_requests_total{backend=\"static\",code=\"404\"} 1\n",
            "fephp_requests_total{backend=\"internal\",code=\"400\"} 1\n",
        ] {
            assert!(t.contains(line), "{line} in\n{t}");
        }
        let mut head = Request::get("/_metrics");
        head.method = "HEAD";
        let resp = e.handle(&head);
        assert!(resp.status == 200 && matches!(resp.body, Body::Empty));
        let mut post = Request::get("/_metrics");
        post.method = "POST";
        assert_eq!(e.handle(&post).status, 405);

        let root = env!("CARGO_MANIFEST_DIR").to_owned() + "/examples/public";
        let off = Engine::new(
            Config::from_toml(&format!(
                "[backend]\ndefault_backend = \"static\"\nmetrics_path = \"\"\n[backend.static_files]\nenable = true\nroot = \"{root}\"\n[php]\nlibphp_path = \"/nonexistent\"\n"
            ))
            .unwrap(),
        )
        .unwrap();
        assert!(matches!(
            off.route("/_metrics").unwrap(),
            Decision::Backend(_)
        ));
        assert_eq!(off.handle(&Request::get("/_metrics")).status, 404);
    }

    #[test]
    fn a_reload_swaps_the_engine_for_new_requests_and_keeps_the_metrics() {
        let root = env!("CARGO_MANIFEST_DIR").to_owned() + "/examples/public";
        let config = |health: &str| {
            Config::from_toml(&format!(
                "[backend]\ndefault_backend = \"static\"\nhealth_path = \"{health}\"\n[backend.static_files]\nenable = true\nroot = \"{root}\"\n[php]\nlibphp_path = \"/nonexistent\"\n"
            ))
            .unwrap()
        };
        let r = ReloadableEngine::new(config("/_health")).unwrap();
        let old = r.current();
        assert_eq!(old.handle(&Request::get("/index.html")).status, 200);
        r.reload(config("/_h2")).unwrap();
        assert_eq!(r.current().route("/_h2").unwrap(), Decision::Internal);
        // A request that took the old engine still runs on it.
        assert_eq!(old.route("/_health").unwrap(), Decision::Internal);
        assert!(matches!(
            r.current().route("/_health").unwrap(),
            Decision::Backend(_)
        ));
        let bad = config("no-slash");
        assert!(r.reload(bad).is_err());
        assert_eq!(r.current().route("/_h2").unwrap(), Decision::Internal);
        let t = text(r.current().handle(&Request::get("/_metrics")));
        assert!(t.contains("\nfephp_config_reloads_total 1\n"), "{t}");
        assert!(
            t.contains("\nfephp_config_reload_failures_total 1\n"),
            "{t}"
        );
        assert!(
            t.contains("fephp_requests_total{backend=\"static\",code=\"200\"} 1\n"),
            "{t}"
        );
    }
    #[test]
    fn named_rules_keep_their_histograms_over_a_reload() {
        let root = env!("CARGO_MANIFEST_DIR").to_owned() + "/examples/public";
        let config = |name: &str| {
            Config::from_toml(&format!(
                "[backend]\ndefault_backend = \"static\"\n[backend.static_files]\nenable = true\nroot = \"{root}\"\n[php]\nlibphp_path = \"/nonexistent\"\n[[backend.routing_rules]]\npattern = {{ type = \"exact\", value = \"/index.html\" }}\nbackend = \"static\"\nname = \"{name}\"\n"
            ))
            .unwrap()
        };
        let count = |t: &str, rule: &str| {
            let series = format!("fephp_rule_request_duration_seconds_count{{rule=\"{rule}\"}} ");
            t.lines()
                .find_map(|l| l.strip_prefix(&series))
                .map(|v| v.parse::<u64>().unwrap())
        };
        let r = ReloadableEngine::new(config("home")).unwrap();
        assert_eq!(r.current().handle(&Request::get("/index.html")).status, 200);
        // Unnamed: the default backend, no rule series.
        assert_eq!(r.current().handle(&Request::get("/nope")).status, 404);
        // The same name after a reload: the same series, its count carried over.
        r.reload(config("home")).unwrap();
        assert_eq!(r.current().handle(&Request::get("/index.html")).status, 200);
        let t = text(r.current().handle(&Request::get("/_metrics")));
        assert_eq!(count(&t, "home"), Some(2), "{t}");
        // Renamed: a new series from zero; the old one stays as it was.
        r.reload(config("start")).unwrap();
        assert_eq!(r.current().handle(&Request::get("/index.html")).status, 200);
        let t = text(r.current().handle(&Request::get("/_metrics")));
        assert_eq!(count(&t, "home"), Some(2), "{t}");
        assert_eq!(count(&t, "start"), Some(1), "{t}");
        assert_eq!(
            t.matches("# TYPE fephp_rule_request_duration_seconds histogram")
                .count(),
            1
        );
    }
}
