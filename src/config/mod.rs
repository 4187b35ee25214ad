//! Settings: the TOML file as typed structs (serde), and the validation that decides
//! which backends are available. Runtime state lives elsewhere (`engine`).
//!
//! - `schema`: the sections and their defaults (what the file may say);
//! - `fpm`: PHP-FPM upstream groups (`[php] fpm_*`, `[php.fpm_pools.NAME]`);
//! - `values`: the value types with their own syntax (durations, sizes, addresses);
//! - `validate`: what the file means here — which backends are available, every
//!   problem with its fix, the seed's `[i]` lines.

mod fpm;
mod schema;
mod validate;
mod values;

pub use fpm::*;
pub use schema::*;
pub use validate::*;
pub use values::*;

use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// fe-php-host's section, not read by the library (see `HostSection`).
    pub server: HostSection,
    pub backend: BackendConfig,
    pub php: PhpConfig,
}

/// A configuration that cannot be used. `Display` gives every problem, one per
/// paragraph, each naming the cause and the fix.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problems.join("\n"))
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn one(msg: String) -> Self {
        ConfigError {
            problems: vec![msg],
        }
    }
}

impl Config {
    /// Parses TOML text. Unknown keys and wrong types are errors naming the key and line.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::one(format!("invalid configuration: {e}")))
    }

    /// Reads and parses a file; errors name the file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        Config::read_file(path).map(|(config, _)| config)
    }

    /// As `from_file`, also giving the file's text (what the configuration was
    /// read from, for a host that shows or edits it).
    pub fn read_file(path: &Path) -> Result<(Config, String), ConfigError> {
        let path = &absolute(path);
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::one(format!(
                "cannot read configuration file {}: {e}\n    Check the path given to --config (or fephp_init) and its permissions.",
                path.display()
            ))
        })?;
        Ok((Config::from_file_text(path, &text)?, text))
    }

    /// Parses `text` as the content of the file at `path` (read already, or about
    /// to be written there): errors name the file as `from_file`'s do.
    pub fn from_file_text(path: &Path, text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            ConfigError::one(format!(
                "invalid configuration file {}: {e}",
                absolute(path).display()
            ))
        })
    }
}

/// The directory the process was in when it first read a configuration; PHP
/// requests change the working directory later, so relative paths are taken
/// against this one.
static START_DIR: once_cell::sync::Lazy<PathBuf> =
    once_cell::sync::Lazy::new(|| std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")));

/// `path` made absolute against the start directory ("" stays empty).
pub fn absolute(path: &Path) -> PathBuf {
    if path.as_os_str().is_empty() || path.is_absolute() {
        path.to_owned()
    } else {
        START_DIR.join(path)
    }
}

#[cfg(test)]
mod tests;
