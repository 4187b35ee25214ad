//! The host-neutral core: a validated configuration, its router and its backends.
//! Hosts reach it through the C ABI (`ffi`); tests drive it directly.

use crate::backends::embedded::{self, Completion, Embedded, Job};
use crate::backends::fastcgi::FastCgi;
use crate::backends::proxy::Proxy;
use crate::backends::static_files::{self, StaticFiles};
use crate::backends::BUILT;
use crate::body;
use crate::cgi::{self, CgiVars, Resolution};
use crate::config::{Availability, BackendKind, Config, ConfigError, Validated};
use crate::framing;
use crate::head;
use crate::health::{BackendHealth, Backends, Health};
use crate::http::{Body, Request, Response};
use crate::metrics::{Metrics, Source, StreamBytes};
use crate::path::{self, PathError};
use crate::router::{Route, Router};
use crate::split::{Choice, Split};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Receives a response and, for a streamed body, the counter its reader feeds
/// (`StreamBytes::add` for every chunk read) so that `fephp_response_bytes_total`
/// includes it.
pub type MeteredCompletion = Box<dyn FnOnce(Response, Option<StreamBytes>) + Send>;

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Answered by the engine itself (`/_health`, `/_metrics`).
    Internal,
    Backend(Route),
}

/// The PHP document root as both PHP backends see it.
struct PhpSite {
    /// Opens files below the root (resolution) and serves its non-PHP files.
    files: StaticFiles,
    /// Absolute path, for SCRIPT_FILENAME and DOCUMENT_ROOT.
    root: PathBuf,
    front_controller: Option<String>,
    /// Existing non-PHP files are served only when static serving is enabled.
    serve_static: bool,
}

