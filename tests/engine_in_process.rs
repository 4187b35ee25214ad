//! Engines in the calling process (as a host that reloads without forking uses
//! them): one PHP runtime and one PHP thread per process, shared by every engine;
//! settings PHP only takes at start are refused on a new engine with a message.
//! This is PHP in the calling process, without the runner pool (`[php.pool]
//! enabled = false`); the pool's own tests run through fe-php-host.

use fe_php::http::{Body, Request};
use fe_php::{Config, Engine};

fn config(root: &std::path::Path, ini: &str) -> Config {
    Config::from_toml(&format!(
        "[backend]\ndefault_backend = \"embedded\"\n[backend.static_files]\nenable = true\nroot = \"{}\"\n[php.pool]\nenabled = false\n[php.ini]\n{ini}\n",
        root.display()
    ))
    .unwrap()
}

fn body(engine: &Engine, target: &str) -> String {
    match engine.handle(&Request::get(target)).body {
        Body::Bytes(b) => String::from_utf8(b).unwrap(),
        other => panic!("unexpected body {other:?}"),
    }
}

#[test]
fn engines_share_one_php_runtime_and_thread() {
    if !std::path::Path::new("/usr/lib/libphp.so").exists() {
        eprintln!("libphp is not installed: nothing to test");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t.php"),
        "<?php echo ini_get('memory_limit'), ' ', getmypid(), ' ', spl_object_id(new stdClass);",
    )
    .unwrap();

    let a = Engine::new(config(dir.path(), "memory_limit = \"77M\"")).unwrap();
    a.worker_start().unwrap();
    let first = body(&a, "/t.php");
    assert!(first.starts_with("77M "), "{first}");

    // A reload: a second engine from the same settings, the first one dropped.
    let b = Engine::new(config(dir.path(), "memory_limit = \"77M\"")).unwrap();
    b.worker_start().unwrap();
    for _ in 0..20 {
        assert!(body(&b, "/t.php").starts_with("77M "));
    }

    let php_threads = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter(|t| {
            std::fs::read_to_string(t.as_ref().unwrap().path().join("comm"))
                .unwrap()
                .trim()
                == "php"
        })
        .count();
    assert_eq!(
        php_threads, 1,
        "NTS PHP must run on exactly one thread per process"
    );
    drop(a);
    assert!(body(&b, "/t.php").starts_with("77M "));

    // php.ini settings need a restart: a new engine with others is refused.
    let err = Engine::new(config(dir.path(), "memory_limit = \"99M\""))
        .err()
        .expect("refused");
    assert!(err.to_string().contains("needs a restart"), "{err}");
}
