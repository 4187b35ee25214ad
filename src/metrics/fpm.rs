//! Per-upstream series of the FastCGI backend (`fephp_fastcgi_upstream_*`), in a
//! shared-memory region of their own made with the engine's metrics (before any
//! fork), as the rest of `metrics`: counters are shared atomics; the busy
//! connections are kept per process in slots claimed by pid, so a dead worker's
//! connections stop counting. Upstreams have fixed slots (`[php] fpm_*` first,
//! then the `[php.fpm_pools.*]` by name); a slot that changes hands on reload
//! starts from zero.
//!
//! The region also carries each upstream's drain flag (set by
//! `fephp_engine_upstream_drain`, in any process): the balancer of every worker
//! process reads it with one relaxed load per candidate. Like the counters, it
//! stays with its slot across a reload that keeps the same (pool, address) there
//! and is cleared when the slot changes hands.

use super::{alive, current_pid, header, Metrics, MAX_PROCS};
use crate::config::MAX_FPM_UPSTREAMS;
use parking_lot::Mutex;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU64, Ordering::Relaxed};

#[repr(C)]
struct Slot {
    /// Which upstream counts here (a hash of pool and address); 0: none yet.
    key: AtomicU64,
    requests: AtomicU64,
    failures: AtomicU64,
    /// CLOCK_MONOTONIC milliseconds until which the upstream is out of the turn
    /// (the clock is the same in every process); 0: up.
    down_until_ms: AtomicU64,
    /// Drained: no new requests while another upstream of its group can take them.
    drained: AtomicBool,
}

/// One process's busy connections per upstream.
#[repr(C, align(64))]
struct ProcSlots {
    pid: AtomicI32,
    busy: [AtomicI64; MAX_FPM_UPSTREAMS],
}

#[repr(C)]
struct Shared {
    slots: [Slot; MAX_FPM_UPSTREAMS],
    procs: [ProcSlots; MAX_PROCS],
}

/// The region, and the labels this process knows for its slots.
pub(super) struct FpmStats {
    shared: super::shared::SharedZeroed<Shared>,
    /// (pool, address, weight) of each slot in use.
    names: Mutex<Vec<FpmName>>,
    /// This process's `procs` entry: pid << 32 | index.
    proc_slot: AtomicU64,
}

impl FpmStats {
    pub(super) fn new() -> FpmStats {
        FpmStats {
            // SAFETY: Shared is atomics only; all-zero is its initial state.
            shared: unsafe { super::shared::SharedZeroed::new() },
            names: Mutex::new(Vec::new()),
            proc_slot: AtomicU64::new(0),
        }
    }

    fn s(&self) -> &Shared {
        &self.shared
    }

    fn slot(&self, i: usize) -> Option<&Slot> {
        self.s().slots.get(i)
    }

    /// This process's busy counters, claiming an entry on first use.
    fn proc(&self) -> &ProcSlots {
        let pid = current_pid();
        let s = self.proc_slot.load(Relaxed);
        if s != 0 && (s >> 32) as i32 == pid {
            return &self.s().procs[(s & 0xffff) as usize];
        }
        let procs = &self.s().procs;
        let i = procs
            .iter()
            .position(|p| p.pid.load(Relaxed) == pid)
            .or_else(|| {
                procs.iter().position(|p| {
                    let owner = p.pid.load(Relaxed);
                    let free = (owner == 0 || !alive(owner))
                        && p.pid.compare_exchange(owner, pid, Relaxed, Relaxed).is_ok();
                    if free {
                        p.busy.iter().for_each(|b| b.store(0, Relaxed));
                    }
                    free
                })
            })
            // Every entry taken by a live process: share the last one.
            .unwrap_or(MAX_PROCS - 1);
        self.proc_slot
            .store(((pid as u32 as u64) << 32) | i as u64, Relaxed);
        &procs[i]
    }
}

/// One registered upstream: its group ("default" for `[php]`), its address as
/// configured and its weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FpmName {
    pub pool: String,
    pub address: String,
    pub weight: u32,
}

