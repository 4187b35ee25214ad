//! The pool as an I/O process uses it: a lane of its own for replies, a thread
//! that receives them and runs the completions, and `submit`, which never waits
//! for PHP (a full queue socket parks the job here until the socket has room).

use super::board::{self, Board};
use super::job::{self, ERROR};
use super::wire::{self, BUFFERED, CHUNK_DATA, END, FAIL, HEAD, STREAMED, WHOLE};
use super::Pool;
use crate::backends::embedded::executor;
use crate::backends::embedded::respond::Respond;
use crate::backends::embedded::Job;
use crate::http::body::{self, BodySender, TrySend};
use crate::http::{Body, Response};
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::*};
use std::sync::Arc;

/// A job sent and not answered yet.
enum Pending {
    /// No reply yet.
    Waiting(Box<dyn Respond>, String),
    /// A buffered body arriving in chunks.
    Buffering(Box<dyn Respond>, Response, Vec<u8>),
    /// A streamed body: chunks go to the client as they come.
    Streaming(BodySender),
}

/// A job message waiting for room in the queue socket.
type Parked = (Vec<u8>, Option<File>);

pub struct Client {
    lane: usize,
    /// This process's pid, the high half of every job id (a lane's next owner
    /// ignores replies meant for the previous one).
    pid: u32,
    seq: AtomicU32,
    pending: Mutex<HashMap<u64, Pending>>,
    parked: Mutex<VecDeque<Parked>>,
    /// Wakes the reply thread when a job is parked.
    unpark: OwnedFd,
    /// Jobs whose bodies are copied to a file for the runner, one at a time, by
    /// the body thread (large bodies are rare; copying must not hold up an I/O
    /// thread).
    bodies: Mutex<std::sync::mpsc::Sender<(Job, u64)>>,
    /// The host receives replies on its own thread (`drive`): the reply thread
    /// only sends parked jobs then.
    driven: AtomicBool,
    /// Held while replies are received and handled, so that the chunks of a
    /// stream are handled in order whichever thread receives them.
    receiving: Mutex<Vec<u8>>,
}

impl Client {
    /// Claims a free lane and starts the reply thread.
    pub fn start(pool: &'static Pool) -> Result<Arc<Client>, String> {
        let me = std::process::id() as i32;
        let board = &pool.board;
        let lane = (0..board.lanes)
            .find(|&i| {
                let owner = board.lane(i);
                let cur = owner.load(SeqCst);
                (cur == 0 || cur == me || !alive(cur))
                    && owner.compare_exchange(cur, me, SeqCst, SeqCst).is_ok()
            })
            .ok_or_else(|| {
                format!(
                    "all {} reply lanes of the PHP runner pool are taken: this process cannot use PHP. Fewer worker processes, or [php.pool] enabled = false",
                    board.lanes
                )
            })?;
        publish_identity(board);
        pool.nudge_manager();
        let unpark = super::eventfd().map_err(|e| format!("eventfd: {e}"))?;
        let (bodies, jobs) = std::sync::mpsc::channel::<(Job, u64)>();
        let client = Arc::new(Client {
            lane,
            pid: me as u32,
            seq: AtomicU32::new(0),
            pending: Mutex::new(HashMap::new()),
            parked: Mutex::new(VecDeque::new()),
            unpark,
            bodies: Mutex::new(bodies),
            driven: AtomicBool::new(false),
            receiving: Mutex::new(Vec::new()),
        });
        let c = client.clone();
        std::thread::Builder::new()
            .name("php-body".into())
            .spawn(move || {
                crate::backends::sigprof::set_blocked(true);
                for (job, id) in jobs {
                    c.send_spooled(pool, job, id);
                }
            })
            .map_err(|e| format!("cannot start the PHP body thread: {e}"))?;
        let c = client.clone();
        std::thread::Builder::new()
            .name("php-replies".into())
            .spawn(move || {
                crate::backends::sigprof::set_blocked(true);
                c.receive(pool)
            })
            .map_err(|e| format!("cannot start the PHP reply thread: {e}"))?;
        Ok(client)
    }

