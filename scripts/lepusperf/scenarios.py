"""The scenario files of perf/scenarios/: loading and checking them,
choosing them from the command line, how many messages a backlog or
restart run sends, a run's estimated time, and whether Lepus met a
scenario's target."""
from pathlib import Path

import tomllib

from .proc import ROOT
from .report import BROKER_TITLE, BROKERS, METRICS, URING, engine, fmt

SCENARIO_DIR = ROOT / "perf" / "scenarios"
KINDS = ("perf", "backlog", "restart", "idle_connections", "delayed")
TARGET_KEYS = {"text", "min", "max", "ratio_min", "ratio_max", "over_max", "min_metrics", "max_metrics"}


class ScenarioError(Exception):
    pass


def load_scenarios():
    out = []
    for path in sorted(SCENARIO_DIR.glob("*.toml")):
        with open(path, "rb") as f:
            s = tomllib.load(f)
        s["file"] = path.relative_to(ROOT).as_posix()
        s.setdefault("kind", "perf")
        s.setdefault("brokers", ["lepus", "rabbitmq", "garagemq"])
        need = {"perf": ["args", "duration"], "backlog": ["messages", "publish_args", "consume_args"],
                "restart": ["messages", "publish_args", "consume_args"], "idle_connections": ["connections"],
                "delayed": ["pending", "timed", "rate", "delay_ms"]}
        for key in ["name", "description", "headline"]:
            if key not in s:
                raise ScenarioError(f"{path}: missing {key}")
        if s["kind"] not in KINDS:
            raise ScenarioError(f"{path}: kind must be one of {KINDS}")
        for key in need[s["kind"]]:
            if key not in s:
                raise ScenarioError(f"{path}: kind {s['kind']} needs {key}")
        if s["headline"] not in METRICS:
            raise ScenarioError(f"{path}: headline must be one of {sorted(METRICS)}")
        for b in s["brokers"]:
            if b not in BROKERS:
                raise ScenarioError(f"{path}: unknown broker {b}")
        if "lepus" in s["brokers"] and URING not in s["brokers"]:
            s["brokers"].insert(s["brokers"].index("lepus") + 1, URING)
        extra = set(s.get("target", {})) - TARGET_KEYS
        if extra:
            raise ScenarioError(f"{path}: unknown target keys {sorted(extra)}")
        for args_key in ("args", "publish_args", "consume_args"):
            for a in s.get(args_key, []):
                if a in ("-h", "--uri", "-z", "--time", "--json") or a.startswith("--uri="):
                    raise ScenarioError(f"{path}: {args_key} must not contain {a} (the runner sets it)")
        out.append(s)
    names = [s["name"] for s in out]
    if len(set(names)) != len(names):
        raise ScenarioError("duplicate scenario names")
    return out


def select(scenarios, wanted):
    if not wanted:
        return scenarios
    chosen = []
    for w in wanted.split(","):
        w = w.strip()
        hits = [s for s in scenarios if w in (s["name"], Path(s["file"]).stem, Path(s["file"]).stem.split("-")[0])]
        if not hits:
            raise ScenarioError(f"no scenario {w!r}; --list shows them")
        chosen += [h for h in hits if h not in chosen]
    return chosen


def estimate_s(s, broker, opts):
    """Rough wall time of one run, broker start and stop included."""
    broker = engine(broker)
    start = {"lepus": 1.5, "rabbitmq": 18.0, "garagemq": 1.5, "relay": 1.0}[broker]
    if s["kind"] == "perf":
        setup = 5.0 if broker == "rabbitmq" else 1.0
        return start + setup + (opts.duration or s["duration"]) + 2
    if s["kind"] in ("backlog", "restart"):
        rate = {"lepus": 700_000, "rabbitmq": 25_000, "garagemq": 50_000, "relay": 1e6}[broker]
        if "-f" in s["publish_args"]:  # persistent
            rate = {"lepus": 300_000, "rabbitmq": 20_000, "garagemq": 20_000, "relay": 1e6}[broker]
        n = messages_for(s, broker, opts)
        cycles = 1
        if s["kind"] == "restart":
            cycles = len(opts.restart_stops.split(",") if opts.restart_stops else s.get("stops", ["kill"]))
        return (start + 2 * n / rate + 6) * cycles + start * (cycles if s["kind"] == "restart" else 0)
    if s["kind"] == "delayed":
        return start + (opts.messages or s["pending"]) / 8_000 + s["timed"] / s["rate"] + s["delay_ms"] / 1000 + 5
    per_conn = {"lepus": 0.0006, "rabbitmq": 0.004, "garagemq": 0.002, "relay": 0.001}[broker]
    return start + (opts.connections or s["connections"]) * per_conn * 2 + 5


def messages_for(s, broker_name, opts):
    """Messages of a backlog/restart run on this broker: --messages for every
    broker (capped by the scenario's rabbitmq_messages for RabbitMQ and
    garagemq_messages, else rabbitmq_messages, for garagemq), or
    --rabbit-messages / rabbitmq_messages for RabbitMQ (and garagemq)."""
    if broker_name in ("rabbitmq", "garagemq"):
        if opts.rabbit_messages:
            return opts.rabbit_messages
        cap = s.get(f"{broker_name}_messages") or s.get("rabbitmq_messages")
        if opts.messages:
            return min(opts.messages, cap) if cap else opts.messages
        return cap or s["messages"]
    return opts.messages or s["messages"]


def evaluate(s, best):
    """Target check for Lepus. best: broker -> result. Returns (verdict, detail)."""
    t = s.get("target")
    if not t:
        return None, ""
    metric = s["headline"]
    lep = best.get("lepus")
    v = lep.get(metric) if lep else None
    if v is None:
        return "n/a", "no Lepus result"
    fails, missing = [], []
    if "min" in t and not v >= t["min"]:
        fails.append(f"{fmt(metric, v)} < {fmt(metric, t['min'])}")
    if "max" in t and not v <= t["max"]:
        fails.append(f"{fmt(metric, v)} > {fmt(metric, t['max'])}")
    for key, cmp_ok, word in (("ratio_min", lambda r, x: r >= x, "<"), ("ratio_max", lambda r, x: r <= x, ">")):
        for other, x in t.get(key, {}).items():
            o = best.get(other, {}).get(metric) if best.get(other) else None
            if not o:
                missing.append(other)
                continue
            r = v / o
            if not cmp_ok(r, x):
                fails.append(f"{r:.2f}x {BROKER_TITLE[other]} {word} {x}x")
    # over_max: Lepus' headline at most this much above another's (same unit).
    for other, x in t.get("over_max", {}).items():
        o = best.get(other, {}).get(metric) if best.get(other) else None
        if o is None:
            missing.append(other)
        elif not v - o <= x:
            fails.append(f"{fmt(metric, v - o)} above {BROKER_TITLE[other]} > {fmt(metric, x)}")
    for key, cmp_ok, word in (("min_metrics", lambda a, b: a >= b, "<"), ("max_metrics", lambda a, b: a <= b, ">")):
        for m, bound in t.get(key, {}).items():
            x = lep.get(m)
            if x is None:
                missing.append(m)
            elif not cmp_ok(x, bound):
                fails.append(f"{m} {fmt(m, x)} {word} {fmt(m, bound)}")
    if fails:
        return "**not met**", "; ".join(fails)
    if missing:
        return "n/a", "no result for " + ", ".join(missing)
    return "met", ""

