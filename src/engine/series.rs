//! The labelled histograms an engine records its requests in (by named rule, by
//! PHP pool), claimed once when the engine is built and picked per request by
//! the matched rule's index: no lookup by name on the request path. A reload's
//! engine claims the same series again by their labels, so their counts carry
//! over like the region's other counters; a rule renamed or removed keeps its
//! old series, which stops growing.

use crate::config::{BackendKind, Validated};
use crate::metrics::{Family, Metrics, RequestSeries, Series};
use crate::routing::router::Router;

/// Label of the FastCGI backend's unnamed group (`[php] fpm_socket` or
/// `fpm_upstreams`); named groups are labelled by their name.
const FASTCGI_POOL: &str = "default";

/// A PHP pool's duration and time-to-first-byte series.
#[derive(Debug, Clone, Copy, Default)]
struct Php {
    duration: Series,
    ttfb: Series,
}

pub(super) struct EngineSeries {
    /// By rule index: the named rule's series (none when unnamed)...
    rules: Vec<Series>,
    /// ...and, for rules with `pool = "NAME"`, that pool's series (embedded or
    /// FastCGI, as the rule's backend).
    rule_pools: Vec<Option<Php>>,
    /// Embedded PHP in `[php.pool]`.
    default_pool: Php,
    fastcgi: Php,
}

impl EngineSeries {
    /// Claims the series of `validated`'s named rules and of the PHP backends
    /// available.
    pub(super) fn new(metrics: &Metrics, validated: &Validated, router: &Router) -> EngineSeries {
        let embedded = validated.embedded.is_available();
        let php = |backend: &str, pool: &str| Php {
            duration: if backend == "embedded" {
                metrics.series(Family::PoolDuration, &[("pool", pool)])
            } else {
                Series::NONE
            },
            ttfb: metrics.series(Family::PhpTtfb, &[("backend", backend), ("pool", pool)]),
        };
        let rules = (0..router.rules())
            .map(|i| match router.rule_name(i) {
                Some(name) => metrics.series(Family::RuleDuration, &[("rule", name)]),
                None => Series::NONE,
            })
            .collect();
        // `pool` names a [php.fpm_pools.NAME] on a FastCGI rule, a
        // [php.pools.NAME] on any other.
        let fastcgi = validated.fastcgi.is_available();
        let rule_pools = validated
            .config
            .backend
            .routing_rules
            .iter()
            .map(|r| {
                let pool = r.pool.as_deref()?;
                match r.backend.as_deref() {
                    Some("fastcgi") => fastcgi.then(|| php("fastcgi", pool)),
                    _ => embedded.then(|| php("embedded", pool)),
                }
            })
            .collect();
        EngineSeries {
            rules,
            rule_pools,
            default_pool: if embedded {
                php("embedded", crate::backends::embedded::DEFAULT_POOL)
            } else {
                Php::default()
            },
            fastcgi: if fastcgi {
                php("fastcgi", FASTCGI_POOL)
            } else {
                Php::default()
            },
        }
    }

    /// The series of a request that rule `rule` (none: the default backend)
    /// sent to `backend`.
    #[inline]
    pub(super) fn of(&self, backend: BackendKind, rule: Option<usize>) -> RequestSeries {
        let php = match backend {
            BackendKind::Embedded => rule
                .and_then(|r| *self.rule_pools.get(r)?)
                .unwrap_or(self.default_pool),
            BackendKind::FastCgi => rule
                .and_then(|r| *self.rule_pools.get(r)?)
                .unwrap_or(self.fastcgi),
            BackendKind::Static | BackendKind::Proxy => Php::default(),
        };
        RequestSeries {
            rule: rule
                .and_then(|r| self.rules.get(r).copied())
                .unwrap_or(Series::NONE),
            pool: php.duration,
            ttfb: php.ttfb,
        }
    }
}
