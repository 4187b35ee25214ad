//! Streamed response bodies: a producer thread pushes chunks, the host pulls them
//! either blocking (`read`) or event-driven (`try_read` + a notify callback).
//!
//! A producer does not wait for a slow client. Past `MEMORY_LIMIT` queued bytes the
//! rest goes to an unnamed temporary file, as nginx's `fastcgi_buffers` and
//! `proxy_buffers` do, so the PHP thread (or a php-fpm child, or an upstream
//! connection) moves on while the client reads at its own pace. The spill belongs
//! to the body, not to whoever produces it. Only when that file reaches
//! `FILE_LIMIT`, or no file can be used, does `send` wait for the reader.
//!
//! A stream may also be held to the `Content-Length` its response declared: the
//! reader never gets more than that, and a body that ends short of it fails, so
//! the host closes the connection instead of leaving the client waiting for bytes
//! that will never come (or reading the next response as the rest of this one).

use parking_lot::{Condvar, Mutex, MutexGuard};
use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes a stream holds in memory before the rest goes to a temporary file.
pub const MEMORY_LIMIT: usize = 1 << 20;
/// Largest temporary file of one stream; past it the producer waits for the reader.
pub const FILE_LIMIT: u64 = 1 << 30;

/// Where spilled bodies go (`set_spill_dir`); None: the system's temporary directory.
static SPILL_DIR: Mutex<Option<PathBuf>> = parking_lot::const_mutex(None);

/// Sets the directory for the temporary files of streams (None: `TMPDIR`, else
/// `/tmp`). The engine passes PHP's `upload_tmp_dir`, where PHP keeps its own.
pub fn set_spill_dir(dir: Option<PathBuf>) {
    *SPILL_DIR.lock() = dir;
}

pub fn spill_dir() -> PathBuf {
    SPILL_DIR.lock().clone().unwrap_or_else(std::env::temp_dir)
}

