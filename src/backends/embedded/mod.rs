//! The embedded backend: libphp in this process through fe-php's own SAPI (`csrc/`).
//!
//! `runtime` loads libphp and starts PHP once per process (in the master, before
//! fork, so OPcache's shared memory is shared by every worker); `executor` runs PHP
//! on one thread per worker process. This module turns a request into a `Job`.

#[cfg(fephp_embedded)]
mod executor;
#[cfg(fephp_embedded)]
mod pool;
mod respond;
#[cfg(fephp_embedded)]
mod runtime;
#[cfg(fephp_embedded)]
mod sapi;

use crate::backends::php::cgi::{CgiVars, Pairs};
use crate::backends::php::Runner;
use crate::config::{IniValue, PoolConfig};
use crate::http::request_body::RequestBody;
use crate::http::{Completion, Request, Response};
use crate::metrics::Metrics;
use crate::metrics::Source;
use respond::Respond;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Whether this build contains the embedded backend (PHP headers were found).
pub const BUILT: bool = cfg!(fephp_embedded);

/// Everything the PHP thread needs for one request, owned.
pub struct Job {
    pub method: CString,
    pub query: CString,
    pub request_uri: CString,
    pub script_filename: CString,
    pub content_type: Option<CString>,
    pub content_length: i64,
    pub cookie: Option<CString>,
    pub authorization: Option<CString>,
    pub proto_num: i32,
    pub head: bool,
    /// $_SERVER entries.
    pub vars: Pairs,
    /// getallheaders().
    pub headers: Pairs,
    /// Read by PHP on its thread (`php://input`, forms, uploads).
    pub body: RequestBody,
    /// For log lines.
    pub log_uri: String,
    /// Where the response goes.
    pub complete: Option<Box<dyn Respond>>,
}

/// An unused completion still answers: a job dropped unrun becomes a 500.
impl Drop for Job {
    fn drop(&mut self) {
        if let Some(c) = self.complete.take() {
            self.body.close();
            c.complete(Response::error(500, None));
        }
    }
}

fn cstring(bytes: &[u8]) -> CString {
    // Values come from a parsed HTTP request, which cannot carry NUL; drop any anyway.
    // Room for the terminator up front: CString::new then does not reallocate.
    let mut v = Vec::with_capacity(bytes.len() + 1);
    v.extend(bytes.iter().copied().filter(|&b| b != 0));
    CString::new(v).expect("NULs removed")
}

impl Job {
    pub fn new(
        req: &Request<'_>,
        script_filename: &Path,
        cgi: CgiVars,
        complete: Completion,
    ) -> Job {
        let query = req.target.split_once('?').map(|(_, q)| q).unwrap_or("");
        // What PHP reads is the body given, whatever the header claimed.
        let content_length = match (req.body_len(), req.header("content-length")) {
            (0, None) => -1,
            (n, _) => i64::try_from(n).unwrap_or(i64::MAX),
        };
        Job {
            method: cstring(req.method.as_bytes()),
            query: cstring(query.as_bytes()),
            request_uri: cstring(req.target.as_bytes()),
            script_filename: cstring(script_filename.as_os_str().as_encoded_bytes()),
            content_type: req.header("content-type").map(cstring),
            content_length,
            cookie: {
                let cookies: Vec<&[u8]> = req
                    .headers
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case(b"cookie"))
                    .map(|&(_, v)| v)
                    .collect();
                (!cookies.is_empty()).then(|| cstring(&cookies.join(&b"; "[..])))
            },
            authorization: req.header("authorization").map(cstring),
            proto_num: if req.protocol == "HTTP/1.0" {
                1000
            } else {
                1100
            },
            head: req.is_head(),
            vars: cgi.vars,
            headers: cgi.headers,
            body: req.body_for_backend(),
            log_uri: format!("{} {}", req.method, req.target),
            complete: Some(Box::new(respond::Local(complete))),
        }
    }
}

/// The PHP thread of this process, shared by every engine in it (NTS PHP allows
/// one): (fork generation, executor). Re-created after a fork, since threads do not
/// survive one.
#[cfg(fephp_embedded)]
static EXECUTOR: parking_lot::Mutex<Option<(u64, Arc<executor::Executor>)>> =
    parking_lot::Mutex::new(None);

