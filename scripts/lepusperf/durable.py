"""Scenarios of `kind = "backlog"` (fill a deep queue, with the publish
rate along the fill, then drain it) and `kind = "restart"` (fill, stop the
broker by SIGKILL or gracefully, restart it on its data, drain); and their
tables. See perf/README.md.

Times are taken with time.monotonic() (CLOCK_MONOTONIC on Linux), the clock
lepus-perf reports `t0_mono_ns` and `first_delivery_mono_ns` in, so both
can be compared.
"""
import os
import re
import shlex
import shutil
import socket
import time
from pathlib import Path

from .generator import PROGRESS, generator_cmd, metrics_from_json
from .report import BROKER_TITLE, engine, fmt, log, mb, runs_table, si
from .scenarios import messages_for
from .throughput import cpu_us_per_msg, load_figures
from .wire import PROTOCOL_HEADER

# lepus-perf's progress line: "time 1.003 s, sent 123 msg/s, confirmed 120 msg/s, ..."
RATE = re.compile(r"(sent|confirmed|nacked|returned|received) ([0-9]+) msg/s")
# Lepus' tracing output, e.g. `... took_ms=12.3 "message log recovered"` or JSON-ish fields.
RECOVERED = re.compile(r"message log recovered")
FIELD = re.compile(r"\b(took_ms|messages|segments|bytes)[=:]\s*\"?([0-9.]+)")
# Fewer progress lines (seconds) than this: no first/last 10 % rates.
MIN_PROGRESS_LINES = 5


def check_disk(s, broker, opts, res):
    """Warns (log and notes) when the broker's data directory may not hold the backlog
    (Lepus' message log takes ~85 B per 16 B message; RabbitMQ is not checked)."""
    data = getattr(broker, "data_dir", None)
    if not data:
        return
    n = messages_for(s, broker.name, opts)
    need = n * 85
    free = shutil.disk_usage(data).free
    if free < need * 1.1:
        msg = f"{data}: {free / 2**30:.1f} GiB free, the backlog needs ~{need / 2**30:.1f} GiB (--data-root)"
        log(f"  warning: {msg}")
        res["notes"].append(msg)


def phase_timeout(n):
    """Seconds a fill or drain of n messages may take before it is interrupted."""
    return max(1800.0, n / 10_000)


# ---------------------------------------------------------------- progress lines


def progress(log_path, offset):
    """[(t, {field: msg/s})] from the progress lines of the lepus-perf run whose
    `$ command` line starts at byte `offset` of the log (up to the next command)."""
    out = []
    with open(log_path) as f:
        f.seek(offset)
        for i, line in enumerate(f):
            if i > 0 and line.startswith("$ "):
                break
            m = PROGRESS.match(line)
            if m:
                out.append((float(m.group(1)), {k: int(v) for k, v in RATE.findall(line)}))
    return out


def cumulative(lines, field, total, duration):
    """(t, messages so far) points from per-interval rates, ending at (duration, total)."""
    pts, c, t_prev = [(0.0, 0.0)], 0.0, 0.0
    for t, rates in lines:
        c += rates.get(field, 0) * (t - t_prev)
        pts.append((t, min(c, total)))
        t_prev = t
    if duration and duration > t_prev:
        pts.append((duration, float(total)))
    return pts


def time_at(pts, count):
    """When the cumulative curve reached `count` (linear between points)."""
    for (t0, c0), (t1, c1) in zip(pts, pts[1:]):
        if c1 >= count:
            return t0 if c1 == c0 else t0 + (t1 - t0) * (count - c0) / (c1 - c0)
    return pts[-1][0]


def fill_phases(lines, field, total, duration):
    """Rates over the first and the last 10 % of `total` messages, and last / first in %."""
    if not total or not duration:
        return {}
    pts = cumulative(lines, field, total, duration)
    tenth = total / 10
    t_first, t_last_from = time_at(pts, tenth), time_at(pts, total - tenth)
    first = tenth / t_first if t_first > 0 else None
    last = tenth / (duration - t_last_from) if duration > t_last_from else None
    out = {"fill_points": len(lines)}
    if len(lines) >= MIN_PROGRESS_LINES:  # shorter fills: too coarse to say anything
        out.update(fill_first10_per_s=first, fill_last10_per_s=last)
        if first and last:
            out["fill_hold_pct"] = 100.0 * last / first
    return out


