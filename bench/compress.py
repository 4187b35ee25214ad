#!/usr/bin/env python3
"""On-the-fly compression side by side: a 100 KiB HTML page from fe-php-host
(`[backend.compression]`: its defaults, level 3, and gzip at level 1) and from
nginx with `gzip on` at level 1, in one session, on loopback; wrk -c32 asking
for gzip (and br, which Debian's nginx does not have). Prints req/s and the
bytes of one response on the wire.

    bench/compress.py [--seconds 5] [--rounds 2]
"""
import argparse
import os
import random
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (bench/run.py: servers, wrk)

WORDS = ("account order invoice customer product price total shipping address city country "
         "status pending delivered returned quantity discount tax subtotal payment card bank "
         "transfer date name email phone note review rating stock category brand size color "
         "weight warehouse supplier reference description summary detail update created").split()


def page(size):
    """A deterministic HTML page of about `size` bytes: a table of orders, as a
    shop's back office would render it."""
    rng = random.Random(1)
    head = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Orders</title>"
            "<link rel=\"stylesheet\" href=\"/css/app.css\"></head><body><main class=\"container\">"
            "<h1>Orders</h1><table class=\"table table-striped\"><thead><tr><th>#</th><th>Customer</th>"
            "<th>Items</th><th>Total</th><th>Status</th></tr></thead><tbody>\n")
    rows, n = [], 0
    while len(head) + sum(map(len, rows)) < size:
        n += 1
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))
        rows.append(f"<tr class=\"row-{n % 2}\" data-id=\"{100000 + n}\"><td><a href=\"/orders/{100000 + n}\">"
                    f"{100000 + n}</a></td><td>{rng.choice(WORDS).title()} {rng.choice(WORDS).title()}</td>"
                    f"<td>{words}</td><td>{rng.randint(1, 99999) / 100:.2f} EUR</td>"
                    f"<td><span class=\"badge badge-{rng.choice(WORDS)}\">{rng.choice(WORDS)}</span></td></tr>\n")
    return head + "".join(rows) + "</tbody></table></main></body></html>\n"


def wire_bytes(url, coding):
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-H", f"Accept-Encoding: {coding}",
                          "-w", "%{size_download}", url], capture_output=True, text=True, check=True)
    return int(out.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="fephp-compress-bench.")
    os.chmod(tmp, 0o755)  # nginx's workers run as www-data
    www = os.path.join(tmp, "www")
    os.mkdir(www)
    os.chmod(www, 0o755)
    html = page(100 * 1024)
    run.write(os.path.join(www, "page.html"), html)
    servers = {}
    try:
        servers["fe-php"] = run.start_fe_php(tmp, "fe-php", root=www)
        servers["fe-php-gzip1"] = run.start_fe_php(tmp, "fe-php-gzip1", root=www,
                                                   extra="[backend.compression]\ngzip_level = 1\n")
        servers["nginx-gzip1"] = run.start_nginx(tmp, root=www, gzip_level=1, name="nginx-gzip1")
        cases = [("gzip", ["fe-php", "fe-php-gzip1", "nginx-gzip1"]),
                 ("br", ["fe-php", "nginx-gzip1"]),
                 ("identity", ["fe-php", "nginx-gzip1"])]
        results = {}
        for _ in range(args.rounds):
            for coding, names in cases:
                for n in names:
                    s = servers[n]
                    r = run.wrk(s.url("/page.html"), args.seconds, 32, headers=[f"Accept-Encoding: {coding}"])
                    best = results.setdefault(coding, {}).get(n)
                    if best is None or r["rps"] > best["rps"]:
                        results[coding][n] = {"rps": r["rps"], "p99": r["p99_ms"],
                                              "errors": r["non2xx"] + r["socket_errors"],
                                              "bytes": wire_bytes(s.url("/page.html"), coding)}
        print(f"\nfe-php compression benchmark: {run.CORES} cores, {len(html)} B HTML page, best of "
              f"{args.rounds} x {args.seconds}s, wrk -t1 -c32\n")
        print(f"{'Accept-Encoding':<16} {'server':<14} {'req/s':>9} {'p99 ms':>8} {'bytes':>8} {'errors':>7}  ratio")
        for coding, rows in results.items():
            peer = rows.get("nginx-gzip1")
            for n, r in rows.items():
                ratio = f"{r['rps'] / peer['rps']:.2f}x nginx-gzip1" if peer and n != "nginx-gzip1" else ""
                print(f"{coding:<16} {n:<14} {r['rps']:>9.0f} {r['p99']:>8.2f} {r['bytes']:>8} {r['errors']:>7}  {ratio}")
    finally:
        for s in servers.values():
            s.stop()


if __name__ == "__main__":
    main()
