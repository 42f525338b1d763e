#!/usr/bin/env python3
"""Does memory come back? RSS of a Lepus broker over a burst and after it (see `--help` and
lepusperf/memory_return.py)."""
from lepusperf import cli

if __name__ == "__main__":
    cli.memory_return_main()
