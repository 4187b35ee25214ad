//! Handing requests to the engine: the blocking, asynchronous and
//! before-the-body entry points, and the completions that give the host its
//! response.

use super::boundary::{engine_ref, guard, non_null, set_last_error, str_bytes, str_utf8};
use super::response::ResponseHandle;
use super::types::{
    fephp_engine, fephp_request, fephp_response, fephp_response_cb, fephp_result, fephp_tls_info,
};
use crate::engine::{Engine, MeteredCompletion};
use crate::http::request_body::{HostReader, RequestBody};
use crate::http::{Request, Response};
use std::ffi::c_void;

/// Builds the engine's view of a request; a `body_read` body keeps what must
/// outlive the request in `engine`'s temporary directory.
///
/// # Safety
/// Every pointer in `req` must be valid as `fephp_request` documents.
pub(super) unsafe fn request_view<'a>(
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
        tls_protocol: "",
        tls_cipher: "",
        tls_server_name: "",
    })
}

/// Adds what `tls` tells of the connection to `req` (fields within its `size`).
///
/// # Safety
/// `tls` is NULL or valid as `fephp_tls_info` documents.
unsafe fn with_tls<'a>(
    mut req: Request<'a>,
    tls: *const fephp_tls_info,
) -> Result<Request<'a>, fephp_result> {
    let Some(info) = tls.as_ref() else {
        return Ok(req);
    };
    const WHOLE: usize = std::mem::size_of::<fephp_tls_info>();
    if info.size < std::mem::size_of::<usize>() + std::mem::size_of::<super::types::fephp_str>() {
        set_last_error("fephp_tls_info.size is too small: set it to sizeof(struct fephp_tls_info)");
        return Err(fephp_result::InvalidArgument);
    }
    // Fields past what the host's version of the struct has stay empty.
    let has = |end: usize| info.size.min(WHOLE) >= end;
    let field_end = |offset: usize| offset + std::mem::size_of::<super::types::fephp_str>();
    req.tls = true;
    if has(field_end(std::mem::offset_of!(fephp_tls_info, protocol))) {
        req.tls_protocol = str_utf8(info.protocol, "tls protocol")?;
    }
    if has(field_end(std::mem::offset_of!(fephp_tls_info, cipher))) {
        req.tls_cipher = str_utf8(info.cipher, "tls cipher")?;
    }
    if has(field_end(std::mem::offset_of!(fephp_tls_info, server_name))) {
        req.tls_server_name = str_utf8(info.server_name, "tls server_name")?;
    }
    Ok(req)
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
    fephp_handle_request_async_tls(engine, request, std::ptr::null(), callback, userdata)
}

/// `fephp_handle_request_async` for a request that came over TLS: `tls` (NULL:
/// none) tells its protocol, cipher suite and SNI name, which PHP sees as
/// `SSL_PROTOCOL`, `SSL_CIPHER` and `SSL_TLS_SNI` (and `HTTPS=on`, whatever
/// `request->tls` says). Since 1.3.0.
#[no_mangle]
pub unsafe extern "C" fn fephp_handle_request_async_tls(
    engine: *const fephp_engine,
    request: *const fephp_request,
    tls: *const fephp_tls_info,
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
        let req = match request_view(&*request, &engine).and_then(|r| with_tls(r, tls)) {
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
    fephp_handle_request_before_body_tls(
        engine,
        request,
        std::ptr::null(),
        callback,
        userdata,
        answered_out,
    )
}

/// `fephp_handle_request_before_body` for a request that came over TLS (see
/// `fephp_handle_request_async_tls`). Since 1.3.0.
#[no_mangle]
pub unsafe extern "C" fn fephp_handle_request_before_body_tls(
    engine: *const fephp_engine,
    request: *const fephp_request,
    tls: *const fephp_tls_info,
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
        let req = match request_view(&*request, &engine).and_then(|r| with_tls(r, tls)) {
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
