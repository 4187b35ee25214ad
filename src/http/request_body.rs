//! A request's body as the backends read it: bytes the host handed over, or a
//! body the host serves through its `body_read` callback as PHP or an upstream
//! connection pulls it, so a large body never has to sit in memory.
//!
//! The C ABI lets the library call `body_read` only until the request's
//! completion has been delivered. A backend still reading then (PHP that flushed
//! before reading `php://input`, an upstream answering before it took the whole
//! body) gets the rest copied into a temporary file of the library's first
//! (`release`); backends that are done say so (`close`), so nothing is copied
//! for them.

use parking_lot::Mutex;
use std::ffi::c_void;
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The host's `body_read` callback and its context.
#[derive(Clone, Copy)]
pub struct HostReader {
    pub read: unsafe extern "C" fn(ctx: *mut c_void, buf: *mut u8, cap: usize) -> isize,
    pub ctx: *mut c_void,
}

// SAFETY: the C ABI requires `body_read` to be callable from any thread until the
// completion is delivered; `Shared::state`'s mutex makes the calls one at a time,
// and `release` ends them before the completion runs.
unsafe impl Send for HostReader {}

/// A request body shared by the engine and the backend that reads it.
#[derive(Clone)]
pub struct RequestBody {
    shared: Arc<Shared>,
}

struct Shared {
    /// The exact length of the body.
    len: u64,
    /// Where the rest of a host body is copied when it must outlive the request.
    spool_dir: PathBuf,
    state: Mutex<Inner>,
}

struct Inner {
    state: State,
    /// Counts `rewind`s: a reader of an earlier pass (an abandoned attempt's
    /// connection) can no longer read.
    generation: u64,
}

enum State {
    /// Bytes the host handed over (or the body, read ahead).
    Memory { bytes: Vec<u8>, pos: usize },
    /// The host's callback; `read` bytes of it are consumed.
    Host {
        reader: HostReader,
        read: u64,
        /// A backend reads it (so `release` must keep what is left).
        attached: bool,
    },
    /// What was left of a host body when its request completed.
    Spooled { file: File, pos: u64, len: u64 },
    /// Nobody reads it any more.
    Closed,
}

/// Reads ahead bodies up to this size, so that they can be sent again (a stale
/// kept-alive connection, the next upstream).
pub const READ_AHEAD_UP_TO: u64 = 64 * 1024;

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RequestBody({} bytes)", self.shared.len)
    }
}

impl RequestBody {
    fn new(len: u64, spool_dir: PathBuf, state: State) -> RequestBody {
        RequestBody {
            shared: Arc::new(Shared {
                len,
                spool_dir,
                state: Mutex::new(Inner {
                    state,
                    generation: 0,
                }),
            }),
        }
    }

    /// A body in memory.
    pub fn memory(bytes: Vec<u8>) -> RequestBody {
        RequestBody::new(
            bytes.len() as u64,
            std::env::temp_dir(),
            State::Memory { bytes, pos: 0 },
        )
    }

    /// A body of `len` bytes at the start of `file` (one that crossed to a pool
    /// runner).
    pub fn file(file: File, len: u64) -> RequestBody {
        RequestBody::new(
            len,
            std::env::temp_dir(),
            State::Spooled { file, pos: 0, len },
        )
    }

    /// A body of exactly `len` bytes the host serves through `reader`; what must
    /// outlive the request is copied into `spool_dir`.
    ///
    /// # Safety
    /// `reader` must be callable as the C ABI documents `body_read` until
    /// `release` has run.
    pub unsafe fn host(reader: HostReader, len: u64, spool_dir: PathBuf) -> RequestBody {
        RequestBody::new(
            len,
            spool_dir,
            State::Host {
                reader,
                read: 0,
                attached: false,
            },
        )
    }

    /// The exact length of the body.
    pub fn len(&self) -> u64 {
        self.shared.len
    }

    #[cfg_attr(not(feature = "internals"), allow(dead_code))]
    pub fn is_empty(&self) -> bool {
        self.shared.len == 0
    }

    /// Declares that a backend reads this body (after the completion, too).
    pub fn attach(&self) {
        if let State::Host { attached, .. } = &mut self.shared.state.lock().state {
            *attached = true;
        }
    }

    /// The backend will not read any more.
    pub fn close(&self) {
        self.shared.state.lock().state = State::Closed;
    }

