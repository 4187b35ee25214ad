//! What a configuration means on this machine: which backends are available,
//! every problem at once (each naming its cause and fix), and the seed's `[i]`
//! lines.

use super::*;
use std::collections::BTreeMap;
use std::path::Path;

/// Which backends this build of the library contains. The engine passes the real
/// answer; tests pass whatever they need.
#[derive(Debug, Clone, Copy)]
pub struct Built {
    pub embedded: bool,
    pub fastcgi: bool,
}

/// Why a backend is not available (shown in `/_health` and in errors).
#[derive(Debug, Clone, PartialEq)]
pub enum Availability {
    Available,
    Unavailable(String),
}

impl Availability {
    pub fn is_available(&self) -> bool {
        matches!(self, Availability::Available)
    }
}

/// The outcome of validation: which backends serve, and the `[i]` lines to show.
#[derive(Debug, Clone)]
pub struct Validated {
    pub config: Config,
    pub embedded: Availability,
    pub fastcgi: Availability,
    pub static_files: Availability,
    pub proxy: Availability,
    pub default_backend: BackendKind,
    /// Informational lines in the seed's format (`[i] …`), in order.
    pub messages: Vec<String>,
}

impl Validated {
    pub fn availability(&self, kind: BackendKind) -> &Availability {
        match kind {
            BackendKind::Embedded => &self.embedded,
            BackendKind::FastCgi => &self.fastcgi,
            BackendKind::Static => &self.static_files,
            BackendKind::Proxy => &self.proxy,
        }
    }

    /// The directory PHP scripts are resolved in.
    pub fn php_document_root(&self) -> Option<&Path> {
        self.config.php.document_root.as_deref().or_else(|| {
            let s = &self.config.backend.static_files;
            (!s.root.as_os_str().is_empty()).then_some(s.root.as_path())
        })
    }
}

impl Config {
    /// Decides which backends are available and checks every rule against them.
    pub fn validate(mut self, built: Built) -> Result<Validated, ConfigError> {
        self.make_paths_absolute();
        let mut messages = Vec::new();
        let mut problems = Vec::new();
        let (embedded, fastcgi) = php_backends(&self, built, &mut messages, &mut problems);
        let backends = Backends {
            embedded,
            fastcgi,
            static_files: static_backend(&self.backend.static_files, &mut problems),
            proxy: proxy_backend(&self.backend.proxy, &mut problems),
        };
        let default_backend = default_backend(&self, &backends, &mut problems);
        check_rules(&self.backend, &backends, &mut problems);
        check_php(&self.php, &mut problems);
        check_rule_pools(&self, &mut problems);
        check_rule_names(&self.backend.routing_rules, &mut problems);
        check_backend_paths(&self.backend, &mut problems);
        check_sendfile(&self.backend.sendfile, &mut problems);
        check_compression(&self.backend.compression, &mut problems);
        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        let Backends {
            embedded,
            fastcgi,
            static_files,
            proxy,
        } = backends;
        Ok(Validated {
            config: self,
            embedded,
            fastcgi,
            static_files,
            proxy,
            default_backend,
            messages,
        })
    }

    /// Relative paths mean relative to where the process started: the PHP thread
    /// moves the working directory to each script's directory.
    fn make_paths_absolute(&mut self) {
        for p in [
            &mut self.backend.static_files.root,
            &mut self.php.libphp_path,
        ] {
            *p = absolute(p);
        }
        if let Some(p) = &mut self.php.document_root {
            *p = absolute(p);
        }
        for pool in self.php.fpm_pools.values_mut() {
            if let Some(p) = &mut pool.document_root {
                *p = absolute(p);
            }
        }
    }
}

/// The availability of each backend while validating.
struct Backends {
    embedded: Availability,
    fastcgi: Availability,
    static_files: Availability,
    proxy: Availability,
}

impl Backends {
    fn of(&self, kind: BackendKind) -> &Availability {
        match kind {
            BackendKind::Embedded => &self.embedded,
            BackendKind::FastCgi => &self.fastcgi,
            BackendKind::Static => &self.static_files,
            BackendKind::Proxy => &self.proxy,
        }
    }
}

/// What makes `kind` available, for the fix of an error that names it.
fn how_to_enable(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Embedded => {
            "install libphp (apt-get install libphp8.2-embed) and set [php] libphp_path"
        }
        BackendKind::FastCgi => "set [php] fpm_socket = \"127.0.0.1:9000\" (or the php-fpm socket path; fpm_upstreams for several)",
        BackendKind::Static => {
            "set [backend.static_files] enable = true and root = \"/var/www/public\""
        }
        BackendKind::Proxy => {
            "set [backend.proxy] upstream = \"http://127.0.0.1:9001\" (the HTTP server to forward to)"
        }
    }
}

