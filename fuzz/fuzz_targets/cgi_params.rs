//! A request → `resolve::resolve` (script, PATH_INFO, front controller) →
//! `cgi::variables` → the FastCGI PARAMS records php-fpm would get.
//!
//! Input (text, so seeds stay readable): first line `METHOD target [PROTOCOL]`,
//! then header lines `Name: value` (names are raw bytes: spaces, '_', anything),
//! then an empty line and the body.
//!
//! Invariants:
//! - every variable name is a valid CGI name (`[A-Z0-9_]+`, not starting with a
//!   digit) and appears once;
//! - no `HTTP_PROXY` (httpoxy), and no `HTTP_*` variable comes from a client header
//!   whose name holds '_' or anything but letters, digits and '-': each `HTTP_*`
//!   variable is exactly the model's join of the valid headers of that name;
//! - the CGI basics are right: REQUEST_METHOD, REQUEST_URI, QUERY_STRING,
//!   SCRIPT_NAME, PATH_INFO, and SCRIPT_FILENAME = document root + script name, a
//!   script name with no `..` segment;
//! - getallheaders() names are HTTP tokens;
//! - encoded as PARAMS records, every record fits and decodes on its own back to
//!   exactly the variables (or the encoder says which variable is too large, and
//!   that one really is).
#![no_main]

use fe_php::backends::fastcgi::fuzzing::protocol;
use fe_php::backends::static_files::StaticFiles;
use fe_php::backends::php::cgi;
use fe_php::backends::php::resolve::{self, Resolution};
use fe_php::http::Request;
use fe_php::routing::path;
use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

struct Site {
    files: StaticFiles,
    root: PathBuf,
}

/// Removes `dir` when the fuzzer exits normally (libFuzzer calls `exit`; statics are
/// never dropped), so runs do not leave document roots behind in the temp dir.
fn remove_at_exit(dir: tempfile::TempDir) -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    extern "C" fn cleanup() {
        if let Some(d) = DIR.get() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
    extern "C" {
        fn atexit(f: extern "C" fn()) -> std::ffi::c_int;
    }
    let dir = DIR.get_or_init(|| dir.keep());
    // SAFETY: registers a plain function without captures, called once at exit.
    unsafe { atexit(cleanup) };
    dir
}

fn site() -> &'static Site {
    static SITE: OnceLock<Site> = OnceLock::new();
    SITE.get_or_init(|| {
        let dir = remove_at_exit(tempfile::tempdir().unwrap());
        let root = dir.join("www");
        for f in [
            "index.php",
            "info.php",
            "blog/index.php",
            "a.txt",
            "uploads/a.jpg",
            "x.php/index.php",
            "caf\u{e9}.php",
        ] {
            let p = root.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "<?php\n").unwrap();
        }
        std::fs::create_dir_all(root.join("empty")).unwrap();
        let files = StaticFiles::new(&root, &[]).unwrap();
        Site { files, root }
    })
}

fn valid_var_name(n: &str) -> bool {
    !n.is_empty()
        && !n.as_bytes()[0].is_ascii_digit()
        && n.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// What the `HTTP_*` variables must be: valid names only, no Proxy, repeated
/// names joined in arrival order.
fn model_http(headers: &[(&[u8], &[u8])]) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, value) in headers {
        let ok = !name.is_empty() && name.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok || name.eq_ignore_ascii_case(b"proxy") {
            continue;
        }
        let key: String = std::iter::once("HTTP_".to_owned())
            .chain(name.iter().map(|&b| {
                if b == b'-' {
                    "_".to_owned()
                } else {
                    (b.to_ascii_uppercase() as char).to_string()
                }
            }))
            .collect();
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some((k, v)) => {
                let sep: &[u8] = if k == "HTTP_COOKIE" { b"; " } else { b", " };
                v.extend_from_slice(sep);
                v.extend_from_slice(value);
            }
            None => out.push((key, value.to_vec())),
        }
    }
    out
}

fn get<'a>(vars: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    vars.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

