"""What the tools print and write: the runner's log line, broker names and
headline metrics, number formats, the median run and the spread of repeats.
Imports nothing of the package."""
import statistics
import sys
import time

BROKERS = ("lepus", "lepus-uring", "rabbitmq", "garagemq", "relay")
BROKER_TITLE = {"lepus": "Lepus", "lepus-uring": "Lepus io_uring", "rabbitmq": "RabbitMQ", "garagemq": "garagemq",
                "relay": "relay"}
# lepus-uring is Lepus on its io_uring backend (`--io-backend io-uring`): it runs wherever a
# scenario lists lepus, and is Lepus for every per-broker setting (start time, rates).
URING = "lepus-uring"


def engine(broker):
    """The broker whose settings `broker` shares: lepus for lepus-uring."""
    return "lepus" if broker == URING else broker

# headline metric -> (label, unit, higher is better)
METRICS = {
    "received_per_s": ("received msg/s", "msg/s", True),
    "deliveries_per_s": ("deliveries/s (all consumers)", "msg/s", True),
    "confirmed_per_s": ("confirmed msg/s", "msg/s", True),
    "drain_per_s": ("drain msg/s", "msg/s", True),
    "fill_hold_pct": ("publish msg/s, last 10 % / first 10 %", "%", True),
    "restart_first_delivery_s": ("restart: first delivery after start", "s", False),
    "latency_p99_us": ("latency p99", "µs", False),
    "broker_cpu_pct": ("broker CPU", "% of a core", False),
    "bytes_per_connection": ("broker memory per connection", "B", False),
    "delayed_late_p99_ms": ("delayed release lateness p99", "ms", False),
}


def log(msg):
    print(f"[perf.py {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median_run(runs, metric):
    """The run with the median `metric` (the lower of the two middle ones), or the last run if none has it."""
    ok = [r for r in runs if r.get(metric) is not None and "error" not in r]
    if not ok:
        return runs[-1] if runs else None
    ok.sort(key=lambda r: r[metric])
    return ok[(len(ok) - 1) // 2]


def spread(values):
    """(median, min, max, (max - min) / median in %) of the figures of a run's
    repeats (None values dropped), or None if there are none. For an even count
    the median is the lower middle one, the run median_run() picks (whose
    figures the target check and the per-run tables use)."""
    v = [x for x in values if x is not None]
    if not v:
        return None
    med = statistics.median_low(v)
    return med, min(v), max(v), (100.0 * (max(v) - min(v)) / abs(med) if med else None)


def fmt_spread(metric, values):
    """"2.41 M (2.30 M–2.50 M, 8 %)": median, min–max and the spread in % of the
    median; just the value for one run; "–" for none."""
    sp = spread(values)
    if sp is None:
        return "–"
    med, lo, hi, pct = sp
    if len([x for x in values if x is not None]) < 2:
        return fmt(metric, med)
    return f"{fmt(metric, med)} ({fmt(metric, lo)}–{fmt(metric, hi)}, {'?' if pct is None else f'{pct:.0f}'} %)"


def si(v, digits=3):
    if v is None:
        return "–"
    a = abs(v)
    for div, suf in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if a >= div:
            return f"{v / div:.{digits}g}{suf}"
    return f"{v:.{digits}g}"


def fmt(metric, v):
    if v is None:
        return "–"
    if metric.endswith("_per_s"):
        return si(v)
    if metric.startswith("cpu_us"):
        return f"{v:.3g} µs"
    if metric.startswith("latency"):
        if v < 10_000:
            return f"{v:,.0f} µs"
        return f"{v / 1000:,.0f} ms" if v >= 100_000 else f"{v / 1000:.3g} ms"
    if metric.endswith("_pct"):
        return f"{v:.0f} %"
    if metric.endswith("_mb"):
        return f"{v:,.0f} MB"
    if metric.endswith("_s"):
        return f"{v:.2f} s"
    if metric.startswith("bytes"):
        return f"{v:,.0f} B"
    return f"{v:.3g}"


def mb(kb):
    """kB as whole MB for table cells."""
    return "–" if kb is None else f"{kb / 1024:,.0f}"


def mib(kb):
    """kB as MiB with one decimal and the unit."""
    return f"{kb / 1024:.1f} MiB"


def fmt_rate(rate):
    """msg/s as "2.41 M" or "571 k"."""
    return "?" if rate is None else f"{rate / 1e6:.2f} M" if rate >= 1e6 else f"{rate / 1e3:.0f} k"


def runs_table(L, s, runs, head, align, rows, failed=lambda r: "error" in r):
    """Appends to the markdown lines L a table of every run of every broker of
    scenario `s` (runs: broker -> results): the `head` and `align` lines, then
    rows(broker, result) (the lines of one run) or, for a failed run, one line
    with the error in its last column."""
    L += [head, align]
    blanks = " |" * (align.count("|") - 3)
    for b in s["brokers"]:
        for r in runs.get(b, []):
            L += [f"| {BROKER_TITLE[b]} |{blanks} error: {r['error']} |"] if failed(r) else rows(b, r)
