#!/usr/bin/env bash
# The web UI's browser test against a Lepus of its own:
#
#   bash tests/browser/run.sh
#
# Starts LEPUS_BIN (default: target/debug/lepus, built with `cargo build`
# when LEPUS_BIN is not set) on free AMQP and management ports of 127.0.0.1
# with `--shards 2 --no-pin` and a fresh data directory, waits until the
# management port answers, runs tests/browser/ui_test.py in headless
# Chromium, and stops the broker. Screenshots: target/ui-screenshots/ (kept
# as the test's artifacts; UI_SCREENSHOTS to change). The broker's log is
# printed when the test fails.
#
# Needs Debian's chromium and chromium-driver (installed with apt-get when
# missing and running as root; BROWSER_APT=0 to never use apt) and selenium
# and pika (pip, into a venv under target/ui-venv; pika opens the connection
# the test closes through the UI). Prints `N passed, N failed` last;
# exits non-zero on failure.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT" || exit 1
VENV="$ROOT/target/ui-venv"
export UI_SCREENSHOTS="${UI_SCREENSHOTS:-$ROOT/target/ui-screenshots}"
BROWSER_APT="${BROWSER_APT:-1}"

log() { printf '[browser] %s\n' "$*" >&2; }
fail() {
  log "$*"
  echo "0 passed, 1 failed"
  exit 1
}

# ---------------------------------------------------------------- dependencies
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$BROWSER_APT" != 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing chromium chromium-driver (apt)"
    opts=(-o DPkg::Lock::Timeout=180 -o Acquire::Retries=3)
    DEBIAN_FRONTEND=noninteractive apt-get "${opts[@]}" install -y -qq --no-install-recommends chromium chromium-driver \
      >/dev/null 2>&1 \
      || { apt-get "${opts[@]}" update -qq >/dev/null 2>&1 \
        && DEBIAN_FRONTEND=noninteractive apt-get "${opts[@]}" install -y -qq --no-install-recommends \
          chromium chromium-driver >/dev/null 2>&1; } \
      || fail "apt-get install chromium chromium-driver failed"
  else
    fail "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
  fi
fi
if ! "$VENV/bin/python" -c 'import selenium, pika' 2>/dev/null; then
  log "installing selenium and pika into $VENV"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" >/dev/null 2>&1 \
    || fail "cannot create a venv in $VENV (python3-venv?)"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q selenium pika >/dev/null 2>&1 \
    || fail "pip install selenium pika failed"
fi

# ---------------------------------------------------------------- the broker
if [ -z "${LEPUS_BIN:-}" ]; then
  log "cargo build --bin lepus"
  cargo build --quiet --bin lepus || fail "cargo build failed"
  LEPUS_BIN="$ROOT/target/debug/lepus"
fi
[ -x "$LEPUS_BIN" ] || fail "no broker binary at $LEPUS_BIN"

# Two free ports, chosen by the kernel.
read -r AMQP_PORT HTTP_PORT < <(python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)
DATA="$(mktemp -d "${TMPDIR:-/tmp}/lepus-ui.XXXXXX")"
BROKER_LOG="$DATA/lepus.log"
"$LEPUS_BIN" --listen "127.0.0.1:$AMQP_PORT" --management-listen "127.0.0.1:$HTTP_PORT" --no-prometheus \
  --shards 2 --no-pin --data-dir "$DATA/data" >"$BROKER_LOG" 2>&1 &
BROKER_PID=$!
stop_broker() {
  if kill -0 "$BROKER_PID" 2>/dev/null; then
    kill "$BROKER_PID" 2>/dev/null
    wait "$BROKER_PID" 2>/dev/null
  fi
}
trap stop_broker EXIT

export UI_URL="http://127.0.0.1:$HTTP_PORT"
export UI_AMQP_URL="amqp://guest:guest@127.0.0.1:$AMQP_PORT/%2F"
# Wait for the management listener: each probe is a connection attempt that
# fails at once until the broker listens (bounded: 30 s).
for _ in $(seq 1 300); do
  if curl -s -o /dev/null --max-time 1 "$UI_URL/"; then break; fi
  kill -0 "$BROKER_PID" 2>/dev/null || { cat "$BROKER_LOG" >&2; fail "the broker exited"; }
  sleep 0.1
done
curl -s -o /dev/null --max-time 2 "$UI_URL/" || { cat "$BROKER_LOG" >&2; fail "no management server at $UI_URL"; }
log "Lepus $LEPUS_BIN: AMQP 127.0.0.1:$AMQP_PORT, management $UI_URL"

# ---------------------------------------------------------------- the test
rm -rf "$UI_SCREENSHOTS"
# Chromium's profile directory goes under $DATA, which goes at the end.
mkdir -p "$DATA/tmp"
TMPDIR="$DATA/tmp" "$VENV/bin/python" -u "$ROOT/tests/browser/ui_test.py" | tee "$DATA/test.log"
STATUS=${PIPESTATUS[0]}
if [ "$STATUS" != 0 ]; then
  echo "---- broker log (last 40 lines) ----"
  tail -n 40 "$BROKER_LOG"
  echo "---- end of broker log ----"
  tail -n 1 "$DATA/test.log"  # the closing `N passed, N failed` line, last again
fi
stop_broker
rm -rf "$DATA"
exit "$STATUS"
