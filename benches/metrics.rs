//! What latency histograms cost a request: recording one answered request into
//! its backend's series alone and with a named rule's, a pool's and PHP's
//! time-to-first-byte histograms; and whole static and (with libphp installed)
//! embedded requests through a rule with and without a name, whose difference is
//! what the named rule's histogram costs end to end.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use fe_php::http::Response;
use fe_php::metrics::{Family, Metrics, RequestSeries, Source};
use fe_php::{Config, Engine};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

mod common;
use common::browser_request;

fn bench_record(c: &mut Criterion) {
    let m = Arc::new(Metrics::new());
    let all = RequestSeries {
        rule: m.series(Family::RuleDuration, &[("rule", "api")]),
        pool: m.series(Family::PoolDuration, &[("pool", "default")]),
        ttfb: m.series(
            Family::PhpTtfb,
            &[("backend", "embedded"), ("pool", "default")],
        ),
    };
    let resp = Response::new(200);
    let mut group = c.benchmark_group("metrics_record_request");
    for (name, series) in [
        ("backend_only", RequestSeries::default()),
        ("rule_pool_ttfb", all),
    ] {
        group.bench_function(name, |b| {
            let started = Instant::now();
            b.iter(|| {
                m.request_finished(
                    Source::Embedded,
                    black_box(started),
                    false,
                    black_box(&resp),
                    black_box(series),
                )
            })
        });
    }
    group.finish();
    c.bench_function("metrics_observe_one_histogram", |b| {
        b.iter(|| m.observe(black_box(all.rule), black_box(12_345_678)))
    });
}

/// Requests in flight per iteration of the embedded benchmark.
const BATCH: usize = 32;

/// An engine whose `/named/` rule has a name and whose `/plain/` rule has none,
/// both to `backend`.
fn engine(root: &Path, backend: &str) -> Engine {
    let rule = |prefix: &str, name: &str| {
        format!("[[backend.routing_rules]]\npattern = {{ type = \"prefix\", value = \"/{prefix}/\" }}\nbackend = \"{backend}\"\n{name}")
    };
    Engine::new(
        Config::from_toml(&format!(
            "[backend]\ndefault_backend = \"static\"\n[backend.static_files]\nenable = true\nroot = \"{}\"\n{}{}",
            root.display(),
            rule("named", "name = \"named\"\n"),
            rule("plain", ""),
        ))
        .unwrap(),
    )
    .unwrap()
}

fn site() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["named", "plain"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        std::fs::write(
            dir.path().join(sub).join("site.css"),
            "body { color: #333 }\n",
        )
        .unwrap();
        std::fs::write(dir.path().join(sub).join("empty.php"), "<?php ").unwrap();
    }
    dir
}

fn bench_static(c: &mut Criterion) {
    let dir = site();
    let e = engine(dir.path(), "static");
    let mut group = c.benchmark_group("static_request_rule");
    for rule in ["plain", "named"] {
        let path = format!("/{rule}/site.css");
        let req = browser_request(&path);
        group.bench_function(rule, |b| {
            b.iter(|| assert_eq!(e.handle(black_box(&req)).status, 200))
        });
    }
    group.finish();
}

fn bench_embedded(c: &mut Criterion) {
    if !Path::new("/usr/lib/libphp.so").exists() {
        eprintln!("libphp is not installed: embedded benchmark skipped");
        return;
    }
    let dir = site();
    let e = engine(dir.path(), "embedded");
    e.worker_start().unwrap();
    let mut group = c.benchmark_group("embedded_request_rule");
    // As in benches/engine.rs: 32 in flight, so the time per element is the
    // cost per request rather than thread wake-up latency.
    group.throughput(criterion::Throughput::Elements(BATCH as u64));
    for rule in ["plain", "named"] {
        let path = format!("/{rule}/empty.php");
        let req = browser_request(&path);
        group.bench_function(rule, |b| {
            b.iter(|| {
                let (tx, rx) = std::sync::mpsc::channel();
                for _ in 0..BATCH {
                    let tx = tx.clone();
                    e.handle_async(
                        black_box(&req),
                        Box::new(move |resp| {
                            let _ = tx.send(resp.status);
                        }),
                    );
                }
                for _ in 0..BATCH {
                    assert_eq!(rx.recv().unwrap(), 200);
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_record, bench_static, bench_embedded);
criterion_main!(benches);
