#!/usr/bin/env python3
"""Side-by-side benchmark: fe-php-host against nginx, nginx + php-fpm and
Apache prefork + mod_php, in one run, on loopback.

Rounds are interleaved (A B C A B C ...) so that drift hits every server alike;
the table shows the median req/s, p50/p99 latency and the peak RSS of each
server's whole process tree, with ratios to the named peer.

    [FEPHP_HOST_BIN=path/to/fe-php-host] bench/run.py [--rounds 3] [--seconds 2] [--scenarios hello,json,...]
                 [--shapes ka32,ka256,close32,close256] [--servers fe-php,nginx,...]
                 [--json results.json]

Every server listens on a loopback address of its own, so connection churn in the
Connection: close shapes (TIME_WAIT, the client's port search) stays per server.

Scenarios with a load of their own run once, under their shape, whatever --shapes:
  mixed           waiting requests: h2load --h1 -c32 (each request's latency
                  logged), every 20th request /slow.php (usleep 50 ms, as a
                  database query would), the rest /fast.php; fe-php against nginx + php-fpm with Debian's pool
                  (pm dynamic, max_children 5). In the default set.
  wordpress       Debian's WordPress + MariaDB front page, 16 connections; optional
  wordpress-rest  (--scenarios wordpress,wordpress-rest), run as root: it runs
                  bench/wordpress/setup.sh (packages, database, site) first.
  symfony-page    A Symfony 5.4 app from Debian's packages (tests/apps/symfony):
  symfony-json    a Twig page and a JSON endpoint, 16 connections; fe-php in
                  worker mode and classic against nginx + php-fpm with Debian's
                  pool. Optional (--scenarios symfony-page,symfony-json).
  laravel-page    The same for a Laravel 8 app (tests/apps/laravel): a Blade page
  laravel-json    and a JSON endpoint. Optional.
  laravel-page-user  laravel-page for a returning visitor: every request sends the
                  session and CSRF cookies one first visit got, as a browser does
                  (laravel-page's cookie-less requests each start a session file,
                  and Laravel's session GC then scans a directory that grows with
                  the server's own throughput). Optional.
"""
import argparse, http.client, json, os, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
WWW = os.path.join(BENCH, "www")
# FEPHP_HOST_BIN runs another build (e.g. a checkout that has one) instead of ours.
HOST_BIN = os.environ.get("FEPHP_HOST_BIN") or os.path.join(ROOT, "target", "release", "fe-php-host")
CORES = os.cpu_count() or 1


_next_addr = [1]


def loopback_addr():
    """A loopback address of its own for each server (127.0.0.2, .3, ...): without
    keep-alive every request is a new connection, and TIME_WAIT sockets and the
    client's port search then stay per server instead of piling up on one address."""
    _next_addr[0] += 1
    return f"127.0.0.{_next_addr[0]}"


