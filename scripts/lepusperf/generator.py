"""The load generator: `lepus-perf` command lines, running one to its end
and reading its JSON summary, and (for the scenario suite) running one
while the broker is sampled, its progress lines watched for the start of
the measurement, a timeout enforced and, if asked, the broker profiled
with `perf record`."""
import json
import os
import re
import shlex
import signal
import subprocess
import threading
import time

from .proc import HOST, ROOT, Sampler
from .report import log

# lepus-perf's progress line: "time 1.003 s, sent 123 msg/s, ..."
PROGRESS = re.compile(r"^time ([0-9.]+) s,")


def perf_cmd(binary, port, cpus, args, json_summary=True):
    """lepus-perf pinned to `cpus` against the broker on loopback `port`, guest/guest, vhost /."""
    uri = f"amqp://guest:guest@{HOST}:{port}/%2F"
    return ["taskset", "-c", cpus, str(binary), "-h", uri, *args] + (["--json"] if json_summary else [])


def generator_cmd(opts, broker, args):
    """The suite's lepus-perf (from opts.bin, on opts.generator_cpus) against `broker`."""
    return perf_cmd(opts.bin / "lepus-perf", broker.port, opts.generator_cpus, args)


def run_summary(cmd, timeout):
    """Runs a lepus-perf command line to its end; returns its JSON summary (the
    last line of its stdout). RuntimeError if it fails."""
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"lepus-perf failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def received_rate(summary):
    """Received msg/s of a JSON summary (the mean over the run)."""
    for key in ("received_per_s", "received_rate", "receive_rate"):
        if key in summary:
            return summary[key]
    rates = summary.get("rates") or {}
    return rates.get("received")


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
        sampler = Sampler(self.broker.pid, self.opts.rss_limit_mb * 1024, self.interrupt).begin()
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

    def run_script(self, cmd, res, timeout, perf_out):
        """Runs a measuring script (not lepus-perf) whose last stdout line is
        JSON; records its command line and notes in `res`. Returns the JSON,
        or None with res["error"] set."""
        res["commands"].append(shlex.join(cmd))
        j, _sampler, _, notes = self.run(cmd, timeout=timeout, perf_out=perf_out, perf_after_progress=False)
        res["notes"] += notes
        if j is None:
            script = next((os.path.basename(c) for c in cmd if c.endswith(".py")), cmd[0])
            res["error"] = f"{script} failed (see {self.log_path})"
        return j

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


def start_perf(opts, broker, out):
    if broker.name == "rabbitmq":
        cg = ["-g"]  # +JPperf true: frame pointers in JIT code
    elif broker.name == "garagemq":
        cg = ["--call-graph", "fp"]  # Go keeps frame pointers; Debian's binary has no DWARF
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

