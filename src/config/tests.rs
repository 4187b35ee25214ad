use super::*;
use std::time::Duration;

const BUILT: Built = Built {
    embedded: true,
    fastcgi: true,
};

fn static_root() -> String {
    env!("CARGO_MANIFEST_DIR").to_owned() + "/examples/public"
}

fn parse(text: &str) -> Config {
    Config::from_toml(text).unwrap()
}

fn libphp_present() -> String {
    // Any existing file stands in for libphp: validation only checks presence.
    env!("CARGO_MANIFEST_DIR").to_owned() + "/Cargo.toml"
}

fn err(text: &str, built: Built) -> String {
    parse(text).validate(built).unwrap_err().to_string()
}

#[test]
fn parses_every_seed_key() {
    let c = parse(&format!(
        r#"
        [server]
        workers = 16
        listen = "0.0.0.0:9090"
        [backend]
        enable_hybrid = true
        default_backend = "static"
        [backend.static_files]
        enable = true
        root = "{root}"
        index_files = ["index.html"]
        [[backend.routing_rules]]
        pattern = {{ type = "exact", value = "/_health" }}
        backend = "embedded"
        priority = 100
        [[backend.routing_rules]]
        pattern = {{ type = "regex", value = "^/api/v\\d+/" }}
        backend = "static"
        [php]
        libphp_path = "/nonexistent/libphp.so"
        fpm_socket = "127.0.0.1:9000"
        use_fpm = false
        front_controller = "index.php"
        [php.ini]
        memory_limit = "256M"
        display_errors = false
        max_execution_time = 30
        "#,
        root = static_root()
    ));
    assert_eq!(c.backend.default_backend.as_deref(), Some("static"));
    assert_eq!(c.backend.static_files.index_files, ["index.html"]);
    assert_eq!(c.backend.routing_rules.len(), 2);
    assert_eq!(c.backend.routing_rules[0].priority, 100);
    assert_eq!(c.backend.routing_rules[1].priority, 0);
    assert_eq!(c.backend.routing_rules[1].pattern.kind, PatternKind::Regex);
    assert_eq!(c.backend.routing_rules[1].pattern.value, "^/api/v\\d+/");
    assert_eq!(c.php.ini["memory_limit"].to_string(), "256M");
    assert_eq!(c.php.ini["display_errors"].to_string(), "0");
    assert_eq!(c.php.ini["max_execution_time"].to_string(), "30");
    assert_eq!(c.php.front_controller.as_deref(), Some("index.php"));
}

#[test]
fn defaults() {
    let c = parse("");
    assert!(c.backend.enable_hybrid);
    assert_eq!(c.php.libphp_path, PathBuf::from(DEFAULT_LIBPHP_PATH));
    assert_eq!(c.static_index(), ["index.html", "index.htm"]);
    assert_eq!(c.backend.health_path, "/_health");
}

impl Config {
    fn static_index(&self) -> &[String] {
        &self.backend.static_files.index_files
    }
}

#[test]
fn unknown_keys_and_wrong_types_name_key_and_line() {
    let e = Config::from_toml("[php]\nuse_fpm = true\nfpm_sockt = \"x\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 3"), "{e}");
    assert!(e.contains("unknown field `fpm_sockt`"), "{e}");
    let e = Config::from_toml("[php]\n\nfpm_max_connections = \"two\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 3"), "{e}");
    assert!(e.contains("invalid type"), "{e}");
    let e = Config::from_toml("[servr]\nworkers = 2\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `servr`"), "{e}");
    let e = Config::from_toml("[[backend.routing_rules]]\npattern = { type = \"glob\", value = \"/\" }\nbackend = \"static\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("line 2") && e.contains("unknown variant `glob`"),
        "{e}"
    );
}

#[test]
fn full_hybrid_has_no_message() {
    let v = parse(&format!(
        "[php]\nlibphp_path = \"{}\"\nfpm_socket = \"127.0.0.1:9000\"\n",
        libphp_present()
    ))
    .validate(BUILT)
    .unwrap();
    assert!(v.messages.is_empty(), "{:?}", v.messages);
    assert!(v.embedded.is_available() && v.fastcgi.is_available());
    assert_eq!(v.default_backend, BackendKind::Embedded);
}

#[test]
fn fastcgi_static_only_mode_message() {
    let v = parse(
        "[backend]\ndefault_backend = \"fastcgi\"\n[php]\nlibphp_path = \"/usr/lib/nope/libphp.so\"\nfpm_socket = \"127.0.0.1:9000\"\n",
    )
    .validate(BUILT)
    .unwrap();
    assert_eq!(
        v.messages,
        ["[i] libphp.so not found at: /usr/lib/nope/libphp.so.\n    Embedded backend will not be available (FastCGI/Static only mode)"]
    );
    assert!(!v.embedded.is_available());
    assert_eq!(v.default_backend, BackendKind::FastCgi);
}

#[test]
fn embedded_static_only_mode_message() {
    let v = parse(&format!(
        "[php]\nlibphp_path = \"{}\"\nfpm_socket = \"\"\n",
        libphp_present()
    ))
    .validate(BUILT)
    .unwrap();
    assert_eq!(
        v.messages,
        ["[i] fpm_socket not configured.\n    FastCGI backend will not be available (Embedded/Static only mode)"]
    );
    assert!(!v.fastcgi.is_available());
}

#[test]
fn backends_not_built_yet_say_so() {
    let v = parse(&format!(
        "[backend]\ndefault_backend = \"static\"\n[backend.static_files]\nenable = true\nroot = \"{}\"\n[php]\nlibphp_path = \"{}\"\nfpm_socket = \"127.0.0.1:9000\"\n",
        static_root(),
        libphp_present()
    ))
    .validate(Built { embedded: false, fastcgi: false })
    .unwrap();
    assert_eq!(v.messages.len(), 2);
    assert!(v.messages[0].starts_with("[i] Embedded backend is not built yet"));
    assert!(v.messages[0]
        .ends_with("Embedded backend will not be available (FastCGI/Static only mode)"));
    assert!(v.messages[1].starts_with("[i] FastCGI backend is not built yet"));
}

