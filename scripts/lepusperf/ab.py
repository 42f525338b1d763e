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
import shutil
import statistics
import subprocess
import sys
import tempfile

from .generator import perf_cmd, run_summary
from .proc import cpu_s, free_port, start_lepus, stop

SCENARIOS = {
    "p2p-autoack-16B": ["-x1", "-y1", "-s16", "-a"],
    "p2p-manual-ack-16B": ["-x1", "-y1", "-s16", "-q1000", "-A100"],
    "4p4q4c-1KiB": ["--queue-pattern", "perf-%d", "--queue-pattern-from", "1", "--queue-pattern-to", "4",
                    "-x4", "-y4", "-s1024", "-a"],
    "fanout-4q-16B": ["-e", "perf-fanout", "-t", "fanout", "--queue-pattern", "perf-%d",
                      "--queue-pattern-from", "1", "--queue-pattern-to", "4", "-x1", "-y4", "-s16", "-a"],
    "persistent-confirms-16B": ["-x1", "-y1", "-s16", "-f", "persistent", "-c1000", "-q1000", "-A100"],
    # Not in the default set: no consumer, so its rate is publishes confirmed per second.
    "stream-publish-confirms-16B": ["-x1", "-y0", "-s16", "--stream-queue", "-c1000", "-u", "perf-stream"],
}
DEFAULT_SCENARIOS = ["p2p-autoack-16B", "p2p-manual-ack-16B", "4p4q4c-1KiB", "fanout-4q-16B",
                     "persistent-confirms-16B"]


def run_once(binary, perf, args, duration, broker_cpus, generator_cpus):
    port = free_port()
    data = tempfile.mkdtemp(prefix="lepus-ab-")
    broker = None
    try:
        broker = start_lepus(binary, port, data, subprocess.DEVNULL, cpus=broker_cpus, timeout=20)
        summary = run_summary(perf_cmd(perf, port, generator_cpus, [*args, "-z", str(duration)]),
                              timeout=duration + 60)
        summary["broker_cpu_s"] = cpu_s(broker.pid)
        return summary
    finally:
        if broker:
            stop(broker, 20)
        shutil.rmtree(data, ignore_errors=True)


def cpu_us_per_message(summary):
    """Broker CPU per message received, or per publish confirmed when nothing is consumed."""
    messages = summary.get("received") or summary.get("confirmed") or 0
    return summary["broker_cpu_s"] * 1e6 / messages if messages else float("nan")


def rate(summary):
    """Messages received per second, or publishes confirmed per second when nothing is consumed."""
    if summary.get("received"):
        return float(summary["received_per_s"])
    return float(summary.get("confirmed_per_s") or 0)


def run(a):
    """Runs the comparison `a` (the parsed command line of scripts/perf_ab.py) asks for; prints and writes the table."""
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
