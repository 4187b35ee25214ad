//! `[server]` as fe-php-host reads it (these tests were the library's while it
//! read `[server]`; the messages are the same word for word).

use super::*;

fn parse(text: &str) -> ServerConfig {
    ServerConfig::from_toml(text, "file test.toml").unwrap()
}

fn problems(text: &str) -> String {
    match ServerConfig::from_toml(text, "file test.toml") {
        Ok(s) => panic!("accepted: {s:?}"),
        Err(e) => e.message(),
    }
}

/// The library's sections around it are not the host's business.
#[test]
fn reads_server_and_leaves_the_rest() {
    let s = parse(
        r#"
        [server]
        workers = 16
        listen = "0.0.0.0:9090"
        [backend]
        enable_hybrid = true
        default_backend = "static"
        [[backend.routing_rules]]
        pattern = { type = "exact", value = "/_health" }
        backend = "embedded"
        [php]
        libphp_path = "/nonexistent/libphp.so"
        no_such_php_key = 1
        [php.ini]
        memory_limit = "256M"
        "#,
    );
    assert_eq!(s.workers, 16);
    assert_eq!(s.worker_count(), 16);
    assert_eq!(s.listen, "0.0.0.0:9090");
}

#[test]
fn defaults() {
    let s = parse("");
    assert_eq!(s, ServerConfig::default());
    assert_eq!(s.listen, DEFAULT_LISTEN);
    assert_eq!(s.access_log, "-");
    assert_eq!(s.workers, 0);
    assert!(s.worker_count() >= 1);
    assert_eq!(parse("[php]\nuse_fpm = true\n"), ServerConfig::default());
}

#[test]
fn unknown_keys_and_wrong_types_name_key_and_line() {
    let e = problems("[server]\nworkers = 2\nlistn = \"x\"\n");
    assert!(
        e.starts_with("invalid configuration file test.toml: "),
        "{e}"
    );
    assert!(e.contains("line 3"), "{e}");
    assert!(e.contains("unknown field `listn`"), "{e}");
    let e = problems("[server]\n\nworkers = \"two\"\n");
    assert!(e.contains("line 3"), "{e}");
    assert!(e.contains("invalid type"), "{e}");
    let e = problems("server = 5\n");
    assert!(e.contains("line 1") && e.contains("invalid type"), "{e}");
    // Not TOML: the library says so (fephp_init reads the same file).
    assert!(matches!(
        ServerConfig::from_toml("[server]\nworkers = \n", "file test.toml"),
        Err(Refused::Unreadable(m)) if m.starts_with("invalid configuration file test.toml: TOML parse error at line 2")
    ));
    assert!(matches!(
        ServerConfig::from_file("/no/such/file.toml"),
        Err(Refused::Unreadable(m)) if m.starts_with("cannot read configuration file /no/such/file.toml: ")
    ));
}

#[test]
fn server_limits_defaults_and_forms() {
    let server = parse("");
    assert_eq!(server.header_read_timeout.0, Duration::from_secs(10));
    assert_eq!(server.body_read_timeout.0, Duration::from_secs(60));
    assert_eq!(server.keepalive_timeout.0, Duration::from_secs(75));
    assert_eq!(server.send_timeout.0, Duration::from_secs(60));
    assert_eq!(server.max_header_size.0, 128 << 10);
    assert_eq!(server.max_body_size.0, 64 << 20);
    assert_eq!(server.max_connections, 10_000);
    assert_eq!((server.user, server.group), (None, None));
    let server = parse(
        "[server]\nheader_read_timeout = \"500ms\"\nbody_read_timeout = \"2m\"\nkeepalive_timeout = \"5s\"\nsend_timeout = \"3s\"\nmax_header_size = \"8k\"\nmax_body_size = 1048576\nmax_connections = 3\nuser = \"www-data\"\ngroup = \"nogroup\"\n",
    );
    assert_eq!(server.header_read_timeout.0, Duration::from_millis(500));
    assert_eq!(server.body_read_timeout.0, Duration::from_secs(120));
    assert_eq!(server.keepalive_timeout.0, Duration::from_secs(5));
    assert_eq!(server.send_timeout.0, Duration::from_secs(3));
    assert_eq!(server.max_header_size.0, 8192);
    assert_eq!(server.max_body_size.0, 1 << 20);
    assert_eq!(server.max_connections, 3);
    assert_eq!(server.user.as_deref(), Some("www-data"));
    assert_eq!(server.group.as_deref(), Some("nogroup"));
}

