//! The proxy backend: requests forwarded to HTTP/1.1 upstream servers, with
//! kept-alive connections per worker process, round-robin over several upstreams
//! and passive health. Response bodies stream back as they arrive.
//!
//! Like FastCGI, each worker process runs the backend on its own I/O thread
//! (`backends::io_thread`, started after the fork).
//!
//! - `headers`: what is forwarded each way (hop-by-hop, `Proxy`, `X-Forwarded-*`);
//! - `upstream`: connections, the turn, passive health;
//! - `exchange`: one request's attempts and its response body;
//! - `failure`: what went wrong, for the client's error page and the log.

mod exchange;
mod failure;
mod headers;
mod upstream;

use super::io_thread::{self, IoThread, PerProcess, Task};
use crate::backends::serve::{Backend, Reply, Target};
use crate::config::{ProxyConfig, UpstreamAddress};
use crate::health::BackendHealth;
use crate::http::Completion;
use crate::http::Request;
use crate::metrics::Metrics;
use crate::metrics::Source;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};
use upstream::Upstreams;

/// Settings of the backend, from `[backend.proxy]`.
pub struct Settings {
    upstreams: Vec<UpstreamAddress>,
    connect_timeout: Duration,
    read_timeout: Duration,
    idle_timeout: Duration,
    max_connections: usize,
    max_fails: u32,
    fail_timeout: Duration,
    metrics: Arc<Metrics>,
}

/// This process's proxy thread and upstreams.
struct Worker {
    thread: IoThread,
    upstreams: Arc<Upstreams>,
}

impl Worker {
    fn start(settings: &Arc<Settings>) -> std::io::Result<Worker> {
        let upstreams = Arc::new(Upstreams::new(settings));
        let reaper: Task = Box::pin({
            let upstreams = upstreams.clone();
            let limit = settings.idle_timeout;
            async move {
                let every = (limit / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    upstreams.close_idle(limit);
                }
            }
        });
        // Blocking work: streamed bodies waiting for slow clients (one per busy
        // connection at most).
        let blocking = (settings.max_connections * settings.upstreams.len() + 4).min(4096);
        let thread = IoThread::start("proxy", blocking, Some(reaper))?;
        Ok(Worker { thread, upstreams })
    }
}

/// The proxy backend of one engine.
pub struct Proxy {
    settings: Arc<Settings>,
    worker: PerProcess<Worker>,
}

impl Proxy {
    /// Reads the settings; starts nothing (threads start per process, after fork).
    pub fn new(config: &ProxyConfig, metrics: Arc<Metrics>) -> Result<Proxy, String> {
        let upstreams = config
            .upstream_list()
            .iter()
            .map(|u| {
                UpstreamAddress::parse(u)
                    .map_err(|e| format!("[backend.proxy] upstream \"{u}\": {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Proxy {
            settings: Arc::new(Settings {
                upstreams,
                connect_timeout: config.connect_timeout.0,
                read_timeout: config.read_timeout.0,
                idle_timeout: config.idle_timeout.0,
                max_connections: config.max_connections.max(1),
                max_fails: config.max_fails,
                fail_timeout: config.fail_timeout.0,
                metrics,
            }),
            worker: PerProcess::default(),
        })
    }

    /// Starts this process's proxy thread (after fork), if not running yet.
    pub fn worker_start(&self) -> Result<(), String> {
        self.worker().map(|_| ())
    }

    fn worker(&self) -> Result<Arc<Worker>, String> {
        self.worker.get(|| {
            Worker::start(&self.settings).map_err(|e| format!("cannot start the proxy thread: {e}"))
        })
    }

    /// Forwards `req` (whose path and query are `origin_target`); `complete` runs on
    /// the proxy thread, or here at once when the request cannot be forwarded.
    pub fn submit(&self, req: &Request<'_>, origin_target: &str, complete: Completion) {
        let job = match exchange::Job::new(req, origin_target, complete) {
            Ok(job) => job,
            Err((resp, complete)) => return complete(resp),
        };
        // A job that cannot be queued drops (with its task) and answers 503.
        match self.worker() {
            Ok(w) => {
                let task = exchange::run(self.settings.clone(), w.upstreams.clone(), job);
                if w.thread.spawn(Box::pin(task)).is_err() {
                    tracing::error!("the proxy thread has stopped; answering 503");
                }
            }
            Err(msg) => tracing::error!("{msg}; answering 503"),
        }
    }

    /// A probe that can run later (from any thread): `done` gets the health entry,
    /// from the proxy thread.
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
                let upstreams = w.upstreams.clone();
                async move {
                    let health = probe(&settings, Some(&upstreams)).await;
                    if let Some(d) = done.lock().take() {
                        d(health);
                    }
                }
            });
            if w.thread.spawn(task).is_err() {
                if let Some(d) = done.lock().take() {
                    d(probe_blocking(settings, Some(w.upstreams.clone())));
                }
            }
        }
    }

    /// Probes the upstreams from the calling thread.
    pub fn probe_blocking(&self) -> BackendHealth {
        let upstreams = self
            .worker
            .get(|| Err(String::new()))
            .ok()
            .map(|w| w.upstreams.clone());
        probe_blocking(self.settings.clone(), upstreams)
    }
}

