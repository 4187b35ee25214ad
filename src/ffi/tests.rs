//! Tests of the C ABI from Rust: header freshness, NULL handling, body reading.

use super::*;
use crate::http::{Body, Response};
use std::ffi::{c_char, CStr, CString};
use std::ptr;

#[test]
fn committed_header_is_fresh() {
    let generated = include_str!(concat!(env!("OUT_DIR"), "/fe_php.h"));
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/include/fe_php.h"))
            .unwrap_or_default();
    assert!(
        generated == committed,
        "include/fe_php.h is stale: run `make header` and commit it"
    );
}

#[test]
fn header_version_macros_match_the_crate() {
    let header = include_str!(concat!(env!("OUT_DIR"), "/fe_php.h"));
    for (name, value) in [
        ("FEPHP_VERSION_MAJOR", env!("CARGO_PKG_VERSION_MAJOR")),
        ("FEPHP_VERSION_MINOR", env!("CARGO_PKG_VERSION_MINOR")),
        ("FEPHP_VERSION_PATCH", env!("CARGO_PKG_VERSION_PATCH")),
        (
            "FEPHP_VERSION",
            concat!("\"", env!("CARGO_PKG_VERSION"), "\""),
        ),
    ] {
        assert!(
            header.contains(&format!("#define {name} {value}\n")),
            "{name} in cbindgen.toml must be {value}"
        );
    }
    let v = unsafe { CStr::from_ptr(fephp_version()) };
    assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
}

#[test]
fn nulls_are_errors_not_crashes() {
    unsafe {
        assert_eq!(
            fephp_init(ptr::null(), ptr::null(), ptr::null_mut()),
            fephp_result::NullParameter
        );
        let mut e = ptr::null();
        assert_eq!(
            fephp_init(ptr::null(), ptr::null(), &mut e),
            fephp_result::InvalidArgument
        );
        let mut b = fephp_backend::Static;
        let s = fephp_str {
            ptr: ptr::null(),
            len: 0,
        };
        assert_eq!(
            fephp_route(ptr::null(), s, s, &mut b),
            fephp_result::NullParameter
        );
        assert_eq!(
            fephp_handle_request(ptr::null(), ptr::null(), ptr::null_mut()),
            fephp_result::NullParameter
        );
        assert_eq!(fephp_response_status(ptr::null()), 0);
        assert_eq!(fephp_response_header_count(ptr::null()), 0);
        assert_eq!(
            fephp_response_body_kind(ptr::null()),
            fephp_body_kind::Empty
        );
        fephp_response_free(ptr::null_mut());
        fephp_engine_free(ptr::null());
        let mut len = 0usize;
        assert_eq!(
            fephp_last_error(ptr::null_mut(), 0, &mut len),
            fephp_result::BufferTooSmall
        );
        assert!(len > 0);
    }
}

