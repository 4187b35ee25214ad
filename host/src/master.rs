//! The master process: forks the workers after the engine is initialized (so
//! whatever the engine loaded is shared copy-on-write), respawns a worker that
//! dies, on SIGHUP reloads the configuration by rolling the workers over (new ones
//! forked with the new engine, old ones drained), and on SIGTERM/SIGINT stops them
//! gracefully.
//!
//! The master never starts a thread: signals are blocked and taken synchronously
//! with `sigtimedwait`, which keeps `fork` safe.

use std::collections::HashMap;
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
    } = extras;
    let set = signal_set();
    // SAFETY: blocking signals in this single-threaded process; children undo it.
    unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };

    // pid → (start, slot).
    let mut children: HashMap<libc::pid_t, (Instant, usize)> = HashMap::new();
    let mut count = count;
    // Workers of a configuration reloaded since: pid → when they get SIGKILL
    // (None: they got it).
    let mut draining: HashMap<libc::pid_t, Option<Instant>> = HashMap::new();
    let mut fast_failures = 0u32;
    for slot in 0..count {
        if let Some(pid) = spawn(&set, || worker(slot, count)) {
            children.insert(pid, (Instant::now(), slot));
        }
    }
    if children.is_empty() {
        tracing::error!("no worker could be started");
        return 1;
    }
    // A helper process beside the workers (the ACME client): restarted when it
    // dies after a while, left stopped until the next SIGHUP when it dies at once.
    let mut helper: Option<(libc::pid_t, Instant)> =
        sidecar.and_then(|f| spawn(&set, f).map(|pid| (pid, Instant::now())));
    if !inherited.is_empty() {
        let deadline = Instant::now() + STOP_TIMEOUT;
        for &pid in inherited {
            // SAFETY: plain kill(2) of our own child (not reaped yet, so the pid
            // is still its own).
            unsafe { libc::kill(pid, libc::SIGTERM) };
            draining.insert(pid, Some(deadline));
        }
        tracing::info!(
            "restarted with a new PHP runtime: {} new workers; {} old ones finish their requests",
            children.len(),
            inherited.len()
        );
    }

    loop {
        let sig = wait_signal(&set, (!draining.is_empty()).then_some(DRAIN_TICK));
        kill_overdue(&mut draining);
        match sig {
            libc::SIGCHLD => {
                for (pid, how, signal) in reap() {
                    if let (Some((hpid, started)), Some(f)) = (helper, sidecar) {
                        if hpid == pid {
                            helper = None;
                            if started.elapsed() >= FAST_FAILURE * 10 {
                                tracing::warn!(pid, "the ACME process {how}; starting a new one");
                                helper = spawn(&set, f).map(|p| (p, Instant::now()));
                            } else {
                                tracing::error!(pid, "the ACME process {how} right after it started; it is started again at the next SIGHUP");
                            }
                            continue;
                        }
                    }
                    if let Some(deadline) = draining.remove(&pid) {
                        // Our SIGTERM (before its handler was set) or SIGKILL
                        // (kill_overdue) stopped it on purpose: not a crash.
                        let ours = deadline.is_none() || signal == libc::SIGTERM;
                        exited(pid, if ours { 0 } else { signal }, false);
                        tracing::debug!(pid, "old worker {how}");
                        continue;
                    }
                    let Some((started, slot)) = children.remove(&pid) else {
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
                    if let Some(pid) = spawn(&set, || worker(slot, count)) {
                        children.insert(pid, (Instant::now(), slot));
                    }
                }
            }
            libc::SIGUSR2 => {
                tracing::info!("SIGUSR2 received: restarting PHP's worker scripts");
                restart_php_workers();
            }
            libc::SIGHUP => {
                tracing::info!("SIGHUP received: reloading the configuration");
                if let (None, Some(f)) = (helper, sidecar) {
                    helper = spawn(&set, f).map(|p| (p, Instant::now()));
                }
                match reload() {
                    Ok(Reloaded::Workers(n)) => {
                        if roll_over(n, &set, &worker, &mut children, &mut draining) {
                            count = n;
                        }
                    }
                    Ok(Reloaded::Restart) => {
                        let pids: Vec<libc::pid_t> = children
                            .keys()
                            .chain(draining.keys())
                            .copied()
                            .chain(helper.map(|(p, _)| p))
                            .collect();
                        tracing::info!(
                            "the new configuration changes PHP's runtime: restarting the master in place; the workers keep serving meanwhile"
                        );
                        let why = restart(&pids);
                        tracing::error!(
                            "restart failed; the running configuration keeps serving: {why}"
                        );
                    }
                    Err(msg) => tracing::error!(
                        "reload refused; the running configuration keeps serving:\n{msg}"
                    ),
                }
            }
            libc::SIGTERM | libc::SIGINT | libc::SIGQUIT => {
                tracing::info!("stopping: waiting for in-flight requests to finish");
                let mut all: HashMap<libc::pid_t, Instant> =
                    children.into_iter().map(|(pid, (t, _))| (pid, t)).collect();
                all.extend(helper);
                all.extend(draining.drain().map(|(pid, _)| (pid, Instant::now())));
                return stop(all, &set);
            }
            _ => {}
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
    worker: &impl Fn(usize, usize) -> i32,
    children: &mut HashMap<libc::pid_t, (Instant, usize)>,
    draining: &mut HashMap<libc::pid_t, Option<Instant>>,
) -> bool {
    let mut fresh = HashMap::new();
    for slot in 0..count {
        if let Some(pid) = spawn(set, || worker(slot, count)) {
            fresh.insert(pid, (Instant::now(), slot));
        }
    }
    if fresh.is_empty() {
        tracing::error!(
            "no worker with the new configuration could be started; the old workers keep serving"
        );
        return false;
    }
    let old = std::mem::replace(children, fresh);
    let deadline = Instant::now() + STOP_TIMEOUT;
    for &pid in old.keys() {
        // SAFETY: plain kill(2) of our own child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        draining.insert(pid, Some(deadline));
    }
    tracing::info!(
        "configuration reloaded: {} new workers; {} old ones finish their requests",
        children.len(),
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
        // SAFETY: child side: unblock signals, die with the master.
        unsafe {
            libc::sigprocmask(libc::SIG_UNBLOCK, set, std::ptr::null_mut());
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
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
