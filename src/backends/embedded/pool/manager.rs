//! The pool manager: the runners' parent, as php-fpm's master is its children's.
//!
//! It forks runners (at least `min_runners`; one more whenever a job waits and no
//! runner is idle, up to `max_runners`), lets idle ones above the minimum go,
//! kills a runner whose job has run past `request_deadline` (its client gets 504),
//! and answers 502 for a job whose runner died. It runs until every process that
//! could send a job (the master and its I/O processes) has gone.

use super::board::{self, Exit, BUSY, FREE, IDLE, STARTING};
use super::runner::{
    self, EXIT_BROKEN, EXIT_MEMORY, EXIT_RECYCLED, EXIT_RESTARTED, EXIT_WORKER_ENDED,
    EXIT_WORKER_FAILED,
};
use super::wire;
use super::Pool;
use crate::backends::embedded::runtime::Runtime;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::*;
use std::time::{Duration, Instant};

/// How often the manager looks at the board when nothing wakes it.
const TICK: Duration = Duration::from_millis(50);
/// Runner starts that fail within this long count toward the back-off.
const FAST_FAILURE: Duration = Duration::from_secs(1);

/// Forks the manager from this process (where PHP has started).
/// `others`: the pools started before, whose descriptors the new manager and its
/// runners must not keep (above all their life lines, which would keep those
/// managers alive).
pub fn fork(
    pool: &'static Pool,
    rt: &'static Runtime,
    others: &[&'static Pool],
) -> Result<(), String> {
    let threads = std::fs::read_dir("/proc/self/task").map_or(1, |d| d.count());
    if threads > 1 {
        tracing::debug!(
            threads,
            "the PHP runner pool is forked from a process with several threads"
        );
    }
    // SAFETY: fork; the child only runs the manager loop below and never returns.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(format!(
            "cannot start the PHP runner pool: fork failed: {}",
            std::io::Error::last_os_error()
        )),
        0 => {
            for other in others {
                other.close_all();
            }
            run(pool, rt)
        }
        _ => Ok(()),
    }
}

/// A check worth caching for a few milliseconds (it reads /proc).
#[derive(Default)]
struct Checked(Option<(Instant, bool)>);

impl Checked {
    fn get(&mut self, check: impl FnOnce() -> bool) -> bool {
        match self.0 {
            Some((at, v)) if at.elapsed() < Duration::from_millis(5) => v,
            _ => {
                let v = check();
                self.0 = Some((Instant::now(), v));
                v
            }
        }
    }
}

struct Runner {
    pid: libc::pid_t,
    slot: usize,
    started: Instant,
    /// Killed for the deadline (its job gets 504, not 502).
    deadline: bool,
}

