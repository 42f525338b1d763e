#!/usr/bin/env bash
# The web UI's overview under load: starts a Lepus (--shards 2 --no-pin, free
# ports, fresh data directory), runs lepus-perf against it, and takes
# screenshots of the overview in headless Chromium while the load runs.
#
#   bash scripts/ui_under_load.sh   # -> perf/results/2026-12-06-ui-*.png and -ui-under-load.md
#
# LEPUS_BIN / LEPUS_PERF_BIN: the binaries (default: target/release/… when
# built, else target/debug/…). UI_LOAD_SECONDS (default 60): the load's
# length. UI_LOAD_PREFIX (default perf/results/2026-12-06-ui): where the
# pictures go. UI_LOAD_PERF_ARGS: lepus-perf's flags (default: 4 queues,
# 2 producers at 5000 msg/s each, 2 consumers, prefetch 500, multi-ack,
# confirms). The browser setup is tests/browser/run.sh's (Debian's chromium
# and chromium-driver, selenium in target/ui-venv).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
VENV="$ROOT/target/ui-venv"
SECONDS_LOAD="${UI_LOAD_SECONDS:-60}"
PREFIX="${UI_LOAD_PREFIX:-$ROOT/perf/results/2026-12-06-ui}"
pick() { if [ -x "$ROOT/target/release/$1" ]; then echo "$ROOT/target/release/$1"; else echo "$ROOT/target/debug/$1"; fi; }
LEPUS_BIN="${LEPUS_BIN:-$(pick lepus)}"
LEPUS_PERF_BIN="${LEPUS_PERF_BIN:-$(pick lepus-perf)}"
for bin in "$LEPUS_BIN" "$LEPUS_PERF_BIN"; do
  [ -x "$bin" ] || { echo "no binary at $bin (cargo build)" >&2; exit 1; }
done
"$VENV/bin/python" -c 'import selenium' 2>/dev/null && command -v chromedriver >/dev/null \
  || { echo "needs chromium, chromium-driver and $VENV with selenium: run tests/browser/run.sh once" >&2; exit 1; }

read -r AMQP_PORT HTTP_PORT < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
DATA="$(mktemp -d "${TMPDIR:-/tmp}/lepus-ui-load.XXXXXX")"
"$LEPUS_BIN" --listen "127.0.0.1:$AMQP_PORT" --management-listen "127.0.0.1:$HTTP_PORT" --no-prometheus \
  --shards 2 --no-pin --data-dir "$DATA/data" >"$DATA/lepus.log" 2>&1 &
BROKER_PID=$!
PERF_PID=
cleanup() {
  [ -n "$PERF_PID" ] && kill "$PERF_PID" 2>/dev/null
  kill "$BROKER_PID" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$DATA"
}
trap cleanup EXIT
export UI_URL="http://127.0.0.1:$HTTP_PORT"
for _ in $(seq 1 300); do
  curl -s -o /dev/null --max-time 1 "$UI_URL/" && break
  kill -0 "$BROKER_PID" 2>/dev/null || { cat "$DATA/lepus.log" >&2; exit 1; }
  sleep 0.1
done

read -r -a PERF_ARGS <<<"${UI_LOAD_PERF_ARGS:---queue-pattern ui-load-%d --queue-pattern-from 1 --queue-pattern-to 4 -x 2 -y 2 -s 256 -r 5000 -q 500 -A 50 -c 500}"
echo "lepus: $LEPUS_BIN, lepus-perf: $LEPUS_PERF_BIN ${PERF_ARGS[*]} -z $SECONDS_LOAD"
"$LEPUS_PERF_BIN" -h "amqp://guest:guest@127.0.0.1:$AMQP_PORT/%2F" "${PERF_ARGS[@]}" -z "$SECONDS_LOAD" \
  >"$DATA/perf.out" 2>"$DATA/perf.err" &
PERF_PID=$!

# Three overview pictures 12 s apart once the charts show the load, then
# the queue list.
mkdir -p "$(dirname "$PREFIX")"
"$VENV/bin/python" "$ROOT/tests/browser/overview_shots.py" "$PREFIX" 3 12
SHOTS=$?
wait "$PERF_PID"
PERF_STATUS=$?
PERF_PID=
echo "---- lepus-perf summary ----"
sed -n '/^summary:/,$p' "$DATA/perf.err"
# What was run and what the generator saw, beside the pictures.
{
  echo "# The web UI's overview under load ($(date -u +%Y-%m-%d\ %H:%M) UTC)"
  echo
  echo "\`bash scripts/ui_under_load.sh\`: Lepus \`$(basename "$(dirname "$LEPUS_BIN")")\` build,"
  echo "\`--shards 2 --no-pin\`, on $(nproc) cores shared with other work; lepus-perf"
  echo "\`${PERF_ARGS[*]} -z $SECONDS_LOAD\`. Screenshots, 12 s apart once the overview showed a"
  echo "publish rate: $(for f in "$PREFIX"-overview-*.png "$PREFIX"-queues.png; do printf '`%s` ' "$(basename "$f")"; done)"
  echo
  echo "lepus-perf's summary:"
  echo
  echo '```text'
  sed -n '/^summary:/,$p' "$DATA/perf.err"
  echo '```'
} >"$PREFIX-under-load.md"
echo "$PREFIX-under-load.md"
[ "$SHOTS" = 0 ] && [ "$PERF_STATUS" = 0 ]
