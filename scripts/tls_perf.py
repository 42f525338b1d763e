#!/usr/bin/env python3
"""AMQPS throughput: Lepus over TLS against Lepus plain and RabbitMQ over TLS.

Interleaved: for each scenario, each round runs every target once, in turn
(a fresh Lepus, pinned to --broker-cpus, per run; RabbitMQ as it runs, on
its AMQPS port). lepus-perf is pinned to --generator-cpus. Prints a
markdown table of the median received msg/s (min-max) and, for Lepus, the
broker's CPU µs per message.

    python3 scripts/tls_perf.py --lepus target/release/lepus --perf target/release/lepus-perf \\
        --cert /etc/rabbitmq/tls/server.pem --key /etc/rabbitmq/tls/server.key \\
        --ca /etc/rabbitmq/tls/ca.pem --repeat 3 --duration 8
"""
import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import json  # noqa: E402

from lepusperf.generator import received_rate  # noqa: E402
from lepusperf.proc import HOST, cpu_s, free_port, port_open, stop, wait_for  # noqa: E402

SCENARIOS = {
    "p2p-autoack-16B": ["-x1", "-y1", "-s16", "-a", "-u", "tls-perf"],
    "4p4q4c-1KiB": ["--queue-pattern", "tls-perf-%d", "--queue-pattern-from", "1", "--queue-pattern-to", "4",
                    "-x4", "-y4", "-s1024", "-a"],
}
TARGETS = ["lepus-plain", "lepus-tls", "rabbitmq-tls"]


def run_summary(cmd, timeout):
    """lepus-perf's JSON summary. A run that ended with an error (RabbitMQ
    over TLS takes publishes far faster than it routes them, so the producer
    gives up sending at the end) still has one: its errors are kept in it."""
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    lines = out.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"lepus-perf failed: {out.stderr[-2000:]}")
    return json.loads(lines[-1])


def wait_rabbitmq_idle(max_s):
    """Waits (at most `max_s` s) until RabbitMQ's VM uses under 5 % of a core
    over a second (read-only: /proc of the running beam.smp)."""
    pids = subprocess.run(["pgrep", "-f", "beam.smp"], capture_output=True, text=True).stdout.split()
    if not pids:
        return
    def busy_s():
        total = 0.0
        for pid in pids:
            try:
                total += cpu_s(int(pid))
            except FileNotFoundError:
                pass  # a short-lived match (rabbitmqctl, say) that has ended
        return total

    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline:
        before = busy_s()
        time.sleep(1.0)
        if busy_s() - before < 0.05:
            return


def start_lepus(a, data, port, tls_port):
    cmd = ["taskset", "-c", a.broker_cpus, a.lepus, "--listen", f"{HOST}:{port}", "--tls-listen",
           f"{HOST}:{tls_port}", "--tls-cert", a.cert, "--tls-key", a.key, "--data-dir", str(data), "--log", "warn"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not wait_for(lambda: port_open(port) and port_open(tls_port), proc, 20):
        proc.kill()
        raise RuntimeError("lepus did not start")
    return proc


def run_once(a, target, args):
    perf = ["taskset", "-c", a.generator_cpus, a.perf, *args, "-z", str(a.duration), "--json"]
    if target == "rabbitmq-tls":
        uri = f"amqps://guest:guest@localhost:{a.rabbitmq_tls_port}/%2F"
        summary = run_summary([*perf, "-h", uri, "--tls-ca", a.ca], a.duration + 60)
        # RabbitMQ drops the backlog the run left (its auto-delete queues) in
        # its own time, on every core: the next run waits for it.
        wait_rabbitmq_idle(a.settle)
        return summary, None
    with tempfile.TemporaryDirectory(prefix="tls-perf-") as data:
        port, tls_port = free_port(), free_port()
        broker = start_lepus(a, data, port, tls_port)
        try:
            if target == "lepus-tls":
                uri = f"amqps://guest:guest@localhost:{tls_port}/%2F"
                summary = run_summary([*perf, "-h", uri, "--tls-ca", a.ca], a.duration + 60)
            else:
                summary = run_summary([*perf, "-h", f"amqp://guest:guest@{HOST}:{port}/%2F"], a.duration + 60)
            cpu = cpu_s(broker.pid)
        finally:
            stop(broker, 10)
    received = summary.get("received") or summary.get("totals", {}).get("received") or 0
    return summary, (cpu * 1e6 / received if received else float("nan"))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lepus", required=True)
    p.add_argument("--perf", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--rabbitmq-tls-port", type=int, default=5671)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--duration", type=int, default=8)
    p.add_argument("--settle", type=float, default=60.0,
                   help="longest wait for RabbitMQ to go idle after each of its runs, s")
    p.add_argument("--broker-cpus", default="0")
    p.add_argument("--generator-cpus", default="1")
    p.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    a = p.parse_args()
    names = a.scenario or list(SCENARIOS)
    rates = {n: {t: [] for t in TARGETS} for n in names}
    cpus = {n: {t: [] for t in TARGETS} for n in names}
    for name in names:
        for round_ in range(a.repeat):
            for target in TARGETS:
                summary, cpu = run_once(a, target, SCENARIOS[name])
                rate = received_rate(summary) or 0.0
                rates[name][target].append(rate)
                if cpu is not None:
                    cpus[name][target].append(cpu)
                print(f"{time.strftime('%H:%M:%S')} {name} round {round_ + 1} {target}: {rate:,.0f} msg/s"
                      + (f", broker {cpu:.3f} µs/msg" if cpu is not None else ""), file=sys.stderr, flush=True)
    print(f"Interleaved, {a.repeat} rounds, {a.duration} s per run, Lepus on cores {a.broker_cpus}, "
          f"lepus-perf on {a.generator_cpus}; received msg/s, median (min-max).\n")
    print("| scenario | " + " | ".join(TARGETS) + " | TLS/plain | Lepus TLS / RabbitMQ TLS "
          "| Lepus CPU µs/msg plain | TLS |")
    print("|---|" + "---|" * (len(TARGETS) + 4))
    for name in names:
        med = {t: statistics.median(rates[name][t]) for t in TARGETS}
        cells = [f"{med[t]:,.0f} ({min(rates[name][t]):,.0f}-{max(rates[name][t]):,.0f})" for t in TARGETS]
        ratio = med["lepus-tls"] / med["lepus-plain"] if med["lepus-plain"] else float("nan")
        vs = med["lepus-tls"] / med["rabbitmq-tls"] if med["rabbitmq-tls"] else float("nan")
        cpu_plain = statistics.median(cpus[name]["lepus-plain"])
        cpu_tls = statistics.median(cpus[name]["lepus-tls"])
        print(f"| {name} | " + " | ".join(cells) + f" | {ratio:.2f} | {vs:.1f}x | {cpu_plain:.3f} | {cpu_tls:.3f} |")


if __name__ == "__main__":
    main()
