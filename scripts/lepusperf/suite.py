"""Runs the benchmark scenarios of perf/scenarios/ against Lepus (on mio, and on
io_uring as `lepus-uring`), RabbitMQ, garagemq and (where a scenario asks for
it) lepus-perf's byte relay, one
broker at a time, broker and generator pinned to different cores, each
(scenario, broker) --repeat times (3 by default) in round robin, and writes
perf/results/<date>.md (machine, exact commands, medians and spreads, broker
CPU per message, disturbed runs, a table per scenario, targets met or not)
plus SVG plots next to it. --curves measures curves instead (lepusperf/curves.py).

    python3 scripts/perf.py                          # every scenario, every broker
    python3 scripts/perf.py --scenarios p2p-autoack,fanout-4 --brokers lepus
    python3 scripts/perf.py --quick --out /tmp/smoke.md   # 3 s runs, small counts
    python3 scripts/perf.py --list                   # scenarios and the estimated time

Python 3.11+ standard library only (tomllib). Builds with `cargo build
--release` into $CARGO_TARGET_DIR (default target/). RabbitMQ is started and
stopped by scripts/rabbitmq.sh. Each (scenario, broker) run gets a freshly
started broker, so no queue, exchange or memory is left over from the one
before. See perf/README.md.
"""
import atexit
import datetime
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from . import delayed, durable, idle, throughput
from .brokers import CLASSES, ensure_garagemq
from .generator import Generator, generator_cmd
from .plots import make_plots
from .proc import ROOT
from .report import BROKER_TITLE, BROKERS, METRICS, engine, fmt, fmt_spread, log, median_run, spread
from .scenarios import KINDS, ScenarioError, estimate_s, evaluate, load_scenarios, messages_for, select

# Each kind of scenario: how one run goes (a function of (scenario, generator,
# result, tag, perf output) that fills the result and returns False if the run
# failed early) and its table in the report.
RUNS = {"perf": throughput.run, "backlog": durable.run_backlog, "restart": durable.run_restart,
        "idle_connections": idle.run, "delayed": delayed.run}
TABLES = {"perf": throughput.table, "backlog": durable.backlog_table, "restart": durable.restart_table,
          "idle_connections": idle.table, "delayed": delayed.table}
assert set(RUNS) == set(TABLES) == set(KINDS)


def run_once(s, broker, opts, tag, log_dir, perf_out):
    """Starts `broker`, runs scenario `s` once, stops the broker. Returns a result dict."""
    res = {"broker": broker.name, "commands": [], "notes": []}
    gen_log = log_dir / f"{tag}-{broker.name}-generator.log"
    gen_log.write_text("")
    broker.commands = []
    try:
        broker.start(tag)
    except (RuntimeError, ValueError, OSError) as e:
        res["error"] = str(e)
        broker.stop()
        return res
    try:
        res["commands"] += broker.commands
        time.sleep(opts.settle)
        res["rss_before_kb"] = broker.rss_kb()
        res["broker_pid"] = broker.pid
        gen = Generator(opts, broker, gen_log)
        if not RUNS[s["kind"]](s, gen, res, tag, perf_out):
            return res
        res["rss_after_kb"] = broker.rss_kb()
        flag_load(res, opts)
        if res.get("errors"):
            res["notes"] += res["errors"]
        return res
    finally:
        broker.stop()


def flag_load(res, opts):
    """Marks a run disturbed (res["disturbed"], a note) when, over its measured
    interval, something else ran on the benchmark's cores: more than
    opts.disturbed_load % of a core not used by the broker or the generator, or
    more than opts.disturbed_steal % of steal time."""
    why = []
    other, steal = res.get("other_cpu_pct"), res.get("steal_pct")
    if other is not None and other > opts.disturbed_load:
        why.append(f"other load {other:.0f} % of a core")
    if steal is not None and steal > opts.disturbed_steal:
        why.append(f"steal {steal:.0f} % of a core")
    if why:
        res.setdefault("disturbed", []).extend(why)
        res["notes"].append("disturbed: " + ", ".join(why))


