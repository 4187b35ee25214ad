//! A real application through the runner pool: Debian's WordPress with MariaDB
//! (installed by `bench/wordpress/setup.sh`), served by fe-php-host's embedded
//! backend and by nginx + php-fpm side by side. The same requests give the same
//! pages, and a burst of concurrent requests is all answered.

mod common;

use common::peers::{FpmListen, Nginx, PhpFpm};
use common::*;
use std::path::Path;
use std::process::Command;

const DOCROOT: &str = "/usr/share/wordpress";
/// The Host of every request: Debian's wp-config.php loads the site's settings
/// by it (/etc/wordpress/config-127.0.0.1.php).
const HOST: &str = "127.0.0.1";

fn setup() -> bool {
    // SAFETY: plain query.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: WordPress and MariaDB cannot be set up; nothing tested");
        return false;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/wordpress/setup.sh");
    let out = Command::new("bash").arg(&script).output().unwrap();
    assert!(
        out.status.success(),
        "{}: {}{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

/// GET `url` with the site's Host; (status, body).
fn page(url: &str) -> (u16, String) {
    let r = curl(&["-H", &format!("Host: {HOST}"), url]);
    (r.status, r.text())
}

#[test]
fn wordpress_is_the_same_through_the_pool_as_through_php_fpm() {
    if !setup() {
        return;
    }
    let config = HostConfig::embedded_site("")
        .workers(2)
        .root(DOCROOT)
        .php("front_controller = \"index.php\"")
        .toml();
    let h = Host::start(&config, |_| {});
    let fpm = PhpFpm::builder(Path::new(DOCROOT), FpmListen::Unix)
        .max_children(4)
        .start();
    let nginx = Nginx::start(Path::new(DOCROOT), &fpm);

    for path in [
        "/",
        "/?p=1",
        "/?s=hello",
        "/?rest_route=/wp/v2/posts",
        "/?rest_route=/wp/v2/posts/1",
        "/?feed=rss2",
    ] {
        let (status, ours) = page(&h.url(path));
        let (peer_status, theirs) = page(&nginx.url(path));
        assert_eq!(status, 200, "{path}: {ours}");
        assert_eq!(peer_status, 200, "{path} through nginx + php-fpm");
        assert_eq!(ours, theirs, "{path}: the pages differ");
    }
    let (_, front) = page(&h.url("/"));
    assert!(front.contains("Hello world!"), "the sample post: {front}");

    // Concurrent requests, more than there are runners at first: all answered.
    let threads: Vec<_> = (0..24)
        .map(|i| {
            let url = h.url(if i % 2 == 0 {
                "/"
            } else {
                "/?rest_route=/wp/v2/posts"
            });
            std::thread::spawn(move || page(&url).0)
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
    assert!(!h.runners().is_empty());
    assert!(
        !h.stderr().contains("ERROR"),
        "errors in the log:\n{}",
        h.stderr()
    );
}
