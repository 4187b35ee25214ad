//! A/B testing: routing rules that split traffic by weight, in-process through the
//! library (10,000 fresh clients, stickiness, reload) and over HTTP with curl.

mod common;

use common::*;
use fe_php::engine::{Decision, ReloadableEngine};
use fe_php::http::{Request, Response};
use fe_php::{Config, Engine};
use std::collections::HashMap;

/// Static (examples/public) and FastCGI (a closed port: never contacted, the
/// paths used are not scripts, so both arms answer 404 at once) split 70 / 30 on
/// /app/, by client address 50 / 50 on /ip/; the arm is exposed in a header.
fn config_text(app_split: &str) -> String {
    let root = env!("CARGO_MANIFEST_DIR").to_owned() + "/examples/public";
    format!(
        r#"
[server]
listen = "127.0.0.1:{{port}}"
workers = 2
access_log = "off"

[backend]
default_backend = "static"

[backend.static_files]
enable = true
root = "{root}"

[backend.split]
expose_header = "X-FePHP-Arm"

[[backend.routing_rules]]
pattern = {{ type = "prefix", value = "/app/" }}
split = {app_split}

[[backend.routing_rules]]
pattern = {{ type = "prefix", value = "/ip/" }}
split = [{{ backend = "static", weight = 1 }}, {{ backend = "fastcgi", weight = 1 }}]
sticky = "client_addr"

[php]
libphp_path = "/nonexistent/libphp.so"
fpm_socket = "127.0.0.1:1"
"#
    )
}

const SEVENTY_THIRTY: &str =
    r#"[{ backend = "static", weight = 70 }, { backend = "fastcgi", weight = 30 }]"#;

fn engine(app_split: &str) -> Engine {
    Engine::new(Config::from_toml(&config_text(app_split)).unwrap()).unwrap()
}

