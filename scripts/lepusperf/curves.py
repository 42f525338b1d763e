"""Curves instead of points (`scripts/perf.py --curves`):

- throughput against body size: 1P -> 1Q -> 1C, auto-ack, unpaced, bodies of
  16 B ... 1 MiB (--sizes); from 64 KiB on (CONFIRM_FROM) the publisher uses
  confirms with a window of CONFIRM_BYTES / size messages (at least 16), as
  the body-1mib scenario does, so an unpaced publisher cannot queue GBs in a
  few seconds on a broker without flow control;
- latency against offered load: the same with 16 B bodies at fixed rates
  (lepus-perf -r: latency from each message's scheduled send time, so a
  broker that falls behind shows it) from 10 k msg/s to unpaced (--rates,
  0 = unpaced: the saturation point, latency from the batch's send time).

For each repeat, each broker (lepus, rabbitmq, garagemq, relay; --brokers)
is started once, pinned like the scenario suite's, runs every point of both
curves in turn (each point on its own queue), and is stopped; so brokers
alternate per repeat rather than per point (a RabbitMQ start takes ~15 s).
Each figure is the median of the repeats. Writes perf/results/<date>-curves.md
(--out) with the tables and SVG plots next to it: <stem>-size-msgs.svg,
<stem>-size-bytes.svg, <stem>-latency-load.svg.
"""
import datetime
import json
import os
import shlex
import signal
import sys
import time
from pathlib import Path

from .brokers import CLASSES, ensure_garagemq
from .generator import Generator, generator_cmd, metrics_from_json
from .plots import svg_lines
from .proc import ROOT, proc_stat
from .report import BROKER_TITLE, BROKERS, engine, fmt, fmt_spread, log, si, spread
from .throughput import cpu_us_per_msg, load_figures

SIZES = [16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576]
RATES = [10_000, 30_000, 100_000, 300_000, 1_000_000, 0]
# Bodies from this size on are published with confirms (window CONFIRM_BYTES / size).
CONFIRM_FROM = 65536
CONFIRM_BYTES = 16 << 20
# Offered loads the relay cannot stand in for: none (one producer, one consumer).
PERCENTILES = (("latency_p50_us", "p50"), ("latency_p99_us", "p99"), ("latency_p999_us", "p99.9"))


def size_label(n):
    for div, suf in ((1 << 20, " MiB"), (1 << 10, " KiB")):
        if n >= div and n % div == 0:
            return f"{n // div}{suf}"
    return f"{n} B"


