//! The engine's life and what it tells about itself: version, init, reload,
//! worker start, messages, metrics, health, routing decisions, result codes and
//! the last error.

use super::boundary::{
    engine_ref, guard, guard_value, holder_ref, non_null, set_last_error, str_bytes, str_utf8,
    with_last_error, write_out,
};
use super::types::{fephp_backend, fephp_engine, fephp_result, fephp_str};
use crate::config::{BackendKind, Config};
use crate::engine::{Decision, Engine, ReloadableEngine};
use std::ffi::{c_char, c_int, CStr};
use std::path::Path;
use std::sync::Arc;

/// A configuration read for an engine, with the document it was read from (the
/// running configuration that `fephp_engine_config_json` shows).
pub(super) type Read = Result<(Config, toml::Table), crate::config::ConfigError>;

/// Reads exactly one of a config file path and TOML text (`what` names the caller
/// in the error).
///
/// # Safety
/// Each pointer is NULL or a NUL-terminated string.
unsafe fn read_config(
    config_path: *const c_char,
    config_toml: *const c_char,
    what: &str,
) -> Result<Read, fephp_result> {
    // The configuration parsed, the document parsed again as a plain table: it
    // cannot fail once the configuration did.
    let with_source = |text: &str, config: Config| (config, text.parse().unwrap_or_default());
    match (config_path.is_null(), config_toml.is_null()) {
        (false, true) => {
            let Ok(p) = CStr::from_ptr(config_path).to_str() else {
                set_last_error("config_path is not valid UTF-8");
                return Err(fephp_result::InvalidArgument);
            };
            Ok(Config::read_file(Path::new(p)).map(|(c, text)| with_source(&text, c)))
        }
        (true, false) => {
            let Ok(t) = CStr::from_ptr(config_toml).to_str() else {
                set_last_error("config_toml is not valid UTF-8");
                return Err(fephp_result::InvalidArgument);
            };
            Ok(Config::from_toml(t).map(|c| with_source(t, c)))
        }
        _ => {
            set_last_error(format!(
                "{what}: pass exactly one of config_path and config_toml"
            ));
            Err(fephp_result::InvalidArgument)
        }
    }
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

/// The library version, e.g. "1.0.0". Static storage; never free it.
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
/// `fephp_engine_messages`. The file's `[server]` table belongs to the host that
/// owns the socket (fe-php-host reads it itself): the engine accepts it and reads
/// nothing of it, but the whole file must be valid TOML.
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
        let built = config.and_then(|(c, source)| {
            let engine = ReloadableEngine::new(c)?;
            engine.set_source(source);
            Ok(engine)
        });
        match built {
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
/// Thread-safe; any thread may call it while others run requests. What the engine
/// reports about itself (`fephp_engine_messages`, `fephp_engine_temp_dir`,
/// `fephp_engine_backend_available`) is the new configuration's from here on; a
/// host's own settings (such as fe-php-host's `[server]`) are the host's to
/// re-read. In a forking host,
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
        if let Ok((c, _)) = &config {
            if let Some(why) = holder.restart_required(c) {
                holder.metrics().reloaded(false);
                set_last_error(why);
                return fephp_result::RestartRequired;
            }
        }
        let result = match config {
            Ok((c, source)) => holder.reload_from(c, Some(source)),
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

/// Restarts the workers of worker pool `pool_name` (`[php.pools.NAME]` with a
/// `worker` script; "default" is `[php.pool]`), or of every worker pool when
/// `pool_name` is NULL. Each worker finishes the request it is handling, its
/// script's `frankenphp_handle_request()` returns false, and a new runner boots
/// the script again: no request is dropped (requests wait in the pool's queue
/// meanwhile). A reload (`fephp_engine_reload`) does this by itself for the
/// workers whose loaded files changed. Returns `FEPHP_INVALID_ARGUMENT` (with
/// `fephp_last_error`) when there is no such worker pool. Any process of the host
/// may call it.
#[no_mangle]
pub unsafe extern "C" fn fephp_engine_restart_workers(
    engine: *const fephp_engine,
    pool_name: *const c_char,
) -> fephp_result {
    guard(|| {
        non_null!(engine);
        let name = if pool_name.is_null() {
            None
        } else {
            match CStr::from_ptr(pool_name).to_str() {
                Ok(n) => Some(n),
                Err(_) => {
                    set_last_error("pool_name is not UTF-8".to_owned());
                    return fephp_result::InvalidArgument;
                }
            }
        };
        match crate::backends::embedded::restart_workers(name) {
            Ok(_) => fephp_result::Ok,
            Err(e) => {
                set_last_error(e);
                fephp_result::InvalidArgument
            }
        }
    })
}

/// Lets the calling host receive PHP's responses on its own event loop instead of
/// a library thread: call once per worker process, after `fephp_worker_start`.
/// `*fd_out` receives a descriptor to watch for readability (level or edge
/// triggered), or -1 when PHP does not run in the runner pool here (nothing to
/// do then). From this call on, only `fephp_engine_process_events` receives
/// responses in this process: call it whenever the descriptor is readable (and
/// it may be called at any time). Completions of embedded PHP then run inside
/// that call, on the calling thread. The descriptor belongs to the library: do
/// not close it. This saves a thread switch per PHP request; hosts that do not
/// call it get their completions on a library thread.
#[no_mangle]
pub unsafe extern "C" fn fephp_engine_event_fd(
    engine: *const fephp_engine,
    fd_out: *mut c_int,
) -> fephp_result {
    guard(|| {
        non_null!(engine, fd_out);
        *fd_out = -1;
        match crate::backends::embedded::pool_event_fd() {
            None => fephp_result::Ok,
            Some(Ok(fd)) => {
                *fd_out = fd;
                fephp_result::Ok
            }
            Some(Err(e)) => {
                set_last_error(e);
                fephp_result::BackendStartFailed
            }
        }
    })
}

/// Completes the embedded PHP responses that have arrived (see
/// `fephp_engine_event_fd`), running their completions on the calling thread,
/// and returns when none is left. Never blocks.
#[no_mangle]
pub unsafe extern "C" fn fephp_engine_process_events(engine: *const fephp_engine) -> fephp_result {
    guard(|| {
        non_null!(engine);
        match crate::backends::embedded::pool_process_events() {
            Ok(()) => fephp_result::Ok,
            Err(e) => {
                set_last_error(format!("receiving PHP responses failed: {e}"));
                fephp_result::IoError
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
        with_last_error(|e| write_out(e.as_bytes(), buf, cap, len_out))
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
