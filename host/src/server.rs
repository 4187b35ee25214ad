//! One worker process: a single-threaded tokio runtime serving HTTP/1.1 (hyper)
//! on the listening socket inherited from the master, handing every request to
//! the engine through the C ABI.

use crate::abi::{BodyKind, Engine, Response, StreamWaker};
use crate::access_log::AccessLog;
use crate::config::ServerConfig;
use crate::conn::{Busy, ConnState, Io, Timeouts, WatchedStream};
use crate::sendfile::{self, FileOwner, SendQueue};
use crate::spool::{self, Spooled};
use bytes::{Bytes, BytesMut};
use fe_php::ffi::{fephp_header, fephp_request, fephp_str};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Bytes read per frame of a file or stream body.
const CHUNK: usize = 64 * 1024;
/// How long in-flight requests may take to finish after SIGTERM.
const GRACE: Duration = Duration::from_secs(30);
/// After SIGTERM, how long kept-alive connections get to come back for one more
/// request (answered with `Connection: close`) before idle ones are closed.
const LINGER: Duration = Duration::from_secs(1);

/// Set when the worker stops (SIGTERM, also a reload's rollover): every response
/// then carries `Connection: close`, so keep-alive clients reconnect — to the
/// workers still accepting — instead of racing the close of an idle connection.
static DRAINING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// hyper's own read buffer limit; raised when `max_header_size` needs more.
const HYPER_MAX_BUF: usize = 8192 + 4096 * 100;
/// Least time between two "max_connections reached" warnings.
const FULL_WARNING_EVERY: Duration = Duration::from_secs(60);
/// Least time between two warnings about accepts failing for lack of resources.
const ACCEPT_WARNING_EVERY: Duration = Duration::from_secs(60);
/// Pause after an accept failed for lack of descriptors or memory: the connection
/// stays in the listen backlog, so accepting again at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// `[server]`'s limits as the worker applies them.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeouts: Timeouts,
    pub body_read_timeout: Duration,
    pub max_header_size: usize,
    pub max_body_size: u64,
    pub max_connections: usize,
}

impl Limits {
    pub fn new(s: &ServerConfig) -> Limits {
        Limits {
            timeouts: Timeouts {
                header: s.header_read_timeout.0,
                keepalive: s.keepalive_timeout.0,
                send: s.send_timeout.0,
            },
            body_read_timeout: s.body_read_timeout.0,
            max_header_size: usize::try_from(s.max_header_size.0).unwrap_or(usize::MAX),
            max_body_size: s.max_body_size.0,
            max_connections: s.max_connections.max(1),
        }
    }
}

/// Raises this process's soft open-file limit (up to the hard one) so that
/// `connections` sockets fit beside the files, logs and PHP-FPM connections a
/// worker also holds. Inherited by the workers; call it in the master.
pub fn raise_open_file_limit(connections: usize) {
    let want = connections as u64 + 1024;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid out pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 || lim.rlim_cur >= want {
        return;
    }
    let raised = libc::rlimit {
        rlim_cur: want.min(lim.rlim_max),
        rlim_max: lim.rlim_max,
    };
    // SAFETY: raising the soft limit within the hard one.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) };
    if raised.rlim_cur < want {
        tracing::warn!(
            "[server] max_connections = {connections} needs about {want} open files, but the limit is {}: workers refuse connections (EMFILE) before reaching it. Raise it (ulimit -n, systemd LimitNOFILE=) or lower max_connections.",
            raised.rlim_cur
        );
    }
}

/// What to do when `e` says this worker or the system ran out of descriptors or
/// memory; None for any other error (a peer that left before accept, …).
fn exhaustion(e: &std::io::Error) -> Option<String> {
    match e.raw_os_error()? {
        libc::EMFILE => {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: lim is a valid out pointer.
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
            Some(format!(
                "this worker has all of its {} file descriptors open (RLIMIT_NOFILE): raise the limit (ulimit -n, systemd LimitNOFILE=) or lower [server] max_connections",
                lim.rlim_cur
            ))
        }
        libc::ENFILE => {
            Some("the system has run out of file descriptors (sysctl fs.file-max)".into())
        }
        libc::ENOMEM | libc::ENOBUFS => Some("the kernel is out of memory".into()),
        _ => None,
    }
}

