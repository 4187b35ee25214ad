//! The C ABI: the only surface hosts see. `include/fe_php.h` is generated from this
//! file by cbindgen.
//!
//! Conventions (also in docs/C-API.md):
//! - Every function returns a `fephp_result` (or a plain value where it cannot fail),
//!   runs inside a panic boundary, and checks its pointers: NULL gives
//!   `FEPHP_RESULT_NULL_PARAMETER`, never a crash.
//! - Outputs go through `*_out` parameters written only on success. Functions that
//!   fill a caller buffer write a NUL-terminated string and set `*len_out` to its
//!   length without the NUL; on `FEPHP_RESULT_BUFFER_TOO_SMALL` they write nothing
//!   to `buf` but still set `*len_out`: the buffer needs `*len_out + 1` bytes. Pass
//!   `buf = NULL, cap = 0` to ask for the length alone.
//! - `fephp_engine` is shared (reference-counted, thread-safe); `fephp_response` is
//!   owned by one thread at a time. Each has exactly one `_free`; `_free(NULL)` is fine.
//! - Strings passed in are `fephp_str` (pointer + length, not NUL-terminated) or
//!   NUL-terminated `const char *` where noted; they are borrowed for the call only.
//!
//! Process model for NTS PHP: `fephp_init` in the master, fork, then
//! `fephp_worker_start` in each worker before its first request.

#![allow(non_camel_case_types)]
// The safety contract of every export is the same and stated above: each pointer is
// NULL (checked) or valid as its doc comment says. A `# Safety` section per function
// would repeat it and would not reach C readers of the header.
#![allow(clippy::missing_safety_doc)]

use crate::config::{BackendKind, Config};
use crate::engine::{Decision, Engine, MeteredCompletion, ReloadableEngine};
use crate::http::body::ReadOutcome;
use crate::http::request_body::{HostReader, RequestBody};
use crate::http::{Body, Request, Response};
use crate::metrics::StreamBytes;
use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;

/// Result codes. 0 is success; errors have their own range (7000…).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum fephp_result {
    Ok = 0,
    /// A required pointer argument was NULL.
    NullParameter = 7001,
    /// An argument is malformed (e.g. both or neither config source given, bad UTF-8).
    InvalidArgument = 7002,
    /// The configuration could not be read, parsed or validated; see `fephp_last_error`.
    ConfigError = 7003,
    /// The request target cannot be routed (traversal, NUL, not origin-form): answer 400.
    BadRequest = 7004,
    /// The caller's buffer is too small; `*len_out` holds the string's length
    /// without its NUL: call again with a buffer of at least `*len_out + 1` bytes.
    BufferTooSmall = 7005,
    /// A non-blocking read found no data yet; wait for the body notify callback.
    Again = 7006,
    /// The response body is of another kind than the accessor expects.
    WrongBodyKind = 7007,
    /// The body length is not known in advance (streamed body).
    UnknownLength = 7008,
    /// An index is out of range.
    OutOfRange = 7009,
    /// An I/O error; see `fephp_last_error`.
    IoError = 7010,
    /// The backend failed while producing a streamed body, or the body ended short
    /// of the Content-Length its head declared: it is truncated, so close the
    /// connection instead of reusing it.
    BodyFailed = 7011,
    /// A backend could not start in this process (e.g. the PHP thread); see
    /// `fephp_last_error`.
    BackendStartFailed = 7012,
    /// The new configuration changes what PHP started with in this process
    /// (`[php] libphp_path` or `[php.ini]`), which only a new process can apply;
    /// nothing changed. See `fephp_engine_reload`.
    RestartRequired = 7013,
    /// An internal error (a caught panic); see `fephp_last_error`.
    Panic = 7099,
    // A new code goes before Panic and into `fephp_result::ALL`.
}

impl fephp_result {
    /// Every code, for checking a raw value from C.
    const ALL: [fephp_result; 15] = [
        fephp_result::Ok,
        fephp_result::NullParameter,
        fephp_result::InvalidArgument,
        fephp_result::ConfigError,
        fephp_result::BadRequest,
        fephp_result::BufferTooSmall,
        fephp_result::Again,
        fephp_result::WrongBodyKind,
        fephp_result::UnknownLength,
        fephp_result::OutOfRange,
        fephp_result::IoError,
        fephp_result::BodyFailed,
        fephp_result::BackendStartFailed,
        fephp_result::RestartRequired,
        fephp_result::Panic,
    ];
}

/// Where `fephp_route` sends a request.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum fephp_backend {
    /// Answered by the engine itself (`/_health`).
    Internal = 0,
    Embedded = 1,
    Fastcgi = 2,
    Static = 3,
    /// An HTTP upstream (`[backend.proxy]`).
    Proxy = 4,
}

/// How a response body is delivered.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum fephp_body_kind {
    /// No body (HEAD, 204, 304).
    Empty = 0,
    /// In memory: `fephp_response_body_bytes`.
    Bytes = 1,
    /// A file range: `fephp_response_body_file` (sendfile it).
    File = 2,
    /// Produced while read: `fephp_response_body_read` / `_try_read`.
    Stream = 3,
}

/// A borrowed string: `len` bytes at `ptr`, not NUL-terminated. `ptr` may be NULL
/// when `len` is 0.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct fephp_str {
    pub ptr: *const c_char,
    pub len: usize,
}

/// One request header.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct fephp_header {
    pub name: fephp_str,
    pub value: fephp_str,
}

/// Reads up to `cap` bytes of the request body into `buf`. Returns the number of
/// bytes read, 0 at the end of the body, or -1 on error.
///
/// The library calls it on the thread that consumes the body: the worker's PHP
/// thread for the embedded backend, the library's I/O thread for FastCGI and
/// proxy requests (and, when a response starts before the body is consumed, the
/// thread that delivers it, to copy the rest into a temporary file of its own).
/// Calls never overlap, and none comes after the response is delivered. It may
/// block only on local file I/O (it runs on threads that serve other requests):
/// receive the whole body before handing the request over.
pub type fephp_body_read_cb =
    Option<unsafe extern "C" fn(ctx: *mut c_void, buf: *mut u8, cap: usize) -> isize>;

/// Receives the response of `fephp_handle_request_async`. Owns `response` (free it
/// with `fephp_response_free`); `response` is NULL when `result` is not OK.
pub type fephp_response_cb = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        result: fephp_result,
        response: *mut fephp_response,
    ),
