#!/usr/bin/env bash
# On-CPU flamegraphs of the brokers while they run one benchmark scenario, and
# differential flamegraphs between two lepus binaries.
#
#   scripts/flamegraph.sh <scenario> [lepus|rabbitmq|garagemq|relay|all] [more scripts/perf.py args...]
#   scripts/flamegraph.sh --diff OLD_LEPUS NEW_LEPUS <scenario> [more scripts/perf.py args...]
#   e.g. scripts/flamegraph.sh p2p-autoack all --duration 10
#        scripts/flamegraph.sh --diff /tmp/lepus-main target/release/lepus p2p-autoack
#
# Runs the scenario through scripts/perf.py --repeat 1 (same pinning, ports and
# generator command as a benchmark run) while `perf record -F 999 -e
# cpu-clock -p <broker pid>` samples the broker, then folds the stacks with
# inferno: perf/results/flamegraphs/<date>-<scenario>-<broker>.svg. `all` is
# lepus, rabbitmq and garagemq (the relay: name it).
#
# --diff runs the scenario on OLD_LEPUS, then on NEW_LEPUS (perf.py
# --lepus-bin), folds both, and writes
# <date>-<scenario>-diff.svg = inferno-diff-folded --normalize OLD NEW |
# inferno-flamegraph: the shape is NEW's profile, red = a frame takes a
# larger share of the samples than in OLD, blue = a smaller one (counts
# normalized to the same total) — plus both plain flamegraphs (-old, -new).
#
# - Lepus: call graphs from DWARF unwinding (the release profile keeps
#   line tables and .eh_frame; std has no frame pointers, so `fp` stacks are
#   cut short). FLAMEGRAPH_CALLGRAPH=fp to compare.
# - RabbitMQ: beam is started with +JPperf true (Erlang/OTP 25: frame
#   pointers in JIT code and /tmp/perf-<pid>.map naming the Erlang
#   functions), recorded with frame pointers (-g).
# - garagemq: Go keeps frame pointers (recorded with --call-graph fp);
#   Debian's binary is stripped, so its frames are named from the Go function
#   table with `go tool addr2line` (lepusperf/gosym.py) when `go` is installed.
# - The numbers of a profiled run are not benchmark results (perf costs the
#   broker a few % and more with dwarf); no results file is written.
#
# Needs `perf record` with the cpu-clock software event (this VM has no
# hardware PMU: `perf stat -e instructions` says <not supported>); the script
# checks that first and stops with a message if perf cannot record.
# Environment: FLAMEGRAPH_DIR (default perf/results/flamegraphs),
# FLAMEGRAPH_CALLGRAPH (dwarf|fp), CARGO_TARGET_DIR (as for perf.py).
# Installs linux-perf (apt) and inferno (cargo install --root target/tools)
# when missing.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
usage() { sed -n '2,41p' "$0" >&2; exit 2; }
[ $# -ge 1 ] || usage
DIFF_OLD= DIFF_NEW=
if [ "$1" = --diff ]; then
  [ $# -ge 4 ] || usage
  DIFF_OLD=$(realpath "$2"); DIFF_NEW=$(realpath "$3")
  for b in "$DIFF_OLD" "$DIFF_NEW"; do
    [ -x "$b" ] || { echo "flamegraph.sh: $b is not an executable" >&2; exit 2; }
  done
  SCENARIO=$4
  shift 4
  BROKERS=lepus
else
  SCENARIO=$1
  BROKER=${2:-lepus}
  shift $(( $# >= 2 ? 2 : 1 ))
  case "$BROKER" in
    lepus|rabbitmq|garagemq|relay) BROKERS=$BROKER ;;
    all) BROKERS=lepus,rabbitmq,garagemq ;;
    *) echo "flamegraph.sh: broker must be lepus, rabbitmq, garagemq, relay or all" >&2; exit 2 ;;
  esac
fi
OUT=${FLAMEGRAPH_DIR:-$ROOT/perf/results/flamegraphs}
export PATH="$ROOT/target/tools/bin:$HOME/.cargo/bin:$PATH"

if ! command -v perf >/dev/null; then
  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends linux-perf
fi
# Can perf sample at all here (perf_event_paranoid, a container without perf events)?
probe=$(mktemp)
if ! perf record -q -F 999 -e cpu-clock -g -o "$probe" -- sleep 0.1 >/dev/null 2>"$probe.err"; then
  echo "flamegraph.sh: \`perf record -e cpu-clock\` does not work on this machine:" >&2
  cat "$probe.err" >&2
  echo "flamegraph.sh: (perf_event_paranoid is $(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null || echo ?);" \
    "as root or with perf_event_paranoid <= 1 it should; in a container perf events may be blocked)" >&2
  rm -f "$probe" "$probe.err"
  exit 1
fi
rm -f "$probe" "$probe.err"
if ! command -v inferno-flamegraph >/dev/null || ! command -v inferno-collapse-perf >/dev/null \
    || ! command -v inferno-diff-folded >/dev/null; then
  nice -n 10 cargo install --locked --root "$ROOT/target/tools" inferno
fi

mkdir -p "$OUT"
WORK=$(mktemp -d "$OUT/.record-XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# fold DATA NAME: perf script of DATA -> $WORK/NAME.folded; prints the ms sampled.
fold() {
  local data=$1 name=$2
  # -f: use /tmp/perf-<pid>.map even if another user wrote it.
  perf script -f -i "$data" 2>"$WORK/$name.script.log" \
    | (cd "$ROOT/scripts" && exec python3 -m lepusperf.gosym "$(command -v garagemq || echo /usr/bin/garagemq)") \
    | inferno-collapse-perf >"$WORK/$name.folded"
  # cpu-clock periods are nanoseconds: the total is the CPU time sampled.
  awk '{n += $NF} END {printf "%.0f", n / 1e6}' "$WORK/$name.folded"
}

# record DIR [perf.py args]: the scenario on $BROKERS with perf record, data in DIR.
record() {
  local dir=$1
  shift
  mkdir -p "$dir"
  python3 "$ROOT/scripts/perf.py" --scenarios "$SCENARIO" --brokers "$BROKERS" --repeat 1 --profile "$dir" \
    --perf-callgraph "${FLAMEGRAPH_CALLGRAPH:-dwarf}" "$@"
}

cleanup_maps() {
  # Erlang's perf maps of stopped nodes are no longer needed.
  local pid
  for pid in $(python3 -c 'import json, sys
for r in json.load(open(sys.argv[1])):
    if r["broker"] == "rabbitmq" and r["pid"]:
        print(r["pid"])' "$1"/*-runs.json 2>/dev/null); do
    kill -0 "$pid" 2>/dev/null || rm -f "/tmp/perf-$pid.map"
  done
}

shopt -s nullglob
made=0
if [ -n "$DIFF_OLD" ]; then
  record "$WORK/old" --lepus-bin "$DIFF_OLD" "$@"
  record "$WORK/new" --lepus-bin "$DIFF_NEW" --no-build "$@"
  old=("$WORK"/old/*-lepus.perf.data) new=("$WORK"/new/*-lepus.perf.data)
  [ ${#old[@]} -eq 1 ] && [ ${#new[@]} -eq 1 ] || { echo "flamegraph.sh: no profile recorded" >&2; exit 1; }
  stem=$(basename "${new[0]}" -lepus.perf.data)
  ms_old=$(fold "${old[0]}" old)
  ms_new=$(fold "${new[0]}" new)
  inferno-flamegraph --title "$stem OLD $DIFF_OLD: on-CPU, $ms_old ms sampled" --countname ns \
    <"$WORK/old.folded" >"$OUT/$stem-old.svg"
  inferno-flamegraph --title "$stem NEW $DIFF_NEW: on-CPU, $ms_new ms sampled" --countname ns \
    <"$WORK/new.folded" >"$OUT/$stem-new.svg"
  inferno-diff-folded --normalize "$WORK/old.folded" "$WORK/new.folded" \
    | inferno-flamegraph --title "$stem: NEW vs OLD (red: larger share in NEW, blue: smaller; normalized)" \
        --countname ns >"$OUT/$stem-diff.svg"
  echo "flamegraph.sh: $OUT/$stem-diff.svg (old $ms_old ms, new $ms_new ms sampled), $stem-old.svg, $stem-new.svg"
  made=1
else
  record "$WORK" "$@"
  for data in "$WORK"/*.perf.data; do
    name=$(basename "$data" .perf.data)
    cpu_ms=$(fold "$data" "$name")
    inferno-flamegraph --title "$name: on-CPU, $cpu_ms ms sampled" --countname ns \
      <"$WORK/$name.folded" >"$OUT/$name.svg"
    echo "flamegraph.sh: $OUT/$name.svg ($cpu_ms ms of CPU)"
    made=$((made + 1))
  done
  cleanup_maps "$WORK"
fi
[ "$made" -gt 0 ] || { echo "flamegraph.sh: no profile recorded" >&2; exit 1; }
