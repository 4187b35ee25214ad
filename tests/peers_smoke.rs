//! The differential harness checked against itself: nginx + php-fpm (TCP and Unix
//! socket) on `tests/php` give the reference answers, and `compare` accepts a server
//! compared with itself and with the other transport.

mod common;

use common::diff::*;
use common::peers::*;
use common::Reply;
use serde_json::Value;

fn stack(listen: FpmListen) -> (PhpFpm, Nginx) {
    let docroot = fixture_docroot();
    let fpm = PhpFpm::start(&docroot, listen);
    let nginx = Nginx::start(&docroot, &fpm);
    (fpm, nginx)
}

fn json(reply: &Reply) -> Value {
    serde_json::from_slice(&reply.body).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&reply.body[..reply.body.len().min(300)])
        )
    })
}

/// What the reference stack must answer beyond the status: the facts the fe-php
/// comparison relies on. Returns the failures.
fn check_semantics(case: &Case, r: &Reply, port: u16) -> Vec<String> {
    let mut errs = Vec::new();
    let mut expect = |what: &str, ok: bool, got: String| {
        if !ok {
            errs.push(format!("case {}: expected {what}, got {got}", case.name));
        }
    };
    let dump = || json(r);
    let s = |v: &Value, path: &str| v.pointer(path).cloned().unwrap_or(Value::Null);
    match case.name.as_str() {
        "get_plain" => {
            let d = dump();
            for (key, want) in [
                ("/server/REQUEST_METHOD", "GET"),
                ("/server/SCRIPT_NAME", "/dump.php"),
                ("/server/PHP_SELF", "/dump.php"),
                ("/server/DOCUMENT_URI", "/dump.php"),
                ("/server/GATEWAY_INTERFACE", "CGI/1.1"),
                ("/server/REQUEST_SCHEME", "http"),
                ("/server/REDIRECT_STATUS", "200"),
                ("/server/SERVER_NAME", "127.0.0.1"),
                ("/server/REMOTE_ADDR", "127.0.0.1"),
                ("/server/QUERY_STRING", ""),
                // Debian's fastcgi.conf and the PATH_INFO line send these even when
                // empty: present as "", not absent.
                ("/server/PATH_INFO", ""),
                ("/server/CONTENT_TYPE", ""),
                ("/server/CONTENT_LENGTH", ""),
            ] {
                expect(
                    &format!("{key} = {want:?}"),
                    s(&d, key) == want,
                    s(&d, key).to_string(),
                );
            }
            let host = format!("127.0.0.1:{port}");
            expect(
                "HTTP_HOST with port",
                s(&d, "/server/HTTP_HOST") == host.as_str(),
                s(&d, "/server/HTTP_HOST").to_string(),
            );
            expect(
                "SERVER_PORT",
                s(&d, "/server/SERVER_PORT") == port.to_string().as_str(),
                s(&d, "/server/SERVER_PORT").to_string(),
            );
            let script = fixture_docroot().join("dump.php").display().to_string();
            expect(
                "SCRIPT_FILENAME",
                s(&d, "/server/SCRIPT_FILENAME") == script.as_str(),
                s(&d, "/server/SCRIPT_FILENAME").to_string(),
            );
            // Absent keys are null, not "" (no PATH_TRANSLATED: fastcgi.conf does not set it).
            for key in [
                "/server/HTTPS",
                "/server/PHP_AUTH_USER",
                "/server/PATH_TRANSLATED",
            ] {
                expect(
                    &format!("{key} absent"),
                    s(&d, key).is_null(),
                    s(&d, key).to_string(),
                );
            }
        }
        "get_query_utf8_plus_repeated" => {
            let d = dump();
            for (key, want) in [
                ("/get/q", Value::from("café")),
                ("/get/emoji", Value::from("🐘")),
                ("/get/plus", Value::from("a b")),
                ("/get/enc", Value::from("a+b")),
                ("/get/r", Value::from("2")),
                ("/get/a", serde_json::json!(["1", "2"])),
                ("/get/empty", Value::from("")),
                ("/get/flag", Value::from("")),
            ] {
                expect(
                    &format!("{key} = {want}"),
                    s(&d, key) == want,
                    s(&d, key).to_string(),
                );
            }
            let raw = case.target.split_once('?').unwrap().1;
            expect(
                "raw QUERY_STRING",
                s(&d, "/server/QUERY_STRING") == raw,
                s(&d, "/server/QUERY_STRING").to_string(),
            );
            expect(
                "raw REQUEST_URI",
                s(&d, "/server/REQUEST_URI") == case.target.as_str(),
                s(&d, "/server/REQUEST_URI").to_string(),
            );
        }
        "head" => expect(
            "empty HEAD body",
            r.body.is_empty(),
            format!("{} bytes", r.body.len()),
        ),
        "post_urlencoded" => {
            let d = dump();
            expect(
                "post.name",
                s(&d, "/post/name") == "Zoë + friends",
                s(&d, "/post/name").to_string(),
            );
            expect(
                "post.list",
                s(&d, "/post/list") == serde_json::json!(["1", "2"]),
                s(&d, "/post/list").to_string(),
            );
            expect(
                "post.amp",
                s(&d, "/post/amp") == "a&b=c",
                s(&d, "/post/amp").to_string(),
            );
            expect(
                "get.via",
                s(&d, "/get/via") == "query",
                s(&d, "/get/via").to_string(),
            );
        }
        "post_multipart" => {
            let d = dump();
            let big = big_upload();
            expect(
                "upload size",
                s(&d, "/files/upload/size") == big.len(),
                s(&d, "/files/upload").to_string(),
            );
            expect(
                "upload error 0",
                s(&d, "/files/upload/error") == 0,
                s(&d, "/files/upload/error").to_string(),
            );
            let md5 = md5_hex(&big);
            expect(
                "upload md5",
                s(&d, "/files/upload/md5") == md5.as_str(),
                s(&d, "/files/upload/md5").to_string(),
            );
            expect(
                "small md5",
                s(&d, "/files/small/md5") == md5_hex(b"small file\n").as_str(),
                s(&d, "/files/small").to_string(),
            );
            expect(
                "small type",
                s(&d, "/files/small/type") == "text/plain",
                s(&d, "/files/small/type").to_string(),
            );
            expect(
                "field title",
                s(&d, "/post/title") == "Hello multipart",
                s(&d, "/post").to_string(),
            );
            expect(
                "field note",
                s(&d, "/post/note") == "ünïcode ✓",
                s(&d, "/post").to_string(),
            );
            expect(
                "no php://input for multipart",
                s(&d, "/input/length") == 0,
                s(&d, "/input").to_string(),
            );
            let ct = s(&d, "/server/CONTENT_TYPE");
            expect(
                "multipart CONTENT_TYPE",
                ct.as_str()
                    .is_some_and(|c| c.starts_with("multipart/form-data; boundary=")),
                ct.to_string(),
            );
        }
        "post_json" | "put_text" | "delete_json" => {
            let d = dump();
            let Body::Raw {
                bytes,
                content_type,
            } = &case.body
            else {
                unreachable!()
            };
            expect(
                "input length",
                s(&d, "/input/length") == bytes.len(),
                s(&d, "/input").to_string(),
            );
            expect(
                "input md5",
                s(&d, "/input/md5") == md5_hex(bytes).as_str(),
                s(&d, "/input").to_string(),
            );
            expect(
                "CONTENT_TYPE",
                s(&d, "/server/CONTENT_TYPE") == content_type.as_str(),
                s(&d, "/server/CONTENT_TYPE").to_string(),
            );
            expect(
                "CONTENT_LENGTH",
                s(&d, "/server/CONTENT_LENGTH") == bytes.len().to_string().as_str(),
                s(&d, "/server/CONTENT_LENGTH").to_string(),
            );
            expect(
                "empty $_POST",
                s(&d, "/post") == serde_json::json!({}),
                s(&d, "/post").to_string(),
            );
            expect(
                "method",
                s(&d, "/server/REQUEST_METHOD") == case.method.as_str(),
                s(&d, "/server/REQUEST_METHOD").to_string(),
            );
        }
        "patch_form" => {
            let d = dump();
            // PHP fills $_POST for POST only.
            expect(
                "empty $_POST",
                s(&d, "/post") == serde_json::json!({}),
                s(&d, "/post").to_string(),
            );
            expect(
                "input",
                s(&d, "/input/length") == "field=new+value".len(),
                s(&d, "/input").to_string(),
            );
        }
        "cookies_in" => {
            let d = dump();
            expect(
                "cookie",
                s(&d, "/cookie") == serde_json::json!({"a": "1", "b": "two words"}),
                s(&d, "/cookie").to_string(),
            );
        }
        "path_info" => {
            let d = dump();
            for (key, want) in [
                ("/server/PATH_INFO", "/extra/path"),
                ("/server/SCRIPT_NAME", "/dump.php"),
                ("/server/PHP_SELF", "/dump.php/extra/path"),
                ("/server/REQUEST_URI", "/dump.php/extra/path?x=1"),
                ("/server/QUERY_STRING", "x=1"),
            ] {
                expect(
                    &format!("{key} = {want:?}"),
                    s(&d, key) == want,
                    s(&d, key).to_string(),
                );
            }
        }
        "path_info_utf8" => {
            let d = dump();
            expect(
                "decoded PATH_INFO",
                s(&d, "/server/PATH_INFO") == "/café/x y",
                s(&d, "/server/PATH_INFO").to_string(),
            );
        }
        "basic_auth" => {
            let d = dump();
            expect(
                "PHP_AUTH_USER",
                s(&d, "/server/PHP_AUTH_USER") == "alice",
                s(&d, "/server").to_string(),
            );
            expect(
                "PHP_AUTH_PW",
                s(&d, "/server/PHP_AUTH_PW") == "open sesame",
                s(&d, "/server").to_string(),
            );
        }
        "custom_header" => {
            let d = dump();
            expect(
                "HTTP_X_CUSTOM_THING",
                s(&d, "/http/HTTP_X_CUSTOM_THING") == "v",
                s(&d, "/http").to_string(),
            );
            expect(
                "getallheaders",
                s(&d, "/headers/x-custom-thing") == "v",
                s(&d, "/headers").to_string(),
            );
        }
        "underscore_no_spoof" => {
            let d = dump();
            expect(
                "HTTP_X_SPOOF = real",
                s(&d, "/http/HTTP_X_SPOOF") == "real",
                s(&d, "/http").to_string(),
            );
        }
        "httpoxy" => {
            let d = dump();
            let p = s(&d, "/http/HTTP_PROXY");
            expect(
                "HTTP_PROXY absent or empty",
                p.is_null() || p == "",
                p.to_string(),
            );
        }
        "redirect" => {
            let loc = r.header("Location").map(|l| normalize_location(l, port));
            expect(
                "Location",
                loc.as_deref() == Some("/dump.php?from=redirect"),
                format!("{loc:?}"),
            );
        }
        "dir_no_slash" => {
            let loc = r.header("Location").map(|l| normalize_location(l, port));
            expect(
                "Location keeps the query",
                loc.as_deref() == Some("/sub/?q=1"),
                format!("{loc:?}"),
            );
        }
        "dir_index" | "dir_index_query" => {
            expect(
                "sub/index.php ran",
                r.text().contains("SCRIPT_NAME=/sub/index.php"),
                r.text(),
            );
        }
        "cookies_out" => {
            let c = header_values(r, "Set-Cookie");
            expect("3 Set-Cookie", c.len() == 3, format!("{c:?}"));
        }
        "headers" => {
            expect(
                "X-Multi a, b",
                header_values(r, "X-Multi") == ["a", "b"],
                format!("{:?}", r.headers),
            );
            expect(
                "X-Removed removed",
                r.header("X-Removed").is_none(),
                format!("{:?}", r.headers),
            );
            expect(
                "X-Replaced replaced",
                header_values(r, "X-Replaced") == ["second"],
                format!("{:?}", r.headers),
            );
        }
        "large" => expect(
            "2 MiB body",
            r.body.len() == 2 << 20,
            r.body.len().to_string(),
        ),
        "hello" => expect("Hello, World!", r.body == b"Hello, World!", r.text()),
        "exit" => expect(
            "output before exit only",
            r.body == b"before exit\n",
            r.text(),
        ),
        "static_upload" => {
            let want = std::fs::read(fixture_docroot().join("uploads/a.jpg")).unwrap();
            expect("a.jpg bytes", r.body == want, r.text());
            expect(
                "image/jpeg",
                r.header("Content-Type") == Some("image/jpeg"),
                format!("{:?}", r.header("Content-Type")),
            );
        }
        "no_exec_upload" => expect(
            "a.jpg not executed",
            !r.text().contains("EXECUTED"),
            r.text(),
        ),
        _ => {}
    }
    errs
}