fn probe_blocking(settings: Arc<Settings>, upstreams: Option<Arc<Upstreams>>) -> BackendHealth {
    io_thread::block_on_helper("proxy-probe", async move {
        probe(&settings, upstreams.as_deref()).await
    })
    .unwrap_or_else(|why| BackendHealth {
        enabled: true,
        healthy: false,
        message: format!("Proxy backend is unhealthy: {why}"),
        latency_ms: None,
        upstreams: Vec::new(),
    })
}

/// Opens a TCP connection to every upstream at once (each within
/// `connect_timeout`). Healthy while at least one answers: the others are
/// named, with the ones this worker has taken out of the turn.
async fn probe(s: &Settings, upstreams: Option<&Upstreams>) -> BackendHealth {
    let start = Instant::now();
    let mut probes = tokio::task::JoinSet::new();
    for (i, a) in s.upstreams.iter().enumerate() {
        let (host, port, limit) = (a.host.clone(), a.port, s.connect_timeout);
        probes.spawn(async move {
            let r = match tokio::time::timeout(
                limit,
                tokio::net::TcpStream::connect((host.as_str(), port)),
            )
            .await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!(
                    "no connection within {} (connect_timeout)",
                    failure::show(limit)
                )),
            };
            (i, r)
        });
    }
    let mut results = vec![Err("not probed".to_owned()); s.upstreams.len()];
    while let Some(Ok((i, r))) = probes.join_next().await {
        results[i] = r;
    }
    let latency = start.elapsed().as_millis() as u64;
    let reachable = results.iter().filter(|r| r.is_ok()).count();
    let mut notes = Vec::new();
    for (i, (a, r)) in s.upstreams.iter().zip(&results).enumerate() {
        if let Err(e) = r {
            notes.push(format!("{a}: {e}"));
        }
        if let Some(down) = upstreams
            .and_then(|u| u.list.get(i))
            .and_then(|u| u.down_for())
        {
            notes.push(format!(
                "{a}: out of the turn for {}s after failures",
                down.as_secs() + 1
            ));
        }
    }
    let total = s.upstreams.len();
    let mut message = if reachable > 0 {
        format!("Proxy backend is healthy ({reachable} of {total} upstreams reachable")
    } else {
        "Proxy backend is unhealthy (no upstream reachable".to_owned()
    };
    if !notes.is_empty() {
        message.push_str(": ");
        message.push_str(&notes.join("; "));
    }
    message.push(')');
    if reachable < total {
        tracing::warn!("health check: {message}");
    }
    BackendHealth {
        enabled: true,
        healthy: reachable > 0,
        message,
        latency_ms: (reachable > 0).then_some(latency),
        upstreams: Vec::new(),
    }
}

impl Backend for Proxy {
    fn serve(
        &self,
        req: &Request<'_>,
        target: &Target<'_>,
        reply: Reply,
        body_ready: bool,
    ) -> Result<(), Reply> {
        // The upstream reads the body: the host reads it first.
        if !body_ready {
            return Err(reply);
        }
        // The target as the client sent it, in origin form.
        let origin = match (req.target.starts_with('/'), target.query) {
            (true, _) => req.target.to_owned(),
            (false, Some(q)) => format!("{}?{q}", target.raw_path),
            (false, None) => target.raw_path.to_owned(),
        };
        self.submit(req, &origin, reply.later(Source::Proxy));
        Ok(())
    }
}
