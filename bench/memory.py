#!/usr/bin/env python3
"""Memory over a long run: a framework app (tests/apps/APP) in fe-php's worker
mode and under nginx + php-fpm (Debian's pool), at the same concurrency. Each
server is warmed with --warm requests, its process tree's memory read (RSS, and
PSS, which counts shared pages such as OPcache's once), then --requests more are
sent and the memory read again.

    bench/memory.py [--app symfony|laravel] [--path /api/items?n=20]
                    [--warm 10000] [--requests 100000] [--connections 16]

Uses bench/run.py's servers and wrk; run it as root (php-fpm's pool), on an
otherwise idle machine.
"""
import argparse, os, shutil, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402


def tree(pid):
    """pid and its descendants."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def memory_kib(server):
    """(RSS, PSS) of the server's process trees, in KiB."""
    rss = pss = 0
    for proc in server.procs:
        for p in tree(proc.pid):
            try:
                with open(f"/proc/{p}/smaps_rollup") as f:
                    for line in f:
                        if line.startswith("Rss:"):
                            rss += int(line.split()[1])
                        elif line.startswith("Pss:"):
                            pss += int(line.split()[1])
            except OSError:
                pass
    return rss, pss


def send(server, path, n, connections):
    """About n requests (wrk runs by time: measure the rate first)."""
    probe = run.wrk(server.url(path), 2, connections)
    seconds = max(1, round(n / probe["rps"]))
    res = run.wrk(server.url(path), seconds, connections)
    return int(probe["rps"] * 2 + res["rps"] * seconds), res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--app", default="symfony", choices=["symfony", "laravel"])
    ap.add_argument("--path", default="/api/items?n=20")
    ap.add_argument("--warm", type=int, default=10000)
    ap.add_argument("--requests", type=int, default=100000)
    ap.add_argument("--connections", type=int, default=16)
    args = ap.parse_args()
    tag = {"symfony": "sf", "laravel": "lv"}[args.app]
    tmp = tempfile.mkdtemp(prefix="fephp-memory-")
    os.chmod(tmp, 0o755)
    servers, pools = {}, []
    names = [f"fe-php-{tag}-worker", f"nginx+php-fpm-{tag}"]
    try:
        run.start_framework(tmp, args.app, tag, set(names), servers, pools)
        print(f"{args.app} {args.path}, {args.connections} connections: memory of each server's process tree")
        print(f"{'server':24} {'requests':>9} {'RSS MiB':>9} {'PSS MiB':>9}")
        for name in names:
            s = servers[name]
            sent, _ = send(s, args.path, args.warm, args.connections)
            warm = memory_kib(s)
            print(f"{name:24} {sent:9d} {warm[0] / 1024:9.1f} {warm[1] / 1024:9.1f}  (warm)")
            more, res = send(s, args.path, args.requests, args.connections)
            after = memory_kib(s)
            growth = (after[1] - warm[1]) / warm[1] * 100
            print(f"{name:24} {sent + more:9d} {after[0] / 1024:9.1f} {after[1] / 1024:9.1f}  "
                  f"(PSS {growth:+.1f}% since warm; {res['rps']:.0f} req/s, p99 {res['p99_ms']:.1f} ms)")
    finally:
        for s in servers.values():
            s.stop()
        for p in pools:
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
