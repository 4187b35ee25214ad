//! The runner pool: PHP interpreters in processes of their own, shared by every
//! I/O process through one queue.
//!
//! ```text
//!  master ──fork──▶ I/O processes ── job ──▶ [queue socket] ──▶ runner (any free one)
//!    │                  ▲                                        │
//!    │                  └──────── reply on the process's lane ◀──┘
//!    └──fork──▶ pool manager ──fork──▶ runners
//! ```
//!
//! `start` runs once, in the process where PHP started (before the host forks its
//! workers): it maps the board, makes the queue and the reply lanes, and forks the
//! manager, which forks the runners from that same PHP (so they share OPcache's
//! memory). An I/O process claims a lane on its first job (`client`), sends jobs
//! to the queue and receives replies on its lane in a thread of its own; its I/O
//! threads never wait for PHP. The manager sizes the pool, enforces the request
//! deadline and answers for a runner that died (`manager`); a runner runs one job
//! at a time through the same SAPI as in-process PHP (`runner`).

mod board;
mod client;
mod job;
mod leaks;
mod manager;
mod runner;
mod wire;
mod worker;

use super::runtime::Runtime;
use super::Job;
use crate::config::PoolConfig;
use board::Board;
use parking_lot::Mutex;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The pools of this process tree, by name ("default" is `[php.pool]`). Each
/// lives as long as the process (leaked on purpose: runners and workers hold
/// its descriptors and mapping).
static POOLS: Mutex<Vec<&'static Pool>> = parking_lot::const_mutex(Vec::new());

/// The name of `[php.pool]`.
pub const DEFAULT: &str = "default";

/// A worker pool's script (`worker = "..."`).
pub struct WorkerScript {
    /// Absolute, inside the document root.
    pub path: PathBuf,
    /// As configured, relative to the document root.
    pub relative: PathBuf,
    /// The document root.
    pub root: PathBuf,
}

/// Everything the processes of one pool share, created before any fork.
pub struct Pool {
    name: String,
    settings: PoolConfig,
    /// Worker mode: the script every runner keeps running.
    worker: Option<WorkerScript>,
    board: Board,
    /// The queue: I/O processes send on `submit`, runners receive on `take`.
    submit: OwnedFd,
    take: OwnedFd,
    /// Reply lanes: (receiving end, for the I/O process that owns the lane;
    /// sending end, for runners and the manager).
    lanes: Vec<(OwnedFd, OwnedFd)>,
    /// Written by an I/O process when no runner is idle: the manager may add one.
    wake: OwnedFd,
    /// The life line: the manager's end reads EOF when every process holding the
    /// other end (the master and the I/O processes) has gone.
    life_write: OwnedFd,
    life_read: OwnedFd,
    /// This process's client (its lane and reply thread), by fork generation.
    client: Mutex<Option<(u64, Arc<client::Client>)>>,
}

/// Lanes for I/O processes: enough for the workers of a reload roll-over and
/// respawns; a process that finds none runs PHP on its own thread.
fn lane_count() -> usize {
    (8 + 4 * crate::config::cores()).min(256)
}

/// The section that configures pool `name`.
fn section(name: &str) -> String {
    if name == DEFAULT {
        "[php.pool]".to_owned()
    } else {
        format!("[php.pools.{name}]")
    }
}

/// Starts pool `name` (once per process tree); later calls return it. Settings
/// that differ from the running pool's are refused: they apply at a restart.
pub fn start(
    rt: &'static Runtime,
    name: &str,
    settings: &PoolConfig,
    root: &Path,
) -> Result<&'static Pool, String> {
    let mut pools = POOLS.lock();
    if let Some(pool) = pools.iter().find(|p| p.name == name) {
        return match conflict_with(pool, settings) {
            Some(why) => Err(why),
            None => {
                // A new engine on a running pool is a reload: workers whose code
                // changed restart (each checks what it loaded).
                if pool.worker.is_some() {
                    pool.board
                        .header()
                        .code_check
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    pool.poke_idle();
                }
                Ok(pool)
            }
        };
    }
    let worker = match &settings.worker {
        Some(w) => Some(worker_script(name, w, root)?),
        None => None,
    };
    let pool: &'static Pool = Box::leak(Box::new(create(rt, name, settings, worker)?));
    manager::fork(pool, rt, &pools)?;
    pools.push(pool);
    Ok(pool)
}