    /// Called before the host's completion runs: from then on the host's callback
    /// is never called. A backend that may still read gets the rest of the body
    /// from a temporary file.
    pub fn release(&self) {
        let mut inner = self.shared.state.lock();
        let state = &mut inner.state;
        let State::Host {
            reader,
            read,
            attached,
        } = *state
        else {
            return;
        };
        if !attached {
            *state = State::Closed;
            return;
        }
        if read >= self.shared.len {
            // Consumed: a reader looking again finds the end.
            *state = State::Memory {
                bytes: Vec::new(),
                pos: 0,
            };
            return;
        }
        let left = self.shared.len - read;
        *state = match self.spool_rest(reader, left) {
            Ok(file) => State::Spooled {
                file,
                pos: 0,
                len: left,
            },
            Err(e) => {
                tracing::error!(
                    "cannot keep the rest of a request body ({left} bytes) in {}: {e}; the backend gets it truncated. Free space there or point [php.ini] upload_tmp_dir at a directory with room",
                    self.shared.spool_dir.display()
                );
                State::Closed
            }
        };
    }

    fn spool_rest(&self, reader: HostReader, mut left: u64) -> io::Result<File> {
        let mut file = spool_file(&self.shared.spool_dir)?;
        let mut buf = vec![0u8; 64 * 1024];
        while left > 0 {
            let want = (left as usize).min(buf.len());
            let n = host_read(reader, &mut buf[..want])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the host's body ended early",
                ));
            }
            file.write_all(&buf[..n])?;
            left -= n as u64;
        }
        file.seek(SeekFrom::Start(0))?;
        Ok(file)
    }

    /// Copies the next bytes into `buf`; Ok(0) at the end of the body. A body
    /// that ends before its length, or a failed read, is an error.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut inner = self.shared.state.lock();
        Self::read_state(&mut inner.state, self.shared.len, buf)
    }

    /// The current pass over the body, for `read_pass`.
    pub fn pass(&self) -> u64 {
        self.shared.state.lock().generation
    }

    /// As `read`, for a reader of pass `pass`: an error once the body was rewound
    /// for another reader.
    pub fn read_pass(&self, pass: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut inner = self.shared.state.lock();
        if inner.generation != pass {
            return Err(io::Error::other("the request body is being sent again"));
        }
        Self::read_state(&mut inner.state, self.shared.len, buf)
    }

    fn read_state(state: &mut State, len: u64, buf: &mut [u8]) -> io::Result<usize> {
        match state {
            State::Memory { bytes, pos } => {
                let rest = &bytes[(*pos).min(bytes.len())..];
                let n = rest.len().min(buf.len());
                buf[..n].copy_from_slice(&rest[..n]);
                *pos += n;
                Ok(n)
            }
            State::Host { reader, read, .. } => {
                let left = len - *read;
                if left == 0 || buf.is_empty() {
                    return Ok(0);
                }
                let want = (left.min(buf.len() as u64)) as usize;
                let n = host_read(*reader, &mut buf[..want])?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "the host's body_read ended after {} of {} bytes",
                            *read, len
                        ),
                    ));
                }
                *read += n as u64;
                Ok(n)
            }
            State::Spooled { file, pos, len } => {
                let want = ((*len - *pos).min(buf.len() as u64)) as usize;
                if want == 0 {
                    return Ok(0);
                }
                let n = file.read_at(&mut buf[..want], *pos)?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                *pos += n as u64;
                Ok(n)
            }
            State::Closed => Err(io::Error::other("the request body is no longer available")),
        }
    }

    /// Reads a host body of at most `limit` bytes into memory now, so that it can
    /// be read again (`rewind`).
    pub fn read_ahead(&self, limit: u64) -> io::Result<()> {
        if self.shared.len > limit {
            return Ok(());
        }
        let mut inner = self.shared.state.lock();
        let State::Host {
            reader, read: 0, ..
        } = inner.state
        else {
            return Ok(());
        };
        let mut bytes = vec![0u8; self.shared.len as usize];
        let mut got = 0;
        while got < bytes.len() {
            match host_read(reader, &mut bytes[got..])? {
                0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "the host's body_read ended after {got} of {} bytes",
                            self.shared.len
                        ),
                    ))
                }
                n => got += n,
            }
        }
        inner.state = State::Memory { bytes, pos: 0 };
        Ok(())
    }

    /// Starts the body again from its first byte; false when that is impossible
    /// (part of a host body was consumed already).
    pub fn rewind(&self) -> bool {
        let mut inner = self.shared.state.lock();
        let ok = match &mut inner.state {
            State::Memory { pos, .. } => {
                *pos = 0;
                true
            }
            State::Host { read, .. } => *read == 0,
            // A spooled body that is the whole body (nothing was read before it was
            // spooled) can be read again from its start: a failed-over request.
            State::Spooled { pos, len, .. } if *len == self.shared.len => {
                *pos = 0;
                true
            }
            State::Spooled { .. } | State::Closed => false,
        };
        if ok {
            inner.generation += 1;
        }
        ok
    }
}

