//! `[server]`: fe-php-host's own section of the configuration file (listen
//! address, workers, access log, connection limits, user). The host reads it from
//! the same file it hands to `fephp_init`; the library accepts the table and reads
//! nothing of it, and the other sections are the library's. Durations and sizes
//! are written as everywhere in the file (`"5s"`, `"64M"`: `fe-php-units`).

use fe_php_units::{ConfigDuration, ConfigSize};
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// Default `[server] listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default `[server] max_header_size`: more than the largest header php-fpm takes
/// (64 KiB, one FastCGI record), so any header PHP can receive gets through.
pub const DEFAULT_MAX_HEADER_SIZE: u64 = 128 << 10;
/// Accepted range of `[server] max_header_size` (the top is the engine's own
/// limit, which it applies whatever the host let through).
pub const MAX_HEADER_SIZE_RANGE: std::ops::RangeInclusive<u64> = (1 << 10)..=(1 << 20);
/// Default `[server] max_body_size`.
pub const DEFAULT_MAX_BODY_SIZE: u64 = 64 << 20;
/// Default `[server] max_connections` (per worker process).
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Upper bound of `[server] max_connections`.
pub const MAX_MAX_CONNECTIONS: usize = 1_000_000;

/// `[server]`. `deny_unknown_fields`, so a misspelt key is an error naming it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Worker processes; 0 means one per CPU core.
    pub workers: usize,
    pub listen: String,
    /// Access log in combined log format: "-" (stdout), "off", or a file path.
    pub access_log: String,
    /// Longest time to receive a request's head, counted from its first byte (from
    /// the connection's start for the first request); exceeded → 408 and close.
    pub header_read_timeout: ConfigDuration,
    /// Longest wait between two reads of a request body (nginx's
    /// `client_body_timeout`); exceeded → 408 and close.
    pub body_read_timeout: ConfigDuration,
    /// How long an idle keep-alive connection waits for its next request.
    pub keepalive_timeout: ConfigDuration,
    /// Longest wait for a client to take more of a response (nginx's
    /// `send_timeout`); exceeded → the connection closes, and a PHP script still
    /// writing to it ends as when the client leaves.
    pub send_timeout: ConfigDuration,
    /// Largest request head (request line and headers); larger → 431.
    pub max_header_size: ConfigSize,
    /// Largest request body; larger → 413.
    pub max_body_size: ConfigSize,
    /// Connections one worker process serves at once; at the limit it stops accepting
    /// and its listening socket's backlog holds new connections.
    pub max_connections: usize,
    /// User the worker processes run as: the master starts as root, binds the
    /// socket, and workers drop to this user before serving. Unset: no change.
    pub user: Option<String>,
    /// Group of the workers; unset: the user's primary group. Needs `user`.
    pub group: Option<String>,
    /// Plain listener only: HTTP/2 by prior knowledge (h2c) beside HTTP/1.1,
    /// for a proxy in front that speaks it.
    pub h2c: bool,
    /// `[server.tls]`: the listener speaks TLS.
    pub tls: Option<crate::tls::TlsConfig>,
    /// `[server.control]`: the control API (off when absent).
    pub control: Option<crate::control::ControlConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            workers: 0,
            listen: DEFAULT_LISTEN.to_owned(),
            access_log: "-".to_owned(),
            header_read_timeout: ConfigDuration(Duration::from_secs(10)),
            body_read_timeout: ConfigDuration(Duration::from_secs(60)),
            keepalive_timeout: ConfigDuration(Duration::from_secs(75)),
            send_timeout: ConfigDuration(Duration::from_secs(60)),
            max_header_size: ConfigSize(DEFAULT_MAX_HEADER_SIZE),
            max_body_size: ConfigSize(DEFAULT_MAX_BODY_SIZE),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            user: None,
            group: None,
            h2c: false,
            tls: None,
            control: None,
        }
    }
}

/// The file as the host reads it: `[server]` only (the other sections are the
/// library's, checked by `fephp_init`).
#[derive(Deserialize, Default)]
#[serde(default)]
struct HostFile {
    server: ServerConfig,
}

