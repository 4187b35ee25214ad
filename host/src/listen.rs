//! The listening sockets: one per worker slot, all bound to the same address with
//! `SO_REUSEPORT`, so the kernel spreads new connections evenly over the workers.
//! With one shared socket, whichever worker wakes first accepts a whole burst of
//! connections and the others sit idle.
//!
//! The master owns the sockets for its whole life: a replaced worker (crash,
//! reload) takes over its slot's socket, so connections waiting in a socket's
//! backlog are never lost. Sockets are only ever added (when a reload raises
//! `workers`); with fewer workers than sockets, a worker serves several.

use std::net::{SocketAddr, TcpListener};

pub struct Listeners {
    /// The address as bound (an ephemeral port resolved by the first bind).
    addr: SocketAddr,
    sockets: Vec<TcpListener>,
}

impl Listeners {
    /// Binds `count` (at least one) sockets to `addr` ("IP:PORT").
    pub fn bind(addr: &str, count: usize) -> std::io::Result<Listeners> {
        let addr: SocketAddr = addr.parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "expected IP:PORT, e.g. 127.0.0.1:8080 or [::1]:8080",
            )
        })?;
        let first = bind_one(addr)?;
        let mut l = Listeners {
            addr: first.local_addr()?,
            sockets: vec![first],
        };
        l.ensure(count)?;
        Ok(l)
    }

    /// Takes over sockets a previous image of this master bound to `addr` (see
    /// restart.rs), and binds more up to `count`.
    pub fn inherit(addr: &str, fds: &[i32], count: usize) -> std::io::Result<Listeners> {
        use std::os::fd::FromRawFd;
        let sockets: Vec<TcpListener> = fds
            .iter()
            .map(|&fd| {
                // SAFETY: the previous image handed these descriptors over; nothing
                // else in this process owns them.
                unsafe {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                    TcpListener::from_raw_fd(fd)
                }
            })
            .collect();
        let first = sockets.first().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "no inherited socket")
        })?;
        let bound = first.local_addr()?;
        if addr.parse::<SocketAddr>().ok() != Some(bound) && !addr.ends_with(":0") {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("inherited sockets listen on {bound}, not {addr}"),
            ));
        }
        let mut l = Listeners {
            addr: bound,
            sockets,
        };
        l.ensure(count)?;
        Ok(l)
    }

    /// The address as bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The sockets' descriptors (they stay owned by `self`).
    pub fn fds(&self) -> Vec<i32> {
        use std::os::fd::AsRawFd;
        self.sockets.iter().map(|s| s.as_raw_fd()).collect()
    }

    /// Makes sure there are at least `count` sockets.
    pub fn ensure(&mut self, count: usize) -> std::io::Result<()> {
        while self.sockets.len() < count {
            self.sockets.push(bind_one(self.addr)?);
        }
        Ok(())
    }

    /// The sockets the worker in `slot` of `workers` accepts on: `slot`,
    /// `slot + workers`, …
    pub fn for_slot(&self, slot: usize, workers: usize) -> std::io::Result<Vec<TcpListener>> {
        self.sockets
            .iter()
            .skip(slot)
            .step_by(workers.max(1))
            .map(|s| s.try_clone())
            .collect()
    }
}

fn bind_one(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    // Only processes of the same user can join a reuseport group (Linux), so no
    // other user's process can take connections from it.
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}
