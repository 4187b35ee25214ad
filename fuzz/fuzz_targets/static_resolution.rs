//! A request against a small document root with symlinks pointing outside it:
//! `StaticFiles::serve` on the normalized path (and, as defence in depth, on the
//! raw path too: the kernel's RESOLVE_BENEATH must hold even without
//! normalization).
//!
//! Input (text, so seeds stay readable): the first line is `METHOD target` (or just
//! a target, for GET); every further line is a request header `Name: value`.
//!
//! Invariants:
//! - no response carries a file from outside the root: no body is that file
//!   (by device and inode), no bytes body holds its contents, no ETag is its ETag;
//! - nothing hidden (dotfiles, except `/.well-known/`) or PHP source is served
//!   (200, 206 or 304);
//! - methods other than GET/HEAD get 405; HEAD never has a body;
//! - Content-Length is the body's length; a 206 with one range names it in
//!   Content-Range;
//! - a normalized path never gets a 500, and a redirect never leaves the site
//!   (`Location` is a path, not `//host`);
//! - never a panic.
#![no_main]

use fe_php::backends::static_files::{is_php_source, StaticFiles};
use fe_php::http::{Body, Request, Response};
use fe_php::routing::path;
use libfuzzer_sys::fuzz_target;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Marker every outside file is made of.
const MARKER: &[u8] = b"OUTSIDE-SECRET-";
/// Sizes no file inside the root has: an ETag with one of these is an outside file's.
const OUTSIDE_SIZES: [u64; 2] = [4099, 4111];

struct Site {
    files: StaticFiles,
    /// (dev, ino) of every file outside the root.
    outside: Vec<(u64, u64)>,
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

fn write(p: &Path, contents: &[u8]) {
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(p, contents).unwrap();
}

fn outside_contents(size: u64) -> Vec<u8> {
    MARKER.iter().copied().cycle().take(size as usize).collect()
}

fn site() -> &'static Site {
    static SITE: OnceLock<Site> = OnceLock::new();
    SITE.get_or_init(|| {
        let dir = remove_at_exit(tempfile::tempdir().unwrap());
        let out = dir.join("outside");
        let root = dir.join("root");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::create_dir_all(&root).unwrap();
        write(&out.join("secret.txt"), &outside_contents(OUTSIDE_SIZES[0]));
        write(&out.join("secret.css"), &outside_contents(OUTSIDE_SIZES[1]));
        write(&out.join("index.html"), &outside_contents(OUTSIDE_SIZES[0]));
        write(&out.join("sub/x.txt"), &outside_contents(OUTSIDE_SIZES[1]));

        let r = |p: &str| root.join(p);
        write(&r("index.html"), b"<h1>home</h1>\n");
        write(&r("a.txt"), b"hello, world\n");
        write(&r("a b.txt"), b"space\n");
        write(&r("caf\u{e9}.txt"), b"accent\n");
        write(&r("sub/b.css"), b"body { color: red }\n");
        write(&r("sub/b.css.gz"), b"\x1f\x8b not really gzip");
        write(&r("sub/b.css.br"), b"not really brotli");
        write(&r("sub/index.htm"), b"<p>sub</p>\n");
        write(&r("empty/.keep"), b"");
        write(
            &r("big.bin"),
            &(0..100_000u32).map(|i| i as u8).collect::<Vec<_>>(),
        );
        write(&r("zero.txt"), b"");
        write(&r("font.woff2"), b"wOF2");
        write(&r(".env"), b"SECRET=1\n");
        write(&r(".git/config"), b"[core]\n");
        write(&r(".well-known/acme-challenge/tok"), b"token\n");
        write(&r("x.php"), b"<?php echo 1;\n");
        write(&r("sub/y.phtml"), b"<?php echo 2;\n");
        write(&r("d.php/index.html"), b"dir named like a script\n");
        write(&r("app.css"), b"a{}\n");
        // Symlinks leaving the root: absolute, relative, to a directory, as a
        // sidecar, as an index file, through a directory.
        symlink(out.join("secret.txt"), r("out_file")).unwrap();
        symlink("../outside/secret.txt", r("out_rel")).unwrap();
        symlink("../../outside/secret.css", r("sub/out.css")).unwrap();
        symlink(&out, r("out_dir")).unwrap();
        symlink("../outside/", r("out_dir_rel")).unwrap();
        symlink(out.join("secret.css"), r("app.css.gz")).unwrap();
        symlink(&out, r("app.css.br")).unwrap();
        std::fs::create_dir_all(r("linkdir")).unwrap();
        symlink(out.join("index.html"), r("linkdir/index.html")).unwrap();
        symlink("/", r("slash")).unwrap();
        symlink("/proc/self/root/", r("magic")).unwrap();
        // Symlinks that stay inside: these work.
        symlink("a.txt", r("in_link")).unwrap();
        symlink("sub", r("in_dir")).unwrap();
        symlink("sub/../a.txt", r("in_dotdot")).unwrap();
        symlink("loop", r("loop")).unwrap();
        symlink("missing", r("dangling")).unwrap();
        let _ = std::process::Command::new("mkfifo").arg(r("fifo")).status();

        let mut outside = Vec::new();
        for e in ["secret.txt", "secret.css", "index.html", "sub/x.txt"] {
            let m = std::fs::metadata(out.join(e)).unwrap();
            assert!(OUTSIDE_SIZES.contains(&m.len()));
            outside.push((m.dev(), m.ino()));
        }
        let index = [
            "index.html",
            "index.htm",
            "../outside/secret.txt",
            "/etc/passwd",
            "out_file",
        ]
        .map(String::from);
        let files = StaticFiles::new(&root, &index).unwrap();
        Site { files, outside }
    })
}