/// A temporary file without a name: it disappears with its last descriptor, so
/// neither a crash nor a killed worker leaves it behind.
fn spill_file(dir: &std::path::Path) -> io::Result<File> {
    let mut open = std::fs::OpenOptions::new();
    open.read(true).write(true).mode(0o600);
    match open.clone().custom_flags(libc::O_TMPFILE).open(dir) {
        Ok(f) => return Ok(f),
        // The filesystem has no O_TMPFILE: a fresh name, unlinked at once.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR)) => {}
        Err(e) => return Err(e),
    }
    static SEQ: AtomicU64 = AtomicU64::new(0);
    loop {
        let path = dir.join(format!(
            ".fephp-body-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        match open.clone().create_new(true).open(&path) {
            Ok(f) => {
                std::fs::remove_file(&path)?;
                return Ok(f);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Called (from the producer's thread) whenever the reader may make progress.
pub type Notify = Box<dyn Fn() + Send + Sync>;

/// The part of a body that went to a temporary file: bytes `read..written`.
struct Spill {
    /// Shared so that reads and writes run outside the lock.
    file: Arc<File>,
    read: u64,
    written: u64,
}

/// The length the response head declared, and how much of it the reader has had.
struct Declared {
    len: u64,
    taken: u64,
}

#[derive(Default)]
struct State {
    /// In memory, always ahead of what is in the file.
    chunks: VecDeque<Vec<u8>>,
    /// Bytes already taken from the front chunk.
    front_offset: usize,
    /// Bytes in `chunks`.
    buffered: usize,
    spill: Option<Spill>,
    /// No file could be made or written: the producer waits for the reader instead.
    spill_broken: bool,
    /// The producer is writing to the file (outside the lock).
    writing: bool,
    /// The reader is reading from the file (outside the lock).
    reading: bool,
    /// Reading the file failed: the body cannot go on.
    read_error: Option<String>,
    /// `FILE_LIMIT` was reached (logged once).
    file_full_logged: bool,
    declared: Option<Declared>,
    /// Bytes the producer has queued in all.
    produced: u64,
    /// Production went past the declared length (logged once).
    excess_logged: bool,
    /// What the body belongs to (a script's name), for log lines.
    origin: String,
    finished: bool,
    error: Option<String>,
    reader_gone: bool,
    notify: Option<Arc<Notify>>,
    /// Notify calls running right now (outside the lock); the reader's drop waits
    /// for them, so a callback never runs after its response is freed.
    notifying: usize,
}

impl State {
    /// Bytes in the file the reader has not taken yet (or is taking right now).
    fn in_file(&self) -> bool {
        self.reading || self.spill.as_ref().is_some_and(|s| s.read < s.written)
    }

    /// Warns once when the producer has gone past the declared length. (A host
    /// may stop reading at that length, so the reader cannot be the one to see it.)
    fn check_excess(&mut self) {
        let Some(d) = &self.declared else {
            return;
        };
        if self.produced > d.len && !self.excess_logged {
            self.excess_logged = true;
            tracing::warn!(
                target: "php",
                script = %self.origin,
                "the script sent more than its declared Content-Length ({}); the rest is not sent",
                d.len
            );
        }
    }

    /// Something queued that the reader has not had.
    fn pending(&self) -> bool {
        !self.chunks.is_empty() || self.in_file() || self.writing
    }
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    memory_limit: usize,
    file_limit: u64,
}

/// The reading end, owned by the response.
pub struct BodyStream {
    inner: Inner,
}

enum Inner {
    /// The reading end of a `channel`.
    Channel(Arc<Shared>),
    /// Made as it is read (`BodyStream::pulled`).
    Pulled(Box<dyn Pull>),
}

/// A body made by its reader's own reads, from another body: a transformation
/// (compression) that runs on the reader's thread, as the reader takes the
/// result, so it needs no thread of its own and never runs ahead of the client.
pub trait Pull: Send + Sync {
    /// As `BodyStream::read` when `wait`, else as `BodyStream::try_read`.
    fn pull(&self, buf: &mut [u8], wait: bool) -> ReadOutcome;
    /// As `BodyStream::set_notify`.
    fn set_notify(&self, notify: Notify);
}

/// The writing end, owned by whatever produces the body.
pub struct BodySender {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for BodyStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BodyStream")
    }
}

/// What a read produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOutcome {
    /// This many bytes were copied (never 0).
    Data(usize),
    /// The body is complete.
    End,
    /// Nothing available yet (non-blocking reads only).
    Again,
    /// The producer failed, or the body ended short of its declared length: the
    /// body is truncated and the connection must not be reused.
    Failed(String),
}

/// What `BodySender::try_send` did.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySend {
    Sent,
    /// Neither memory nor the temporary file can take the chunk now (the file is
    /// full or unusable): it is given back; `send` it from a thread that may wait.
    Full(Vec<u8>),
    /// The reader has gone (the client left): stop producing.
    Gone,
}

/// A connected pair.
pub fn channel() -> (BodySender, BodyStream) {
    channel_with(MEMORY_LIMIT, FILE_LIMIT)
}

fn channel_with(memory_limit: usize, file_limit: u64) -> (BodySender, BodyStream) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        changed: Condvar::new(),
        memory_limit,
        file_limit,
    });
    (
        BodySender {
            shared: shared.clone(),
        },
        BodyStream {
            inner: Inner::Channel(shared),
        },
    )
}

impl BodySender {
    /// Queues a chunk: in memory, or in the temporary file past `MEMORY_LIMIT`;
    /// waits for the reader only when neither can take it. Returns false when the
    /// reader has gone (the client left): stop producing.
    pub fn send(&self, chunk: Vec<u8>) -> bool {
        match self.queue(chunk, true) {
            TrySend::Sent => true,
            TrySend::Gone | TrySend::Full(_) => false,
        }
    }

    /// Queues a chunk like `send`, but never waits: for producers on an event
    /// loop, which call `send` off the loop (e.g. `spawn_blocking`) only when this
    /// says `Full`.
    pub fn try_send(&self, chunk: Vec<u8>) -> TrySend {
        self.queue(chunk, false)
    }

