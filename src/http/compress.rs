//! On-the-fly compression of responses (`[backend.compression]`): the best of
//! zstd, br and gzip that the client's `Accept-Encoding` allows, for responses of
//! the configured text types, whichever backend produced them (embedded PHP,
//! PHP-FPM, the proxy, static files). The engine negotiates when a request
//! arrives (`Compression::negotiate`) and applies the decision where the response
//! leaves the backend (`Negotiated::apply`, in `backends::serve::Reply`), after
//! PHP's framing rules and X-Sendfile, before the metrics count it; so every host
//! (fe-php-host, the nginx module, C programs) sends the same bytes.
//!
//! The rules, as nginx's gzip module has them where it has them:
//!
//! - **Negotiation** (RFC 9110 §12.5.3): q-values, `q=0` refuses, `*` stands for
//!   codings not named, `x-gzip` is gzip; among the codings of the highest weight
//!   the server's order (`encodings`, by default zstd > br > gzip) decides. No
//!   `Accept-Encoding`: no compression.
//! - **`Vary: Accept-Encoding`** on every response of a listed type that could be
//!   compressed for some client (merged into an existing `Vary`), compressed or
//!   not: a cache must not hand one client's coding to another.
//! - **Never compressed**: HEAD, 1xx, 204, 206 and 304 responses, requests with
//!   `Range`, responses that have a `Content-Encoding` already (a precompressed
//!   static sidecar, a script's `ob_gzhandler`, an upstream's own compression),
//!   `Cache-Control: no-transform`, types not listed (so images, fonts, archives
//!   keep their zero-copy `sendfile` path), bodies known to be shorter than
//!   `min_length`.
//! - **Headers**: `Content-Encoding` is set; a strong `ETag` becomes weak
//!   (`W/"…"`, the bytes differ but the meaning is the same); `Last-Modified`
//!   stays; `Accept-Ranges` goes (ranges of a coded body are not offered);
//!   `Content-Length` is the compressed length for a body compressed at once and
//!   goes for one compressed as it streams. A 304 whose request validated the
//!   weakened tag gets it weakened too.
//! - **Bodies**: up to `WHOLE_LIMIT` in memory or in a file, compressed at once
//!   (and sent as they were if that saves nothing); larger ones and streams are
//!   compressed as the host reads them (`body::Pull`), on the host's thread, a
//!   step at a time, so memory stays bounded and nothing runs ahead of the
//!   client. For a streamed body the encoder is flushed (gzip: sync flush, br and
//!   zstd: flush) whenever its producer has nothing more queued: a PHP `flush()`
//!   still reaches the client at once, decodable.

use crate::config::CompressionConfig;
use crate::http::body::{BodyStream, Notify, Pull, ReadOutcome};
use crate::http::{Body, Request, Response};
use parking_lot::Mutex;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Bodies up to this size are compressed at once and sent with their exact
/// length; larger ones are compressed as the host reads them.
const WHOLE_LIMIT: u64 = 256 << 10;
/// Uncompressed bytes taken from a body per step.
const STEP: usize = 32 << 10;
/// Brotli's and zstd's largest window (512 KiB, ngx_brotli's default): each
/// compressed stream then holds a few MiB at most, and clients need no more.
const WINDOW_LOG: u32 = 19;

/// A content coding fe-php compresses with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Zstd,
    Brotli,
    Gzip,
}

impl Coding {
    /// The name in `Accept-Encoding` and `Content-Encoding`.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Zstd => "zstd",
            Coding::Brotli => "br",
            Coding::Gzip => "gzip",
        }
    }

    pub fn from_token(name: &str) -> Option<Coding> {
        match name {
            "zstd" => Some(Coding::Zstd),
            "br" => Some(Coding::Brotli),
            "gzip" => Some(Coding::Gzip),
            _ => None,
        }
    }
}

/// A request's `Accept-Encoding` (every line of it): the codings it names with
/// their weights in thousandths, and the weight of `*`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AcceptEncoding {
    codings: Vec<(String, u16)>,
    any: Option<u16>,
}

impl AcceptEncoding {
    /// The request's header lines, in order.
    pub fn of(req: &Request<'_>) -> AcceptEncoding {
        let mut ae = AcceptEncoding::default();
        for (name, value) in &req.headers {
            if name.eq_ignore_ascii_case(b"accept-encoding") {
                ae.add(&String::from_utf8_lossy(value));
            }
        }
        ae
    }

    #[cfg(test)]
    pub fn parse(value: &str) -> AcceptEncoding {
        let mut ae = AcceptEncoding::default();
        ae.add(value);
        ae
    }

