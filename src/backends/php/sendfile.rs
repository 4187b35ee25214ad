//! `X-Sendfile` and `X-Accel-Redirect` (`[backend.sendfile]`): a PHP script —
//! typically after an authorization check — names a file, and the engine answers
//! with that file as the static backend serves files (zero-copy body, ranges,
//! conditionals, validators, MIME type), instead of the script's body.
//!
//! - `X-Sendfile: /srv/protected/a.pdf` is a filesystem path (Apache's
//!   mod_xsendfile, lighttpd), taken literally (no percent-decoding); it must lie
//!   below one of `roots`.
//! - `X-Accel-Redirect: /protected/a.pdf` is a URI (nginx): percent-decoded, its
//!   query dropped, and mapped through the `locations` whose `prefix` it starts
//!   with (the longest): the rest of it, below that location's `root`.
//!
//! Files never come from outside those directories: a `..` segment or a NUL byte
//! is refused before anything is opened, and every open goes through the root's
//! `DocRoot` (`openat2(RESOLVE_BENEATH)` from the directory's descriptor), so a
//! symlink that leaves the root is refused by the kernel. Refused names get 403,
//! missing files 404, both with a log line naming the script and the path.

use crate::backends::docroot::DocRoot;
use crate::backends::static_files::{self, Representation};
use crate::config::SendfileConfig;
use crate::http::{Request, Response};
use percent_encoding::percent_decode_str;
use std::io;
use std::path::{Component, Path, PathBuf};

/// The header naming a filesystem path.
pub const X_SENDFILE: &str = "x-sendfile";
/// The header naming a URI mapped through the locations.
pub const X_ACCEL_REDIRECT: &str = "x-accel-redirect";

/// The client's headers that decide a file answer (RFC 9110 preconditions and
/// ranges), kept from the request for the response that comes later.
const CLIENT_HEADERS: &[&str] = &[
    "if-match",
    "if-unmodified-since",
    "if-none-match",
    "if-modified-since",
    "range",
    "if-range",
];

/// Headers of the script's response that describe its own body, which the file
/// replaces: the file's answer sets its own.
const BODY_HEADERS: &[&str] = &[
    X_SENDFILE,
    X_ACCEL_REDIRECT,
    "content-length",
    "content-range",
    "content-encoding",
    "transfer-encoding",
    "etag",
    "last-modified",
    "accept-ranges",
];

/// The directories files may be sent from, opened once.
#[derive(Debug)]
pub struct Sendfile {
    /// `X-Sendfile`: (the path as configured, its canonical form, the directory).
    roots: Vec<(PathBuf, PathBuf, DocRoot)>,
    /// `X-Accel-Redirect`: (prefix, directory), longest prefix first.
    locations: Vec<(String, DocRoot)>,
}

/// What the completion needs of the request: its conditional and range headers
/// (GET and HEAD only), and its target for the log.
pub struct ClientRequest {
    method: String,
    target: String,
    headers: Vec<(&'static str, Vec<u8>)>,
}

impl ClientRequest {
    pub fn of(req: &Request<'_>) -> ClientRequest {
        let conditional = req.method == "GET" || req.method == "HEAD";
        ClientRequest {
            method: req.method.to_owned(),
            target: req.target.to_owned(),
            headers: CLIENT_HEADERS
                .iter()
                .filter(|_| conditional)
                .filter_map(|&n| Some((n, req.header(n)?.to_vec())))
                .collect(),
        }
    }
}

/// Why a named file is not sent.
#[derive(Debug)]
enum Refusal {
    /// 404: no such file.
    Missing,
    /// 403: outside the roots, traversal, NUL, a symlink out, a directory, not a
    /// regular file, unreadable.
    Forbidden(&'static str),
    /// 503: out of descriptors or memory.
    Exhausted(String),
    /// 500: anything else the system said.
    Failed(io::Error),
}

impl Sendfile {
    /// Opens the configured directories (validation checked they exist).
    pub fn new(config: &SendfileConfig) -> Result<Sendfile, String> {
        let open = |dir: &Path, what: &str| {
            DocRoot::new(dir)
                .map_err(|e| format!("[backend.sendfile] {what} {}: {e}", dir.display()))
        };
        let mut roots = Vec::new();
        for dir in &config.roots {
            let canonical = dir.canonicalize().unwrap_or_else(|_| dir.clone());
            roots.push((dir.clone(), canonical, open(dir, "root")?));
        }
        let mut locations = Vec::new();
        for loc in &config.locations {
            locations.push((loc.prefix.clone(), open(&loc.root, "location root")?));
        }
        locations.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Ok(Sendfile { roots, locations })
    }

