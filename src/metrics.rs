//! Metrics in Prometheus' text format, kept in one small shared-memory region.
//!
//! The region is an anonymous `MAP_SHARED` mapping made when the engine is created
//! — in a forking host, in the master before the fork — so every worker process
//! adds to the same atomic counters and whichever worker answers `/_metrics`
//! reports the totals of all of them. Gauges (requests in flight, PHP threads,
//! FastCGI connections) are kept per process in slots claimed by pid: a slot whose
//! process has died no longer counts, so a crashed worker's in-flight requests do
//! not stay in the gauge. Label sets are fixed: five sources, status codes
//! 100–599 (+ "other"), fixed histogram buckets, split arms by rule index — and
//! the labelled histograms (`histogram::Table`: by pool, named rule...) that
//! engines claim by label text when they are built.

mod histogram;

pub use histogram::{label_text, Family, RequestSeries, Series};

mod fpm;
mod shared;
pub use fpm::{monotonic_ms, FpmName, FpmUpstreamStats};

use crate::http::{Body, Response};
use parking_lot::Mutex;
use std::fmt::Write as _;
use std::sync::atomic::{
    AtomicBool, AtomicI32, AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed,
};
use std::sync::{Arc, Once};
use std::time::Instant;

/// Receives a response and, for a streamed body, the counter its reader feeds
/// (`StreamBytes::add` for every chunk read) so that `fephp_response_bytes_total`
/// includes it.
pub type MeteredCompletion = Box<dyn FnOnce(Response, Option<StreamBytes>) + Send>;

/// Who answered a request: the `backend` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Embedded = 0,
    FastCgi = 1,
    Static = 2,
    /// The engine itself: health, metrics, malformed request targets.
    Internal = 3,
    /// An HTTP upstream through the proxy backend.
    Proxy = 4,
}

/// Label order of the per-backend series (new ones are appended).
const SOURCES: [(Source, &str); N_SOURCES] = [
    (Source::Embedded, "embedded"),
    (Source::FastCgi, "fastcgi"),
    (Source::Static, "static"),
    (Source::Internal, "internal"),
    (Source::Proxy, "proxy"),
];
const N_SOURCES: usize = 5;

/// Split rules are counted by their index in the routing rules, below this.
pub const MAX_SPLIT_RULES: usize = 256;
/// Arms are counted by backend (`config::BackendKind`, in `ALL` order).
const SPLIT_ARMS: [&str; 4] = ["embedded", "fastcgi", "static", "proxy"];

/// Status codes 100..=599 each have a counter; anything else counts as "other".
const CODES: usize = 501;

use histogram::{Histogram, Table};

/// Processes that can hold gauges at once (workers, and old ones draining).
const MAX_PROCS: usize = 256;

/// One process's gauges. Aligned so processes never write the same cache line.
#[repr(C, align(128))]
struct Proc {
    /// Owner, 0 when free.
    pid: AtomicI32,
    in_flight: [AtomicI64; N_SOURCES],
    php_busy: AtomicI64,
    php_idle: AtomicI64,
    fastcgi_open: AtomicI64,
    fastcgi_idle: AtomicI64,
}

impl Proc {
    fn clear(&self) {
        for g in self.gauges() {
            g.store(0, Relaxed);
        }
    }

    fn gauges(&self) -> impl Iterator<Item = &AtomicI64> {
        self.in_flight.iter().chain([
            &self.php_busy,
            &self.php_idle,
            &self.fastcgi_open,
            &self.fastcgi_idle,
        ])
    }
}

/// The shared region. All-zero bytes are its initial state (fresh anonymous pages).
#[repr(C)]
struct Region {
    requests: [[AtomicU64; CODES]; N_SOURCES],
    duration: [Histogram; N_SOURCES],
    response_bytes: [AtomicU64; N_SOURCES],
    /// Requests per split rule (by routing rule index) and arm.
    split: [[AtomicU64; SPLIT_ARMS.len()]; MAX_SPLIT_RULES],
    proxy_upstream_failures: AtomicU64,
    proxy_retries: AtomicU64,
    static_not_modified: AtomicU64,
    static_ranges: AtomicU64,
    static_sendfile_bytes: AtomicU64,
    fastcgi_waits: AtomicU64,
    fastcgi_retries: AtomicU64,
    worker_restarts: AtomicU64,
    worker_crashes: AtomicU64,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
    procs: [Proc; MAX_PROCS],
    /// Waits for a free PHP-FPM connection (0 when one was free at once).
    fastcgi_queue_wait: Histogram,
    /// Labelled histograms (by pool, named rule...), claimed by engines.
    series: Table,
}

/// This process's pid, cached; reset in a forked child.
static PID: AtomicU32 = AtomicU32::new(0);
static AT_FORK: Once = Once::new();

extern "C" fn forget_pid() {
    PID.store(0, Relaxed);
}

