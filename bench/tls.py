#!/usr/bin/env python3
"""HTTPS side by side: fe-php-host with [server.tls] against nginx with the same
certificate (static files) and nginx + php-fpm (PHP), all started here, in one
session (autogroup), on loopback.

    bench/tls.py [--seconds 5] [--rounds 2]

Shapes: HTTPS keep-alive (wrk -c32), new TLS handshakes (wrk with
`Connection: close`), HTTP/2 with h2load (32 connections x 10 streams).
Prints req/s per server and the ratios.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (bench/run.py: servers, wrk)

CORES = run.CORES


def make_cert(tmp):
    cert, key = os.path.join(tmp, "bench.pem"), os.path.join(tmp, "bench.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    return cert, key


def start_fe_php_tls(tmp, cert, key):
    return run.start_fe_php(tmp, "fe-php-tls", extra=f'[server.tls]\ncert = "{cert}"\nkey = "{key}"\n')


def start_nginx_tls(tmp, cert, key, fpm_sock=None, name="nginx-tls"):
    """nginx (+ php-fpm at `fpm_sock`, kept-alive connections as in run.py) with
    the same certificate."""
    return run.start_nginx(tmp, fpm_sock, keepalive=CORES if fpm_sock else 2, name=name,
                           tls=(cert, key))


def https(s, path):
    return f"https://{s.addr}:{s.port}{path}"


def h2load(url, seconds):
    out = subprocess.run(["h2load", "-c32", "-m10", "-t1", f"-D{seconds}", url],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    ok = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed", out)
    if not m or not ok:
        raise RuntimeError(f"h2load gave no result: {out}")
    return {"rps": float(m.group(1)), "failed": int(ok.group(2))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="fephp-tls-bench.")
    os.chmod(tmp, 0o755)  # nginx's workers run as www-data
    cert, key = make_cert(tmp)
    servers = {}
    try:
        fpm = run.start_php_fpm(tmp, 4 * CORES)
        servers["fe-php"] = start_fe_php_tls(tmp, cert, key)
        servers["nginx+php-fpm"] = start_nginx_tls(tmp, cert, key, fpm.sock, "nginx+php-fpm-tls")
        servers["nginx+php-fpm"].procs.insert(0, fpm.procs[0])
        servers["nginx"] = start_nginx_tls(tmp, cert, key)
        cases = [
            ("https hello.php", "/hello.php", ["fe-php", "nginx+php-fpm"], "wrk"),
            ("https static 1k", "/1k.txt", ["fe-php", "nginx"], "wrk"),
            ("https static 100k", "/100k.bin", ["fe-php", "nginx"], "wrk"),
            ("handshakes (close)", "/1k.txt", ["fe-php", "nginx"], "close"),
            ("h2 static 1k", "/1k.txt", ["fe-php", "nginx"], "h2"),
            ("h2 hello.php", "/hello.php", ["fe-php", "nginx+php-fpm"], "h2"),
        ]
        results = {}
        for _ in range(args.rounds):
            for name, path, names, how in cases:
                for n in names:
                    s = servers[n]
                    if how == "h2":
                        r = h2load(https(s, path), args.seconds)
                        errors = r["failed"]
                    else:
                        r = run.wrk(https(s, path), args.seconds, 32, close=(how == "close"))
                        errors = r["non2xx"] + r["socket_errors"]
                    best = results.setdefault(name, {}).get(n)
                    if best is None or r["rps"] > best["rps"]:
                        results[name][n] = {"rps": r["rps"], "p99": r.get("p99_ms"), "errors": errors}
        print(f"\nfe-php TLS benchmark: {CORES} cores, best of {args.rounds} x {args.seconds}s; "
              f"wrk -t1 -c32 (keep-alive or Connection: close), h2load -c32 -m10\n")
        print(f"{'case':<20} {'server':<16} {'req/s':>10} {'p99 ms':>8} {'errors':>7}  ratio")
        for name, rows in results.items():
            names = list(rows)
            for n in names:
                r = rows[n]
                ratio = ""
                if n == "fe-php":
                    peer = names[1]
                    ratio = f"{r['rps'] / rows[peer]['rps']:.2f}x {peer}"
                p99 = f"{r['p99']:.2f}" if r["p99"] is not None else "-"
                print(f"{name:<20} {n:<16} {r['rps']:>10.0f} {p99:>8} {r['errors']:>7}  {ratio}")
    finally:
        for s in servers.values():
            s.stop()
        if "fpm" in dir():
            fpm.stop()


if __name__ == "__main__":
    main()
