#!/usr/bin/env bash
# Crash soak: the crash tests (tests/crash/) with hundreds of trials, on a
# release build, for a longer run than CI's 3 trials per test.
#
#   scripts/crash.sh [test-name-filter]
#   e.g. scripts/crash.sh                 # both tests, 300 trials each
#        LEPUS_CRASH_TRIALS=50 scripts/crash.sh kill_9      # SIGKILL only
#        scripts/crash.sh graceful        # SIGTERM only
#
# Each trial starts `lepus --shards 2 --data-dir <fresh temp dir>`, runs two
# confirm-mode publishers (one per shard) and a manual-ack consumer against
# two durable queues, stops the broker at a random moment (SIGKILL, or SIGTERM
# for the graceful test), restarts it on the same port and data dir, drains
# the queues and checks: no confirmed message lost, a message delivered
# before the stop comes back only with redelivered=true, no duplicates after
# the restart, nothing never published, and (graceful) no acked message back.
# One summary line per trial (seed, published, confirmed, delivered
# before/after, redelivered).
#
# Environment:
#   LEPUS_CRASH_TRIALS   trials per test (default here 300)
#   LEPUS_CRASH_SEED     seed of the first trial (decimal or 0x hex); trial i
#                        uses seed + i * 0x9E3779B97F4A7C15. To replay a
#                        failed trial: LEPUS_CRASH_SEED=<its seed>
#                        LEPUS_CRASH_TRIALS=1 scripts/crash.sh <test name>
#                        (this replays its random choices, not its timing)
#   CARGO_TARGET_DIR     as usual
#
# The run stops at the first failing trial, which prints its violations, the
# tail of both brokers' stderr, and keeps its data directory (path printed).
# The full output is also written to $CARGO_TARGET_DIR (or target)/crash-<date>.log.
set -euo pipefail
cd "$(dirname "$0")/.."

export LEPUS_CRASH_TRIALS="${LEPUS_CRASH_TRIALS:-300}"
target_dir="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target_dir"
log="$target_dir/crash-$(date +%Y%m%d-%H%M%S).log"
echo "== crash soak: $LEPUS_CRASH_TRIALS trial(s) per test${LEPUS_CRASH_SEED:+, first seed $LEPUS_CRASH_SEED}; log: $log"
cargo test --release --test crash -- --nocapture "$@" 2>&1 | tee "$log"
