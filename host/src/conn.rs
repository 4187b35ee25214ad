//! The waits of a connection that hyper's HTTP/1 server does not time (or not
//! apart): receiving a request head (`header_read_timeout`), a keep-alive
//! connection idling between requests (`keepalive_timeout`), and a client that
//! stops taking a response (`send_timeout`). hyper's own `header_read_timeout`
//! also runs while a kept-alive connection is idle, so one value would have to
//! serve both, and it has no write timeout at all; here the socket itself
//! enforces them.

use crate::sendfile::{self, SendQueue};
use parking_lot::Mutex;
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// What a client whose request head is late gets before the connection closes.
const REQUEST_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 20\r\nConnection: close\r\n\r\n408 Request Timeout\n";

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header: Duration,
    pub keepalive: Duration,
    /// Longest a write may wait for the client to take bytes.
    pub send: Duration,
}

/// Where a connection stands between requests; shared by its socket, its service
/// and the body of its current response.
pub struct ConnState {
    phase: Mutex<Phase>,
    /// File ranges of the responses being sent, for `sendfile`; None when the
    /// bytes must pass through the process (TLS, HTTP/2 framing).
    files: Option<SendQueue>,
    /// HTTP/2: requests overlap, and bytes arriving between them are frames
    /// (pings, window updates), not the start of a request head.
    multiplexed: bool,
}

struct Phase {
    /// Requests being served: heads parsed, responses not yet sent (HTTP/1.1:
    /// at most one).
    busy: usize,
    /// Bytes of the next request have arrived.
    head_started: bool,
    /// The request being served has a body, which may still be arriving.
    body_expected: bool,
    /// When the current wait began: the connection's start, the end of the last
    /// response (or its last write), or the first byte of the next request.
    since: Instant,
    /// Responses sent on this connection.
    served: u64,
    /// The task that found nothing to read while the connection was busy.
    idle_reader: Option<Waker>,
}

/// Marks the connection busy while alive. It travels with the response body, so
/// dropping it (when hyper has sent the body) starts the keep-alive wait.
pub struct Busy(Arc<ConnState>);

impl Busy {
    /// The file ranges queued for this connection's socket, when it sends files
    /// itself.
    pub fn files(&self) -> Option<&SendQueue> {
        self.0.files.as_ref()
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let waker = {
            let mut p = self.0.phase.lock();
            p.busy -= 1;
            p.served += 1;
            if p.busy > 0 {
                return;
            }
            p.head_started = false;
            p.since = Instant::now();
            p.idle_reader.take()
        };
        // hyper may already be waiting on the socket (it polls it while a request
        // runs): have it read again so the keep-alive wait gets its timer.
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl ConnState {
    /// `sendfile`: the socket may send file ranges itself (plain HTTP/1.1).
    pub fn new(sendfile: bool, multiplexed: bool) -> Arc<ConnState> {
        Arc::new(ConnState {
            phase: Mutex::new(Phase {
                busy: 0,
                head_started: false,
                body_expected: false,
                since: Instant::now(),
                served: 0,
                idle_reader: None,
            }),
            files: sendfile.then(SendQueue::default),
            multiplexed,
        })
    }

    /// Called when hyper hands a parsed request to the service.
    pub fn begin_request(self: &Arc<Self>, body_expected: bool) -> Busy {
        let mut p = self.phase.lock();
        p.busy += 1;
        p.head_started = false;
        p.body_expected = body_expected;
        Busy(self.clone())
    }

    fn on_read(&self) {
        let mut p = self.phase.lock();
        if p.busy == 0 && !p.head_started && !self.multiplexed {
            p.head_started = true;
            // The first request's head is timed from the connection's start.
            if p.served > 0 {
                p.since = Instant::now();
            }
        }
    }

    /// Whether a read that finds nothing waits for the rest of a request (its
    /// head or body) rather than for the next one or for our response.
    fn mid_request(&self) -> bool {
        let p = self.phase.lock();
        if p.busy > 0 {
            p.body_expected
        } else {
            p.head_started
        }
    }

    fn on_write(&self) {
        let mut p = self.phase.lock();
        // The tail of a response still going out: the idle wait starts after it.
        if p.busy == 0 && !p.head_started && p.served > 0 {
            p.since = Instant::now();
        }
    }

    /// When the current wait ends, and whether a request head is under way. While
    /// busy there is none, and `cx` is woken when the request ends.
    fn deadline(&self, t: Timeouts, cx: &Context<'_>) -> Option<(Instant, bool)> {
        let mut p = self.phase.lock();
        if p.busy > 0 {
            if !p
                .idle_reader
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                p.idle_reader = Some(cx.waker().clone());
            }
            None
        } else if p.head_started || p.served == 0 {
            Some((p.since + t.header, p.head_started))
        } else {
            Some((p.since + t.keepalive, false))
        }
    }
}

/// The client's connection: the socket itself, or TLS over it.
pub enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Io {
    /// The TCP socket underneath.
    fn tcp(&self) -> &TcpStream {
        match self {
            Io::Plain(s) => s,
            Io::Tls(t) => t.get_ref().0,
        }
    }
}

/// A client socket that fails its reads with `TimedOut` when a wait runs out:
/// hyper then closes the connection. A late request head is answered 408 first.
pub struct WatchedStream {
    stream: Io,
    state: Arc<ConnState>,
    timeouts: Timeouts,
    sleep: Pin<Box<Sleep>>,
    /// The last write did not go through: hyper still has response bytes queued.
    write_blocked: bool,
    /// Armed while writes wait for the client (at the first one that cannot go
    /// through, dropped at the next that does).
    send_wait: Option<SendWait>,
    /// Bytes were read since the last write: the kernel may hold a delayed ACK
    /// for them, which a client with Nagle on waits for before it sends the rest
    /// of a request (40 ms on a kept-alive connection).
    ack_owed: bool,
}

impl WatchedStream {
    pub fn new(stream: Io, state: Arc<ConnState>, timeouts: Timeouts) -> WatchedStream {
        WatchedStream {
            stream,
            state,
            timeouts,
            sleep: Box::pin(tokio::time::sleep(timeouts.header)),
            write_blocked: false,
            send_wait: None,
            ack_owed: false,
        }
    }

