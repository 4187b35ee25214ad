//! The upstreams of one group in one worker process: a connection pool each, the
//! balancer that picks among them, and the health changes it makes — logged, and
//! published to the shared metrics so that `/_health` and `/_metrics` show them
//! whichever worker answers.

use super::balance::{Balancer, Marked};
use super::pool::Pool;
use super::Settings;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

pub struct Group {
    pub settings: Arc<Settings>,
    pub pools: Vec<Pool>,
    pub balancer: Balancer,
    /// When (`monotonic_ms`) a drained upstream last took a request as the last
    /// resort was logged: once every 10 s at most.
    drained_logged_ms: AtomicU64,
}

impl Group {
    pub fn new(settings: Arc<Settings>) -> Group {
        let weights: Vec<u32> = settings.upstreams.iter().map(|u| u.weight).collect();
        Group {
            pools: (0..settings.upstreams.len())
                .map(|i| Pool::new(settings.clone(), i))
                .collect(),
            balancer: Balancer::new(
                settings.group.balance,
                &weights,
                settings.group.max_fails,
                settings.group.fail_timeout,
            ),
            settings,
            drained_logged_ms: AtomicU64::new(0),
        }
    }

    /// Whether upstream `i` is drained (in every process).
    pub fn drained(&self, i: usize) -> bool {
        let s = &self.settings;
        s.metrics.fpm_drained(s.upstreams[i].slot)
    }

    /// Drained upstream `i` takes a request because every other one of the group
    /// is drained, down or already `tried` by it: logged, at most every 10 s.
    pub fn drained_last_resort(&self, i: usize, tried: &[usize]) {
        let now = crate::metrics::monotonic_ms();
        let last = self.drained_logged_ms.load(Relaxed);
        if last != 0 && now.saturating_sub(last) < 10_000 {
            return;
        }
        if self
            .drained_logged_ms
            .compare_exchange(last, now.max(1), Relaxed, Relaxed)
            .is_err()
        {
            return;
        }
        let s = &self.settings;
        let why = if tried.is_empty() {
            "every upstream of the pool is drained or out of the turn"
        } else {
            "the other upstreams of the pool are drained, out of the turn or failed this request"
        };
        tracing::warn!(
            pool = %s.group.name,
            "PHP-FPM upstream {} is drained but takes requests: {why} (a drain never leaves a pool without an upstream; undrain one)",
            s.upstreams[i].shown
        );
    }

    /// An attempt on upstream `i` failed because of the upstream (`why`, for the
    /// log when it takes the upstream out).
    pub fn failed(&self, i: usize, why: &str) {
        let s = &self.settings;
        let u = &s.upstreams[i];
        s.metrics.fpm_failure(u.slot);
        if self.balancer.failed(i, Instant::now()) == Marked::Down {
            self.went_down(i, why);
        }
    }

    /// An active or health probe of `i` failed: out of the turn at once.
    pub fn probe_failed(&self, i: usize, why: &str) {
        let s = &self.settings;
        s.metrics.fpm_failure(s.upstreams[i].slot);
        let was_down = self.balancer.is_down(i, Instant::now());
        if self.balancer.mark_down(i, Instant::now()) && !was_down {
            self.went_down(i, why);
        }
    }

    fn went_down(&self, i: usize, why: &str) {
        let s = &self.settings;
        let u = &s.upstreams[i];
        s.metrics
            .fpm_down_for(u.slot, s.group.fail_timeout.as_millis() as u64);
        // Its kept-alive connections are most likely dead too.
        self.pools[i].close_all_idle();
        if s.upstreams.len() > 1 {
            tracing::warn!(
                pool = %s.group.name,
                "PHP-FPM upstream {} is out of the turn for {} ({} failures within {}, {}): {why}",
                u.shown,
                super::failure::show(s.group.fail_timeout),
                s.group.max_fails.max(1),
                super::failure::show(s.group.fail_timeout),
                s.group.full_key("max_fails")
            );
        }
    }

    /// `i` answered (a request or a probe): back in the turn if it was out.
    pub fn succeeded(&self, i: usize) {
        let s = &self.settings;
        let u = &s.upstreams[i];
        if self.balancer.succeeded(i, Instant::now()) && s.upstreams.len() > 1 {
            tracing::info!(pool = %s.group.name, "PHP-FPM upstream {} answers again: back in the turn", u.shown);
        }
        s.metrics.fpm_down_for(u.slot, 0);
    }

    /// Closes the connections idle for too long, and every idle one of a
    /// drained upstream.
    pub fn close_idle(&self) {
        for (i, p) in self.pools.iter().enumerate() {
            if self.drained(i) {
                p.close_all_idle();
            } else {
                p.close_idle();
            }
        }
    }
}
