//! Raw request target → `path::split_target` → `path::normalize` → `Router::route`.
//!
//! The whole input (when UTF-8) is the request target, so seeds are plain
//! traversal strings. The same bytes, read as structured data, also build a small
//! rule set of their own for a differential check of the router.
//!
//! Invariants:
//! - split: the path starts with '/', holds no '?' or NUL, the query no NUL;
//! - normalize agrees with an independent percent-decode + dot-segment resolution
//!   (same result, same error kind);
//! - a normalized path starts with '/', has no "//", no "." or ".." segment, no
//!   NUL; normalizing it again (with its '%' escaped, since normalization decodes)
//!   gives it back unchanged; without '%' it is a fixed point as it is;
//! - the router's answer (hash map, byte tries, RegexSet, ranks) is the first
//!   matching rule by (priority desc, declaration order), found by brute force.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use fe_php::config::{BackendKind, PatternKind, RoutingRule};
use fe_php::routing::path::{self, PathError};
use fe_php::routing::router::Router;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn rule(kind: PatternKind, value: &str, backend: &str, priority: i32) -> RoutingRule {
    RoutingRule::new(kind, value, backend, priority)
}

/// The example configuration's rules plus a few more of each kind, with ties.
fn fixed_rules() -> Vec<RoutingRule> {
    use PatternKind::*;
    vec![
        rule(Exact, "/status", "embedded", 100),
        rule(Prefix, "/api/", "embedded", 90),
        rule(Suffix, ".jpg", "static", 80),
        rule(Prefix, "/admin/", "fastcgi", 70),
        rule(Regex, r"^/api/v\d+/", "embedded", 60),
        rule(Exact, "/", "static", 5),
        rule(Prefix, "/static/", "static", 50),
        rule(Prefix, "/static/private/", "fastcgi", 50),
        rule(Suffix, ".php", "fastcgi", 10),
        rule(Suffix, "/", "static", 10),
        rule(Regex, r"(?i)\.(css|js|png|woff2?)$", "static", 60),
        rule(Regex, r"^/user/[^/]+/profile$", "fastcgi", 65),
        rule(Regex, r"\.\.|%|\x00", "fastcgi", 1000),
        rule(Regex, r"^/[a-z]{2}(-[A-Z]{2})?/", "embedded", 10),
        rule(Exact, "/status", "fastcgi", 100),
        rule(Prefix, "", "embedded", -5),
    ]
}

struct Fixed {
    rules: Vec<RoutingRule>,
    router: Router,
    regexes: Vec<Option<regex::Regex>>,
}

fn fixed() -> &'static Fixed {
    static FIXED: OnceLock<Fixed> = OnceLock::new();
    FIXED.get_or_init(|| {
        let rules = fixed_rules();
        let router = Router::new(&rules, BackendKind::Embedded).expect("fixed rules build");
        let regexes = compile(&rules);
        Fixed {
            rules,
            router,
            regexes,
        }
    })
}

fn compile(rules: &[RoutingRule]) -> Vec<Option<regex::Regex>> {
    // The oracle's regexes are compiled once per distinct pattern.
    thread_local! {
        static CACHE: std::cell::RefCell<std::collections::HashMap<String, regex::Regex>> =
            Default::default();
    }
    rules
        .iter()
        .map(|r| match r.pattern.kind {
            PatternKind::Regex => Some(CACHE.with(|c| {
                c.borrow_mut()
                    .entry(r.pattern.value.clone())
                    .or_insert_with(|| regex::Regex::new(&r.pattern.value).expect("valid regex"))
                    .clone()
            })),
            _ => None,
        })
        .collect()
}

/// The first rule that matches by (priority desc, declaration order): brute force.
fn expected(rules: &[RoutingRule], regexes: &[Option<regex::Regex>], path: &str) -> Option<usize> {
    let mut order: Vec<usize> = (0..rules.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(rules[i].priority));
    order.into_iter().find(|&i| {
        let v = rules[i].pattern.value.as_str();
        match rules[i].pattern.kind {
            PatternKind::Exact => path == v,
            PatternKind::Prefix => path.starts_with(v),
            PatternKind::Suffix => path.ends_with(v),
            PatternKind::Regex => regexes[i].as_ref().unwrap().is_match(path),
        }
    })
}

fn check_route(
    router: &Router,
    rules: &[RoutingRule],
    regexes: &[Option<regex::Regex>],
    default: BackendKind,
    path: &str,
) {
    let got = router.route(path);
    let want = expected(rules, regexes, path);
    assert_eq!(got.rule, want, "route({path:?}) with {rules:#?}");
    let backend = match want {
        Some(i) => BackendKind::from_name(rules[i].backend.as_deref().unwrap()).unwrap(),
        None => default,
    };
    assert_eq!(got.backend, backend, "route({path:?})");
}

