//! The backends a route can name. Each lives in its own module.

pub mod embedded;
pub mod fastcgi;
mod io_thread;
pub mod proxy;
pub mod static_files;

use crate::config::Built;

/// Which backends this build contains.
pub const BUILT: Built = Built {
    embedded: embedded::BUILT,
    fastcgi: fastcgi::BUILT,
};
