//! The messages between I/O processes and runners, and the sockets they cross.
//!
//! Both directions are `SOCK_SEQPACKET` socket pairs: a message arrives whole or
//! not at all, many processes may send on one end, and each message reaches
//! exactly one of the processes receiving on the other end. That last property is
//! the pool's queue: every runner receives from the same socket, so whichever
//! runner is free takes the next job. A body too large to travel inline is a file
//! whose descriptor rides along (`SCM_RIGHTS`).
//!
//! Encoding: little-endian integers; a string is a u32 length then its bytes
//! (`u32::MAX` for none).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Largest message either side sends (well under the socket buffer, which bounds
/// a `SOCK_SEQPACKET` message).
pub const MAX_MESSAGE: usize = 96 * 1024;
/// Bodies up to this size travel inside the job message.
pub const INLINE_BODY: usize = 64 * 1024;
/// Response bodies are cut into chunks of this size.
pub const CHUNK: usize = 64 * 1024;

/// A reply's kind.
pub const HEAD: u8 = 1;
pub const CHUNK_DATA: u8 = 2;
pub const END: u8 = 3;
/// The response cannot be completed: the I/O side closes the connection.
pub const FAIL: u8 = 4;

/// HEAD flags: the whole body is in this message.
pub const WHOLE: u8 = 1;
/// HEAD flags: the body follows in chunks and is streamed to the client as it comes.
pub const STREAMED: u8 = 2;
/// HEAD flags: the body follows in chunks but is one buffered body (sent whole).
pub const BUFFERED: u8 = 4;
/// HEAD flags (with WHOLE): no body at all (a HEAD request's response).
pub const EMPTY: u8 = 8;

/// A socket pair of `SOCK_SEQPACKET` sockets, close-on-exec.
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: socketpair fills two new descriptors on success.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are new descriptors owned by nobody else.
    let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    for fd in [&a, &b] {
        let size: libc::c_int = 4 << 20;
        // SAFETY: setsockopt with a valid int; the kernel caps it at wmem_max.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                &size as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    Ok((a, b))
}

/// Sends one message, with `fd` attached if given. `nonblocking`: EAGAIN instead
/// of waiting when the socket's buffer is full.
pub fn send(sock: RawFd, msg: &[u8], fd: Option<RawFd>, nonblocking: bool) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: msg.as_ptr() as *mut libc::c_void,
        iov_len: msg.len(),
    };
    // Room for one descriptor, aligned for cmsghdr.
    let mut control = [0u64; 4];
    // SAFETY: msghdr is plain data; zeroed is its empty value.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    if let Some(fd) = fd {
        // SAFETY: CMSG_SPACE/LEN are pure; the control buffer is 32 bytes, enough
        // for one int's cmsg; CMSG_FIRSTHDR points into it.
        unsafe {
            hdr.msg_control = control.as_mut_ptr() as *mut libc::c_void;
            hdr.msg_controllen = libc::CMSG_SPACE(4) as usize;
            let c = libc::CMSG_FIRSTHDR(&hdr);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(4) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut RawFd, fd);
        }
    }
    let flags = libc::MSG_NOSIGNAL | if nonblocking { libc::MSG_DONTWAIT } else { 0 };
    loop {
        // SAFETY: hdr points at live buffers for the duration of the call.
        let n = unsafe { libc::sendmsg(sock, &hdr, flags) };
        if n >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// A message on the queue that is not a job: it wakes a runner waiting for one
/// (worker mode: to look at its code after a reload).
pub const POKE: &[u8] = b"\xffpoke";

/// Receives one message into `buf` (cleared first), with the descriptor that
/// came with it. `Ok(None)`: the other end is closed. A receive timeout set on
/// the socket surfaces as `WouldBlock`.
pub fn recv(sock: RawFd, buf: &mut Vec<u8>) -> io::Result<Option<Option<File>>> {
    recv_with(sock, buf, 0)
}

/// `recv` that never waits: `WouldBlock` when no message is there.
pub fn try_recv(sock: RawFd, buf: &mut Vec<u8>) -> io::Result<Option<Option<File>>> {
    recv_with(sock, buf, libc::MSG_DONTWAIT)
}

fn recv_with(
    sock: RawFd,
    buf: &mut Vec<u8>,
    flags: libc::c_int,
) -> io::Result<Option<Option<File>>> {
    buf.clear();
    buf.reserve(MAX_MESSAGE);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.capacity(),
    };
    let mut control = [0u64; 4];
    // SAFETY: as in `send`.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    hdr.msg_controllen = std::mem::size_of_val(&control);
    let n = loop {
        // SAFETY: hdr points at live buffers; MSG_CMSG_CLOEXEC marks received fds.
        let n = unsafe { libc::recvmsg(sock, &mut hdr, libc::MSG_CMSG_CLOEXEC | flags) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    // SAFETY: recvmsg wrote n bytes into the reserved capacity.
    unsafe { buf.set_len(n) };
    let mut file = None;
    // SAFETY: walking the control messages recvmsg filled in.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&hdr);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const RawFd);
                file = Some(File::from_raw_fd(fd));
            }
            c = libc::CMSG_NXTHDR(&hdr, c);
        }
    }
    if n == 0 && file.is_none() {
        return Ok(None);
    }
    Ok(Some(file))
}

