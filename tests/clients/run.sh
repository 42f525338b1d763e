#!/usr/bin/env bash
# Client-compatibility suites: real AMQP 0-9-1 client libraries running
# RabbitMQ's tutorials (and more) against the broker at $AMQP_URL.
#
#   AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2F bash tests/clients/run.sh
#
# Suites: python (pika + kombu, pytest), node (amqplib, node --test),
# go (amqp091-go from Debian, GOPATH mode), java (amqp-client from Debian).
# Missing dependencies are installed: a venv in tests/clients/.venv (pip),
# node_modules via `npm ci`, and -- when running as root with apt-get -- the
# Debian packages for the Go and Java suites (set CLIENTS_APT=0 to never use
# apt; those suites are then skipped if their packages are absent).
# CLIENTS_SUITES="python node go java" selects suites.
#
# Prints one line per suite and finally `clients: N passed, N failed`;
# exits non-zero if anything failed (or nothing ran).
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2F}"
SUITES="${CLIENTS_SUITES:-python node go java}"
SUITE_TIMEOUT="${CLIENTS_SUITE_TIMEOUT:-170}"
CLIENTS_APT="${CLIENTS_APT:-1}"
LOGDIR="$(mktemp -d "${TMPDIR:-/tmp}/lepus-clients.XXXXXX")"
export PYTHONDONTWRITEBYTECODE=1
export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false

TOTAL_PASS=0
TOTAL_FAIL=0
RESULTS=()

log() { printf '[clients] %s\n' "$*" >&2; }

# record SUITE PASSED FAILED NOTE
record() {
  TOTAL_PASS=$((TOTAL_PASS + $2))
  TOTAL_FAIL=$((TOTAL_FAIL + $3))
  local line="$1: $2 passed, $3 failed"
  [ -n "${4:-}" ] && line="$line ($4)"
  RESULTS+=("$line")
  echo "$line"
}

skip() {
  RESULTS+=("$1: skipped ($2)")
  echo "$1: skipped ($2)"
}

show_log() {
  echo "---- $1 output (last 80 lines; full log: $2) ----"
  tail -n 80 "$2"
  echo "---- end of $1 output ----"
}

can_apt() {
  [ "$CLIENTS_APT" != "0" ] && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1
}

# apt_install PKG... : bounded waits on the dpkg lock; refresh lists once if needed.
APT_UPDATED=0
apt_install() {
  local opts=(-o DPkg::Lock::Timeout=180 -o Acquire::Retries=3)
  if DEBIAN_FRONTEND=noninteractive timeout 600 apt-get "${opts[@]}" install -y -qq --no-install-recommends "$@" \
      >>"$LOGDIR/apt.log" 2>&1; then
    return 0
  fi
  if [ "$APT_UPDATED" = 0 ]; then
    APT_UPDATED=1
    timeout 300 apt-get "${opts[@]}" update -qq >>"$LOGDIR/apt.log" 2>&1 || true
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get "${opts[@]}" install -y -qq --no-install-recommends "$@" \
      >>"$LOGDIR/apt.log" 2>&1 && return 0
  fi
  log "apt-get install $* failed (see $LOGDIR/apt.log)"
  return 1
}

# ---------------------------------------------------------------- broker check
broker_reachable() {
  local hostport host port
  hostport="$(python3 - <<'EOF' 2>/dev/null
import os, urllib.parse
u = urllib.parse.urlsplit(os.environ["AMQP_URL"])
default = 5671 if u.scheme == "amqps" else 5672
host = u.hostname or "localhost"
print(host, u.port or default)
EOF
)" || return 1
  host="${hostport% *}"
  port="${hostport#* }"
  local i
  for i in $(seq 1 "${CLIENTS_BROKER_WAIT:-15}"); do
    if timeout 2 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null; then
      return 0
    fi
    [ "$i" = 1 ] && log "waiting for broker at $host:$port ..."
    sleep 1
  done
  log "broker at $host:$port does not accept connections"
  return 1
}

