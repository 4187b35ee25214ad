//! Latency histograms in the metrics region: the fixed bucket layout, one
//! histogram's atomics, and a fixed-size table of labelled histograms that
//! engines claim by family and label text when they are built.
//!
//! A labelled series lives in shared memory with its label text, so any process
//! that builds an engine (a host's master before it forks, a reload, a worker
//! reloading on its own) finds the series another process claimed for the same
//! labels: counts carry over a reload, like every other counter of the region.
//! Recording is two relaxed atomic additions on a slot the engine found at build
//! time: no lookup, lock or allocation per request.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};

/// Upper bounds of every latency histogram, as printed and in nanoseconds: from
/// half a millisecond (a static file, a cached PHP page) to 30 s (a slow report).
pub const BUCKETS: [(&str, u64); 15] = [
    ("0.0005", 500_000),
    ("0.001", 1_000_000),
    ("0.0025", 2_500_000),
    ("0.005", 5_000_000),
    ("0.01", 10_000_000),
    ("0.025", 25_000_000),
    ("0.05", 50_000_000),
    ("0.1", 100_000_000),
    ("0.25", 250_000_000),
    ("0.5", 500_000_000),
    ("1", 1_000_000_000),
    ("2.5", 2_500_000_000),
    ("5", 5_000_000_000),
    ("10", 10_000_000_000),
    ("30", 30_000_000_000),
];

/// One histogram. All-zero bytes are an empty one.
#[repr(C)]
pub struct Histogram {
    /// Per bucket, not cumulative (so one addition records); the last one is +Inf.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Records one observation of `ns` nanoseconds; a bound is inclusive (`le`).
    #[inline]
    pub fn record(&self, ns: u64) {
        let bucket = BUCKETS
            .iter()
            .position(|&(_, le)| ns <= le)
            .unwrap_or(BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Relaxed)),
            sum_ns: self.sum_ns.load(Relaxed),
        }
    }

    /// Appends this histogram's `_bucket`, `_sum` and `_count` lines; `labels` is
    /// label text (`backend="static"`) or empty.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        self.snapshot().render(out, name, labels)
    }
}

/// A histogram's values read at one moment.
#[derive(Clone, Copy)]
struct Snapshot {
    buckets: [u64; BUCKETS.len() + 1],
    sum_ns: u64,
}

impl Snapshot {
    fn add(&mut self, other: &Snapshot) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.sum_ns += other.sum_ns;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0u64;
        for (i, n) in self.buckets.iter().enumerate() {
            cumulative += n;
            let le = BUCKETS.get(i).map_or("+Inf", |&(le, _)| le);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let sum = self.sum_ns as f64 / 1e9;
        let _ = writeln!(
            out,
            "{name}_sum{braces} {sum}\n{name}_count{braces} {cumulative}"
        );
    }
}

/// The families of labelled histograms, in the order they are rendered. A new
/// one is a variant here and a row in `FAMILIES`; engines claim its series with
/// `Metrics::series`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Family {
    /// `pool`: embedded PHP requests by runner pool.
    PoolDuration = 0,
    /// `rule`: requests of named routing rules.
    RuleDuration = 1,
    /// `backend`, `pool`: PHP's time to first byte.
    PhpTtfb = 2,
    /// `pool`, `upstream`: FastCGI requests by php-fpm upstream.
    FastcgiUpstreamDuration = 3,
}

/// Name and help of each family, by `Family` value.
pub const FAMILIES: [(&str, &str); 4] = [
    (
        "fephp_php_request_duration_seconds",
        "Embedded PHP requests by runner pool (default: [php.pool]): from the request reaching the engine to its response head being ready, or, for a body PHP streams, to the end of the stream.",
    ),
    (
        "fephp_rule_request_duration_seconds",
        "Requests of named routing rules, whoever answered them: from the request reaching the engine to its response head being ready, or, for a streamed body, to the end of the stream.",
    ),
    (
        "fephp_php_ttfb_seconds",
        "PHP's time to first byte: from the request reaching the engine to its response head being ready, by backend (embedded, fastcgi) and pool.",
    ),
    (
        "fephp_fastcgi_upstream_duration_seconds",
        "FastCGI requests answered by each php-fpm upstream, by group (pool: \"default\" is [php] fpm_*) and upstream address: from the request going to that upstream to the end of its response.",
    ),
];

/// Labelled series the region holds: every claim across reloads, so a host that
/// renames its rules at every reload runs out only after hundreds of reloads
/// (later names are then not recorded, with a warning).
pub const MAX_SERIES: usize = 1024;
/// Bytes of one series' label text (`backend="embedded",pool="reports"`).
pub const LABEL_BYTES: usize = 184;

/// Slot states.
const FREE: u32 = 0;
const WRITING: u32 = 1;
const READY: u32 = 2;

