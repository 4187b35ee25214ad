//! The FastCGI backend: a group of PHP-FPM upstreams (one or several, over TCP or
//! Unix sockets, with weights), each with a bounded pool of connections per
//! worker process (kept alive between requests only with `fpm_keep_alive`). An engine has one `FastCgi` per group: `[php]
//! fpm_*` and each `[php.fpm_pools.NAME]`.
//!
//! Each group runs one I/O thread per worker process (`backends::io_thread`,
//! started after the fork); requests are queued to it and answered through their
//! completion from it.
//!
//! - `protocol`: FastCGI records, encoded and decoded (pure);
//! - `client`: one request over one connection;
//! - `response`: PHP's CGI output turned into a `Response`, buffered or streamed;
//! - `pool`: the bounded, kept-alive connections of one process to one upstream;
//! - `balance`: which upstream takes an attempt, passive health (pure);
//! - `group`: a process's upstreams, their pools and balancer, health published;
//! - `run`: one request's attempts over the group (fail over only if unsent);
//! - `probe`: the `/_health` check and the active prober;
//! - `failure`: what went wrong, for the client's error page and the log.

mod balance;
mod client;
// `fuzzing` below makes `Failure` reachable; its constructors take private types.
#[cfg_attr(fuzzing, allow(private_interfaces))]
mod failure;
mod group;
mod pool;
mod probe;
mod protocol;
mod response;
mod run;

/// The FastCGI internals the `cargo fuzz` targets drive (`fuzz/`). Compiled only
/// under `--cfg fuzzing`, which cargo-fuzz sets: no part of the normal API.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing {
    pub use super::client::read_response;
    pub use super::response::Responder;
    pub mod protocol {
        pub use super::super::protocol::*;
    }
    pub mod response {
        pub use super::super::response::*;
    }
}

/// FastCGI record encoding and decoding for the criterion benchmarks
/// (`benches/fastcgi.rs`, built with `--features internals`): no part of the
/// normal API.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod protocol_internals {
    pub use super::protocol::*;
}

use super::io_thread::{self, IoThread, PerProcess, Task};
use crate::backends::php::cgi::CgiVars;
use crate::backends::php::Runner;
use crate::config::{FpmAddress, FpmGroup};
use crate::health::BackendHealth;
use crate::http::request_body::RequestBody;
use crate::http::Completion;
use crate::http::{Body, Request, Response};
use crate::metrics::Metrics;
use crate::metrics::Source;
use crate::metrics::{Family, Series};
use group::Group;
use parking_lot::Mutex;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Whether this build contains the FastCGI backend.
pub const BUILT: bool = true;

/// The timeouts of one exchange.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    pub connect: Duration,
    /// Longest silence between two reads.
    pub read: Duration,
    /// Longest wait for one write of the request.
    pub send: Duration,
}

/// One php-fpm of a group.
struct Upstream {
    address: FpmAddress,
    /// As written, for messages.
    shown: String,
    weight: u32,
    /// Its series in the shared metrics.
    slot: usize,
    /// Its request duration histogram.
    duration: Series,
}

/// Settings of one group, from `[php]` or `[php.fpm_pools.NAME]`.
struct Settings {
    /// As configured (names, keys and balancing).
    group: FpmGroup,
    upstreams: Vec<Upstream>,
    max_connections: usize,
    /// FCGI_KEEP_CONN and the pool of idle connections (`fpm_keep_alive`).
    keep_alive: bool,
    timeouts: Timeouts,
    idle_timeout: Duration,
    ping_path: Option<String>,
    document_root: PathBuf,
    /// Pool gauges and counters.
    metrics: Arc<Metrics>,
}

impl Settings {
    /// The key that names php-fpm's address: "fpm_socket", "upstreams", ….
    fn address_key(&self) -> String {
        self.group.key(if self.group.socket.is_some() {
            "socket"
        } else {
            "upstreams"
        })
    }

    /// Where `u` is configured: `[php] fpm_socket = "…"`, or
    /// `[php] fpm_upstreams address = "…"`.
    fn where_is(&self, u: &Upstream) -> String {
        let key = self.address_key();
        let section = self.group.section();
        if self.group.socket.is_some() {
            format!("{section} {key} = \"{}\"", u.shown)
        } else {
            format!("{section} {key} address = \"{}\"", u.shown)
        }
    }
}

/// One request, owned, ready for the FastCGI thread.
struct FcgiJob {
    /// BEGIN_REQUEST and PARAMS records, the empty one included.
    request: Vec<u8>,
    /// Sent as STDIN, read as it goes out.
    body: RequestBody,
    head: bool,
    /// Whether a request that went out on a kept-alive connection found closed
    /// may go again on a fresh one: not for POST, PATCH and LOCK (as nginx's
    /// `non_idempotent`), whose script may have run before php-fpm died.
    retriable: bool,
    /// For log lines: "GET /index.php?x".
    log_uri: String,
    complete: Option<Completion>,
}

