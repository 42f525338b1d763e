#!/usr/bin/env python3
"""Interleaved before/after comparison of two `lepus` binaries (see `--help` and lepusperf/ab.py)."""
from lepusperf import cli

if __name__ == "__main__":
    cli.ab_main()