fn run(pool: &'static Pool, rt: &'static Runtime) -> ! {
    // SAFETY: signal dispositions and mask of this single-threaded child. The
    // host's stop and reload signals are the master's business: the manager ends
    // when the life line closes, after the I/O processes have finished.
    unsafe {
        for sig in [
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGPIPE,
            libc::SIGUSR1,
            libc::SIGUSR2,
        ] {
            libc::signal(sig, libc::SIG_IGN);
        }
        libc::signal(libc::SIGCHLD, libc::SIG_DFL);
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
    runner::set_name("fe-php: pool");
    // Only the I/O side holds the life line's write end and the lanes' receiving ends.
    // SAFETY: closing descriptors this process will not use; the OwnedFds in
    // the pool are never used here again.
    unsafe {
        libc::close(pool.life_write.as_raw_fd());
        libc::close(pool.submit.as_raw_fd());
        for (recv, _) in &pool.lanes {
            libc::close(recv.as_raw_fd());
        }
    }
    let board = &pool.board;
    let s = &pool.settings;
    let mut runners: Vec<Runner> = Vec::new();
    let mut failures = 0u32;
    let mut not_before = Instant::now();
    let mut last_spawn = Instant::now() - Duration::from_secs(1);
    let cores = crate::config::cores();
    let mut room = Checked::default();
    let mut watched = Instant::now();
    let mut refused = 0u64;
    loop {
        let mut fds = [
            libc::pollfd {
                fd: pool.life_read.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: pool.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: polls two valid descriptors.
        unsafe { libc::poll(fds.as_mut_ptr(), 2, TICK.as_millis() as i32) };
        if fds[0].revents != 0 {
            shutdown(&runners);
        }
        if fds[1].revents != 0 {
            let mut v = [0u8; 8];
            // SAFETY: drains the eventfd into a local.
            unsafe {
                libc::read(
                    pool.wake.as_raw_fd(),
                    v.as_mut_ptr() as *mut libc::c_void,
                    8,
                )
            };
        }
        reap(pool, &mut runners, &mut failures, &mut not_before);
        if let Some(every) = s.watch {
            // Development: workers look at the files they loaded this often.
            if watched.elapsed() >= every.0 {
                watched = Instant::now();
                board.header().code_check.fetch_add(1, SeqCst);
            }
        }

        // Runners start once the I/O processes have said who they run as.
        if board.header().ident.load(SeqCst) != 2 || Instant::now() < not_before {
            continue;
        }
        let live = runners.len();
        let header = board.header();
        let want = if live < s.min_runners {
            s.min_runners - live
        } else if live < s.max_runners
            && header.queued.load(SeqCst) > 0
            && header.idle.load(SeqCst) <= 0
            && last_spawn.elapsed() >= Duration::from_millis(1)
            && room.get(|| cpu_has_room(pool, &runners, cores))
        {
            // One at a time: a runner starts in about a millisecond, and the
            // next wake tells whether jobs still wait.
            1
        } else {
            0
        };
        for _ in 0..want {
            match spawn(pool, rt) {
                Some(r) => runners.push(r),
                None => break,
            }
            last_spawn = Instant::now();
        }
        if want > 0 {
            // More may be needed at once: look again without sleeping a tick.
            if header.queued.load(SeqCst) > 0 && header.idle.load(SeqCst) <= 0 {
                nudge(pool);
            }
        }
        police(pool, &mut runners);
        if pool.worker.is_some() {
            refuse_while_no_worker_boots(pool, failures, &mut refused);
        }
    }
}

/// A worker pool whose script keeps failing to boot has no runner to take its
/// requests: rather than let them wait for `request_deadline`, answer them 503
/// (the log says why) until a worker boots.
fn refuse_while_no_worker_boots(pool: &Pool, failures: u32, refused: &mut u64) {
    let board = &pool.board;
    let booted = board
        .slots()
        .any(|(_, s)| matches!(s.state.load(SeqCst), IDLE | BUSY));
    if failures == 0 || booted {
        if *refused > 0 {
            tracing::info!(
                "a worker of {} has booted: its requests are served again ({} answered 503 meanwhile)",
                super::section(&pool.name),
                refused
            );
            *refused = 0;
        }
        return;
    }
    let mut buf = Vec::new();
    while let Ok(Some(_file)) = wire::try_recv(pool.take.as_raw_fd(), &mut buf) {
        board.header().queued.fetch_sub(1, SeqCst);
        pool.answer_message(&buf, 503, 0);
        if *refused == 0 {
            tracing::error!(
                "the worker script of {} fails to boot (see above): its requests are answered 503 until a worker boots",
                super::section(&pool.name)
            );
        }
        *refused += 1;
    }
}

/// Whether another runner would help: the pool's busy runners are mostly waiting
/// (on a database, an API, a sleep) rather than running, and fewer of them run
/// than the machine has cores. Jobs that wait while the runners wait get a new
/// runner; jobs that wait because the runners keep the CPUs busy do not (more
/// runners would only share the same CPUs, in more memory). A runner queued for
/// a file lock counts as running: another one would queue behind the same lock
/// (PHP's file sessions lock for the whole request, so a client sending many
/// requests with one session cookie would otherwise grow the pool to its
/// maximum). Other load on the machine does not count: it is not this pool's to
/// judge.
fn cpu_has_room(pool: &Pool, runners: &[Runner], cores: usize) -> bool {
    let (mut running, mut waiting) = (0, 0);
    for r in runners {
        if pool.board.slot(r.slot).state.load(SeqCst) != BUSY {
            continue;
        }
        let tid = pool.board.slot(r.slot).tid.load(SeqCst);
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/task/{tid}/stat", r.pid)) else {
            continue;
        };
        // "pid (comm) S …": the state follows the last ')'.
        match stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
        {
            Some('R') => running += 1,
            Some('S') if waits_for_a_file_lock(r.pid, tid) => running += 1,
            Some('S' | 'D') => waiting += 1,
            _ => {}
        }
    }
    running < cores && (running + waiting < cores || waiting >= running)
}

/// Whether the thread sleeps in the kernel's wait for a `flock` or `fcntl` lock
/// (its wait channel). Unreadable (another user's process): no.
fn waits_for_a_file_lock(pid: i32, tid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/wchan")).is_ok_and(|w| {
        matches!(
            w.trim(),
            "locks_lock_inode_wait"
                | "flock_lock_inode_wait"
                | "posix_lock_inode_wait"
                | "do_lock_file_wait"
                | "fcntl_setlk"
        )
    })
}

