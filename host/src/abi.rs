//! A safe Rust wrapper over fe-php's C ABI. The host uses nothing else of the
//! library, so it exercises exactly what C hosts get.

use fe_php::ffi::*;
use std::ffi::{c_char, c_void, CString};
use std::ptr;
use std::task::Waker;

/// A shared engine handle.
pub struct Engine(*const fephp_engine);

// SAFETY: the C ABI documents fephp_engine as thread-safe and shareable.
unsafe impl Send for Engine {}
unsafe impl Sync for Engine {}

/// Reads a string through one of the `(buf, cap, len_out)` functions.
fn read_string(
    f: impl Fn(*mut c_char, usize, *mut usize) -> fephp_result,
) -> Result<String, fephp_result> {
    let mut buf = vec![0 as c_char; 1024];
    let mut len = 0usize;
    let mut r = f(buf.as_mut_ptr(), buf.len(), &mut len);
    if r == fephp_result::BufferTooSmall {
        buf = vec![0 as c_char; len + 1];
        r = f(buf.as_mut_ptr(), buf.len(), &mut len);
    }
    if r != fephp_result::Ok {
        return Err(r);
    }
    let bytes: Vec<u8> = buf[..len].iter().map(|&c| c as u8).collect();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The message of the last failed call on this thread.
pub fn last_error() -> String {
    // SAFETY: the closure passes a live buffer of the stated capacity.
    read_string(|b, c, l| unsafe { fephp_last_error(b, c, l) }).unwrap_or_default()
}

/// Checks `text` as the content of the configuration file `path` without an
/// engine: Err with every problem, as `fephp_init` on that file gives them.
pub fn check_config(path: &str, text: &str) -> Result<(), String> {
    let p = CString::new(path).map_err(|_| "config path contains a NUL byte".to_owned())?;
    let t = CString::new(text)
        .map_err(|_| "the configuration contains a NUL byte: it cannot be TOML".to_owned())?;
    // SAFETY: both strings are NUL-terminated and live across the calls; the
    // closure passes a live buffer of the stated capacity.
    match read_string(|b, c, l| unsafe { fephp_config_check(p.as_ptr(), t.as_ptr(), b, c, l) }) {
        Ok(_) => Ok(()),
        Err(_) => Err(last_error()),
    }
}

impl Engine {
    pub fn from_file(path: &str) -> Result<Engine, String> {
        let c = CString::new(path).map_err(|_| "config path contains a NUL byte".to_owned())?;
        let mut e = ptr::null();
        // SAFETY: `c` is NUL-terminated and lives across the call; `e` is writable.
        match unsafe { fephp_init(c.as_ptr(), ptr::null(), &mut e) } {
            fephp_result::Ok => Ok(Engine(e)),
            _ => Err(last_error()),
        }
    }

    fn string(
        &self,
        f: unsafe extern "C" fn(
            *const fephp_engine,
            *mut c_char,
            usize,
            *mut usize,
        ) -> fephp_result,
    ) -> String {
        // SAFETY: self.0 is a live engine; the buffer is live for the call.
        read_string(|b, c, l| unsafe { f(self.0, b, c, l) }).unwrap_or_default()
    }

    pub fn messages(&self) -> String {
        self.string(fephp_engine_messages)
    }

    /// Whether a backend is available, and why not.
    pub fn backend(&self, backend: fephp_backend) -> Result<(), String> {
        let mut ok = false;
        // SAFETY: live engine, writable out pointer.
        unsafe { fephp_engine_backend_available(self.0, backend as u32, &mut ok) };
        if ok {
            Ok(())
        } else {
            Err(last_error())
        }
    }

    /// Re-reads the configuration file; on error the running one stays.
    pub fn reload(&self, path: &str) -> Result<(), ReloadRefused> {
        let c = CString::new(path)
            .map_err(|_| ReloadRefused::Invalid("config path contains a NUL byte".to_owned()))?;
        // SAFETY: live engine; `c` is NUL-terminated and lives across the call.
        match unsafe { fephp_engine_reload(self.0, c.as_ptr(), ptr::null()) } {
            fephp_result::Ok => Ok(()),
            fephp_result::RestartRequired => Err(ReloadRefused::RestartRequired(last_error())),
            _ => Err(ReloadRefused::Invalid(last_error())),
        }
    }

    /// Restarts every worker pool's workers (worker mode), between requests.
    pub fn restart_workers(&self) -> Result<(), String> {
        // SAFETY: live engine; NULL names every worker pool.
        match unsafe { fephp_engine_restart_workers(self.0, ptr::null()) } {
            fephp_result::Ok => Ok(()),
            _ => Err(last_error()),
        }
    }

    /// Restarts the workers of worker pool `name` (the control API).
    pub fn restart_pool(&self, name: &str) -> Result<(), String> {
        let c = CString::new(name).map_err(|_| "the pool name contains a NUL byte".to_owned())?;
        // SAFETY: live engine; `c` is NUL-terminated and lives across the call.
        match unsafe { fephp_engine_restart_workers(self.0, c.as_ptr()) } {
            fephp_result::Ok => Ok(()),
            _ => Err(last_error()),
        }
    }

    /// The running configuration document as JSON.
    pub fn config_json(&self) -> String {
        self.string(fephp_engine_config_json)
    }

    /// The PHP runner pools as JSON (`{"pools": [...]}`).
    pub fn pools_json(&self) -> String {
        self.string(fephp_engine_pools_json)
    }

    /// The FastCGI upstreams as JSON (`{"fastcgi": [...]}`).
    pub fn upstreams_json(&self) -> String {
        self.string(fephp_engine_upstreams_json)
    }

    /// Drains or undrains FastCGI upstream `address` of pool `pool` (in every
    /// process). Err: no such pool or address (the message names those that
    /// exist).
    pub fn upstream_drain(&self, pool: &str, address: &str, drain: bool) -> Result<(), String> {
        let p = CString::new(pool).map_err(|_| "the pool name contains a NUL byte".to_owned())?;
        let a = CString::new(address).map_err(|_| "the address contains a NUL byte".to_owned())?;
        // SAFETY: live engine; both strings are NUL-terminated and live across the call.
        match unsafe { fephp_engine_upstream_drain(self.0, p.as_ptr(), a.as_ptr(), drain) } {
            fephp_result::Ok => Ok(()),
            _ => Err(last_error()),
        }
    }

    /// Tells the metrics that worker `pid` was reaped (see master::run).
    pub fn worker_exited(&self, pid: i32, signal: i32, replaced: bool) {
        // SAFETY: live engine.
        unsafe { fephp_metrics_worker_exited(self.0, pid, signal, replaced) };
    }

    pub fn worker_start(&self) -> Result<(), String> {
        // SAFETY: live engine.
        match unsafe { fephp_worker_start(self.0) } {
            fephp_result::Ok => Ok(()),
            _ => Err(last_error()),
        }
    }

    /// Takes over receiving embedded PHP's responses in this process: the
    /// descriptor to watch (None when PHP does not run in the runner pool).
    pub fn event_fd(&self) -> Result<Option<i32>, String> {
        let mut fd = -1;
        // SAFETY: live engine, valid out-pointer.
        match unsafe { fephp_engine_event_fd(self.0, &mut fd) } {
            fephp_result::Ok => Ok((fd >= 0).then_some(fd)),
            _ => Err(last_error()),
        }
    }

    /// Runs the completions of the PHP responses that have arrived.
    pub fn process_events(&self) -> Result<(), String> {
        // SAFETY: live engine.
        match unsafe { fephp_engine_process_events(self.0) } {
            fephp_result::Ok => Ok(()),
            _ => Err(last_error()),
        }
    }

    /// Starts a request; the returned receiver yields the response. `body` is
    /// what `req.body_read_ctx` points at: it lives until the completion has run
    /// (however long the connection lasts), the last moment the engine reads it.
    ///
    /// # Safety
    /// Every pointer in `req` must be valid for the duration of this call (the
    /// engine copies what it keeps), except `body_read_ctx`, which `body` owns.
    pub unsafe fn handle_async(
        &self,
        req: &fephp_request,
        tls: Option<&fephp_tls_info>,
        body: Option<std::sync::Arc<crate::spool::Spooled>>,
    ) -> tokio::sync::oneshot::Receiver<Result<Response, String>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let ud = Box::into_raw(Box::new((tx, body))) as *mut c_void;
        let tls = tls.map_or(std::ptr::null(), |t| t as *const fephp_tls_info);
        let r = fephp_handle_request_async_tls(self.0, req, tls, Some(on_response), ud);
        if r != fephp_result::Ok {
            // The callback was not called: take the sender back and report.
            let (tx, _body) = *Box::from_raw(ud as *mut Reply);
            let _ = tx.send(Err(last_error()));
        }
        rx
    }

    /// Answers a request whose body is still unread when the engine can do so
    /// without it (see `fephp_handle_request_before_body`); None when the body is
    /// needed.
    ///
    /// # Safety
    /// As `handle_async`.
    pub unsafe fn handle_before_body(
        &self,
        req: &fephp_request,
        tls: Option<&fephp_tls_info>,
    ) -> Option<tokio::sync::oneshot::Receiver<Result<Response, String>>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let reply: Reply = (tx, None);
        let ud = Box::into_raw(Box::new(reply)) as *mut c_void;
        let mut answered = false;
        let tls = tls.map_or(std::ptr::null(), |t| t as *const fephp_tls_info);
        let r = fephp_handle_request_before_body_tls(
            self.0,
            req,
            tls,
            Some(on_response),
            ud,
            &mut answered,
        );
        if r != fephp_result::Ok || !answered {
            // The callback was not called and never will be: take the sender back.
            let (tx, _) = *Box::from_raw(ud as *mut Reply);
            if r == fephp_result::Ok {
                return None;
            }
            let _ = tx.send(Err(last_error()));
        }
        Some(rx)
    }

    /// The directory for request bodies too large for memory.
    pub fn temp_dir(&self) -> String {
        self.string(fephp_engine_temp_dir)
    }
}

