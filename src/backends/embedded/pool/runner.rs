//! A runner: one process, one PHP interpreter, one job at a time. It takes the
//! next job from the queue socket, runs it through the SAPI exactly as
//! in-process PHP does, and sends the response down the lane of the I/O process
//! that queued it. Forked by the manager from the process where PHP started.

use super::board::{self, Board, BUSY, IDLE};
use super::job;
use super::wire::{self, BUFFERED, CHUNK, CHUNK_DATA, EMPTY, END, STREAMED, WHOLE};
use super::Pool;
use crate::backends::embedded::executor;
use crate::backends::embedded::respond::{Respond, Sink};
use crate::backends::embedded::runtime::Runtime;
use crate::http::{Body, Response};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering::*;
use std::time::Duration;

/// Exit codes a runner ends with, read by the manager.
pub const EXIT_STOPPED: i32 = 0;
pub const EXIT_RECYCLED: i32 = 10;
pub const EXIT_MEMORY: i32 = 11;
pub const EXIT_BROKEN: i32 = 12;
/// A worker script ended after taking requests (exit(), a fatal error, or it
/// left its loop): started again at once.
pub const EXIT_WORKER_ENDED: i32 = 13;
/// A worker script ended before taking a request: a boot failure, restarted
/// with a back-off.
pub const EXIT_WORKER_FAILED: i32 = 14;
/// A worker was restarted: its code changed, or a restart was asked.
pub const EXIT_RESTARTED: i32 = 15;

/// The PHP thread's stack (as in-process PHP's).
const PHP_STACK: usize = 16 << 20;

/// Runs in the child of `fork`: never returns.
pub fn main(pool: &'static Pool, rt: &'static Runtime, index: usize) -> ! {
    let slot = pool.board.slot(index);
    // SAFETY: plain process calls in a single-threaded child.
    unsafe {
        slot.pid.store(libc::getpid(), SeqCst);
        // The manager is single-threaded: its death is its thread's.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    if let Err(e) = switch_identity(&pool.board) {
        tracing::error!("a PHP runner cannot switch to the workers' identity: {e}");
        exit(EXIT_BROKEN);
    }
    let name = format!("fe-php: runner {index}");
    set_name(&name);
    apply_ini(pool, rt);
    wire::set_recv_timeout(pool.take.as_raw_fd(), Some(Duration::from_secs(1)));
    if pool.settings.slowlog_timeout.is_some() {
        watch_for_slow_log(pool, rt, index);
    }
    let code = std::thread::Builder::new()
        .name("php".into())
        .stack_size(PHP_STACK)
        .spawn(move || {
            crate::backends::sigprof::set_blocked(false);
            match &pool.worker {
                Some(script) => super::worker::serve(pool, rt, index, script),
                None => serve(pool, rt, index),
            }
        })
        .map(|t| t.join().unwrap_or(EXIT_BROKEN))
        .unwrap_or(EXIT_BROKEN);
    exit(code)
}

fn exit(code: i32) -> ! {
    // SAFETY: ends the process without running the parent's atexit handlers or
    // PHP's module shutdown (which belongs to the process that started PHP).
    unsafe { libc::_exit(code) }
}

/// What the queue gave a runner.
pub(super) enum Taken {
    Job(Box<super::Job>),
    /// The runner must end with this exit code.
    Stop(i32),
    /// Nothing yet (a timeout or a job that was answered already).
    Again,
}

fn serve(pool: &'static Pool, rt: &'static Runtime, index: usize) -> i32 {
    start_serving(pool, index);
    let mut buf = Vec::new();
    loop {
        match take(pool, index, &mut buf) {
            Taken::Job(job) => {
                executor::run(rt, *job);
                if let Some(code) = after_job(pool, index) {
                    return code;
                }
            }
            Taken::Stop(code) => return code,
            Taken::Again => {}
        }
    }
}

pub(super) fn start_serving(pool: &Pool, index: usize) {
    crate::backends::sigprof::set_blocked(false);
    // SAFETY: gettid has no preconditions.
    pool.board
        .slot(index)
        .tid
        .store(unsafe { libc::gettid() }, SeqCst);
}

