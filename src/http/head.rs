//! Checks of a request's head that hold for every host (fe-php-host, the nginx
//! module, C hosts): the method is a token and one fe-php serves, `Host` names a
//! host, and the head stays within the engine's limits. The engine answers a
//! request that fails one of them itself, before routing.

use crate::http::{Request, Response};

/// More header lines than this: 431 (what fe-php-host's parser allows too).
pub const MAX_HEADER_LINES: usize = 100;
/// A larger head (request line and headers) than this: 431, whatever the host
/// let through. A host applies its own, usually smaller, limit while it reads the
/// head (fe-php-host: `[server] max_header_size`, at most this; nginx:
/// `large_client_header_buffers`).
pub const MAX_HEAD_SIZE: u64 = 1 << 20;

/// Why a request head was refused; `status()` is the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// The method is empty or has a byte a token cannot have (RFC 9110 §9.1).
    MethodNotToken,
    /// TRACE or CONNECT: never served (see `NOT_SERVED`).
    MethodNotServed(&'static str),
    /// The request-target has a space or a control byte.
    TargetBytes,
    /// `Host` is not `host[:port]` (RFC 9110 §7.2).
    BadHost,
    /// More than one `Host` line (RFC 9112 §3.2).
    TwoHosts,
    TooManyHeaders(usize),
    HeadTooLarge {
        size: u64,
        max: u64,
    },
}

impl HeadError {
    pub fn status(&self) -> u16 {
        match self {
            HeadError::MethodNotToken
            | HeadError::TargetBytes
            | HeadError::BadHost
            | HeadError::TwoHosts => 400,
            HeadError::MethodNotServed(_) => 501,
            HeadError::TooManyHeaders(_) | HeadError::HeadTooLarge { .. } => 431,
        }
    }

    /// The error page, with the cause as its hint line.
    pub fn response(&self) -> Response {
        Response::error(self.status(), Some(&self.to_string()))
    }
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadError::MethodNotToken => {
                f.write_str("the request method is not an HTTP token (RFC 9110 section 9.1)")
            }
            HeadError::MethodNotServed(why) => f.write_str(why),
            HeadError::TargetBytes => {
                f.write_str("the request target contains a space or a control character")
            }
            HeadError::BadHost => f.write_str(
                "the Host header is not a host name, IPv4 address or bracketed IPv6 address with an optional port",
            ),
            HeadError::TwoHosts => f.write_str("more than one Host header"),
            HeadError::TooManyHeaders(n) => write!(
                f,
                "{n} header lines; at most {MAX_HEADER_LINES} are accepted"
            ),
            HeadError::HeadTooLarge { size, max } => write!(
                f,
                "the request head is {size} bytes; at most {max} are accepted"
            ),
        }
    }
}

/// Methods no fe-php backend serves, with the reason.
const NOT_SERVED: &[(&str, &str)] = &[
    (
        "TRACE",
        "TRACE is not served: it would echo the request, cookies and credentials included, back to whatever script made it",
    ),
    (
        "CONNECT",
        "CONNECT is not served: fe-php is an origin server, not a forward proxy",
    ),
];

/// Checks `req`'s head: its method, target bytes, `Host` and size (request line
/// and headers together at most `max_head_size` bytes, counted as fe-php-host's
/// `[server] max_header_size` counts them; at most `MAX_HEADER_LINES` header lines).
/// Linear in the number and size of the headers.
pub fn check(req: &Request<'_>, max_head_size: u64) -> Result<(), HeadError> {
    if !is_token(req.method.as_bytes()) {
        return Err(HeadError::MethodNotToken);
    }
    if let Some(&(_, why)) = NOT_SERVED.iter().find(|(m, _)| *m == req.method) {
        return Err(HeadError::MethodNotServed(why));
    }
    if req.target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(HeadError::TargetBytes);
    }
    if req.headers.len() > MAX_HEADER_LINES {
        return Err(HeadError::TooManyHeaders(req.headers.len()));
    }
    // "METHOD SP target SP protocol CRLF", then "name: value CRLF" per line.
    let line = req.method.len() + req.target.len() + req.protocol.len() + 4;
    let size = req.headers.iter().fold(line as u64, |sum, (n, v)| {
        sum + (n.len() + v.len() + 4) as u64
    });
    if size > max_head_size {
        return Err(HeadError::HeadTooLarge {
            size,
            max: max_head_size,
        });
    }
    let mut hosts = req
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"host"));
    if let Some((_, host)) = hosts.next() {
        if hosts.next().is_some() {
            return Err(HeadError::TwoHosts);
        }
        if !is_host(host.trim_ascii()) {
            return Err(HeadError::BadHost);
        }
    }
    Ok(())
}

