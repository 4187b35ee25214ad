//! What both PHP backends share: deciding what a path names in the PHP document
//! root (script, static file, redirect, front controller, 404), and the CGI
//! variables a script sees — the ones Debian's nginx passes to php-fpm
//! (`fastcgi.conf` + `SCRIPT_FILENAME`, `PATH_INFO`, `SERVER_NAME $host`).

use crate::backends::static_files::{PathKind as Kind, StaticFiles};
use crate::http::Request;
use std::path::Path;

/// What a normalized path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Run `script_name` (a path below the document root, e.g. "/index.php").
    Script {
        script_name: String,
        path_info: String,
    },
    /// An existing non-PHP file or a directory without index.php: the static handler's.
    Static,
    /// A directory requested without its trailing slash.
    AddSlash,
    NotFound,
    /// The path could not be looked at (out of file descriptors): 503.
    Unavailable,
}

/// Resolves `path` (normalized) like Caddy's `php_server` / nginx `try_files`:
/// an existing `.php` file runs (PATH_INFO split at the first `.php/`), a directory
/// runs its `index.php`, an existing non-PHP file goes to the static handler, and
/// anything else goes to `front_controller` when there is one.
pub fn resolve(root: &StaticFiles, path: &str, front_controller: Option<&str>) -> Resolution {
    let fallback = || match front_controller {
        Some(fc) => {
            let script_name = format!("/{}", fc.trim_start_matches('/'));
            match kind(root, &script_name) {
                Kind::File => Resolution::Script {
                    script_name,
                    path_info: String::new(),
                },
                Kind::Unavailable => Resolution::Unavailable,
                _ => Resolution::NotFound,
            }
        }
        None => Resolution::NotFound,
    };

    if let Some(i) = find_php_split(path) {
        let (script, info) = path.split_at(i + 4);
        return match kind(root, script) {
            Kind::File => Resolution::Script {
                script_name: script.to_owned(),
                path_info: info.to_owned(),
            },
            Kind::Unavailable => Resolution::Unavailable,
            _ => fallback(),
        };
    }
    match kind(root, path) {
        Kind::File if is_php_script(path) => Resolution::Script {
            script_name: path.to_owned(),
            path_info: String::new(),
        },
        Kind::File => Resolution::Static,
        Kind::Dir if !path.ends_with('/') => Resolution::AddSlash,
        Kind::Dir => {
            let index = format!("{path}index.php");
            match kind(root, &index) {
                Kind::File => Resolution::Script {
                    script_name: index,
                    path_info: String::new(),
                },
                Kind::Unavailable => Resolution::Unavailable,
                _ => Resolution::Static,
            }
        }
        Kind::Missing => fallback(),
        Kind::Unavailable => Resolution::Unavailable,
    }
}

/// Byte index of the first ".php/" (ASCII case-insensitive).
fn find_php_split(path: &str) -> Option<usize> {
    path.as_bytes()
        .windows(5)
        .position(|w| w.eq_ignore_ascii_case(b".php/"))
}

fn is_php_script(path: &str) -> bool {
    path.len() >= 4 && path.as_bytes()[path.len() - 4..].eq_ignore_ascii_case(b".php")
}

fn kind(root: &StaticFiles, path: &str) -> Kind {
    root.kind(path)
}

