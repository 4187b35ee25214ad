//! Health: a probe of each upstream on a connection of its own — FCGI_GET_VALUES
//! (php-fpm answers, then closes) or a GET of the ping path (php-fpm's
//! `ping.path`), timed — for `/_health`, and repeated every `health_interval` by
//! the active prober, which takes failing upstreams out of the turn and brings
//! answering ones back.

use super::client::{self, Conn};
use super::failure::Failure;
use super::group::Group;
use super::response::Responder;
use super::{protocol, Settings, Timeouts};
use crate::health::{BackendHealth, UpstreamHealth};
use crate::http::Response;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How recent an answer to a request stands for a probe in `/_health`.
const RECENT: Duration = Duration::from_secs(1);

pub fn unhealthy(why: String) -> BackendHealth {
    BackendHealth {
        enabled: true,
        healthy: false,
        message: format!("FastCGI backend is unhealthy: {why}"),
        latency_ms: None,
        upstreams: Vec::new(),
    }
}

/// Upstream `i` on a connection of its own: what it answered, or why it did not.
/// Connecting and answering may each take the connect timeout.
async fn probe_one(s: &Settings, i: usize, ping_only: bool) -> Result<String, String> {
    let u = &s.upstreams[i];
    let limit = s.timeouts.connect;
    let mut conn = match Conn::connect(&u.address, limit).await {
        Ok(c) => c,
        Err(e) => return Err(Failure::connect(e, s, u).log.unwrap_or_default()),
    };
    let answer = match &s.ping_path {
        None if ping_only => return Ok("accepted a connection".to_owned()),
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
    answer.map_err(|f| format!("PHP-FPM at {}: {}", u.shown, f.log.unwrap_or(f.hint)))
}

/// Probes every upstream at once (but those `known` answers for): each one's
/// result, in order.
async fn probe_all(
    s: &Arc<Settings>,
    ping_only: bool,
    known: impl Fn(usize) -> Option<String>,
) -> Vec<Result<String, String>> {
    let mut probes = tokio::task::JoinSet::new();
    let mut results = vec![Err("not probed".to_owned()); s.upstreams.len()];
    for (i, result) in results.iter_mut().enumerate() {
        if let Some(answer) = known(i) {
            *result = Ok(answer);
            continue;
        }
        let s = s.clone();
        probes.spawn(async move { (i, probe_one(&s, i, ping_only).await) });
    }
    while let Some(Ok((i, r))) = probes.join_next().await {
        results[i] = r;
    }
    results
}

/// The `/_health` entry of a group. With this process's `group`, upstreams that
/// failed are taken out of the turn and those that answered brought back.
///
/// An upstream that answered one of this process's requests within the last
/// `RECENT` is reported from that answer, not probed: under load php-fpm's
/// children are all held by kept-alive connections, and a probe on a connection
/// of its own would wait in php-fpm's backlog until a load balancer's health
/// check timed out and took a working instance out.
pub async fn probe(s: &Arc<Settings>, group: Option<&Group>) -> BackendHealth {
    let start = Instant::now();
    let known = |i: usize| {
        let ago = group?.balancer.answered_within(i, start, RECENT)?;
        Some(format!("answered a request {} ms ago", ago.as_millis()))
    };
    let results = probe_all(s, false, known).await;
    let latency = start.elapsed().as_millis() as u64;
    if let Some(g) = group {
        for (i, r) in results.iter().enumerate() {
            match r {
                Ok(_) => g.succeeded(i),
                Err(why) => g.probe_failed(i, why),
            }
        }
    }
    let stats = s.metrics.fpm_upstreams();
    let upstreams: Vec<UpstreamHealth> = s
        .upstreams
        .iter()
        .zip(&results)
        .map(|(u, r)| {
            let st = stats.get(u.slot);
            UpstreamHealth {
                pool: s.group.name.clone(),
                address: u.shown.clone(),
                up: r.is_ok() && st.is_none_or(|st| st.up),
                drained: st.is_some_and(|st| st.drained),
                active_connections: st.map_or(0, |st| st.active),
                requests: st.map_or(0, |st| st.requests),
                failures: st.map_or(0, |st| st.failures),
                error: r.as_ref().err().cloned(),
            }
        })
        .collect();
    let subject = if s.group.is_default() {
        "FastCGI backend".to_owned()
    } else {
        format!("FastCGI pool '{}'", s.group.name)
    };
    let answered = results.iter().filter(|r| r.is_ok()).count();
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    for why in &failures {
        tracing::warn!("health check: {why}");
    }
    let message = match (&results[..], answered) {
        ([Ok(what)], _) => format!(
            "{subject} is healthy (PHP-FPM at {} {what})",
            s.upstreams[0].shown
        ),
        ([Err(why)], _) => format!("{subject} is unhealthy: {why}"),
        (_, 0) => format!(
            "{subject} is unhealthy (no PHP-FPM upstream answered: {})",
            failures
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        ),
        (all, n) if failures.is_empty() => {
            format!(
                "{subject} is healthy ({n} of {} PHP-FPM upstreams answered)",
                all.len()
            )
        }
        (all, n) => format!(
            "{subject} is healthy ({n} of {} PHP-FPM upstreams answered; {})",
            all.len(),
            failures
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        ),
    };
    BackendHealth {
        enabled: true,
        healthy: answered > 0,
        message,
        latency_ms: (answered > 0).then_some(latency),
        upstreams,
    }
}

/// The active prober of one process: every `health_interval`, the ping path on
/// each upstream; a failure takes it out of the turn, an answer brings it back.
pub async fn watch(group: Arc<Group>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let results = probe_all(&group.settings, true, |_| None).await;
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(_) => group.succeeded(i),
                Err(why) => group.probe_failed(i, &why),
            }
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