/// The two PHP backends, by the seed's modes: hybrid (each when it can run, with an
/// `[i]` line when it cannot), or one of them required.
fn php_backends(
    config: &Config,
    built: Built,
    messages: &mut Vec<String>,
    problems: &mut Vec<String>,
) -> (Availability, Availability) {
    let php = &config.php;
    let libphp_found = php.libphp_path.is_file();
    let fpm_configured = php.fpm_default_group().is_configured();
    let libphp_missing = || {
        Availability::Unavailable(format!(
            "libphp.so not found at: {}",
            php.libphp_path.display()
        ))
    };
    if config.backend.enable_hybrid {
        let embedded = if !libphp_found {
            messages.push(format!(
                "[i] libphp.so not found at: {}.\n    Embedded backend will not be available (FastCGI/Static only mode)",
                php.libphp_path.display()
            ));
            libphp_missing()
        } else if !built.embedded {
            messages.push("[i] Embedded backend is not built yet in this version of fe-php.\n    Embedded backend will not be available (FastCGI/Static only mode)".to_owned());
            Availability::Unavailable("embedded backend is not built yet".to_owned())
        } else {
            Availability::Available
        };
        let fastcgi = if !fpm_configured {
            messages.push("[i] fpm_socket not configured.\n    FastCGI backend will not be available (Embedded/Static only mode)".to_owned());
            Availability::Unavailable("fpm_socket not configured".to_owned())
        } else if !built.fastcgi {
            messages.push("[i] FastCGI backend is not built yet in this version of fe-php.\n    FastCGI backend will not be available (Embedded/Static only mode)".to_owned());
            Availability::Unavailable("FastCGI backend is not built yet".to_owned())
        } else {
            Availability::Available
        };
        (embedded, fastcgi)
    } else if php.use_fpm {
        let fastcgi = if !fpm_configured {
            problems.push("[php] fpm_socket is required when enable_hybrid = false and use_fpm = true.\n    Set fpm_socket = \"127.0.0.1:9000\" (or the php-fpm socket path; fpm_upstreams = [...] for several), or set use_fpm = false to use the embedded backend.".to_owned());
            Availability::Unavailable("fpm_socket not configured".to_owned())
        } else if !built.fastcgi {
            problems.push("FastCGI backend is not built yet in this version of fe-php (use_fpm = true).\n    Use enable_hybrid = true with the static backend until it is.".to_owned());
            Availability::Unavailable("FastCGI backend is not built yet".to_owned())
        } else {
            Availability::Available
        };
        (
            Availability::Unavailable(
                "not selected: enable_hybrid = false and use_fpm = true".to_owned(),
            ),
            fastcgi,
        )
    } else {
        let embedded = if !libphp_found {
            problems.push(format!(
                "libphp.so not found at: {} (required when enable_hybrid = false and use_fpm = false).\n    Install it (apt-get install libphp8.2-embed), set [php] libphp_path, or set use_fpm = true with fpm_socket.",
                php.libphp_path.display()
            ));
            libphp_missing()
        } else if !built.embedded {
            problems.push("Embedded backend is not built yet in this version of fe-php (use_fpm = false).\n    Use enable_hybrid = true with the static backend until it is.".to_owned());
            Availability::Unavailable("embedded backend is not built yet".to_owned())
        } else {
            Availability::Available
        };
        (
            embedded,
            Availability::Unavailable(
                "not selected: enable_hybrid = false and use_fpm = false".to_owned(),
            ),
        )
    }
}

/// `[backend.static_files]`: off, or a root that must be a directory.
fn static_backend(sf: &StaticFilesConfig, problems: &mut Vec<String>) -> Availability {
    if !sf.enable {
        Availability::Unavailable(
            "static backend disabled ([backend.static_files] enable = false)".to_owned(),
        )
    } else if sf.root.as_os_str().is_empty() {
        problems.push("[backend.static_files] root is required when enable = true.\n    Set root = \"/absolute/path/to/public\".".to_owned());
        Availability::Unavailable("no root".to_owned())
    } else if !sf.root.is_dir() {
        problems.push(format!(
            "[backend.static_files] root {} is not a readable directory.\n    Use an absolute path to an existing directory (chmod 755 it if needed).",
            sf.root.display()
        ));
        Availability::Unavailable(format!("root {} is not a directory", sf.root.display()))
    } else {
        Availability::Available
    }
}