#[test]
fn default_backend_not_registered() {
    let e = err("[backend]\ndefault_backend = \"xxx\"\n", BUILT);
    assert!(
        e.starts_with("Default backend 'xxx' is not registered\n"),
        "{e}"
    );
    let e = err(
        "[php]\nfpm_socket = \"\"\n[backend]\ndefault_backend = \"fastcgi\"\n",
        BUILT,
    );
    assert!(
        e.contains("Default backend 'fastcgi' is not registered\n"),
        "{e}"
    );
    assert!(e.contains("fpm_socket = \"127.0.0.1:9000\""), "{e}");
    let e = err("[backend]\ndefault_backend = \"static\"\n", BUILT);
    assert!(
        e.contains("Default backend 'static' is not registered\n"),
        "{e}"
    );
}

#[test]
fn non_hybrid_exclusivity() {
    // use_fpm = true needs fpm_socket.
    let e = err(
        "[backend]\nenable_hybrid = false\n[php]\nuse_fpm = true\n",
        BUILT,
    );
    assert!(
        e.contains("[php] fpm_socket is required when enable_hybrid = false and use_fpm = true."),
        "{e}"
    );
    // use_fpm = true with a socket: FastCGI only, default follows it.
    let v = parse(&format!(
        "[backend]\nenable_hybrid = false\n[php]\nuse_fpm = true\nfpm_socket = \"127.0.0.1:9000\"\nlibphp_path = \"{}\"\n",
        libphp_present()
    ))
    .validate(BUILT)
    .unwrap();
    assert!(v.fastcgi.is_available() && !v.embedded.is_available());
    assert_eq!(v.default_backend, BackendKind::FastCgi);
    // use_fpm = false needs libphp.
    let e = err(
        "[backend]\nenable_hybrid = false\n[php]\nlibphp_path = \"/nope/libphp.so\"\n",
        BUILT,
    );
    assert!(e.contains("libphp.so not found at: /nope/libphp.so (required when enable_hybrid = false and use_fpm = false)"), "{e}");
    // use_fpm = false with libphp: embedded only, a fastcgi rule is refused.
    let e = err(
        &format!(
            "[backend]\nenable_hybrid = false\n[[backend.routing_rules]]\npattern = {{ type = \"prefix\", value = \"/admin/\" }}\nbackend = \"fastcgi\"\n[php]\nlibphp_path = \"{}\"\nfpm_socket = \"127.0.0.1:9000\"\n",
            libphp_present()
        ),
        BUILT,
    );
    assert!(
        e.contains(
            "Routing rule #1 (prefix \"/admin/\") uses backend 'fastcgi', which is not registered."
        ),
        "{e}"
    );
}

#[test]
fn rule_problems() {
    let base = format!(
        "[backend]\ndefault_backend = \"static\"\n[backend.static_files]\nenable = true\nroot = \"{}\"\n",
        static_root()
    );
    let e = err(&format!("{base}[[backend.routing_rules]]\npattern = {{ type = \"prefix\", value = \"/api/\" }}\nbackend = \"php\"\n"), BUILT);
    assert!(
        e.contains("Routing rule #1 (prefix \"/api/\") uses backend 'php', which is unknown."),
        "{e}"
    );
    let e = err(&format!("{base}[[backend.routing_rules]]\npattern = {{ type = \"regex\", value = \"^/api/(v\\\\d+\" }}\nbackend = \"static\"\n"), BUILT);
    assert!(
        e.starts_with("Routing rule #1: invalid regex '^/api/(v\\d+': "),
        "{e}"
    );
    assert!(e.contains("unclosed group"), "{e}");
    let e = err(&format!("{base}[[backend.routing_rules]]\npattern = {{ type = \"exact\", value = \"api\" }}\nbackend = \"static\"\n"), BUILT);
    assert!(e.contains("must start with '/'"), "{e}");
}

#[test]
fn static_root_problems() {
    let e = err(
        "[backend]\ndefault_backend = \"static\"\n[backend.static_files]\nenable = true\n",
        BUILT,
    );
    assert!(
        e.contains("[backend.static_files] root is required when enable = true."),
        "{e}"
    );
    let e = err("[backend]\ndefault_backend = \"static\"\n[backend.static_files]\nenable = true\nroot = \"/no/such/dir\"\n", BUILT);
    assert!(
        e.contains("root /no/such/dir is not a readable directory"),
        "{e}"
    );
}

#[test]
fn fastcgi_keys_and_defaults() {
    let php = parse("").php;
    assert_eq!(php.fpm_max_connections, 8);
    assert_eq!(php.fpm_connect_timeout.0, Duration::from_secs(5));
    assert_eq!(php.fpm_read_timeout.0, Duration::from_secs(60));
    assert_eq!(php.fpm_send_timeout.0, Duration::from_secs(60));
    assert_eq!(php.fpm_idle_timeout.0, Duration::from_secs(30));
    assert_eq!(php.fpm_ping_path, None);
    let php = parse(
        "[php]\nfpm_max_connections = 4\nfpm_connect_timeout = \"500ms\"\nfpm_read_timeout = \"2m\"\nfpm_send_timeout = \"10s\"\nfpm_idle_timeout = \"1s\"\nfpm_ping_path = \"/ping\"\n",
    )
    .php;
    assert_eq!(php.fpm_max_connections, 4);
    assert_eq!(php.fpm_connect_timeout.0, Duration::from_millis(500));
    assert_eq!(php.fpm_read_timeout.0, Duration::from_secs(120));
    assert_eq!(php.fpm_send_timeout.0, Duration::from_secs(10));
    assert_eq!(php.fpm_idle_timeout.0, Duration::from_secs(1));
    assert_eq!(php.fpm_ping_path.as_deref(), Some("/ping"));
    assert_eq!(php.fpm_connect_timeout.to_string(), "500ms");
    assert_eq!(php.fpm_read_timeout.to_string(), "120s");
}

