"""Lepus' benchmark and load tools, one package behind the scripts in
scripts/ (perf.py, perf_ab.py, flood.py, memory_return.py, each a thin
wrapper around `cli`).

Imports point one way (tests/tidy.rs fails on a cycle), bottom to top:
- proc: ports, starting and stopping a lepus process, /proc CPU and RSS;
- report: log line, broker names, metrics, number formats, the median run and spreads;
- wire: a raw AMQP client (proc);
- generator: lepus-perf command lines, runs and their JSON (proc, report);
- brokers: Lepus, RabbitMQ, garagemq and the relay for the scenario suite (proc);
- scenarios: the perf/scenarios/*.toml files and their targets (proc, report);
- plots: SVG plots of a suite's results (report);
- throughput, idle, durable, delayed: one module per scenario kind: how one
  run goes and its table (throughput: generator, proc, report; idle: report;
  durable: generator, report, scenarios, throughput, wire; delayed: report,
  runs perf/delayed.py, which needs pika);
- suite: the scenario suite of scripts/perf.py (all of the above);
- curves: scripts/perf.py --curves, throughput against body size and latency
  against offered load (brokers, generator, plots, proc, report, throughput);
- gosym: names a stripped Go binary's frames in `perf script` output, for
  scripts/flamegraph.sh (nothing of the package);
- ab: two lepus binaries compared (scripts/perf_ab.py);
- flood: floods and churn (scripts/flood.py);
- memory_return: memory after a burst (scripts/memory_return.py; needs pika);
- cli: the command lines of the four scripts.
"""
