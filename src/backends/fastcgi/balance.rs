//! Which php-fpm upstream of a group takes the next attempt, in one worker
//! process: least connections (ties, and `round_robin`, by smooth weighted
//! round-robin as nginx's upstream module does), passive health (`max_fails`
//! failures within `fail_timeout` take an upstream out of the turn for
//! `fail_timeout`, as the proxy backend does), drained upstreams (a flag in the
//! shared metrics, read by the caller's `drained`) left out, and the last resort
//! when every upstream is out or drained: a drained one that is up, else the one
//! that failed least recently, rather than no attempt.
//!
//! Pure bookkeeping: no I/O, the time is passed in, so it is tested alone.

use crate::config::FpmBalance;
use parking_lot::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct State {
    weight: i64,
    /// Smooth weighted round-robin's running score.
    current: i64,
    /// Attempts in flight on this upstream from this process.
    active: u64,
    /// Failures counted towards `max_fails` since `window_start`.
    fails: u32,
    window_start: Option<Instant>,
    down_until: Option<Instant>,
    /// When it last answered (a request or a probe).
    answered: Option<Instant>,
}

pub struct Balancer {
    policy: FpmBalance,
    max_fails: u32,
    fail_timeout: Duration,
    state: Mutex<Vec<State>>,
}

/// How a failure changed an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marked {
    /// Still in the turn.
    Counted,
    /// Taken out of the turn until `fail_timeout` from now.
    Down,
}

impl Balancer {
    pub fn new(
        policy: FpmBalance,
        weights: &[u32],
        max_fails: u32,
        fail_timeout: Duration,
    ) -> Balancer {
        Balancer {
            policy,
            max_fails,
            fail_timeout,
            state: Mutex::new(
                weights
                    .iter()
                    .map(|&w| State {
                        weight: i64::from(w.max(1)),
                        ..State::default()
                    })
                    .collect(),
            ),
        }
    }

    /// `pick_among` with no upstream drained.
    #[cfg(test)]
    pub fn pick(&self, tried: &[usize], now: Instant) -> Option<usize> {
        self.pick_among(tried, now, |_| false)
    }

    /// The upstream for the next attempt among those not `tried` yet, counted as
    /// active until `done`: an upstream in the turn and not `drained` if any (by
    /// the policy), else the last resort: a drained one that is up, else the one
    /// whose time out ends first (it failed least recently). None once every
    /// upstream was tried. `drained` is asked once per untried upstream that is
    /// up (the caller's is one relaxed atomic load).
    pub fn pick_among(
        &self,
        tried: &[usize],
        now: Instant,
        drained: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let mut st = self.state.lock();
        let untried = |i: &usize| !tried.contains(i);
        let is_up = |s: &State| s.down_until.is_none_or(|t| now >= t);
        let in_turn: Vec<usize> = (0..st.len())
            .filter(untried)
            .filter(|&i| is_up(&st[i]))
            .collect();
        let mut up: Vec<usize> = in_turn.iter().copied().filter(|&i| !drained(i)).collect();
        if up.is_empty() {
            // Every one in the turn is drained: they share the load as usual.
            up = in_turn;
        }
        let chosen = if up.is_empty() {
            (0..st.len())
                .filter(untried)
                .min_by_key(|&i| st[i].down_until)?
        } else {
            let candidates = match self.policy {
                FpmBalance::RoundRobin => up,
                FpmBalance::LeastConn => {
                    // Fewest active per unit of weight: a/wa < b/wb ⇔ a·wb < b·wa.
                    let load = |i: usize| (st[i].active as i128, st[i].weight as i128);
                    let best = up
                        .iter()
                        .copied()
                        .min_by(|&a, &b| {
                            let ((aa, aw), (ba, bw)) = (load(a), load(b));
                            (aa * bw).cmp(&(ba * aw))
                        })
                        .expect("non-empty");
                    let (ba, bw) = load(best);
                    up.into_iter()
                        .filter(|&i| {
                            let (a, w) = load(i);
                            a * bw == ba * w
                        })
                        .collect()
                }
            };
            smooth_weighted(&mut st, &candidates)
        };
        st[chosen].active += 1;
        Some(chosen)
    }

    /// The attempt on `i` is over (whatever its outcome).
    pub fn done(&self, i: usize) {
        if let Some(s) = self.state.lock().get_mut(i) {
            s.active = s.active.saturating_sub(1);
        }
    }

    /// An attempt on `i` failed.
    pub fn failed(&self, i: usize, now: Instant) -> Marked {
        if self.max_fails == 0 {
            return Marked::Counted;
        }
        let mut st = self.state.lock();
        let Some(s) = st.get_mut(i) else {
            return Marked::Counted;
        };
        if s.window_start
            .is_none_or(|w| now.duration_since(w) >= self.fail_timeout)
        {
            s.fails = 0;
            s.window_start = Some(now);
        }
        s.fails += 1;
        if s.fails >= self.max_fails {
            s.fails = 0;
            s.window_start = None;
            s.down_until = Some(now + self.fail_timeout);
            return Marked::Down;
        }
        Marked::Counted
    }

