//! The static backend: files from the document root with full HTTP caching semantics
//! (RFC 9110 preconditions and ranges), the seed's Cache-Control policy, and
//! precompressed `.br` / `.zst` / `.gz` sidecars (which on-the-fly compression,
//! `http::compress`, then leaves alone). Files never leave the root: every open goes
//! through the `DocRoot` (`openat2(RESOLVE_BENEATH)`), so `..` and symlinks pointing
//! outside are refused by the kernel.

mod validators;

pub use super::docroot::PathKind;
use super::docroot::{DocRoot, KIND_TTL};
use crate::backends::serve::{Backend, Reply, Target};
use crate::http::compress::AcceptEncoding;
use crate::http::{Body, Request, Response};
use crate::metrics::Source;
use parking_lot::Mutex;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use validators::*;
pub use validators::{parse_range, ByteRange, RangeOutcome};

/// Precompressed sidecars, by coding and file extension, in the order they are
/// preferred among those the client weighs the same: the smallest first (made
/// ahead of time at the highest levels, brotli usually beats zstd on text).
const SIDECARS: [(&str, &str); 3] = [("br", "br"), ("zstd", "zst"), ("gzip", "gz")];

/// Multipart range responses are built in memory up to this size; larger ones get
/// the whole file (a server may ignore Range).
const MAX_MULTIPART_BYTES: u64 = 16 << 20;

/// Characters escaped when a decoded path goes back into a `Location` header.
const PATH_ESCAPE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// Files up to this size are kept in memory (per process) once served, for as
/// long as the document root's path cache trusts what it saw (`KIND_TTL`).
const SMALL_FILE: u64 = 16 << 10;
/// Kept files per process (16 MiB at most); past it the cache starts over.
const SMALL_FILES: usize = 1024;

/// A document root and its settings.
#[derive(Debug)]
pub struct StaticFiles {
    docroot: DocRoot,
    index_files: Vec<String>,
    /// Small files served in the last second, by path: a request for one needs
    /// no open, stat, read or close (the bytes go out from memory).
    small: Mutex<HashMap<String, Kept>>,
}

/// A small file's bytes and what the headers need of its metadata, as read at
/// `at`.
#[derive(Debug)]
struct Kept {
    at: Instant,
    meta: FileMeta,
    bytes: Arc<[u8]>,
}

/// What the headers need of a file's metadata.
#[derive(Debug, Clone, Copy)]
pub struct FileMeta {
    pub len: u64,
    pub modified: SystemTime,
    /// Seconds of the modification time (ETag).
    pub mtime: i64,
    pub is_file: bool,
    pub is_dir: bool,
}

impl FileMeta {
    pub fn of(m: &Metadata) -> FileMeta {
        FileMeta {
            len: m.len(),
            modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            mtime: m.mtime(),
            is_file: m.is_file(),
            is_dir: m.is_dir(),
        }
    }
}

/// Where a representation's bytes come from.
pub enum Content {
    /// The open file (hosts may sendfile it).
    File(File),
    /// A small file kept in memory.
    Bytes(Arc<[u8]>),
}

impl Content {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self {
            Content::File(f) => f.read_exact_at(buf, offset),
            Content::Bytes(b) => {
                let range = usize::try_from(offset)
                    .ok()
                    .and_then(|o| b.get(o..o.checked_add(buf.len())?))
                    .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
                buf.copy_from_slice(range);
                Ok(())
            }
        }
    }

    /// `len` bytes from `offset` as a response body.
    fn body(self, offset: u64, len: u64) -> Body {
        match self {
            Content::File(file) => Body::File { file, offset, len },
            Content::Bytes(b) => {
                let (o, l) = (offset as usize, len as usize);
                Body::Bytes(b.get(o..o + l).unwrap_or_default().to_vec())
            }
        }
    }
}

/// A file opened for serving, with what the headers need.
struct Opened {
    content: Content,
    meta: FileMeta,
    /// File name used for the content type and cache policy.
    name: String,
}

impl StaticFiles {
    /// Opens the root directory. Fails with a message naming the root.
    pub fn new(root: &Path, index_files: &[String]) -> io::Result<StaticFiles> {
        Ok(StaticFiles {
            docroot: DocRoot::new(root)?,
            index_files: index_files.to_vec(),
            small: Mutex::new(HashMap::new()),
        })
    }

