//! Differential testing: send the same requests (with curl) to two servers serving
//! `tests/php` and compare what a client and a PHP application would notice.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::{parse_reply, Reply};

/// What a case sends as its body.
#[derive(Clone, Debug)]
pub enum Body {
    None,
    /// Raw bytes with this Content-Type.
    Raw {
        content_type: String,
        bytes: Vec<u8>,
    },
    /// `application/x-www-form-urlencoded`, encoded by the harness.
    Form(Vec<(String, String)>),
    /// `multipart/form-data` (curl `--form-string` / `-F`).
    Multipart {
        fields: Vec<(String, String)>,
        files: Vec<FilePart>,
    },
}

/// One file of a multipart body.
#[derive(Clone, Debug)]
pub struct FilePart {
    pub field: String,
    pub filename: String,
    pub bytes: Vec<u8>,
    pub content_type: String,
}

impl FilePart {
    pub fn new(field: &str, filename: &str, bytes: Vec<u8>, content_type: &str) -> FilePart {
        FilePart {
            field: field.into(),
            filename: filename.into(),
            bytes,
            content_type: content_type.into(),
        }
    }
}

/// How response bodies are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyCheck {
    /// Byte for byte.
    Exact,
    /// dump.php's JSON, compared after `normalize_dump`.
    DumpJson,
    /// A page the *server* writes (nginx's 301/404 HTML carries its name and version):
    /// neither body nor Content-Type is compared, only status and headers like Location.
    ServerPage,
}

/// One request of a differential run.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    pub method: String,
    /// Path and query exactly as sent (`--path-as-is`).
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Body,
    pub check: BodyCheck,
    /// Headers compared in addition to the default set (e.g. Cache-Control).
    pub compare_headers: Vec<String>,
    /// The status nginx + php-fpm give (checked by `check_expected`).
    pub expect_status: u16,
}

impl Case {
    /// A GET of `target`, expected 200; dump.php targets are compared as JSON.
    pub fn new(name: &str, target: &str) -> Case {
        let path = target.split('?').next().unwrap_or("");
        Case {
            name: name.into(),
            method: "GET".into(),
            target: target.into(),
            headers: Vec::new(),
            body: Body::None,
            check: if path.starts_with("/dump.php") {
                BodyCheck::DumpJson
            } else {
                BodyCheck::Exact
            },
            compare_headers: Vec::new(),
            expect_status: 200,
        }
    }

    pub fn method(mut self, method: &str) -> Case {
        self.method = method.into();
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Case {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: Body) -> Case {
        self.body = body;
        self
    }

    pub fn raw_body(self, content_type: &str, bytes: &[u8]) -> Case {
        self.body(Body::Raw {
            content_type: content_type.into(),
            bytes: bytes.to_vec(),
        })
    }

    pub fn form(self, fields: &[(&str, &str)]) -> Case {
        self.body(Body::Form(
            fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ))
    }

    pub fn check(mut self, check: BodyCheck) -> Case {
        self.check = check;
        self
    }

    pub fn compare_header(mut self, name: &str) -> Case {
        self.compare_headers.push(name.into());
        self
    }

    pub fn status(mut self, status: u16) -> Case {
        self.expect_status = status;
        self
    }

    pub fn is_head(&self) -> bool {
        self.method.eq_ignore_ascii_case("HEAD")
    }
}

/// `n` deterministic pseudo-random bytes.
pub fn pattern(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2654435761) >> 24) as u8)
        .collect()
}

/// The 3 MiB file of the multipart case.
pub fn big_upload() -> Vec<u8> {
    pattern(3 << 20, 7)
}

/// `Authorization: Basic` for alice / "open sesame".
pub const BASIC_ALICE: &str = "Basic YWxpY2U6b3BlbiBzZXNhbWU=";