/// RFC 9110 §5.6.2: `token = 1*tchar`.
pub fn is_token(b: &[u8]) -> bool {
    !b.is_empty() && b.iter().all(|&c| is_tchar(c))
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// `Host = uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2): a bracketed
/// IPv6 (or IPvFuture) literal, or a reg-name (which covers IPv4 addresses),
/// then an optional port of digits. Stricter than RFC 3986 where a host name
/// cannot go: the name must not be empty (RFC 9110 §4.2.1 rejects an empty host
/// in an http URI) and must not have an empty label (`..`, a leading dot), as
/// nginx refuses them too.
pub fn is_host(host: &[u8]) -> bool {
    let (name, port) = if host.first() == Some(&b'[') {
        let Some(end) = host.iter().position(|&b| b == b']') else {
            return false;
        };
        if !is_ip_literal(&host[1..end]) {
            return false;
        }
        match &host[end + 1..] {
            [] => return true,
            [b':', port @ ..] => (None, port),
            _ => return false,
        }
    } else {
        match host.iter().position(|&b| b == b':') {
            Some(i) => (Some(&host[..i]), &host[i + 1..]),
            None => (Some(host), &[][..]),
        }
    };
    if !port.iter().all(u8::is_ascii_digit) {
        return false;
    }
    name.is_none_or(is_reg_name)
}

/// A non-empty reg-name without empty labels (a trailing dot is allowed: it
/// names the same host fully qualified).
fn is_reg_name(name: &[u8]) -> bool {
    if name.is_empty() || name.first() == Some(&b'.') || name.windows(2).any(|w| w == b"..") {
        return false;
    }
    let mut i = 0;
    while i < name.len() {
        let c = name[i];
        if c == b'%' {
            let hex = name.get(i + 1..i + 3);
            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            i += 3;
            continue;
        }
        if !(is_unreserved(c) || is_sub_delim(c)) {
            return false;
        }
        i += 1;
    }
    true
}

/// `IPv6address / IPvFuture` inside the brackets (no zone identifier).
fn is_ip_literal(inner: &[u8]) -> bool {
    if let [b'v' | b'V', rest @ ..] = inner {
        // IPvFuture = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )
        let Some(dot) = rest.iter().position(|&b| b == b'.') else {
            return false;
        };
        let (version, tail) = (&rest[..dot], &rest[dot + 1..]);
        return !version.is_empty()
            && version.iter().all(u8::is_ascii_hexdigit)
            && !tail.is_empty()
            && tail
                .iter()
                .all(|&c| is_unreserved(c) || is_sub_delim(c) || c == b':');
    }
    std::str::from_utf8(inner).is_ok_and(|s| s.parse::<std::net::Ipv6Addr>().is_ok())
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-._~".contains(&c)
}

fn is_sub_delim(c: u8) -> bool {
    b"!$&'()*+,;=".contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        for good in [
            "example.com",
            "Example.COM:8080",
            "example.com.",
            "localhost",
            "127.0.0.1",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:8080",
            "[2001:db8::7]:443",
            "[v1.fe80::a+en1]",
            "xn--bcher-kva.example",
            "a_b.example",
            "caf%C3%A9.example",
            "example.com:",
        ] {
            assert!(is_host(good.as_bytes()), "{good} must be accepted");
        }
        for bad in [
            "",
            ":80",
            "../../etc",
            "evil/../x",
            "a b",
            "..",
            ".example.com",
            "a..b",
            "example.com:80x",
            "example.com:80:81",
            "[::1",
            "[::1]x",
            "[::1]:8o",
            "[example.com]",
            "[fe80::1%25eth0]",
            "ex\\ample",
            "ex%2",
            "ex%zz",
            "a@b",
            "a\0b",
            "a\r\nb",
            "é.example",
        ] {
            assert!(!is_host(bad.as_bytes()), "{bad:?} must be refused");
        }
    }

    #[test]
    fn tokens() {
        for good in ["GET", "get", "helloGET", "M-SEARCH", "X!#$%&'*+.^_`|~1"] {
            assert!(is_token(good.as_bytes()), "{good}");
        }
        for bad in [
            "", "G T", "GET\r\n", "G\0T", "G{T", "G/T", "G:T", "G\"T", "Gé",
        ] {
            assert!(!is_token(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn heads() {
        let mut req = Request::get("/");
        assert_eq!(check(&req, 1 << 17), Ok(()));
        for (method, status) in [("", 400), ("G T", 400), ("TRACE", 501), ("CONNECT", 501)] {
            req.method = method;
            assert_eq!(check(&req, 1 << 17).unwrap_err().status(), status);
        }
        req.method = "get";
        assert_eq!(check(&req, 1 << 17), Ok(()));
        req.method = "GET";
        req.target = "/a b";
        assert_eq!(check(&req, 1 << 17), Err(HeadError::TargetBytes));
        req.target = "/";
        req.headers = vec![(b"Host", b"a"), (b"HOST", b"a")];
        assert_eq!(check(&req, 1 << 17), Err(HeadError::TwoHosts));
        req.headers = vec![(b"Host", b" example.com:80 ")];
        assert_eq!(check(&req, 1 << 17), Ok(()));
        // "GET / HTTP/1.1\r\n" is 16 bytes, "Host:  example.com:80 \r\n" 24.
        assert_eq!(check(&req, 40), Ok(()));
        assert_eq!(
            check(&req, 39),
            Err(HeadError::HeadTooLarge { size: 40, max: 39 })
        );
        req.headers = vec![(&b"X-A"[..], &b"1"[..]); MAX_HEADER_LINES + 1];
        assert_eq!(check(&req, 1 << 17).unwrap_err().status(), 431);
    }
}