/// A job dropped unrun (the FastCGI thread could not take it) still answers.
impl Drop for FcgiJob {
    fn drop(&mut self) {
        if let Some(c) = self.complete.take() {
            self.body.close();
            c(Response::error(
                503,
                Some("PHP-FPM is not available in this worker."),
            ));
        }
    }
}

/// The 431 page for a header PHP-FPM cannot take (`http::reason` has no 431).
fn header_too_large(e: &protocol::ParamTooLarge) -> Response {
    let what = match e.name.strip_prefix("HTTP_") {
        Some(h) => format!("The {} header", header_name(h)),
        None => format!("The {} variable", e.name),
    };
    let text = format!(
        "431 Request Header Fields Too Large\n{what} is {} bytes; PHP-FPM takes at most {}.\n",
        e.value_len, e.max_value_len
    );
    Response::new(431)
        .header("Content-Type", "text/plain; charset=utf-8")
        .header("Content-Length", text.len().to_string())
        .with_body(Body::Bytes(text.into_bytes()))
}

/// "X_FORWARDED_FOR" → "X-Forwarded-For".
fn header_name(var: &str) -> String {
    var.split('_')
        .map(|w| {
            let mut w = w.to_ascii_lowercase();
            if let Some(f) = w.get_mut(..1) {
                f.make_ascii_uppercase();
            }
            w
        })
        .collect::<Vec<_>>()
        .join("-")
}

impl FcgiJob {
    /// Encodes the request. CONTENT_LENGTH is the body's exact length; a variable
    /// too large for one FastCGI record gives the 431 response back instead.
    fn new(
        req: &Request<'_>,
        cgi: CgiVars,
        complete: Completion,
        keep_alive: bool,
    ) -> Result<FcgiJob, (Response, Completion)> {
        let exact_length = req.body_len().to_string();
        let size: usize = cgi.vars.iter().map(|(n, v)| n.len() + v.len() + 8).sum();
        let mut request = Vec::with_capacity(size + 64);
        protocol::push_begin_request(&mut request, keep_alive);
        let pairs = cgi.vars.iter().map(|(n, v)| {
            if n == b"CONTENT_LENGTH" && !(v.is_empty() && req.body_len() == 0) {
                (n, exact_length.as_bytes())
            } else {
                (n, v)
            }
        });
        if let Err(e) = protocol::push_params(&mut request, pairs, protocol::MAX_CONTENT) {
            tracing::warn!(uri = %format!("{} {}", req.method, req.target), "answered 431: {} is {} bytes and PHP-FPM takes at most {} (one FastCGI record per variable)", e.name, e.value_len, e.max_value_len);
            let resp = header_too_large(&e);
            return Err((if req.is_head() { resp.for_head() } else { resp }, complete));
        }
        Ok(FcgiJob {
            request,
            body: req.body_for_backend(),
            head: req.is_head(),
            retriable: !matches!(req.method, "POST" | "PATCH" | "LOCK"),
            log_uri: format!("{} {}", req.method, req.target),
            complete: Some(complete),
        })
    }
}

/// The FastCGI thread of one process and its upstreams.
struct Worker {
    thread: IoThread,
    group: Arc<Group>,
}

impl Worker {
    fn start(settings: Arc<Settings>) -> io::Result<Worker> {
        let group = Arc::new(Group::new(settings.clone()));
        let reaper: Task = Box::pin({
            let group = group.clone();
            async move {
                let every = (group.settings.idle_timeout / 4)
                    .clamp(Duration::from_millis(100), Duration::from_secs(5));
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    group.close_idle();
                }
            }
        });
        // Blocking work: streamed bodies waiting for slow clients (at most one per
        // connection) and host name lookups.
        let blocking = (settings.max_connections * settings.upstreams.len() + 4).min(4096);
        let thread = IoThread::start("fastcgi", blocking, Some(reaper))?;
        if let (Some(every), Some(_)) = (settings.group.health_interval, &settings.ping_path) {
            if thread
                .spawn(Box::pin(probe::watch(group.clone(), every)))
                .is_err()
            {
                tracing::warn!(pool = %settings.group.name, "cannot start the active PHP-FPM prober; passive health only");
            }
        }
        Ok(Worker { thread, group })
    }
}

/// One FastCGI upstream group of an engine.
pub struct FastCgi {
    settings: Arc<Settings>,
    /// This process's FastCGI thread (re-created after a fork).
    worker: PerProcess<Worker>,
}