/// Accepts failing because the worker (or the system) is out of descriptors or
/// memory: warned about once per `ACCEPT_WARNING_EVERY`, with a count.
#[derive(Default)]
struct AcceptStarvation {
    warned: Option<Instant>,
    /// Failures since the last warning.
    unreported: u64,
    /// Failures since the last successful accept.
    since_ok: u64,
}

impl AcceptStarvation {
    /// True when `e` is a lack of resources (back off before accepting again).
    fn note(&mut self, e: &std::io::Error) -> bool {
        let Some(why) = exhaustion(e) else {
            return false;
        };
        self.since_ok += 1;
        self.unreported += 1;
        if self
            .warned
            .is_none_or(|t| t.elapsed() >= ACCEPT_WARNING_EVERY)
        {
            let repeated = match self.warned {
                Some(_) => format!(
                    " ({} failed accepts since the last warning)",
                    self.unreported
                ),
                None => String::new(),
            };
            tracing::warn!(
                "cannot accept connections: {e}: {why}; new connections wait in the listen backlog, retried every {ACCEPT_BACKOFF:?}{repeated}"
            );
            self.warned = Some(Instant::now());
            self.unreported = 0;
        }
        true
    }

    fn recovered(&mut self) {
        if self.since_ok > 0 {
            tracing::info!(
                "accepting connections again after {} failed accepts",
                self.since_ok
            );
            self.since_ok = 0;
        }
    }
}

/// A descriptor the library owns (never closed here).
struct Borrowed(i32);

impl std::os::fd::AsRawFd for Borrowed {
    fn as_raw_fd(&self) -> i32 {
        self.0
    }
}

/// Completes embedded PHP's responses whenever their descriptor is readable.
async fn php_events(engine: Arc<Engine>, fd: i32) {
    // SAFETY: the library keeps the descriptor open, the same socket, for the
    // life of the process (fephp_engine_event_fd); this task lives no longer.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(
            Borrowed(fd),
            tokio::io::Interest::READABLE,
        )
    };
    let afd = match registered {
        Ok(a) => a,
        Err(e) => {
            tracing::error!("cannot watch PHP's responses: {e}");
            return;
        }
    };
    loop {
        let Ok(mut guard) = afd.readable().await else {
            return;
        };
        // Drained to the end: readiness is cleared only then (try_io sees
        // WouldBlock), so a response arriving meanwhile is not missed.
        let _ = guard.try_io(|_| match engine.process_events() {
            Ok(()) => Err::<(), _>(std::io::ErrorKind::WouldBlock.into()),
            Err(e) => {
                tracing::error!("receiving PHP responses failed: {e}");
                Err(std::io::ErrorKind::WouldBlock.into())
            }
        });
    }
}

/// How the listener speaks: TLS (with HTTP/2 by ALPN when offered) or plain
/// HTTP/1.1, with HTTP/2 by prior knowledge (h2c) when `h2c`.
#[derive(Clone)]
pub struct Front {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub h2c: bool,
    /// The port HTTPS is served on, for redirects to it.
    pub https_port: u16,
}

/// Answers every request on a `redirect_http` listener with a 308 to the same
/// URL over HTTPS (400 without a usable `Host`).
fn redirect_to_https(req: &Request<Incoming>, https_port: u16) -> hyper::Response<HostBody> {
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<hyper::http::uri::Authority>().ok());
    let refuse = || {
        let mut r = plain(StatusCode::BAD_REQUEST);
        r.headers_mut()
            .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
        r
    };
    let Some(host) = host else {
        return refuse();
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let location = format!("https://{}{port}{path}", host.host());
    let mut r = plain(StatusCode::PERMANENT_REDIRECT);
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            r.headers_mut().insert(hyper::header::LOCATION, v);
            r
        }
        Err(_) => refuse(),
    }
}

