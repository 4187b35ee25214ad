//! One worker process: a single-threaded tokio runtime serving HTTP/1.1 (hyper)
//! on the listening socket inherited from the master, handing every request to
//! the engine through the C ABI.

use crate::abi::{BodyKind, Engine, Response};
use crate::access_log::AccessLog;
use bytes::{Bytes, BytesMut};
use fe_php::ffi::{fephp_header, fephp_request, fephp_str};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Request bodies above this are refused with 413 (until per-route limits exist).
const MAX_BODY: usize = 64 << 20;
/// Bytes read per frame of a file or stream body.
const CHUNK: usize = 64 * 1024;
/// How long in-flight requests may take to finish after SIGTERM.
const GRACE: Duration = Duration::from_secs(30);

/// Runs the worker until SIGTERM/SIGINT, then drains connections.
pub fn run(
    engine: Arc<Engine>,
    listener: std::net::TcpListener,
    log: Arc<AccessLog>,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let flusher = tokio::spawn({
            let log = log.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_millis(500));
                loop {
                    tick.tick().await;
                    log.flush();
                }
            }
        });
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // EMFILE and friends: back off instead of spinning.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let local = stream.local_addr().unwrap_or(peer);
                    let engine = engine.clone();
                    let log = log.clone();
                    let svc = service_fn(move |req| handle(engine.clone(), log.clone(), peer, local, req));
                    let conn = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), svc);
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                    });
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        drop(listener);
        tokio::select! {
            _ = graceful.shutdown() => {}
            _ = tokio::time::sleep(GRACE) => tracing::warn!("in-flight requests did not finish within {GRACE:?}"),
        }
        flusher.abort();
        log.flush();
        Ok(())
    })
}

fn protocol(v: hyper::Version) -> &'static str {
    match v {
        hyper::Version::HTTP_09 => "HTTP/0.9",
        hyper::Version::HTTP_10 => "HTTP/1.0",
        hyper::Version::HTTP_2 => "HTTP/2.0",
        _ => "HTTP/1.1",
    }
}

fn fstr(s: &[u8]) -> fephp_str {
    fephp_str {
        ptr: s.as_ptr() as *const _,
        len: s.len(),
    }
}

async fn handle(
    engine: Arc<Engine>,
    log: Arc<AccessLog>,
    peer: SocketAddr,
    local: SocketAddr,
    req: Request<Incoming>,
) -> Result<hyper::Response<HostBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = if body.is_end_stream() {
        Bytes::new()
    } else {
        match Limited::new(body, MAX_BODY).collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) => {
                let too_big = e
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some();
                let status = if too_big {
                    StatusCode::PAYLOAD_TOO_LARGE
                } else {
                    StatusCode::BAD_REQUEST
                };
                return Ok(plain(status));
            }
        }
    };
    let target = match parts.uri.scheme() {
        Some(_) => parts.uri.to_string(),
        None => parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_owned(),
    };
    let remote_ip = peer.ip().to_canonical().to_string();
    let local_ip = local.ip().to_canonical().to_string();
    let proto = protocol(parts.version);
    // The C view borrows from locals; it is dropped before the first await.
    let rx = {
        let headers: Vec<fephp_header> = parts
            .headers
            .iter()
            .map(|(n, v)| fephp_header {
                name: fstr(n.as_str().as_bytes()),
                value: fstr(v.as_bytes()),
            })
            .collect();
        let creq = fephp_request {
            method: fstr(parts.method.as_str().as_bytes()),
            target: fstr(target.as_bytes()),
            protocol: fstr(proto.as_bytes()),
            headers: headers.as_ptr(),
            header_count: headers.len(),
            body: body.as_ptr(),
            body_len: body.len(),
            body_read: None,
            body_read_ctx: std::ptr::null_mut(),
            remote_addr: fstr(remote_ip.as_bytes()),
            remote_port: peer.port(),
            local_addr: fstr(local_ip.as_bytes()),
            local_port: local.port(),
            tls: false,
        };
        // SAFETY: every pointer in creq borrows locals that outlive this call; the
        // engine copies what it keeps before returning.
        unsafe { engine.handle_async(&creq) }
    };
    let resp = match rx.await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "request failed inside the engine");
            return Ok(plain(StatusCode::INTERNAL_SERVER_ERROR));
        }
        Err(_) => return Ok(plain(StatusCode::INTERNAL_SERVER_ERROR)),
    };

    let status = StatusCode::from_u16(resp.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut out = hyper::Response::builder().status(status);
    let mut length: Option<u64> = None;
    for (n, v) in resp.headers() {
        match (HeaderName::from_bytes(n), HeaderValue::from_bytes(v)) {
            (Ok(n), Ok(v)) => {
                if n == hyper::header::CONTENT_LENGTH {
                    length = v.to_str().ok().and_then(|s| s.parse().ok());
                }
                out = out.header(n, v);
            }
            _ => {
                tracing::warn!(name = %String::from_utf8_lossy(n), "dropped a response header that is not valid HTTP")
            }
        }
    }
    let body = match resp.body_kind() {
        BodyKind::Empty => HostBody::Empty,
        BodyKind::Bytes => HostBody::Bytes(Some(Bytes::copy_from_slice(resp.body_bytes()))),
        BodyKind::File { fd, offset, len } => HostBody::File {
            _owner: resp,
            fd,
            pos: offset,
            remaining: len,
        },
        BodyKind::Stream => {
            let waker = Arc::new(StreamWaker::default());
            let mut resp = resp;
            resp.set_notify(waker.clone());
            HostBody::Stream {
                resp,
                waker,
                done: false,
            }
        }
    };
    log.log(
        &peer,
        &parts.method,
        &target,
        proto,
        status.as_u16(),
        length,
        &parts.headers,
    );
    Ok(out
        .body(body)
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR)))
}