#[test]
fn durations_need_a_unit() {
    let e = Config::from_toml("[php]\n\nfpm_read_timeout = 60\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 3"), "{e}");
    assert!(e.contains("fpm_read_timeout = 60"), "{e}");
    assert!(
        e.contains("durations need a unit: write \"60s\" (or \"500ms\", \"2m\"), not 60"),
        "{e}"
    );
    for (value, why) in [
        ("\"5 sec\"", "invalid duration \"5 sec\": write a whole number with a unit, e.g. \"500ms\", \"5s\" or \"2m\""),
        ("\"1.5s\"", "invalid duration \"1.5s\": write a whole number with a unit"),
        ("\"s\"", "invalid duration \"s\": write a whole number"),
        ("\"0s\"", "invalid duration \"0s\": it must be more than 0"),
        ("\"1441m\"", "invalid duration \"1441m\": at most 24 hours (\"1440m\")"),
        ("1.5", "durations need a unit: write e.g. \"500ms\" or \"5s\", not 1.5"),
    ] {
        let e = Config::from_toml(&format!("[php]\nfpm_connect_timeout = {value}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "{value}: {e}");
        assert!(e.contains("line 2"), "{value}: {e}");
    }
}

#[test]
fn fpm_socket_forms() {
    for ok in [
        "127.0.0.1:9000",
        "[::1]:9000",
        "localhost:9000",
        "php-fpm_1.internal:9000",
        "/run/php/php8.2-fpm.sock",
        "unix:/run/php/php8.2-fpm.sock",
    ] {
        assert!(FpmAddress::parse(ok).is_ok(), "{ok}");
    }
    assert_eq!(
        FpmAddress::parse("unix:/run/php/x.sock").unwrap(),
        FpmAddress::Unix(PathBuf::from("/run/php/x.sock"))
    );
    assert_eq!(
        FpmAddress::parse("[::1]:9000").unwrap(),
        FpmAddress::Tcp("[::1]:9000".to_owned())
    );
    for (bad, why) in [
        ("localhost", "a TCP address needs a port"),
        ("[::1]", "a TCP address needs a port"),
        ("::1:9000", "write an IPv6 address in brackets"),
        ("[::1:9000", "an IPv6 address needs its closing ']'"),
        ("[nope]:9000", "'nope' is not an IPv6 address"),
        ("127.0.0.1:0", "'0' is not a port (1-65535)"),
        ("127.0.0.1:99999", "'99999' is not a port (1-65535)"),
        (":9000", "'' is not a host name or IP address"),
        ("php fpm:9000", "'php fpm' is not a host name or IP address"),
        ("unix:run/php.sock", "a Unix socket path must be absolute"),
        (
            "run/php/php8.2-fpm.sock",
            "a Unix socket path must be absolute",
        ),
    ] {
        assert_eq!(FpmAddress::parse(bad).unwrap_err(), why, "{bad}");
    }
    let e = err(
        "[backend]\ndefault_backend = \"fastcgi\"\n[php]\nfpm_socket = \"localhost\"\n",
        BUILT,
    );
    assert!(
        e.contains("[php] fpm_socket \"localhost\" is not a PHP-FPM address: a TCP address needs a port.\n    Use \"127.0.0.1:9000\", \"[::1]:9000\", \"localhost:9000\", \"/run/php/php8.2-fpm.sock\" or \"unix:/run/php/php8.2-fpm.sock\"."),
        "{e}"
    );
}

#[test]
fn pool_settings_are_validated() {
    let base = "[backend]\ndefault_backend = \"fastcgi\"\n[php]\nfpm_socket = \"127.0.0.1:9000\"\n[php.pool]\n";
    let e = err(&format!("{base}max_runners = 0\n"), BUILT);
    assert!(
        e.contains("[php.pool] max_runners = 0 is out of range: use 1 to 4096.\n    Each runner is one PHP interpreter (a process); the default is "),
        "{e}"
    );
    let e = err(&format!("{base}min_runners = 9\nmax_runners = 4\n"), BUILT);
    assert!(
        e.contains("[php.pool] min_runners = 9 is above max_runners = 4.\n    Lower min_runners or raise max_runners."),
        "{e}"
    );
    let e = err(&format!("{base}queue_size = 0\n"), BUILT);
    assert!(
        e.contains("[php.pool] queue_size = 0 is out of range: use 1 to 1048576."),
        "{e}"
    );
    for (line, want) in [
        ("idle_timeout = \"0s\"", "it must be more than 0"),
        ("request_deadline = 30", "durations need a unit"),
        ("memory_budget = \"lots\"", "invalid size \"lots\""),
        ("max_runnerz = 3", "max_runnerz"),
    ] {
        let e = Config::from_toml(&format!("{base}{line}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{line}: {e}");
    }
    let c = parse(&format!(
        "{base}max_runners = 64\nslowlog_timeout = \"2s\"\nmemory_budget = \"512M\"\n"
    ));
    assert_eq!(c.php.pool.max_runners, 64);
    assert_eq!(
        c.php.pool.slowlog_timeout.map(|d| d.0),
        Some(std::time::Duration::from_secs(2))
    );
    assert_eq!(c.php.pool.memory_budget.0, 512 << 20);
    assert!(c.php.pool.enabled);
}

#[test]
fn named_pools_and_the_rules_that_use_them_are_validated() {
    let base = format!(
        "[backend]\ndefault_backend = \"static\"\n[backend.static_files]\nenable = true\nroot = \"{}\"\n",
        static_root()
    );
    let rule = |backend: &str, pool: &str| {
        format!("[[backend.routing_rules]]\npattern = {{ type = \"prefix\", value = \"/admin/\" }}\nbackend = \"{backend}\"\npool = \"{pool}\"\n")
    };
    let e = err(
        &format!(
            "{base}{}[php.pools.ops]\nmax_runners = 2\n",
            rule("static", "admin")
        ),
        BUILT,
    );
    assert!(
        e.contains("Routing rule #1 (prefix \"/admin/\") uses pool 'admin', which is not defined (defined: ops).\n    Define it as [php.pools.admin] (e.g. max_runners = 4 and [php.pools.admin.ini] memory_limit = \"512M\"), or remove pool to use [php.pool]."),
        "{e}"
    );
    assert!(
        e.contains("Routing rule #1 (prefix \"/admin/\") sets pool 'admin', but only the embedded and fastcgi backends run in pools.\n    Remove pool, or send the rule to backend = \"embedded\" ([php.pools.admin]) or backend = \"fastcgi\" ([php.fpm_pools.admin])."),
        "{e}"
    );
    let e = err(
        &format!("{base}[php.pools.default]\n[php.pools.\"a b\"]\n"),
        BUILT,
    );
    assert!(e.contains("[php.pools.default]: a pool's name is letters, digits, '_' and '-', and not \"default\""), "{e}");
    assert!(e.contains("[php.pools.a b]: a pool's name"), "{e}");
    let e = err(
        &format!("{base}[php.pools.admin]\nmin_runners = 5\nmax_runners = 2\n"),
        BUILT,
    );
    assert!(
        e.contains("[php.pools.admin] min_runners = 5 is above max_runners = 2."),
        "{e}"
    );
    let c = parse(&format!(
        "{base}[php.pools.admin]\nmax_runners = 2\n[php.pools.admin.ini]\nmemory_limit = \"512M\"\n"
    ));
    assert_eq!(c.php.pools["admin"].max_runners, 2);
    assert_eq!(c.php.pools["admin"].ini["memory_limit"].to_string(), "512M");
}

#[test]
fn rule_names_are_validated() {
    let base = format!(
        "[backend]\ndefault_backend = \"static\"\n[backend.static_files]\nenable = true\nroot = \"{}\"\n",
        static_root()
    );
    let rule = |value: &str, name: &str| {
        format!("[[backend.routing_rules]]\npattern = {{ type = \"prefix\", value = \"{value}\" }}\nbackend = \"static\"\nname = {name}\n")
    };
    let ok = parse(&format!(
        "{base}{}{}",
        rule("/a/", "\"api.v2_x-1\""),
        rule("/b/", "\"B\"")
    ));
    assert_eq!(
        ok.backend.routing_rules[0].name.as_deref(),
        Some("api.v2_x-1")
    );
    ok.validate(BUILT).unwrap();
    assert!(parse(&base).backend.routing_rules.is_empty());

    let e = err(
        &format!(
            "{base}{}{}{}",
            rule("/a/", "\"api\""),
            rule("/b/", "\"web\""),
            rule("/c/", "\"api\"")
        ),
        BUILT,
    );
    assert!(
        e.contains("Routing rule #3 (prefix \"/c/\") has name 'api', which routing rule #1 already has.\n    Names label the rules' series in /_metrics; give each rule its own, or remove one."),
        "{e}"
    );
    assert!(!e.contains("rule #2"), "{e}");
    for bad in [
        "\"\"",
        "\"a b\"",
        "\"a\\\"b\"",
        "\"caf\u{e9}\"",
        "\"a/b\"",
        &format!("\"{}\"", "x".repeat(65)),
    ] {
        let e = err(&format!("{base}{}", rule("/a/", bad)), BUILT);
        assert!(
            e.contains("Routing rule #1 (prefix \"/a/\") has name ")
                && e.contains(": a rule's name is 1 to 64 letters, digits, '_', '.' and '-'.\n    It labels the rule's series in /_metrics; use e.g. name = \"api\" or name = \"checkout.v2\"."),
            "{bad}: {e}"
        );
    }
    // A misspelt key is still refused.
    assert!(Config::from_toml(&format!("{base}[[backend.routing_rules]]\npattern = {{ type = \"prefix\", value = \"/a/\" }}\nbackend = \"static\"\nnmae = \"x\"\n")).is_err());
}

#[test]
fn worker_scripts_are_validated() {
    let base = format!(
        "[backend]\ndefault_backend = \"static\"\n[backend.static_files]\nenable = true\nroot = \"{}\"\n",
        static_root()
    );
    for worker in [
        "../app/worker.php",
        "/srv/app/worker.php",
        "public/worker.txt",
        "",
    ] {
        let e = err(
            &format!("{base}[php.pools.app]\nworker = \"{worker}\"\n"),
            BUILT,
        );
        assert!(
            e.contains(&format!("[php.pools.app] worker = \"{worker}\" is not a PHP script inside the document root.\n    Give its path relative to [php] document_root, without '..', e.g. worker = \"index.php\".")),
            "{worker}: {e}"
        );
    }
    let e = err(
        &format!("{base}[php.pool]\nenabled = false\nworker = \"index.php\"\n"),
        BUILT,
    );
    assert!(
        e.contains("[php.pool] sets a worker script but enabled = false: worker scripts run in the runner pool.\n    Remove enabled = false, or remove worker."),
        "{e}"
    );
    let e = err(&format!("{base}[php.pools.app]\nwatch = \"1s\"\n"), BUILT);
    assert!(
        e.contains(
            "[php.pools.app] watch needs a worker script: it restarts workers whose code changed."
        ),
        "{e}"
    );
    let e = err(
        &format!("{base}[php.pools.app]\nleak_report = true\n"),
        BUILT,
    );
    assert!(
        e.contains("[php.pools.app] leak_report = true needs a worker script: the report follows what a worker keeps between requests.\n    Set worker = \"...\", or remove leak_report."),
        "{e}"
    );
    let e = err(
        &format!("{base}[php]\nfront_controller_internal = true\n"),
        BUILT,
    );
    assert!(
        e.contains("[php] front_controller_internal = true needs a front_controller (e.g. front_controller = \"index.php\")."),
        "{e}"
    );
    let c = parse(&format!(
        "{base}[php.pools.app]\nworker = \"public/index.php\"\n"
    ));
    assert_eq!(
        c.php.pools["app"].worker.as_deref(),
        Some(std::path::Path::new("public/index.php"))
    );
}

#[test]
fn fastcgi_limits_are_validated() {
    let base = "[backend]\ndefault_backend = \"fastcgi\"\n[php]\nfpm_socket = \"127.0.0.1:9000\"\n";
    let e = err(&format!("{base}fpm_max_connections = 0\n"), BUILT);
    assert!(
        e.contains("[php] fpm_max_connections = 0 is out of range: use 1 to 1024.\n    It bounds the connections each worker process opens to PHP-FPM; keep workers × fpm_max_connections ≤ the pool's pm.max_children."),
        "{e}"
    );
    let e = err(&format!("{base}fpm_max_connections = 5000\n"), BUILT);
    assert!(
        e.contains("fpm_max_connections = 5000 is out of range"),
        "{e}"
    );
    let e = err(&format!("{base}fpm_ping_path = \"ping\"\n"), BUILT);
    assert!(
        e.contains("[php] fpm_ping_path 'ping' must be a path starting with '/' without spaces (e.g. \"/ping\", php-fpm's ping.path)."),
        "{e}"
    );
    assert!(parse(&format!(
        "{base}fpm_max_connections = 1\nfpm_ping_path = \"/ping\"\n"
    ))
    .validate(BUILT)
    .is_ok());
}

/// `[server]` belongs to the host (fe-php-host reads and validates it): the
/// library takes any table there, reads nothing of it and finds no problem in it,
/// but a `server` that is not a table is still an error.
#[test]
fn server_is_the_hosts_section() {
    let c = parse(&format!(
        "[server]\nworkers = \"two\"\nmax_connections = 0\nno_such_key = {{ a = 1 }}\n[backend]\ndefault_backend = \"static\"\n[backend.static_files]\nenable = true\nroot = \"{}\"\n",
        static_root()
    ));
    assert!(c.validate(BUILT).is_ok());
    let e = Config::from_toml("server = \"x\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 1") && e.contains("invalid type"), "{e}");
    let e = Config::from_toml("[server]\nworkers = \n")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("invalid configuration: TOML parse error at line 2"),
        "{e}"
    );
}