fn current_pid() -> i32 {
    let p = PID.load(Relaxed);
    if p != 0 {
        return p as i32;
    }
    // SAFETY: registers a handler that only stores to an atomic.
    AT_FORK.call_once(|| unsafe {
        libc::pthread_atfork(None, None, Some(forget_pid));
    });
    let p = std::process::id();
    PID.store(p, Relaxed);
    p as i32
}

fn alive(pid: i32) -> bool {
    if pid == current_pid() {
        return true;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(pid, 0) } == 0;
    exists || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The metrics of one engine (and of the engines that replace it on reload).
pub struct Metrics {
    region: shared::SharedZeroed<Region>,
    /// This process's slot: pid << 32 | index.
    slot: AtomicU64,
    claiming: Mutex<()>,
    /// The FastCGI upstreams' series (`metrics/fpm.rs`).
    fpm: fpm::FpmStats,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A zeroed region shared with processes forked from here on.
    pub fn new() -> Metrics {
        // SAFETY: Region is atomics only; all-zero is its initial state.
        let region: shared::SharedZeroed<Region> = unsafe { shared::SharedZeroed::new() };
        if !region.is_shared() {
            tracing::warn!(error = %std::io::Error::last_os_error(), "cannot map shared memory for metrics; each worker process reports only its own");
        }
        Metrics {
            region,
            slot: AtomicU64::new(0),
            claiming: Mutex::new(()),
            fpm: fpm::FpmStats::new(),
        }
    }

    fn r(&self) -> &Region {
        &self.region
    }

    /// This process's gauges, claiming a slot on first use.
    fn proc(&self) -> &Proc {
        let pid = current_pid();
        let s = self.slot.load(Relaxed);
        if (s >> 32) as i32 == pid && s != 0 {
            return &self.r().procs[(s & 0xffff) as usize];
        }
        let _one = self.claiming.lock();
        let s = self.slot.load(Relaxed);
        if (s >> 32) as i32 == pid && s != 0 {
            return &self.r().procs[(s & 0xffff) as usize];
        }
        let i = self.claim(pid);
        self.slot
            .store(((pid as u32 as u64) << 32) | i as u64, Relaxed);
        &self.r().procs[i]
    }

    fn claim(&self, pid: i32) -> usize {
        let procs = &self.r().procs;
        if let Some(i) = procs.iter().position(|p| p.pid.load(Relaxed) == pid) {
            return i;
        }
        for (i, p) in procs.iter().enumerate() {
            let owner = p.pid.load(Relaxed);
            if (owner == 0 || !alive(owner))
                && p.pid.compare_exchange(owner, pid, Relaxed, Relaxed).is_ok()
            {
                p.clear();
                return i;
            }
        }
        // Every slot is taken by a live process: share the last one.
        MAX_PROCS - 1
    }

    /// A request was handed to a backend that answers later.
    pub fn request_started(&self, source: Source) {
        self.proc().in_flight[source as usize].fetch_add(1, Relaxed);
    }

    /// Records a response; `in_flight` when `request_started` counted it, in its
    /// backend's series and in `series` (the rule's and the pool's durations when
    /// the response is complete: for a streamed body, when the stream ends).
    /// Returns the counter a streamed body's reader feeds.
    pub fn request_finished(
        self: &Arc<Self>,
        source: Source,
        started: Instant,
        in_flight: bool,
        resp: &Response,
        series: RequestSeries,
    ) -> Option<StreamBytes> {
        let r = self.r();
        let b = source as usize;
        if in_flight {
            self.proc().in_flight[b].fetch_sub(1, Relaxed);
        }
        let code = match resp.status {
            s @ 100..=599 => (s - 100) as usize,
            _ => CODES - 1,
        };
        r.requests[b][code].fetch_add(1, Relaxed);
        let ns = nanos_since(started);
        r.duration[b].record(ns);
        // A PHP route's existing non-PHP file is static: no PHP series.
        let php = matches!(source, Source::Embedded | Source::FastCgi);
        let ends = [series.rule, if php { series.pool } else { Series::NONE }];
        if php {
            r.series.record(series.ttfb, ns);
        }
        let streamed = matches!(resp.body, Body::Stream(_));
        if !streamed {
            for s in ends {
                r.series.record(s, ns);
            }
        }
        if let Some(n) = resp.body.len() {
            if n > 0 {
                r.response_bytes[b].fetch_add(n, Relaxed);
            }
        }
        if source == Source::Static {
            match resp.status {
                304 => r.static_not_modified.fetch_add(1, Relaxed),
                206 => r.static_ranges.fetch_add(1, Relaxed),
                _ => 0,
            };
            if let Body::File { len, .. } = resp.body {
                r.static_sendfile_bytes.fetch_add(len, Relaxed);
            }
        }
        streamed.then(|| StreamBytes {
            metrics: self.clone(),
            source,
            started,
            ends,
            ended: AtomicBool::new(false),
        })
    }

    /// The labelled histogram of `family` with `labels`, claimed in the region
    /// if no engine (of any process) has claimed it yet; engines call it when
    /// they are built, never per request.
    pub fn series(&self, family: Family, labels: &[(&str, &str)]) -> Series {
        self.r().series.claim(family, &label_text(labels))
    }

    /// Records `ns` nanoseconds in a labelled histogram (none: nothing).
    #[inline]
    pub fn observe(&self, series: Series, ns: u64) {
        self.r().series.record(series, ns);
    }

    /// Records the time since `start` in a labelled histogram.
    pub fn observe_since(&self, series: Series, start: Instant) {
        self.observe(series, nanos_since(start));
    }

    /// The PHP thread of this process started (idle).
    pub fn php_thread_started(&self) {
        self.proc().php_idle.fetch_add(1, Relaxed);
    }

    /// The PHP thread of this process starts (`true`) or ends (`false`) a script.
    pub fn php_busy(&self, busy: bool) {
        let p = self.proc();
        let (from, to) = if busy {
            (&p.php_idle, &p.php_busy)
        } else {
            (&p.php_busy, &p.php_idle)
        };
        from.fetch_sub(1, Relaxed);
        to.fetch_add(1, Relaxed);
    }

    /// A connection to PHP-FPM was opened; the gauge drops with the guard.
    pub fn fastcgi_connection(self: &Arc<Self>) -> OpenConnection {
        self.proc().fastcgi_open.fetch_add(1, Relaxed);
        OpenConnection(self.clone())
    }

    /// Connections entering (positive) or leaving (negative) the idle pool.
    pub fn fastcgi_idle(&self, delta: i64) {
        if delta != 0 {
            self.proc().fastcgi_idle.fetch_add(delta, Relaxed);
        }
    }

    /// A request waited for a free connection.
    pub fn fastcgi_wait(&self) {
        self.r().fastcgi_waits.fetch_add(1, Relaxed);
    }

    /// A request got a connection permit after waiting since `since` (for a
    /// permit, or until it gave up).
    pub fn fastcgi_waited(&self, since: Instant) {
        self.r().fastcgi_queue_wait.record(nanos_since(since));
    }

    /// A request was retried after a kept-alive connection turned out closed.
    pub fn fastcgi_retry(&self) {
        self.r().fastcgi_retries.fetch_add(1, Relaxed);
    }

    /// A host's master reaped worker `pid`: `signal` killed it unexpectedly (0:
    /// it exited or was stopped on purpose); `replaced` when a new one starts in
    /// its place. Its gauges stop counting.
    pub fn worker_exited(&self, pid: i32, signal: i32, replaced: bool) {
        let r = self.r();
        if signal != 0 {
            r.worker_crashes.fetch_add(1, Relaxed);
        }
        if replaced {
            r.worker_restarts.fetch_add(1, Relaxed);
        }
        if pid > 0 {
            for p in r.procs.iter().filter(|p| p.pid.load(Relaxed) == pid) {
                p.clear();
                let _ = p.pid.compare_exchange(pid, 0, Relaxed, Relaxed);
            }
        }
    }

    /// A reload was applied (`true`) or refused.
    pub fn reloaded(&self, ok: bool) {
        let r = self.r();
        if ok {
            r.reloads.fetch_add(1, Relaxed);
        } else {
            r.reload_failures.fetch_add(1, Relaxed);
        }
    }

    /// Every metric in Prometheus' text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let r = self.r();
        let mut gauges = [0i64; N_SOURCES + 4];
        for p in &r.procs {
            let pid = p.pid.load(Relaxed);
            if pid != 0 && alive(pid) {
                for (sum, g) in gauges.iter_mut().zip(p.gauges()) {
                    *sum += g.load(Relaxed);
                }
            }
        }
        let gauge = |i: usize| gauges[i].max(0);
        // Per-process gauges after the in-flight ones (see `Proc::gauges`).
        let (php_busy, php_idle, fastcgi_open, fastcgi_idle) =
            (N_SOURCES, N_SOURCES + 1, N_SOURCES + 2, N_SOURCES + 3);
        let pools = crate::backends::embedded::pool_stats();
        let mut out = String::with_capacity(8 << 10);
        header(
            &mut out,
            "fephp_requests_total",
            "counter",
            "Requests answered, by the backend that answered (internal: health, metrics, malformed targets) and status code.",
        );
        for (s, name) in SOURCES {
            for (i, c) in r.requests[s as usize].iter().enumerate() {
                let n = c.load(Relaxed);
                if n > 0 {
                    let code = if i == CODES - 1 {
                        "other".to_owned()
                    } else {
                        (i + 100).to_string()
                    };
                    let _ = writeln!(
                        out,
                        "fephp_requests_total{{backend=\"{name}\",code=\"{code}\"}} {n}"
                    );
                }
            }
        }
        header(
            &mut out,
            "fephp_request_duration_seconds",
            "histogram",
            "Time from the request reaching the engine to its response head being ready.",
        );
        for (s, name) in SOURCES {
            r.duration[s as usize].render(
                &mut out,
                "fephp_request_duration_seconds",
                &format!("backend=\"{name}\""),
            );
        }
        header(
            &mut out,
            "fephp_requests_in_flight",
            "gauge",
            "Requests handed to a backend whose response head is not ready yet.",
        );
        for (s, name) in SOURCES {
            let _ = writeln!(
                out,
                "fephp_requests_in_flight{{backend=\"{name}\"}} {}",
                gauge(s as usize)
            );
        }
        header(
            &mut out,
            "fephp_response_bytes_total",
            "counter",
            "Response body bytes: in-memory and file bodies by length, streamed bodies as hosts read them.",
        );
        for (s, name) in SOURCES {
            let _ = writeln!(
                out,
                "fephp_response_bytes_total{{backend=\"{name}\"}} {}",
                r.response_bytes[s as usize].load(Relaxed)
            );
        }
        let scalars: [(&str, &str, &str, i128); 13] = [
            ("fephp_static_not_modified_total", "counter", "Static responses 304 Not Modified.", r.static_not_modified.load(Relaxed).into()),
            ("fephp_static_range_responses_total", "counter", "Static responses 206 Partial Content.", r.static_ranges.load(Relaxed).into()),
            ("fephp_static_sendfile_bytes_total", "counter", "Static file bytes handed to the host as file ranges (descriptor, offset, length) it can sendfile.", r.static_sendfile_bytes.load(Relaxed).into()),
            ("fephp_fastcgi_connections_open", "gauge", "Connections to PHP-FPM, busy or idle, in all worker processes.", gauge(fastcgi_open).into()),
            ("fephp_fastcgi_connections_idle", "gauge", "Kept-alive connections to PHP-FPM waiting for a request.", gauge(fastcgi_idle).into()),
            ("fephp_fastcgi_pool_waits_total", "counter", "FastCGI requests that waited for a free connection (fpm_max_connections busy).", r.fastcgi_waits.load(Relaxed).into()),
            ("fephp_fastcgi_retries_total", "counter", "FastCGI requests retried on a new connection after a kept-alive one turned out closed.", r.fastcgi_retries.load(Relaxed).into()),
            ("fephp_embedded_workers_busy", "gauge", "PHP interpreters running a script: the runner pool's runners, or the PHP threads of the worker processes without the pool.", if pools.is_empty() { gauge(php_busy) } else { pools.iter().map(|p| p.busy).sum() }.into()),
            ("fephp_embedded_workers_idle", "gauge", "PHP interpreters waiting for a request (runners, or per-worker PHP threads without the pool).", if pools.is_empty() { gauge(php_idle) } else { pools.iter().map(|p| p.idle).sum() }.into()),
            ("fephp_worker_restarts_total", "counter", "Worker processes started in place of one that died.", r.worker_restarts.load(Relaxed).into()),
            ("fephp_worker_crashes_total", "counter", "Worker processes killed by a signal they were not sent by the master (e.g. a segfault in a PHP extension).", r.worker_crashes.load(Relaxed).into()),
            ("fephp_config_reloads_total", "counter", "Configuration reloads applied.", r.reloads.load(Relaxed).into()),
            ("fephp_config_reload_failures_total", "counter", "Configuration reloads refused (the previous configuration kept serving).", r.reload_failures.load(Relaxed).into()),
        ];
        for (name, kind, help, value) in scalars {
            header(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
        header(
            &mut out,
            "fephp_split_requests_total",
            "counter",
            "Requests of routing rules that split traffic, by rule (its number in the file) and the arm (backend) chosen.",
        );
        for (i, arms) in r.split.iter().enumerate() {
            for (arm, c) in SPLIT_ARMS.iter().zip(arms) {
                let n = c.load(Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "fephp_split_requests_total{{rule=\"{}\",arm=\"{arm}\"}} {n}",
                        i + 1
                    );
                }
            }
        }
        let proxy: [(&str, &str, &str, u64); 2] = [
            ("fephp_proxy_upstream_failures_total", "counter", "Proxy attempts that failed on an upstream (connect errors, resets, timeouts); they count towards max_fails.", r.proxy_upstream_failures.load(Relaxed)),
            ("fephp_proxy_retries_total", "counter", "Proxy requests sent again (to the next upstream) after an attempt failed before any response.", r.proxy_retries.load(Relaxed)),
        ];
        for (name, kind, help, value) in proxy {
            header(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
        if !pools.is_empty() {
            render_pools(&mut out, &pools);
        }
        header(
            &mut out,
            "fephp_fastcgi_queue_wait_seconds",
            "histogram",
            "How long FastCGI requests waited for a connection to PHP-FPM (fpm_max_connections busy; 0 when one was free).",
        );
        r.fastcgi_queue_wait
            .render(&mut out, "fephp_fastcgi_queue_wait_seconds", "");
        r.series.render(&mut out);
        self.render_fpm(&mut out);
        out
    }

    /// A split rule (index `rule` in the routing rules) sent a request to `arm`
    /// (an index in `BackendKind::ALL`).
    pub fn split_request(&self, rule: usize, arm: usize) {
        if let Some(c) = self.r().split.get(rule).and_then(|a| a.get(arm)) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// A proxy attempt failed on an upstream.
    pub fn proxy_upstream_failure(&self) {
        self.r().proxy_upstream_failures.fetch_add(1, Relaxed);
    }

    /// A proxy request goes to another attempt.
    pub fn proxy_retry(&self) {
        self.r().proxy_retries.fetch_add(1, Relaxed);
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn nanos_since(t: Instant) -> u64 {
    t.elapsed().as_nanos().min(u64::MAX as u128) as u64
}

/// Counts the bytes a host reads of one streamed body, and records the
/// request's duration series when the stream ends (or the host drops it).
pub struct StreamBytes {
    metrics: Arc<Metrics>,
    source: Source,
    started: Instant,
    /// Recorded at the end: the rule's and the pool's durations.
    ends: [Series; 2],
    ended: AtomicBool,
}

impl StreamBytes {
    pub fn add(&self, n: usize) {
        self.metrics.r().response_bytes[self.source as usize].fetch_add(n as u64, Relaxed);
    }

    /// The host read the stream's end: the response is complete.
    pub fn ended(&self) {
        if self.ended.swap(true, Relaxed) {
            return;
        }
        if self.ends.iter().all(|s| s.is_none()) {
            return;
        }
        let ns = nanos_since(self.started);
        for s in self.ends {
            self.metrics.observe(s, ns);
        }
    }
}

/// A stream the host gave up on (the client left) ends there.
impl Drop for StreamBytes {
    fn drop(&mut self) {
        self.ended();
    }
}

/// An open connection to PHP-FPM, for the gauge: dropping it closes the count.
pub struct OpenConnection(Arc<Metrics>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.proc().fastcgi_open.fetch_sub(1, Relaxed);
    }
}

/// The runner pools' series, labelled by pool ("default": `[php.pool]`).
fn render_pools(out: &mut String, pools: &[crate::backends::embedded::PoolStats]) {
    type Value = fn(&crate::backends::embedded::PoolStats) -> String;
    let series: [(&str, &str, &str, Value); 5] = [
        (
            "fephp_php_runners",
            "gauge",
            "PHP runner processes alive (busy, idle or starting).",
            |p| p.runners.to_string(),
        ),
        (
            "fephp_php_runners_max",
            "gauge",
            "max_runners of the pool.",
            |p| p.max.to_string(),
        ),
        (
            "fephp_php_queue_depth",
            "gauge",
            "PHP requests waiting for a free runner.",
            |p| p.queued.to_string(),
        ),
        (
            "fephp_php_queue_rejected_total",
            "counter",
            "PHP requests answered 503 because queue_size requests already waited.",
            |p| p.rejected.to_string(),
        ),
        (
            "fephp_php_queue_taken_total",
            "counter",
            "PHP requests taken from the queue by a runner.",
            |p| p.taken.to_string(),
        ),
    ];
    for (name, kind, help, value) in series {
        header(out, name, kind, help);
        for p in pools {
            let _ = writeln!(out, "{name}{{pool=\"{}\"}} {}", p.name, value(p));
        }
    }
    header(
        out,
        "fephp_php_queue_wait_seconds",
        "histogram",
        "How long PHP requests waited in the queue for a runner.",
    );
    for p in pools {
        let mut cumulative = 0;
        for (le, n) in &p.wait_buckets {
            cumulative += n;
            let le = le.map_or("+Inf".to_owned(), |s| s.to_string());
            let _ = writeln!(
                out,
                "fephp_php_queue_wait_seconds_bucket{{pool=\"{}\",le=\"{le}\"}} {cumulative}",
                p.name
            );
        }
        let _ = writeln!(
            out,
            "fephp_php_queue_wait_seconds_sum{{pool=\"{}\"}} {:.6}",
            p.name,
            p.wait_us as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "fephp_php_queue_wait_seconds_count{{pool=\"{}\"}} {cumulative}",
            p.name
        );
    }
    header(
        out,
        "fephp_php_runner_exits_total",
        "counter",
        "PHP runners that ended, by reason: recycled (max_requests), memory (memory_budget), deadline (killed past request_deadline), crashed, idle (above min_runners), worker_ended (a worker script ended: exit(), a fatal error), restarted (worker mode: code changed on reload, or a restart was asked).",
    );
    for p in pools {
        for (reason, n) in &p.exits {
            let _ = writeln!(
                out,
                "fephp_php_runner_exits_total{{pool=\"{}\",reason=\"{reason}\"}} {n}",
                p.name
            );
        }
    }
    if pools.iter().any(|p| !p.leaks.is_empty()) {
        for (name, help, pick) in [
            (
                "fephp_worker_growth_bytes",
                "Worker mode's leak report: memory a route's requests left behind in a worker (the most any worker grew by), for the routes found leaking.",
                (|l: &(String, i64, i64)| l.1) as fn(&(String, i64, i64)) -> i64,
            ),
            (
                "fephp_worker_growth_entries",
                "Worker mode's leak report: global variables, classes and static-property elements a route's requests left behind in a worker.",
                |l: &(String, i64, i64)| l.2,
            ),
        ] {
            header(out, name, "gauge", help);
            for p in pools {
                for l in &p.leaks {
                    let route = l.0.replace('\\', "\\\\").replace('"', "\\\"");
                    let _ = writeln!(
                        out,
                        "{name}{{pool=\"{}\",route=\"{route}\"}} {}",
                        p.name,
                        pick(l)
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO: RequestSeries = RequestSeries {
        rule: Series::NONE,
        pool: Series::NONE,
        ttfb: Series::NONE,
    };

    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{series} missing in\n{text}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn counts_codes_buckets_bytes_and_static_extras() {
        let m = Arc::new(Metrics::new());
        let t = Instant::now();
        let ok = Response::new(200).with_body(Body::Bytes(b"hello".to_vec()));
        m.request_finished(Source::Embedded, t, false, &ok, NO);
        m.request_finished(Source::Embedded, t, false, &ok, NO);
        m.request_finished(Source::Static, t, false, &Response::new(304), NO);
        m.request_finished(Source::Static, t, false, &Response::new(999), NO);
        let file = std::fs::File::open("Cargo.toml").unwrap();
        let partial = Response::new(206).with_body(Body::File {
            file,
            offset: 3,
            len: 10,
        });
        assert!(m
            .request_finished(Source::Static, t, false, &partial, NO)
            .is_none());
        let text = m.render();
        assert_eq!(
            value(
                &text,
                "fephp_requests_total{backend=\"embedded\",code=\"200\"}"
            ),
            2.0
        );
        assert_eq!(
            value(
                &text,
                "fephp_requests_total{backend=\"static\",code=\"304\"}"
            ),
            1.0
        );
        assert_eq!(
            value(
                &text,
                "fephp_requests_total{backend=\"static\",code=\"other\"}"
            ),
            1.0
        );
        assert!(!text.contains("backend=\"fastcgi\",code="));
        assert_eq!(
            value(&text, "fephp_response_bytes_total{backend=\"embedded\"}"),
            10.0
        );
        assert_eq!(value(&text, "fephp_static_not_modified_total"), 1.0);
        assert_eq!(value(&text, "fephp_static_range_responses_total"), 1.0);
        assert_eq!(value(&text, "fephp_static_sendfile_bytes_total"), 10.0);
        assert_eq!(
            value(
                &text,
                "fephp_request_duration_seconds_count{backend=\"static\"}"
            ),
            3.0
        );
        assert_eq!(
            value(
                &text,
                "fephp_request_duration_seconds_bucket{backend=\"static\",le=\"+Inf\"}"
            ),
            3.0
        );
    }

    #[test]
    fn bucket_bounds_are_inclusive() {
        let m = Arc::new(Metrics::new());
        // An instant 2 ms in the past lands in le="0.0025" and above, not below.
        let t = Instant::now() - std::time::Duration::from_millis(2);
        m.request_finished(Source::FastCgi, t, false, &Response::new(200), NO);
        let text = m.render();
        let b = |le: &str| {
            value(
                &text,
                &format!(
                    "fephp_request_duration_seconds_bucket{{backend=\"fastcgi\",le=\"{le}\"}}"
                ),
            )
        };
        assert_eq!(b("0.001"), 0.0);
        assert_eq!(b("0.0025"), 1.0);
        assert_eq!(b("30"), 1.0);
        assert!(
            value(
                &text,
                "fephp_request_duration_seconds_sum{backend=\"fastcgi\"}"
            ) >= 0.002
        );
    }

    #[test]
    fn streams_count_as_read_and_in_flight_balances() {
        let m = Arc::new(Metrics::new());
        m.request_started(Source::Embedded);
        assert_eq!(
            value(
                &m.render(),
                "fephp_requests_in_flight{backend=\"embedded\"}"
            ),
            1.0
        );
        let (_tx, rx) = crate::http::body::channel();
        let resp = Response::new(200).with_body(Body::Stream(rx));
        let counter = m
            .request_finished(Source::Embedded, Instant::now(), true, &resp, NO)
            .expect("a stream gets a counter");
        counter.add(100);
        counter.add(23);
        let text = m.render();
        assert_eq!(
            value(&text, "fephp_requests_in_flight{backend=\"embedded\"}"),
            0.0
        );
        assert_eq!(
            value(&text, "fephp_response_bytes_total{backend=\"embedded\"}"),
            123.0
        );
    }

    #[test]
    fn gauges_of_a_dead_process_stop_counting_and_counters_stay() {
        let m = Arc::new(Metrics::new());
        m.php_thread_started();
        // SAFETY: the child only touches atomics in the shared region, then _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            m.php_thread_started();
            m.php_busy(true);
            m.fastcgi_retry();
            let c = m.fastcgi_connection();
            std::mem::forget(c);
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // Before reaping, the child is a zombie and still counts as alive.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let text = m.render();
        // The child's gauges are gone with it; its counter stays.
        assert_eq!(value(&text, "fephp_embedded_workers_idle"), 1.0);
        assert_eq!(value(&text, "fephp_embedded_workers_busy"), 0.0);
        assert_eq!(value(&text, "fephp_fastcgi_connections_open"), 0.0);
        assert_eq!(value(&text, "fephp_fastcgi_retries_total"), 1.0);
        m.worker_exited(pid, libc::SIGSEGV, true);
        m.worker_exited(pid + 1_000_000, 0, false);
        let text = m.render();
        assert_eq!(value(&text, "fephp_worker_crashes_total"), 1.0);
        assert_eq!(value(&text, "fephp_worker_restarts_total"), 1.0);
        // Its slot is free again; this process still holds its own.
        let used = m
            .r()
            .procs
            .iter()
            .filter(|p| p.pid.load(Relaxed) != 0)
            .count();
        assert_eq!(used, 1);
    }

    #[test]
    fn a_forked_child_adds_to_the_same_counters() {
        let m = Arc::new(Metrics::new());
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            for _ in 0..5 {
                m.request_finished(
                    Source::Static,
                    Instant::now(),
                    false,
                    &Response::new(404),
                    NO,
                );
            }
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(
            value(
                &m.render(),
                "fephp_requests_total{backend=\"static\",code=\"404\"}"
            ),
            5.0
        );
    }
    /// Every line of `family` (its HELP, TYPE and samples).
    fn family<'a>(text: &'a str, family: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|l| {
                l.strip_prefix("# HELP ")
                    .or_else(|| l.strip_prefix("# TYPE "))
                    .unwrap_or(l)
                    .split([' ', '{'])
                    .next()
                    .is_some_and(|n| {
                        n == family
                            || ["_bucket", "_sum", "_count"]
                                .iter()
                                .any(|s| n.strip_suffix(s) == Some(family))
                    })
            })
            .collect()
    }

    #[test]
    fn labelled_histograms_bucket_inclusively_and_render_cumulatively() {
        let m = Arc::new(Metrics::new());
        let api = m.series(Family::RuleDuration, &[("rule", "api")]);
        let web = m.series(Family::RuleDuration, &[("rule", "web")]);
        assert_ne!(api, web);
        // The same labels are the same series; another family is another.
        assert_eq!(m.series(Family::RuleDuration, &[("rule", "api")]), api);
        let pool = m.series(Family::PoolDuration, &[("rule", "api")]);
        assert_ne!(pool, api);
        m.observe(api, 25_000_000); // on the bound: le="0.025"
        m.observe(api, 25_000_001); // just past it: le="0.05"
        m.observe(api, 50_000_000);
        m.observe(api, 31_000_000_000); // +Inf only
        m.observe(Series::NONE, 1); // nowhere
        let text = m.render();
        let b = |le: &str| {
            value(
                &text,
                &format!("fephp_rule_request_duration_seconds_bucket{{rule=\"api\",le=\"{le}\"}}"),
            )
        };
        assert_eq!(b("0.01"), 0.0);
        assert_eq!(b("0.025"), 1.0);
        assert_eq!(b("0.05"), 3.0);
        assert_eq!(b("30"), 3.0);
        assert_eq!(b("+Inf"), 4.0);
        assert_eq!(
            value(
                &text,
                "fephp_rule_request_duration_seconds_count{rule=\"api\"}"
            ),
            4.0
        );
        let sum = value(
            &text,
            "fephp_rule_request_duration_seconds_sum{rule=\"api\"}",
        );
        assert!((sum - 31.100000001).abs() < 1e-6, "{sum}");
        // A series claimed and never recorded is there, empty.
        assert_eq!(
            value(
                &text,
                "fephp_rule_request_duration_seconds_count{rule=\"web\"}"
            ),
            0.0
        );
        // HELP and TYPE once per family, before its samples, even when empty.
        for f in [
            "fephp_rule_request_duration_seconds",
            "fephp_php_request_duration_seconds",
            "fephp_php_ttfb_seconds",
            "fephp_fastcgi_queue_wait_seconds",
        ] {
            let lines = family(&text, f);
            assert_eq!(lines[0], format!("# HELP {f} {}", &lines[0][8 + f.len()..]));
            assert_eq!(lines[1], format!("# TYPE {f} histogram"));
            assert_eq!(
                lines.iter().filter(|l| l.starts_with('#')).count(),
                2,
                "{f}"
            );
        }
        // 2 series × (16 buckets + sum + count).
        assert_eq!(
            family(&text, "fephp_rule_request_duration_seconds").len(),
            2 + 2 * 18
        );
        // No labels: `_sum` and `_count` without braces.
        assert_eq!(value(&text, "fephp_fastcgi_queue_wait_seconds_count"), 0.0);
        assert_eq!(
            value(
                &text,
                "fephp_fastcgi_queue_wait_seconds_bucket{le=\"+Inf\"}"
            ),
            0.0
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            label_text(&[("backend", "embedded"), ("pool", "a\\b\"c\nd")]),
            "backend=\"embedded\",pool=\"a\\\\b\\\"c\\nd\""
        );
        let m = Arc::new(Metrics::new());
        let s = m.series(
            Family::PhpTtfb,
            &[("backend", "embedded"), ("pool", "x\"y")],
        );
        m.observe(s, 1);
        let text = m.render();
        assert_eq!(
            value(
                &text,
                "fephp_php_ttfb_seconds_count{backend=\"embedded\",pool=\"x\\\"y\"}"
            ),
            1.0
        );
        // Label text too long for a slot is not recorded (not cut mid-escape).
        let long = "x".repeat(300);
        assert!(m.series(Family::RuleDuration, &[("rule", &long)]).is_none());
    }

    #[test]
    fn a_request_lands_in_its_rule_pool_and_ttfb_series() {
        let m = Arc::new(Metrics::new());
        let series = RequestSeries {
            rule: m.series(Family::RuleDuration, &[("rule", "r")]),
            pool: m.series(Family::PoolDuration, &[("pool", "p")]),
            ttfb: m.series(Family::PhpTtfb, &[("backend", "embedded"), ("pool", "p")]),
        };
        let t = Instant::now() - std::time::Duration::from_millis(30);
        m.request_finished(Source::Embedded, t, false, &Response::new(200), series);
        // A PHP route's static file: the rule's series only.
        m.request_finished(Source::Static, t, false, &Response::new(200), series);
        let text = m.render();
        let count = |s: &str| value(&text, &s.replacen('{', "_count{", 1));
        assert_eq!(
            count("fephp_rule_request_duration_seconds{rule=\"r\"}"),
            2.0
        );
        assert_eq!(count("fephp_php_request_duration_seconds{pool=\"p\"}"), 1.0);
        assert_eq!(
            count("fephp_php_ttfb_seconds{backend=\"embedded\",pool=\"p\"}"),
            1.0
        );
        assert_eq!(
            value(
                &text,
                "fephp_php_ttfb_seconds_bucket{backend=\"embedded\",pool=\"p\",le=\"0.025\"}"
            ),
            0.0
        );

        // A streamed body: time to first byte at the head, the durations at its end.
        let (_tx, rx) = crate::http::body::channel();
        let resp = Response::new(200).with_body(Body::Stream(rx));
        let counter = m
            .request_finished(Source::Embedded, Instant::now(), false, &resp, series)
            .unwrap();
        let text = m.render();
        let count = |s: &str| value(&text, &s.replacen('{', "_count{", 1));
        assert_eq!(
            count("fephp_rule_request_duration_seconds{rule=\"r\"}"),
            2.0
        );
        assert_eq!(
            count("fephp_php_ttfb_seconds{backend=\"embedded\",pool=\"p\"}"),
            2.0
        );
        counter.ended();
        counter.ended();
        drop(counter);
        let text = m.render();
        let count = |s: &str| value(&text, &s.replacen('{', "_count{", 1));
        assert_eq!(
            count("fephp_rule_request_duration_seconds{rule=\"r\"}"),
            3.0
        );
        assert_eq!(count("fephp_php_request_duration_seconds{pool=\"p\"}"), 2.0);
    }

    #[test]
    fn a_forked_child_claims_and_adds_to_the_same_labelled_series() {
        let m = Arc::new(Metrics::new());
        let api = m.series(Family::RuleDuration, &[("rule", "api")]);
        m.observe(api, 1_000);
        m.fastcgi_waited(Instant::now());
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // As a worker's reload would: the same labels find the same series.
            let again = m.series(Family::RuleDuration, &[("rule", "api")]);
            let code = if again == api { 0 } else { 1 };
            for _ in 0..4 {
                m.observe(again, 2_000_000);
            }
            let new = m.series(Family::RuleDuration, &[("rule", "child")]);
            m.observe(new, 3_000_000);
            m.fastcgi_waited(Instant::now());
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(libc::WEXITSTATUS(status), 0, "the child found the series");
        let text = m.render();
        let api_b = |le: &str| {
            value(
                &text,
                &format!("fephp_rule_request_duration_seconds_bucket{{rule=\"api\",le=\"{le}\"}}"),
            )
        };
        assert_eq!(api_b("0.0005"), 1.0);
        assert_eq!(api_b("0.0025"), 5.0);
        assert_eq!(
            value(
                &text,
                "fephp_rule_request_duration_seconds_count{rule=\"child\"}"
            ),
            1.0
        );
        assert_eq!(value(&text, "fephp_fastcgi_queue_wait_seconds_count"), 2.0);
        // The child's claim is the parent's too.
        let child = m.series(Family::RuleDuration, &[("rule", "child")]);
        m.observe(child, 1);
        assert_eq!(
            value(
                &m.render(),
                "fephp_rule_request_duration_seconds_count{rule=\"child\"}"
            ),
            2.0
        );
    }
}
