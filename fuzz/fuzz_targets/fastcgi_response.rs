//! Arbitrary bytes as what PHP-FPM sends back on a connection, through the real
//! read loop (`client::read_response`: record decoder, STDOUT/STDERR/END_REQUEST
//! dispatch) and the response parser (`Responder`: CGI head, buffering, streaming,
//! discarding), with reads of fuzzed sizes and pauses (a pause makes the loop hand
//! over what it has, as when PHP calls `flush()`).
//!
//! Input: 7 control bytes, then the byte stream.
//! - byte 0, flags: 1 = HEAD request, 2 = pauses between reads, 4 = the
//!   connection fails (reset) instead of closing at the end, 8 = the client is gone
//!   (a streamed body is dropped at once);
//! - byte 1: seed of the read sizes and pauses;
//! - bytes 2..7: `repeat`, `start` (u16 LE), `len` (u16 LE): the `len` bytes at
//!   `start` are sent `1 + repeat` times, so a small input can describe a stream of
//!   megabytes (header and body limits, streaming, discarding).
//!
//! Seeds are `\0` × 7 + a FastCGI response as php-fpm sends it.
//!
//! Invariants:
//! - no panic; the completion runs exactly once;
//! - the decoder never holds more than one partial record plus one read (its
//!   documented bound), whatever the read sizes;
//! - success only when a model of the framing (independent of the decoder) saw an
//!   END_REQUEST with FCGI_REQUEST_COMPLETE; then the status is the head's, no
//!   hop-by-hop header remains, a buffered body has its exact Content-Length, the
//!   body (buffered or streamed, whatever the pauses) is exactly the STDOUT after
//!   the head, HEAD/204/304 have none, and the bytes left after END_REQUEST are
//!   counted right;
//! - a well-formed response within the limits always succeeds;
//! - a failure is a 502/504: the client gets that error page, or, once a stream
//!   has started, a stream that ends failed.
#![no_main]

use fe_php::backends::fastcgi::fuzzing::{protocol, read_response, response, Responder};
use fe_php::http::body::{BodyStream, ReadOutcome};
use fe_php::http::{Body, Response};
use libfuzzer_sys::fuzz_target;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, ReadBuf};

const CONTROL: usize = 7;
/// Longest stream a run sends: past every 1 MiB limit (head, buffering, discarding).
const MAX_STREAM: usize = 3 << 19;
/// One partial record (8-byte header, 65535 content, 255 padding, less the last
/// byte) plus one read: what `Decoder` documents it holds at most.
const DECODER_BOUND: usize = protocol::HEADER_LEN + 0xffff + 0xff - 1 + protocol::READ_CHUNK;

#[derive(Clone, Copy)]
struct Plan {
    head_only: bool,
    pauses: bool,
    reset_at_end: bool,
    client_gone: bool,
    seed: u32,
}

fn plan_and_stream(data: &[u8]) -> Option<(Plan, Vec<u8>)> {
    if data.len() < CONTROL {
        return None;
    }
    let (c, rest) = data.split_at(CONTROL);
    let plan = Plan {
        head_only: c[0] & 1 != 0,
        pauses: c[0] & 2 != 0,
        reset_at_end: c[0] & 4 != 0,
        client_gone: c[0] & 8 != 0,
        seed: 0x9e37_79b9 ^ (c[1] as u32) << 8 ^ rest.len() as u32,
    };
    let repeat = c[2] as usize;
    let start = (u16::from_le_bytes([c[3], c[4]]) as usize).min(rest.len());
    let len = (u16::from_le_bytes([c[5], c[6]]) as usize).min(rest.len() - start);
    let mut stream = Vec::with_capacity(rest.len() + repeat * len);
    stream.extend_from_slice(&rest[..start + len]);
    for _ in 0..repeat {
        if stream.len() + len > MAX_STREAM {
            break;
        }
        stream.extend_from_slice(&rest[start..start + len]);
    }
    stream.extend_from_slice(&rest[start + len..]);
    Some((plan, stream))
}

/// Read sizes and pauses, from the seed.
struct Chunks(u32);

impl Chunks {
    fn next(&mut self) -> u32 {
        // xorshift32
        let mut x = self.0.max(1);
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }

    fn size(&mut self) -> usize {
        let r = self.next();
        let n = (r >> 8) as usize;
        match r % 8 {
            0 => 1 + n % 8,
            1 | 2 => 1 + n % 300,
            3 | 4 => 1 + n % 9000,
            _ => usize::MAX,
        }
    }

    fn pause(&mut self) -> bool {
        self.next().is_multiple_of(3)
    }
}

