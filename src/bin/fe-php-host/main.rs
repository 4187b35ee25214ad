//! `fe-php-host`: a small HTTP/1.1 server around libfe_php. It parses flags, creates
//! the engine through the C ABI, binds the socket, and forks workers that serve with
//! hyper. All routing and backend logic is in the library.

mod abi;
mod access_log;
mod master;
mod server;

use clap::Parser;
use fe_php::ffi::fephp_backend;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

/// mimalloc for the host process: requests allocate on the I/O thread and free on
/// the PHP thread, which glibc malloc handles with lock contention.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let engine = match abi::Engine::from_file(&args.config) {
        Ok(e) => e,
        Err(msg) => {
            eprintln!("{msg}");
            if args.check {
                eprintln!(
                    "fe-php-host: configuration file {} test failed",
                    args.config
                );
            }
            return ExitCode::from(1);
        }
    };
    let messages = engine.messages();
    if !messages.is_empty() {
        eprintln!("{messages}");
    }
    let backends = describe_backends(&engine);
    if args.check {
        eprintln!("backends: {backends}");
        eprintln!(
            "fe-php-host: configuration file {} test is successful",
            args.config
        );
        return ExitCode::SUCCESS;
    }

    let listen = args.listen.clone().unwrap_or_else(|| engine.listen());
    let workers = match args.workers {
        Some(0) => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        Some(n) => n,
        None => engine.workers() as usize,
    };
    let listener = match bind(&listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("fe-php-host: cannot listen on {listen}: {e}\n    Choose a free address with --listen or [server] listen.");
            return ExitCode::from(1);
        }
    };
    let log = match access_log::AccessLog::open(&engine.access_log()) {
        Ok(l) => Arc::new(l),
        Err(e) => {
            eprintln!(
                "fe-php-host: cannot open access log {}: {e}",
                engine.access_log()
            );
            return ExitCode::from(1);
        }
    };
    tracing::info!(
        "fe-php-host {} listening on http://{listen} with {workers} workers; backends: {backends}",
        env!("CARGO_PKG_VERSION")
    );

    let engine = Arc::new(engine);
    let code = master::run(workers, || {
        if let Err(e) = engine.worker_start() {
            tracing::error!("worker start failed: {e}");
            return 1;
        }
        let listener = match listener.try_clone() {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("cannot use the listening socket: {e}");
                return 1;
            }
        };
        match server::run(engine.clone(), listener, log.clone()) {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!("worker failed: {e}");
                1
            }
        }
    });
    ExitCode::from(code as u8)
}

/// "static (embedded: not available: …; fastcgi: …)".
fn describe_backends(engine: &abi::Engine) -> String {
    let mut on = Vec::new();
    let mut off = Vec::new();
    for (name, b) in [
        ("embedded", fephp_backend::Embedded),
        ("fastcgi", fephp_backend::Fastcgi),
        ("static", fephp_backend::Static),
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

fn bind(addr: &str) -> std::io::Result<std::net::TcpListener> {
    let addr: SocketAddr = addr.parse().map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "expected IP:PORT, e.g. 127.0.0.1:8080 or [::1]:8080",
        )
    })?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}