fn check_reference_stack(listen: FpmListen) {
    let (fpm, nginx) = stack(listen);
    let base = nginx.base_url();
    let cases = standard_cases();
    let mut failures = Vec::new();
    for case in &cases {
        match send(case, &base) {
            Ok(reply) => {
                failures.extend(check_expected(case, &reply).err());
                failures.extend(check_semantics(case, &reply, nginx.port()));
            }
            Err(e) => failures.push(format!("case {}: {e}", case.name)),
        }
    }
    // Sanity: the comparison accepts the reference compared with itself.
    failures.extend(run_all(&base, &base, &cases));
    assert!(
        failures.is_empty(),
        "{} failure(s) over {listen:?}:\n{}\n--- nginx log:\n{}\n--- php-fpm log:\n{}",
        failures.len(),
        failures.join("\n"),
        nginx.error_log(),
        fpm.error_log()
    );
}

#[test]
fn reference_stack_over_tcp() {
    check_reference_stack(FpmListen::Tcp);
}

#[test]
fn reference_stack_over_unix_socket() {
    check_reference_stack(FpmListen::Unix);
}

/// The transport to php-fpm is invisible to PHP: two stacks on different ports and
/// transports compare equal (this also exercises the port normalization).
#[test]
fn tcp_and_unix_socket_stacks_agree() {
    let (_fpm_tcp, tcp) = stack(FpmListen::Tcp);
    let (_fpm_unix, unix) = stack(FpmListen::Unix);
    let failures = run_all(&tcp.base_url(), &unix.base_url(), &standard_cases());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `compare` catches real differences and names the case, the field and both values.
#[test]
fn compare_reports_differences() {
    let case = Case::new("probe", "/dump.php");
    let reply = |status: u16, headers: &[(&str, &str)], body: &str| Reply {
        status,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        body: body.as_bytes().to_vec(),
    };
    let a = reply(
        200,
        &[("Content-Type", "application/json")],
        r#"{"server":{"HTTP_HOST":"127.0.0.1:1111","SERVER_PORT":"1111","PATH_INFO":null},"files":{"f":{"tmp":"/tmp/phpAbc"}}}"#,
    );
    let same = reply(
        200,
        &[("Content-Type", "application/json")],
        r#"{"server":{"HTTP_HOST":"127.0.0.1:2222","SERVER_PORT":"2222","PATH_INFO":null},"files":{"f":{"tmp":"/tmp/phpXyz"}}}"#,
    );
    assert_eq!(compare(&case, &a, 1111, &same, 2222), Ok(()));

    let differs = reply(
        201,
        &[("Content-Type", "text/html"), ("X-Extra", "1")],
        r#"{"server":{"HTTP_HOST":"127.0.0.1:2222","SERVER_PORT":"2222","PATH_INFO":""}}"#,
    );
    let err = compare(&case, &a, 1111, &differs, 2222).unwrap_err();
    for needle in [
        "case probe",
        "status: a=200 b=201",
        "header content-type: a=[\"application/json\"] b=[\"text/html\"]",
        "header x-extra: a=[] b=[\"1\"]",
        "body.server.PATH_INFO: a=null b=\"\"",
    ] {
        assert!(err.contains(needle), "{needle:?} not in:\n{err}");
    }

    let head = Case::new("h", "/hello.php").method("HEAD");
    let err = compare(&head, &reply(200, &[], "x"), 1, &reply(200, &[], ""), 2).unwrap_err();
    assert!(err.contains("HEAD body must be empty"), "{err}");

    let exact = Case::new("e", "/hello.php");
    let err = compare(
        &exact,
        &reply(200, &[], "Hello"),
        1,
        &reply(200, &[], "Hellp"),
        2,
    )
    .unwrap_err();
    assert!(err.contains("first difference at byte 4"), "{err}");
}

/// php-fpm can be stopped and started again on the same address (for restart tests).
#[test]
fn fpm_stop_and_start_again() {
    for listen in [FpmListen::Tcp, FpmListen::Unix] {
        let (mut fpm, nginx) = stack(listen);
        let hello = Case::new("hello", "/hello.php");
        assert_eq!(send(&hello, &nginx.base_url()).unwrap().status, 200);
        let address = fpm.address().to_owned();
        fpm.stop();
        assert!(!fpm.is_running());
        assert_eq!(
            send(&hello, &nginx.base_url()).unwrap().status,
            502,
            "{listen:?}"
        );
        fpm.start_again();
        assert_eq!(fpm.address(), address);
        let r = send(&hello, &nginx.base_url()).unwrap();
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "Hello, World!"),
            "{listen:?}"
        );
    }
}

/// Seconds to the first response byte and to the end, as curl measures them.
fn timings(url: &str) -> (f64, f64, String) {
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-S",
            "--max-time",
            "20",
            "-w",
            "\n%{time_starttransfer} %{time_total}",
            url,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, times) = text.rsplit_once('\n').unwrap();
    let mut t = times.split(' ').map(|x| x.parse::<f64>().unwrap());
    (t.next().unwrap(), t.next().unwrap(), body.to_owned())
}

/// The fixtures later tests time against behave as documented behind nginx.
#[test]
fn slow_and_flush_fixtures() {
    let (_fpm, nginx) = stack(FpmListen::Tcp);
    let (_, total, body) = timings(&nginx.url("/slow.php?s=0.3"));
    assert_eq!(body, "slept 0.3\n");
    assert!((0.3..5.0).contains(&total), "slow.php took {total}s");
    // flush.php: the first line arrives at once, the second a second later.
    let (first, total, body) = timings(&nginx.url("/flush.php"));
    assert_eq!(body, "first\nsecond\n");
    assert!(
        first < 0.7 && total >= 0.9,
        "first byte {first}s, total {total}s"
    );
}
