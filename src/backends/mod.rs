//! The backends a route can name. Each lives in its own module.

pub mod embedded;
pub mod fastcgi;
pub mod static_files;

use crate::config::Built;

/// Which backends this build contains.
pub const BUILT: Built = Built {
    embedded: embedded::BUILT,
    fastcgi: fastcgi::BUILT,
};
