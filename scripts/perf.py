#!/usr/bin/env python3
"""The benchmark scenarios of perf/scenarios/ (see `--help`, perf/README.md and lepusperf/suite.py)."""
from lepusperf import cli

if __name__ == "__main__":
    cli.perf_main()
