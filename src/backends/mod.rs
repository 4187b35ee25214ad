//! The backends a route can name. Each lives in its own module.

pub mod embedded;
pub mod static_files;

use crate::config::Built;

/// Which backends this build contains. FastCGI arrives in its own module; until
/// then validation reports it as "not built yet".
pub const BUILT: Built = Built {
    embedded: embedded::BUILT,
    fastcgi: false,
};
