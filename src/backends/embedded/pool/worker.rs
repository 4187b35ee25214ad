//! A worker pool's runner: the worker script runs once and takes every job of
//! the pool through `frankenphp_handle_request()` (the shim's worker mode). This
//! side hands it jobs from the queue, ends it when the runner must go
//! (`max_requests`, memory budget, stop), and restarts it between jobs when code
//! it loaded has changed since it booted (checked when a reload asks) or when a
//! restart of the pool is asked.

use super::board::IDLE;
use super::leaks::{route_of, Leaks};
use super::runner::{
    after_job, start_serving, take, Taken, EXIT_RESTARTED, EXIT_WORKER_ENDED, EXIT_WORKER_FAILED,
};
use super::{Pool, WorkerScript};
use crate::backends::embedded::executor;
use crate::backends::embedded::runtime::Runtime;
use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void};
use std::os::unix::fs::MetadataExt;
use std::rc::Rc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::SystemTime;

pub fn serve(
    pool: &'static Pool,
    rt: &'static Runtime,
    index: usize,
    script: &WorkerScript,
) -> i32 {
    start_serving(pool, index);
    let slot = pool.board.slot(index);
    let header = pool.board.header();
    let stop: Rc<Cell<Option<i32>>> = Default::default();
    let handed = Rc::new(Cell::new(0u64));
    let next = {
        let (stop, handed) = (stop.clone(), handed.clone());
        let mut buf = Vec::new();
        let restart = header.restart.load(SeqCst);
        let mut check = header.code_check.load(SeqCst);
        let mut code: Option<Code> = None;
        let mut leaks = pool.settings.leak_report.then(|| Leaks::new(&pool.name));
        let mut last_route = String::new();
        move || -> Option<super::Job> {
            if let Some(l) = &mut leaks {
                if handed.get() == 0 {
                    l.baseline(rt);
                } else {
                    l.observe(rt, header, &last_route);
                }
            }
            if handed.get() > 0 {
                if let Some(exit) = after_job(pool, index) {
                    stop.set(Some(exit));
                    return None;
                }
            }
            // What the script loaded while booting, as it was then.
            let code = code.get_or_insert_with(|| Code::now(rt));
            loop {
                if header.restart.load(SeqCst) != restart {
                    tracing::info!(
                        "the worker script {} of {} restarts, as asked",
                        pool.worker
                            .as_ref()
                            .map_or(String::new(), |w| w.path.display().to_string()),
                        super::section(&pool.name)
                    );
                    stop.set(Some(EXIT_RESTARTED));
                    return None;
                }
                let asked = header.code_check.load(SeqCst);
                if asked != check {
                    check = asked;
                    if let Some(changed) = code.changed(rt) {
                        tracing::info!(
                            "{changed} changed since the worker script of {} booted: it restarts",
                            super::section(&pool.name)
                        );
                        stop.set(Some(EXIT_RESTARTED));
                        return None;
                    }
                }
                match take(pool, index, &mut buf) {
                    Taken::Job(job) => {
                        handed.set(handed.get() + 1);
                        if leaks.is_some() {
                            last_route = route_of(&job.log_uri);
                        }
                        return Some(*job);
                    }
                    Taken::Stop(exit) => {
                        stop.set(Some(exit));
                        return None;
                    }
                    Taken::Again => {}
                }
            }
        }
    };
    let end = executor::run_worker(rt, super::job::worker_boot(script), Box::new(next));
    slot.state.store(IDLE, SeqCst);
    if let Some(exit) = stop.get() {
        return exit;
    }
    let section = super::section(&pool.name);
    let shown = script.path.display();
    let printed = if end.output.trim().is_empty() {
        String::new()
    } else {
        format!("; it printed: {}", end.output.trim())
    };
    if end.rc < 0 {
        tracing::error!(
            "PHP could not start the worker script {shown} of {section} (see PHP's messages above); its runner is restarted with a back-off"
        );
        EXIT_WORKER_FAILED
    } else if handed.get() == 0 {
        tracing::error!(
            "the worker script {shown} of {section} ended before it took a request (it must loop on frankenphp_handle_request()){printed}; its runner is restarted with a back-off"
        );
        EXIT_WORKER_FAILED
    } else {
        tracing::warn!(
            "the worker script {shown} of {section} ended after {} requests (it returned, called exit() or hit a fatal error){printed}; a new runner starts it again",
            handed.get()
        );
        EXIT_WORKER_ENDED
    }
}

/// A file as stat() saw it: (modification time in ns, inode, size).
type Stamp = (i128, u64, u64);

fn stamp(path: &str) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some((
        m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        m.ino(),
        m.size(),
    ))
}

/// The files a worker script had loaded when it finished booting, with their
/// stamps then; files it loads later are compared with the boot time.
struct Code {
    files: HashMap<String, Option<Stamp>>,
    booted: i128,
}

impl Code {
    fn now(rt: &'static Runtime) -> Code {
        let booted = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        let files = included(rt).into_iter().map(|p| {
            let s = stamp(&p);
            (p, s)
        });
        Code {
            files: files.collect(),
            booted,
        }
    }

    /// The first file (of those the script has loaded so far) that is not as
    /// it was.
    fn changed(&self, rt: &'static Runtime) -> Option<String> {
        included(rt).into_iter().find(|p| {
            let now = stamp(p);
            match self.files.get(p) {
                Some(then) => *then != now,
                None => now.is_none_or(|(mtime, _, _)| mtime > self.booted),
            }
        })
    }
}

/// The files PHP has included in this runner's running request.
fn included(rt: &'static Runtime) -> Vec<String> {
    unsafe extern "C" fn each(arg: *mut c_void, path: *const c_char, len: usize) -> c_int {
        // SAFETY: `arg` is the Vec below; `path` has `len` bytes (a zend_string).
        let files = unsafe { &mut *(arg as *mut Vec<String>) };
        let bytes = unsafe { std::slice::from_raw_parts(path as *const u8, len) };
        files.push(String::from_utf8_lossy(bytes).into_owned());
        0
    }
    let mut files: Vec<String> = Vec::new();
    // SAFETY: called on the PHP thread between jobs (PHP waits in next_job), so
    // its included-files table is not changing; `each` only copies.
    unsafe {
        rt.shim
            .fephp_sapi_included_files(Some(each), &mut files as *mut Vec<String> as *mut c_void)
    };
    files
}