def flag_outliers(runs, metric, pct):
    """Marks the runs (of one scenario on one broker) whose `metric` is more than
    `pct` % off the median of their repeats as disturbed."""
    vals = [r.get(metric) for r in runs if "error" not in r and r.get(metric) is not None]
    if len(vals) < 2:
        return
    med = statistics.median_low(vals)
    for r in runs:
        v = r.get(metric)
        if "error" in r or v is None or not med:
            continue
        off = 100.0 * (v - med) / med
        if abs(off) > pct:
            why = f"{off:+.0f} % off the median of its repeats"
            r.setdefault("disturbed", []).append(why)
            r["notes"].append("disturbed: " + why)


def headline_values(s, runs, metric=None):
    """The figures (`metric`, default the headline) of every run of a broker that did not fail."""
    metric = metric or s["headline"]
    return [r.get(metric) for r in runs if "error" not in r]


def machine_info(opts):
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])

    def out(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT).stdout.strip()
        except OSError:
            return "?"

    dirty = out(["git", "status", "--porcelain", "--untracked-files=no"])
    return {
        "cpu": cpu, "nproc": os.cpu_count(), "kernel": platform.release(), "mem_gib": mem_kb / 1024 / 1024,
        "commit": out(["git", "rev-parse", "--short", "HEAD"]) + (" (with uncommitted changes)" if dirty else ""),
        "commit_subject": out(["git", "log", "-1", "--format=%s"]),
        "rustc": out(["rustc", "--version"]),
        "rabbitmq": out(["dpkg-query", "-W", "-f", "${Version}", "rabbitmq-server"]) or "not installed",
        "garagemq": out(["dpkg-query", "-W", "-f", "${Version}", "garagemq"]) or "not installed",
        "erlang": out(["dpkg-query", "-W", "-f", "${Version}", "erlang-base"]) or "?",
        "loadavg": open("/proc/loadavg").read().split()[:3],
        "rabbit_fs": out(["df", "--output=fstype", str(Path(opts.rabbit_dir).parent)]).split()[-1:] or ["?"],
        "thp": open("/sys/kernel/mm/transparent_hugepage/enabled").read().strip()
        if os.path.exists("/sys/kernel/mm/transparent_hugepage/enabled") else "?",
        "tcp_congestion": read_sysctl(TCP_CONGESTION) or "?",
    }


TCP_CONGESTION = "/proc/sys/net/ipv4/tcp_congestion_control"


def read_sysctl(path):
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def set_tcp_congestion(name):
    """Makes `name` the congestion control of every new socket, the generator's and the
    brokers'; returns the one it replaces (None if nothing changed)."""
    old = read_sysctl(TCP_CONGESTION)
    if old is None or old == name:
        return None
    allowed = (read_sysctl("/proc/sys/net/ipv4/tcp_available_congestion_control") or "").split()
    if name not in allowed:
        sys.exit(f"perf.py: congestion control {name!r} is not available here (available: {' '.join(allowed)})")
    try:
        Path(TCP_CONGESTION).write_text(name)
    except OSError as e:
        sys.exit(f"perf.py: cannot set {TCP_CONGESTION} (root needed): {e}")
    return old


