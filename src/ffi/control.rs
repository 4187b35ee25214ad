//! What a host's control API needs from the engine (since 1.4.0): the running
//! configuration as JSON, the PHP runner pools' state as JSON, the FastCGI
//! upstreams' state as JSON and their drain, and a check of a candidate
//! configuration that builds nothing. fe-php-host's control socket
//! (host/src/control) is the first user; any host may offer the same.

use super::boundary::{guard, holder_ref, non_null, set_last_error, write_out};
use super::types::{fephp_engine, fephp_result};
use crate::config::Config;
use std::ffi::{c_char, CStr};
use std::path::Path;

/// Writes the engine's running configuration as a JSON object into `buf`: the
/// document its current configuration was read from (by `fephp_init` or the last
/// successful `fephp_engine_reload`), every table and key as written, the host's
/// `[server]` included; defaults that the file leaves out are not filled in.
/// TOML dates and times become strings. Since 1.4.0.
#[no_mangle]
pub unsafe extern "C" fn fephp_engine_config_json(
    engine: *const fephp_engine,
    buf: *mut c_char,
    cap: usize,
    len_out: *mut usize,
) -> fephp_result {
    guard(|| {
        non_null!(engine, len_out);
        let source = holder_ref(engine).source();
        let json = serde_json::to_string(&to_json(&toml::Value::Table((*source).clone())))
            .unwrap_or_else(|_| "{}".to_owned());
        write_out(json.as_bytes(), buf, cap, len_out)
    })
}

/// Writes the PHP runner pools of this process tree as JSON into `buf`:
/// `{"pools":[{"name":"default","worker":false,"runners":2,"busy":1,"idle":1,
/// "max":8,"queued":0,"queue_size":64,"rejected":0,"pids":[…]}, …]}` — "default"
/// is `[php.pool]`, other names `[php.pools.NAME]`; `worker` is true for a worker
/// pool (`worker = "…"`, which `fephp_engine_restart_workers` restarts); `pids`
/// are its runner processes. Empty list without the embedded backend's pools.
/// The figures are read from memory the pool processes share, so any process
/// of the host (a master included) sees them. Since 1.4.0.
#[no_mangle]
pub unsafe extern "C" fn fephp_engine_pools_json(
    engine: *const fephp_engine,
    buf: *mut c_char,
    cap: usize,
    len_out: *mut usize,
) -> fephp_result {
    guard(|| {
        non_null!(engine, len_out);
        let pools: Vec<serde_json::Value> = crate::backends::embedded::pool_stats()
            .into_iter()
            .map(|p| {
                serde_json::json!({
                    "name": p.name,
                    "worker": p.worker,
                    "runners": p.runners,
                    "busy": p.busy,
                    "idle": p.idle,
                    "max": p.max,
                    "queued": p.queued,
                    "queue_size": p.queue_size,
                    "rejected": p.rejected,
                    "pids": p.pids,
                })
            })
            .collect();
        let json = serde_json::json!({ "pools": pools }).to_string();
        write_out(json.as_bytes(), buf, cap, len_out)
    })
}

/// Writes the FastCGI upstreams (php-fpm) of this process tree as JSON into
/// `buf`: `{"fastcgi":[{"pool":"default","address":"127.0.0.1:9001","weight":1,
/// "up":true,"drained":false,"active_connections":0,"requests":12,
/// "failures":0}, …]}` — `pool` is "default" for `[php] fpm_socket` /
/// `fpm_upstreams`, else the `[php.fpm_pools.NAME]` name; `address` as
/// configured; `up` false while `max_fails` failures (or a failed ping) keep it
/// out of the turn; `drained` as `fephp_engine_upstream_drain` set it; the
/// figures are totals of every worker process (read from memory they share, so
/// any process of the host sees them). Empty list without FastCGI upstreams.
/// Since 1.4.0.
#[no_mangle]
pub unsafe extern "C" fn fephp_engine_upstreams_json(
    engine: *const fephp_engine,
    buf: *mut c_char,
    cap: usize,
    len_out: *mut usize,
) -> fephp_result {
    guard(|| {
        non_null!(engine, len_out);
        let list: Vec<serde_json::Value> = holder_ref(engine)
            .metrics()
            .fpm_upstreams()
            .iter()
            .map(upstream_json)
            .collect();
        let json = serde_json::json!({ "fastcgi": list }).to_string();
        write_out(json.as_bytes(), buf, cap, len_out)
    })
}

