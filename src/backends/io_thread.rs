//! The I/O thread a network backend (FastCGI, proxy) runs in each worker process:
//! a current-thread tokio runtime on a thread of its own, started after the fork
//! (threads do not survive one) and found again by pid. Requests reach it as
//! futures and answer through their completions from it.

use parking_lot::Mutex;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Work for the thread.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A running I/O thread; it ends (after its tasks finish) when this is dropped.
pub struct IoThread {
    tx: mpsc::UnboundedSender<Task>,
}

impl IoThread {
    /// Starts the thread `name`. `max_blocking` bounds its blocking pool (streamed
    /// bodies waiting for slow clients, host name lookups); `background` runs for
    /// as long as the thread does (e.g. closing idle connections).
    pub fn start(
        name: &str,
        max_blocking: usize,
        background: Option<Task>,
    ) -> io::Result<IoThread> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .max_blocking_threads(max_blocking.max(1))
            .thread_name(format!("{name}-blocking"))
            .build()?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Task>();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                // Its blocking pool, started from here, inherits this.
                super::sigprof::set_blocked(true);
                rt.block_on(async move {
                    let background = background.map(tokio::spawn);
                    let mut tasks = tokio::task::JoinSet::new();
                    loop {
                        tokio::select! {
                            task = rx.recv() => match task {
                                Some(t) => { tasks.spawn(t); }
                                None => break,
                            },
                            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                        }
                    }
                    // The backend is gone: let in-flight requests finish.
                    while tasks.join_next().await.is_some() {}
                    if let Some(b) = background {
                        b.abort();
                    }
                });
            })?;
        Ok(IoThread { tx })
    }

    /// Runs `task` on the thread; gives it back when the thread has stopped.
    pub fn spawn(&self, task: Task) -> Result<(), Task> {
        self.tx.send(task).map_err(|e| e.0)
    }
}

/// One `T` per process, made on first use in each process (again after a fork).
pub struct PerProcess<T> {
    slot: Mutex<Option<(u32, Arc<T>)>>,
}

impl<T> Default for PerProcess<T> {
    fn default() -> Self {
        PerProcess {
            slot: Mutex::new(None),
        }
    }
}

impl<T> PerProcess<T> {
    /// This process's `T`, made by `make` when there is none yet.
    pub fn get(&self, make: impl FnOnce() -> Result<T, String>) -> Result<Arc<T>, String> {
        let pid = std::process::id();
        let mut slot = self.slot.lock();
        match slot.take() {
            Some((p, t)) if p == pid => {
                *slot = Some((p, t.clone()));
                return Ok(t);
            }
            // Inherited through fork: its thread does not exist here, and dropping
            // its channel could wake the parent's runtime through a shared eventfd.
            Some(stale) => std::mem::forget(stale),
            None => {}
        }
        let t = Arc::new(make()?);
        *slot = Some((pid, t.clone()));
        Ok(t)
    }
}

/// Runs `future` to its end on a short-lived helper thread with a runtime of its
/// own, so that it works from anywhere: before a fork, inside another runtime.
pub fn block_on_helper<T: Send>(
    name: &str,
    future: impl Future<Output = T> + Send,
) -> Result<T, String> {
    let run = move || {
        super::sigprof::set_blocked(true);
        match tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
        {
            Ok(rt) => Ok(rt.block_on(future)),
            Err(e) => Err(format!("cannot start a runtime for the probe: {e}")),
        }
    };
    std::thread::scope(|s| {
        match std::thread::Builder::new()
            .name(name.to_owned())
            .spawn_scoped(s, run)
        {
            Ok(h) => h
                .join()
                .unwrap_or_else(|_| Err("the probe panicked".to_owned())),
            Err(e) => Err(format!("cannot start the probe thread: {e}")),
        }
    })
}