def write_markdown(opts, path, scenarios, results, info, plots, started, elapsed, build_cmd):
    date = started.strftime("%Y-%m-%d")
    L = []
    L.append(f"# Lepus vs RabbitMQ and garagemq ({date})")
    L.append("")
    L.append(f"Written by `scripts/perf.py` ({started.strftime('%Y-%m-%d %H:%M')}, {elapsed / 60:.0f} min). "
             f"Scenarios: `perf/scenarios/`. Every (scenario, broker) run had a freshly started broker.")
    L.append("")
    L.append("## Machine")
    L.append("")
    L.append(f"- CPU: `{info['cpu']}`, `nproc` {info['nproc']}; kernel `{info['kernel']}`; "
             f"{info['mem_gib']:.0f} GiB RAM; loopback TCP, congestion control `{info['tcp_congestion']}`"
             + (f" (set by `--tcp-congestion`; the machine's is `{info['tcp_congestion_was']}`)"
                if info.get("tcp_congestion_was") else ""))
    L.append(f"- broker pinned to core(s) {opts.broker_cpus}, generator (`lepus-perf`) to core(s) "
             f"{opts.generator_cpus}; load average before / after: {' '.join(info['loadavg'])} / "
             f"{' '.join(info['loadavg_end'])}")
    L.append(f"- Lepus: commit `{info['commit']}` ({info['commit_subject']}), {info['rustc']}, "
             f"`cargo build --release` (binaries in `{opts.bin}`)")
    L.append(f"- RabbitMQ {info['rabbitmq']} (Debian), Erlang {info['erlang']}; "
             f"{info.get('rabbit_started', 'not started')}; data directory `{opts.rabbit_dir}` on "
             f"{info['rabbit_fs'][0]} (persistent messages are fsynced there)")
    L.append(f"- garagemq {info['garagemq']} (Debian): `garagemq --config` with its own port, admin port and "
             "database directory (wiped per run), TCP_NODELAY on like the others")
    L.append(f"- transparent huge pages: `{info['thp']}`")
    L.append(f"- each (scenario, broker) run {opts.repeat} time(s), interleaved: repeat 1 of every scenario on "
             "every broker, then repeat 2, …; each figure is the median of its repeats with the min–max and the "
             "spread ((max − min) / median) in brackets; the per-scenario tables list every run and mark the "
             "median one")
    L.append(f"- a run is *disturbed* when its headline is more than {opts.disturbed_pct:g} % off the median of "
             f"its repeats, or when over its measured interval more than {opts.disturbed_load:g} % of a core on "
             f"the benchmark's cores was used by neither the broker nor the generator, or steal time passed "
             f"{opts.disturbed_steal:g} % of a core; disturbed runs stay in the medians and are counted below")
    L.append("")
    cols = [b for b in BROKERS if b in opts.wanted_brokers and any(b in s["brokers"] for s in scenarios)]
    L.append("## Results against the targets")
    L.append("")
    L.append(f"| scenario | headline | {' | '.join(BROKER_TITLE[b] for b in cols)} | Lepus / other | "
             "disturbed runs | target | met? |")
    L.append(f"|---|---|{'---:|' * len(cols)}---|---|---|---|")
    for s in scenarios:
        best = results.get(s["name"], {})
        runs = results.get(s["name"] + "/all", {})
        metric = s["headline"]
        meds = {b: (spread(headline_values(s, runs.get(b, []))) or (None,))[0] for b in cols}
        ratios = [f"{meds['lepus'] / meds[b]:.2f}x {BROKER_TITLE[b]}" for b in cols
                  if b != "lepus" and meds.get("lepus") and meds.get(b)]
        verdict, detail = evaluate(s, best)
        t = s.get("target", {}).get("text", "")
        cells = []
        for b in cols:
            rs = runs.get(b, [])
            if b not in s["brokers"] or not rs:
                cells.append("")
            elif all("error" in r for r in rs):
                cells.append("error")
            else:
                cells.append(fmt_spread(metric, headline_values(s, rs)))
        all_runs = [r for b in cols for r in runs.get(b, [])]
        disturbed = sum(1 for r in all_runs if r.get("disturbed"))
        L.append(f"| {s['name']} | {METRICS[metric][0]} | {' | '.join(cells)} | {', '.join(ratios) or '–'} | "
                 f"{disturbed} of {len(all_runs)} | {t} | {(verdict or '') + (': ' + detail if detail else '')} |")
    L.append("")
    L.append("Cells: median (min–max, spread in % of the median). Ratios are of the medians, Lepus / other; "
             "for latency, CPU and memory lower is better.")
    L.append("")
    cpu = [s for s in scenarios if any(r.get("cpu_us_per_msg") is not None
                                       for rs in results.get(s["name"] + "/all", {}).values() for r in rs)]
    if cpu:
        L.append("Broker CPU per message (user + system time of the broker process, all its threads — RabbitMQ: "
                 "beam.smp — over the measured interval, divided by the messages delivered in it, or confirmed "
                 "where the headline is confirms; backlogs: the drain), µs, median (min–max, spread):")
        L.append("")
        L.append(f"| scenario | {' | '.join(BROKER_TITLE[b] for b in cols)} |")
        L.append(f"|---|{'---:|' * len(cols)}")
        for s in cpu:
            runs = results.get(s["name"] + "/all", {})
            L.append(f"| {s['name']} | " + " | ".join(
                fmt_spread("cpu_us", headline_values(s, runs.get(b, []), "cpu_us_per_msg")) if runs.get(b) else ""
                for b in cols) + " |")
        L.append("")
    conf = [s for s in scenarios if any((results.get(s["name"], {}).get(b) or {}).get("confirm_p50_us")
                                        for b in BROKERS)]
    if conf:
        L.append("Publisher-confirm latency (publish to basic.ack, measured by each producer), p50 / p99:")
        L.append("")
        L.append(f"| scenario | {' | '.join(BROKER_TITLE[b] for b in cols)} |")
        L.append(f"|---|{'---:|' * len(cols)}")
        for s in conf:
            best = results.get(s["name"], {})
            cells = [" / ".join(fmt("latency", (best.get(b) or {}).get(k))
                                for k in ("confirm_p50_us", "confirm_p99_us")) for b in cols]
            L.append(f"| {s['name']} | {' | '.join(cells)} |")
        L.append("")
    if plots:
        L.append("## Plots")
        L.append("")
        for p in plots:
            L.append(f"![{p.stem}]({p.name})")
            L.append("")
    L.append("## Scenarios")
    for s in scenarios:
        L.append("")
        L.append(f"### {s['name']}")
        L.append("")
        L.append(f"{s['description']} (`{s['file']}`)")
        L.append("")
        best = results.get(s["name"], {})
        runs = results.get(s["name"] + "/all", {})
        TABLES[s["kind"]](L, s, runs, best, opts)
        L.append("")
        L.append("```sh")
        seen = []
        for b in s["brokers"]:
            for r in runs.get(b, [])[:1]:
                for c in r.get("commands", []):
                    if c not in seen:
                        seen.append(c)
                        L.append(c)
        L.append("```")
    L.append("")
    L.append("## How this was run")
    L.append("")
    L.append("```sh")
    L.append(build_cmd)
    L.append(opts.command_line)
    L.append("```")
    L.append("")
    L.append("Each run: the broker is started pinned to the broker core(s) (Lepus with one shard per core; "
             "RabbitMQ through `scripts/rabbitmq.sh start`, which starts beam under `taskset` so every "
             "scheduler thread, epmd and erl_child_setup share the core(s), with a wiped data directory), "
             "garagemq with `taskset` and a config file of its own, "
             f"{opts.settle:g} s of rest, its RSS (VmRSS) is read, the generator runs pinned to the "
             "generator core(s) while the broker's CPU time and RSS and the per-core times of /proc/stat are "
             "sampled every 0.2 s, and the broker is stopped. Broker CPU is over the generator's measured "
             "interval (100 % = one core); \"other load\" is the busy time (user, nice, system, irq, softirq) "
             "of the broker's and the generator's cores in that interval minus the broker's and the "
             "generator's CPU time, \"steal\" the steal time of those cores. "
             "Raw logs: the generator's progress lines and the brokers' output are in "
             f"`{opts.log_dir}`.")
    L.append("")
    path.write_text("\n".join(L))


