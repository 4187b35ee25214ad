//! What a proxy changes in the headers it forwards: hop-by-hop headers dropped both
//! ways (RFC 9110 §7.6.1), the client's `Proxy` header never sent (httpoxy), and
//! the `X-Forwarded-*` headers that tell the upstream who asked.

use crate::http::Request;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};

/// Headers that belong to one connection, never forwarded in either direction.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

/// Request headers fe-php replaces or drops: `Proxy` (httpoxy), `Expect` (the body
/// is already read), `Content-Length` (set from the body), and the forwarding
/// headers it sets itself.
const REPLACED: &[&str] = &[
    "proxy",
    "expect",
    "content-length",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-for",
];

/// The names listed in `Connection` headers, lowercased.
fn connection_named<'a>(headers: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Vec<String> {
    headers
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"connection"))
        .flat_map(|(_, v)| v.split(|&b| b == b','))
        .map(|t| String::from_utf8_lossy(t.trim_ascii()).to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

fn is_hop_by_hop(name: &str, named: &[String]) -> bool {
    HOP_BY_HOP.contains(&name) || named.iter().any(|t| t == name)
}

/// The headers to send upstream for `req`: the client's, less hop-by-hop ones and
/// `Proxy`; `Host` as the client sent it; `X-Forwarded-For` extended with the
/// client's address, `X-Forwarded-Proto` and `X-Forwarded-Host` set;
/// `Content-Length` the body's exact length.
pub fn request_headers(req: &Request<'_>) -> HeaderMap {
    let named = connection_named(req.headers.iter().copied());
    let mut map = HeaderMap::with_capacity(req.headers.len() + 4);
    let mut forwarded_for: Vec<&[u8]> = Vec::new();
    let mut had_length = false;
    for &(n, v) in &req.headers {
        let lower = String::from_utf8_lossy(n).to_ascii_lowercase();
        if lower == "x-forwarded-for" {
            let v = v.trim_ascii();
            if !v.is_empty() {
                forwarded_for.push(v);
            }
            continue;
        }
        had_length |= lower == "content-length";
        if is_hop_by_hop(&lower, &named) || REPLACED.contains(&lower.as_str()) {
            continue;
        }
        match (HeaderName::from_bytes(n), HeaderValue::from_bytes(v)) {
            (Ok(n), Ok(v)) => {
                map.append(n, v);
            }
            _ => {
                tracing::debug!(name = %String::from_utf8_lossy(n), "not forwarding a header that is not valid HTTP")
            }
        }
    }
    // A host that knows no client address (remote_addr "") adds none.
    if !req.remote_addr.is_empty() {
        forwarded_for.push(req.remote_addr.as_bytes());
    }
    let xff = forwarded_for.join(&b", "[..]);
    let set = |map: &mut HeaderMap, name: &'static str, value: &[u8]| {
        if let Ok(v) = HeaderValue::from_bytes(value) {
            map.insert(HeaderName::from_static(name), v);
        }
    };
    if !xff.is_empty() {
        set(&mut map, "x-forwarded-for", &xff);
    }
    set(
        &mut map,
        "x-forwarded-proto",
        if req.tls { b"https" } else { b"http" },
    );
    if let Some(host) = req.header("host") {
        set(&mut map, "x-forwarded-host", host);
    }
    if had_length || req.body_len() > 0 {
        set(
            &mut map,
            "content-length",
            req.body_len().to_string().as_bytes(),
        );
    }
    map
}

/// The upstream's response headers as the client gets them: hop-by-hop ones
/// dropped, repeated ones (`Set-Cookie`) kept apart and in order.
pub fn response_headers(map: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    let named = connection_named(
        map.get_all(hyper::header::CONNECTION)
            .iter()
            .map(|v| (&b"connection"[..], v.as_bytes())),
    );
    map.iter()
        .filter(|(n, _)| !is_hop_by_hop(n.as_str(), &named))
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<'a>(map: &'a HeaderMap, name: &str) -> Vec<&'a str> {
        map.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn request_headers_are_rewritten() {
        let mut req = Request::get("/x");
        req.remote_addr = "192.0.2.7";
        req.method = "POST";
        req.body = b"hello";
        req.headers = vec![
            (b"Host", b"example.test:8080"),
            (b"Connection", b"keep-alive, X-Secret"),
            (b"X-Secret", b"s"),
            (b"Keep-Alive", b"timeout=5"),
            (b"TE", b"trailers"),
            (b"Upgrade", b"websocket"),
            (b"Proxy", b"http://evil.test"),
            (b"Proxy-Authorization", b"Basic x"),
            (b"Content-Length", b"99"),
            (b"Expect", b"100-continue"),
            (b"X-Forwarded-For", b"203.0.113.1"),
            (b"X-Forwarded-For", b"198.51.100.2 "),
            (b"X-Forwarded-Proto", b"https"),
            (b"Cookie", b"a=1"),
            (b"Cookie", b"b=2"),
            (b"Accept", b"*/*"),
        ];
        let map = request_headers(&req);
        assert_eq!(values(&map, "host"), ["example.test:8080"]);
        for gone in [
            "connection",
            "x-secret",
            "keep-alive",
            "te",
            "upgrade",
            "proxy",
            "proxy-authorization",
            "expect",
        ] {
            assert!(map.get(gone).is_none(), "{gone}");
        }
        assert_eq!(
            values(&map, "x-forwarded-for"),
            ["203.0.113.1, 198.51.100.2, 192.0.2.7"]
        );
        assert_eq!(values(&map, "x-forwarded-proto"), ["http"]);
        assert_eq!(values(&map, "x-forwarded-host"), ["example.test:8080"]);
        assert_eq!(values(&map, "content-length"), ["5"]);
        assert_eq!(values(&map, "cookie"), ["a=1", "b=2"]);
        assert_eq!(values(&map, "accept"), ["*/*"]);

        let mut tls = Request::get("/");
        tls.tls = true;
        let map = request_headers(&tls);
        assert_eq!(values(&map, "x-forwarded-proto"), ["https"]);
        assert_eq!(values(&map, "x-forwarded-for"), ["127.0.0.1"]);
        assert!(map.get("content-length").is_none());
        assert!(map.get("x-forwarded-host").is_none());
    }

    #[test]
    fn response_hop_by_hop_headers_are_dropped() {
        let mut map = HeaderMap::new();
        for (n, v) in [
            ("connection", "close, x-internal"),
            ("x-internal", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("proxy-authenticate", "Basic"),
            ("trailer", "x-t"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2; HttpOnly"),
            ("content-type", "text/plain"),
        ] {
            map.append(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        let got = response_headers(&map);
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["set-cookie", "set-cookie", "content-type"]);
        assert_eq!(got[1].1, b"b=2; HttpOnly");
    }
}