    /// The directory files come from (and PHP scripts, for the PHP backends).
    pub fn docroot(&self) -> &DocRoot {
        &self.docroot
    }

    pub fn root(&self) -> &Path {
        self.docroot.root()
    }

    /// Whether the root is still a readable directory (for `/_health`).
    pub fn check(&self) -> Result<(), String> {
        self.docroot.check()
    }

    /// Serves a normalized `path`. `query` is the raw query, kept on redirects.
    /// HEAD gets what GET would, without a body: error pages and redirects too.
    pub fn serve(&self, req: &Request<'_>, path: &str, query: Option<&str>) -> Response {
        let resp = self.serve_get(req, path, query);
        if req.is_head() {
            resp.for_head()
        } else {
            resp
        }
    }

    fn serve_get(&self, req: &Request<'_>, path: &str, query: Option<&str>) -> Response {
        if req.method != "GET" && req.method != "HEAD" {
            return Response::error(405, None).header("Allow", "GET, HEAD");
        }
        if is_hidden(path) || is_php_source(path) {
            return Response::error(404, None);
        }
        let mut opened = match self.open_for_serving(path) {
            Ok(o) => o,
            Err(resp) => return resp,
        };
        if opened.meta.is_dir {
            if !path.ends_with('/') {
                return add_slash(path, query);
            }
            opened = match self.open_index(path) {
                Some(o) => o,
                None => return Response::error(403, None),
            };
        }
        if !opened.meta.is_file {
            return Response::error(404, None);
        }
        self.respond(req, opened, path)
    }

    /// Opens `path` or maps the failure to a response. A small file served in
    /// the last second comes from memory; one read now is kept.
    fn open_for_serving(&self, path: &str) -> Result<Opened, Response> {
        let name = path.rsplit('/').next().unwrap_or("").to_owned();
        if let Some(kept) = self.small.lock().get(path) {
            if kept.at.elapsed() < KIND_TTL {
                return Ok(Opened {
                    content: Content::Bytes(kept.bytes.clone()),
                    meta: kept.meta,
                    name,
                });
            }
        }
        let file = self
            .docroot
            .open_beneath(path)
            .map_err(|e| error_for(&e, path))?;
        let meta = FileMeta::of(&file.metadata().map_err(|e| error_for(&e, path))?);
        if meta.is_file && meta.len <= SMALL_FILE {
            let mut bytes = vec![0; meta.len as usize];
            if file.read_exact_at(&mut bytes, 0).is_ok() {
                let bytes: Arc<[u8]> = bytes.into();
                let mut small = self.small.lock();
                if small.len() >= SMALL_FILES {
                    small.clear();
                }
                let kept = Kept {
                    at: Instant::now(),
                    meta,
                    bytes: bytes.clone(),
                };
                small.insert(path.to_owned(), kept);
                return Ok(Opened {
                    content: Content::Bytes(bytes),
                    meta,
                    name,
                });
            }
        }
        Ok(Opened {
            content: Content::File(file),
            meta,
            name,
        })
    }

    fn open_index(&self, dir: &str) -> Option<Opened> {
        for index in &self.index_files {
            let candidate = format!("{dir}{index}");
            if let Ok(o) = self.open_for_serving(&candidate) {
                if o.meta.is_file {
                    return Some(o);
                }
            }
        }
        None
    }

    fn respond(&self, req: &Request<'_>, opened: Opened, path: &str) -> Response {
        let content_type = content_type_for(&opened.name);
        let cache_control = cache_control_for(&opened.name);

        // Choose the representation: the precompressed sidecar the client weighs
        // most (q-values; ties: `SIDECARS`' order).
        let mut content = opened.content;
        let mut meta = opened.meta;
        let mut encoding = None;
        let mut has_sidecar = false;
        if is_compressible(content_type) {
            // Whether a sidecar exists is remembered (it decides Vary for every
            // client); it is opened only for a client that takes it.
            let present: Vec<(&'static str, String)> = SIDECARS
                .iter()
                .map(|&(coding, ext)| (coding, format!("{path}.{ext}")))
                .filter(|(_, sidecar)| self.docroot.kind(sidecar) == PathKind::File)
                .collect();
            has_sidecar = !present.is_empty();
            let accept = AcceptEncoding::of(req);
            if let Some((coding, sidecar)) = accept.best(present.iter().map(|p| (p, p.0))) {
                if let Ok(f) = self.docroot.open_beneath(sidecar) {
                    if let Ok(m) = f.metadata() {
                        if m.is_file() {
                            content = Content::File(f);
                            meta = FileMeta::of(&m);
                            encoding = Some(*coding);
                        }
                    }
                }
            }
        }

        answer(
            req,
            Representation {
                content,
                meta,
                content_type,
                cache_control,
                encoding,
                vary_encoding: has_sidecar,
            },
            path,
        )
    }
}

/// One file as it goes out, and what the headers say about it.
pub struct Representation<'a> {
    pub content: Content,
    pub meta: FileMeta,
    pub content_type: &'a str,
    pub cache_control: Option<&'a str>,
    /// The `Content-Encoding` of a precompressed sidecar.
    pub encoding: Option<&'static str>,
    /// Whether to send `Vary: Accept-Encoding` (a sidecar exists).
    pub vary_encoding: bool,
}