/// The CGI environment of one request.
pub struct CgiVars {
    /// (name, value) in the order nginx sends them.
    pub vars: Vec<(String, Vec<u8>)>,
    /// getallheaders(): names as php-fpm spells them ("Accept-Encoding").
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Builds the variables for running `script_name` for `req`.
pub fn variables(
    req: &Request<'_>,
    document_root: &Path,
    script_name: &str,
    path_info: &str,
    query: Option<&str>,
) -> CgiVars {
    let root = document_root.to_string_lossy();
    let root = root.trim_end_matches('/');
    let mut vars: Vec<(String, Vec<u8>)> = Vec::with_capacity(32 + req.headers.len());
    let mut set = |name: &str, value: &[u8]| vars.push((name.to_owned(), value.to_vec()));

    let host = req.header("host").unwrap_or(b"");
    set("SCRIPT_FILENAME", format!("{root}{script_name}").as_bytes());
    set("QUERY_STRING", query.unwrap_or("").as_bytes());
    set("REQUEST_METHOD", req.method.as_bytes());
    set("CONTENT_TYPE", req.header("content-type").unwrap_or(b""));
    set("CONTENT_LENGTH", content_length(req).as_bytes());
    set("SCRIPT_NAME", script_name.as_bytes());
    set("REQUEST_URI", req.target.as_bytes());
    // nginx's $document_uri after `try_files $fastcgi_script_name`: the script.
    set("DOCUMENT_URI", script_name.as_bytes());
    set("DOCUMENT_ROOT", root.as_bytes());
    set("SERVER_PROTOCOL", req.protocol.as_bytes());
    set("REQUEST_SCHEME", if req.tls { b"https" } else { b"http" });
    if req.tls {
        set("HTTPS", b"on");
    }
    set("GATEWAY_INTERFACE", b"CGI/1.1");
    set(
        "SERVER_SOFTWARE",
        concat!("fe-php/", env!("CARGO_PKG_VERSION")).as_bytes(),
    );
    set("REMOTE_ADDR", req.remote_addr.as_bytes());
    set("REMOTE_PORT", req.remote_port.to_string().as_bytes());
    set("SERVER_ADDR", req.local_addr.as_bytes());
    set("SERVER_PORT", req.local_port.to_string().as_bytes());
    set("SERVER_NAME", host_without_port(host));
    set("REDIRECT_STATUS", b"200");
    set("PATH_INFO", path_info.as_bytes());
    if !path_info.is_empty() {
        set("PATH_TRANSLATED", format!("{root}{path_info}").as_bytes());
    }
    set("PHP_SELF", format!("{script_name}{path_info}").as_bytes());

    let http = http_headers(req);
    let mut headers = Vec::with_capacity(http.len() + 2);
    for (name, value) in &http {
        headers.push((fpm_header_name(&name[5..]), value.clone()));
    }
    for (name, value) in http {
        vars.push((name, value));
    }
    headers.push((
        "Content-Type".to_owned(),
        req.header("content-type").unwrap_or(b"").to_vec(),
    ));
    headers.push((
        "Content-Length".to_owned(),
        content_length(req).into_bytes(),
    ));
    CgiVars { vars, headers }
}

fn content_length(req: &Request<'_>) -> String {
    match req.header("content-length") {
        Some(v) => String::from_utf8_lossy(v).trim().to_owned(),
        None if !req.body.is_empty() => req.body.len().to_string(),
        None => String::new(),
    }
}

/// `example.com:8080` → `example.com`; `[::1]:8080` → `[::1]`.
fn host_without_port(host: &[u8]) -> &[u8] {
    if host.first() == Some(&b'[') {
        return match host.iter().position(|&b| b == b']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(i) => &host[..i],
        None => host,
    }
}

/// Request headers as `HTTP_*` variables: repeated headers joined with ", "
/// (Cookie with "; "). Names with anything but letters, digits and '-' are dropped —
/// so `Foo_Bar` can never pose as `Foo-Bar` — and so is `Proxy` (httpoxy).
pub fn http_headers(req: &Request<'_>) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::with_capacity(req.headers.len());
    for &(name, value) in &req.headers {
        if name.is_empty() || !name.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-') {
            continue;
        }
        if name.eq_ignore_ascii_case(b"proxy") {
            continue;
        }
        let mut key = String::with_capacity(5 + name.len());
        key.push_str("HTTP_");
        for &b in name {
            key.push(if b == b'-' {
                '_'
            } else {
                b.to_ascii_uppercase() as char
            });
        }
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => {
                v.extend_from_slice(if key == "HTTP_COOKIE" { b"; " } else { b", " });
                v.extend_from_slice(value);
            }
            None => out.push((key, value.to_vec())),
        }
    }
    out
}