def backlog_fill_metrics(res, gen_log, offset, fill_json, sampler):
    """Adds the first/last 10 % publish rates and the peak RSS while filling to a backlog result."""
    field = "confirmed" if fill_json.get("confirm") else "sent"
    total = fill_json.get(field) or 0
    res.update(fill_phases(progress(gen_log, offset), field, total, fill_json.get("duration_s")))
    peak = sampler.rss_peak_kb()
    res["fill_rss_peak_kb"] = peak
    res["fill_rss_peak_mb"] = peak / 1024 if peak else None
    points = res.get("fill_points", 0)
    if points < MIN_PROGRESS_LINES:
        res["notes"].append(f"fill too short for first/last 10 % rates ({points} progress lines)")
    elif points < 50:
        res["notes"].append(f"first/last 10 % rates from {points} progress lines (coarse)")


# ---------------------------------------------------------------- backlog


def run_backlog(s, gen, res, tag, perf_out):
    """Fills a backlog of messages_for(...) messages, then drains it, into `res`;
    False if it failed (res["error"] says why)."""
    opts, broker, gen_log = gen.opts, gen.broker, gen.log_path
    n = messages_for(s, broker.name, opts)
    check_disk(s, broker, opts, res)
    fill = generator_cmd(opts, broker, [*s["publish_args"], "-C", str(n)])
    drain = generator_cmd(opts, broker, [*s["consume_args"], "-D", str(n)])
    res["commands"] += [shlex.join(fill), shlex.join(drain)]
    fill_at = os.path.getsize(gen_log)
    j1, sm1, t1, notes1 = gen.run(fill, timeout=phase_timeout(n),
                                  perf_out=perf_out and Path(str(perf_out) + "-fill"),
                                  perf_after_progress=False)
    time.sleep(opts.settle)
    rss_full = broker.rss_kb()
    j2, sm2, t2, notes2 = gen.run(drain, timeout=phase_timeout(n),
                                  perf_out=perf_out and Path(str(perf_out) + "-drain"),
                                  perf_after_progress=False)
    res["notes"] += notes1 + notes2
    if j1 is None or j2 is None:
        res["error"] = f"no JSON summary from lepus-perf (see {gen_log})"
        return False
    m1, m2 = metrics_from_json(j1), metrics_from_json(j2)
    res["messages"] = n
    res["fill_per_s"] = m1["confirmed_per_s"] or m1["sent_per_s"]
    res["fill_s"] = m1["duration_s"]
    res["drain_per_s"] = m2["received_per_s"]
    res["received_per_s"] = m2["received_per_s"]
    res["drain_s"] = m2["duration_s"]
    res["received"] = m2["received"]
    res["sent"] = m1["sent"]
    res["errors"] = m1["errors"] + m2["errors"]
    res["rss_full_kb"] = rss_full
    res["fill_confirm_p50_us"], res["fill_confirm_p99_us"] = m1["confirm_p50_us"], m1["confirm_p99_us"]
    backlog_fill_metrics(res, gen_log, fill_at, j1, sm1)
    rss0 = res["rss_before_kb"]
    if rss_full and rss0:
        res["bytes_per_message"] = (rss_full - rss0) * 1024 / n
    res["broker_cpu_pct"] = sm2.cpu_pct(t2, m2["duration_s"])
    res["fill_broker_cpu_pct"] = sm1.cpu_pct(t1, m1["duration_s"])
    res.update(load_figures(sm2, t2, m2["duration_s"], m2["generator_cpu_pct"], opts))
    # CPU per message: of the drain per delivery (the headline's messages), of the fill per publish;
    # over the whole lepus-perf run (connecting included: the broker does nothing else then).
    res["cpu_us_per_msg"] = cpu_us_per_msg(sm2.cpu_total_s(), m2["received"])
    res["fill_cpu_us_per_msg"] = cpu_us_per_msg(sm1.cpu_total_s(), m1["sent"])
    res["rss_peak_kb"] = max((x for x in (sm1.rss_peak_kb(), sm2.rss_peak_kb()) if x), default=None)
    res["generator_cpu_pct"] = m2["generator_cpu_pct"]
    if res["received"] != n:
        res["notes"].append(f"drained {res['received']} of {n}")
    return True