>;

/// Called, from any thread, when a streamed body may have more data or has ended.
pub type fephp_notify_cb = Option<unsafe extern "C" fn(userdata: *mut c_void)>;

/// A request as the host parsed it. Everything is borrowed for the duration of the
/// call that receives it (the engine copies what it keeps).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct fephp_request {
    /// "GET", "POST", …
    pub method: fephp_str,
    /// The raw request-target as received: "/path%20x?query".
    pub target: fephp_str,
    /// "HTTP/1.1".
    pub protocol: fephp_str,
    pub headers: *const fephp_header,
    pub header_count: usize,
    /// The request body when it is in memory (may be NULL with `body_len` 0).
    pub body: *const u8,
    /// The exact size of the body, in `body` or served by `body_read`: PHP's
    /// CONTENT_LENGTH and what an upstream is sent, whatever the request's
    /// `Content-Length` header says.
    pub body_len: usize,
    /// Alternatively (with `body` NULL), a body of exactly `body_len` bytes read
    /// on demand by backends that consume it (see `fephp_body_read_cb`). Must stay
    /// callable until the response (or async callback) has been delivered; a body
    /// that ends early or fails makes the request fail (PHP sees it truncated).
    pub body_read: fephp_body_read_cb,
    pub body_read_ctx: *mut c_void,
    /// Client address ("203.0.113.7") and port.
    pub remote_addr: fephp_str,
    pub remote_port: u16,
    /// Address and port the request arrived on.
    pub local_addr: fephp_str,
    pub local_port: u16,
    /// True when the connection is TLS (sets HTTPS=on for PHP).
    pub tls: bool,
}

/// `[server]`'s connection limits, for hosts that own the socket: plain numbers
/// the host copies (timeouts in milliseconds, sizes in bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct fephp_server_limits {
    /// Longest time to receive a request's head, counted from its first byte (from
    /// the connection's start for the first request); exceeded: 408 and close.
    pub header_read_timeout_ms: u64,
    /// Longest wait between two reads of a request body; exceeded: 408 and close.
    pub body_read_timeout_ms: u64,
    /// How long an idle keep-alive connection waits for its next request.
    pub keepalive_timeout_ms: u64,
    /// Largest request head (request line and headers) in bytes; larger: 431.
    pub max_header_size: u64,
    /// Largest request body in bytes; larger: 413.
    pub max_body_size: u64,
    /// Connections one worker process serves at once.
    pub max_connections: u32,
}

/// The engine: configuration, router and backends (replaced as a whole by
/// `fephp_engine_reload`), and its metrics. Opaque.
pub struct fephp_engine {
    _private: [u8; 0],
}

/// A response. Opaque.
pub struct fephp_response {
    _private: [u8; 0],
}

/// A response plus the read position of its body.
struct ResponseHandle {
    resp: Response,
    pos: u64,
    /// Counts what is read of a streamed body (`fephp_response_bytes_total`).
    stream_bytes: Option<StreamBytes>,
}

impl ResponseHandle {
    fn into_raw(resp: Response, stream_bytes: Option<StreamBytes>) -> *mut fephp_response {
        Box::into_raw(Box::new(ResponseHandle {
            resp,
            pos: 0,
            stream_bytes,
        })) as *mut fephp_response
    }
}

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

fn set_last_error(msg: impl Into<String>) {
    let msg = msg.into();
    LAST_ERROR.with(|e| *e.borrow_mut() = msg);
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    let what = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    format!("internal error in fe-php (please report it): {what}")
}

/// Runs `f` inside the panic boundary.
fn guard(f: impl FnOnce() -> fephp_result) -> fephp_result {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            set_last_error(panic_message(&*p));
            fephp_result::Panic
        }
    }
}

/// Runs `f` inside the panic boundary, returning `fallback` on panic.
fn guard_value<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        set_last_error(panic_message(&*p));
        fallback
    })
}

macro_rules! non_null {
    ($($p:expr),+) => {
        $(if $p.is_null() {
            set_last_error(concat!("NULL passed for ", stringify!($p)));
            return fephp_result::NullParameter;
        })+
    };
}

/// # Safety
/// `s.ptr` must point to `s.len` readable bytes (or be NULL with len 0).
unsafe fn str_bytes<'a>(s: fephp_str) -> &'a [u8] {
    if s.ptr.is_null() || s.len == 0 {
        &[]
    } else {
        std::slice::from_raw_parts(s.ptr as *const u8, s.len)
    }
}

/// # Safety
/// As `str_bytes`.
unsafe fn str_utf8<'a>(s: fephp_str, what: &str) -> Result<&'a str, fephp_result> {
    std::str::from_utf8(str_bytes(s)).map_err(|_| {
        set_last_error(format!("{what} is not valid UTF-8"));
        fephp_result::InvalidArgument
    })
}

/// Copies `data` plus a NUL into `buf`; `*len_out` gets `data.len()` (the NUL not
/// counted), also when `buf` is NULL or `cap < data.len() + 1` (BUFFER_TOO_SMALL).
///
/// # Safety
/// `buf` must be writable for `cap` bytes and `len_out` writable.
unsafe fn write_out(
    data: &[u8],
    buf: *mut c_char,
    cap: usize,
    len_out: *mut usize,
) -> fephp_result {
    *len_out = data.len();
    if buf.is_null() || cap < data.len() + 1 {
        return fephp_result::BufferTooSmall;
    }
    std::ptr::copy_nonoverlapping(data.as_ptr(), buf as *mut u8, data.len());
    *buf.add(data.len()) = 0;
    fephp_result::Ok
}

/// The engine handle: the current engine, replaced by `fephp_engine_reload`.
///
/// # Safety
/// `engine` must come from `fephp_init` and not be freed.
unsafe fn holder_ref<'a>(engine: *const fephp_engine) -> &'a ReloadableEngine {
    &*(engine as *const ReloadableEngine)
}

/// The current engine. A call works on the one it took, whatever a concurrent
/// reload does; bind it (`let e = engine_ref(engine);`) to borrow from it.
///
/// # Safety
/// As `holder_ref`.
unsafe fn engine_ref(engine: *const fephp_engine) -> Arc<Engine> {
    holder_ref(engine).current()
}

