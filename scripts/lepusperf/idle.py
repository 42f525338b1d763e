"""Scenarios of `kind = "idle_connections"`: the broker's memory per idle
connection, measured by perf/idle_connections.py; and their table."""
from .report import BROKER_TITLE, fmt, mb, runs_table


def run(s, gen, res, tag, perf_out):
    """Runs scenario `s` once on gen.broker into `res`; False if it failed (res["error"] says why)."""
    opts, broker = gen.opts, gen.broker
    n = opts.connections or s["connections"]
    cmd = ["taskset", "-c", opts.generator_cpus, "python3", "perf/idle_connections.py", str(n),
           str(broker.pid), "--port", str(broker.port), "--json"]
    j = gen.run_script(cmd, res, 1800, perf_out)
    if j is None:
        return False
    res["connections"] = n
    res["bytes_per_connection"] = j["bytes_per_connection"]
    res["rss_before_kb"] = j["rss_before_kb"]
    res["rss_peak_kb"] = j["rss_after_kb"]
    res["open_s"] = j["open_s"]
    res["errors"] = []
    return True


def table(L, s, runs, best, opts):
    """Appends the scenario's table (every run of every broker) to the markdown lines L."""
    def rows(b, r):
        return [f"| {BROKER_TITLE[b]} | {r['connections']:,} | {mb(r.get('rss_before_kb'))} / "
                f"{mb(r.get('rss_peak_kb'))} | {fmt('bytes', r.get('bytes_per_connection'))} | "
                f"{r['open_s']:.1f} s | {'; '.join(r.get('notes', []))} |"]

    runs_table(L, s, runs,
               "| broker | connections | broker RSS MB before / with them | per connection | opened in | notes |",
               "|---|---:|---|---:|---:|---|", rows)
