//! The pool's board: one shared-memory page set, mapped before any fork, where
//! runners post what they do and I/O processes claim their reply lanes. The pool
//! manager reads it to size the pool, enforce deadlines and answer for a runner
//! that died. Everything on it is an atomic: processes never lock each other.

use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU32, AtomicU64, Ordering::*};

/// Upper bounds of the queue-wait histogram's buckets, in microseconds: from a
/// tenth of a millisecond (a runner was free) to seconds (the pool was full).
pub const WAIT_BUCKETS_US: [u64; 10] = [
    100, 500, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000, 1_000_000, 5_000_000,
];

/// A runner slot's state.
pub const FREE: u32 = 0;
pub const STARTING: u32 = 1;
pub const IDLE: u32 = 2;
pub const BUSY: u32 = 3;

/// Bytes of the current request's description kept for log lines.
const WHAT: usize = 192;
/// Bytes of a slow request's PHP stack.
pub const STACK: usize = 4096;

#[repr(C)]
pub struct Header {
    /// Jobs sent to the queue and not yet taken by a runner.
    pub queued: AtomicI64,
    /// Runners waiting for a job.
    pub idle: AtomicI64,
    /// Jobs ever taken (for tests and metrics).
    pub taken: AtomicU64,
    /// Runners that ended, by reason (see `Exit`).
    pub exits: [AtomicU64; 7],
    /// Worker mode: bumped by a reload; each worker then checks whether a file
    /// its script loaded has changed, and restarts between jobs if one has.
    pub code_check: AtomicU64,
    /// Worker mode: bumped to restart every worker of the pool between jobs.
    pub restart: AtomicU64,
    /// Worker mode's leak report: the routes found leaking.
    pub leaks: [Leak; LEAKS],
    /// Jobs refused because the queue was full.
    pub rejected: AtomicU64,
    /// Sum of queue waits in microseconds (divided by `taken`: the mean).
    pub wait_us: AtomicU64,
    /// Queue waits by bucket (`WAIT_BUCKETS_US`, the last one unbounded).
    pub wait_buckets: [AtomicU64; WAIT_BUCKETS_US.len() + 1],
    /// The identity of the I/O processes, published by the first one to claim a
    /// lane (0: not yet, 1: being written, 2: set); runners switch to it.
    pub ident: AtomicU32,
    pub uid: AtomicU32,
    pub gid: AtomicU32,
    pub ngroups: AtomicU32,
    pub groups: [AtomicU32; 32],
}

/// Routes the leak report can name per pool.
pub const LEAKS: usize = 32;
/// Bytes of a route's name ("GET /path") kept.
const ROUTE: usize = 96;

/// A route found leaking: the most any worker grew by while serving it.
#[repr(C)]
pub struct Leak {
    /// 0: free, 1: being claimed, 2: `route` is set.
    state: AtomicU32,
    /// Bytes of memory the route's requests left behind.
    pub bytes: AtomicI64,
    /// Entries (global variables, classes, elements of static properties) left
    /// behind.
    pub entries: AtomicI64,
    route: [AtomicU64; ROUTE / 8],
}

impl Leak {
    pub fn route(&self) -> Option<String> {
        (self.state.load(SeqCst) == 2).then(|| read_text(&self.route))
    }
}

impl Header {
    /// The leak entry of `route`, claimed if the route has none yet; None when
    /// every entry is taken.
    pub fn leak(&self, route: &str) -> Option<&Leak> {
        let mut end = route.len().min(ROUTE - 1);
        while !route.is_char_boundary(end) {
            end -= 1;
        }
        let route = &route[..end];
        for l in &self.leaks {
            if l.route().as_deref() == Some(route) {
                return Some(l);
            }
        }
        for l in &self.leaks {
            if l.state.compare_exchange(0, 1, SeqCst, SeqCst).is_ok() {
                write_text(&l.route, route);
                l.state.store(2, SeqCst);
                return Some(l);
            }
        }
        None
    }
}

/// Writes `text` (NUL-padded) into words of shared memory.
/// Per job on a runner's hot path: no allocation, relaxed stores (readers order
/// themselves on a flag written after, or tolerate a torn description).
fn write_text(words: &[AtomicU64], text: &str) {
    let room = (words.len() * 8).saturating_sub(1);
    let text = &text.as_bytes()[..text.len().min(room)];
    let used = store_bytes(words, text);
    for w in &words[used..] {
        w.store(0, Relaxed);
    }
}

/// Packs `bytes` into the first words (the last one zero-padded); how many.
fn store_bytes(words: &[AtomicU64], bytes: &[u8]) -> usize {
    let mut used = 0;
    for (w, chunk) in words.iter().zip(bytes.chunks(8)) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        w.store(u64::from_ne_bytes(word), Relaxed);
        used += 1;
    }
    used
}

/// The first `n` bytes packed in `words`.
fn load_bytes(words: &[AtomicU64], n: usize) -> Vec<u8> {
    let mut bytes: Vec<u8> = words
        .iter()
        .take(n.div_ceil(8))
        .flat_map(|w| w.load(Relaxed).to_ne_bytes())
        .collect();
    bytes.truncate(n);
    bytes
}

/// Reads NUL-padded text from words of shared memory.
fn read_text(words: &[AtomicU64]) -> String {
    let mut bytes = load_bytes(words, words.len() * 8);
    bytes.truncate(bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len()));
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Why a runner ended.
#[derive(Clone, Copy)]
pub enum Exit {
    /// `max_requests` or the memory budget: replaced between requests.
    Recycled = 0,
    /// Killed past the request deadline.
    Deadline = 1,
    /// Died on its own (signal, exit) while it was expected to run.
    Crashed = 2,
    /// Idle past `idle_timeout`, above `min_runners`.
    Idle = 3,
    /// The memory budget.
    Memory = 4,
    /// Worker mode: the worker script ended (exit(), a fatal error, or it left
    /// its loop) after taking requests.
    WorkerEnded = 5,
    /// Worker mode: restarted because its code changed or a restart was asked.
    Restarted = 6,
}

