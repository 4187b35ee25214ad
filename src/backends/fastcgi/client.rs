//! One FastCGI request over one connection: the request is written while the
//! response is read (php-fpm may answer before it has read all of STDIN), records
//! are decoded as they arrive, STDOUT goes to the `Responder`, STDERR to the log.

use super::failure::{ConnectError, Failure};
use super::protocol::{self, Decoder, EndRequest};
use super::response::Responder;
use super::Timeouts;
use crate::backends::prompt_ack::PromptAck;
use crate::config::FpmAddress;
use crate::http::request_body::RequestBody;
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// STDERR logged per request; the rest is counted, not logged.
const MAX_STDERR_LOGGED: usize = 64 * 1024;
/// STDERR and unknown records a response may carry before it is refused: a peer
/// that sends only those must not keep a request alive forever.
const MAX_IGNORED: u64 = 64 << 20;
/// Request bytes gathered before a write.
const WRITE_CHUNK: usize = 128 * 1024;

/// A connection to PHP-FPM.
pub enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

type ReadHalf<'a> = Box<dyn AsyncRead + Unpin + Send + 'a>;
type WriteHalf<'a> = Box<dyn AsyncWrite + Unpin + Send + 'a>;

impl Conn {
    /// Connects within `timeout`; the error says which of the two failed.
    pub async fn connect(address: &FpmAddress, timeout: Duration) -> Result<Conn, ConnectError> {
        let connect = async {
            match address {
                FpmAddress::Tcp(a) => {
                    let s = TcpStream::connect(a.as_str()).await?;
                    // Records go out in several writes: never wait for Nagle.
                    s.set_nodelay(true)?;
                    Ok(Conn::Tcp(s))
                }
                FpmAddress::Unix(p) => Ok(Conn::Unix(UnixStream::connect(p).await?)),
            }
        };
        match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(ConnectError::Io(e)),
            Err(_) => Err(ConnectError::Timeout),
        }
    }

    fn split(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        match self {
            Conn::Tcp(s) => {
                let fd = s.as_raw_fd();
                let (r, w) = s.split();
                // php-fpm leaves Nagle on: see prompt_ack for the 40 ms it avoids.
                (Box::new(PromptAck::new(r, fd)), Box::new(w))
            }
            Conn::Unix(s) => {
                let (r, w) = s.split();
                (Box::new(r), Box::new(w))
            }
        }
    }

    /// True when an idle connection still looks usable: the peer has not closed it
    /// (php-fpm closes when a child exits, e.g. after pm.max_requests) and sent
    /// nothing unexpected.
    pub fn is_reusable(&self) -> bool {
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        let sock = match self {
            Conn::Tcp(s) => socket2::SockRef::from(s),
            Conn::Unix(s) => socket2::SockRef::from(s),
        };
        // Tokio sockets are non-blocking: WouldBlock means open and quiet.
        matches!(sock.peek(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

/// How an exchange ended well.
pub struct Exchanged {
    /// The connection is clean (request fully written, nothing after END_REQUEST)
    /// and may serve another request.
    pub reusable: bool,
}

/// Sends one request (`request` = BEGIN_REQUEST + PARAMS records, then `body` as
/// STDIN, read as it goes out) and feeds the response to `responder` until
/// END_REQUEST. A failure says whether any byte of the request went out
/// (`Failure::unsent`): only a request none of which was sent may go to another
/// upstream.
pub async fn exchange(
    conn: &mut Conn,
    request: &[u8],
    body: &RequestBody,
    timeouts: &Timeouts,
    responder: &mut Responder,
) -> Result<Exchanged, Failure> {
    let sent = AtomicBool::new(false);
    exchange_noting(conn, request, body, timeouts, responder, &sent)
        .await
        .map_err(|f| Failure {
            unsent: !sent.load(Relaxed),
            ..f
        })
}

async fn exchange_noting(
    conn: &mut Conn,
    request: &[u8],
    body: &RequestBody,
    timeouts: &Timeouts,
    responder: &mut Responder,
    sent: &AtomicBool,
) -> Result<Exchanged, Failure> {
    let (mut r, mut w) = conn.split();
    let mut write = pin!(write_request(&mut w, request, body, timeouts.send, sent));
    let mut read = pin!(read_response(&mut r, timeouts.read, responder));
    let mut written: Option<io::Result<()>> = None;
    loop {
        tokio::select! {
            res = &mut write, if written.is_none() => {
                let res = match res {
                    // PHP-FPM was told CONTENT_LENGTH: without the whole body it
                    // would wait for the rest.
                    Err(WriteError::Body(e)) => return Err(Failure::request_body(e)),
                    Err(WriteError::Socket(e)) => Err(e),
                    Ok(()) => Ok(()),
                };
                if matches!(&res, Err(e) if e.kind() == io::ErrorKind::TimedOut) {
                    return Err(Failure::send_timeout(timeouts.send));
                }
                // Another error (EPIPE, reset): the read side tells whether PHP-FPM
                // answered anything before it went away.
                written = Some(res);
            }
            res = &mut read => {
                let leftover = res?;
                return Ok(Exchanged {
                    reusable: leftover == 0 && matches!(written, Some(Ok(()))),
                });
            }
        }
    }
}

/// Why writing a request stopped.
enum WriteError {
    /// The socket (or the send timeout).
    Socket(io::Error),
    /// Reading the body from the host.
    Body(io::Error),
}

async fn write_request(
    w: &mut WriteHalf<'_>,
    request: &[u8],
    body: &RequestBody,
    timeout: Duration,
    sent: &AtomicBool,
) -> Result<(), WriteError> {
    let mut left = body.len();
    let mut out = Vec::with_capacity(
        (request.len() as u64 + left + 64).min(WRITE_CHUNK as u64 + 64) as usize,
    );
    out.extend_from_slice(request);
    // Pieces of whole records: small requests go out in one write. The body is read
    // (page-cache reads of a spooled body at worst) straight into the records.
    let mut piece = vec![0u8; (2 * protocol::MAX_CONTENT).min(left as usize)];
    while left > 0 {
        let want = (left as usize).min(piece.len());
        let n = match body.read(&mut piece[..want]) {
            Ok(0) => {
                return Err(WriteError::Body(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the body ended {left} bytes early"),
                )))
            }
            Ok(n) => n,
            Err(e) => return Err(WriteError::Body(e)),
        };
        left -= n as u64;
        protocol::push_stdin(&mut out, &piece[..n]);
        if out.len() >= WRITE_CHUNK {
            write_timed(w, &out, timeout, sent)
                .await
                .map_err(WriteError::Socket)?;
            out.clear();
        }
    }
    protocol::push_end_of_stdin(&mut out);
    write_timed(w, &out, timeout, sent)
        .await
        .map_err(WriteError::Socket)
}

/// Writes all of `data` within `timeout`; `sent` turns true with the first byte
/// the socket takes.
async fn write_timed(
    w: &mut WriteHalf<'_>,
    data: &[u8],
    timeout: Duration,
    sent: &AtomicBool,
) -> io::Result<()> {
    let write = async {
        let mut rest = data;
        while !rest.is_empty() {
            let n = w.write(rest).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            sent.store(true, Relaxed);
            rest = &rest[n..];
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, write).await {
        Ok(r) => r,
        Err(_) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// How long PHP-FPM may be silent in the middle of a response before what it sent
/// so far goes to the client (`flush()`): shorter gaps are just its write pattern.
const IDLE_GRACE: Duration = Duration::from_millis(2);

/// Polls `fut` once: `None` when it would wait.
async fn now<F: Future>(fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut);
    std::future::poll_fn(|cx| match fut.as_mut().poll(cx) {
        Poll::Ready(v) => Poll::Ready(Some(v)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

/// Reads records until END_REQUEST; returns the bytes left after it (0 when clean).
pub async fn read_response(
    r: &mut ReadHalf<'_>,
    timeout: Duration,
    responder: &mut Responder,
) -> Result<usize, Failure> {
    // Whether any byte came back: a kept-alive connection that fails before that
    // was stale, and the request can go again.
    let mut received = false;
    let mut dec = Decoder::new();
    let mut stderr = StderrLog::default();
    let mut ignored: u64 = 0;
    loop {
        while let Some(rec) = dec.next_record().map_err(|e| Failure::bad_protocol(e.0))? {
            if rec.request_id != protocol::REQUEST_ID {
                ignored += rec.content.len() as u64;
            } else {
                match rec.kind {
                    protocol::STDOUT => responder.stdout(rec.content).await?,
                    protocol::STDERR => {
                        ignored += rec.content.len() as u64;
                        stderr.push(rec.content, responder.uri());
                    }
                    protocol::END_REQUEST => {
                        let end = EndRequest::decode(rec.content)
                            .map_err(|e| Failure::bad_protocol(e.0))?;
                        stderr.flush(responder.uri());
                        if end.protocol_status != protocol::REQUEST_COMPLETE {
                            return Err(Failure::refused(end.protocol_status_name()));
                        }
                        responder.finish().await?;
                        return Ok(dec.pending());
                    }
                    _ => ignored += rec.content.len() as u64,
                }
            }
            if ignored > MAX_IGNORED {
                return Err(Failure::bad_protocol(format!(
                    "more than {} MiB of STDERR or unexpected records",
                    MAX_IGNORED >> 20
                )));
            }
        }
        // Nothing complete is left: hand over what PHP has produced if it is
        // pausing, then wait for more.
        let n = match now(r.read_buf(dec.read_buffer())).await {
            Some(n) => n,
            // php-fpm writes a response in pieces a few microseconds apart (one per
            // output buffer): only a gap longer than IDLE_GRACE is PHP pausing.
            None => match tokio::time::timeout(IDLE_GRACE, r.read_buf(dec.read_buffer())).await {
                Ok(n) => n,
                Err(_) => {
                    responder.idle().await?;
                    match tokio::time::timeout(timeout, r.read_buf(dec.read_buffer())).await {
                        Ok(n) => n,
                        Err(_) => return Err(Failure::read_timeout(timeout)),
                    }
                }
            },
        };
        match n {
            Ok(0) => {
                stderr.flush(responder.uri());
                return Err(Failure::eof(received));
            }
            Ok(_) => received = true,
            Err(e) => {
                stderr.flush(responder.uri());
                return Err(Failure::io(e, received));
            }
        }
    }
}

/// STDERR lines, logged with the request they belong to, never sent to the client.
#[derive(Default)]
struct StderrLog {
    line: Vec<u8>,
    logged: usize,
    dropped: usize,
}

impl StderrLog {
    fn push(&mut self, data: &[u8], uri: &str) {
        for &b in data {
            if b == b'\n' {
                self.emit(uri);
            } else if self.logged + self.line.len() < MAX_STDERR_LOGGED {
                self.line.push(b);
            } else {
                self.dropped += 1;
            }
        }
    }

    fn emit(&mut self, uri: &str) {
        if !self.line.is_empty() {
            let text = String::from_utf8_lossy(&self.line);
            tracing::warn!(target: "php", uri, "PHP-FPM stderr: {}", text.trim_end());
            self.logged += self.line.len();
            self.line.clear();
        }
    }

    fn flush(&mut self, uri: &str) {
        self.emit(uri);
        if self.dropped > 0 {
            tracing::warn!(target: "php", uri, "PHP-FPM stderr: {} more bytes not logged", self.dropped);
            self.dropped = 0;
        }
    }
}

/// Asks PHP-FPM for FCGI_GET_VALUES on `conn` (php-fpm answers, then closes).
pub async fn get_values(
    conn: &mut Conn,
    timeout: Duration,
) -> Result<Vec<(String, String)>, Failure> {
    let (mut r, mut w) = conn.split();
    let request = protocol::get_values(&["FCGI_MAX_CONNS", "FCGI_MAX_REQS", "FCGI_MPXS_CONNS"]);
    match tokio::time::timeout(timeout, w.write_all(&request)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(Failure::io(e, false)),
        Err(_) => return Err(Failure::send_timeout(timeout)),
    }
    let mut dec = Decoder::new();
    loop {
        if let Some(rec) = dec.next_record().map_err(|e| Failure::bad_protocol(e.0))? {
            if rec.kind != protocol::GET_VALUES_RESULT {
                return Err(Failure::bad_protocol(format!(
                    "record type {} instead of FCGI_GET_VALUES_RESULT",
                    rec.kind
                )));
            }
            let pairs =
                protocol::decode_pairs(rec.content).map_err(|e| Failure::bad_protocol(e.0))?;
            return Ok(pairs
                .into_iter()
                .map(|(n, v)| {
                    (
                        String::from_utf8_lossy(&n).into_owned(),
                        String::from_utf8_lossy(&v).into_owned(),
                    )
                })
                .collect());
        }
        match tokio::time::timeout(timeout, r.read_buf(dec.read_buffer())).await {
            Ok(Ok(0)) => return Err(Failure::eof(dec.pending() > 0)),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(Failure::io(e, dec.pending() > 0)),
            Err(_) => return Err(Failure::read_timeout(timeout)),
        }
    }
}