# ---------------------------------------------------------------- python
python_setup() {
  local venv="$HERE/.venv" req="$HERE/python/requirements.txt"
  local stamp="$venv/.requirements.sha256" want
  want="$(sha256sum "$req" | cut -d' ' -f1)"
  if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] \
      && "$venv/bin/python" -c 'import pika, kombu, pytest, pytest_timeout' 2>/dev/null; then
    return 0
  fi
  command -v python3 >/dev/null 2>&1 || { log "python3 not found"; return 1; }
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sys' 2>/dev/null; then
    rm -rf "$venv"
    if ! python3 -m venv "$venv" >>"$LOGDIR/python-setup.log" 2>&1; then
      # Debian without python3-venv: venv without pip, pip from the system.
      rm -rf "$venv"
      python3 -m venv --without-pip "$venv" >>"$LOGDIR/python-setup.log" 2>&1 \
        || { can_apt && apt_install python3-venv && python3 -m venv "$venv" >>"$LOGDIR/python-setup.log" 2>&1; } \
        || { log "cannot create a venv (see $LOGDIR/python-setup.log)"; return 1; }
    fi
  fi
  local pip=("$venv/bin/python" -m pip)
  if ! "${pip[@]}" --version >/dev/null 2>&1; then
    pip=(python3 -m pip --python "$venv/bin/python")
    "${pip[@]}" --version >/dev/null 2>&1 \
      || { can_apt && apt_install python3-venv && rm -rf "$venv" && python3 -m venv "$venv" \
             >>"$LOGDIR/python-setup.log" 2>&1 && pip=("$venv/bin/python" -m pip); } \
      || { log "no pip usable for the venv"; return 1; }
  fi
  log "installing python requirements into $venv"
  "${pip[@]}" install --disable-pip-version-check -q -r "$req" >>"$LOGDIR/python-setup.log" 2>&1 \
    || { log "pip install failed (see $LOGDIR/python-setup.log)"; tail -n 20 "$LOGDIR/python-setup.log" >&2; return 1; }
  echo "$want" >"$stamp"
}

run_python() {
  local out="$LOGDIR/python.log" xml="$LOGDIR/python-junit.xml"
  if ! python_setup; then record python 0 1 "setup failed"; return; fi
  (cd "$HERE/python" && timeout "$SUITE_TIMEOUT" "$HERE/.venv/bin/python" -m pytest -q -rfE \
      -o junit_family=xunit2 --junitxml="$xml" .) >"$out" 2>&1
  local rc=$?
  local counts
  counts="$("$HERE/.venv/bin/python" - "$xml" <<'EOF' 2>/dev/null
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
t = sum(int(s.get("tests", 0)) for s in suites)
f = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
sk = sum(int(s.get("skipped", 0)) for s in suites)
print(t - f - sk, f)
EOF
)"
  local pass fail versions
  versions="$("$HERE/.venv/bin/python" -c 'import importlib.metadata as m; print("pika %s, kombu %s" % (m.version("pika"), m.version("kombu")))' 2>/dev/null)"
  if [ -z "$counts" ]; then
    pass=0; fail=1
  else
    pass="${counts% *}"; fail="${counts#* }"
  fi
  if [ "$rc" != 0 ] && [ "$fail" = 0 ]; then fail=1; fi  # crash/timeout with no failing test recorded
  record python "$pass" "$fail" "$versions"
  [ "$fail" != 0 ] && show_log python "$out"
}

# ---------------------------------------------------------------- node
node_setup() {
  local dir="$HERE/node"
  command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { log "node/npm not found"; return 1; }
  if [ -f "$dir/node_modules/.lepus-lock" ] && cmp -s "$dir/package-lock.json" "$dir/node_modules/.lepus-lock" \
      && [ -d "$dir/node_modules/amqplib" ]; then
    return 0
  fi
  log "npm ci in $dir"
  (cd "$dir" && timeout 300 npm ci --no-audit --no-fund) >"$LOGDIR/node-setup.log" 2>&1 \
    || { log "npm ci failed (see $LOGDIR/node-setup.log)"; tail -n 20 "$LOGDIR/node-setup.log" >&2; return 1; }
  cp "$dir/package-lock.json" "$dir/node_modules/.lepus-lock"
}

