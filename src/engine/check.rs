//! A candidate configuration checked without building an engine from it: what
//! the control API of a host (and `fephp_config_check`) asks before it writes a
//! change to the configuration file. Nothing starts: no PHP runner pool, no
//! thread, no connection; the problems are those `fephp_init` would report for
//! the same text, with the same messages.

use crate::backends::BUILT;
use crate::config::{Config, ConfigError};
use crate::routing::router::Router;

/// Validates `config` (backends, rules, PHP settings) and builds its router, as
/// `Engine::new` does first. Ok: the informational lines (`[i] …`).
pub fn check(config: Config) -> Result<Vec<String>, ConfigError> {
    let validated = config.validate(BUILT)?;
    Router::new(
        &validated.config.backend.routing_rules,
        validated.default_backend,
    )
    .map_err(|msg| ConfigError {
        problems: vec![msg],
    })?;
    Ok(validated.messages)
}