    /// Notes how a write went; a write still waiting after `send_timeout` becomes
    /// an error, so hyper closes the connection (and drops the response body,
    /// which tells a streaming backend the client has gone).
    fn note_write(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match &r {
            Poll::Ready(Ok(n)) if *n > 0 => {
                self.ack_owed = false;
                self.write_blocked = false;
                self.state.on_write();
                if let Some(w) = &mut self.send_wait {
                    // The wait ends once the client has really moved on, not at
                    // any write a trickle of acknowledgements let through.
                    if w.wrote(*n, unacked(self.stream.tcp().as_raw_fd())) {
                        self.send_wait = None;
                    }
                }
            }
            Poll::Pending => {
                self.write_blocked = true;
                let send = self.timeouts.send;
                let fd = self.stream.tcp().as_raw_fd();
                let w = self
                    .send_wait
                    .get_or_insert_with(|| SendWait::new(send, unacked(fd)));
                while w.sleep.as_mut().poll(cx).is_ready() {
                    if w.check(send, unacked(fd)) {
                        tracing::debug!(timeout = ?send, "the client took less than {} KiB of the response within send_timeout; closing", MIN_PROGRESS >> 10);
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the client took (almost) no response bytes within send_timeout",
                        )));
                    }
                }
            }
            _ => {}
        }
        r
    }
}

impl AsyncRead for WatchedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = match &mut this.stream {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(t) => Pin::new(t.as_mut()).poll_read(cx, buf),
        };
        match r {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.state.on_read();
                    this.ack_owed = true;
                }
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        // Only mid-request: otherwise our response carries the ACK anyway, and a
        // syscall per request would be wasted.
        if this.ack_owed && this.state.mid_request() {
            this.ack_owed = false;
            quick_ack(this.stream.tcp().as_raw_fd());
        }
        let Some((deadline, mid_head)) = this.state.deadline(this.timeouts, cx) else {
            return Poll::Pending;
        };
        if this.sleep.deadline() != deadline {
            this.sleep.as_mut().reset(deadline);
        }
        if this.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let what = if mid_head {
            // Best effort, and only when no response bytes are still queued (and
            // the connection is plain HTTP/1.1: raw bytes would break TLS).
            if let (false, Io::Plain(s)) = (this.write_blocked, &this.stream) {
                let _ = s.try_write(REQUEST_TIMEOUT);
            }
            "the request head did not arrive within header_read_timeout"
        } else {
            "idle connection closed"
        };
        tracing::debug!(timeout = ?this.timeouts, "{what}");
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)))
    }
}

