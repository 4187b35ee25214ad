//! A job as it crosses to a runner, and a reply as it comes back.

use super::wire::{Reader, Writer};
use crate::backends::embedded::Job;
use crate::backends::php::cgi::Pairs;
use crate::http::request_body::RequestBody;
use crate::http::Response;
use std::ffi::CString;
use std::fs::File;
use std::io;

/// Reply kinds beyond `wire`'s: the manager answers for a runner (status code).
pub const ERROR: u8 = 5;

/// Where the body is, as the message says.
const BODY_INLINE: u8 = 1;
const BODY_FILE: u8 = 2;

/// Encodes `job` for a runner. `body`: the inline body bytes, or None when it
/// travels as a file descriptor.
pub fn encode(job: &Job, id: u64, lane: u32, submitted_ns: u64, body: Option<&[u8]>) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(
        512 + job.vars.raw().0.len() + job.headers.raw().0.len() + body.map_or(0, |b| b.len()),
    ));
    w.u64(id).u32(lane).u64(submitted_ns);
    w.u8(job.head as u8)
        .u32(job.proto_num as u32)
        .u64(job.content_length as u64)
        .u64(job.body.len());
    for s in [
        &job.method,
        &job.query,
        &job.request_uri,
        &job.script_filename,
    ] {
        w.bytes(s.as_bytes());
    }
    for s in [&job.content_type, &job.cookie, &job.authorization] {
        w.opt(s.as_ref().map(|s| s.as_bytes()));
    }
    w.bytes(job.log_uri.as_bytes());
    for pairs in [&job.vars, &job.headers] {
        w.u32(pairs.iter().count() as u32);
        for (n, v) in pairs.iter() {
            w.bytes(n).bytes(v);
        }
    }
    match body {
        Some(b) => w.u8(BODY_INLINE).bytes(b),
        None => w.u8(BODY_FILE),
    };
    w.0
}

/// What a runner learns from a job message besides the job.
pub struct Envelope {
    pub id: u64,
    pub lane: u32,
    pub submitted_ns: u64,
}

fn cstring(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "NUL in a job string"))
}

/// Decodes a job message (and the body file that came with it).
pub fn decode(msg: &[u8], file: Option<File>) -> io::Result<(Envelope, Job)> {
    let mut r = Reader(msg);
    let env = Envelope {
        id: r.u64()?,
        lane: r.u32()?,
        submitted_ns: r.u64()?,
    };
    let head = r.u8()? != 0;
    let proto_num = r.u32()? as i32;
    let content_length = r.u64()? as i64;
    let body_len = r.u64()?;
    let method = cstring(r.bytes()?)?;
    let query = cstring(r.bytes()?)?;
    let request_uri = cstring(r.bytes()?)?;
    let script_filename = cstring(r.bytes()?)?;
    let content_type = r.opt()?.map(cstring).transpose()?;
    let cookie = r.opt()?.map(cstring).transpose()?;
    let authorization = r.opt()?.map(cstring).transpose()?;
    let log_uri = String::from_utf8_lossy(r.bytes()?).into_owned();
    let mut pairs = || -> io::Result<Pairs> {
        let n = r.u32()? as usize;
        let mut p = Pairs::with_capacity(n * 32, n.min(1024));
        for _ in 0..n {
            let (name, value) = (r.bytes()?, r.bytes()?);
            p.push_with(
                |b| b.extend_from_slice(name),
                |b| b.extend_from_slice(value),
            );
        }
        Ok(p)
    };
    let vars = pairs()?;
    let headers = pairs()?;
    let body = match (r.u8()?, file) {
        (BODY_INLINE, _) => RequestBody::memory(r.bytes()?.to_vec()),
        (BODY_FILE, Some(f)) => RequestBody::file(f, body_len),
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a job's body file did not arrive",
            ))
        }
    };
    Ok((
        env,
        Job {
            method,
            query,
            request_uri,
            script_filename,
            content_type,
            content_length,
            cookie,
            authorization,
            proto_num,
            head,
            vars,
            headers,
            body,
            log_uri,
            complete: None,
        },
    ))
}

