//! Per-request engine costs: building the CGI variables ($_SERVER) for a typical
//! browser request, the whole static path (normalize, route, open, validators) for
//! a small file, and — with libphp installed — a whole embedded request of an
//! empty script in this process with few and with many request headers, whose
//! difference is what registering `$_SERVER` entries costs.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use fe_php::backends::php::cgi;
use fe_php::backends::static_files::StaticFiles;
use fe_php::{Config, Engine};
use std::path::Path;

mod common;
use common::browser_request;

fn bench(c: &mut Criterion) {
    let req = browser_request("/index.php/products/42?sort=price&page=2");
    c.bench_function("cgi_variables_browser_request", |b| {
        b.iter(|| {
            cgi::variables(
                black_box(&req),
                Path::new("/var/www/public"),
                "/index.php",
                "/products/42",
                Some("sort=price&page=2"),
            )
        })
    });

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/public");
    let sf = StaticFiles::new(&root, &["index.html".to_owned()]).unwrap();
    let css = browser_request("/css/site.css");
    c.bench_function("static_serve_small_file", |b| {
        b.iter(|| sf.serve(black_box(&css), "/css/site.css", None))
    });
}

/// `n` extra headers of a realistic size (each becomes an `HTTP_*` variable).
fn extra_headers(n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..n)
        .map(|i| {
            (
                format!("X-Extra-Header-{i}").into_bytes(),
                format!("value-{i}-{}", "v".repeat(24)).into_bytes(),
            )
        })
        .collect()
}

/// Requests in flight per iteration of the embedded benchmarks.
const BATCH: usize = 32;

fn bench_embedded(c: &mut Criterion) {
    if !Path::new("/usr/lib/libphp.so").exists() {
        eprintln!("libphp is not installed: embedded benchmarks skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.php"), "<?php ").unwrap();
    let engine = Engine::new(
        Config::from_toml(&format!(
            "[backend]\ndefault_backend = \"embedded\"\n[backend.static_files]\nenable = true\nroot = \"{}\"\n",
            dir.path().display()
        ))
        .unwrap(),
    )
    .unwrap();
    engine.worker_start().unwrap();
    let mut group = c.benchmark_group("embedded_empty_script");
    for extra in [0usize, 40] {
        let owned = extra_headers(extra);
        let mut req = browser_request("/empty.php");
        req.headers
            .extend(owned.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let vars = cgi::variables(&req, dir.path(), "/empty.php", "", None)
            .vars
            .len();
        // 32 requests in flight at a time, as under load: the PHP thread runs them
        // back to back, so the time per element is its cost per request (one at a
        // time would mostly measure thread wake-up latency).
        group.throughput(criterion::Throughput::Elements(BATCH as u64));
        group.bench_function(format!("{vars}_server_vars"), |b| {
            b.iter(|| {
                let (tx, rx) = std::sync::mpsc::channel();
                for _ in 0..BATCH {
                    let tx = tx.clone();
                    engine.handle_async(
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

criterion_group!(benches, bench, bench_embedded);
criterion_main!(benches);