/// Reads exactly one of a config file path and TOML text (`what` names the caller
/// in the error).
///
/// # Safety
/// Each pointer is NULL or a NUL-terminated string.
unsafe fn read_config(
    config_path: *const c_char,
    config_toml: *const c_char,
    what: &str,
) -> Result<Result<Config, crate::config::ConfigError>, fephp_result> {
    match (config_path.is_null(), config_toml.is_null()) {
        (false, true) => {
            let Ok(p) = CStr::from_ptr(config_path).to_str() else {
                set_last_error("config_path is not valid UTF-8");
                return Err(fephp_result::InvalidArgument);
            };
            Ok(Config::from_file(Path::new(p)))
        }
        (true, false) => {
            let Ok(t) = CStr::from_ptr(config_toml).to_str() else {
                set_last_error("config_toml is not valid UTF-8");
                return Err(fephp_result::InvalidArgument);
            };
            Ok(Config::from_toml(t))
        }
        _ => {
            set_last_error(format!(
                "{what}: pass exactly one of config_path and config_toml"
            ));
            Err(fephp_result::InvalidArgument)
        }
    }
}

/// Builds the engine's view of a request; a `body_read` body keeps what must
/// outlive the request in `engine`'s temporary directory.
///
/// # Safety
/// Every pointer in `req` must be valid as `fephp_request` documents.
unsafe fn request_view<'a>(
    req: &'a fephp_request,
    engine: &Engine,
) -> Result<Request<'a>, fephp_result> {
    let mut headers = Vec::with_capacity(req.header_count);
    if req.header_count > 0 {
        if req.headers.is_null() {
            set_last_error("fephp_request.headers is NULL but header_count > 0");
            return Err(fephp_result::NullParameter);
        }
        for h in std::slice::from_raw_parts(req.headers, req.header_count) {
            headers.push((str_bytes(h.name), str_bytes(h.value)));
        }
    }
    let (body, body_reader) = match req.body_read {
        Some(read) => {
            if !req.body.is_null() {
                set_last_error("fephp_request: set body or body_read, not both");
                return Err(fephp_result::InvalidArgument);
            }
            let reader = HostReader {
                read,
                ctx: req.body_read_ctx,
            };
            // SAFETY: the host keeps body_read callable until the completion is
            // delivered, and the completion releases the body first (`releasing`).
            let body = RequestBody::host(reader, req.body_len as u64, engine.temp_dir());
            (&[][..], Some(body))
        }
        None if req.body.is_null() || req.body_len == 0 => (&[][..], None),
        None => (std::slice::from_raw_parts(req.body, req.body_len), None),
    };
    Ok(Request {
        // A method that is not UTF-8 is no token either: passed on empty, it is
        // refused with 400 like any other.
        method: std::str::from_utf8(str_bytes(req.method)).unwrap_or(""),
        target: str_utf8(req.target, "target")?,
        protocol: str_utf8(req.protocol, "protocol")?,
        headers,
        body,
        body_reader,
        remote_addr: str_utf8(req.remote_addr, "remote_addr")?,
        remote_port: req.remote_port,
        local_addr: str_utf8(req.local_addr, "local_addr")?,
        local_port: req.local_port,
        tls: req.tls,
    })
}

/// The body of the exports that write a text of the current engine into the
/// caller's buffer.
///
/// # Safety
/// As for those exports: `engine` from `fephp_init`, `buf` writable for `cap`
/// bytes, `len_out` writable.
unsafe fn engine_text(
    engine: *const fephp_engine,
    buf: *mut c_char,
    cap: usize,
    len_out: *mut usize,
    text: impl FnOnce(&Engine) -> String,
) -> fephp_result {
    guard(|| {
        non_null!(engine, len_out);
        let e = engine_ref(engine);
        write_out(text(&e).as_bytes(), buf, cap, len_out)
    })
}

/// The library version, e.g. "0.1.0". Static storage; never free it.
#[no_mangle]
pub extern "C" fn fephp_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}

/// Creates an engine from exactly one of `config_path` (a TOML file) or
/// `config_toml` (TOML text); the other must be NULL. Both are NUL-terminated and
/// borrowed for the call.
///
/// On success `*engine_out` receives a new engine, owned by the caller until
/// `fephp_engine_free`. On `FEPHP_RESULT_CONFIG_ERROR`, `fephp_last_error` gives every
/// problem with its fix. Informational lines (the seed's `[i] …`) are available from
/// `fephp_engine_messages`.
///
/// Call it in the master process, before forking workers.
///
/// PHP starts once per process, with the first engine that uses the embedded
/// backend. A libphp that fails to load (a wrong `libphp_path`) is not
/// remembered: fix the configuration and call `fephp_init` again. Once PHP has
/// started, its `libphp_path` and `[php.ini]` hold for the life of the process.
///
/// Two engines in one process (e.g. two configurations, or a new one built
/// before the old is freed) are independent in their configuration, routes,
/// FastCGI pools, proxy connections and metrics, but share the process's one PHP
/// runtime and its one PHP thread: the same `libphp_path` and `[php.ini]` (another
/// gives `FEPHP_RESULT_CONFIG_ERROR` saying a restart is needed), and their PHP
/// requests run one at a time. Call `fephp_worker_start` for each. To change the
/// configuration of a running host, `fephp_engine_reload` is simpler.
#[no_mangle]
pub unsafe extern "C" fn fephp_init(
    config_path: *const c_char,
    config_toml: *const c_char,
    engine_out: *mut *const fephp_engine,
) -> fephp_result {
    guard(|| {
        non_null!(engine_out);
        let config = match read_config(config_path, config_toml, "fephp_init") {
            Ok(c) => c,
            Err(r) => return r,
        };
        match config.and_then(ReloadableEngine::new) {
            Ok(engine) => {
                *engine_out = Arc::into_raw(Arc::new(engine)) as *const fephp_engine;
                fephp_result::Ok
            }
            Err(e) => {
                set_last_error(e.to_string());
                fephp_result::ConfigError
            }
        }
    })
}

/// Releases the caller's reference to the engine. Responses already handed out
/// stay valid. NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn fephp_engine_free(engine: *const fephp_engine) {
    if engine.is_null() {
        return;
    }
    guard_value((), || {
        drop(Arc::from_raw(engine as *const ReloadableEngine))
    });
}

