//! `fe-php-host`: a small HTTP/1.1 server around libfe_php. It parses flags, reads
//! its own `[server]` section of the configuration file, creates the engine
//! through the C ABI from the same file, binds the socket, and forks workers that
//! serve with hyper. All routing and backend logic is in the library.

mod abi;
mod access_log;
mod acme;
mod alloc;
mod config;
mod conn;
mod control;
mod listen;
mod master;
mod privileges;
mod restart;
mod sendfile;
mod server;
mod spool;
mod tls;

use clap::Parser;
use config::{Refused, ServerConfig};
use fe_php::ffi::fephp_backend;
use std::cell::RefCell;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    name = "fe-php-host",
    version,
    about = "Hybrid PHP application server (embedded libphp, PHP-FPM, static files)"
)]
struct Args {
    /// Configuration file (TOML).
    #[arg(short, long, value_name = "PATH")]
    config: String,
    /// Listen address, overriding [server] listen (e.g. 0.0.0.0:8080).
    #[arg(short, long, value_name = "ADDR")]
    listen: Option<String>,
    /// Worker processes, overriding [server] workers (0 = one per CPU core).
    #[arg(short, long, value_name = "N")]
    workers: Option<usize>,
    /// Validate the configuration, print what is available, and exit (like nginx -t).
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    // First, while the process has one thread: what a restart handed over.
    let inherited = restart::take_inherited();
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    // The host's `[server]` and the library's sections: every problem of both at
    // once. A file that cannot be read or is not TOML is the library's to report.
    let server = ServerConfig::from_file(&args.config);
    let engine = abi::Engine::from_file(&args.config);
    if let Some(problems) = problems(&engine, &server) {
        return refuse(&args, &problems);
    }
    let (Ok(engine), Ok(server)) = (engine, server) else {
        unreachable!("problems() reports every Err");
    };
    let messages = engine.messages();
    if !messages.is_empty() {
        eprintln!("{messages}");
    }
    let backends = describe_backends(&engine);
    let front = match load_front(&args.config, &server) {
        Ok(f) => f,
        Err(msg) => {
            return refuse(&args, &msg);
        }
    };
    let identity = match privileges::resolve(server.user.as_deref(), server.group.as_deref()) {
        Ok(id) => id,
        Err(msg) => {
            return refuse(&args, &msg);
        }
    };
    let control = match server
        .control
        .as_ref()
        .map(|c| c.load(&config_dir(&args.config)))
    {
        Some(Err(msg)) => return refuse(&args, &msg),
        Some(Ok(loaded)) => Some(loaded),
        None => None,
    };
    let limits = server::Limits::new(&server);
    if args.check {
        eprintln!("backends: {backends}");
        if let Some(id) = &identity {
            eprintln!("workers run as {id}");
        }
        eprintln!(
            "fe-php-host: configuration file {} test is successful",
            args.config
        );
        return ExitCode::SUCCESS;
    }