def free_port(addr="127.0.0.1"):
    s = socket.socket()
    s.bind((addr, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, timeout=15, addr="127.0.0.1"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection((addr, port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {addr}:{port}")


def tree_rss_kib(pid):
    """RSS of pid and all its descendants, in KiB."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
        except (OSError, IndexError, ValueError):
            pass
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


class Server:
    """A server under test: started once, stopped by its own pid."""

    def __init__(self, name, tmp):
        self.name, self.tmp, self.procs = name, tmp, []
        self.addr = loopback_addr()
        self.port = free_port(self.addr)

    def spawn(self, args, **kw):
        log = open(os.path.join(self.tmp, f"{self.name}-{len(self.procs)}.log"), "w")
        # A process group of its own (to stop it as a whole), but not a session: with
        # the kernel's autogroup scheduling every session is a scheduling group of
        # its own, which would give a server made of two (nginx + php-fpm) twice the
        # CPU share of one made of one, and each of them as much as wrk.
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, process_group=0, **kw)
        self.procs.append(p)
        return p

    def url(self, path):
        return f"http://{self.addr}:{self.port}{path}"

    def wait(self):
        wait_port(self.port, addr=self.addr)

    def rss(self):
        return sum(tree_rss_kib(p.pid) for p in self.procs)

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def start_fe_php(tmp, name="fe-php", backend="embedded", fpm=None, fpm_connections=None, root=WWW,
                 front_controller=None, extra=""):
    s = Server(name, tmp)
    php = f'fpm_socket = "{fpm}"\n' if fpm else ""
    if fpm_connections:  # sized to the pool: kept-alive connections are safe
        php += f"fpm_max_connections = {fpm_connections}\nfpm_keep_alive = true\n"
    if front_controller:
        php += f'front_controller = "{front_controller}"\n'
    conf = write(os.path.join(tmp, f"{name}.toml"), f"""
[server]
listen = "{s.addr}:{s.port}"
workers = {CORES}
access_log = "off"
[backend]
default_backend = "{backend}"
[backend.static_files]
enable = true
root = "{root}"
[php]
{php}
{extra}
""")
    s.spawn([HOST_BIN, "--config", conf], env={**os.environ, "RUST_LOG": "warn"})
    s.wait()
    return s


# The process manager of Debian's /etc/php/8.2/fpm/pool.d/www.conf, as installed.
DEBIAN_POOL = {"pm": "dynamic", "pm.max_children": 5, "pm.start_servers": 2,
               "pm.min_spare_servers": 1, "pm.max_spare_servers": 3}


def start_php_fpm(tmp, children, name="php-fpm", tcp=False, pool=None):
    """A static pool of `children` on a Unix socket (Debian's default), or on TCP;
    `pool` (e.g. DEBIAN_POOL) replaces the pm.* settings. `s.sock` is the address
    for fe-php's fpm_socket."""
    s = Server(name, tmp)
    sock = f"{s.addr}:{s.port}" if tcp else os.path.join(tmp, f"{name}.sock")
    pm = "\n".join(f"{k} = {v}" for k, v in (pool or {"pm": "static", "pm.max_children": children}).items())
    conf = write(os.path.join(tmp, f"{name}.conf"), f"""
[global]
error_log = {tmp}/{name}-error.log
daemonize = no
pid = {tmp}/{name}.pid
[www]
listen = {sock}
listen.mode = 0666
{pm}
""")
    s.spawn(["/usr/sbin/php-fpm8.2", "-F", "-R", "-y", conf])
    if tcp:
        s.wait()
    else:
        deadline = time.time() + 10
        while not os.path.exists(sock) and time.time() < deadline:
            time.sleep(0.05)
    s.sock = sock
    return s


def start_nginx(tmp, fpm_sock=None, keepalive=2, name=None, root=WWW, fallback="=404", server_name=None, tls=None,
                gzip_level=None):
    """nginx, or nginx + php-fpm at `fpm_sock` (a Unix socket path or host:port);
    keepalive=0 is nginx's default: a new php-fpm connection per request.
    `fallback` ends `try_files $uri $uri/` (a front controller: "/index.php?$args");
    `server_name` is PHP's SERVER_NAME (nginx's fastcgi.conf passes $server_name).
    `tls` = (certificate, key): HTTPS and HTTP/2 as a site usually sets them up
    (Debian 12's nginx 1.22: `listen … ssl http2`, a shared session cache).
    `gzip_level`: `gzip on` at that level for HTML, CSS, JS, JSON and text."""
    s = Server(name or ("nginx" if not fpm_sock else "nginx+php-fpm"), tmp)
    d = tempfile.mkdtemp(dir=tmp)
    php = ""
    if fpm_sock:
        php = f"""
        location ~ [^/]\\.php(/|$) {{
            fastcgi_split_path_info ^(.+?\\.php)(/.*)$;
            try_files $fastcgi_script_name =404;
            set $path_info $fastcgi_path_info;
            fastcgi_param PATH_INFO $path_info;
            fastcgi_index index.php;
            include /etc/nginx/fastcgi.conf;
            fastcgi_pass php;
            {"fastcgi_keep_conn on;" if keepalive else ""}
        }}"""
    target = fpm_sock if ":" in (fpm_sock or "") else f"unix:{fpm_sock}"
    ssl, listen = "", ""
    gzip = ""
    if gzip_level:
        gzip = (f"gzip on; gzip_comp_level {gzip_level}; gzip_min_length 1024; gzip_vary on; "
                "gzip_types text/css text/plain text/javascript application/javascript application/json;")
    if tls:
        listen = " ssl http2"
        ssl = f"""ssl_certificate {tls[0]};
        ssl_certificate_key {tls[1]};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:10m;
        ssl_session_timeout 1d;"""
    pooled = f"keepalive {keepalive};" if keepalive else ""
    upstream = f"upstream php {{ server {target}; {pooled} }}" if fpm_sock else ""
    conf = write(os.path.join(d, "nginx.conf"), f"""
worker_processes {CORES};
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 4096; }}
http {{
    include /etc/nginx/mime.types;
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    {gzip}
    client_body_temp_path {d}/body;
    fastcgi_temp_path {d}/fastcgi;
    proxy_temp_path {d}/proxy;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    {upstream}
    server {{
        listen {s.addr}:{s.port}{listen} reuseport;
        {ssl}
        root {root};
        {"index index.php;" if fallback != "=404" else ""}
        {f"server_name {server_name};" if server_name else ""}
        location / {{ try_files $uri $uri/ {fallback}; }}
        {php}
    }}
}}
""")
    s.spawn(["/usr/sbin/nginx", "-p", d, "-c", conf, "-e", f"{d}/error.log"])
    s.wait()
    return s


MODULE = os.path.join(ROOT, "target", "nginx-module", "ngx_http_fephp_module.so")


def start_nginx_fephp(tmp):
    """nginx with fe-php's module: PHP embedded in the nginx workers."""
    s = Server("nginx+fephp", tmp)
    d = tempfile.mkdtemp(dir=tmp)
    toml = write(os.path.join(d, "fe-php.toml"), f"""
[backend]
default_backend = "embedded"
[backend.static_files]
enable = true
root = "{WWW}"
""")
    conf = write(os.path.join(d, "nginx.conf"), f"""
load_module {MODULE};
worker_processes {CORES};
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 4096; }}
http {{
    include /etc/nginx/mime.types;
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    client_body_temp_path {d}/body;
    fastcgi_temp_path {d}/fastcgi;
    proxy_temp_path {d}/proxy;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    fephp_config {toml};
    server {{
        listen {s.addr}:{s.port} reuseport;
        location / {{ fephp; }}
    }}
}}
""")
    # The module records libfe_php's soname; use the release build of the library.
    release = os.path.join(ROOT, "target", "release")
    major = re.search(r'^version = "(\d+)\.', open(os.path.join(ROOT, "Cargo.toml")).read(), re.M).group(1)
    so = os.path.join(release, f"libfe_php.so.{major}")
    if not os.path.lexists(so):  # (a dangling link counts: the library is built later)
        os.symlink("libfe_php.so", so)
    s.spawn(["/usr/sbin/nginx", "-p", d, "-c", conf, "-e", f"{d}/error.log"],
            env={**os.environ, "LD_LIBRARY_PATH": release})
    s.wait()
    return s


def start_apache(tmp):
    s = Server("apache+mod_php", tmp)
    d = tempfile.mkdtemp(dir=tmp)
    conf = write(os.path.join(d, "apache2.conf"), f"""
ServerRoot /etc/apache2
ServerName localhost
PidFile {d}/apache2.pid
Mutex file:{d} default
Listen {s.addr}:{s.port}
LoadModule mpm_prefork_module /usr/lib/apache2/modules/mod_mpm_prefork.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
LoadModule dir_module /usr/lib/apache2/modules/mod_dir.so
LoadModule mime_module /usr/lib/apache2/modules/mod_mime.so
LoadModule php_module /usr/lib/apache2/modules/libphp8.2.so
TypesConfig /etc/mime.types
ErrorLog {d}/error.log
LogLevel warn
KeepAlive On
StartServers 8
MinSpareServers 8
MaxSpareServers 40
MaxRequestWorkers 150
DocumentRoot {WWW}
<Directory {WWW}>
    Require all granted
</Directory>
<FilesMatch "\\.php$">
    SetHandler application/x-httpd-php
</FilesMatch>
""")
    env = {**os.environ, "APACHE_RUN_USER": "www-data", "APACHE_RUN_GROUP": "www-data", "APACHE_LOG_DIR": d, "APACHE_RUN_DIR": d, "APACHE_LOCK_DIR": d}
    s.spawn(["/usr/sbin/apache2", "-f", conf, "-DFOREGROUND"], env=env)
    s.wait()
    return s


def wrk(url, seconds, connections, close=False, script=None, headers=()):
    """One bounded wrk run (a timeout stops a hung one); `script` is a wrk Lua
    script that picks the requests, `headers` extra "Name: value" headers."""
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    for h in list(headers) + (["Connection: close"] if close else []):
        args[1:1] = ["-H", h]
    if script:
        args[1:1] = ["-s", script]
    run = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 30)
    out = run.stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError(f"wrk gave no result ({' '.join(args)}): {run.stderr.strip() or out.strip()}")
    rps = float(m.group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockerr = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)

    def pct(p):
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)\b", out)
        if not m:
            return None
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    return {"rps": rps, "p50_ms": pct(50), "p99_ms": pct(99), "non2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": sum(map(int, sockerr.groups())) if sockerr else 0}


def h2load_mix(url, seconds, connections, paths):
    """One h2load run over HTTP/1.1 (keep-alive), each connection asking for
    `paths` in turn, with every request's latency logged: wrk's latency figures
    disagree with its own throughput when a Lua script picks the requests (a 13 ms
    mean for 32 connections at 11.5k req/s, where Little's law allows 2.8 ms), so
    the mixed shape is measured with this client instead."""
    base = url.rstrip("/")
    with tempfile.NamedTemporaryFile("r", suffix=".log") as log:
        args = ["h2load", "--h1", "-t1", f"-c{connections}", f"-D{seconds}", f"--log-file={log.name}"]
        args += [base + p for p in paths]
        run = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60)
        rows = [line.split("\t") for line in log.read().splitlines() if line.strip()]
    if not rows:
        raise RuntimeError(f"h2load gave no result ({' '.join(args[:6])} …): {run.stderr.strip() or run.stdout.strip()}")
    took = sorted(int(r[2]) / 1000 for r in rows)
    bad = sum(1 for r in rows if not r[1].startswith(("2", "3")))
    failed = re.search(r"(\d+) failed, (\d+) errored, (\d+) timeout", run.stdout)
    return {"rps": len(rows) / seconds, "p50_ms": took[len(took) // 2], "p99_ms": took[int(len(took) * 0.99)],
            "non2xx": bad, "socket_errors": sum(map(int, failed.groups())) - bad if failed else 0}


# fe-php-inproc: PHP on a thread of each worker instead of the runner pool
# ([php.pool] enabled = false), to show what the pool's hand-off costs.
PHP_SERVERS = ["fe-php", "fe-php-inproc", "fe-php-fastcgi", "nginx+fephp", "nginx+php-fpm", "apache+mod_php"]
# php-fpm over TCP: nginx as it ships (a connection per request) and with kept-alive
# connections (fastcgi_keep_conn, which meets php-fpm's Nagle: the 40 ms stall).
TCP_SERVERS = ["fe-php-fastcgi-tcp", "nginx+php-fpm-tcp", "nginx+php-fpm-tcp-ka"]
STATIC_SERVERS = ["fe-php", "nginx+fephp", "nginx"]
WP_SERVERS = ["fe-php-wp", "nginx+php-fpm-wp"]
SF_SERVERS = ["fe-php-sf-worker", "fe-php-sf", "nginx+php-fpm-sf"]
LV_SERVERS = ["fe-php-lv-worker", "fe-php-lv", "nginx+php-fpm-lv"]
APPS = os.path.join(ROOT, "tests", "apps")
WP_ROOT = "/usr/share/wordpress"
# The Host of every WordPress request: Debian's wp-config.php loads
# /etc/wordpress/config-<host>.php by it, so both servers serve one site, and
# their pages are byte for byte the same.
WP_HOST = "127.0.0.1"
SCENARIOS = {
    # name: (path, servers); fe-php variants are compared with the peers after them.
    "hello": ("/hello.php", PHP_SERVERS),
    "json": ("/json.php", PHP_SERVERS),
    "page": ("/page.php", PHP_SERVERS),
    "page-tcp": ("/page.php", TCP_SERVERS),
    "static-1k": ("/1k.txt", STATIC_SERVERS),
    "static-100k": ("/100k.bin", STATIC_SERVERS),
    "static-10m": ("/10m.bin", STATIC_SERVERS),
    # Waiting requests: 19 in 20 instant, 1 in 20 waits 50 ms (FIXED's mix),
    # against php-fpm as Debian ships it (DEBIAN_POOL, nginx without kept-alive
    # FastCGI connections).
    "mixed": ("/fast.php", ["fe-php", "fe-php-inproc", "nginx+php-fpm-deb"]),
    # Debian's WordPress and MariaDB (bench/wordpress/setup.sh), the front page and
    # the REST API's post list; php-fpm as Debian ships it.
    "wordpress": ("/", WP_SERVERS),
    "wordpress-rest": ("/?rest_route=/wp/v2/posts", WP_SERVERS),
    # A Symfony app from Debian's packages: worker mode, classic, and php-fpm as
    # Debian ships it.
    "symfony-page": ("/page/bench?q=fe-php", SF_SERVERS),
    "symfony-json": ("/api/items?n=20", SF_SERVERS),
    "laravel-page": ("/page/bench?q=fe-php", LV_SERVERS),
    "laravel-json": ("/api/items?n=20", LV_SERVERS),
    "laravel-page-user": ("/page/bench?q=fe-php", LV_SERVERS),
}
# Scenarios with a load of their own: measured once, under their shape (added to
# --shapes when it is not there), with a wrk script and extra headers.
FIXED = {
    "mixed": {"shape": "ka32", "mix": ["/fast.php"] * 19 + ["/slow.php"],
              "note": "mixed: every 20th request /slow.php (usleep 50 ms), the others /fast.php; "
                      "nginx+php-fpm-deb = Debian's pool (pm dynamic, max_children 5, start 2, spare 1-3)"},
    "wordpress": {"shape": "ka16", "headers": [f"Host: {WP_HOST}"],
                  "note": f"wordpress: Debian's wordpress 6 + MariaDB, front page, Host: {WP_HOST}; "
                          "nginx+php-fpm-wp = Debian's pool; fe-php-wp embedded, front_controller index.php"},
    "wordpress-rest": {"shape": "ka16", "headers": [f"Host: {WP_HOST}"],
                       "note": "wordpress-rest: /?rest_route=/wp/v2/posts (JSON), same servers"},
    "symfony-page": {"shape": "ka16",
                     "note": "symfony-page: Symfony 5.4 (Debian) prod, Twig page; fe-php-sf-worker = [php.pool] "
                             "worker = \"worker.php\", fe-php-sf = classic index.php, nginx+php-fpm-sf = Debian's pool"},
    "symfony-json": {"shape": "ka16", "note": "symfony-json: /api/items?n=20 (JsonResponse), same servers"},
    "laravel-page": {"shape": "ka16",
                     "note": "laravel-page: Laravel 8 (Debian) production, Blade page (web middleware: session, "
                             "CSRF cookie); -lv servers as -sf"},
    "laravel-json": {"shape": "ka16", "note": "laravel-json: /api/items?n=20 (api group), same servers"},
    "laravel-page-user": {"shape": "ka16", "visitor": True,
                          "note": "laravel-page-user: laravel-page with the cookies of one first visit on every "
                                  "request (one session, as a returning browser)"},
}
# Who each fe-php variant is measured against.
PEERS = {"hello": ["nginx+php-fpm", "apache+mod_php"], "json": ["nginx+php-fpm", "apache+mod_php"],
         "page": ["nginx+php-fpm", "apache+mod_php"],
         "page-tcp": ["nginx+php-fpm-tcp", "nginx+php-fpm-tcp-ka"], "static-1k": ["nginx"], "static-100k": ["nginx"],
         "static-10m": ["nginx"], "mixed": ["nginx+php-fpm-deb"], "wordpress": ["nginx+php-fpm-wp"],
         "wordpress-rest": ["nginx+php-fpm-wp"], "symfony-page": ["nginx+php-fpm-sf"],
         "symfony-json": ["nginx+php-fpm-sf"], "laravel-page": ["nginx+php-fpm-lv"],
         "laravel-json": ["nginx+php-fpm-lv"], "laravel-page-user": ["nginx+php-fpm-lv"]}


SHAPES = {
    # name: (connections, Connection: close)
    "ka32": (32, False), "ka256": (256, False), "close32": (32, True), "close256": (256, True),
    "ka16": (16, False),
}
DEFAULT_SHAPES = ["ka32", "ka256", "close32", "close256"]
# Not run unless named in --scenarios.
OPTIONAL = {"wordpress", "wordpress-rest", "symfony-page", "symfony-json", "laravel-page", "laravel-json",
            "laravel-page-user"}


def plan(scenarios, shapes):
    """[(shape, [scenario, ...])]: every scenario under every shape, except those in
    FIXED, which run once under their own shape."""
    out = [(shape, [sc for sc in scenarios if sc not in FIXED]) for shape in shapes]
    for sc in scenarios:
        if sc in FIXED:
            shape = FIXED[sc]["shape"]
            if shape not in shapes:
                shapes = shapes + [shape]
                out.append((shape, []))
            out[shapes.index(shape)][1].append(sc)
    return [(shape, scs) for shape, scs in out if scs]


def check(server, path, headers=()):
    """One GET before measuring, which must answer 200: a benchmark of redirects or
    error pages (wrk counts a 3xx as a success) says nothing. Returns the body's size."""
    conn = http.client.HTTPConnection(server.addr, server.port, timeout=30)
    try:
        conn.request("GET", path, headers=dict(h.split(": ", 1) for h in headers))
        r = conn.getresponse()
        body = r.read()
    finally:
        conn.close()
    if r.status != 200:
        raise RuntimeError(f"{server.name}: GET {path} answered {r.status} {r.reason}"
                           f"{' to ' + r.getheader('Location') if r.getheader('Location') else ''}: {body[:300]!r}")
    return len(body)


def visitor_cookies(server, path):
    """The "Cookie: ..." header a browser sends back after a first GET of `path`
    (every servers of an app share its key and session store)."""
    conn = http.client.HTTPConnection(server.addr, server.port, timeout=30)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        r.read()
        pairs = [c.split(";", 1)[0].strip() for c in r.headers.get_all("Set-Cookie") or []]
    finally:
        conn.close()
    if not pairs:
        raise RuntimeError(f"{server.name}: GET {path} set no cookie")
    return "Cookie: " + "; ".join(pairs)


def measure(servers, names, path, rounds, seconds, connections, close, script=None, headers=(), mix=None):
    """Interleaved rounds of wrk (or, with `mix`, h2load over those paths) against
    each server; median figures and peak RSS."""
    size = {n: check(servers[n], path, headers) for n in names}

    def load(n, secs):
        if mix:
            return h2load_mix(servers[n].url("/"), secs, connections, mix)
        return wrk(servers[n].url(path), secs, connections, close, script, headers)

    for n in names:  # warm-up (OPcache, page cache, pools)
        load(n, 1)
    runs = {n: [] for n in names}
    peak = {n: 0 for n in names}
    for _ in range(rounds):
        for n in names:
            sampler_stop = threading.Event()

            def sample(n=n):
                while not sampler_stop.is_set():
                    peak[n] = max(peak[n], servers[n].rss())
                    sampler_stop.wait(0.5)

            t = threading.Thread(target=sample)
            t.start()
            runs[n].append(load(n, seconds))
            sampler_stop.set()
            t.join()
    out = {}
    for n in names:
        rs = runs[n]
        out[n] = {
            "rps": statistics.median(r["rps"] for r in rs),
            "p50_ms": statistics.median(r["p50_ms"] for r in rs),
            "p99_ms": statistics.median(r["p99_ms"] for r in rs),
            "errors": sum(r["non2xx"] + r["socket_errors"] for r in rs),
            "peak_rss_mib": round(peak[n] / 1024, 1),
            "rounds": [r["rps"] for r in rs],
            "bytes": size[n],
        }
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=2)
    ap.add_argument("--scenarios", default=",".join(s for s in SCENARIOS if s not in OPTIONAL),
                    help=f"comma-separated, from {', '.join(SCENARIOS)} (default: all but {', '.join(sorted(OPTIONAL)) or '-'}); "
                         + ", ".join(f"{sc} always runs as {f['shape']}" for sc, f in FIXED.items()))
    ap.add_argument("--shapes", default=",".join(DEFAULT_SHAPES),
                    help="load shapes: ka32, ka256 (keep-alive, 32/256 connections), close32, close256 "
                         f"(default: {','.join(DEFAULT_SHAPES)}); also ka16")
    ap.add_argument("--servers", help="only these servers (comma-separated names)")
    ap.add_argument("--fpm-children", type=int, default=4 * CORES)
    ap.add_argument("--json", help="also write the results as JSON to this file")
    args = ap.parse_args()
    for tool in ["wrk", "/usr/sbin/nginx", "/usr/sbin/php-fpm8.2"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: run `make deps` (or apt-get install wrk nginx php8.2-fpm)")
    if not os.path.exists(HOST_BIN):
        sys.exit(f"{HOST_BIN} is missing: run `make build` (or point FEPHP_HOST_BIN at a build)")
    scenarios = [s for s in args.scenarios.split(",") if s]
    shapes = [s for s in args.shapes.split(",") if s]
    for name, known in [(n, SCENARIOS) for n in scenarios] + [(n, SHAPES) for n in shapes]:
        if name not in known:
            sys.exit(f"unknown scenario or shape {name!r}: choose from {', '.join(known)}")
    only = set(args.servers.split(",")) if args.servers else None
    if "static-10m" in scenarios and not os.path.exists(os.path.join(WWW, "10m.bin")):
        with open(os.path.join(WWW, "10m.bin"), "wb") as f:
            f.write(os.urandom(10 << 20))

    # Start only the servers the chosen scenarios measure.
    wanted = {n for sc in scenarios for n in SCENARIOS[sc][1] if only is None or n in only}

    tmp = tempfile.mkdtemp(prefix="fephp-bench-")
    os.chmod(tmp, 0o755)  # nginx and Apache workers run as www-data
    servers = {}
    pools = []  # php-fpm pools, stopped after the servers in front of them
    started = time.time()
    try:
        if "fe-php" in wanted:
            servers["fe-php"] = start_fe_php(tmp)
        if "fe-php-inproc" in wanted:
            servers["fe-php-inproc"] = start_fe_php(tmp, name="fe-php-inproc", extra="[php.pool]\nenabled = false\n")
        if "nginx+php-fpm-deb" in wanted:
            # php-fpm and nginx as Debian ships them: the pool's pm settings from
            # www.conf, and fastcgi_pass without an upstream keepalive (a FastCGI
            # connection per request, as in snippets/fastcgi-php.conf).
            fpm_deb = start_php_fpm(tmp, 0, "php-fpm-deb", pool=DEBIAN_POOL)
            pools.append(fpm_deb)
            servers["nginx+php-fpm-deb"] = start_nginx(tmp, fpm_deb.sock, keepalive=0, name="nginx+php-fpm-deb")
            servers["nginx+php-fpm-deb"].procs.insert(0, fpm_deb.procs[0])
        if wanted & set(WP_SERVERS):
            start_wordpress(tmp, wanted, servers, pools)
        if wanted & set(SF_SERVERS):
            start_framework(tmp, "symfony", "sf", wanted, servers, pools)
        if wanted & set(LV_SERVERS):
            start_framework(tmp, "laravel", "lv", wanted, servers, pools)
        if wanted - {"fe-php", "fe-php-inproc", "nginx+php-fpm-deb", *WP_SERVERS, *SF_SERVERS, *LV_SERVERS}:
            start_classic(tmp, args, scenarios, servers, pools)
        results = {}
        for shape, scs in plan(scenarios, shapes):
            connections, close = SHAPES[shape]
            results[shape] = {}
            for sc in scs:
                path, names = SCENARIOS[sc]
                names = [n for n in names if n in servers and (only is None or n in only)]
                fixed = FIXED.get(sc, {})
                headers = list(fixed.get("headers", ()))
                if fixed.get("visitor") and names:
                    headers.append(visitor_cookies(servers[names[-1]], path))
                results[shape][sc] = measure(servers, names, path, args.rounds, args.seconds, connections, close,
                                             fixed.get("script"), headers, fixed.get("mix"))
            report(shape, results[shape], args)
        print(f"({time.time() - started:.0f} s)")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"machine": machine(), "args": vars(args), "results": results}, f, indent=2)
    finally:
        for s in servers.values():
            s.stop()
        for p in pools:
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def start_wordpress(tmp, wanted, servers, pools):
    """Debian's WordPress (bench/wordpress/setup.sh: packages, MariaDB, the site)
    under fe-php and under nginx + php-fpm as Debian ships them."""
    setup = os.path.join(BENCH, "wordpress", "setup.sh")
    conf = f"/etc/wordpress/config-{WP_HOST}.php"
    if os.geteuid() == 0:
        subprocess.run([setup, WP_HOST], check=True)
    elif not os.path.exists(conf):
        sys.exit(f"{conf} is missing: run `sudo {setup}` first")
    if "fe-php-wp" in wanted:
        servers["fe-php-wp"] = start_fe_php(tmp, "fe-php-wp", root=WP_ROOT, front_controller="index.php")
    if "nginx+php-fpm-wp" in wanted:
        fpm = start_php_fpm(tmp, 0, "php-fpm-wp", pool=DEBIAN_POOL)
        pools.append(fpm)
        servers["nginx+php-fpm-wp"] = start_nginx(tmp, fpm.sock, keepalive=0, name="nginx+php-fpm-wp", root=WP_ROOT,
                                                 fallback="/index.php?$args", server_name=WP_HOST)
        servers["nginx+php-fpm-wp"].procs.insert(0, fpm.procs[0])


def start_framework(tmp, app_name, tag, wanted, servers, pools):
    """The app tests/apps/APP (Debian's Symfony 5.4 or Laravel 8 packages), under
    fe-php (worker mode: fe-php-TAG-worker; classic: fe-php-TAG) and under nginx +
    php-fpm as Debian ships them (nginx+php-fpm-TAG)."""
    app = os.path.join(tmp, app_name)
    shutil.copytree(os.path.join(APPS, app_name), app)
    if app_name == "symfony":  # its prod container, built once
        subprocess.run(["php", "-r", f"require '{app}/bootstrap.php'; (new App\\Kernel('prod', false))->boot();"],
                       check=True)
    subprocess.run(["chmod", "-R", "a+rwX", app], check=True)  # php-fpm's children run as www-data
    public = os.path.join(app, "public")
    if f"fe-php-{tag}-worker" in wanted:
        servers[f"fe-php-{tag}-worker"] = start_fe_php(tmp, f"fe-php-{tag}-worker", root=public,
                                                       front_controller="index.php",
                                                       extra='[php.pool]\nworker = "worker.php"\n')
    if f"fe-php-{tag}" in wanted:
        servers[f"fe-php-{tag}"] = start_fe_php(tmp, f"fe-php-{tag}", root=public, front_controller="index.php")
    if f"nginx+php-fpm-{tag}" in wanted:
        fpm = start_php_fpm(tmp, 0, f"php-fpm-{tag}", pool=DEBIAN_POOL)
        pools.append(fpm)
        name = f"nginx+php-fpm-{tag}"
        servers[name] = start_nginx(tmp, fpm.sock, keepalive=0, name=name, root=public, fallback="/index.php?$args")
        servers[name].procs.insert(0, fpm.procs[0])


def start_classic(tmp, args, scenarios, servers, pools):
    """The servers of the hello ... static-10m scenarios."""
    fpm = start_php_fpm(tmp, args.fpm_children)
    pools.append(fpm)
    # fe-php's FastCGI backend gets an identical pool of its own: kept-alive
    # connections hold php-fpm children, so two clients must not share one.
    # Keep workers x fpm_max_connections within the pool's children.
    fpm2 = start_php_fpm(tmp, args.fpm_children, "php-fpm-2")
    pools.append(fpm2)
    servers["fe-php-fastcgi"] = start_fe_php(tmp, "fe-php-fastcgi", "fastcgi", fpm2.sock,
                                             max(1, args.fpm_children // CORES))
    servers["fe-php-fastcgi"].procs.insert(0, fpm2.procs[0])
    if os.path.exists(MODULE):
        servers["nginx+fephp"] = start_nginx_fephp(tmp)
    else:
        print(f"note: {MODULE} is missing (make nginx-module): nginx + fe-php module left out", file=sys.stderr)
    servers["nginx+php-fpm"] = start_nginx(tmp, fpm.sock, keepalive=CORES)
    servers["nginx+php-fpm"].procs.insert(0, fpm.procs[0])
    servers["nginx"] = start_nginx(tmp)
    if "page-tcp" in scenarios:
        fpm_tcp = start_php_fpm(tmp, args.fpm_children, "php-fpm-tcp", tcp=True)
        fpm_tcp2 = start_php_fpm(tmp, args.fpm_children, "php-fpm-tcp-2", tcp=True)
        pools += [fpm_tcp, fpm_tcp2]
        servers["fe-php-fastcgi-tcp"] = start_fe_php(tmp, "fe-php-fastcgi-tcp", "fastcgi", fpm_tcp.sock,
                                                     max(1, args.fpm_children // CORES))
        servers["fe-php-fastcgi-tcp"].procs.insert(0, fpm_tcp.procs[0])
        # The two nginx variants take turns on one pool.
        servers["nginx+php-fpm-tcp"] = start_nginx(tmp, fpm_tcp2.sock, keepalive=0, name="nginx+php-fpm-tcp")
        servers["nginx+php-fpm-tcp"].procs.insert(0, fpm_tcp2.procs[0])
        servers["nginx+php-fpm-tcp-ka"] = start_nginx(tmp, fpm_tcp2.sock, keepalive=CORES,
                                                      name="nginx+php-fpm-tcp-ka")
    if os.path.exists("/usr/lib/apache2/modules/libphp8.2.so"):
        servers["apache+mod_php"] = start_apache(tmp)


def machine():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    return {"cores": CORES, "cpu": model, "kernel": os.uname().release}


def report(shape, results, args):
    m = machine()
    connections, close = SHAPES[shape]
    print(f"\nfe-php benchmark: {m['cores']} cores ({m['cpu']}), wrk -t1 -c{connections}, "
          f"{'Connection: close' if close else 'keep-alive'}, {args.rounds}x{args.seconds}s interleaved rounds\n")
    print(f"{'scenario':<14} {'server':<20} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'RSS MiB':>8} {'errors':>7}  ratios (req/s)")
    for sc, rows in results.items():
        peers = [p for p in PEERS.get(sc, []) if p in rows and rows[p]["rps"]]
        for n, r in rows.items():
            ratio = ""
            if n.startswith("fe-php") or n == "nginx+fephp":
                ratio = "  ".join(f"{r['rps'] / rows[p]['rps']:.2f}x {p}" for p in peers)
            print(f"{sc:<14} {n:<20} {r['rps']:>10.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['peak_rss_mib']:>8} {r['errors']:>7}  {ratio}")
        print()
    for sc, rows in results.items():
        sizes = {n: r["bytes"] for n, r in rows.items()}
        if len(set(sizes.values())) > 1:
            print(f"  {sc}: the servers' responses differ in size: " + ", ".join(f"{n} {b} B" for n, b in sizes.items()))
    for sc in results:
        if FIXED.get(sc, {}).get("note"):
            print(f"  {FIXED[sc]['note']}")


if __name__ == "__main__":
    main()
