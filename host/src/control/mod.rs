//! The control API (`[server.control]`, off by default): a local HTTP endpoint
//! of fe-php-host to read the running configuration, the workers, the PHP
//! pools and the upstreams, to change the configuration (checked as `--check`
//! does, written to the file, applied as a SIGHUP reload), and to restart one
//! PHP pool. docs/OPERATIONS.md ("Control API") describes every endpoint.
//!
//! Why it is served from the master's own loop (not from a thread, nor from a
//! child process like the ACME client): the master forks workers, and forking
//! a process that runs other threads is unsafe (a lock held by another thread,
//! the allocator's for one, stays locked in the child forever), so the master
//! stays single-threaded. A change must end in the master anyway (it reloads
//! the engine and rolls the workers over), and a helper process would need a
//! protocol to ask for that and hear back; the loop serving the socket itself
//! needs none. The master waits on a signalfd and the control sockets with one
//! poll(2); every control socket is non-blocking, a request is at most 16 KiB
//! of head and 1 MiB of body, each client has 10 s to send it and 10 s to take
//! the answer, and at most 16 clients are served at once (more wait in the
//! listen backlog). So a slow or malicious client costs the master nothing but
//! the bytes it sends: reaping and respawning workers never waits for it. The
//! only long steps are those a SIGHUP takes too (building the new engine,
//! forking the workers, checking a new PHP runtime in a `--check` child).
//!
//! Security: a Unix socket created with mode 0600 (`socket_mode`) by the user
//! that started fe-php-host (root when workers drop to `[server] user`), or a
//! TCP address that must be loopback unless `allow_remote` and always needs a
//! bearer token from `token_file`. Workers never inherit the control sockets.

mod api;
mod config;
mod http;
mod store;

pub use api::App;
pub use config::{Address, ControlConfig, Loaded};

