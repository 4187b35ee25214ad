//! HTTP as the engine sees it, whatever the host: engine-neutral request and
//! response types (here), response body streams (`body`), request bodies
//! (`request_body`), the checks every request head passes (`head`), the framing
//! rules every PHP response is held to (`framing`) and on-the-fly compression of
//! every backend's responses (`compress`).

pub mod body;
pub mod compress;
pub mod framing;
pub mod head;
pub mod request_body;

use body::BodyStream;
use request_body::RequestBody;
use std::fs::File;

/// Receives a backend's response exactly once, on whichever thread produced it.
pub type Completion = Box<dyn FnOnce(Response) + Send>;

/// A request as the engine sees it: borrowed views of what the host parsed.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The raw request-target: "/path%20x?query" (or absolute-form).
    pub target: &'a str,
    /// "HTTP/1.1".
    pub protocol: &'a str,
    /// In arrival order; names in any case.
    pub headers: Vec<(&'a [u8], &'a [u8])>,
    /// The body when the host handed it over in memory.
    pub body: &'a [u8],
    /// The body when the host serves it as it is read (then `body` is empty).
    pub body_reader: Option<RequestBody>,
    pub remote_addr: &'a str,
    pub remote_port: u16,
    pub local_addr: &'a str,
    pub local_port: u16,
    pub tls: bool,
    /// The TLS connection's protocol ("TLSv1.3"), cipher suite and the name the
    /// client asked for (SNI), as a host tells them; empty when it does not.
    pub tls_protocol: &'a str,
    pub tls_cipher: &'a str,
    pub tls_server_name: &'a str,
}

impl<'a> Request<'a> {
    #[cfg_attr(not(feature = "internals"), allow(dead_code))]
    /// A GET request for `target` with no headers: for tests and probes.
    pub fn get(target: &'a str) -> Request<'a> {
        Request {
            method: "GET",
            target,
            protocol: "HTTP/1.1",
            headers: Vec::new(),
            body: b"",
            body_reader: None,
            remote_addr: "127.0.0.1",
            remote_port: 0,
            local_addr: "127.0.0.1",
            local_port: 0,
            tls: false,
            tls_protocol: "",
            tls_cipher: "",
            tls_server_name: "",
        }
    }

    /// First value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|&(_, v)| v)
    }

    /// First value of a header as text (None when absent or not UTF-8).
    pub fn header_str(&self, name: &str) -> Option<&'a str> {
        self.header(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::trim)
    }

    /// The exact length of the body, however it is given.
    pub fn body_len(&self) -> u64 {
        match &self.body_reader {
            Some(r) => r.len(),
            None => self.body.len() as u64,
        }
    }

    /// The body for a backend that reads it (`RequestBody::attach`ed): the host's
    /// reader, or a copy of the bytes in memory.
    pub fn body_for_backend(&self) -> RequestBody {
        let body = match &self.body_reader {
            Some(r) => r.clone(),
            None => RequestBody::memory(self.body.to_vec()),
        };
        body.attach();
        body
    }

    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }
}

/// A response body.
#[derive(Debug, Default)]
pub enum Body {
    #[default]
    Empty,
    Bytes(Vec<u8>),
    /// `len` bytes of `file` from `offset`: hosts may sendfile it.
    File {
        file: File,
        offset: u64,
        len: u64,
    },
    /// Produced while the host reads it (PHP `flush()`, FastCGI output).
    Stream(BodyStream),
}

impl Body {
    /// Length when known in advance.
    pub fn len(&self) -> Option<u64> {
        match self {
            Body::Empty => Some(0),
            Body::Bytes(b) => Some(b.len() as u64),
            Body::File { len, .. } => Some(*len),
            Body::Stream(_) => None,
        }
    }

    #[cfg_attr(not(feature = "internals"), allow(dead_code))]
    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }
}

/// A response: status, headers in order (names as written, repeated names kept
/// apart, e.g. several `Set-Cookie`), and a body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Body,
}

impl Response {
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Empty,
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Response {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    pub fn push_header(&mut self, name: &str, value: impl Into<Vec<u8>>) {
        self.headers.push((name.to_owned(), value.into()));
    }

    #[cfg_attr(not(feature = "internals"), allow(dead_code))]
    /// First value of a header, by case-insensitive name.
    pub fn get_header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// A short plain-text error page: "404 Not Found\n" plus an optional hint line.
    pub fn error(status: u16, hint: Option<&str>) -> Response {
        let mut text = format!("{} {}\n", status, reason(status));
        if let Some(h) = hint {
            text.push_str(h);
            text.push('\n');
        }
        Response::new(status)
            .header("Content-Type", "text/plain; charset=utf-8")
            .header("Content-Length", text.len().to_string())
            .with_body(Body::Bytes(text.into_bytes()))
    }

    pub fn with_body(mut self, body: Body) -> Response {
        self.body = body;
        self
    }

    /// Drops the body of a HEAD response, keeping its headers (Content-Length included).
    pub fn for_head(mut self) -> Response {
        self.body = Body::Empty;
        self
    }
}

/// Reason phrase for the statuses the engine produces.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}
