#!/usr/bin/env python3
"""Memory per idle connection.

Opens N AMQP 0-9-1 connections to a broker (Lepus or RabbitMQ), each through
the whole handshake (PLAIN guest/guest, vhost /, heartbeat 0) plus one open
channel, leaves them idle, and reports how much the broker's RSS
(VmRSS of BROKER_PID) grew per connection. Then closes them cleanly.

Usage: idle_connections.py N BROKER_PID [--host 127.0.0.1] [--port 5697] [--settle 2] [--json]

Python 3 standard library only. Needs N + a few file descriptors (the soft
RLIMIT_NOFILE is raised to the hard limit).
"""
import argparse
import json
import resource
import socket
import struct
import sys
import time


def frame(t, ch, payload):
    return struct.pack(">BHI", t, ch, len(payload)) + payload + b"\xce"


def sstr(x):
    return bytes([len(x)]) + x


def lstr(x):
    return struct.pack(">I", len(x)) + x


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def read_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the socket")
        buf += chunk
    return buf


def read_method(s, want):
    """Reads frames until a method frame; checks it is `want` = (class, method)."""
    while True:
        t, ch, size = struct.unpack(">BHI", read_exact(s, 7))
        payload = read_exact(s, size + 1)[:size]
        if t != 1:
            continue  # heartbeat or other frame
        ids = struct.unpack(">HH", payload[:4])
        if ids == want:
            return payload
        if ids == (10, 50):  # connection.close
            code = struct.unpack(">H", payload[4:6])[0]
            text = payload[7 : 7 + payload[6]].decode(errors="replace")
            raise ConnectionError(f"broker closed the connection: {code} {text}")
        raise ConnectionError(f"expected method {want}, got {ids}")


def open_idle(host, port):
    s = socket.create_connection((host, port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle + delayed-ACK stalls
    s.sendall(b"AMQP\x00\x00\x09\x01")
    read_method(s, (10, 10))  # connection.start
    start_ok = struct.pack(">HH", 10, 11) + struct.pack(">I", 0) + sstr(b"PLAIN")
    start_ok += lstr(b"\0guest\0guest") + sstr(b"en_US")
    s.sendall(frame(1, 0, start_ok))
    tune = read_method(s, (10, 30))  # connection.tune
    # Never above what the server offers (0 = no limit): garagemq offers frame_max
    # 65536 and closes the connection on a larger tune-ok.
    channel_max, frame_max = struct.unpack(">HI", tune[4:10])
    channel_max = min(channel_max or 2047, 2047)
    frame_max = min(frame_max or 131072, 131072)
    tune_ok = frame(1, 0, struct.pack(">HHHIH", 10, 31, channel_max, frame_max, 0))  # no heartbeat
    s.sendall(tune_ok + frame(1, 0, struct.pack(">HH", 10, 40) + sstr(b"/") + sstr(b"") + b"\0"))
    read_method(s, (10, 41))  # connection.open-ok
    s.sendall(frame(1, 1, struct.pack(">HH", 20, 10) + sstr(b"")))
    read_method(s, (20, 11))  # channel.open-ok
    return s


def close_all(socks):
    close = frame(1, 0, struct.pack(">HHH", 10, 50, 200) + sstr(b"bye") + struct.pack(">HH", 0, 0))
    for s in socks:
        try:
            s.sendall(close)
        except OSError:
            pass
    for s in socks:
        try:
            read_method(s, (10, 51))  # close-ok
        except (OSError, ConnectionError):
            pass
        s.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("n", type=int, help="connections to open")
    ap.add_argument("pid", type=int, help="broker process id (its VmRSS is measured)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5697)
    ap.add_argument("--settle", type=float, default=2.0, help="seconds to wait before measuring")
    ap.add_argument("--json", action="store_true", help="also print a JSON summary on stdout")
    a = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < a.n + 64 and (hard == resource.RLIM_INFINITY or hard > soft):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    time.sleep(a.settle)
    before = rss_kb(a.pid)
    socks = []
    t0 = time.monotonic()
    try:
        for _ in range(a.n):
            socks.append(open_idle(a.host, a.port))
        open_s = time.monotonic() - t0
        time.sleep(a.settle)
        after = rss_kb(a.pid)
    finally:
        close_all(socks)
    per = (after - before) * 1024 / a.n if a.n else 0.0
    print(
        f"{a.n} idle connections with one channel: RSS {before} kB -> {after} kB, "
        f"{per:.0f} bytes per connection (opened in {open_s:.1f} s)",
        file=sys.stderr if a.json else sys.stdout,
    )
    if a.json:
        print(json.dumps({
            "connections": a.n, "rss_before_kb": before, "rss_after_kb": after,
            "bytes_per_connection": per, "open_s": open_s,
        }))


if __name__ == "__main__":
    main()