/// Replaces the engine's configuration with exactly one of `config_path` (a TOML
/// file) or `config_toml` (TOML text); the other must be NULL. Both are
/// NUL-terminated and borrowed for the call.
///
/// The new configuration is read, validated and built first; only then does it
/// take over, atomically: requests started after this returns use it, requests
/// already running finish on the old one, whose backends (FastCGI connections
/// included) close once the last of them is done. On `FEPHP_RESULT_CONFIG_ERROR`
/// nothing changes: the old configuration keeps serving and `fephp_last_error`
/// gives every problem. PHP's runtime is loaded once per process: a change of
/// `[php] libphp_path` or `[php.ini]` (with the embedded backend in use) gives
/// `FEPHP_RESULT_RESTART_REQUIRED` instead, also changing nothing; a host applies
/// it by starting a new process (fe-php-host re-executes itself, keeping its
/// listening sockets, and drains the old workers).
///
/// Thread-safe; any thread may call it while others run requests. Engine settings
/// the host read before (listen address, workers, access log, limits) are the new
/// ones from here on: the host decides what to do with them. In a forking host,
/// call it in the master and fork new workers (they start with the new
/// configuration), or in each worker (after `fephp_worker_start` there, the new
/// engine's threads start at once). Metrics carry over.
#[no_mangle]
pub unsafe extern "C" fn fephp_engine_reload(
    engine: *const fephp_engine,
    config_path: *const c_char,
    config_toml: *const c_char,
) -> fephp_result {
    guard(|| {
        non_null!(engine);
        let config = match read_config(config_path, config_toml, "fephp_engine_reload") {
            Ok(c) => c,
            Err(r) => return r,
        };
        let holder = holder_ref(engine);
        if let Ok(c) = &config {
            if let Some(why) = holder.restart_required(c) {
                holder.metrics().reloaded(false);
                set_last_error(why);
                return fephp_result::RestartRequired;
            }
        }
        let result = match config {
            Ok(c) => holder.reload(c),
            Err(e) => {
                holder.metrics().reloaded(false);
                Err(e)
            }
        };
        match result {
            Ok(()) => fephp_result::Ok,
            Err(e) => {
                set_last_error(e.to_string());
                fephp_result::ConfigError
            }
        }
    })
}

/// Writes the engine's metrics in Prometheus' text exposition format (version
/// 0.0.4; what `[backend] metrics_path` answers) into `buf`. The counters live in
/// memory shared by the processes forked after `fephp_init`, so any worker reports
/// the totals of all of them. The text grows between calls as new series appear:
/// leave room (e.g. 64 KiB) rather than sizing `buf` by a previous `*len_out`.
#[no_mangle]
pub unsafe extern "C" fn fephp_metrics(
    engine: *const fephp_engine,
    buf: *mut c_char,
    cap: usize,
    len_out: *mut usize,
) -> fephp_result {
    guard(|| {
        non_null!(engine, len_out);
        let text = holder_ref(engine).metrics().render();
        write_out(text.as_bytes(), buf, cap, len_out)
    })
}

/// For a forking host's master, when it reaps worker process `pid`: `signal` is
/// the signal that killed it unexpectedly (0 when it exited, or when the master
/// stopped it on purpose), `replaced` whether a new worker starts in its place.
/// Counts `fephp_worker_crashes_total` and `fephp_worker_restarts_total`, and
/// drops the worker's gauges (e.g. the requests it had in flight) at once.
#[no_mangle]
pub unsafe extern "C" fn fephp_metrics_worker_exited(
    engine: *const fephp_engine,
    pid: i32,
    signal: i32,
    replaced: bool,
) -> fephp_result {
    guard(|| {
        non_null!(engine);
        holder_ref(engine)
            .metrics()
            .worker_exited(pid, signal, replaced);
        fephp_result::Ok
    })
}

/// Per-worker start: call once in each worker process after fork and before its
/// first request. Starts what must not exist before a fork (the PHP thread, the
/// FastCGI and proxy threads).
///
/// It blocks SIGPROF in the calling thread, so that PHP's `max_execution_time`
/// timer (process-wide in NTS PHP) is delivered to the PHP thread, which unblocks
/// it for itself: call it from the thread that will create the host's other
/// threads (they inherit the mask). It is the only function that changes a host
/// thread's signal mask. A host that does not fork may skip it: the first request
/// that needs a thread starts it, leaving the calling thread's mask alone — then
/// block SIGPROF in the host's own threads, or PHP's time limit may interrupt one
/// of them instead of the script.
#[no_mangle]
pub unsafe extern "C" fn fephp_worker_start(engine: *const fephp_engine) -> fephp_result {
    guard(|| {
        non_null!(engine);
        match holder_ref(engine).worker_start() {
            Ok(()) => fephp_result::Ok,
            Err(e) => {
                set_last_error(e);
                fephp_result::BackendStartFailed
            }
        }
    })
}

/// Writes the configuration's informational lines (the seed's `[i] …` messages,
/// separated by newlines; empty when there are none) into `buf`.
#[no_mangle]
pub unsafe extern "C" fn fephp_engine_messages(
    engine: *const fephp_engine,
    buf: *mut c_char,
    cap: usize,
    len_out: *mut usize,
) -> fephp_result {
    engine_text(engine, buf, cap, len_out, |e| e.messages().join("\n"))
}

/// Writes `[server] listen` (e.g. "127.0.0.1:8080") into `buf`: for hosts that own
/// the listening socket.
#[no_mangle]
pub unsafe extern "C" fn fephp_engine_listen(
    engine: *const fephp_engine,
    buf: *mut c_char,
    cap: usize,
    len_out: *mut usize,
) -> fephp_result {
    engine_text(engine, buf, cap, len_out, |e| {
        e.config().server.listen.clone()
    })
}

/// Writes the directory for request bodies too large to keep in memory into `buf`:
/// PHP's `upload_tmp_dir` when `[php.ini]` sets it, else its `sys_temp_dir`, else
/// `$TMPDIR`, else `/tmp`. Hosts that spool bodies put them there (as files
/// without a name: `O_TMPFILE`, or unlinked at once).
#[no_mangle]
pub unsafe extern "C" fn fephp_engine_temp_dir(
    engine: *const fephp_engine,
    buf: *mut c_char,
    cap: usize,
    len_out: *mut usize,
) -> fephp_result {
    engine_text(engine, buf, cap, len_out, |e| {
        e.temp_dir().to_string_lossy().into_owned()
    })
}