/// The waiting task's sender and the request body the engine reads meanwhile.
type Reply = (
    tokio::sync::oneshot::Sender<Result<Response, String>>,
    Option<std::sync::Arc<crate::spool::Spooled>>,
);

/// Completion callback: hands the response to the waiting task.
unsafe extern "C" fn on_response(
    userdata: *mut c_void,
    result: fephp_result,
    response: *mut fephp_response,
) {
    // SAFETY: userdata is the Box<Reply> leaked in handle_async; this runs exactly
    // once, and the engine reads no more of the body from now on.
    let (tx, _body) = *Box::from_raw(userdata as *mut Reply);
    let msg = if result == fephp_result::Ok && !response.is_null() {
        Ok(Response {
            raw: response,
            notify_ud: ptr::null(),
        })
    } else {
        Err(last_error())
    };
    let _ = tx.send(msg);
}

impl Drop for Engine {
    fn drop(&mut self) {
        // SAFETY: we own one reference.
        unsafe { fephp_engine_free(self.0) }
    }
}

/// An owned response.
pub struct Response {
    raw: *mut fephp_response,
    /// The `Arc<StreamWaker>` lent to the notify callback, released after the response.
    notify_ud: *const StreamWaker,
}

// SAFETY: a fephp_response may move between threads (one owner at a time).
unsafe impl Send for Response {}