    /// The answer for `script`'s response `resp` to `client`: unchanged when it
    /// names no file; the named file (or 403/404) when it does with a 2xx status;
    /// for any other status the script's own response, the header removed.
    pub fn apply(&self, mut resp: Response, client: &ClientRequest, script: &str) -> Response {
        let named = |name: &str| {
            resp.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        // X-Sendfile first when a script sets both.
        let (header, value) = match (named(X_SENDFILE), named(X_ACCEL_REDIRECT)) {
            (Some(v), _) => ("X-Sendfile", v),
            (None, Some(v)) => ("X-Accel-Redirect", v),
            (None, None) => return resp,
        };
        let shown = String::from_utf8_lossy(&value).into_owned();
        if !(200..300).contains(&resp.status) {
            tracing::debug!(script, path = %shown.escape_debug(), uri = %client.target, status = resp.status, "not sending the file the script named: its status is not 2xx; the header is removed");
            resp.headers.retain(|(n, _)| {
                !n.eq_ignore_ascii_case(X_SENDFILE) && !n.eq_ignore_ascii_case(X_ACCEL_REDIRECT)
            });
            return resp;
        }
        let opened = if header == "X-Sendfile" {
            self.open_path(&value)
        } else {
            self.open_uri(&value)
        };
        let (file, name) = match opened {
            Ok(o) => o,
            Err(refusal) => return refused(refusal, header, &shown, script, &client.target),
        };
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(e) => return refused(Refusal::Failed(e), header, &shown, script, &client.target),
        };
        if !meta.is_file() {
            let why = if meta.is_dir() {
                "it is a directory"
            } else {
                "it is not a regular file"
            };
            return refused(
                Refusal::Forbidden(why),
                header,
                &shown,
                script,
                &client.target,
            );
        }
        // The script's own Content-Type, unless it is PHP's default (text/html,
        // which PHP sends when a script sets none): the file's extension decides.
        let script_type = resp
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .filter(|t| !is_php_default_type(t));
        let content_type = script_type
            .as_deref()
            .unwrap_or_else(|| static_files::content_type_for(&name));
        let req = Request {
            method: &client.method,
            headers: client
                .headers
                .iter()
                .map(|(n, v)| (n.as_bytes(), v.as_slice()))
                .collect(),
            ..Request::get(&client.target)
        };
        // No Cache-Control by extension: a file behind a check is not `public`;
        // the script's own Cache-Control is kept below.
        let answer = static_files::answer(
            &req,
            Representation {
                content: static_files::Content::File(file),
                meta: static_files::FileMeta::of(&meta),
                content_type,
                cache_control: None,
                encoding: None,
                vary_encoding: false,
            },
            &shown,
        );
        tracing::debug!(script, path = %shown.escape_debug(), uri = %client.target, status = answer.status, "sending the file the script named");
        // The script's headers that do not describe its body come first (cookies,
        // Content-Disposition, Cache-Control, …), then the file's own. The
        // script's body (a stream still running included) is dropped with `resp`.
        let mut out = Response::new(answer.status);
        out.headers = resp
            .headers
            .into_iter()
            .filter(|(n, _)| {
                let lower = n.to_ascii_lowercase();
                !BODY_HEADERS.contains(&lower.as_str()) && lower != "content-type"
            })
            .chain(answer.headers)
            .collect();
        out.with_body(answer.body)
    }