/// Waits for the next job on the queue (a second at most) and marks this runner
/// busy with it.
pub(super) fn take(pool: &'static Pool, index: usize, buf: &mut Vec<u8>) -> Taken {
    let board = &pool.board;
    let header = board.header();
    let slot = board.slot(index);
    if slot.stop.load(SeqCst) != 0 {
        return Taken::Stop(EXIT_STOPPED);
    }
    slot.since.store(board::now_ns(), SeqCst);
    slot.state.store(IDLE, SeqCst);
    header.idle.fetch_add(1, SeqCst);
    let got = wire::recv(pool.take.as_raw_fd(), buf);
    header.idle.fetch_sub(1, SeqCst);
    let file = match got {
        Ok(Some(file)) => file,
        Ok(None) => return Taken::Stop(EXIT_STOPPED),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Taken::Again,
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Taken::Again,
        Err(e) => {
            tracing::error!("a PHP runner cannot read the queue: {e}");
            return Taken::Stop(EXIT_BROKEN);
        }
    };
    if buf.as_slice() == wire::POKE {
        return Taken::Again;
    }
    header.queued.fetch_sub(1, SeqCst);
    let (env, mut job) = match job::decode(buf, file) {
        Ok(x) => x,
        Err(e) => {
            // The sender still waits: answer 500 when the message says who.
            tracing::error!("a PHP runner received a malformed job: {e}; answered 500");
            pool.answer_message(buf, 500, index as u32);
            return Taken::Again;
        }
    };
    let now = board::now_ns();
    header.taken.fetch_add(1, Relaxed);
    let waited = now.saturating_sub(env.submitted_ns) / 1000;
    header.wait_us.fetch_add(waited, Relaxed);
    let bucket = board::WAIT_BUCKETS_US
        .iter()
        .position(|&le| waited <= le)
        .unwrap_or(board::WAIT_BUCKETS_US.len());
    header.wait_buckets[bucket].fetch_add(1, Relaxed);
    slot.lane.store(env.lane, SeqCst);
    slot.id.store(env.id, SeqCst);
    slot.set_what(&format!(
        "{} (script {})",
        job.log_uri,
        job.script_filename.to_string_lossy()
    ));
    slot.since.store(now, SeqCst);
    slot.state.store(BUSY, SeqCst);
    let lane = match pool.lanes.get(env.lane as usize) {
        Some((_, send)) => send.as_raw_fd(),
        // A lane this pool never had: nobody could be answered.
        None => return Taken::Again,
    };
    job.complete = Some(Box::new(Remote {
        board,
        lane,
        lane_index: env.lane as usize,
        runner: index as u32,
        id: env.id,
    }));
    Taken::Job(Box::new(job))
}

/// After a job: whether this runner must now end (max_requests, memory budget),
/// with the exit code that says why.
pub(super) fn after_job(pool: &Pool, index: usize) -> Option<i32> {
    let settings = &pool.settings;
    let slot = pool.board.slot(index);
    let done = slot.requests.fetch_add(1, Relaxed) + 1;
    if settings.max_requests != 0 && done >= settings.max_requests {
        slot.state.store(IDLE, SeqCst);
        return Some(EXIT_RECYCLED);
    }
    if settings.memory_budget.0 != 0 && done % 16 == 0 {
        if let Some(own) = own_memory() {
            if own > settings.memory_budget.0 {
                tracing::warn!(
                    "a PHP runner uses {} MiB of its own memory after {done} requests, above {} memory_budget = {}: it is replaced",
                    own >> 20,
                    super::section(&pool.name),
                    settings.memory_budget
                );
                slot.state.store(IDLE, SeqCst);
                return Some(EXIT_MEMORY);
            }
        }
    }
    None
}

