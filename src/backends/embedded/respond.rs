//! Where a PHP job's response goes. The SAPI callbacks produce a response the
//! same way wherever the script runs; a `Respond` delivers it: to the engine's
//! completion when PHP runs in this process, or to the I/O process that queued
//! the job when a pool runner runs it (`pool::runner`).

use crate::http::body::{self, BodySender};
use crate::http::{Body, Completion, Response};

/// Receives a job's response once: whole, or as a head followed by a stream.
pub trait Respond: Send {
    /// The whole response (head and body).
    fn complete(self: Box<Self>, resp: Response);
    /// The head now; the body follows through the sink, and ends when the sink
    /// is dropped. `head_only`: a HEAD request, whose body is never sent.
    fn stream(self: Box<Self>, resp: Response, head_only: bool) -> Box<dyn Sink>;
}

/// The body of a streamed response, chunk by chunk.
pub trait Sink: Send {
    /// Queues a chunk; false when the client has gone.
    fn send(&self, chunk: Vec<u8>) -> bool;
    /// Whether the client has gone (`connection_aborted()`).
    fn is_aborted(&self) -> bool;
}

/// A response for the engine's completion, in this process.
pub struct Local(pub Completion);

impl Respond for Local {
    fn complete(self: Box<Self>, resp: Response) {
        (self.0)(resp)
    }

    fn stream(self: Box<Self>, resp: Response, head_only: bool) -> Box<dyn Sink> {
        let (tx, rx) = body::channel();
        (self.0)(resp.with_body(if head_only {
            Body::Empty
        } else {
            Body::Stream(rx)
        }));
        Box::new(tx)
    }
}

impl Sink for BodySender {
    fn send(&self, chunk: Vec<u8>) -> bool {
        BodySender::send(self, chunk)
    }

    fn is_aborted(&self) -> bool {
        BodySender::is_aborted(self)
    }
}