/// `[backend.proxy]`: available once an upstream is named; each must parse.
fn proxy_backend(px: &ProxyConfig, problems: &mut Vec<String>) -> Availability {
    let upstreams = px.upstream_list();
    if px.upstream.is_some() && !px.upstreams.is_empty() {
        problems.push("[backend.proxy] has both upstream and upstreams.\n    Use upstream = \"http://127.0.0.1:9001\" for one server, or upstreams = [\"http://127.0.0.1:9001\", \"http://127.0.0.1:9002\"] for several, not both.".to_owned());
    }
    for u in &upstreams {
        if let Err(why) = UpstreamAddress::parse(u) {
            let key = if px.upstream.is_some() {
                "upstream"
            } else {
                "upstreams"
            };
            problems.push(format!(
                "[backend.proxy] {key} \"{u}\" is not an upstream URL: {why}.\n    Use {}.",
                UpstreamAddress::FORMS
            ));
        }
    }
    if px.max_connections == 0 || px.max_connections > MAX_PROXY_MAX_CONNECTIONS {
        problems.push(format!(
            "[backend.proxy] max_connections = {} is out of range: use 1 to {MAX_PROXY_MAX_CONNECTIONS}.\n    It bounds the requests each worker process has in flight to one upstream (one connection each).",
            px.max_connections
        ));
    }
    if upstreams.iter().all(|u| u.trim().is_empty()) {
        Availability::Unavailable("no upstream configured ([backend.proxy] upstream)".to_owned())
    } else {
        Availability::Available
    }
}

/// `[backend] default_backend` (the seed's default: embedded, or fastcgi when
/// PHP-FPM is the only PHP), which must be available.
fn default_backend(
    config: &Config,
    backends: &Backends,
    problems: &mut Vec<String>,
) -> BackendKind {
    let default_name = config.backend.default_backend.clone().unwrap_or_else(|| {
        if !config.backend.enable_hybrid && config.php.use_fpm {
            "fastcgi"
        } else {
            "embedded"
        }
        .to_owned()
    });
    match BackendKind::from_name(&default_name) {
        Some(k) if backends.of(k).is_available() => k,
        known => {
            let fix = match known {
                Some(k) => format!(
                    "To use it, {}; or choose another default_backend.",
                    how_to_enable(k)
                ),
                None => format!("Use default_backend = {}.", BackendKind::NAMES),
            };
            problems.push(format!(
                "Default backend '{default_name}' is not registered\n    {fix}"
            ));
            known.unwrap_or(BackendKind::Static)
        }
    }
}

/// A rule (or split arm) `what` names backend `name`: it must exist and be available.
fn check_backend(backends: &Backends, problems: &mut Vec<String>, what: &str, name: &str) {
    match BackendKind::from_name(name) {
        None => problems.push(format!(
            "{what} uses backend '{name}', which is unknown.\n    Use backend = {}.",
            BackendKind::NAMES
        )),
        Some(k) if !backends.of(k).is_available() => problems.push(format!(
            "{what} uses backend '{name}', which is not registered.\n    To use it, {}; or route this rule to another backend.",
            how_to_enable(k)
        )),
        Some(_) => {}
    }
}

/// `[[backend.routing_rules]]`: one backend or a split per rule, patterns that can
/// match, and split cookies that do not collide.
fn check_rules(backend: &BackendConfig, backends: &Backends, problems: &mut Vec<String>) {
    // Cookie name → the first split rule keeping its arm in it.
    let mut cookies: BTreeMap<String, usize> = BTreeMap::new();
    for (i, rule) in backend.routing_rules.iter().enumerate() {
        let n = i + 1;
        let what = format!(
            "Routing rule #{n} ({} \"{}\")",
            rule.pattern.kind, rule.pattern.value
        );
        match (&rule.backend, &rule.split) {
            (Some(_), Some(_)) => problems.push(format!(
                "{what} has both backend and split.\n    Use backend = \"embedded\" to send it to one backend, or split = [{{ backend = \"embedded\", weight = 90 }}, {{ backend = \"fastcgi\", weight = 10 }}] to divide its traffic, not both."
            )),
            (None, None) => problems.push(format!(
                "{what} names no backend.\n    Add backend = \"embedded\" (or {}), or split = [{{ backend = \"embedded\", weight = 90 }}, {{ backend = \"fastcgi\", weight = 10 }}].",
                BackendKind::NAMES
            )),
            (Some(b), None) => {
                check_backend(backends, problems, &what, b);
                if rule.sticky.is_some() || rule.cookie.is_some() {
                    problems.push(format!(
                        "{what} sets sticky or cookie without split.\n    They choose how a client stays on its arm of a split = [...]; remove them, or replace backend with a split."
                    ));
                }
            }
            (None, Some(arms)) => {
                check_split(backend, backends, problems, (n, &what), rule, arms, &mut cookies)
            }
        }
        check_pattern(problems, (n, &what), &rule.pattern);
    }
}

