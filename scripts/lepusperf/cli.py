"""The command lines of the tools in scripts/: each parses its flags here
and hands them to the module that does the work (suite, ab, flood,
memory_return)."""
import argparse
import datetime
import os
import shlex
import sys
from pathlib import Path

from . import ab, curves, flood, suite
from .proc import LEPUS, ROOT


def perf_main():
    """scripts/perf.py: the scenario suite."""
    ap = argparse.ArgumentParser(description=suite.__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=suite.__doc__)
    ap.add_argument("--scenarios", help="comma-separated names (or file numbers); default: all")
    ap.add_argument("--brokers", default="lepus,lepus-uring,rabbitmq,garagemq,relay",
                    help="comma-separated subset of lepus,lepus-uring,rabbitmq,garagemq,relay (each only runs where "
                         "a scenario lists it: the relay where it can stand in for a broker, lepus-uring, Lepus "
                         "on its io_uring backend, wherever Lepus runs)")
    ap.add_argument("--duration", type=int, help="seconds per run for every perf scenario (overrides the files)")
    ap.add_argument("--messages", type=int, help="messages for the backlog and restart scenarios (overrides the "
                    "files; for RabbitMQ capped by a scenario's rabbitmq_messages)")
    ap.add_argument("--rabbit-messages", type=int, help="messages for RabbitMQ and garagemq in the backlog and "
                    "restart scenarios (overrides rabbitmq_messages, garagemq_messages and --messages)")
    ap.add_argument("--restart-stops", help="stop modes of the restart scenario, comma-separated: kill (SIGKILL), "
                    "graceful (default: the scenario's `stops`)")
    ap.add_argument("--connections", type=int, help="connections for the idle-connections scenario")
    ap.add_argument("--quick", action="store_true", help="smoke test: --duration 3 --messages 100000 "
                    "--connections 1000 unless given")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs per (scenario, broker), in round robin (every scenario on every broker once, then "
                         "again); the report gives the median, min-max and spread (default 3)")
    ap.add_argument("--disturbed-pct", type=float, default=15.0,
                    help="flag a run whose headline is more than this %% off the median of its repeats (default 15)")
    ap.add_argument("--disturbed-load", type=float, default=15.0,
                    help="flag a run during which more than this %% of a core on the broker's and generator's cores "
                         "was used by other processes (default 15)")
    ap.add_argument("--disturbed-steal", type=float, default=5.0,
                    help="flag a run during which the broker's and generator's cores lost more than this %% of a "
                         "core to steal time (default 5)")
    ap.add_argument("--out", help="markdown file to write (default perf/results/<date>.md; plots next to it)")
    ap.add_argument("--tcp-congestion", metavar="NAME",
                    help="TCP congestion control for every socket of the run (sets "
                         "net.ipv4.tcp_congestion_control, root only, restored at the end); default: the machine's")
    ap.add_argument("--broker-cpus", default="0", help="taskset core list for the broker (default 0)")
    ap.add_argument("--generator-cpus", default="1", help="taskset core list for lepus-perf (default 1)")
    ap.add_argument("--lepus-port", type=int, default=5711)
    ap.add_argument("--rabbit-port", type=int, default=5712)
    ap.add_argument("--curves", action="store_true",
                    help="measure curves instead of the scenarios: throughput against body size and latency "
                         "against offered load (lepusperf/curves.py; --out default perf/results/<date>-curves.md, "
                         "--duration default 5)")
    ap.add_argument("--curve", choices=("all", "size", "latency"), default="all", help="--curves: which curves")
    ap.add_argument("--sizes", help="--curves: body sizes in bytes, comma-separated (default 16 B ... 1 MiB)")
    ap.add_argument("--rates", help="--curves: offered loads in msg/s, comma-separated, 0 = unpaced "
                    "(default 10000,30000,100000,300000,1000000,0)")
    ap.add_argument("--relay-port", type=int, default=5713)
    ap.add_argument("--garagemq-port", type=int, default=5714, help="garagemq's AMQP port (admin: this + 10000)")
    ap.add_argument("--rabbit-dir", default="/tmp/lepus-perf-rabbitmq", help="RabbitMQ data dir (wiped)")
    ap.add_argument("--data-root", help="where Lepus' per-run data directories go (default $TMPDIR or /tmp); "
                    "the deep backlog needs ~85 B of disk per message")
    ap.add_argument("--lepus-args", default="", help="extra arguments for lepus, e.g. '--log warn'")
    ap.add_argument("--lepus-bin", help="the lepus binary to measure (default: the build's, next to lepus-perf)")
    ap.add_argument("--settle", type=float, default=1.0, help="seconds between broker start and run")
    ap.add_argument("--rss-limit-mb", type=int, default=12_000,
                    help="interrupt a run when the broker's RSS passes this (0 = no limit)")
    ap.add_argument("--no-build", action="store_true", help="do not run cargo build")
    ap.add_argument("--list", action="store_true", help="list scenarios and the estimated time, then exit")
    ap.add_argument("--dry-run", action="store_true", help="print what would run, then exit")
    ap.add_argument("--profile", metavar="DIR",
                    help="record `perf record` data of the broker during each run into DIR (see "
                         "scripts/flamegraph.sh); no markdown unless --out is given")
    ap.add_argument("--perf-callgraph", choices=("dwarf", "fp"), default="dwarf",
                    help="call graphs for Lepus/relay profiles (RabbitMQ always uses frame pointers)")
    ap.add_argument("--perf-freq", type=int, default=999)
    opts = ap.parse_args()
    opts.command_line = "python3 scripts/perf.py " + shlex.join(sys.argv[1:])
    if opts.quick:
        opts.duration = opts.duration or 3
        opts.messages = opts.messages or 100_000
        opts.connections = opts.connections or 1000
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    if not target_dir.is_absolute():
        target_dir = ROOT / target_dir
    opts.bin = target_dir / "release"
    if opts.bin.is_relative_to(ROOT):
        opts.bin = opts.bin.relative_to(ROOT)  # every command runs in ROOT
    if opts.curves:
        if not (opts.list or opts.dry_run):
            suite.build(opts)
        curves.run(opts)
    else:
        suite.run(opts)