/// Drains (`drain` true) or undrains FastCGI upstream `address` of pool `pool`
/// in every process of the host at once (the flag lives in memory the worker
/// processes share; any process of the host may call this). `pool` is "default"
/// (`[php] fpm_socket` / `fpm_upstreams`) or a `[php.fpm_pools.NAME]` name;
/// `address` is as configured ("127.0.0.1:9001", "unix:/run/php.sock"; a unix
/// socket may be given with or without "unix:"). Both are NUL-terminated and
/// borrowed for the call.
///
/// A drained upstream gets no new request while another upstream of its pool is
/// in the turn and not drained; requests in flight finish, its connections close
/// once idle. When every upstream of the pool is drained or out of the turn, the
/// drained ones take requests again (and a warning is logged): a drain never
/// leaves a pool without php-fpm. A drain stays while the upstream keeps its
/// place on reload (`fephp_engine_reload` with the same upstream lists before
/// it); a reload that changes which upstream is where clears it.
///
/// `FEPHP_RESULT_OK`: done (`fephp_engine_upstreams_json` shows the new state).
/// `FEPHP_RESULT_INVALID_ARGUMENT`: no such
/// pool or address; `fephp_last_error` names the pools, or the pool's addresses,
/// that exist. Since 1.4.0.
#[no_mangle]
pub unsafe extern "C" fn fephp_engine_upstream_drain(
    engine: *const fephp_engine,
    pool: *const c_char,
    address: *const c_char,
    drain: bool,
) -> fephp_result {
    guard(|| {
        non_null!(engine, pool, address);
        let (Ok(pool), Ok(address)) = (
            CStr::from_ptr(pool).to_str(),
            CStr::from_ptr(address).to_str(),
        ) else {
            set_last_error("pool or address is not valid UTF-8");
            return fephp_result::InvalidArgument;
        };
        let metrics = holder_ref(engine).metrics();
        match metrics.fpm_set_drained(pool, address, drain) {
            Ok(u) => {
                tracing::info!(
                    pool = %u.pool,
                    "PHP-FPM upstream {} {}",
                    u.address,
                    if drain {
                        "drained: it takes no new requests while another upstream of its pool can"
                    } else {
                        "undrained: back in the turn"
                    }
                );
                fephp_result::Ok
            }
            Err(e) => {
                set_last_error(e);
                fephp_result::InvalidArgument
            }
        }
    })
}

fn upstream_json(u: &crate::metrics::FpmUpstreamStats) -> serde_json::Value {
    serde_json::json!({
        "pool": u.pool,
        "address": u.address,
        "weight": u.weight,
        "up": u.up,
        "drained": u.drained,
        "active_connections": u.active,
        "requests": u.requests,
        "failures": u.failures,
    })
}

/// Checks a candidate configuration without building an engine (no PHP pool,
/// thread or connection starts): `config_path` alone checks that file;
/// `config_toml` alone checks that text; both check the text as the content
/// of the file at `config_path` (what a host does before it writes a change
/// there: messages name that file, as `fephp_init` on it would). Each string is
/// NUL-terminated and borrowed for the call.
///
/// `FEPHP_RESULT_OK`: the configuration is valid; `buf` receives its
/// informational lines (as `fephp_engine_messages` would give, maybe empty).
/// `FEPHP_RESULT_CONFIG_ERROR`: `fephp_last_error` gives every problem with its
/// fix, the messages `fephp_init` gives for it. A `[server]` table is the host's
/// to check (as for `fephp_init`). What only starting can tell (a libphp that
/// fails to load, a worker script that cannot boot) is not checked; nor whether
/// the change needs a restart (`fephp_engine_reload` says so). Since 1.4.0.
#[no_mangle]
pub unsafe extern "C" fn fephp_config_check(
    config_path: *const c_char,
    config_toml: *const c_char,
    buf: *mut c_char,
    cap: usize,
    len_out: *mut usize,
) -> fephp_result {
    guard(|| {
        non_null!(len_out);
        let text = |p: *const c_char, what: &str| -> Result<Option<&str>, fephp_result> {
            if p.is_null() {
                return Ok(None);
            }
            CStr::from_ptr(p).to_str().map(Some).map_err(|_| {
                set_last_error(format!("{what} is not valid UTF-8"));
                fephp_result::InvalidArgument
            })
        };
        let (path, toml_text) = match (
            text(config_path, "config_path"),
            text(config_toml, "config_toml"),
        ) {
            (Ok(p), Ok(t)) => (p, t),
            (Err(r), _) | (_, Err(r)) => return r,
        };
        let config = match (path, toml_text) {
            (Some(p), None) => Config::from_file(Path::new(p)),
            (None, Some(t)) => Config::from_toml(t),
            (Some(p), Some(t)) => Config::from_file_text(Path::new(p), t),
            (None, None) => {
                set_last_error("fephp_config_check: pass config_path, config_toml or both");
                return fephp_result::InvalidArgument;
            }
        };
        match config.and_then(crate::engine::check) {
            Ok(messages) => write_out(messages.join("\n").as_bytes(), buf, cap, len_out),
            Err(e) => {
                set_last_error(e.to_string());
                fephp_result::ConfigError
            }
        }
    })
}

/// A TOML value as JSON (dates and times as their TOML text).
fn to_json(v: &toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(a.iter().map(to_json).collect()),
        toml::Value::Table(t) => {
            J::Object(t.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
        }
    }
}
