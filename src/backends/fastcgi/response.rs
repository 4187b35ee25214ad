//! From PHP-FPM's STDOUT to a `Response`: the CGI header block (Status, Location,
//! repeated headers), then the body — buffered while it is small and complete,
//! streamed through `body::channel()` once it grows or PHP-FPM pauses.

use super::failure::Failure;
use crate::http::body::{self, BodySender, TrySend};
use crate::http::Completion;
use crate::http::{Body, Response};

/// Largest CGI header block accepted (nginx's default is 4-8 KiB; applications
/// with many or large cookies need more).
pub const MAX_HEAD: usize = 1 << 20;
/// Output past this size is streamed instead of buffered.
pub const STREAM_AFTER: usize = 1 << 20;
/// Streamed output goes to the host in chunks of about this size (or sooner when
/// PHP-FPM pauses).
pub const STREAM_CHUNK: usize = 64 * 1024;
/// Output nobody reads (HEAD, 204, 304) dropped before the exchange is cut short.
pub const MAX_DISCARDED: u64 = 1 << 20;

/// Response headers PHP-FPM may send that never reach the client: `Status` becomes
/// the status line, the others belong to fe-php's own connection with the client.
const DROPPED: &[&str] = &["status", "connection", "keep-alive", "transfer-encoding"];

/// The parsed CGI header block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Finds the end of the header block in `buf`, resuming at `*line_start` (the first
/// byte of a line not yet checked). Returns where the body starts.
pub fn find_head_end(buf: &[u8], line_start: &mut usize) -> Option<usize> {
    while let Some(nl) = buf[*line_start..].iter().position(|&b| b == b'\n') {
        let end = *line_start + nl;
        let line = &buf[*line_start..end];
        if line.is_empty() || line == b"\r" {
            return Some(end + 1);
        }
        *line_start = end + 1;
    }
    None
}

fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses a CGI header block (without the blank line): `Status:` sets the status
/// (malformed → error), `Location` without `Status` means 302, other headers are kept
/// in order, repeated ones apart.
pub fn parse_head(block: &[u8]) -> Result<Head, String> {
    let mut status = None;
    let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
    for raw in block.split(|&b| b == b'\n') {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.is_empty() {
            continue;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            // obs-fold: a continuation of the previous header's value.
            match headers.last_mut() {
                Some((_, v)) => {
                    v.push(b' ');
                    v.extend_from_slice(line.trim_ascii());
                    continue;
                }
                None => return Err("the header block starts with a continuation line".into()),
            }
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(format!(
                "invalid header line {:?}",
                String::from_utf8_lossy(&line[..line.len().min(80)])
            ));
        };
        let name = &line[..colon];
        if name.is_empty() || !name.iter().copied().all(is_token) {
            return Err(format!(
                "invalid header name {:?}",
                String::from_utf8_lossy(&name[..name.len().min(80)])
            ));
        }
        let name = String::from_utf8_lossy(name).into_owned();
        let value = line[colon + 1..].trim_ascii().to_vec();
        if name.eq_ignore_ascii_case("status") {
            status = Some(parse_status(&value)?);
        }
        headers.push((name, value));
    }
    let status = match status {
        Some(s) => s,
        None if headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("location")) =>
        {
            302
        }
        None => 200,
    };
    headers.retain(|(n, _)| !DROPPED.iter().any(|d| n.eq_ignore_ascii_case(d)));
    Ok(Head { status, headers })
}

/// "404", "404 Not Found" → 404. A final response needs 200-999.
fn parse_status(value: &[u8]) -> Result<u16, String> {
    let bad = || {
        format!(
            "malformed Status header {:?}",
            String::from_utf8_lossy(&value[..value.len().min(80)])
        )
    };
    if value.len() < 3 || !value[..3].iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    if value.len() > 3 && value[3] != b' ' && value[3] != b'\t' {
        return Err(bad());
    }
    let code =
        (value[0] - b'0') as u16 * 100 + (value[1] - b'0') as u16 * 10 + (value[2] - b'0') as u16;
    if code < 200 {
        return Err(bad());
    }
    Ok(code)
}