fn last_error() -> String {
    let mut buf = vec![0 as c_char; 4096];
    let mut len = 0;
    unsafe { fephp_last_error(buf.as_mut_ptr(), buf.len(), &mut len) };
    let bytes: Vec<u8> = buf[..len].iter().map(|&c| c as u8).collect();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn config_errors_reach_last_error() {
    let toml = CString::new("[backend]\ndefault_backend = \"xxx\"\n").unwrap();
    let mut e = ptr::null();
    assert_eq!(
        unsafe { fephp_init(ptr::null(), toml.as_ptr(), &mut e) },
        fephp_result::ConfigError
    );
    assert!(e.is_null());
    assert!(last_error().starts_with("Default backend 'xxx' is not registered"));
}

#[test]
fn stream_body_reads_through_the_abi() {
    let (tx, rx) = crate::http::body::channel();
    let resp = Response::new(200).with_body(Body::Stream(rx));
    let handle = ResponseHandle::into_raw(resp, None);
    let mut buf = [0u8; 8];
    let mut n = 0;
    unsafe {
        assert_eq!(fephp_response_body_kind(handle), fephp_body_kind::Stream);
        let mut len = 0u64;
        assert_eq!(
            fephp_response_body_length(handle, &mut len),
            fephp_result::UnknownLength
        );
        assert_eq!(
            fephp_response_body_try_read(handle, buf.as_mut_ptr(), buf.len(), &mut n),
            fephp_result::Again
        );
        let producer = std::thread::spawn(move || {
            tx.send(b"hello ".to_vec());
            tx.send(b"world".to_vec());
        });
        let mut got = Vec::new();
        loop {
            assert_eq!(
                fephp_response_body_read(handle, buf.as_mut_ptr(), buf.len(), &mut n),
                fephp_result::Ok
            );
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        producer.join().unwrap();
        assert_eq!(got, b"hello world");
        fephp_response_free(handle);
    }
}

/// `[server]` is the host's section: the engine accepts whatever the table holds
/// (fe-php-host validates it), but not a file that is not TOML, nor a `server`
/// that is no table.
#[test]
fn server_section_is_the_hosts() {
    let init = |text: &str| unsafe {
        let toml = CString::new(text).unwrap();
        let mut e = ptr::null();
        let r = fephp_init(ptr::null(), toml.as_ptr(), &mut e);
        let mut buf = vec![0 as c_char; 4096];
        let mut len = 0;
        fephp_last_error(buf.as_mut_ptr(), buf.len(), &mut len);
        fephp_engine_free(e);
        let msg = CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned();
        (r, msg)
    };
    let rest = "[backend]\ndefault_backend = \"static\"\n[backend.static_files]\nenable = true\nroot = \"/tmp\"\n[php]\nlibphp_path = \"/nonexistent\"\n";
    let (r, msg) = init(&format!(
        "[server]\nmax_connections = 0\nsend_timeout = 75\nno_such_key = [1]\n{rest}"
    ));
    assert_eq!(r, fephp_result::Ok, "{msg}");
    let (r, msg) = init(&format!("[server]\nlisten = \n{rest}"));
    assert_eq!(r, fephp_result::ConfigError);
    assert!(
        msg.starts_with("invalid configuration: TOML parse error at line 2"),
        "{msg}"
    );
    let (r, msg) = init(&format!("server = 5\n{rest}"));
    assert_eq!(r, fephp_result::ConfigError);
    assert!(msg.contains("invalid type: integer `5`"), "{msg}");
    // The getters of `[server]` left the ABI with version 1.
    let header = include_str!(concat!(env!("OUT_DIR"), "/fe_php.h"));
    for gone in [
        "fephp_server_limits",
        "fephp_engine_listen",
        "fephp_engine_workers",
    ] {
        assert!(!header.contains(gone), "{gone}");
    }
}

#[test]
fn raw_enum_values_from_c_are_checked() {
    let text = |code: u32| {
        let mut buf = vec![0 as std::ffi::c_char; 256];
        let mut len = 0;
        assert_eq!(
            unsafe { fephp_result_message(code, buf.as_mut_ptr(), buf.len(), &mut len) },
            fephp_result::Ok
        );
        unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_str()
            .unwrap()
            .to_owned()
    };
    for r in fephp_result::ALL {
        assert!(!text(r as u32).starts_with("unknown"), "{r:?}");
    }
    // Every code from 7001 up to the last one is in ALL (no gap, nothing forgotten).
    let last = fephp_result::ALL[fephp_result::ALL.len() - 2] as u32;
    for code in 7001..=last {
        assert!(
            !text(code).starts_with("unknown"),
            "{code} missing from ALL"
        );
    }
    assert_eq!(text(7050), "unknown result code 7050");
    assert_eq!(text(u32::MAX), format!("unknown result code {}", u32::MAX));

    let toml = CString::new(
        "[backend]\ndefault_backend = \"static\"\n[backend.static_files]\nenable = true\nroot = \"/tmp\"\n[php]\nlibphp_path = \"/nonexistent\"\n",
    )
    .unwrap();
    unsafe {
        let mut e = ptr::null();
        assert_eq!(
            fephp_init(ptr::null(), toml.as_ptr(), &mut e),
            fephp_result::Ok
        );
        let mut ok = false;
        assert_eq!(
            fephp_engine_backend_available(e, fephp_backend::Static as u32, &mut ok),
            fephp_result::Ok
        );
        assert!(ok);
        assert_eq!(
            fephp_engine_backend_available(e, 99, &mut ok),
            fephp_result::InvalidArgument
        );
        fephp_engine_free(e);
    }
}

fn static_engine() -> *const fephp_engine {
    let root = env!("CARGO_MANIFEST_DIR").to_owned() + "/examples/public";
    let toml = CString::new(format!(
        "[backend]\ndefault_backend = \"static\"\n[backend.static_files]\nenable = true\nroot = \"{root}\"\n[php]\nlibphp_path = \"/nonexistent\"\n"
    ))
    .unwrap();
    let mut e = ptr::null();
    assert_eq!(
        unsafe { fephp_init(ptr::null(), toml.as_ptr(), &mut e) },
        fephp_result::Ok
    );
    e
}

fn fstr(s: &[u8]) -> fephp_str {
    fephp_str {
        ptr: s.as_ptr() as *const c_char,
        len: s.len(),
    }
}

fn request<'a>(method: &'a [u8], target: &'a [u8], headers: &'a [fephp_header]) -> fephp_request {
    fephp_request {
        method: fstr(method),
        target: fstr(target),
        protocol: fstr(b"HTTP/1.1"),
        headers: headers.as_ptr(),
        header_count: headers.len(),
        body: ptr::null(),
        body_len: 0,
        body_read: None,
        body_read_ctx: ptr::null_mut(),
        remote_addr: fstr(b"127.0.0.1"),
        remote_port: 1,
        local_addr: fstr(b"127.0.0.1"),
        local_port: 2,
        tls: false,
    }
}

fn status_of(e: *const fephp_engine, req: &fephp_request) -> u16 {
    let mut resp = ptr::null_mut();
    assert_eq!(
        unsafe { fephp_handle_request(e, req, &mut resp) },
        fephp_result::Ok
    );
    let status = unsafe { fephp_response_status(resp) };
    unsafe { fephp_response_free(resp) };
    status
}

/// A C host may pass any bytes as the method: the engine refuses what is not a
/// token (400) before anything reaches REQUEST_METHOD, and fephp_route says so.
#[test]
fn methods_that_are_not_tokens_are_400() {
    let e = static_engine();
    for method in [
        &b""[..],
        b"\0",
        b"GET\r\n",
        b"G T",
        b"GET\0",
        b"\r\nX-A: 1",
        b"G\xffT",
    ] {
        let req = request(method, b"/index.html", &[]);
        assert_eq!(status_of(e, &req), 400, "{method:?}");
        let mut b = fephp_backend::Internal;
        assert_eq!(
            unsafe { fephp_route(e, fstr(method), fstr(b"/index.html"), &mut b) },
            fephp_result::BadRequest,
            "{method:?}"
        );
        assert!(
            last_error().contains("not an HTTP token"),
            "{}",
            last_error()
        );
    }
    assert_eq!(status_of(e, &request(b"GET", b"/index.html", &[])), 200);
    assert_eq!(status_of(e, &request(b"TRACE", b"/index.html", &[])), 501);
    unsafe { fephp_engine_free(e) };
}

/// 10,000 headers: the engine answers 431 at once (its own limit, whatever the
/// host let through), in linear time.
#[test]
fn too_many_headers_are_431_quickly() {
    let e = static_engine();
    let names: Vec<String> = (0..10_000).map(|i| format!("X-H{i}")).collect();
    let headers: Vec<fephp_header> = names
        .iter()
        .map(|n| fephp_header {
            name: fstr(n.as_bytes()),
            value: fstr(b"v"),
        })
        .collect();
    let started = std::time::Instant::now();
    assert_eq!(
        status_of(e, &request(b"GET", b"/index.html", &headers)),
        431
    );
    assert!(started.elapsed() < std::time::Duration::from_millis(500));
    let hundred = &headers[..crate::http::head::MAX_HEADER_LINES];
    assert_eq!(status_of(e, &request(b"GET", b"/index.html", hundred)), 200);
    unsafe { fephp_engine_free(e) };
}

#[test]
fn upstream_drain_names_what_exists() {
    let e = static_engine();
    let (pool, addr) = (
        std::ffi::CString::new("default").unwrap(),
        std::ffi::CString::new("127.0.0.1:9000").unwrap(),
    );
    // SAFETY: a live engine and NUL-terminated strings (NULL checked).
    unsafe {
        assert_eq!(
            fephp_engine_upstream_drain(e, ptr::null(), addr.as_ptr(), true),
            fephp_result::NullParameter
        );
        assert_eq!(
            fephp_engine_upstream_drain(e, pool.as_ptr(), addr.as_ptr(), true),
            fephp_result::InvalidArgument
        );
    }
    assert!(
        last_error().contains("no FastCGI upstream is configured"),
        "{}",
        last_error()
    );
}
