//! The control API's endpoints: what each answers and how a change is applied.
//!
//! A change (`PUT /config`, `PUT /config/SECTION…`, `DELETE /config/SECTION…`)
//! builds the whole new configuration text, checks it as `--check` would for the
//! file (same messages), writes it to the configuration file atomically, then
//! has the master reload it exactly as on SIGHUP. A check that fails writes
//! nothing; a reload that refuses the file puts the previous file back. The
//! master runs one request at a time, so changes are applied one after the
//! other in the order they arrive.

use super::http::{Request, Response};
use super::store;
use crate::abi;
use crate::master::{Applied, Master};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;

/// `--check`'s validation of a candidate text for the configuration file: Err
/// with every problem, as `--check` prints them.
pub type Check = Box<dyn Fn(&str) -> Result<(), String>>;

/// What the endpoints work with beside the master.
pub struct App {
    pub engine: Arc<abi::Engine>,
    /// The configuration file (absolute).
    pub config_path: PathBuf,
    pub check: Check,
}

/// Answers one request.
pub fn handle(app: &App, master: &mut dyn Master, req: &Request) -> Response {
    let path = req.path.trim_end_matches('/');
    let m = req.method.as_str();
    let section = path.strip_prefix("/config/");
    match (m, path) {
        ("GET", "") => index(),
        ("GET", "/config") => show_config(app, req, &[]),
        ("PUT", "/config") => put_config(app, master, req),
        ("GET", "/workers") => workers(master),
        ("GET", "/pools") => pools(app),
        ("GET", "/upstreams") => upstreams(app),
        _ if section.is_some() => {
            let seg = match store::segments(section.unwrap_or_default()) {
                Ok(s) => s,
                Err(e) => return Response::text(400, &e),
            };
            match m {
                "GET" => show_config(app, req, &seg),
                "PUT" => change_section(app, master, req, &seg, true),
                "DELETE" => change_section(app, master, req, &seg, false),
                _ => not_allowed("GET, PUT, DELETE"),
            }
        }
        _ if path.starts_with("/upstreams/fastcgi/") && drain_action(path).is_some() => {
            if m == "POST" {
                fastcgi_drain(app, path)
            } else {
                not_allowed("POST")
            }
        }
        _ => {
            let parts: Vec<&str> = path.split('/').collect();
            match parts.as_slice() {
                ["", "pools", name, "restart"] if m == "POST" => restart_pool(app, name),
                ["", "upstreams", "proxy", name, "drain" | "undrain"] if m == "POST" => {
                    proxy_drain(name)
                }
                ["", "pools", _, "restart"]
                | ["", "upstreams", "proxy", _, "drain" | "undrain"] => not_allowed("POST"),
                ["", "config" | "workers" | "pools" | "upstreams"] => {
                    not_allowed(if path == "/config" { "GET, PUT" } else { "GET" })
                }
                _ => Response::text(
                    404,
                    &format!("no such endpoint: {} (GET / lists them)", req.path),
                ),
            }
        }
    }
}

fn not_allowed(allow: &str) -> Response {
    Response::text(405, &format!("method not allowed here: use {allow}")).with("Allow", allow)
}

fn index() -> Response {
    Response::json(
        200,
        &json!({
            "endpoints": [
                "GET /config (TOML; ?format=json or Accept: application/json for JSON)",
                "GET /config/SECTION/... (one table or value, e.g. /config/backend/static_files)",
                "PUT /config (a whole configuration, TOML or JSON)",
                "PUT /config/SECTION/... (replaces that table or value)",
                "DELETE /config/SECTION/... (removes it: its defaults apply)",
                "GET /workers",
                "GET /pools",
                "POST /pools/NAME/restart",
                "GET /upstreams",
                "POST /upstreams/fastcgi/POOL/ADDRESS/drain (ADDRESS percent-encoded: unix%3A%2Frun%2Fphp.sock)",
                "POST /upstreams/fastcgi/POOL/ADDRESS/undrain",
            ]
        }),
    )
}

