//! A TCP stream that acknowledges received bytes before it waits for more.
//!
//! Why: php-fpm (and many HTTP upstreams) leave Nagle's algorithm on. A response
//! written in two pieces (php-fpm: an 8 KiB record, then the tail) sends the first
//! at once and holds the tail until the first is acknowledged. On a kept-alive
//! connection Linux's receiver is in "ping-pong" mode and delays that ACK up to
//! 40 ms, hoping to piggyback it on data it will send: it sends nothing until the
//! response is complete, so every response over one segment stalls about 40 ms
//! (nginx with `fastcgi_keep_conn on` shows the same stall). `TCP_QUICKACK` set
//! when a read finds the socket empty sends the owed ACK right away — one
//! `setsockopt` per wait, none when data keeps arriving or when we write (a write
//! carries the ACK itself).

use std::io;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `inner` with an ACK sent before each read that has to wait.
pub struct PromptAck<S> {
    inner: S,
    fd: RawFd,
    /// Bytes were read since the last write or quick ACK: the kernel may be
    /// sitting on a delayed ACK for them.
    owed: bool,
}

impl<S> PromptAck<S> {
    /// `fd` is the TCP socket `inner` reads from (a split half has none of its own).
    pub fn new(inner: S, fd: RawFd) -> PromptAck<S> {
        PromptAck {
            inner,
            fd,
            owed: false,
        }
    }
}

/// Sends a pending delayed ACK now (the flag is not sticky: the kernel returns to
/// delaying on its own, so this is asked for at every wait).
pub fn quick_ack(fd: RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads one c_int from a live local; a failure (not a TCP
    // socket, already closed) only means no ACK was owed there.
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

impl<S: AsyncRead + Unpin> AsyncRead for PromptAck<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        match &r {
            Poll::Ready(Ok(())) if buf.filled().len() > before => this.owed = true,
            Poll::Pending if this.owed => {
                quick_ack(this.fd);
                this.owed = false;
            }
            _ => {}
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PromptAck<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.owed = false;
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.owed = false;
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