/// Why `[server]` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The file cannot be read or is not TOML. `fephp_init` reads the same file
    /// and says the same, so the host need not repeat it.
    Unreadable(String),
    /// `[server]` has the wrong keys or types, or values out of range: every
    /// problem, one message each, with its fix.
    Invalid(Vec<String>),
}

impl Refused {
    /// The messages to print, one per line.
    pub fn message(&self) -> String {
        match self {
            Refused::Unreadable(m) => m.clone(),
            Refused::Invalid(problems) => problems.join("\n"),
        }
    }
}

impl ServerConfig {
    /// Reads `[server]` from the configuration file at `path`; messages name the
    /// file as `fephp_init`'s do.
    pub fn from_file(path: &str) -> Result<ServerConfig, Refused> {
        let path = std::path::absolute(Path::new(path)).unwrap_or_else(|_| path.into());
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Refused::Unreadable(format!(
                "cannot read configuration file {}: {e}",
                path.display()
            ))
        })?;
        ServerConfig::from_toml(&text, &format!("file {}", path.display()))
    }

    /// Parses and validates `[server]` of `text`; `source` names it in messages
    /// ("file /etc/fe-php.toml").
    pub fn from_toml(text: &str, source: &str) -> Result<ServerConfig, Refused> {
        if let Err(e) = text.parse::<toml::Table>() {
            return Err(Refused::Unreadable(format!(
                "invalid configuration {source}: {e}"
            )));
        }
        let file: HostFile = toml::from_str(text)
            .map_err(|e| Refused::Invalid(vec![format!("invalid configuration {source}: {e}")]))?;
        let problems = file.server.problems();
        if problems.is_empty() {
            Ok(file.server)
        } else {
            Err(Refused::Invalid(problems))
        }
    }

    /// What is wrong with the `[server]` limits and identity, one message each.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !MAX_HEADER_SIZE_RANGE.contains(&self.max_header_size.0) {
            problems.push(format!(
                "[server] max_header_size = {} is out of range: use \"1K\" to \"1M\".\n    It bounds the request line and headers together; the default is \"128K\".",
                self.max_header_size
            ));
        }
        if self.max_body_size.0 == 0 {
            problems.push("[server] max_body_size = 0 is out of range: use at least 1 byte, e.g. \"64M\".\n    Bodies are held in memory before the backend runs, so there is no \"unlimited\".".to_owned());
        }
        if self.max_connections == 0 || self.max_connections > MAX_MAX_CONNECTIONS {
            problems.push(format!(
                "[server] max_connections = {} is out of range: use 1 to {MAX_MAX_CONNECTIONS}.\n    It bounds the connections each worker process serves at once.",
                self.max_connections
            ));
        }
        for (key, value) in [("user", &self.user), ("group", &self.group)] {
            if let Some(name) = value {
                if name.is_empty() || name.bytes().any(|b| b <= b' ' || b == b':' || b == 0x7f) {
                    problems.push(format!(
                        "[server] {key} \"{}\" is not a {key} name.\n    Name an existing {key}, e.g. {key} = \"www-data\", or remove the key.",
                        name.escape_debug()
                    ));
                }
            }
        }
        if let Some(tls) = &self.tls {
            problems.extend(tls.problems());
            if self.h2c {
                problems.push("[server] h2c is for a plain listener, and [server.tls] makes it TLS (which offers HTTP/2 by ALPN): remove h2c.".to_owned());
            }
        }
        if let Some(control) = &self.control {
            problems.extend(control.problems());
        }
        if self.group.is_some() && self.user.is_none() {
            problems.push("[server] group is set without [server] user.\n    Workers change their group together with their user: add user = \"www-data\" (group defaults to the user's own).".to_owned());
        }
        problems
    }

    /// Worker processes to run: `workers`, 0 meaning one per CPU core.
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            n => n,
        }
    }
}

#[cfg(test)]
mod tests;
