//! FastCGI record encoding and decoding: the request php-fpm receives for a
//! typical browser request (BEGIN_REQUEST, PARAMS, empty STDIN), and php-fpm's
//! answers of 1 KiB and 64 KiB (STDOUT records, END_REQUEST) read back as records.
//! Needs `--features internals` (the protocol module is not public API).

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use fe_php::backends::fastcgi::protocol_internals as protocol;
use fe_php::backends::php::cgi;
use std::path::Path;

mod common;
use common::browser_request;

/// php-fpm's answer: headers and `body` bytes in STDOUT records (as php-fpm
/// writes them, at most 8 KiB each), an empty STDOUT, END_REQUEST.
fn php_fpm_answer(body: usize) -> Vec<u8> {
    let mut stdout =
        b"Content-type: text/html; charset=UTF-8\r\nX-Powered-By: PHP/8.2\r\n\r\n".to_vec();
    stdout.extend(std::iter::repeat_n(b'x', body));
    let mut out = Vec::new();
    for chunk in stdout.chunks(8192) {
        protocol::push_record(&mut out, protocol::STDOUT, protocol::REQUEST_ID, chunk);
    }
    protocol::push_record(&mut out, protocol::STDOUT, protocol::REQUEST_ID, &[]);
    protocol::push_record(
        &mut out,
        protocol::END_REQUEST,
        protocol::REQUEST_ID,
        &[0, 0, 0, 0, protocol::REQUEST_COMPLETE, 0, 0, 0],
    );
    out
}

fn bench(c: &mut Criterion) {
    let req = browser_request("/index.php/products/42?sort=price");
    let vars = cgi::variables(
        &req,
        Path::new("/var/www/public"),
        "/index.php",
        "/products/42",
        Some("sort=price"),
    )
    .vars;
    c.bench_function("fastcgi_encode_request", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(2048);
            protocol::push_begin_request(&mut out, true);
            protocol::push_params(&mut out, black_box(&vars).iter(), protocol::MAX_CONTENT)
                .unwrap();
            protocol::push_end_of_stdin(&mut out);
            out
        })
    });

    let mut group = c.benchmark_group("fastcgi_decode_response");
    for size in [1usize << 10, 64 << 10] {
        let answer = php_fpm_answer(size);
        group.throughput(Throughput::Bytes(answer.len() as u64));
        group.bench_function(format!("{}KiB", size >> 10), |b| {
            b.iter(|| {
                let mut dec = protocol::Decoder::new();
                let mut content = 0usize;
                // As read from the socket: in 64 KiB pieces.
                for piece in black_box(&answer).chunks(protocol::READ_CHUNK) {
                    dec.read_buffer().extend_from_slice(piece);
                    while let Some(rec) = dec.next_record().unwrap() {
                        content += rec.content.len();
                    }
                }
                content
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
