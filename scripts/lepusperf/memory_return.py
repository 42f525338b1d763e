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
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pika

from .generator import perf_cmd
from .proc import HOST, LEPUS_PERF, rss_kb, rss_parts_kb, start_lepus, stop
from .report import mib


def accepts_amqp(port):
    """Whether pika gets through the handshake."""
    try:
        pika.BlockingConnection(pika.ConnectionParameters(HOST, port)).close()
        return True
    except pika.exceptions.AMQPConnectionError:
        return False


def queue_args(queues):
    """lepus-perf's flags for the durable queues mr-1 .. mr-QUEUES, messages spread over them."""
    return ["--queue-pattern", "mr-%d", "--queue-pattern-from", "1", "--queue-pattern-to", str(queues), "--spread",
            "--auto-delete", "false"]


def fill(port, queues, messages):
    args = ["-x", "1", "-y", "0", "-s", "1024", "-c", "1000", *queue_args(queues), "-C", str(messages), "-i", "10"]
    cmd = perf_cmd(LEPUS_PERF, port, "1", args, json_summary=False)
    started = time.monotonic()
    subprocess.run(cmd, check=True, timeout=600, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - started


def drain(port, queues, messages):
    """Drains every queue with one lepus-perf no-ack consumer (core 1)."""
    args = ["-x", "0", "-y", "1", "-a", *queue_args(queues), "-D", str(messages), "-i", "10"]
    cmd = perf_cmd(LEPUS_PERF, port, "1", args, json_summary=False)
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


def run(args):
    """Runs the burst `args` (the parsed command line of scripts/memory_return.py) asks for; prints RSS over time."""
    data_dir = tempfile.mkdtemp(prefix="lepus-memory-return-")
    log = open(os.path.join(data_dir, "broker.log"), "w")
    try:
        broker = start_lepus(args.lepus, args.port, os.path.join(data_dir, "data"), log,
                             ready=lambda: accepts_amqp(args.port))
    except RuntimeError as e:
        sys.exit(str(e))
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
        stop(broker, 30)
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