/// The answer to `req` with the file `rep`: RFC 9110 preconditions (304, 412),
/// ranges (206, 416), validators, and the file itself as the body (a range of its
/// descriptor, so hosts may sendfile it). `path` names the file in log lines. The
/// static backend and `X-Sendfile` responses share it.
pub fn answer(req: &Request<'_>, rep: Representation<'_>, path: &str) -> Response {
    let Representation {
        content,
        meta,
        content_type,
        cache_control,
        encoding,
        vary_encoding,
    } = rep;
    let size = meta.len;
    let mtime = whole_seconds(meta.modified);
    let etag = match encoding {
        Some(c) => format!("\"{:x}-{:x}-{c}\"", meta.mtime, size),
        None => format!("\"{:x}-{:x}\"", meta.mtime, size),
    };
    let last_modified = httpdate::fmt_http_date(mtime);

    // Headers every answer for this representation carries (200, 206, 304).
    let mut validators: Vec<(&str, String)> = vec![
        ("ETag", etag.clone()),
        ("Last-Modified", last_modified.clone()),
    ];
    if let Some(cc) = cache_control {
        validators.push(("Cache-Control", cc.to_owned()));
    }
    if vary_encoding {
        validators.push(("Vary", "Accept-Encoding".to_owned()));
    }
    let with_validators = |mut resp: Response| {
        for (n, v) in &validators {
            resp.push_header(n, v.as_str());
        }
        resp
    };

    // RFC 9110 §13.2.2: If-Match, If-Unmodified-Since, If-None-Match, If-Modified-Since.
    if let Some(im) = req.header_str("if-match") {
        if !strong_match(&parse_etag_list(im), &etag) {
            return Response::error(412, None);
        }
    } else if let Some(t) = req.header_str("if-unmodified-since").and_then(parse_date) {
        if mtime > t {
            return Response::error(412, None);
        }
    }
    if let Some(inm) = req.header_str("if-none-match") {
        if weak_match(&parse_etag_list(inm), &etag) {
            return with_validators(Response::new(304));
        }
    } else if let Some(t) = req.header_str("if-modified-since").and_then(parse_date) {
        if mtime <= t {
            return with_validators(Response::new(304));
        }
    }

    let mut ranges = None;
    if let Some(range) = req.header_str("range") {
        let if_range_ok = match req.header_str("if-range") {
            None => true,
            Some(v) => match parse_etag(v) {
                Some(tag) => !tag.weak && format!("\"{}\"", tag.opaque) == etag,
                None => parse_date(v) == Some(mtime),
            },
        };
        if if_range_ok {
            match parse_range(range, size) {
                RangeOutcome::Ignore => {}
                RangeOutcome::Unsatisfiable => {
                    return Response::error(416, None)
                        .header("Content-Range", format!("bytes */{size}"));
                }
                RangeOutcome::Ranges(r) => ranges = Some(r),
            }
        }
    }

    let mut resp = Response::new(200);
    let body = match ranges.as_deref() {
        Some([one]) => {
            resp.status = 206;
            resp.push_header("Content-Type", content_type);
            resp.push_header(
                "Content-Range",
                format!("bytes {}-{}/{size}", one.first, one.last),
            );
            content.body(one.first, one.len())
        }
        Some(many) if many.iter().map(|r| r.len()).sum::<u64>() <= MAX_MULTIPART_BYTES => {
            match multipart(&content, many, size, content_type) {
                Ok((boundary, bytes)) => {
                    resp.status = 206;
                    resp.push_header(
                        "Content-Type",
                        format!("multipart/byteranges; boundary={boundary}"),
                    );
                    Body::Bytes(bytes)
                }
                Err(e) => return error_for(&e, path),
            }
        }
        _ => {
            resp.push_header("Content-Type", content_type);
            content.body(0, size)
        }
    };
    resp.push_header("Content-Length", body.len().unwrap_or(0).to_string());
    resp.push_header("Accept-Ranges", "bytes");
    if let Some(c) = encoding {
        resp.push_header("Content-Encoding", c);
    }
    // `serve` drops the body of a HEAD response.
    with_validators(resp).with_body(body)
}

