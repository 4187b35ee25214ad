//! File bodies go out with sendfile(2): from the page cache to the socket without a
//! copy through user space.
//!
//! hyper only writes bytes, so a chunk of a file travels through it as a *stand-in*:
//! a slice of a reserved read-only mapping that is never read. The body records
//! which file range each stand-in means (a `FileSpan` in the connection's queue);
//! the connection's socket (`conn::WatchedStream`) recognizes stand-ins among the
//! slices hyper writes and sends the file range instead. This works because hyper
//! keeps body chunks as they are in its write queue (the strategy it uses for
//! sockets with vectored writes) and writes them in order; the host must never turn
//! on hyper's `pipeline_flush`, which copies chunks into one buffer.

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::abi::Response;

/// Largest file range one stand-in covers (one body frame).
pub const SPAN: usize = 1 << 20;
/// Stand-ins handed out before addresses are reused. A connection never has more
/// than a handful queued (hyper buffers at most 16 chunks), so reuse is harmless.
const SLOTS: usize = 256;
/// Files smaller than this are read into memory and written with their headers in
/// one `writev`: cheaper than a separate `sendfile` for a few kilobytes.
pub const MIN_SENDFILE: u64 = 16 << 10;

/// The reserved stand-in addresses: `SLOTS * SPAN` bytes mapped read-only and never
/// touched, so they cost address space only.
struct Region {
    base: usize,
    next: AtomicUsize,
}

static REGION: once_cell::sync::Lazy<Option<Region>> = once_cell::sync::Lazy::new(|| {
    // SAFETY: a fresh anonymous mapping; nothing else refers to it.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            SLOTS * SPAN,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        tracing::warn!(error = %io::Error::last_os_error(), "no address space for sendfile stand-ins: file bodies are copied instead");
        return None;
    }
    Some(Region {
        base: p as usize,
        next: AtomicUsize::new(0),
    })
});

/// Whether stand-ins can be handed out in this process.
pub fn available() -> bool {
    REGION.is_some()
}

/// Whether `ptr` points into the stand-in region.
pub fn is_stand_in(ptr: *const u8) -> bool {
    REGION
        .as_ref()
        .is_some_and(|r| (r.base..r.base + SLOTS * SPAN).contains(&(ptr as usize)))
}

/// A stand-in slice of `len` (≤ `SPAN`) bytes.
fn stand_in(len: usize) -> &'static [u8] {
    let r = REGION.as_ref().expect("available() was checked");
    let slot = r.next.fetch_add(1, Ordering::Relaxed) % SLOTS;
    // SAFETY: the region is mapped readable for the life of the process and slot *
    // SPAN + len stays inside it; nobody writes to it.
    unsafe { std::slice::from_raw_parts((r.base + slot * SPAN) as *const u8, len.min(SPAN)) }
}

/// Keeps a response (and so its file descriptor) alive while any of its ranges are
/// queued.
pub struct FileOwner(#[allow(dead_code)] Response);

// SAFETY: a FileOwner is never accessed, only dropped: sharing references to it
// between threads can do nothing.
unsafe impl Sync for FileOwner {}

impl FileOwner {
    pub fn new(resp: Response) -> Arc<FileOwner> {
        Arc::new(FileOwner(resp))
    }
}

/// One stand-in and the file range it means.
struct FileSpan {
    addr: usize,
    len: usize,
    fd: i32,
    offset: u64,
    _owner: Arc<FileOwner>,
}

/// The file ranges of one connection, in the order hyper will write them.
#[derive(Default)]
pub struct SendQueue {
    spans: Mutex<VecDeque<FileSpan>>,
}

impl SendQueue {
    /// Queues `len` bytes of `fd` from `offset` and returns the stand-in to give hyper.
    pub fn push(&self, owner: &Arc<FileOwner>, fd: i32, offset: u64, len: usize) -> &'static [u8] {
        let s = stand_in(len);
        self.spans.lock().push_back(FileSpan {
            addr: s.as_ptr() as usize,
            len: s.len(),
            fd,
            offset,
            _owner: owner.clone(),
        });
        s
    }

    /// Sends the file bytes stood in for by `stand_in` (hyper's next slice) to the
    /// socket `sock`: `Ok(n)` bytes went out, or the error of `sendfile` (WouldBlock
    /// included). A stand-in without a queued range is an error, never zeros.
    pub fn send(&self, sock: i32, stand_in: &[u8]) -> io::Result<usize> {
        let mut spans = self.spans.lock();
        let addr = stand_in.as_ptr() as usize;
        let Some(i) = spans
            .iter()
            .position(|s| (s.addr..s.addr + s.len).contains(&addr))
        else {
            return Err(io::Error::other("a file chunk lost its place in the queue"));
        };
        // Ranges before it were never written (their response was abandoned).
        spans.drain(..i);
        let span = &spans[0];
        let done = addr - span.addr;
        let want = stand_in.len().min(span.len - done);
        let mut offset = (span.offset + done as u64) as libc::off_t;
        // SAFETY: `span` holds the response that owns `fd`, so it is open; offset
        // is a valid out pointer.
        let n = unsafe { libc::sendfile(sock, span.fd, &mut offset, want) };
        match n {
            n if n < 0 => Err(io::Error::last_os_error()),
            0 => Err(io::Error::other("file shrank while being sent")),
            n => {
                let n = n as usize;
                if done + n == span.len {
                    spans.pop_front();
                }
                Ok(n)
            }
        }
    }
}
