//! Picks a backend for a normalized path.
//!
//! Rules are ranked once at build time: higher `priority` first, ties broken by
//! declaration order (the rule written first wins). A lookup finds the best-ranked
//! matching rule of each kind — exact in a hash map, prefixes and suffixes in byte
//! tries, regexes in one `RegexSet` — and keeps the best of those.

use crate::config::{BackendKind, PatternKind, RoutingRule};
use regex::RegexSet;
use std::collections::HashMap;

/// Index of a rule in the ranked order: lower is better.
type Rank = u32;

/// The routing decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub backend: BackendKind,
    /// Index of the matching rule in the configuration (declaration order), or
    /// `None` when the default backend was used.
    pub rule: Option<usize>,
}

/// A compiled rule set.
#[derive(Debug)]
pub struct Router {
    /// By rank: (backend, declaration index).
    ranked: Vec<(BackendKind, usize)>,
    exact: HashMap<String, Rank>,
    prefixes: ByteTrie,
    suffixes: ByteTrie,
    regexes: Option<RegexSet>,
    /// Rank of each pattern in `regexes`.
    regex_ranks: Vec<Rank>,
    best_regex_rank: Rank,
    default: BackendKind,
    /// Each rule's `name`, by declaration index (what `Route::rule` holds).
    names: Vec<Option<String>>,
}

impl Router {
    /// Compiles rules. Backend names and regexes must already be validated
    /// (`Config::validate`); an invalid one is an error here too.
    pub fn new(rules: &[RoutingRule], default: BackendKind) -> Result<Router, String> {
        let mut order: Vec<usize> = (0..rules.len()).collect();
        // Stable sort: equal priorities keep declaration order.
        order.sort_by_key(|&i| std::cmp::Reverse(rules[i].priority));

        let mut router = Router {
            ranked: Vec::with_capacity(rules.len()),
            exact: HashMap::new(),
            prefixes: ByteTrie::default(),
            suffixes: ByteTrie::default(),
            regexes: None,
            regex_ranks: Vec::new(),
            best_regex_rank: Rank::MAX,
            default,
            names: rules.iter().map(|r| r.name.clone()).collect(),
        };
        let mut regex_sources = Vec::new();
        for (rank, &i) in order.iter().enumerate() {
            let rank = rank as Rank;
            let rule = &rules[i];
            // A split rule routes to its primary arm; the engine picks the arm.
            let name = rule.primary_backend().unwrap_or_default();
            let backend = BackendKind::from_name(name)
                .ok_or_else(|| format!("routing rule #{} names unknown backend '{name}'", i + 1))?;
            router.ranked.push((backend, i));
            let value = rule.pattern.value.as_str();
            match rule.pattern.kind {
                // The first (best) rule for a value wins; later duplicates never match.
                PatternKind::Exact => {
                    router.exact.entry(value.to_owned()).or_insert(rank);
                }
                PatternKind::Prefix => router.prefixes.insert(value.bytes(), rank),
                PatternKind::Suffix => router.suffixes.insert(value.bytes().rev(), rank),
                PatternKind::Regex => {
                    regex_sources.push(value);
                    router.regex_ranks.push(rank);
                    router.best_regex_rank = router.best_regex_rank.min(rank);
                }
            }
        }
        if !regex_sources.is_empty() {
            router.regexes = Some(
                regex::RegexSetBuilder::new(&regex_sources)
                    .dfa_size_limit(64 << 20)
                    .build()
                    .map_err(|e| format!("invalid regex in routing rules: {e}"))?,
            );
        }
        Ok(router)
    }

    /// Routes a normalized path (see `path::normalize`).
    pub fn route(&self, path: &str) -> Route {
        let mut best = Rank::MAX;
        if let Some(&r) = self.exact.get(path) {
            best = r;
        }
        best = best.min(self.prefixes.best_match(path.bytes()));
        best = best.min(self.suffixes.best_match(path.bytes().rev()));
        if self.best_regex_rank < best {
            if let Some(set) = &self.regexes {
                for i in set.matches(path).iter() {
                    best = best.min(self.regex_ranks[i]);
                }
            }
        }
        match self.ranked.get(best as usize) {
            Some(&(backend, rule)) => Route {
                backend,
                rule: Some(rule),
            },
            None => Route {
                backend: self.default,
                rule: None,
            },
        }
    }