#[test]
fn sizes_are_bytes_or_have_a_binary_unit() {
    for (value, why) in [
        ("\"64 MB\"", "invalid size \"64 MB\": write a number of bytes or a whole number with K, M or G, e.g. \"16K\", \"64M\" or \"1G\""),
        ("\"64MB\"", "invalid size \"64MB\": write a number of bytes"),
        ("\"1.5M\"", "invalid size \"1.5M\": write a number of bytes"),
        ("\"M\"", "invalid size \"M\": write a number of bytes"),
        ("\"1T\"", "invalid size \"1T\": write a number of bytes"),
        ("\"99999999999G\"", "invalid size \"99999999999G\": too large"),
        ("-1", "invalid size -1: sizes cannot be negative"),
        ("1.5", "invalid size 1.5: write a whole number of bytes or e.g. \"1536K\""),
    ] {
        let e = problems(&format!("[server]\nmax_body_size = {value}\n"));
        assert!(e.contains(why), "{value}: {e}");
        assert!(e.contains("line 2"), "{value}: {e}");
    }
    let e = problems("[server]\nkeepalive_timeout = 75\n");
    assert!(
        e.contains("durations need a unit: write \"75s\" (or \"500ms\", \"2m\"), not 75"),
        "{e}"
    );
}

#[test]
fn server_limits_are_validated() {
    let base = "[backend]\ndefault_backend = \"static\"\n[server]\n";
    for (keys, want) in [
        ("max_header_size = 512", "[server] max_header_size = 512 is out of range: use \"1K\" to \"1M\".\n    It bounds the request line and headers together; the default is \"128K\"."),
        ("max_header_size = \"2M\"", "[server] max_header_size = \"2M\" is out of range: use \"1K\" to \"1M\"."),
        ("max_body_size = 0", "[server] max_body_size = 0 is out of range: use at least 1 byte, e.g. \"64M\".\n    Bodies are held in memory before the backend runs, so there is no \"unlimited\"."),
        ("max_connections = 0", "[server] max_connections = 0 is out of range: use 1 to 1000000.\n    It bounds the connections each worker process serves at once."),
        ("max_connections = 1000001", "[server] max_connections = 1000001 is out of range"),
        ("user = \"\"", "[server] user \"\" is not a user name.\n    Name an existing user, e.g. user = \"www-data\", or remove the key."),
        ("user = \"www data\"", "[server] user \"www data\" is not a user name."),
        ("user = \"a:b\"", "[server] user \"a:b\" is not a user name."),
        ("user = \"www-data\"\ngroup = \"\\n\"", "[server] group \"\\n\" is not a group name."),
        ("group = \"www-data\"", "[server] group is set without [server] user.\n    Workers change their group together with their user: add user = \"www-data\" (group defaults to the user's own)."),
    ] {
        let e = problems(&format!("{base}{keys}\n"));
        assert!(e.contains(want), "{keys}: {e}");
    }
    let s = parse(&format!(
        "{base}max_header_size = \"1K\"\nmax_body_size = 1\nmax_connections = 1\nuser = \"nobody\"\ngroup = \"nogroup\"\n"
    ));
    assert_eq!(s.max_header_size.0, 1024);
    parse(&format!(
        "{base}max_header_size = \"1M\"\nmax_connections = 1000000\n"
    ));
}

#[test]
fn every_problem_is_reported_at_once() {
    let e = ServerConfig::from_toml(
        "[server]\nmax_body_size = 0\nmax_connections = 0\ngroup = \"x\"\n",
        "file test.toml",
    )
    .unwrap_err();
    let Refused::Invalid(problems) = e else {
        panic!("{e:?}")
    };
    assert_eq!(problems.len(), 3, "{problems:?}");
}

/// The shipped example files give the host a usable `[server]`.
#[test]
fn shipped_examples_parse() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    for name in [
        "hybrid_backend_config.toml",
        "demo.toml",
        "ab_split.toml",
        "proxy.toml",
        "c/demo.toml",
    ] {
        ServerConfig::from_file(&format!("{dir}/{name}"))
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }
}
