//! Request-target parsing and path normalization.
//!
//! Every routing and file decision is made on the *normalized* path: percent-decoded,
//! `.`/`..` segments resolved, repeated slashes merged. A path that climbs above the root,
//! contains a NUL byte or is not UTF-8 after decoding is rejected (the caller answers 400).

use percent_encoding::percent_decode;
use std::fmt;

/// Why a request target was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not origin-form (`/path`) nor absolute-form (`http://host/path`).
    NotOriginForm,
    /// A NUL byte, raw or as `%00`.
    Nul,
    /// The decoded path is not valid UTF-8.
    InvalidUtf8,
    /// `..` segments climb above the document root.
    AboveRoot,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::NotOriginForm => {
                "request target must be a path starting with '/' (or http://host/path)"
            }
            PathError::Nul => "NUL byte in request path",
            PathError::InvalidUtf8 => "request path is not valid UTF-8 after percent-decoding",
            PathError::AboveRoot => "request path climbs above the document root",
        })
    }
}

impl std::error::Error for PathError {}

/// A request target split into its raw (still encoded) path and query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    pub raw_path: &'a str,
    pub query: Option<&'a str>,
}

/// Splits a request target into path and query. Absolute-form targets
/// (`http://host/p?q`) are reduced to their path and query.
pub fn split_target(target: &str) -> Result<Target<'_>, PathError> {
    let mut rest = target;
    for scheme in ["http://", "https://"] {
        // Compared as bytes: byte 7 or 8 of a UTF-8 target may fall inside a
        // character ("/résumé.pdf"), where slicing the str would panic.
        let head = rest.as_bytes().get(..scheme.len());
        if head.is_some_and(|h| h.eq_ignore_ascii_case(scheme.as_bytes())) {
            let after = &rest[scheme.len()..];
            rest = match after.find(['/', '?']) {
                Some(i) if after.as_bytes()[i] == b'/' => &after[i..],
                // "http://host?x" or "http://host": the path is "/".
                _ => "/",
            };
            break;
        }
    }
    if !rest.starts_with('/') {
        return Err(PathError::NotOriginForm);
    }
    let (raw_path, query) = match rest.find('?') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    if raw_path.as_bytes().contains(&0) || query.is_some_and(|q| q.as_bytes().contains(&0)) {
        return Err(PathError::Nul);
    }
    Ok(Target { raw_path, query })
}

/// Decodes and normalizes a raw path (which must start with '/').
///
/// `%2F` decodes to a separator like any other slash, so `/..%2f..%2fetc` is
/// caught as climbing above the root. A trailing slash is kept: it tells a
/// directory request from a file request.
pub fn normalize(raw_path: &str) -> Result<String, PathError> {
    let bytes = raw_path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotOriginForm);
    }
    if !needs_work(bytes) {
        return Ok(raw_path.to_owned());
    }
    let decoded: Vec<u8> = percent_decode(bytes).collect();
    if decoded.contains(&0) {
        return Err(PathError::Nul);
    }
    let decoded = String::from_utf8(decoded).map_err(|_| PathError::InvalidUtf8)?;

    let mut segments: Vec<&str> = Vec::with_capacity(8);
    let mut trailing_slash = false;
    for segment in decoded.split('/') {
        trailing_slash = false;
        match segment {
            "" | "." => trailing_slash = true,
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                trailing_slash = true;
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// True when the path has an escape, an empty segment, or a dot segment.
fn needs_work(bytes: &[u8]) -> bool {
    if bytes.contains(&b'%') || bytes.contains(&0) {
        return true;
    }
    bytes.windows(2).any(|w| w == b"//" || w == b"/.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_query_and_absolute_form() {
        assert_eq!(
            split_target("/a/b?x=1&y").unwrap(),
            Target {
                raw_path: "/a/b",
                query: Some("x=1&y")
            }
        );
        assert_eq!(
            split_target("/").unwrap(),
            Target {
                raw_path: "/",
                query: None
            }
        );
        assert_eq!(
            split_target("http://example.com:8080/p?q").unwrap(),
            Target {
                raw_path: "/p",
                query: Some("q")
            }
        );
        assert_eq!(split_target("HTTPS://h").unwrap().raw_path, "/");
        assert_eq!(split_target("*"), Err(PathError::NotOriginForm));
        assert_eq!(split_target("a/b"), Err(PathError::NotOriginForm));
        assert_eq!(split_target("/a\0b"), Err(PathError::Nul));
    }

    /// Found by `cargo fuzz` (path_router): a multi-byte character across byte 7 or
    /// 8 made the scheme check slice inside it and panic.
    #[test]
    fn split_does_not_slice_inside_a_character() {
        assert_eq!(split_target("/résumé.pdf").unwrap().raw_path, "/résumé.pdf");
        assert_eq!(split_target("/abcdeé/x").unwrap().raw_path, "/abcdeé/x");
        assert_eq!(
            split_target("/api/v1\u{600}/?x=1").unwrap(),
            Target {
                raw_path: "/api/v1\u{600}/",
                query: Some("x=1")
            }
        );
        assert_eq!(split_target("é"), Err(PathError::NotOriginForm));
        assert_eq!(split_target("httpé://h/p"), Err(PathError::NotOriginForm));
        assert_eq!(split_target("http://hé/p").unwrap().raw_path, "/p");
    }

    #[test]
    fn normalizes() {
        let cases = [
            ("/", "/"),
            ("/index.html", "/index.html"),
            ("/a//b///c", "/a/b/c"),
            ("/a/./b/", "/a/b/"),
            ("/a/b/..", "/a/"),
            ("/a/b/../c", "/a/c"),
            ("/a/%2e%2e/c", "/c"),
            ("/caf%C3%A9.txt", "/café.txt"),
            ("/a%20b", "/a b"),
            ("/a%2Fb", "/a/b"),
            ("//", "/"),
            ("/.", "/"),
            ("/..%5c..%5cetc", "/..\\..\\etc"),
            ("/.well-known/x", "/.well-known/x"),
            ("/%zz", "/%zz"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize(raw).unwrap(), want, "normalize({raw:?})");
        }
    }

    #[test]
    fn rejects_bad_paths() {
        assert_eq!(normalize("/.."), Err(PathError::AboveRoot));
        assert_eq!(normalize("/../etc/passwd"), Err(PathError::AboveRoot));
        assert_eq!(normalize("/a/../../etc"), Err(PathError::AboveRoot));
        assert_eq!(normalize("/%2e%2e/etc"), Err(PathError::AboveRoot));
        assert_eq!(
            normalize("/..%2f..%2fetc/passwd"),
            Err(PathError::AboveRoot)
        );
        assert_eq!(normalize("/%2E%2E%2Fetc"), Err(PathError::AboveRoot));
        assert_eq!(normalize("/a%00.txt"), Err(PathError::Nul));
        assert_eq!(normalize("/%ff"), Err(PathError::InvalidUtf8));
        assert_eq!(normalize("x"), Err(PathError::NotOriginForm));
    }
}
