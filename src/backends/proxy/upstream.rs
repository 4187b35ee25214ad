//! The upstreams of one worker process: their kept-alive connections (at most
//! `max_connections` busy per upstream, the idle ones reused most recent first),
//! the round-robin turn, and passive health (`max_fails` within `fail_timeout`
//! take an upstream out of the turn for `fail_timeout`, as nginx's upstream module
//! does).

use super::exchange::UpstreamBody;
use super::failure::Failure;
use super::Settings;
use crate::backends::prompt_ack::PromptAck;
use crate::config::UpstreamAddress;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub type Sender = SendRequest<UpstreamBody>;

/// Failures counted towards `max_fails`, and until when the upstream is out.
#[derive(Debug, Default)]
struct Passive {
    fails: u32,
    window_start: Option<Instant>,
    down_until: Option<Instant>,
}

pub struct Upstream {
    pub address: UpstreamAddress,
    permits: Arc<Semaphore>,
    /// Most recently used last.
    idle: Mutex<Vec<(Sender, Instant)>>,
    passive: Mutex<Passive>,
}

/// A connection checked out for one request, with its permit.
pub struct Lease {
    pub sender: Sender,
    /// Taken from the idle list (it may have been closed by the upstream meanwhile).
    pub reused: bool,
    _permit: OwnedSemaphorePermit,
}

impl Upstream {
    fn new(address: UpstreamAddress, max_connections: usize) -> Upstream {
        Upstream {
            address,
            permits: Arc::new(Semaphore::new(max_connections)),
            idle: Mutex::new(Vec::new()),
            passive: Mutex::new(Passive::default()),
        }
    }