    /// The `name` of rule `rule` (a `Route::rule`), if it has one.
    pub fn rule_name(&self, rule: usize) -> Option<&str> {
        self.names.get(rule)?.as_deref()
    }

    /// How many rules there are (declaration indexes run below this).
    pub fn rules(&self) -> usize {
        self.names.len()
    }

    #[cfg_attr(not(feature = "internals"), allow(dead_code))]
    pub fn default_backend(&self) -> BackendKind {
        self.default
    }
}

/// A byte trie whose nodes may carry the best rank of a pattern ending there.
#[derive(Debug)]
struct ByteTrie {
    nodes: Vec<TrieNode>,
}

#[derive(Debug, Default)]
struct TrieNode {
    /// Sorted by byte.
    children: Vec<(u8, u32)>,
    rank: Option<Rank>,
}

impl Default for ByteTrie {
    fn default() -> Self {
        ByteTrie {
            nodes: vec![TrieNode::default()],
        }
    }
}

impl ByteTrie {
    fn insert(&mut self, key: impl Iterator<Item = u8>, rank: Rank) {
        let mut node = 0usize;
        for b in key {
            node = match self.nodes[node]
                .children
                .binary_search_by_key(&b, |&(c, _)| c)
            {
                Ok(i) => self.nodes[node].children[i].1 as usize,
                Err(i) => {
                    let next = self.nodes.len();
                    self.nodes.push(TrieNode::default());
                    self.nodes[node].children.insert(i, (b, next as u32));
                    next
                }
            };
        }
        let slot = &mut self.nodes[node].rank;
        *slot = Some(slot.map_or(rank, |r| r.min(rank)));
    }

