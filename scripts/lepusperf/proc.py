"""Processes: free and open ports, starting a `lepus` binary pinned with
taskset on a data directory and waiting until it is ready, stopping a
process, and a process's CPU time and RSS from /proc (once, or sampled by
a thread). Imports nothing of the package: everything else builds on it."""
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
# The release build's binaries, for the tools that do not build them.
LEPUS = str(ROOT / "target" / "release" / "lepus")
LEPUS_PERF = str(ROOT / "target" / "release" / "lepus-perf")
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- ports


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_open(port):
    with socket.socket() as sk:
        sk.settimeout(0.2)
        return sk.connect_ex((HOST, port)) == 0


def wait_for(ready, proc=None, timeout=30.0):
    """Polls ready() every 50 ms: True once it is, False at the deadline or
    as soon as `proc` (a Popen, if given) has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def wait_port(port, proc=None, timeout=30.0):
    return wait_for(lambda: port_open(port), proc, timeout)


# ---------------------------------------------------------------- a lepus process


_HTTP_ARGS = {}


def lepus_http_args(binary):
    """lepus serves its management API on 15672 and Prometheus on 15692 by default,
    RabbitMQ's ports: a benchmarked lepus takes ports the kernel picks instead
    (still serving both, as deployed). Older binaries without these flags get none
    (so two commits can still be compared)."""
    key = str(binary)
    if key not in _HTTP_ARGS:
        try:
            help_text = subprocess.run([key, "--help"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            help_text = ""
        _HTTP_ARGS[key] = [a for flag in ("--management-port", "--prometheus-port") if flag in help_text
                           for a in (flag, "0")]
    return _HTTP_ARGS[key]


def lepus_command(binary, port, data_dir, cpus="0"):
    """`lepus` pinned to `cpus`, listening on loopback `port`, on `data_dir`, logging warnings only."""
    return ["taskset", "-c", cpus, str(binary), "--listen", f"{HOST}:{port}", "--data-dir", str(data_dir),
            "--log", "warn", *lepus_http_args(binary)]


def start_lepus(binary, port, data_dir, out, ready=None, cpus="0", timeout=30.0, preexec_fn=None):
    """Starts lepus_command(...) with stdout and stderr to `out`; returns its
    Popen once ready() (default: the port accepts TCP). Raises RuntimeError if
    it exits first or is not ready within `timeout` s (then it is killed)."""
    proc = subprocess.Popen(lepus_command(binary, port, data_dir, cpus), stdout=out, stderr=out,
                            preexec_fn=preexec_fn)
    if wait_for(ready or (lambda: port_open(port)), proc, timeout):
        return proc
    if proc.poll() is not None:
        raise RuntimeError(f"lepus exited with {proc.returncode}")
    proc.kill()
    proc.wait()
    raise RuntimeError(f"lepus did not accept connections within {timeout:g} s")


def stop(proc, timeout, sig=signal.SIGTERM):
    """Sends `sig` (if it still runs) and reaps; SIGKILL after `timeout` s.
    Returns the exit status, or None if it had to be killed."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


def parse_cpus(spec):
    """The cores of a taskset list such as "0,2-3"."""
    cpus = []
    for part in spec.split(","):
        if "-" in part:
            a, b = part.split("-")
            cpus += range(int(a), int(b) + 1)
        else:
            cpus.append(int(part))
    return cpus


# ---------------------------------------------------------------- /proc


def cpu_s(pid):
    """User + system CPU seconds of `pid` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def rss_parts_kb(pid):
    """(RssAnon, RssFile) in kB: heap and stacks vs. mapped files (the binary's code)."""
    parts = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("RssAnon:", "RssFile:")):
                parts[line.split(":")[0]] = int(line.split()[1])
    return parts.get("RssAnon", 0), parts.get("RssFile", 0)


def proc_stat(pid):
    """(cpu seconds user+system, VmRSS kB) of a process, or None if gone."""
    try:
        return cpu_s(pid), rss_kb(pid)
    except (OSError, RuntimeError, IndexError, ValueError):
        return None