/// Serves `listeners` (`[server.tls] redirect_http`) with redirects to HTTPS.
/// (Not drained at shutdown: a redirect is answered at once, and the worker's
/// exit ends idle connections.)
async fn serve_redirects(
    listeners: Vec<tokio::net::TcpListener>,
    limits: Limits,
    https_port: u16,
    slots: Arc<tokio::sync::Semaphore>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.timeouts.header)
        .max_buf_size(HYPER_MAX_BUF);
    let mut first = 0;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, _) = match accept(&listeners, &mut first).await {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(error = %e, "accept failed (redirect_http)");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let svc = service_fn(move |req: Request<Incoming>| {
            std::future::ready(Ok::<_, Infallible>(redirect_to_https(&req, https_port)))
        });
        let conn = http.serve_connection(TokioIo::new(stream), svc);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(slot);
        });
    }
}

/// The HTTP/2 client preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether the client opens with the HTTP/2 preface (h2c by prior knowledge):
/// looks at its first bytes without taking them, waiting at most `wait`.
async fn opens_with_h2_preface(stream: &tokio::net::TcpStream, wait: Duration) -> bool {
    let look = async {
        let mut buf = [0u8; 24];
        loop {
            let n = match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            if !H2_PREFACE.starts_with(&buf[..n]) {
                return false;
            }
            if n == H2_PREFACE.len() {
                return true;
            }
            // Part of the preface: the rest is on its way.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::time::timeout(wait, look).await.unwrap_or(false)
}

/// The HTTP/2 settings: bounded concurrency, windows and header lists, and the
/// h2 crate's guards against abuse (rapid reset: pending-accept and local-error
/// reset limits; CONTINUATION floods and HPACK bombs: the header list limit).
fn http2_builder(
    limits: &Limits,
) -> hyper::server::conn::http2::Builder<hyper_util::rt::TokioExecutor> {
    let mut h2 = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
    h2.timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(128)
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(1024))
        .max_header_list_size(limits.max_header_size.min(u32::MAX as usize) as u32)
        .initial_stream_window_size(256 << 10)
        .initial_connection_window_size(1 << 20)
        .max_send_buf_size(256 << 10)
        .keep_alive_interval(None);
    h2
}

/// Runs the worker until SIGTERM/SIGINT, then drains connections.
pub fn run(
    engine: Arc<Engine>,
    listeners: Vec<std::net::TcpListener>,
    log: Arc<AccessLog>,
    limits: Limits,
    front: Front,
    redirect: Vec<std::net::TcpListener>,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    spool::set_dir(engine.temp_dir().into());
    rt.block_on(async move {
        let listeners = listeners
            .into_iter()
            .map(|l| {
                l.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(l)
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let redirect = redirect
            .into_iter()
            .map(|l| {
                l.set_nonblocking(true)?;
                tokio::net::TcpListener::from_std(l)
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let mut first = 0usize;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        // Embedded PHP's responses are received here, on this thread.
        // Kept to the end: requests still draining at shutdown need it.
        let _php_events = match engine.event_fd() {
            Ok(Some(fd)) => Some(tokio::spawn(php_events(engine.clone(), fd))),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!("PHP responses stay on the library's thread: {e}");
                None
            }
        };
        let flusher = tokio::spawn({
            let log = log.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_millis(500));
                let mut odd = false;
                loop {
                    tick.tick().await;
                    log.flush();
                    odd = !odd;
                    if odd {
                        crate::alloc::return_freed_memory();
                    }
                }
            }
        });
        // Never `pipeline_flush(true)`: it makes hyper copy body chunks into one
        // buffer, which would send the zeros of sendfile stand-ins (sendfile.rs).
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .keep_alive(true)
            // conn.rs times heads and idle keep-alive connections (hyper's timer
            // would run through the idle time too).
            .header_read_timeout(None)
            .max_header_size(limits.max_header_size)
            .max_buf_size(HYPER_MAX_BUF.max(limits.max_header_size + 8192));
        let redirect_port = front.https_port;
        let shared = Arc::new(Shared {
            engine: engine.clone(),
            log: log.clone(),
            limits,
            http1,
            http2: http2_builder(&limits),
            front,
        });
        // At the limit the worker stops accepting: new connections wait in the
        // backlog of its listening sockets until a connection closes.
        let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
        let redirects = (!redirect.is_empty()).then(|| {
            tokio::spawn(serve_redirects(
                redirect,
                limits,
                redirect_port,
                slots.clone(),
            ))
        });
        let mut warned_full: Option<Instant> = None;
        let mut starved = AcceptStarvation::default();
        'serve: loop {
            if slots.available_permits() == 0
                && warned_full.is_none_or(|t| t.elapsed() >= FULL_WARNING_EVERY)
            {
                tracing::warn!(
                    "[server] max_connections ({}) reached in this worker: not accepting until a connection closes",
                    limits.max_connections
                );
                warned_full = Some(Instant::now());
            }
            let slot = tokio::select! {
                s = slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
                _ = term.recv() => break 'serve,
                _ = int.recv() => break 'serve,
            };
            let (stream, peer) = tokio::select! {
                accepted = accept(&listeners, &mut first) => match accepted {
                    Ok(a) => {
                        starved.recovered();
                        a
                    }
                    Err(e) => {
                        if !starved.note(&e) {
                            // The connection went away before it was accepted, and the like.
                            tracing::debug!(error = %e, "accept failed");
                            continue;
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                            _ = term.recv() => break 'serve,
                            _ = int.recv() => break 'serve,
                        }
                    }
                },
                _ = term.recv() => break 'serve,
                _ = int.recv() => break 'serve,
            };
            let _ = stream.set_nodelay(true);
            let conn = Conn {
                shared: shared.clone(),
                peer,
                local: stream.local_addr().unwrap_or(peer),
                watcher: graceful.watcher(),
            };
            tokio::spawn(async move {
                conn.serve(stream).await;
                drop(slot);
            });
        }
        DRAINING.store(true, std::sync::atomic::Ordering::Relaxed);
        drop(listeners);
        if let Some(r) = redirects {
            r.abort();
        }
        let linger = Instant::now() + LINGER;
        while graceful.count() > 0 && Instant::now() < linger {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::select! {
            _ = graceful.shutdown() => {}
            _ = tokio::time::sleep(GRACE) => tracing::warn!("in-flight requests did not finish within {GRACE:?}"),
        }
        flusher.abort();
        log.flush();
        Ok(())
    })
}

/// What every connection of a worker serves with.
struct Shared {
    engine: Arc<Engine>,
    log: Arc<AccessLog>,
    limits: Limits,
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<hyper_util::rt::TokioExecutor>,
    front: Front,
}

/// One connection to serve.
struct Conn {
    shared: Arc<Shared>,
    peer: SocketAddr,
    local: SocketAddr,
    watcher: hyper_util::server::graceful::Watcher,
}

impl Conn {
    /// The TLS handshake if any (within `header_read_timeout`), then HTTP/1.1 or
    /// HTTP/2 until the connection ends.
    async fn serve(self, stream: tokio::net::TcpStream) {
        let shared = self.shared;
        let wait = shared.limits.timeouts.header;
        let (io, h2, tls) = match &shared.front.tls {
            Some(config) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
                match tokio::time::timeout(wait, acceptor.accept(stream)).await {
                    Ok(Ok(mut t)) => {
                        let conn = t.get_ref().1;
                        if conn.alpn_protocol() == Some(crate::acme::ACME_TLS_ALPN) {
                            // An ACME validator: the handshake was the answer.
                            let _ = tokio::io::AsyncWriteExt::shutdown(&mut t).await;
                            return;
                        }
                        let h2 = conn.alpn_protocol() == Some(b"h2");
                        let info = Arc::new(crate::tls::describe(conn));
                        (Io::Tls(Box::new(t)), h2, Some(info))
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(peer = %self.peer, "TLS handshake did not finish within header_read_timeout");
                        return;
                    }
                }
            }
            None => {
                let h2 = shared.front.h2c && opens_with_h2_preface(&stream, wait).await;
                (Io::Plain(stream), h2, None)
            }
        };
        // Files go out by sendfile only on plain HTTP/1.1.
        let state = ConnState::new(tls.is_none() && !h2, h2);
        let io = TokioIo::new(WatchedStream::new(
            io,
            state.clone(),
            shared.limits.timeouts,
        ));
        let (peer, local) = (self.peer, self.local);
        let on = shared.clone();
        let svc = service_fn(move |req: Request<Incoming>| {
            let busy = state.begin_request(!req.body().is_end_stream());
            let resp = handle(
                on.engine.clone(),
                on.log.clone(),
                on.limits,
                peer,
                local,
                tls.clone(),
                req,
            );
            async move { Ok::<_, Infallible>(resp.await.map(|body| ConnBody { body, _busy: busy })) }
        });
        let ended = if h2 {
            self.watcher
                .watch(shared.http2.serve_connection(io, svc))
                .await
        } else {
            self.watcher
                .watch(shared.http1.serve_connection(io, svc))
                .await
        };
        if let Err(e) = ended {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}

/// The next connection from any of `listeners`, looking at them in turn from
/// `first` so that none is starved.
async fn accept(
    listeners: &[tokio::net::TcpListener],
    first: &mut usize,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    std::future::poll_fn(|cx| {
        let n = listeners.len();
        for i in 0..n {
            let k = (*first + i) % n;
            if let Poll::Ready(r) = listeners[k].poll_accept(cx) {
                *first = (k + 1) % n;
                return Poll::Ready(r);
            }
        }
        Poll::Pending
    })
    .await
}

/// Receives the whole request body before the engine runs: at most `max` bytes,
/// waiting at most `idle` between two reads, in memory or spooled to a temporary
/// file (`spool`). Err is the status to answer.
async fn read_body(
    mut body: Incoming,
    max: u64,
    idle: Duration,
    what: &(dyn Fn() -> String + Sync),
) -> Result<Option<Spooled>, StatusCode> {
    if body.is_end_stream() {
        return Ok(None);
    }
    let announced = body.size_hint().lower();
    if announced > max {
        return Err(StatusCode::PAYLOAD_TOO_LARGE);
    }
    let mut received = spool::Receiver::new(announced);
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(StatusCode::REQUEST_TIMEOUT),
            Ok(None) => return Ok(Some(received.finish())),
            Ok(Some(Err(_))) => return Err(StatusCode::BAD_REQUEST),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if received.len() + data.len() as u64 > max {
                return Err(StatusCode::PAYLOAD_TOO_LARGE);
            }
            if let Err(e) = received.push(&data) {
                tracing::error!(
                    "cannot spool the request body of {} into {}: {e} ({} received so far): free space there, or point [php.ini] upload_tmp_dir at a directory with room for max_body_size per connection; answered 500",
                    what(),
                    spool::dir().display(),
                    received.len()
                );
                // The client is still sending: take the rest (discarded, within
                // the same limits) so that it reads the 500 rather than a reset
                // of the connection closed under its upload.
                let left = max.saturating_sub(received.len() + data.len() as u64);
                drain(body, left, idle).await;
                return Err(StatusCode::INTERNAL_SERVER_ERROR);
            }
        }
    }
}

/// Reads and drops up to `left` more bytes of a request body, waiting at most
/// `idle` between two reads.
async fn drain(mut body: Incoming, mut left: u64, idle: Duration) {
    while let Ok(Some(Ok(frame))) = tokio::time::timeout(idle, body.frame()).await {
        if let Ok(data) = frame.into_data() {
            match left.checked_sub(data.len() as u64) {
                Some(l) => left = l,
                None => return,
            }
        }
    }
}

/// RFC 9112 §6.1: the one transfer coding a request may carry is `chunked`, once
/// (hyper decodes it). Anything else — an unknown or compressing coding before
/// it, `chunked` twice — would leave the body encoded for the application, or
/// framed differently by another server in the path: refused.
fn transfer_coding_ok(headers: &hyper::HeaderMap) -> bool {
    let mut codings = 0;
    for value in headers.get_all(hyper::header::TRANSFER_ENCODING) {
        let Ok(value) = value.to_str() else {
            return false;
        };
        for coding in value.split(',') {
            codings += 1;
            if codings > 1
                || !coding
                    .trim_matches([' ', '\t'])
                    .eq_ignore_ascii_case("chunked")
            {
                return false;
            }
        }
    }
    true
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
    limits: Limits,
    peer: SocketAddr,
    local: SocketAddr,
    tls: Option<Arc<crate::tls::Facts>>,
    req: Request<Incoming>,
) -> hyper::Response<HostBody> {
    let (mut parts, body) = req.into_parts();
    let h2 = parts.version == hyper::Version::HTTP_2;
    if h2 && !parts.headers.contains_key(hyper::header::HOST) {
        // HTTP/2 names the host in `:authority`; PHP and the router read `Host`.
        if let Some(v) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            parts.headers.insert(hyper::header::HOST, v);
        }
    }
    let target = match (parts.uri.scheme(), parts.uri.path_and_query()) {
        (None, Some(p)) => p.as_str().to_owned(),
        // HTTP/2 requests always carry scheme and authority beside the path.
        (Some(_), Some(p)) if h2 => p.as_str().to_owned(),
        // Absolute-form, and authority-form ("example.com:80", or "server.php",
        // which reads as a host name): passed as sent, so the engine refuses
        // what is not a path (400) instead of serving "/".
        _ => parts.uri.to_string(),
    };
    let proto = protocol(parts.version);
    // RFC 9112 §3.2: exactly one Host in HTTP/1.1, never two (applications build
    // links from it; two would let a cache and the application disagree).
    let hosts = parts.headers.get_all(hyper::header::HOST).iter().count();
    let host_ok = hosts == 1 || (hosts == 0 && parts.version < hyper::Version::HTTP_11);
    let remote_ip = peer.ip().to_canonical().to_string();
    let local_ip = local.ip().to_canonical().to_string();
    let addrs = Addrs {
        remote_ip: &remote_ip,
        remote_port: peer.port(),
        local_ip: &local_ip,
        local_port: local.port(),
        tls: tls.as_deref(),
    };
    let framing_ok = host_ok && transfer_coding_ok(&parts.headers);
    // A client waiting for `100 Continue` gets the final answer instead when the
    // engine can give it without the body (404, 400, a static file): hyper sends
    // `100 Continue` only once the body is read. The connection then closes, as
    // the client may send the body anyway. (An announced body over the limit is
    // 413 from read_body, which looks at Content-Length before reading.)
    let early = match framing_ok
        && expects_continue(&parts.headers)
        && !body.is_end_stream()
        && body.size_hint().lower() <= limits.max_body_size
    {
        true => with_c_request(&parts, &target, proto, None, addrs, |creq| {
            // SAFETY: creq borrows locals that outlive this call; the engine
            // copies what it keeps.
            unsafe { engine.handle_before_body(creq, tls_info(addrs).as_ref()) }
        }),
        false => None,
    };
    let (rx, close) = match early {
        Some(rx) => (rx, true),
        None => {
            let body = match framing_ok {
                false => Err(StatusCode::BAD_REQUEST),
                true => {
                    let what = || format!("{} {target}", parts.method);
                    read_body(body, limits.max_body_size, limits.body_read_timeout, &what).await
                }
            };
            let body = match body {
                Ok(b) => b.map(Arc::new),
                Err(status) => {
                    // The body may be unread: the connection cannot carry another
                    // request (HTTP/2 resets the stream instead).
                    let mut r = plain(status);
                    if !h2 {
                        r.headers_mut()
                            .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
                    }
                    let length = r.body().size_hint().exact();
                    log.log(
                        &peer,
                        &parts.method,
                        &target,
                        proto,
                        status.as_u16(),
                        length,
                        &parts.headers,
                    );
                    return r;
                }
            };
            let rx = with_c_request(&parts, &target, proto, body.as_ref(), addrs, |creq| {
                // SAFETY: creq borrows locals that outlive this call (the engine
                // copies what it keeps before returning), except body_read_ctx:
                // the Spooled it points at goes with the completion, which keeps
                // it alive.
                unsafe { engine.handle_async(creq, tls_info(addrs).as_ref(), body.clone()) }
            });
            (rx, false)
        }
    };
    let resp = match rx.await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "request failed inside the engine");
            return plain(StatusCode::INTERNAL_SERVER_ERROR);
        }
        Err(_) => return plain(StatusCode::INTERNAL_SERVER_ERROR),
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
            sendfile: len >= sendfile::MIN_SENDFILE && sendfile::available(),
            owner: FileOwner::new(resp),
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
    if !h2 && (close || DRAINING.load(std::sync::atomic::Ordering::Relaxed)) {
        out = out.header(hyper::header::CONNECTION, "close");
    }
    out.body(body)
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR))
}