/// The requests every PHP server must answer like nginx + php-fpm (Debian config).
pub fn standard_cases() -> Vec<Case> {
    vec![
        Case::new("get_plain", "/dump.php"),
        Case::new(
            "get_query_utf8_plus_repeated",
            "/dump.php?q=caf%C3%A9&emoji=%F0%9F%90%98&plus=a+b&enc=a%2Bb&r=1&r=2&a[]=1&a[]=2&empty=&flag",
        ),
        Case::new(
            "get_query_encoded_brackets",
            "/dump.php?m%5Bk%5D=v&m%5B%5D=w&sp=%20x%20",
        ),
        Case::new("head", "/dump.php?x=1").method("HEAD"),
        Case::new("post_urlencoded", "/dump.php?via=query").method("POST").form(&[
            ("name", "Zoë + friends"),
            ("list[]", "1"),
            ("list[]", "2"),
            ("amp", "a&b=c"),
        ]),
        Case::new("post_multipart", "/dump.php")
            .method("POST")
            .body(Body::Multipart {
                fields: vec![
                    ("title".into(), "Hello multipart".into()),
                    ("note".into(), "ünïcode ✓".into()),
                ],
                files: vec![
                    FilePart::new(
                        "upload",
                        "big.bin",
                        big_upload(),
                        "application/octet-stream",
                    ),
                    FilePart::new("small", "notes.txt", b"small file\n".to_vec(), "text/plain"),
                ],
            }),
        Case::new("post_json", "/dump.php").method("POST").raw_body(
            "application/json",
            br#"{"name":"fe-php","n":[1,2,3],"ok":true}"#,
        ),
        Case::new("put_text", "/dump.php?id=7")
            .method("PUT")
            .raw_body("text/plain", b"replacement body\n"),
        Case::new("delete_json", "/dump.php?id=7")
            .method("DELETE")
            .raw_body("application/json", br#"{"reason":"test"}"#),
        Case::new("patch_form", "/dump.php")
            .method("PATCH")
            .form(&[("field", "new value")]),
        Case::new("cookies_in", "/dump.php").header("Cookie", "a=1; b=two%20words"),
        Case::new("path_info", "/dump.php/extra/path?x=1"),
        Case::new("path_info_utf8", "/dump.php/caf%C3%A9/x%20y"),
        Case::new("basic_auth", "/dump.php").header("Authorization", BASIC_ALICE),
        Case::new("custom_header", "/dump.php").header("X-Custom-Thing", "v"),
        Case::new("underscore_no_spoof", "/dump.php")
            .header("X_Spoof", "1")
            .header("X-Spoof", "real"),
        Case::new("httpoxy", "/dump.php").header("Proxy", "http://evil"),
        Case::new("status_201", "/status.php?code=201").status(201),
        Case::new("status_404", "/status.php?code=404").status(404),
        Case::new("status_503", "/status.php?code=503").status(503),
        Case::new("redirect", "/redirect.php").status(302),
        Case::new("cookies_out", "/cookies.php"),
        Case::new("headers", "/headers.php").compare_header("Cache-Control"),
        Case::new("large", "/large.php"),
        Case::new("json", "/json.php"),
        Case::new("hello", "/hello.php"),
        Case::new("exit", "/exit.php"),
        Case::new("fatal", "/fatal.php").status(500),
        Case::new("exception", "/exception.php").status(500),
        Case::new("memory", "/memory.php").status(500),
        Case::new("dir_index", "/sub/"),
        Case::new("dir_index_query", "/sub/?q=1"),
        Case::new("dir_no_slash", "/sub?q=1")
            .check(BodyCheck::ServerPage)
            .status(301),
        Case::new("static_css", "/style.css"),
        Case::new("static_upload", "/uploads/a.jpg"),
        Case::new("missing_php", "/missing.php")
            .check(BodyCheck::ServerPage)
            .status(404),
        Case::new("no_exec_upload", "/uploads/a.jpg/x.php")
            .check(BodyCheck::ServerPage)
            .status(404),
    ]
}

/// `application/x-www-form-urlencoded` encoding (space as `+`).
pub fn form_encode(fields: &[(String, String)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", form_escape(k), form_escape(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn form_escape(s: &str) -> String {
    let mut out = String::new();
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The port of "http://host:PORT[/...]".
pub fn port_of(base_url: &str) -> u16 {
    let rest = base_url.split("://").nth(1).unwrap_or(base_url);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(80)
}

/// Sends `case` to `base_url` ("http://127.0.0.1:PORT") with curl.
pub fn send(case: &Case, base_url: &str) -> Result<Reply, String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut args: Vec<String> = Vec::new();
    if case.is_head() {
        args.push("-I".into());
    } else if case.method != "GET" || !matches!(case.body, Body::None) {
        args.extend(["-X".into(), case.method.clone()]);
    }
    for (name, value) in &case.headers {
        args.extend(["-H".into(), format!("{name}: {value}")]);
    }
    let write = |name: &str, bytes: &[u8]| -> Result<String, String> {
        let path = tmp.path().join(name);
        std::fs::write(&path, bytes).map_err(|e| e.to_string())?;
        Ok(path.display().to_string())
    };
    match &case.body {
        Body::None => {}
        Body::Raw {
            content_type,
            bytes,
        } => {
            let path = write("body", bytes)?;
            args.extend(["-H".into(), format!("Content-Type: {content_type}")]);
            args.extend(["--data-binary".into(), format!("@{path}")]);
        }
        Body::Form(fields) => {
            let path = write("body", form_encode(fields).as_bytes())?;
            args.extend([
                "-H".into(),
                "Content-Type: application/x-www-form-urlencoded".into(),
            ]);
            args.extend(["--data-binary".into(), format!("@{path}")]);
        }
        Body::Multipart { fields, files } => {
            for (name, value) in fields {
                args.extend(["--form-string".into(), format!("{name}={value}")]);
            }
            for (i, f) in files.iter().enumerate() {
                let path = write(&format!("file{i}"), &f.bytes)?;
                args.extend([
                    "-F".into(),
                    format!(
                        "{}=@{path};filename={};type={}",
                        f.field, f.filename, f.content_type
                    ),
                ]);
            }
        }
    }
    args.push(format!("{base_url}{}", case.target));
    curl_reply(&args)
}

/// Runs curl (`-i --path-as-is`) and parses the final response, skipping interim 1xx
/// (curl sends `Expect: 100-continue` for large bodies).
pub fn curl_reply(args: &[String]) -> Result<Reply, String> {
    let out = Command::new("curl")
        .args(["-s", "-S", "--path-as-is", "-i", "--max-time", "30"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run curl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "curl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let mut raw = &out.stdout[..];
    while raw.starts_with(b"HTTP/") && raw.get(9) == Some(&b'1') {
        match raw.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(end) => raw = &raw[end + 4..],
            None => break,
        }
    }
    if raw.windows(4).all(|w| w != b"\r\n\r\n") {
        return Err(format!(
            "curl {args:?}: no response header block in {:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(200)])
        ));
    }
    Ok(parse_reply(raw))
}

/// All values of header `name`, in order.
pub fn header_values<'a>(reply: &'a Reply, name: &str) -> Vec<&'a str> {
    reply
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// A same-origin absolute Location ("http://127.0.0.1:PORT/x") becomes "/x": clients
/// resolve both alike, and nginx writes its own redirects absolute.
pub fn normalize_location(value: &str, port: u16) -> String {
    for host in ["127.0.0.1", "localhost", "[::1]"] {
        for scheme in ["http", "https"] {
            let prefix = format!("{scheme}://{host}:{port}");
            if let Some(rest) = value.strip_prefix(&prefix) {
                if rest.is_empty() || rest.starts_with('/') || rest.starts_with('?') {
                    return if rest.is_empty() {
                        "/".into()
                    } else {
                        rest.into()
                    };
                }
            }
        }
    }
    value.replace(&format!(":{port}"), ":{port}")
}

/// `$_SERVER`-style keys whose values legitimately differ between two servers.
pub const UNCOMPARED_KEYS: &[&str] = &[
    "SERVER_PORT",
    "REMOTE_PORT",
    "SERVER_SOFTWARE",
    "REQUEST_TIME",
    "REQUEST_TIME_FLOAT",
];

fn temp_prefix() -> String {
    let t = std::env::temp_dir();
    format!("{}/", t.display().to_string().trim_end_matches('/'))
}

fn normalize_string(s: &str, port: u16) -> String {
    let mut s = if s == port.to_string() {
        "{port}".to_owned()
    } else {
        s.replace(&format!(":{port}"), ":{port}")
    };
    // Multipart boundaries are chosen at random per request.
    if let Some(at) = s.find("boundary=") {
        let start = at + "boundary=".len();
        let end = s[start..].find(';').map_or(s.len(), |e| start + e);
        s.replace_range(start..end, "{boundary}");
    }
    s
}

/// dump.php's JSON made comparable across servers: each server's own port becomes
/// `{port}`, multipart boundaries `{boundary}`; `UNCOMPARED_KEYS` and strings holding a
/// temp path are removed.
pub fn normalize_dump(value: &Value, port: u16) -> Value {
    let tmp = temp_prefix();
    fn walk(v: &Value, port: u16, tmp: &str) -> Option<Value> {
        match v {
            Value::String(s) if s.contains(tmp) => None,
            Value::String(s) => Some(Value::String(normalize_string(s, port))),
            Value::Array(items) => Some(Value::Array(
                items
                    .iter()
                    .map(|i| walk(i, port, tmp).unwrap_or(Value::String("{tmp}".into())))
                    .collect(),
            )),
            Value::Object(map) => Some(Value::Object(
                map.iter()
                    .filter(|(k, _)| !UNCOMPARED_KEYS.contains(&k.as_str()))
                    .filter_map(|(k, v)| walk(v, port, tmp).map(|v| (k.clone(), v)))
                    .collect(),
            )),
            other => Some(other.clone()),
        }
    }
    walk(value, port, &tmp).unwrap_or(Value::Null)
}

/// Every difference between two JSON values, as "path: a=… b=…".
pub fn diff_json(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = format!("{path}.{k}");
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => diff_json(&p, va, vb, out),
                    (va, vb) => out.push(format!("{p}: a={} b={}", show(va), show(vb))),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                diff_json(&format!("{path}[{i}]"), va, vb, out);
            }
        }
        _ if a == b => {}
        _ => out.push(format!("{path}: a={a} b={b}")),
    }
}

