//! The master process: forks the workers after the engine is initialized (so
//! whatever the engine loaded is shared copy-on-write), respawns a worker that
//! dies, on SIGHUP reloads the configuration by rolling the workers over (new ones
//! forked with the new engine, old ones drained), and on SIGTERM/SIGINT stops them
//! gracefully.
//!
//! The master never starts a thread: signals are blocked and read from a
//! signalfd, polled together with the control API's sockets (host/src/control,
//! when `[server.control]` is set), which keeps `fork` safe. The control API is
//! served in this loop with non-blocking descriptors only: a client can delay
//! nothing beyond its own turn (see control/mod.rs).

use std::collections::{BTreeSet, HashMap};
use std::os::fd::RawFd;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long workers get to drain after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(35);
/// How often the master looks at draining workers' deadlines.
const DRAIN_TICK: Duration = Duration::from_secs(1);
/// A worker that dies sooner than this after its start counts as failing fast.
const FAST_FAILURE: Duration = Duration::from_secs(2);

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialize and fill a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [
            libc::SIGCHLD,
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGUSR2,
        ] {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// What a SIGHUP's reload asks the master to do.
pub enum Reloaded {
    /// Roll over to this many workers forked with the new configuration.
    Workers(usize),
    /// Re-execute the master (`restart`): the new configuration changes PHP's runtime.
    Restart,
}

/// Runs `worker(slot, count)` in `count` child processes (slots 0..count) until the
/// master is told to stop; a replaced worker gets the slot of the one it replaces.
/// `inherited` are workers of a previous image of this master (see restart.rs):
/// they are drained once the new workers run.
/// On SIGHUP, `reload` re-reads the configuration (in this process, before any
/// fork) and says what to do, or why it was refused: new workers are forked and the
/// old ones drained, or `restart(all worker pids)` re-executes the master (it
/// returns only on failure, with the reason). `exited(pid, signal,
/// replaced)` learns of every worker reaped (`signal`: what killed it, 0 when it
/// exited or the master stopped it). On SIGUSR2, `restart_php_workers` restarts
/// PHP's worker scripts (worker mode). Returns the exit code for the master.
/// What the master does beside its workers.
pub struct Extras<'a> {
    /// SIGUSR2: restart PHP's worker scripts.
    pub restart_php_workers: &'a dyn Fn(),
    /// A helper process kept running beside the workers (the ACME client).
    pub sidecar: Option<&'a dyn Fn() -> i32>,
    /// The control API, served from this loop.
    pub control: Option<&'a mut dyn Service>,
}

/// Something served from the master's loop beside the signals (the control API).
/// Every call must return promptly: its descriptors are non-blocking.
pub trait Service {
    /// The descriptors to poll and for what (`revents` is filled for `serve`).
    fn fds(&self) -> Vec<libc::pollfd>;
    /// The nearest deadline the service has (a client's timeout), if any.
    fn deadline(&self) -> Option<Instant>;
    /// Serves what is ready (`ready`: `fds()` with `revents`) and what is overdue.
    fn serve(&mut self, ready: &[libc::pollfd], master: &mut dyn Master);
    /// Sends what is still to send, for up to `limit` (before the master
    /// re-executes itself).
    fn flush(&mut self, limit: Duration);
}

/// A worker process as the master sees it.
pub struct WorkerInfo {
    pub pid: libc::pid_t,
    /// Its slot (0..workers); None for an old worker finishing its requests.
    pub slot: Option<usize>,
    /// How many reloads the master had applied when it was forked (0: started
    /// with the master; old workers: older than the current generation).
    pub generation: u64,
    pub uptime: Duration,
}

/// What a service may ask of the master.
pub trait Master {
    /// The current workers, then the old ones still finishing their requests.
    fn workers(&self) -> Vec<WorkerInfo>;
    /// The configuration generation: reloads applied since the master started.
    fn generation(&self) -> u64;
    /// Reloads the configuration as SIGHUP does (the same steps), now.
    fn reload(&mut self) -> Result<Applied, String>;
}

/// What a reload did.
pub enum Applied {
    /// New workers run the new configuration (generation now `generation`);
    /// the old ones finish their requests.
    RolledOver { generation: u64, workers: usize },
    /// Accepted, but no worker with it could start: the old ones keep serving.
    NoWorker,
    /// The master re-executes itself once the service has answered.
    Restart,
}

