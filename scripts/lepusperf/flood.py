"""Floods and churn against a release build of Lepus (issue 10).

Starts target/release/lepus pinned to core 0 (so one shard) on a fresh data
directory, pins itself and the load generator to core 1, and runs, one after
the other:

  idle      IDLE (10,000) connections, each through the whole handshake with
            one channel open, held idle, then closed cleanly;
  churn     CYCLES (100,000) connect / handshake / connection.close cycles;
  unfinished  HALF_OPEN (1,000) connections that never finish the handshake
            (a fifth each: silent after connect, half a protocol header,
            silent after connection.start, after start-ok, after tune-ok),
            held while a normal client runs, then dropped;
  declares  DECLARES (10,000) queue.declare with random names, flags and
            random x- arguments (valid and invalid types and values; the
            refused ones close their channel, which is reopened), then every
            created queue is deleted.

For each it prints the broker's RSS before, at the peak (sampled every
100 ms while the flood runs) and after (2 s after the flood ended), and runs
target/release/lepus-perf 1P->1Q->1C, 16 B, auto-ack for PERF_SECONDS after
it (PERF_RUNS times: median and best, as a shared machine makes single runs
swing), to compare with the same runs before any flood: the broker must
still serve a normal client at full speed. Writes a Markdown summary.

    scripts/flood.py [--idle 10000] [--cycles 100000] [--half-open 1000]
                     [--declares 10000] [--perf-seconds 5] [--perf-runs 3] [--port 5699]
                     [--seed 1] [--out perf/results/DATE-flood.md] [--lepus BINARY]

Loopback only; every loop is bounded; the broker is stopped at the end.
Python 3 standard library only. Raises RLIMIT_NOFILE to its hard limit (for
itself and the broker).
"""
import datetime
import os
import random
import resource
import shutil
import socket
import statistics
import struct
import sys
import tempfile
import time

from .generator import perf_cmd, received_rate, run_summary
from .proc import LEPUS_PERF, ROOT, Sampler, rss_kb, start_lepus, stop
from .report import fmt_rate, mib
from .wire import PROTOCOL_HEADER, Conn, method, sstr, table


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def handshakes(port):
    """Whether a client gets through the whole handshake and a clean close."""
    try:
        c = Conn(port)
        c.handshake()
        c.close()
        return True
    except OSError:
        return False


def perf_run(port, seconds):
    """lepus-perf 1P->1Q->1C, 16 B, auto-ack: its JSON summary."""
    cmd = perf_cmd(LEPUS_PERF, port, "1", ["-x", "1", "-y", "1", "-s", "16", "-a", "-z", str(seconds),
                                           "-u", f"flood-perf-{time.monotonic_ns()}"])
    return run_summary(cmd, timeout=seconds + 60)


def perf_runs(port, seconds, runs):
    """`runs` p2p runs one after the other: their received msg/s, sorted."""
    return sorted(received_rate(perf_run(port, seconds)) or 0 for _ in range(runs))


# --- the floods -------------------------------------------------------------

def flood_idle(port, n):
    conns = []
    for _ in range(n):
        c = Conn(port)
        c.handshake()
        c.open_channel(1)
        conns.append(c)
    time.sleep(1)  # let the peak sampler see them all (measurement, not synchronisation)
    closed = 0
    close = method(0, 10, 50, struct.pack(">H", 200) + sstr("bye") + struct.pack(">HH", 0, 0))
    for c in conns:
        c.send(close)
    for c in conns:
        while True:
            _, cl, m, _ = c.read_method()
            if (cl, m) == (10, 51):
                break
        c.s.close()
        closed += 1
    return f"{n} connections opened (handshake + channel), held, closed cleanly ({closed} close-ok)"


def flood_churn(port, n):
    t0 = time.monotonic()
    for _ in range(n):
        c = Conn(port)
        c.handshake()
        c.close()
    took = time.monotonic() - t0
    return f"{n} cycles in {took:.1f} s ({n / took:.0f} cycles/s), each ending with close-ok"


def flood_unfinished(port, n, perf_seconds):
    stages = ["nothing", "half-header", "after-start", "after-start-ok", "after-tune-ok"]
    conns = []
    for i in range(n):
        stage = stages[i % len(stages)]
        c = Conn(port)
        if stage == "half-header":
            c.send(b"AMQP")
        elif stage != "nothing":
            c.send(PROTOCOL_HEADER)
            c.expect(10, 10)
            if stage in ("after-start-ok", "after-tune-ok"):
                c.start_ok()
                c.expect(10, 30)
            if stage == "after-tune-ok":
                c.send(method(0, 10, 31, struct.pack(">HIH", 2047, 131072, 0)))
        conns.append((stage, c))
    # A normal client while all of them hang.
    during = perf_run(port, perf_seconds)
    dropped = 0
    for _, c in conns:
        c.s.setblocking(False)
        try:
            if c.s.recv(1, socket.MSG_PEEK) == b"":
                dropped += 1
        except BlockingIOError:
            pass
        except OSError:
            dropped += 1
        c.s.close()
    return (f"{n} unfinished handshakes ({n // len(stages)} at each of: {', '.join(stages)}); "
            f"{dropped} already dropped by the broker after {perf_seconds} s; "
            f"a normal client meanwhile: {fmt_rate(received_rate(during))} msg/s"), during


