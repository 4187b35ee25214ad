//! The PHP thread of a worker process and the SAPI callbacks it serves.
//!
//! NTS PHP allows one interpreter per process and one thread in it at a time, so each
//! worker runs PHP on one dedicated thread that takes jobs from a queue; the host's
//! I/O threads never wait for PHP. Responses go back through each job's completion:
//! a fully buffered body when the script ends, or a stream once it calls `flush()` or
//! its output passes `STREAM_AFTER`.

use super::respond::Sink;
use super::runtime::Runtime;
use super::sapi::{fephp_sapi_callbacks, fephp_sapi_pair, fephp_sapi_request};
use super::Job;
use crate::http::{Body, Response};
use crate::metrics::Metrics;
use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

/// Output past this size is streamed instead of buffered.
const STREAM_AFTER: usize = 1 << 20;
/// Streamed output is sent in chunks of about this size (or at `flush()`).
const STREAM_CHUNK: usize = 64 * 1024;
/// The PHP thread's stack (PHP recursion is deep; the main thread usually has 8 MiB).
const PHP_STACK: usize = 16 << 20;

/// The callbacks PHP calls through the shim.
pub static CALLBACKS: fephp_sapi_callbacks = fephp_sapi_callbacks {
    write: Some(cb_write),
    header: Some(cb_header),
    headers_done: Some(cb_headers_done),
    read_body: Some(cb_read_body),
    flush: Some(cb_flush),
    finish: Some(cb_finish),
    log: Some(cb_log),
    storage_failed: Some(cb_storage_failed),
    next_job: Some(cb_next_job),
    job_done: Some(cb_job_done),
};

/// A worker's PHP thread.
pub struct Executor {
    queue: Arc<Queue>,
}

/// Jobs waiting for the PHP thread. A plain mutex-guarded deque: the I/O thread
/// pushes, the PHP thread pops, and the condition variable is only signalled when
/// the PHP thread sleeps on it.
struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

struct QueueState {
    jobs: VecDeque<Job>,
    /// The PHP thread is waiting on `ready`.
    sleeping: bool,
    /// The PHP thread has ended (it never does unless a bug makes it panic).
    gone: bool,
}

/// Marks the queue gone when the PHP thread ends, however it ends.
struct Gone(Arc<Queue>);

impl Drop for Gone {
    fn drop(&mut self) {
        let jobs = {
            let mut q = self.0.state.lock();
            q.gone = true;
            std::mem::take(&mut q.jobs)
        };
        // Dropped jobs answer 500 (Job's Drop), outside the lock.
        drop(jobs);
    }
}

impl Queue {
    /// The next job, sleeping until there is one.
    fn pop(&self) -> Job {
        let mut q = self.state.lock();
        loop {
            if let Some(job) = q.jobs.pop_front() {
                return job;
            }
            q.sleeping = true;
            self.ready.wait(&mut q);
            q.sleeping = false;
        }
    }
}

impl Executor {
    /// Starts the PHP thread; it reports busy/idle to `metrics`.
    pub fn start(rt: &'static Runtime, metrics: Arc<Metrics>) -> std::io::Result<Executor> {
        let queue = Arc::new(Queue {
            state: Mutex::new(QueueState {
                jobs: VecDeque::new(),
                sleeping: false,
                gone: false,
            }),
            ready: Condvar::new(),
        });
        let gone = Gone(queue.clone());
        std::thread::Builder::new()
            .name("php".into())
            .stack_size(PHP_STACK)
            .spawn(move || {
                let gone = gone;
                // PHP's CPU-time limit must land here, whatever mask this thread
                // inherited from the one that started it.
                crate::backends::sigprof::set_blocked(false);
                metrics.php_thread_started();
                loop {
                    let job = gone.0.pop();
                    metrics.php_busy(true);
                    run(rt, job);
                    metrics.php_busy(false);
                }
            })?;
        Ok(Executor { queue })
    }

