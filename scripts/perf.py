#!/usr/bin/env python3
"""Runs the benchmark scenarios of perf/scenarios/ against Lepus, RabbitMQ and
(where a scenario asks for it) lepus-perf's byte relay, one broker after the
other, broker and generator pinned to different cores, and writes
perf/results/<date>.md (machine, exact commands, a table per scenario,
targets met or not) plus SVG plots next to it.

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
import argparse
import datetime
import html
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIO_DIR = ROOT / "perf" / "scenarios"
BROKERS = ("lepus", "rabbitmq", "relay")
BROKER_TITLE = {"lepus": "Lepus", "rabbitmq": "RabbitMQ", "relay": "relay"}
COLORS = {"lepus": "#1b9e77", "rabbitmq": "#d95f02", "relay": "#7570b3"}
KINDS = ("perf", "backlog", "restart", "idle_connections")

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
}
TARGET_KEYS = {"text", "min", "max", "ratio_min", "ratio_max", "min_metrics", "max_metrics"}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"[perf.py {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- scenarios


class ScenarioError(Exception):
    pass


def load_scenarios():
    out = []
    for path in sorted(SCENARIO_DIR.glob("*.toml")):
        with open(path, "rb") as f:
            s = tomllib.load(f)
        s["file"] = path.relative_to(ROOT).as_posix()
        s.setdefault("kind", "perf")
        s.setdefault("brokers", ["lepus", "rabbitmq"])
        need = {"perf": ["args", "duration"], "backlog": ["messages", "publish_args", "consume_args"],
                "restart": ["messages", "publish_args", "consume_args"], "idle_connections": ["connections"]}
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
    start = {"lepus": 1.5, "rabbitmq": 18.0, "relay": 1.0}[broker]
    if s["kind"] == "perf":
        setup = 5.0 if broker == "rabbitmq" else 1.0
        return start + setup + (opts.duration or s["duration"]) + 2
    if s["kind"] in ("backlog", "restart"):
        rate = {"lepus": 700_000, "rabbitmq": 25_000, "relay": 1e6}[broker]
        if "-f" in s["publish_args"]:  # persistent
            rate = {"lepus": 300_000, "rabbitmq": 20_000, "relay": 1e6}[broker]
        n = perf_durable.messages_for(s, broker, opts)
        cycles = 1
        if s["kind"] == "restart":
            cycles = len(opts.restart_stops.split(",") if opts.restart_stops else s.get("stops", ["kill"]))
        return (start + 2 * n / rate + 6) * cycles + start * (cycles if s["kind"] == "restart" else 0)
    per_conn = {"lepus": 0.0006, "rabbitmq": 0.004, "relay": 0.001}[broker]
    return start + (opts.connections or s["connections"]) * per_conn * 2 + 5


# ---------------------------------------------------------------- processes


def port_open(port):
    with socket.socket() as sk:
        sk.settimeout(0.2)
        return sk.connect_ex(("127.0.0.1", port)) == 0


def wait_port(port, proc=None, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port):
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def proc_stat(pid):
    """(cpu seconds user+system, VmRSS kB) of a process, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        return cpu, rss
    except (OSError, StopIteration, IndexError, ValueError):
        return None