INT_RANGES = {"b": 2**7, "s": 2**15, "I": 2**31, "l": 2**63}


def ival(rng, values):
    """A random integer of `values` as a random integer type wide enough for it."""
    v = rng.choice(values)
    return rng.choice([k for k, r in INT_RANGES.items() if -r <= v < r]), v


def random_arguments(rng):
    """Random x- arguments: right and wrong types, sane and absurd values."""
    pool = {
        "x-message-ttl": lambda: ival(rng, [0, 1, 1000, -1, 2**31 - 1])
        if rng.random() < 0.8 else ("S", "soon"),
        "x-expires": lambda: ival(rng, [1, 1000, 3600000, 0, -5])
        if rng.random() < 0.8 else ("t", True),
        "x-max-length": lambda: ival(rng, [0, 1, 10, 10000, -1])
        if rng.random() < 0.8 else ("d", 1.5),
        "x-max-length-bytes": lambda: ival(rng, [0, 1024, 2**40, -1]),
        "x-overflow": lambda: ("S", rng.choice(["drop-head", "reject-publish", "reject-publish-dlx", "nope", ""])),
        "x-dead-letter-exchange": lambda: ("S", rng.choice(["", "amq.direct", "dlx-" + str(rng.randrange(100))])),
        "x-dead-letter-routing-key": lambda: ("S", "rk" * rng.randrange(0, 50)),
        "x-max-priority": lambda: ival(rng, [0, 1, 10, 255, 256, -1])
        if rng.random() < 0.8 else ("S", "high"),
        "x-single-active-consumer": lambda: rng.choice([("t", True), ("t", False), ("I", 1), ("S", "yes")]),
        "x-queue-mode": lambda: ("S", rng.choice(["default", "lazy", "eager"])),
        "x-queue-type": lambda: ("S", rng.choice(["classic", "quorum", "stream", "other"])),
        "x-queue-master-locator": lambda: ("S", rng.choice(["client-local", "min-masters", "x"])),
        "x-unknown": lambda: rng.choice([("V", None), ("T", 1234567890), ("D", (2, 12345)), ("f", 0.5),
                                         ("A", [("I", 1), ("S", "two")]), ("F", [("k", ("t", True))])]),
    }
    keys = rng.sample(sorted(pool), rng.randrange(0, 5))
    return [(k, pool[k]()) for k in keys]


def flood_declares(port, n, seed):
    rng = random.Random(seed)
    c = Conn(port)
    c.handshake()
    c.open_channel(1)
    created, refused = [], {}
    for i in range(n):
        name = f"flood-{seed}-{i}-{rng.randrange(1 << 30):x}"
        durable = rng.random() < 0.1
        auto_delete = rng.random() < 0.3
        bits = (2 if durable else 0) | (8 if auto_delete else 0)
        args = struct.pack(">H", 0) + sstr(name) + bytes([bits]) + table(random_arguments(rng))
        c.send(method(1, 50, 10, args))
        ch, cl, m, reply = c.read_method()
        if (cl, m) == (50, 11):
            created.append(name)
        elif (cl, m) == (20, 40):
            code = struct.unpack(">H", reply[:2])[0]
            refused[code] = refused.get(code, 0) + 1
            c.send(method(1, 20, 41))
            c.open_channel(1)
        else:
            raise ConnectionError(f"queue.declare {i} got {cl}.{m} on channel {ch}: {reply[:120]!r}")
    for name in created:
        c.send(method(1, 50, 40, struct.pack(">H", 0) + sstr(name) + b"\0"))
        c.expect(50, 41)
    c.close()
    codes = ", ".join(f"{code}: {count}" for code, count in sorted(refused.items()))
    return f"{n} declares: {len(created)} created (then deleted), refused by channel.close {{{codes}}}"