    /// Queues a job; gives it back when the PHP thread is gone.
    pub fn submit(&self, job: Job) -> Result<(), Box<Job>> {
        let mut q = self.queue.state.lock();
        if q.gone {
            return Err(Box::new(job));
        }
        q.jobs.push_back(job);
        let wake = q.sleeping;
        drop(q);
        if wake {
            self.queue.ready.notify_one();
        }
        Ok(())
    }
}

/// Where the response is.
enum State {
    /// Headers and output are collected; the completion has not run.
    Buffering,
    /// The head has gone out with a streamed body; output goes to the sink.
    Streaming(Box<dyn Sink>),
    /// The response is complete (script ended or fastcgi_finish_request()).
    Done,
}

/// One request on the PHP thread; `SG(server_context)` points at it.
struct Ctx {
    job: Job,
    status: u16,
    status_header: Option<u16>,
    headers: Vec<(String, Vec<u8>)>,
    out: Vec<u8>,
    out_len: u64,
    state: State,
    /// PHP could not store the request (see `cb_storage_failed`): answer 500.
    not_stored: bool,
}

/// A job made ready for the shim: its context and the request structure that
/// points into it. Everything pointed at lives on the heap (the boxed context,
/// the job's strings, the pair vectors), so moving this struct keeps `req` valid.
struct Prepared {
    ctx: Box<Ctx>,
    _vars: Vec<fephp_sapi_pair>,
    _headers: Vec<fephp_sapi_pair>,
    req: fephp_sapi_request,
}

impl Prepared {
    fn new(job: Job) -> Prepared {
        let pairs = |p: &crate::backends::php::cgi::Pairs| -> Vec<fephp_sapi_pair> {
            let (buf, spans) = p.raw();
            let base = buf.as_ptr() as *const c_char;
            spans
                .iter()
                // SAFETY: every span lies inside `buf`, and each name is followed by a
                // NUL there (cgi::Pairs::push_with).
                .map(|&(n, nl, v, vl)| unsafe {
                    fephp_sapi_pair {
                        name: base.add(n),
                        name_len: nl,
                        value: base.add(v),
                        value_len: vl,
                    }
                })
                .collect()
        };
        let vars = pairs(&job.vars);
        let headers = pairs(&job.headers);
        let opt =
            |s: &Option<std::ffi::CString>| s.as_ref().map_or(std::ptr::null(), |s| s.as_ptr());
        let mut ctx = Box::new(Ctx {
            status: 200,
            status_header: None,
            headers: Vec::new(),
            out: Vec::new(),
            out_len: 0,
            state: State::Buffering,
            not_stored: false,
            job,
        });
        let j = &ctx.job;
        let req = fephp_sapi_request {
            ctx: std::ptr::null_mut(),
            method: j.method.as_ptr(),
            query_string: j.query.as_ptr(),
            request_uri: j.request_uri.as_ptr(),
            script_filename: j.script_filename.as_ptr(),
            content_type: opt(&j.content_type),
            content_length: j.content_length,
            cookie: opt(&j.cookie),
            authorization: opt(&j.authorization),
            proto_num: j.proto_num,
            headers_only: j.head as c_int,
            vars: vars.as_ptr(),
            var_count: vars.len(),
            headers: headers.as_ptr(),
            header_count: headers.len(),
        };
        let req = fephp_sapi_request {
            ctx: &mut *ctx as *mut Ctx as *mut c_void,
            ..req
        };
        Prepared {
            ctx,
            _vars: vars,
            _headers: headers,
            req,
        }
    }

    /// The script has ended: nothing reads the body any more, so none of it
    /// needs keeping when the completion runs; the response is completed.
    fn end(mut self) {
        self.ctx.job.body.close();
        finish(&mut self.ctx);
    }
}