/// Sets a receive timeout on a socket (None: wait forever).
pub fn set_recv_timeout(sock: RawFd, timeout: Option<std::time::Duration>) {
    let tv = timeout.map_or(
        libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
        |t| libc::timeval {
            tv_sec: t.as_secs() as libc::time_t,
            tv_usec: t.subsec_micros() as libc::suseconds_t,
        },
    );
    // SAFETY: setsockopt with a valid timeval.
    unsafe {
        libc::setsockopt(
            sock,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
}

/// Appends values to a message.
#[derive(Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
        self
    }
    pub fn opt(&mut self, v: Option<&[u8]>) -> &mut Self {
        match v {
            Some(v) => self.bytes(v),
            None => self.u32(u32::MAX),
        }
    }
}

/// Reads values from a message; every read fails cleanly past its end.
pub struct Reader<'a>(pub &'a [u8]);

fn short() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "truncated pool message")
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(short());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    pub fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> io::Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
    }
    pub fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    pub fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    pub fn bytes(&mut self) -> io::Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub fn opt(&mut self) -> io::Result<Option<&'a [u8]>> {
        match self.u32()? {
            u32::MAX => Ok(None),
            n => self.take(n as usize).map(Some),
        }
    }
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    #[test]
    fn messages_and_descriptors_cross() {
        let (a, b) = pair().unwrap();
        let mut w = Writer::default();
        w.u8(7)
            .u16(300)
            .u32(70_000)
            .u64(1 << 40)
            .bytes(b"abc")
            .opt(None)
            .opt(Some(b""));
        let mut f = tempfile_in_tmp();
        f.write_all(b"body bytes").unwrap();
        send(a.as_raw_fd(), &w.0, Some(f.as_raw_fd()), false).unwrap();
        drop(f);
        let mut buf = Vec::new();
        let got = recv(b.as_raw_fd(), &mut buf).unwrap().unwrap();
        let mut r = Reader(&buf);
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.u16().unwrap(), 300);
        assert_eq!(r.u32().unwrap(), 70_000);
        assert_eq!(r.u64().unwrap(), 1 << 40);
        assert_eq!(r.bytes().unwrap(), b"abc");
        assert_eq!(r.opt().unwrap(), None);
        assert_eq!(r.opt().unwrap(), Some(&b""[..]));
        assert!(r.u8().is_err(), "reads past the end fail");
        let mut file = got.expect("descriptor attached");
        file.rewind().unwrap();
        let mut s = String::new();
        file.read_to_string(&mut s).unwrap();
        assert_eq!(s, "body bytes");
        drop(a);
        assert!(
            recv(b.as_raw_fd(), &mut buf).unwrap().is_none(),
            "closed end"
        );
    }

    fn tempfile_in_tmp() -> File {
        crate::http::request_body::spool_file(&std::env::temp_dir()).unwrap()
    }
}