/// The arms of split rule #`n` and the cookie that keeps a client on one.
fn check_split(
    backend: &BackendConfig,
    backends: &Backends,
    problems: &mut Vec<String>,
    (n, what): (usize, &str),
    rule: &RoutingRule,
    arms: &[SplitArm],
    cookies: &mut BTreeMap<String, usize>,
) {
    if arms.is_empty() {
        problems.push(format!(
            "{what} has an empty split.\n    List the arms with their weights: split = [{{ backend = \"embedded\", weight = 90 }}, {{ backend = \"fastcgi\", weight = 10 }}]."
        ));
    }
    for (j, arm) in arms.iter().enumerate() {
        let arm_what = format!("{what} split arm #{}", j + 1);
        check_backend(backends, problems, &arm_what, &arm.backend);
        if arm.weight == 0 || arm.weight > MAX_SPLIT_WEIGHT {
            problems.push(format!(
                "{arm_what} (backend '{}') has weight {}: weights must be positive whole numbers up to {MAX_SPLIT_WEIGHT}.\n    Each arm gets weight / (sum of weights) of the traffic, e.g. weight = 90 and weight = 10.",
                arm.backend, arm.weight
            ));
        }
        if arms[..j].iter().any(|a| a.backend == arm.backend) {
            problems.push(format!(
                "{arm_what} names backend '{}' again.\n    Give each backend one arm and add up the weights.",
                arm.backend
            ));
        }
    }
    let sticky = rule.sticky.unwrap_or_default();
    if rule.cookie.is_some() && sticky != Sticky::Cookie {
        problems.push(format!(
            "{what} sets cookie with sticky = \"{}\".\n    The cookie is only used with sticky = \"cookie\"; remove it or change sticky.",
            sticky.name()
        ));
    }
    if sticky == Sticky::Cookie {
        let name = rule.cookie.as_deref().unwrap_or(&backend.split.cookie);
        // The default cookie's name is checked once, in check_backend_paths.
        if rule.cookie.is_some() && !is_token(name) {
            problems.push(format!(
                "{what}: cookie \"{}\" is not a cookie name.\n    Use letters, digits and - _ . only, e.g. cookie = \"fephp_arm\".",
                name.escape_debug()
            ));
        } else if let Some(first) = cookies.get(name) {
            problems.push(format!(
                "{what} keeps its arm in cookie '{name}', like routing rule #{first}.\n    Give one of them its own cookie = \"fephp_arm_{n}\": one cookie cannot hold the arms of two splits."
            ));
        } else {
            cookies.insert(name.to_owned(), n);
        }
    }
}

/// A rule's pattern: a regex that compiles, paths that start with '/'.
fn check_pattern(problems: &mut Vec<String>, (n, what): (usize, &str), pattern: &Pattern) {
    match pattern.kind {
        PatternKind::Regex => {
            if let Err(e) = regex::Regex::new(&pattern.value) {
                problems.push(format!(
                    "Routing rule #{n}: invalid regex '{}': {e}",
                    pattern.value
                ));
            }
        }
        PatternKind::Exact | PatternKind::Prefix => {
            if !pattern.value.starts_with('/') {
                problems.push(format!(
                    "{what}: the value must start with '/'; rules match the normalized request path."
                ));
            }
        }
        PatternKind::Suffix => {
            if pattern.value.is_empty() {
                problems.push(format!("{what}: the value must not be empty."));
            }
        }
    }
}

/// `[php]`: the front controller, PHP-FPM's address, pool size and ping path.
fn check_php(php: &PhpConfig, problems: &mut Vec<String>) {
    if let Some(fc) = &php.front_controller {
        if fc.is_empty() || fc.contains("..") || fc.as_bytes().contains(&0) {
            problems.push(format!(
                "[php] front_controller '{fc}' is not a script path inside the document root.\n    Use e.g. front_controller = \"index.php\"."
            ));
        }
    }
    if php.front_controller_internal && php.front_controller.is_none() {
        problems.push(
            "[php] front_controller_internal = true needs a front_controller (e.g. front_controller = \"index.php\").".to_owned(),
        );
    }
    check_fpm_groups(php, problems);
    check_pool(&php.pool, "php.pool", problems);
    for (name, pool) in &php.pools {
        if name.is_empty()
            || name == "default"
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            problems.push(format!(
                "[php.pools.{name}]: a pool's name is letters, digits, '_' and '-', and not \"default\" (that is [php.pool])."
            ));
        }
        check_pool(pool, &format!("php.pools.{name}"), problems);
    }
}

