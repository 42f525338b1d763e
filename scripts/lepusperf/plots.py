"""The report's plots, plain SVG with no dependencies: the throughput
headline of each scenario, and latency at a fixed rate."""
import html
import math
from pathlib import Path

from .report import BROKER_TITLE, BROKERS, si

COLORS = {"lepus": "#1b9e77", "lepus-uring": "#66a61e", "rabbitmq": "#d95f02", "garagemq": "#e7298a", "relay": "#7570b3"}


def svg_hbars(path, title, unit, groups, series, values, log_scale=True, targets=None):
    """Horizontal grouped bars. groups: labels; values[g][s] -> float or None;
    targets[g]: a value marked with a dashed line across the group."""
    targets = targets or {}
    bar_h, gap, left, width, right, top = 14, 12, 250, 560, 90, 60
    vals = [v for g in groups for v in values[g].values() if v] + [v for v in targets.values() if v]
    if not vals:
        return False
    lo = 10 ** math.floor(math.log10(min(vals))) if log_scale else 0
    hi = 10 ** math.ceil(math.log10(max(vals))) if log_scale else max(vals) * 1.1
    if log_scale and lo == hi:
        hi = lo * 10

    def x(v):
        if log_scale:
            return left + width * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        return left + width * v / hi

    rows = sum(len([s for s in series if values[g].get(s) is not None]) or 1 for g in groups)
    height = top + rows * bar_h + len(groups) * gap + 40
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + right}" height="{height}" '
         f'font-family="sans-serif" font-size="11">',
         '<rect width="100%" height="100%" fill="white"/>',
         f'<text x="10" y="18" font-size="14" font-weight="bold">{html.escape(title)}</text>']
    lx = left
    for s in series:
        o.append(f'<rect x="{lx}" y="28" width="12" height="12" fill="{COLORS[s]}"/>'
                 f'<text x="{lx + 16}" y="38">{BROKER_TITLE[s]}</text>')
        lx += 90
    # grid
    ticks = []
    if log_scale:
        e = math.log10(lo)
        while 10 ** e <= hi * 1.0001:
            ticks.append(10 ** e)
            e += 1
    else:
        ticks = [hi * i / 5 for i in range(6)]
    for t in ticks:
        o.append(f'<line x1="{x(t):.1f}" y1="{top - 8}" x2="{x(t):.1f}" y2="{height - 30}" stroke="#ddd"/>'
                 f'<text x="{x(t):.1f}" y="{height - 16}" text-anchor="middle">{si(t)}</text>')
    o.append(f'<text x="{left + width / 2}" y="{height - 3}" text-anchor="middle">{html.escape(unit)}'
             f'{" (log scale)" if log_scale else ""}</text>')
    y = top
    for g in groups:
        present = [s for s in series if values[g].get(s) is not None]
        gh = max(len(present), 1) * bar_h
        o.append(f'<text x="{left - 8}" y="{y + gh / 2 + 4:.1f}" text-anchor="end">{html.escape(g)}</text>')
        for s in present:
            v = values[g][s]
            x0 = x(lo) if log_scale else left
            o.append(f'<rect x="{x0:.1f}" y="{y}" width="{max(x(v) - x0, 1):.1f}" height="{bar_h - 2}" '
                     f'fill="{COLORS[s]}"><title>{BROKER_TITLE[s]}: {v:,.1f}</title></rect>'
                     f'<text x="{max(x(v), x0) + 4:.1f}" y="{y + bar_h - 4}">{si(v)}</text>')
            y += bar_h
        if not present:
            y += bar_h
        if targets.get(g):
            tx = x(targets[g])
            o.append(f'<line x1="{tx:.1f}" y1="{y - gh - 2}" x2="{tx:.1f}" y2="{y + 1}" stroke="black" '
                     f'stroke-width="1.5" stroke-dasharray="3,2"><title>target {si(targets[g])}</title></line>')
        y += gap
    if targets:
        o.append(f'<line x1="{lx + 10}" y1="28" x2="{lx + 10}" y2="41" stroke="black" stroke-width="1.5" '
                 f'stroke-dasharray="3,2"/><text x="{lx + 16}" y="38">Lepus target</text>')
    o.append("</svg>")
    path.write_text("\n".join(o))
    return True