pub(super) fn run(rt: &'static Runtime, job: Job) {
    let mut p = Prepared::new(job);
    // SAFETY: `p.req` and everything it points to live until execute returns; the
    // callbacks receive its ctx back and are the only users of it meanwhile.
    let rc = unsafe { rt.shim.fephp_sapi_execute(&p.req) };
    let ctx = &mut p.ctx;
    match rc {
        0 => {}
        -1 => {
            tracing::error!(uri = %ctx.job.log_uri, "PHP could not start the request (see PHP's messages above)");
            if matches!(ctx.state, State::Buffering) {
                ctx.status = 500;
                ctx.headers.clear();
                ctx.out.clear();
            }
        }
        _ => {
            tracing::error!(uri = %ctx.job.log_uri, "PHP failed while shutting the request down; the worker keeps serving")
        }
    }
    p.end();
}

/// Worker mode on this thread: where the worker script's jobs come from, and
/// the job it is handling.
struct WorkerLoop {
    next: Box<dyn FnMut() -> Option<Job>>,
    current: Option<Prepared>,
}

thread_local! {
    static WORKER: std::cell::RefCell<Option<WorkerLoop>> = const { std::cell::RefCell::new(None) };
}

/// How a worker script ended.
pub(super) struct WorkerEnd {
    /// fephp_sapi_worker's result (0: the script ended; -1: PHP could not
    /// start it; 1: its request shutdown failed).
    pub rc: i32,
    /// What the script printed outside any job (its first KiB), for the log.
    pub output: String,
}

/// Runs the worker script `boot` (a request of its own) until it ends; each of
/// its `frankenphp_handle_request()` calls handles the job `next` returns, or
/// returns false when `next` returns None.
pub(super) fn run_worker(
    rt: &'static Runtime,
    boot: Job,
    next: Box<dyn FnMut() -> Option<Job>>,
) -> WorkerEnd {
    WORKER.with(|w| {
        *w.borrow_mut() = Some(WorkerLoop {
            next,
            current: None,
        })
    });
    let p = Prepared::new(boot);
    // SAFETY: as in `run`; jobs handed to PHP by `cb_next_job` live in WORKER
    // until `cb_job_done`.
    let rc = unsafe { rt.shim.fephp_sapi_worker(&p.req) };
    let left = WORKER.with(|w| w.borrow_mut().take());
    if let Some(job) = left.and_then(|w| w.current) {
        // The shim always reports the end of a job it took; never leave one
        // unanswered.
        job.end();
    }
    let out = &p.ctx.out;
    let output = String::from_utf8_lossy(&out[..out.len().min(1024)]).into_owned();
    WorkerEnd { rc, output }
}

unsafe extern "C" fn cb_next_job(_worker: *mut c_void, out: *mut fephp_sapi_request) -> c_int {
    guarded(0, || {
        WORKER.with(|w| {
            let mut w = w.borrow_mut();
            let Some(w) = w.as_mut() else {
                return 0;
            };
            if let Some(previous) = w.current.take() {
                previous.end();
            }
            let Some(job) = (w.next)() else {
                return 0;
            };
            let p = Prepared::new(job);
            // SAFETY: the shim passes a valid fephp_sapi_request to fill.
            *out = fephp_sapi_request { ..p.req };
            w.current = Some(p);
            1
        })
    })
}

unsafe extern "C" fn cb_job_done(ctx: *mut c_void) {
    guarded((), || {
        WORKER.with(|w| {
            let mut w = w.borrow_mut();
            let Some(w) = w.as_mut() else {
                return;
            };
            let is_it = w
                .current
                .as_ref()
                .is_some_and(|p| std::ptr::eq(&*p.ctx as *const Ctx as *const c_void, ctx));
            if is_it {
                if let Some(p) = w.current.take() {
                    p.end();
                }
            }
        })
    })
}