/// What `/_health` shows of one upstream (totals of every worker process).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FpmUpstreamStats {
    pub pool: String,
    pub address: String,
    pub weight: u32,
    pub up: bool,
    /// Drained (`fephp_engine_upstream_drain`): it takes no new requests.
    pub drained: bool,
    pub active: u64,
    pub requests: u64,
    pub failures: u64,
}

/// Milliseconds of CLOCK_MONOTONIC: comparable between processes (an `Instant`
/// is not readable as a number).
pub fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

fn key(pool: &str, address: &str) -> u64 {
    // FNV-1a: stable across processes and builds.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in pool.bytes().chain([0]).chain(address.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h | 1
}

/// A busy connection to an upstream; the gauge drops with it.
pub struct FpmBusy<'a> {
    metrics: &'a Metrics,
    slot: usize,
}

impl Drop for FpmBusy<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.metrics.fpm.proc().busy.get(self.slot) {
            b.fetch_sub(1, Relaxed);
        }
    }
}

impl Metrics {
    /// The FastCGI upstreams of an engine, (pool, address) by slot. A slot that
    /// counted another upstream before starts from zero.
    /// A drained upstream stays drained only while the same one keeps its slot.
    pub fn fpm_register(&self, upstreams: &[FpmName]) {
        for (i, u) in upstreams.iter().enumerate() {
            let Some(slot) = self.fpm.slot(i) else { break };
            let k = key(&u.pool, &u.address);
            let old = slot.key.load(Relaxed);
            if old != k && slot.key.compare_exchange(old, k, Relaxed, Relaxed).is_ok() {
                slot.requests.store(0, Relaxed);
                slot.failures.store(0, Relaxed);
                slot.down_until_ms.store(0, Relaxed);
                slot.drained.store(false, Relaxed);
            }
        }
        let n = upstreams.len().min(MAX_FPM_UPSTREAMS);
        *self.fpm.names.lock() = upstreams[..n].to_vec();
    }

