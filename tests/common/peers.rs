//! The reference stack fe-php is compared against: php-fpm and nginx, each started on
//! its own temp dir and free port, and stopped (by its own pid) when dropped.

use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

pub const PHP_FPM_BIN: &str = "/usr/sbin/php-fpm8.2";
pub const NGINX_BIN: &str = "/usr/sbin/nginx";
/// Debian's php.ini for FPM; the scan dir (`conf.d`) is compiled in and still applies.
pub const FPM_PHP_INI: &str = "/etc/php/8.2/fpm/php.ini";

/// php.ini values the fixtures need on top of Debian's FPM php.ini (whose
/// `upload_max_filesize = 2M` would refuse the 3 MiB upload case). `PhpFpm::start`
/// applies them; give fe-php's embedded PHP the same (`fixture_ini_toml()`).
pub const FIXTURE_INI: &[(&str, &str)] =
    &[("upload_max_filesize", "16M"), ("post_max_size", "64M")];

/// `FIXTURE_INI` as an fe-php `[php.ini]` table.
pub fn fixture_ini_toml() -> String {
    let mut s = String::from("[php.ini]\n");
    for (k, v) in FIXTURE_INI {
        s.push_str(&format!("{k} = \"{v}\"\n"));
    }
    s
}

/// `tests/php`, the fixture document root.
pub fn fixture_docroot() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/php")
}

/// A child started in its own process group (pgid = its pid), so its workers can be
/// stopped with it without looking anything up by name.
struct Group {
    child: Child,
}

