//! The control API's HTTP/1.1, just what its clients (curl, scripts) need: one
//! request per connection, `Content-Length` bodies, `Expect: 100-continue`,
//! answers with `Connection: close`. Every socket is non-blocking and every
//! connection has a deadline, so the master's loop only ever does what is ready.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Largest request head.
const MAX_HEAD: usize = 16 << 10;
/// Largest request body (a whole configuration file).
pub const MAX_BODY: usize = 1 << 20;
/// Longest a client may take to send its request, and then to take the answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client's socket.
pub enum Stream {
    Unix(UnixStream),
    Tcp(std::net::TcpStream),
}

impl Stream {
    pub fn fd(&self) -> RawFd {
        match self {
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tcp(s) => s.as_raw_fd(),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }
}

/// A request as the API sees it.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The path, percent-decoding left to the router.
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// A header's value (the first of that name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A query parameter's value (`?format=json`).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .split('&')
            .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }
}

/// An answer.
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub extra: Vec<(&'static str, String)>,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type,
            body: body.into(),
            extra: Vec::new(),
        }
    }

    /// A JSON answer.
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
        body.push(b'\n');
        Response::new(status, "application/json", body)
    }

    /// A plain-text answer (messages end with a newline).
    pub fn text(status: u16, msg: &str) -> Response {
        let mut body = msg.trim_end().as_bytes().to_vec();
        body.push(b'\n');
        Response::new(status, "text/plain; charset=utf-8", body)
    }

    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.extra.push((name, value.into()));
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        for (n, v) in &self.extra {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        422 => "Unprocessable Content",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        _ => "",
    }
}

/// Where a connection is.
pub enum Step {
    /// Still reading the request.
    Reading,
    /// The head is in: authorize it (`Conn::authorize`) before the body is read.
    Head,
    /// The whole request is in.
    Complete(Request),
    /// Sending the answer.
    Writing,
    /// Finished (answered, or the client left): close it.
    Done,
}

/// One control connection.
pub struct Conn {
    pub stream: Stream,
    pub deadline: Instant,
    input: Vec<u8>,
    /// Head length and body length once the head is parsed.
    head: Option<(usize, usize)>,
    authorized: bool,
    output: Vec<u8>,
    written: usize,
    writing: bool,
}

impl Conn {
    pub fn new(stream: Stream) -> Conn {
        Conn {
            stream,
            deadline: Instant::now() + CLIENT_TIMEOUT,
            input: Vec::new(),
            head: None,
            authorized: false,
            output: Vec::new(),
            written: 0,
            writing: false,
        }
    }

    /// Whether poll should wait for it to be writable (else readable).
    pub fn wants_write(&self) -> bool {
        self.writing
    }

    /// Reads what has arrived; says what the connection needs next.
    pub fn read(&mut self) -> Step {
        let mut chunk = [0u8; 8192];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Step::Done,
                Ok(n) => self.input.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return Step::Done,
            }
            if self.input.len() > MAX_HEAD + MAX_BODY {
                break;
            }
        }
        self.progress()
    }

    fn progress(&mut self) -> Step {
        let (head_len, body_len) = match self.head {
            Some(h) => h,
            None => {
                let mut headers = [httparse::EMPTY_HEADER; 64];
                let mut req = httparse::Request::new(&mut headers);
                match req.parse(&self.input) {
                    Ok(httparse::Status::Partial) if self.input.len() > MAX_HEAD => {
                        self.answer(Response::text(
                            431,
                            "the request head is larger than 16 KiB",
                        ));
                        return Step::Writing;
                    }
                    Ok(httparse::Status::Partial) => return Step::Reading,
                    Err(e) => {
                        self.answer(Response::text(
                            400,
                            &format!("not an HTTP/1.1 request: {e}"),
                        ));
                        return Step::Writing;
                    }
                    Ok(httparse::Status::Complete(n)) => {
                        let value = |name: &str| {
                            req.headers
                                .iter()
                                .find(|h| h.name.eq_ignore_ascii_case(name))
                                .map(|h| String::from_utf8_lossy(h.value).trim().to_owned())
                        };
                        if value("transfer-encoding").is_some() {
                            self.answer(Response::text(
                                411,
                                "send the body with Content-Length (no chunked transfer encoding)",
                            ));
                            return Step::Writing;
                        }
                        let len = match value("content-length").map(|v| v.parse::<usize>()) {
                            None => 0,
                            Some(Ok(l)) if l <= MAX_BODY => l,
                            Some(Ok(_)) => {
                                self.answer(Response::text(413, "the body is larger than 1 MiB"));
                                return Step::Writing;
                            }
                            Some(Err(_)) => {
                                self.answer(Response::text(400, "Content-Length is not a number"));
                                return Step::Writing;
                            }
                        };
                        self.head = Some((n, len));
                        if !self.authorized {
                            return Step::Head;
                        }
                        (n, len)
                    }
                }
            }
        };
        if self.input.len() < head_len + body_len {
            return Step::Reading;
        }
        match self.request(head_len, body_len) {
            Some(r) => Step::Complete(r),
            None => {
                self.answer(Response::text(400, "not an HTTP/1.1 request"));
                Step::Writing
            }
        }
    }

    /// The parsed head's headers (for authorization, before the body is read).
    pub fn head_request(&self) -> Option<Request> {
        let (n, _) = self.head?;
        self.request(n, 0)
    }

    /// After `Step::Head`: the request may go on. Answers `Expect: 100-continue`
    /// (curl waits a second for it before sending a larger body).
    pub fn authorize(&mut self) -> Step {
        self.authorized = true;
        if let Some(r) = self.head_request() {
            let expects = r
                .header("expect")
                .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
            let (n, len) = self.head.unwrap_or_default();
            if expects && self.input.len() < n + len {
                // Small enough for any empty socket buffer; a client that cannot
                // take it is not waiting for it either.
                let _ = self.stream.write(b"HTTP/1.1 100 Continue\r\n\r\n");
            }
        }
        self.progress()
    }

    fn request(&self, head_len: usize, body_len: usize) -> Option<Request> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        req.parse(&self.input[..head_len]).ok()?;
        let target = req.path?;
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Some(Request {
            method: req.method?.to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
            headers: req
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_owned(),
                        String::from_utf8_lossy(h.value).trim().to_owned(),
                    )
                })
                .collect(),
            body: self.input[head_len..head_len + body_len].to_vec(),
        })
    }

    /// Queues the answer and sends what the socket takes now.
    pub fn answer(&mut self, response: Response) {
        self.output = response.bytes();
        self.written = 0;
        self.writing = true;
        self.deadline = Instant::now() + CLIENT_TIMEOUT;
    }

    /// Sends more of the answer; Done once all of it is sent.
    pub fn write(&mut self) -> Step {
        while self.written < self.output.len() {
            match self.stream.write(&self.output[self.written..]) {
                Ok(0) => return Step::Done,
                Ok(n) => self.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Step::Writing,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return Step::Done,
            }
        }
        Step::Done
    }
}
