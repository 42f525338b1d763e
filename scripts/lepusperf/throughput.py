"""Scenarios of `kind = "perf"`: one lepus-perf run of a fixed duration
(throughput, latency at a fixed rate), with the broker's CPU and RSS
sampled over the measured interval; and their table in the report."""
import shlex

from .generator import generator_cmd, metrics_from_json
from .proc import parse_cpus
from .report import BROKER_TITLE, fmt, mb, runs_table, si


def run(s, gen, res, tag, perf_out):
    """Runs scenario `s` once on gen.broker into `res`; False if it failed (res["error"] says why)."""
    opts, broker = gen.opts, gen.broker
    duration = opts.duration or s["duration"]
    cmd = generator_cmd(opts, broker, [*s["args"], "-z", str(duration)])
    res["commands"].append(shlex.join(cmd))
    j, sampler, t_measure, notes = gen.run(cmd, timeout=duration + 180, perf_out=perf_out)
    res["notes"] += notes
    if j is None:
        res["error"] = f"no JSON summary from lepus-perf (see {gen.log_path})"
        return False
    res.update(metrics_from_json(j))
    res["broker_cpu_pct"] = sampler.cpu_pct(t_measure, res["duration_s"])
    res.update(load_figures(sampler, t_measure, res["duration_s"], res["generator_cpu_pct"], opts))
    res["broker_cpu_s"] = sampler.cpu_s(t_measure, res["duration_s"])
    # Per message the headline counts: confirms where it is confirmed msg/s, else
    # deliveries (received, summed over every consumer).
    n = j.get("confirmed") if s["headline"] == "confirmed_per_s" else j.get("received")
    res["cpu_us_per_msg"] = cpu_us_per_msg(res["broker_cpu_s"], n)
    res["rss_peak_kb"] = sampler.rss_peak_kb()
    return True


def cpu_us_per_msg(cpu_s, messages):
    """Broker CPU µs per message, or None without messages."""
    return cpu_s * 1e6 / messages if cpu_s is not None and messages else None


def load_figures(sampler, t_from, duration, generator_pct, opts):
    """other_cpu_pct, steal_pct, elsewhere_pct of the measured interval (see Sampler.load)."""
    cores = set(parse_cpus(opts.broker_cpus)) | set(parse_cpus(opts.generator_cpus))
    load = sampler.load(t_from, duration, generator_pct, cores) or {}
    return {"other_cpu_pct": load.get("other_pct"), "steal_pct": load.get("steal_pct"),
            "elsewhere_pct": load.get("elsewhere_pct")}


def table(L, s, runs, best, opts):
    """Appends the scenario's table (every run of every broker) to the markdown lines L."""
    def rows(b, r):
        lat = " / ".join(fmt("latency", r.get(k)) for k in ("latency_p50_us", "latency_p99_us", "latency_p999_us"))
        clat = " / ".join(fmt("latency", r.get(k)) for k in ("confirm_p50_us", "confirm_p99_us"))
        mark = " (median)" if opts.repeat > 1 and r is best.get(b) else ""
        return [f"| {BROKER_TITLE[b]}{mark} | {si(r.get('sent_per_s'))} | "
                f"{si(r.get('confirmed_per_s'))} | {si(r.get('received_per_s'))} | {lat} | {clat} | "
                f"{fmt('x_pct', r.get('broker_cpu_pct'))} | {fmt('cpu_us', r.get('cpu_us_per_msg'))} | "
                f"{mb(r.get('rss_before_kb'))} / "
                f"{mb(r.get('rss_peak_kb'))} / {mb(r.get('rss_after_kb'))} | "
                f"{fmt('x_pct', r.get('generator_cpu_pct'))} | {fmt('x_pct', r.get('other_cpu_pct'))} / "
                f"{fmt('x_pct', r.get('steal_pct'))} | "
                f"{'; '.join(r.get('notes', []))} |"]

    runs_table(L, s, runs,
               "| broker | sent/s | confirmed/s | received/s | latency p50 / p99 / p99.9 | "
               "confirm latency p50 / p99 | broker CPU | broker CPU per message | "
               "broker RSS MB before / peak / after | generator CPU | other load / steal | notes |",
               "|---|---:|---:|---:|---|---|---:|---:|---|---:|---:|---|", rows)
