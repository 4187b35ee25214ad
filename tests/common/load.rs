//! A multi-threaded HTTP/1.1 load client over raw keep-alive sockets that records
//! every request: which client sent it, on which worker process its connection
//! was (learnt from a probe script answering `getmypid()`), its status and how
//! long it took. Fault tests use it to prove that only the requests of a dead
//! worker's connections failed; the soak test to count and time a million.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One request of the mix and what counts as its success.
#[derive(Clone, Debug)]
pub struct Req {
    /// The bytes sent, request line to the end of the body.
    pub raw: Vec<u8>,
    pub expect_status: u16,
    /// The body must start with this.
    pub expect_body: Option<Vec<u8>>,
    /// The server closes the connection after the answer (e.g. a malformed request).
    pub closes: bool,
    /// HEAD: the answer has no body whatever its headers say.
    pub head: bool,
}

impl Req {
    pub fn get(path: &str, status: u16) -> Req {
        Req::raw(
            format!("GET {path} HTTP/1.1\r\nHost: load\r\n\r\n").into_bytes(),
            status,
        )
    }

    pub fn raw(raw: Vec<u8>, status: u16) -> Req {
        Req {
            raw,
            expect_status: status,
            expect_body: None,
            closes: false,
            head: false,
        }
    }

    /// A POST with `content_type` and `body`.
    pub fn post(path: &str, content_type: &str, body: &[u8], status: u16) -> Req {
        let mut raw = format!(
            "POST {path} HTTP/1.1\r\nHost: load\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(body);
        Req::raw(raw, status)
    }

    pub fn body(mut self, prefix: &[u8]) -> Req {
        self.expect_body = Some(prefix.to_vec());
        self
    }

    pub fn closes(mut self) -> Req {
        self.closes = true;
        self
    }
}

/// What happened to one request.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub client: u32,
    /// Index in the mix.
    pub req: u32,
    /// When it was sent, from the start of the load.
    pub at: Duration,
    pub took: Duration,
    /// The status, or 0 when the connection failed before a whole answer arrived.
    pub status: u16,
    pub ok: bool,
    /// The worker process of the connection (0: unknown, the probe had not answered).
    pub pid: i32,
    /// The request was the first one sent on its connection.
    pub fresh: bool,
}

/// Settings of a load run.
pub struct LoadSpec {
    pub port: u16,
    pub clients: usize,
    /// A path answering the worker's pid as the body, sent first on every connection.
    pub probe: Option<String>,
    /// With `probe`: spread the clients' connections evenly over this many worker
    /// processes (a client whose new connection lands on a worker that already has
    /// its share connects again, a few times at most).
    pub spread_over: Option<usize>,
    pub mix: Vec<Req>,
    /// Stop after this many requests in all (None: until `stop`).
    pub total: Option<u64>,
    /// Keep every sample (else only counts and the failures).
    pub keep_samples: bool,
    pub read_timeout: Duration,
}

impl LoadSpec {
    pub fn new(port: u16, clients: usize, mix: Vec<Req>) -> LoadSpec {
        LoadSpec {
            port,
            clients,
            probe: None,
            spread_over: None,
            mix,
            total: None,
            keep_samples: true,
            read_timeout: Duration::from_secs(20),
        }
    }
}

/// The results of one client thread.
#[derive(Default, Debug)]
pub struct ClientLog {
    pub samples: Vec<Sample>,
    pub ok: u64,
    pub failed: Vec<Sample>,
    /// Requests per status, per mix entry (status 0: connection failures).
    pub statuses: std::collections::BTreeMap<(u32, u16), u64>,
}

/// A running load.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<ClientLog>>,
    /// Successful requests so far.
    pub ok: Arc<AtomicU64>,
    /// Requests answered or failed so far.
    pub done: Arc<AtomicU64>,
    /// The worker pid of each client's current connection (0: none known).
    pub conn_pids: Arc<Vec<AtomicI32>>,
    pub started: Instant,
}

/// All clients' results together.
#[derive(Debug, Default)]
pub struct Report {
    pub ok: u64,
    pub failed: Vec<Sample>,
    pub samples: Vec<Sample>,
    pub statuses: std::collections::BTreeMap<(u32, u16), u64>,
    pub elapsed: Duration,
}

impl Report {
    pub fn total(&self) -> u64 {
        self.ok + self.failed.len() as u64
    }