impl FastCgi {
    /// Reads the settings of `group`, whose upstreams count in the shared metrics
    /// from slot `first_slot` on; starts nothing (threads start per process, after
    /// fork).
    pub fn new(
        group: &FpmGroup,
        first_slot: usize,
        document_root: &Path,
        metrics: Arc<Metrics>,
    ) -> Result<FastCgi, String> {
        let upstreams = group
            .upstreams()
            .into_iter()
            .enumerate()
            .map(|(i, u)| {
                let address = FpmAddress::parse(&u.address).map_err(|e| {
                    format!(
                        "{} \"{}\": {e}",
                        group.full_key(if group.socket.is_some() {
                            "socket"
                        } else {
                            "upstreams"
                        }),
                        u.address
                    )
                })?;
                let shown = u.address.trim().to_owned();
                let duration = metrics.series(
                    Family::FastcgiUpstreamDuration,
                    &[("pool", &group.name), ("upstream", &shown)],
                );
                Ok(Upstream {
                    address,
                    shown,
                    weight: u.weight,
                    slot: first_slot + i,
                    duration,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        if upstreams.is_empty() {
            return Err(format!("{} names no php-fpm", group.section()));
        }
        Ok(FastCgi {
            settings: Arc::new(Settings {
                group: group.clone(),
                upstreams,
                max_connections: group.max_connections.max(1),
                keep_alive: group.keep_alive,
                timeouts: Timeouts {
                    connect: group.connect_timeout,
                    read: group.read_timeout,
                    send: group.send_timeout,
                },
                idle_timeout: group.idle_timeout,
                ping_path: group.ping_path.clone(),
                document_root: document_root.to_owned(),
                metrics,
            }),
            worker: PerProcess::default(),
        })
    }

    /// The (pool, address) of each upstream, in slot order, for the metrics.
    pub fn upstream_names(&self) -> Vec<crate::metrics::FpmName> {
        let s = &self.settings;
        s.upstreams
            .iter()
            .map(|u| crate::metrics::FpmName {
                pool: s.group.name.clone(),
                address: u.shown.clone(),
                weight: u.weight,
            })
            .collect()
    }

    /// Starts this process's FastCGI thread (after fork), if not running yet.
    pub fn worker_start(&self) -> Result<(), String> {
        self.worker().map(|_| ())
    }

    fn worker(&self) -> Result<Arc<Worker>, String> {
        self.worker.get(|| {
            Worker::start(self.settings.clone())
                .map_err(|e| format!("cannot start the FastCGI thread: {e}"))
        })
    }

    /// Queues a request; `complete` runs on the FastCGI thread (or here, at once,
    /// when the request cannot be sent).
    pub fn submit(&self, req: &Request<'_>, cgi: CgiVars, complete: Completion) {
        let job = match FcgiJob::new(req, cgi, complete, self.settings.keep_alive) {
            Ok(job) => job,
            Err((resp, complete)) => return complete(resp),
        };
        // A job that cannot be queued drops (with its task) and answers 503.
        match self.worker() {
            Ok(w) => {
                if w.thread
                    .spawn(Box::pin(run::run(w.group.clone(), job)))
                    .is_err()
                {
                    tracing::error!("the FastCGI thread has stopped; answering 503");
                }
            }
            Err(msg) => tracing::error!("{msg}; answering 503"),
        }
    }

    /// A probe of the group that can run later (from any thread): `done` gets the
    /// health entry, from the FastCGI thread.
    pub fn prober(&self) -> impl FnOnce(Box<dyn FnOnce(BackendHealth) + Send>) + Send + 'static {
        let worker = self.worker().ok();
        let settings = self.settings.clone();
        move |done| {
            let Some(w) = worker else {
                return done(probe_blocking(settings, None));
            };
            // Kept outside the task, so that it still answers if the task cannot run.
            let done = Arc::new(Mutex::new(Some(done)));
            let task: Task = Box::pin({
                let done = done.clone();
                let settings = settings.clone();
                let group = w.group.clone();
                async move {
                    let health = probe::probe(&settings, Some(&group)).await;
                    if let Some(d) = done.lock().take() {
                        d(health);
                    }
                }
            });
            if w.thread.spawn(task).is_err() {
                if let Some(d) = done.lock().take() {
                    d(probe_blocking(settings, Some(w.group.clone())));
                }
            }
        }
    }

    /// Probes the group from the calling thread (on a short-lived helper thread
    /// with its own runtime, so it works anywhere: before fork, inside a runtime).
    pub fn probe_blocking(&self) -> BackendHealth {
        let group = self
            .worker
            .get(|| Err(String::new()))
            .ok()
            .map(|w| w.group.clone());
        probe_blocking(self.settings.clone(), group)
    }
}

fn probe_blocking(settings: Arc<Settings>, group: Option<Arc<Group>>) -> BackendHealth {
    io_thread::block_on_helper("fastcgi-probe", async move {
        probe::probe(&settings, group.as_deref()).await
    })
    .unwrap_or_else(probe::unhealthy)
}

impl FastCgi {}

impl Runner for FastCgi {
    const SOURCE: Source = Source::FastCgi;

    fn run(&self, req: &Request<'_>, _filename: &Path, vars: CgiVars, complete: Completion) {
        self.submit(req, vars, complete)
    }
}