fn body_allowed(status: u16) -> bool {
    status != 204 && status != 304
}

enum State {
    /// Collecting the header block; `line_start` is where scanning resumes.
    Head { buf: Vec<u8>, line_start: usize },
    /// Head parsed, body collected; the completion has not run.
    Buffering { head: Head, out: Vec<u8> },
    /// The completion has run with a streamed body.
    Streaming {
        sender: BodySender,
        pending: Vec<u8>,
    },
    /// The completion has run; further output is dropped (HEAD, 204/304, or the
    /// client has gone).
    Discarding,
}

/// Turns one request's STDOUT into the response handed to its completion.
pub struct Responder {
    uri: String,
    head_only: bool,
    complete: Option<Completion>,
    state: State,
    discarded: u64,
}

impl Responder {
    pub fn new(uri: String, head_only: bool, complete: Completion) -> Responder {
        Responder {
            uri,
            head_only,
            complete: Some(complete),
            state: State::Head {
                buf: Vec::new(),
                line_start: 0,
            },
            discarded: 0,
        }
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// True once the completion has run (nothing can be retried after that).
    pub fn responded(&self) -> bool {
        self.complete.is_none()
    }

    /// STDOUT content from PHP-FPM.
    pub async fn stdout(&mut self, data: &[u8]) -> Result<(), Failure> {
        match &mut self.state {
            State::Head { buf, line_start } => {
                if buf.len() + data.len() > MAX_HEAD + 4 {
                    return Err(Failure::bad_response(format!(
                        "PHP sent a header block over {} KiB",
                        MAX_HEAD >> 10
                    )));
                }
                buf.extend_from_slice(data);
                let Some(body_start) = find_head_end(buf, line_start) else {
                    if buf.len() > MAX_HEAD {
                        return Err(Failure::bad_response(format!(
                            "PHP sent a header block over {} KiB",
                            MAX_HEAD >> 10
                        )));
                    }
                    return Ok(());
                };
                let head = parse_head(&buf[..body_start]).map_err(Failure::bad_response)?;
                let rest = buf.split_off(body_start);
                self.state = State::Buffering {
                    head,
                    out: Vec::new(),
                };
                if rest.is_empty() {
                    Ok(())
                } else {
                    self.body(&rest).await
                }
            }
            _ => self.body(data).await,
        }
    }

    async fn body(&mut self, data: &[u8]) -> Result<(), Failure> {
        match &mut self.state {
            State::Buffering { head, out } => {
                if self.head_only || !body_allowed(head.status) {
                    return self.discard(data.len()).await;
                }
                out.extend_from_slice(data);
                if out.len() >= STREAM_AFTER {
                    self.start_stream().await?;
                }
                Ok(())
            }
            State::Streaming { pending, .. } => {
                pending.extend_from_slice(data);
                if pending.len() >= STREAM_CHUNK {
                    self.push().await?;
                }
                Ok(())
            }
            State::Discarding => self.discard(data.len()).await,
            State::Head { .. } => Ok(()),
        }
    }

    /// Drops output that cannot reach anyone; past `MAX_DISCARDED` the response is
    /// completed as it is and the exchange abandoned (the connection is closed).
    async fn discard(&mut self, n: usize) -> Result<(), Failure> {
        self.discarded += n as u64;
        if self.discarded <= MAX_DISCARDED {
            return Ok(());
        }
        self.start_stream().await?;
        Err(Failure::abandoned(
            "PHP kept sending a body that cannot be sent (HEAD, 204 or 304)",
        ))
    }

    /// PHP-FPM has nothing more to send right now: what was collected goes to the
    /// client (PHP's `flush()` reaches it as it happens).
    pub async fn idle(&mut self) -> Result<(), Failure> {
        match &self.state {
            State::Buffering { .. } => self.start_stream().await,
            State::Streaming { pending, .. } if !pending.is_empty() => self.push().await,
            _ => Ok(()),
        }
    }

    /// END_REQUEST arrived: completes the response.
    pub async fn finish(&mut self) -> Result<(), Failure> {
        match std::mem::replace(&mut self.state, State::Discarding) {
            State::Head { buf, .. } => Err(Failure::bad_response(if buf.is_empty() {
                "PHP-FPM ended the request without any output".to_owned()
            } else {
                "PHP-FPM ended the request inside the header block".to_owned()
            })),
            State::Buffering { head, out } => {
                let allowed = !self.head_only && body_allowed(head.status);
                let mut resp = Response::new(head.status);
                resp.headers = head.headers;
                if allowed {
                    // The body is complete: its length is known exactly.
                    resp.headers
                        .retain(|(n, _)| !n.eq_ignore_ascii_case("content-length"));
                    resp.push_header("Content-Length", out.len().to_string());
                    resp.body = Body::Bytes(out);
                } else if !body_allowed(head.status) {
                    resp.headers
                        .retain(|(n, _)| !n.eq_ignore_ascii_case("content-length"));
                }
                self.respond(resp);
                Ok(())
            }
            State::Streaming { sender, pending } => {
                self.state = State::Streaming { sender, pending };
                let r = self.push().await;
                self.state = State::Discarding; // drops the sender: the stream ends
                r
            }
            State::Discarding => Ok(()),
        }
    }

    /// The exchange failed: an error page if nothing was sent yet, else the stream
    /// is marked failed (the client sees a truncated body).
    pub fn fail(&mut self, failure: &Failure) {
        match std::mem::replace(&mut self.state, State::Discarding) {
            State::Streaming { sender, .. } => sender.fail(failure.hint.clone()),
            _ => {
                let resp = failure.response();
                let resp = if self.head_only {
                    resp.for_head()
                } else {
                    resp
                };
                self.respond(resp);
            }
        }
    }

    fn respond(&mut self, resp: Response) {
        if let Some(c) = self.complete.take() {
            c(resp);
        }
    }

    /// Runs the completion with a streamed body (or an empty one when there can be
    /// no body) and sends what was collected.
    async fn start_stream(&mut self) -> Result<(), Failure> {
        let State::Buffering { head, out } = std::mem::replace(&mut self.state, State::Discarding)
        else {
            return Ok(());
        };
        let mut resp = Response::new(head.status);
        resp.headers = head.headers;
        if self.head_only || !body_allowed(head.status) {
            self.respond(resp);
            return Ok(());
        }
        let (sender, stream) = body::channel();
        self.respond(resp.with_body(Body::Stream(stream)));
        self.state = State::Streaming {
            sender,
            pending: out,
        };
        self.push().await
    }

    /// Hands the pending chunk to the host. A slow client's share goes to the
    /// body's temporary file, so PHP-FPM's child is let go as soon as it is done,
    /// as behind nginx. Only when that file is full or unusable does
    /// `BodySender::send` wait (back-pressure); it then runs on the blocking pool,
    /// never on the runtime thread, and nothing more is read from PHP-FPM meanwhile.
    async fn push(&mut self) -> Result<(), Failure> {
        let State::Streaming { sender, pending } =
            std::mem::replace(&mut self.state, State::Discarding)
        else {
            return Ok(());
        };
        if pending.is_empty() {
            self.state = State::Streaming { sender, pending };
            return Ok(());
        }
        let pending = match sender.try_send(pending) {
            TrySend::Sent => {
                self.state = State::Streaming {
                    sender,
                    pending: Vec::with_capacity(STREAM_CHUNK),
                };
                return Ok(());
            }
            TrySend::Gone => return Err(Failure::client_gone()),
            TrySend::Full(pending) => pending,
        };
        let (sender, delivered) = match tokio::task::spawn_blocking(move || {
            let ok = sender.send(pending);
            (sender, ok)
        })
        .await
        {
            Ok(r) => r,
            Err(_) => return Err(Failure::client_gone()),
        };
        if !delivered {
            drop(sender);
            return Err(Failure::client_gone());
        }
        self.state = State::Streaming {
            sender,
            pending: Vec::with_capacity(STREAM_CHUNK),
        };
        Ok(())
    }
}

/// A responder dropped unfinished (its task cancelled) still answers.
impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(c) = self.complete.take() {
            c(Response::error(
                502,
                Some("the PHP-FPM request was abandoned"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Head, String> {
        parse_head(text.as_bytes())
    }

    #[test]
    fn finds_the_end_across_calls() {
        let mut at = 0;
        let mut buf = b"Content-Type: text/html\r\nX-A: 1".to_vec();
        assert_eq!(find_head_end(&buf, &mut at), None);
        assert_eq!(at, 25);
        buf.extend_from_slice(b"\r\n\r");
        assert_eq!(find_head_end(&buf, &mut at), None);
        buf.extend_from_slice(b"\nbody");
        assert_eq!(find_head_end(&buf, &mut at), Some(buf.len() - 4));
        let mut at = 0;
        assert_eq!(find_head_end(b"X: 1\n\nbody", &mut at), Some(6));
        let mut at = 0;
        assert_eq!(find_head_end(b"\r\nbody", &mut at), Some(2));
    }

    #[test]
    fn status_header() {
        let h = head("Status: 404 Not Found\r\nContent-type: text/html\r\n").unwrap();
        assert_eq!(h.status, 404);
        assert_eq!(
            h.headers,
            [("Content-type".to_owned(), b"text/html".to_vec())]
        );
        assert_eq!(head("Status: 201").unwrap().status, 201);
        assert_eq!(head("X-Powered-By: PHP").unwrap().status, 200);
        for bad in [
            "Status: abc",
            "Status: 20",
            "Status: 2000",
            "Status: 099 x",
            "Status: 100 Continue",
            "Status:",
        ] {
            let e = head(bad).unwrap_err();
            assert!(e.contains("malformed Status header"), "{bad}: {e}");
        }
    }

    #[test]
    fn location_without_status_is_302() {
        assert_eq!(head("Location: /x").unwrap().status, 302);
        assert_eq!(head("Status: 301\nLocation: /x").unwrap().status, 301);
        assert_eq!(
            head("Location: /x\nStatus: 201 Created").unwrap().status,
            201
        );
    }

    #[test]
    fn repeated_headers_stay_apart_and_hop_by_hop_are_dropped() {
        let h = head(
            "Set-Cookie: a=1\r\nSet-Cookie: b=2; HttpOnly\r\nConnection: close\r\nTransfer-Encoding: chunked\r\nX-Long: one\r\n  two\r\n",
        )
        .unwrap();
        assert_eq!(
            h.headers,
            [
                ("Set-Cookie".to_owned(), b"a=1".to_vec()),
                ("Set-Cookie".to_owned(), b"b=2; HttpOnly".to_vec()),
                ("X-Long".to_owned(), b"one two".to_vec()),
            ]
        );
    }

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// A responder whose completion lands in the returned receiver.
    fn responder(head_only: bool) -> (Responder, std::sync::mpsc::Receiver<Response>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let r = Responder::new(
            "GET /t.php".into(),
            head_only,
            Box::new(move |resp| tx.send(resp).unwrap()),
        );
        (r, rx)
    }

    fn header<'a>(resp: &'a Response, name: &str) -> Vec<&'a [u8]> {
        resp.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    #[test]
    fn small_complete_response_is_buffered_with_its_exact_length() {
        let (mut r, rx) = responder(false);
        block_on(async {
            // The head arrives split, the script's own Content-Length is wrong.
            r.stdout(b"Status: 201 Created\r\nContent-Length: 99\r")
                .await
                .unwrap();
            r.stdout(b"\nX-A: 1\r\n\r\nbo").await.unwrap();
            r.stdout(b"dy").await.unwrap();
            r.finish().await.unwrap();
        });
        let resp = rx.try_recv().unwrap();
        assert_eq!(resp.status, 201);
        assert_eq!(header(&resp, "content-length"), [b"4"]);
        assert_eq!(header(&resp, "status"), Vec::<&[u8]>::new());
        let Body::Bytes(b) = &resp.body else {
            panic!("{:?}", resp.body)
        };
        assert_eq!(b, b"body");
    }

    #[test]
    fn head_and_no_content_have_no_body() {
        let (mut r, rx) = responder(true);
        block_on(async {
            r.stdout(b"Content-Length: 12\r\n\r\n").await.unwrap();
            r.finish().await.unwrap();
        });
        let resp = rx.try_recv().unwrap();
        assert!(matches!(resp.body, Body::Empty));
        assert_eq!(header(&resp, "content-length"), [b"12"]);

        let (mut r, rx) = responder(false);
        block_on(async {
            r.stdout(b"Status: 204\r\n\r\nignored").await.unwrap();
            r.finish().await.unwrap();
        });
        let resp = rx.try_recv().unwrap();
        assert_eq!(resp.status, 204);
        assert!(matches!(resp.body, Body::Empty));
        assert!(header(&resp, "content-length").is_empty());
    }

    #[test]
    fn large_output_switches_to_a_stream() {
        let (mut r, rx) = responder(false);
        let reader = std::thread::spawn(move || {
            let resp = rx.recv().unwrap();
            assert!(header(&resp, "content-length").is_empty());
            let Body::Stream(stream) = resp.body else {
                panic!("{:?}", resp.body)
            };
            let mut total = 0;
            let mut buf = vec![0; 100_000];
            loop {
                match stream.read(&mut buf) {
                    crate::http::body::ReadOutcome::Data(n) => {
                        assert!(buf[..n].iter().all(|&b| b == b'z'));
                        total += n;
                    }
                    crate::http::body::ReadOutcome::End => return total,
                    other => panic!("{other:?}"),
                }
            }
        });
        block_on(async {
            r.stdout(b"X: 1\n\n").await.unwrap();
            for _ in 0..80 {
                r.stdout(&[b'z'; 65528]).await.unwrap();
            }
            r.finish().await.unwrap();
        });
        drop(r);
        assert_eq!(reader.join().unwrap(), 80 * 65528);
    }

    #[test]
    fn idle_after_the_head_starts_the_stream() {
        let (mut r, rx) = responder(false);
        block_on(async {
            r.stdout(b"\r\nfirst\n").await.unwrap();
            assert!(rx.try_recv().is_err(), "nothing before PHP pauses");
            r.idle().await.unwrap();
        });
        let resp = rx.try_recv().unwrap();
        let Body::Stream(stream) = resp.body else {
            panic!()
        };
        let mut buf = [0; 16];
        assert_eq!(
            stream.read(&mut buf),
            crate::http::body::ReadOutcome::Data(6)
        );
        assert_eq!(&buf[..6], b"first\n");
        assert!(r.responded());
    }

    #[test]
    fn failures_before_and_after_the_head() {
        let (mut r, rx) = responder(false);
        let big = vec![b'a'; MAX_HEAD + 10];
        let f = block_on(r.stdout(&big)).unwrap_err();
        assert_eq!(f.status, 502);
        r.fail(&f);
        let resp = rx.try_recv().unwrap();
        assert_eq!(resp.status, 502);

        let (mut r, rx) = responder(false);
        let f = block_on(async {
            r.stdout(b"X-Only: head").await.unwrap();
            r.finish().await.unwrap_err()
        });
        assert!(f
            .log
            .as_deref()
            .unwrap()
            .contains("inside the header block"));
        r.fail(&f);
        assert_eq!(rx.try_recv().unwrap().status, 502);

        // Dropped unfinished, it still answers.
        let (r, rx) = responder(false);
        drop(r);
        assert_eq!(rx.try_recv().unwrap().status, 502);
    }

    #[test]
    fn invalid_lines_are_errors() {
        assert!(head("no colon here")
            .unwrap_err()
            .contains("invalid header line"));
        assert!(head("Bad Name: x")
            .unwrap_err()
            .contains("invalid header name"));
        assert!(head(": x").is_err());
        assert!(head(" folded first").is_err());
    }
}
