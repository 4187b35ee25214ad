//! A small HTTP/1.1 upstream on a real socket, for proxy tests that need the exact
//! bytes a proxy sends (heads recorded as received), control over what it answers
//! (hop-by-hop headers, delays, resets) and a count of the connections it accepted.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the upstream does with one request.
pub enum Reaction {
    /// Sends these bytes (a whole response) and keeps the connection.
    Reply(Vec<u8>),
    /// Waits, then replies.
    After(Duration, Vec<u8>),
    /// Sends these bytes, then closes the connection (without saying so in the
    /// response: like a server whose keep-alive timeout ran out, or one that dies
    /// in the middle of a body).
    ReplyAndClose(Vec<u8>),
    /// Closes the connection without answering.
    Close,
    /// Sends a response in these pieces, one write each (Nagle stays on).
    Pieces(Vec<Vec<u8>>),
}

/// One request as received: its head (request line and headers, raw) and body.
#[derive(Debug, Clone)]
pub struct Received {
    pub head: String,
    pub body: Vec<u8>,
}

impl Received {
    pub fn request_line(&self) -> &str {
        self.head.lines().next().unwrap_or("")
    }

    /// Values of header `name` (case-insensitive), in order.
    pub fn header(&self, name: &str) -> Vec<String> {
        self.head
            .split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }
}

type Handler = dyn Fn(&Received) -> Reaction + Send + Sync;

/// A listening upstream; stops accepting when dropped.
pub struct RawUpstream {
    pub port: u16,
    connections: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

/// `200 OK` with `body` and a Content-Length.
pub fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl RawUpstream {
    pub fn start(handler: impl Fn(&Received) -> Reaction + Send + Sync + 'static) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let accept = std::thread::spawn({
            let (connections, received, stop) =
                (connections.clone(), received.clone(), stop.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            connections.fetch_add(1, Ordering::SeqCst);
                            let (handler, received) = (handler.clone(), received.clone());
                            std::thread::spawn(move || serve(stream, &*handler, &received));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            }
        });
        RawUpstream {
            port,
            connections,
            received,
            stop,
            accept: Some(accept),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut stream: TcpStream, handler: &Handler, received: &Mutex<Vec<Received>>) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        // One request: the head, then Content-Length bytes of body.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end - 4]).into_owned();
        let mut req = Received {
            head,
            body: Vec::new(),
        };
        let length: usize = req
            .header("content-length")
            .first()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        req.body = buf[head_end..head_end + length].to_vec();
        buf.drain(..head_end + length);
        received.lock().unwrap().push(req.clone());
        let reply = match handler(&req) {
            Reaction::Reply(r) => r,
            Reaction::After(d, r) => {
                std::thread::sleep(d);
                r
            }
            Reaction::ReplyAndClose(r) => {
                let _ = stream.write_all(&r);
                return;
            }
            Reaction::Close => return,
            Reaction::Pieces(pieces) => {
                for p in pieces {
                    if stream.write_all(&p).is_err() {
                        return;
                    }
                }
                continue;
            }
        };
        if stream.write_all(&reply).is_err() {
            return;
        }
    }
}
