//! The connections of one worker process to PHP-FPM, and one request's run
//! through them: a permit, a kept-alive or new connection, the exchange, and one
//! retry when a kept-alive connection turns out to be closed.

use super::client::{self, Conn};
use super::failure::Failure;
use super::response::Responder;
use super::{FcgiJob, Settings};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;

/// A pooled connection and when it went idle.
struct Idle {
    conn: Conn,
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
    async fn checkout(&self) -> Result<(Conn, bool), Failure> {
        loop {
            let candidate = self.idle.lock().pop();
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

    async fn connect(&self) -> Result<Conn, Failure> {
        let s = &self.settings;
        Conn::connect(&s.address, s.timeouts.connect)
            .await
            .map_err(|e| Failure::connect(e, s))
    }

    fn checkin(&self, conn: Conn) {
        self.idle.lock().push(Idle {
            conn,
            since: Instant::now(),
        });
    }

    /// Closes connections idle for longer than `idle_timeout`.
    pub fn close_idle(&self) {
        let limit = self.settings.idle_timeout;
        self.idle.lock().retain(|i| i.since.elapsed() < limit);
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
        let permit = pool.permits.clone().acquire_owned();
        let _permit = match tokio::time::timeout(s.timeouts.read, permit).await {
            Ok(Ok(p)) => p,
            _ => return Err(Failure::pool_busy(s.max_connections, s.timeouts.read)),
        };
        let (mut conn, mut reused) = pool.checkout().await?;
        loop {
            match client::exchange(&mut conn, &job.request, &job.body, &s.timeouts, &mut responder).await {
                Ok(done) => {
                    if done.reusable {
                        pool.checkin(conn);
                    }
                    return Ok(());
                }
                Err(f) if f.stale && reused && !responder.responded() => {
                    tracing::debug!(uri = %job.log_uri, "a kept-alive connection was closed; retrying");
                    conn = pool.connect().await?;
                    reused = false;
                }
                Err(f) => return Err(f),
            }
        }
    }
    .await;
    if let Err(f) = outcome {
        if let Some(log) = &f.log {
            tracing::error!(uri = %job.log_uri, status = f.status, "{log}");
        } else {
            tracing::debug!(uri = %job.log_uri, "{}", f.hint);
        }
        responder.fail(&f);
    }
}