/// `pool = "NAME"` on routing rules: a defined runner pool on an embedded rule
/// (or split), a defined `[php.fpm_pools.NAME]` on a fastcgi rule.
fn check_rule_pools(config: &Config, problems: &mut Vec<String>) {
    for (i, rule) in config.backend.routing_rules.iter().enumerate() {
        let Some(name) = &rule.pool else {
            continue;
        };
        let what = format!(
            "Routing rule #{} ({} \"{}\")",
            i + 1,
            rule.pattern.kind,
            rule.pattern.value
        );
        if rule.backend.as_deref() == Some("fastcgi") {
            check_rule_fpm_pool(config, &what, name, problems);
            continue;
        }
        if !config.php.pools.contains_key(name) {
            let defined: Vec<&str> = config.php.pools.keys().map(|k| k.as_str()).collect();
            problems.push(format!(
                "{what} uses pool '{name}', which is not defined{}.\n    Define it as [php.pools.{name}] (e.g. max_runners = 4 and [php.pools.{name}.ini] memory_limit = \"512M\"), or remove pool to use [php.pool].",
                if defined.is_empty() { String::new() } else { format!(" (defined: {})", defined.join(", ")) }
            ));
        }
        let embedded = rule.backend.as_deref() == Some("embedded")
            || rule
                .split
                .iter()
                .flatten()
                .any(|arm| arm.backend == "embedded");
        if !embedded {
            problems.push(format!(
                "{what} sets pool '{name}', but only the embedded and fastcgi backends run in pools.\n    Remove pool, or send the rule to backend = \"embedded\" ([php.pools.{name}]) or backend = \"fastcgi\" ([php.fpm_pools.{name}])."
            ));
        }
    }
}

/// Longest rule `name`: it is a label value in every scrape.
pub const MAX_RULE_NAME: usize = 64;

/// `name = "..."` on routing rules: a metrics label, so short, plain and unique.
fn check_rule_names(rules: &[RoutingRule], problems: &mut Vec<String>) {
    // Name → the first rule (1-based) that has it.
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, rule) in rules.iter().enumerate() {
        let Some(name) = &rule.name else {
            continue;
        };
        let what = format!(
            "Routing rule #{} ({} \"{}\")",
            i + 1,
            rule.pattern.kind,
            rule.pattern.value
        );
        let plain = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if name.is_empty() || name.len() > MAX_RULE_NAME || !plain {
            problems.push(format!(
                "{what} has name {name:?}: a rule's name is 1 to {MAX_RULE_NAME} letters, digits, '_', '.' and '-'.\n    It labels the rule's series in /_metrics; use e.g. name = \"api\" or name = \"checkout.v2\"."
            ));
            continue;
        }
        if let Some(first) = seen.insert(name, i + 1) {
            seen.insert(name, first);
            problems.push(format!(
                "{what} has name '{name}', which routing rule #{first} already has.\n    Names label the rules' series in /_metrics; give each rule its own, or remove one."
            ));
        }
    }
}

/// `backend = "fastcgi", pool = "NAME"`: NAME must be a `[php.fpm_pools.NAME]`.
fn check_rule_fpm_pool(config: &Config, what: &str, name: &str, problems: &mut Vec<String>) {
    if config.php.fpm_pools.contains_key(name) {
        return;
    }
    let defined: Vec<&str> = config.php.fpm_pools.keys().map(|k| k.as_str()).collect();
    problems.push(format!(
        "{what} uses FastCGI pool '{name}', which is not defined{}.\n    Define it as [php.fpm_pools.{name}] (e.g. socket = \"/run/php/php8.1-fpm.sock\", or upstreams = [{{ address = \"10.0.0.2:9000\" }}]), or remove pool to use [php] fpm_socket.",
        if defined.is_empty() { String::new() } else { format!(" (defined: {})", defined.join(", ")) }
    ));
}

fn check_pool(pool: &PoolConfig, section: &str, problems: &mut Vec<String>) {
    for (k, v) in &pool.ini {
        let text = v.to_string();
        if k.contains(['=', '\n', '\0']) || text.contains(['\n', '\0']) {
            problems.push(format!(
                "[{section}.ini] {k}: names and values must be single-line without NUL bytes (and names have no '=')"
            ));
        }
    }
    if pool.max_runners == 0 || pool.max_runners > MAX_RUNNERS {
        problems.push(format!(
            "[{section}] max_runners = {} is out of range: use 1 to {MAX_RUNNERS}.\n    Each runner is one PHP interpreter (a process); the default is {}.",
            pool.max_runners,
            PoolConfig::default().max_runners
        ));
    }
    if pool.min_runners > pool.max_runners {
        problems.push(format!(
            "[{section}] min_runners = {} is above max_runners = {}.\n    Lower min_runners or raise max_runners.",
            pool.min_runners, pool.max_runners
        ));
    }
    if let Some(w) = &pool.worker {
        let text = w.to_string_lossy();
        let bad = w.is_absolute()
            || text.is_empty()
            || text.contains('\0')
            || w.components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
            || w.extension().is_none_or(|e| e != "php");
        if bad {
            problems.push(format!(
                "[{section}] worker = \"{}\" is not a PHP script inside the document root.\n    Give its path relative to [php] document_root, without '..', e.g. worker = \"index.php\".",
                text.escape_debug()
            ));
        }
        if !pool.enabled {
            problems.push(format!(
                "[{section}] sets a worker script but enabled = false: worker scripts run in the runner pool.\n    Remove enabled = false, or remove worker."
            ));
        }
    }
    if pool.watch.is_some() && pool.worker.is_none() {
        problems.push(format!(
            "[{section}] watch needs a worker script: it restarts workers whose code changed.\n    Set worker = \"...\", or remove watch (classic scripts see changes by themselves)."
        ));
    }
    if pool.leak_report && pool.worker.is_none() {
        problems.push(format!(
            "[{section}] leak_report = true needs a worker script: the report follows what a worker keeps between requests.\n    Set worker = \"...\", or remove leak_report."
        ));
    }
    if pool.queue_size == 0 || pool.queue_size > 1 << 20 {
        problems.push(format!(
            "[{section}] queue_size = {} is out of range: use 1 to 1048576.\n    It is how many requests may wait for a free runner before the next one gets 503.",
            pool.queue_size
        ));
    }
}

