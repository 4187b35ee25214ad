//! What a PHP response may say about its own framing. A script sets any header it
//! likes, but the host frames the response by `Content-Length`: one that disagrees
//! with the body would end the response early (the rest read by the client as the
//! next response) or late (the next response swallowed into this one), and a
//! `Transfer-Encoding` the host does not apply leaves the client with nothing it
//! can parse. So, as nginx does with php-fpm's headers, hop-by-hop headers are
//! dropped and the length is the body's own, for every backend and every host.

use crate::http::{Body, Response};

/// Headers that describe one connection, not the response: the host sets its own.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
];

/// Makes the framing of `script`'s response true: hop-by-hop headers dropped, a
/// malformed `Content-Length` dropped, a known body length sent as it is, and a
/// streamed body held to the length it declared (see `BodyStream::expect_len`).
/// For HEAD (`head`), a valid declared length stays: it is the length GET would
/// have had.
pub fn sanitize(resp: &mut Response, head: bool, script: &str) {
    let mut declared: Vec<Vec<u8>> = Vec::new();
    resp.headers.retain_mut(|(name, value)| {
        if name.eq_ignore_ascii_case("content-length") {
            declared.push(std::mem::take(value));
            return false;
        }
        if !HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h)) {
            return true;
        }
        let value = String::from_utf8_lossy(value);
        if name.eq_ignore_ascii_case("transfer-encoding") {
            tracing::warn!(target: "php", script, "dropped the script's header `{name}: {value}`: fe-php frames the response itself");
        } else {
            tracing::debug!(target: "php", script, "dropped the script's hop-by-hop header `{name}: {value}`");
        }
        false
    });
    let declared = match declared_length(&declared) {
        Ok(len) => len,
        Err(()) => {
            let shown: Vec<_> = declared
                .iter()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect();
            tracing::warn!(target: "php", script, "dropped a malformed Content-Length from the script: {shown:?}");
            None
        }
    };
    let status = resp.status;
    if status < 200 || status == 204 || status == 304 {
        // No body, so nothing to frame.
        return;
    }
    let len = match &resp.body {
        Body::Stream(stream) => {
            stream.set_origin(script.to_owned());
            if let Some(n) = declared {
                stream.expect_len(n);
            }
            declared
        }
        Body::Empty if head => declared,
        body => {
            let real = body.len().unwrap_or(0);
            match declared {
                Some(n) if n != real => tracing::warn!(
                    target: "php",
                    script,
                    "the script declared Content-Length {n} for a body of {real} bytes: sent with {real}"
                ),
                _ => {}
            }
            Some(real)
        }
    };
    if let Some(n) = len {
        resp.push_header("Content-Length", n.to_string());
    }
}

/// The one length the values state: 1*DIGIT each, all equal, within what every
/// host can hold (an `off_t`). None when there is none; Err when malformed.
fn declared_length(values: &[Vec<u8>]) -> Result<Option<u64>, ()> {
    let mut len = None;
    for v in values {
        if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
            return Err(());
        }
        let n: u64 = std::str::from_utf8(v)
            .map_err(|_| ())?
            .parse()
            .map_err(|_| ())?;
        if len.is_some_and(|l| l != n) {
            return Err(());
        }
        len = Some(n);
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::body::{self, ReadOutcome};

    fn resp(headers: &[(&str, &str)], body: Body) -> Response {
        let mut r = Response::new(200).with_body(body);
        for (n, v) in headers {
            r.push_header(n, v.as_bytes());
        }
        r
    }

    fn lengths(r: &Response) -> Vec<String> {
        r.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    #[test]
    fn a_buffered_body_gets_its_own_length() {
        for declared in [
            "5",
            "1000",
            "-1",
            "abc",
            "5, 5",
            "99999999999999999999",
            "",
            "0x10",
        ] {
            let mut r = resp(
                &[("Content-Length", declared), ("X-A", "1")],
                Body::Bytes(b"hello world".to_vec()),
            );
            sanitize(&mut r, false, "/s.php");
            assert_eq!(lengths(&r), ["11"], "{declared}");
            assert_eq!(r.get_header("x-a"), Some(&b"1"[..]));
        }
        let mut r = resp(&[], Body::Empty);
        sanitize(&mut r, false, "/s.php");
        assert_eq!(lengths(&r), ["0"]);
        // Repeated but equal: one value.
        let mut r = resp(
            &[("Content-Length", "3"), ("content-length", "3")],
            Body::Bytes(b"abc".to_vec()),
        );
        sanitize(&mut r, false, "/s.php");
        assert_eq!(lengths(&r), ["3"]);
    }

    #[test]
    fn head_keeps_a_valid_declared_length() {
        let mut r = resp(&[("Content-Length", "1234")], Body::Empty);
        sanitize(&mut r, true, "/s.php");
        assert_eq!(lengths(&r), ["1234"]);
        let mut r = resp(&[("Content-Length", "-1")], Body::Empty);
        sanitize(&mut r, true, "/s.php");
        assert!(lengths(&r).is_empty());
        let mut r = resp(&[], Body::Empty);
        sanitize(&mut r, true, "/s.php");
        assert!(lengths(&r).is_empty(), "HEAD must not claim an empty body");
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let hop = [
            ("Transfer-Encoding", "chunked"),
            ("transfer-encoding", "identity"),
            ("Connection", "close"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Trailer", "X-Sum"),
            ("Upgrade", "websocket"),
            ("Proxy-Connection", "keep-alive"),
        ];
        let mut r = resp(&hop, Body::Bytes(b"hi".to_vec()));
        r.push_header("Set-Cookie", "a=1");
        sanitize(&mut r, false, "/s.php");
        assert_eq!(
            r.headers,
            [
                ("Set-Cookie".to_owned(), b"a=1".to_vec()),
                ("Content-Length".to_owned(), b"2".to_vec())
            ]
        );
    }

    #[test]
    fn no_length_without_a_body() {
        for status in [204, 304, 101] {
            let mut r = resp(&[("Content-Length", "5")], Body::Empty);
            r.status = status;
            sanitize(&mut r, false, "/s.php");
            assert!(lengths(&r).is_empty(), "{status}");
        }
    }

    #[test]
    fn a_stream_keeps_a_valid_length_and_is_held_to_it() {
        let (tx, rx) = body::channel();
        let mut r = resp(&[("Content-Length", "3")], Body::Stream(rx));
        sanitize(&mut r, false, "/s.php");
        assert_eq!(lengths(&r), ["3"]);
        tx.send(b"ab".to_vec());
        drop(tx);
        let Body::Stream(rx) = &r.body else { panic!() };
        let mut buf = [0u8; 8];
        assert_eq!(rx.read(&mut buf), ReadOutcome::Data(2));
        assert!(matches!(rx.read(&mut buf), ReadOutcome::Failed(_)));

        let (_tx, rx) = body::channel();
        let mut r = resp(&[("Content-Length", "abc")], Body::Stream(rx));
        sanitize(&mut r, false, "/s.php");
        assert!(lengths(&r).is_empty());
    }
}
