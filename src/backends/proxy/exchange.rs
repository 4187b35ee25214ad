//! One proxied request: attempts on the upstreams in turn (another one only when
//! the failed attempt allows it), then the response — buffered when small and
//! complete, otherwise streamed to the host through `body::channel()` as the
//! upstream sends it, with back-pressure (a slow client slows the upstream read,
//! memory stays bounded).

use super::failure::{Failure, Retry};
use super::headers;
use super::upstream::{Lease, Upstream, Upstreams};
use super::Settings;
use crate::config::UpstreamAddress;
use crate::http::body::{self, TrySend};
use crate::http::request_body::{RequestBody, READ_AHEAD_UP_TO};
use crate::http::Completion;
use crate::http::{Body, Request, Response};
use bytes::{Bytes, BytesMut};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue, HOST};
use parking_lot::Mutex;
use std::sync::Arc;

/// Responses announcing at most this many bytes are read whole, then answered
/// with their length (one hand-over instead of a stream).
const BUFFER_UP_TO: u64 = 64 * 1024;

/// A request, owned, ready for the proxy thread.
pub struct Job {
    method: hyper::Method,
    /// Origin form, as the client sent it.
    target: hyper::Uri,
    headers: HeaderMap,
    /// Read as the upstream connection sends it.
    body: RequestBody,
    idempotent: bool,
    head: bool,
    /// For log lines: "GET /index.php?x".
    log_uri: String,
    /// In a mutex so that `&Job` may be held across awaits (`Completion` is not
    /// `Sync`); only `run` and `drop` take it.
    complete: Mutex<Option<Completion>>,
}

/// A job dropped unrun (the proxy thread could not take it) still answers.
impl Drop for Job {
    fn drop(&mut self) {
        if let Some(c) = self.complete.get_mut().take() {
            self.body.close();
            c(Response::error(
                503,
                Some("The proxy backend is not available in this worker."),
            ));
        }
    }
}

impl Job {
    pub fn new(
        req: &Request<'_>,
        origin_target: &str,
        complete: Completion,
    ) -> Result<Job, (Response, Completion)> {
        let bad = |why: &str| Response::error(400, Some(why));
        let Ok(method) = hyper::Method::from_bytes(req.method.as_bytes()) else {
            return Err((bad("The request method cannot be forwarded."), complete));
        };
        let Ok(target) = origin_target.parse::<hyper::Uri>() else {
            return Err((bad("The request target cannot be forwarded."), complete));
        };
        let idempotent = matches!(
            method.as_str(),
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        );
        Ok(Job {
            headers: headers::request_headers(req),
            body: req.body_for_backend(),
            idempotent,
            head: req.is_head(),
            log_uri: format!("{} {}", req.method, req.target),
            method,
            target,
            complete: Mutex::new(Some(complete)),
        })
    }

    fn request(&self, up: &UpstreamAddress) -> hyper::Request<UpstreamBody> {
        let mut req = hyper::Request::new(UpstreamBody {
            pass: self.body.pass(),
            left: self.body.len(),
            body: self.body.clone(),
        });
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.target.clone();
        *req.headers_mut() = self.headers.clone();
        // Host as the client sent it; an HTTP/1.0 client may have sent none.
        if !req.headers().contains_key(HOST) {
            if let Ok(v) = HeaderValue::from_str(&up.authority) {
                req.headers_mut().insert(HOST, v);
            }
        }
        req
    }

    fn error_page(&self, f: &Failure) -> Response {
        let resp = f.response();
        if self.head {
            resp.for_head()
        } else {
            resp
        }
    }
}

/// Runs one request: an upstream in turn, and the next one after a failure that
/// allows it (each upstream at most once); the last failure is the answer.
pub async fn run(s: Arc<Settings>, upstreams: Arc<Upstreams>, job: Job) {
    let Some(complete) = job.complete.lock().take() else {
        return;
    };
    // A small body is read ahead so that it can go to the next upstream after a
    // failure; a larger one is read as it is sent (and not sent again).
    if let Err(e) = job.body.read_ahead(READ_AHEAD_UP_TO) {
        tracing::error!(uri = %job.log_uri, "reading the request body failed: {e}");
        job.body.close();
        return complete(job.error_page(&Failure::request_body(e)));
    }
    let mut tried = Vec::new();
    let mut last = None;
    while let Some(i) = upstreams.pick(&tried) {
        if !tried.is_empty() {
            s.metrics.proxy_retry();
        }
        tried.push(i);
        let up = upstreams.list[i].clone();
        match attempt(&s, &up, &job).await {
            Ok((resp, lease)) => {
                up.succeeded();
                deliver(&s, up, resp, lease, &job, complete).await;
                return job.body.close();
            }
            Err(f) => {
                let again = match f.retry {
                    Retry::Always => true,
                    Retry::Idempotent => job.idempotent,
                    Retry::Never => false,
                } && tried.len() < upstreams.list.len()
                    && job.body.rewind();
                count_failure(&s, &up, &f);
                if again {
                    tracing::warn!(uri = %job.log_uri, "{}; trying the next upstream", f.log);
                } else {
                    tracing::error!(uri = %job.log_uri, status = f.status, "{}", f.log);
                }
                last = Some(f);
                if !again {
                    break;
                }
            }
        }
    }
    job.body.close();
    match last {
        Some(f) => complete(job.error_page(&f)),
        None => complete(Response::error(503, Some("No upstream is configured."))),
    }
}

fn count_failure(s: &Settings, up: &Upstream, f: &Failure) {
    if !f.counts {
        return;
    }
    s.metrics.proxy_upstream_failure();
    if up.failed(s) {
        tracing::warn!(
            "upstream {} is out of the turn for {} after {} failure(s) within {} ([backend.proxy] max_fails, fail_timeout); the other upstreams take its requests",
            up.address,
            super::failure::show(s.fail_timeout),
            s.max_fails,
            super::failure::show(s.fail_timeout)
        );
    }
}