def machine_busy_s():
    """CPU seconds the whole machine spent busy (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    return (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)) / CLK_TCK


class Sampler(threading.Thread):
    """Samples a broker's CPU time and RSS, and the machine's busy time, every 0.2 s."""

    def __init__(self, pid, rss_limit_kb, on_limit):
        super().__init__(daemon=True)
        self.pid, self.rss_limit_kb, self.on_limit = pid, rss_limit_kb, on_limit
        self.samples = []  # (monotonic, broker cpu s, broker rss kB, machine busy s)
        self.halt = threading.Event()
        self.over_limit = False

    def sample(self):
        st = proc_stat(self.pid)
        if st:
            self.samples.append((time.monotonic(), st[0], st[1], machine_busy_s()))
            if self.rss_limit_kb and st[1] > self.rss_limit_kb and not self.over_limit:
                self.over_limit = True
                self.on_limit()
        return st

    def run(self):
        while not self.halt.is_set():
            self.sample()
            self.halt.wait(0.2)

    def stop(self):
        self.halt.set()
        self.join()
        self.sample()

    def cpu_pct(self, t_from, duration, field=1):
        """Broker CPU (field 1) or machine busy time (field 3) in % of one core
        over [t_from, t_from + duration]."""
        if t_from is None or not duration:
            return None
        pts = [s for s in self.samples if t_from - 0.1 <= s[0] <= t_from + duration + 0.1]
        if len(pts) < 2 or pts[-1][0] - pts[0][0] <= 0:
            return None
        return 100.0 * (pts[-1][field] - pts[0][field]) / (pts[-1][0] - pts[0][0])

    def other_pct(self, t_from, duration, generator_pct):
        """CPU used by neither the broker nor the generator (other processes), % of a core."""
        busy, broker = self.cpu_pct(t_from, duration, 3), self.cpu_pct(t_from, duration)
        if busy is None or broker is None or generator_pct is None:
            return None
        return max(busy - broker - generator_pct, 0.0)

    def rss_peak_kb(self):
        return max((s[2] for s in self.samples), default=None)


class Broker:
    name = "?"

    def __init__(self, opts, log_dir):
        self.opts, self.log_dir = opts, log_dir
        self.pid = None
        self.commands = []

    def rss_kb(self):
        st = proc_stat(self.pid)
        return st[1] if st else None


class Lepus(Broker):
    name = "lepus"

    def __init__(self, opts, log_dir):
        super().__init__(opts, log_dir)
        self.port = opts.lepus_port
        self.proc = None
        shards = len(parse_cpus(opts.broker_cpus))
        self.cmd = ["taskset", "-c", opts.broker_cpus, str(opts.bin / "lepus"), "--listen",
                    f"127.0.0.1:{self.port}", "--shards", str(shards)] + shlex.split(opts.lepus_args)

    def spawn(self, tag):
        """Starts the process (on self.data_dir, if set); returns the monotonic time just before."""
        self.log_path = self.log_dir / f"{tag}-{self.name}.log"
        self.logf = open(self.log_path, "w")
        cmd = self.cmd + (["--data-dir", self.data_dir] if getattr(self, "data_dir", None) else [])
        t = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT, cwd=ROOT)
        self.pid = self.proc.pid  # taskset execs lepus: same pid
        if shlex.join(cmd) not in self.commands:
            self.commands.append(shlex.join(cmd))
        return t

    def start(self, tag):
        if port_open(self.port):
            raise RuntimeError(f"port {self.port} is already in use")
        if self.name == "lepus":
            # Every run starts from an empty data directory: no durable
            # definitions left over from an earlier scenario.
            self.data_dir = tempfile.mkdtemp(prefix="lepus-perf-data-", dir=self.opts.data_root)
        self.spawn(tag)
        if not wait_port(self.port, self.proc):
            self.stop()
            raise RuntimeError("lepus did not start listening (see its log)")

    def end(self, sig, timeout=10):
        """Stops the process with `sig` (SIGKILL after `timeout` s), keeping the data directory."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if getattr(self, "logf", None):
            self.logf.close()
            self.logf = None

    def kill(self):
        """A crash: SIGKILL, data kept."""
        self.end(signal.SIGKILL)

    def halt(self):
        """A graceful stop (SIGTERM), data kept."""
        self.end(signal.SIGTERM, timeout=600)

    def restart(self, tag):
        """Starts again on the same data directory; returns the monotonic time of the start."""
        if port_open(self.port):
            raise RuntimeError(f"port {self.port} is still in use")
        return self.spawn(tag)

    def after_restart(self):
        pass

    def restart_done(self):
        pass

    def stop(self):
        self.end(signal.SIGTERM)
        if getattr(self, "data_dir", None):
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None


class Relay(Lepus):
    name = "relay"

    def __init__(self, opts, log_dir):
        Broker.__init__(self, opts, log_dir)
        self.port = opts.relay_port
        self.proc = None
        self.cmd = ["taskset", "-c", opts.broker_cpus, str(opts.bin / "lepus-perf"), "relay", "--listen",
                    f"127.0.0.1:{self.port}"]