    fn add(&mut self, value: &str) {
        for item in value.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            if name.is_empty() {
                continue;
            }
            // A weight that is not a qvalue refuses the coding.
            let q = parts
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    k.trim().eq_ignore_ascii_case("q").then(|| v.trim())
                })
                .next()
                .map_or(Some(1000), parse_qvalue)
                .unwrap_or(0);
            if name == "*" {
                self.any.get_or_insert(q);
            } else if !self.codings.iter().any(|(n, _)| *n == name) {
                self.codings.push((name, q));
            }
        }
    }

    /// The weight the client gives `coding` (0: not acceptable); gzip is also
    /// named `x-gzip`.
    pub fn weight(&self, coding: &str) -> u16 {
        self.codings
            .iter()
            .find(|(n, _)| n == coding || (coding == "gzip" && n == "x-gzip"))
            .map(|&(_, q)| q)
            .or(self.any)
            .unwrap_or(0)
    }

    /// Of `offered` (items and their coding, in the server's order of
    /// preference), the one the client weighs most, the earlier of equal ones;
    /// None when the client accepts none of them.
    pub fn best<'a, T>(&self, offered: impl IntoIterator<Item = (T, &'a str)>) -> Option<T> {
        let mut best: Option<(T, u16)> = None;
        for (item, coding) in offered {
            let q = self.weight(coding);
            if q > 0 && best.as_ref().is_none_or(|(_, b)| q > *b) {
                best = Some((item, q));
            }
        }
        best.map(|(item, _)| item)
    }
}

/// `1`, `1.000`, `0`, `0.5`, `0.125` in thousandths; None for anything else.
fn parse_qvalue(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_value = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    match int {
        "0" => Some(frac_value),
        "1" if frac_value == 0 => Some(1000),
        _ => None,
    }
}

/// `[backend.compression]`, ready to use.
#[derive(Debug)]
pub struct Compression {
    codings: Vec<Coding>,
    types: Vec<String>,
    min_length: u64,
    levels: Levels,
}

#[derive(Debug, Clone, Copy)]
struct Levels {
    gzip: u32,
    brotli: u32,
    zstd: i32,
}

impl Compression {
    /// The validated settings; None when compression is off.
    pub fn new(config: &CompressionConfig) -> Option<Arc<Compression>> {
        if !config.enable {
            return None;
        }
        Some(Arc::new(Compression {
            codings: config
                .encodings
                .iter()
                .filter_map(|c| Coding::from_token(c))
                .collect(),
            types: config
                .types
                .iter()
                .map(|t| t.to_ascii_lowercase())
                .collect(),
            min_length: config.min_length.0,
            levels: Levels {
                gzip: config.gzip_level,
                brotli: config.brotli_level,
                zstd: config.zstd_level,
            },
        }))
    }

    /// What the response to `req` may be compressed with, and what of the request
    /// the decision needs later.
    pub fn negotiate(self: &Arc<Self>, req: &Request<'_>) -> Negotiated {
        let accept = AcceptEncoding::of(req);
        Negotiated {
            coding: accept.best(self.codings.iter().map(|&c| (c, c.token()))),
            settings: self.clone(),
            head: req.is_head(),
            range: req.header("range").is_some(),
            if_none_match: req.header("if-none-match").map(<[u8]>::to_vec),
        }
    }

    /// Whether `media_type` (lowercase, no parameters) is listed.
    fn lists(&self, media_type: &str) -> bool {
        self.types.iter().any(|t| match t.strip_suffix("/*") {
            Some(top) => media_type
                .strip_prefix(top)
                .is_some_and(|rest| rest.starts_with('/')),
            None => t == media_type,
        })
    }
}

/// The compression decision for one request, applied to its response.
pub struct Negotiated {
    settings: Arc<Compression>,
    /// The coding to use; None: the client accepts none of those offered.
    coding: Option<Coding>,
    head: bool,
    range: bool,
    if_none_match: Option<Vec<u8>>,
}

impl Negotiated {
    /// `resp` as it goes to the client: compressed when everything allows it,
    /// with `Vary: Accept-Encoding` when it could have been.
    pub fn apply(&self, mut resp: Response) -> Response {
        let status = resp.status;
        if status < 200 || status == 204 {
            return resp;
        }
        if status == 304 {
            self.not_modified(&mut resp);
            return resp;
        }
        let listed = media_type(&resp).is_some_and(|t| self.settings.lists(&t));
        if !listed || resp.get_header("content-encoding").is_some() || no_transform(&resp) {
            return resp;
        }
        add_vary(&mut resp);
        let Some(coding) = self.coding else {
            return resp;
        };
        if self.head || self.range || status == 206 {
            return resp;
        }
        let known = match &resp.body {
            Body::Empty => return resp,
            Body::Stream(_) => declared_length(&resp),
            body => body.len(),
        };
        if known.is_some_and(|n| n < self.settings.min_length) {
            return resp;
        }
        self.compress(resp, coding)
    }