/// Completes the response: the whole buffered body, or the end of the stream.
fn finish(ctx: &mut Ctx) {
    match std::mem::replace(&mut ctx.state, State::Done) {
        State::Buffering if ctx.not_stored => {
            if let Some(c) = ctx.job.complete.take() {
                c.complete(Response::error(500, None));
            }
        }
        State::Buffering => {
            let body = std::mem::take(&mut ctx.out);
            let mut resp = head(ctx);
            if !resp
                .headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                && ctx.status_allows_body()
                && !ctx.job.head
            {
                resp.push_header("Content-Length", ctx.out_len.to_string());
            }
            let resp = if ctx.job.head {
                resp
            } else {
                resp.with_body(Body::Bytes(body))
            };
            if let Some(c) = ctx.job.complete.take() {
                c.complete(resp);
            }
        }
        State::Streaming(sender) => {
            if !ctx.out.is_empty() {
                sender.send(std::mem::take(&mut ctx.out));
            }
        }
        State::Done => {}
    }
}

impl Ctx {
    fn status_allows_body(&self) -> bool {
        let s = self.status_header.unwrap_or(self.status);
        !(s == 204 || s == 304 || (100..200).contains(&s))
    }
}

/// The response head from what PHP sent.
fn head(ctx: &mut Ctx) -> Response {
    let mut resp = Response::new(ctx.status_header.unwrap_or(ctx.status));
    resp.headers = std::mem::take(&mut ctx.headers);
    resp
}

/// Switches to streaming: the completion gets a streamed body now.
fn start_stream(ctx: &mut Ctx) {
    if !matches!(ctx.state, State::Buffering) {
        return;
    }
    let resp = head(ctx);
    let head_only = ctx.job.head;
    if let Some(c) = ctx.job.complete.take() {
        ctx.state = State::Streaming(c.stream(resp, head_only));
    } else {
        ctx.state = State::Done;
    }
}

/// Sends buffered output down the stream. False when the client has gone.
fn push(ctx: &mut Ctx) -> bool {
    if let State::Streaming(sender) = &ctx.state {
        if !ctx.out.is_empty() {
            return sender.send(std::mem::take(&mut ctx.out));
        }
        return !sender.is_aborted();
    }
    true
}

/// Runs a callback body, turning a panic into `fallback` (panics never reach C).
fn guarded<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        tracing::error!("internal error in a PHP callback");
        fallback
    })
}

/// # Safety
/// `ctx` is the `Ctx` of the running request (the shim only passes it back).
unsafe fn ctx_mut<'a>(ctx: *mut c_void) -> &'a mut Ctx {
    &mut *(ctx as *mut Ctx)
}

unsafe extern "C" fn cb_write(ctx: *mut c_void, data: *const c_char, len: usize) -> usize {
    guarded(len, || {
        let ctx = ctx_mut(ctx);
        let data = std::slice::from_raw_parts(data as *const u8, len);
        match &ctx.state {
            State::Done => return len,
            // The client has gone: PHP learns it here (connection_aborted()).
            State::Streaming(sender) if sender.is_aborted() => return 0,
            _ if ctx.job.head => {
                ctx.out_len += len as u64;
                return len;
            }
            _ => {}
        }
        ctx.out_len += len as u64;
        ctx.out.extend_from_slice(data);
        match ctx.state {
            State::Buffering if ctx.out.len() >= STREAM_AFTER => {
                start_stream(ctx);
                if push(ctx) {
                    len
                } else {
                    0
                }
            }
            State::Streaming(_) if ctx.out.len() >= STREAM_CHUNK => {
                if push(ctx) {
                    len
                } else {
                    0
                }
            }
            _ => len,
        }
    })
}

unsafe extern "C" fn cb_header(ctx: *mut c_void, line: *const c_char, len: usize) {
    guarded((), || {
        let ctx = ctx_mut(ctx);
        let line = std::slice::from_raw_parts(line as *const u8, len);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return;
        };
        let name = String::from_utf8_lossy(&line[..colon]).trim().to_owned();
        let value = line[colon + 1..].trim_ascii().to_vec();
        if name.eq_ignore_ascii_case("status") {
            // CGI's Status header sets the status and never reaches the client.
            let code = std::str::from_utf8(&value)
                .ok()
                .and_then(|v| v.split_whitespace().next()?.parse().ok());
            match code {
                Some(c) if (100..1000).contains(&c) => ctx.status_header = Some(c),
                _ => {
                    tracing::warn!(uri = %ctx.job.log_uri, "ignored a malformed Status header from PHP")
                }
            }
            return;
        }
        ctx.headers.push((name, value));
    })
}