impl Backend for StaticFiles {
    fn serve(
        &self,
        req: &Request<'_>,
        target: &Target<'_>,
        reply: Reply,
        _body_ready: bool,
    ) -> Result<(), Reply> {
        reply.now(
            Source::Static,
            StaticFiles::serve(self, req, target.normalized, target.query),
        );
        Ok(())
    }
}

/// 301 from a directory path without its trailing slash to the slash form,
/// keeping the query.
pub fn add_slash(path: &str, query: Option<&str>) -> Response {
    let mut location = utf8_percent_encode(path, PATH_ESCAPE).to_string();
    location.push('/');
    if let Some(q) = query {
        location.push('?');
        location.push_str(q);
    }
    Response::error(301, None).header("Location", location)
}

/// Maps an open/stat failure to a response, logging what the operator should know.
fn error_for(e: &io::Error, path: &str) -> Response {
    if let Some(why) = super::exhaustion(e) {
        tracing::error!(path, "static: cannot open file: {why}");
        return Response::error(503, None);
    }
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ENAMETOOLONG) => {
            Response::error(404, None)
        }
        Some(libc::EACCES) | Some(libc::EPERM) => {
            tracing::warn!(path, "static: permission denied; check the file's permissions (chmod 644, directories 755)");
            Response::error(403, None)
        }
        Some(libc::EXDEV) | Some(libc::ELOOP) => {
            tracing::warn!(
                path,
                "static: refused a path that resolves outside the document root (symlink)"
            );
            Response::error(404, None)
        }
        _ => {
            tracing::error!(path, error = %e, "static: cannot open file");
            Response::error(500, None)
        }
    }
}

/// Dotfiles and dot-directories are never served, except `/.well-known/`.
pub fn is_hidden(path: &str) -> bool {
    path.split('/')
        .enumerate()
        .any(|(i, seg)| seg.starts_with('.') && !(i == 1 && seg == ".well-known"))
}

/// PHP source never leaves as a static file: `.php`, `.PHP`, `.php.`, `.phtml`, `.phar`, …
pub fn is_php_source(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or("");
    let name = name.trim_end_matches(['.', ' ']);
    let Some((_, ext)) = name.rsplit_once('.') else {
        return false;
    };
    let ext = ext.to_ascii_lowercase();
    matches!(
        ext.as_str(),
        "php" | "phtml" | "phar" | "phps" | "pht" | "php3" | "php4" | "php5" | "php7" | "php8"
    )
}

fn extension(name: &str) -> String {
    name.rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default()
}

/// The MIME type by extension, without a charset parameter (as nginx sends it).
pub fn content_type_for(name: &str) -> &'static str {
    mime_guess::from_path(name)
        .first_raw()
        .unwrap_or("application/octet-stream")
}

/// The seed's policy: fonts 1 year immutable, images 1 day, CSS/JS 1 hour, HTML no-cache.
pub fn cache_control_for(name: &str) -> Option<&'static str> {
    match extension(name).as_str() {
        "woff" | "woff2" | "ttf" | "otf" | "eot" => Some("public, max-age=31536000, immutable"),
        "jpg" | "jpeg" | "png" | "gif" | "webp" | "avif" | "svg" | "ico" | "bmp" | "apng"
        | "tif" | "tiff" => Some("public, max-age=86400"),
        "css" | "js" | "mjs" => Some("public, max-age=3600"),
        "html" | "htm" => Some("no-cache"),
        _ => None,
    }
}

fn is_compressible(content_type: &str) -> bool {
    content_type.starts_with("text/")
        || [
            "application/json",
            "application/javascript",
            "image/svg+xml",
            "application/xml",
            "application/wasm",
        ]
        .iter()
        .any(|t| content_type.starts_with(t))
}