    /// A 304 that validated the tag a compressed response had (`W/"x"` for a
    /// strong `"x"`) carries that weak tag, so the cache keeps what it holds.
    fn not_modified(&self, resp: &mut Response) {
        let Some(inm) = self.if_none_match.as_deref() else {
            return;
        };
        let inm = String::from_utf8_lossy(inm);
        let Some(etag) = resp
            .headers
            .iter_mut()
            .find(|(n, _)| n.eq_ignore_ascii_case("etag"))
        else {
            return;
        };
        let tag = String::from_utf8_lossy(&etag.1).trim().to_owned();
        if !tag.starts_with('"') {
            return;
        }
        let weak = format!("W/{tag}");
        let tags: Vec<&str> = inm.split(',').map(str::trim).collect();
        if tags.contains(&weak.as_str()) && !tags.contains(&tag.as_str()) {
            etag.1 = weak.into_bytes();
            add_vary(resp);
        }
    }

    /// Compresses `resp`'s body with `coding` and says so in its headers; the
    /// response as it was when compressing it at once saves nothing or fails.
    fn compress(&self, mut resp: Response, coding: Coding) -> Response {
        let levels = self.settings.levels;
        let body = std::mem::take(&mut resp.body);
        let (body, whole) = match body {
            Body::Bytes(b) if b.len() as u64 <= WHOLE_LIMIT => {
                match encode_whole(&b, coding, levels) {
                    Ok(z) if z.len() < b.len() => (Body::Bytes(z), true),
                    _ => return resp.with_body(Body::Bytes(b)),
                }
            }
            Body::File { file, offset, len } if len <= WHOLE_LIMIT => {
                let mut data = vec![0; len as usize];
                let encoded = file
                    .read_exact_at(&mut data, offset)
                    .and_then(|()| encode_whole(&data, coding, levels));
                match encoded {
                    Ok(z) if z.len() < data.len() => (Body::Bytes(z), true),
                    _ => return resp.with_body(Body::File { file, offset, len }),
                }
            }
            Body::Bytes(b) => (streaming(Source::Bytes(b), coding, levels), false),
            Body::File { file, offset, len } => (
                streaming(Source::File { file, offset, len }, coding, levels),
                false,
            ),
            Body::Stream(s) => (streaming(Source::Stream(s), coding, levels), false),
            Body::Empty => return resp,
        };
        resp.headers.retain(|(n, _)| {
            !n.eq_ignore_ascii_case("content-length") && !n.eq_ignore_ascii_case("accept-ranges")
        });
        for (name, value) in &mut resp.headers {
            if name.eq_ignore_ascii_case("etag") && value.first() == Some(&b'"') {
                value.splice(0..0, *b"W/");
            }
        }
        resp.push_header("Content-Encoding", coding.token());
        if whole {
            let len = body.len().unwrap_or(0);
            resp.push_header("Content-Length", len.to_string());
        }
        resp.with_body(body)
    }
}

/// The response's media type, lowercase, without parameters.
fn media_type(resp: &Response) -> Option<String> {
    let v = resp.get_header("content-type")?;
    let v = std::str::from_utf8(v).ok()?;
    let t = v.split(';').next()?.trim().to_ascii_lowercase();
    (!t.is_empty()).then_some(t)
}

/// `Cache-Control: no-transform` in any of the response's lines.
fn no_transform(resp: &Response) -> bool {
    resp.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("cache-control"))
        .flat_map(|(_, v)| v.split(|&b| b == b','))
        .any(|d| d.trim_ascii().eq_ignore_ascii_case(b"no-transform"))
}