/// Writes `[server] access_log` ("-" for stdout, "off", or a path) into `buf`.
#[no_mangle]
pub unsafe extern "C" fn fephp_engine_access_log(
    engine: *const fephp_engine,
    buf: *mut c_char,
    cap: usize,
    len_out: *mut usize,
) -> fephp_result {
    engine_text(engine, buf, cap, len_out, |e| {
        e.config().server.access_log.clone()
    })
}

/// Number of worker processes the host should run (`[server] workers`; 0 in the
/// file means one per CPU core).
#[no_mangle]
pub unsafe extern "C" fn fephp_engine_workers(
    engine: *const fephp_engine,
    workers_out: *mut u32,
) -> fephp_result {
    guard(|| {
        non_null!(engine, workers_out);
        *workers_out = engine_ref(engine).workers() as u32;
        fephp_result::Ok
    })
}

/// Writes `[server]`'s connection limits (timeouts, sizes, connections; the
/// defaults where the file sets none) into `*limits_out`. For hosts that own the
/// socket; an embedding server such as nginx keeps its own. The values change only
/// with `fephp_engine_reload`: read them once per worker, e.g. right after forking.
#[no_mangle]
pub unsafe extern "C" fn fephp_engine_server_limits(
    engine: *const fephp_engine,
    limits_out: *mut fephp_server_limits,
) -> fephp_result {
    guard(|| {
        non_null!(engine, limits_out);
        let e = engine_ref(engine);
        let s = &e.config().server;
        let ms = |d: crate::config::ConfigDuration| d.0.as_millis().min(u64::MAX as u128) as u64;
        *limits_out = fephp_server_limits {
            header_read_timeout_ms: ms(s.header_read_timeout),
            body_read_timeout_ms: ms(s.body_read_timeout),
            keepalive_timeout_ms: ms(s.keepalive_timeout),
            max_header_size: s.max_header_size.0,
            max_body_size: s.max_body_size.0,
            max_connections: s.max_connections.min(u32::MAX as usize) as u32,
        };
        fephp_result::Ok
    })
}

/// Writes `[server] send_timeout` in milliseconds to `*timeout_ms_out`: the longest
/// wait for the client to take more of a response; a host that owns the socket
/// closes the connection when it is exceeded (a streaming backend then learns the
/// client has gone). A function of its own, not a field of `fephp_server_limits`,
/// so that struct keeps its layout.
#[no_mangle]
pub unsafe extern "C" fn fephp_engine_send_timeout_ms(
    engine: *const fephp_engine,
    timeout_ms_out: *mut u64,
) -> fephp_result {
    guard(|| {
        non_null!(engine, timeout_ms_out);
        let e = engine_ref(engine);
        *timeout_ms_out = e
            .config()
            .server
            .send_timeout
            .0
            .as_millis()
            .min(u64::MAX as u128) as u64;
        fephp_result::Ok
    })
}

/// Writes `[server] user` into `buf`; "" when unset. A host that starts as root
/// binds its socket, then switches each worker process to this user (with
/// `fephp_engine_group`'s group) before `fephp_worker_start`.
#[no_mangle]
pub unsafe extern "C" fn fephp_engine_user(
    engine: *const fephp_engine,
    buf: *mut c_char,
    cap: usize,
    len_out: *mut usize,
) -> fephp_result {
    engine_text(engine, buf, cap, len_out, |e| {
        e.config().server.user.clone().unwrap_or_default()
    })
}

/// Writes `[server] group` into `buf`; "" when unset (then the workers take the
/// user's primary group).
#[no_mangle]
pub unsafe extern "C" fn fephp_engine_group(
    engine: *const fephp_engine,
    buf: *mut c_char,
    cap: usize,
    len_out: *mut usize,
) -> fephp_result {
    engine_text(engine, buf, cap, len_out, |e| {
        e.config().server.group.clone().unwrap_or_default()
    })
}

/// Whether a backend (a `fephp_backend` value) is available in this
/// configuration. For an unavailable one, `fephp_last_error` explains why. A value
/// this library does not know gives `FEPHP_RESULT_INVALID_ARGUMENT`. (The
/// parameter is a plain integer so that no value a caller passes is undefined
/// behaviour; it has the enum's size and passing.)
#[no_mangle]
pub unsafe extern "C" fn fephp_engine_backend_available(
    engine: *const fephp_engine,
    backend: u32,
    available_out: *mut bool,
) -> fephp_result {
    guard(|| {
        non_null!(engine, available_out);
        let kind = match backend {
            b if b == fephp_backend::Internal as u32 => {
                *available_out = true;
                return fephp_result::Ok;
            }
            b if b == fephp_backend::Embedded as u32 => BackendKind::Embedded,
            b if b == fephp_backend::Fastcgi as u32 => BackendKind::FastCgi,
            b if b == fephp_backend::Static as u32 => BackendKind::Static,
            b if b == fephp_backend::Proxy as u32 => BackendKind::Proxy,
            other => {
                set_last_error(format!("{other} is not a fephp_backend value"));
                return fephp_result::InvalidArgument;
            }
        };
        let e = engine_ref(engine);
        let a = e.availability(kind);
        if let crate::config::Availability::Unavailable(why) = a {
            set_last_error(why.clone());
        }
        *available_out = a.is_available();
        fephp_result::Ok
    })
}

/// Decides which backend serves `method` + `target` (the raw request-target)
/// without running the request. `FEPHP_RESULT_BAD_REQUEST` means the host should
/// answer 400 (`fephp_last_error` says why). For a rule that splits its traffic
/// (A/B testing) this is its arm with the largest weight (the first of equal
/// ones): without the request's cookies and address there is no arm to keep.
#[no_mangle]
pub unsafe extern "C" fn fephp_route(
    engine: *const fephp_engine,
    method: fephp_str,
    target: fephp_str,
    backend_out: *mut fephp_backend,
) -> fephp_result {
    guard(|| {
        non_null!(engine, backend_out);
        if !crate::http::head::is_token(str_bytes(method)) {
            set_last_error(crate::http::head::HeadError::MethodNotToken.to_string());
            return fephp_result::BadRequest;
        }
        let target = match str_utf8(target, "target") {
            Ok(t) => t,
            Err(_) => {
                set_last_error("request path is not valid UTF-8");
                return fephp_result::BadRequest;
            }
        };
        match engine_ref(engine).route(target) {
            Ok(Decision::Internal) => *backend_out = fephp_backend::Internal,
            Ok(Decision::Backend(route)) => {
                *backend_out = match route.backend {
                    BackendKind::Embedded => fephp_backend::Embedded,
                    BackendKind::FastCgi => fephp_backend::Fastcgi,
                    BackendKind::Static => fephp_backend::Static,
                    BackendKind::Proxy => fephp_backend::Proxy,
                }
            }
            Err(e) => {
                set_last_error(e.to_string());
                return fephp_result::BadRequest;
            }
        }
        fephp_result::Ok
    })
}