/// Builds a multipart/byteranges body (RFC 9110 §14.6).
fn multipart(
    file: &Content,
    ranges: &[ByteRange],
    size: u64,
    content_type: &str,
) -> io::Result<(String, Vec<u8>)> {
    let boundary = format!(
        "fephp{:016x}",
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ (std::process::id() as u64).rotate_left(32)
    );
    let mut out = Vec::new();
    for r in ranges {
        out.extend_from_slice(
            format!("\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: bytes {}-{}/{size}\r\n\r\n", r.first, r.last)
                .as_bytes(),
        );
        let start = out.len();
        out.resize(start + r.len() as usize, 0);
        file.read_exact_at(&mut out[start..], r.first)?;
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Ok((boundary, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_descriptors_is_503() {
        for (errno, status) in [
            (libc::EMFILE, 503),
            (libc::ENFILE, 503),
            (libc::ENOENT, 404),
            (libc::EACCES, 403),
            (libc::EIO, 500),
        ] {
            let e = io::Error::from_raw_os_error(errno);
            assert_eq!(error_for(&e, "/a.txt").status, status, "{e}");
        }
    }

    #[test]
    fn hidden_and_source() {
        assert!(is_hidden("/.env"));
        assert!(is_hidden("/a/.git/config"));
        assert!(!is_hidden("/.well-known/acme-challenge/x"));
        assert!(is_hidden("/a/.well-known/x"));
        assert!(!is_hidden("/a/b.c"));
        for p in [
            "/index.php",
            "/x.PHP",
            "/x.php.",
            "/x.php..",
            "/x.phtml",
            "/a/b.Phar",
            "/x.php ",
        ] {
            assert!(is_php_source(p), "{p}");
        }
        for p in ["/x.php.txt", "/php", "/x.html", "/phpinfo"] {
            assert!(!is_php_source(p), "{p}");
        }
    }

    /// Found by `cargo fuzz` (static_resolution): `HEAD /.txt` got the 404 page as
    /// its body; the C ABI promises no body for HEAD.
    #[test]
    fn head_errors_and_redirects_have_no_body() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::create_dir(dir.path().join("noindex")).unwrap();
        std::fs::write(dir.path().join(".env"), "x").unwrap();
        std::fs::write(dir.path().join("a.txt"), "hello").unwrap();
        let sf = StaticFiles::new(dir.path(), &[]).unwrap();
        let mut head = Request::get("/");
        head.method = "HEAD";
        for (path, status) in [
            ("/.txt", 404),
            ("/.env", 404),
            ("/x.php", 404),
            ("/missing", 404),
            ("/sub", 301),
            ("/noindex/", 403),
        ] {
            let resp = sf.serve(&head, path, None);
            assert_eq!(resp.status, status, "{path}");
            assert!(
                matches!(resp.body, Body::Empty),
                "HEAD {path}: {:?}",
                resp.body
            );
            let get = sf.serve(&Request::get(path), path, None);
            assert_eq!(get.status, status, "{path}");
            // The same headers as GET, Content-Length of the GET body included.
            assert_eq!(resp.headers, get.headers, "{path}");
        }
        let mut range = head.clone();
        range.headers = vec![(b"Range", b"bytes=99-")];
        let resp = sf.serve(&range, "/a.txt", None);
        assert_eq!(resp.status, 416);
        assert!(matches!(resp.body, Body::Empty));
        let resp = sf.serve(&head, "/a.txt", None);
        assert_eq!(resp.status, 200);
        assert!(matches!(resp.body, Body::Empty));
        assert_eq!(resp.get_header("content-length"), Some(&b"5"[..]));
    }

    #[test]
    fn cache_policy() {
        assert_eq!(
            cache_control_for("a.woff2"),
            Some("public, max-age=31536000, immutable")
        );
        assert_eq!(cache_control_for("a.JPG"), Some("public, max-age=86400"));
        assert_eq!(cache_control_for("a.css"), Some("public, max-age=3600"));
        assert_eq!(cache_control_for("a.js"), Some("public, max-age=3600"));
        assert_eq!(cache_control_for("index.html"), Some("no-cache"));
        assert_eq!(cache_control_for("a.bin"), None);
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type_for("a.html"), "text/html");
        assert_eq!(content_type_for("a.css"), "text/css");
        assert_eq!(content_type_for("a.png"), "image/png");
        assert_eq!(content_type_for("a.woff2"), "font/woff2");
        assert_eq!(content_type_for("noext"), "application/octet-stream");
    }
}