/// A streamed body's `Content-Length`, when its response declared one.
fn declared_length(resp: &Response) -> Option<u64> {
    std::str::from_utf8(resp.get_header("content-length")?)
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Adds `Accept-Encoding` to the response's `Vary` (to its first line, or a line
/// of its own), unless it is there already or `Vary: *` says everything.
fn add_vary(resp: &mut Response) {
    let mut first = None;
    for (i, (name, value)) in resp.headers.iter().enumerate() {
        if !name.eq_ignore_ascii_case("vary") {
            continue;
        }
        let named = value
            .split(|&b| b == b',')
            .map(<[u8]>::trim_ascii)
            .any(|f| f == b"*" || f.eq_ignore_ascii_case(b"accept-encoding"));
        if named {
            return;
        }
        first.get_or_insert(i);
    }
    match first {
        Some(i) if !resp.headers[i].1.trim_ascii().is_empty() => {
            resp.headers[i].1.extend_from_slice(b", Accept-Encoding")
        }
        Some(i) => resp.headers[i].1 = b"Accept-Encoding".to_vec(),
        None => resp.push_header("Vary", "Accept-Encoding"),
    }
}

/// `data` compressed whole with `coding`.
fn encode_whole(data: &[u8], coding: Coding, levels: Levels) -> io::Result<Vec<u8>> {
    let mut enc = Encoder::new(coding, levels, Some(data.len() as u64))?;
    enc.write(data)?;
    enc.finish()
}

/// One coding's encoder, writing into a buffer the caller empties (`take`).
enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    /// An encoder at the configured level; `size`, the exact input length when
    /// known, lets brotli and zstd size their windows (and their memory) to it.
    fn new(coding: Coding, levels: Levels, size: Option<u64>) -> io::Result<Encoder> {
        // The window that holds the whole input, within [10, WINDOW_LOG].
        let window = size.map_or(WINDOW_LOG, |n| {
            (u64::BITS - n.saturating_sub(1).leading_zeros()).clamp(10, WINDOW_LOG)
        });
        Ok(match coding {
            Coding::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(levels.gzip),
            )),
            Coding::Brotli => Encoder::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                STEP,
                levels.brotli,
                window,
            ))),
            Coding::Zstd => {
                let mut enc = zstd::stream::write::Encoder::new(Vec::new(), levels.zstd)?;
                enc.window_log(window)?;
                if size.is_some() {
                    enc.set_pledged_src_size(size)?;
                }
                Encoder::Zstd(enc)
            }
        })
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.write_all(data),
            Encoder::Brotli(e) => e.write_all(data),
            Encoder::Zstd(e) => e.write_all(data),
        }
    }

    /// Everything written so far becomes decodable output.
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.flush(),
            Encoder::Brotli(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }

    /// The rest of the output, with the coding's end.
    fn finish(self) -> io::Result<Vec<u8>> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Brotli(e) => Ok(e.into_inner()),
            Encoder::Zstd(e) => e.finish(),
        }
    }

    /// Moves the output produced so far to the end of `out`.
    fn take(&mut self, out: &mut Vec<u8>) {
        let buf = match self {
            Encoder::Gzip(e) => e.get_mut(),
            Encoder::Brotli(e) => e.get_mut(),
            Encoder::Zstd(e) => e.get_mut(),
        };
        if out.is_empty() {
            std::mem::swap(out, buf);
        } else {
            out.append(buf);
        }
    }
}

/// A body compressed as the host reads it.
fn streaming(source: Source, coding: Coding, levels: Levels) -> Body {
    match Encoder::new(coding, levels, None) {
        Ok(encoder) => Body::Stream(BodyStream::pulled(Box::new(Compressing {
            source,
            coding,
            state: Mutex::new(State {
                encoder: Some(encoder),
                pos: 0,
                input: Vec::new(),
                out: Vec::new(),
                out_pos: 0,
                unflushed: false,
                end: None,
            }),
        }))),
        Err(e) => {
            // Only an allocation in zstd can fail here: the body goes as it is.
            tracing::warn!(coding = coding.token(), error = %e, "cannot start compressing a response");
            source.into_body()
        }
    }
}

/// What a compressed stream reads from.
enum Source {
    Stream(BodyStream),
    Bytes(Vec<u8>),
    File { file: File, offset: u64, len: u64 },
}

impl Source {
    /// Reads from `*pos` (for bytes and files; a stream keeps its own place).
    fn read(&self, pos: &mut u64, buf: &mut [u8], wait: bool) -> ReadOutcome {
        match self {
            Source::Stream(s) if wait => s.read(buf),
            Source::Stream(s) => s.try_read(buf),
            Source::Bytes(b) => {
                let rest = &b[(*pos as usize).min(b.len())..];
                if rest.is_empty() {
                    return ReadOutcome::End;
                }
                let n = rest.len().min(buf.len());
                buf[..n].copy_from_slice(&rest[..n]);
                *pos += n as u64;
                ReadOutcome::Data(n)
            }
            Source::File { file, offset, len } => {
                let n = (len - *pos).min(buf.len() as u64) as usize;
                if n == 0 {
                    return ReadOutcome::End;
                }
                match file.read_at(&mut buf[..n], offset + *pos) {
                    Ok(0) => ReadOutcome::Failed("the file shrank while being sent".to_owned()),
                    Ok(n) => {
                        *pos += n as u64;
                        ReadOutcome::Data(n)
                    }
                    Err(e) => ReadOutcome::Failed(format!("reading the response's file: {e}")),
                }
            }
        }
    }

