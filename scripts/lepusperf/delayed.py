"""Scenarios of `kind = "delayed"`: x-delayed-message exchanges, measured
by perf/delayed.py (memory per held message, fill rate, release lateness
while they are held); and their table."""
from .report import BROKER_TITLE, fmt, mb, runs_table


def run(s, gen, res, tag, perf_out):
    """Runs scenario `s` once on gen.broker into `res`; False if it failed (res["error"] says why)."""
    opts, broker = gen.opts, gen.broker
    pending = opts.messages or s["pending"]
    cmd = ["taskset", "-c", opts.generator_cpus, "python3", "perf/delayed.py", str(broker.pid),
           "--port", str(broker.port), "--pending", str(pending), "--timed", str(s["timed"]),
           "--rate", str(s["rate"]), "--delay-ms", str(s["delay_ms"]), "--json"]
    j = gen.run_script(cmd, res, 7200, perf_out)
    if j is None:
        return False
    for key in ("pending", "fill_per_s", "bytes_per_held", "rss_held_kb", "timed", "received", "early",
                "late_p50_ms", "late_p99_ms", "late_max_ms"):
        res[key] = j.get(key)
    res["delayed_late_p99_ms"] = j.get("late_p99_ms")
    res["errors"] = [] if j.get("received") == j.get("timed") else [f"received {j.get('received')} of {j.get('timed')}"]
    return True


def table(L, s, runs, best, opts):
    """Appends the scenario's table (every run of every broker) to the markdown lines L."""
    def rows(b, r):
        return [f"| {BROKER_TITLE[b]} | {r['pending']:,} | {fmt('fill_per_s', r.get('fill_per_s'))} | "
                f"{mb(r.get('rss_held_kb'))} | {fmt('bytes', r.get('bytes_per_held'))} | "
                f"{r['late_p50_ms']:.1f} / {r['late_p99_ms']:.1f} / {r['late_max_ms']:.1f} ms | "
                f"{r['received']:,} ({r['early']} early) | {'; '.join(r.get('notes', []))} |"]

    runs_table(L, s, runs,
               "| broker | held | fill msg/s | RSS MB held | per held message | lateness p50 / p99 / max | "
               "timed received | notes |",
               "|---|---:|---:|---:|---:|---|---:|---|", rows)
