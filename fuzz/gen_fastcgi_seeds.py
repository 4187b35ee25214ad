#!/usr/bin/env python3
"""Hand-built seeds for the fastcgi_response target (the fpm-* seeds were captured
from a real php-fpm 8.2). Usage: fuzz/gen_fastcgi_seeds.py fuzz/corpus/fastcgi_response

Each seed is 7 control bytes (see fuzz_targets/fastcgi_response.rs) + the stream."""
import os
import struct
import sys

STDOUT, STDERR, END = 6, 7, 3


def rec(kind, content=b"", rid=1, pad=None):
    if pad is None:
        pad = (8 - len(content) % 8) % 8
    return struct.pack(">BBHHBB", 1, kind, rid, len(content), pad, 0) + content + b"\0" * pad


def end(app=0, proto=0):
    return rec(END, struct.pack(">IB3x", app, proto))


def control(flags=0, seed=0, repeat=0, start=0, length=0):
    return struct.pack("<BBBHH", flags, seed, repeat, start, length)


def seeds():
    ok = rec(STDOUT, b"Content-Type: text/plain\r\n\r\nok\n") + rec(STDOUT) + end()
    yield "http-server", control() + b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
    yield "overloaded", control() + rec(STDOUT, b"X: 1\r\n\r\n") + end(0, 2)
    yield "unknown-role", control() + end(0, 3)
    yield "split-head", control(seed=7) + rec(STDOUT, b"Status: 201 Cre") + rec(
        STDERR, b"PHP Notice: x\n"
    ) + rec(STDOUT, b"ated\r\nX-A: 1\r") + rec(STDOUT, b"\n\r\nbody") + rec(STDOUT, b" more") + end()
    yield "other-records", control() + rec(10, b"\x0eFCGI_MAX_CONNS1", rid=0) + rec(
        STDOUT, b"X: other request\r\n\r\n", rid=2
    ) + rec(11, b"unknown type") + ok
    yield "fold-and-hop", control() + rec(
        STDOUT,
        b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Long: one\r\n  two\r\n\ttwo and a half\r\n"
        b"Connection: close\r\nTransfer-Encoding: chunked\r\nKeep-Alive: 5\r\nContent-Length: 99\r\n\r\nbody",
    ) + end()
    yield "no-end", control() + rec(STDOUT, b"X: 1\r\n\r\nbody")
    yield "no-end-reset", control(flags=4) + rec(STDOUT, b"X: 1\r\n\r\nbody")
    yield "cut-record", control() + rec(STDOUT, b"X: 1\r\n\r\nbody")[:13]
    yield "short-end", control() + rec(STDOUT, b"X: 1\r\n\r\n") + rec(END, b"\0\0\0\0")
    yield "bad-status", control() + rec(STDOUT, b"Status: 99 Too Low\r\n\r\n") + end()
    yield "bad-header", control() + rec(STDOUT, b"Bad Name: x\r\nno colon\r\n\r\n") + end()
    yield "lf-only", control() + rec(STDOUT, b"Location: /x\nX: 1\n\nbody") + end()
    yield "empty-head", control() + rec(STDOUT, b"\r\nbody without headers") + end()
    yield "head-only-in-end", control() + rec(STDOUT, b"X-Only: head") + end()
    yield "leftover", control() + ok + b"\x01\x06\x00\x01garbage after the end"
    yield "padding-255", control() + rec(STDOUT, b"X: 1\r\n\r\npadded", pad=255) + end()
    yield "head-request", control(flags=1) + ok
    yield "pauses", control(flags=2, seed=3) + rec(STDOUT, b"X: 1\r\n\r\n") + b"".join(
        rec(STDOUT, b"chunk %d\n" % i) for i in range(8)
    ) + end()
    yield "client-gone", control(flags=10, seed=5) + rec(STDOUT, b"X: 1\r\n\r\nfirst") + rec(
        STDOUT, b"second"
    ) + end()
    # Amplified: the record at `start` (len bytes) is sent 1 + repeat times.
    head = rec(STDOUT, b"Content-Type: application/octet-stream\r\n\r\n")
    body = rec(STDOUT, b"z" * 8184)
    yield "stream-large", control(repeat=160, start=len(head), length=len(body)) + head + body + end()
    yield "stream-large-pauses", control(flags=2, seed=9, repeat=160, start=len(head), length=len(body)) + head + body + end()
    yield "discard-head", control(flags=1, repeat=160, start=len(head), length=len(body)) + head + body + end()
    # The largest record a peer can announce (65535 + 255 padding), read in pieces
    # that end inside its last bytes: the decoder's buffer bound.
    x1 = rec(STDOUT, b"X: 1\r\n\r\n")
    yield "max-record", control(seed=4) + x1 + rec(STDOUT, b"z" * 0xFFFF, pad=255) + end()
    nc = rec(STDOUT, b"Status: 204\r\n\r\n")
    yield "discard-204", control(repeat=160, start=len(nc), length=len(body)) + nc + body + end()
    line = rec(STDOUT, (b"X-Filler: " + b"f" * 1014 + b"\r\n") * 8)
    yield "huge-head", control(repeat=140, start=0, length=len(line)) + line + rec(STDOUT, b"\r\n") + end()


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, data in seeds():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