    /// A permit (waiting at most `read_timeout`), then a kept-alive connection
    /// still open or a new one.
    pub async fn checkout(&self, s: &Settings) -> Result<Lease, Failure> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                match tokio::time::timeout(s.read_timeout, self.permits.clone().acquire_owned())
                    .await
                {
                    Ok(Ok(p)) => p,
                    _ => {
                        return Err(Failure::busy(
                            &self.address,
                            s.max_connections,
                            s.read_timeout,
                        ))
                    }
                }
            }
        };
        loop {
            let Some((sender, since)) = self.idle.lock().pop() else {
                break;
            };
            if since.elapsed() < s.idle_timeout && sender.is_ready() {
                return Ok(Lease {
                    sender,
                    reused: true,
                    _permit: permit,
                });
            }
        }
        let sender = self.connect(s).await?;
        Ok(Lease {
            sender,
            reused: false,
            _permit: permit,
        })
    }

    /// A new connection on the same permit (after a kept-alive one turned out
    /// closed).
    pub async fn reconnect(&self, lease: Lease, s: &Settings) -> Result<Lease, Failure> {
        let sender = self.connect(s).await?;
        Ok(Lease {
            sender,
            reused: false,
            ..lease
        })
    }

    async fn connect(&self, s: &Settings) -> Result<Sender, Failure> {
        let a = &self.address;
        let stream = match tokio::time::timeout(
            s.connect_timeout,
            tokio::net::TcpStream::connect((a.host.as_str(), a.port)),
        )
        .await
        {
            Err(_) => return Err(Failure::connect_timeout(a, s.connect_timeout)),
            Ok(Err(e)) => return Err(Failure::connect(e, a)),
            Ok(Ok(stream)) => stream,
        };
        let _ = stream.set_nodelay(true);
        // Upstreams may leave Nagle on: see prompt_ack for the 40 ms it avoids.
        let fd = stream.as_raw_fd();
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(PromptAck::new(stream, fd)))
            .await
            .map_err(|e| Failure::exchange(e, a))?;
        let address = a.to_string();
        // Drives the connection until both ends are done with it.
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(upstream = %address, error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Back to the idle list once the connection can take the next request (the
    /// response was read to its end and the upstream keeps the connection).
    pub async fn checkin(&self, lease: Lease) {
        let Lease {
            mut sender,
            _permit,
            ..
        } = lease;
        if let Ok(Ok(())) = tokio::time::timeout(Duration::from_secs(1), sender.ready()).await {
            self.idle.lock().push((sender, Instant::now()));
        }
    }

    /// Closes connections idle longer than `limit` or closed by the upstream.
    pub fn close_idle(&self, limit: Duration) {
        self.idle
            .lock()
            .retain(|(sender, since)| since.elapsed() < limit && !sender.is_closed());
    }

    /// Out of the turn because of recent failures.
    pub fn is_down(&self, now: Instant) -> bool {
        self.passive.lock().down_until.is_some_and(|t| now < t)
    }

    /// Seconds left out of the turn, if it is.
    pub fn down_for(&self) -> Option<Duration> {
        let until = self.passive.lock().down_until?;
        until.checked_duration_since(Instant::now())
    }

    /// A failed attempt; true when it takes the upstream out of the turn.
    pub fn failed(&self, s: &Settings) -> bool {
        if s.max_fails == 0 {
            return false;
        }
        let now = Instant::now();
        let mut p = self.passive.lock();
        if p.window_start
            .is_none_or(|w| now.duration_since(w) >= s.fail_timeout)
        {
            p.fails = 0;
            p.window_start = Some(now);
        }
        p.fails += 1;
        if p.fails >= s.max_fails {
            *p = Passive {
                down_until: Some(now + s.fail_timeout),
                ..Passive::default()
            };
            return true;
        }
        false
    }

    /// A response came: the failures so far are forgotten.
    pub fn succeeded(&self) {
        let mut p = self.passive.lock();
        if p.fails > 0 || p.down_until.is_some() {
            *p = Passive::default();
        }
    }
}

/// The upstreams of one worker process, in turn.
pub struct Upstreams {
    pub list: Vec<Arc<Upstream>>,
    next: AtomicUsize,
}

impl Upstreams {
    pub fn new(s: &Settings) -> Upstreams {
        Upstreams {
            list: s
                .upstreams
                .iter()
                .map(|a| Arc::new(Upstream::new(a.clone(), s.max_connections)))
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// The next upstream in turn that is not out and not `tried` yet; when every
    /// one left is out, the next of those anyway (better a try than no answer).
    pub fn pick(&self, tried: &[usize]) -> Option<usize> {
        let n = self.list.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let now = Instant::now();
        let order = (0..n)
            .map(|k| (start + k) % n)
            .filter(|i| !tried.contains(i));
        let mut fallback = None;
        for i in order {
            if !self.list[i].is_down(now) {
                return Some(i);
            }
            fallback = fallback.or(Some(i));
        }
        fallback
    }

    pub fn close_idle(&self, limit: Duration) {
        for u in &self.list {
            u.close_idle(limit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn settings(n: usize, max_fails: u32) -> Settings {
        Settings {
            upstreams: (0..n)
                .map(|i| UpstreamAddress::parse(&format!("http://127.0.0.1:{}", 9001 + i)).unwrap())
                .collect(),
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            max_connections: 4,
            max_fails,
            fail_timeout: Duration::from_secs(30),
            metrics: Arc::new(Metrics::new()),
        }
    }

    #[test]
    fn round_robin_skips_upstreams_that_are_out() {
        let s = settings(3, 2);
        let u = Upstreams::new(&s);
        let picks: Vec<usize> = (0..6).map(|_| u.pick(&[]).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        // One failure of two allowed: still in the turn.
        assert!(!u.list[1].failed(&s));
        assert!(!u.list[1].is_down(Instant::now()));
        assert!(u.list[1].failed(&s));
        assert!(u.list[1].is_down(Instant::now()));
        let picks: Vec<usize> = (0..6).map(|_| u.pick(&[]).unwrap()).collect();
        assert!(!picks.contains(&1), "{picks:?}");
        // Tried ones are not picked again.
        assert_eq!(u.pick(&[0, 2]), Some(1));
        assert_eq!(u.pick(&[0, 1, 2]), None);
        // Every one out: tried anyway.
        u.list[0].failed(&s);
        u.list[0].failed(&s);
        u.list[2].failed(&s);
        u.list[2].failed(&s);
        assert!(u.pick(&[]).is_some());
        u.list[1].succeeded();
        assert!(!u.list[1].is_down(Instant::now()));
        assert_eq!(u.pick(&[]), Some(1));
    }

    #[test]
    fn max_fails_zero_never_takes_an_upstream_out() {
        let s = settings(1, 0);
        let u = Upstreams::new(&s);
        for _ in 0..10 {
            assert!(!u.list[0].failed(&s));
        }
        assert!(!u.list[0].is_down(Instant::now()));
    }
}