fn show(v: Option<&Value>) -> String {
    v.map_or_else(|| "<absent>".into(), Value::to_string)
}

fn snippet(body: &[u8], at: usize) -> String {
    let start = at.saturating_sub(40);
    let end = (at + 40).min(body.len());
    format!("{:?}", String::from_utf8_lossy(&body[start.min(end)..end]))
}

/// Compares two replies to `case` (from servers on `a_port` and `b_port`).
pub fn compare(case: &Case, a: &Reply, a_port: u16, b: &Reply, b_port: u16) -> Result<(), String> {
    let mut errs: Vec<String> = Vec::new();
    if a.status != b.status {
        errs.push(format!("status: a={} b={}", a.status, b.status));
    }

    // Headers: Content-Type, Location, Set-Cookie (all, in order), every X-*, extras.
    let mut names: Vec<String> = vec!["location".into(), "set-cookie".into()];
    if case.check != BodyCheck::ServerPage {
        names.push("content-type".into());
    }
    names.extend(case.compare_headers.iter().map(|h| h.to_ascii_lowercase()));
    names.extend(
        a.headers
            .iter()
            .chain(&b.headers)
            .map(|(n, _)| n.to_ascii_lowercase())
            .filter(|n| n.starts_with("x-")),
    );
    names.sort();
    names.dedup();
    for name in &names {
        let norm = |r: &Reply, port: u16| -> Vec<String> {
            header_values(r, name)
                .into_iter()
                .map(|v| {
                    if name == "location" {
                        normalize_location(v, port)
                    } else {
                        v.replace(&format!(":{port}"), ":{port}")
                    }
                })
                .collect()
        };
        let (va, vb) = (norm(a, a_port), norm(b, b_port));
        if va != vb {
            errs.push(format!("header {name}: a={va:?} b={vb:?}"));
        }
    }

    // Bodies.
    if case.is_head() {
        if !a.body.is_empty() || !b.body.is_empty() {
            errs.push(format!(
                "HEAD body must be empty: a={} bytes b={} bytes",
                a.body.len(),
                b.body.len()
            ));
        }
    } else {
        match case.check {
            BodyCheck::ServerPage => {}
            BodyCheck::Exact => {
                if a.body != b.body {
                    let at = a
                        .body
                        .iter()
                        .zip(&b.body)
                        .position(|(x, y)| x != y)
                        .unwrap_or(a.body.len().min(b.body.len()));
                    errs.push(format!(
                        "body: a={} bytes b={} bytes, first difference at byte {at}: a={} b={}",
                        a.body.len(),
                        b.body.len(),
                        snippet(&a.body, at),
                        snippet(&b.body, at)
                    ));
                }
            }
            BodyCheck::DumpJson => {
                let parse = |r: &Reply| serde_json::from_slice::<Value>(&r.body);
                match (parse(a), parse(b)) {
                    (Ok(ja), Ok(jb)) => {
                        let mut diffs = Vec::new();
                        diff_json(
                            "body",
                            &normalize_dump(&ja, a_port),
                            &normalize_dump(&jb, b_port),
                            &mut diffs,
                        );
                        errs.extend(diffs);
                    }
                    (ra, rb) => {
                        for (side, r, reply) in [("a", ra, a), ("b", rb, b)] {
                            if let Err(e) = r {
                                errs.push(format!(
                                    "body of {side} is not JSON ({e}): {}",
                                    snippet(&reply.body, 0)
                                ));
                            }
                        }
                    }
                }
            }
        }
    }

    if errs.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "case {} ({} {}):\n  {}",
            case.name,
            case.method,
            case.target,
            errs.join("\n  ")
        ))
    }
}