fn header<'a>(resp: &'a Response, name: &str) -> Option<&'a str> {
    resp.get_header(name)
        .map(|v| std::str::from_utf8(v).expect("header values are text"))
}

fn is_hidden(path: &str) -> bool {
    path.split('/')
        .enumerate()
        .any(|(i, seg)| seg.starts_with('.') && !(i == 1 && seg == ".well-known"))
}

fn check(site: &Site, req: &Request<'_>, path: &str, normalized: bool, resp: &Response) {
    let status = resp.status;
    // Nothing from outside the root, in any form.
    match &resp.body {
        Body::File { file, offset, len } => {
            let m = file.metadata().unwrap();
            assert!(
                !site.outside.contains(&(m.dev(), m.ino())),
                "{path:?}: served a file from outside the root"
            );
            assert!(m.is_file(), "{path:?}: body is not a regular file");
            assert!(offset + len <= m.len(), "{path:?}: range beyond the file");
        }
        Body::Bytes(b) => assert!(
            !b.windows(MARKER.len()).any(|w| w == MARKER),
            "{path:?}: bytes of an outside file"
        ),
        Body::Empty => {}
        Body::Stream(_) => panic!("{path:?}: static bodies are never streams"),
    }
    if let Some(etag) = header(resp, "etag") {
        for size in OUTSIDE_SIZES {
            assert!(
                !etag.contains(&format!("-{size:x}\"")) && !etag.contains(&format!("-{size:x}-")),
                "{path:?}: the ETag of an outside file: {etag}"
            );
        }
    }
    if matches!(status, 200 | 206 | 304) {
        assert!(!is_hidden(path), "{path:?}: hidden file served ({status})");
        assert!(
            !is_php_source(path),
            "{path:?}: PHP source served ({status})"
        );
    }
    if req.method != "GET" && req.method != "HEAD" {
        assert_eq!(status, 405, "{path:?}");
        assert_eq!(header(resp, "allow"), Some("GET, HEAD"));
    }
    if req.is_head() {
        assert!(
            matches!(resp.body, Body::Empty),
            "{path:?}: HEAD with a body"
        );
    } else if let Some(len) = resp.body.len() {
        if status != 304 {
            let cl: u64 = header(resp, "content-length")
                .unwrap_or_else(|| panic!("{path:?}: {status} without Content-Length"))
                .parse()
                .unwrap();
            assert_eq!(cl, len, "{path:?}: Content-Length");
        }
    }
    if status == 206 {
        if let (Some(cr), Body::File { offset, len, .. }) =
            (header(resp, "content-range"), &resp.body)
        {
            let want = format!("bytes {}-{}/", offset, offset + len - 1);
            assert!(cr.starts_with(&want), "{path:?}: {cr} vs {want}");
        }
    }
    if normalized {
        assert_ne!(status, 500, "{path:?}: 500 for a normalized path");
        if status == 301 {
            let loc = header(resp, "location").unwrap();
            assert!(
                loc.starts_with('/') && !loc.starts_with("//") && !loc.starts_with("/\\"),
                "{path:?}: redirect off the site: {loc}"
            );
        }
    }
    assert!(
        matches!(
            status,
            200 | 206 | 301 | 304 | 403 | 404 | 405 | 412 | 416 | 500
        ),
        "{path:?}: unexpected status {status}"
    );
}

fuzz_target!(|data: &[u8]| {
    let site = site();
    let mut lines = data.split(|&b| b == b'\n');
    let Some(first) = lines.next() else {
        return;
    };
    let Ok(first) = std::str::from_utf8(first) else {
        return;
    };
    let (method, target) = match first.split_once(' ') {
        Some((m, t)) if !m.starts_with('/') => (m, t),
        _ => ("GET", first),
    };
    let headers: Vec<(&[u8], &[u8])> = lines
        .filter_map(|l| {
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            let colon = l.iter().position(|&b| b == b':')?;
            Some((&l[..colon], l[colon + 1..].trim_ascii()))
        })
        .collect();
    let mut req = Request::get(target);
    req.method = method;
    req.headers = headers;

    let Ok(t) = path::split_target(target) else {
        return;
    };
    if let Ok(n) = path::normalize(t.raw_path) {
        let resp = site.files.serve(&req, &n, t.query);
        check(site, &req, &n, true, &resp);
    }
    // Defence in depth: the raw path, unnormalized ("..", "//", "%2e" left in).
    let resp = site.files.serve(&req, t.raw_path, t.query);
    check(site, &req, t.raw_path, false, &resp);
});