def ab_main():
    """scripts/perf_ab.py: two lepus binaries compared, interleaved."""
    p = argparse.ArgumentParser(description=ab.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", required=True, help="the 'before' lepus binary")
    p.add_argument("--b", required=True, help="the 'after' lepus binary")
    p.add_argument("--perf", default="target/release/lepus-perf")
    p.add_argument("--scenarios", default=",".join(ab.DEFAULT_SCENARIOS),
                   help="comma-separated names (default: all but stream-publish-confirms-16B): " + ", ".join(ab.SCENARIOS))
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--duration", type=int, default=8)
    p.add_argument("--broker-cpus", default="0")
    p.add_argument("--generator-cpus", default="1")
    p.add_argument("--out")
    a = p.parse_args()
    ab.run(a)


def flood_main():
    """scripts/flood.py: floods and churn against one broker."""
    ap = argparse.ArgumentParser(description=flood.__doc__.splitlines()[0])
    ap.add_argument("--idle", type=int, default=10_000)
    ap.add_argument("--cycles", type=int, default=100_000)
    ap.add_argument("--half-open", type=int, default=1_000)
    ap.add_argument("--declares", type=int, default=10_000)
    ap.add_argument("--perf-seconds", type=int, default=5)
    ap.add_argument("--perf-runs", type=int, default=3, help="p2p runs after each flood (median and best)")
    ap.add_argument("--port", type=int, default=5699)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--lepus", default=LEPUS, help="the broker binary (default target/release/lepus)")
    ap.add_argument("--out", default=os.path.join(ROOT, "perf", "results", f"{datetime.date.today()}-flood.md"))
    args = ap.parse_args()
    flood.run(args)


def memory_return_main():
    """scripts/memory_return.py: does the broker give memory back after a burst."""
    # Imported here: it needs pika, which the other tools do not.
    from . import memory_return

    ap = argparse.ArgumentParser(description=memory_return.__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=3_000_000)
    ap.add_argument("--queues", type=int, default=100)
    ap.add_argument("--mode", choices=["delete", "purge", "drain"], default="delete")
    ap.add_argument("--watch", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10_000,
                    help="messages sent and emptied the same way before the idle RSS is taken (0: none)")
    ap.add_argument("--port", type=int, default=5698)
    ap.add_argument("--json")
    ap.add_argument("--lepus", default=LEPUS, help="the broker binary (default target/release/lepus)")
    args = ap.parse_args()
    memory_return.run(args)