    fn into_body(self) -> Body {
        match self {
            Source::Stream(s) => Body::Stream(s),
            Source::Bytes(b) => Body::Bytes(b),
            Source::File { file, offset, len } => Body::File { file, offset, len },
        }
    }
}

/// `Pull` for a compressed body: each read takes what the source has, compresses
/// it, and hands the output on.
struct Compressing {
    source: Source,
    coding: Coding,
    state: Mutex<State>,
}

struct State {
    /// None once finished (or failed).
    encoder: Option<Encoder>,
    /// Where a bytes or file source is.
    pos: u64,
    /// Uncompressed input of one step (kept for the next).
    input: Vec<u8>,
    /// Compressed output not yet handed out, from `out_pos`.
    out: Vec<u8>,
    out_pos: usize,
    /// Input went in since the last flush.
    unflushed: bool,
    /// How the body ends, once all of `out` is handed out.
    end: Option<ReadOutcome>,
}

impl Pull for Compressing {
    fn pull(&self, buf: &mut [u8], wait: bool) -> ReadOutcome {
        if buf.is_empty() {
            return ReadOutcome::Data(0);
        }
        let mut guard = self.state.lock();
        let st = &mut *guard;
        loop {
            if st.out_pos < st.out.len() {
                let n = (st.out.len() - st.out_pos).min(buf.len());
                buf[..n].copy_from_slice(&st.out[st.out_pos..st.out_pos + n]);
                st.out_pos += n;
                if st.out_pos == st.out.len() {
                    st.out.clear();
                    st.out_pos = 0;
                }
                return ReadOutcome::Data(n);
            }
            if let Some(end) = &st.end {
                return end.clone();
            }
            let Some(encoder) = st.encoder.as_mut() else {
                return ReadOutcome::End;
            };
            st.input.resize(STEP, 0);
            // What the source has now; when it has nothing, the output so far goes
            // out (flushed) before waiting for more.
            let got = match self.source.read(&mut st.pos, &mut st.input, false) {
                ReadOutcome::Again if wait && !st.unflushed => {
                    self.source.read(&mut st.pos, &mut st.input, true)
                }
                got => got,
            };
            let done = match got {
                ReadOutcome::Data(n) => {
                    st.unflushed = true;
                    encoder.write(&st.input[..n])
                }
                ReadOutcome::Again if st.unflushed => {
                    st.unflushed = false;
                    encoder.flush()
                }
                ReadOutcome::Again => return ReadOutcome::Again,
                ReadOutcome::End => {
                    let encoder = st.encoder.take().expect("checked above");
                    encoder.finish().map(|tail| {
                        st.out.extend_from_slice(&tail);
                        st.end = Some(ReadOutcome::End);
                    })
                }
                ReadOutcome::Failed(e) => {
                    st.encoder = None;
                    st.end = Some(ReadOutcome::Failed(e));
                    Ok(())
                }
            };
            if let Some(encoder) = st.encoder.as_mut() {
                encoder.take(&mut st.out);
            }
            if let Err(e) = done {
                let msg = format!("compressing the response ({}): {e}", self.coding.token());
                tracing::error!("{msg}");
                st.encoder = None;
                st.end = Some(ReadOutcome::Failed(msg));
            }
        }
    }

