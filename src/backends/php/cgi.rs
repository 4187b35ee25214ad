//! The CGI variables a script sees — the ones Debian's nginx passes to php-fpm
//! (`fastcgi.conf` + `SCRIPT_FILENAME`, `PATH_INFO`, `SERVER_NAME $host`).

use crate::http::Request;
use std::collections::HashMap;
use std::path::Path;

/// Name/value pairs packed into one buffer: two allocations for a whole request's
/// variables instead of two per variable. Each name is followed by a NUL, so the
/// embedded backend hands PHP C strings without copying.
#[derive(Debug, Clone, Default)]
pub struct Pairs {
    buf: Vec<u8>,
    spans: Vec<Span>,
}

/// Where one pair lies in `Pairs`' buffer: (name offset, name length without the
/// NUL, value offset, value length).
pub type Span = (usize, usize, usize, usize);

impl Pairs {
    pub fn with_capacity(bytes: usize, pairs: usize) -> Pairs {
        Pairs {
            buf: Vec::with_capacity(bytes),
            spans: Vec::with_capacity(pairs),
        }
    }

    pub fn push(&mut self, name: &str, value: &[u8]) {
        self.push_with(
            |b| b.extend_from_slice(name.as_bytes()),
            |b| b.extend_from_slice(value),
        );
    }

    /// Appends a pair whose name and value are written straight into the buffer.
    pub fn push_with(&mut self, name: impl FnOnce(&mut Vec<u8>), value: impl FnOnce(&mut Vec<u8>)) {
        let name_at = self.buf.len();
        name(&mut self.buf);
        let name_len = self.buf.len() - name_at;
        self.buf.push(0);
        let value_at = self.buf.len();
        value(&mut self.buf);
        self.spans
            .push((name_at, name_len, value_at, self.buf.len() - value_at));
    }

    #[cfg_attr(not(feature = "internals"), allow(dead_code))]
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    #[cfg_attr(not(feature = "internals"), allow(dead_code))]
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// (name, value) in the order they were pushed.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.spans
            .iter()
            .map(|&(n, nl, v, vl)| (&self.buf[n..n + nl], &self.buf[v..v + vl]))
    }

    #[cfg_attr(not(feature = "internals"), allow(dead_code))]
    /// The first value named `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| *n == name.as_bytes())
            .map(|(_, v)| v)
    }

    /// The buffer and the spans in it, for handing the pairs to C.
    pub fn raw(&self) -> (&[u8], &[Span]) {
        (&self.buf, &self.spans)
    }
}

/// The CGI environment of one request.
pub struct CgiVars {
    /// (name, value) in the order nginx sends them.
    pub vars: Pairs,
    /// getallheaders(): names as php-fpm spells them ("Accept-Encoding").
    pub headers: Pairs,
}

/// Builds the variables for running `script_name` for `req`.
pub fn variables(
    req: &Request<'_>,
    document_root: &Path,
    script_name: &str,
    path_info: &str,
    query: Option<&str>,
) -> CgiVars {
    let root = document_root.as_os_str().as_encoded_bytes();
    let root = trim_end_slashes(root);
    let header_bytes: usize = req.headers.iter().map(|(n, v)| n.len() + v.len() + 8).sum();
    let guess = 2 * root.len() + 3 * script_name.len() + 2 * req.target.len() + 512;
    let mut vars = Pairs::with_capacity(guess + header_bytes, 32 + req.headers.len());
    let content_length = content_length(req);
    let host = req.header("host").unwrap_or(b"");
    let put = |b: &mut Vec<u8>, parts: &[&[u8]]| parts.iter().for_each(|p| b.extend_from_slice(p));

    vars.push_with(
        |b| b.extend_from_slice(b"SCRIPT_FILENAME"),
        |b| put(b, &[root, script_name.as_bytes()]),
    );
    vars.push("QUERY_STRING", query.unwrap_or("").as_bytes());
    vars.push("REQUEST_METHOD", req.method.as_bytes());
    vars.push("CONTENT_TYPE", req.header("content-type").unwrap_or(b""));
    vars.push("CONTENT_LENGTH", &content_length);
    vars.push("SCRIPT_NAME", script_name.as_bytes());
    vars.push("REQUEST_URI", req.target.as_bytes());
    // nginx's $document_uri after `try_files $fastcgi_script_name`: the script.
    vars.push("DOCUMENT_URI", script_name.as_bytes());
    vars.push("DOCUMENT_ROOT", root);
    vars.push("SERVER_PROTOCOL", req.protocol.as_bytes());
    vars.push("REQUEST_SCHEME", if req.tls { b"https" } else { b"http" });
    if req.tls {
        vars.push("HTTPS", b"on");
        // mod_ssl's names, when the host tells them.
        for (name, value) in [
            ("SSL_PROTOCOL", req.tls_protocol),
            ("SSL_CIPHER", req.tls_cipher),
            ("SSL_TLS_SNI", req.tls_server_name),
        ] {
            if !value.is_empty() {
                vars.push(name, value.as_bytes());
            }
        }
    }
    vars.push("GATEWAY_INTERFACE", b"CGI/1.1");
    vars.push(
        "SERVER_SOFTWARE",
        concat!("fe-php/", env!("CARGO_PKG_VERSION")).as_bytes(),
    );
    vars.push("REMOTE_ADDR", req.remote_addr.as_bytes());
    vars.push("REMOTE_PORT", itoa(req.remote_port).as_bytes());
    vars.push("SERVER_ADDR", req.local_addr.as_bytes());
    vars.push("SERVER_PORT", itoa(req.local_port).as_bytes());
    vars.push("SERVER_NAME", host_without_port(host));
    vars.push("REDIRECT_STATUS", b"200");
    vars.push("PATH_INFO", path_info.as_bytes());
    if !path_info.is_empty() {
        vars.push_with(
            |b| b.extend_from_slice(b"PATH_TRANSLATED"),
            |b| put(b, &[root, path_info.as_bytes()]),
        );
    }
    vars.push_with(
        |b| b.extend_from_slice(b"PHP_SELF"),
        |b| put(b, &[script_name.as_bytes(), path_info.as_bytes()]),
    );

    let mut headers = Pairs::with_capacity(header_bytes + 64, req.headers.len() + 2);
    for_each_http_header(req, |name, lines| {
        let join = |b: &mut Vec<u8>| join_values(b, name, lines);
        vars.push_with(|b| http_var_name(b, name), join);
        headers.push_with(|b| fpm_header_name(b, name), join);
    });
    headers.push("Content-Type", req.header("content-type").unwrap_or(b""));
    headers.push("Content-Length", &content_length);
    CgiVars { vars, headers }
}