use crate::master::{self, Master};
use http::{Conn, Response, Step, Stream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Clients served at once.
const MAX_CLIENTS: usize = 16;

enum Listener {
    Unix(UnixListener),
    Tcp(std::net::TcpListener),
}

/// The control API's listener and clients.
pub struct Server {
    listener: Listener,
    /// The socket file, removed when the master stops.
    socket_path: Option<PathBuf>,
    token: Option<String>,
    clients: Vec<Conn>,
    app: App,
}

impl Server {
    /// Listens where `loaded` says.
    pub fn bind(loaded: &Loaded, app: App) -> Result<Server, String> {
        let (listener, socket_path) = match &loaded.address {
            Address::Unix { path, mode } => {
                (Listener::Unix(bind_unix(path, *mode)?), Some(path.clone()))
            }
            Address::Tcp(addr) => {
                let l = std::net::TcpListener::bind(addr).map_err(|e| {
                    format!("cannot listen on {addr} ([server.control] listen): {e}\n    Choose a free loopback port.")
                })?;
                l.set_nonblocking(true).map_err(|e| e.to_string())?;
                (Listener::Tcp(l), None)
            }
        };
        master::master_only(listener_fd(&listener), true);
        Ok(Server {
            listener,
            socket_path,
            token: loaded.token.clone(),
            clients: Vec::new(),
            app,
        })
    }

    /// Where it listens, for the log.
    pub fn describe(&self) -> String {
        match (&self.listener, &self.socket_path) {
            (Listener::Unix(_), Some(p)) => format!("unix:{}", p.display()),
            (Listener::Tcp(l), _) => l
                .local_addr()
                .map_or_else(|_| "tcp".to_owned(), |a| format!("http://{a}")),
            _ => String::new(),
        }
    }

    fn accept(&mut self, master: &mut dyn Master) {
        while self.clients.len() < MAX_CLIENTS {
            let stream = match &self.listener {
                Listener::Unix(l) => l.accept().map(|(s, _)| {
                    let _ = s.set_nonblocking(true);
                    Stream::Unix(s)
                }),
                Listener::Tcp(l) => l.accept().map(|(s, _)| {
                    let _ = s.set_nonblocking(true);
                    let _ = s.set_nodelay(true);
                    Stream::Tcp(s)
                }),
            };
            match stream {
                Ok(s) => {
                    master::master_only(s.fd(), true);
                    let mut c = Conn::new(s);
                    // The request may be there already.
                    let step = c.read();
                    self.keep_or_close(c, step, master);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and the like: try again at the next readiness.
                    tracing::warn!("control API: accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// Takes the connection through the steps it can make now; keeps it when it
    /// waits for its client.
    fn keep_or_close(&mut self, mut c: Conn, mut step: Step, master: &mut dyn Master) {
        loop {
            step = match step {
                Step::Reading => {
                    self.clients.push(c);
                    return;
                }
                Step::Writing => match c.write() {
                    Step::Done => Step::Done,
                    _ => {
                        self.clients.push(c);
                        return;
                    }
                },
                Step::Head => match self.refusal(&c) {
                    Some(r) => {
                        c.answer(r);
                        Step::Writing
                    }
                    None => c.authorize(),
                },
                Step::Complete(req) => {
                    c.answer(api::handle(&self.app, master, &req));
                    Step::Writing
                }
                Step::Done => {
                    master::master_only(c.stream.fd(), false);
                    return;
                }
            };
        }
    }

    /// Why the request may not go on (no or a wrong bearer token), if so.
    fn refusal(&self, c: &Conn) -> Option<Response> {
        let token = self.token.as_deref()?;
        let req = c.head_request()?;
        let sent = req.header("authorization").and_then(|a| {
            a.strip_prefix("Bearer ")
                .or_else(|| a.strip_prefix("bearer "))
        });
        match sent {
            None => Some(
                Response::text(401, "this control API needs Authorization: Bearer TOKEN (the token in [server.control] token_file)")
                    .with("WWW-Authenticate", "Bearer realm=\"fe-php control\""),
            ),
            Some(t) if !same(t.trim().as_bytes(), token.as_bytes()) => {
                tracing::warn!("control API: a request with a wrong token was refused");
                Some(Response::text(403, "wrong token"))
            }
            Some(_) => None,
        }
    }
}

/// Compares in time independent of where the two differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

fn listener_fd(l: &Listener) -> RawFd {
    match l {
        Listener::Unix(l) => l.as_raw_fd(),
        Listener::Tcp(l) => l.as_raw_fd(),
    }
}

/// Creates the socket with `mode` from the start (umask while binding, so it is
/// never reachable with looser permissions), replacing a stale socket file.
fn bind_unix(path: &std::path::Path, mode: u32) -> Result<UnixListener, String> {
    let shown = path.display();
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(format!("[server.control] socket {shown} exists and is not a socket: remove it or choose another path."));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(format!("[server.control] socket {shown} is in use by another process (another fe-php-host?): stop it or choose another path."));
        }
        // A socket nobody listens on: left by a master that did not stop cleanly.
        let _ = std::fs::remove_file(path);
    }
    // SAFETY: umask changes this process's mask; the master is single-threaded.
    let old = unsafe { libc::umask(0o777 & !mode) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let listener = bound.map_err(|e| {
        format!("cannot listen on {shown} ([server.control] socket): {e}\n    Its directory must exist and be writable by the user starting fe-php-host (e.g. mkdir -p /run/fe-php).")
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set the mode of {shown}: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(listener)
}

impl master::Service for Server {
    fn fds(&self) -> Vec<libc::pollfd> {
        let mut fds = Vec::with_capacity(self.clients.len() + 1);
        if self.clients.len() < MAX_CLIENTS {
            fds.push(libc::pollfd {
                fd: listener_fd(&self.listener),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        for c in &self.clients {
            fds.push(libc::pollfd {
                fd: c.stream.fd(),
                events: if c.wants_write() {
                    libc::POLLOUT
                } else {
                    libc::POLLIN
                },
                revents: 0,
            });
        }
        fds
    }

    fn deadline(&self) -> Option<Instant> {
        self.clients.iter().map(|c| c.deadline).min()
    }

    fn serve(&mut self, ready: &[libc::pollfd], master: &mut dyn Master) {
        let now = Instant::now();
        let revents = |fd: RawFd| ready.iter().find(|p| p.fd == fd).map_or(0, |p| p.revents);
        for mut c in std::mem::take(&mut self.clients) {
            let step = if revents(c.stream.fd()) != 0 {
                if c.wants_write() {
                    Step::Writing
                } else {
                    c.read()
                }
            } else if now >= c.deadline {
                if c.wants_write() {
                    Step::Done
                } else {
                    c.answer(Response::text(408, "the request did not arrive in time"));
                    Step::Writing
                }
            } else {
                self.clients.push(c);
                continue;
            };
            self.keep_or_close(c, step, master);
        }
        if revents(listener_fd(&self.listener)) != 0 {
            self.accept(master);
        }
    }

    fn flush(&mut self, limit: Duration) {
        let end = Instant::now() + limit;
        while Instant::now() < end && self.clients.iter().any(Conn::wants_write) {
            for mut c in std::mem::take(&mut self.clients) {
                if c.wants_write() {
                    if let Step::Writing = c.write() {
                        self.clients.push(c);
                    } else {
                        master::master_only(c.stream.fd(), false);
                    }
                } else {
                    self.clients.push(c);
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(p) = &self.socket_path {
            let _ = std::fs::remove_file(p);
        }
    }
}
