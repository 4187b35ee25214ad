//! The health probe: a connection of its own to PHP-FPM, FCGI_GET_VALUES (php-fpm
//! answers, then closes) or a GET of `fpm_ping_path`, timed.

use super::client::{self, Conn};
use super::failure::Failure;
use super::response::Responder;
use super::{protocol, Settings, Timeouts};
use crate::health::BackendHealth;
use crate::http::Response;
use std::time::{Duration, Instant};

pub fn unhealthy(why: String) -> BackendHealth {
    BackendHealth {
        enabled: true,
        healthy: false,
        message: format!("FastCGI backend is unhealthy: {why}"),
        latency_ms: None,
    }
}

/// One probe on its own connection: FCGI_GET_VALUES (php-fpm answers, then
/// closes), or a GET of `fpm_ping_path` (e.g. php-fpm's ping.path) when set.
/// Connecting and answering may each take `fpm_connect_timeout`.
pub async fn probe(s: &Settings) -> BackendHealth {
    let start = Instant::now();
    let limit = s.timeouts.connect;
    let mut conn = match Conn::connect(&s.address, limit).await {
        Ok(c) => c,
        Err(e) => {
            let why = Failure::connect(e, s).log.unwrap_or_default();
            tracing::warn!("health check: {why}");
            return unhealthy(why);
        }
    };
    let answer = match &s.ping_path {
        None => client::get_values(&mut conn, limit).await.map(|values| {
            let shown: Vec<String> = values.iter().map(|(n, v)| format!("{n}={v}")).collect();
            if shown.is_empty() {
                "answered FCGI_GET_VALUES".to_owned()
            } else {
                format!("answered FCGI_GET_VALUES: {}", shown.join(", "))
            }
        }),
        Some(path) => ping(&mut conn, s, path, limit).await,
    };
    match answer {
        Ok(what) => BackendHealth {
            enabled: true,
            healthy: true,
            message: format!(
                "FastCGI backend is healthy (PHP-FPM at {} {what})",
                s.socket
            ),
            latency_ms: Some(start.elapsed().as_millis() as u64),
        },
        Err(f) => {
            let why = format!("PHP-FPM at {}: {}", s.socket, f.log.unwrap_or(f.hint));
            tracing::warn!("health check: {why}");
            unhealthy(why)
        }
    }
}

/// GET `path` as a script request; healthy when it answers 2xx.
async fn ping(
    conn: &mut Conn,
    s: &Settings,
    path: &str,
    limit: Duration,
) -> Result<String, Failure> {
    let root = s.document_root.to_string_lossy();
    let root = root.trim_end_matches('/');
    let filename = format!("{root}{path}");
    let vars: [(&str, &[u8]); 12] = [
        ("SCRIPT_FILENAME", filename.as_bytes()),
        ("SCRIPT_NAME", path.as_bytes()),
        ("REQUEST_URI", path.as_bytes()),
        ("DOCUMENT_URI", path.as_bytes()),
        ("DOCUMENT_ROOT", root.as_bytes()),
        ("QUERY_STRING", b""),
        ("REQUEST_METHOD", b"GET"),
        ("SERVER_PROTOCOL", b"HTTP/1.1"),
        ("GATEWAY_INTERFACE", b"CGI/1.1"),
        (
            "SERVER_SOFTWARE",
            concat!("fe-php/", env!("CARGO_PKG_VERSION")).as_bytes(),
        ),
        ("REMOTE_ADDR", b"127.0.0.1"),
        ("REDIRECT_STATUS", b"200"),
    ];
    let mut request = Vec::new();
    protocol::push_begin_request(&mut request, false);
    protocol::push_params(
        &mut request,
        vars.iter().map(|(n, v)| (n.as_bytes(), *v)),
        protocol::MAX_CONTENT,
    )
    .map_err(|e| Failure::bad_response(format!("fpm_ping_path: {} is too large", e.name)))?;
    let (tx, rx) = std::sync::mpsc::channel();
    let mut responder = Responder::new(
        format!("GET {path} (health check)"),
        false,
        Box::new(move |resp: Response| {
            let _ = tx.send(resp.status);
        }),
    );
    let timeouts = Timeouts {
        connect: limit,
        read: limit,
        send: limit,
    };
    let result = client::exchange(
        conn,
        &request,
        &crate::http::request_body::RequestBody::memory(Vec::new()),
        &timeouts,
        &mut responder,
    )
    .await;
    // Only the status matters: the body is dropped unread, which ends a streamed
    // exchange early, and that is fine.
    let status = responder.responded().then(|| rx.try_recv().ok()).flatten();
    match (status, result) {
        (Some(st), _) if (200..300).contains(&st) => Ok(format!("answered GET {path} with {st}")),
        (Some(st), _) => Err(Failure::new(502, "", format!("GET {path} answered {st}: check ping.path in the pool configuration, or [php] fpm_ping_path"))),
        (None, Err(f)) => Err(f),
        (None, Ok(_)) => Err(Failure::new(502, "", format!("GET {path} got no answer"))),
    }
}