    /// Out of the turn at once (a failed active probe), unless `max_fails` = 0.
    pub fn mark_down(&self, i: usize, now: Instant) -> bool {
        if self.max_fails == 0 {
            return false;
        }
        if let Some(s) = self.state.lock().get_mut(i) {
            s.down_until = Some(now + self.fail_timeout);
            return true;
        }
        false
    }

    /// `i` answered: its failures are forgotten and it is back in the turn.
    /// Returns whether it was out.
    pub fn succeeded(&self, i: usize, now: Instant) -> bool {
        let mut st = self.state.lock();
        let Some(s) = st.get_mut(i) else { return false };
        let was_down = s.down_until.is_some_and(|t| now < t);
        s.fails = 0;
        s.window_start = None;
        s.down_until = None;
        s.answered = Some(now);
        was_down
    }

    /// How long ago `i` last answered, if it did within `window` and has not
    /// failed since.
    pub fn answered_within(&self, i: usize, now: Instant, window: Duration) -> Option<Duration> {
        let st = self.state.lock();
        let s = st.get(i)?;
        if s.fails > 0 || s.down_until.is_some_and(|t| now < t) {
            return None;
        }
        let ago = now.saturating_duration_since(s.answered?);
        (ago <= window).then_some(ago)
    }

    pub fn is_down(&self, i: usize, now: Instant) -> bool {
        self.state
            .lock()
            .get(i)
            .is_some_and(|s| s.down_until.is_some_and(|t| now < t))
    }
}