def points(opts):
    """[(curve, x, lepus-perf args)] of the curves asked for."""
    sizes = [int(x) for x in opts.sizes.split(",")] if opts.sizes else SIZES
    rates = [int(float(x)) for x in opts.rates.split(",")] if opts.rates else RATES
    out = []
    if opts.curve in ("all", "size"):
        for n in sizes:
            args = ["-x1", "-y1", "-s", str(max(n, 16)), "-a"]
            if n >= CONFIRM_FROM:
                args += ["-c", str(max(CONFIRM_BYTES // n, 16))]
            out.append(("size", n, args))
    if opts.curve in ("all", "latency"):
        for r in rates:
            out.append(("latency", r, ["-x1", "-y1", "-s16", "-a"] + (["-r", str(r)] if r else [])))
    return out


def run_point(gen, opts, curve, x, args, k):
    """One lepus-perf run of a curve point on a started broker; returns its result."""
    res = {"curve": curve, "x": x, "notes": []}
    cmd = generator_cmd(opts, gen.broker, [*args, "-u", f"perf-curve-{k}", "-z", str(opts.duration)])
    res["command"] = shlex.join(cmd)
    j, sampler, t_measure, notes = gen.run(cmd, timeout=opts.duration + 120)
    res["notes"] += notes
    if j is None:
        res["error"] = f"no JSON summary from lepus-perf (see {gen.log_path})"
        return res
    res.update(metrics_from_json(j))
    d = res["duration_s"]
    res["broker_cpu_pct"] = sampler.cpu_pct(t_measure, d)
    res["cpu_us_per_msg"] = cpu_us_per_msg(sampler.cpu_s(t_measure, d), j.get("received"))
    res.update(load_figures(sampler, t_measure, d, res["generator_cpu_pct"], opts))
    res["mib_per_s"] = (res["received_per_s"] or 0) * x / 2**20 if curve == "size" else None
    if curve == "latency" and x and res.get("received_per_s") is not None and res["received_per_s"] < 0.95 * x:
        res["notes"].append(f"saturated: {si(res['received_per_s'])} of {si(x)} msg/s offered")
    other, steal = res.get("other_cpu_pct"), res.get("steal_pct")
    if (other or 0) > opts.disturbed_load or (steal or 0) > opts.disturbed_steal:
        res["disturbed"] = True
        res["notes"].append(f"disturbed: other load {other or 0:.0f} %, steal {steal or 0:.0f} % of a core")
    return res


def alive(broker):
    return broker.pid is not None and proc_stat(broker.pid) is not None


def run(opts):
    """--curves: measures the curves and writes the report."""
    opts.duration = opts.duration or 5
    wanted = [b.strip() for b in opts.brokers.split(",") if b.strip()]
    for b in wanted:
        if b not in BROKERS:
            sys.exit(f"perf.py: unknown broker {b}")
    brokers_order = [b for b in BROKERS if b in wanted]
    pts = points(opts)
    per_point = opts.duration + 2.5
    start = {"lepus": 2, "rabbitmq": 20, "garagemq": 2, "relay": 2}
    total = sum(start[engine(b)] + len(pts) * per_point for b in brokers_order) * opts.repeat
    if opts.list or opts.dry_run:
        for curve, x, args in pts:
            print(f"{curve:8} {x:>8}  lepus-perf {shlex.join(args)} -z {opts.duration}")
        print(f"{len(pts)} points x {len(brokers_order)} brokers x {opts.repeat} repeats, ~{total / 60:.0f} min")
        return
    if "rabbitmq" in brokers_order and not Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists():
        sys.exit("perf.py: RabbitMQ is not installed: scripts/rabbitmq.sh install")
    if "garagemq" in brokers_order:
        ensure_garagemq()
    for exe in ("lepus", "lepus-perf"):
        if not (opts.bin / exe).exists():
            sys.exit(f"perf.py: {opts.bin / exe} missing (build first or set CARGO_TARGET_DIR)")

    started = datetime.datetime.now()
    date = started.strftime("%Y-%m-%d")
    out_md = Path(opts.out) if opts.out else ROOT / "perf" / "results" / f"{date}-curves.md"
    out_md = out_md.resolve()
    out_md.parent.mkdir(parents=True, exist_ok=True)
    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"lepus-perf-curves-{started.strftime('%Y%m%d-%H%M%S')}"
    log_dir.mkdir(parents=True)
    opts.log_dir = log_dir
    brokers = {b: CLASSES[b](opts, log_dir) for b in brokers_order}
    log(f"{len(pts)} points x {len(brokers_order)} brokers x {opts.repeat}, ~{total / 60:.0f} min; logs in {log_dir}")
    results = {}  # (curve, x) -> broker -> [result]
    commands = {}
    current = None

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        for i in range(opts.repeat):
            for b in brokers_order:
                broker = current = brokers[b]
                tag = f"curves-{i + 1}"
                broker.commands = []
                for k, (curve, x, args) in enumerate(pts):
                    if not alive(broker):
                        if broker.pid is not None:
                            log(f"  {b} is gone: starting it again")
                            r0 = results.get(pts[k - 1][:2], {}).get(b, []) if k else []
                            if r0:
                                r0[-1]["notes"].append(f"{b} exited during or after this point")
                            broker.stop()
                        try:
                            broker.start(f"{tag}-{k}")
                        except (RuntimeError, ValueError, OSError) as e:
                            broker.stop()
                            broker.pid = None
                            r = {"curve": curve, "x": x, "notes": [], "error": f"{b} did not start: {e}"}
                            results.setdefault((curve, x), {}).setdefault(b, []).append(r)
                            log(f"  {b} {curve} {x}: error {r['error']}")
                            continue
                        time.sleep(opts.settle)
                    gen = Generator(opts, broker, log_dir / f"{tag}-{b}-generator.log")
                    r = run_point(gen, opts, curve, x, args, k)
                    commands.setdefault(b, broker.commands[:1])
                    commands.setdefault(f"{b}/{curve}/{x}", r.get("command"))
                    results.setdefault((curve, x), {}).setdefault(b, []).append(r)
                    if "error" in r:
                        log(f"  {b} {curve} {x}: error {r['error']}")
                    elif curve == "size":
                        log(f"  {b} {size_label(x)}: {si(r.get('received_per_s'))} msg/s, "
                            f"{r.get('mib_per_s') or 0:.0f} MiB/s, {fmt('cpu_us', r.get('cpu_us_per_msg'))}/msg"
                            + (f" ({'; '.join(r['notes'])})" if r["notes"] else ""))
                    else:
                        log(f"  {b} {si(x) if x else 'unpaced'}: {si(r.get('received_per_s'))} msg/s, p50/p99/p99.9 "
                            + " / ".join(fmt("latency", r.get(key)) for key, _ in PERCENTILES)
                            + (f" ({'; '.join(r['notes'])})" if r["notes"] else ""))
                    time.sleep(0.3)
                broker.stop()
                broker.pid = None
                current = None
    except KeyboardInterrupt:
        log("interrupted: stopping the broker")
        if current:
            current.stop()
        if not results:
            sys.exit(130)
    (log_dir / "curves.json").write_text(json.dumps(
        {f"{c}/{x}": v for (c, x), v in results.items()}, indent=1, default=str))
    plots = make_plots(out_md, pts, results, brokers_order)
    write_markdown(opts, out_md, pts, results, brokers_order, plots, started, commands)
    log(f"wrote {out_md}" + "".join(f", {p.name}" for p in plots))


def med(runs, key):
    sp = spread([r.get(key) for r in runs if "error" not in r])
    return sp[0] if sp else None


def make_plots(out_md, pts, results, brokers):
    stem = out_md.with_suffix("")
    plots = []
    sizes = [x for c, x, _ in pts if c == "size"]
    rates = [x for c, x, _ in pts if c == "latency"]
    if sizes:
        for key, name, ylabel, title in (
                ("received_per_s", "size-msgs", "msg/s received",
                 "Throughput against body size (1P-1Q-1C, auto-ack)"),
                ("mib_per_s", "size-bytes", "MiB/s of bodies received",
                 "Body bytes against body size (1P-1Q-1C, auto-ack)")):
            series = [(BROKER_TITLE[b], b, None, [(x, med(results.get(("size", x), {}).get(b, []), key))
                                                   for x in sizes]) for b in brokers]
            p = Path(f"{stem}-{name}.svg")
            if svg_lines(p, title, "body size, bytes", ylabel, series,
                         xfmt=lambda v: size_label(int(v)) if v >= 1 else f"{v:g}"):
                plots.append(p)
    if rates:
        series = []
        for b in brokers:
            for key, label in PERCENTILES:
                ps = []
                for x in rates:
                    runs = results.get(("latency", x), {}).get(b, [])
                    ps.append((med(runs, "received_per_s"), med(runs, key)))
                series.append((f"{BROKER_TITLE[b]} {label}", b, label, ps))
        p = Path(f"{stem}-latency-load.svg")
        if svg_lines(p, "Latency against throughput (16 B, 1P-1Q-1C, offered 10 k msg/s ... unpaced)",
                     "msg/s received", "latency, µs", series):
            plots.append(p)
    return plots


def write_markdown(opts, path, pts, results, brokers, plots, started, commands):
    date = started.strftime("%Y-%m-%d")
    elapsed = (datetime.datetime.now() - started).total_seconds()
    L = [f"# Curves: throughput against body size, latency against load ({date})", "",
         f"Written by `scripts/perf.py --curves` ({started.strftime('%Y-%m-%d %H:%M')}, {elapsed / 60:.0f} min): "
         f"broker on core(s) {opts.broker_cpus}, `lepus-perf` on core(s) {opts.generator_cpus}, {opts.duration} s "
         f"per point, {opts.repeat} repeat(s) (each broker started once per repeat and run through every point; "
         "brokers alternate per repeat). Cells: median (min–max, spread in % of the median) over the repeats. "
         "Broker CPU per message: the broker process's user + system time over the measured interval ÷ messages "
         "received. See `scripts/lepusperf/curves.py`.", ""]
    sizes = [x for c, x, _ in pts if c == "size"]
    rates = [x for c, x, _ in pts if c == "latency"]
    if sizes:
        L += ["## Throughput against body size", "",
              f"1 producer → 1 queue → 1 consumer, auto-ack, unpaced; from {size_label(CONFIRM_FROM)} on with "
              f"confirms, window {size_label(CONFIRM_BYTES)} / size (≥ 16 messages).", "",
              "| body | " + " | ".join(f"{BROKER_TITLE[b]} msg/s | MiB/s | CPU/msg" for b in brokers) + " |",
              "|---|" + "---:|---:|---:|" * len(brokers)]
        for x in sizes:
            cells = []
            for b in brokers:
                runs = results.get(("size", x), {}).get(b, [])
                ok = [r for r in runs if "error" not in r]
                if runs and not ok:
                    cells += ["error", "", ""]
                    continue
                cells += [fmt_spread("received_per_s", [r.get("received_per_s") for r in ok]),
                          f"{med(ok, 'mib_per_s'):,.1f}" if med(ok, "mib_per_s") is not None else "–",
                          fmt("cpu_us", med(ok, "cpu_us_per_msg"))]
            L.append(f"| {size_label(x)} | " + " | ".join(cells) + " |")
        L.append("")
    if rates:
        L += ["## Latency against offered load", "",
              "1 producer → 1 queue → 1 consumer, 16 B, auto-ack, at a fixed rate (`-r`: latency from each "
              "message's scheduled send time, so a broker that falls behind shows it as latency); 0 = unpaced "
              "(saturation; latency from each batch's send time). Cells: msg/s received, and latency p50 / p99 / "
              "p99.9 (medians of the repeats).", "",
              "| offered msg/s | " + " | ".join(f"{BROKER_TITLE[b]} received | p50 / p99 / p99.9" for b in brokers)
              + " |",
              "|---|" + "---:|---|" * len(brokers)]
        for x in rates:
            cells = []
            for b in brokers:
                runs = results.get(("latency", x), {}).get(b, [])
                ok = [r for r in runs if "error" not in r]
                if runs and not ok:
                    cells += ["error", ""]
                    continue
                cells += [fmt_spread("received_per_s", [r.get("received_per_s") for r in ok]),
                          " / ".join(fmt("latency", med(ok, key)) for key, _ in PERCENTILES)]
            L.append(f"| {si(x) if x else 'unpaced'} | " + " | ".join(cells) + " |")
        L.append("")
    notes = [(b, c, x, r) for (c, x), per in results.items() for b, runs in per.items() for r in runs
             if r.get("notes") or "error" in r]
    if notes:
        L += ["Notes (saturated: received < 95 % of offered; disturbed: other load or steal on the benchmark cores "
              f"above {opts.disturbed_load:g} % / {opts.disturbed_steal:g} % of a core):", ""]
        for b, c, x, r in notes:
            what = size_label(x) if c == "size" else (si(x) if x else "unpaced")
            L.append(f"- {BROKER_TITLE[b]}, {c} {what}: " + "; ".join(r.get("notes", []) + (
                [r["error"]] if "error" in r else [])))
        L.append("")
    for p in plots:
        L += [f"![{p.stem}]({p.name})", ""]
    L += ["## Commands", "", "```sh", opts.command_line]
    for b in brokers:
        L += [c for c in commands.get(b, [])]
    for c, x, _ in pts:
        cmd = commands.get(f"{brokers[0]}/{c}/{x}") if brokers else None
        if cmd:
            L.append(cmd)
    L += ["```", "", f"Generator commands are shown for {BROKER_TITLE[brokers[0]]}; the others differ only in the "
          f"port. Raw logs and JSON: `{opts.log_dir}`.", ""]
    path.write_text("\n".join(L))