    let listen = args.listen.clone().unwrap_or_else(|| server.listen.clone());
    let workers = worker_count(&args, &server);
    let listeners = match &inherited.listeners {
        Some((addr, fds)) if *addr == listen || listen.ends_with(":0") => {
            listen::Listeners::inherit(addr, fds, workers)
        }
        Some((addr, fds)) => {
            tracing::warn!("[server] listen changed from {addr} to {listen}: the old workers finish on {addr}, the new ones listen on {listen}");
            for &fd in fds {
                // SAFETY: closing the handed-over descriptors this image does not use.
                unsafe { libc::close(fd) };
            }
            listen::Listeners::bind(&listen, workers)
        }
        None => listen::Listeners::bind(&listen, workers),
    };
    let listeners = match listeners {
        Ok(l) => std::cell::RefCell::new(l),
        Err(e) => {
            eprintln!("fe-php-host: cannot listen on {listen}: {e}\n    Choose a free address with --listen or [server] listen.");
            return ExitCode::from(1);
        }
    };
    // The plain-HTTP listener that redirects to HTTPS (bound again by a restart:
    // its sockets are not handed over).
    let redirect = match server.tls.as_ref().and_then(|t| t.redirect_http.as_deref()) {
        Some(addr) => match listen::Listeners::bind(addr, workers) {
            Ok(l) => Some(RefCell::new(l)),
            Err(e) => {
                eprintln!("fe-php-host: cannot listen on {addr} ([server.tls] redirect_http): {e}\n    Choose a free address, or remove redirect_http.");
                return ExitCode::from(1);
            }
        },
        None => None,
    };
    let mut front = front;
    front.https_port = listeners.borrow().addr().port();
    let log = match access_log::AccessLog::open(&server.access_log) {
        Ok(l) => Arc::new(l),
        Err(e) => {
            eprintln!(
                "fe-php-host: cannot open access log {}: {e}",
                server.access_log
            );
            return ExitCode::from(1);
        }
    };
    server::raise_open_file_limit(limits.max_connections);
    tracing::info!(
        "fe-php-host {} listening on {}://{listen} with {workers} workers; backends: {backends}",
        env!("CARGO_PKG_VERSION"),
        if front.tls.is_some() { "https" } else { "http" }
    );
    match &identity {
        Some(id) => tracing::info!("workers run as {id}"),
        None => {
            // SAFETY: plain identity query.
            if unsafe { libc::geteuid() } == 0 {
                tracing::warn!("workers run as root: set [server] user (e.g. \"www-data\") so that PHP runs unprivileged");
            }
        }
    }

    let engine = Arc::new(engine);
    let mut control = match control {
        Some(loaded) => {
            let config = args.config.clone();
            let app = control::App {
                engine: engine.clone(),
                config_path: std::path::absolute(&args.config)
                    .unwrap_or_else(|_| args.config.clone().into()),
                check: Box::new(move |text| check_text(&config, text)),
            };
            match control::Server::bind(&loaded, app) {
                Ok(s) => {
                    tracing::info!("control API on {}", s.describe());
                    Some(s)
                }
                Err(msg) => {
                    eprintln!("fe-php-host: {msg}");
                    return ExitCode::from(1);
                }
            }
        }
        None => None,
    };
    // `[server]` as last read (a reload replaces it); workers read their limits
    // from it after the fork.
    let server = RefCell::new(server);
    let front = RefCell::new(front);
    // SAFETY: plain identity query.
    let master_pid = unsafe { libc::getpid() };
    let worker = |slot: usize, count: usize| {
        // Before the engine starts any thread: every thread of the worker is unprivileged.
        if let Some(id) = &identity {
            if let Err(e) = privileges::drop_to(id) {
                tracing::error!("cannot switch the worker to {id}: {e}");
                return 1;
            }
            // A change of credentials clears the parent-death signal: arm it again.
            if !master::die_with_master(master_pid) {
                return 0;
            }
        }
        if let Err(e) = engine.worker_start() {
            tracing::error!("worker start failed: {e}");
            return 1;
        }
        let listeners = match listeners.borrow().for_slot(slot, count) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("cannot use the listening socket: {e}");
                return 1;
            }
        };
        // Read here, after the fork: a reload may have changed them.
        let limits = server::Limits::new(&server.borrow());
        let redirect = match redirect.as_ref().map(|r| r.borrow().for_slot(slot, count)) {
            Some(Ok(l)) => l,
            Some(Err(e)) => {
                tracing::error!("cannot use the redirect_http socket: {e}");
                return 1;
            }
            None => Vec::new(),
        };
        let front = front.borrow().clone();
        match server::run(
            engine.clone(),
            listeners,
            log.clone(),
            limits,
            front,
            redirect,
        ) {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!("worker failed: {e}");
                1
            }
        }
    };
    let exited = |pid, signal, replaced| engine.worker_exited(pid, signal, replaced);
    let reload = || {
        let n = match reload(&engine, &args, &server, &front)? {
            master::Reloaded::Workers(n) => n,
            restart => return Ok(restart),
        };
        listeners
            .borrow_mut()
            .ensure(n)
            .map_err(|e| format!("cannot open listening sockets for {n} workers: {e}"))?;
        if let Some(r) = &redirect {
            r.borrow_mut()
                .ensure(n)
                .map_err(|e| format!("cannot open redirect_http sockets for {n} workers: {e}"))?;
        }
        Ok(master::Reloaded::Workers(n))
    };
    let restart = |pids: &[libc::pid_t]| restart::exec_self(&listeners.borrow(), pids);
    let restart_php_workers = || {
        if let Err(e) = engine.restart_workers() {
            tracing::warn!("SIGUSR2: {e}");
        }
    };
    // The ACME client, when configured (its settings as at start: a changed
    // [server.tls.acme] takes effect at a restart).
    let acme = server
        .borrow()
        .tls
        .as_ref()
        .and_then(|t| t.acme.clone())
        .map(|a| {
            let base = config_dir(&args.config);
            let identity = identity.clone();
            move || {
                // The workers read what it writes (challenge certificates).
                if let Some(id) = &identity {
                    if let Err(e) = privileges::drop_to(id) {
                        tracing::error!("cannot switch the ACME process to {id}: {e}");
                        return 1;
                    }
                }
                acme::run(a.clone(), base.clone())
            }
        });
    let code = master::run(
        workers,
        &inherited.workers,
        worker,
        reload,
        restart,
        exited,
        master::Extras {
            restart_php_workers: &restart_php_workers,
            sidecar: acme.as_ref().map(|f| f as &dyn Fn() -> i32),
            control: control.as_mut().map(|c| c as &mut dyn master::Service),
        },
    );
    ExitCode::from(code as u8)
}

