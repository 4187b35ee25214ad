//! `[server.control]`: where the control API listens and who may use it. Off
//! unless the table is present; never reachable from the network by default: a
//! Unix socket protected by its file mode, or a loopback TCP address that
//! requires a bearer token read from a file (so the token is not in the
//! configuration that the API itself shows).

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Default `[server.control] socket_mode`: the starting user only.
pub const DEFAULT_SOCKET_MODE: &str = "0600";

/// `[server.control]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// A Unix socket path (relative: to the configuration file's directory).
    #[serde(default)]
    pub socket: Option<String>,
    /// The socket's file mode, octal ("0600"; "0660" lets the socket's group in).
    #[serde(default = "default_socket_mode")]
    pub socket_mode: String,
    /// A TCP address ("127.0.0.1:8081"); needs `token_file`.
    #[serde(default)]
    pub listen: Option<String>,
    /// A file whose content (surrounding whitespace removed) is the bearer token
    /// clients send (`Authorization: Bearer TOKEN`). Required with `listen`;
    /// with `socket`, required as well when set.
    #[serde(default)]
    pub token_file: Option<String>,
    /// Lets `listen` be an address other than loopback (e.g. behind a firewall
    /// on a private network). Off: a typo cannot expose the API.
    #[serde(default)]
    pub allow_remote: bool,
}

fn default_socket_mode() -> String {
    DEFAULT_SOCKET_MODE.to_owned()
}

/// Where the API listens, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Unix { path: PathBuf, mode: u32 },
    Tcp(SocketAddr),
}

/// `[server.control]` with its paths resolved and its token read.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub address: Address,
    pub token: Option<String>,
}

impl ControlConfig {
    /// What is wrong with the table, one message each (no file is read here).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match (&self.socket, &self.listen) {
            (None, None) => problems.push("[server.control] names no address: set socket = \"/run/fe-php/control.sock\" (a Unix socket, mode 0600), or listen = \"127.0.0.1:8081\" with token_file = \"/etc/fe-php/control.token\"; or remove [server.control] to turn the control API off.".to_owned()),
            (Some(_), Some(_)) => problems.push("[server.control] has both socket and listen: the control API listens on one of them; remove the other.".to_owned()),
            _ => {}
        }
        if let Some(listen) = &self.listen {
            match listen.parse::<SocketAddr>() {
                Err(_) => problems.push(format!(
                    "[server.control] listen = \"{}\" is not an IP address and port, e.g. \"127.0.0.1:8081\".",
                    listen.escape_debug()
                )),
                Ok(a) if !a.ip().is_loopback() && !self.allow_remote => problems.push(format!(
                    "[server.control] listen = \"{listen}\" is not a loopback address: the control API changes the configuration and restarts PHP, so it is not offered beyond this machine by default.\n    Use listen = \"127.0.0.1:{}\" (or socket = \"/run/fe-php/control.sock\"); if other machines must reach it, put it behind a firewall and set allow_remote = true.",
                    a.port()
                )),
                Ok(_) => {}
            }
            if self.token_file.is_none() {
                problems.push("[server.control] listen needs token_file: over TCP any local user could connect, so clients must send Authorization: Bearer TOKEN.\n    Put a long random token in a file readable by root only (e.g. head -c 32 /dev/urandom | base64 > /etc/fe-php/control.token; chmod 600 it) and set token_file to its path.".to_owned());
            }
        }
        if self.socket.is_some() {
            match parse_mode(&self.socket_mode) {
                None => problems.push(format!(
                    "[server.control] socket_mode = \"{}\" is not an octal file mode: use e.g. \"0600\" (the starting user only) or \"0660\" (its group too).",
                    self.socket_mode.escape_debug()
                )),
                Some(m) if m & 0o007 != 0 => problems.push(format!(
                    "[server.control] socket_mode = \"{}\" lets every user of this machine connect: use \"0600\" or \"0660\".",
                    self.socket_mode
                )),
                Some(_) => {}
            }
        }
        problems
    }

    /// Resolves the paths against `base` (the configuration file's directory)
    /// and reads the token file.
    pub fn load(&self, base: &Path) -> Result<Loaded, String> {
        let address = match (&self.socket, &self.listen) {
            (Some(s), _) => Address::Unix {
                path: base.join(s),
                mode: parse_mode(&self.socket_mode).unwrap_or(0o600),
            },
            (None, Some(l)) => Address::Tcp(
                l.parse()
                    .map_err(|_| format!("[server.control] listen = \"{l}\" is not an address"))?,
            ),
            (None, None) => return Err("[server.control] names no address".to_owned()),
        };
        let token = match &self.token_file {
            None => None,
            Some(f) => {
                let path = base.join(f);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    format!(
                        "[server.control] token_file {}: cannot read it: {e}\n    Create it with the token (e.g. head -c 32 /dev/urandom | base64 > {0}; chmod 600 {0}).",
                        path.display()
                    )
                })?;
                let token = text.trim().to_owned();
                if token.len() < 16 || token.bytes().any(|b| b <= b' ' || b == 0x7f) {
                    return Err(format!(
                        "[server.control] token_file {}: the token must be at least 16 visible characters without spaces (e.g. head -c 32 /dev/urandom | base64).",
                        path.display()
                    ));
                }
                Some(token)
            }
        };
        Ok(Loaded { address, token })
    }
}

/// "0600" → 0o600 (3 or 4 octal digits, permission bits only).
fn parse_mode(s: &str) -> Option<u32> {
    if !(3..=4).contains(&s.len()) {
        return None;
    }
    u32::from_str_radix(s, 8).ok().filter(|m| *m <= 0o777)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control(toml: &str) -> ControlConfig {
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn public_or_tokenless_tcp_is_refused() {
        let p = control("listen = \"0.0.0.0:8081\"\ntoken_file = \"t\"").problems();
        assert!(p[0].contains("is not a loopback address"), "{p:?}");
        let p = control("listen = \"0.0.0.0:8081\"\ntoken_file = \"t\"\nallow_remote = true")
            .problems();
        assert!(p.is_empty(), "{p:?}");
        let p = control("listen = \"127.0.0.1:8081\"").problems();
        assert!(p[0].contains("needs token_file"), "{p:?}");
        assert!(control("socket = \"c.sock\"").problems().is_empty());
        let p = control("socket = \"c.sock\"\nsocket_mode = \"0666\"").problems();
        assert!(p[0].contains("every user"), "{p:?}");
        assert!(!control("").problems().is_empty());
    }
}