/// "ACCEPT_ENCODING" → "Accept-Encoding", as php-fpm's getallheaders() spells it.
fn fpm_header_name(var: &str) -> String {
    let mut out = String::with_capacity(var.len());
    let mut upper = true;
    for c in var.chars() {
        if c == '_' {
            out.push('-');
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> (tempfile::TempDir, StaticFiles) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        for d in ["blog", "assets", "uploads/a.jpg.d", "nophp"] {
            std::fs::create_dir_all(p.join(d)).unwrap();
        }
        for f in [
            "index.php",
            "blog/index.php",
            "info.php",
            "assets/app.css",
            "uploads/a.jpg",
            "nophp/index.html",
        ] {
            std::fs::write(p.join(f), "x").unwrap();
        }
        let sf = StaticFiles::new(p, &[]).unwrap();
        (dir, sf)
    }

    fn script(name: &str, info: &str) -> Resolution {
        Resolution::Script {
            script_name: name.to_owned(),
            path_info: info.to_owned(),
        }
    }

    #[test]
    fn resolution() {
        let (_d, r) = root();
        assert_eq!(resolve(&r, "/info.php", None), script("/info.php", ""));
        assert_eq!(
            resolve(&r, "/info.php/a/b", None),
            script("/info.php", "/a/b")
        );
        assert_eq!(resolve(&r, "/INFO.PHP/x", None), Resolution::NotFound);
        assert_eq!(resolve(&r, "/blog/", None), script("/blog/index.php", ""));
        assert_eq!(resolve(&r, "/blog", None), Resolution::AddSlash);
        assert_eq!(resolve(&r, "/", None), script("/index.php", ""));
        assert_eq!(resolve(&r, "/assets/app.css", None), Resolution::Static);
        assert_eq!(resolve(&r, "/nophp/", None), Resolution::Static);
        assert_eq!(resolve(&r, "/missing.php", None), Resolution::NotFound);
        assert_eq!(
            resolve(&r, "/missing.php", Some("index.php")),
            script("/index.php", "")
        );
        assert_eq!(
            resolve(&r, "/pretty/link", Some("index.php")),
            script("/index.php", "")
        );
        assert_eq!(
            resolve(&r, "/pretty/link", Some("nope.php")),
            Resolution::NotFound
        );
        // A non-PHP file is never executed, whatever follows it.
        assert_eq!(
            resolve(&r, "/uploads/a.jpg/x.php", None),
            Resolution::NotFound
        );
        assert_eq!(
            resolve(&r, "/uploads/a.jpg/x.php/y", None),
            Resolution::NotFound
        );
    }

    #[test]
    fn http_header_variables() {
        let mut req = Request::get("/");
        req.headers = vec![
            (b"Host", b"example.com:8080"),
            (b"X-Spoof", b"real"),
            (b"X_Spoof", b"fake"),
            (b"Proxy", b"http://evil"),
            (b"Cookie", b"a=1"),
            (b"cookie", b"b=2"),
            (b"Accept", b"text/html"),
            (b"accept", b"*/*"),
            (b"Bad Name", b"x"),
        ];
        let h = http_headers(&req);
        let get = |k: &str| {
            h.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(get("HTTP_X_SPOOF").as_deref(), Some("real"));
        assert_eq!(get("HTTP_PROXY"), None);
        assert_eq!(get("HTTP_COOKIE").as_deref(), Some("a=1; b=2"));
        assert_eq!(get("HTTP_ACCEPT").as_deref(), Some("text/html, */*"));
        assert_eq!(h.len(), 4, "{h:?}");
        let v = variables(&req, Path::new("/srv/www/"), "/index.php", "/x", None);
        let get = |k: &str| {
            v.vars
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(get("SERVER_NAME").as_deref(), Some("example.com"));
        assert_eq!(
            get("SCRIPT_FILENAME").as_deref(),
            Some("/srv/www/index.php")
        );
        assert_eq!(get("PATH_TRANSLATED").as_deref(), Some("/srv/www/x"));
        assert_eq!(get("PHP_SELF").as_deref(), Some("/index.php/x"));
        assert_eq!(get("HTTP_HOST").as_deref(), Some("example.com:8080"));
        assert_eq!(get("HTTPS"), None);
        assert!(v.headers.iter().any(|(n, _)| n == "X-Spoof"));
        assert_eq!(host_without_port(b"[::1]:80"), b"[::1]");
        assert_eq!(fpm_header_name("ACCEPT_ENCODING"), "Accept-Encoding");
    }
}
