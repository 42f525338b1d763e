#!/usr/bin/env python3
"""Floods and churn against a release build of Lepus (see `--help` and lepusperf/flood.py)."""
from lepusperf import cli

if __name__ == "__main__":
    cli.flood_main()
