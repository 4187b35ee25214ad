//! The connections of one worker process to one php-fpm upstream: at most
//! `max_connections` (a permit per busy one), the idle ones kept alive and reused
//! most recent first.

use super::client::Conn;
use super::failure::Failure;
use super::Settings;
use crate::metrics::OpenConnection;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A connection of the pool, counted in `fephp_fastcgi_connections_open` while it
/// exists.
pub struct PoolConn {
    conn: Conn,
    _open: OpenConnection,
}

impl std::ops::Deref for PoolConn {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.conn
    }
}

impl std::ops::DerefMut for PoolConn {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.conn
    }
}

/// A pooled connection and when it went idle.
struct Idle {
    conn: PoolConn,
    since: Instant,
}

/// The connections of one worker process to upstream `index`: at most
/// `max_connections` in all, busy or idle (a semaphore permit per busy one; idle
/// ones wait in `idle`).
pub struct Pool {
    pub settings: Arc<Settings>,
    /// In `settings.upstreams`.
    pub index: usize,
    permits: Arc<Semaphore>,
    /// Most recently used last.
    idle: Mutex<Vec<Idle>>,
}

impl Pool {
    pub fn new(settings: Arc<Settings>, index: usize) -> Pool {
        Pool {
            permits: Arc::new(Semaphore::new(settings.max_connections)),
            idle: Mutex::new(Vec::new()),
            settings,
            index,
        }
    }

    /// A permit for one busy connection, waiting at most `read_timeout` for one.
    pub async fn permit(&self) -> Result<OwnedSemaphorePermit, Failure> {
        let s = &self.settings;
        let waiting = Instant::now();
        match self.permits.clone().try_acquire_owned() {
            Ok(p) => {
                s.metrics.fastcgi_waited(waiting);
                Ok(p)
            }
            Err(_) => {
                s.metrics.fastcgi_wait();
                let permit = self.permits.clone().acquire_owned();
                let got = tokio::time::timeout(s.timeouts.read, permit).await;
                s.metrics.fastcgi_waited(waiting);
                match got {
                    Ok(Ok(p)) => Ok(p),
                    _ => Err(Failure::pool_busy(s.max_connections, s.timeouts.read)),
                }
            }
        }
    }

    /// A kept-alive connection still open, else a new one. `bool` = reused.
    pub async fn checkout(&self) -> Result<(PoolConn, bool), Failure> {
        loop {
            let candidate = self.idle.lock().pop();
            if candidate.is_some() {
                self.settings.metrics.fastcgi_idle(-1);
            }
            match candidate {
                Some(i)
                    if i.since.elapsed() < self.settings.idle_timeout && i.conn.is_reusable() =>
                {
                    return Ok((i.conn, true));
                }
                Some(_) => continue, // closed by PHP-FPM or too old: dropped
                None => break,
            }
        }
        self.connect().await.map(|c| (c, false))
    }

    pub async fn connect(&self) -> Result<PoolConn, Failure> {
        let s = &self.settings;
        let u = &s.upstreams[self.index];
        let conn = Conn::connect(&u.address, s.timeouts.connect)
            .await
            .map_err(|e| Failure::connect(e, s, u))?;
        Ok(PoolConn {
            conn,
            _open: s.metrics.fastcgi_connection(),
        })
    }

    /// Keeps `conn` alive for the next request, unless its upstream is drained
    /// (then it closes here).
    pub fn checkin(&self, conn: PoolConn) {
        let s = &self.settings;
        if s.metrics.fpm_drained(s.upstreams[self.index].slot) {
            return;
        }
        self.idle.lock().push(Idle {
            conn,
            since: Instant::now(),
        });
        self.settings.metrics.fastcgi_idle(1);
    }

    /// Closes connections idle for longer than `idle_timeout`.
    pub fn close_idle(&self) {
        let limit = self.settings.idle_timeout;
        let mut idle = self.idle.lock();
        let before = idle.len();
        idle.retain(|i| i.since.elapsed() < limit);
        let closed = before - idle.len();
        drop(idle);
        self.settings.metrics.fastcgi_idle(-(closed as i64));
    }
}

impl Pool {
    /// Closes every idle connection (the upstream was taken out of the turn).
    pub fn close_all_idle(&self) {
        let n = std::mem::take(&mut *self.idle.lock()).len();
        self.settings.metrics.fastcgi_idle(-(n as i64));
    }
}

/// The idle connections still pooled when the pool goes (its engine was replaced
/// and its last request is done) close with it.
impl Drop for Pool {
    fn drop(&mut self) {
        let n = self.idle.get_mut().len();
        self.settings.metrics.fastcgi_idle(-(n as i64));
    }
}