/// One call of the host's callback, checked: -1 (or any negative) is an error,
/// more than asked for is an error.
fn host_read(reader: HostReader, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes; the reader is callable as long
    // as its state is Host (see `HostReader`'s Send).
    let n = unsafe { (reader.read)(reader.ctx, buf.as_mut_ptr(), buf.len()) };
    match usize::try_from(n) {
        Ok(n) if n <= buf.len() => Ok(n),
        Ok(n) => Err(io::Error::other(format!(
            "the host's body_read returned {n} bytes for a buffer of {}",
            buf.len()
        ))),
        Err(_) => Err(io::Error::other("the host's body_read failed")),
    }
}

/// A new temporary file in `dir` that no other process can open and that
/// disappears with its descriptor: `O_TMPFILE` where the file system has it, else
/// a file unlinked as soon as it is created.
pub fn spool_file(dir: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
    {
        Ok(f) => return Ok(f),
        // No O_TMPFILE here (EOPNOTSUPP, or EISDIR on old kernels): below.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR)) => {}
        Err(e) => return Err(e),
    }
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    loop {
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!(".fephp-body-{}-{seq}", std::process::id()));
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => {
                std::fs::remove_file(&path)?;
                return Ok(f);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Source {
        data: Vec<u8>,
        pos: usize,
        calls: usize,
    }

    unsafe extern "C" fn read_source(ctx: *mut c_void, buf: *mut u8, cap: usize) -> isize {
        let s = &mut *(ctx as *mut Source);
        s.calls += 1;
        let n = (s.data.len() - s.pos).min(cap).min(1000);
        std::ptr::copy_nonoverlapping(s.data[s.pos..].as_ptr(), buf, n);
        s.pos += n;
        n as isize
    }

    fn host(src: &mut Source, len: u64) -> RequestBody {
        let reader = HostReader {
            read: read_source,
            ctx: src as *mut Source as *mut c_void,
        };
        unsafe { RequestBody::host(reader, len, std::env::temp_dir()) }
    }

    fn read_all(b: &RequestBody) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = [0u8; 777];
        loop {
            match b.read(&mut buf)? {
                0 => return Ok(out),
                n => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    #[test]
    fn host_bodies_read_whole_and_stop_at_their_length() {
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let mut src = Source {
            data: [data.clone(), b"EXTRA".to_vec()].concat(),
            pos: 0,
            calls: 0,
        };
        let b = host(&mut src, 10_000);
        assert_eq!(read_all(&b).unwrap(), data);
        assert!(!b.rewind());
    }

    #[test]
    fn a_host_body_shorter_than_its_length_is_an_error() {
        let mut src = Source {
            data: b"abc".to_vec(),
            pos: 0,
            calls: 0,
        };
        let b = host(&mut src, 100);
        let e = read_all(&b).unwrap_err();
        assert!(e.to_string().contains("ended after 3 of 100 bytes"), "{e}");
    }

    #[test]
    fn release_spools_the_rest_for_an_attached_reader_only() {
        let data: Vec<u8> = (0..50_000u32).map(|i| (i * 3) as u8).collect();
        let mut src = Source {
            data: data.clone(),
            pos: 0,
            calls: 0,
        };
        let b = host(&mut src, data.len() as u64);
        b.attach();
        let mut first = [0u8; 500];
        assert_eq!(b.read(&mut first).unwrap(), 500);
        b.release();
        let calls = src.calls;
        let rest = read_all(&b).unwrap();
        assert_eq!(src.calls, calls, "no host call after release");
        assert_eq!([&first[..], &rest].concat(), data);

        // Nobody attached: nothing is copied, nothing can be read.
        let mut src = Source {
            data: data.clone(),
            pos: 0,
            calls: 0,
        };
        let b = host(&mut src, data.len() as u64);
        b.release();
        assert_eq!(src.calls, 0);
        assert!(b.read(&mut first).is_err());
    }

    #[test]
    fn small_bodies_read_ahead_can_be_sent_again() {
        let mut src = Source {
            data: b"hello".to_vec(),
            pos: 0,
            calls: 0,
        };
        let b = host(&mut src, 5);
        b.read_ahead(READ_AHEAD_UP_TO).unwrap();
        assert_eq!(read_all(&b).unwrap(), b"hello");
        assert!(b.rewind());
        assert_eq!(read_all(&b).unwrap(), b"hello");
    }
}