/// The connection's addresses as the engine gets them.
#[derive(Clone, Copy)]
struct Addrs<'a> {
    remote_ip: &'a str,
    remote_port: u16,
    local_ip: &'a str,
    local_port: u16,
    /// The connection is TLS: what PHP is told of it.
    tls: Option<&'a crate::tls::Facts>,
}

/// Calls `f` with the C view of a request; the view borrows from the arguments
/// and does not outlive the call.
fn with_c_request<T>(
    parts: &hyper::http::request::Parts,
    target: &str,
    proto: &str,
    body: Option<&Arc<spool::Spooled>>,
    addrs: Addrs<'_>,
    f: impl FnOnce(&fephp_request) -> T,
) -> T {
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
        // The engine pulls the body (memory or spool file) as it is read.
        body: std::ptr::null(),
        body_len: body.map_or(0, |b| b.len() as usize),
        body_read: body.map(|_| spool::body_read as _),
        body_read_ctx: body.map_or(std::ptr::null_mut(), |b| Arc::as_ptr(b) as *mut _),
        remote_addr: fstr(addrs.remote_ip.as_bytes()),
        remote_port: addrs.remote_port,
        local_addr: fstr(addrs.local_ip.as_bytes()),
        local_port: addrs.local_port,
        tls: addrs.tls.is_some(),
    };
    f(&creq)
}