/// Every FastCGI upstream group: `[php] fpm_*` and each `[php.fpm_pools.NAME]`.
fn check_fpm_groups(php: &PhpConfig, problems: &mut Vec<String>) {
    for name in php.fpm_pools.keys() {
        if name.is_empty()
            || name == DEFAULT_FPM_POOL
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            problems.push(format!(
                "[php.fpm_pools.{name}]: a FastCGI pool's name is letters, digits, '_' and '-', and not \"{DEFAULT_FPM_POOL}\" (that is [php] fpm_socket / fpm_upstreams)."
            ));
        }
    }
    let groups = php.fpm_groups();
    let total: usize = groups.iter().map(|g| g.upstreams().len()).sum();
    if total > MAX_FPM_UPSTREAMS {
        problems.push(format!(
            "[php] fpm_upstreams and [php.fpm_pools.*] name {total} php-fpm upstreams in all: at most {MAX_FPM_UPSTREAMS} are supported.\n    Put several pools behind one address (one php-fpm serves many), or use fewer upstreams."
        ));
    }
    for g in &groups {
        check_fpm_group(g, problems);
    }
}

/// One upstream group: where php-fpm is, and its limits.
fn check_fpm_group(g: &FpmGroup, problems: &mut Vec<String>) {
    let (socket, upstreams) = (g.key("socket"), g.key("upstreams"));
    let section = g.section();
    if g.socket.is_some() && !g.upstream_list.is_empty() {
        problems.push(format!(
            "{section} has both {socket} and {upstreams}.\n    Use {socket} = \"127.0.0.1:9000\" for one php-fpm, or {upstreams} = [{{ address = \"127.0.0.1:9000\" }}, {{ address = \"unix:/run/php/php8.2-fpm.sock\", weight = 2 }}] for several, not both."
        ));
    }
    if !g.is_default() && !g.is_configured() {
        problems.push(format!(
            "{section} names no php-fpm.\n    Add socket = \"/run/php/php8.1-fpm.sock\" (one php-fpm), or upstreams = [{{ address = \"10.0.0.2:9000\" }}, {{ address = \"10.0.0.3:9000\" }}] (several)."
        ));
    }
    if let Some(s) = &g.socket {
        if let Err(why) = FpmAddress::parse(s) {
            problems.push(format!(
                "{section} {socket} \"{s}\" is not a PHP-FPM address: {why}.\n    Use {}.",
                FpmAddress::FORMS
            ));
        }
    }
    for (i, u) in g.upstream_list.iter().enumerate() {
        let what = format!("{section} {upstreams} #{} (\"{}\")", i + 1, u.address);
        match FpmAddress::parse(&u.address) {
            Err(why) => problems.push(format!(
                "{what} is not a PHP-FPM address: {why}.\n    Use address = {}.",
                FpmAddress::FORMS
            )),
            Ok(a) => {
                let same = g.upstream_list[..i]
                    .iter()
                    .position(|o| FpmAddress::parse(&o.address).is_ok_and(|o| o == a));
                if let Some(j) = same {
                    problems.push(format!(
                        "{what} names the address of #{} again.\n    List each php-fpm once; give it a larger weight to send it more requests.",
                        j + 1
                    ));
                }
            }
        }
        if u.weight == 0 || u.weight > MAX_FPM_WEIGHT {
            problems.push(format!(
                "{what} has weight = {}: use 1 to {MAX_FPM_WEIGHT}.\n    An upstream with weight = 2 gets twice the requests of one with weight = 1; remove an upstream to send it none.",
                u.weight
            ));
        }
    }
    let max = g.key("max_connections");
    if g.max_connections == 0 || g.max_connections > MAX_FPM_MAX_CONNECTIONS {
        problems.push(format!(
            "{section} {max} = {} is out of range: use 1 to {MAX_FPM_MAX_CONNECTIONS}.\n    It bounds the connections each worker process opens to PHP-FPM; keep workers × {max} ≤ the pool's pm.max_children.",
            g.max_connections
        ));
    }
    if let Some(p) = &g.ping_path {
        if !p.starts_with('/') || p.bytes().any(|b| b <= b' ' || b == 0x7f) {
            problems.push(format!(
                "{section} {} '{p}' must be a path starting with '/' without spaces (e.g. \"/ping\", php-fpm's ping.path).",
                g.key("ping_path")
            ));
        }
    }
    if let Some(every) = g.health_interval {
        if g.ping_path.is_none() {
            problems.push(format!(
                "{section} {} needs {}: the active probe requests php-fpm's ping.path.\n    Set ping.path = /ping in the php-fpm pool and {1} = \"/ping\", or remove {0}.",
                g.key("health_interval"),
                g.key("ping_path")
            ));
        }
        if every < std::time::Duration::from_millis(100) {
            problems.push(format!(
                "{section} {} = \"{}\" is too short: use at least \"100ms\" (e.g. \"5s\").",
                g.key("health_interval"),
                ConfigDuration(every)
            ));
        }
    }
    if let Some(root) = &g.document_root {
        if !root.is_dir() {
            problems.push(format!(
                "{section} document_root {} is not a readable directory.\n    Use an absolute path to the scripts this pool's php-fpm runs, or remove it to use [php] document_root.",
                root.display()
            ));
        }
    }
}