/// Restarts the workers of worker pool `name` (every worker pool when None),
/// each between two jobs. The names of the pools restarted; an error names the
/// worker pools there are when `name` is not one of them.
pub fn restart_workers(name: Option<&str>) -> Result<Vec<String>, String> {
    let pools = POOLS.lock();
    let workers: Vec<&&Pool> = pools.iter().filter(|p| p.worker.is_some()).collect();
    let chosen: Vec<&&Pool> = workers
        .iter()
        .filter(|p| name.is_none_or(|n| n == p.name))
        .copied()
        .collect();
    if let (Some(n), true) = (name, chosen.is_empty()) {
        let names: Vec<&str> = workers.iter().map(|p| p.name.as_str()).collect();
        return Err(format!(
            "there is no worker pool '{n}' (worker pools: {})",
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        ));
    }
    for p in &chosen {
        p.board
            .header()
            .restart
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        p.poke_idle();
        tracing::info!("restarting the workers of {}", section(&p.name));
    }
    Ok(chosen.iter().map(|p| p.name.clone()).collect())
}

/// The running pool `name`, if any.
pub fn get(name: &str) -> Option<&'static Pool> {
    POOLS.lock().iter().find(|p| p.name == name).copied()
}

fn conflict_with(pool: &Pool, settings: &PoolConfig) -> Option<String> {
    (pool.settings != *settings).then(|| {
        format!(
            "{} differs from the settings its runner pool started with: they apply when the pool starts, so changing them needs a restart (not a reload).",
            section(&pool.name)
        )
    })
}

/// Whether pool `name` runs with other settings than `settings` (a restart is
/// needed).
pub fn conflict(name: &str, settings: &PoolConfig) -> Option<String> {
    conflict_with(get(name)?, settings)
}

/// Finds a worker pool's script inside the document root.
fn worker_script(name: &str, relative: &Path, root: &Path) -> Result<WorkerScript, String> {
    let joined = root.join(relative);
    let fail = |why: String| {
        format!(
            "{} worker = \"{}\": {why}.\n    The worker script is relative to [php] document_root ({}), e.g. worker = \"index.php\".",
            section(name),
            relative.display(),
            root.display()
        )
    };
    let path = std::fs::canonicalize(&joined)
        .map_err(|e| fail(format!("{} cannot be used: {e}", joined.display())))?;
    let root = std::fs::canonicalize(root)
        .map_err(|e| fail(format!("the document root cannot be used: {e}")))?;
    if !path.starts_with(&root) {
        return Err(fail(format!(
            "{} lies outside the document root",
            path.display()
        )));
    }
    if !path.is_file() {
        return Err(fail(format!("{} is not a file", path.display())));
    }
    Ok(WorkerScript {
        path,
        relative: relative.to_owned(),
        root,
    })
}

fn create(
    _rt: &'static Runtime,
    name: &str,
    settings: &PoolConfig,
    worker: Option<WorkerScript>,
) -> Result<Pool, String> {
    let os =
        |what: &str, e: std::io::Error| format!("cannot start the PHP runner pool: {what}: {e}");
    let board = Board::new(settings.max_runners, lane_count()).map_err(|e| os("mmap", e))?;
    let (submit, take) = wire::pair().map_err(|e| os("socketpair", e))?;
    let mut lanes = Vec::new();
    for _ in 0..board.lanes {
        lanes.push(wire::pair().map_err(|e| os("socketpair", e))?);
    }
    let wake = eventfd().map_err(|e| os("eventfd", e))?;
    let (life_read, life_write) = pipe().map_err(|e| os("pipe", e))?;
    Ok(Pool {
        name: name.to_owned(),
        settings: settings.clone(),
        worker,
        board,
        submit,
        take,
        lanes,
        wake,
        life_write,
        life_read,
        client: Mutex::new(None),
    })
}

impl Pool {
    /// Sends a job to the pool; its completion runs when a runner has answered.
    pub fn submit(&'static self, job: Job) {
        match self.client() {
            Ok(c) => c.submit(self, job),
            Err(msg) => {
                tracing::error!("{msg}");
                super::respond(
                    job,
                    crate::http::Response::error(503, Some("PHP is not available in this worker")),
                );
            }
        }
    }

    /// Claims this process's lane and starts its reply thread (once per process).
    pub fn worker_start(&'static self) -> Result<(), String> {
        self.client().map(|_| ())
    }

    fn client(&'static self) -> Result<Arc<client::Client>, String> {
        let generation = super::fork_generation();
        let mut slot = self.client.lock();
        if let Some((g, c)) = slot.as_ref() {
            if *g == generation {
                return Ok(c.clone());
            }
        }
        let c = client::Client::start(self)?;
        *slot = Some((generation, c.clone()));
        Ok(c)
    }

    /// Hands this process's replies to the host: it watches the returned
    /// descriptor and calls `process_replies` when it is readable.
    pub fn drive(&'static self) -> Result<std::os::fd::RawFd, String> {
        Ok(self.client()?.drive(self))
    }

