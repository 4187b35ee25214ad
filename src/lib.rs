//! fe-php: a hybrid PHP application server as a library.
//!
//! One engine routes each HTTP request (exact / prefix / suffix / regex rules with
//! priorities) to a backend: embedded libphp, FastCGI to PHP-FPM, static files or an
//! HTTP upstream. Hosts — `fe-php-host`, the nginx module, C and Go programs — use it
//! through the C ABI in [`ffi`], the only public module. The library's own tests,
//! benchmarks and fuzz targets reach the rest with the `internals` feature.

/// Modules public only with the `internals` feature (crate-private otherwise), so
/// a host crate cannot compile a call past the C ABI.
macro_rules! internal {
    ($($name:ident),* $(,)?) => {
        $(
            #[cfg(feature = "internals")]
            pub mod $name;
            #[cfg(not(feature = "internals"))]
            mod $name;
        )*
    };
}

internal!(backends, config, engine, health, http, metrics, routing);

pub mod ffi;

#[cfg(feature = "internals")]
pub use config::{BackendKind, Config, ConfigError};
#[cfg(feature = "internals")]
pub use engine::{Engine, ReloadableEngine};
