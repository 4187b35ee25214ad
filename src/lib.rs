//! fe-php: a hybrid PHP application server as a library.
//!
//! One engine routes each HTTP request (exact / prefix / suffix / regex rules with
//! priorities) to a backend: embedded libphp, FastCGI to PHP-FPM, or static files.
//! Hosts — `fe-php-host`, the nginx module, C and Go programs — use it through the
//! C ABI in [`ffi`]; Rust code and tests may use the engine directly.

pub mod backends;
pub mod body;
pub mod cgi;
pub mod config;
pub mod engine;
pub mod ffi;
pub mod health;
pub mod http;
pub mod metrics;
pub mod path;
pub mod request_body;
pub mod router;
pub mod split;

pub use config::{BackendKind, Config, ConfigError};
pub use engine::{Engine, ReloadableEngine};
