#!/usr/bin/env bash
# On-CPU flamegraphs of a broker while it runs one benchmark scenario.
#
#   scripts/flamegraph.sh <scenario> [lepus|rabbitmq|relay|all] [more scripts/perf.py args...]
#   e.g. scripts/flamegraph.sh p2p-autoack all --duration 10
#
# Runs the scenario through scripts/perf.py (same pinning, ports and
# generator command as a benchmark run) while `perf record -F 999 -e
# cpu-clock -p <broker pid>` samples the broker, then folds the stacks with
# inferno: perf/results/flamegraphs/<date>-<scenario>-<broker>.svg.
#
# - Lepus: call graphs from DWARF unwinding (the release profile keeps
#   line tables and .eh_frame; std has no frame pointers, so `fp` stacks are
#   cut short). FLAMEGRAPH_CALLGRAPH=fp to compare.
# - RabbitMQ: beam is started with +JPperf true (Erlang/OTP 25: frame
#   pointers in JIT code and /tmp/perf-<pid>.map naming the Erlang
#   functions), recorded with frame pointers (-g).
# - The numbers of a profiled run are not benchmark results (perf costs the
#   broker a few % and more with dwarf); no results file is written.
#
# Environment: FLAMEGRAPH_DIR (default perf/results/flamegraphs),
# FLAMEGRAPH_CALLGRAPH (dwarf|fp), CARGO_TARGET_DIR (as for perf.py).
# Installs linux-perf (apt) and inferno (cargo install) when missing.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ $# -lt 1 ]; then sed -n '2,24p' "$0" >&2; exit 2; fi
SCENARIO=$1
BROKER=${2:-lepus}
shift $(( $# >= 2 ? 2 : 1 ))
case "$BROKER" in
  lepus|rabbitmq|relay) BROKERS=$BROKER ;;
  all) BROKERS=lepus,rabbitmq,relay ;;
  *) echo "flamegraph.sh: broker must be lepus, rabbitmq, relay or all" >&2; exit 2 ;;
esac
OUT=${FLAMEGRAPH_DIR:-$ROOT/perf/results/flamegraphs}
export PATH="$HOME/.cargo/bin:$PATH"

if ! command -v perf >/dev/null; then
  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends linux-perf
fi
if ! command -v inferno-flamegraph >/dev/null || ! command -v inferno-collapse-perf >/dev/null; then
  cargo install inferno
fi

mkdir -p "$OUT"
WORK=$(mktemp -d "$OUT/.record-XXXXXX")
trap 'rm -rf "$WORK"' EXIT

python3 "$ROOT/scripts/perf.py" --scenarios "$SCENARIO" --brokers "$BROKERS" --profile "$WORK" \
  --perf-callgraph "${FLAMEGRAPH_CALLGRAPH:-dwarf}" "$@"

shopt -s nullglob
made=0
for data in "$WORK"/*.perf.data; do
  name=$(basename "$data" .perf.data)
  svg="$OUT/$name.svg"
  # -f: use /tmp/perf-<pid>.map even if another user wrote it.
  perf script -f -i "$data" 2>"$WORK/$name.script.log" | inferno-collapse-perf >"$WORK/$name.folded"
  # cpu-clock periods are nanoseconds: the total is the CPU time sampled.
  cpu_ms=$(awk '{n += $NF} END {printf "%.0f", n / 1e6}' "$WORK/$name.folded")
  inferno-flamegraph --title "$name: on-CPU, $cpu_ms ms sampled" --countname ns <"$WORK/$name.folded" >"$svg"
  echo "flamegraph.sh: $svg ($cpu_ms ms of CPU)"
  made=$((made + 1))
done
# Erlang's perf maps of stopped nodes are no longer needed.
for pid in $(python3 -c 'import json,sys; [print(r["pid"]) for r in json.load(open(sys.argv[1])) if r["broker"] == "rabbitmq" and r["pid"]]' "$WORK"/*-runs.json 2>/dev/null); do
  kill -0 "$pid" 2>/dev/null || rm -f "/tmp/perf-$pid.map"
done
[ "$made" -gt 0 ] || { echo "flamegraph.sh: no profile recorded" >&2; exit 1; }