    /// Best rank among patterns that are a prefix of `key`.
    fn best_match(&self, key: impl Iterator<Item = u8>) -> Rank {
        let mut best = self.nodes[0].rank.unwrap_or(Rank::MAX);
        let mut node = 0usize;
        for b in key {
            let children = &self.nodes[node].children;
            match children.binary_search_by_key(&b, |&(c, _)| c) {
                Ok(i) => node = children[i].1 as usize,
                Err(_) => break,
            }
            if let Some(r) = self.nodes[node].rank {
                best = best.min(r);
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(kind: PatternKind, value: &str, backend: &str, priority: i32) -> RoutingRule {
        RoutingRule::new(kind, value, backend, priority)
    }

    fn seed_rules() -> Vec<RoutingRule> {
        vec![
            rule(PatternKind::Exact, "/_status", "embedded", 100),
            rule(PatternKind::Prefix, "/api/", "embedded", 90),
            rule(PatternKind::Suffix, ".jpg", "static", 80),
            rule(PatternKind::Regex, r"^/api/v\d+/", "fastcgi", 60),
            rule(PatternKind::Prefix, "/admin/", "fastcgi", 70),
        ]
    }

    #[test]
    fn the_matched_rule_names_itself() {
        let mut rules = seed_rules();
        rules[1].name = Some("api".to_owned());
        rules[3].name = Some("api-versioned".to_owned());
        let r = Router::new(&rules, BackendKind::Static).unwrap();
        assert_eq!(r.rules(), 5);
        let name = |path: &str| r.route(path).rule.and_then(|i| r.rule_name(i));
        assert_eq!(name("/api/users"), Some("api"));
        // The regex outranks nothing here: /api/ (90) beats it (60).
        assert_eq!(name("/api/v2/users"), Some("api"));
        assert_eq!(name("/admin/x"), None);
        assert_eq!(name("/elsewhere"), None);
        assert_eq!(r.rule_name(99), None);
    }

    #[test]
    fn each_kind_matches() {
        let r = Router::new(&seed_rules(), BackendKind::Static).unwrap();
        assert_eq!(
            r.route("/_status"),
            Route {
                backend: BackendKind::Embedded,
                rule: Some(0)
            }
        );
        assert_eq!(r.route("/_status/x").backend, BackendKind::Static);
        assert_eq!(
            r.route("/api/users"),
            Route {
                backend: BackendKind::Embedded,
                rule: Some(1)
            }
        );
        assert_eq!(
            r.route("/img/a.jpg"),
            Route {
                backend: BackendKind::Static,
                rule: Some(2)
            }
        );
        assert_eq!(
            r.route("/admin/"),
            Route {
                backend: BackendKind::FastCgi,
                rule: Some(4)
            }
        );
        assert_eq!(
            r.route("/v2/x"),
            Route {
                backend: BackendKind::Static,
                rule: None
            }
        );
    }

    #[test]
    fn higher_priority_wins_across_kinds() {
        let r = Router::new(&seed_rules(), BackendKind::Static).unwrap();
        // Matches prefix /api/ (90), suffix .jpg (80) and the regex (60): prefix wins.
        assert_eq!(r.route("/api/v1/a.jpg").rule, Some(1));
        // Matches prefix /admin/ (70) and suffix .jpg (80): suffix wins.
        assert_eq!(r.route("/admin/logo.jpg").rule, Some(2));
        let rules = vec![
            rule(PatternKind::Prefix, "/api/", "static", 10),
            rule(PatternKind::Regex, "^/api/v1", "fastcgi", 20),
        ];
        let r = Router::new(&rules, BackendKind::Embedded).unwrap();
        assert_eq!(r.route("/api/v1/x").rule, Some(1));
        assert_eq!(r.route("/api/v2/x").rule, Some(0));
    }

    #[test]
    fn ties_go_to_the_rule_declared_first() {
        let rules = vec![
            rule(PatternKind::Prefix, "/a/", "static", 5),
            rule(PatternKind::Suffix, ".css", "fastcgi", 5),
            rule(PatternKind::Prefix, "/a/b/", "embedded", 5),
        ];
        let r = Router::new(&rules, BackendKind::Embedded).unwrap();
        assert_eq!(r.route("/a/b/x.css").rule, Some(0));
        let rules = vec![
            rule(PatternKind::Suffix, ".css", "fastcgi", 5),
            rule(PatternKind::Prefix, "/a/", "static", 5),
        ];
        let r = Router::new(&rules, BackendKind::Embedded).unwrap();
        assert_eq!(r.route("/a/b/x.css").rule, Some(0));
        // Duplicate exact values: the first declared wins.
        let rules = vec![
            rule(PatternKind::Exact, "/x", "static", 1),
            rule(PatternKind::Exact, "/x", "fastcgi", 1),
        ];
        assert_eq!(
            Router::new(&rules, BackendKind::Embedded)
                .unwrap()
                .route("/x")
                .rule,
            Some(0)
        );
        // ...unless a later one has a higher priority.
        let rules = vec![
            rule(PatternKind::Exact, "/x", "static", 1),
            rule(PatternKind::Exact, "/x", "fastcgi", 2),
        ];
        assert_eq!(
            Router::new(&rules, BackendKind::Embedded)
                .unwrap()
                .route("/x")
                .rule,
            Some(1)
        );
    }

    #[test]
    fn longer_and_shorter_prefixes() {
        let rules = vec![
            rule(PatternKind::Prefix, "/", "embedded", 1),
            rule(PatternKind::Prefix, "/static/", "static", 50),
            rule(PatternKind::Prefix, "/static/private/", "fastcgi", 60),
        ];
        let r = Router::new(&rules, BackendKind::Embedded).unwrap();
        assert_eq!(r.route("/index.php").rule, Some(0));
        assert_eq!(r.route("/static/a.css").rule, Some(1));
        assert_eq!(r.route("/static/private/x").rule, Some(2));
        assert_eq!(r.route("/stat").rule, Some(0));
    }

    #[test]
    fn many_regexes_pick_the_best_ranked() {
        let mut rules = Vec::new();
        for i in 0..300 {
            rules.push(rule(PatternKind::Regex, &format!("^/r{i}/"), "static", i));
        }
        rules.push(rule(PatternKind::Regex, "^/r1", "fastcgi", 1000));
        let r = Router::new(&rules, BackendKind::Embedded).unwrap();
        assert_eq!(r.route("/r7/x").rule, Some(7));
        assert_eq!(r.route("/r150/x").rule, Some(300));
        assert_eq!(r.route("/zz").rule, None);
    }
}