    pub fn submit(&self, pool: &'static Pool, mut job: Job) {
        let header = pool.board.header();
        let Some(respond) = job.complete.take() else {
            return;
        };
        if header.queued.load(Relaxed) >= pool.settings.queue_size as i64 {
            header.rejected.fetch_add(1, Relaxed);
            tracing::error!(
                uri = %job.log_uri,
                "{} PHP requests already wait for a runner ({sec} queue_size = {}, all {} runners busy): answered 503. Raise {sec} max_runners if the machine has memory for more, or queue_size",
                pool.settings.queue_size, pool.settings.queue_size, pool.settings.max_runners,
                sec = super::section(&pool.name)
            );
            job.body.close();
            respond.complete(Response::error(
                503,
                Some("PHP is busy: too many requests wait for a runner"),
            ));
            return;
        }
        let id = (u64::from(self.pid) << 32) | u64::from(self.seq.fetch_add(1, Relaxed));
        self.pending
            .lock()
            .insert(id, Pending::Waiting(respond, job.log_uri.clone()));
        header.queued.fetch_add(1, SeqCst);
        if header.idle.load(SeqCst) <= 0 {
            pool.nudge_manager();
        }
        let len = job.body.len();
        if len as usize <= wire::INLINE_BODY {
            let mut bytes = vec![0; len as usize];
            let body = match read_all(&job, &mut bytes) {
                Ok(()) => Some(&bytes[..]),
                Err(e) => {
                    tracing::error!(uri = %job.log_uri, "reading the request body failed: {e}; PHP gets it empty");
                    Some(&[][..])
                }
            };
            let msg = job::encode(&job, id, self.lane as u32, board::now_ns(), body);
            job.body.close();
            self.send(pool, msg, None);
        } else {
            // Copying a large body to a file must not hold up this I/O thread.
            if let Err(e) = self.bodies.lock().send((job, id)) {
                tracing::error!("the PHP body thread has stopped; answering 503");
                drop(e);
                self.answer_now(pool, id, Response::error(503, None));
            }
        }
    }

    /// Copies a large body into a temporary file and queues the job with it.
    fn send_spooled(&self, pool: &Pool, job: Job, id: u64) {
        let len = job.body.len();
        let file = match spool(&job) {
            Ok(f) => f,
            Err(e) => {
                let dir = body::spill_dir().display().to_string();
                let multipart = job
                    .content_type
                    .as_ref()
                    .is_some_and(|t| t.to_bytes().starts_with(b"multipart/form-data"));
                let what = if multipart {
                    "an uploaded file"
                } else {
                    "the request body"
                };
                tracing::error!(
                    uri = %job.log_uri,
                    "PHP could not store {what} in its temporary directory {dir}: the request carries {}, {} ({e}). Free space there, or point [php.ini] upload_tmp_dir at a directory with room for post_max_size per worker; answered 500 without running the script",
                    executor::show_bytes(len),
                    executor::space(&dir)
                );
                job.body.close();
                self.answer_now(pool, id, Response::error(500, None));
                return;
            }
        };
        job.body.close();
        let msg = job::encode(&job, id, self.lane as u32, board::now_ns(), None);
        self.send(pool, msg, Some(file));
    }

    /// Completes `id` here, without a runner (it was counted as queued).
    fn answer_now(&self, pool: &Pool, id: u64, resp: Response) {
        pool.board.header().queued.fetch_sub(1, SeqCst);
        if let Some(Pending::Waiting(r, _)) = self.pending.lock().remove(&id) {
            r.complete(resp);
        }
    }