def backlog_table(L, s, runs, best, opts):
    """Appends the scenario's table (every run of every broker) to the markdown lines L."""
    def rows(b, r):
        hold = r.get("fill_hold_pct")
        phases = (f"{si(r.get('fill_first10_per_s'))} / {si(r.get('fill_last10_per_s'))}"
                  + (f" ({hold:.0f} %)" if hold is not None else ""))
        clat = " / ".join(fmt("latency", r.get(k)) for k in ("fill_confirm_p50_us", "fill_confirm_p99_us"))
        return [f"| {BROKER_TITLE[b]} | {r['messages']:,} | {si(r.get('fill_per_s'))} | {phases} | "
                f"{clat} | {si(r.get('drain_per_s'))} | {r['fill_s']:.1f} / {r['drain_s']:.1f} | "
                f"{mb(r.get('fill_rss_peak_kb'))} | "
                f"{mb(r.get('rss_before_kb'))} / {mb(r.get('rss_full_kb'))} / "
                f"{mb(r.get('rss_after_kb'))} | {fmt('bytes', r.get('bytes_per_message'))} | "
                f"{fmt('cpu_us', r.get('fill_cpu_us_per_msg'))} / {fmt('cpu_us', r.get('cpu_us_per_msg'))} | "
                f"{'; '.join(r.get('notes', []))} |"]

    runs_table(L, s, runs,
               "| broker | messages | fill msg/s (confirmed) | fill msg/s first 10 % / last 10 % | "
               "confirm latency p50 / p99 | drain msg/s | fill / drain s | broker RSS MB peak while filling | "
               "broker RSS MB before / full / after | broker memory per queued message | "
               "broker CPU per message fill / drain | notes |",
               "|---|---:|---:|---|---|---:|---|---:|---|---:|---|---|", rows)


# ---------------------------------------------------------------- restart


def amqp_ready(port, deadline):
    """Waits until the broker answers the AMQP protocol header with connection.start;
    returns the monotonic time it did, or None at the deadline."""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sk:
                sk.sendall(PROTOCOL_HEADER)
                sk.settimeout(max(deadline - time.monotonic(), 0.1))
                data = sk.recv(7)
                if data[:1] == b"\x01":  # a method frame: connection.start
                    return time.monotonic()
        except OSError:
            pass
        time.sleep(0.01)
    return None


def lepus_recovery(log_path):
    """took_ms (the slowest shard) and messages (all shards) of Lepus' "message log recovered" lines."""
    took, messages, found = 0.0, 0, False
    try:
        with open(log_path, errors="replace") as f:
            for line in f:
                if RECOVERED.search(line):
                    found = True
                    fields = dict(FIELD.findall(re.sub(r"\x1b\[[0-9;]*m", "", line)))
                    took = max(took, float(fields.get("took_ms", 0)))
                    messages += int(float(fields.get("messages", 0)))
    except OSError:
        return {}
    return {"recovery_took_ms": took, "recovered_messages": messages} if found else {}


def restart_once(s, broker, opts, tag, gen, stop_mode, n, res):
    """One cycle on a broker started fresh by the caller: fill, stop (kill or graceful),
    restart on the same data, wait for AMQP, drain. Returns the cycle's result."""
    r = {"stop": stop_mode, "messages": n}
    fill = generator_cmd(opts, broker, [*s["publish_args"], "-C", str(n)])
    drain = generator_cmd(opts, broker, [*s["consume_args"], "-D", str(n)])
    res["commands"] += [c for c in (shlex.join(fill), shlex.join(drain)) if c not in res["commands"]]
    j1, sm1, _, notes1 = gen.run(fill, timeout=phase_timeout(n))
    res["notes"] += notes1
    if j1 is None:
        r["error"] = "no JSON summary from the publisher"
        return r
    r["fill_per_s"] = j1.get("confirmed_per_s") or j1.get("sent_per_s")
    r["fill_s"] = j1.get("duration_s")
    r["confirmed"] = j1.get("confirmed")
    r["rss_full_kb"] = broker.rss_kb()
    cl = j1.get("confirm_latency_us", {})
    r["confirm_p50_us"], r["confirm_p99_us"] = cl.get("p50"), cl.get("p99")
    t = time.monotonic()
    if stop_mode == "kill":
        broker.kill()
    else:
        broker.halt()
    r["stop_s"] = time.monotonic() - t
    time.sleep(opts.settle)
    t_start = broker.restart(f"{tag}-{stop_mode}-restart")
    deadline = t_start + phase_timeout(n)
    t_ready = amqp_ready(broker.port, deadline)
    if t_ready is None:
        r["error"] = "the broker did not accept AMQP connections after the restart"
        return r
    r["accept_s"] = t_ready - t_start
    broker.after_restart()  # RabbitMQ: its pid; the start script may still be finishing
    r["rss_restarted_kb"] = broker.rss_kb()
    j2, sm2, _, notes2 = gen.run(drain, timeout=phase_timeout(n))
    broker.restart_done()
    res["notes"] += notes2
    if j2 is None:
        r["error"] = "no JSON summary from the consumer"
        return r
    first = j2.get("first_delivery_mono_ns") or 0
    if first:
        r["first_delivery_s"] = first / 1e9 - t_start
        end = j2["t0_mono_ns"] / 1e9 + j2["duration_s"]
        if end > first / 1e9:
            r["drain_per_s"] = j2["received"] / (end - first / 1e9)
    r["received"] = j2.get("received")
    r["drain_rss_peak_kb"] = sm2.rss_peak_kb()
    if engine(broker.name) == "lepus":
        r.update(lepus_recovery(broker.log_path))
    if j2.get("received") != n:
        r["notes"] = [f"received {j2.get('received')} of {n}"]
    r["errors"] = (j1.get("errors") or []) + (j2.get("errors") or [])
    return r


