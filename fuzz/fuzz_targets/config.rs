//! TOML text → `Config::from_toml` → `validate` (→ `Router::new` when valid).
//!
//! Invariants:
//! - parsing, validation and every message never panic;
//! - an error always has at least one problem, and each is non-empty text;
//! - a configuration that validates always builds its router (the rules that
//!   passed validation compile as one set);
//! - the chosen default backend is one validation calls available;
//! - every rule of a valid configuration names an available backend.
#![no_main]

use fe_php::config::{Built, Config};
use fe_php::routing::router::Router;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = match Config::from_toml(text) {
        Ok(c) => c,
        Err(e) => {
            assert!(!e.problems.is_empty());
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    // Both build variants: the messages differ, neither may panic.
    for built in [
        Built {
            embedded: true,
            fastcgi: true,
        },
        Built {
            embedded: false,
            fastcgi: false,
        },
    ] {
        match config.clone().validate(built) {
            Ok(v) => {
                assert!(
                    v.availability(v.default_backend).is_available(),
                    "default backend {} accepted but unavailable",
                    v.default_backend
                );
                let rules = &v.config.backend.routing_rules;
                for r in rules {
                    // Exactly one of backend / split in a valid rule; every arm named
                    // is known and available.
                    let names: Vec<&str> = match (&r.backend, &r.split) {
                        (Some(b), None) => vec![b.as_str()],
                        (None, Some(arms)) => {
                            assert!(!arms.is_empty(), "a valid split has arms");
                            arms.iter().map(|a| a.backend.as_str()).collect()
                        }
                        _ => panic!("a valid rule has a backend or a split, not both"),
                    };
                    for name in names {
                        let kind = fe_php::BackendKind::from_name(name)
                            .expect("a valid config names known backends");
                        assert!(v.availability(kind).is_available());
                    }
                }
                if let Err(e) = Router::new(rules, v.default_backend) {
                    panic!("validated rules do not build a router: {e}");
                }
                for m in &v.messages {
                    assert!(m.starts_with("[i] "), "{m}");
                }
            }
            Err(e) => {
                assert!(!e.problems.is_empty());
                assert!(e.problems.iter().all(|p| !p.is_empty()));
            }
        }
    }
});