def make_plots(out_md, scenarios, results):
    plots = []
    stem = out_md.with_suffix("")
    tp_groups, tp_vals, tp_targets = [], {}, {}
    for s in scenarios:
        m = s["headline"]
        if not m.endswith("_per_s"):
            continue
        best = results.get(s["name"], {})
        tp_vals[s["name"]] = {b: best[b].get(m) for b in BROKERS if best.get(b) and best[b].get(m)}
        tp_groups.append(s["name"])
        if s.get("target", {}).get("min"):
            tp_targets[s["name"]] = s["target"]["min"]
    p = Path(f"{stem}-throughput.svg")
    if tp_groups and svg_hbars(p, "Throughput (headline of each scenario)", "msg/s", tp_groups,
                               [b for b in BROKERS if any(b in tp_vals[g] for g in tp_groups)], tp_vals,
                               targets=tp_targets):
        plots.append(p)
    lat_groups, lat_vals = [], {}
    for s in scenarios:
        fixed_rate = any(a.startswith("-r") or a.startswith("--rate") for a in s.get("args", []))
        if s["kind"] != "perf" or not (s["headline"].startswith("latency") or fixed_rate):
            continue
        best = results.get(s["name"], {})
        for key, label in (("latency_p50_us", "p50"), ("latency_p99_us", "p99"), ("latency_p999_us", "p99.9")):
            g = f"{s['name']} {label}"
            lat_vals[g] = {b: best[b].get(key) for b in BROKERS if best.get(b) and best[b].get(key)}
            lat_groups.append(g)
    p = Path(f"{stem}-latency.svg")
    if lat_groups and svg_hbars(p, "End-to-end latency at a fixed rate", "µs", lat_groups,
                                [b for b in BROKERS if any(b in lat_vals[g] for g in lat_groups)], lat_vals):
        plots.append(p)
    return plots



DASHES = {"p50": "", "p99": "6,3", "p99.9": "2,3"}


def svg_lines(path, title, xlabel, ylabel, series, xfmt=si, yfmt=si):
    """A log-log line chart. series: [(label, broker, dash key or None, [(x, y), ...])],
    colored by broker (COLORS), dashed by key (DASHES); points with a value <= 0 or
    None are left out. Returns False if there is nothing to draw."""
    pts = [(x, y) for _, _, _, ps in series for x, y in ps if x and y and x > 0 and y > 0]
    if not pts:
        return False
    left, width, top, height, right = 80, 560, 50, 340, 170
    xlo, xhi = min(x for x, _ in pts), max(x for x, _ in pts)
    ylo, yhi = min(y for _, y in pts), max(y for _, y in pts)
    xlo, xhi = 10 ** math.floor(math.log10(xlo)), 10 ** math.ceil(math.log10(xhi))
    ylo, yhi = 10 ** math.floor(math.log10(ylo)), 10 ** math.ceil(math.log10(yhi))
    if xhi <= xlo:
        xhi = xlo * 10
    if yhi <= ylo:
        yhi = ylo * 10

    def px(x):
        return left + width * (math.log10(x) - math.log10(xlo)) / (math.log10(xhi) - math.log10(xlo))

    def py(y):
        return top + height - height * (math.log10(y) - math.log10(ylo)) / (math.log10(yhi) - math.log10(ylo))

    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + right}" height="{top + height + 50}" '
         f'font-family="sans-serif" font-size="11">',
         '<rect width="100%" height="100%" fill="white"/>',
         f'<text x="10" y="18" font-size="14" font-weight="bold">{html.escape(title)}</text>']
    e = math.log10(xlo)
    while 10 ** e <= xhi * 1.0001:
        x = px(10 ** e)
        o.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + height}" stroke="#ddd"/>'
                 f'<text x="{x:.1f}" y="{top + height + 14}" text-anchor="middle">{xfmt(10 ** e)}</text>')
        e += 1
    e = math.log10(ylo)
    while 10 ** e <= yhi * 1.0001:
        y = py(10 ** e)
        o.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + width}" y2="{y:.1f}" stroke="#ddd"/>'
                 f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{yfmt(10 ** e)}</text>')
        e += 1
    o.append(f'<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="none" stroke="#888"/>')
    o.append(f'<text x="{left + width / 2}" y="{top + height + 32}" text-anchor="middle">'
             f'{html.escape(xlabel)} (log scale)</text>')
    o.append(f'<text x="14" y="{top + height / 2}" text-anchor="middle" '
             f'transform="rotate(-90 14 {top + height / 2})">{html.escape(ylabel)} (log scale)</text>')
    ly = top + 6
    for label, broker, dash, ps in series:
        ps = [(x, y) for x, y in ps if x and y and x > 0 and y > 0]
        if not ps:
            continue
        color = COLORS.get(broker, "#333")
        da = f' stroke-dasharray="{DASHES.get(dash, "")}"' if DASHES.get(dash) else ""
        path_d = " ".join(f"{'M' if i == 0 else 'L'}{px(x):.1f},{py(y):.1f}" for i, (x, y) in enumerate(ps))
        o.append(f'<path d="{path_d}" fill="none" stroke="{color}" stroke-width="1.8"{da}/>')
        for x, y in ps:
            o.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="{color}">'
                     f'<title>{html.escape(label)}: {xfmt(x)}, {yfmt(y)}</title></circle>')
        lx = left + width + 12
        o.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 24}" y2="{ly}" stroke="{color}" stroke-width="1.8"{da}/>'
                 f'<text x="{lx + 30}" y="{ly + 4}">{html.escape(label)}</text>')
        ly += 16
    o.append("</svg>")
    path.write_text("\n".join(o))
    return True