    fn queue(&self, chunk: Vec<u8>, wait: bool) -> TrySend {
        let shared = &*self.shared;
        let mut st = shared.state.lock();
        if chunk.is_empty() {
            return if st.reader_gone {
                TrySend::Gone
            } else {
                TrySend::Sent
            };
        }
        let len = chunk.len() as u64;
        loop {
            if st.reader_gone {
                return TrySend::Gone;
            }
            // Memory while the file holds nothing unread, so order is kept.
            if !st.in_file() && !st.writing && st.buffered < shared.memory_limit {
                if let Some(s) = &mut st.spill {
                    // Drained: the file is reused from its start.
                    s.read = 0;
                    s.written = 0;
                }
                st.buffered += chunk.len();
                st.produced += len;
                st.check_excess();
                st.chunks.push_back(chunk);
                let notify = begin_notify(&mut st);
                drop(st);
                shared.changed.notify_all();
                shared.run_notify(notify);
                return TrySend::Sent;
            }
            let written = st.spill.as_ref().map_or(0, |s| s.written);
            if !st.writing && !st.spill_broken && written + len <= shared.file_limit {
                st.writing = true;
                let file = st.spill.as_ref().map(|s| s.file.clone());
                let origin = st.origin.clone();
                let outcome = MutexGuard::unlocked(&mut st, || {
                    let dir = spill_dir();
                    let file = match file {
                        Some(f) => f,
                        None => Arc::new(spill_file(&dir).map_err(|e| (dir.clone(), e))?),
                    };
                    file.write_all_at(&chunk, written)
                        .map_err(|e| (dir.clone(), e))?;
                    Ok(file)
                });
                st.writing = false;
                match outcome {
                    Ok(_) if st.reader_gone => {
                        st.spill = None;
                        return TrySend::Gone;
                    }
                    Ok(file) => {
                        let s = st.spill.get_or_insert(Spill {
                            file,
                            read: 0,
                            written: 0,
                        });
                        s.written = written + len;
                        st.produced += len;
                        st.check_excess();
                        let notify = begin_notify(&mut st);
                        drop(st);
                        shared.changed.notify_all();
                        shared.run_notify(notify);
                        return TrySend::Sent;
                    }
                    Err((dir, e)) => {
                        tracing::warn!(
                            origin = %origin,
                            "a response for a slow client cannot go to a temporary file in {}: {e}; its producer now waits for the client",
                            dir.display()
                        );
                        st.spill_broken = true;
                        shared.changed.notify_all();
                        continue;
                    }
                }
            }
            if !st.spill_broken
                && !st.writing
                && written + len > shared.file_limit
                && !st.file_full_logged
            {
                st.file_full_logged = true;
                tracing::warn!(
                    origin = %st.origin,
                    "a response for a slow client filled its temporary file ({} MiB): its producer now waits for the client",
                    shared.file_limit >> 20
                );
            }
            if !wait {
                return TrySend::Full(chunk);
            }
            shared.changed.wait(&mut st);
        }
    }

    /// True once the reader has been dropped.
    pub fn is_aborted(&self) -> bool {
        self.shared.state.lock().reader_gone
    }

    /// Marks the body failed (e.g. the backend died mid-response).
    pub fn fail(self, message: String) {
        self.shared.state.lock().error = Some(message);
        // Drop marks it finished and wakes the reader.
    }
}

impl Drop for BodySender {
    fn drop(&mut self) {
        let notify = {
            let mut st = self.shared.state.lock();
            st.finished = true;
            begin_notify(&mut st)
        };
        self.shared.changed.notify_all();
        self.shared.run_notify(notify);
    }
}

/// Takes the notify callback for a call outside the lock, counting it as running.
fn begin_notify(st: &mut State) -> Option<Arc<Notify>> {
    let n = st.notify.clone();
    if n.is_some() {
        st.notifying += 1;
    }
    n
}

impl Shared {
    fn run_notify(&self, notify: Option<Arc<Notify>>) {
        if let Some(n) = notify {
            n();
            let mut st = self.state.lock();
            st.notifying -= 1;
            drop(st);
            self.changed.notify_all();
        }
    }
}

impl BodyStream {
    /// A body whose reads are `source`'s (see `Pull`).
    pub fn pulled(source: Box<dyn Pull>) -> BodyStream {
        BodyStream {
            inner: Inner::Pulled(source),
        }
    }

    /// Blocks until data, the end, or a failure.
    pub fn read(&self, buf: &mut [u8]) -> ReadOutcome {
        let shared = match &self.inner {
            Inner::Channel(shared) => shared,
            Inner::Pulled(p) => return p.pull(buf, true),
        };
        let mut st = shared.state.lock();
        loop {
            match shared.take(&mut st, buf) {
                ReadOutcome::Again => shared.changed.wait(&mut st),
                other => return other,
            }
        }
    }