class RabbitMQ(Broker):
    name = "rabbitmq"

    def __init__(self, opts, log_dir):
        super().__init__(opts, log_dir)
        self.port = opts.rabbit_port
        self.env = {"RABBIT_PORT": str(self.port), "RABBIT_CPUS": opts.broker_cpus, "RABBIT_DIR": opts.rabbit_dir,
                    "RABBIT_PERF_MAP": "1" if opts.profile else "0"}
        self.script = ROOT / "scripts" / "rabbitmq.sh"

    def _run(self, what):
        env = dict(os.environ, **self.env)
        return subprocess.run([str(self.script), what], env=env, cwd=ROOT, capture_output=True, text=True)

    def start(self, tag):
        if port_open(self.port):
            raise RuntimeError(f"port {self.port} is already in use")
        r = self._run("start")
        with open(self.log_dir / f"{tag}-rabbitmq.log", "w") as f:
            f.write(r.stdout + r.stderr)
        if r.returncode != 0:
            raise RuntimeError(f"scripts/rabbitmq.sh start failed: {r.stderr.strip()[-500:]}")
        self.pid = int(r.stdout.strip().splitlines()[-1])
        self.started_msg = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
        env = " ".join(f"{k}={v}" for k, v in self.env.items())
        self.commands.append(f"{env} scripts/rabbitmq.sh start")

    def stop(self):
        self._run("stop")  # also finds a node interrupted while starting
        self.pid = None
        self.restarting = None

    def kill(self):
        """A crash: SIGKILL to beam.smp, data kept."""
        r = self._run("kill")
        if r.returncode != 0:
            raise RuntimeError(f"scripts/rabbitmq.sh kill failed: {r.stderr.strip()[-500:]}")
        self.pid = None

    def halt(self):
        """A graceful stop (rabbitmqctl stop), data kept (only `start` wipes it)."""
        self._run("stop")
        self.pid = None

    def restart(self, tag):
        """Starts the node again on the same data (RABBIT_KEEP_DATA=1) without waiting for it;
        returns the monotonic time of the start."""
        if port_open(self.port):
            raise RuntimeError(f"port {self.port} is still in use")
        env = dict(os.environ, **self.env, RABBIT_KEEP_DATA="1")
        self.restart_log = open(self.log_dir / f"{tag}-rabbitmq.log", "w")
        t = time.monotonic()
        self.restarting = subprocess.Popen([str(self.script), "start"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                           stderr=self.restart_log, text=True)
        cmd = " ".join(f"{k}={v}" for k, v in self.env.items()) + " RABBIT_KEEP_DATA=1 scripts/rabbitmq.sh start"
        if cmd not in self.commands:
            self.commands.append(cmd)
        return t

    def after_restart(self):
        """The node accepts connections: find beam.smp's pid (its pid file is written early in the boot)."""
        for _ in range(100):
            r = self._run("pid")
            if r.returncode == 0 and r.stdout.strip():
                self.pid = int(r.stdout.strip())
                return
            time.sleep(0.1)

    def restart_done(self):
        """Waits for the start script (it returns once the node has booted and is pinned)."""
        if getattr(self, "restarting", None):
            try:
                self.restarting.communicate(timeout=300)
            except subprocess.TimeoutExpired:
                self.restarting.kill()
                self.restarting.communicate()
            self.restarting = None
            self.restart_log.close()


def parse_cpus(spec):
    cpus = []
    for part in spec.split(","):
        if "-" in part:
            a, b = part.split("-")
            cpus += range(int(a), int(b) + 1)
        else:
            cpus.append(int(part))
    return cpus


# ---------------------------------------------------------------- runs


class Generator:
    """One lepus-perf (or idle_connections.py) process against a started broker."""

    def __init__(self, opts, broker, log_path):
        self.opts, self.broker, self.log_path = opts, broker, log_path
        self.proc = None

    def interrupt(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)

    def run(self, cmd, timeout, perf_out=None, perf_after_progress=True):
        """Runs cmd; returns (parsed JSON or None, sampler, measurement start, notes).

        The measurement start (monotonic) is lepus-perf's t0, found from its
        first progress line ("time 1.003 s, ..." arrives 1.003 s after t0)."""
        notes = []
        sampler = Sampler(self.broker.pid, self.opts.rss_limit_mb * 1024, self.interrupt)
        sampler.sample()
        sampler.start()
        self.perf = None
        out_chunks = []
        with open(self.log_path, "a") as err:
            err.write(f"$ {shlex.join(cmd)}\n")
            err.flush()
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT)
            reader = threading.Thread(target=lambda: out_chunks.append(self.proc.stdout.read()), daemon=True)
            reader.start()
            try:
                t_measure, t_exit = self._watch(timeout, perf_out, perf_after_progress, notes)
            except BaseException:
                self.proc.kill()
                self.proc.wait()
                raise
            finally:
                reader.join(5)
                if self.perf:
                    stop_perf(self.perf)
                sampler.stop()
        if sampler.over_limit:
            notes.append(f"broker RSS passed --rss-limit-mb {self.opts.rss_limit_mb}: interrupted")
        out = "".join(c for c in out_chunks if c)
        result = None
        for line in reversed(out.splitlines()):
            if line.startswith("{"):
                result = json.loads(line)
                break
        if self.proc.returncode not in (0, None):
            notes.append(f"exit status {self.proc.returncode}")
        if t_measure is None and result and result.get("duration_s"):
            t_measure = t_exit - result["duration_s"]  # shorter than one progress interval
        return result, sampler, t_measure, notes

    def _watch(self, timeout, perf_out, perf_after_progress, notes):
        """Waits for the generator: finds its t0, starts perf, enforces the timeout."""
        t0 = time.monotonic()
        interrupted_at = None
        t_measure = None
        log_at = os.path.getsize(self.log_path)
        while self.proc.poll() is None:
            time.sleep(0.05)
            now = time.monotonic()
            if t_measure is None:
                with open(self.log_path) as f:
                    f.seek(log_at)
                    for line in f:
                        m = PROGRESS.match(line)
                        if m:
                            t_measure = now - float(m.group(1))
                            break
            if perf_out and self.perf is None and (not perf_after_progress or t_measure is not None
                                                   or now - t0 > 30):
                self.perf = start_perf(self.opts, self.broker, perf_out)
            if now - t0 > timeout and interrupted_at is None:
                notes.append(f"timed out after {timeout:.0f} s: interrupted")
                self.interrupt()
                interrupted_at = now
            if interrupted_at and now - interrupted_at > 15:
                self.proc.kill()
        return t_measure, time.monotonic()


