//! Machines on one machine: Linux network namespaces joined by a bridge, each with
//! an address of its own, for tests that need several hosts (a load balancer in
//! front of fe-php instances, php-fpm hosts behind them). Everything is created
//! under a prefix unique to the test process and removed when the `Lan` drops,
//! processes started in a namespace included.
//!
//! Needs root and the `ip` tool; `Lan::new` says why it cannot when it cannot, and
//! the caller skips.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A bridge in the test's own namespace (it is the "switch" and the address the
/// host side reaches the others by) and the namespaces plugged into it.
pub struct Lan {
    prefix: String,
    bridge: String,
    /// 10.X.Y.0/24, as "10.X.Y".
    net: String,
    hosts: Vec<String>,
    procs: Vec<Proc>,
}

/// A process started in a namespace, in a process group of its own.
struct Proc {
    name: String,
    child: Child,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Lan {
    /// A bridge with the test side at `<net>.1`. Err says why this machine cannot
    /// (not root, no `ip`, no namespaces, no bridge or veth support).
    pub fn new() -> Result<Lan, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("network namespaces need root (run the tests as root, as CI does)".into());
        }
        let pid = std::process::id();
        let prefix = format!("fp{}", pid % 100_000);
        let net = format!("10.{}.{}", 200 + (pid / 250) % 50, pid % 250);
        let lan = Lan {
            bridge: format!("{prefix}br"),
            prefix,
            net,
            hosts: Vec::new(),
            procs: Vec::new(),
        };
        ip(&["link", "add", &lan.bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}.1/24", lan.net),
            "dev",
            &lan.bridge,
        ])?;
        ip(&["link", "set", &lan.bridge, "up"])?;
        Ok(lan)
    }

    /// The address of host number `n` (2..=254) on the bridge.
    pub fn addr(&self, n: u8) -> String {
        format!("{}.{n}", self.net)
    }

    /// The test side's own address on the bridge.
    pub fn gateway(&self) -> String {
        self.addr(1)
    }

    /// A namespace named `name` with address `<net>.n`, its loopback up. Returns
    /// the namespace's name for `spawn`.
    pub fn host(&mut self, name: &str, n: u8) -> Result<String, String> {
        let ns = format!("{}-{name}", self.prefix);
        let outer = format!("{}v{n}", self.prefix);
        let inner = format!("{}i{n}", self.prefix);
        ip(&["netns", "add", &ns])?;
        self.hosts.push(ns.clone());
        ip(&[
            "link", "add", &outer, "type", "veth", "peer", "name", &inner,
        ])?;
        ip(&["link", "set", &inner, "netns", &ns])?;
        ip(&["link", "set", &outer, "master", &self.bridge])?;
        ip(&["link", "set", &outer, "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/24", self.addr(n)),
            "dev",
            &inner,
        ])?;
        ip(&["-n", &ns, "link", "set", &inner, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Starts `program args` inside namespace `ns` (`ip netns exec` execs it, so
    /// the pid is the program's), output to `log`. Returns the pid.
    pub fn spawn(&mut self, ns: &str, name: &str, program: &str, args: &[&str], log: &Path) -> i32 {
        let out = std::fs::File::create(log).unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program} in {ns}: {e}"));
        let pid = child.id() as i32;
        self.procs.push(Proc {
            name: name.to_owned(),
            child,
        });
        pid
    }

    /// Starts `program args` in the test's own namespace, tracked like the others.
    pub fn spawn_here(&mut self, name: &str, program: &str, args: &[&str], log: &Path) -> i32 {
        let out = std::fs::File::create(log).unwrap();
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let pid = child.id() as i32;
        self.procs.push(Proc {
            name: name.to_owned(),
            child,
        });
        pid
    }

    /// SIGKILL to the whole process group of the process started as `name` (a
    /// crash of that machine's service: no graceful anything), and reaps it.
    pub fn kill(&mut self, name: &str) {
        if let Some(p) = self.procs.iter_mut().find(|p| p.name == name) {
            // SAFETY: signals a process group this Lan started.
            unsafe { libc::kill(-(p.child.id() as i32), libc::SIGKILL) };
            let _ = p.child.wait();
            // The group's other processes (a server's workers) die on their own
            // time: until they have, their sockets may still take connections.
            wait_group_gone(p.child.id() as i32, Duration::from_secs(5));
        }
    }

    /// Waits until something accepts TCP connections on `addr:port` from here.
    pub fn wait_tcp(&self, addr: &str, port: u16, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let target = format!("{addr}:{port}");
        loop {
            let sa: std::net::SocketAddr = target.parse().unwrap();
            if std::net::TcpStream::connect_timeout(&sa, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("nothing accepts connections on {target}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for p in &mut self.procs {
            // SAFETY: signals process groups this Lan started.
            unsafe { libc::kill(-(p.child.id() as i32), libc::SIGKILL) };
            let _ = p.child.wait();
        }
        // Deleting a namespace deletes its end of the veth pair, and with it the
        // bridge's end.
        for ns in &self.hosts {
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// Waits until no live process (zombies aside) is left in process group `pgid`.
fn wait_group_gone(pgid: i32, limit: Duration) {
    let deadline = Instant::now() + limit;
    let alive = || {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                    return false;
                };
                // "pid (comm) state ppid pgrp ...": comm may hold spaces.
                let Some((_, rest)) = stat.rsplit_once(')') else {
                    return false;
                };
                let f: Vec<&str> = rest.split_whitespace().collect();
                f.len() > 3 && f[0] != "Z" && f[0] != "X" && f[2] == pgid.to_string()
            })
    };
    while alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}