/// One labelled histogram: family and label text, then the histogram.
#[repr(C)]
pub struct Entry {
    state: AtomicU32,
    family: AtomicU32,
    /// Bytes of the label text in `labels`.
    len: AtomicU32,
    labels: [AtomicU64; LABEL_BYTES / 8],
    hist: Histogram,
}

impl Entry {
    fn label_text(&self) -> String {
        let n = (self.len.load(Relaxed) as usize).min(LABEL_BYTES);
        let mut bytes: Vec<u8> = self
            .labels
            .iter()
            .flat_map(|w| w.load(Relaxed).to_ne_bytes())
            .collect();
        bytes.truncate(n);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn is(&self, family: Family, labels: &str) -> bool {
        self.state.load(Acquire) == READY
            && self.family.load(Relaxed) == family as u32
            && self.len.load(Relaxed) as usize == labels.len()
            && self.label_text() == labels
    }
}

/// The labelled histograms of the region. All-zero bytes: every slot free.
#[repr(C)]
pub struct Table {
    entries: [Entry; MAX_SERIES],
}

/// A claimed labelled series, or none (unnamed rule, table full): recording into
/// none does nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Series(u16);

impl Series {
    pub const NONE: Series = Series(u16::MAX);

    pub fn is_none(self) -> bool {
        self == Series::NONE
    }
}

impl Default for Series {
    fn default() -> Series {
        Series::NONE
    }
}

const _: () = assert!(MAX_SERIES < u16::MAX as usize);

impl Table {
    /// The series of `family` with `labels` (see `label_text`), claimed if no
    /// process has claimed it yet. Two processes claiming the same labels at the
    /// same instant may each get a slot: rendering adds such twins together.
    pub fn claim(&self, family: Family, labels: &str) -> Series {
        if labels.len() > LABEL_BYTES {
            tracing::warn!(labels, "metric labels too long; series not recorded");
            return Series::NONE;
        }
        // Slots are claimed in order and never freed: the claimed ones are a
        // prefix, and the scan stops at the first free one (the pages after it
        // are never touched).
        if let Some(i) = self.claimed().position(|e| e.is(family, labels)) {
            return Series(i as u16);
        }
        for (i, e) in self.entries.iter().enumerate() {
            if e.state
                .compare_exchange(FREE, WRITING, Acquire, Relaxed)
                .is_ok()
            {
                e.family.store(family as u32, Relaxed);
                e.len.store(labels.len() as u32, Relaxed);
                for (w, chunk) in e.labels.iter().zip(labels.as_bytes().chunks(8)) {
                    let mut word = [0u8; 8];
                    word[..chunk.len()].copy_from_slice(chunk);
                    w.store(u64::from_ne_bytes(word), Relaxed);
                }
                // Readers see the label text once they see READY.
                e.state.store(READY, Release);
                return Series(i as u16);
            }
        }
        tracing::warn!(
            family = FAMILIES[family as usize].0,
            labels,
            "no room for another labelled histogram ({MAX_SERIES}); series not recorded"
        );
        Series::NONE
    }

    /// The slots up to the first free one.
    fn claimed(&self) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .take_while(|e| e.state.load(Acquire) != FREE)
    }

    #[inline]
    pub fn record(&self, series: Series, ns: u64) {
        if let Some(e) = self.entries.get(series.0 as usize) {
            e.hist.record(ns);
        }
    }

    /// Every family with `# HELP` and `# TYPE` once, then its series in claim
    /// order (twins added together).
    pub fn render(&self, out: &mut String) {
        let mut ready: Vec<(u32, String, Snapshot)> = Vec::new();
        for e in self.claimed() {
            if e.state.load(Acquire) != READY {
                continue;
            }
            let (family, labels) = (e.family.load(Relaxed), e.label_text());
            let snap = e.hist.snapshot();
            match ready.iter_mut().find(|r| r.0 == family && r.1 == labels) {
                Some(twin) => twin.2.add(&snap),
                None => ready.push((family, labels, snap)),
            }
        }
        for (f, (name, help)) in FAMILIES.iter().enumerate() {
            super::header(out, name, "histogram", help);
            for (_, labels, snap) in ready.iter().filter(|r| r.0 == f as u32) {
                snap.render(out, name, labels);
            }
        }
    }
}

/// Label text for `pairs`, values escaped as the text format wants (`\\`, `\"`,
/// `\n`).
pub fn label_text(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out
}

/// The labelled series one request is recorded in, besides its backend's.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestSeries {
    /// The named routing rule it matched.
    pub rule: Series,
    /// When PHP answers it: its pool's duration (embedded PHP only)...
    pub pool: Series,
    /// ...and PHP's time to first byte.
    pub ttfb: Series,
}
