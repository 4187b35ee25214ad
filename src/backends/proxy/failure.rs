//! Why a request to an upstream failed: the status and short page the client gets,
//! the log line that says what to check, and whether another upstream may take
//! the request.

use crate::config::UpstreamAddress;
use crate::http::Response;
use std::error::Error as _;
use std::io;
use std::time::Duration;

/// Whether a failed attempt may go to another upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Nothing reached the upstream (connect failed): any method.
    Always,
    /// The request was sent but no response came: only idempotent methods.
    Idempotent,
    Never,
}

#[derive(Debug)]
pub struct Failure {
    pub status: u16,
    /// One line for the error page.
    pub hint: &'static str,
    /// What happened and what to check.
    pub log: String,
    pub retry: Retry,
    /// Counts towards the upstream's `max_fails`.
    pub counts: bool,
}

impl Failure {
    fn new(status: u16, hint: &'static str, log: String, retry: Retry) -> Failure {
        Failure {
            status,
            hint,
            log,
            retry,
            counts: true,
        }
    }

    pub fn connect(e: io::Error, up: &UpstreamAddress) -> Failure {
        let running = format!(
            "the upstream server is not running or [backend.proxy] names the wrong address: check that something listens there (`ss -ltnp | grep :{}`) and the upstream URL \"{up}\"",
            up.port
        );
        let why = match e.kind() {
            io::ErrorKind::ConnectionRefused => format!("connection refused: {running}"),
            io::ErrorKind::TimedOut => format!("{e}: is the host reachable (firewall, routing)?"),
            _ if e.to_string().contains("lookup")
                || e.to_string().contains("resolve")
                || e.to_string().contains("not known") =>
            {
                format!("{e}: the host name does not resolve: check DNS (getent hosts {}) or use an IP address", up.host)
            }
            _ => format!("{e}: {running}"),
        };
        Failure::new(
            502,
            "The upstream server is not reachable.",
            format!("cannot connect to upstream {up}: {why}"),
            Retry::Always,
        )
    }

    pub fn connect_timeout(up: &UpstreamAddress, t: Duration) -> Failure {
        Failure::new(
            504,
            "The upstream server did not accept the connection in time.",
            format!("connecting to upstream {up} took longer than {} ([backend.proxy] connect_timeout): is the host reachable (firewall, routing)? Or its listen queue is full: it accepts connections more slowly than they come", show(t)),
            Retry::Always,
        )
    }

    pub fn read_timeout(up: &UpstreamAddress, t: Duration, during_body: bool) -> Failure {
        let what = if during_body {
            "in the middle of the response body"
        } else {
            "before the response head"
        };
        Failure::new(
            504,
            "The upstream server did not answer in time.",
            format!("upstream {up} sent nothing for {} {what} ([backend.proxy] read_timeout): the application takes longer than that (raise read_timeout) or it hangs: check its logs", show(t)),
            Retry::Never,
        )
    }

    pub fn busy(up: &UpstreamAddress, max: usize, waited: Duration) -> Failure {
        Failure {
            counts: false,
            ..Failure::new(
                504,
                "The upstream server is busy.",
                format!("all {max} connections to upstream {up} ([backend.proxy] max_connections, per worker process) stayed busy for {} ([backend.proxy] read_timeout): raise max_connections if the upstream can take more, or find its slow requests", show(waited)),
                Retry::Always,
            )
        }
    }

    /// The exchange failed after the request went out (or while it did).
    /// The host's request body could not be read (its `body_read` failed or
    /// ended early): no upstream's fault, and not to be sent elsewhere.
    pub fn request_body(e: io::Error) -> Failure {
        Failure {
            counts: false,
            ..Failure::new(
                500,
                "The request body could not be read.",
                format!("reading the request body for the upstream failed: {e}; the request was not completed"),
                Retry::Never,
            )
        }
    }

    pub fn exchange(e: hyper::Error, up: &UpstreamAddress) -> Failure {
        // An error of our own request body (UpstreamBody), not of the upstream.
        if e.is_user() {
            if let Some(io) = io_cause(&e) {
                return Failure::request_body(io::Error::new(io.kind(), io.to_string()));
            }
        }
        // is_parse covers heads too large as well.
        if e.is_parse() || e.is_parse_status() {
            return Failure::new(
                502,
                "The upstream server sent an invalid response.",
                format!("invalid HTTP response from upstream {up}: {e}: is it an HTTP/1.1 server (not FastCGI, not TLS)? Check the upstream URL"),
                Retry::Never,
            );
        }
        let cause = io_cause(&e)
            .map(|io| format!(" ({io})"))
            .unwrap_or_default();
        Failure::new(
            502,
            "The upstream server closed the connection before the response ended.",
            format!("upstream {up} closed the connection before sending a complete response head: {e}{cause}: check its error log (a crash, a restart, or a request it refused)"),
            // Canceled: the request never went out, so any method may go elsewhere.
            if e.is_canceled() {
                Retry::Always
            } else {
                Retry::Idempotent
            },
        )
    }

    /// The body broke off after the head was sent on.
    pub fn body(e: hyper::Error, up: &UpstreamAddress) -> String {
        let cause = io_cause(&e)
            .map(|io| format!(" ({io})"))
            .unwrap_or_default();
        format!("upstream {up} broke off the response body: {e}{cause}: the client gets a truncated body; check the upstream's error log")
    }

    /// The error page.
    pub fn response(&self) -> Response {
        Response::error(self.status, Some(self.hint))
    }
}

fn io_cause(e: &hyper::Error) -> Option<&io::Error> {
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            return Some(io);
        }
        source = s.source();
    }
    None
}

/// "5s", "500ms".
pub fn show(d: Duration) -> String {
    crate::config::ConfigDuration(d).to_string()
}