def build(opts):
    """`cargo build --release` of lepus and lepus-perf unless --no-build; returns the command line."""
    build_cmd = "cargo build --release --bin lepus --bin lepus-perf"
    if os.environ.get("CARGO_TARGET_DIR"):
        build_cmd = f"CARGO_TARGET_DIR={os.environ['CARGO_TARGET_DIR']} {build_cmd}"
    if not opts.no_build:
        log(build_cmd)
        r = subprocess.run(["cargo", "build", "--release", "--bin", "lepus", "--bin", "lepus-perf"], cwd=ROOT)
        if r.returncode != 0:
            sys.exit("perf.py: build failed")
    return build_cmd


def run(opts):
    """Runs the scenarios and brokers `opts` (the parsed command line of scripts/perf.py) choose."""
    try:
        scenarios = select(load_scenarios(), opts.scenarios)
    except ScenarioError as e:
        sys.exit(f"perf.py: {e}")
    wanted_brokers = [b.strip() for b in opts.brokers.split(",") if b.strip()]
    for b in wanted_brokers:
        if b not in BROKERS:
            sys.exit(f"perf.py: unknown broker {b}")
    if any(a == "--io-backend" or a.startswith("--io-backend=") for a in shlex.split(opts.lepus_args)):
        # lepus is mio and lepus-uring io_uring by name; a backend given here would
        # either be refused twice by lepus-uring's command line or mislabel a column.
        sys.exit("perf.py: --lepus-args may not choose --io-backend: the brokers lepus (mio) and "
                 "lepus-uring (io_uring) do")
    opts.wanted_brokers = wanted_brokers
    plan = [(s, b) for s in scenarios for b in BROKERS if b in wanted_brokers and b in s["brokers"]]
    total = sum(estimate_s(s, b, opts) for s, b in plan) * opts.repeat
    if opts.list or opts.dry_run:
        for s in scenarios:
            bs = [b for b in s["brokers"] if b in wanted_brokers]
            est = sum(estimate_s(s, b, opts) for b in bs) * opts.repeat
            print(f"{s['name']:26} {s['kind']:17} {','.join(bs):22} ~{est / 60:5.1f} min  {s['description'][:70]}")
            if opts.dry_run:
                for b in bs:
                    port = {"lepus": opts.lepus_port, "rabbitmq": opts.rabbit_port, "relay": opts.relay_port,
                            "garagemq": opts.garagemq_port}[engine(b)]
                    fake = type("B", (), {"port": port})
                    n = messages_for(s, b, opts) if "messages" in s else None
                    extra = {"args": ["-z", str(opts.duration or s.get("duration"))], "publish_args": ["-C", str(n)],
                             "consume_args": ["-D", str(n)]}
                    for key in ("args", "publish_args", "consume_args"):
                        if key in s:
                            print("    " + shlex.join(generator_cmd(opts, fake, [*s[key], *extra[key]])))
        print(f"total ~{total / 60:.0f} min for {len(plan)} runs x {opts.repeat}")
        return

    started = datetime.datetime.now()
    date = started.strftime("%Y-%m-%d")
    if opts.out:
        out_md = Path(opts.out)
    elif opts.profile:
        out_md = None
    else:
        out_md = ROOT / "perf" / "results" / f"{date}.md"
        if out_md.exists():
            out_md = ROOT / "perf" / "results" / f"{date}-{started.strftime('%H%M')}.md"
    if out_md:
        out_md = out_md.resolve()
        out_md.parent.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%d-%H%M%S")
    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"lepus-perf-logs-{stamp}"
    log_dir.mkdir(parents=True)
    opts.log_dir = log_dir
    prof_dir = Path(opts.profile).resolve() if opts.profile else None
    if prof_dir:
        prof_dir.mkdir(parents=True, exist_ok=True)

    build_cmd = build(opts)
    for exe in ("lepus", "lepus-perf"):
        if not (opts.bin / exe).exists():
            sys.exit(f"perf.py: {opts.bin / exe} missing (build first or set CARGO_TARGET_DIR)")
    if "rabbitmq" in [b for _, b in plan] and not Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists():
        sys.exit("perf.py: RabbitMQ is not installed: scripts/rabbitmq.sh install")
    if "garagemq" in [b for _, b in plan]:
        ensure_garagemq()

    restore_congestion = set_tcp_congestion(opts.tcp_congestion) if opts.tcp_congestion else None
    if restore_congestion:
        atexit.register(Path(TCP_CONGESTION).write_text, restore_congestion)
    info = machine_info(opts)
    info["tcp_congestion_was"] = restore_congestion
    log(f"{len(plan)} runs x {opts.repeat}, estimated {total / 60:.0f} min; logs in {log_dir}")
    brokers = {b: cls(opts, log_dir) for b, cls in CLASSES.items()}
    results = {}
    current = None

    def on_term(signum, frame):
        raise KeyboardInterrupt

    # Also SIGINT: a shell started without job control may have ignored it for us.
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    # Round robin: every (scenario, broker) once, then again, so that a disturbance
    # of a few minutes hits one repeat of each rather than all repeats of one.
    order = [(i, s, b) for i in range(opts.repeat) for s, b in plan]
    try:
        for n, (i, s, b) in enumerate(order):
            current = brokers[b]
            tag = f"{s['name']}" + (f"-{i + 1}" if opts.repeat > 1 else "")
            log(f"[{n + 1}/{len(order)}] {s['name']} on {b}"
                + (f" (repeat {i + 1}/{opts.repeat})" if opts.repeat > 1 else ""))
            perf_out = None
            if prof_dir:
                perf_out = prof_dir / (f"{date}-{s['name']}-{b}" + (f"-{i + 1}" if opts.repeat > 1 else ""))
            r = run_once(s, current, opts, tag, log_dir, perf_out)
            r["repeat"] = i + 1
            current = None
            if b == "rabbitmq" and getattr(brokers[b], "started_msg", None):
                info["rabbit_started"] = brokers[b].started_msg.replace("rabbitmq.sh: ", "")
            if prof_dir and perf_out:
                r["perf_data"] = str(perf_out)
            results.setdefault(s["name"] + "/all", {}).setdefault(b, []).append(r)
            headline = s["headline"]
            log(f"  -> {'error: ' + r['error'] if 'error' in r else fmt(headline, r.get(headline))}"
                f" {METRICS[headline][0]}"
                + (f", {fmt('cpu_us', r['cpu_us_per_msg'])}/msg" if r.get("cpu_us_per_msg") else "")
                + (f" ({'; '.join(r['notes'])})" if r.get("notes") else ""))
    except KeyboardInterrupt:
        log("interrupted: stopping the broker")
        if current:
            current.stop()
        if not results:
            sys.exit(130)
    for s in scenarios:
        for b, runs in results.get(s["name"] + "/all", {}).items():
            flag_outliers(runs, s["headline"], opts.disturbed_pct)
            results.setdefault(s["name"], {})[b] = median_run(runs, s["headline"])
    info["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    elapsed = (datetime.datetime.now() - started).total_seconds()
    raw = log_dir / "results.json"
    raw.write_text(json.dumps({"info": info, "results": results}, indent=1, default=str))
    if prof_dir:
        (prof_dir / f"{date}-runs.json").write_text(json.dumps(
            [{"scenario": s["name"], "broker": b, "pid": r.get("broker_pid"), "perf_data": r.get("perf_data")}
             for s in scenarios for b, rs in results.get(s["name"] + "/all", {}).items() for r in rs], indent=1))
    if out_md:
        plots = make_plots(out_md, scenarios, results)
        write_markdown(opts, out_md, scenarios, results, info, plots, started, elapsed, build_cmd)
        log(f"wrote {out_md}" + "".join(f", {p.name}" for p in plots))
    # Short summary on stdout: medians (min–max, spread), CPU per message, disturbed runs.
    for s in scenarios:
        best = results.get(s["name"], {})
        runs = results.get(s["name"] + "/all", {})
        m = s["headline"]
        cells = []
        for b, rs in runs.items():
            if all("error" in r for r in rs):
                cells.append(f"{b} error")
                continue
            c = f"{b} {fmt_spread(m, headline_values(s, rs))}"
            cpu = spread(headline_values(s, rs, "cpu_us_per_msg"))
            if cpu:
                c += f" [{fmt('cpu_us', cpu[0])}/msg]"
            d = sum(1 for r in rs if r.get("disturbed"))
            if d:
                c += f" ({d} disturbed)"
            cells.append(c)
        verdict, detail = evaluate(s, best)
        print(f"{s['name']:26} {METRICS[m][0]:30} {'; '.join(cells)}"
              + (f"  [{verdict}{': ' + detail if detail else ''}]" if verdict else ""))
