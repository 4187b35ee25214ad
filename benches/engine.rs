//! Per-request engine costs that do not depend on PHP: building the CGI
//! variables ($_SERVER) for a typical browser request, and the whole static path
//! (normalize, route, open, validators) for a small file.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use fe_php::backends::static_files::StaticFiles;
use fe_php::cgi;
use fe_php::http::Request;
use std::path::Path;

fn browser_request(target: &str) -> Request<'_> {
    let mut req = Request::get(target);
    req.headers = vec![
        (b"Host", b"shop.example.com:8080"),
        (
            b"User-Agent",
            b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
        (
            b"Accept",
            b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        (b"Accept-Language", b"en-US,en;q=0.5"),
        (b"Accept-Encoding", b"gzip, deflate, br"),
        (b"Cookie", b"session=3f9a0c1e7b; theme=dark; consent=yes"),
        (b"Connection", b"keep-alive"),
        (b"Upgrade-Insecure-Requests", b"1"),
    ];
    req
}

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

criterion_group!(benches, bench);
criterion_main!(benches);