run_node() {
  local out="$LOGDIR/node.log"
  if ! node_setup; then record node 0 1 "setup failed"; return; fi
  (cd "$HERE/node" && timeout "$SUITE_TIMEOUT" node --test test/*.test.js) >"$out" 2>&1
  local rc=$?
  local pass fail version
  pass="$(grep -aE '^(# |ℹ )pass [0-9]+' "$out" | tail -n1 | grep -oE '[0-9]+$')"
  fail="$(grep -aE '^(# |ℹ )fail [0-9]+' "$out" | tail -n1 | grep -oE '[0-9]+$')"
  version="$(cd "$HERE/node" && node -p 'require("amqplib/package.json").version' 2>/dev/null)"
  pass="${pass:-0}"; fail="${fail:-1}"
  if [ "$rc" != 0 ] && [ "$fail" = 0 ]; then fail=1; fi
  record node "$pass" "$fail" "amqplib $version, node $(node --version)"
  [ "$fail" != 0 ] && show_log node "$out"
}

# ---------------------------------------------------------------- go
GO_SRC=/usr/share/gocode/src/github.com/rabbitmq/amqp091-go
GO_MISSING="needs Debian packages golang-go golang-github-rabbitmq-amqp091-go-dev"
# go_env CMD...: the Go toolchain in GOPATH mode, offline, against Debian's sources.
go_env() {
  GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= GOPROXY=off \
    GOCACHE="${GOCACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/lepus-clients-go-build}" "$@"
}

# go_setup: succeeds when go and amqp091-go are there (installed with apt if allowed).
go_setup() {
  if ! command -v go >/dev/null 2>&1 || [ ! -d "$GO_SRC" ]; then
    if can_apt; then
      log "installing golang-go golang-github-rabbitmq-amqp091-go-dev (apt)"
      apt_install golang-go golang-github-rabbitmq-amqp091-go-dev || true
    fi
  fi
  command -v go >/dev/null 2>&1 && [ -d "$GO_SRC" ]
}

run_go() {
  local out="$LOGDIR/go.log"
  if ! go_setup; then
    skip go "$GO_MISSING"
    return
  fi
  (cd "$HERE/go" && go_env timeout "$SUITE_TIMEOUT" go test -count=1 -v -timeout 150s .) >"$out" 2>&1
  local rc=$?
  local pass fail version
  pass="$(grep -cE '^--- PASS: ' "$out")"
  fail="$(grep -cE '^--- FAIL: ' "$out")"
  version="$(dpkg-query -W -f='${Version}' golang-github-rabbitmq-amqp091-go-dev 2>/dev/null)"
  if [ "$rc" != 0 ] && [ "$fail" = 0 ]; then fail=1; fi
  record go "$pass" "$fail" "amqp091-go ${version:-?}, $(go version | awk '{print $3}')"
  [ "$fail" != 0 ] && show_log go "$out"
}

# ---------------------------------------------------------------- java
JAVA_CP=/usr/share/java/amqp-client.jar:/usr/share/java/slf4j-api.jar:/usr/share/java/slf4j-nop.jar
java_ready() {
  command -v javac >/dev/null 2>&1 && command -v java >/dev/null 2>&1 \
    && [ -f /usr/share/java/amqp-client.jar ] && [ -f /usr/share/java/slf4j-api.jar ] \
    && [ -f /usr/share/java/slf4j-nop.jar ]
}

JAVA_MISSING="needs a JDK and Debian packages librabbitmq-client-java libslf4j-java"
# java_setup: succeeds when a JDK and the client jars are there (apt if allowed).
java_setup() {
  if ! java_ready && can_apt; then
    local pkgs=(librabbitmq-client-java libslf4j-java)
    command -v javac >/dev/null 2>&1 || pkgs+=(default-jdk-headless)
    log "installing ${pkgs[*]} (apt)"
    apt_install "${pkgs[@]}" || true
  fi
  java_ready
}

run_java() {
  local out="$LOGDIR/java.log" build="$LOGDIR/java-classes"
  if ! java_setup; then
    skip java "$JAVA_MISSING"
    return
  fi
  mkdir -p "$build"
  if ! javac -nowarn -d "$build" -cp "$JAVA_CP" "$HERE/java/ClientCompat.java" >"$out" 2>&1; then
    record java 0 1 "compilation failed"
    show_log java "$out"
    return
  fi
  timeout "$SUITE_TIMEOUT" java -cp "$build:$JAVA_CP" ClientCompat >>"$out" 2>&1
  local rc=$?
  local line pass fail version
  line="$(grep -aE '^java: [0-9]+ passed, [0-9]+ failed$' "$out" | tail -n1)"
  pass="$(echo "$line" | sed -nE 's/^java: ([0-9]+) passed.*/\1/p')"
  fail="$(echo "$line" | sed -nE 's/.* ([0-9]+) failed$/\1/p')"
  pass="${pass:-0}"; fail="${fail:-1}"
  if [ "$rc" != 0 ] && [ "$fail" = 0 ]; then fail=1; fi
  version="$(dpkg-query -W -f='${Version}' librabbitmq-client-java 2>/dev/null)"
  record java "$pass" "$fail" "amqp-client ${version:-?}, java $(java -version 2>&1 | head -n1 | awk -F'"' '{print $2}')"
  [ "$fail" != 0 ] && show_log java "$out"
}

# ---------------------------------------------------------------- main
# run_tls.sh sources this file for the setup functions above and stops here.
if [ "${BASH_SOURCE[0]}" != "$0" ]; then
  return 0
fi
SHOWN_URL="$(printf '%s' "$AMQP_URL" | sed -E 's#(//[^:/@]*):[^@/]*@#\1:***@#')"
echo "client-compatibility suites against $SHOWN_URL (logs kept in $LOGDIR on failure)"
if ! broker_reachable; then
  record broker 0 1 "unreachable: $SHOWN_URL"
else
  for suite in $SUITES; do
    case "$suite" in
      python) run_python ;;
      node) run_node ;;
      go) run_go ;;
      java) run_java ;;
      *) log "unknown suite $suite"; record "$suite" 0 1 "unknown suite" ;;
    esac
  done
fi

echo "==== summary ===="
for r in "${RESULTS[@]}"; do echo "  $r"; done
if [ $((TOTAL_PASS + TOTAL_FAIL)) = 0 ]; then
  TOTAL_FAIL=1  # nothing ran at all
fi
echo "clients: $TOTAL_PASS passed, $TOTAL_FAIL failed"
if [ "$TOTAL_FAIL" = 0 ]; then
  rm -rf "$LOGDIR"
  exit 0
fi
exit 1