/// `[backend.split]` names and the internal paths (`health_path`, `metrics_path`).
fn check_backend_paths(backend: &BackendConfig, problems: &mut Vec<String>) {
    if !is_token(&backend.split.cookie) {
        problems.push(format!(
            "[backend.split] cookie \"{}\" is not a cookie name.\n    Use letters, digits and - _ . only, e.g. cookie = \"fephp_arm\".",
            backend.split.cookie.escape_debug()
        ));
    }
    if let Some(h) = &backend.split.expose_header {
        if !is_token(h) {
            problems.push(format!(
                "[backend.split] expose_header \"{}\" is not a header name.\n    Use e.g. expose_header = \"X-FePHP-Arm\", or remove the key to send none.",
                h.escape_debug()
            ));
        }
    }
    if !backend.health_path.is_empty() && !backend.health_path.starts_with('/') {
        problems.push(format!(
            "[backend] health_path '{}' must start with '/' (or be \"\" to disable it).",
            backend.health_path
        ));
    }
    let mp = &backend.metrics_path;
    if !mp.is_empty() && !mp.starts_with('/') {
        problems.push(format!(
            "[backend] metrics_path '{mp}' must start with '/' (or be \"\" to disable it)."
        ));
    } else if !mp.is_empty() && *mp == backend.health_path {
        problems.push(format!(
            "[backend] metrics_path '{mp}' is also the health_path: give each its own path."
        ));
    }
}

/// `[backend.sendfile]`, when enabled: at least one directory, each an existing
/// absolute directory other than `/`; location prefixes that are paths ending in
/// `/`, each once.
fn check_sendfile(sf: &SendfileConfig, problems: &mut Vec<String>) {
    if !sf.enable {
        return;
    }
    if sf.roots.is_empty() && sf.locations.is_empty() {
        problems.push("[backend.sendfile] enable = true names no directory to send files from.\n    Add roots = [\"/srv/protected\"] (for X-Sendfile: /srv/protected/file), or a [[backend.sendfile.locations]] with prefix = \"/protected/\" and root = \"/srv/protected\" (for X-Accel-Redirect: /protected/file).".to_owned());
    }
    for root in &sf.roots {
        check_sendfile_dir("[backend.sendfile] roots", root, problems);
    }
    for (i, loc) in sf.locations.iter().enumerate() {
        let what = format!(
            "[[backend.sendfile.locations]] #{} (prefix \"{}\")",
            i + 1,
            loc.prefix.escape_debug()
        );
        let p = &loc.prefix;
        if !p.starts_with('/')
            || !p.ends_with('/')
            || p.split('/').any(|seg| seg == "." || seg == "..")
            || p.bytes()
                .any(|b| b <= b' ' || matches!(b, b'%' | b'?' | b'#' | 0x7f))
        {
            problems.push(format!(
                "{what}: the prefix must be a path that starts and ends with '/', without '.' or '..' segments, spaces, '%', '?' or '#'.\n    Use e.g. prefix = \"/protected/\": X-Accel-Redirect: /protected/a/b.pdf then sends a/b.pdf below root."
            ));
        }
        if let Some(j) = sf.locations[..i].iter().position(|l| l.prefix == *p) {
            problems.push(format!(
                "{what} has the prefix of location #{} again.\n    Give each location its own prefix.",
                j + 1
            ));
        }
        check_sendfile_dir(&format!("{what} root"), &loc.root, problems);
    }
}