PROGRESS = re.compile(r"^time ([0-9.]+) s,")


def start_perf(opts, broker, out):
    if broker.name == "rabbitmq":
        cg = ["-g"]  # +JPperf true: frame pointers in JIT code
    elif opts.perf_callgraph == "dwarf":
        cg = ["--call-graph", "dwarf,16384"]
    else:
        cg = ["--call-graph", "fp"]
    data = f"{out}.perf.data"
    cmd = ["perf", "record", "-F", str(opts.perf_freq), "-e", "cpu-clock", *cg, "-p", str(broker.pid), "-o", data]
    log(f"  {shlex.join(cmd)}")
    with open(f"{out}.perf.log", "w") as err:
        err.write(f"$ {shlex.join(cmd)}\n")
        err.flush()
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)


def stop_perf(p):
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def generator_cmd(opts, broker, args):
    uri = f"amqp://guest:guest@127.0.0.1:{broker.port}/%2F"
    return ["taskset", "-c", opts.generator_cpus, str(opts.bin / "lepus-perf"), "-h", uri, *args, "--json"]


def metrics_from_json(j):
    lat = j.get("latency_us", {})
    clat = j.get("confirm_latency_us", {})
    cpu = j.get("cpu_user_s", 0) + j.get("cpu_sys_s", 0)
    d = j.get("duration_s") or 0
    return {
        "duration_s": d,
        "sent_per_s": j.get("sent_per_s"),
        "confirmed_per_s": j.get("confirmed_per_s") if j.get("confirm") else None,
        "received_per_s": j.get("received_per_s"),
        "deliveries_per_s": j.get("received_per_s"),
        "sent": j.get("sent"), "received": j.get("received"), "nacked": j.get("nacked"),
        "latency_p50_us": lat.get("p50") if lat.get("samples") else None,
        "latency_p99_us": lat.get("p99") if lat.get("samples") else None,
        "latency_p999_us": lat.get("p999") if lat.get("samples") else None,
        "confirm_p50_us": clat.get("p50") if clat.get("samples") else None,
        "confirm_p99_us": clat.get("p99") if clat.get("samples") else None,
        "confirm_p999_us": clat.get("p999") if clat.get("samples") else None,
        "generator_cpu_pct": 100.0 * cpu / d if d else None,
        "errors": j.get("errors") or [],
    }


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
        rss0 = broker.rss_kb()
        res["rss_before_kb"] = rss0
        res["broker_pid"] = broker.pid
        gen = Generator(opts, broker, gen_log)
        if s["kind"] == "perf":
            duration = opts.duration or s["duration"]
            cmd = generator_cmd(opts, broker, [*s["args"], "-z", str(duration)])
            res["commands"].append(shlex.join(cmd))
            j, sampler, t_measure, notes = gen.run(cmd, timeout=duration + 180, perf_out=perf_out)
            res["notes"] += notes
            if j is None:
                res["error"] = f"no JSON summary from lepus-perf (see {gen_log})"
                return res
            res.update(metrics_from_json(j))
            res["broker_cpu_pct"] = sampler.cpu_pct(t_measure, res["duration_s"])
            res["other_cpu_pct"] = sampler.other_pct(t_measure, res["duration_s"], res["generator_cpu_pct"])
            res["rss_peak_kb"] = sampler.rss_peak_kb()
        elif s["kind"] == "restart":
            perf_durable.check_disk(s, broker, opts, res)
            perf_durable.run_restart(s, broker, opts, tag, gen, res)
        elif s["kind"] == "backlog":
            n = perf_durable.messages_for(s, broker.name, opts)
            perf_durable.check_disk(s, broker, opts, res)
            fill = generator_cmd(opts, broker, [*s["publish_args"], "-C", str(n)])
            drain = generator_cmd(opts, broker, [*s["consume_args"], "-D", str(n)])
            res["commands"] += [shlex.join(fill), shlex.join(drain)]
            fill_at = os.path.getsize(gen_log)
            j1, sm1, t1, notes1 = gen.run(fill, timeout=perf_durable.phase_timeout(n),
                                          perf_out=perf_out and Path(str(perf_out) + "-fill"),
                                          perf_after_progress=False)
            time.sleep(opts.settle)
            rss_full = broker.rss_kb()
            j2, sm2, t2, notes2 = gen.run(drain, timeout=perf_durable.phase_timeout(n),
                                          perf_out=perf_out and Path(str(perf_out) + "-drain"),
                                          perf_after_progress=False)
            res["notes"] += notes1 + notes2
            if j1 is None or j2 is None:
                res["error"] = f"no JSON summary from lepus-perf (see {gen_log})"
                return res
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
            perf_durable.backlog_fill_metrics(res, gen_log, fill_at, j1, sm1)
            if rss_full and rss0:
                res["bytes_per_message"] = (rss_full - rss0) * 1024 / n
            res["broker_cpu_pct"] = sm2.cpu_pct(t2, m2["duration_s"])
            res["fill_broker_cpu_pct"] = sm1.cpu_pct(t1, m1["duration_s"])
            res["other_cpu_pct"] = sm2.other_pct(t2, m2["duration_s"], m2["generator_cpu_pct"])
            res["rss_peak_kb"] = max((x for x in (sm1.rss_peak_kb(), sm2.rss_peak_kb()) if x), default=None)
            res["generator_cpu_pct"] = m2["generator_cpu_pct"]
            if res["received"] != n:
                res["notes"].append(f"drained {res['received']} of {n}")
        else:  # idle_connections
            n = opts.connections or s["connections"]
            cmd = ["taskset", "-c", opts.generator_cpus, "python3", "perf/idle_connections.py", str(n),
                   str(broker.pid), "--port", str(broker.port), "--json"]
            res["commands"].append(shlex.join(cmd))
            j, sampler, _, notes = gen.run(cmd, timeout=1800, perf_out=perf_out, perf_after_progress=False)
            res["notes"] += notes
            if j is None:
                res["error"] = f"idle_connections.py failed (see {gen_log})"
                return res
            res["connections"] = n
            res["bytes_per_connection"] = j["bytes_per_connection"]
            res["rss_before_kb"] = j["rss_before_kb"]
            res["rss_peak_kb"] = j["rss_after_kb"]
            res["open_s"] = j["open_s"]
            res["errors"] = []
        res["rss_after_kb"] = broker.rss_kb()
        if (res.get("other_cpu_pct") or 0) > 20:
            res["notes"].append(f"disturbed: other processes used {res['other_cpu_pct']:.0f} % of a core")
        if res.get("errors"):
            res["notes"] += res["errors"]
        return res
    finally:
        broker.stop()


