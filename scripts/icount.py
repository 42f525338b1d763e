#!/usr/bin/env python3
"""Instruction counts of benches/icount.rs against the committed baseline.

Builds and runs `cargo bench --bench icount` under Valgrind (Callgrind,
driven by gungraun's runner, installed on first use into
target/tools/ with `cargo install gungraun-runner`), reads the instruction
counts (Ir) from the summaries gungraun writes, and prints, for each
benchmark, the baseline's count, this run's, the change in per cent and
this run's count per operation (the last number of a benchmark's id is how
many operations it does: publishes decoded, keys routed, messages moved).

The counts are user-space instructions only. For the `full_path`
benchmarks they are those of every thread of the process between the first
publish and the consumer's last delivery plus a basic.qos round trip: the
broker's shard (about 95 %), its idle helper threads, and the client thread
that drives both connections (about 4 %: it writes pre-encoded publishes,
walks the frames it reads and encodes acks). Broker start, handshakes and
teardown are not counted (benches/icount.rs says how).
Counts of the same build differ a little between processes: Lepus's hash
maps are seeded at random per process (how many probes a lookup takes
changes with the seed), and how the full path's bytes batch into reads
varies. So each benchmark runs in `--runs` separate processes (default 3)
and the table shows the median and the spread (max - min, in per cent of
the median); perf/README.md has the measured spreads. A change smaller than
the spread is noise.

    python3 scripts/icount.py                 # compare with perf/baselines/icount.json
    python3 scripts/icount.py --save          # and make this run the baseline
    python3 scripts/icount.py --fail-above 2  # exit 1 if any count grew by more than 2 %
    python3 scripts/icount.py --filter full_path   # only benchmarks whose name contains this
    python3 scripts/icount.py --runs 5        # median of 5 processes per benchmark

Not part of `cargo test` or CI: the release build (fat LTO) takes minutes;
one run of every benchmark takes about 15 s under Valgrind. Cargo and
Valgrind run under `nice -n 10`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "perf" / "baselines" / "icount.json"
TOOLS = ROOT / "target" / "tools"
RUNNER = TOOLS / "bin" / "gungraun-runner"
# Where gungraun writes each benchmark's output (summary.json included).
OUTPUT = ROOT / "target" / "gungraun" / "lepus" / "icount"
NICE = ["nice", "-n", "10"]


def gungraun_version() -> str:
    """The gungraun version in Cargo.lock: the runner must be the same."""
    lock = (ROOT / "Cargo.lock").read_text()
    match = re.search(r'name = "gungraun"\nversion = "([^"]+)"', lock)
    if not match:
        sys.exit("icount: gungraun is not in Cargo.lock (is it still a dev-dependency?)")
    return match.group(1)


def ensure_runner(version: str) -> None:
    """Installs gungraun-runner `version` into target/tools unless it is there."""
    if RUNNER.exists():
        out = subprocess.run([str(RUNNER), "--version"], capture_output=True, text=True).stdout
        if version in out.split():
            return
    print(f"icount: installing gungraun-runner {version} into {TOOLS}", file=sys.stderr)
    subprocess.run(
        NICE + ["cargo", "install", "gungraun-runner", "--version", version, "--locked", "--root", str(TOOLS)],
        cwd=ROOT,
        check=True,
    )


def run_benchmarks(filter_: str | None) -> None:
    """Builds and runs the benchmarks; gungraun writes a summary.json for each."""
    if not shutil.which("valgrind"):
        sys.exit("icount: valgrind is not installed (apt-get install valgrind)")
    if OUTPUT.exists():
        for old in OUTPUT.rglob("summary.json"):
            old.unlink()
    env = dict(os.environ)
    env["PATH"] = f"{TOOLS / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    cmd = NICE + ["cargo", "bench", "--bench", "icount", "--", "--save-summary=json"]
    if filter_:
        cmd.append(f"*{filter_}*")
    print("icount: " + " ".join(cmd), file=sys.stderr)
    # gungraun's own report goes to our stderr, the table to stdout.
    result = subprocess.run(cmd, cwd=ROOT, env=env, stdout=sys.stderr)
    if result.returncode != 0:
        sys.exit(f"icount: cargo bench failed (exit {result.returncode})")


def instructions(metrics: dict) -> int | None:
    """This run's Ir in a summary's `metrics` ({"Ir": {"values": {"new": N, "old": M}}})."""
    value = metrics.get("Ir", {}).get("values", {}).get("new")
    if isinstance(value, dict):  # an Int/Float wrapper, should a later schema add one
        value = next(iter(value.values()), None)
    return int(value) if isinstance(value, (int, float)) else None


def read_summaries() -> dict[str, int]:
    """Benchmark name (group::function::id) -> instruction count."""
    counts: dict[str, int] = {}
    for path in sorted(OUTPUT.rglob("summary.json")):
        summary = json.loads(path.read_text())
        name = f"{summary['group']}::{summary['function_name']}::{summary.get('id') or ''}"
        for profile in summary["profiles"]:
            if profile.get("tool") != "Callgrind":
                continue
            ir = instructions(profile["data"]["total"]["metrics"])
            if ir is None:
                sys.exit(f"icount: no Ir in {path}")
            counts[name] = ir
    if not counts:
        sys.exit(f"icount: no summary.json under {OUTPUT}")
    return counts


def operations(name: str) -> int:
    """How many operations a benchmark does: the last number of its id."""
    numbers = re.findall(r"\d+", name.rsplit("::", 1)[-1])
    return int(numbers[-1]) if numbers else 1


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def median(values: list[int]) -> int:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if len(ordered) % 2 else (ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) // 2


def spread_pct(values: list[int]) -> float:
    return (max(values) - min(values)) / median(values) * 100 if median(values) else 0.0


def table(baseline: dict[str, int], runs: dict[str, list[int]]) -> tuple[str, float]:
    """The comparison table (Markdown) and the largest increase in per cent."""
    rows = [
        "| benchmark | ops | baseline Ir | now Ir | spread | change | now Ir/op |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    worst = float("-inf")
    for name in sorted(set(baseline) | set(runs)):
        before = baseline.get(name)
        after = median(runs[name]) if name in runs else None
        ops = operations(name)
        if before is not None and after is not None and before > 0:
            change = (after - before) / before * 100
            worst = max(worst, change)
            change_text = f"{change:+.2f} %"
        else:
            change_text = "new" if before is None else "not run"
        rows.append(
            f"| {name} | {ops} | {before if before is not None else '-'} | "
            f"{after if after is not None else '-'} | "
            f"{f'{spread_pct(runs[name]):.2f} %' if name in runs else '-'} | {change_text} | "
            f"{f'{after / ops:,.1f}' if after is not None else '-'} |"
        )
    return "\n".join(rows), worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--save", action="store_true", help=f"write this run as the baseline ({BASELINE.relative_to(ROOT)})")
    parser.add_argument("--fail-above", type=float, metavar="PCT", help="exit 1 if any count grew by more than PCT %%")
    parser.add_argument("--filter", help="only benchmarks whose name contains this (e.g. full_path, codec)")
    parser.add_argument("--runs", type=int, default=3, help="processes per benchmark; the median counts (default 3)")
    parser.add_argument(
        "--no-run", action="store_true", help="do not build or run: compare the summaries of the last run"
    )
    args = parser.parse_args()

    runs: dict[str, list[int]] = {}
    for _ in range(1 if args.no_run else max(args.runs, 1)):
        if not args.no_run:
            ensure_runner(gungraun_version())
            run_benchmarks(args.filter)
        for name, ir in read_summaries().items():
            if not args.filter or args.filter in name:
                runs.setdefault(name, []).append(ir)

    if not runs:
        sys.exit(f"icount: no benchmark matches --filter {args.filter!r}")
    saved = json.loads(BASELINE.read_text()) if BASELINE.exists() else {"benchmarks": {}}
    baseline = {name: entry["ir"] for name, entry in saved["benchmarks"].items()}
    if args.filter:
        baseline = {k: v for k, v in baseline.items() if args.filter in k}
    where = f"commit {saved.get('commit', '?')}, {saved.get('date', '?')}" if baseline else "none"
    head = git("rev-parse", "--short=12", "HEAD") + (" (dirty)" if git("status", "--porcelain", "--untracked-files=no") else "")
    count = min(len(v) for v in runs.values())
    print(f"baseline: {where}; now: {head}, median of {count} run{'s' if count > 1 else ''}\n")
    text, worst = table(baseline, runs)
    print(text)

    if args.save:
        if args.filter:
            # Keep the benchmarks that did not run.
            merged = {name: entry for name, entry in saved["benchmarks"].items() if name not in runs}
        else:
            merged = {}
        merged.update(
            {
                name: {"ir": median(irs), "ops": operations(name), "runs": irs, "spread_pct": round(spread_pct(irs), 3)}
                for name, irs in runs.items()
            }
        )
        document = {
            "commit": git("rev-parse", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "valgrind": subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout.strip(),
            "rustc": subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip(),
            "benchmarks": dict(sorted(merged.items())),
        }
        BASELINE.parent.mkdir(parents=True, exist_ok=True)
        BASELINE.write_text(json.dumps(document, indent=2) + "\n")
        print(f"\nicount: baseline written to {BASELINE.relative_to(ROOT)}")

    if args.fail_above is not None and baseline and worst > args.fail_above:
        print(f"\nicount: a count grew by {worst:.2f} %, more than --fail-above {args.fail_above} %", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