/// Wraps the completion of a request whose body the host serves through
/// `body_read`: before the host hears of the response, the body is released, so
/// the library never calls `body_read` after that (a backend still reading gets
/// the rest from a temporary file).
fn releasing(req: &Request<'_>, complete: MeteredCompletion) -> MeteredCompletion {
    match req.body_reader.clone() {
        None => complete,
        Some(body) => Box::new(move |resp, bytes| {
            body.release();
            complete(resp, bytes)
        }),
    }
}

/// Runs a request and waits until its status and headers are ready. The body may
/// still be streaming (see `fephp_response_body_kind`). Errors of the request
/// itself (400, 404, 502, …) are responses, not error codes.
///
/// `*response_out` receives a response owned by the caller (`fephp_response_free`).
/// Blocks the calling thread: event-loop hosts use `fephp_handle_request_async`.
#[no_mangle]
pub unsafe extern "C" fn fephp_handle_request(
    engine: *const fephp_engine,
    request: *const fephp_request,
    response_out: *mut *mut fephp_response,
) -> fephp_result {
    guard(|| {
        non_null!(engine, request, response_out);
        let engine = engine_ref(engine);
        let req = match request_view(&*request, &engine) {
            Ok(r) => r,
            Err(e) => return e,
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        engine.handle_async_metered(
            &req,
            releasing(
                &req,
                Box::new(move |resp, bytes| {
                    let _ = tx.send((resp, bytes));
                }),
            ),
        );
        let (resp, stream_bytes) = rx
            .recv()
            .unwrap_or_else(|_| (Response::error(500, None), None));
        *response_out = ResponseHandle::into_raw(resp, stream_bytes);
        fephp_result::Ok
    })
}

/// Starts a request and returns without waiting for it. `callback` is called
/// exactly once with the response (or an error): either on the calling thread
/// before this function returns (static files, errors, health without FastCGI or
/// proxy), or later on an engine thread — the process's PHP thread for an
/// embedded PHP request, the engine's FastCGI or proxy I/O thread for those
/// backends and for health when it probes PHP-FPM or the upstreams. `request` is
/// copied before this returns, except `body_read`, which must stay callable until
/// the callback has run (it is never called once the callback starts).
///
/// The callback must hand the response off and return: it must not block on the
/// engine. In particular, reading a STREAM body with the blocking
/// `fephp_response_body_read` inside the callback of a PHP request deadlocks:
/// the PHP thread running the callback is the one that would produce the body.
/// Nor may it call `fephp_handle_request` for a PHP request (it waits for the same
/// thread). `fephp_response_body_try_read` and `fephp_response_free` are fine.
///
/// Returns an error (and does not call `callback`) only for invalid arguments.
#[no_mangle]
pub unsafe extern "C" fn fephp_handle_request_async(
    engine: *const fephp_engine,
    request: *const fephp_request,
    callback: fephp_response_cb,
    userdata: *mut c_void,
) -> fephp_result {
    guard(|| {
        non_null!(engine, request);
        let Some(cb) = callback else {
            set_last_error("NULL passed for callback");
            return fephp_result::NullParameter;
        };
        let engine = engine_ref(engine);
        let req = match request_view(&*request, &engine) {
            Ok(r) => r,
            Err(e) => return e,
        };
        engine.handle_async_metered(&req, releasing(&req, completion(cb, UserData(userdata))));
        fephp_result::Ok
    })
}

/// For a host that has not read the request body yet — typically because the
/// client sent `Expect: 100-continue` and waits for `100 Continue` before sending
/// it. When the answer cannot depend on the body (a refused request: 400, 413
/// excepted, 431, 501; a static file; a PHP route's 404, redirect or non-PHP file;
/// health; an unavailable backend), this runs the request as
/// `fephp_handle_request_async` would, calls `callback` the same way and sets
/// `*answered_out` to true: send that answer instead of `100 Continue` (and close
/// the connection, or read and discard the body, before another request on it).
/// Otherwise — a PHP script or the proxy would run, or a split rule would choose
/// an arm — it does nothing, sets `*answered_out` to false and never calls
/// `callback`: read the body (sending `100 Continue`), then call
/// `fephp_handle_request_async` with it. `request`'s body fields are ignored.
///
/// Returns an error (and does not call `callback`) only for invalid arguments.
#[no_mangle]
pub unsafe extern "C" fn fephp_handle_request_before_body(
    engine: *const fephp_engine,
    request: *const fephp_request,
    callback: fephp_response_cb,
    userdata: *mut c_void,
    answered_out: *mut bool,
) -> fephp_result {
    guard(|| {
        non_null!(engine, request, answered_out);
        let Some(cb) = callback else {
            set_last_error("NULL passed for callback");
            return fephp_result::NullParameter;
        };
        let engine = engine_ref(engine);
        let req = match request_view(&*request, &engine) {
            Ok(r) => r,
            Err(e) => return e,
        };
        let ud = UserData(userdata);
        *answered_out = engine.handle_async_before_body(&req, releasing(&req, completion(cb, ud)));
        fephp_result::Ok
    })
}

/// The host's userdata, which it promises may be used from any thread.
struct UserData(*mut c_void);
// SAFETY: the host's promise above; the pointer is only handed back to its callback.
unsafe impl Send for UserData {}

/// A completion that hands the response to the host's callback `cb`.
fn completion(
    cb: unsafe extern "C" fn(*mut c_void, fephp_result, *mut fephp_response),
    ud: UserData,
) -> crate::engine::MeteredCompletion {
    Box::new(move |resp, stream_bytes| {
        let ud = ud;
        let handle = ResponseHandle::into_raw(resp, stream_bytes);
        // SAFETY: the host guarantees `cb` and `userdata` are valid until this
        // single call; it takes ownership of `handle`.
        unsafe { cb(ud.0, fephp_result::Ok, handle) }
    })
}

/// Writes the health document (the seed's JSON) into `buf` and the HTTP status
/// the host should answer with (200 healthy, 503 not) into `*status_out`.
#[no_mangle]
pub unsafe extern "C" fn fephp_health(
    engine: *const fephp_engine,
    buf: *mut c_char,
    cap: usize,
    len_out: *mut usize,
    status_out: *mut u16,
) -> fephp_result {
    guard(|| {
        non_null!(engine, len_out, status_out);
        let health = engine_ref(engine).health();
        let r = write_out(health.to_json().as_bytes(), buf, cap, len_out);
        if r == fephp_result::Ok {
            *status_out = health.http_status();
        }
        r
    })
}

/// Writes the message of the last failed call on this thread into `buf`.
#[no_mangle]
pub unsafe extern "C" fn fephp_last_error(
    buf: *mut c_char,
    cap: usize,
    len_out: *mut usize,
) -> fephp_result {
    guard(|| {
        non_null!(len_out);
        LAST_ERROR.with(|e| write_out(e.borrow().as_bytes(), buf, cap, len_out))
    })
}

/// Writes a short description of a result code (a `fephp_result` value) into
/// `buf`; a code this library does not know (e.g. from a newer header) is
/// described as such. (The parameter is a plain integer so that no value a caller
/// passes is undefined behaviour; it has the enum's size and passing.)
#[no_mangle]
pub unsafe extern "C" fn fephp_result_message(
    result: u32,
    buf: *mut c_char,
    cap: usize,
    len_out: *mut usize,
) -> fephp_result {
    guard(|| {
        non_null!(len_out);
        let Some(result) = fephp_result::ALL
            .iter()
            .copied()
            .find(|r| *r as u32 == result)
        else {
            let text = format!("unknown result code {result}");
            return write_out(text.as_bytes(), buf, cap, len_out);
        };
        let text = match result {
            fephp_result::Ok => "success",
            fephp_result::NullParameter => "a required pointer argument was NULL",
            fephp_result::InvalidArgument => "invalid argument",
            fephp_result::ConfigError => "invalid configuration",
            fephp_result::BadRequest => "bad request target",
            fephp_result::BufferTooSmall => "buffer too small",
            fephp_result::Again => "no data available yet",
            fephp_result::WrongBodyKind => "the response body is of another kind",
            fephp_result::UnknownLength => "the body length is not known in advance",
            fephp_result::OutOfRange => "index out of range",
            fephp_result::IoError => "I/O error",
            fephp_result::BodyFailed => "the backend failed while producing the body",
            fephp_result::BackendStartFailed => "a backend could not start in this process",
            fephp_result::RestartRequired => {
                "the new configuration changes PHP's runtime: restart the process to apply it"
            }
            fephp_result::Panic => "internal error",
        };
        write_out(text.as_bytes(), buf, cap, len_out)
    })
}

/// # Safety
/// `resp` must come from this library and not be freed.
unsafe fn handle_ref<'a>(resp: *const fephp_response) -> &'a ResponseHandle {
    &*(resp as *const ResponseHandle)
}

/// # Safety
/// As `handle_ref`, with no other reference alive.
unsafe fn handle_mut<'a>(resp: *mut fephp_response) -> &'a mut ResponseHandle {
    &mut *(resp as *mut ResponseHandle)
}

/// The HTTP status code (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn fephp_response_status(response: *const fephp_response) -> u16 {
    if response.is_null() {
        return 0;
    }
    guard_value(0, || handle_ref(response).resp.status)
}