fn plain(status: StatusCode) -> hyper::Response<HostBody> {
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut r = hyper::Response::new(HostBody::Bytes(Some(Bytes::from(text))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Wakes the task polling a streamed body; called from engine threads.
#[derive(Default)]
pub struct StreamWaker {
    waker: Mutex<Option<Waker>>,
}

impl StreamWaker {
    pub fn wake(&self) {
        if let Some(w) = self.waker.lock().take() {
            w.wake();
        }
    }
}

/// A response body as hyper sends it.
pub enum HostBody {
    Empty,
    Bytes(Option<Bytes>),
    /// `remaining` bytes of `fd` from `pos`; `_owner` keeps the descriptor open.
    File {
        _owner: Response,
        fd: i32,
        pos: u64,
        remaining: u64,
    },
    Stream {
        resp: Response,
        waker: Arc<StreamWaker>,
        done: bool,
    },
}

impl http_body::Body for HostBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            HostBody::Empty => Poll::Ready(None),
            HostBody::Bytes(b) => Poll::Ready(
                b.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            HostBody::File {
                fd, pos, remaining, ..
            } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                let want = (*remaining).min(CHUNK as u64) as usize;
                let mut buf = BytesMut::zeroed(want);
                // Page-cache reads; a blocking pread of one chunk is what nginx does too.
                // SAFETY: fd stays open while `resp` lives; buf is valid for `want` bytes.
                let n = unsafe {
                    libc::pread(*fd, buf.as_mut_ptr() as *mut _, want, *pos as libc::off_t)
                };
                if n <= 0 {
                    let e = if n == 0 {
                        std::io::Error::other("file shrank while being sent")
                    } else {
                        std::io::Error::last_os_error()
                    };
                    return Poll::Ready(Some(Err(e)));
                }
                let n = n as usize;
                buf.truncate(n);
                *pos += n as u64;
                *remaining -= n as u64;
                Poll::Ready(Some(Ok(Frame::data(buf.freeze()))))
            }
            HostBody::Stream { resp, waker, done } => {
                if *done {
                    return Poll::Ready(None);
                }
                let mut buf = BytesMut::zeroed(CHUNK);
                loop {
                    match resp.try_read(&mut buf) {
                        Ok(Some(0)) => {
                            *done = true;
                            return Poll::Ready(None);
                        }
                        Ok(Some(n)) => {
                            buf.truncate(n);
                            return Poll::Ready(Some(Ok(Frame::data(buf.freeze()))));
                        }
                        Ok(None) => {
                            // Register, then look again so a wake between the two is not lost.
                            let mut slot = waker.waker.lock();
                            if slot.is_some() {
                                return Poll::Pending;
                            }
                            *slot = Some(cx.waker().clone());
                        }
                        Err(e) => return Poll::Ready(Some(Err(std::io::Error::other(e)))),
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            HostBody::Empty => true,
            HostBody::Bytes(b) => b.as_ref().is_none_or(|b| b.is_empty()),
            HostBody::File { remaining, .. } => *remaining == 0,
            HostBody::Stream { done, .. } => *done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            HostBody::Empty => SizeHint::with_exact(0),
            HostBody::Bytes(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            HostBody::File { remaining, .. } => SizeHint::with_exact(*remaining),
            HostBody::Stream { .. } => SizeHint::default(),
        }
    }
}