def median_run(runs, metric):
    ok = [r for r in runs if r.get(metric) is not None and "error" not in r]
    if not ok:
        return runs[-1] if runs else None
    ok.sort(key=lambda r: r[metric])
    return ok[(len(ok) - 1) // 2]


# ---------------------------------------------------------------- targets


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


# ---------------------------------------------------------------- formatting


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
    return "–" if kb is None else f"{kb / 1024:,.0f}"


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
        "erlang": out(["dpkg-query", "-W", "-f", "${Version}", "erlang-base"]) or "?",
        "loadavg": open("/proc/loadavg").read().split()[:3],
        "rabbit_fs": out(["df", "--output=fstype", str(Path(opts.rabbit_dir).parent)]).split()[-1:] or ["?"],
        "thp": open("/sys/kernel/mm/transparent_hugepage/enabled").read().strip()
        if os.path.exists("/sys/kernel/mm/transparent_hugepage/enabled") else "?",
    }


def write_markdown(opts, path, scenarios, results, info, plots, started, elapsed, build_cmd):
    date = started.strftime("%Y-%m-%d")
    L = []
    L.append(f"# Lepus vs RabbitMQ ({date})")
    L.append("")
    L.append(f"Written by `scripts/perf.py` ({started.strftime('%Y-%m-%d %H:%M')}, {elapsed / 60:.0f} min). "
             f"Scenarios: `perf/scenarios/`. Every (scenario, broker) run had a freshly started broker.")
    L.append("")
    L.append("## Machine")
    L.append("")
    L.append(f"- CPU: `{info['cpu']}`, `nproc` {info['nproc']}; kernel `{info['kernel']}`; "
             f"{info['mem_gib']:.0f} GiB RAM; loopback TCP")
    L.append(f"- broker pinned to core(s) {opts.broker_cpus}, generator (`lepus-perf`) to core(s) "
             f"{opts.generator_cpus}; load average before / after: {' '.join(info['loadavg'])} / "
             f"{' '.join(info['loadavg_end'])}")
    L.append(f"- Lepus: commit `{info['commit']}` ({info['commit_subject']}), {info['rustc']}, "
             f"`cargo build --release` (binaries in `{opts.bin}`)")
    L.append(f"- RabbitMQ {info['rabbitmq']} (Debian), Erlang {info['erlang']}; "
             f"{info.get('rabbit_started', 'not started')}; data directory `{opts.rabbit_dir}` on "
             f"{info['rabbit_fs'][0]} (persistent messages are fsynced there)")
    L.append(f"- transparent huge pages: `{info['thp']}`")
    if opts.repeat > 1:
        L.append(f"- each run {opts.repeat} times; tables show the run with the median headline")
    L.append("")
    L.append("## Results against the targets")
    L.append("")
    L.append("| scenario | headline | Lepus | RabbitMQ | relay | Lepus / RabbitMQ | target | met? |")
    L.append("|---|---|---:|---:|---:|---:|---|---|")
    for s in scenarios:
        best = results.get(s["name"], {})
        metric = s["headline"]
        vals = {b: (best[b].get(metric) if best.get(b) else None) for b in BROKERS}
        ratio = "–"
        if vals["lepus"] and vals["rabbitmq"]:
            ratio = f"{vals['lepus'] / vals['rabbitmq']:.2f}x"
        if vals["lepus"] and vals["relay"]:
            ratio += f" (relay: {vals['lepus'] / vals['relay']:.2f}x)"
        verdict, detail = evaluate(s, best)
        t = s.get("target", {}).get("text", "")
        cells = [fmt(metric, vals[b]) if b in s["brokers"] else "" for b in BROKERS]
        for b in BROKERS:
            r = best.get(b)
            if r and "error" in r:
                cells[BROKERS.index(b)] = "error"
        L.append(f"| {s['name']} | {METRICS[metric][0]} | {' | '.join(cells)} | {ratio} | {t} | "
                 f"{(verdict or '') + (': ' + detail if detail else '')} |")
    L.append("")
    L.append("Ratios are Lepus / other for the headline; for latency, CPU and memory lower is better.")
    L.append("")
    conf = [s for s in scenarios if any((results.get(s["name"], {}).get(b) or {}).get("confirm_p50_us")
                                        for b in BROKERS)]
    if conf:
        L.append("Publisher-confirm latency (publish to basic.ack, measured by each producer), p50 / p99:")
        L.append("")
        L.append("| scenario | Lepus | RabbitMQ |")
        L.append("|---|---:|---:|")
        for s in conf:
            best = results.get(s["name"], {})
            cells = [" / ".join(fmt("latency", (best.get(b) or {}).get(k)) for k in ("confirm_p50_us", "confirm_p99_us"))
                     for b in ("lepus", "rabbitmq")]
            L.append(f"| {s['name']} | {cells[0]} | {cells[1]} |")
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
        if s["kind"] == "perf":
            L.append("| broker | sent/s | confirmed/s | received/s | latency p50 / p99 / p99.9 | "
                     "confirm latency p50 / p99 | broker CPU | "
                     "broker RSS MB before / peak / after | generator CPU | other load | notes |")
            L.append("|---|---:|---:|---:|---|---|---:|---|---:|---:|---|")
            for b in s["brokers"]:
                for r in runs.get(b, []):
                    if "error" in r:
                        L.append(f"| {BROKER_TITLE[b]} | | | | | | | | | | error: {r['error']} |")
                        continue
                    lat = " / ".join(fmt("latency", r.get(k)) for k in
                                     ("latency_p50_us", "latency_p99_us", "latency_p999_us"))
                    clat = " / ".join(fmt("latency", r.get(k)) for k in ("confirm_p50_us", "confirm_p99_us"))
                    mark = " (median)" if opts.repeat > 1 and r is best.get(b) else ""
                    L.append(f"| {BROKER_TITLE[b]}{mark} | {si(r.get('sent_per_s'))} | "
                             f"{si(r.get('confirmed_per_s'))} | {si(r.get('received_per_s'))} | {lat} | {clat} | "
                             f"{fmt('x_pct', r.get('broker_cpu_pct'))} | {mb(r.get('rss_before_kb'))} / "
                             f"{mb(r.get('rss_peak_kb'))} / {mb(r.get('rss_after_kb'))} | "
                             f"{fmt('x_pct', r.get('generator_cpu_pct'))} | {fmt('x_pct', r.get('other_cpu_pct'))} | "
                             f"{'; '.join(r.get('notes', []))} |")
        elif s["kind"] == "backlog":
            L.append("| broker | messages | fill msg/s (confirmed) | fill msg/s first 10 % / last 10 % | "
                     "confirm latency p50 / p99 | drain msg/s | fill / drain s | broker RSS MB peak while filling | "
                     "broker RSS MB before / full / after | broker memory per queued message | notes |")
            L.append("|---|---:|---:|---|---|---:|---|---:|---|---:|---|")
            for b in s["brokers"]:
                for r in runs.get(b, []):
                    if "error" in r:
                        L.append(f"| {BROKER_TITLE[b]} | | | | | | | | | | error: {r['error']} |")
                        continue
                    phases, fill_peak = perf_durable.backlog_cells(r)
                    clat = " / ".join(fmt("latency", r.get(k)) for k in ("fill_confirm_p50_us", "fill_confirm_p99_us"))
                    L.append(f"| {BROKER_TITLE[b]} | {r['messages']:,} | {si(r.get('fill_per_s'))} | {phases} | "
                             f"{clat} | {si(r.get('drain_per_s'))} | {r['fill_s']:.1f} / {r['drain_s']:.1f} | "
                             f"{fill_peak} | "
                             f"{mb(r.get('rss_before_kb'))} / {mb(r.get('rss_full_kb'))} / "
                             f"{mb(r.get('rss_after_kb'))} | {fmt('bytes', r.get('bytes_per_message'))} | "
                             f"{'; '.join(r.get('notes', []))} |")
        elif s["kind"] == "restart":
            perf_durable.restart_table(L, s, runs, opts)
        else:
            L.append("| broker | connections | broker RSS MB before / with them | per connection | "
                     "opened in | notes |")
            L.append("|---|---:|---|---:|---:|---|")
            for b in s["brokers"]:
                for r in runs.get(b, []):
                    if "error" in r:
                        L.append(f"| {BROKER_TITLE[b]} | | | | | error: {r['error']} |")
                        continue
                    L.append(f"| {BROKER_TITLE[b]} | {r['connections']:,} | {mb(r.get('rss_before_kb'))} / "
                             f"{mb(r.get('rss_peak_kb'))} | {fmt('bytes', r.get('bytes_per_connection'))} | "
                             f"{r['open_s']:.1f} s | {'; '.join(r.get('notes', []))} |")
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
             f"{opts.settle:g} s of rest, its RSS (VmRSS) is read, the generator runs pinned to the "
             "generator core(s) while the broker's CPU time and RSS are sampled every 0.2 s, and the broker "
             "is stopped. Broker CPU is over the generator's measured interval (100 % = one core); "
             "\"other load\" is the machine's busy time in that interval minus broker and generator "
             "(other processes: above ~20 % the run was disturbed). "
             "Raw logs: the generator's progress lines and the brokers' output are in "
             f"`{opts.log_dir}`.")
    L.append("")
    path.write_text("\n".join(L))


