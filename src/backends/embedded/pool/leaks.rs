//! Worker mode's leak report (`leak_report = true`): which route leaves memory
//! or state behind in a worker.
//!
//! Between two jobs a worker reads what its PHP holds (allocated memory, global
//! variables, classes, entries of static properties) and charges the change since
//! the previous job to the route that job was for. A route whose requests keep
//! adding up (past its first few requests, which fill caches once) is named in
//! the log and on the board, for `/_metrics`.

use super::board::Header;
use crate::backends::embedded::runtime::Runtime;
use crate::backends::embedded::sapi::fephp_sapi_figures;
use std::collections::HashMap;
use std::sync::atomic::Ordering::SeqCst;

/// Requests of a route not charged: the first ones fill caches for good.
const WARM_UP: u64 = 10;
/// Growth that names a route: memory...
const BYTES: i64 = 1 << 20;
/// ...or entries (globals, classes, static-property elements).
const ENTRIES: i64 = 1000;
/// Routes tracked per worker; the rest are charged to "other".
const ROUTES: usize = 64;

#[derive(Default)]
struct Growth {
    requests: u64,
    bytes: i64,
    entries: i64,
    /// The growth at which it was last reported (reported again at twice it).
    reported_bytes: i64,
    reported_entries: i64,
}

/// One worker's tracker.
pub struct Leaks {
    pool: String,
    last: Option<fephp_sapi_figures>,
    routes: HashMap<String, Growth>,
}

impl Leaks {
    pub fn new(pool: &str) -> Leaks {
        Leaks {
            pool: pool.to_owned(),
            last: None,
            routes: HashMap::new(),
        }
    }

    /// Before the first job: what PHP holds once the script has booted.
    pub fn baseline(&mut self, rt: &'static Runtime) {
        self.last = Some(figures(rt));
    }

    /// After a job for `route` ended: charges it with what PHP holds now
    /// compared with after the previous job. On the PHP thread, between jobs.
    pub fn observe(&mut self, rt: &'static Runtime, header: &Header, route: &str) {
        let now = figures(rt);
        let Some(before) = self.last.replace(now) else {
            return;
        };
        let key = if self.routes.len() < ROUTES || self.routes.contains_key(route) {
            route
        } else {
            "other"
        };
        let g = self.routes.entry(key.to_owned()).or_default();
        g.requests += 1;
        if g.requests <= WARM_UP {
            return;
        }
        let delta = |a: u64, b: u64| a as i64 - b as i64;
        g.bytes += delta(now.memory, before.memory);
        g.entries += delta(now.globals, before.globals)
            + delta(now.classes, before.classes)
            + delta(now.statics, before.statics);
        let leaks_bytes = g.bytes >= BYTES && g.bytes >= 2 * g.reported_bytes.max(BYTES / 2);
        let leaks_entries =
            g.entries >= ENTRIES && g.entries >= 2 * g.reported_entries.max(ENTRIES / 2);
        if !(leaks_bytes || leaks_entries) {
            return;
        }
        g.reported_bytes = g.bytes;
        g.reported_entries = g.entries;
        tracing::warn!(
            "leak report of {}: route {key} left {:.1} MiB of memory and {} entries (globals, classes, static-property elements) behind in this worker (pid {}) over {} requests; find what it keeps between requests (a static cache, a global array, a growing registry)",
            super::section(&self.pool),
            g.bytes as f64 / (1u64 << 20) as f64,
            g.entries,
            std::process::id(),
            g.requests - WARM_UP
        );
        if let Some(l) = header.leak(key) {
            l.bytes.fetch_max(g.bytes, SeqCst);
            l.entries.fetch_max(g.entries, SeqCst);
        }
    }
}

fn figures(rt: &'static Runtime) -> fephp_sapi_figures {
    let mut f = fephp_sapi_figures {
        memory: 0,
        globals: 0,
        classes: 0,
        statics: 0,
    };
    // SAFETY: the shim fills the struct; PHP waits between jobs on this thread.
    unsafe { rt.shim.fephp_sapi_worker_figures(&mut f) };
    f
}

/// "GET /path" of a job's log line ("GET /path?query").
pub fn route_of(log_uri: &str) -> String {
    log_uri.split('?').next().unwrap_or(log_uri).to_owned()
}
