#!/usr/bin/env python3
"""What one fdatasync costs on the file system under a directory, for the
three ways a message log segment can be prepared.

For each way, a 64 MiB file is prepared, then 2,000 times: 16,000 bytes are
written after the last ones and the file is fdatasync'ed; the script prints
the median, p90 and p99 of the fdatasync alone.

- fallocate: blocks reserved, never written (unwritten extents): the first
  write to each block changes the extent map, which the sync must commit.
- zeros: every block written with zeros and synced first (what
  `storage::spare` does for the next segment).
- append: an empty file that grows with each write (the size changes).

    python3 scripts/fdatasync_cost.py [--dir DIR] [--rounds 2]

DIR defaults to a new temporary directory (use the data directory's file
system to learn about it). Writes 64 MiB per way and round; removes its file.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

SIZE = 64 << 20
WRITE = 16_000
SYNCS = 2_000


def prepare(fd: int, way: str) -> None:
    if way == "fallocate":
        os.posix_fallocate(fd, 0, SIZE)
    elif way == "zeros":
        chunk = b"\0" * (1 << 20)
        for _ in range(SIZE // len(chunk)):
            os.write(fd, chunk)
    os.fsync(fd)


def measure(path: str, way: str) -> list[float]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        prepare(fd, way)
        data = b"x" * WRITE
        took = []
        for i in range(SYNCS):
            os.pwrite(fd, data, i * WRITE)
            start = time.perf_counter()
            os.fdatasync(fd)
            took.append(time.perf_counter() - start)
        return sorted(took)
    finally:
        os.close(fd)
        os.unlink(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", help="directory on the file system to measure (default: a temporary one)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = os.path.join(tmp, "fdatasync-cost")
        print("| way | fdatasync p50 | p90 | p99 |")
        print("|---|---:|---:|---:|")
        for _ in range(args.rounds):
            for way in ("fallocate", "zeros", "append"):
                t = measure(path, way)
                us = [t[int(len(t) * q)] * 1e6 for q in (0.5, 0.9, 0.99)]
                print(f"| {way} | {us[0]:.0f} µs | {us[1]:.0f} µs | {us[2]:.0f} µs |")


if __name__ == "__main__":
    main()
