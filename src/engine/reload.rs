//! Reload: the handle a host holds (`fephp_engine`) on the current engine, and
//! the swap to a new configuration.

use super::Engine;
use crate::backends::{embedded, BUILT};
use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use parking_lot::{Mutex, RwLock};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// An engine whose configuration can be replaced while it serves (what a C host's
/// `fephp_engine` is). Each request takes the current `Engine` when it starts and
/// finishes on it: a reload never disturbs requests in flight, and the old engine
/// (its FastCGI connections included) goes away when the last of them is done.
/// The metrics carry over.
pub struct ReloadableEngine {
    current: RwLock<Arc<Engine>>,
    metrics: Arc<Metrics>,
    /// The process in which `worker_start` ran (0: none yet). A reload there starts
    /// the new engine's threads too; a master that never started keeps none.
    started_in: AtomicU32,
    reloading: Mutex<()>,
    /// The configuration document the current engine was built from, as written
    /// (no defaults filled in): what `fephp_engine_config_json` returns.
    source: RwLock<Arc<toml::Table>>,
}

impl ReloadableEngine {
    pub fn new(config: Config) -> Result<ReloadableEngine, ConfigError> {
        // Pin the start directory now, before PHP moves the process: relative paths
        // in a file reloaded later are resolved against it.
        let _ = crate::config::absolute(Path::new("."));
        let metrics = Arc::new(Metrics::new());
        let engine = Engine::with_metrics(config, metrics.clone())?;
        Ok(ReloadableEngine {
            current: RwLock::new(Arc::new(engine)),
            metrics,
            started_in: AtomicU32::new(0),
            reloading: Mutex::new(()),
            source: RwLock::new(Arc::new(toml::Table::new())),
        })
    }

    /// The engine new requests go to.
    pub fn current(&self) -> Arc<Engine> {
        self.current.read().clone()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Builds an engine from `config` and makes it current. On error nothing
    /// changes. PHP's runtime is per process: `[php] libphp_path` or `[php.ini]`
    /// changes are refused ("needs a restart").
    #[cfg_attr(not(feature = "internals"), allow(dead_code))]
    pub fn reload(&self, config: Config) -> Result<(), ConfigError> {
        self.reload_from(config, None)
    }

    /// The document the current engine was built from (empty when its builder
    /// did not say: see `set_source`).
    pub fn source(&self) -> Arc<toml::Table> {
        self.source.read().clone()
    }

    /// Records the document the current engine was built from (after `new`).
    pub fn set_source(&self, source: toml::Table) {
        *self.source.write() = Arc::new(source);
    }

    /// As `reload`; on success `source` (when given) becomes the recorded
    /// document in the same step, so concurrent reloads cannot leave the
    /// document of one beside the engine of another.
    pub fn reload_from(
        &self,
        config: Config,
        source: Option<toml::Table>,
    ) -> Result<(), ConfigError> {
        let _one = self.reloading.lock();
        let built = Engine::with_metrics(config, self.metrics.clone()).and_then(|e| {
            if self.started_in.load(Ordering::Relaxed) == std::process::id() {
                e.worker_start().map_err(|msg| ConfigError {
                    problems: vec![msg],
                })?;
            }
            Ok(e)
        });
        let engine = match built {
            Ok(e) => e,
            Err(e) => {
                self.metrics.reloaded(false);
                return Err(e);
            }
        };
        let old = std::mem::replace(&mut *self.current.write(), Arc::new(engine));
        if let Some(s) = source {
            self.set_source(s);
        }
        self.metrics.reloaded(true);
        // Requests still running on `old` hold it; the last one drops it.
        drop(old);
        Ok(())
    }

    /// Why `config` cannot be applied by `reload` in this process, if it cannot:
    /// it changes `[php] libphp_path` or `[php.ini]` of the PHP runtime running
    /// here (and uses the embedded backend).
    pub fn restart_required(&self, config: &Config) -> Option<String> {
        // Only a file that differs from the running PHP is validated here (again,
        // by the reload otherwise): does it use the embedded backend at all?
        let why = embedded::runtime_conflict(
            &config.php.libphp_path,
            &config.php.ini,
            &std::iter::once((embedded::DEFAULT_POOL, &config.php.pool))
                .chain(config.php.pools.iter().map(|(n, p)| (n.as_str(), p)))
                .collect::<Vec<_>>(),
        )?;
        let validated = config.clone().validate(BUILT).ok()?;
        validated.embedded.is_available().then_some(why)
    }

    /// Per-process start (see `Engine::worker_start`), from the host thread that
    /// will start the host's other threads: SIGPROF is blocked in it (they inherit
    /// that), so PHP's CPU-time limit lands on the PHP thread (`sigprof`).
    pub fn worker_start(&self) -> Result<(), String> {
        crate::backends::sigprof::set_blocked(true);
        self.current().worker_start()?;
        self.started_in.store(std::process::id(), Ordering::Relaxed);
        Ok(())
    }
}
