//! The C-visible types: result codes, enums, borrowed strings, the request, the
//! callback typedefs and the opaque handles.

use std::ffi::{c_char, c_void};

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
    pub(super) const ALL: [fephp_result; 15] = [
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

/// What a host knows of a request's TLS connection, for PHP's `SSL_PROTOCOL`,
/// `SSL_CIPHER` and `SSL_TLS_SNI` (mod_ssl's names; FastCGI gets them too).
/// Passed beside a `fephp_request` whose `tls` is true to the `_tls` variants of
/// the request functions. Borrowed for the duration of the call.
#[repr(C)]
pub struct fephp_tls_info {
    /// `sizeof(struct fephp_tls_info)` as the host compiled it: the library
    /// reads no field past it, so later versions may add fields at the end.
    pub size: usize,
    /// "TLSv1.3", "TLSv1.2"; empty when unknown.
    pub protocol: fephp_str,
    /// The cipher suite, e.g. "TLS_AES_128_GCM_SHA256"; empty when unknown.
    pub cipher: fephp_str,
    /// The server name the client sent (SNI); empty when none.
    pub server_name: fephp_str,
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