/// Number of response headers (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn fephp_response_header_count(response: *const fephp_response) -> usize {
    if response.is_null() {
        return 0;
    }
    guard_value(0, || handle_ref(response).resp.headers.len())
}

/// Header `index` (0-based, in order; repeated names such as Set-Cookie are
/// separate entries). The strings point into the response and stay valid until
/// `fephp_response_free`.
#[no_mangle]
pub unsafe extern "C" fn fephp_response_header(
    response: *const fephp_response,
    index: usize,
    name_out: *mut fephp_str,
    value_out: *mut fephp_str,
) -> fephp_result {
    guard(|| {
        non_null!(response, name_out, value_out);
        let Some((n, v)) = handle_ref(response).resp.headers.get(index) else {
            return fephp_result::OutOfRange;
        };
        *name_out = fephp_str {
            ptr: n.as_ptr() as *const c_char,
            len: n.len(),
        };
        *value_out = fephp_str {
            ptr: v.as_ptr() as *const c_char,
            len: v.len(),
        };
        fephp_result::Ok
    })
}

/// How the body is delivered (EMPTY for NULL).
#[no_mangle]
pub unsafe extern "C" fn fephp_response_body_kind(
    response: *const fephp_response,
) -> fephp_body_kind {
    if response.is_null() {
        return fephp_body_kind::Empty;
    }
    guard_value(fephp_body_kind::Empty, || {
        match handle_ref(response).resp.body {
            Body::Empty => fephp_body_kind::Empty,
            Body::Bytes(_) => fephp_body_kind::Bytes,
            Body::File { .. } => fephp_body_kind::File,
            Body::Stream(_) => fephp_body_kind::Stream,
        }
    })
}

/// The body length when known in advance; `FEPHP_RESULT_UNKNOWN_LENGTH` for streams.
#[no_mangle]
pub unsafe extern "C" fn fephp_response_body_length(
    response: *const fephp_response,
    len_out: *mut u64,
) -> fephp_result {
    guard(|| {
        non_null!(response, len_out);
        match handle_ref(response).resp.body.len() {
            Some(n) => {
                *len_out = n;
                fephp_result::Ok
            }
            None => fephp_result::UnknownLength,
        }
    })
}

/// For a BYTES body: the bytes, valid until `fephp_response_free`.
#[no_mangle]
pub unsafe extern "C" fn fephp_response_body_bytes(
    response: *const fephp_response,
    ptr_out: *mut *const u8,
    len_out: *mut usize,
) -> fephp_result {
    guard(|| {
        non_null!(response, ptr_out, len_out);
        match &handle_ref(response).resp.body {
            Body::Bytes(b) => {
                *ptr_out = b.as_ptr();
                *len_out = b.len();
                fephp_result::Ok
            }
            _ => fephp_result::WrongBodyKind,
        }
    })
}