/// `?format=json|toml`, else the Accept header; TOML by default.
fn wants_json(req: &Request) -> bool {
    match req.param("format") {
        Some("json") => true,
        Some(_) => false,
        None => req
            .header("accept")
            .is_some_and(|a| a.contains("application/json")),
    }
}

/// Whether the body is JSON (`Content-Type: application/json` or
/// `?format=json`); TOML otherwise.
fn body_is_json(req: &Request) -> bool {
    req.param("format") == Some("json")
        || req
            .header("content-type")
            .is_some_and(|t| t.contains("json"))
}

/// The running configuration document (what the engine was built from).
fn running(app: &App) -> Result<toml::Table, Response> {
    let json: serde_json::Value = serde_json::from_str(&app.engine.config_json()).map_err(|e| {
        Response::text(500, &format!("the engine's configuration is not JSON: {e}"))
    })?;
    match store::json_to_toml(&json, "") {
        Ok(toml::Value::Table(t)) => Ok(t),
        Ok(_) => Err(Response::text(
            500,
            "the engine's configuration is not a table",
        )),
        Err(e) => Err(Response::text(500, &e)),
    }
}

fn show_config(app: &App, req: &Request, path: &[String]) -> Response {
    let doc = match running(app) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let value = if path.is_empty() {
        toml::Value::Table(doc)
    } else {
        match store::get(&doc, path) {
            Some(v) => v.clone(),
            None => {
                return Response::text(
                    404,
                    &format!(
                        "the running configuration has no {} (it is at its default)",
                        path.join(".")
                    ),
                )
            }
        }
    };
    if wants_json(req) {
        let json = serde_json::to_value(&value).unwrap_or_default();
        Response::json(200, &json)
    } else {
        Response::new(
            200,
            "application/toml; charset=utf-8",
            store::value_to_toml_text(&value),
        )
    }
}

fn body_text(req: &Request) -> Result<&str, Response> {
    std::str::from_utf8(&req.body).map_err(|_| Response::text(400, "the body is not UTF-8"))
}

fn parse_json(text: &str, at: &str) -> Result<toml::Value, Response> {
    let json: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Response::text(400, &format!("the body is not JSON: {e}")))?;
    store::json_to_toml(&json, at).map_err(|e| Response::text(400, &e))
}

/// `PUT /config`: a whole configuration. A TOML body is written as sent
/// (comments and all); a JSON one as the TOML it amounts to.
fn put_config(app: &App, master: &mut dyn Master, req: &Request) -> Response {
    let text = match body_text(req) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let text = if body_is_json(req) {
        match parse_json(text, "") {
            Ok(toml::Value::Table(t)) => store::to_toml_text(&t),
            Ok(_) => {
                return Response::text(
                    400,
                    "the body must be a JSON object: the whole configuration",
                )
            }
            Err(r) => return r,
        }
    } else {
        text.to_owned()
    };
    apply(app, master, &req.method, &req.path, text)
}

/// `PUT` or `DELETE /config/SECTION…`: the running document with that one
/// table or value replaced (or removed), everything else as it runs.
fn change_section(
    app: &App,
    master: &mut dyn Master,
    req: &Request,
    path: &[String],
    put: bool,
) -> Response {
    let mut doc = match running(app) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let value = if put {
        let text = match body_text(req) {
            Ok(t) => t,
            Err(r) => return r,
        };
        let parsed = if body_is_json(req) {
            parse_json(text, &path.join("."))
        } else {
            // A table as a TOML document, or one value (`4`, `"text"`, `[…]`).
            text.parse::<toml::Table>()
                .map(toml::Value::Table)
                .or_else(|e| {
                    format!("value = {}", text.trim())
                        .parse::<toml::Table>()
                        .ok()
                        .and_then(|mut t| t.remove("value"))
                        .ok_or(e)
                })
                .map_err(|e| {
                    Response::text(
                        400,
                        &format!("the body is neither a TOML table nor a TOML value: {e}"),
                    )
                })
        };
        match parsed {
            Ok(v) => Some(v),
            Err(r) => return r,
        }
    } else {
        None
    };
    if let Err(e) = store::set(&mut doc, path, value) {
        return Response::text(if put { 400 } else { 404 }, &e);
    }
    apply(
        app,
        master,
        &req.method,
        &req.path,
        store::to_toml_text(&doc),
    )
}

