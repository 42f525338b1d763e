#!/usr/bin/env python3
"""Does memory come back? RSS of a Lepus broker over a burst and after it.

Starts target/release/lepus (pinned to core 0, one shard, a fresh data
directory), measures its idle RSS, fills QUEUES transient queues with
MESSAGES messages of 1 KiB in total with target/release/lepus-perf (pinned
to core 1, confirms on; each queue stays inside its in-memory window, so the
burst is resident, not paged to the message log), then empties them
(delete, purge, or drain with a lepus-perf consumer) and prints RSS every
second for WATCH seconds. The idle RSS is taken after a warm-up (WARMUP
messages through the same steps, so the broker has served clients; the RSS
just after start is printed too). The verdict: the first second at which
RSS is within 2x the idle RSS.

    scripts/memory_return.py [--messages 3000000] [--queues 100] [--mode delete|purge|drain] [--warmup 10000]
                             [--watch 60] [--port 5698] [--json FILE] [--lepus BINARY]

Loopback only; every step is bounded; the broker is stopped at the end
(SIGTERM). Needs pika (Debian's python3-pika).
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pika

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_LEPUS = os.path.join(ROOT, "target", "release", "lepus")
PERF = os.path.join(ROOT, "target", "release", "lepus-perf")


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def rss_parts_kb(pid):
    """(RssAnon, RssFile) in kB: heap and stacks vs. mapped files (the binary's code)."""
    parts = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("RssAnon:", "RssFile:")):
                parts[line.split(":")[0]] = int(line.split()[1])
    return parts.get("RssAnon", 0), parts.get("RssFile", 0)


def mib(kb):
    return f"{kb / 1024:.1f} MiB"


def start_broker(lepus, port, data_dir, log):
    cmd = ["taskset", "-c", "0", lepus, "--listen", f"127.0.0.1:{port}", "--data-dir", data_dir,
           "--log", "warn"]
    broker = subprocess.Popen(cmd, stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
            conn.close()
            return broker
        except pika.exceptions.AMQPConnectionError:
            if broker.poll() is not None:
                sys.exit(f"lepus exited with {broker.returncode}")
            time.sleep(0.1)
    broker.kill()
    sys.exit("lepus did not accept connections within 30 s")


def fill(port, queues, messages):
    uri = f"amqp://guest:guest@127.0.0.1:{port}/%2F"
    cmd = ["taskset", "-c", "1", PERF, "-h", uri, "-x", "1", "-y", "0", "-s", "1024", "-c", "1000",
           "--queue-pattern", "mr-%d", "--queue-pattern-from", "1", "--queue-pattern-to", str(queues),
           "--spread", "--auto-delete", "false", "-C", str(messages), "-i", "10"]
    started = time.monotonic()
    subprocess.run(cmd, check=True, timeout=600, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - started


def drain(port, queues, messages):
    """Drains every queue with one lepus-perf no-ack consumer (core 1)."""
    uri = f"amqp://guest:guest@127.0.0.1:{port}/%2F"
    cmd = ["taskset", "-c", "1", PERF, "-h", uri, "-x", "0", "-y", "1", "-a", "--queue-pattern", "mr-%d",
           "--queue-pattern-from", "1", "--queue-pattern-to", str(queues), "--spread", "--auto-delete", "false",
           "-D", str(messages), "-i", "10"]
    subprocess.run(cmd, check=True, timeout=600, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return messages


def empty(port, queues, mode, messages):
    if mode == "drain":
        return drain(port, queues, messages)
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, heartbeat=0))
    ch = conn.channel()
    total = 0
    for i in range(1, queues + 1):
        name = f"mr-{i}"
        if mode == "delete":
            total += ch.queue_delete(name).method.message_count
        else:
            total += ch.queue_purge(name).method.message_count
    conn.close()
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=3_000_000)
    ap.add_argument("--queues", type=int, default=100)
    ap.add_argument("--mode", choices=["delete", "purge", "drain"], default="delete")
    ap.add_argument("--watch", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10_000,
                    help="messages sent and emptied the same way before the idle RSS is taken (0: none)")
    ap.add_argument("--port", type=int, default=5698)
    ap.add_argument("--json")
    ap.add_argument("--lepus", default=DEFAULT_LEPUS, help="the broker binary (default target/release/lepus)")
    args = ap.parse_args()
    data_dir = tempfile.mkdtemp(prefix="lepus-memory-return-")
    log = open(os.path.join(data_dir, "broker.log"), "w")
    broker = start_broker(args.lepus, args.port, os.path.join(data_dir, "data"), log)
    result = {"messages": args.messages, "queues": args.queues, "mode": args.mode, "body_bytes": 1024}
    try:
        time.sleep(2)
        cold = rss_kb(broker.pid)
        result["cold_idle_rss_kb"] = cold
        if args.warmup:
            # The same traffic, small, so the idle size is that of a broker that has served clients.
            fill(args.port, args.queues, args.warmup)
            empty(args.port, args.queues, args.mode, args.warmup)
            time.sleep(3)
        idle = rss_kb(broker.pid)
        idle_anon, idle_file = rss_parts_kb(broker.pid)
        print(f"idle RSS {mib(idle)} (anonymous {mib(idle_anon)}, files {mib(idle_file)}) after a warm-up of "
              f"{args.warmup} messages; {mib(cold)} just after start", flush=True)
        took = fill(args.port, args.queues, args.messages)
        peak = rss_kb(broker.pid)
        print(f"filled {args.messages} messages into {args.queues} queues in {took:.1f} s; RSS {mib(peak)}",
              flush=True)
        t0 = time.monotonic()
        emptied = empty(args.port, args.queues, args.mode, args.messages)
        print(f"{args.mode}: {emptied} messages in {time.monotonic() - t0:.1f} s", flush=True)
        samples = []
        within = None
        for second in range(args.watch + 1):
            rss = rss_kb(broker.pid)
            samples.append((round(time.monotonic() - t0, 1), rss))
            if within is None and rss <= 2 * idle:
                within = samples[-1][0]
            print(f"  t+{samples[-1][0]:5.1f} s  RSS {mib(rss)}", flush=True)
            if second < args.watch:
                time.sleep(1)
        final_anon, final_file = rss_parts_kb(broker.pid)
        result.update(idle_anon_kb=idle_anon, idle_file_kb=idle_file, final_anon_kb=final_anon,
                      final_file_kb=final_file)
        result.update(idle_rss_kb=idle, peak_rss_kb=peak, emptied=emptied, fill_seconds=round(took, 1),
                      samples=samples, within_2x_after_s=within, final_rss_kb=samples[-1][1])
        verdict = f"within 2x idle after {within} s" if within is not None else \
            f"NOT within 2x idle ({mib(2 * idle)}) after {args.watch} s"
        print(f"idle {mib(idle)}, peak {mib(peak)}, final {mib(samples[-1][1])} (anonymous {mib(final_anon)}, "
              f"files {mib(final_file)}): {verdict}")
    finally:
        broker.send_signal(signal.SIGTERM)
        try:
            broker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            broker.kill()
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
