//! fe-php: a hybrid PHP application server as a library.
//!
//! One engine routes each HTTP request (exact / prefix / suffix / regex rules with
//! priorities) to a backend: embedded libphp, FastCGI to PHP-FPM, static files or an
//! HTTP upstream. Hosts — `fe-php-host`, the nginx module, C and Go programs — use it
//! through the C ABI in [`ffi`], the only public module. The library's own tests,
//! benchmarks and fuzz targets reach the rest with the `internals` feature.

// Modules public only with the `internals` feature (crate-private otherwise), so
// a host crate cannot compile a call past the C ABI. Written out, not generated
// by a macro: `cargo fmt` only reaches module files declared in plain code.
#[cfg(feature = "internals")]
pub mod backends;
#[cfg(not(feature = "internals"))]
mod backends;
#[cfg(feature = "internals")]
pub mod config;
#[cfg(not(feature = "internals"))]
mod config;
#[cfg(feature = "internals")]
pub mod engine;
#[cfg(not(feature = "internals"))]
mod engine;
#[cfg(feature = "internals")]
pub mod health;
#[cfg(not(feature = "internals"))]
mod health;
#[cfg(feature = "internals")]
pub mod http;
#[cfg(not(feature = "internals"))]
mod http;
#[cfg(feature = "internals")]
pub mod metrics;
#[cfg(not(feature = "internals"))]
mod metrics;
#[cfg(feature = "internals")]
pub mod routing;
#[cfg(not(feature = "internals"))]
mod routing;

pub mod ffi;

#[cfg(feature = "internals")]
pub use config::{BackendKind, Config, ConfigError};
#[cfg(feature = "internals")]
pub use engine::{Engine, ReloadableEngine};