/// Descriptors that forked children must not keep (the control API's sockets,
/// the signalfd): closed in each child right after `fork`. A worker keeping a
/// control connection would hold the client waiting for its end.
static CLOSE_IN_CHILDREN: Mutex<BTreeSet<RawFd>> = Mutex::new(BTreeSet::new());

/// Marks `fd` as the master's own (closed in children) or forgets it.
pub fn master_only(fd: RawFd, on: bool) {
    let mut set = CLOSE_IN_CHILDREN.lock().unwrap_or_else(|e| e.into_inner());
    if on {
        set.insert(fd);
    } else {
        set.remove(&fd);
    }
}

/// The master's state about its children.
struct State {
    /// pid → (start, slot, generation).
    children: HashMap<libc::pid_t, (Instant, usize, u64)>,
    /// Workers of a configuration reloaded since: pid → when they get SIGKILL
    /// (None: they got it), with their start and generation.
    draining: HashMap<libc::pid_t, Option<Instant>>,
    old: HashMap<libc::pid_t, (Instant, u64)>,
    count: usize,
    generation: u64,
    helper: Option<(libc::pid_t, Instant)>,
}

/// The master's state and what it runs, lent to a service for one `serve`.
struct Live<'a, 'b> {
    st: &'a mut State,
    set: &'a libc::sigset_t,
    worker: &'a dyn Fn(usize, usize) -> i32,
    reload: &'a mut dyn FnMut() -> Result<Reloaded, String>,
    sidecar: Option<&'b dyn Fn() -> i32>,
    restart_pending: bool,
}

impl Master for Live<'_, '_> {
    fn workers(&self) -> Vec<WorkerInfo> {
        let mut out: Vec<WorkerInfo> = self
            .st
            .children
            .iter()
            .map(|(&pid, &(t, slot, generation))| WorkerInfo {
                pid,
                slot: Some(slot),
                generation,
                uptime: t.elapsed(),
            })
            .collect();
        out.sort_by_key(|w| w.slot);
        out.extend(self.st.draining.keys().map(|&pid| {
            let (t, generation) = self
                .st
                .old
                .get(&pid)
                .copied()
                .unwrap_or((Instant::now(), 0));
            WorkerInfo {
                pid,
                slot: None,
                generation,
                uptime: t.elapsed(),
            }
        }));
        out
    }

    fn generation(&self) -> u64 {
        self.st.generation
    }

    fn reload(&mut self) -> Result<Applied, String> {
        let applied = apply_reload(self.st, self.set, self.worker, self.reload, self.sidecar)?;
        if let Applied::Restart = applied {
            self.restart_pending = true;
        }
        Ok(applied)
    }
}

/// SIGHUP's work: restarts a stopped helper, re-reads the configuration and
/// rolls the workers over (or says the master must restart).
fn apply_reload(
    st: &mut State,
    set: &libc::sigset_t,
    worker: &dyn Fn(usize, usize) -> i32,
    reload: &mut dyn FnMut() -> Result<Reloaded, String>,
    sidecar: Option<&dyn Fn() -> i32>,
) -> Result<Applied, String> {
    if let (None, Some(f)) = (st.helper, sidecar) {
        st.helper = spawn(set, f).map(|p| (p, Instant::now()));
    }
    match reload()? {
        Reloaded::Workers(n) => {
            if roll_over(n, set, worker, st) {
                st.count = n;
                Ok(Applied::RolledOver {
                    generation: st.generation,
                    workers: n,
                })
            } else {
                Ok(Applied::NoWorker)
            }
        }
        Reloaded::Restart => Ok(Applied::Restart),
    }
}

