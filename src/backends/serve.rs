//! The one shape every backend has for the engine: `Backend::serve` takes a
//! request the router sent it, the routed target, and the `Reply` it answers
//! through exactly once — at once (`Reply::now`) or later from another thread
//! (`Reply::later`, which keeps the request counted in flight until then). The
//! response is compressed there (`http::compress`) when the engine negotiated it.

use crate::http::compress::Negotiated;
use crate::http::{Completion, Request, Response};
use crate::metrics::{MeteredCompletion, Metrics, RequestSeries, Source};
use std::sync::Arc;
use std::time::Instant;

/// A request's target once routed.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// Decoded, dot segments resolved, slashes merged: what rules matched.
    pub normalized: &'a str,
    /// The path as the client sent it (percent-encoded, origin form).
    pub raw_path: &'a str,
    /// The raw query, without `?`.
    pub query: Option<&'a str>,
}

/// Where a backend's answer goes, counted in the metrics for the backend that
/// gives it.
pub struct Reply {
    metrics: Arc<Metrics>,
    started: Instant,
    complete: MeteredCompletion,
    /// Compression for the request's response (`[backend.compression]`).
    compress: Option<Negotiated>,
    /// The labelled series (named rule, PHP pool) the answer is recorded in.
    series: RequestSeries,
}

impl Reply {
    pub fn new(metrics: Arc<Metrics>, started: Instant, complete: MeteredCompletion) -> Reply {
        Reply {
            metrics,
            started,
            complete,
            compress: None,
            series: RequestSeries::default(),
        }
    }

    /// Records the answer in `series` too.
    pub fn recording(mut self, series: RequestSeries) -> Reply {
        self.series = series;
        self
    }

    /// Compresses the answer as `compress` decides (counted as sent).
    pub fn compressing(mut self, compress: Option<Negotiated>) -> Reply {
        self.compress = compress;
        self
    }

    /// Answers now with `resp`, produced by `source`.
    pub fn now(self, source: Source, resp: Response) {
        let resp = match &self.compress {
            Some(c) => c.apply(resp),
            None => resp,
        };
        let bytes = self
            .metrics
            .request_finished(source, self.started, false, &resp, self.series);
        (self.complete)(resp, bytes)
    }

    /// The completion for an answer that comes later: the request counts as in
    /// flight for `source` until it runs.
    pub fn later(self, source: Source) -> Completion {
        self.metrics.request_started(source);
        let Reply {
            metrics,
            started,
            complete,
            compress,
            series,
        } = self;
        Box::new(move |resp| {
            let resp = match &compress {
                Some(c) => c.apply(resp),
                None => resp,
            };
            let bytes = metrics.request_finished(source, started, true, &resp, series);
            complete(resp, bytes)
        })
    }
}

/// What every backend is to the engine.
pub trait Backend: Send + Sync {
    /// Serves `req`, which the router sent here, answering through `reply` exactly
    /// once. While the host has not read the body yet (`body_ready` false, the
    /// client sent `Expect: 100-continue`), a backend that would need it hands
    /// `reply` back unanswered, and the host calls again once it has the body.
    fn serve(
        &self,
        req: &Request<'_>,
        target: &Target<'_>,
        reply: Reply,
        body_ready: bool,
    ) -> Result<(), Reply>;
}