/// One upstream: a connection, the request, the response head (within
/// `read_timeout`). A kept-alive connection the upstream has closed meanwhile is
/// replaced once by a new one.
async fn attempt(
    s: &Settings,
    up: &Upstream,
    job: &Job,
) -> Result<(hyper::Response<Incoming>, Lease), Failure> {
    let mut lease = up.checkout(s).await?;
    if lease.reused && lease.sender.ready().await.is_err() {
        lease = up.reconnect(lease, s).await?;
    }
    loop {
        let sent = tokio::time::timeout(
            s.read_timeout,
            lease.sender.send_request(job.request(&up.address)),
        )
        .await;
        match sent {
            Err(_) => return Err(Failure::read_timeout(&up.address, s.read_timeout, false)),
            Ok(Ok(resp)) => return Ok((resp, lease)),
            // Never written, or the upstream closed a kept-alive connection as the
            // request arrived: a new connection, once (the request again only if
            // it may be repeated).
            Ok(Err(e))
                if lease.reused
                    && (e.is_canceled() || (job.idempotent && !e.is_parse()))
                    && job.body.rewind() =>
            {
                tracing::debug!(uri = %job.log_uri, upstream = %up.address, error = %e, "a kept-alive connection was closed; retrying on a new one");
                lease = up.reconnect(lease, s).await?;
            }
            Ok(Err(e)) => return Err(Failure::exchange(e, &up.address)),
        }
    }
}

/// The response: small complete bodies in one piece, others streamed. The
/// connection goes back to the pool once its body has been read to the end.
async fn deliver(
    s: &Settings,
    up: Arc<Upstream>,
    resp: hyper::Response<Incoming>,
    lease: Lease,
    job: &Job,
    complete: Completion,
) {
    let (parts, mut incoming) = resp.into_parts();
    let mut resp = Response::new(parts.status.as_u16());
    resp.headers = headers::response_headers(&parts.headers);
    if incoming.is_end_stream() {
        complete(resp);
        drop(incoming);
        return up.checkin(lease).await;
    }
    let announced = incoming.size_hint().exact();
    if announced.is_some_and(|n| n <= BUFFER_UP_TO) {
        let mut out = Vec::with_capacity(announced.unwrap_or(0) as usize);
        loop {
            match read_frame(s, &up, &mut incoming, job).await {
                Ok(Some(data)) => out.extend_from_slice(&data),
                Ok(None) => break,
                Err(f) => return complete(job.error_page(&f)),
            }
        }
        complete(resp.with_body(Body::Bytes(out)));
        drop(incoming);
        return up.checkin(lease).await;
    }

    let (mut sender, stream) = body::channel();
    complete(resp.with_body(Body::Stream(stream)));
    loop {
        let data = match read_frame(s, &up, &mut incoming, job).await {
            Ok(Some(data)) => data,
            Ok(None) => break,
            Err(f) => return sender.fail(f.hint.to_owned()),
        };
        match sender.try_send(data.to_vec()) {
            TrySend::Sent => {}
            TrySend::Gone => return client_gone(job),
            // The client is behind: wait for it off the runtime thread, reading
            // nothing more from the upstream meanwhile.
            TrySend::Full(chunk) => {
                let waited = tokio::task::spawn_blocking(move || {
                    let delivered = sender.send(chunk);
                    (sender, delivered)
                })
                .await;
                match waited {
                    Ok((back, true)) => sender = back,
                    _ => return client_gone(job),
                }
            }
        }
    }
    drop(sender); // the stream ends
    drop(incoming);
    up.checkin(lease).await;
}

/// The client left: the upstream connection closes (its body is not read on).
fn client_gone(job: &Job) {
    tracing::debug!(uri = %job.log_uri, "the client closed the connection; closing the upstream connection");
}

/// The next data of the body (`None` at its end), within `read_timeout`.
async fn read_frame(
    s: &Settings,
    up: &Upstream,
    incoming: &mut Incoming,
    job: &Job,
) -> Result<Option<Bytes>, Failure> {
    loop {
        match tokio::time::timeout(s.read_timeout, incoming.frame()).await {
            Err(_) => {
                let f = Failure::read_timeout(&up.address, s.read_timeout, true);
                count_failure(s, up, &f);
                tracing::error!(uri = %job.log_uri, "{}", f.log);
                return Err(f);
            }
            Ok(None) => return Ok(None),
            Ok(Some(Err(e))) => {
                let f = Failure {
                    status: 502,
                    hint: "The upstream server closed the connection before the response ended.",
                    log: Failure::body(e, &up.address),
                    retry: Retry::Never,
                    counts: true,
                };
                count_failure(s, up, &f);
                tracing::error!(uri = %job.log_uri, "{}", f.log);
                return Err(f);
            }
            // Trailers are not forwarded.
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

/// The request body as an upstream connection sends it: read in chunks as hyper
/// asks for them (page-cache reads of a spooled body at worst), with its exact
/// length. `pass` ties it to one attempt: once the body is rewound for another,
/// this one fails instead of taking its bytes.
pub struct UpstreamBody {
    body: RequestBody,
    pass: u64,
    left: u64,
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let mut buf = BytesMut::zeroed(self.left.min(64 * 1024) as usize);
        let frame = match self.body.read_pass(self.pass, &mut buf) {
            Ok(0) => Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the request body ended {} bytes early", self.left),
            )),
            Ok(n) => {
                self.left -= n as u64;
                buf.truncate(n);
                Ok(Frame::data(buf.freeze()))
            }
            Err(e) => Err(e),
        };
        std::task::Poll::Ready(Some(frame))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}
