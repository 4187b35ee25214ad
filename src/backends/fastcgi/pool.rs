//! The connections of one worker process to PHP-FPM, and one request's run
//! through them: a permit, a kept-alive or new connection, the exchange, and one
//! retry when a kept-alive connection turns out to be closed.

use super::client::{self, Conn};
use super::failure::Failure;
use super::response::Responder;
use super::{FcgiJob, Settings};
use crate::metrics::OpenConnection;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;

/// A connection of the pool, counted in `fephp_fastcgi_connections_open` while it
/// exists.
struct PoolConn {
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

/// The connections of one worker process: at most `max_connections` in all, busy
/// or idle (a semaphore permit per busy one; idle ones wait in `idle`).
pub struct Pool {
    pub settings: Arc<Settings>,
    permits: Arc<Semaphore>,
    /// Most recently used last.
    idle: Mutex<Vec<Idle>>,
}

impl Pool {
    pub fn new(settings: Arc<Settings>) -> Pool {
        Pool {
            permits: Arc::new(Semaphore::new(settings.max_connections)),
            idle: Mutex::new(Vec::new()),
            settings,
        }
    }

    /// A kept-alive connection still open, else a new one. `bool` = reused.
    async fn checkout(&self) -> Result<(PoolConn, bool), Failure> {
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

    async fn connect(&self) -> Result<PoolConn, Failure> {
        let s = &self.settings;
        let conn = Conn::connect(&s.address, s.timeouts.connect)
            .await
            .map_err(|e| Failure::connect(e, s))?;
        Ok(PoolConn {
            conn,
            _open: s.metrics.fastcgi_connection(),
        })
    }

    fn checkin(&self, conn: PoolConn) {
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

/// The idle connections still pooled when the pool goes (its engine was replaced
/// and its last request is done) close with it.
impl Drop for Pool {
    fn drop(&mut self) {
        let n = self.idle.get_mut().len();
        self.settings.metrics.fastcgi_idle(-(n as i64));
    }
}

/// Runs one request: a permit, a connection, the exchange; a stale kept-alive
/// connection is retried once on a fresh one.
pub async fn run(pool: Arc<Pool>, mut job: FcgiJob) {
    let Some(complete) = job.complete.take() else {
        return;
    };
    let mut responder = Responder::new(job.log_uri.clone(), job.head, complete);
    let s = pool.settings.clone();
    let outcome = async {
        let waiting = Instant::now();
        let _permit = match pool.permits.clone().try_acquire_owned() {
            Ok(p) => {
                s.metrics.fastcgi_waited(waiting);
                p
            }
            Err(_) => {
                s.metrics.fastcgi_wait();
                let permit = pool.permits.clone().acquire_owned();
                let got = tokio::time::timeout(s.timeouts.read, permit).await;
                s.metrics.fastcgi_waited(waiting);
                match got {
                    Ok(Ok(p)) => p,
                    _ => return Err(Failure::pool_busy(s.max_connections, s.timeouts.read)),
                }
            }
        };
        // A small body is read ahead so that a stale connection can be retried
        // with it; a larger one is read as it goes out (and not retried once sent).
        job.body
            .read_ahead(crate::http::request_body::READ_AHEAD_UP_TO)
            .map_err(Failure::request_body)?;
        let (mut conn, mut reused) = pool.checkout().await?;
        loop {
            match client::exchange(&mut conn, &job.request, &job.body, &s.timeouts, &mut responder).await {
                Ok(done) => {
                    if done.reusable {
                        pool.checkin(conn);
                    }
                    return Ok(());
                }
                Err(f) if f.stale && reused && !responder.responded() && job.body.rewind() => {
                    tracing::debug!(uri = %job.log_uri, "a kept-alive connection was closed; retrying");
                    s.metrics.fastcgi_retry();
                    conn = pool.connect().await?;
                    reused = false;
                }
                Err(f) => return Err(f),
            }
        }
    }
    .await;
    // Nothing reads the body after the exchange.
    job.body.close();
    if let Err(f) = outcome {
        if let Some(log) = &f.log {
            tracing::error!(uri = %job.log_uri, status = f.status, "{log}");
        } else {
            tracing::debug!(uri = %job.log_uri, "{}", f.hint);
        }
        responder.fail(&f);
    }
}