unsafe extern "C" fn cb_headers_done(ctx: *mut c_void, status: c_int) {
    guarded((), || {
        let ctx = ctx_mut(ctx);
        ctx.status = u16::try_from(status)
            .ok()
            .filter(|s| (100..1000).contains(s))
            .unwrap_or(500);
    })
}

unsafe extern "C" fn cb_read_body(ctx: *mut c_void, buf: *mut c_char, len: usize) -> usize {
    guarded(0, || {
        let ctx = ctx_mut(ctx);
        if len == 0 {
            return 0;
        }
        // SAFETY: PHP passes a buffer of `len` writable bytes.
        let buf = std::slice::from_raw_parts_mut(buf as *mut u8, len);
        // PHP takes a short read for the end of the body (sapi_read_post_block's
        // callers stop below a full block): fill the buffer unless the body ends,
        // whatever pieces the host's body_read hands over.
        let mut filled = 0;
        while filled < len {
            match ctx.job.body.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) => {
                    // PHP sees the body end here; the host's error names the cause.
                    tracing::error!(uri = %ctx.job.log_uri, "reading the request body failed: {e}; PHP gets it truncated");
                    break;
                }
            }
        }
        filled
    })
}

unsafe extern "C" fn cb_flush(ctx: *mut c_void) {
    guarded((), || {
        let ctx = ctx_mut(ctx);
        if matches!(ctx.state, State::Done) || ctx.job.head {
            return;
        }
        start_stream(ctx);
        push(ctx);
    })
}

unsafe extern "C" fn cb_finish(ctx: *mut c_void) {
    guarded((), || finish(ctx_mut(ctx)))
}

unsafe extern "C" fn cb_storage_failed(ctx: *mut c_void, what: *const c_char, dir: *const c_char) {
    guarded((), || {
        let ctx = ctx_mut(ctx);
        let what = CStr::from_ptr(what).to_string_lossy();
        let dir = CStr::from_ptr(dir).to_string_lossy();
        ctx.not_stored = true;
        tracing::error!(
            uri = %ctx.job.log_uri,
            "PHP could not store {what} in its temporary directory {dir}: the request carries {}, {}. Free space there, or point [php.ini] upload_tmp_dir at a directory with room for post_max_size per worker; answered 500 without running the script",
            show_bytes(ctx.job.body.len()),
            space(&dir)
        );
    })
}

pub(super) fn show_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b => format!("{} KiB", b >> 10),
    }
}

/// "the directory has 12 KiB free of 1.0 MiB (or is not writable)", or why it
/// cannot be looked at.
pub(super) fn space(dir: &str) -> String {
    let Ok(path) = std::ffi::CString::new(dir) else {
        return "the directory name is not a path".to_owned();
    };
    // SAFETY: statvfs fills the zeroed struct through a valid pointer.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return format!(
            "the directory cannot be used: {}",
            std::io::Error::last_os_error()
        );
    }
    let unit = st.f_frsize as u64;
    format!(
        "the directory has {} free of {} (or is not writable)",
        show_bytes(st.f_bavail as u64 * unit),
        show_bytes(st.f_blocks as u64 * unit)
    )
}

unsafe extern "C" fn cb_log(ctx: *mut c_void, message: *const c_char, level: c_int) {
    guarded((), || {
        let msg = CStr::from_ptr(message).to_string_lossy();
        let uri = if ctx.is_null() {
            "-".to_owned()
        } else {
            ctx_mut(ctx).job.log_uri.clone()
        };
        match level {
            0..=3 => tracing::error!(target: "php", uri, "{msg}"),
            4 => tracing::warn!(target: "php", uri, "{msg}"),
            5 | 6 => tracing::info!(target: "php", uri, "{msg}"),
            _ => tracing::debug!(target: "php", uri, "{msg}"),
        }
    })
}