/// Prints why the configuration cannot be used (and, under `--check`, that the
/// test failed, as nginx -t does); exit status 1.
fn refuse(args: &Args, msg: &str) -> ExitCode {
    eprintln!("{msg}");
    if args.check {
        eprintln!(
            "fe-php-host: configuration file {} test failed",
            args.config
        );
    }
    ExitCode::from(1)
}

/// Every problem of the engine's sections and of `[server]` (None: both are
/// fine). A file that cannot be read or is not TOML is the library's to report.
fn problems<E>(
    engine: &Result<E, String>,
    server: &Result<ServerConfig, Refused>,
) -> Option<String> {
    let mut problems = Vec::new();
    if let Err(msg) = engine {
        problems.push(msg.clone());
    }
    match server {
        Err(Refused::Unreadable(_)) if engine.is_err() => {}
        Err(refused) => problems.push(refused.message()),
        Ok(_) => {}
    }
    (!problems.is_empty()).then(|| problems.join("\n"))
}

/// `--check` for `text` as the content of the configuration file `config`
/// (the control API's changes): the same steps and messages, without starting
/// an engine. Err: every problem, as `--check` prints them.
fn check_text(config: &str, text: &str) -> Result<(), String> {
    let path = std::path::absolute(config).unwrap_or_else(|_| config.into());
    let server = ServerConfig::from_toml(text, &format!("file {}", path.display()));
    let engine = abi::check_config(config, text);
    if let Some(problems) = problems(&engine, &server) {
        return Err(problems);
    }
    let Ok(server) = server else {
        unreachable!("problems() reports every Err");
    };
    load_front(config, &server)?;
    privileges::resolve(server.user.as_deref(), server.group.as_deref())?;
    if let Some(c) = &server.control {
        c.load(&config_dir(config))?;
    }
    Ok(())
}

/// `--workers`, else `[server] workers` (0: one per CPU core).
fn worker_count(args: &Args, server: &ServerConfig) -> usize {
    match args.workers {
        Some(0) => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        Some(n) => n,
        None => server.worker_count(),
    }
}