#[test]
fn proxy_keys_defaults_and_validation() {
    let px = parse("").backend.proxy;
    assert_eq!(px.upstream_list(), Vec::<&str>::new());
    assert_eq!(px.connect_timeout.0, Duration::from_secs(5));
    assert_eq!(px.read_timeout.0, Duration::from_secs(60));
    assert_eq!(px.idle_timeout.0, Duration::from_secs(4));
    assert_eq!(px.max_connections, 256);
    assert_eq!(px.max_fails, 1);
    assert_eq!(px.fail_timeout.0, Duration::from_secs(10));
    let base = format!(
        "[backend.static_files]\nenable = true\nroot = \"{}\"\n",
        static_root()
    );
    // A rule naming proxy without an upstream is refused like the others.
    let e = err(&format!("{base}[backend]\ndefault_backend = \"static\"\n[[backend.routing_rules]]\npattern = {{ type = \"prefix\", value = \"/api/\" }}\nbackend = \"proxy\"\n"), BUILT);
    assert!(e.contains("Routing rule #1 (prefix \"/api/\") uses backend 'proxy', which is not registered.\n    To use it, set [backend.proxy] upstream = \"http://127.0.0.1:9001\" (the HTTP server to forward to); or route this rule to another backend."), "{e}");
    let e = err(
        &format!("{base}[backend]\ndefault_backend = \"proxy\"\n"),
        BUILT,
    );
    assert!(e.contains("Default backend 'proxy' is not registered\n    To use it, set [backend.proxy] upstream"), "{e}");
    let e = err(
        &format!("{base}[backend]\ndefault_backend = \"php\"\n"),
        BUILT,
    );
    assert!(
        e.contains("Use default_backend = \"embedded\", \"fastcgi\", \"static\" or \"proxy\"."),
        "{e}"
    );

    let ok = parse(&format!("{base}[backend]\ndefault_backend = \"proxy\"\n[backend.proxy]\nupstreams = [\"http://127.0.0.1:9001\", \"http://[::1]:9002/\", \"http://app.internal\"]\nconnect_timeout = \"1s\"\nread_timeout = \"2s\"\nidle_timeout = \"3s\"\nmax_connections = 4\nmax_fails = 0\nfail_timeout = \"5s\"\n"))
        .validate(BUILT)
        .unwrap();
    assert!(ok.proxy.is_available());
    assert_eq!(ok.default_backend, BackendKind::Proxy);
    assert_eq!(ok.config.backend.proxy.upstream_list().len(), 3);

    for (keys, want) in [
        ("upstream = \"http://a:1\"\nupstreams = [\"http://b:2\"]", "[backend.proxy] has both upstream and upstreams.\n    Use upstream = \"http://127.0.0.1:9001\" for one server, or upstreams = [\"http://127.0.0.1:9001\", \"http://127.0.0.1:9002\"] for several, not both."),
        ("upstream = \"127.0.0.1:9001\"", "[backend.proxy] upstream \"127.0.0.1:9001\" is not an upstream URL: it needs the scheme, e.g. http://127.0.0.1:9001.\n    Use \"http://127.0.0.1:9001\", \"http://[::1]:9001\" or \"http://app.internal:8080\""),
        ("upstreams = [\"http://ok:1\", \"https://secure:443\"]", "[backend.proxy] upstreams \"https://secure:443\" is not an upstream URL: https upstreams are not supported"),
        ("upstream = \"http://127.0.0.1:9001/app\"", "an upstream names a server only, without a path"),
        ("upstream = \"http://127.0.0.1:0\"", "'0' is not a port (1-65535)"),
        ("upstream = \"http://::1:9001\"", "write an IPv6 address in brackets"),
        ("upstream = \"http://bad host:9001\"", "'bad host' is not a host name or IP address"),
        ("upstream = \"ftp://x:21\"", "the scheme must be http://"),
        ("upstream = \"http://u@x:1\"", "user information (user@host) is not supported"),
        ("upstream = \"http://x:1\"\nmax_connections = 0", "[backend.proxy] max_connections = 0 is out of range: use 1 to 65536.\n    It bounds the requests each worker process has in flight to one upstream (one connection each)."),
    ] {
        let e = err(&format!("{base}[backend]\ndefault_backend = \"static\"\n[backend.proxy]\n{keys}\n"), BUILT);
        assert!(e.contains(want), "{keys}: {e}");
    }
    assert_eq!(
        UpstreamAddress::parse("http://[::1]:9002/")
            .unwrap()
            .authority,
        "[::1]:9002"
    );
    assert_eq!(
        UpstreamAddress::parse("HTTP://example.test").unwrap().port,
        80
    );
}

