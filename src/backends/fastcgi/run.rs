//! One request's run over a group's upstreams: the balancer's pick, a permit, a
//! kept-alive or new connection, the exchange.
//!
//! A request none of whose bytes reached php-fpm (connect refused or timed out,
//! the first write failed) goes to the next upstream; one that was sent, even in
//! part, never does — the script may have run, and running it twice (a payment,
//! an append) is worse than a 502. The one retry on the same upstream is for
//! a kept-alive connection that turns out closed before any response byte
//! (php-fpm closes a child's connections when it recycles it), and only for
//! methods other than POST, PATCH and LOCK: the same symptom is also php-fpm's
//! child dying in the script, which must not run twice.

use super::failure::Failure;
use super::group::Group;
use super::response::Responder;
use super::FcgiJob;
use std::sync::Arc;
use std::time::Instant;

/// How one attempt on one upstream ended badly.
struct Failed {
    failure: Failure,
    /// Nothing was sent: the next upstream may take the request.
    may_fail_over: bool,
}

impl From<Failure> for Failed {
    fn from(failure: Failure) -> Failed {
        Failed {
            may_fail_over: failure.upstream_fault && failure.unsent,
            failure,
        }
    }
}

/// Runs one request on the group, answering through the job's completion.
pub async fn run(group: Arc<Group>, mut job: FcgiJob) {
    let Some(complete) = job.complete.take() else {
        return;
    };
    let mut responder = Responder::new(job.log_uri.clone(), job.head, complete);
    let s = group.settings.clone();
    let mut tried: Vec<usize> = Vec::new();
    // Why each tried upstream failed, for the log when all of them did.
    let mut reasons: Vec<String> = Vec::new();
    let mut body_read_ahead = false;
    let outcome = loop {
        let drained = |i: usize| s.metrics.fpm_drained(s.upstreams[i].slot);
        let Some(i) = group.balancer.pick_among(&tried, Instant::now(), drained) else {
            break Err(all_failed(&s, reasons, None));
        };
        if drained(i) {
            group.drained_last_resort(i, &tried);
        }
        tried.push(i);
        let started = Instant::now();
        let result = attempt(&group, i, &mut job, &mut responder, &mut body_read_ahead).await;
        group.balancer.done(i);
        if result.is_ok() {
            s.metrics.observe_since(s.upstreams[i].duration, started);
        }
        let Failed {
            failure,
            may_fail_over,
        } = match result {
            Ok(()) => {
                group.succeeded(i);
                break Ok(());
            }
            Err(f) => f,
        };
        let why = failure.log.clone().unwrap_or_else(|| failure.hint.clone());
        if failure.upstream_fault {
            group.failed(i, &why);
        }
        let more = tried.len() < s.upstreams.len();
        if !(may_fail_over && more && !responder.responded() && job.body.rewind()) {
            // Every upstream refused it: one line names them all.
            break Err(if tried.len() > 1 && may_fail_over {
                all_failed(&s, reasons, Some((i, failure)))
            } else {
                failure
            });
        }
        tracing::warn!(uri = %job.log_uri, pool = %s.group.name, "{why}; trying the next PHP-FPM upstream (nothing of the request was sent)");
        reasons.push(format!("{}: {why}", s.upstreams[i].shown));
    };
    // Nothing reads the body after the exchange.
    job.body.close();
    if let Err(f) = outcome {
        let f = f.for_group(&s.group);
        if let Some(log) = &f.log {
            tracing::error!(uri = %job.log_uri, status = f.status, "{log}");
        } else {
            tracing::debug!(uri = %job.log_uri, "{}", f.hint);
        }
        responder.fail(&f);
    }
}

/// The failure of a request that tried several upstreams: the last one's status,
/// a log line naming every upstream tried and why (the page only says how many:
/// addresses are no business of the client's).
fn all_failed(
    s: &super::Settings,
    mut reasons: Vec<String>,
    last: Option<(usize, Failure)>,
) -> Failure {
    let (status, hint) = match &last {
        Some((_, f)) => (f.status, f.hint.trim_end_matches('.').to_owned()),
        None => (502, "PHP-FPM is not reachable".to_owned()),
    };
    if let Some((i, f)) = &last {
        let why = f.log.clone().unwrap_or_else(|| f.hint.clone());
        reasons.push(format!("{}: {why}", s.upstreams[*i].shown));
    }
    let n = reasons.len();
    Failure::new(
        status,
        &format!("{hint} ({n} PHP-FPM upstreams tried)."),
        format!(
            "{}: {n} PHP-FPM upstreams tried, none answered: {}",
            s.group.full_key("upstreams"),
            reasons.join("; ")
        ),
    )
}

/// One attempt on upstream `i`.
async fn attempt(
    group: &Group,
    i: usize,
    job: &mut FcgiJob,
    responder: &mut Responder,
    body_read_ahead: &mut bool,
) -> Result<(), Failed> {
    let s = &group.settings;
    let pool = &group.pools[i];
    let _permit = pool.permit().await.map_err(|failure| Failed {
        failure,
        may_fail_over: false,
    })?;
    if !*body_read_ahead {
        // A small body is read ahead so that the request can go again (on a fresh
        // connection, or to the next upstream); a larger one is read as it goes
        // out, and once sent it is not retried.
        job.body
            .read_ahead(crate::http::request_body::READ_AHEAD_UP_TO)
            .map_err(|e| Failed {
                failure: Failure::request_body(e),
                may_fail_over: false,
            })?;
        *body_read_ahead = true;
    }
    let _busy = s.metrics.fpm_request(s.upstreams[i].slot);
    let (mut conn, mut reused) = pool.checkout().await?;
    loop {
        match super::client::exchange(&mut conn, &job.request, &job.body, &s.timeouts, responder)
            .await
        {
            Ok(done) => {
                // Without fpm_keep_alive php-fpm closes the connection itself.
                if done.reusable && s.keep_alive {
                    pool.checkin(conn);
                }
                return Ok(());
            }
            Err(f)
                if f.stale
                    && reused
                    && job.retriable
                    && !responder.responded()
                    && job.body.rewind() =>
            {
                tracing::debug!(uri = %job.log_uri, "a kept-alive connection was closed; retrying");
                s.metrics.fastcgi_retry();
                // Bytes went out on the closed connection: whatever happens now,
                // this request stays on this upstream.
                conn = pool.connect().await.map_err(|failure| Failed {
                    failure,
                    may_fail_over: false,
                })?;
                reused = false;
            }
            Err(f) => return Err(f.into()),
        }
    }
}