/// SIGHUP in the master: re-reads `[server]` and has the engine re-read the
/// file (either refusing an invalid one changes nothing; `[server]` is checked
/// first, so the engine never takes a file whose `[server]` is refused); returns
/// how many workers to fork with it, or, when the file changes PHP's runtime and
/// passes `--check` in a child process, that the master must restart. What the
/// master set up once (socket, access log, user) stays.
fn reload(
    engine: &abi::Engine,
    args: &Args,
    server: &RefCell<ServerConfig>,
    front: &RefCell<server::Front>,
) -> Result<master::Reloaded, String> {
    let new = ServerConfig::from_file(&args.config).map_err(|refused| refused.message())?;
    // Certificates are read again (renewed files take effect); one that cannot
    // be used refuses the reload before the engine changes anything.
    let new_front = load_front(&args.config, &new)?;
    match engine.reload(&args.config) {
        Ok(()) => {}
        Err(abi::ReloadRefused::Invalid(msg)) => return Err(msg),
        Err(abi::ReloadRefused::RestartRequired(why)) => {
            tracing::info!("{why}");
            restart::check_in_child(&args.config)?;
            return Ok(master::Reloaded::Restart);
        }
    }
    let before = server.replace(new);
    if before.tls.is_some() != new_front.tls.is_some() {
        tracing::warn!("[server.tls] was added or removed: the listener changes between HTTP and HTTPS for the new workers (clients must change scheme)");
    }
    let https_port = front.borrow().https_port;
    front.replace(server::Front {
        https_port,
        ..new_front
    });
    let after = server.borrow();
    let kept = [
        (
            "listen",
            args.listen.is_none() && before.listen != after.listen,
        ),
        ("access_log", before.access_log != after.access_log),
        (
            "tls.redirect_http",
            before.tls.as_ref().and_then(|t| t.redirect_http.as_ref())
                != after.tls.as_ref().and_then(|t| t.redirect_http.as_ref()),
        ),
        ("control", before.control != after.control),
        ("user", before.user != after.user),
        ("group", before.group != after.group),
    ];
    for (key, changed) in kept {
        if changed {
            tracing::warn!("[server] {key} changed: it takes effect when fe-php-host restarts; the reload applies everything else");
        }
    }
    let messages = engine.messages();
    if !messages.is_empty() {
        tracing::info!("{messages}");
    }
    tracing::info!("new configuration; backends: {}", describe_backends(engine));
    Ok(master::Reloaded::Workers(worker_count(args, &after)))
}

/// The configuration file's directory: relative paths in `[server]` start there.
fn config_dir(config: &str) -> std::path::PathBuf {
    let path = std::path::absolute(config).unwrap_or_else(|_| config.into());
    path.parent()
        .unwrap_or(std::path::Path::new("/"))
        .to_owned()
}

/// How the listener speaks, from `[server]`: TLS certificates are read here
/// (paths relative to the configuration file's directory).
fn load_front(config: &str, server: &ServerConfig) -> Result<server::Front, String> {
    let tls = match &server.tls {
        Some(t) => Some(t.load(&config_dir(config))?),
        None => None,
    };
    Ok(server::Front {
        tls,
        h2c: server.h2c,
        https_port: 0,
    })
}

/// Names this process in `ps` and `/proc/PID/comm` (at most 15 bytes).
pub fn set_process_name(name: &str) {
    let mut bytes = [0u8; 16];
    let n = name.len().min(15);
    bytes[..n].copy_from_slice(&name.as_bytes()[..n]);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, bytes.as_ptr()) };
}

/// "static (embedded: not available: …; fastcgi: …)".
fn describe_backends(engine: &abi::Engine) -> String {
    let mut on = Vec::new();
    let mut off = Vec::new();
    for (name, b) in [
        ("embedded", fephp_backend::Embedded),
        ("fastcgi", fephp_backend::Fastcgi),
        ("static", fephp_backend::Static),
        ("proxy", fephp_backend::Proxy),
    ] {
        match engine.backend(b) {
            Ok(()) => on.push(name.to_owned()),
            Err(why) => off.push(format!("{name}: {why}")),
        }
    }
    let mut s = if on.is_empty() {
        "none".to_owned()
    } else {
        on.join(", ")
    };
    if !off.is_empty() {
        s.push_str(&format!(" (unavailable: {})", off.join("; ")));
    }
    s
}