    fn send(&self, pool: &Pool, msg: Vec<u8>, file: Option<File>) {
        let mut parked = self.parked.lock();
        if parked.is_empty() {
            let fd = file.as_ref().map(|f| f.as_raw_fd());
            match wire::send(pool.submit.as_raw_fd(), &msg, fd, true) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    drop(parked);
                    tracing::error!("cannot queue a PHP request for the runner pool: {e}");
                    let id = u64::from_le_bytes(msg[..8].try_into().expect("8"));
                    self.answer_now(pool, id, Response::error(503, None));
                    return;
                }
            }
        }
        parked.push_back((msg, file));
        drop(parked);
        let one = 1u64.to_ne_bytes();
        // SAFETY: an 8-byte write to our eventfd.
        unsafe {
            libc::write(
                self.unpark.as_raw_fd(),
                one.as_ptr() as *const libc::c_void,
                8,
            )
        };
    }

    /// Sends parked jobs while the queue socket has room.
    fn flush_parked(&self, pool: &Pool) {
        let mut parked = self.parked.lock();
        while let Some((msg, file)) = parked.front() {
            let fd = file.as_ref().map(|f| f.as_raw_fd());
            match wire::send(pool.submit.as_raw_fd(), msg, fd, true) {
                Ok(()) => {
                    parked.pop_front();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::error!("cannot queue a PHP request for the runner pool: {e}");
                    let (msg, _) = parked.pop_front().expect("front exists");
                    let id = u64::from_le_bytes(msg[..8].try_into().expect("8"));
                    drop(parked);
                    self.answer_now(pool, id, Response::error(503, None));
                    parked = self.parked.lock();
                }
            }
        }
    }

    /// The reply thread: receives replies on the lane and completes responses
    /// (unless the host drives them), and sends parked jobs when the queue
    /// socket has room again.
    fn receive(&self, pool: &Pool) {
        let lane = pool.lanes[self.lane].0.as_raw_fd();
        loop {
            let waiting = !self.parked.lock().is_empty();
            let driven = self.driven.load(Relaxed);
            let mut fds = [
                poll_fd(self.unpark.as_raw_fd(), libc::POLLIN),
                poll_fd(
                    pool.submit.as_raw_fd(),
                    if waiting { libc::POLLOUT } else { 0 },
                ),
                poll_fd(lane, libc::POLLIN),
            ];
            let n = if driven { 2 } else { 3 };
            // SAFETY: polls valid descriptors.
            if unsafe { libc::poll(fds.as_mut_ptr(), n, -1) } < 0 {
                continue;
            }
            if fds[0].revents != 0 {
                let mut v = [0u8; 8];
                // SAFETY: drains the eventfd's counter into a local.
                unsafe {
                    libc::read(
                        self.unpark.as_raw_fd(),
                        v.as_mut_ptr() as *mut libc::c_void,
                        8,
                    )
                };
            }
            if waiting || fds[0].revents != 0 {
                self.flush_parked(pool);
            }
            if !driven && fds[2].revents != 0 {
                if let Err(e) = self.drain(pool) {
                    tracing::error!("the PHP runner pool's reply lane failed: {e}");
                    return;
                }
            }
        }
    }

    /// Handles every reply waiting on the lane, on the calling thread.
    pub fn drain(&self, pool: &Pool) -> std::io::Result<()> {
        let lane = pool.lanes[self.lane].0.as_raw_fd();
        let mut buf = self.receiving.lock();
        while recv_nonblocking(lane, &mut buf)? {
            self.handle(pool, &buf);
        }
        Ok(())
    }

    /// The host receives replies itself from now on: it polls `lane_fd` and
    /// calls `drain` on its own thread when it is readable.
    pub fn drive(&self, pool: &Pool) -> RawFd {
        self.driven.store(true, SeqCst);
        // Wake the reply thread so that it stops watching the lane.
        let one = 1u64.to_ne_bytes();
        // SAFETY: an 8-byte write to our eventfd.
        unsafe {
            libc::write(
                self.unpark.as_raw_fd(),
                one.as_ptr() as *const libc::c_void,
                8,
            )
        };
        pool.lanes[self.lane].0.as_raw_fd()
    }

    fn handle(&self, pool: &Pool, msg: &[u8]) {
        let reply = match job::read_reply(msg) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("a malformed reply from a PHP runner: {e}");
                return;
            }
        };
        let mut pending = self.pending.lock();
        let Some(state) = pending.remove(&reply.id) else {
            return; // Not ours (a previous owner of the lane) or already answered.
        };
        match (reply.kind, state) {
            (HEAD, Pending::Waiting(respond, uri)) => {
                let mut resp = Response::new(reply.status);
                resp.headers = reply.headers;
                if reply.flags & WHOLE != 0 {
                    drop(pending);
                    let resp = if reply.flags & wire::EMPTY != 0 {
                        resp
                    } else {
                        resp.with_body(Body::Bytes(reply.data.to_vec()))
                    };
                    respond.complete(resp);
                } else if reply.flags & BUFFERED != 0 {
                    pending.insert(
                        reply.id,
                        Pending::Buffering(respond, resp, reply.data.to_vec()),
                    );
                } else if reply.flags & STREAMED != 0 {
                    let (tx, rx) = body::channel();
                    let ok = reply.data.is_empty()
                        || matches!(tx.try_send(reply.data.to_vec()), TrySend::Sent);
                    pending.insert(reply.id, Pending::Streaming(tx));
                    drop(pending);
                    respond.complete(resp.with_body(Body::Stream(rx)));
                    if !ok {
                        pool.board
                            .slot(reply.runner as usize)
                            .abort
                            .store(reply.id, SeqCst);
                    }
                } else {
                    tracing::error!(%uri, "a PHP runner sent a reply head of an unknown form");
                    drop(pending);
                    respond.complete(Response::error(502, None));
                }
            }
            (CHUNK_DATA, Pending::Buffering(r, resp, mut body)) => {
                body.extend_from_slice(reply.data);
                pending.insert(reply.id, Pending::Buffering(r, resp, body));
            }
            (CHUNK_DATA, Pending::Streaming(tx)) => {
                // Chunks of one job come in order from one runner. A slow
                // client's share goes to a temporary file; this thread (maybe the
                // host's event loop) never waits for the client.
                drop(pending);
                match tx.try_send(reply.data.to_vec()) {
                    TrySend::Sent => {
                        self.pending.lock().insert(reply.id, Pending::Streaming(tx));
                    }
                    TrySend::Gone => {
                        pool.board
                            .slot(reply.runner as usize)
                            .abort
                            .store(reply.id, SeqCst);
                        self.pending.lock().insert(reply.id, Pending::Streaming(tx));
                    }
                    TrySend::Full(_) => {
                        // The client is a whole temporary file (1 GiB) behind:
                        // the response ends here, and the script with it at its
                        // next output (connection_aborted()).
                        tracing::warn!(
                            "a client fell {} MiB behind a PHP response: the response is cut and the script told the client left",
                            body::FILE_LIMIT >> 20
                        );
                        pool.board
                            .slot(reply.runner as usize)
                            .abort
                            .store(reply.id, SeqCst);
                        tx.fail("the client fell too far behind the response".to_owned());
                    }
                }
            }
            (END, Pending::Buffering(r, resp, body)) => {
                drop(pending);
                r.complete(resp.with_body(Body::Bytes(body)));
            }
            (END, Pending::Streaming(tx)) => drop(tx),
            (FAIL | ERROR, Pending::Streaming(tx)) => {
                tx.fail("the PHP runner running this request stopped before its end".to_owned())
            }
            (FAIL | ERROR, Pending::Waiting(r, _) | Pending::Buffering(r, ..)) => {
                drop(pending);
                let status = if reply.kind == ERROR {
                    reply.status
                } else {
                    502
                };
                r.complete(Response::error(status, None));
            }
            (_, state) => {
                tracing::error!("a PHP runner's reply came out of order");
                pending.insert(reply.id, state);
            }
        }
    }
}

