//! What the criterion benchmarks share.

use fe_php::http::Request;

/// A GET as a desktop browser sends it: host with port, user agent, accept
/// headers, cookies.
pub fn browser_request(target: &str) -> Request<'_> {
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