#[test]
fn split_rules_are_validated() {
    let base = format!(
        "[backend]\ndefault_backend = \"static\"\n[backend.static_files]\nenable = true\nroot = \"{}\"\n[php]\nlibphp_path = \"{}\"\n",
        static_root(),
        libphp_present()
    );
    let rule = |body: &str| {
        format!("{base}[[backend.routing_rules]]\npattern = {{ type = \"prefix\", value = \"/app/\" }}\n{body}\n")
    };
    let v = parse(&rule("split = [{ backend = \"embedded\", weight = 10 }, { backend = \"static\", weight = 90 }]\nsticky = \"client_addr\""))
        .validate(BUILT)
        .unwrap();
    let r = &v.config.backend.routing_rules[0];
    assert_eq!(r.sticky, Some(Sticky::ClientAddr));
    assert_eq!(r.primary_backend(), Some("static"));
    assert_eq!(v.config.backend.split.cookie, "fephp_arm");
    assert_eq!(v.config.backend.split.expose_header, None);

    for (body, want) in [
        ("backend = \"static\"\nsplit = [{ backend = \"static\", weight = 1 }]", "Routing rule #1 (prefix \"/app/\") has both backend and split.\n    Use backend = \"embedded\" to send it to one backend, or split = [{ backend = \"embedded\", weight = 90 }, { backend = \"fastcgi\", weight = 10 }] to divide its traffic, not both."),
        ("priority = 1", "Routing rule #1 (prefix \"/app/\") names no backend.\n    Add backend = \"embedded\""),
        ("split = []", "Routing rule #1 (prefix \"/app/\") has an empty split."),
        ("split = [{ backend = \"static\", weight = 0 }]", "Routing rule #1 (prefix \"/app/\") split arm #1 (backend 'static') has weight 0: weights must be positive whole numbers up to 1000000."),
        ("split = [{ backend = \"static\", weight = 1 }, { backend = \"fastcgi\", weight = 1 }]", "Routing rule #1 (prefix \"/app/\") split arm #2 uses backend 'fastcgi', which is not registered.\n    To use it, set [php] fpm_socket"),
        ("split = [{ backend = \"static\", weight = 1 }, { backend = \"php\", weight = 1 }]", "Routing rule #1 (prefix \"/app/\") split arm #2 uses backend 'php', which is unknown."),
        ("split = [{ backend = \"static\", weight = 1 }, { backend = \"static\", weight = 2 }]", "split arm #2 names backend 'static' again."),
        ("backend = \"static\"\nsticky = \"cookie\"", "Routing rule #1 (prefix \"/app/\") sets sticky or cookie without split."),
        ("split = [{ backend = \"static\", weight = 1 }]\nsticky = \"none\"\ncookie = \"ab\"", "Routing rule #1 (prefix \"/app/\") sets cookie with sticky = \"none\"."),
        ("split = [{ backend = \"static\", weight = 1 }]\ncookie = \"a b\"", "Routing rule #1 (prefix \"/app/\"): cookie \"a b\" is not a cookie name."),
    ] {
        let e = err(&rule(body), BUILT);
        assert!(e.contains(want), "{body}: {e}");
    }
    // Negative and fractional weights are type errors naming the line.
    let e = Config::from_toml("[[backend.routing_rules]]\npattern = { type = \"prefix\", value = \"/a/\" }\nsplit = [{ backend = \"static\", weight = -1 }]\n").unwrap_err().to_string();
    assert!(e.contains("line 3"), "{e}");
    // Two cookie rules need two cookies.
    let two = format!("{}[[backend.routing_rules]]\npattern = {{ type = \"prefix\", value = \"/b/\" }}\nsplit = [{{ backend = \"static\", weight = 1 }}]\n", rule("split = [{ backend = \"static\", weight = 1 }]"));
    let e = err(&two, BUILT);
    assert!(e.contains("Routing rule #2 (prefix \"/b/\") keeps its arm in cookie 'fephp_arm', like routing rule #1.\n    Give one of them its own cookie = \"fephp_arm_2\""), "{e}");
    assert!(parse(&format!("{two}cookie = \"other\"\n"))
        .validate(BUILT)
        .is_ok());
    let e = err(
        &format!(
            "{}[backend.split]\nexpose_header = \"X Arm\"\ncookie = \"\"\n",
            rule("split = [{ backend = \"static\", weight = 1 }]")
        ),
        BUILT,
    );
    assert!(
        e.contains("[backend.split] expose_header \"X Arm\" is not a header name."),
        "{e}"
    );
    assert!(
        e.contains("[backend.split] cookie \"\" is not a cookie name."),
        "{e}"
    );
}

