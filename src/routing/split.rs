//! A/B testing: routing rules that split their traffic between backends by
//! weight, keeping each client on its arm by a cookie or by its address.

use crate::config::{BackendKind, RoutingRule, SplitConfig, Sticky};
use crate::http::Request;
use std::cell::Cell;

/// The split of one routing rule.
#[derive(Debug, Clone)]
pub struct Split {
    /// Index of the rule in the configuration (declaration order).
    pub rule: usize,
    arms: Vec<(BackendKind, u32)>,
    total: u64,
    sticky: Sticky,
    cookie: String,
}

/// The arm a request goes to, and the cookie that keeps its client there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub backend: BackendKind,
    /// `Set-Cookie` value when the client had no valid cookie.
    pub set_cookie: Option<String>,
}

impl Split {
    /// The split of rule `index`, if it has one (validated: known backends,
    /// positive weights).
    pub fn new(index: usize, rule: &RoutingRule, config: &SplitConfig) -> Option<Split> {
        let arms: Vec<(BackendKind, u32)> = rule
            .split
            .as_ref()?
            .iter()
            .filter_map(|a| Some((BackendKind::from_name(&a.backend)?, a.weight)))
            .filter(|&(_, w)| w > 0)
            .collect();
        if arms.is_empty() {
            return None;
        }
        Some(Split {
            rule: index,
            total: arms.iter().map(|&(_, w)| u64::from(w)).sum(),
            arms,
            sticky: rule.sticky.unwrap_or_default(),
            cookie: rule.cookie.clone().unwrap_or_else(|| config.cookie.clone()),
        })
    }

    /// The arm for `req`: the one its cookie names (when it is still an arm), else
    /// by weight — at random, or from a hash of the client's address.
    pub fn choose(&self, req: &Request<'_>) -> Choice {
        match self.sticky {
            Sticky::Cookie => {
                if let Some(arm) = cookie_value(req, &self.cookie).and_then(|v| self.arm_named(v)) {
                    return Choice {
                        backend: arm,
                        set_cookie: None,
                    };
                }
                let backend = self.by_weight(random());
                let secure = if req.tls { "; Secure" } else { "" };
                Choice {
                    backend,
                    set_cookie: Some(format!(
                        "{}={}; Path=/; HttpOnly; SameSite=Lax{secure}",
                        self.cookie,
                        backend.name()
                    )),
                }
            }
            Sticky::ClientAddr => Choice {
                backend: self.by_weight(address_hash(req.remote_addr)),
                set_cookie: None,
            },
            Sticky::None => Choice {
                backend: self.by_weight(random()),
                set_cookie: None,
            },
        }
    }

    fn arm_named(&self, name: &str) -> Option<BackendKind> {
        self.arms.iter().map(|&(b, _)| b).find(|b| b.name() == name)
    }

    /// The arm at `x` modulo the sum of the weights.
    fn by_weight(&self, x: u64) -> BackendKind {
        let mut point = x % self.total;
        for &(backend, w) in &self.arms {
            if point < u64::from(w) {
                return backend;
            }
            point -= u64::from(w);
        }
        self.arms[self.arms.len() - 1].0
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie_value<'a>(req: &Request<'a>, name: &str) -> Option<&'a str> {
    req.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"cookie"))
        .filter_map(|(_, v)| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.split_once('='))
        .find(|(n, _)| n.trim() == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
}

/// A stable hash of the client's address (the same in every worker and after a
/// restart): FNV-1a, then a 64-bit finalizer to spread close addresses.
fn address_hash(addr: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in addr.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// A per-thread xorshift64* generator, seeded from std's random hash keys, the
/// process id and the clock, and seeded again in a forked child.
fn random() -> u64 {
    thread_local!(static STATE: Cell<(u32, u64)> = const { Cell::new((0, 0)) });
    STATE.with(|c| {
        let me = std::process::id();
        let (pid, mut x) = c.get();
        if pid != me || x == 0 {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(me);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            h.write_u128(now);
            x = h.finish() | 1;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        c.set((me, x));
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn split(rule: &str) -> Split {
        let c = Config::from_toml(&format!(
            "[[backend.routing_rules]]\npattern = {{ type = \"prefix\", value = \"/app/\" }}\n{rule}\n"
        ))
        .unwrap();
        Split::new(0, &c.backend.routing_rules[0], &c.backend.split).unwrap()
    }

    #[test]
    fn weights_divide_the_range() {
        let s = split("split = [{ backend = \"embedded\", weight = 3 }, { backend = \"static\", weight = 1 }]");
        let got: Vec<BackendKind> = (0..8).map(|x| s.by_weight(x)).collect();
        use BackendKind::*;
        assert_eq!(
            got,
            [Embedded, Embedded, Embedded, Static, Embedded, Embedded, Embedded, Static]
        );
    }

    #[test]
    fn cookie_keeps_a_client_and_a_stale_one_is_replaced() {
        let s = split("split = [{ backend = \"embedded\", weight = 1 }, { backend = \"static\", weight = 1 }]");
        let mut req = Request::get("/app/");
        req.headers = vec![(b"Cookie", b"x=1; fephp_arm=static; y=2")];
        for _ in 0..50 {
            assert_eq!(
                s.choose(&req),
                Choice {
                    backend: BackendKind::Static,
                    set_cookie: None
                }
            );
        }
        req.headers = vec![(b"Cookie", b"fephp_arm=fastcgi")];
        let c = s.choose(&req);
        assert_eq!(
            c.set_cookie.unwrap(),
            format!(
                "fephp_arm={}; Path=/; HttpOnly; SameSite=Lax",
                c.backend.name()
            )
        );
        req.tls = true;
        req.headers.clear();
        assert!(s.choose(&req).set_cookie.unwrap().ends_with("; Secure"));
    }

    #[test]
    fn client_address_is_stable_and_spreads() {
        let s = split("split = [{ backend = \"embedded\", weight = 1 }, { backend = \"static\", weight = 1 }]\nsticky = \"client_addr\"");
        let mut embedded = 0;
        for i in 0..1000 {
            let addr = format!("10.0.{}.{}", i / 256, i % 256);
            let mut req = Request::get("/app/");
            req.remote_addr = &addr;
            let first = s.choose(&req);
            assert_eq!(first.set_cookie, None);
            assert_eq!(s.choose(&req), first, "{addr}");
            embedded += (first.backend == BackendKind::Embedded) as usize;
        }
        assert!((450..=550).contains(&embedded), "{embedded}");
    }
}