/// Whether process `pid` exists.
fn alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks.
    unsafe { libc::kill(pid, 0) == 0 || *libc::__errno_location() != libc::ESRCH }
}

/// Publishes the identity of the I/O processes (once): runners switch to it.
fn publish_identity(board: &Board) {
    let h = board.header();
    if h.ident.load(SeqCst) != 0 {
        return;
    }
    // SAFETY: plain identity queries into locals.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let mut groups = [0 as libc::gid_t; 32];
    let n = unsafe { libc::getgroups(32, groups.as_mut_ptr()) }.max(0) as usize;
    if h.ident.compare_exchange(0, 1, SeqCst, SeqCst).is_err() {
        return;
    }
    h.uid.store(uid, SeqCst);
    h.gid.store(gid, SeqCst);
    for (i, g) in groups[..n].iter().enumerate() {
        h.groups[i].store(*g, SeqCst);
    }
    h.ngroups.store(n as u32, SeqCst);
    h.ident.store(2, SeqCst);
}

fn poll_fd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// One reply if one is there: Ok(false) when none is.
fn recv_nonblocking(lane: RawFd, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    buf.clear();
    buf.reserve(wire::MAX_MESSAGE);
    // SAFETY: receives into the reserved capacity; the length is set from the result.
    let n = unsafe {
        libc::recv(
            lane,
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.capacity(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(false),
            _ => Err(e),
        };
    }
    // SAFETY: recv wrote n bytes.
    unsafe { buf.set_len(n as usize) };
    Ok(true)
}

fn read_all(job: &Job, buf: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        match job.body.read(&mut buf[filled..])? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => filled += n,
        }
    }
    Ok(())
}

/// Copies the body into a nameless temporary file, positioned at its start.
fn spool(job: &Job) -> std::io::Result<File> {
    use std::io::Write;
    let mut file = crate::http::request_body::spool_file(&body::spill_dir())?;
    let mut buf = vec![0; 256 * 1024];
    loop {
        match job.body.read(&mut buf)? {
            0 => break,
            n => file.write_all(&buf[..n])?,
        }
    }
    Ok(file)
}
