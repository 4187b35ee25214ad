//! Router and path normalization micro-benchmarks: 1,000 mixed rules
//! (250 each of exact, prefix, suffix and regex), lookups that hit each kind and
//! one that falls through to the default.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use fe_php::config::{BackendKind, PatternKind, RoutingRule};
use fe_php::routing::path::normalize;
use fe_php::routing::router::Router;

fn rules() -> Vec<RoutingRule> {
    let backends = ["embedded", "fastcgi", "static"];
    (0..1000)
        .map(|i| {
            let (kind, value) = match i % 4 {
                0 => (PatternKind::Exact, format!("/exact/page-{i}")),
                1 => (PatternKind::Prefix, format!("/prefix-{i}/")),
                2 => (PatternKind::Suffix, format!(".ext{i}")),
                _ => (PatternKind::Regex, format!(r"^/api/v\d+/res{i}/\d+$")),
            };
            RoutingRule::new(kind, &value, backends[i % 3], (i % 97) as i32)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let router = Router::new(&rules(), BackendKind::Static).unwrap();
    let paths = [
        ("exact", "/exact/page-400"),
        ("prefix", "/prefix-401/some/deeper/file.html"),
        ("suffix", "/assets/img/photo.ext402"),
        ("regex", "/api/v2/res403/12345"),
        ("default", "/nothing/matches/here.html"),
    ];
    let mut group = c.benchmark_group("route_1000_rules");
    for (name, path) in paths {
        assert!(
            name == "default" || router.route(path).rule.is_some(),
            "{name} must match"
        );
        group.bench_function(name, |b| b.iter(|| router.route(black_box(path))));
    }
    group.finish();

    let mut group = c.benchmark_group("normalize");
    group.bench_function("clean", |b| {
        b.iter(|| normalize(black_box("/wp-content/uploads/2024/05/photo.jpg")))
    });
    group.bench_function("encoded_dots", |b| {
        b.iter(|| normalize(black_box("/a/./b/../c//d%20e/%2e%2e/f.php")))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
