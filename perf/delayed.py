#!/usr/bin/env python3
"""Delayed messages (x-delayed-message): memory per held message, and how
late releases are while many are held.

1. Fill: publishes PENDING persistent 16-byte messages to a durable delayed
   exchange (x-delayed-type direct) with x-delay spread over 10..20 minutes
   (none is released during the run), to a durable queue nobody consumes; a
   confirmed publish at the end proves every one is held. Reports the fill
   rate and the growth of the broker's RSS (VmRSS of BROKER_PID) per held
   message.
2. Timing: while they are held, a publisher sends TIMED messages at RATE
   msg/s with x-delay DELAY_MS, each carrying its send time; a consumer
   (auto-ack, another connection) measures how late each arrives after its
   due time (send time + DELAY_MS). Reports p50, p99 and max lateness. The
   lateness includes the client's publish and delivery path (same machine,
   same clock).

Usage: delayed.py BROKER_PID [--port 5672] [--pending 1000000] [--timed 5000]
                  [--rate 1000] [--delay-ms 1000] [--json]

Needs pika (pip install pika).
"""
import argparse
import json
import struct
import sys
import threading
import time

import pika

from idle_connections import rss_kb  # perf/ is the script's directory

EXCHANGE = "perf.delayed"
FAR, NEAR = "perf.delayed.far", "perf.delayed.near"


def connect(port):
    params = pika.ConnectionParameters("127.0.0.1", port, heartbeat=0,
                                       credentials=pika.PlainCredentials("guest", "guest"))
    return pika.BlockingConnection(params)


def setup(ch):
    ch.exchange_declare(EXCHANGE, "x-delayed-message", durable=True, arguments={"x-delayed-type": "direct"})
    for q in (FAR, NEAR):
        ch.queue_declare(q, durable=True)
        ch.queue_purge(q)
        ch.queue_bind(q, EXCHANGE, routing_key=q)


def fill(port, pending):
    conn = connect(port)
    ch = conn.channel()
    setup(ch)
    body = b"x" * 16
    started = time.monotonic()
    for i in range(pending):
        delay = 600_000 + (i * 7919) % 600_000
        props = pika.BasicProperties(delivery_mode=2, headers={"x-delay": delay})
        ch.basic_publish(EXCHANGE, FAR, body, props)
    if pending:
        ch.confirm_delivery()
        ch.basic_publish(EXCHANGE, FAR, body, pika.BasicProperties(delivery_mode=2, headers={"x-delay": 600_000}))
    took = time.monotonic() - started
    conn.close()
    return took


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * p))]


def timed(port, count, rate, delay_ms):
    late_ms = []
    ready = threading.Event()

    def consume():
        conn = connect(port)
        ch = conn.channel()
        ready.set()
        for _method, _props, body in ch.consume(NEAR, auto_ack=True, inactivity_timeout=delay_ms / 1000 + 10):
            if body is None:
                break
            (sent_ns,) = struct.unpack(">Q", body[:8])
            late_ms.append((time.time_ns() - sent_ns) / 1e6 - delay_ms)
            if len(late_ms) == count:
                break
        conn.close()

    consumer = threading.Thread(target=consume)
    consumer.start()
    ready.wait()
    conn = connect(port)
    ch = conn.channel()
    props = pika.BasicProperties(headers={"x-delay": delay_ms})
    started = time.monotonic()
    for i in range(count):
        due = started + i / rate
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        ch.basic_publish(EXCHANGE, NEAR, struct.pack(">Q", time.time_ns()) + b"t" * 8, props)
    conn.close()
    consumer.join()
    late_ms.sort()
    return {"received": len(late_ms), "late_p50_ms": percentile(late_ms, 0.50),
            "late_p99_ms": percentile(late_ms, 0.99), "late_max_ms": late_ms[-1] if late_ms else None,
            "early": sum(1 for v in late_ms if v < 0)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("broker_pid", type=int)
    ap.add_argument("--port", type=int, default=5672)
    ap.add_argument("--pending", type=int, default=1_000_000)
    ap.add_argument("--timed", type=int, default=5000)
    ap.add_argument("--rate", type=float, default=1000)
    ap.add_argument("--delay-ms", type=int, default=1000)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    before = rss_kb(a.broker_pid)
    fill_s = fill(a.port, a.pending)
    held = rss_kb(a.broker_pid)
    t = timed(a.port, a.timed, a.rate, a.delay_ms)
    out = {"pending": a.pending, "fill_s": fill_s, "fill_per_s": a.pending / fill_s, "rss_before_kb": before,
           "rss_held_kb": held, "bytes_per_held": (held - before) * 1024 / max(1, a.pending),
           "timed": a.timed, "rate": a.rate, "delay_ms": a.delay_ms, **t}
    if a.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k}: {v}")
    return 0 if t["received"] == a.timed and t["early"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
