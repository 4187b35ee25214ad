//! Request bodies through the C ABI as a C host passes them: in memory (`body`,
//! `body_len`) or pulled by the library (`body_read`), with embedded PHP in this
//! process. CONTENT_LENGTH is the size of the body given, never the header's.

use fe_php::ffi::*;
use std::ffi::{c_void, CString};
use std::ptr;
use std::sync::Mutex;

fn s(text: &str) -> fephp_str {
    fephp_str {
        ptr: text.as_ptr() as *const _,
        len: text.len(),
    }
}

/// A body served by `read_body`, recording the threads that read it.
struct Source {
    data: Vec<u8>,
    pos: usize,
    threads: Mutex<Vec<String>>,
}

unsafe extern "C" fn read_body(ctx: *mut c_void, buf: *mut u8, cap: usize) -> isize {
    let src = &mut *(ctx as *mut Source);
    let name = std::thread::current().name().unwrap_or("?").to_owned();
    src.threads.lock().unwrap().push(name);
    let n = (src.data.len() - src.pos).min(cap);
    ptr::copy_nonoverlapping(src.data[src.pos..].as_ptr(), buf, n);
    src.pos += n;
    n as isize
}

/// Runs a POST to `/len.php` with a `Content-Length: 100` header and the body as
/// given, and returns what the script printed.
unsafe fn post(
    engine: *const fephp_engine,
    body: Option<&[u8]>,
    source: Option<&mut Source>,
) -> String {
    let headers = [
        fephp_header {
            name: s("Host"),
            value: s("x"),
        },
        fephp_header {
            name: s("Content-Type"),
            value: s("application/octet-stream"),
        },
        fephp_header {
            name: s("Content-Length"),
            value: s("100"),
        },
    ];
    let (body_ptr, body_len, read, ctx) = match (body, source) {
        (Some(b), _) => (b.as_ptr(), b.len(), None, ptr::null_mut()),
        (None, Some(src)) => (
            ptr::null(),
            src.data.len(),
            Some(read_body as unsafe extern "C" fn(*mut c_void, *mut u8, usize) -> isize),
            src as *mut Source as *mut c_void,
        ),
        (None, None) => (ptr::null(), 0, None, ptr::null_mut()),
    };
    let req = fephp_request {
        method: s("POST"),
        target: s("/len.php"),
        protocol: s("HTTP/1.1"),
        headers: headers.as_ptr(),
        header_count: headers.len(),
        body: body_ptr,
        body_len,
        body_read: read,
        body_read_ctx: ctx,
        remote_addr: s("127.0.0.1"),
        remote_port: 1,
        local_addr: s("127.0.0.1"),
        local_port: 80,
        tls: false,
    };
    let mut resp = ptr::null_mut();
    assert_eq!(
        fephp_handle_request(engine, &req, &mut resp),
        fephp_result::Ok
    );
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let mut n = 0;
        assert_eq!(
            fephp_response_body_read(resp, buf.as_mut_ptr(), buf.len(), &mut n),
            fephp_result::Ok
        );
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(
        fephp_response_status(resp),
        200,
        "{}",
        String::from_utf8_lossy(&out)
    );
    fephp_response_free(resp);
    String::from_utf8(out).unwrap()
}

#[test]
fn content_length_is_the_body_given_and_body_read_feeds_php() {
    if !std::path::Path::new("/usr/lib/libphp.so").exists() {
        eprintln!("libphp is not installed: nothing to test");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("len.php"),
        "<?php $in = file_get_contents('php://input'); echo $_SERVER['CONTENT_LENGTH'], '|', strlen($in), '|', md5($in);",
    )
    .unwrap();
    let toml = CString::new(format!(
        "[backend]\ndefault_backend = \"embedded\"\n[backend.static_files]\nenable = true\nroot = \"{}\"\n[php.ini]\npost_max_size = \"16M\"\nupload_tmp_dir = \"{}\"\n",
        dir.path().display(),
        dir.path().display()
    ))
    .unwrap();
    unsafe {
        let mut engine = ptr::null();
        assert_eq!(
            fephp_init(ptr::null(), toml.as_ptr(), &mut engine),
            fephp_result::Ok
        );
        assert_eq!(fephp_worker_start(engine), fephp_result::Ok);

        // A body shorter than its header says: PHP is told (and reads) 3 bytes.
        let out = post(engine, Some(b"abc"), None);
        assert!(out.starts_with("3|3|"), "{out}");

        // The same through body_read, small and large. With the runner pool a
        // small body is read while the request is handed over, a large one on a
        // library thread that copies it for the runner; never after the response.
        for data in [
            b"hello".to_vec(),
            (0..300_000u32).map(|i| (i % 251) as u8).collect(),
        ] {
            let mut src = Source {
                data: data.clone(),
                pos: 0,
                threads: Mutex::new(Vec::new()),
            };
            let out = post(engine, None, Some(&mut src));
            let want = format!("{}|{}|", data.len(), data.len());
            assert!(out.starts_with(&want), "{out}");
            let threads = src.threads.lock().unwrap();
            assert!(!threads.is_empty());
            if data.len() > 64 * 1024 {
                assert!(threads.iter().all(|t| t == "php-body"), "{threads:?}");
            }
        }

        // body and body_read together are refused.
        let mut src = Source {
            data: b"x".to_vec(),
            pos: 0,
            threads: Mutex::new(Vec::new()),
        };
        let mut req_body = *b"y";
        let headers = [fephp_header {
            name: s("Host"),
            value: s("x"),
        }];
        let req = fephp_request {
            method: s("POST"),
            target: s("/len.php"),
            protocol: s("HTTP/1.1"),
            headers: headers.as_ptr(),
            header_count: 1,
            body: req_body.as_mut_ptr(),
            body_len: 1,
            body_read: Some(read_body),
            body_read_ctx: &mut src as *mut Source as *mut c_void,
            remote_addr: s("127.0.0.1"),
            remote_port: 1,
            local_addr: s("127.0.0.1"),
            local_port: 80,
            tls: false,
        };
        let mut resp = ptr::null_mut();
        assert_eq!(
            fephp_handle_request(engine, &req, &mut resp),
            fephp_result::InvalidArgument
        );
        fephp_engine_free(engine);
    }
}