fn trim_end_slashes(mut b: &[u8]) -> &[u8] {
    while let [rest @ .., b'/'] = b {
        b = rest;
    }
    b
}

/// A port as decimal digits, without allocating.
fn itoa(n: u16) -> ItoaBuf {
    let mut buf = [0u8; 5];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    ItoaBuf { buf, start: i }
}

struct ItoaBuf {
    buf: [u8; 5],
    start: usize,
}

impl ItoaBuf {
    fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

/// The size of the body the script gets, never the header's claim (a host may
/// pass fewer bytes than it announced); empty without a body or a header.
fn content_length(req: &Request<'_>) -> Vec<u8> {
    let len = req.body_len();
    if len > 0 || req.header("content-length").is_some() {
        len.to_string().into_bytes()
    } else {
        Vec::new()
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

/// Calls `f(name, lines)` once per distinct request header that becomes an
/// `HTTP_*` variable, in order of first appearance; `lines` walks that header's
/// lines. Names with anything but letters, digits and '-' are dropped — so
/// `Foo_Bar` can never pose as `Foo-Bar` — and so is `Proxy` (httpoxy). With only
/// those characters, two names give the same variable exactly when they are
/// equal ignoring ASCII case. Linear in the number of headers: lines of one name
/// are chained through a hash map, never found by scanning the others.
fn for_each_http_header<'r>(req: &Request<'r>, mut f: impl FnMut(&'r [u8], SameName<'_, 'r>)) {
    let count = req.headers.len();
    // next[i]: the following line with the same name as line i (`count`: none).
    let mut next = vec![count; count];
    let mut first = vec![false; count];
    let mut last: HashMap<NameKey<'r>, usize> = HashMap::with_capacity(count);
    for (i, &(name, _)) in req.headers.iter().enumerate() {
        match last.insert(NameKey(name), i) {
            Some(previous) => next[previous] = i,
            None => first[i] = true,
        }
    }
    for (i, &(name, _)) in req.headers.iter().enumerate() {
        let valid = !name.is_empty()
            && name.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-')
            && !name.eq_ignore_ascii_case(b"proxy");
        if valid && first[i] {
            f(
                name,
                SameName {
                    req,
                    next: &next,
                    first: i,
                },
            );
        }
    }
}

/// The lines of one header name, in order.
#[derive(Clone, Copy)]
struct SameName<'a, 'r> {
    req: &'a Request<'r>,
    next: &'a [usize],
    first: usize,
}

impl<'a, 'r> SameName<'a, 'r> {
    fn values(self) -> impl Iterator<Item = &'r [u8]> + 'a {
        let (headers, next) = (&self.req.headers, self.next);
        std::iter::successors(Some(self.first), move |&i| {
            next.get(i).copied().filter(|&j| j < headers.len())
        })
        .map(move |i| headers[i].1)
    }
}

/// A header name, hashed and compared ignoring ASCII case.
struct NameKey<'a>(&'a [u8]);

impl std::hash::Hash for NameKey<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_usize(self.0.len());
        for chunk in self.0.chunks(32) {
            let mut lower = [0u8; 32];
            lower[..chunk.len()].copy_from_slice(chunk);
            lower.make_ascii_lowercase();
            state.write(&lower[..chunk.len()]);
        }
    }
}

