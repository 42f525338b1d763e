#!/usr/bin/env python3
"""Interleaved before/after comparison of two `lepus` binaries.

    python3 scripts/perf_ab.py --a /path/to/old/lepus --b target/release/lepus \
        --repeat 3 --duration 8 --out perf/results/<date>-ab.md

For each scenario and each repeat, runs A then B (then the next repeat), each
on a fresh data directory, the broker pinned to --broker-cpus and
`lepus-perf` (from --perf, default target/release/lepus-perf) to
--generator-cpus, and reports the median received rate, the spread (min-max)
and B/A. Both brokers get the same flags and the same generator, so only the
broker differs. Loopback only; every run is bounded by --duration.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

SCENARIOS = {
    "p2p-autoack-16B": ["-x1", "-y1", "-s16", "-a"],
    "p2p-manual-ack-16B": ["-x1", "-y1", "-s16", "-q1000", "-A100"],
    "4p4q4c-1KiB": ["--queue-pattern", "perf-%d", "--queue-pattern-from", "1", "--queue-pattern-to", "4",
                    "-x4", "-y4", "-s1024", "-a"],
    "fanout-4q-16B": ["-e", "perf-fanout", "-t", "fanout", "--queue-pattern", "perf-%d",
                      "--queue-pattern-from", "1", "--queue-pattern-to", "4", "-x1", "-y4", "-s16", "-a"],
    "persistent-confirms-16B": ["-x1", "-y1", "-s16", "-f", "persistent", "-c1000", "-q1000", "-A100"],
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, deadline):
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def run_once(binary, perf, args, duration, broker_cpus, generator_cpus):
    port = free_port()
    data = tempfile.mkdtemp(prefix="lepus-ab-")
    broker = subprocess.Popen(
        ["taskset", "-c", broker_cpus, binary, "--listen", f"127.0.0.1:{port}", "--data-dir", data, "--log", "warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_port(port, time.monotonic() + 20):
            raise RuntimeError(f"{binary} did not listen on {port}")
        uri = f"amqp://guest:guest@127.0.0.1:{port}/%2F"
        out = subprocess.run(
            ["taskset", "-c", generator_cpus, perf, "-h", uri, "-z", str(duration), "--json", *args],
            capture_output=True, text=True, timeout=duration + 60)
        if out.returncode != 0:
            raise RuntimeError(f"lepus-perf failed: {out.stderr[-2000:]}")
        summary = json.loads(out.stdout.strip().splitlines()[-1])
        summary["broker_cpu_s"] = cpu_seconds(broker.pid)
        return summary
    finally:
        broker.terminate()
        try:
            broker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            broker.kill()
            broker.wait()
        shutil.rmtree(data, ignore_errors=True)


def cpu_seconds(pid):
    """User + system CPU time of `pid` so far (the broker, which ran only this scenario)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def cpu_us_per_message(summary):
    received = summary.get("received") or 0
    return summary["broker_cpu_s"] * 1e6 / received if received else float("nan")


def rate(summary):
    return float(summary["received_per_s"])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", required=True, help="the 'before' lepus binary")
    p.add_argument("--b", required=True, help="the 'after' lepus binary")
    p.add_argument("--perf", default="target/release/lepus-perf")
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--duration", type=int, default=8)
    p.add_argument("--broker-cpus", default="0")
    p.add_argument("--generator-cpus", default="1")
    p.add_argument("--out")
    a = p.parse_args()
    names = [n for n in a.scenarios.split(",") if n]
    results = {n: {"A": [], "B": []} for n in names}
    cpu = {n: {"A": [], "B": []} for n in names}
    for name in names:
        for i in range(a.repeat):
            for label, binary in (("A", a.a), ("B", a.b)):
                s = run_once(binary, a.perf, SCENARIOS[name], a.duration, a.broker_cpus, a.generator_cpus)
                r = rate(s)
                c = cpu_us_per_message(s)
                results[name][label].append(r)
                cpu[name][label].append(c)
                print(f"{name} run {i + 1} {label}: {r:,.0f} msg/s, broker {c:.3f} us/msg", file=sys.stderr, flush=True)
    lines = [
        f"Interleaved A/B, {a.repeat} runs each, {a.duration} s per run, broker on cores {a.broker_cpus}, "
        f"lepus-perf on {a.generator_cpus}.",
        "",
        f"- A: `{a.a}`",
        f"- B: `{a.b}`",
        "",
        "| scenario | A median (min-max) msg/s | B median (min-max) msg/s | B/A | broker CPU µs/msg A | B |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        ra, rb = results[name]["A"], results[name]["B"]
        ma, mb = statistics.median(ra), statistics.median(rb)
        lines.append(f"| {name} | {ma:,.0f} ({min(ra):,.0f}-{max(ra):,.0f}) | {mb:,.0f} ({min(rb):,.0f}-{max(rb):,.0f}) "
                     f"| {mb / ma if ma else float('nan'):.2f} "
                     f"| {statistics.median(cpu[name]['A']):.3f} | {statistics.median(cpu[name]['B']):.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