pub fn run(
    count: usize,
    inherited: &[libc::pid_t],
    worker: impl Fn(usize, usize) -> i32,
    mut reload: impl FnMut() -> Result<Reloaded, String>,
    restart: impl Fn(&[libc::pid_t]) -> String,
    exited: impl Fn(libc::pid_t, i32, bool),
    extras: Extras<'_>,
) -> i32 {
    let Extras {
        restart_php_workers,
        sidecar,
        mut control,
    } = extras;
    let set = signal_set();
    // SAFETY: blocking signals in this single-threaded process; children undo it.
    unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    let sigfd = match SignalFd::new(&set) {
        Ok(fd) => fd,
        Err(e) => {
            tracing::error!("cannot create the master's signalfd: {e}");
            return 1;
        }
    };

    let mut st = State {
        children: HashMap::new(),
        draining: HashMap::new(),
        old: HashMap::new(),
        count,
        generation: 0,
        helper: None,
    };
    let mut fast_failures = 0u32;
    for slot in 0..st.count {
        let n = st.count;
        if let Some(pid) = spawn(&set, || worker(slot, n)) {
            st.children.insert(pid, (Instant::now(), slot, 0));
        }
    }
    if st.children.is_empty() {
        tracing::error!("no worker could be started");
        return 1;
    }
    // A helper process beside the workers (the ACME client): restarted when it
    // dies after a while, left stopped until the next SIGHUP when it dies at once.
    st.helper = sidecar.and_then(|f| spawn(&set, f).map(|pid| (pid, Instant::now())));
    if !inherited.is_empty() {
        let deadline = Instant::now() + STOP_TIMEOUT;
        for &pid in inherited {
            // SAFETY: plain kill(2) of our own child (not reaped yet, so the pid
            // is still its own).
            unsafe { libc::kill(pid, libc::SIGTERM) };
            st.draining.insert(pid, Some(deadline));
        }
        tracing::info!(
            "restarted with a new PHP runtime: {} new workers; {} old ones finish their requests",
            st.children.len(),
            inherited.len()
        );
    }
    let do_restart = |st: &State| {
        let pids: Vec<libc::pid_t> = st
            .children
            .keys()
            .chain(st.draining.keys())
            .copied()
            .chain(st.helper.map(|(p, _)| p))
            .collect();
        tracing::info!(
            "the new configuration changes PHP's runtime: restarting the master in place; the workers keep serving meanwhile"
        );
        let why = restart(&pids);
        tracing::error!("restart failed; the running configuration keeps serving: {why}");
    };

    loop {
        let tick = (!st.draining.is_empty()).then_some(DRAIN_TICK);
        let (sig, ready) = sigfd.wait(tick, control.as_deref());
        kill_overdue(&mut st.draining);
        match sig {
            libc::SIGCHLD => {
                for (pid, how, signal) in reap() {
                    if let (Some((hpid, started)), Some(f)) = (st.helper, sidecar) {
                        if hpid == pid {
                            st.helper = None;
                            if started.elapsed() >= FAST_FAILURE * 10 {
                                tracing::warn!(pid, "the ACME process {how}; starting a new one");
                                st.helper = spawn(&set, f).map(|p| (p, Instant::now()));
                            } else {
                                tracing::error!(pid, "the ACME process {how} right after it started; it is started again at the next SIGHUP");
                            }
                            continue;
                        }
                    }
                    if let Some(deadline) = st.draining.remove(&pid) {
                        st.old.remove(&pid);
                        // Our SIGTERM (before its handler was set) or SIGKILL
                        // (kill_overdue) stopped it on purpose: not a crash.
                        let ours = deadline.is_none() || signal == libc::SIGTERM;
                        exited(pid, if ours { 0 } else { signal }, false);
                        tracing::debug!(pid, "old worker {how}");
                        continue;
                    }
                    let Some((started, slot, _)) = st.children.remove(&pid) else {
                        continue;
                    };
                    exited(pid, signal, true);
                    tracing::warn!(pid, "worker {how}; starting a new one");
                    if started.elapsed() < FAST_FAILURE {
                        fast_failures += 1;
                        // Back off when workers keep dying at start (e.g. a broken extension).
                        std::thread::sleep(Duration::from_millis(
                            100 * u64::from(fast_failures.min(20)),
                        ));
                    } else {
                        fast_failures = 0;
                    }
                    let n = st.count;
                    if let Some(pid) = spawn(&set, || worker(slot, n)) {
                        st.children
                            .insert(pid, (Instant::now(), slot, st.generation));
                    }
                }
            }
            libc::SIGUSR2 => {
                tracing::info!("SIGUSR2 received: restarting PHP's worker scripts");
                restart_php_workers();
            }
            libc::SIGHUP => {
                tracing::info!("SIGHUP received: reloading the configuration");
                match apply_reload(&mut st, &set, &worker, &mut reload, sidecar) {
                    Ok(Applied::Restart) => do_restart(&st),
                    Ok(_) => {}
                    Err(msg) => tracing::error!(
                        "reload refused; the running configuration keeps serving:\n{msg}"
                    ),
                }
            }
            libc::SIGTERM | libc::SIGINT | libc::SIGQUIT => {
                tracing::info!("stopping: waiting for in-flight requests to finish");
                let mut all: HashMap<libc::pid_t, Instant> = st
                    .children
                    .into_iter()
                    .map(|(pid, (t, _, _))| (pid, t))
                    .collect();
                all.extend(st.helper);
                all.extend(st.draining.drain().map(|(pid, _)| (pid, Instant::now())));
                return stop(all, &set);
            }
            _ => {}
        }
        if let Some(service) = control.as_deref_mut() {
            let mut live = Live {
                st: &mut st,
                set: &set,
                worker: &worker,
                reload: &mut reload,
                sidecar,
                restart_pending: false,
            };
            service.serve(&ready, &mut live);
            if live.restart_pending {
                service.flush(Duration::from_secs(1));
                do_restart(&st);
            }
        }
    }
}