impl PartialEq for NameKey<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0.eq_ignore_ascii_case(other.0)
    }
}

impl Eq for NameKey<'_> {}

/// The values of every line of a header joined with ", " (Cookie with "; ").
fn join_values(b: &mut Vec<u8>, name: &[u8], lines: SameName<'_, '_>) {
    let sep: &[u8] = if name.eq_ignore_ascii_case(b"cookie") {
        b"; "
    } else {
        b", "
    };
    for (k, v) in lines.values().enumerate() {
        if k > 0 {
            b.extend_from_slice(sep);
        }
        b.extend_from_slice(v);
    }
}

/// "accept-encoding" → "HTTP_ACCEPT_ENCODING".
fn http_var_name(b: &mut Vec<u8>, name: &[u8]) {
    b.extend_from_slice(b"HTTP_");
    b.extend(name.iter().map(|&c| {
        if c == b'-' {
            b'_'
        } else {
            c.to_ascii_uppercase()
        }
    }));
}

/// "accept-encoding" → "Accept-Encoding", as php-fpm's getallheaders() spells it.
fn fpm_header_name(b: &mut Vec<u8>, name: &[u8]) {
    let mut upper = true;
    for &c in name {
        b.push(if upper {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        });
        upper = c == b'-';
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let v = variables(&req, Path::new("/srv/www/"), "/index.php", "/x", None);
        let get = |k: &str| {
            v.vars
                .get(k)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(get("HTTP_X_SPOOF").as_deref(), Some("real"));
        assert_eq!(get("HTTP_PROXY"), None);
        assert_eq!(get("HTTP_COOKIE").as_deref(), Some("a=1; b=2"));
        assert_eq!(get("HTTP_ACCEPT").as_deref(), Some("text/html, */*"));
        let http: Vec<_> = v
            .vars
            .iter()
            .filter(|(n, _)| n.starts_with(b"HTTP_"))
            .collect();
        assert_eq!(http.len(), 4, "{http:?}");
        assert_eq!(get("SERVER_NAME").as_deref(), Some("example.com"));
        assert_eq!(
            get("SCRIPT_FILENAME").as_deref(),
            Some("/srv/www/index.php")
        );
        assert_eq!(get("PATH_TRANSLATED").as_deref(), Some("/srv/www/x"));
        assert_eq!(get("PHP_SELF").as_deref(), Some("/index.php/x"));
        assert_eq!(get("HTTP_HOST").as_deref(), Some("example.com:8080"));
        assert_eq!(get("HTTPS"), None);
        assert_eq!(get("REMOTE_PORT").as_deref(), Some("0"));
        let names: Vec<&[u8]> = v.headers.iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                &b"Host"[..],
                b"X-Spoof",
                b"Cookie",
                b"Accept",
                b"Content-Type",
                b"Content-Length"
            ]
        );
        assert_eq!(v.headers.get("Accept"), Some(&b"text/html, */*"[..]));
        // Every name is followed by a NUL in the packed buffer (PHP takes C strings).
        let (buf, spans) = v.vars.raw();
        assert!(spans.iter().all(|&(n, nl, _, _)| buf[n + nl] == 0));
        let mut r2 = Request::get("/");
        r2.remote_port = 65535;
        r2.local_port = 8080;
        let v = variables(&r2, Path::new("/"), "/i.php", "", None);
        assert_eq!(v.vars.get("REMOTE_PORT"), Some(&b"65535"[..]));
        assert_eq!(v.vars.get("SERVER_PORT"), Some(&b"8080"[..]));
        assert_eq!(v.vars.get("SCRIPT_FILENAME"), Some(&b"/i.php"[..]));
        assert_eq!(v.vars.get("DOCUMENT_ROOT"), Some(&b""[..]));
        assert_eq!(host_without_port(b"[::1]:80"), b"[::1]");
    }

    /// 20,000 distinct header names (more than the engine lets through, to make
    /// the cost visible): the variables are built in linear time. The quadratic
    /// scan this replaced took 17 s in a debug build.
    #[test]
    fn many_headers_are_linear() {
        let names: Vec<String> = (0..20_000).map(|i| format!("X-H{i}")).collect();
        let mut req = Request::get("/x.php");
        req.headers = names.iter().map(|n| (n.as_bytes(), &b"v"[..])).collect();
        req.headers.push((b"x-h7", b"w"));
        let started = std::time::Instant::now();
        let vars = variables(&req, Path::new("/srv"), "/x.php", "", None);
        let took = started.elapsed();
        assert_eq!(vars.vars.get("HTTP_X_H7"), Some(&b"v, w"[..]));
        assert_eq!(vars.vars.get("HTTP_X_H19999"), Some(&b"v"[..]));
        assert!(took < std::time::Duration::from_secs(2), "took {took:?}");
    }
}