fn nudge(pool: &Pool) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: an 8-byte write to the pool's eventfd.
    unsafe {
        libc::write(
            pool.wake.as_raw_fd(),
            one.as_ptr() as *const libc::c_void,
            8,
        )
    };
}

fn spawn(pool: &'static Pool, rt: &'static Runtime) -> Option<Runner> {
    let board = &pool.board;
    let (index, slot) = board.slots().find(|(_, s)| s.state.load(SeqCst) == FREE)?;
    slot.state.store(STARTING, SeqCst);
    slot.stop.store(0, SeqCst);
    slot.requests.store(0, SeqCst);
    slot.id.store(0, SeqCst);
    slot.tid.store(0, SeqCst);
    // SAFETY: this process is single-threaded; the child runs the runner and
    // never returns.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => {
            tracing::error!(
                "cannot start a PHP runner: fork failed: {}",
                std::io::Error::last_os_error()
            );
            slot.state.store(FREE, SeqCst);
            None
        }
        0 => runner::main(pool, rt, index),
        pid => {
            slot.pid.store(pid, SeqCst);
            Some(Runner {
                pid,
                slot: index,
                started: Instant::now(),
                deadline: false,
            })
        }
    }
}

/// Reaps runners that ended and answers for the job any of them held.
fn reap(pool: &Pool, runners: &mut Vec<Runner>, failures: &mut u32, not_before: &mut Instant) {
    let board = &pool.board;
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own children, non-blocking.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        let Some(at) = runners.iter().position(|r| r.pid == pid) else {
            continue;
        };
        let r = runners.swap_remove(at);
        let slot = board.slot(r.slot);
        let state = slot.state.load(SeqCst);
        let signaled = libc::WIFSIGNALED(status);
        let code = if signaled {
            0
        } else {
            libc::WEXITSTATUS(status)
        };
        let reason = if r.deadline {
            Exit::Deadline
        } else if signaled || code == EXIT_BROKEN || code == EXIT_WORKER_FAILED {
            Exit::Crashed
        } else if code == EXIT_WORKER_ENDED {
            Exit::WorkerEnded
        } else if code == EXIT_RESTARTED {
            Exit::Restarted
        } else if code == EXIT_RECYCLED {
            Exit::Recycled
        } else if code == EXIT_MEMORY {
            Exit::Memory
        } else {
            Exit::Idle
        };
        board.header().exits[reason as usize].fetch_add(1, Relaxed);
        if state == IDLE && signaled {
            // It died waiting: it was counted idle.
            board.header().idle.fetch_sub(1, SeqCst);
        }
        if state == BUSY {
            let id = slot.id.load(SeqCst);
            let lane = slot.lane.load(SeqCst) as usize;
            let what = slot.what();
            let answer: u16 = if r.deadline { 504 } else { 502 };
            if r.deadline {
                tracing::error!(
                    "PHP request {what} ran past {} request_deadline = \"{}\": its runner (pid {pid}) was killed and replaced; answered 504. Raise request_deadline if such requests are expected, or find where the script waits (set slowlog_timeout for its stack)",
                    super::section(&pool.name),
                    pool.settings.request_deadline
                );
            } else {
                let how = if signaled {
                    format!("was killed by signal {}", libc::WTERMSIG(status))
                } else {
                    format!("exited with status {code}")
                };
                tracing::error!(
                    "the PHP runner (pid {pid}) running {what} {how}; answered 502 and started a new runner. Only this request was affected; a crash in an extension shows in the system log (dmesg)"
                );
            }
            pool.answer(lane, id, answer, r.slot as u32);
        }
        slot.pid.store(0, SeqCst);
        slot.state.store(FREE, SeqCst);
        if matches!(reason, Exit::Crashed)
            && (r.started.elapsed() < FAST_FAILURE || code == EXIT_WORKER_FAILED)
        {
            *failures += 1;
            let wait =
                Duration::from_millis(100 << (*failures).min(8)).min(Duration::from_secs(30));
            tracing::error!(
                "a PHP runner died {:.0?} after it started ({} in a row): starting the next one in {wait:.1?}",
                r.started.elapsed(),
                failures
            );
            *not_before = Instant::now() + wait;
        } else if !matches!(reason, Exit::Crashed) {
            *failures = 0;
        }
    }
}