def run(args):
    """Runs the floods `args` (the parsed command line of scripts/flood.py) ask for and writes the report."""
    os.sched_setaffinity(0, {1})
    nofile = raise_nofile()
    work = tempfile.mkdtemp(prefix="lepus-flood-")
    log = open(os.path.join(work, "broker.log"), "w")
    try:
        broker = start_lepus(args.lepus, args.port, os.path.join(work, "data"), log,
                             ready=lambda: handshakes(args.port), preexec_fn=raise_nofile)
    except RuntimeError as e:
        sys.exit(str(e))
    rows, notes = [], []
    try:
        time.sleep(2)
        baseline = perf_runs(args.port, args.perf_seconds, args.perf_runs)
        notes.append(f"baseline before any flood: median {fmt_rate(statistics.median_high(baseline))}, "
                     f"best {fmt_rate(baseline[-1])} msg/s")
        print(notes[-1], flush=True)
        steps = [
            ("idle", f"{args.idle} idle connections", lambda: flood_idle(args.port, args.idle)),
            ("churn", f"{args.cycles} connect/handshake/close", lambda: flood_churn(args.port, args.cycles)),
            ("unfinished", f"{args.half_open} unfinished handshakes",
             lambda: flood_unfinished(args.port, args.half_open, args.perf_seconds)),
            ("declares", f"{args.declares} random queue declares",
             lambda: flood_declares(args.port, args.declares, args.seed)),
        ]
        for key, title, step in steps:
            before = rss_kb(broker.pid)
            sampler = Sampler(broker.pid, interval=0.1).begin()
            t0 = time.monotonic()
            what = step()
            took = time.monotonic() - t0
            sampler.stop()
            peak = sampler.rss_peak_kb()
            during = None
            if isinstance(what, tuple):
                what, during = what
            time.sleep(2)
            after = rss_kb(broker.pid)
            if broker.poll() is not None:
                raise RuntimeError(f"the broker exited ({broker.returncode}) during {key}")
            perf = perf_runs(args.port, args.perf_seconds, args.perf_runs)
            rows.append((title, before, peak, after, took, perf,
                         received_rate(during) if during else None, what))
            print(f"{title}: RSS {mib(before)} -> peak {mib(peak)} -> {mib(after)}; {what}; "
                  f"after: median {fmt_rate(statistics.median_high(perf))}, best {fmt_rate(perf[-1])} msg/s",
                  flush=True)
    finally:
        code = stop(broker, 30)
        if code is None:
            code = "killed after 30 s"
        log.close()
    with open(os.path.join(work, "broker.log")) as f:
        broker_log = f.read().strip().splitlines()
    shutil.rmtree(work, ignore_errors=True)
    write_report(args, rows, notes, baseline, nofile, code, broker_log)

def write_report(args, rows, notes, baseline, nofile, code, broker_log):
    base = statistics.median_high(baseline)
    lines = [
        f"# Floods and churn, {datetime.date.today()}",
        "",
        f"`scripts/flood.py` against `{os.path.relpath(args.lepus, ROOT)}` (release build), broker pinned to core 0 "
        "(`taskset -c 0`, so one shard), the script and `lepus-perf` on core 1, loopback, "
        f"RLIMIT_NOFILE {nofile[0]}. RSS is the broker's VmRSS: before the flood, the highest seen "
        "(sampled every 100 ms) while it ran, and 2 s after it ended. \"p2p after\" is "
        f"`lepus-perf -x1 -y1 -s16 -a -z{args.perf_seconds}` (1P→1Q→1C, 16 B, auto-ack, mean received "
        f"msg/s), run {args.perf_runs} times right after the flood (median, best); before any flood: "
        f"median **{fmt_rate(base)}**, best {fmt_rate(baseline[-1])} msg/s. The RSS before a flood "
        "includes what the p2p runs of the step before left (a backlog they built, given back once the "
        "broker is quiet).",
        "",
        "| flood | RSS before | RSS peak | RSS after | took | p2p after: median, best (best vs median before) | what happened |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for title, before, peak, after, took, rates, during, what in rows:
        ratio = f" ({rates[-1] / base:.0%})" if rates[-1] and base else ""
        rate = statistics.median_high(rates)
        extra = f"; p2p while they hang: {fmt_rate(during)}" if during else ""
        lines.append(f"| {title} | {mib(before)} | {mib(peak)} | {mib(after)} | {took:.1f} s | "
                     f"{fmt_rate(rate)}, {fmt_rate(rates[-1])}{ratio} | {what}{extra} |")
    lines += ["", f"Broker exit after SIGTERM: {code}. Its log (warnings and errors) had "
              f"{len(broker_log)} lines" + (":" if broker_log else "."), ""]
    if broker_log:
        lines += ["```"] + broker_log[:20] + (["…"] if len(broker_log) > 20 else []) + ["```", ""]
    lines += ["Command: `python3 scripts/flood.py " + " ".join(sys.argv[1:]) + "`", ""]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {args.out}")