impl Group {
    fn spawn(cmd: &mut Command) -> Group {
        cmd.stdin(Stdio::null()).process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Group { child }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// True once the leader has exited (it is left a zombie, so its pid, and with it
    /// the process group id, cannot be reused until `reap`).
    fn exited(&self) -> bool {
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                self.pid() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        rc != 0 || unsafe { info.si_pid() } != 0
    }

    /// SIGTERM to the leader (a graceful stop that also stops its workers), then after
    /// `grace` SIGKILL to the whole group; reaps the leader.
    fn stop(mut self, grace: Duration) {
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while !self.exited() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // Leftover workers (or a leader that ignored SIGTERM); the leader is not reaped
        // yet, so -pid still names our group only.
        unsafe { libc::kill(-self.pid(), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Where php-fpm listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FpmListen {
    /// A free port on 127.0.0.1.
    Tcp,
    /// `php-fpm.sock` in php-fpm's own temp dir.
    Unix,
}

/// Options for `PhpFpm`; `PhpFpm::start` uses the defaults.
pub struct PhpFpmBuilder {
    docroot: PathBuf,
    listen: FpmListen,
    max_children: usize,
    ini: Vec<(String, String)>,
    pool_lines: Vec<String>,
    tcp_address: Option<String>,
}

impl PhpFpmBuilder {
    /// With `FpmListen::Tcp`: listen on this address (e.g. "[::1]:PORT") instead of a
    /// free port on 127.0.0.1.
    pub fn tcp_address(mut self, address: &str) -> Self {
        self.tcp_address = Some(address.to_owned());
        self
    }

    /// `pm = static` with this many children (default 4).
    pub fn max_children(mut self, n: usize) -> Self {
        self.max_children = n;
        self
    }

    /// A php.ini value for the pool (`php_value[key] = value`), after `FIXTURE_INI`.
    pub fn ini(mut self, key: &str, value: &str) -> Self {
        self.ini.push((key.to_owned(), value.to_owned()));
        self
    }

    /// A raw line appended to the pool section (e.g. `request_terminate_timeout = 5s`).
    pub fn pool_line(mut self, line: &str) -> Self {
        self.pool_lines.push(line.to_owned());
        self
    }

    pub fn start(self) -> PhpFpm {
        let dir = tempfile::Builder::new()
            .prefix("php-fpm.")
            .tempdir()
            .unwrap();
        let address = match self.listen {
            FpmListen::Tcp => self
                .tcp_address
                .clone()
                .unwrap_or_else(|| format!("127.0.0.1:{}", free_port())),
            FpmListen::Unix => dir.path().join("php-fpm.sock").display().to_string(),
        };
        let d = dir.path().display();
        // clear_env = yes (php-fpm's default): with `no`, the test runner's whole
        // environment (an HTTP_PROXY variable included) would show up in $_SERVER.
        let mut conf = format!(
            "[global]\n\
             pid = {d}/php-fpm.pid\n\
             error_log = {d}/php-fpm.log\n\
             daemonize = no\n\
             log_level = notice\n\
             \n\
             [fixture]\n\
             listen = {address}\n\
             listen.mode = 0666\n\
             pm = static\n\
             pm.max_children = {children}\n\
             catch_workers_output = yes\n\
             decorate_workers_output = no\n\
             clear_env = yes\n",
            children = self.max_children,
        );
        for (k, v) in &self.ini {
            conf.push_str(&format!("php_value[{k}] = {v}\n"));
        }
        for line in &self.pool_lines {
            conf.push_str(line);
            conf.push('\n');
        }
        let conf_path = dir.path().join("php-fpm.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut fpm = PhpFpm {
            group: None,
            address,
            listen: self.listen,
            docroot: self.docroot,
            conf: conf_path,
            dir,
        };
        fpm.start_again();
        fpm
    }
}

/// A running php-fpm master (`-F -R`, Debian's FPM php.ini) with one static pool.
pub struct PhpFpm {
    group: Option<Group>,
    address: String,
    listen: FpmListen,
    docroot: PathBuf,
    conf: PathBuf,
    dir: tempfile::TempDir,
}

impl PhpFpm {
    /// Starts php-fpm with the defaults: 4 static children and `FIXTURE_INI`.
    pub fn start(docroot: &Path, listen: FpmListen) -> PhpFpm {
        PhpFpm::builder(docroot, listen).start()
    }

    pub fn builder(docroot: &Path, listen: FpmListen) -> PhpFpmBuilder {
        PhpFpmBuilder {
            docroot: docroot.to_owned(),
            listen,
            max_children: 4,
            ini: FIXTURE_INI
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            pool_lines: Vec::new(),
            tcp_address: None,
        }
    }

    /// "127.0.0.1:PORT" or the socket path: the value for fe-php's `[php] fpm_socket`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The target for nginx's `server` / `fastcgi_pass` ("unix:/path" for a socket).
    pub fn nginx_target(&self) -> String {
        match self.listen {
            FpmListen::Tcp => self.address.clone(),
            FpmListen::Unix => format!("unix:{}", self.address),
        }
    }

    pub fn listen(&self) -> FpmListen {
        self.listen
    }

    pub fn docroot(&self) -> &Path {
        &self.docroot
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The master's log (with the workers' stderr: PHP errors land here).
    pub fn error_log(&self) -> String {
        let mut s =
            std::fs::read_to_string(self.dir.path().join("php-fpm.log")).unwrap_or_default();
        s.push_str(
            &std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default(),
        );
        s
    }

    pub fn pid(&self) -> Option<i32> {
        self.group.as_ref().map(Group::pid)
    }

    pub fn is_running(&self) -> bool {
        self.group.as_ref().is_some_and(|g| !g.exited())
    }

    /// Stops php-fpm (SIGTERM, then SIGKILL to its process group after 5 s).
    pub fn stop(&mut self) {
        if let Some(group) = self.group.take() {
            group.stop(Duration::from_secs(5));
        }
    }

    /// Starts php-fpm again on the same address and configuration (after `stop`).
    pub fn start_again(&mut self) {
        assert!(self.group.is_none(), "php-fpm is already running");
        let mut cmd = Command::new(PHP_FPM_BIN);
        cmd.args(["-F", "-R", "-c", FPM_PHP_INI, "-y"])
            .arg(&self.conf)
            .stdout(std::fs::File::create(self.dir.path().join("stdout.log")).unwrap())
            .stderr(std::fs::File::create(self.dir.path().join("stderr.log")).unwrap());
        self.group = Some(Group::spawn(&mut cmd));
        self.wait_ready();
    }

    fn accepts(&self) -> bool {
        match self.listen {
            FpmListen::Tcp => TcpStream::connect(&self.address).is_ok(),
            FpmListen::Unix => UnixStream::connect(&self.address).is_ok(),
        }
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.accepts() {
                return;
            }
            if !self.is_running() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "php-fpm did not accept connections on {}; log:\n{}",
            self.address,
            self.error_log()
        );
    }
}

impl Drop for PhpFpm {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running nginx (master + 1 worker) serving `docroot` with Debian's usual PHP
/// location in front of a `PhpFpm`.
pub struct Nginx {
    group: Option<Group>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    pub fn start(docroot: &Path, fpm: &PhpFpm) -> Nginx {
        Nginx::start_with(docroot, fpm, "")
    }

    /// Like `start`, with extra directives inside the `server` block.
    pub fn start_with(docroot: &Path, fpm: &PhpFpm, server_extra: &str) -> Nginx {
        let dir = tempfile::Builder::new().prefix("nginx.").tempdir().unwrap();
        for sub in ["client_body", "fastcgi", "proxy", "scgi", "uwsgi"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let port = free_port();
        let d = dir.path().display();
        // Workers of a root master would drop to `nobody`, which cannot use our 0700
        // temp dirs; keep them root (tests run as root).
        let user = if unsafe { libc::geteuid() } == 0 {
            "user root;"
        } else {
            ""
        };
        let conf = format!(
            r#"daemon off;
master_process on;
worker_processes 1;
{user}
pid {d}/nginx.pid;
error_log {d}/error.log notice;

events {{
    worker_connections 512;
}}

http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    client_body_temp_path {d}/client_body;
    fastcgi_temp_path {d}/fastcgi;
    proxy_temp_path {d}/proxy;
    scgi_temp_path {d}/scgi;
    uwsgi_temp_path {d}/uwsgi;
    client_max_body_size 64m;

    upstream php_fpm {{
        server {target};
        keepalive 2;
    }}

    map $path_info $path_translated {{
        "" "";
        default $document_root$path_info;
    }}

    server {{
        listen 127.0.0.1:{port};
        root {root};
        index index.php index.html;

        location / {{
            try_files $uri $uri/ =404;
        }}

        location ~ [^/]\.php(/|$) {{
            fastcgi_split_path_info ^(.+?\.php)(/.*)$;
            try_files $fastcgi_script_name =404;
            set $path_info $fastcgi_path_info;
            fastcgi_param PATH_INFO $path_info;
            # PATH_TRANSLATED only when there is a PATH_INFO (CGI/1.1 §4.1.6).
            fastcgi_param PATH_TRANSLATED $path_translated if_not_empty;
            fastcgi_index index.php;
            include /etc/nginx/fastcgi.conf;
            fastcgi_param SERVER_NAME $host;
            fastcgi_param HTTP_PROXY "";
            fastcgi_pass php_fpm;
            fastcgi_keep_conn on;
        }}
{server_extra}
    }}
}}
"#,
            target = fpm.nginx_target(),
            root = docroot.display(),
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut cmd = Command::new(NGINX_BIN);
        cmd.arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdout(std::fs::File::create(dir.path().join("stdout.log")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap());
        let nginx = Nginx {
            group: Some(Group::spawn(&mut cmd)),
            port,
            dir,
        };
        nginx.wait_ready();
        nginx
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if self.group.as_ref().is_none_or(Group::exited) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "nginx did not accept connections on port {}; log:\n{}",
            self.port,
            self.error_log()
        );
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn error_log(&self) -> String {
        let mut s = std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default();
        s.push_str(
            &std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default(),
        );
        s
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(group) = self.group.take() {
            group.stop(Duration::from_secs(5));
        }
    }
}