fn check(
    req: &Request<'_>,
    root: &std::path::Path,
    script_name: &str,
    path_info: &str,
    query: Option<&str>,
) {
    let cgi = cgi::variables(req, root, script_name, path_info, query);
    let (buf, spans) = cgi.vars.raw();
    for &(n, nl, _, _) in spans {
        assert_eq!(buf[n + nl], 0, "a variable name without its NUL");
    }
    let vars: Vec<(String, Vec<u8>)> = cgi
        .vars
        .iter()
        .map(|(n, v)| (String::from_utf8(n.to_vec()).expect("ASCII names"), v.to_vec()))
        .collect();
    let vars = &vars;
    let mut seen = HashSet::new();
    for (name, _) in vars {
        assert!(valid_var_name(name), "invalid variable name {name:?}");
        assert!(seen.insert(name.as_str()), "variable {name} twice");
        assert_ne!(name, "HTTP_PROXY");
    }
    let http: Vec<(String, Vec<u8>)> = vars
        .iter()
        .filter(|(n, _)| n.starts_with("HTTP_"))
        .cloned()
        .collect();
    assert_eq!(http, model_http(&req.headers), "HTTP_* variables");
    for (name, _) in cgi.headers.iter() {
        assert!(
            !name.is_empty() && name.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-'),
            "getallheaders() name {name:?}"
        );
    }
    let root_s = root.to_string_lossy();
    let root_s = root_s.trim_end_matches('/');
    assert_eq!(get(vars, "REQUEST_METHOD"), Some(req.method.as_bytes()));
    assert_eq!(get(vars, "REQUEST_URI"), Some(req.target.as_bytes()));
    assert_eq!(
        get(vars, "QUERY_STRING"),
        Some(query.unwrap_or("").as_bytes())
    );
    assert_eq!(get(vars, "SCRIPT_NAME"), Some(script_name.as_bytes()));
    assert_eq!(get(vars, "PATH_INFO"), Some(path_info.as_bytes()));
    assert_eq!(
        get(vars, "SCRIPT_FILENAME"),
        Some(format!("{root_s}{script_name}").as_bytes())
    );
    assert_eq!(get(vars, "HTTPS").is_some(), req.tls);

    // The PARAMS records php-fpm reads, each decoded on its own.
    let mut out = Vec::new();
    let pairs = vars.iter().map(|(n, v)| (n.as_bytes(), v.as_slice()));
    match protocol::push_params(&mut out, pairs, protocol::MAX_CONTENT) {
        Ok(()) => {
            let mut dec = protocol::Decoder::new();
            dec.read_buffer().extend_from_slice(&out);
            let mut decoded = Vec::new();
            let mut ended = false;
            while let Some(rec) = dec.next_record().expect("our own records decode") {
                assert!(!ended, "records after the empty PARAMS");
                assert_eq!(rec.kind, protocol::PARAMS);
                assert_eq!(rec.request_id, protocol::REQUEST_ID);
                assert!(rec.content.len() <= protocol::MAX_CONTENT);
                if rec.content.is_empty() {
                    ended = true;
                }
                decoded.extend(protocol::decode_pairs(rec.content).expect("pairs decode"));
            }
            assert!(ended, "no empty PARAMS record at the end");
            assert_eq!(dec.pending(), 0);
            let want: Vec<(Vec<u8>, Vec<u8>)> = vars
                .iter()
                .map(|(n, v)| (n.clone().into_bytes(), v.clone()))
                .collect();
            assert_eq!(decoded, want, "PARAMS round trip");
        }
        Err(e) => {
            let (n, v) = vars
                .iter()
                .find(|(n, _)| *n == e.name)
                .expect("the refused variable exists");
            assert!(protocol::pair_len(n.as_bytes(), v) > protocol::MAX_CONTENT);
            assert_eq!(e.value_len, v.len());
            assert!(e.max_value_len < v.len());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let site = site();
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let mut lines = head.split(|&b| b == b'\n');
    let Some(Ok(first)) = lines.next().map(std::str::from_utf8) else {
        return;
    };
    let mut parts = first.splitn(3, ' ');
    let (method, target, protocol) = match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), p) => (m, t, p.unwrap_or("HTTP/1.1")),
        _ => ("GET", first, "HTTP/1.1"),
    };
    let headers: Vec<(&[u8], &[u8])> = lines
        .filter_map(|l| {
            let colon = l.iter().position(|&b| b == b':')?;
            Some((&l[..colon], l[colon + 1..].trim_ascii()))
        })
        .collect();
    let mut req = Request::get(target);
    req.method = method;
    req.protocol = protocol;
    req.headers = headers;
    req.body = body;
    req.remote_addr = "192.0.2.7";
    req.remote_port = 54321;

    let Ok(t) = path::split_target(target) else {
        return;
    };
    let Ok(n) = path::normalize(t.raw_path) else {
        return;
    };
    for front_controller in [None, Some("index.php")] {
        match resolve::resolve(site.files.docroot(), &n, front_controller) {
            Resolution::Script {
                script_name,
                path_info,
            } => {
                assert!(script_name.starts_with('/'), "{script_name:?}");
                assert!(
                    !script_name.split('/').any(|s| s == ".." || s == "."),
                    "{script_name:?}"
                );
                assert!(
                    script_name.to_ascii_lowercase().ends_with(".php"),
                    "runs a non-PHP file: {script_name:?}"
                );
                assert!(path_info.is_empty() || path_info.starts_with('/'));
                check(&req, &site.root, &script_name, &path_info, t.query);
            }
            _ => check(&req, &site.root, "/index.php", "", t.query),
        }
    }
    req.tls = true;
    check(&req, &site.root, "/index.php", &n, t.query);
});