#[test]
fn sendfile_keys_defaults_and_validation() {
    let c = parse("");
    assert!(!c.backend.sendfile.enable);
    assert!(c.backend.sendfile.roots.is_empty() && c.backend.sendfile.locations.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let base = format!("[backend]\ndefault_backend = \"static\"\n[backend.static_files]\nenable = true\nroot = \"{}\"\n", static_root());
    let v = parse(&format!(
        "{base}[backend.sendfile]\nenable = true\nroots = [\"{d}\"]\n[[backend.sendfile.locations]]\nprefix = \"/protected/\"\nroot = \"{d}\"\n"
    ))
    .validate(BUILT)
    .unwrap();
    let sf = &v.config.backend.sendfile;
    assert_eq!(sf.roots, [dir.path()]);
    assert_eq!(sf.locations[0].prefix, "/protected/");
    // Disabled: nothing is checked.
    parse(&format!(
        "{base}[backend.sendfile]\nroots = [\"/no/such/dir\"]\n"
    ))
    .validate(BUILT)
    .unwrap();

    let e = Config::from_toml("[backend.sendfile]\nenable = true\nroot = \"/srv\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `root`"), "{e}");
    let e = Config::from_toml(
        "[[backend.sendfile.locations]]\nprefix = \"/p/\"\nroot = \"/srv\"\nalias = \"/x\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("unknown field `alias`"), "{e}");

    let e = err(&format!("{base}[backend.sendfile]\nenable = true\n"), BUILT);
    assert!(
        e.contains("[backend.sendfile] enable = true names no directory to send files from."),
        "{e}"
    );
    let e = err(
        &format!("{base}[backend.sendfile]\nenable = true\nroots = [\"/no/such/dir\", \"rel/dir\", \"/\", \"{}\"]\n", static_root() + "/index.html"),
        BUILT,
    );
    assert!(
        e.contains("[backend.sendfile] roots: /no/such/dir is not a readable directory (No such file or directory"),
        "{e}"
    );
    assert!(
        e.contains("[backend.sendfile] roots: \"rel/dir\" is not an absolute path."),
        "{e}"
    );
    assert!(
        e.contains(
            "[backend.sendfile] roots: \"/\" would let a script send any file of the machine."
        ),
        "{e}"
    );
    assert!(e.contains("/index.html is not a directory."), "{e}");
    let e = err(
        &format!("{base}[backend.sendfile]\nenable = true\n[[backend.sendfile.locations]]\nprefix = \"/p\"\nroot = \"{d}\"\n[[backend.sendfile.locations]]\nprefix = \"/q/../\"\nroot = \"/gone\"\n[[backend.sendfile.locations]]\nprefix = \"/p\"\nroot = \"{d}\"\n"),
        BUILT,
    );
    assert!(
        e.contains("[[backend.sendfile.locations]] #1 (prefix \"/p\"): the prefix must be a path that starts and ends with '/'"),
        "{e}"
    );
    assert!(
        e.contains("[[backend.sendfile.locations]] #2 (prefix \"/q/../\"): the prefix must"),
        "{e}"
    );
    assert!(
        e.contains("[[backend.sendfile.locations]] #2 (prefix \"/q/../\") root: /gone is not a readable directory"),
        "{e}"
    );
    assert!(
        e.contains("[[backend.sendfile.locations]] #3 (prefix \"/p\") has the prefix of location #1 again."),
        "{e}"
    );
}

#[test]
fn compression_keys_defaults_and_validation() {
    let c = parse("");
    let z = &c.backend.compression;
    assert!(z.enable);
    assert_eq!(z.encodings, ["zstd", "br", "gzip"]);
    assert!(z.types.iter().any(|t| t == "text/html"));
    assert!(z.types.iter().any(|t| t == "application/json"));
    assert_eq!(z.min_length.0, 1024);
    assert_eq!((z.gzip_level, z.brotli_level, z.zstd_level), (1, 1, 1));
    let base = format!("[backend]\ndefault_backend = \"static\"\n[backend.static_files]\nenable = true\nroot = \"{}\"\n", static_root());
    let v = parse(&format!(
        "{base}[backend.compression]\nenable = false\nencodings = [\"gzip\"]\ntypes = [\"text/*\", \"Application/JSON\"]\nmin_length = \"2K\"\ngzip_level = 9\nbrotli_level = 0\nzstd_level = 19\n"
    ))
    .validate(BUILT)
    .unwrap();
    let z = &v.config.backend.compression;
    assert!(!z.enable);
    assert_eq!(z.min_length.0, 2048);
    assert_eq!((z.gzip_level, z.brotli_level, z.zstd_level), (9, 0, 19));
    // Unknown keys are errors naming the key.
    let e = Config::from_toml("[backend.compression]\ngzip_comp_level = 1\n").unwrap_err();
    assert!(
        e.to_string().contains("unknown field `gzip_comp_level`"),
        "{e}"
    );
    let e = err(
        &format!("{base}[backend.compression]\nencodings = [\"gzip\", \"deflate\", \"gzip\"]\ntypes = [\"text/html; charset=utf-8\", \"image/png\", \"video/*\", \"html\", \"image/*\"]\ngzip_level = 0\nbrotli_level = 12\nzstd_level = 20\n"),
        BUILT,
    );
    for want in [
        "[backend.compression] encodings: \"deflate\" is not a coding fe-php compresses with.",
        "[backend.compression] encodings names \"gzip\" twice.",
        "[backend.compression] types: \"text/html; charset=utf-8\" is not a media type.",
        "[backend.compression] types: \"html\" is not a media type.",
        "[backend.compression] types: \"image/png\" is (or includes) a type whose bodies are compressed already",
        "[backend.compression] types: \"video/*\" is (or includes)",
        "[backend.compression] types: \"image/*\" is (or includes)",
        "[backend.compression] gzip_level = 0 is out of range: use 1 (fastest) to 9 (smallest).",
        "[backend.compression] brotli_level = 12 is out of range: use 0 (fastest) to 11 (smallest).",
        "[backend.compression] zstd_level = 20 is out of range: use 1 (fastest) to 19 (smallest).",
    ] {
        assert!(e.contains(want), "{want}\nin:\n{e}");
    }
    let e = err(
        &format!("{base}[backend.compression]\nencodings = []\n"),
        BUILT,
    );
    assert!(
        e.contains("[backend.compression] encodings = [] offers no coding."),
        "{e}"
    );
    // Off, no coding is fine.
    parse(&format!(
        "{base}[backend.compression]\nenable = false\nencodings = []\n"
    ))
    .validate(BUILT)
    .unwrap();
}

#[test]
fn every_problem_is_reported_at_once() {
    let e = parse("[backend]\ndefault_backend = \"xxx\"\n[[backend.routing_rules]]\npattern = { type = \"regex\", value = \"(\" }\nbackend = \"nope\"\n")
        .validate(BUILT)
        .unwrap_err();
    assert_eq!(e.problems.len(), 3, "{e}");
}

/// The shipped example files are valid.
mod example_tests {
    use super::*;

    #[test]
    fn shipped_examples_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let hybrid = Config::from_file(&dir.join("hybrid_backend_config.toml")).unwrap();
        assert_eq!(hybrid.backend.routing_rules.len(), 5);
        Config::from_file(&dir.join("demo.toml")).unwrap();
    }
}

