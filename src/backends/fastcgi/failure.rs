//! Why a request to PHP-FPM failed: the status and short page the client gets,
//! and the log line that says what to check (in the tone of the design's
//! troubleshooting section).

use super::{Settings, Upstream};
use crate::http::Response;
use std::io;
use std::time::Duration;

/// Why a connection to PHP-FPM could not be made.
pub enum ConnectError {
    Io(io::Error),
    Timeout,
}

/// Why a request to PHP-FPM failed: the status and short page the client gets,
/// and the log line that says what to check.
#[derive(Debug)]
pub struct Failure {
    pub status: u16,
    /// One line for the error page.
    pub hint: String,
    /// What happened and what to check; `None` when there is nothing to log.
    pub log: Option<String>,
    /// A stale kept-alive connection's symptoms (reset, EPIPE, EOF before any
    /// response byte): the request may go again on a fresh connection.
    pub stale: bool,
    /// The upstream failed (refused, reset, timed out, spoke nonsense): it counts
    /// towards `max_fails`. Not for the client's, the script's or our own faults.
    pub upstream_fault: bool,
    /// Not one byte of the request reached the upstream (it could not connect, or
    /// the first write failed): the request may go to the next upstream.
    pub unsent: bool,
}

/// The usual reason every php-fpm child is taken.
const HELD: &str = "every pm.max_children busy, or held by idle kept-alive connections (keep workers × fpm_max_connections ≤ pm.max_children)";

const CHECK_LOG: &str = "check PHP-FPM's error log (e.g. /var/log/php8.2-fpm.log) for a crashed child or request_terminate_timeout";

impl Failure {
    pub fn new(status: u16, hint: &str, log: String) -> Failure {
        Failure {
            status,
            hint: hint.to_owned(),
            log: Some(log),
            stale: false,
            upstream_fault: false,
            unsent: false,
        }
    }

    /// The same, counting against the upstream.
    fn fault(status: u16, hint: &str, log: String) -> Failure {
        Failure {
            upstream_fault: true,
            ..Failure::new(status, hint, log)
        }
    }

    pub fn bad_response(detail: String) -> Failure {
        Failure::new(
            502,
            "PHP sent an invalid response.",
            format!("invalid CGI response from PHP: {detail}"),
        )
    }

    pub fn bad_protocol(detail: String) -> Failure {
        Failure::fault(
            502,
            "PHP-FPM sent an invalid FastCGI response.",
            format!("invalid FastCGI response: {detail}: is [php] fpm_socket really PHP-FPM's FastCGI socket (its pool's `listen =`), not an HTTP port?"),
        )
    }

    pub fn refused(status_name: &str) -> Failure {
        Failure::fault(
            502,
            "PHP-FPM refused the request.",
            format!("PHP-FPM ended the request with {status_name}: check its pool configuration and error log"),
        )
    }

    pub fn client_gone() -> Failure {
        Failure::abandoned("the client closed the connection")
    }

    /// The response has been answered already; the exchange stops here.
    pub fn abandoned(why: &str) -> Failure {
        Failure {
            status: 502,
            hint: why.to_owned(),
            log: None,
            stale: false,
            upstream_fault: false,
            unsent: false,
        }
    }

    pub fn eof(received: bool) -> Failure {
        Failure {
            stale: !received,
            ..Failure::fault(
                502,
                "PHP-FPM closed the connection before the response ended.",
                format!("PHP-FPM closed the connection before END_REQUEST: {CHECK_LOG}"),
            )
        }
    }

    pub fn io(e: io::Error, received: bool) -> Failure {
        use io::ErrorKind::*;
        let stale =
            !received && matches!(e.kind(), ConnectionReset | BrokenPipe | ConnectionAborted);
        Failure {
            stale,
            ..Failure::fault(
                502,
                "The connection to PHP-FPM failed.",
                format!("the connection to PHP-FPM failed: {e}: {CHECK_LOG}"),
            )
        }
    }

    pub fn read_timeout(t: Duration) -> Failure {
        Failure::fault(
            504,
            "PHP-FPM did not answer in time.",
            format!("PHP-FPM sent nothing for {} ([php] fpm_read_timeout): the script runs longer than that (raise fpm_read_timeout, or find it with php-fpm's request_slowlog_timeout), or no child took the request: {HELD}", show(t)),
        )
    }

    pub fn pool_busy(max_connections: usize, waited: Duration) -> Failure {
        Failure::new(
            504,
            "PHP-FPM is busy.",
            format!("all {max_connections} connections to PHP-FPM ([php] fpm_max_connections, per worker process) stayed busy for {} ([php] fpm_read_timeout): raise pm.max_children and fpm_max_connections together, or find the slow scripts", show(waited)),
        )
    }

    /// The host's request body could not be read (its `body_read` failed or
    /// ended early): PHP-FPM must not run the script on part of it.
    pub fn request_body(e: io::Error) -> Failure {
        Failure::new(
            500,
            "The request body could not be read.",
            format!(
                "reading the request body for PHP-FPM failed: {e}; the request was not completed"
            ),
        )
    }