/// The C view of a TLS connection's facts (borrowing from `addrs`).
fn tls_info(addrs: Addrs<'_>) -> Option<fe_php::ffi::fephp_tls_info> {
    addrs.tls.map(|t| fe_php::ffi::fephp_tls_info {
        size: std::mem::size_of::<fe_php::ffi::fephp_tls_info>(),
        protocol: fstr(t.protocol.as_bytes()),
        cipher: fstr(t.cipher.as_bytes()),
        server_name: fstr(t.server_name.as_bytes()),
    })
}

/// Whether the client waits for `100 Continue` before sending its body.
fn expects_continue(headers: &hyper::HeaderMap) -> bool {
    headers
        .get_all(hyper::header::EXPECT)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
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

/// A response body that keeps its connection marked busy until hyper has sent it.
pub struct ConnBody {
    body: HostBody,
    _busy: Busy,
}

impl http_body::Body for ConnBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = self.get_mut();
        this.body.poll_frame_to(cx, this._busy.files())
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A response body as hyper sends it.
pub enum HostBody {
    Empty,
    Bytes(Option<Bytes>),
    /// `remaining` bytes of `fd` from `pos`; `owner` keeps the descriptor open.
    /// With `sendfile` the chunks are stand-ins for the socket to send from the file.
    File {
        owner: Arc<FileOwner>,
        fd: i32,
        pos: u64,
        remaining: u64,
        sendfile: bool,
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
        self.get_mut().poll_frame_to(cx, None)
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

impl HostBody {
    /// The next frame, for a connection whose socket sends file stand-ins from
    /// `files` (None: file bytes are read into memory).
    fn poll_frame_to(
        &mut self,
        cx: &mut Context<'_>,
        files: Option<&SendQueue>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self {
            HostBody::Empty => Poll::Ready(None),
            HostBody::Bytes(b) => Poll::Ready(
                b.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            HostBody::File {
                owner,
                fd,
                pos,
                remaining,
                sendfile,
            } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                if let (true, Some(files)) = (*sendfile, files) {
                    let n = (*remaining).min(sendfile::SPAN as u64) as usize;
                    let stand_in = files.push(owner, *fd, *pos, n);
                    *pos += n as u64;
                    *remaining -= n as u64;
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(stand_in)))));
                }
                let want = (*remaining).min(CHUNK as u64) as usize;
                let mut buf = BytesMut::zeroed(want);
                // Page-cache reads; a blocking pread of one chunk is what nginx does too.
                // SAFETY: fd stays open while `owner` lives; buf is valid for `want` bytes.
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
                            let mut slot = waker.slot();
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
}