fn header(resp: &Response, name: &str) -> Option<String> {
    resp.get_header(name)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn metrics_text(e: &Engine) -> String {
    match e.handle(&Request::get("/_metrics")).body {
        fe_php::http::Body::Bytes(b) => String::from_utf8(b).unwrap(),
        _ => panic!(),
    }
}

#[test]
fn fresh_clients_follow_the_weights_and_cookies_keep_them() {
    let e = engine(SEVENTY_THIRTY);
    let mut counts: HashMap<String, usize> = HashMap::new();
    for i in 0..10_000 {
        let target = format!("/app/page-{i}");
        let resp = e.handle(&Request::get(&target));
        assert_eq!(resp.status, 404);
        let arm = header(&resp, "x-fephp-arm").expect("the arm is exposed");
        assert_eq!(
            header(&resp, "set-cookie").unwrap(),
            format!("fephp_arm={arm}; Path=/; HttpOnly; SameSite=Lax")
        );
        *counts.entry(arm).or_default() += 1;
    }
    let share = |arm: &str| counts.get(arm).copied().unwrap_or(0) as f64 / 100.0;
    assert!((share("static") - 70.0).abs() <= 2.0, "{counts:?}");
    assert!((share("fastcgi") - 30.0).abs() <= 2.0, "{counts:?}");
    let t = metrics_text(&e);
    for (arm, n) in &counts {
        let line = format!("fephp_split_requests_total{{rule=\"1\",arm=\"{arm}\"}} {n}\n");
        assert!(t.contains(&line), "{line} in\n{t}");
    }

    // A client with the cookie stays on its arm, and is not sent another cookie.
    for arm in ["static", "fastcgi"] {
        let cookie = format!("theme=dark; fephp_arm={arm}");
        for i in 0..100 {
            let target = format!("/app/{i}");
            let mut req = Request::get(&target);
            req.headers = vec![(b"Cookie", cookie.as_bytes())];
            let resp = e.handle(&req);
            assert_eq!(header(&resp, "x-fephp-arm").as_deref(), Some(arm));
            assert_eq!(header(&resp, "set-cookie"), None);
        }
    }
    // A cookie naming no arm of the rule is replaced.
    let mut req = Request::get("/app/x");
    req.headers = vec![(b"Cookie", b"fephp_arm=embedded")];
    let resp = e.handle(&req);
    let arm = header(&resp, "x-fephp-arm").unwrap();
    assert_eq!(
        header(&resp, "set-cookie").unwrap(),
        format!("fephp_arm={arm}; Path=/; HttpOnly; SameSite=Lax")
    );
    // Outside the rule nothing changes.
    let resp = e.handle(&Request::get("/index.html"));
    assert_eq!(resp.status, 200);
    assert_eq!(header(&resp, "set-cookie"), None);
    assert_eq!(header(&resp, "x-fephp-arm"), None);

    // fephp_route has no request to keep: the heaviest arm.
    match e.route("/app/x").unwrap() {
        Decision::Backend(r) => assert_eq!(r.backend.name(), "static"),
        d => panic!("{d:?}"),
    }
}

#[test]
fn client_address_keeps_a_client_on_its_arm() {
    let e = engine(SEVENTY_THIRTY);
    let mut per_arm: HashMap<String, usize> = HashMap::new();
    for i in 0..2000 {
        let addr = format!("10.{}.{}.{}", i % 7, i / 256, i % 256);
        let mut first = None;
        for _ in 0..5 {
            let mut req = Request::get("/ip/x");
            req.remote_addr = &addr;
            let resp = e.handle(&req);
            assert_eq!(
                header(&resp, "set-cookie"),
                None,
                "no cookie in client_addr mode"
            );
            let arm = header(&resp, "x-fephp-arm").unwrap();
            assert_eq!(first.get_or_insert(arm.clone()), &arm, "{addr}");
        }
        *per_arm.entry(first.unwrap()).or_default() += 1;
    }
    let s = per_arm["static"] as f64 / 20.0;
    assert!((s - 50.0).abs() <= 5.0, "{per_arm:?}");
}

#[test]
fn a_reload_that_removes_an_arm_reassigns_its_clients() {
    let text = config_text(SEVENTY_THIRTY);
    let r = ReloadableEngine::new(Config::from_toml(&text).unwrap()).unwrap();
    let ask = |r: &ReloadableEngine, cookie: &str| {
        let mut req = Request::get("/app/x");
        req.headers = vec![(b"Cookie", cookie.as_bytes())];
        let resp = r.current().handle(&req);
        (
            header(&resp, "x-fephp-arm").unwrap(),
            header(&resp, "set-cookie"),
        )
    };
    assert_eq!(ask(&r, "fephp_arm=fastcgi"), ("fastcgi".to_owned(), None));
    r.reload(Config::from_toml(&config_text(r#"[{ backend = "static", weight = 1 }]"#)).unwrap())
        .unwrap();
    assert_eq!(
        ask(&r, "fephp_arm=fastcgi"),
        (
            "static".to_owned(),
            Some("fephp_arm=static; Path=/; HttpOnly; SameSite=Lax".to_owned())
        )
    );
    // The new cookie keeps it there.
    assert_eq!(ask(&r, "fephp_arm=static"), ("static".to_owned(), None));
}

#[test]
fn over_http_with_curl() {
    let host = Host::start(&config_text(SEVENTY_THIRTY), |_| {});
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut jar = None;
    for i in 0..200 {
        let r = get(&host.url(&format!("/app/{i}")));
        let arm = r.header("x-fephp-arm").unwrap().to_owned();
        let cookie = r.header("set-cookie").unwrap();
        assert_eq!(
            cookie,
            format!("fephp_arm={arm}; Path=/; HttpOnly; SameSite=Lax")
        );
        if arm == "fastcgi" {
            jar.get_or_insert(format!("fephp_arm={arm}"));
        }
        *counts.entry(arm).or_default() += 1;
    }
    // 200 draws at 30%: 60 expected, more than 10 standard deviations from 0 and 200.
    let fastcgi = counts.get("fastcgi").copied().unwrap_or(0);
    assert!((30..=90).contains(&fastcgi), "{counts:?}");
    let jar = jar.unwrap();
    for i in 0..20 {
        let r = curl(&["-b", &jar, &host.url(&format!("/app/{i}"))]);
        assert_eq!(r.header("x-fephp-arm"), Some("fastcgi"));
        assert!(r.header("set-cookie").is_none());
    }
    let t = get(&host.url("/_metrics")).text();
    let counted: f64 = ["static", "fastcgi"]
        .iter()
        .filter_map(|arm| {
            let series = format!("fephp_split_requests_total{{rule=\"1\",arm=\"{arm}\"}} ");
            t.lines().find_map(|l| l.strip_prefix(series.as_str()))
        })
        .map(|v| v.parse::<f64>().unwrap())
        .sum();
    assert_eq!(counted, 220.0, "{t}");
}

#[test]
fn a_split_needs_every_arm_available() {
    let bad =
        config_text(r#"[{ backend = "static", weight = 70 }, { backend = "proxy", weight = 30 }]"#);
    let e = Engine::new(Config::from_toml(&bad).unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("Routing rule #1 (prefix \"/app/\") split arm #2 uses backend 'proxy', which is not registered."), "{e}");
    let mut check = std::process::Command::new(HOST_BIN);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, bad.replace("{port}", "1")).unwrap();
    let out = check
        .arg("--check")
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("split arm #2 uses backend 'proxy', which is not registered."),
        "{text}"
    );
}