/// The connection: serves the stream in pieces, sometimes not ready (waking
/// itself at once, so the loop sees a pause but never waits), then EOF or a reset.
struct Conn {
    stream: Vec<u8>,
    pos: usize,
    chunks: Chunks,
    pauses: bool,
    paused: bool,
    reset_at_end: bool,
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if me.pauses && !me.paused && me.chunks.pause() {
            me.paused = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        me.paused = false;
        if me.pos == me.stream.len() {
            return Poll::Ready(if me.reset_at_end {
                Err(io::ErrorKind::ConnectionReset.into())
            } else {
                Ok(())
            });
        }
        let n = me
            .chunks
            .size()
            .min(buf.remaining())
            .min(me.stream.len() - me.pos);
        buf.put_slice(&me.stream[me.pos..me.pos + n]);
        me.pos += n;
        Poll::Ready(Ok(()))
    }
}

/// What the framing of the stream says, decoded without `Decoder`.
#[derive(Debug, PartialEq)]
enum Framing {
    /// END_REQUEST with FCGI_REQUEST_COMPLETE: the STDOUT before it, the bytes
    /// after it.
    Complete { stdout: Vec<u8>, leftover: usize },
    /// Anything else (EOF inside or before a record, bad version, short
    /// END_REQUEST, another protocol status): the STDOUT fed before that.
    Fails { stdout: Vec<u8> },
}

fn model_framing(s: &[u8]) -> Framing {
    let mut pos = 0;
    let mut stdout = Vec::new();
    loop {
        let left = &s[pos..];
        if left.len() < 8 || left[0] != 1 {
            return Framing::Fails { stdout };
        }
        let clen = u16::from_be_bytes([left[4], left[5]]) as usize;
        let total = 8 + clen + left[6] as usize;
        if left.len() < total {
            return Framing::Fails { stdout };
        }
        let content = &left[8..8 + clen];
        let id = u16::from_be_bytes([left[2], left[3]]);
        pos += total;
        if id != 1 {
            continue;
        }
        match left[1] {
            6 => stdout.extend_from_slice(content),
            3 if clen >= 8 && content[4] == 0 => {
                return Framing::Complete {
                    stdout,
                    leftover: s.len() - pos,
                }
            }
            3 => return Framing::Fails { stdout },
            _ => {}
        }
    }
}

/// The end of the CGI head in `stdout` (where the body starts).
fn head_end(stdout: &[u8]) -> Option<usize> {
    let mut at = 0;
    response::find_head_end(stdout, &mut at)
}

/// The decoder alone, fed like the read loop feeds it: its buffer stays bounded.
fn check_decoder_bound(stream: &[u8], seed: u32) {
    let mut dec = protocol::Decoder::new();
    let mut chunks = Chunks(seed);
    let mut pos = 0;
    loop {
        loop {
            match dec.next_record() {
                Ok(Some(r)) => assert!(r.content.len() <= 0xffff),
                Ok(None) => break,
                Err(_) => return,
            }
        }
        if pos == stream.len() {
            return;
        }
        let buf = dec.read_buffer();
        assert!(
            buf.capacity() <= DECODER_BOUND,
            "decoder buffer grew to {} bytes (bound {DECODER_BOUND})",
            buf.capacity()
        );
        let n = chunks
            .size()
            .min(buf.capacity() - buf.len())
            .min(stream.len() - pos);
        buf.extend_from_slice(&stream[pos..pos + n]);
        pos += n;
    }
}

/// What reached the client.
enum Delivered {
    Bytes(Vec<u8>),
    Empty,
    /// A streamed body, read by its own thread: (bytes, failure).
    Stream(std::thread::JoinHandle<(Vec<u8>, Option<String>)>),
    /// A streamed body the client dropped at once.
    Dropped,
}

fn drain(stream: BodyStream) -> std::thread::JoinHandle<(Vec<u8>, Option<String>)> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = vec![0; 64 * 1024];
        loop {
            match stream.read(&mut buf) {
                ReadOutcome::Data(n) => out.extend_from_slice(&buf[..n]),
                ReadOutcome::End => return (out, None),
                ReadOutcome::Failed(e) => return (out, Some(e)),
                ReadOutcome::Again => panic!("a blocking read said Again"),
            }
        }
    })
}