pub const EXIT_NAMES: [&str; 7] = [
    "recycled",
    "deadline",
    "crashed",
    "idle",
    "memory",
    "worker_ended",
    "restarted",
];

#[repr(C)]
pub struct Slot {
    pub pid: AtomicI32,
    /// The thread that runs PHP in the runner (its state tells whether a busy
    /// runner computes or waits).
    pub tid: AtomicI32,
    pub state: AtomicU32,
    /// Set by the manager: exit when idle.
    pub stop: AtomicU32,
    /// The lane and id of the job being run.
    pub lane: AtomicU32,
    pub id: AtomicU64,
    /// CLOCK_MONOTONIC nanoseconds when the job (BUSY) or the wait (IDLE) began.
    pub since: AtomicU64,
    /// The response's head has been sent for `id`.
    pub head_sent: AtomicU64,
    /// The client of job `abort` has gone (set by the I/O process).
    pub abort: AtomicU64,
    /// Jobs this runner has run.
    pub requests: AtomicU64,
    /// The manager asks for the stack of job `slow_wanted` (slow log)...
    pub slow_wanted: AtomicU64,
    /// ...and the runner has written it into `stack` for job `slow_ready`.
    pub slow_ready: AtomicU64,
    stack_len: AtomicU64,
    stack: [AtomicU64; STACK / 8],
    /// "GET /x.php (script /srv/x.php)", NUL-padded: for the manager's log lines.
    what: [AtomicU64; WHAT / 8],
}

/// The mapped board.
pub struct Board {
    base: *mut u8,
    len: usize,
    pub runners: usize,
    pub lanes: usize,
}

// SAFETY: the board is only accessed through atomics.
unsafe impl Send for Board {}
unsafe impl Sync for Board {}

impl Board {
    /// Maps a zeroed board for `runners` slots and `lanes` lanes, shared with
    /// every process forked after this.
    pub fn new(runners: usize, lanes: usize) -> std::io::Result<Board> {
        let len = Self::offset_slots(lanes) + runners * std::mem::size_of::<Slot>();
        // SAFETY: an anonymous shared mapping; checked for MAP_FAILED below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Board {
            base: base as *mut u8,
            len,
            runners,
            lanes,
        })
    }

    fn offset_lanes() -> usize {
        std::mem::size_of::<Header>().next_multiple_of(64)
    }

    fn offset_slots(lanes: usize) -> usize {
        (Self::offset_lanes() + lanes * 4).next_multiple_of(64)
    }

    pub fn header(&self) -> &Header {
        // SAFETY: the mapping starts with a zeroed Header (all-zero atomics are
        // valid), page-aligned, and lives as long as self.
        unsafe { &*(self.base as *const Header) }
    }

    /// The pid owning lane `i` (0: free).
    pub fn lane(&self, i: usize) -> &AtomicI32 {
        assert!(i < self.lanes);
        // SAFETY: inside the lanes array, 4-aligned.
        unsafe { &*(self.base.add(Self::offset_lanes() + i * 4) as *const AtomicI32) }
    }

    pub fn slot(&self, i: usize) -> &Slot {
        assert!(i < self.runners);
        // SAFETY: inside the slots array, 64-aligned base, Slot of 8-byte fields.
        unsafe {
            &*(self
                .base
                .add(Self::offset_slots(self.lanes) + i * std::mem::size_of::<Slot>())
                as *const Slot)
        }
    }

    pub fn slots(&self) -> impl Iterator<Item = (usize, &Slot)> {
        (0..self.runners).map(|i| (i, self.slot(i)))
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
    }
}

impl Slot {
    pub fn set_what(&self, text: &str) {
        write_text(&self.what, text);
    }

    /// Stores a PHP stack (truncated to `STACK` bytes).
    pub fn set_stack(&self, text: &[u8]) {
        let n = text.len().min(STACK);
        store_bytes(&self.stack, &text[..n]);
        self.stack_len.store(n as u64, Relaxed);
    }

    pub fn stack_len(&self) -> u64 {
        self.stack_len.load(Relaxed)
    }

    /// Marks the stack as logged (it is logged once per job).
    pub fn clear_stack(&self) {
        self.stack_len.store(0, Relaxed);
    }

    pub fn stack(&self) -> String {
        let n = (self.stack_len.load(Relaxed) as usize).min(STACK);
        String::from_utf8_lossy(&load_bytes(&self.stack, n)).into_owned()
    }

    pub fn what(&self) -> String {
        read_text(&self.what)
    }
}

/// CLOCK_MONOTONIC in nanoseconds (the same clock in every process).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_across_fork() {
        let board = Board::new(4, 8).unwrap();
        board.slot(3).set_what("GET /x.php");
        // SAFETY: the child only touches atomics and exits with _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            board.slot(2).requests.fetch_add(5, SeqCst);
            board.lane(7).store(42, SeqCst);
            board.header().queued.fetch_add(1, SeqCst);
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(board.slot(2).requests.load(SeqCst), 5);
        assert_eq!(board.lane(7).load(SeqCst), 42);
        assert_eq!(board.header().queued.load(SeqCst), 1);
        assert_eq!(board.slot(3).what(), "GET /x.php");
    }
}
