//! Which script a normalized path runs in the PHP document root, like Caddy's
//! `php_server` and nginx's `try_files`: script, static file, redirect, front
//! controller or 404.

use crate::backends::docroot::{DocRoot, PathKind as Kind};

/// What a normalized path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Run `script_name` (a path below the document root, e.g. "/index.php").
    Script {
        script_name: String,
        path_info: String,
    },
    /// An existing non-PHP file or a directory without index.php: the static handler's.
    Static,
    /// A directory requested without its trailing slash.
    AddSlash,
    NotFound,
    /// The path could not be looked at (out of file descriptors): 503.
    Unavailable,
}

/// Resolves `path` (normalized) like Caddy's `php_server` / nginx `try_files`:
/// an existing `.php` file runs (PATH_INFO split at the first `.php/`), a directory
/// runs its `index.php`, an existing non-PHP file goes to the static handler, and
/// anything else goes to `front_controller` when there is one.
pub fn resolve(root: &DocRoot, path: &str, front_controller: Option<&str>) -> Resolution {
    let fallback = || match front_controller {
        Some(fc) => {
            let script_name = format!("/{}", fc.trim_start_matches('/'));
            match kind(root, &script_name) {
                Kind::File => Resolution::Script {
                    script_name,
                    path_info: String::new(),
                },
                Kind::Unavailable => Resolution::Unavailable,
                _ => Resolution::NotFound,
            }
        }
        None => Resolution::NotFound,
    };

    if let Some(i) = find_php_split(path) {
        let (script, info) = path.split_at(i + 4);
        return match kind(root, script) {
            Kind::File => Resolution::Script {
                script_name: script.to_owned(),
                path_info: info.to_owned(),
            },
            Kind::Unavailable => Resolution::Unavailable,
            _ => fallback(),
        };
    }
    match kind(root, path) {
        Kind::File if is_php_script(path) => Resolution::Script {
            script_name: path.to_owned(),
            path_info: String::new(),
        },
        Kind::File => Resolution::Static,
        Kind::Dir if !path.ends_with('/') => Resolution::AddSlash,
        Kind::Dir => {
            let index = format!("{path}index.php");
            match kind(root, &index) {
                Kind::File => Resolution::Script {
                    script_name: index,
                    path_info: String::new(),
                },
                Kind::Unavailable => Resolution::Unavailable,
                _ => Resolution::Static,
            }
        }
        Kind::Missing => fallback(),
        Kind::Unavailable => Resolution::Unavailable,
    }
}

/// Byte index of the first ".php/" (ASCII case-insensitive).
fn find_php_split(path: &str) -> Option<usize> {
    path.as_bytes()
        .windows(5)
        .position(|w| w.eq_ignore_ascii_case(b".php/"))
}

fn is_php_script(path: &str) -> bool {
    path.len() >= 4 && path.as_bytes()[path.len() - 4..].eq_ignore_ascii_case(b".php")
}

fn kind(root: &DocRoot, path: &str) -> Kind {
    root.kind(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> (tempfile::TempDir, DocRoot) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        for d in ["blog", "assets", "uploads/a.jpg.d", "nophp"] {
            std::fs::create_dir_all(p.join(d)).unwrap();
        }
        for f in [
            "index.php",
            "blog/index.php",
            "info.php",
            "assets/app.css",
            "uploads/a.jpg",
            "nophp/index.html",
        ] {
            std::fs::write(p.join(f), "x").unwrap();
        }
        let root = DocRoot::new(p).unwrap();
        (dir, root)
    }

    fn script(name: &str, info: &str) -> Resolution {
        Resolution::Script {
            script_name: name.to_owned(),
            path_info: info.to_owned(),
        }
    }

    #[test]
    fn resolution() {
        let (_d, r) = root();
        assert_eq!(resolve(&r, "/info.php", None), script("/info.php", ""));
        assert_eq!(
            resolve(&r, "/info.php/a/b", None),
            script("/info.php", "/a/b")
        );
        assert_eq!(resolve(&r, "/INFO.PHP/x", None), Resolution::NotFound);
        assert_eq!(resolve(&r, "/blog/", None), script("/blog/index.php", ""));
        assert_eq!(resolve(&r, "/blog", None), Resolution::AddSlash);
        assert_eq!(resolve(&r, "/", None), script("/index.php", ""));
        assert_eq!(resolve(&r, "/assets/app.css", None), Resolution::Static);
        assert_eq!(resolve(&r, "/nophp/", None), Resolution::Static);
        assert_eq!(resolve(&r, "/missing.php", None), Resolution::NotFound);
        assert_eq!(
            resolve(&r, "/missing.php", Some("index.php")),
            script("/index.php", "")
        );
        assert_eq!(
            resolve(&r, "/pretty/link", Some("index.php")),
            script("/index.php", "")
        );
        assert_eq!(
            resolve(&r, "/pretty/link", Some("nope.php")),
            Resolution::NotFound
        );
        // A non-PHP file is never executed, whatever follows it.
        assert_eq!(
            resolve(&r, "/uploads/a.jpg/x.php", None),
            Resolution::NotFound
        );
        assert_eq!(
            resolve(&r, "/uploads/a.jpg/x.php/y", None),
            Resolution::NotFound
        );
    }
}