    /// Failures per client.
    pub fn failures_by_client(&self) -> std::collections::BTreeMap<u32, usize> {
        let mut m = std::collections::BTreeMap::new();
        for f in &self.failed {
            *m.entry(f.client).or_default() += 1;
        }
        m
    }
}

impl Load {
    pub fn start(spec: LoadSpec) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicU64::new(0));
        let conn_pids: Arc<Vec<AtomicI32>> =
            Arc::new((0..spec.clients).map(|_| AtomicI32::new(0)).collect());
        let started = Instant::now();
        let spec = Arc::new(spec);
        let threads = (0..spec.clients)
            .map(|c| {
                let (spec, stop, ok, done, pids) = (
                    spec.clone(),
                    stop.clone(),
                    ok.clone(),
                    done.clone(),
                    conn_pids.clone(),
                );
                std::thread::spawn(move || client(c, &spec, &stop, &ok, &done, &pids, started))
            })
            .collect();
        Load {
            stop,
            threads,
            ok,
            done,
            conn_pids,
            started,
        }
    }

    /// How many clients have a connection on worker `pid` right now.
    pub fn clients_on(&self, pid: i32) -> usize {
        self.conn_pids
            .iter()
            .filter(|p| p.load(Ordering::SeqCst) == pid)
            .count()
    }

    /// Waits until `n` more requests have succeeded (panics after `limit`).
    pub fn wait_ok(&self, n: u64, limit: Duration) {
        let target = self.ok.load(Ordering::SeqCst) + n;
        let deadline = Instant::now() + limit;
        while self.ok.load(Ordering::SeqCst) < target {
            assert!(
                Instant::now() < deadline,
                "the load did not make {n} more successful requests within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the clients (each finishes its current request) and gathers the results.
    pub fn stop(self) -> Report {
        self.stop.store(true, Ordering::SeqCst);
        self.join()
    }

    /// Waits for a load with a `total` to finish.
    pub fn join(self) -> Report {
        let mut r = Report::default();
        for t in self.threads {
            let log = t.join().expect("a load client panicked");
            r.ok += log.ok;
            r.failed.extend(log.failed);
            r.samples.extend(log.samples);
            for (k, v) in log.statuses {
                *r.statuses.entry(k).or_default() += v;
            }
        }
        r.elapsed = self.started.elapsed();
        r.failed.sort_by_key(|s| s.at);
        r.samples.sort_by_key(|s| s.at);
        r
    }
}

struct Conn {
    reader: BufReader<TcpStream>,
    pid: i32,
    used: bool,
}

fn connect(spec: &LoadSpec) -> std::io::Result<Conn> {
    let s = TcpStream::connect(("127.0.0.1", spec.port))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(spec.read_timeout))?;
    s.set_write_timeout(Some(spec.read_timeout))?;
    Ok(Conn {
        reader: BufReader::with_capacity(64 * 1024, s),
        pid: 0,
        used: false,
    })
}

/// The process holding the accepted end of `s` (from `ss`), once a worker has
/// accepted it (tries for a second).
pub fn server_pid(s: &std::net::TcpStream) -> Option<i32> {
    let (local, peer) = (s.local_addr().ok()?, s.peer_addr().ok()?);
    for _ in 0..100 {
        let out = std::process::Command::new("ss")
            .args(["-Htnp", "state", "established"])
            .arg(format!(
                "( sport = :{} and dport = :{} )",
                peer.port(),
                local.port()
            ))
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(at) = text.find("pid=") {
            return text[at + 4..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok();
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    None
}

/// Connects and, with a probe, learns the connection's worker (spreading the
/// clients over the workers when asked). Err with a status: the probe failed.
fn open(spec: &LoadSpec, me: usize, pids: &[AtomicI32]) -> std::io::Result<Result<Conn, u16>> {
    let mut tries = 0;
    loop {
        let mut c = connect(spec)?;
        let Some(probe) = &spec.probe else {
            return Ok(Ok(c));
        };
        let raw = format!("GET {probe} HTTP/1.1\r\nHost: load\r\n\r\n");
        let (status, body, close) = exchange(&mut c, raw.as_bytes(), false)?;
        if status != 200 || close {
            return Ok(Err(status));
        }
        // The worker is the process holding the server side of this connection
        // (PHP's getmypid() names a pool runner, not the worker).
        let _ = body;
        c.pid = server_pid(c.reader.get_ref()).unwrap_or(0);
        tries += 1;
        if let Some(workers) = spec.spread_over {
            let share = spec.clients.div_ceil(workers.max(1));
            let others = pids
                .iter()
                .enumerate()
                .filter(|&(i, p)| i != me && p.load(Ordering::SeqCst) == c.pid)
                .count();
            if others >= share && tries < 50 {
                continue;
            }
        }
        pids[me].store(c.pid, Ordering::SeqCst);
        return Ok(Ok(c));
    }
}

fn client(
    me: usize,
    spec: &LoadSpec,
    stop: &AtomicBool,
    ok_count: &AtomicU64,
    done: &AtomicU64,
    pids: &[AtomicI32],
    started: Instant,
) -> ClientLog {
    let id = me as u32;
    let my_pid = &pids[me];
    let mut log = ClientLog::default();
    let mut conn: Option<Conn> = None;
    let mut n = id as usize;
    while !stop.load(Ordering::Relaxed) {
        if let Some(total) = spec.total {
            if done.fetch_add(1, Ordering::SeqCst) >= total {
                break;
            }
        }
        let idx = n % spec.mix.len();
        n += 1;
        let req = &spec.mix[idx];
        let at = started.elapsed();
        let t0 = Instant::now();
        let mut fresh = false;
        let result = (|| -> std::io::Result<(u16, bool)> {
            if conn.is_none() {
                match open(spec, me, pids)? {
                    Ok(c) => conn = Some(c),
                    Err(status) => return Ok((status, false)),
                }
            }
            let c = conn.as_mut().unwrap();
            fresh = !c.used;
            c.used = true;
            let (status, body, close) = exchange(c, &req.raw, req.head)?;
            if close || req.closes {
                conn = None;
                my_pid.store(0, Ordering::SeqCst);
            }
            let body_ok = req
                .expect_body
                .as_ref()
                .is_none_or(|want| body.starts_with(want));
            Ok((status, status == req.expect_status && body_ok))
        })();
        let pid = conn.as_ref().map_or(0, |c| c.pid);
        // A connection failure is status 0.
        let (status, ok) = result.unwrap_or_default();
        let sample = Sample {
            client: id,
            req: idx as u32,
            at,
            took: t0.elapsed(),
            status,
            ok,
            pid,
            fresh,
        };
        if spec.total.is_none() {
            done.fetch_add(1, Ordering::SeqCst);
        }
        *log.statuses.entry((idx as u32, status)).or_default() += 1;
        if ok {
            log.ok += 1;
            ok_count.fetch_add(1, Ordering::Relaxed);
        } else {
            log.failed.push(sample);
            // Whatever state the connection is in, start over on a new one.
            conn = None;
            my_pid.store(0, Ordering::SeqCst);
        }
        if spec.keep_samples {
            log.samples.push(sample);
        }
    }
    log
}

/// Sends one request and reads its whole answer: (status, body, server closes).
fn exchange(c: &mut Conn, raw: &[u8], head: bool) -> std::io::Result<(u16, Vec<u8>, bool)> {
    c.reader.get_mut().write_all(raw)?;
    let r = &mut c.reader;
    let mut line = String::new();
    let eof = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed mid-answer");
    let mut status;
    // Interim answers (100 Continue) come before the real one.
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(eof());
        }
        status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut length: Option<usize> = None;
        let mut chunked = false;
        let mut close = line.starts_with("HTTP/1.0");
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                return Err(eof());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let Some((name, value)) = l.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }
        if (100..200).contains(&status) {
            continue;
        }
        let mut body = Vec::new();
        if head || status == 204 || status == 304 {
        } else if chunked {
            loop {
                line.clear();
                if r.read_line(&mut line)? == 0 {
                    return Err(eof());
                }
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap(), 16)
                    .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
                if size == 0 {
                    // Trailers end with an empty line.
                    loop {
                        line.clear();
                        if r.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
                            break;
                        }
                    }
                    break;
                }
                let start = body.len();
                body.resize(start + size, 0);
                r.read_exact(&mut body[start..])?;
                let mut crlf = [0u8; 2];
                r.read_exact(&mut crlf)?;
            }
        } else if let Some(len) = length {
            body.resize(len, 0);
            r.read_exact(&mut body)?;
        } else {
            r.read_to_end(&mut body)?;
            close = true;
        }
        return Ok((status, body, close));
    }
}