    /// Completes the responses whose replies have arrived, on the calling thread.
    pub fn process_replies(&'static self) -> std::io::Result<()> {
        let c = self.client().map_err(std::io::Error::other)?;
        c.drain(self)
    }

    /// Closes every descriptor of this pool in the calling process (a manager
    /// of another pool, just forked); the pool is never used here again.
    fn close_all(&self) {
        let mut fds = vec![
            self.submit.as_raw_fd(),
            self.take.as_raw_fd(),
            self.wake.as_raw_fd(),
            self.life_write.as_raw_fd(),
            self.life_read.as_raw_fd(),
        ];
        for (a, b) in &self.lanes {
            fds.push(a.as_raw_fd());
            fds.push(b.as_raw_fd());
        }
        for fd in fds {
            // SAFETY: closing descriptors of a pool this process never uses; the
            // OwnedFds that name them are never dropped or used here.
            unsafe { libc::close(fd) };
        }
    }

    /// Wakes the runners waiting for a job (worker mode: so that they look at
    /// their code now rather than at their next job). A poke no runner needs is
    /// taken and dropped by one later.
    fn poke_idle(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        let idle = self
            .board
            .slots()
            .filter(|(_, s)| s.state.load(SeqCst) == board::IDLE)
            .count();
        for _ in 0..idle {
            if wire::send(self.submit.as_raw_fd(), wire::POKE, None, true).is_err() {
                break;
            }
        }
    }

    /// Answers job `id` of lane `lane` with an error `status` (502, 503, 504, 500)
    /// in place of a runner's reply; `runner` is the slot that held it, if any.
    fn answer(&self, lane: usize, id: u64, status: u16, runner: u32) {
        if let Some((_, send)) = self.lanes.get(lane) {
            let w = job::reply(job::ERROR, 0, status, runner, id);
            let _ = wire::send(send.as_raw_fd(), &w.0, None, true);
        }
    }

    /// `answer` for a job message taken from the queue (its id and lane lead).
    fn answer_message(&self, msg: &[u8], status: u16, runner: u32) {
        let mut r = wire::Reader(msg);
        if let (Ok(id), Ok(lane)) = (r.u64(), r.u32()) {
            self.answer(lane as usize, id, status, runner);
        }
    }

    /// Tells the manager that a job waits with no idle runner.
    fn nudge_manager(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: an 8-byte write to our eventfd; a full counter (EAGAIN) is fine.
        unsafe {
            libc::write(
                self.wake.as_raw_fd(),
                one.as_ptr() as *const libc::c_void,
                8,
            )
        };
    }
}

/// Every pool's figures, read from their boards.
pub fn stats() -> Vec<super::PoolStats> {
    POOLS.lock().iter().map(|p| pool_stats(p)).collect()
}

fn pool_stats(pool: &Pool) -> super::PoolStats {
    use std::sync::atomic::Ordering::Relaxed;
    let b = &pool.board;
    let h = b.header();
    let (mut runners, mut busy, mut idle) = (0, 0, 0);
    let mut pids = Vec::new();
    for (_, slot) in b.slots() {
        match slot.state.load(Relaxed) {
            board::FREE => continue,
            board::BUSY => busy += 1,
            board::IDLE => idle += 1,
            _ => {}
        }
        runners += 1;
        let pid = slot.pid.load(Relaxed);
        if pid > 0 {
            pids.push(pid);
        }
    }
    super::PoolStats {
        name: pool.name.clone(),
        runners,
        busy,
        idle,
        max: pool.settings.max_runners,
        queued: h.queued.load(Relaxed).max(0),
        queue_size: pool.settings.queue_size,
        rejected: h.rejected.load(Relaxed),
        taken: h.taken.load(Relaxed),
        wait_us: h.wait_us.load(Relaxed),
        wait_buckets: board::WAIT_BUCKETS_US
            .iter()
            .map(|&us| Some(us as f64 / 1e6))
            .chain([None])
            .zip(&h.wait_buckets)
            .map(|(le, c)| (le, c.load(Relaxed)))
            .collect(),
        exits: board::EXIT_NAMES
            .iter()
            .zip(&h.exits)
            .map(|(n, c)| (*n, c.load(Relaxed)))
            .collect(),
        leaks: h
            .leaks
            .iter()
            .filter_map(|l| Some((l.route()?, l.bytes.load(Relaxed), l.entries.load(Relaxed))))
            .collect(),
        worker: pool.worker.is_some(),
        pids,
    }
}

fn eventfd() -> std::io::Result<OwnedFd> {
    // SAFETY: eventfd returns a new descriptor or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two new descriptors on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: new descriptors we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}
