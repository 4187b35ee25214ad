//! The backends a route can name. Each lives in its own module.

pub mod static_files;

use crate::config::Built;

/// Which backends this build contains. Embedded (libphp) and FastCGI arrive in
/// their own modules; until then validation reports them as "not built yet".
pub const BUILT: Built = Built {
    embedded: false,
    fastcgi: false,
};