    pub fn send_timeout(t: Duration) -> Failure {
        Failure::fault(
            504,
            "PHP-FPM did not take the request in time.",
            format!("PHP-FPM read nothing of the request for {} ([php] fpm_send_timeout): no child took it: {HELD}; php-fpm's status page (pm.status_path) shows its children", show(t)),
        )
    }

    /// Connecting to upstream `u` failed; the request was not sent.
    pub fn connect(e: ConnectError, s: &Settings, u: &Upstream) -> Failure {
        let f = Failure::connect_only(e, s, u);
        Failure { unsent: true, ..f }
    }

    fn connect_only(e: ConnectError, s: &Settings, u: &Upstream) -> Failure {
        let running = format!(
            "PHP-FPM is not running or {} is wrong: check `ps aux | grep php-fpm` and {} (it must match the pool's `listen =`)",
            s.address_key(),
            s.where_is(u)
        );
        match e {
            ConnectError::Timeout => Failure::fault(
                504,
                "PHP-FPM did not accept the connection in time.",
                format!("connecting to PHP-FPM at {} took longer than {} ({}): is the host reachable? Or php-fpm's listen queue is full: {HELD}", u.shown, show(s.timeouts.connect), s.group.full_key("connect_timeout")),
            ),
            ConnectError::Io(e) if crate::backends::exhaustion(&e).is_some() => Failure::new(
                503,
                "No connection to PHP-FPM could be opened.",
                format!(
                    "cannot connect to PHP-FPM at {}: {}",
                    u.shown,
                    crate::backends::exhaustion(&e).unwrap_or_default()
                ),
            ),
            ConnectError::Io(e) => {
                let why = match e.kind() {
                    io::ErrorKind::ConnectionRefused => format!("connection refused: {running}"),
                    io::ErrorKind::NotFound => format!("the socket does not exist: {running}"),
                    io::ErrorKind::PermissionDenied => "permission denied: let fe-php's user use the socket (listen.owner, listen.group and listen.mode in the pool configuration)".to_owned(),
                    _ => format!("{e}: {running}"),
                };
                Failure::fault(
                    502,
                    "PHP-FPM is not reachable.",
                    format!("cannot connect to PHP-FPM at {}: {why}", u.shown),
                )
            }
        }
    }

    /// The log line as a named pool's keys are spelt: messages name `[php]
    /// fpm_read_timeout` and the like, which in `[php.fpm_pools.NAME]` is
    /// `read_timeout`.
    pub fn for_group(mut self, group: &crate::config::FpmGroup) -> Failure {
        if !group.is_default() {
            if let Some(log) = &mut self.log {
                *log = log.replace("[php] fpm_", &format!("{} ", group.section()));
            }
        }
        self
    }

    /// The error page.
    pub fn response(&self) -> Response {
        Response::error(self.status, Some(&self.hint))
    }
}

/// "5s", "500ms".
pub fn show(d: Duration) -> String {
    crate::config::ConfigDuration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PhpConfig;

    fn settings() -> Settings {
        let php = PhpConfig {
            fpm_socket: "127.0.0.1:9000".to_owned(),
            ..PhpConfig::default()
        };
        let fcgi = super::super::FastCgi::new(
            &php.fpm_default_group(),
            0,
            std::path::Path::new("/srv"),
            std::sync::Arc::new(crate::metrics::Metrics::new()),
        )
        .unwrap();
        std::sync::Arc::try_unwrap(fcgi.settings).ok().unwrap()
    }

    #[test]
    fn running_out_of_descriptors_is_503_not_a_missing_php_fpm() {
        let s = settings();
        let f = Failure::connect(
            ConnectError::Io(io::Error::from_raw_os_error(libc::EMFILE)),
            &s,
            &s.upstreams[0],
        );
        assert_eq!(f.status, 503);
        let log = f.log.unwrap();
        assert!(
            log.contains("file descriptors open (RLIMIT_NOFILE)"),
            "{log}"
        );
        assert!(!log.contains("not running"), "{log}");
        let f = Failure::connect(
            ConnectError::Io(io::Error::from_raw_os_error(libc::ECONNREFUSED)),
            &s,
            &s.upstreams[0],
        );
        assert_eq!(f.status, 502);
        assert!(f.log.unwrap().contains("PHP-FPM is not running"));
    }

    #[test]
    fn a_named_pool_s_messages_name_its_own_keys() {
        let php: crate::config::PhpConfig = toml::from_str(
            "fpm_socket = \"127.0.0.1:9000\"\n[fpm_pools.legacy]\nsocket = \"127.0.0.1:9001\"\n",
        )
        .unwrap();
        let f = Failure::read_timeout(std::time::Duration::from_secs(3));
        let named = f.for_group(&php.fpm_pool_group("legacy").unwrap());
        let log = named.log.unwrap();
        assert!(
            log.contains("([php.fpm_pools.legacy] read_timeout)"),
            "{log}"
        );
        let f = Failure::read_timeout(std::time::Duration::from_secs(3));
        let log = f.for_group(&php.fpm_default_group()).log.unwrap();
        assert!(log.contains("([php] fpm_read_timeout)"), "{log}");
    }
}