/// Forks `count` workers (which start with the engine as it is now) and sends the
/// current ones SIGTERM: they stop accepting, finish their requests and exit,
/// while the new ones take the listening sockets' connections. False when no new
/// worker started (the old ones keep serving).
fn roll_over(
    count: usize,
    set: &libc::sigset_t,
    worker: &dyn Fn(usize, usize) -> i32,
    st: &mut State,
) -> bool {
    let generation = st.generation + 1;
    let mut fresh = HashMap::new();
    for slot in 0..count {
        if let Some(pid) = spawn(set, || worker(slot, count)) {
            fresh.insert(pid, (Instant::now(), slot, generation));
        }
    }
    if fresh.is_empty() {
        tracing::error!(
            "no worker with the new configuration could be started; the old workers keep serving"
        );
        return false;
    }
    st.generation = generation;
    let old = std::mem::replace(&mut st.children, fresh);
    let deadline = Instant::now() + STOP_TIMEOUT;
    for (&pid, &(t, _, g)) in &old {
        // SAFETY: plain kill(2) of our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        st.draining.insert(pid, Some(deadline));
        st.old.insert(pid, (t, g));
    }
    tracing::info!(
        "configuration reloaded: {} new workers; {} old ones finish their requests",
        st.children.len(),
        old.len()
    );
    true
}

/// SIGKILLs draining workers past their deadline.
fn kill_overdue(draining: &mut HashMap<libc::pid_t, Option<Instant>>) {
    let now = Instant::now();
    for (&pid, deadline) in draining.iter_mut() {
        if deadline.is_some_and(|d| now >= d) {
            tracing::warn!(pid, "old worker did not finish in time; killing it");
            // SAFETY: plain kill(2) of our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            *deadline = None;
        }
    }
}

fn spawn(set: &libc::sigset_t, worker: impl Fn() -> i32) -> Option<libc::pid_t> {
    // SAFETY: the master is single-threaded, so the child may run arbitrary code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        tracing::error!(error = %std::io::Error::last_os_error(), "fork failed");
        return None;
    }
    if pid == 0 {
        // SAFETY: child side: unblock signals, die with the master, close the
        // master's own descriptors (the set is not locked: the master has one
        // thread, and it was not inside `master_only` while forking).
        unsafe {
            libc::sigprocmask(libc::SIG_UNBLOCK, set, std::ptr::null_mut());
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            if let Ok(fds) = CLOSE_IN_CHILDREN.lock() {
                for &fd in fds.iter() {
                    libc::close(fd);
                }
            }
        }
        let code = worker();
        std::process::exit(code);
    }
    Some(pid)
}

/// In a worker: asks for SIGTERM when the master exits. Returns false when the
/// master (`master_pid`) is already gone.
pub fn die_with_master(master_pid: libc::pid_t) -> bool {
    // SAFETY: prctl/getppid on this process.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
        libc::getppid() == master_pid
    }
}

