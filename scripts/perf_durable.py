"""The durability scenarios of scripts/perf.py: publish rates along a deep
backlog (`kind = "backlog"`), and restarting a broker on its data
(`kind = "restart"`). Imported by perf.py; see perf/README.md.

Times are taken with time.monotonic() (CLOCK_MONOTONIC on Linux), the clock
lepus-perf reports `t0_mono_ns` and `first_delivery_mono_ns` in, so both
can be compared.
"""
import re
import shlex
import shutil
import socket
import time

import perf as P

# lepus-perf's progress line: "time 1.003 s, sent 123 msg/s, confirmed 120 msg/s, ..."
RATE = re.compile(r"(sent|confirmed|nacked|returned|received) ([0-9]+) msg/s")
# Lepus' tracing output, e.g. `... took_ms=12.3 "message log recovered"` or JSON-ish fields.
RECOVERED = re.compile(r"message log recovered")
FIELD = re.compile(r"\b(took_ms|messages|segments|bytes)[=:]\s*\"?([0-9.]+)")
AMQP_HEADER = b"AMQP\x00\x00\x09\x01"
# Fewer progress lines (seconds) than this: no first/last 10 % rates.
MIN_PROGRESS_LINES = 5


def messages_for(s, broker_name, opts):
    """Messages of a backlog/restart run on this broker: --messages for every
    broker (capped by the scenario's rabbitmq_messages for RabbitMQ), or
    --rabbit-messages / rabbitmq_messages for RabbitMQ."""
    if broker_name == "rabbitmq":
        if opts.rabbit_messages:
            return opts.rabbit_messages
        cap = s.get("rabbitmq_messages")
        if opts.messages:
            return min(opts.messages, cap) if cap else opts.messages
        return cap or s["messages"]
    return opts.messages or s["messages"]


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
        P.log(f"  warning: {msg}")
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
            m = P.PROGRESS.match(line)
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


# ---------------------------------------------------------------- restart


def amqp_ready(port, deadline):
    """Waits until the broker answers the AMQP protocol header with connection.start;
    returns the monotonic time it did, or None at the deadline."""
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sk:
                sk.sendall(AMQP_HEADER)
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
    fill = P.generator_cmd(opts, broker, [*s["publish_args"], "-C", str(n)])
    drain = P.generator_cmd(opts, broker, [*s["consume_args"], "-D", str(n)])
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
    if broker.name == "lepus":
        r.update(lepus_recovery(broker.log_path))
    if j2.get("received") != n:
        r["notes"] = [f"received {j2.get('received')} of {n}"]
    r["errors"] = (j1.get("errors") or []) + (j2.get("errors") or [])
    return r


def run_restart(s, broker, opts, tag, gen, res):
    """kind = "restart": for each stop mode, a fresh broker is filled, stopped and
    restarted (the caller started the first one and stops the last)."""
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
        P.log(f"  {broker.name}: {n:,} messages, stop = {mode}")
        r = restart_once(s, broker, opts, tag, gen, mode, n, res)
        res["cycles"].append(r)
        res["notes"] += [f"{mode}: {x}" for x in r.get("notes", []) + r.get("errors", [])]
        if "error" in r:
            res["notes"].append(f"{mode}: {r['error']}")
    ok = [c for c in res["cycles"] if "error" not in c]
    if not ok:
        res["error"] = "; ".join(c.get("error", "") for c in res["cycles"]) or "no cycle ran"
        return
    head = ok[0]
    for k in ("first_delivery_s", "accept_s", "drain_per_s", "fill_per_s"):
        res["restart_" + k if not k.endswith("_per_s") else k] = head.get(k)
    res["rss_peak_kb"] = max((c.get("drain_rss_peak_kb") or 0 for c in ok), default=None)


def restart_table(L, s, runs, opts):
    L.append("| broker | stop | messages | publish msg/s (confirmed) | stop took | accepting AMQP after | "
             "first delivery after | Lepus log recovery | drain msg/s | broker RSS MB full / restarted / "
             "peak draining | notes |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for b in s["brokers"]:
        for res in runs.get(b, []):
            if "error" in res and not res.get("cycles"):
                L.append(f"| {P.BROKER_TITLE[b]} | | | | | | | | | | error: {res['error']} |")
                continue
            for c in res.get("cycles", []):
                rec = ""
                if c.get("recovery_took_ms") is not None:
                    rec = f"{c['recovery_took_ms']:,.0f} ms ({c.get('recovered_messages', 0):,} msgs)"
                secs = [f"{c[k]:.2f} s" if c.get(k) is not None else "–"
                        for k in ("stop_s", "accept_s", "first_delivery_s")]
                notes = "; ".join(c.get("notes", []) + c.get("errors", []) + ([c["error"]] if "error" in c else []))
                L.append(f"| {P.BROKER_TITLE[b]} | {c['stop']} | {c['messages']:,} | {P.si(c.get('fill_per_s'))} | "
                         f"{' | '.join(secs)} | {rec} | {P.si(c.get('drain_per_s'))} | "
                         f"{P.mb(c.get('rss_full_kb'))} / {P.mb(c.get('rss_restarted_kb'))} / "
                         f"{P.mb(c.get('drain_rss_peak_kb'))} | {notes} |")
    L.append("")
    L.append("Times are from the start of the broker process (Lepus: its exec; RabbitMQ: "
             "`scripts/rabbitmq.sh start` with `RABBIT_KEEP_DATA=1`, whose wrapper scripts are part of "
             "starting RabbitMQ) to the first connection.start in reply to an AMQP header, and to the "
             "consumer's first delivery (the consumer starts once the broker accepts). Drain msg/s is from "
             "the first delivery to the last. kill = SIGKILL (a crash); graceful = SIGTERM / `rabbitmqctl stop`.")


def backlog_cells(r):
    """Extra cells of the backlog table: publish rate over the first / last 10 %, and RSS while filling."""
    hold = r.get("fill_hold_pct")
    return (f"{P.si(r.get('fill_first10_per_s'))} / {P.si(r.get('fill_last10_per_s'))}"
            + (f" ({hold:.0f} %)" if hold is not None else "")), P.mb(r.get("fill_rss_peak_kb"))