/// A directory `[backend.sendfile]` sends files from (`what` names the key).
fn check_sendfile_dir(what: &str, dir: &Path, problems: &mut Vec<String>) {
    let shown = dir.display();
    if !dir.is_absolute() {
        problems.push(format!(
            "{what}: \"{shown}\" is not an absolute path.\n    Name the directory from /, e.g. \"/srv/protected\"."
        ));
    } else if dir.parent().is_none() {
        problems.push(format!(
            "{what}: \"/\" would let a script send any file of the machine.\n    Name the directories the downloads live in, e.g. \"/srv/protected\"."
        ));
    } else {
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => problems.push(format!(
                "{what}: {shown} is not a directory.\n    Name the directory the files live in."
            )),
            Err(e) => problems.push(format!(
                "{what}: {shown} is not a readable directory ({e}).\n    Create it (and chmod 755 it), or correct the path."
            )),
        }
    }
}

/// Media types whose bodies are compressed already (images, audio, video, fonts,
/// archives): compressing them again costs CPU and saves nothing.
const COMPRESSED_TYPES: &[&str] = &[
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "image/avif",
    "image/heic",
    "image/jxl",
    "font/woff",
    "font/woff2",
    "application/zip",
    "application/gzip",
    "application/x-gzip",
    "application/zstd",
    "application/x-bzip2",
    "application/x-xz",
    "application/x-7z-compressed",
    "application/x-rar-compressed",
    "application/vnd.rar",
    "application/pdf",
];

/// `[backend.compression]`: known codings, each once; media types written as
/// `type/subtype` (or `type/*`), none compressed already; levels in range.
fn check_compression(c: &CompressionConfig, problems: &mut Vec<String>) {
    const CODINGS: &str = "\"zstd\", \"br\" and \"gzip\"";
    for (i, name) in c.encodings.iter().enumerate() {
        if !["zstd", "br", "gzip"].contains(&name.as_str()) {
            problems.push(format!(
                "[backend.compression] encodings: \"{}\" is not a coding fe-php compresses with.\n    Use {CODINGS}, in the order you prefer them (e.g. encodings = [\"zstd\", \"br\", \"gzip\"]).",
                name.escape_debug()
            ));
        } else if c.encodings[..i].contains(name) {
            problems.push(format!(
                "[backend.compression] encodings names \"{name}\" twice.\n    Name each coding once, in the order you prefer them."
            ));
        }
    }
    if c.enable && c.encodings.is_empty() {
        problems.push("[backend.compression] encodings = [] offers no coding.\n    Name at least one of \"zstd\", \"br\" and \"gzip\", or set enable = false to compress nothing.".to_owned());
    }
    for t in &c.types {
        let lower = t.to_ascii_lowercase();
        let well_formed = lower
            .split_once('/')
            .is_some_and(|(ty, sub)| is_media_token(ty) && (sub == "*" || is_media_token(sub)));
        if !well_formed {
            problems.push(format!(
                "[backend.compression] types: \"{}\" is not a media type.\n    Write type/subtype without parameters, e.g. \"text/html\" (or \"text/*\" for every text type).",
                t.escape_debug()
            ));
        } else if COMPRESSED_TYPES.contains(&lower.as_str())
            || ["image/*", "audio/*", "video/*", "font/*"].contains(&lower.as_str())
            || lower.starts_with("audio/")
            || lower.starts_with("video/")
        {
            problems.push(format!(
                "[backend.compression] types: \"{t}\" is (or includes) a type whose bodies are compressed already: compressing them again costs CPU and saves nothing.\n    Remove it; name the text types among them instead (e.g. \"image/svg+xml\", \"font/ttf\")."
            ));
        }
    }
    let levels = [
        ("gzip_level", i64::from(c.gzip_level), 1, 9),
        ("brotli_level", i64::from(c.brotli_level), 0, 11),
        ("zstd_level", i64::from(c.zstd_level), 1, 19),
    ];
    for (key, value, min, max) in levels {
        if !(min..=max).contains(&value) {
            problems.push(format!(
                "[backend.compression] {key} = {value} is out of range: use {min} (fastest) to {max} (smallest).\n    Responses are compressed as they are sent: low levels keep the CPU cost small (the default is {}).",
                match key {
                    "gzip_level" => i64::from(DEFAULT_GZIP_LEVEL),
                    "brotli_level" => i64::from(DEFAULT_BROTLI_LEVEL),
                    _ => i64::from(DEFAULT_ZSTD_LEVEL),
                }
            ));
        }
    }
}

/// A media type's type or subtype: RFC 9110 token characters.
fn is_media_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        && s != "*"
}

/// A non-empty name of letters, digits and `-`, `_`, `.` (a safe cookie or header
/// name).
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}