def machine_busy_s():
    """CPU seconds the whole machine spent busy (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    return (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)) / CLK_TCK


def core_times():
    """{core: (busy s, steal s)} from the per-core lines of /proc/stat: busy =
    user + nice + system + irq + softirq (what ran there, processes and
    interrupts); steal = time the hypervisor ran something else."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu"):
                break
            name, *v = line.split()
            if name == "cpu":
                continue
            v = [int(x) for x in v]
            out[int(name[3:])] = ((v[0] + v[1] + v[2] + v[5] + v[6]) / CLK_TCK, (v[7] if len(v) > 7 else 0) / CLK_TCK)
    return out


class Sampler(threading.Thread):
    """Samples a process's CPU time and RSS, and the machine's busy time,
    every `interval` s; calls on_limit() once when the RSS passes rss_limit_kb."""

    def __init__(self, pid, rss_limit_kb=0, on_limit=None, interval=0.2):
        super().__init__(daemon=True)
        self.pid, self.rss_limit_kb, self.on_limit, self.interval = pid, rss_limit_kb, on_limit, interval
        self.samples = []  # (monotonic, broker cpu s, broker rss kB, machine busy s, core_times())
        self.halt = threading.Event()
        self.over_limit = False

    def begin(self):
        """Takes a first sample now, then samples on the thread."""
        self.sample()
        self.start()
        return self

    def sample(self):
        st = proc_stat(self.pid)
        if st:
            self.samples.append((time.monotonic(), st[0], st[1], machine_busy_s(), core_times()))
            if self.rss_limit_kb and st[1] > self.rss_limit_kb and not self.over_limit:
                self.over_limit = True
                self.on_limit()
        return st

    def run(self):
        while not self.halt.is_set():
            self.sample()
            self.halt.wait(self.interval)

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

    def window(self, t_from, duration):
        """The first and last sample of [t_from, t_from + duration] (± 0.1 s), or None."""
        if t_from is None or not duration:
            return None
        pts = [s for s in self.samples if t_from - 0.1 <= s[0] <= t_from + duration + 0.1]
        if len(pts) < 2 or pts[-1][0] - pts[0][0] <= 0:
            return None
        return pts[0], pts[-1]

    def cpu_s(self, t_from, duration):
        """Broker CPU seconds (user + system, all threads) over [t_from, t_from + duration],
        scaled from the sampled window to exactly `duration`."""
        pct = self.cpu_pct(t_from, duration)
        return None if pct is None else pct / 100.0 * duration

    def cpu_total_s(self):
        """Broker CPU seconds from the first sample (before the generator started)
        to the last (after it ended): for phases too short for cpu_s()'s window."""
        if len(self.samples) < 2:
            return None
        return self.samples[-1][1] - self.samples[0][1]

    def load(self, t_from, duration, generator_pct, cores=None):
        """What else ran over [t_from, t_from + duration], in % of one core:
        other_pct = busy time of `cores` (the broker's and the generator's) minus
        the broker's and the generator's CPU time (floored at 0); steal_pct = steal
        time of `cores`; elsewhere_pct = busy time of the machine's other cores.
        None if the window has too few samples."""
        w = self.window(t_from, duration)
        broker = self.cpu_pct(t_from, duration)
        if w is None or broker is None or generator_pct is None:
            return None
        (t0, *_, c0), (t1, *_, c1) = w
        dt = t1 - t0
        cores = set(c0) if cores is None else set(cores)
        busy = sum(c1[c][0] - c0[c][0] for c in c0 if c in cores and c in c1)
        steal = sum(c1[c][1] - c0[c][1] for c in c0 if c in cores and c in c1)
        elsewhere = sum(c1[c][0] - c0[c][0] for c in c0 if c not in cores and c in c1)
        return {"other_pct": max(100.0 * busy / dt - broker - generator_pct, 0.0),
                "steal_pct": 100.0 * steal / dt, "elsewhere_pct": 100.0 * elsewhere / dt}

    def rss_peak_kb(self):
        return max((s[2] for s in self.samples), default=None)