    /// Never blocks on the producer: `Again` when nothing is queued yet.
    pub fn try_read(&self, buf: &mut [u8]) -> ReadOutcome {
        match &self.inner {
            Inner::Channel(shared) => shared.take(&mut shared.state.lock(), buf),
            Inner::Pulled(p) => p.pull(buf, false),
        }
    }

    /// Names what the body belongs to (a script), for log lines about it.
    pub fn set_origin(&self, origin: String) {
        if let Inner::Channel(shared) = &self.inner {
            shared.state.lock().origin = origin;
        }
    }

    /// Holds the body to the length its response head declared: reads stop there
    /// (anything more is dropped, with a warning), and a body that ends sooner
    /// fails instead of ending. (A pulled body is held by its source.)
    pub fn expect_len(&self, len: u64) {
        if let Inner::Channel(shared) = &self.inner {
            let mut st = shared.state.lock();
            st.declared = Some(Declared { len, taken: 0 });
            st.check_excess();
        }
    }

    /// Registers a callback run on the producer's thread whenever `try_read` may
    /// make progress. It runs once at once if data or the end is already there.
    /// Dropping the stream waits for a callback that is running, so the callback
    /// must not drop the stream itself.
    pub fn set_notify(&self, notify: Notify) {
        let shared = match &self.inner {
            Inner::Channel(shared) => shared,
            Inner::Pulled(p) => return p.set_notify(notify),
        };
        let notify = Arc::new(notify);
        let ready = {
            let mut st = shared.state.lock();
            st.notify = Some(notify.clone());
            st.pending() || st.finished
        };
        if ready {
            notify();
        }
    }

    #[cfg(test)]
    fn shared(&self) -> &Shared {
        match &self.inner {
            Inner::Channel(shared) => shared,
            Inner::Pulled(_) => panic!("a pulled body has no channel"),
        }
    }
}

impl Shared {
    fn take(&self, st: &mut MutexGuard<'_, State>, buf: &mut [u8]) -> ReadOutcome {
        if buf.is_empty() {
            return ReadOutcome::Data(0);
        }
        if let Some(e) = &st.read_error {
            return ReadOutcome::Failed(e.clone());
        }
        let room = match &st.declared {
            Some(d) => d.len - d.taken,
            None => u64::MAX,
        };
        if room == 0 {
            // The declared length is complete; it ends when the producer does, or
            // at once if the producer goes beyond it.
            if st.pending() {
                if !st.reader_gone {
                    // Nothing more will be read: the producer stops.
                    st.reader_gone = true;
                    st.chunks.clear();
                    st.buffered = 0;
                    self.changed.notify_all();
                }
                return ReadOutcome::End;
            }
            return if st.finished || st.reader_gone {
                ReadOutcome::End
            } else {
                ReadOutcome::Again
            };
        }
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let buf = &mut buf[..want];
        let mut copied = 0;
        let mem: &mut State = st;
        while copied < buf.len() {
            let Some(front) = mem.chunks.front() else {
                break;
            };
            let avail = &front[mem.front_offset..];
            let n = avail.len().min(buf.len() - copied);
            buf[copied..copied + n].copy_from_slice(&avail[..n]);
            copied += n;
            mem.front_offset += n;
            mem.buffered -= n;
            if mem.front_offset == front.len() {
                mem.chunks.pop_front();
                mem.front_offset = 0;
            }
        }
        // The file holds what came after the memory, so only once that is empty.
        if copied == 0 && !st.reading {
            if let Some(s) = &st.spill {
                if s.read < s.written {
                    let n = (s.written - s.read).min(buf.len() as u64) as usize;
                    let (file, at) = (s.file.clone(), s.read);
                    st.reading = true;
                    let r = MutexGuard::unlocked(st, || file.read_exact_at(&mut buf[..n], at));
                    st.reading = false;
                    match r {
                        Ok(()) => {
                            if let Some(s) = &mut st.spill {
                                s.read += n as u64;
                            }
                            copied = n;
                        }
                        Err(e) => {
                            let msg = format!("reading a response's temporary file: {e}");
                            tracing::error!(origin = %st.origin, "{msg}");
                            st.read_error = Some(msg.clone());
                            st.reader_gone = true;
                            self.changed.notify_all();
                            return ReadOutcome::Failed(msg);
                        }
                    }
                }
            }
        }
        if copied > 0 {
            if let Some(d) = &mut st.declared {
                d.taken += copied as u64;
            }
            self.changed.notify_all();
            return ReadOutcome::Data(copied);
        }
        if st.finished && !st.pending() {
            if let Some(e) = &st.error {
                return ReadOutcome::Failed(e.clone());
            }
            if let Some(d) = &st.declared {
                let msg = format!(
                    "the script's body ended {} bytes short of its declared Content-Length ({}); the connection is closed",
                    d.len - d.taken,
                    d.len
                );
                tracing::warn!(target: "php", script = %st.origin, "{msg}");
                st.read_error = Some(msg.clone());
                return ReadOutcome::Failed(msg);
            }
            return ReadOutcome::End;
        }
        ReadOutcome::Again
    }
}