    fn set_notify(&self, notify: Notify) {
        match &self.source {
            Source::Stream(s) => s.set_notify(notify),
            // Always readable.
            Source::Bytes(_) | Source::File { .. } => notify(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::body;
    use std::io::Read;

    fn settings(extra: &str) -> Arc<Compression> {
        let config: crate::config::Config =
            crate::config::Config::from_toml(&format!("[backend.compression]\n{extra}")).unwrap();
        Compression::new(&config.backend.compression).unwrap()
    }

    fn request<'a>(headers: &[(&'a str, &'a str)]) -> Request<'a> {
        let mut req = Request::get("/");
        req.headers = headers
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        req
    }

    fn decode(coding: &str, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match coding {
            "gzip" => {
                flate2::read::MultiGzDecoder::new(data)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            "br" => {
                brotli::Decompressor::new(data, 4096)
                    .read_to_end(&mut out)
                    .unwrap();
            }
            "zstd" => {
                zstd::stream::read::Decoder::new(data)
                    .unwrap()
                    .read_to_end(&mut out)
                    .unwrap();
            }
            other => panic!("{other}"),
        }
        out
    }

    fn html(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| format!("<p class=\"row\">row {i}</p>\n"))
            .collect::<String>()
            .into_bytes()
    }

    fn read_all(s: &BodyStream) -> (Vec<u8>, ReadOutcome) {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 7000];
        loop {
            match s.read(&mut buf) {
                ReadOutcome::Data(n) => out.extend_from_slice(&buf[..n]),
                other => return (out, other),
            }
        }
    }

    #[test]
    fn accept_encoding_weights() {
        let ae = AcceptEncoding::parse("gzip;q=0.5, br;q=1.0, zstd;q=0, *;q=0.1");
        assert_eq!(ae.weight("gzip"), 500);
        assert_eq!(ae.weight("br"), 1000);
        assert_eq!(ae.weight("zstd"), 0);
        assert_eq!(ae.weight("deflate"), 100);
        let offered = [(1, "zstd"), (2, "br"), (3, "gzip")];
        assert_eq!(ae.best(offered), Some(2));
        // Equal weights: the server's order.
        assert_eq!(
            AcceptEncoding::parse("gzip, br, zstd").best(offered),
            Some(1)
        );
        assert_eq!(AcceptEncoding::parse("gzip, br").best(offered), Some(2));
        assert_eq!(AcceptEncoding::parse("GZIP").best(offered), Some(3));
        assert_eq!(AcceptEncoding::parse("x-gzip").best(offered), Some(3));
        assert_eq!(AcceptEncoding::parse("*").best(offered), Some(1));
        assert_eq!(AcceptEncoding::parse("br;q=0, *").best(offered), Some(1));
        assert_eq!(AcceptEncoding::parse("zstd;q=0, *").best(offered), Some(2));
        assert_eq!(
            AcceptEncoding::parse("gzip;q=0.9, br;q=0.8").best(offered),
            Some(3)
        );
        assert_eq!(
            AcceptEncoding::parse("gzip; Q=0.001").best(offered),
            Some(3)
        );
        for none in [
            "",
            "identity",
            "gzip;q=0",
            "*;q=0",
            "gzip;q=0.000",
            "deflate",
        ] {
            assert_eq!(AcceptEncoding::parse(none).best(offered), None, "{none:?}");
        }
        // A weight that is no qvalue refuses.
        for bad in [
            "gzip;q=2",
            "gzip;q=1.5",
            "gzip;q=abc",
            "gzip;q=0.1234",
            "gzip;q=",
        ] {
            assert_eq!(AcceptEncoding::parse(bad).weight("gzip"), 0, "{bad}");
        }
        // Several lines add up.
        let req = request(&[("Accept-Encoding", "gzip;q=0.2"), ("accept-encoding", "br")]);
        assert_eq!(AcceptEncoding::of(&req).best(offered), Some(2));
    }

    fn response(ct: &str, body: Body) -> Response {
        let len = body.len();
        let mut r = Response::new(200)
            .header("Content-Type", ct)
            .header("ETag", "\"abc\"")
            .header("Accept-Ranges", "bytes")
            .header("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT");
        if let Some(n) = len {
            r.push_header("Content-Length", n.to_string());
        }
        r.with_body(body)
    }

    #[test]
    fn whole_bodies_are_compressed_with_the_negotiated_coding() {
        let c = settings("");
        let page = html(500);
        for (ae, coding) in [
            ("gzip", "gzip"),
            ("gzip, br", "br"),
            ("br, zstd, gzip", "zstd"),
        ] {
            let n = c.negotiate(&request(&[("Accept-Encoding", ae)]));
            let resp = n.apply(response(
                "text/html; charset=UTF-8",
                Body::Bytes(page.clone()),
            ));
            assert_eq!(resp.get_header("content-encoding"), Some(coding.as_bytes()));
            assert_eq!(resp.get_header("vary"), Some(&b"Accept-Encoding"[..]));
            assert_eq!(resp.get_header("etag"), Some(&b"W/\"abc\""[..]));
            assert!(resp.get_header("last-modified").is_some());
            assert!(resp.get_header("accept-ranges").is_none());
            let Body::Bytes(z) = &resp.body else { panic!() };
            let len = resp.get_header("content-length").unwrap();
            assert_eq!(len, z.len().to_string().as_bytes());
            assert!(z.len() < page.len() / 4, "{coding}: {}", z.len());
            assert_eq!(decode(coding, z), page);
        }
    }

    #[test]
    fn what_is_never_compressed() {
        let c = settings("");
        let page = html(500);
        let gzip = [("Accept-Encoding", "gzip")];
        // The coding stays what it was (none, or the response's own).
        let plain = |n: &Negotiated, resp: Response| {
            let before = resp.get_header("content-encoding").map(<[u8]>::to_vec);
            let r = n.apply(resp);
            assert_eq!(r.get_header("content-encoding").map(<[u8]>::to_vec), before);
            r
        };
        let n = c.negotiate(&request(&gzip));
        // A type not listed: untouched, no Vary.
        let r = plain(&n, response("image/png", Body::Bytes(page.clone())));
        assert!(r.get_header("vary").is_none());
        // Small: Vary, but as it is.
        let r = plain(
            &n,
            response("text/html", Body::Bytes(b"<p>hi</p>".to_vec())),
        );
        assert_eq!(r.get_header("vary"), Some(&b"Accept-Encoding"[..]));
        assert_eq!(r.get_header("etag"), Some(&b"\"abc\""[..]));
        // no-transform: untouched, no Vary.
        let r = plain(
            &n,
            response("text/html", Body::Bytes(page.clone()))
                .header("Cache-Control", "private, No-Transform"),
        );
        assert!(r.get_header("vary").is_none());
        // Already encoded.
        let r = plain(
            &n,
            response("text/html", Body::Bytes(page.clone())).header("Content-Encoding", "br"),
        );
        assert!(r.get_header("vary").is_none());
        // 206, a Range request, HEAD, 204: Vary where the type is listed, no coding.
        let mut partial = response("text/html", Body::Bytes(page.clone()));
        partial.status = 206;
        assert!(plain(&n, partial).get_header("vary").is_some());
        let ranged = c.negotiate(&request(&[
            ("Accept-Encoding", "gzip"),
            ("Range", "bytes=0-9"),
        ]));
        let r = plain(&ranged, response("text/html", Body::Bytes(page.clone())));
        assert_eq!(r.get_header("etag"), Some(&b"\"abc\""[..]));
        let mut head = request(&gzip);
        head.method = "HEAD";
        let r = plain(
            &c.negotiate(&head),
            response("text/html", Body::Bytes(page.clone())),
        );
        assert_eq!(
            r.get_header("content-length"),
            Some(page.len().to_string().as_bytes())
        );
        let mut empty = response("text/html", Body::Empty);
        empty.status = 204;
        assert!(plain(&n, empty).get_header("vary").is_none());
        // No Accept-Encoding: Vary, no coding.
        let r = plain(
            &c.negotiate(&request(&[])),
            response("text/html", Body::Bytes(page.clone())),
        );
        assert_eq!(r.get_header("vary"), Some(&b"Accept-Encoding"[..]));
        // Random bytes that do not shrink go as they are.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let noise: Vec<u8> = (0..4000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        let r = plain(&n, response("text/plain", Body::Bytes(noise.clone())));
        assert!(matches!(&r.body, Body::Bytes(b) if *b == noise));
        // Off: nothing at all.
        let config =
            crate::config::Config::from_toml("[backend.compression]\nenable = false").unwrap();
        assert!(Compression::new(&config.backend.compression).is_none());
    }

    #[test]
    fn vary_is_merged() {
        let c = settings("");
        let n = c.negotiate(&request(&[]));
        let r = n.apply(response("text/html", Body::Bytes(html(10))).header("Vary", "Cookie"));
        assert_eq!(r.get_header("vary"), Some(&b"Cookie, Accept-Encoding"[..]));
        for already in ["accept-encoding", "Cookie, Accept-Encoding", "*"] {
            let r = n.apply(response("text/html", Body::Bytes(html(10))).header("Vary", already));
            let all: Vec<_> = r
                .headers
                .iter()
                .filter(|(h, _)| h.eq_ignore_ascii_case("vary"))
                .collect();
            assert_eq!(all.len(), 1, "{already}");
            assert_eq!(all[0].1, already.as_bytes());
        }
    }

    #[test]
    fn types_min_length_and_levels_are_configurable() {
        let c = settings(
            "types = [\"text/*\"]\nmin_length = \"4K\"\ngzip_level = 9\nencodings = [\"gzip\"]",
        );
        let n = c.negotiate(&request(&[("Accept-Encoding", "br, gzip")]));
        let r = n.apply(response("text/x-custom", Body::Bytes(html(500))));
        assert_eq!(r.get_header("content-encoding"), Some(&b"gzip"[..]));
        let r = n.apply(response("application/json", Body::Bytes(html(500))));
        assert!(r.get_header("content-encoding").is_none());
        let r = n.apply(response("text/html", Body::Bytes(html(100))));
        assert!(html(100).len() < 4096 && r.get_header("content-encoding").is_none());
        // The declared length of a stream counts too.
        let (_tx, rx) = body::channel();
        let r = n.apply(
            Response::new(200)
                .header("Content-Type", "text/html")
                .header("Content-Length", "100")
                .with_body(Body::Stream(rx)),
        );
        assert!(r.get_header("content-encoding").is_none());
    }

    #[test]
    fn a_304_keeps_the_tag_the_client_validated() {
        let c = settings("");
        let not_modified = || Response::new(304).header("ETag", "\"abc\"");
        let n = c.negotiate(&request(&[
            ("Accept-Encoding", "gzip"),
            ("If-None-Match", "W/\"abc\""),
        ]));
        let r = n.apply(not_modified());
        assert_eq!(r.get_header("etag"), Some(&b"W/\"abc\""[..]));
        assert_eq!(r.get_header("vary"), Some(&b"Accept-Encoding"[..]));
        let n = c.negotiate(&request(&[
            ("Accept-Encoding", "gzip"),
            ("If-None-Match", "\"abc\""),
        ]));
        let r = n.apply(not_modified());
        assert_eq!(r.get_header("etag"), Some(&b"\"abc\""[..]));
        assert!(r.get_header("vary").is_none());
    }

    #[test]
    fn large_files_and_streams_are_compressed_as_they_are_read() {
        let c = settings("");
        let page = html(40_000);
        assert!(page.len() as u64 > WHOLE_LIMIT);
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"xxxx").unwrap();
        f.write_all(&page).unwrap();
        for coding in ["gzip", "br", "zstd"] {
            let n = c.negotiate(&request(&[("Accept-Encoding", coding)]));
            let file = f.try_clone().unwrap();
            let len = page.len() as u64;
            let r = n.apply(response(
                "text/css",
                Body::File {
                    file,
                    offset: 4,
                    len,
                },
            ));
            assert_eq!(r.get_header("content-encoding"), Some(coding.as_bytes()));
            assert!(r.get_header("content-length").is_none());
            let Body::Stream(s) = &r.body else {
                panic!("{:?}", r.body)
            };
            let (z, end) = read_all(s);
            assert_eq!(end, ReadOutcome::End);
            assert_eq!(decode(coding, &z), page, "{coding}");

            let r = n.apply(response("text/css", Body::Bytes(page.clone())));
            let Body::Stream(s) = &r.body else { panic!() };
            assert_eq!(decode(coding, &read_all(s).0), page);
        }
    }

    /// A chunk its producer delivered comes out decodable before the next one is
    /// produced: PHP's flush() reaches the client compressed.
    #[test]
    fn a_stream_is_flushed_whenever_its_producer_pauses() {
        let c = settings("");
        for coding in ["gzip", "br", "zstd"] {
            let n = c.negotiate(&request(&[("Accept-Encoding", coding)]));
            let (tx, rx) = body::channel();
            let r = n.apply(response("text/html", Body::Stream(rx)));
            assert_eq!(r.get_header("content-encoding"), Some(coding.as_bytes()));
            let Body::Stream(s) = &r.body else { panic!() };
            let mut buf = vec![0u8; 64 << 10];
            assert_eq!(s.try_read(&mut buf), ReadOutcome::Again);
            tx.send(b"<h1>first part</h1>\n".to_vec());
            let mut got = Vec::new();
            while let ReadOutcome::Data(n) = s.try_read(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
            // Decodable as far as it goes: a streaming decoder yields the chunk.
            let mut partial = Vec::new();
            match coding {
                "gzip" => {
                    let mut d = flate2::write::GzDecoder::new(Vec::new());
                    d.write_all(&got).unwrap();
                    d.flush().unwrap();
                    partial = d.get_ref().clone();
                }
                "br" => {
                    let mut d = brotli::DecompressorWriter::new(Vec::new(), 4096);
                    d.write_all(&got).unwrap();
                    d.flush().unwrap();
                    partial = d.get_ref().clone();
                }
                _ => {
                    let mut d = zstd::stream::write::Decoder::new(Vec::new()).unwrap();
                    d.write_all(&got).unwrap();
                    d.flush().unwrap();
                    partial.extend_from_slice(d.get_ref());
                }
            }
            assert_eq!(partial, b"<h1>first part</h1>\n", "{coding}");
            tx.send(b"<p>second</p>\n".to_vec());
            drop(tx);
            let (rest, end) = read_all(s);
            assert_eq!(end, ReadOutcome::End);
            got.extend_from_slice(&rest);
            assert_eq!(
                decode(coding, &got),
                b"<h1>first part</h1>\n<p>second</p>\n"
            );
        }
    }

    #[test]
    fn a_failed_stream_fails_compressed() {
        let c = settings("");
        let n = c.negotiate(&request(&[("Accept-Encoding", "gzip")]));
        let (tx, rx) = body::channel();
        let r = n.apply(response("text/html", Body::Stream(rx)));
        tx.send(html(10));
        tx.fail("the backend died".into());
        let Body::Stream(s) = &r.body else { panic!() };
        let (_, end) = read_all(s);
        assert_eq!(end, ReadOutcome::Failed("the backend died".into()));
    }
}