/// Independent model of `normalize`: percent-decode (a '%' not followed by two hex
/// digits stays as it is), then resolve segments with a stack.
fn model_normalize(raw: &str) -> Result<String, PathError> {
    let b = raw.as_bytes();
    if b.first() != Some(&b'/') {
        return Err(PathError::NotOriginForm);
    }
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut decoded = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                decoded.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        decoded.push(b[i]);
        i += 1;
    }
    if decoded.contains(&0) {
        return Err(PathError::Nul);
    }
    let decoded = String::from_utf8(decoded).map_err(|_| PathError::InvalidUtf8)?;
    let mut stack: Vec<&str> = Vec::new();
    let parts: Vec<&str> = decoded[1..].split('/').collect();
    for p in &parts {
        match *p {
            "" | "." => {}
            ".." => {
                if stack.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            s => stack.push(s),
        }
    }
    let mut out = String::new();
    for s in &stack {
        out.push('/');
        out.push_str(s);
    }
    let last = *parts.last().unwrap();
    if out.is_empty() || matches!(last, "" | "." | "..") {
        out.push('/');
    }
    Ok(out)
}

fn check_normalized(n: &str) {
    assert!(n.starts_with('/'), "{n:?}");
    assert!(!n.contains("//"), "{n:?}");
    assert!(!n.contains('\0'), "{n:?}");
    for seg in n.split('/') {
        assert!(seg != "." && seg != "..", "dot segment in {n:?}");
    }
    // Idempotent: normalization decodes, so escape what it would decode again.
    let escaped = n.replace('%', "%25");
    assert_eq!(
        path::normalize(&escaped).as_deref(),
        Ok(n),
        "renormalize {n:?}"
    );
    if !n.contains('%') {
        assert_eq!(path::normalize(n).as_deref(), Ok(n), "fixed point {n:?}");
    }
}

#[derive(Arbitrary, Debug)]
struct GenRule {
    kind: u8,
    /// Index into `FRAGMENTS` for regexes; length of the value for the others.
    pick: u8,
    backend: u8,
    priority: i8,
}

/// Regexes the generated rule sets draw from (arbitrary regex text would mostly
/// test the regex crate's compiler).
const FRAGMENTS: &[&str] = &[
    r"^/",
    r"^/api/v\d+/",
    r"\.php$",
    r"(?i)\.JPG$",
    r"^/a/b",
    r"[^/]+\.css$",
    r"^/$",
    r"/\.well-known/",
    r"é",
    r"^/x{2,3}y",
];

fn generated(u: &mut Unstructured<'_>, path: &str) -> arbitrary::Result<()> {
    let n = u.int_in_range(0..=10)?;
    let mut rules = Vec::with_capacity(n);
    let mut regexes_left = 2;
    for _ in 0..n {
        let g = GenRule::arbitrary(u)?;
        let backend = ["embedded", "fastcgi", "static"][g.backend as usize % 3];
        // Regexes are few: building a RegexSet dominates the time of a run.
        let kind = [
            PatternKind::Exact,
            PatternKind::Prefix,
            PatternKind::Suffix,
            PatternKind::Exact,
            PatternKind::Prefix,
            PatternKind::Suffix,
            PatternKind::Regex,
        ][g.kind as usize % 7];
        let kind = if kind == PatternKind::Regex && regexes_left == 0 {
            PatternKind::Prefix
        } else {
            kind
        };
        if kind == PatternKind::Regex {
            regexes_left -= 1;
        }
        let value = match kind {
            PatternKind::Regex => FRAGMENTS[g.pick as usize % FRAGMENTS.len()].to_owned(),
            // Pieces of the path itself, so that matches happen.
            _ => {
                let len = g.pick as usize % (path.len() + 2);
                let s: String = match kind {
                    PatternKind::Suffix => {
                        let chars: Vec<char> = path.chars().rev().take(len).collect();
                        chars.into_iter().rev().collect()
                    }
                    _ => path.chars().take(len).collect(),
                };
                if g.pick % 7 == 0 {
                    format!("{s}x")
                } else {
                    s
                }
            }
        };
        rules.push(rule(kind, &value, backend, (g.priority % 4) as i32));
    }
    let default = [
        BackendKind::Embedded,
        BackendKind::FastCgi,
        BackendKind::Static,
    ][u.int_in_range(0..=2)?];
    let router = Router::new(&rules, default).expect("generated rules build");
    let regexes = compile(&rules);
    check_route(&router, &rules, &regexes, default, path);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    let f = fixed();
    // Never panics on anything, normalized or not.
    f.router.route(target);

    let Ok(t) = path::split_target(target) else {
        return;
    };
    assert!(t.raw_path.starts_with('/'));
    assert!(!t.raw_path.contains(['?', '\0']));
    assert!(!t.query.is_some_and(|q| q.contains('\0')));
    if target.starts_with('/') {
        let rebuilt = match t.query {
            Some(q) => format!("{}?{q}", t.raw_path),
            None => t.raw_path.to_owned(),
        };
        assert_eq!(rebuilt, target);
    }

    let got = path::normalize(t.raw_path);
    let want = model_normalize(t.raw_path);
    assert_eq!(got, want, "normalize({:?})", t.raw_path);
    let Ok(n) = got else {
        return;
    };
    check_normalized(&n);
    check_route(&f.router, &f.rules, &f.regexes, BackendKind::Embedded, &n);

    let mut u = Unstructured::new(data);
    let _ = generated(&mut u, &n);
});