/// The blocked signals as a descriptor, polled with the service's sockets.
struct SignalFd(RawFd);

impl SignalFd {
    fn new(set: &libc::sigset_t) -> std::io::Result<SignalFd> {
        // SAFETY: a new descriptor for a valid set.
        let fd = unsafe { libc::signalfd(-1, set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        master_only(fd, true);
        Ok(SignalFd(fd))
    }

    /// Waits up to `timeout` (and the service's nearest deadline) for a signal or
    /// the service's descriptors. Returns the signal taken (0: none) and the
    /// service's descriptors with what is ready on them.
    fn wait(
        &self,
        timeout: Option<Duration>,
        service: Option<&dyn Service>,
    ) -> (i32, Vec<libc::pollfd>) {
        if let Some(sig) = self.take() {
            return (sig, service.map(|s| s.fds()).unwrap_or_default());
        }
        let mut fds = vec![libc::pollfd {
            fd: self.0,
            events: libc::POLLIN,
            revents: 0,
        }];
        let mut timeout = timeout;
        if let Some(s) = service {
            fds.extend(s.fds());
            if let Some(d) = s.deadline() {
                let left = d.saturating_duration_since(Instant::now());
                timeout = Some(timeout.map_or(left, |t| t.min(left)));
            }
        }
        let ms = timeout.map_or(-1, |t| t.as_millis().clamp(1, i32::MAX as u128) as i32);
        // SAFETY: a valid array of `fds.len()` pollfds. EINTR (a signal not in
        // the set, e.g. SIGPIPE ignored) just returns early.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        let sig = self.take().unwrap_or(0);
        fds.remove(0);
        (sig, fds)
    }

    /// One pending signal, if any.
    fn take(&self) -> Option<i32> {
        // SAFETY: an all-zero signalfd_siginfo is valid; read fills it.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: reading one record into a buffer of its size.
        let n = unsafe { libc::read(self.0, &mut info as *mut _ as *mut libc::c_void, size) };
        (n == size as isize).then_some(info.ssi_signo as i32)
    }
}

/// Waits for one of the blocked signals, up to `timeout`. Returns 0 on timeout.
fn wait_signal(set: &libc::sigset_t, timeout: Option<Duration>) -> i32 {
    loop {
        // SAFETY: valid set; siginfo is an out parameter we ignore.
        let r = unsafe {
            match timeout {
                None => libc::sigwaitinfo(set, std::ptr::null_mut()),
                Some(t) => {
                    let ts = libc::timespec {
                        tv_sec: t.as_secs() as libc::time_t,
                        tv_nsec: t.subsec_nanos() as libc::c_long,
                    };
                    libc::sigtimedwait(set, std::ptr::null_mut(), &ts)
                }
            }
        };
        if r > 0 {
            return r;
        }
        let err = std::io::Error::last_os_error().raw_os_error();
        if err == Some(libc::EAGAIN) {
            return 0;
        }
        // EINTR: try again.
    }
}

/// Collects every exited child: (pid, description, signal that killed it or 0).
fn reap() -> Vec<(libc::pid_t, String, i32)> {
    let mut out = Vec::new();
    loop {
        let mut status = 0;
        // SAFETY: status is a valid out pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return out;
        }
        let (how, signal) = if libc::WIFSIGNALED(status) {
            let sig = libc::WTERMSIG(status);
            (format!("killed by signal {sig}"), sig)
        } else {
            (
                format!("exited with status {}", libc::WEXITSTATUS(status)),
                0,
            )
        };
        out.push((pid, how, signal));
    }
}

fn stop(mut children: HashMap<libc::pid_t, Instant>, set: &libc::sigset_t) -> i32 {
    for &pid in children.keys() {
        // SAFETY: plain kill(2) of our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while !children.is_empty() {
        for (pid, _, _) in reap() {
            children.remove(&pid);
        }
        if children.is_empty() {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            for &pid in children.keys() {
                tracing::warn!(pid, "worker did not stop in time; killing it");
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(100));
            reap();
            break;
        }
        wait_signal(set, Some(left.min(Duration::from_millis(200))));
    }
    tracing::info!("stopped");
    0
}
