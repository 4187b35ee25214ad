//! Shared helpers for integration tests: start a real `fe-php-host` on a free port
//! and talk to it with curl.
#![allow(dead_code)]

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod certs;
pub mod config;
pub mod diff;
pub mod load;
pub mod netns;
pub mod peers;
pub mod proc;
pub mod upstream;

#[allow(unused_imports)]
pub use config::HostConfig;

/// fe-php-host is a crate of its own (host/) in this workspace: `make test` (or
/// `cargo build -p fe-php-host`) builds it next to the tests.
pub const HOST_BIN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/debug/fe-php-host");

/// A free loopback port (bound then released; the race is acceptable in tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running fe-php-host, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Host {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Host {
    /// Writes `config` (with `{port}` and `{dir}` substituted) into a temp dir and
    /// starts the host on it, waiting until it accepts connections.
    pub fn start(config: &str, setup: impl FnOnce(&Path)) -> Host {
        Host::start_with(config, setup, |_| {})
    }

    /// Like `start`; `command` adjusts the host's command before it is spawned
    /// (environment, resource limits through `pre_exec`).
    pub fn start_with(
        config: &str,
        setup: impl FnOnce(&Path),
        command: impl FnOnce(&mut Command),
    ) -> Host {
        Host::start_on(free_port(), config, setup, command)
    }

    /// Like `start_with`, on `port` (for a peer that must know it first).
    pub fn start_on(
        port: u16,
        config: &str,
        setup: impl FnOnce(&Path),
        command: impl FnOnce(&mut Command),
    ) -> Host {
        let dir = tempfile::tempdir().unwrap();
        setup(dir.path());
        let text = config
            .replace("{port}", &port.to_string())
            .replace("{dir}", dir.path().to_str().unwrap());
        let config = dir.path().join("fe-php.toml");
        std::fs::write(&config, text).unwrap();
        assert!(
            Path::new(HOST_BIN).is_file(),
            "{HOST_BIN} is missing: build it first (cargo build -p fe-php-host; make test does)"
        );
        let mut cmd = Command::new(HOST_BIN);
        cmd.arg("--config")
            .arg(&config)
            .stdout(std::fs::File::create(dir.path().join("stdout.log")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap());
        command(&mut cmd);
        let child = cmd.spawn().unwrap();
        let host = Host {
            child,
            port,
            dir,
            config,
        };
        host.wait_ready();
        host
    }

    fn wait_ready(&self) {
        // Generous: a machine busy compiling once took over 10 s to start one
        // (PHP's module startup and the runner pool's forks compete for the CPU).
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("fe-php-host did not start; stderr:\n{}", self.stderr());
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default()
    }

    /// The worker processes (the master's children but the PHP pool manager).
    /// The master listens before it forks them one by one: right after the start,
    /// wait (up to 5 s) for all of them — as many as the config's `workers = N`
    /// names, else a list that stays the same for 100 ms. (A pool manager counts
    /// as a worker until it has named itself, so the count also waits for that.)
    pub fn workers(&self) -> Vec<i32> {
        let text = std::fs::read_to_string(&self.config).unwrap_or_default();
        let expected: Option<usize> = text.lines().find_map(|l| {
            let (key, value) = l.split_once('=')?;
            (key.trim() == "workers").then(|| value.trim().parse().ok())?
        });
        let list = || -> Vec<i32> {
            children(self.child.id() as i32)
                .into_iter()
                .filter(|&p| comm(p) != "fe-php: pool")
                .collect()
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut last = Vec::new();
        loop {
            let workers = list();
            let settled = match expected {
                Some(n) => workers.len() == n,
                None => !workers.is_empty() && workers == last,
            };
            if settled || Instant::now() > deadline {
                return workers;
            }
            last = workers;
            std::thread::sleep(Duration::from_millis(if expected.is_some() {
                10
            } else {
                100
            }));
        }
    }

    /// The PHP runner pool's manager, if it runs.
    pub fn pool_manager(&self) -> Option<i32> {
        children(self.child.id() as i32)
            .into_iter()
            .find(|&p| comm(p) == "fe-php: pool")
    }

    /// The PHP runners of every pool (children of the pool managers).
    pub fn runners(&self) -> Vec<i32> {
        children(self.child.id() as i32)
            .into_iter()
            .filter(|&p| comm(p) == "fe-php: pool")
            .flat_map(children)
            .collect()
    }

    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

/// The children of `pid`.
pub fn children(pid: i32) -> Vec<i32> {
    let out = Command::new("pgrep")
        .arg("-P")
        .arg(pid.to_string())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// A process's name as `ps` shows it ("" once it has gone).
pub fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim_end()
        .to_owned()
}

impl Drop for Host {
    fn drop(&mut self) {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response as curl saw it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Runs curl with `args` (the URL among them), exactly as given (`--path-as-is`).
pub fn curl(args: &[&str]) -> Reply {
    let out = Command::new("curl")
        .args(["-s", "-S", "--path-as-is", "-i", "--max-time", "20"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("curl is installed");
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_reply(&out.stdout)
}

pub fn get(url: &str) -> Reply {
    curl(&[url])
}

pub fn parse_reply(mut raw: &[u8]) -> Reply {
    // Skip interim responses (100 Continue).
    while raw.starts_with(b"HTTP/1.1 1") || raw.starts_with(b"HTTP/1.0 1") {
        match raw.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(i) => raw = &raw[i + 4..],
            None => break,
        }
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// Sends raw bytes and returns the raw answer (for requests curl will not send).
pub fn raw_request(port: u16, request: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// The sum of every series of `name` in Prometheus text whose labels contain all of
/// `labels` (e.g. `backend="fastcgi"`); 0 when there is none.
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            n == name && labels.iter().all(|want| rest.contains(want))
        })
        .map(|(_, v)| v.parse::<f64>().unwrap_or(0.0))
        .sum()
}
