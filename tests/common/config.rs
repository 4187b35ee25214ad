//! The fe-php-host configuration most tests start from: one listener on `{port}`,
//! static files from `{dir}/public`, PHP's embedded backend off (a libphp path
//! that does not exist), each part adjustable. `Host::start` fills in `{port}`
//! and `{dir}`.

/// A configuration under construction; `toml()` writes it out.
pub struct HostConfig {
    workers: usize,
    access_log: String,
    server: String,
    default_backend: String,
    root: String,
    sections: String,
    php: String,
    ini: String,
}

impl HostConfig {
    /// One worker, an access log in `{dir}/access.log`, everything to the static
    /// backend from `{dir}/public`.
    pub fn static_site() -> HostConfig {
        HostConfig {
            workers: 1,
            access_log: "{dir}/access.log".to_owned(),
            server: String::new(),
            default_backend: "static".to_owned(),
            root: "{dir}/public".to_owned(),
            sections: String::new(),
            php: "libphp_path = \"/nonexistent/libphp.so\"".to_owned(),
            ini: String::new(),
        }
    }

    /// PHP through PHP-FPM at `fpm` (an address for `fpm_socket`), scripts and
    /// static files from `root`, no access log; `php` adds `[php]` lines.
    pub fn fastcgi_site(root: &std::path::Path, fpm: &str, php: &str) -> HostConfig {
        HostConfig::static_site()
            .access_log("off")
            .default_backend("fastcgi")
            .root(&root.display().to_string())
            .php(&format!(
                "libphp_path = \"/nonexistent/libphp.so\"\nfpm_socket = \"{fpm}\"\n{php}"
            ))
    }

    /// Embedded PHP (Debian's libphp) by default, from `{dir}/www`, no access log;
    /// `ini` becomes `[php.ini]`.
    pub fn embedded_site(ini: &str) -> HostConfig {
        HostConfig::static_site()
            .access_log("off")
            .default_backend("embedded")
            .root("{dir}/www")
            .php("")
            .ini(ini)
    }

    /// The lines of `[php.ini]`.
    pub fn ini(mut self, lines: &str) -> HostConfig {
        self.ini = lines.to_owned();
        self
    }

    pub fn workers(mut self, n: usize) -> HostConfig {
        self.workers = n;
        self
    }

    /// `"off"`, `"-"` or a path.
    pub fn access_log(mut self, log: &str) -> HostConfig {
        self.access_log = log.to_owned();
        self
    }

    /// More `[server]` lines (limits, user).
    pub fn server(mut self, lines: &str) -> HostConfig {
        self.server = lines.to_owned();
        self
    }

    pub fn default_backend(mut self, backend: &str) -> HostConfig {
        self.default_backend = backend.to_owned();
        self
    }

    /// The static root, e.g. `"{dir}/www"`.
    pub fn root(mut self, root: &str) -> HostConfig {
        self.root = root.to_owned();
        self
    }

    /// Sections after `[backend.static_files]`: routing rules, `[backend.proxy]`…
    pub fn sections(mut self, toml: &str) -> HostConfig {
        self.sections = toml.to_owned();
        self
    }

    /// The lines of `[php]` (the default turns the embedded backend off).
    pub fn php(mut self, lines: &str) -> HostConfig {
        self.php = lines.to_owned();
        self
    }

    pub fn toml(&self) -> String {
        format!(
            r#"
[server]
listen = "127.0.0.1:{{port}}"
workers = {workers}
access_log = "{log}"
{server}

[backend]
default_backend = "{default}"

[backend.static_files]
enable = true
root = "{root}"
{sections}

[php]
{php}
{ini}
"#,
            workers = self.workers,
            log = self.access_log,
            server = self.server,
            default = self.default_backend,
            root = self.root,
            sections = self.sections,
            php = self.php,
            ini = if self.ini.is_empty() {
                String::new()
            } else {
                format!("[php.ini]\n{}\n", self.ini)
            },
        )
    }
}