/// The slow log's watcher: when the manager asks for the stack of the running
/// job, it reads PHP's frames (NTS PHP's executor state is a plain global of this
/// process) and posts them on the board for the manager to log. Reading does not
/// interrupt the script: a script blocked in a query or a sleep is not disturbed.
fn watch_for_slow_log(pool: &'static Pool, rt: &'static Runtime, index: usize) {
    let spawned = std::thread::Builder::new()
        .name("php-slowlog".into())
        .stack_size(64 << 10)
        .spawn(move || {
            crate::backends::sigprof::set_blocked(true);
            let slot = pool.board.slot(index);
            let mut buf = vec![0u8; board::STACK];
            loop {
                std::thread::sleep(Duration::from_millis(100));
                let wanted = slot.slow_wanted.load(SeqCst);
                if wanted == 0
                    || slot.slow_ready.load(SeqCst) == wanted
                    || slot.id.load(SeqCst) != wanted
                    || slot.state.load(SeqCst) != BUSY
                {
                    continue;
                }
                // SAFETY: the shim only reads PHP's frames into `buf` (of its length).
                let n = unsafe {
                    rt.shim
                        .fephp_sapi_backtrace(buf.as_mut_ptr() as *mut std::ffi::c_char, buf.len())
                };
                slot.set_stack(&buf[..n.min(buf.len())]);
                slot.slow_ready.store(wanted, SeqCst);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("a PHP runner cannot start its slow-log watcher: {e}");
    }
}

/// Applies the pool's own php.ini settings (`[php.pools.NAME.ini]`) to this
/// runner's PHP, before its first request.
fn apply_ini(pool: &Pool, rt: &'static Runtime) {
    for (k, v) in &pool.settings.ini {
        let v = v.to_string();
        // SAFETY: pointers and lengths of live strings; PHP is idle in this process.
        let rc = unsafe {
            rt.shim.fephp_sapi_ini_set(
                k.as_ptr() as *const std::ffi::c_char,
                k.len(),
                v.as_ptr() as *const std::ffi::c_char,
                v.len(),
            )
        };
        match rc {
            0 => {}
            -1 => tracing::warn!(
                "{}.ini] {k}: PHP has no such setting; ignored",
                super::section(&pool.name).trim_end_matches(']')
            ),
            _ => tracing::warn!(
                "{}.ini] {k} = {v}: PHP refused the value; ignored",
                super::section(&pool.name).trim_end_matches(']')
            ),
        }
    }
}

/// Private resident memory of this process (resident minus shared pages).
fn own_memory() -> Option<u64> {
    use std::os::unix::fs::FileExt;
    // /proc/self/statm stays open: opening a /proc file costs about ten times
    // reading it again. The descriptor names the process that opened it, so a
    // runner forked from a process that had it open opens its own.
    static STATM: parking_lot::Mutex<Option<(u32, std::fs::File)>> = parking_lot::Mutex::new(None);
    let mut statm = STATM.lock();
    let pid = std::process::id();
    if statm.as_ref().is_none_or(|(owner, _)| *owner != pid) {
        *statm = Some((pid, std::fs::File::open("/proc/self/statm").ok()?));
    }
    let (_, file) = statm.as_ref()?;
    let mut buf = [0u8; 128];
    let n = file.read_at(&mut buf, 0).ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    let mut it = text.split_whitespace().skip(1);
    let resident: u64 = it.next()?.parse().ok()?;
    let shared: u64 = it.next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    Some(resident.saturating_sub(shared) * page)
}

/// Switches to the identity the I/O processes published, when running as root.
fn switch_identity(board: &Board) -> Result<(), String> {
    let h = board.header();
    // SAFETY: plain identity calls on values from the board.
    unsafe {
        if libc::geteuid() != 0 || h.ident.load(SeqCst) != 2 {
            return Ok(());
        }
        let (uid, gid) = (h.uid.load(SeqCst), h.gid.load(SeqCst));
        if uid == 0 {
            return Ok(());
        }
        let n = (h.ngroups.load(SeqCst) as usize).min(32);
        let groups: Vec<libc::gid_t> = h.groups[..n].iter().map(|g| g.load(SeqCst)).collect();
        let os = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
        if libc::setgroups(groups.len(), groups.as_ptr()) != 0 {
            return Err(os("setgroups"));
        }
        if libc::setgid(gid) != 0 {
            return Err(os("setgid"));
        }
        if libc::setuid(uid) != 0 {
            return Err(os("setuid"));
        }
        if libc::setuid(0) == 0 {
            return Err("root could be regained after setuid".to_owned());
        }
    }
    Ok(())
}

/// Names the process as `ps` shows it (its comm, 15 bytes).
pub fn set_name(name: &str) {
    let mut bytes = name.as_bytes()[..name.len().min(15)].to_vec();
    bytes.push(0);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, bytes.as_ptr()) };
}