#[test]
fn fpm_upstreams_and_named_fastcgi_pools() {
    let php = parse("").php;
    assert!(php.fpm_upstreams.is_empty());
    assert_eq!(php.fpm_balance, FpmBalance::LeastConn);
    assert_eq!(
        (php.fpm_max_fails, php.fpm_fail_timeout.0),
        (1, Duration::from_secs(10))
    );
    assert_eq!(php.fpm_health_interval, None);
    let base = "[backend]\ndefault_backend = \"fastcgi\"\n[php]\n";
    let c = parse(&format!(
        "{base}fpm_upstreams = [{{ address = \"10.0.0.2:9000\", weight = 2 }}, {{ address = \"unix:/run/php/php8.2-fpm.sock\" }}]\nfpm_balance = \"round_robin\"\nfpm_max_fails = 3\nfpm_fail_timeout = \"20s\"\nfpm_ping_path = \"/ping\"\nfpm_health_interval = \"5s\"\nfpm_read_timeout = \"7s\"\n[php.fpm_pools.legacy]\nsocket = \"/run/php/php7.4-fpm.sock\"\nmax_fails = 0\n"
    ));
    let v = c.clone().validate(BUILT).unwrap();
    assert!(v.fastcgi.is_available());
    let g = c.php.fpm_default_group();
    assert_eq!(g.upstreams().len(), 2);
    assert_eq!(g.upstreams()[0].weight, 2);
    assert_eq!(g.upstreams()[1].weight, 1);
    assert_eq!(g.balance, FpmBalance::RoundRobin);
    assert_eq!(g.health_interval, Some(Duration::from_secs(5)));
    // A named pool takes [php]'s fpm_* for what it leaves unset.
    let l = c.php.fpm_pool_group("legacy").unwrap();
    assert_eq!(l.upstreams()[0].address, "/run/php/php7.4-fpm.sock");
    assert_eq!((l.max_fails, l.fail_timeout), (0, Duration::from_secs(20)));
    assert_eq!(l.read_timeout, Duration::from_secs(7));
    assert_eq!(l.ping_path.as_deref(), Some("/ping"));
    assert_eq!(c.php.fpm_groups().len(), 2);

    let e = err(
        &format!("{base}fpm_socket = \"127.0.0.1:9000\"\nfpm_upstreams = [{{ address = \"127.0.0.1:9001\" }}]\n"),
        BUILT,
    );
    assert!(e.contains("[php] has both fpm_socket and fpm_upstreams.\n    Use fpm_socket = \"127.0.0.1:9000\" for one php-fpm, or fpm_upstreams = [{ address"), "{e}");
    let e = err(
        &format!("{base}fpm_upstreams = [{{ address = \"localhost\" }}, {{ address = \"127.0.0.1:9000\", weight = 0 }}, {{ address = \"127.0.0.1:9000\" }}]\nfpm_health_interval = \"5s\"\n"),
        BUILT,
    );
    assert!(e.contains("[php] fpm_upstreams #1 (\"localhost\") is not a PHP-FPM address: a TCP address needs a port.\n    Use address = "), "{e}");
    assert!(
        e.contains("[php] fpm_upstreams #2 (\"127.0.0.1:9000\") has weight = 0: use 1 to 1000."),
        "{e}"
    );
    assert!(
        e.contains("[php] fpm_upstreams #3 (\"127.0.0.1:9000\") names the address of #2 again."),
        "{e}"
    );
    assert!(e.contains("[php] fpm_health_interval needs fpm_ping_path: the active probe requests php-fpm's ping.path."), "{e}");
    let e = Config::from_toml(&format!("{base}fpm_balance = \"random\"\n"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown variant `random`, expected `least_conn` or `round_robin`"),
        "{e}"
    );

    // Named pools: their own keys, names, and the rules that pick them.
    let e = err(
        &format!("{base}fpm_socket = \"127.0.0.1:9000\"\n[php.fpm_pools.a]\nmax_connections = 0\n[php.fpm_pools.b]\nsocket = \"127.0.0.1:9001\"\nupstreams = [{{ address = \"127.0.0.1:9002\" }}]\n[php.fpm_pools.default]\nsocket = \"127.0.0.1:9003\"\n"),
        BUILT,
    );
    assert!(
        e.contains("[php.fpm_pools.a] names no php-fpm.\n    Add socket = "),
        "{e}"
    );
    assert!(
        e.contains("[php.fpm_pools.a] max_connections = 0 is out of range: use 1 to 1024."),
        "{e}"
    );
    assert!(
        e.contains("[php.fpm_pools.b] has both socket and upstreams."),
        "{e}"
    );
    assert!(
        e.contains("[php.fpm_pools.default]: a FastCGI pool's name is letters, digits"),
        "{e}"
    );
    let rule = "[[backend.routing_rules]]\npattern = { type = \"prefix\", value = \"/old/\" }\nbackend = \"fastcgi\"\npool = \"php74\"\n";
    let e = err(
        &format!("[backend]\ndefault_backend = \"fastcgi\"\n{rule}[php]\nfpm_socket = \"127.0.0.1:9000\"\n[php.fpm_pools.php81]\nsocket = \"127.0.0.1:9001\"\n[php.fpm_pools.php83]\nsocket = \"127.0.0.1:9002\"\n"),
        BUILT,
    );
    assert_eq!(
        e,
        "Routing rule #1 (prefix \"/old/\") uses FastCGI pool 'php74', which is not defined (defined: php81, php83).\n    Define it as [php.fpm_pools.php74] (e.g. socket = \"/run/php/php8.1-fpm.sock\", or upstreams = [{ address = \"10.0.0.2:9000\" }]), or remove pool to use [php] fpm_socket."
    );
    assert!(parse(&format!(
        "[backend]\ndefault_backend = \"fastcgi\"\n{rule}[php]\nfpm_socket = \"127.0.0.1:9000\"\n[php.fpm_pools.php74]\nsocket = \"127.0.0.1:9001\"\n"
    ))
    .validate(BUILT)
    .is_ok());
}
