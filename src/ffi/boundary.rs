//! The panic boundary every export runs in, the calling thread's last error, and
//! the helpers that turn the C side's pointers into Rust values.

use super::types::{fephp_engine, fephp_result, fephp_str};
use crate::engine::{Engine, ReloadableEngine};
use std::cell::RefCell;
use std::ffi::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

pub(super) fn set_last_error(msg: impl Into<String>) {
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
pub(super) fn guard(f: impl FnOnce() -> fephp_result) -> fephp_result {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            set_last_error(panic_message(&*p));
            fephp_result::Panic
        }
    }
}

/// Runs `f` inside the panic boundary, returning `fallback` on panic.
pub(super) fn guard_value<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        set_last_error(panic_message(&*p));
        fallback
    })
}

/// Returns `FEPHP_RESULT_NULL_PARAMETER` (with the last error naming it) from the
/// enclosing function when any of the pointers is NULL.
macro_rules! non_null {
    ($($p:expr),+) => {
        $(if $p.is_null() {
            $crate::ffi::boundary::set_last_error(concat!("NULL passed for ", stringify!($p)));
            return $crate::ffi::types::fephp_result::NullParameter;
        })+
    };
}
pub(super) use non_null;

/// # Safety
/// `s.ptr` must point to `s.len` readable bytes (or be NULL with len 0).
pub(super) unsafe fn str_bytes<'a>(s: fephp_str) -> &'a [u8] {
    if s.ptr.is_null() || s.len == 0 {
        &[]
    } else {
        std::slice::from_raw_parts(s.ptr as *const u8, s.len)
    }
}

/// # Safety
/// As `str_bytes`.
pub(super) unsafe fn str_utf8<'a>(s: fephp_str, what: &str) -> Result<&'a str, fephp_result> {
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
pub(super) unsafe fn write_out(
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
pub(super) unsafe fn holder_ref<'a>(engine: *const fephp_engine) -> &'a ReloadableEngine {
    &*(engine as *const ReloadableEngine)
}

/// The current engine. A call works on the one it took, whatever a concurrent
/// reload does; bind it (`let e = engine_ref(engine);`) to borrow from it.
///
/// # Safety
/// As `holder_ref`.
pub(super) unsafe fn engine_ref(engine: *const fephp_engine) -> Arc<Engine> {
    holder_ref(engine).current()
}

/// Runs `f` with the message of the last failed call on this thread.
pub(super) fn with_last_error<T>(f: impl FnOnce(&str) -> T) -> T {
    LAST_ERROR.with(|e| f(&e.borrow()))
}