# ---------------------------------------------------------------- plots (plain SVG, no dependencies)


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
         f'<rect width="100%" height="100%" fill="white"/>',
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


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--scenarios", help="comma-separated names (or file numbers); default: all")
    ap.add_argument("--brokers", default="lepus,rabbitmq,relay",
                    help="comma-separated subset of lepus,rabbitmq,relay (relay only runs where a scenario lists it)")
    ap.add_argument("--duration", type=int, help="seconds per run for every perf scenario (overrides the files)")
    ap.add_argument("--messages", type=int, help="messages for the backlog and restart scenarios (overrides the "
                    "files; for RabbitMQ capped by a scenario's rabbitmq_messages)")
    ap.add_argument("--rabbit-messages", type=int, help="messages for RabbitMQ in the backlog and restart scenarios "
                    "(overrides rabbitmq_messages and --messages)")
    ap.add_argument("--restart-stops", help="stop modes of the restart scenario, comma-separated: kill (SIGKILL), "
                    "graceful (default: the scenario's `stops`)")
    ap.add_argument("--connections", type=int, help="connections for the idle-connections scenario")
    ap.add_argument("--quick", action="store_true", help="smoke test: --duration 3 --messages 100000 "
                    "--connections 1000 unless given")
    ap.add_argument("--repeat", type=int, default=1, help="runs per (scenario, broker); the median is reported")
    ap.add_argument("--out", help="markdown file to write (default perf/results/<date>.md; plots next to it)")
    ap.add_argument("--broker-cpus", default="0", help="taskset core list for the broker (default 0)")
    ap.add_argument("--generator-cpus", default="1", help="taskset core list for lepus-perf (default 1)")
    ap.add_argument("--lepus-port", type=int, default=5711)
    ap.add_argument("--rabbit-port", type=int, default=5712)
    ap.add_argument("--relay-port", type=int, default=5713)
    ap.add_argument("--rabbit-dir", default="/tmp/lepus-perf-rabbitmq", help="RabbitMQ data dir (wiped)")
    ap.add_argument("--data-root", help="where Lepus' per-run data directories go (default $TMPDIR or /tmp); "
                    "the deep backlog needs ~85 B of disk per message")
    ap.add_argument("--lepus-args", default="", help="extra arguments for lepus, e.g. '--log warn'")
    ap.add_argument("--settle", type=float, default=1.0, help="seconds between broker start and run")
    ap.add_argument("--rss-limit-mb", type=int, default=12_000,
                    help="interrupt a run when the broker's RSS passes this (0 = no limit)")
    ap.add_argument("--no-build", action="store_true", help="do not run cargo build")
    ap.add_argument("--list", action="store_true", help="list scenarios and the estimated time, then exit")
    ap.add_argument("--dry-run", action="store_true", help="print what would run, then exit")
    ap.add_argument("--profile", metavar="DIR",
                    help="record `perf record` data of the broker during each run into DIR (see "
                         "scripts/flamegraph.sh); no markdown unless --out is given")
    ap.add_argument("--perf-callgraph", choices=("dwarf", "fp"), default="dwarf",
                    help="call graphs for Lepus/relay profiles (RabbitMQ always uses frame pointers)")
    ap.add_argument("--perf-freq", type=int, default=999)
    opts = ap.parse_args()
    opts.command_line = "python3 scripts/perf.py " + shlex.join(sys.argv[1:])
    if opts.quick:
        opts.duration = opts.duration or 3
        opts.messages = opts.messages or 100_000
        opts.connections = opts.connections or 1000
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    if not target_dir.is_absolute():
        target_dir = ROOT / target_dir
    opts.bin = target_dir / "release"
    if opts.bin.is_relative_to(ROOT):
        opts.bin = opts.bin.relative_to(ROOT)  # every command runs in ROOT

    try:
        scenarios = select(load_scenarios(), opts.scenarios)
    except ScenarioError as e:
        sys.exit(f"perf.py: {e}")
    wanted_brokers = [b.strip() for b in opts.brokers.split(",") if b.strip()]
    for b in wanted_brokers:
        if b not in BROKERS:
            sys.exit(f"perf.py: unknown broker {b}")
    plan = [(s, b) for b in BROKERS if b in wanted_brokers for s in scenarios if b in s["brokers"]]
    total = sum(estimate_s(s, b, opts) for s, b in plan) * opts.repeat
    if opts.list or opts.dry_run:
        for s in scenarios:
            bs = [b for b in s["brokers"] if b in wanted_brokers]
            est = sum(estimate_s(s, b, opts) for b in bs) * opts.repeat
            print(f"{s['name']:26} {s['kind']:17} {','.join(bs):22} ~{est / 60:5.1f} min  {s['description'][:70]}")
            if opts.dry_run:
                for b in bs:
                    port = {"lepus": opts.lepus_port, "rabbitmq": opts.rabbit_port, "relay": opts.relay_port}[b]
                    fake = type("B", (), {"port": port})
                    n = perf_durable.messages_for(s, b, opts) if "messages" in s else None
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

    build_cmd = "cargo build --release --bin lepus --bin lepus-perf"
    if os.environ.get("CARGO_TARGET_DIR"):
        build_cmd = f"CARGO_TARGET_DIR={os.environ['CARGO_TARGET_DIR']} {build_cmd}"
    if not opts.no_build:
        log(build_cmd)
        r = subprocess.run(["cargo", "build", "--release", "--bin", "lepus", "--bin", "lepus-perf"], cwd=ROOT)
        if r.returncode != 0:
            sys.exit("perf.py: build failed")
    for exe in ("lepus", "lepus-perf"):
        if not (opts.bin / exe).exists():
            sys.exit(f"perf.py: {opts.bin / exe} missing (build first or set CARGO_TARGET_DIR)")
    if "rabbitmq" in [b for _, b in plan] and not Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists():
        sys.exit("perf.py: RabbitMQ is not installed: scripts/rabbitmq.sh install")

    info = machine_info(opts)
    log(f"{len(plan)} runs x {opts.repeat}, estimated {total / 60:.0f} min; logs in {log_dir}")
    brokers = {"lepus": Lepus(opts, log_dir), "rabbitmq": RabbitMQ(opts, log_dir), "relay": Relay(opts, log_dir)}
    results = {}
    current = None

    def on_term(signum, frame):
        raise KeyboardInterrupt

    # Also SIGINT: a shell started without job control may have ignored it for us.
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        for s, b in plan:
            for i in range(opts.repeat):
                current = brokers[b]
                tag = f"{s['name']}" + (f"-{i + 1}" if opts.repeat > 1 else "")
                log(f"{s['name']} on {b}" + (f" (run {i + 1}/{opts.repeat})" if opts.repeat > 1 else ""))
                perf_out = prof_dir / f"{date}-{s['name']}-{b}" if prof_dir else None
                r = run_once(s, current, opts, tag, log_dir, perf_out)
                current = None
                if b == "rabbitmq" and getattr(brokers[b], "started_msg", None):
                    info["rabbit_started"] = brokers[b].started_msg.replace("rabbitmq.sh: ", "")
                if prof_dir and perf_out:
                    r["perf_data"] = str(perf_out)
                results.setdefault(s["name"] + "/all", {}).setdefault(b, []).append(r)
                headline = s["headline"]
                log(f"  -> {'error: ' + r['error'] if 'error' in r else fmt(headline, r.get(headline))}"
                    f" {METRICS[headline][0]}" + (f" ({'; '.join(r['notes'])})" if r.get("notes") else ""))
            results.setdefault(s["name"], {})[b] = median_run(results[s["name"] + "/all"][b], s["headline"])
    except KeyboardInterrupt:
        log("interrupted: stopping the broker")
        if current:
            current.stop()
        if not results:
            sys.exit(130)
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
    # Short summary on stdout.
    for s in scenarios:
        best = results.get(s["name"], {})
        m = s["headline"]
        cells = ", ".join(f"{b} {'error' if 'error' in r else fmt(m, r.get(m))}" for b, r in best.items())
        verdict, detail = evaluate(s, best)
        print(f"{s['name']:26} {METRICS[m][0]:30} {cells}" + (f"  [{verdict}{': ' + detail if detail else ''}]"
                                                               if verdict else ""))


# The durability scenarios (backlog rates along the fill, restarts) use this module's helpers.
sys.modules.setdefault("perf", sys.modules[__name__])
import perf_durable  # noqa: E402

if __name__ == "__main__":
    main()