type Answers = Arc<Mutex<Vec<(u16, Vec<(String, Vec<u8>)>, Delivered)>>>;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((plan, stream)) = plan_and_stream(data) else {
        return;
    };
    check_decoder_bound(&stream, plan.seed);

    let answers: Answers = Arc::default();
    let complete = {
        let answers = answers.clone();
        let client_gone = plan.client_gone;
        Box::new(move |resp: Response| {
            let delivered = match resp.body {
                Body::Empty => Delivered::Empty,
                Body::Bytes(b) => Delivered::Bytes(b),
                Body::Stream(s) if client_gone => {
                    drop(s);
                    Delivered::Dropped
                }
                Body::Stream(s) => Delivered::Stream(drain(s)),
                Body::File { .. } => panic!("a FastCGI response with a file body"),
            };
            answers
                .lock()
                .unwrap()
                .push((resp.status, resp.headers, delivered));
        })
    };
    let mut responder = Responder::new("GET /fuzz.php".into(), plan.head_only, complete);
    let mut conn: Box<dyn AsyncRead + Unpin + Send> = Box::new(Conn {
        stream: stream.clone(),
        pos: 0,
        chunks: Chunks(plan.seed),
        pauses: plan.pauses,
        paused: false,
        reset_at_end: plan.reset_at_end,
    });
    let result = runtime().block_on(read_response(
        &mut conn,
        Duration::from_secs(3600),
        &mut responder,
    ));
    if let Err(f) = &result {
        // What pool::run does with a failure.
        responder.fail(f);
    }
    drop(responder);

    let mut answers = std::mem::take(&mut *answers.lock().unwrap());
    assert_eq!(
        answers.len(),
        1,
        "the completion ran {} times",
        answers.len()
    );
    let (status, headers, delivered) = answers.pop().unwrap();
    let (body, stream_failed, streamed) = match delivered {
        Delivered::Bytes(b) => (Some(b), None, false),
        Delivered::Empty => (Some(Vec::new()), None, false),
        Delivered::Stream(h) => {
            let (b, failed) = h.join().expect("the reader thread");
            (Some(b), failed, true)
        }
        Delivered::Dropped => (None, None, true),
    };

    let framing = model_framing(&stream);
    match &result {
        Ok(leftover) => {
            let Framing::Complete {
                stdout,
                leftover: want_leftover,
            } = &framing
            else {
                panic!("success without a complete END_REQUEST: {framing:?}");
            };
            // Only what was read already counts (the rest may still be unread).
            assert!(leftover <= want_leftover, "bytes after END_REQUEST");
            let end = head_end(stdout).expect("success without a complete head");
            let head = response::parse_head(&stdout[..end]).expect("success with a bad head");
            assert_eq!(status, head.status);
            assert!(
                !headers.iter().any(|(n, _)| {
                    ["status", "connection", "keep-alive", "transfer-encoding"]
                        .iter()
                        .any(|d| n.eq_ignore_ascii_case(d))
                }),
                "hop-by-hop header kept: {headers:?}"
            );
            let want_body = &stdout[end..];
            let body_allowed = status != 204 && status != 304;
            if plan.head_only || !body_allowed {
                assert_eq!(body.as_deref(), Some(&[][..]), "a body for HEAD/204/304");
                assert!(want_body.len() as u64 <= response::MAX_DISCARDED);
            } else {
                assert_eq!(stream_failed, None);
                if let Some(b) = &body {
                    assert!(
                        b == want_body,
                        "body differs ({} vs {} bytes)",
                        b.len(),
                        want_body.len()
                    );
                }
                if !streamed {
                    let cl: Vec<&[u8]> = headers
                        .iter()
                        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                        .map(|(_, v)| v.as_slice())
                        .collect();
                    assert_eq!(cl, [want_body.len().to_string().as_bytes()]);
                }
            }
        }
        Err(f) => {
            assert!(matches!(f.status, 502 | 504), "failure status {}", f.status);
            if streamed {
                if !plan.client_gone {
                    assert!(
                        stream_failed.is_some(),
                        "a failed exchange ended its stream cleanly"
                    );
                }
            } else if status == f.status {
                // The error page (or its head alone).
                let b = body.unwrap();
                assert!(plan.head_only || !b.is_empty());
            } else {
                // Answered before the failure: HEAD/204/304 past the discard limit.
                assert!(
                    plan.head_only || status == 204 || status == 304,
                    "{status} then {f:?}"
                );
            }
            // A well-formed response within the limits must not fail.
            if let Framing::Complete { stdout, .. } = &framing {
                let within = match head_end(stdout) {
                    Some(end) => {
                        // The head limit is checked per STDOUT record: leave a record's
                        // worth of room below it.
                        let small_head = end + 0x10000 < response::MAX_HEAD;
                        let parsed = response::parse_head(&stdout[..end]);
                        let discard_ok = match &parsed {
                            Ok(h) if plan.head_only || h.status == 204 || h.status == 304 => {
                                (stdout.len() - end) as u64 <= response::MAX_DISCARDED
                            }
                            _ => true,
                        };
                        small_head && parsed.is_ok() && discard_ok
                    }
                    None => false,
                };
                assert!(
                    !within || (plan.client_gone && streamed),
                    "a well-formed response failed: {f:?}"
                );
            }
        }
    }
});