    /// A request goes to the upstream of `slot`; it counts as busy until the guard
    /// drops.
    pub fn fpm_request(&self, slot: usize) -> FpmBusy<'_> {
        if let Some(s) = self.fpm.slot(slot) {
            s.requests.fetch_add(1, Relaxed);
            self.fpm.proc().busy[slot].fetch_add(1, Relaxed);
        }
        FpmBusy {
            metrics: self,
            slot,
        }
    }

    /// An attempt on the upstream of `slot` failed (it counts towards max_fails).
    pub fn fpm_failure(&self, slot: usize) {
        if let Some(s) = self.fpm.slot(slot) {
            s.failures.fetch_add(1, Relaxed);
        }
    }

    /// The upstream of `slot` is out of the turn for `ms` more milliseconds (0: up).
    pub fn fpm_down_for(&self, slot: usize, ms: u64) {
        if let Some(s) = self.fpm.slot(slot) {
            let until = if ms == 0 { 0 } else { monotonic_ms() + ms };
            s.down_until_ms.store(until, Relaxed);
        }
    }

    /// Whether the upstream of `slot` is drained: one relaxed load (the balancer
    /// asks it for every candidate of every pick).
    #[inline]
    pub fn fpm_drained(&self, slot: usize) -> bool {
        self.fpm.slot(slot).is_some_and(|s| s.drained.load(Relaxed))
    }

    /// Drains (or undrains) upstream `address` of FastCGI group `pool` in every
    /// process of the host: its new state, or Err naming the pools and addresses
    /// that exist.
    pub fn fpm_set_drained(
        &self,
        pool: &str,
        address: &str,
        drained: bool,
    ) -> Result<FpmUpstreamStats, String> {
        let names = self.fpm.names.lock().clone();
        let found = names
            .iter()
            .position(|n| n.pool == pool && n.address == address)
            .or_else(|| {
                // "unix:/x.sock" and "/x.sock" name the same socket.
                let bare = |a: &str| a.strip_prefix("unix:").unwrap_or(a).to_owned();
                names
                    .iter()
                    .position(|n| n.pool == pool && bare(&n.address) == bare(address))
            });
        let Some(i) = found else {
            if names.is_empty() {
                return Err("no FastCGI upstream is configured ([php] fpm_socket, fpm_upstreams or [php.fpm_pools.NAME])".to_owned());
            }
            let mut pools: Vec<&str> = names.iter().map(|n| n.pool.as_str()).collect();
            pools.dedup();
            let known = if pools.contains(&pool) {
                let list: Vec<String> = names
                    .iter()
                    .filter(|n| n.pool == pool)
                    .map(|n| format!("\"{}\"", n.address))
                    .collect();
                format!(
                    "FastCGI pool \"{pool}\" has no upstream \"{address}\": its upstreams are {}",
                    list.join(", ")
                )
            } else {
                let list: Vec<String> = pools.iter().map(|p| format!("\"{p}\"")).collect();
                format!("no FastCGI pool \"{pool}\": the pools are {} (\"default\" is [php] fpm_socket / fpm_upstreams)", list.join(", "))
            };
            return Err(known);
        };
        if let Some(s) = self.fpm.slot(i) {
            s.drained.store(drained, Relaxed);
        }
        Ok(self.fpm_upstreams().swap_remove(i))
    }

    /// Every registered upstream, with the totals of all worker processes.
    pub fn fpm_upstreams(&self) -> Vec<FpmUpstreamStats> {
        let names = self.fpm.names.lock().clone();
        let shared = self.fpm.s();
        let now = monotonic_ms();
        let live: Vec<&ProcSlots> = shared
            .procs
            .iter()
            .filter(|p| {
                let pid = p.pid.load(Relaxed);
                pid != 0 && alive(pid)
            })
            .collect();
        names
            .into_iter()
            .enumerate()
            .map(|(i, n)| {
                let s = &shared.slots[i];
                let busy: i64 = live.iter().map(|p| p.busy[i].load(Relaxed)).sum();
                FpmUpstreamStats {
                    pool: n.pool,
                    address: n.address,
                    weight: n.weight,
                    up: s.down_until_ms.load(Relaxed) <= now,
                    drained: s.drained.load(Relaxed),
                    active: busy.max(0) as u64,
                    requests: s.requests.load(Relaxed),
                    failures: s.failures.load(Relaxed),
                }
            })
            .collect()
    }

    /// The `fephp_fastcgi_upstream_*` series (nothing without upstreams).
    pub(super) fn render_fpm(&self, out: &mut String) {
        let list = self.fpm_upstreams();
        if list.is_empty() {
            return;
        }
        type Value = fn(&FpmUpstreamStats) -> u64;
        let series: [(&str, &str, &str, Value); 5] = [
            ("fephp_fastcgi_upstream_up", "gauge", "1 while the php-fpm upstream is in the turn, 0 while max_fails failures (or a failed ping) keep it out for fail_timeout.", |u| u.up.into()),
            ("fephp_fastcgi_upstream_drained", "gauge", "1 while the php-fpm upstream is drained (control API or fephp_engine_upstream_drain): it takes no new requests unless every upstream of its pool is drained or down.", |u| u.drained.into()),
            ("fephp_fastcgi_upstream_active_connections", "gauge", "Requests in flight to the php-fpm upstream (one busy connection each), in all worker processes.", |u| u.active),
            ("fephp_fastcgi_upstream_requests_total", "counter", "Attempts sent to the php-fpm upstream (a request that fails over counts on each upstream it tried).", |u| u.requests),
            ("fephp_fastcgi_upstream_failures_total", "counter", "Attempts that failed on the php-fpm upstream (connect errors, resets, timeouts, failed pings); they count towards max_fails.", |u| u.failures),
        ];
        for (name, kind, help, value) in series {
            header(out, name, kind, help);
            for u in &list {
                let address = u.address.replace('\\', "\\\\").replace('"', "\\\"");
                let _ = writeln!(
                    out,
                    "{name}{{pool=\"{}\",upstream=\"{address}\"}} {}",
                    u.pool,
                    value(u)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(pool: &str, address: &str) -> FpmName {
        FpmName {
            pool: pool.into(),
            address: address.into(),
            weight: 1,
        }
    }

    #[test]
    fn drain_by_name_is_shared_and_cleared_when_the_slot_changes_hands() {
        let m = Metrics::new();
        m.fpm_register(&[
            n("default", "127.0.0.1:9000"),
            n("default", "unix:/run/a.sock"),
        ]);
        let u = m.fpm_set_drained("default", "/run/a.sock", true).unwrap();
        assert!(u.drained && u.address == "unix:/run/a.sock");
        assert!(m.fpm_drained(1) && !m.fpm_drained(0));
        let mut text = String::new();
        m.render_fpm(&mut text);
        assert!(
            text.contains(
                "fephp_fastcgi_upstream_drained{pool=\"default\",upstream=\"unix:/run/a.sock\"} 1"
            ),
            "{text}"
        );
        let e = m
            .fpm_set_drained("default", "127.0.0.1:9001", true)
            .unwrap_err();
        assert!(
            e.contains("\"127.0.0.1:9000\", \"unix:/run/a.sock\""),
            "{e}"
        );
        let e = m
            .fpm_set_drained("php81", "127.0.0.1:9000", true)
            .unwrap_err();
        assert!(
            e.contains("no FastCGI pool \"php81\": the pools are \"default\""),
            "{e}"
        );
        // The same list again keeps the drain; another upstream in the slot clears it.
        m.fpm_register(&[
            n("default", "127.0.0.1:9000"),
            n("default", "unix:/run/a.sock"),
        ]);
        assert!(m.fpm_drained(1));
        m.fpm_register(&[
            n("default", "127.0.0.1:9000"),
            n("default", "unix:/run/b.sock"),
        ]);
        assert!(!m.fpm_drained(1));
        assert!(
            !m.fpm_set_drained("default", "127.0.0.1:9000", false)
                .unwrap()
                .drained
        );
    }

    #[test]
    fn counts_by_slot_and_resets_a_slot_that_changes_hands() {
        let m = Metrics::new();
        m.fpm_register(&[
            n("default", "127.0.0.1:9000"),
            n("default", "unix:/run/a.sock"),
        ]);
        {
            let _busy = m.fpm_request(1);
            m.fpm_failure(1);
            m.fpm_down_for(1, 60_000);
            let u = m.fpm_upstreams();
            assert_eq!(
                (u[1].active, u[1].requests, u[1].failures, u[1].up),
                (1, 1, 1, false)
            );
            assert!(u[0].up);
        }
        let text = {
            let mut s = String::new();
            m.render_fpm(&mut s);
            s
        };
        assert!(
            text.contains(
                "fephp_fastcgi_upstream_up{pool=\"default\",upstream=\"unix:/run/a.sock\"} 0"
            ),
            "{text}"
        );
        assert!(text.contains("fephp_fastcgi_upstream_active_connections{pool=\"default\",upstream=\"unix:/run/a.sock\"} 0"), "{text}");
        assert!(text.contains("fephp_fastcgi_upstream_requests_total{pool=\"default\",upstream=\"unix:/run/a.sock\"} 1"), "{text}");
        // The same upstream again keeps its counts; another one in its slot does not.
        m.fpm_register(&[
            n("default", "127.0.0.1:9000"),
            n("default", "unix:/run/a.sock"),
        ]);
        assert_eq!(m.fpm_upstreams()[1].requests, 1);
        m.fpm_register(&[
            n("default", "127.0.0.1:9000"),
            n("php81", "unix:/run/b.sock"),
        ]);
        let u = m.fpm_upstreams();
        assert_eq!(
            (u[1].pool.as_str(), u[1].requests, u[1].up),
            ("php81", 0, true)
        );
    }
}
