//! Streamed response bodies: a producer thread pushes chunks, the host pulls them
//! either blocking (`read`) or event-driven (`try_read` + a notify callback).

use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::sync::Arc;

/// How many bytes a producer may queue before `send` waits for the reader.
const MAX_BUFFERED: usize = 1 << 20;

/// Called (from the producer's thread) whenever the reader may make progress.
pub type Notify = Box<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct State {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes already taken from the front chunk.
    front_offset: usize,
    buffered: usize,
    finished: bool,
    error: Option<String>,
    reader_gone: bool,
    notify: Option<Arc<Notify>>,
    /// Notify calls running right now (outside the lock); the reader's drop waits
    /// for them, so a callback never runs after its response is freed.
    notifying: usize,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

/// The reading end, owned by the response.
pub struct BodyStream {
    shared: Arc<Shared>,
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
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// This many bytes were copied (never 0).
    Data(usize),
    /// The body is complete.
    End,
    /// Nothing available yet (non-blocking reads only).
    Again,
    /// The producer failed; the body is truncated.
    Failed(String),
}

/// What `BodySender::try_send` did.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySend {
    Sent,
    /// The reader is behind: the chunk is given back; `send` it from a thread
    /// that may wait.
    Full(Vec<u8>),
    /// The reader has gone (the client left): stop producing.
    Gone,
}

/// A connected pair.
pub fn channel() -> (BodySender, BodyStream) {
    let shared = Arc::new(Shared::default());
    (
        BodySender {
            shared: shared.clone(),
        },
        BodyStream { shared },
    )
}

impl BodySender {
    /// Queues a chunk, waiting while the reader is more than `MAX_BUFFERED` behind.
    /// Returns false when the reader has gone (the client left): stop producing.
    pub fn send(&self, chunk: Vec<u8>) -> bool {
        if chunk.is_empty() {
            return !self.is_aborted();
        }
        let notify;
        {
            let mut st = self.shared.state.lock();
            while st.buffered >= MAX_BUFFERED && !st.reader_gone {
                self.shared.changed.wait(&mut st);
            }
            if st.reader_gone {
                return false;
            }
            st.buffered += chunk.len();
            st.chunks.push_back(chunk);
            notify = begin_notify(&mut st);
        }
        self.shared.changed.notify_all();
        self.shared.run_notify(notify);
        true
    }

    /// Queues a chunk if the reader is less than `MAX_BUFFERED` behind, without
    /// waiting: for producers on an event loop, which call `send` off the loop
    /// (e.g. `spawn_blocking`) only when this says `Full`.
    pub fn try_send(&self, chunk: Vec<u8>) -> TrySend {
        if chunk.is_empty() {
            return if self.is_aborted() {
                TrySend::Gone
            } else {
                TrySend::Sent
            };
        }
        let notify;
        {
            let mut st = self.shared.state.lock();
            if st.reader_gone {
                return TrySend::Gone;
            }
            if st.buffered >= MAX_BUFFERED {
                return TrySend::Full(chunk);
            }
            st.buffered += chunk.len();
            st.chunks.push_back(chunk);
            notify = begin_notify(&mut st);
        }
        self.shared.changed.notify_all();
        self.shared.run_notify(notify);
        TrySend::Sent
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
    /// Blocks until data, the end, or a failure.
    pub fn read(&self, buf: &mut [u8]) -> ReadOutcome {
        let mut st = self.shared.state.lock();
        loop {
            match self.take(&mut st, buf) {
                ReadOutcome::Again => self.shared.changed.wait(&mut st),
                other => return other,
            }
        }
    }

    /// Never blocks: `Again` when nothing is queued yet.
    pub fn try_read(&self, buf: &mut [u8]) -> ReadOutcome {
        let mut st = self.shared.state.lock();
        self.take(&mut st, buf)
    }

    /// Registers a callback run on the producer's thread whenever `try_read` may
    /// make progress. It runs once at once if data or the end is already there.
    /// Dropping the stream waits for a callback that is running, so the callback
    /// must not drop the stream itself.
    pub fn set_notify(&self, notify: Notify) {
        let notify = Arc::new(notify);
        let ready = {
            let mut st = self.shared.state.lock();
            st.notify = Some(notify.clone());
            !st.chunks.is_empty() || st.finished
        };
        if ready {
            notify();
        }
    }

    fn take(&self, st: &mut State, buf: &mut [u8]) -> ReadOutcome {
        if buf.is_empty() {
            return ReadOutcome::Data(0);
        }
        let mut copied = 0;
        while copied < buf.len() {
            let Some(front) = st.chunks.front() else {
                break;
            };
            let avail = &front[st.front_offset..];
            let n = avail.len().min(buf.len() - copied);
            buf[copied..copied + n].copy_from_slice(&avail[..n]);
            copied += n;
            st.front_offset += n;
            st.buffered -= n;
            if st.front_offset == front.len() {
                st.chunks.pop_front();
                st.front_offset = 0;
            }
        }
        if copied > 0 {
            self.shared.changed.notify_all();
            return ReadOutcome::Data(copied);
        }
        if st.finished {
            return match &st.error {
                Some(e) => ReadOutcome::Failed(e.clone()),
                None => ReadOutcome::End,
            };
        }
        ReadOutcome::Again
    }
}

impl Drop for BodyStream {
    fn drop(&mut self) {
        let mut st = self.shared.state.lock();
        st.reader_gone = true;
        st.notify = None;
        st.chunks.clear();
        st.buffered = 0;
        self.shared.changed.notify_all();
        // A notify already taken may still be running on the producer's thread.
        while st.notifying > 0 {
            self.shared.changed.wait(&mut st);
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
        let (tx, rx) = channel();
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
        assert_eq!(sent, MAX_BUFFERED / chunk.len());
        let mut buf = vec![0u8; 300 * 1024];
        assert!(matches!(rx.try_read(&mut buf), ReadOutcome::Data(_)));
        assert_eq!(tx.try_send(vec![1]), TrySend::Sent);
        drop(rx);
        assert_eq!(tx.try_send(vec![1]), TrySend::Gone);
    }

    #[test]
    fn dropped_reader_stops_the_producer() {
        let (tx, rx) = channel();
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
        assert!(sent <= MAX_BUFFERED / (64 * 1024) + 1, "{sent}");
    }
}