pub struct Engine {
    validated: Validated,
    router: Router,
    static_files: Option<StaticFiles>,
    php: Option<PhpSite>,
    embedded: Option<Embedded>,
    fastcgi: Option<FastCgi>,
    proxy: Option<Proxy>,
    /// Rules that split traffic, by their index in the configuration.
    splits: HashMap<usize, Split>,
    metrics: Arc<Metrics>,
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
            Some(PhpSite {
                files,
                root: embedded::absolute_root(root),
                front_controller: validated.config.php.front_controller.clone(),
                serve_static: static_files.is_some(),
            })
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
        let embedded = if validated.embedded.is_available() {
            Some(
                Embedded::start(
                    &validated.config.php.libphp_path,
                    &validated.config.php.ini,
                    metrics.clone(),
                )
                .map_err(fail)?,
            )
        } else {
            None
        };
        let fastcgi = match (&php, validated.fastcgi.is_available()) {
            (Some(site), true) => Some(
                FastCgi::new(&validated.config.php, &site.root, metrics.clone()).map_err(fail)?,
            ),
            _ => None,
        };
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
        Ok(Engine {
            validated,
            router,
            static_files,
            php,
            embedded,
            fastcgi,
            proxy,
            splits,
            metrics,
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
        if let Some(f) = &self.fastcgi {
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

    fn is_health(&self, raw_path: &str) -> bool {
        let hp = &self.validated.config.backend.health_path;
        !hp.is_empty() && raw_path == hp
    }

    fn is_metrics(&self, raw_path: &str) -> bool {
        let mp = &self.validated.config.backend.metrics_path;
        !mp.is_empty() && raw_path == mp
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
        match backend {
            BackendKind::Static => {
                let resp = match &self.static_files {
                    Some(sf) => sf.serve(req, &normalized, t.query),
                    None => {
                        unavailable(BackendKind::Static, self.availability(BackendKind::Static))
                    }
                };
                self.answer(Source::Static, started, resp, complete)
            }
            BackendKind::Embedded => match (&self.embedded, &self.php) {
                (Some(e), Some(site)) => self.php_request(
                    req,
                    (&normalized, t.query),
                    site,
                    (Source::Embedded, started, complete),
                    body_read,
                    |filename, vars, complete| e.submit(Job::new(req, filename, vars, complete)),
                ),
                _ => self.answer(
                    Source::Embedded,
                    started,
                    unavailable(
                        BackendKind::Embedded,
                        self.availability(BackendKind::Embedded),
                    ),
                    complete,
                ),
            },
            BackendKind::FastCgi => match (&self.fastcgi, &self.php) {
                (Some(f), Some(site)) => self.php_request(
                    req,
                    (&normalized, t.query),
                    site,
                    (Source::FastCgi, started, complete),
                    body_read,
                    |_, vars, complete| f.submit(req, vars, complete),
                ),
                _ => self.answer(
                    Source::FastCgi,
                    started,
                    unavailable(
                        BackendKind::FastCgi,
                        self.availability(BackendKind::FastCgi),
                    ),
                    complete,
                ),
            },
            BackendKind::Proxy => match &self.proxy {
                Some(_) if !body_read => false,
                Some(p) => {
                    // The target as the client sent it, in origin form.
                    let origin = match (req.target.starts_with('/'), t.query) {
                        (true, _) => req.target.to_owned(),
                        (false, Some(q)) => format!("{}?{q}", t.raw_path),
                        (false, None) => t.raw_path.to_owned(),
                    };
                    p.submit(req, &origin, self.metered(Source::Proxy, started, complete));
                    true
                }
                None => self.answer(
                    Source::Proxy,
                    started,
                    unavailable(BackendKind::Proxy, self.availability(BackendKind::Proxy)),
                    complete,
                ),
            },
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
        let bytes = self.metrics.request_finished(source, started, false, &resp);
        complete(resp, bytes);
        true
    }

    /// A completion for a backend that answers later: in flight until it does.
    fn metered(&self, source: Source, started: Instant, complete: MeteredCompletion) -> Completion {
        self.metrics.request_started(source);
        let metrics = self.metrics.clone();
        Box::new(move |resp| {
            let bytes = metrics.request_finished(source, started, true, &resp);
            complete(resp, bytes)
        })
    }

    /// Script resolution shared by the PHP backends; `run` queues the script
    /// (its file name and CGI variables). `target` is the normalized path and the
    /// query; `answer` whom the answer is counted for, since when, and who gets it.
    fn php_request(
        &self,
        req: &Request<'_>,
        (normalized, query): (&str, Option<&str>),
        site: &PhpSite,
        (source, started, complete): (Source, Instant, MeteredCompletion),
        body_read: bool,
        run: impl FnOnce(&Path, CgiVars, Completion),
    ) -> bool {
        match cgi::resolve(&site.files, normalized, site.front_controller.as_deref()) {
            Resolution::Script { .. } if !body_read => false,
            Resolution::Script {
                script_name,
                path_info,
            } => {
                let vars = cgi::variables(req, &site.root, &script_name, &path_info, query);
                let filename = site.root.join(script_name.trim_start_matches('/'));
                let complete = self.metered(source, started, complete);
                // Whatever headers the script set, the response is framed truly.
                let (head, script) = (req.is_head(), filename.display().to_string());
                let complete: Completion = Box::new(move |mut resp| {
                    framing::sanitize(&mut resp, head, &script);
                    complete(resp)
                });
                run(&filename, vars, complete);
                true
            }
            Resolution::Static if site.serve_static => {
                let resp = site.files.serve(req, normalized, query);
                self.answer(Source::Static, started, resp, complete)
            }
            // A redirect would tell that a hidden directory (`/.git`) exists.
            Resolution::AddSlash if static_files::is_hidden(normalized) => {
                self.answer(source, started, Response::error(404, None), complete)
            }
            Resolution::AddSlash => {
                let resp = static_files::add_slash(normalized, query);
                self.answer(source, started, resp, complete)
            }
            Resolution::Static | Resolution::NotFound => {
                self.answer(source, started, Response::error(404, None), complete)
            }
            Resolution::Unavailable => {
                self.answer(source, started, Response::error(503, None), complete)
            }
        }
    }

    /// The metrics text (for GET and HEAD).
    fn metrics_response(&self, req: &Request<'_>) -> Response {
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
    fn health_response(&self, req: &Request<'_>, complete: Completion) {
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
        match &self.fastcgi {
            Some(f) => {
                let mut backends = backends;
                f.probe(Box::new(move |fastcgi| {
                    backends.fastcgi = fastcgi;
                    then_proxy(backends)
                }));
            }
            None => then_proxy(backends),
        }
    }

    /// Checks every backend (PHP-FPM and the upstreams probed from this thread).
    pub fn health(&self) -> Health {
        let mut backends = self.health_without_probes();
        if let Some(f) = &self.fastcgi {
            backends.fastcgi = f.probe_blocking();
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
        let embedded = match &self.embedded {
            Some(_) => BackendHealth {
                enabled: true,
                healthy: true,
                message: "Embedded backend is healthy".to_owned(),
                latency_ms: Some(0),
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

/// An engine whose configuration can be replaced while it serves (what a C host's
/// `fephp_engine` is). Each request takes the current `Engine` when it starts and
/// finishes on it: a reload never disturbs requests in flight, and the old engine
/// (its FastCGI connections included) goes away when the last of them is done.
/// The metrics carry over.
pub struct ReloadableEngine {
    current: RwLock<Arc<Engine>>,
    metrics: Arc<Metrics>,
    /// The process in which `worker_start` ran (0: none yet). A reload there starts
    /// the new engine's threads too; a master that never started keeps none.
    started_in: AtomicU32,
    reloading: Mutex<()>,
}

impl ReloadableEngine {
    pub fn new(config: Config) -> Result<ReloadableEngine, ConfigError> {
        // Pin the start directory now, before PHP moves the process: relative paths
        // in a file reloaded later are resolved against it.
        let _ = crate::config::absolute(Path::new("."));
        let metrics = Arc::new(Metrics::new());
        let engine = Engine::with_metrics(config, metrics.clone())?;
        Ok(ReloadableEngine {
            current: RwLock::new(Arc::new(engine)),
            metrics,
            started_in: AtomicU32::new(0),
            reloading: Mutex::new(()),
        })
    }

    /// The engine new requests go to.
    pub fn current(&self) -> Arc<Engine> {
        self.current.read().clone()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Builds an engine from `config` and makes it current. On error nothing
    /// changes. PHP's runtime is per process: `[php] libphp_path` or `[php.ini]`
    /// changes are refused ("needs a restart").
    pub fn reload(&self, config: Config) -> Result<(), ConfigError> {
        let _one = self.reloading.lock();
        let built = Engine::with_metrics(config, self.metrics.clone()).and_then(|e| {
            if self.started_in.load(Ordering::Relaxed) == std::process::id() {
                e.worker_start().map_err(|msg| ConfigError {
                    problems: vec![msg],
                })?;
            }
            Ok(e)
        });
        let engine = match built {
            Ok(e) => e,
            Err(e) => {
                self.metrics.reloaded(false);
                return Err(e);
            }
        };
        let old = std::mem::replace(&mut *self.current.write(), Arc::new(engine));
        self.metrics.reloaded(true);
        // Requests still running on `old` hold it; the last one drops it.
        drop(old);
        Ok(())
    }

    /// Why `config` cannot be applied by `reload` in this process, if it cannot:
    /// it changes `[php] libphp_path` or `[php.ini]` of the PHP runtime running
    /// here (and uses the embedded backend).
    pub fn restart_required(&self, config: &Config) -> Option<String> {
        // Only a file that differs from the running PHP is validated here (again,
        // by the reload otherwise): does it use the embedded backend at all?
        let why = embedded::runtime_conflict(&config.php.libphp_path, &config.php.ini)?;
        let validated = config.clone().validate(BUILT).ok()?;
        validated.embedded.is_available().then_some(why)
    }

    /// Per-process start (see `Engine::worker_start`), from the host thread that
    /// will start the host's other threads: SIGPROF is blocked in it (they inherit
    /// that), so PHP's CPU-time limit lands on the PHP thread (`sigprof`).
    pub fn worker_start(&self) -> Result<(), String> {
        crate::backends::sigprof::set_blocked(true);
        self.current().worker_start()?;
        self.started_in.store(std::process::id(), Ordering::Relaxed);
        Ok(())
    }
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
}