/// The fixed start of every reply: kind, flags, status, runner, job id.
pub fn reply(kind: u8, flags: u8, status: u16, runner: u32, id: u64) -> Writer {
    let mut w = Writer(Vec::with_capacity(64));
    w.u8(kind).u8(flags).u16(status).u32(runner).u64(id);
    w
}

/// A HEAD reply: the response's status and headers, then `body` (all of it or
/// its first part, per `flags`).
pub fn head(resp: &Response, flags: u8, runner: u32, id: u64, body: &[u8]) -> Vec<u8> {
    let mut w = reply(super::wire::HEAD, flags, resp.status, runner, id);
    w.0.reserve(body.len() + 32 * resp.headers.len());
    w.u32(resp.headers.len() as u32);
    for (n, v) in &resp.headers {
        w.bytes(n.as_bytes()).bytes(v);
    }
    w.0.extend_from_slice(body);
    w.0
}

/// A reply as the I/O side reads it.
pub struct Reply<'a> {
    pub kind: u8,
    pub flags: u8,
    pub status: u16,
    pub runner: u32,
    pub id: u64,
    /// HEAD: the headers; others: empty.
    pub headers: Vec<(String, Vec<u8>)>,
    /// HEAD and CHUNK: body bytes.
    pub data: &'a [u8],
}

pub fn read_reply(msg: &[u8]) -> io::Result<Reply<'_>> {
    let mut r = Reader(msg);
    let (kind, flags, status, runner, id) = (r.u8()?, r.u8()?, r.u16()?, r.u32()?, r.u64()?);
    let mut headers = Vec::new();
    if kind == super::wire::HEAD {
        let n = r.u32()?;
        for _ in 0..n {
            let name = String::from_utf8_lossy(r.bytes()?).into_owned();
            headers.push((name, r.bytes()?.to_vec()));
        }
    }
    Ok(Reply {
        kind,
        flags,
        status,
        runner,
        id,
        headers,
        data: r.rest(),
    })
}

/// The request a worker script runs in (its own, outside any job): a GET of the
/// script itself, with `$_SERVER['FRANKENPHP_WORKER']` and `FEPHP_WORKER` set, as
/// worker-aware runtimes (Symfony Runtime, Laravel Octane) look for them.
pub fn worker_boot(script: &super::WorkerScript) -> Job {
    let path = script.path.as_os_str().as_encoded_bytes();
    let name = format!("/{}", script.relative.display());
    let mut vars = Pairs::with_capacity(512, 12);
    for (k, v) in [
        ("SCRIPT_FILENAME", path),
        ("SCRIPT_NAME", name.as_bytes()),
        ("PHP_SELF", name.as_bytes()),
        ("DOCUMENT_ROOT", script.root.as_os_str().as_encoded_bytes()),
        ("REQUEST_METHOD", b"GET"),
        ("REQUEST_URI", name.as_bytes()),
        ("QUERY_STRING", b""),
        ("GATEWAY_INTERFACE", b"CGI/1.1"),
        ("SERVER_SOFTWARE", b"fe-php"),
        ("FRANKENPHP_WORKER", b"1"),
        ("FEPHP_WORKER", b"1"),
    ] {
        vars.push(k, v);
    }
    let c = |b: &[u8]| CString::new(b.to_vec()).unwrap_or_default();
    Job {
        method: c(b"GET"),
        query: c(b""),
        request_uri: c(name.as_bytes()),
        script_filename: c(path),
        content_type: None,
        content_length: -1,
        cookie: None,
        authorization: None,
        proto_num: 1100,
        head: false,
        vars,
        headers: Pairs::default(),
        body: RequestBody::memory(Vec::new()),
        log_uri: format!("worker script {}", script.path.display()),
        complete: None,
    }
}