impl Drop for BodyStream {
    fn drop(&mut self) {
        let Inner::Channel(shared) = &self.inner else {
            return;
        };
        let mut st = shared.state.lock();
        st.reader_gone = true;
        st.notify = None;
        st.chunks.clear();
        st.buffered = 0;
        // The producer may hold its own handle on the file while writing.
        st.spill = None;
        shared.changed.notify_all();
        // A notify already taken may still be running on the producer's thread.
        while st.notifying > 0 {
            shared.changed.wait(&mut st);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn blocking_read_gets_everything_in_order() {
        let (tx, rx) = channel();
        let producer = std::thread::spawn(move || {
            for i in 0..100u8 {
                assert!(tx.send(vec![i; 50_000]));
            }
        });
        let mut got = Vec::new();
        let mut buf = [0u8; 7000];
        loop {
            match rx.read(&mut buf) {
                ReadOutcome::Data(n) => got.extend_from_slice(&buf[..n]),
                ReadOutcome::End => break,
                other => panic!("{other:?}"),
            }
        }
        producer.join().unwrap();
        assert_eq!(got.len(), 100 * 50_000);
        assert!(got
            .chunks(50_000)
            .enumerate()
            .all(|(i, c)| c.iter().all(|&b| b == i as u8)));
    }

    #[test]
    fn try_read_and_notify() {
        let (tx, rx) = channel();
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        rx.set_notify(Box::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
        }));
        let mut buf = [0u8; 4];
        assert_eq!(rx.try_read(&mut buf), ReadOutcome::Again);
        tx.send(b"hello".to_vec());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(rx.try_read(&mut buf), ReadOutcome::Data(4));
        assert_eq!(rx.try_read(&mut buf), ReadOutcome::Data(1));
        assert_eq!(&buf[..1], b"o");
        tx.fail("backend died".into());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(
            rx.try_read(&mut buf),
            ReadOutcome::Failed("backend died".into())
        );
    }

    #[test]
    fn try_send_never_waits() {
        // No room for a file: memory only, as when no temporary file can be made.
        let (tx, rx) = channel_with(MEMORY_LIMIT, 0);
        let chunk = vec![7u8; 256 * 1024];
        let mut sent = 0;
        loop {
            match tx.try_send(chunk.clone()) {
                TrySend::Sent => sent += 1,
                TrySend::Full(back) => {
                    assert_eq!(back.len(), chunk.len());
                    break;
                }
                TrySend::Gone => panic!("reader is alive"),
            }
        }
        assert_eq!(sent, MEMORY_LIMIT / chunk.len());
        let mut buf = vec![0u8; 300 * 1024];
        assert!(matches!(rx.try_read(&mut buf), ReadOutcome::Data(_)));
        assert_eq!(tx.try_send(vec![1]), TrySend::Sent);
        drop(rx);
        assert_eq!(tx.try_send(vec![1]), TrySend::Gone);
    }