/// For a FILE body: send `*len_out` bytes of `*fd_out` from `*offset_out`
/// (sendfile/pread; do not move the descriptor's file position assumptions).
/// The descriptor belongs to the response and is closed by `fephp_response_free`;
/// `dup` it to keep it longer.
#[no_mangle]
pub unsafe extern "C" fn fephp_response_body_file(
    response: *const fephp_response,
    fd_out: *mut c_int,
    offset_out: *mut u64,
    len_out: *mut u64,
) -> fephp_result {
    guard(|| {
        non_null!(response, fd_out, offset_out, len_out);
        match &handle_ref(response).resp.body {
            Body::File { file, offset, len } => {
                *fd_out = file.as_raw_fd();
                *offset_out = *offset;
                *len_out = *len;
                fephp_result::Ok
            }
            _ => fephp_result::WrongBodyKind,
        }
    })
}

fn read_body(
    h: &mut ResponseHandle,
    out: &mut [u8],
    blocking: bool,
) -> Result<usize, fephp_result> {
    match &h.resp.body {
        Body::Empty => Ok(0),
        Body::Bytes(b) => {
            let start = (h.pos as usize).min(b.len());
            let n = (b.len() - start).min(out.len());
            out[..n].copy_from_slice(&b[start..start + n]);
            h.pos += n as u64;
            Ok(n)
        }
        Body::File { file, offset, len } => {
            let remaining = len.saturating_sub(h.pos);
            let want = (remaining.min(out.len() as u64)) as usize;
            if want == 0 {
                return Ok(0);
            }
            match file.read_at(&mut out[..want], offset + h.pos) {
                Ok(0) => {
                    set_last_error("file shrank while being sent");
                    Err(fephp_result::IoError)
                }
                Ok(n) => {
                    h.pos += n as u64;
                    Ok(n)
                }
                Err(e) => {
                    set_last_error(format!("reading response file: {e}"));
                    Err(fephp_result::IoError)
                }
            }
        }
        Body::Stream(s) => {
            let outcome = if blocking {
                s.read(out)
            } else {
                s.try_read(out)
            };
            match outcome {
                ReadOutcome::Data(n) => {
                    h.pos += n as u64;
                    if let Some(counter) = &h.stream_bytes {
                        counter.add(n);
                    }
                    Ok(n)
                }
                ReadOutcome::End => Ok(0),
                ReadOutcome::Again => Err(fephp_result::Again),
                ReadOutcome::Failed(e) => {
                    set_last_error(e);
                    Err(fephp_result::BodyFailed)
                }
            }
        }
    }
}

/// Copies the next body bytes into `buf`, for any body kind, blocking until some
/// are available. `*n_out` = 0 means the body is complete; so pass `cap` > 0 (with
/// `cap` 0 nothing is read and `*n_out` = 0 says nothing about the end). Never
/// call it for a STREAM body on the thread that produces it (inside a PHP
/// completion or a notify callback): it would wait for itself.
#[no_mangle]
pub unsafe extern "C" fn fephp_response_body_read(
    response: *mut fephp_response,
    buf: *mut u8,
    cap: usize,
    n_out: *mut usize,
) -> fephp_result {
    guard(|| {
        non_null!(response, buf, n_out);
        match read_body(
            handle_mut(response),
            std::slice::from_raw_parts_mut(buf, cap),
            true,
        ) {
            Ok(n) => {
                *n_out = n;
                fephp_result::Ok
            }
            Err(e) => e,
        }
    })
}

/// Like `fephp_response_body_read` but never blocks: `FEPHP_RESULT_AGAIN` when a
/// streamed body has nothing new yet (wait for the notify callback). `cap` must be
/// more than 0, as for `fephp_response_body_read`.
#[no_mangle]
pub unsafe extern "C" fn fephp_response_body_try_read(
    response: *mut fephp_response,
    buf: *mut u8,
    cap: usize,
    n_out: *mut usize,
) -> fephp_result {
    guard(|| {
        non_null!(response, buf, n_out);
        match read_body(
            handle_mut(response),
            std::slice::from_raw_parts_mut(buf, cap),
            false,
        ) {
            Ok(n) => {
                *n_out = n;
                fephp_result::Ok
            }
            Err(e) => e,
        }
    })
}

/// For a STREAM body: `callback(userdata)` runs whenever
/// `fephp_response_body_try_read` may make progress — on the thread producing the
/// body (the PHP thread for embedded PHP, the FastCGI or proxy I/O thread), or
/// once at once on the calling thread if it already can. It must not call back
/// into this response nor block; hand off to the host's loop (e.g. nginx
/// `ngx_notify`). `userdata` must stay valid until the response is freed.
#[no_mangle]
pub unsafe extern "C" fn fephp_response_set_body_notify(
    response: *mut fephp_response,
    callback: fephp_notify_cb,
    userdata: *mut c_void,
) -> fephp_result {
    guard(|| {
        non_null!(response);
        let Some(cb) = callback else {
            set_last_error("NULL passed for callback");
            return fephp_result::NullParameter;
        };
        let Body::Stream(s) = &handle_ref(response).resp.body else {
            return fephp_result::WrongBodyKind;
        };
        // The host promises userdata stays valid and callable from any thread.
        struct SendPtr(*mut c_void);
        unsafe impl Send for SendPtr {}
        unsafe impl Sync for SendPtr {}
        let ud = SendPtr(userdata);
        s.set_notify(Box::new(move || {
            let ud = &ud;
            // SAFETY: the host guarantees `cb` and `userdata` stay valid until the
            // response is freed, and dropping the stream unregisters this closure.
            unsafe { cb(ud.0) }
        }));
        fephp_result::Ok
    })
}

/// Frees a response (closing its file, telling a streaming backend the client
/// has gone). NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn fephp_response_free(response: *mut fephp_response) {
    if response.is_null() {
        return;
    }
    guard_value((), || drop(Box::from_raw(response as *mut ResponseHandle)));
}

mod log;
pub use log::*;

#[cfg(test)]
mod tests;