/// Forks of this process since it started (counted in the child by an atfork
/// handler): tells a forked child from its parent without a getpid per request.
#[cfg(fephp_embedded)]
static FORKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[cfg(fephp_embedded)]
fn fork_generation() -> u64 {
    static REGISTER: std::sync::Once = std::sync::Once::new();
    extern "C" fn forked() {
        FORKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    // SAFETY: registers a handler that only touches an atomic (async-signal-safe).
    REGISTER.call_once(|| unsafe {
        libc::pthread_atfork(None, None, Some(forked));
    });
    FORKS.load(std::sync::atomic::Ordering::Relaxed)
}

/// The embedded backend of one engine.
pub struct Embedded {
    #[cfg(fephp_embedded)]
    runtime: &'static runtime::Runtime,
    /// The runner pool, unless `[php.pool] enabled = false` (then this process's
    /// PHP thread runs every job).
    #[cfg(fephp_embedded)]
    pool: Option<&'static pool::Pool>,
    /// Where this process's PHP thread reports busy/idle, if this engine starts it.
    #[cfg_attr(not(fephp_embedded), allow(dead_code))]
    metrics: Arc<Metrics>,
}

impl Embedded {
    /// Loads libphp and starts PHP in this process (once).
    #[cfg(fephp_embedded)]
    pub fn start(
        libphp_path: &Path,
        ini: &BTreeMap<String, IniValue>,
        pool_name: &str,
        pool_settings: &PoolConfig,
        root: &Path,
        metrics: Arc<Metrics>,
    ) -> Result<Embedded, String> {
        for (k, v) in ini {
            let text = v.to_string();
            if k.contains(['=', '\n', '\0']) || text.contains(['\n', '\0']) {
                return Err(format!(
                    "[php.ini] {k}: names and values must be single-line without NUL bytes (and names have no '=')"
                ));
            }
        }
        let runtime = runtime::start(libphp_path, ini, &executor::CALLBACKS)?;
        let pool = if pool_settings.enabled {
            Some(pool::start(runtime, pool_name, pool_settings, root)?)
        } else {
            None
        };
        Ok(Embedded {
            runtime,
            pool,
            metrics,
        })
    }

    #[cfg(not(fephp_embedded))]
    pub fn start(
        _libphp_path: &Path,
        _ini: &BTreeMap<String, IniValue>,
        _pool_name: &str,
        _pool_settings: &PoolConfig,
        _root: &Path,
        _metrics: Arc<Metrics>,
    ) -> Result<Embedded, String> {
        Err("the embedded backend is not built into this library (PHP headers were missing at build time)".to_owned())
    }

    #[cfg_attr(not(feature = "internals"), allow(dead_code))]
    /// "8.2.36".
    pub fn php_version(&self) -> String {
        #[cfg(fephp_embedded)]
        return self.runtime.php_version.clone();
        #[cfg(not(fephp_embedded))]
        String::new()
    }

    /// Starts this process's PHP thread (after fork), if not running yet.
    pub fn worker_start(&self) -> Result<(), String> {
        #[cfg(fephp_embedded)]
        {
            match self.pool {
                Some(pool) => pool.worker_start(),
                None => self.executor().map(|_| ()),
            }
        }
        #[cfg(not(fephp_embedded))]
        Ok(())
    }

    #[cfg(fephp_embedded)]
    fn executor(&self) -> Result<Arc<executor::Executor>, String> {
        let generation = fork_generation();
        let mut slot = EXECUTOR.lock();
        if let Some((g, e)) = slot.as_ref() {
            if *g == generation {
                return Ok(e.clone());
            }
        }
        let e = Arc::new(
            executor::Executor::start(self.runtime, self.metrics.clone())
                .map_err(|e| format!("cannot start the PHP thread: {e}"))?,
        );
        *slot = Some((generation, e.clone()));
        // The calling thread's signal mask is left alone, whoever starts the PHP
        // thread (a request may, before fephp_worker_start): see `sigprof`.
        Ok(e)
    }

    /// Queues a job on this process's PHP thread.
    pub fn submit(&self, job: Job) {
        #[cfg(fephp_embedded)]
        {
            if let Some(pool) = self.pool {
                return pool.submit(job);
            }
            match self.executor() {
                Ok(e) => {
                    if let Err(job) = e.submit(job) {
                        tracing::error!(uri = %job.log_uri, "the PHP thread has stopped; answering 503");
                        respond(
                            *job,
                            Response::error(503, Some("PHP is not available in this worker")),
                        );
                    }
                }
                Err(msg) => {
                    tracing::error!("{msg}");
                    respond(
                        job,
                        Response::error(503, Some("PHP is not available in this worker")),
                    );
                }
            }
        }
        #[cfg(not(fephp_embedded))]
        respond(
            job,
            Response::error(503, Some("the embedded backend is not built")),
        );
    }
}

/// Restarts the workers of worker pool `name` (every worker pool when None),
/// each between two jobs; the pools restarted, or why none could be.
pub fn restart_workers(name: Option<&str>) -> Result<Vec<String>, String> {
    #[cfg(fephp_embedded)]
    return pool::restart_workers(name);
    #[cfg(not(fephp_embedded))]
    {
        let _ = name;
        Err("the embedded backend is not built into this library".to_owned())
    }
}

fn respond(mut job: Job, resp: Response) {
    if let Some(c) = job.complete.take() {
        c.complete(resp);
    }
}

/// Why PHP could not start with `libphp_path` and `ini` in this process because it
/// already runs here with others (a new process is needed); None when it does not
/// run yet or runs with exactly these.
pub fn runtime_conflict(
    libphp_path: &Path,
    ini: &BTreeMap<String, IniValue>,
    pools: &[(&str, &PoolConfig)],
) -> Option<String> {
    #[cfg(fephp_embedded)]
    return runtime::conflict(libphp_path, ini).or_else(|| {
        pools
            .iter()
            .filter(|(_, p)| p.enabled)
            .find_map(|(name, p)| pool::conflict(name, p))
    });
    #[cfg(not(fephp_embedded))]
    {
        let _ = (libphp_path, ini, pools);
        None
    }
}

/// The runner pool's figures, for `/_metrics`.
pub struct PoolStats {
    /// "default" for `[php.pool]`, else the name of `[php.pools.NAME]`.
    pub name: String,
    pub runners: i64,
    pub busy: i64,
    pub idle: i64,
    pub max: usize,
    pub queued: i64,
    pub queue_size: usize,
    pub rejected: u64,
    pub taken: u64,
    pub wait_us: u64,
    /// Queue waits per bucket: (upper bound in seconds, None for +Inf; count).
    pub wait_buckets: Vec<(Option<f64>, u64)>,
    pub exits: Vec<(&'static str, u64)>,
    /// Worker mode's leak report: (route, bytes, entries) left behind by the
    /// routes found leaking (the most any worker grew by).
    pub leaks: Vec<(String, i64, i64)>,
    /// Worker mode: the pool runs a worker script (`worker = "..."`).
    pub worker: bool,
    /// The runners' process ids (for a control API: a restart changes them).
    pub pids: Vec<i32>,
}

/// The descriptor a host watches to receive PHP replies on its own thread, and
/// from then on the only way replies are received in this process (see
/// `fephp_engine_event_fd`); None without a runner pool.
pub fn pool_event_fd() -> Option<Result<i32, String>> {
    #[cfg(fephp_embedded)]
    return pool::get(pool::DEFAULT).map(|p| p.drive());
    #[cfg(not(fephp_embedded))]
    None
}

/// Completes the PHP responses whose replies have arrived, on the calling thread.
pub fn pool_process_events() -> std::io::Result<()> {
    #[cfg(fephp_embedded)]
    if let Some(p) = pool::get(pool::DEFAULT) {
        return p.process_replies();
    }
    Ok(())
}

/// The figures of every runner pool this process tree runs.
pub fn pool_stats() -> Vec<PoolStats> {
    #[cfg(fephp_embedded)]
    return pool::stats();
    #[cfg(not(fephp_embedded))]
    Vec::new()
}

/// The name of `[php.pool]` among the pools.
pub const DEFAULT_POOL: &str = "default";

/// Absolute document root for PHP (SCRIPT_FILENAME is built from it).
pub fn absolute_root(root: &Path) -> PathBuf {
    root.canonicalize().unwrap_or_else(|_| root.to_owned())
}

impl Runner for Embedded {
    const SOURCE: Source = Source::Embedded;

    fn run(&self, req: &Request<'_>, filename: &Path, vars: CgiVars, complete: Completion) {
        self.submit(Job::new(req, filename, vars, complete))
    }
}