def run_restart(s, gen, res, tag, perf_out):
    """kind = "restart": for each stop mode, a fresh broker is filled, stopped and
    restarted (the caller started the first one and stops the last). True: the
    result is complete even when a cycle failed (res["error"] then says why)."""
    opts, broker = gen.opts, gen.broker
    check_disk(s, broker, opts, res)
    n = messages_for(s, broker.name, opts)
    modes = opts.restart_stops.split(",") if opts.restart_stops else s.get("stops", ["kill"])
    res["messages"] = n
    res["cycles"] = []
    for i, mode in enumerate(modes):
        if mode not in ("kill", "graceful"):
            res["notes"].append(f"unknown stop mode {mode}")
            continue
        if i > 0:
            broker.stop()
            broker.start(f"{tag}-{mode}")
            time.sleep(opts.settle)
        log(f"  {broker.name}: {n:,} messages, stop = {mode}")
        r = restart_once(s, broker, opts, tag, gen, mode, n, res)
        res["cycles"].append(r)
        res["notes"] += [f"{mode}: {x}" for x in r.get("notes", []) + r.get("errors", [])]
        if "error" in r:
            res["notes"].append(f"{mode}: {r['error']}")
    ok = [c for c in res["cycles"] if "error" not in c]
    if not ok:
        res["error"] = "; ".join(c.get("error", "") for c in res["cycles"]) or "no cycle ran"
        return True
    head = ok[0]
    for k in ("first_delivery_s", "accept_s", "drain_per_s", "fill_per_s"):
        res["restart_" + k if not k.endswith("_per_s") else k] = head.get(k)
    res["rss_peak_kb"] = max((c.get("drain_rss_peak_kb") or 0 for c in ok), default=None)
    return True


def restart_table(L, s, runs, best, opts):
    """Appends the scenario's table (every cycle of every run of every broker) to the markdown lines L."""
    def cycle(b, c):
        rec = ""
        if c.get("recovery_took_ms") is not None:
            rec = f"{c['recovery_took_ms']:,.0f} ms ({c.get('recovered_messages', 0):,} msgs)"
        secs = [f"{c[k]:.2f} s" if c.get(k) is not None else "–" for k in ("stop_s", "accept_s", "first_delivery_s")]
        notes = "; ".join(c.get("notes", []) + c.get("errors", []) + ([c["error"]] if "error" in c else []))
        return (f"| {BROKER_TITLE[b]} | {c['stop']} | {c['messages']:,} | {si(c.get('fill_per_s'))} | "
                f"{' | '.join(secs)} | {rec} | {si(c.get('drain_per_s'))} | "
                f"{mb(c.get('rss_full_kb'))} / {mb(c.get('rss_restarted_kb'))} / "
                f"{mb(c.get('drain_rss_peak_kb'))} | {notes} |")

    runs_table(L, s, runs,
               "| broker | stop | messages | publish msg/s (confirmed) | stop took | accepting AMQP after | "
               "first delivery after | Lepus log recovery | drain msg/s | broker RSS MB full / restarted / "
               "peak draining | notes |",
               "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
               lambda b, res: [cycle(b, c) for c in res.get("cycles", [])],
               failed=lambda res: "error" in res and not res.get("cycles"))
    L.append("")
    L.append("Times are from the start of the broker process (Lepus: its exec; RabbitMQ: "
             "`scripts/rabbitmq.sh start` with `RABBIT_KEEP_DATA=1`, whose wrapper scripts are part of "
             "starting RabbitMQ) to the first connection.start in reply to an AMQP header, and to the "
             "consumer's first delivery (the consumer starts once the broker accepts). Drain msg/s is from "
             "the first delivery to the last. kill = SIGKILL (a crash); graceful = SIGTERM / `rabbitmqctl stop`.")