    /// `X-Sendfile`: an absolute path below one of the roots.
    fn open_path(&self, value: &[u8]) -> Result<(std::fs::File, String), Refusal> {
        let text = std::str::from_utf8(value)
            .map_err(|_| Refusal::Forbidden("the path is not UTF-8"))?
            .trim_matches([' ', '\t']);
        let path = Path::new(text);
        check_name(text)?;
        if !path.is_absolute() {
            return Err(Refusal::Forbidden("the path is not absolute"));
        }
        for (configured, canonical, dir) in &self.roots {
            let rel = path
                .strip_prefix(configured)
                .or_else(|_| path.strip_prefix(canonical));
            if let Ok(rel) = rel {
                let rel = rel.to_str().unwrap_or_default();
                return open_in(dir, rel);
            }
        }
        Err(Refusal::Forbidden("it is outside [backend.sendfile] roots"))
    }

    /// `X-Accel-Redirect`: a URI below one of the locations' prefixes.
    fn open_uri(&self, value: &[u8]) -> Result<(std::fs::File, String), Refusal> {
        let text = std::str::from_utf8(value)
            .map_err(|_| Refusal::Forbidden("the URI is not UTF-8"))?
            .trim_matches([' ', '\t']);
        let raw = text.split(['?', '#']).next().unwrap_or("");
        let decoded = percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| Refusal::Forbidden("the URI is not UTF-8 once decoded"))?;
        check_name(&decoded)?;
        if !decoded.starts_with('/') {
            return Err(Refusal::Forbidden("the URI does not start with '/'"));
        }
        for (prefix, dir) in &self.locations {
            if let Some(rel) = decoded.strip_prefix(prefix.as_str()) {
                return open_in(dir, rel);
            }
        }
        Err(Refusal::Forbidden(
            "no [[backend.sendfile.locations]] prefix matches it",
        ))
    }
}

/// What no name may hold, before anything is opened: a NUL byte, a `..` segment.
fn check_name(name: &str) -> Result<(), Refusal> {
    if name.contains('\0') {
        return Err(Refusal::Forbidden("it contains a NUL byte"));
    }
    if name.is_empty() {
        return Err(Refusal::Forbidden("it is empty"));
    }
    if Path::new(name)
        .components()
        .any(|c| matches!(c, Component::ParentDir))
    {
        return Err(Refusal::Forbidden("it has a '..' segment"));
    }
    Ok(())
}

/// Opens `rel` below `dir` without leaving it; the file and its name (for the
/// content type).
fn open_in(dir: &DocRoot, rel: &str) -> Result<(std::fs::File, String), Refusal> {
    let name = rel.rsplit('/').next().unwrap_or("").to_owned();
    if rel.trim_matches('/').is_empty() {
        return Err(Refusal::Forbidden("it is a directory"));
    }
    match dir.open_beneath(rel) {
        Ok(f) => Ok((f, name)),
        Err(e) => Err(match e.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR | libc::ENAMETOOLONG) => Refusal::Missing,
            Some(libc::EXDEV | libc::ELOOP) => {
                Refusal::Forbidden("it resolves outside its root (a symlink)")
            }
            Some(libc::EACCES | libc::EPERM) => {
                Refusal::Forbidden("permission denied (chmod 644 the file, 755 its directories)")
            }
            Some(libc::EINVAL) => Refusal::Forbidden("the kernel refused the name"),
            _ => match crate::backends::exhaustion(&e) {
                Some(why) => Refusal::Exhausted(why),
                None => Refusal::Failed(e),
            },
        }),
    }
}

/// The answer for a file not sent, with its log line.
fn refused(refusal: Refusal, header: &str, path: &str, script: &str, uri: &str) -> Response {
    let path = path.escape_debug().to_string();
    match refusal {
        Refusal::Missing => {
            tracing::warn!(
                script,
                path,
                uri,
                "{header}: the script named a file that does not exist: 404"
            );
            Response::error(404, None)
        }
        Refusal::Forbidden(why) => {
            tracing::warn!(
                script,
                path,
                uri,
                "{header}: refused the file the script named: {why}: 403"
            );
            Response::error(403, None)
        }
        Refusal::Exhausted(why) => {
            tracing::error!(
                script,
                path,
                uri,
                "{header}: cannot open the file the script named: {why}"
            );
            Response::error(503, None)
        }
        Refusal::Failed(e) => {
            tracing::error!(script, path, uri, error = %e, "{header}: cannot open the file the script named");
            Response::error(500, None)
        }
    }
}