/// Checks a reply against the case's expected (reference) status; for dump.php, that
/// the body is the fixture's JSON.
pub fn check_expected(case: &Case, reply: &Reply) -> Result<(), String> {
    let mut errs = Vec::new();
    if reply.status != case.expect_status {
        errs.push(format!(
            "status: expected {} got {}",
            case.expect_status, reply.status
        ));
    }
    if case.check == BodyCheck::DumpJson && !case.is_head() && reply.status == 200 {
        match serde_json::from_slice::<Value>(&reply.body) {
            Ok(v) => {
                for key in [
                    "server", "http", "get", "post", "cookie", "files", "input", "headers",
                ] {
                    if v.get(key).is_none() {
                        errs.push(format!("dump.php JSON lacks key {key:?}"));
                    }
                }
            }
            Err(e) => errs.push(format!("dump.php body is not JSON: {e}")),
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "case {} ({} {}): {}",
            case.name,
            case.method,
            case.target,
            errs.join("; ")
        ))
    }
}

/// Sends every case to both servers and compares; returns the failures.
pub fn run_all(a_base_url: &str, b_base_url: &str, cases: &[Case]) -> Vec<String> {
    let (a_port, b_port) = (port_of(a_base_url), port_of(b_base_url));
    let mut failures = Vec::new();
    for case in cases {
        match (send(case, a_base_url), send(case, b_base_url)) {
            (Ok(a), Ok(b)) => {
                if let Err(e) = compare(case, &a, a_port, &b, b_port) {
                    failures.push(e);
                }
            }
            (ra, rb) => {
                for (side, r) in [("a", ra), ("b", rb)] {
                    if let Err(e) = r {
                        failures.push(format!("case {}: request to {side} failed: {e}", case.name));
                    }
                }
            }
        }
    }
    failures
}

/// md5 of `bytes` as lowercase hex (coreutils `md5sum`; no md5 crate in the tree).
pub fn md5_hex(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    std::fs::write(&path, bytes).unwrap();
    md5_file(&path)
}

pub fn md5_file(path: &Path) -> String {
    let out = Command::new("md5sum").arg(path).output().expect("md5sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}