/// Checks `text`, writes it to the configuration file, reloads.
fn apply(app: &App, master: &mut dyn Master, method: &str, target: &str, text: String) -> Response {
    let file = app.config_path.display().to_string();
    if let Err(msg) = (app.check)(&text) {
        tracing::warn!("control API: {method} {target} refused:\n{msg}");
        return Response::text(422, &msg);
    }
    let before = match std::fs::read(&app.config_path) {
        Ok(b) => b,
        Err(e) => {
            return Response::text(500, &format!("cannot read the configuration file {file} (kept to put it back if the reload fails): {e}\n    The change is not applied."))
        }
    };
    if let Err(e) = store::write_atomically(&app.config_path, text.as_bytes()) {
        return Response::text(500, &format!("cannot write the configuration file {file}: {e}\n    The change is not applied: the running configuration and the file stay as they were. The file stays the source of truth (a restart reads it), so fe-php-host's master must be able to write a new file in its directory."));
    }
    match master.reload() {
        Ok(Applied::RolledOver { generation, workers }) => {
            tracing::info!("control API: {method} {target} applied (generation {generation}) and written to {file}");
            Response::json(200, &json!({
                "applied": true,
                "generation": generation,
                "workers": workers,
                "file": file,
            }))
        }
        Ok(Applied::Restart) => Response::json(202, &json!({
            "applied": true,
            "restart": true,
            "file": file,
            "message": "the change needs a new PHP runtime: the master re-executes itself now; the old workers finish their requests",
        })),
        Ok(Applied::NoWorker) => Response::text(500, &format!("the change was written to {file} and the engine took it, but no worker with it could start: the old workers keep serving the previous configuration. See the log, then retry (SIGHUP) or restart fe-php-host.")),
        Err(msg) => {
            let restored = match store::write_atomically(&app.config_path, &before) {
                Ok(()) => "the file was put back as it was".to_owned(),
                Err(e) => format!("and the previous file could NOT be put back ({e}): fix {file} before the next reload or restart"),
            };
            tracing::warn!("control API: {method} {target} refused by the reload ({restored}):\n{msg}");
            Response::text(422, &msg)
        }
    }
}

fn workers(master: &dyn Master) -> Response {
    let list: Vec<serde_json::Value> = master
        .workers()
        .into_iter()
        .map(|w| {
            json!({
                "pid": w.pid,
                "slot": w.slot,
                "generation": w.generation,
                "uptime_seconds": (w.uptime.as_secs_f64() * 1000.0).round() / 1000.0,
                "state": if w.slot.is_some() { "serving" } else { "draining" },
            })
        })
        .collect();
    Response::json(
        200,
        &json!({
            // SAFETY: plain identity query.
            "master_pid": unsafe { libc::getpid() },
            "generation": master.generation(),
            "workers": list,
        }),
    )
}

fn pools(app: &App) -> Response {
    match serde_json::from_str::<serde_json::Value>(&app.engine.pools_json()) {
        Ok(v) => Response::json(200, &v),
        Err(e) => Response::text(500, &format!("the engine's pool figures are not JSON: {e}")),
    }
}

fn restart_pool(app: &App, name: &str) -> Response {
    match app.engine.restart_pool(name) {
        Ok(()) => {
            tracing::info!("control API: restarting the workers of pool {name}");
            Response::json(200, &json!({ "restarted": name }))
        }
        Err(e) => Response::text(404, &e),
    }
}