/// Whether the process owning lane `i` still exists.
fn owner_alive(board: &Board, i: usize) -> bool {
    let pid = board.lane(i).load(SeqCst);
    // SAFETY: kill with signal 0 only checks.
    pid != 0 && unsafe { libc::kill(pid, 0) == 0 || *libc::__errno_location() != libc::ESRCH }
}

/// Sends a response to the lane of the I/O process that queued the job.
struct Remote {
    board: &'static Board,
    lane: RawFd,
    lane_index: usize,
    runner: u32,
    id: u64,
}

impl Remote {
    /// Sends a reply. A lane whose owner has gone (an I/O process killed) fills
    /// up and is never read: the reply is dropped then instead of waiting.
    fn send(&self, msg: &[u8]) -> bool {
        loop {
            match wire::send(self.lane, msg, None, true) {
                Ok(()) => return true,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let mut fd = libc::pollfd {
                        fd: self.lane,
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    // SAFETY: polls one valid descriptor.
                    let ready = unsafe { libc::poll(&mut fd, 1, 1000) };
                    if ready == 0 && !owner_alive(self.board, self.lane_index) {
                        return false;
                    }
                }
                Err(e) => {
                    tracing::warn!("a PHP runner cannot send a reply: {e}");
                    return false;
                }
            }
        }
    }

    fn mark_head_sent(&self) {
        self.board
            .slot(self.runner as usize)
            .head_sent
            .store(self.id, SeqCst);
    }

    fn chunks(&self, data: &[u8]) -> bool {
        data.chunks(CHUNK).all(|c| {
            let mut w = job::reply(CHUNK_DATA, 0, 0, self.runner, self.id);
            w.0.extend_from_slice(c);
            self.send(&w.0)
        })
    }

    fn end(&self) {
        let w = job::reply(END, 0, 0, self.runner, self.id);
        self.send(&w.0);
    }
}

impl Respond for Remote {
    fn complete(self: Box<Self>, resp: Response) {
        let (body, empty) = match &resp.body {
            Body::Bytes(b) => (&b[..], false),
            _ => (&[][..], true),
        };
        self.mark_head_sent();
        if body.len() <= CHUNK {
            let flags = WHOLE | if empty { EMPTY } else { 0 };
            self.send(&job::head(&resp, flags, self.runner, self.id, body));
        } else {
            let (first, rest) = body.split_at(CHUNK);
            if self.send(&job::head(&resp, BUFFERED, self.runner, self.id, first))
                && self.chunks(rest)
            {
                self.end();
            }
        }
    }

    fn stream(self: Box<Self>, resp: Response, head_only: bool) -> Box<dyn Sink> {
        self.mark_head_sent();
        if head_only {
            self.send(&job::head(&resp, WHOLE | EMPTY, self.runner, self.id, &[]));
        } else {
            self.send(&job::head(&resp, STREAMED, self.runner, self.id, &[]));
        }
        Box::new(RemoteSink {
            remote: *self,
            ended: head_only,
        })
    }
}

/// The body of a streamed response, sent chunk by chunk; dropping it ends it.
struct RemoteSink {
    remote: Remote,
    /// Nothing more may be sent (a HEAD response was complete at its head).
    ended: bool,
}

impl Sink for RemoteSink {
    fn send(&self, chunk: Vec<u8>) -> bool {
        if self.ended || self.is_aborted() {
            return false;
        }
        self.remote.chunks(&chunk)
    }

    fn is_aborted(&self) -> bool {
        let r = &self.remote;
        r.board.slot(r.runner as usize).abort.load(SeqCst) == r.id
    }
}

impl Drop for RemoteSink {
    fn drop(&mut self) {
        if !self.ended {
            self.remote.end();
        }
    }
}