/// Deadlines and idle runners.
fn police(pool: &Pool, runners: &mut [Runner]) {
    let board = &pool.board;
    let s = &pool.settings;
    let now = board::now_ns();
    let deadline = s.request_deadline.0.as_nanos() as u64;
    let slow = s.slowlog_timeout.map_or(0, |d| d.0.as_nanos() as u64);
    let idle_limit = s.idle_timeout.0.as_nanos() as u64;
    let mut idle_live = runners.len();
    for r in runners.iter_mut() {
        let slot = board.slot(r.slot);
        let since = slot.since.load(SeqCst);
        let busy_for = now.saturating_sub(since);
        if slot.state.load(SeqCst) == BUSY && slow != 0 && busy_for > slow {
            let id = slot.id.load(SeqCst);
            if slot.slow_wanted.load(SeqCst) != id {
                slot.slow_wanted.store(id, SeqCst);
            } else if slot.slow_ready.load(SeqCst) == id && slot.stack_len() > 0 {
                tracing::warn!(
                    "PHP request {} has run for {:.1} s ({} slowlog_timeout = \"{}\"), in runner pid {}; its PHP stack:\n{}",
                    slot.what(),
                    busy_for as f64 / 1e9,
                    super::section(&pool.name),
                    s.slowlog_timeout.map(|d| d.to_string()).unwrap_or_default(),
                    r.pid,
                    slot.stack().trim_end()
                );
                slot.clear_stack();
            }
        }
        match slot.state.load(SeqCst) {
            BUSY if deadline != 0 && !r.deadline && now.saturating_sub(since) > deadline => {
                r.deadline = true;
                // SAFETY: kill of our own child.
                unsafe { libc::kill(r.pid, libc::SIGKILL) };
            }
            IDLE if idle_live > s.min_runners
                && slot.stop.load(SeqCst) == 0
                && now.saturating_sub(since) > idle_limit =>
            {
                slot.stop.store(1, SeqCst);
                idle_live -= 1;
            }
            _ => {}
        }
    }
}

/// Every I/O process has gone: nobody waits for an answer any more.
fn shutdown(runners: &[Runner]) -> ! {
    for r in runners {
        // SAFETY: kill of our own children.
        unsafe { libc::kill(r.pid, libc::SIGKILL) };
    }
    for _ in runners {
        // SAFETY: reaps our children.
        unsafe { libc::waitpid(-1, std::ptr::null_mut(), 0) };
    }
    // SAFETY: ends the manager without the parent's atexit handlers.
    unsafe { libc::_exit(0) }
}