/// The upstreams by kind: `proxy` (from the running configuration) and
/// `fastcgi` (each php-fpm upstream's state, totals of every worker process).
fn upstreams(app: &App) -> Response {
    let doc = match running(app) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let proxy = doc
        .get("backend")
        .and_then(|b| b.get("proxy"))
        .and_then(|p| p.as_table());
    let mut urls: Vec<String> = Vec::new();
    if let Some(p) = proxy {
        if let Some(u) = p.get("upstream").and_then(|u| u.as_str()) {
            urls.push(u.to_owned());
        }
        if let Some(list) = p.get("upstreams").and_then(|u| u.as_array()) {
            urls.extend(list.iter().filter_map(|u| u.as_str().map(str::to_owned)));
        }
    }
    let proxy: Vec<serde_json::Value> = urls.into_iter().map(|u| json!({ "url": u })).collect();
    Response::json(
        200,
        &json!({ "proxy": proxy, "fastcgi": fastcgi_upstreams(app) }),
    )
}

/// The engine's FastCGI upstream list.
fn fastcgi_upstreams(app: &App) -> Vec<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(&app.engine.upstreams_json())
        .ok()
        .and_then(|v| v.get("fastcgi").and_then(|l| l.as_array()).cloned())
        .unwrap_or_default()
}

/// `drain` or `undrain` at the end of `path`.
fn drain_action(path: &str) -> Option<bool> {
    match path.rsplit_once('/')?.1 {
        "drain" => Some(true),
        "undrain" => Some(false),
        _ => None,
    }
}

/// `POST /upstreams/fastcgi/POOL/ADDRESS/drain|undrain`: ADDRESS as configured,
/// percent-encoded where it has '/' (a unix socket); everything between POOL
/// and the action is the address, so an unencoded `unix:/run/php.sock` works too.
fn fastcgi_drain(app: &App, path: &str) -> Response {
    let drain = drain_action(path).unwrap_or(true);
    let rest = path
        .strip_prefix("/upstreams/fastcgi/")
        .and_then(|r| r.rsplit_once('/'))
        .map_or("", |(r, _)| r);
    let Some((pool, address)) = rest
        .split_once('/')
        .filter(|(p, a)| !p.is_empty() && !a.is_empty())
    else {
        let known: Vec<String> = fastcgi_upstreams(app)
            .iter()
            .map(|u| {
                format!(
                    "{}/{}",
                    u["pool"].as_str().unwrap_or(""),
                    u["address"].as_str().unwrap_or("")
                )
            })
            .collect();
        return Response::text(
            404,
            &format!(
                "name the upstream: POST /upstreams/fastcgi/POOL/ADDRESS/{} (ADDRESS percent-encoded where it has '/'). The FastCGI upstreams are: {}",
                if drain { "drain" } else { "undrain" },
                if known.is_empty() { "none".to_owned() } else { known.join(", ") }
            ),
        );
    };
    let (pool, address) = match (store::percent_decode(pool), store::percent_decode(address)) {
        (Ok(p), Ok(a)) => (p, a),
        (Err(e), _) | (_, Err(e)) => return Response::text(400, &e),
    };
    if let Err(e) = app.engine.upstream_drain(&pool, &address, drain) {
        return Response::text(404, &e);
    }
    tracing::info!(
        "control API: FastCGI upstream {address} of pool {pool} {}",
        if drain { "drained" } else { "undrained" }
    );
    let bare = |a: &str| a.strip_prefix("unix:").unwrap_or(a).to_owned();
    let state = fastcgi_upstreams(app).into_iter().find(|u| {
        u["pool"].as_str() == Some(pool.as_str())
            && u["address"].as_str().map(bare) == Some(bare(&address))
    });
    Response::json(
        200,
        &state.unwrap_or_else(|| json!({ "pool": pool, "address": address, "drained": drain })),
    )
}

/// Draining a proxy upstream is not offered (only FastCGI upstreams drain).
fn proxy_drain(name: &str) -> Response {
    Response::text(
        501,
        &format!("draining proxy upstream {name} is not supported: only FastCGI upstreams drain (POST /upstreams/fastcgi/POOL/ADDRESS/drain). To take a proxy upstream out, remove it with PUT /config/backend/proxy/upstreams."),
    )
}
