//! A response's status, headers and body, read by the host through its handle.

use super::boundary::{guard, guard_value, non_null, set_last_error};
use super::types::{fephp_body_kind, fephp_notify_cb, fephp_response, fephp_result, fephp_str};
use crate::http::body::ReadOutcome;
use crate::http::{Body, Response};
use crate::metrics::StreamBytes;
use std::ffi::{c_char, c_int, c_void};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

/// A response plus the read position of its body.
pub(super) struct ResponseHandle {
    resp: Response,
    pos: u64,
    /// Counts what is read of a streamed body (`fephp_response_bytes_total`).
    stream_bytes: Option<StreamBytes>,
}

impl ResponseHandle {
    pub(super) fn into_raw(
        resp: Response,
        stream_bytes: Option<StreamBytes>,
    ) -> *mut fephp_response {
        Box::into_raw(Box::new(ResponseHandle {
            resp,
            pos: 0,
            stream_bytes,
        })) as *mut fephp_response
    }
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
                ReadOutcome::End => {
                    if let Some(counter) = &h.stream_bytes {
                        counter.ended();
                    }
                    Ok(0)
                }
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