impl WatchedStream {
    /// Writes hyper's next slices. A run of ordinary bytes that ends at a file
    /// stand-in goes out with `MSG_MORE` (so headers and the file's first bytes
    /// share a packet); a stand-in itself becomes a `sendfile` of its range.
    fn poll_write_slices(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let stream = match &mut self.stream {
            Io::Plain(s) => s,
            // Stand-ins are only made for connections whose state has a queue.
            Io::Tls(t) => return Pin::new(t.as_mut()).poll_write_vectored(cx, bufs),
        };
        let (Some(first_file), Some(files)) = (
            bufs.iter().position(|b| sendfile::is_stand_in(b.as_ptr())),
            self.state.files.as_ref(),
        ) else {
            return Pin::new(stream).poll_write_vectored(cx, bufs);
        };
        let sock = stream.as_raw_fd();
        loop {
            std::task::ready!(stream.poll_write_ready(cx))?;
            let r = stream.try_io(Interest::WRITABLE, || {
                if first_file == 0 {
                    return files.send(sock, &bufs[0]);
                }
                send_more(sock, &bufs[..first_file])
            });
            match r {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }
}

/// What a client must take of a response within each `send_timeout` while
/// writes wait for it (unless it takes all there is). Counting any byte would let
/// a client that never reads live on: once its window is shut, each zero-window
/// probe may still get a sliver of the response acknowledged (its kernel
/// compacting the receive queue), and a reader that takes a few bytes now and
/// then (a "slow read" attack) does the same on purpose. 256 KiB per 60 s (the
/// default) is 4.4 KB/s.
const MIN_PROGRESS: usize = 256 << 10;

/// A write waiting for the client. The socket only reports room once its queue
/// has drained a good part, which a slow but steady reader may take longer than
/// `send_timeout` to do: what counts is what the client has taken (acknowledged),
/// sampled every `step`, so a stall is cut between `send_timeout` and
/// `send_timeout + step` after it began. (Looking only once per `send_timeout`
/// would let a client that stalls just after a look live almost twice as long:
/// the bytes its kernel still acknowledged after the write blocked count as
/// progress at the first look, and the second one comes a whole period later.)
struct SendWait {
    sleep: Pin<Box<Sleep>>,
    /// Unacknowledged bytes at the last progress.
    unacked: usize,
    /// Bytes written since the last progress.
    written: usize,
    /// The last look that found the client had taken `MIN_PROGRESS` more.
    progress: Instant,
}

impl SendWait {
    fn new(send: Duration, unacked: usize) -> SendWait {
        let now = Instant::now();
        SendWait {
            sleep: Box::pin(tokio::time::sleep_until((now + step(send)).min(now + send))),
            unacked,
            written: 0,
            progress: now,
        }
    }

    /// Bytes the client has acknowledged since the last progress (`unacked` now).
    fn taken(&self, unacked: usize) -> usize {
        (self.unacked + self.written).saturating_sub(unacked)
    }

    /// Notes `n` bytes written (`unacked` after them); true when the wait is
    /// over: the client has taken `MIN_PROGRESS`, or everything queued before
    /// this write (it is keeping up).
    fn wrote(&mut self, n: usize, unacked: usize) -> bool {
        self.written += n;
        unacked <= n || self.taken(unacked) >= MIN_PROGRESS
    }

    /// Looks at the socket again (`unacked` now); true when the client has not
    /// taken `MIN_PROGRESS` for `send`. Otherwise the next look is scheduled.
    fn check(&mut self, send: Duration, unacked: usize) -> bool {
        let now = Instant::now();
        if self.taken(unacked) >= MIN_PROGRESS {
            self.progress = now;
            self.unacked = unacked;
            self.written = 0;
        }
        let deadline = self.progress + send;
        if now >= deadline {
            return true;
        }
        self.sleep.as_mut().reset((now + step(send)).min(deadline));
        false
    }
}

/// How often a waiting write looks for progress: a quarter of `send_timeout`, at
/// most a second.
fn step(send: Duration) -> Duration {
    (send / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// Bytes the kernel holds for the client that it has not acknowledged yet
/// (SIOCOUTQ); 0 when it cannot tell.
fn unacked(fd: i32) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int.
    if unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) } == 0 {
        n.max(0) as usize
    } else {
        0
    }
}

/// Sends a pending delayed ACK now (TCP_QUICKACK is not sticky, so it is asked
/// for at each wait).
fn quick_ack(fd: i32) {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads one c_int from a live local.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// `sendmsg` of `bufs` with `MSG_MORE`: the kernel holds them back for the bytes
/// that follow.
fn send_more(sock: i32, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: an all-zero msghdr is valid; iov points at `bufs`, whose layout is
    // that of iovec (IoSlice is documented ABI-compatible with it on Unix).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len().min(1024) as _;
    // SAFETY: msg describes live buffers for the duration of the call.
    let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_MORE | libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = this.poll_write_slices(cx, &[io::IoSlice::new(data)]);
        this.note_write(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = this.poll_write_slices(cx, bufs);
        this.note_write(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        // hyper queues body chunks as they are (sendfile stand-ins need that) only
        // for sockets that take vectored writes.
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match &mut this.stream {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            // TLS records wait in rustls until flushed: a flush that cannot go
            // through is a write waiting for the client like any other.
            Io::Tls(t) => match Pin::new(t.as_mut()).poll_flush(cx) {
                Poll::Pending => this.note_write(cx, Poll::Pending).map_ok(|_| ()),
                done => done,
            },
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(t) => Pin::new(t.as_mut()).poll_shutdown(cx),
        }
    }
}