    #[test]
    fn dropped_reader_stops_the_producer() {
        let (tx, rx) = channel_with(MEMORY_LIMIT, 0);
        let producer = std::thread::spawn(move || {
            let mut sent = 0;
            while tx.send(vec![0; 64 * 1024]) {
                sent += 1;
            }
            sent
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(rx);
        let sent = producer.join().unwrap();
        // Backpressure held it near the buffer limit.
        assert!(sent <= MEMORY_LIMIT / (64 * 1024) + 1, "{sent}");
    }

    /// Reads everything, checking that chunk `i` is `len` bytes of `i as u8`.
    fn read_all(rx: &BodyStream) -> (Vec<u8>, ReadOutcome) {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 10_000];
        loop {
            match rx.read(&mut buf) {
                ReadOutcome::Data(n) => got.extend_from_slice(&buf[..n]),
                other => return (got, other),
            }
        }
    }

    #[test]
    fn a_reader_that_does_not_read_never_holds_the_producer() {
        let (tx, rx) = channel_with(64 * 1024, 1 << 30);
        // 8 MiB while nobody reads: memory takes 64 KiB, the file the rest.
        for i in 0..160u8 {
            assert_eq!(tx.try_send(vec![i; 50_000]), TrySend::Sent);
        }
        {
            let st = rx.shared().state.lock();
            assert!(st.buffered <= 64 * 1024 + 50_000, "{}", st.buffered);
            assert!(st.spill.as_ref().unwrap().written > 7_000_000);
        }
        // Partly drained, the file still comes before any new memory chunk.
        let mut buf = vec![0u8; 3_000_000];
        let mut got = Vec::new();
        while got.len() < 3_000_000 {
            let ReadOutcome::Data(n) = rx.try_read(&mut buf[..3_000_000 - got.len()]) else {
                panic!()
            };
            got.extend_from_slice(&buf[..n]);
        }
        for i in 160..200u8 {
            assert!(tx.send(vec![i; 50_000]));
        }
        drop(tx);
        let (rest, end) = read_all(&rx);
        assert_eq!(end, ReadOutcome::End);
        got.extend_from_slice(&rest);
        assert_eq!(got.len(), 200 * 50_000);
        assert!(got
            .chunks(50_000)
            .enumerate()
            .all(|(i, c)| c.iter().all(|&b| b == i as u8)));
    }

    #[test]
    fn a_drained_file_is_reused_and_a_full_one_waits() {
        let (tx, rx) = channel_with(1000, 5000);
        assert_eq!(tx.try_send(vec![1; 1000]), TrySend::Sent); // memory
        assert_eq!(tx.try_send(vec![2; 3000]), TrySend::Sent); // file 0..3000
        assert_eq!(tx.try_send(vec![3; 2000]), TrySend::Sent); // file ..5000
        assert_eq!(tx.try_send(vec![4; 10]), TrySend::Full(vec![4; 10]));
        let mut buf = vec![0u8; 6000];
        let mut got = Vec::new();
        while got.len() < 6000 {
            let ReadOutcome::Data(n) = rx.try_read(&mut buf) else {
                panic!()
            };
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(&got[999..1001], &[1, 2]);
        assert_eq!(&got[3999..4001], &[2, 3]);
        // Drained: memory again, then the file from its start.
        assert_eq!(tx.try_send(vec![5; 1000]), TrySend::Sent);
        assert_eq!(tx.try_send(vec![6; 4000]), TrySend::Sent);
        assert_eq!(
            rx.shared().state.lock().spill.as_ref().unwrap().written,
            4000
        );
        drop(tx);
        let (rest, end) = read_all(&rx);
        assert_eq!(end, ReadOutcome::End);
        assert_eq!(rest.len(), 5000);
        assert_eq!(&rest[999..1001], &[5, 6]);
    }

    #[test]
    fn a_declared_length_is_held_to() {
        // Exactly as declared: the end.
        let (tx, rx) = channel_with(100, 1000);
        rx.expect_len(300);
        tx.send(vec![1; 200]);
        tx.send(vec![2; 100]);
        drop(tx);
        let (got, end) = read_all(&rx);
        assert_eq!((got.len(), end), (300, ReadOutcome::End));

        // Short: a failure, so the host closes the connection.
        let (tx, rx) = channel_with(100, 1000);
        rx.expect_len(1000);
        tx.send(vec![1; 5]);
        drop(tx);
        let (got, end) = read_all(&rx);
        assert_eq!(got.len(), 5);
        assert!(matches!(end, ReadOutcome::Failed(m) if m.contains("995 bytes short")));

        // Long: exactly the declared bytes, then the end; the producer is stopped.
        let (tx, rx) = channel_with(100, 1000);
        rx.expect_len(5);
        tx.send(b"hello".to_vec());
        tx.send(b"HTTP/1.1 200 OK\r\n".to_vec());
        let (got, end) = read_all(&rx);
        assert_eq!((&got[..], end), (&b"hello"[..], ReadOutcome::End));
        assert!(!tx.send(b"more".to_vec()));
    }
}