/// Whether `content_type` is what PHP sends when a script sets none
/// (`default_mimetype`, `text/html`, with its charset).
fn is_php_default_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("text/html")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SendfileLocation;
    use crate::http::Body;
    use std::os::unix::fs::symlink;

    struct Fixture {
        dir: tempfile::TempDir,
        sendfile: Sendfile,
    }

    /// `protected/` (a root and the location `/protected/`) holding `a.txt`,
    /// `sub/b.pdf`, a symlink inside (`in-link` → `a.txt`) and one out
    /// (`out-link` → `../secret.txt`); `secret.txt` beside it.
    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("protected");
        std::fs::create_dir_all(p.join("sub")).unwrap();
        std::fs::write(p.join("a.txt"), "0123456789").unwrap();
        std::fs::write(p.join("sub/b.pdf"), "%PDF").unwrap();
        std::fs::write(p.join("with space.txt"), "spaced").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "SECRET").unwrap();
        symlink("a.txt", p.join("in-link")).unwrap();
        symlink("../secret.txt", p.join("out-link")).unwrap();
        symlink(dir.path().join("secret.txt"), p.join("abs-out-link")).unwrap();
        let sendfile = Sendfile::new(&SendfileConfig {
            enable: true,
            roots: vec![p.clone()],
            locations: vec![SendfileLocation {
                prefix: "/protected/".to_owned(),
                root: p,
            }],
        })
        .unwrap();
        Fixture { dir, sendfile }
    }

    fn php(header: &str, value: &[u8]) -> Response {
        let mut r = Response::new(200).with_body(Body::Bytes(b"php body".to_vec()));
        r.push_header("Content-Type", "text/html; charset=UTF-8");
        r.push_header("Set-Cookie", "a=1");
        r.push_header(header, value.to_vec());
        r
    }

    fn client(headers: &[(&str, &str)]) -> ClientRequest {
        let owned: Vec<(&[u8], &[u8])> = headers
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        let req = Request {
            headers: owned,
            ..Request::get("/download.php")
        };
        ClientRequest::of(&req)
    }

    fn body(r: &Response) -> Vec<u8> {
        use std::os::unix::fs::FileExt;
        match &r.body {
            Body::File { file, offset, len } => {
                let mut buf = vec![0; *len as usize];
                file.read_exact_at(&mut buf, *offset).unwrap();
                buf
            }
            Body::Bytes(b) => b.clone(),
            Body::Empty => Vec::new(),
            Body::Stream(_) => panic!("a stream"),
        }
    }

    fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
        r.get_header(name).map(|v| std::str::from_utf8(v).unwrap())
    }

    #[test]
    fn files_inside_the_roots_are_sent() {
        let f = fixture();
        let root = f.dir.path().join("protected");
        let c = client(&[]);
        for (hdr, value, expect) in [
            (
                X_SENDFILE,
                root.join("a.txt").display().to_string(),
                "0123456789",
            ),
            (
                "X-Sendfile",
                root.join("sub/b.pdf").display().to_string(),
                "%PDF",
            ),
            (
                X_SENDFILE,
                root.join("in-link").display().to_string(),
                "0123456789",
            ),
            (
                X_SENDFILE,
                format!("{}/./sub//b.pdf", root.display()),
                "%PDF",
            ),
            (
                X_ACCEL_REDIRECT,
                "/protected/a.txt".to_owned(),
                "0123456789",
            ),
            (
                "X-Accel-Redirect",
                "/protected/with%20space.txt?x=1".to_owned(),
                "spaced",
            ),
        ] {
            let r = f.sendfile.apply(php(hdr, value.as_bytes()), &c, "/s.php");
            assert_eq!(r.status, 200, "{value}");
            assert_eq!(body(&r), expect.as_bytes(), "{value}");
            assert!(
                r.get_header("x-sendfile").is_none() && r.get_header("x-accel-redirect").is_none()
            );
            assert_eq!(header(&r, "set-cookie"), Some("a=1"));
        }
        let r = f.sendfile.apply(
            php(
                X_SENDFILE,
                root.join("sub/b.pdf").to_str().unwrap().as_bytes(),
            ),
            &c,
            "/s.php",
        );
        assert_eq!(header(&r, "content-type"), Some("application/pdf"));
        assert_eq!(header(&r, "content-length"), Some("4"));
        assert!(header(&r, "etag").is_some() && header(&r, "last-modified").is_some());
        assert!(header(&r, "cache-control").is_none());
    }

    #[test]
    fn nothing_outside_the_roots_is_sent() {
        let f = fixture();
        let root = f.dir.path().join("protected");
        let secret = f.dir.path().join("secret.txt");
        let c = client(&[]);
        let cases: Vec<(&str, Vec<u8>, u16)> = vec![
            (X_SENDFILE, secret.display().to_string().into_bytes(), 403),
            (
                X_SENDFILE,
                format!("{}/../secret.txt", root.display()).into_bytes(),
                403,
            ),
            (
                X_SENDFILE,
                format!("{}/sub/../../secret.txt", root.display()).into_bytes(),
                403,
            ),
            (
                X_SENDFILE,
                root.join("out-link").display().to_string().into_bytes(),
                403,
            ),
            (
                X_SENDFILE,
                root.join("abs-out-link").display().to_string().into_bytes(),
                403,
            ),
            (
                X_SENDFILE,
                root.join("sub").display().to_string().into_bytes(),
                403,
            ),
            (X_SENDFILE, root.display().to_string().into_bytes(), 403),
            (
                X_SENDFILE,
                root.join("missing.txt").display().to_string().into_bytes(),
                404,
            ),
            (
                X_SENDFILE,
                format!("{}/a.txt\0.jpg", root.display()).into_bytes(),
                403,
            ),
            (X_SENDFILE, b"protected/a.txt".to_vec(), 403),
            (
                X_SENDFILE,
                format!("{}2/a.txt", root.display()).into_bytes(),
                403,
            ),
            (X_SENDFILE, b"\xff/a".to_vec(), 403),
            (X_ACCEL_REDIRECT, b"/protected/../secret.txt".to_vec(), 403),
            (
                X_ACCEL_REDIRECT,
                b"/protected/%2e%2e/secret.txt".to_vec(),
                403,
            ),
            (
                X_ACCEL_REDIRECT,
                b"/protected/%2E%2E%2Fsecret.txt".to_vec(),
                403,
            ),
            (X_ACCEL_REDIRECT, b"/protected/out-link".to_vec(), 403),
            (X_ACCEL_REDIRECT, b"/protected/a.txt%00.jpg".to_vec(), 403),
            (X_ACCEL_REDIRECT, b"/protected/sub/".to_vec(), 403),
            (X_ACCEL_REDIRECT, b"/protected/".to_vec(), 403),
            (X_ACCEL_REDIRECT, b"/protected".to_vec(), 403),
            (X_ACCEL_REDIRECT, b"/other/a.txt".to_vec(), 403),
            (X_ACCEL_REDIRECT, b"protected/a.txt".to_vec(), 403),
            (X_ACCEL_REDIRECT, b"/protected/missing".to_vec(), 404),
            (X_ACCEL_REDIRECT, b"/protected/%2e%2e%2e/x".to_vec(), 404),
        ];
        for (hdr, value, status) in cases {
            let shown = String::from_utf8_lossy(&value).into_owned();
            let r = f.sendfile.apply(php(hdr, &value), &c, "/s.php");
            assert_eq!(r.status, status, "{hdr}: {shown}");
            let b = body(&r);
            assert!(!b.windows(6).any(|w| w == b"SECRET"), "{shown}");
            assert!(!b.starts_with(b"0123"), "{shown}");
            assert!(r.get_header(hdr).is_none(), "{shown}");
        }
    }

    #[test]
    fn the_clients_conditionals_and_ranges_apply() {
        let f = fixture();
        let path = f.dir.path().join("protected/a.txt");
        let value = path.to_str().unwrap().as_bytes();
        let r = f.sendfile.apply(
            php(X_SENDFILE, value),
            &client(&[("Range", "bytes=2-4")]),
            "/s.php",
        );
        assert_eq!(r.status, 206);
        assert_eq!(body(&r), b"234");
        assert_eq!(header(&r, "content-range"), Some("bytes 2-4/10"));
        assert_eq!(header(&r, "content-type"), Some("text/plain"));
        let etag = header(&r, "etag").unwrap().to_owned();
        let r = f.sendfile.apply(
            php(X_SENDFILE, value),
            &client(&[("If-None-Match", &etag)]),
            "/s.php",
        );
        assert_eq!(r.status, 304);
        assert!(matches!(r.body, Body::Empty));
        assert_eq!(header(&r, "set-cookie"), Some("a=1"));
        assert!(header(&r, "content-type").is_none());
        // A POST's download: no conditionals, the whole file.
        let mut post = client(&[("Range", "bytes=2-4")]);
        post.method = "POST".to_owned();
        post.headers.clear();
        let r = f.sendfile.apply(php(X_SENDFILE, value), &post, "/s.php");
        assert_eq!((r.status, body(&r)), (200, b"0123456789".to_vec()));
    }

    #[test]
    fn the_scripts_headers_are_kept_but_those_of_its_body() {
        let f = fixture();
        let path = f.dir.path().join("protected/a.txt");
        let mut resp = php(X_SENDFILE, path.to_str().unwrap().as_bytes());
        for (n, v) in [
            ("Content-Disposition", "attachment; filename=\"a.txt\""),
            ("Cache-Control", "private, max-age=60"),
            ("Content-Length", "8"),
            ("ETag", "\"php\""),
            ("Content-Encoding", "gzip"),
            ("X-Accel-Redirect", "/protected/sub/b.pdf"),
        ] {
            resp.push_header(n, v);
        }
        let r = f.sendfile.apply(resp, &client(&[]), "/s.php");
        assert_eq!(body(&r), b"0123456789");
        assert_eq!(
            header(&r, "content-disposition"),
            Some("attachment; filename=\"a.txt\"")
        );
        assert_eq!(header(&r, "cache-control"), Some("private, max-age=60"));
        assert_eq!(header(&r, "content-length"), Some("10"));
        assert_ne!(header(&r, "etag"), Some("\"php\""));
        assert!(header(&r, "content-encoding").is_none());
        assert!(header(&r, "x-accel-redirect").is_none());
        assert_eq!(
            header(&r, "content-type"),
            Some("text/plain"),
            "PHP's default is not kept"
        );
        // A Content-Type the script chose is.
        let mut resp = php(X_SENDFILE, path.to_str().unwrap().as_bytes());
        resp.headers.retain(|(n, _)| n != "Content-Type");
        resp.push_header("content-type", "application/x-custom");
        let r = f.sendfile.apply(resp, &client(&[]), "/s.php");
        assert_eq!(header(&r, "content-type"), Some("application/x-custom"));
        assert_eq!(
            r.headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("content-type"))
                .count(),
            1
        );
    }

    #[test]
    fn other_statuses_and_other_responses_pass() {
        let f = fixture();
        let path = f.dir.path().join("protected/a.txt");
        let mut resp = php(X_SENDFILE, path.to_str().unwrap().as_bytes());
        resp.status = 500;
        let r = f.sendfile.apply(resp, &client(&[]), "/s.php");
        assert_eq!((r.status, body(&r)), (500, b"php body".to_vec()));
        assert!(r.get_header("x-sendfile").is_none());
        let mut resp = Response::new(200).with_body(Body::Bytes(b"plain".to_vec()));
        resp.push_header("X-Other", "1");
        let r = f.sendfile.apply(resp, &client(&[]), "/s.php");
        assert_eq!((r.status, body(&r)), (200, b"plain".to_vec()));
        assert_eq!(header(&r, "x-other"), Some("1"));
    }
}