/// Why `Engine::reload` changed nothing.
pub enum ReloadRefused {
    /// The file is invalid (every problem, as `--check` prints them).
    Invalid(String),
    /// It changes PHP's runtime (libphp_path, php.ini): only a new process can.
    RestartRequired(String),
}

/// How the body is to be sent.
pub enum BodyKind {
    Empty,
    Bytes,
    File { fd: i32, offset: u64, len: u64 },
    Stream,
}

impl Response {
    pub fn status(&self) -> u16 {
        // SAFETY: live response.
        unsafe { fephp_response_status(self.raw) }
    }

    /// Headers as (name, value) byte slices borrowed from the response.
    pub fn headers(&self) -> Vec<(&[u8], &[u8])> {
        // SAFETY: live response; the strings live as long as `self`.
        unsafe {
            let n = fephp_response_header_count(self.raw);
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                let mut name = fephp_str {
                    ptr: ptr::null(),
                    len: 0,
                };
                let mut value = name;
                if fephp_response_header(self.raw, i, &mut name, &mut value) == fephp_result::Ok {
                    out.push((as_bytes(name), as_bytes(value)));
                }
            }
            out
        }
    }

    pub fn body_kind(&self) -> BodyKind {
        // SAFETY: live response, writable out pointers.
        unsafe {
            match fephp_response_body_kind(self.raw) {
                fephp_body_kind::Empty => BodyKind::Empty,
                fephp_body_kind::Bytes => BodyKind::Bytes,
                fephp_body_kind::Stream => BodyKind::Stream,
                fephp_body_kind::File => {
                    let (mut fd, mut offset, mut len) = (-1, 0, 0);
                    fephp_response_body_file(self.raw, &mut fd, &mut offset, &mut len);
                    BodyKind::File { fd, offset, len }
                }
            }
        }
    }

    /// The whole in-memory body (BYTES kind).
    pub fn body_bytes(&self) -> &[u8] {
        let (mut p, mut n) = (ptr::null(), 0usize);
        // SAFETY: live response; the bytes live as long as `self`.
        unsafe {
            if fephp_response_body_bytes(self.raw, &mut p, &mut n) != fephp_result::Ok
                || p.is_null()
            {
                return &[];
            }
            std::slice::from_raw_parts(p, n)
        }
    }

    /// Non-blocking read of a streamed body: Ok(Some(n)), Ok(None) = try later.
    pub fn try_read(&mut self, buf: &mut [u8]) -> Result<Option<usize>, String> {
        let mut n = 0;
        // SAFETY: live response, buffer valid for its length.
        match unsafe { fephp_response_body_try_read(self.raw, buf.as_mut_ptr(), buf.len(), &mut n) }
        {
            fephp_result::Ok => Ok(Some(n)),
            fephp_result::Again => Ok(None),
            _ => Err(last_error()),
        }
    }

    /// Registers `waker` to be woken (from any thread) when a streamed body has news.
    pub fn set_notify(&mut self, waker: std::sync::Arc<StreamWaker>) {
        unsafe extern "C" fn notify(ud: *mut c_void) {
            // SAFETY: ud is the Arc raw pointer kept alive by the Response (see below).
            let w = &*(ud as *const StreamWaker);
            w.wake();
        }
        // The Arc stays leaked while the response lives; Response::drop frees it.
        let ptr = std::sync::Arc::into_raw(waker) as *mut c_void;
        // SAFETY: live response; ptr stays valid until we free it after the response.
        unsafe { fephp_response_set_body_notify(self.raw, Some(notify), ptr) };
        if !self.notify_ud.is_null() {
            // SAFETY: replaced registration: the old Arc is no longer referenced.
            unsafe { drop(std::sync::Arc::from_raw(self.notify_ud)) };
        }
        self.notify_ud = ptr as *const StreamWaker;
    }
}

impl Drop for Response {
    fn drop(&mut self) {
        // SAFETY: we own the response; after it is freed the notify callback can no
        // longer run, so the waker Arc can be released.
        unsafe {
            fephp_response_free(self.raw);
            if !self.notify_ud.is_null() {
                drop(std::sync::Arc::from_raw(self.notify_ud));
            }
        }
    }
}

unsafe fn as_bytes<'a>(s: fephp_str) -> &'a [u8] {
    if s.ptr.is_null() {
        &[]
    } else {
        std::slice::from_raw_parts(s.ptr as *const u8, s.len)
    }
}

/// Wakes the task polling a streamed body; called from engine threads.
#[derive(Default)]
pub struct StreamWaker {
    waker: parking_lot::Mutex<Option<Waker>>,
}

impl StreamWaker {
    /// Where the polling task leaves its waker.
    pub fn slot(&self) -> parking_lot::MutexGuard<'_, Option<Waker>> {
        self.waker.lock()
    }

    pub fn wake(&self) {
        if let Some(w) = self.waker.lock().take() {
            w.wake();
        }
    }
}
