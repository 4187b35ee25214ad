//! The C ABI: the only surface hosts see. `include/fe_php.h` is generated from this
//! module (this file and the files it declares) by cbindgen.
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

// The files, by responsibility: `types` (what C sees) ← `boundary` (panic
// boundary, last error, pointer helpers) ← the exports in `engine`, `control`
// (what a host's control API asks), `request`, `response` and `log`.
mod boundary;
mod control;
mod engine;
mod log;
mod request;
mod response;
mod types;

pub use control::*;
pub use engine::*;
pub use log::*;
pub use request::*;
pub use response::*;
pub use types::*;

#[cfg(test)]
mod tests;