/// nginx's smooth weighted round-robin over `candidates`: each gains its weight,
/// the highest score wins and pays the total. Over a cycle every upstream is
/// picked as often as its weight, interleaved (5,1,1 gives a a b a c a a).
fn smooth_weighted(st: &mut [State], candidates: &[usize]) -> usize {
    let mut total = 0;
    let mut best = candidates[0];
    for &i in candidates {
        st[i].current += st[i].weight;
        total += st[i].weight;
        if st[i].current > st[best].current {
            best = i;
        }
    }
    st[best].current -= total;
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(10);

    fn counts(b: &Balancer, n: usize, upstreams: usize) -> Vec<usize> {
        let now = Instant::now();
        let mut c = vec![0; upstreams];
        for _ in 0..n {
            let i = b.pick(&[], now).unwrap();
            b.done(i);
            c[i] += 1;
        }
        c
    }

    #[test]
    fn weighted_round_robin_follows_the_weights_interleaved() {
        let b = Balancer::new(FpmBalance::RoundRobin, &[5, 1, 1], 1, T);
        let now = Instant::now();
        let order: Vec<usize> = (0..7)
            .map(|_| {
                let i = b.pick(&[], now).unwrap();
                b.done(i);
                i
            })
            .collect();
        assert_eq!(order, [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(counts(&b, 700, 3), [500, 100, 100]);
        let b = Balancer::new(FpmBalance::RoundRobin, &[1, 1], 1, T);
        assert_eq!(counts(&b, 10, 2), [5, 5]);
    }

    #[test]
    fn least_conn_prefers_the_least_busy_and_breaks_ties_by_weight() {
        let b = Balancer::new(FpmBalance::LeastConn, &[1, 1, 1], 1, T);
        let now = Instant::now();
        // Three in flight at once go to three upstreams.
        let held: Vec<usize> = (0..3).map(|_| b.pick(&[], now).unwrap()).collect();
        let mut sorted = held.clone();
        sorted.sort();
        assert_eq!(sorted, [0, 1, 2]);
        // Two finish on 1: the next two go there.
        b.done(1);
        assert_eq!(b.pick(&[], now), Some(1));
        b.done(0);
        assert_eq!(b.pick(&[], now), Some(0));
        // Idle (sequential) requests follow the weights.
        let b = Balancer::new(FpmBalance::LeastConn, &[3, 1], 1, T);
        assert_eq!(counts(&b, 400, 2), [300, 100]);
        // Weighted load: 2 active on weight 2 equals 1 active on weight 1.
        let b = Balancer::new(FpmBalance::LeastConn, &[2, 1], 1, T);
        let picks: Vec<usize> = (0..3).map(|_| b.pick(&[], now).unwrap()).collect();
        assert_eq!(picks.iter().filter(|&&i| i == 0).count(), 2, "{picks:?}");
    }

    #[test]
    fn down_after_max_fails_and_back_after_fail_timeout_or_success() {
        let b = Balancer::new(FpmBalance::LeastConn, &[1, 1], 2, T);
        let t0 = Instant::now();
        assert_eq!(b.failed(0, t0), Marked::Counted);
        assert!(!b.is_down(0, t0));
        assert_eq!(b.failed(0, t0 + Duration::from_secs(1)), Marked::Down);
        assert!(b.is_down(0, t0 + Duration::from_secs(2)));
        // Out of the turn: every pick goes to 1.
        for _ in 0..5 {
            let i = b.pick(&[], t0 + Duration::from_secs(2)).unwrap();
            b.done(i);
            assert_eq!(i, 1);
        }
        // Back after fail_timeout.
        let later = t0 + Duration::from_secs(12);
        assert!(!b.is_down(0, later));
        assert_eq!(counts_at(&b, 4, later), [2, 2]);
        // Failures further apart than fail_timeout never add up.
        let b = Balancer::new(FpmBalance::LeastConn, &[1], 2, T);
        assert_eq!(b.failed(0, t0), Marked::Counted);
        assert_eq!(b.failed(0, t0 + Duration::from_secs(11)), Marked::Counted);
        // A success forgets the failures and brings it back.
        assert_eq!(b.failed(0, t0 + Duration::from_secs(12)), Marked::Down);
        assert!(b.succeeded(0, t0 + Duration::from_secs(13)));
        assert!(!b.is_down(0, t0 + Duration::from_secs(13)));
    }

    fn counts_at(b: &Balancer, n: usize, now: Instant) -> [usize; 2] {
        let mut c = [0; 2];
        for _ in 0..n {
            let i = b.pick(&[], now).unwrap();
            b.done(i);
            c[i] += 1;
        }
        c
    }

    #[test]
    fn tried_ones_are_skipped_and_when_all_are_down_the_least_recently_failed_goes() {
        let b = Balancer::new(FpmBalance::RoundRobin, &[1, 1, 1], 1, T);
        let t0 = Instant::now();
        assert_eq!(b.pick(&[0, 2], t0), Some(1));
        assert_eq!(b.pick(&[0, 1, 2], t0), None);
        b.failed(2, t0);
        b.failed(0, t0 + Duration::from_secs(1));
        b.failed(1, t0 + Duration::from_secs(2));
        let now = t0 + Duration::from_secs(3);
        // All out: 2 failed first, then 0, then 1.
        assert_eq!(b.pick(&[], now), Some(2));
        assert_eq!(b.pick(&[2], now), Some(0));
        assert_eq!(b.pick(&[2, 0], now), Some(1));
        // max_fails = 0: never out.
        let b = Balancer::new(FpmBalance::LeastConn, &[1], 0, T);
        assert_eq!(b.failed(0, t0), Marked::Counted);
        assert!(!b.mark_down(0, t0));
        assert!(!b.is_down(0, t0));
    }

    #[test]
    fn a_drained_upstream_gets_nothing_unless_every_other_is_drained_or_down() {
        let b = Balancer::new(FpmBalance::LeastConn, &[1, 1, 1], 1, T);
        let t0 = Instant::now();
        let drained = std::cell::Cell::new([false, true, false]);
        let pick = |tried: &[usize], now| {
            let i = b.pick_among(tried, now, |i| drained.get()[i]);
            if let Some(i) = i {
                b.done(i);
            }
            i
        };
        let mut c = [0; 3];
        for _ in 0..30 {
            c[pick(&[], t0).unwrap()] += 1;
        }
        assert_eq!(c, [15, 0, 15]);
        // A request that failed on 0 and 2 still goes to the drained one.
        assert_eq!(pick(&[0, 2], t0), Some(1));
        // Every other one down: the drained one (up) is the last resort.
        b.failed(0, t0);
        b.failed(2, t0);
        let now = t0 + Duration::from_secs(1);
        assert_eq!(pick(&[], now), Some(1));
        // All drained: they share the load as if none were.
        let later = t0 + Duration::from_secs(20);
        drained.set([true, true, true]);
        let mut c = [0; 3];
        for _ in 0..30 {
            c[pick(&[], later).unwrap()] += 1;
        }
        assert_eq!(c, [10, 10, 10]);
        // Undrained: it serves again.
        drained.set([false, false, false]);
        let mut c = [0; 3];
        for _ in 0..30 {
            c[pick(&[], later).unwrap()] += 1;
        }
        assert_eq!(c, [10, 10, 10]);
    }

    #[test]
    fn a_recent_answer_stands_for_a_probe_until_a_failure() {
        let b = Balancer::new(FpmBalance::LeastConn, &[1, 1], 1, Duration::from_secs(10));
        let t0 = Instant::now();
        let window = Duration::from_secs(1);
        assert_eq!(b.answered_within(0, t0, window), None, "never answered");
        b.succeeded(0, t0);
        assert_eq!(
            b.answered_within(0, t0 + Duration::from_millis(300), window),
            Some(Duration::from_millis(300))
        );
        assert_eq!(
            b.answered_within(0, t0 + Duration::from_secs(2), window),
            None,
            "too old"
        );
        assert_eq!(b.answered_within(1, t0, window), None, "another upstream");
        b.failed(0, t0 + Duration::from_millis(400));
        assert_eq!(
            b.answered_within(0, t0 + Duration::from_millis(500), window),
            None,
            "a failure since: probe it"
        );
    }
}
