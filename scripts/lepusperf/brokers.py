"""The brokers the scenario suite measures, each started fresh per run and
stopped after it: Lepus (a `lepus` binary pinned with taskset, on a fresh
data directory), RabbitMQ (through scripts/rabbitmq.sh), garagemq (Debian's
Go broker, pinned with taskset, on a fresh config and database directory)
and lepus-perf's byte relay; each can also be killed, stopped gracefully
and restarted on its data, for the restart scenario."""
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time

from .proc import ROOT, lepus_http_args, parse_cpus, port_open, proc_stat, stop, wait_port


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
        binary = getattr(opts, "lepus_bin", None) or opts.bin / "lepus"
        self.cmd = ["taskset", "-c", opts.broker_cpus, str(binary), "--listen", f"127.0.0.1:{self.port}",
                    "--shards", str(shards), *lepus_http_args(ROOT / binary)] + shlex.split(opts.lepus_args)

    def full_cmd(self):
        """The command line, with the data directory if there is one."""
        return self.cmd + (["--data-dir", self.data_dir] if getattr(self, "data_dir", None) else [])

    def spawn(self, tag):
        """Starts the process (on self.data_dir, if set); returns the monotonic time just before."""
        self.log_path = self.log_dir / f"{tag}-{self.name}.log"
        self.logf = open(self.log_path, "w")
        cmd = self.full_cmd()
        t = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=self.logf, stderr=subprocess.STDOUT, cwd=ROOT)
        self.pid = self.proc.pid  # taskset execs lepus: same pid
        if shlex.join(cmd) not in self.commands:
            self.commands.append(shlex.join(cmd))
        return t

    def start(self, tag):
        if port_open(self.port):
            raise RuntimeError(f"port {self.port} is already in use")
        if self.name != "relay":
            # Every run starts from an empty data directory: no durable
            # definitions left over from an earlier scenario.
            self.data_dir = tempfile.mkdtemp(prefix=f"{self.name}-perf-data-", dir=self.opts.data_root)
            self.prepare()
        self.spawn(tag)
        if not wait_port(self.port, self.proc):
            self.stop()
            raise RuntimeError(f"{self.name} did not start listening (see its log)")

    def prepare(self):
        """Writes what the broker needs in its fresh data directory before it starts."""

    def end(self, sig, timeout=10):
        """Stops the process with `sig` (SIGKILL after `timeout` s), keeping the data directory."""
        if self.proc:
            stop(self.proc, timeout, sig)
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


class LepusUring(Lepus):
    """Lepus on its io_uring backend, to compare with mio (the default) in every table."""
    name = "lepus-uring"

    def __init__(self, opts, log_dir):
        super().__init__(opts, log_dir)
        self.cmd += ["--io-backend", "io-uring"]

    def start(self, tag):
        """Starts it, and fails the run if a shard fell back to mio (a kernel that refuses
        io_uring), so that the column never shows mio under io_uring's name."""
        super().start(tag)
        deadline = time.monotonic() + 10
        while True:
            text = re.sub(r"\x1b\[[0-9;]*m", "", self.log_path.read_text(errors="replace"))
            backends = re.findall(r"shard io backend.*io_backend=(\S+)", text)
            if backends or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if not backends or any(b != "io-uring" for b in backends):
            self.stop()
            raise RuntimeError(f"not on io_uring: the shards' log says {backends or 'nothing'} (see its log)")


class Relay(Lepus):
    name = "relay"

    def __init__(self, opts, log_dir):
        Broker.__init__(self, opts, log_dir)
        self.port = opts.relay_port
        self.proc = None
        self.cmd = ["taskset", "-c", opts.broker_cpus, str(opts.bin / "lepus-perf"), "relay", "--listen",
                    f"127.0.0.1:{self.port}"]


def ensure_garagemq():
    """Installs garagemq (scripts/garagemq.sh install) when it is missing; exits if that fails."""
    if shutil.which("garagemq"):
        return
    r = subprocess.run([str(ROOT / "scripts" / "garagemq.sh"), "install"], cwd=ROOT)
    if r.returncode != 0 or not shutil.which("garagemq"):
        raise SystemExit("perf.py: garagemq is not installed and scripts/garagemq.sh install failed")


# garagemq's configuration (its own YAML, read with --config): Debian's
# /etc/garagemq/config.yaml with loopback addresses, our ports and database
# directory, and TCP_NODELAY on (the package's default is off, which delays
# small writes by up to 40 ms; Lepus, RabbitMQ and lepus-perf all set it).
# User guest, password guest (garagemq keeps an MD5 of it), vhost /.
GARAGEMQ_CONFIG = """proto: amqp-rabbit
users:
  - username: guest
    password: 084e0343a0486ff05530df6c705c8bb4
tcp:
  ip: 127.0.0.1
  port: {port}
  nodelay: true
  readBufSize: 196608
  writeBufSize: 196608
admin:
  ip: 127.0.0.1
  port: {admin_port}
queue:
  shardSize: 8192
  maxMessagesInRam: 131072
db:
  defaultPath: {db}
  engine: badger
vhost:
  defaultPath: /
security:
  passwordCheck: md5
connection:
  channelsMax: 4096
  frameMaxSize: 65536
"""


class GarageMQ(Lepus):
    """Debian's garagemq (a Go AMQP 0-9-1 broker) pinned with taskset; Go sizes
    GOMAXPROCS from the affinity mask, so one core = one P. Its admin HTTP
    server (it always starts one) listens on 127.0.0.1:port + 10000."""
    name = "garagemq"

    def __init__(self, opts, log_dir):
        Broker.__init__(self, opts, log_dir)
        self.port = opts.garagemq_port
        self.proc = None
        self.cmd = ["taskset", "-c", opts.broker_cpus, "garagemq", "--log-level", "warning"]

    def prepare(self):
        conf = GARAGEMQ_CONFIG.format(port=self.port, admin_port=self.port + 10000,
                                      db=os.path.join(self.data_dir, "db"))
        with open(os.path.join(self.data_dir, "config.yaml"), "w") as f:
            f.write(conf)

    def full_cmd(self):
        return self.cmd + ["--config", os.path.join(self.data_dir, "config.yaml")]

    def start(self, tag):
        if port_open(self.port + 10000):
            raise RuntimeError(f"garagemq's admin port {self.port + 10000} is already in use")
        super().start(tag)


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


# Each broker name of perf.py and --curves, and the class that runs it.
CLASSES = {"lepus": Lepus, "lepus-uring": LepusUring, "rabbitmq": RabbitMQ, "garagemq": GarageMQ, "relay": Relay}
