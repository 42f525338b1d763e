#!/usr/bin/env bash
# The TLS client matrix: real clients (pika, amqplib, amqp091-go, the Java
# client, openssl s_client) and raw sockets against a broker's AMQPS port,
# with certificates generated for the run (tests/clients/tls/gen_certs.sh).
#
#   bash tests/clients/run_tls.sh lepus      # default: starts Lepus itself
#   bash tests/clients/run_tls.sh rabbitmq   # the RabbitMQ on 127.0.0.1:5671
#
# lepus: starts brokers from $LEPUS_BIN (default target/debug/lepus) on free
# ports, one after the other, each with a generated `[tls]` table and a
# 2000 ms TLS handshake timeout: "strict" requires a client certificate
# (fail_if_no_peer_cert), "optional" verifies one only when sent (RabbitMQ's
# verify_peer without fail_if_no_peer_cert), "tls13" offers TLS 1.3 only;
# each once per I/O backend in LEPUS_IO_BACKENDS (default "mio io-uring";
# targets lepus-* and uring-*). PLAIN logins use the broker's default user,
# which the config sets to tlc-user; EXTERNAL maps the certificate CN
# (tlc-user) to it.
#
# rabbitmq: the cases its fixed configuration allows (verify_peer, client
# certificate optional, ssl_handshake_timeout 5000 ms, EXTERNAL with the
# distinguished name as user name). TLS_RABBIT_DIR (default /etc/rabbitmq/tls)
# holds its ca.pem; when its ca.key is readable, the client certificates are
# signed by that CA and the EXTERNAL user "CN=tlc-user" is created through the
# management API (RABBIT_MGMT, default http://guest:guest@127.0.0.1:15672)
# if missing; otherwise only client.pem/key from that directory are used and
# the cases that need other certificates are skipped.
#
# Prints one line per (target, client, case): the expected outcome, PASS/FAIL/
# SKIP and what the client saw; then `tls clients: N passed, N failed, N
# skipped`. Exits non-zero on any failure. TLS_CLIENTS="python node go java
# openssl raw" selects clients; CLIENTS_APT as in run.sh.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source=run.sh
source "$HERE/run.sh"  # setup functions only (python_setup, go_setup, ...); sets LOGDIR

MODE="${1:-lepus}"
CLIENTS="${TLS_CLIENTS:-python node go java openssl raw}"
CASE_TIMEOUT="${TLS_CASE_TIMEOUT:-60}"
LEPUS_HANDSHAKE_MS=2000
LEPUS_IO_BACKENDS="${LEPUS_IO_BACKENDS:-mio io-uring}"
export TLS_P12_PASS=lepus-test AMQP_TEST_TIMEOUT="${AMQP_TEST_TIMEOUT:-10}"
CERTS="$LOGDIR/certs"
PASS=0 FAIL=0 SKIP=0
BROKERS=()  # every Lepus started here, killed on exit if still running
LEPUS_PID="" LEPUS_TLS_PORT="" LEPUS_DIR=""
GO_BIN="" JAVA_CLASSES=""
NO_EXTERNAL=""  # why the EXTERNAL cases cannot run on this target, if so
declare -A READY=()  # client -> "" when usable, else why not

cleanup() {
  local pid
  for pid in "${BROKERS[@]}"; do
    kill -0 "$pid" 2>/dev/null && kill "$pid" 2>/dev/null
  done
}
trap cleanup EXIT

# result TARGET CLIENT CASE EXPECTED RESULT DETAIL
result() {
  local line
  line="$(printf '%-14s %-8s %-17s %-13s %-5s %s' "$1" "$2" "$3" "$4" "$5" "$6")"
  echo "$line"
  case "$5" in PASS) PASS=$((PASS + 1)) ;; FAIL) FAIL=$((FAIL + 1)) ;; *) SKIP=$((SKIP + 1)) ;; esac
}

# ---------------------------------------------------------------- clients
setup_clients() {
  local c
  for c in $CLIENTS; do
    case "$c" in
      python) python_setup && READY[python]="" || READY[python]="python setup failed (see $LOGDIR)" ;;
      node) node_setup && READY[node]="" || READY[node]="npm ci failed (see $LOGDIR)" ;;
      go)
        if ! go_setup; then
          READY[go]="$GO_MISSING"
        elif (cd "$HERE/go" && go_env go build -o "$LOGDIR/tlscheck" ./tlscheck) >"$LOGDIR/go-build.log" 2>&1; then
          GO_BIN="$LOGDIR/tlscheck"; READY[go]=""
        else
          READY[go]="go build failed: $(tail -n 3 "$LOGDIR/go-build.log" | tr '\n' ' ')"
        fi ;;
      java)
        if ! java_setup; then
          READY[java]="$JAVA_MISSING"
        elif mkdir -p "$LOGDIR/tls-classes" && javac -nowarn -d "$LOGDIR/tls-classes" -cp "$JAVA_CP" \
            "$HERE/java/TlsCheck.java" >"$LOGDIR/java-build.log" 2>&1; then
          JAVA_CLASSES="$LOGDIR/tls-classes"; READY[java]=""
        else
          READY[java]="javac failed: $(tail -n 3 "$LOGDIR/java-build.log" | tr '\n' ' ')"
        fi ;;
      openssl) command -v openssl >/dev/null 2>&1 && READY[openssl]="" || READY[openssl]="openssl not found" ;;
      raw) READY[raw]="" ;;
      *) READY[$c]="unknown client" ;;
    esac
  done
}

# client_cmd CLIENT CASE: the command line of one check (TLS_* already exported).
client_cmd() {
  case "$1" in
    python) [ "$2" = reload ] && echo "$HERE/.venv/bin/python $HERE/python/tls_reload.py" \
      || echo "$HERE/.venv/bin/python $HERE/python/tls_check.py" ;;
    node) echo "node $HERE/node/tls_check.js" ;;
    go) echo "$GO_BIN" ;;
    java) echo "java -cp $JAVA_CLASSES:$JAVA_CP TlsCheck" ;;
    openssl) echo "python3 $HERE/tls/raw_check.py openssl" ;;
    raw) echo "python3 $HERE/tls/raw_check.py $2" ;;
  esac
}

# ---------------------------------------------------------------- cases
# Each case: which certificate, which login, and (for the client checks) the
# outcome expected on a broker that requires client certificates ("strict"),
# on one where they are optional, and on one offering TLS 1.3 only ("tls13").
#   case            cert           login     strict        optional      tls13
CASES="
tls               client         plain     ok            ok            ok
tls1.2            client         plain     ok            ok            refused-tls
tls1.3            client         plain     ok            ok            ok
large             client         plain     ok            ok            ok
chain             chain-client   plain     ok            ok            ok
no-cert           -              plain     refused-tls   ok            ok
wrong-ca          wrongca-client plain     refused-tls   refused-tls   refused-tls
expired           expired        plain     refused-tls   refused-tls   refused-tls
external          client         external  ok            ok            ok
external-unknown  nouser         external  refused-auth  refused-auth  refused-auth
plain-amqp        client         -         pass          pass          pass
stall             client         -         pass          pass          pass
stall-mid         client         -         pass          pass          pass
reload            client         plain     ok            ok            ok
"

# applies CLIENT CASE: whether that client runs that case.
applies() {
  case "$1:$2" in
    raw:plain-amqp | raw:stall | raw:stall-mid) return 0 ;;
    python:reload) return 0 ;;
    *:reload) return 1 ;;
    raw:* | *:plain-amqp | *:stall | *:stall-mid) return 1 ;;
    openssl:external* | openssl:large) return 1 ;;  # s_client does no AMQP
    openssl:chain) return 1 ;;              # s_client -cert sends the leaf alone
    openssl:tls1.2 | openssl:tls1.3) return 0 ;;
    *:tls1.3) return 1 ;;                   # the libraries' default already negotiates 1.3
    openssl:tls) return 1 ;;                # tls1.2 and tls1.3 cover it
  esac
  return 0
}

# run_case TARGET PROFILE PORT HANDSHAKE_MS CLIENT CASE CERT LOGIN EXPECTED
run_case() {
  local target="$1" port="$3" hs="$4" client="$5" case="$6" cert="$7" login="$8" expected="$9"
  if [ -n "${READY[$client]}" ]; then
    result "$target" "$client" "$case" "$expected" SKIP "${READY[$client]}"
    return
  fi
  if [ "$login" = external ] && [ -n "$NO_EXTERNAL" ]; then
    result "$target" "$client" "$case" "$expected" SKIP "$NO_EXTERNAL"
    return
  fi
  if [ "$case" = reload ] && [ -z "$LEPUS_PID" ]; then
    result "$target" "$client" "$case" "$expected" SKIP "not a broker started here: no SIGHUP sent"
    return
  fi
  if [ "$cert" != - ] && [ ! -f "$CERTS/$cert.pem" ]; then
    result "$target" "$client" "$case" "$expected" SKIP "no $cert certificate for this target"
    return
  fi
  local certenv=(TLS_CERT= TLS_KEY= TLS_P12=)
  [ "$cert" != - ] && certenv=(TLS_CERT="$CERTS/$cert.pem" TLS_KEY="$CERTS/$cert.key" TLS_P12="$CERTS/$cert.p12")
  # Per-case settings start empty, whatever the caller's environment holds.
  local maxver=(TLS_MAX_VERSION= OPENSSL_VERSION= TLS_BODY_BYTES=) out rc got
  case "$case" in
    tls1.2) maxver+=(TLS_MAX_VERSION=1.2 OPENSSL_VERSION=1.2) ;;
    tls1.3) maxver+=(OPENSSL_VERSION=1.3) ;;
    large) maxver+=(TLS_BODY_BYTES=$((1024 * 1024 + 17))) ;;  # many frames, many TLS records
    reload) maxver+=(TLS_RELOAD_PID="$LEPUS_PID" TLS_RELOAD_CHAIN="$LEPUS_DIR/server.pem"
      TLS_RELOAD_KEY="$LEPUS_DIR/server.key" TLS_RELOAD_NEW_CHAIN="$CERTS/reload/server.pem"
      TLS_RELOAD_NEW_KEY="$CERTS/reload/server.key") ;;
  esac
  # shellcheck disable=SC2046
  out="$(env TLS_PORT="$port" TLS_HANDSHAKE_TIMEOUT_MS="$hs" TLS_LOGIN="$login" "${certenv[@]}" "${maxver[@]}" \
      timeout "$CASE_TIMEOUT" $(client_cmd "$client" "$case") 2>"$LOGDIR/last-stderr")"
  rc=$?
  out="$(printf '%s' "$out" | tr -s '\n\r\t' '   ' | cut -c1-400)"
  [ -z "$out" ] && out="(no output, exit $rc) $(tail -n 3 "$LOGDIR/last-stderr" | tr '\n' ' ' | cut -c1-300)"
  if [ "$client" = raw ]; then
    [ "$rc" = 0 ] && got=pass || got=fail
  else
    case "$rc" in 0) got=ok ;; 2) got=refused-tls ;; 3) got=refused-auth ;; 124) got=timeout ;; *) got=error ;; esac
  fi
  if [ "$got" = "$expected" ]; then
    result "$target" "$client" "$case" "$expected" PASS "$out"
  else
    result "$target" "$client" "$case" "$expected" FAIL "got $got: $out"
  fi
}

# run_matrix TARGET PROFILE PORT HANDSHAKE_MS [CASE...]: every client on the
# given cases (all when none given).
run_matrix() {
  local target="$1" profile="$2" port="$3" hs="$4"
  shift 4
  local only=" $* " case cert login strict optional tls13 expected client
  while read -r case cert login strict optional tls13; do
    [ -z "$case" ] && continue
    [ "$only" != "  " ] && [[ "$only" != *" $case "* ]] && continue
    case "$profile" in
      strict) expected="$strict" ;;
      optional) expected="$optional" ;;
      tls13) expected="$tls13" ;;
    esac
    for client in $CLIENTS; do
      applies "$client" "$case" || continue
      run_case "$target" "$profile" "$port" "$hs" "$client" "$case" "$cert" "$login" "$expected"
    done
  done <<<"$CASES"
}

# ---------------------------------------------------------------- lepus
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_lepus NAME BACKEND FAIL_IF_NO_PEER_CERT VERSIONS: starts a broker and
# waits until it accepts on both ports; sets LEPUS_PID and LEPUS_TLS_PORT.
start_lepus() {
  local name="$1" backend="$2" required="$3" versions="$4" plain tls dir
  plain="$(free_port)"; tls="$(free_port)"
  while [ "$tls" = "$plain" ]; do tls="$(free_port)"; done
  dir="$LOGDIR/$name"
  mkdir -p "$dir"
  # Its own copy of the server certificate: the reload case replaces it.
  cp "$CERTS/server.pem" "$CERTS/server.key" "$dir/"
  cat >"$dir/lepus.toml" <<TOML
listen = ["127.0.0.1:$plain"]
data_dir = "$dir/data"
default_user = "tlc-user"
default_pass = "tlc-pass"

[tls]
listen = ["127.0.0.1:$tls"]
cert_chain = "$dir/server.pem"
key = "$dir/server.key"
ca_certificates = "$CERTS/ca.pem"
verify_peer = true
fail_if_no_peer_cert = $required
login_from = "common_name"
versions = [$versions]
handshake_timeout_ms = $LEPUS_HANDSHAKE_MS
TOML
  "$LEPUS_BIN" --config "$dir/lepus.toml" --management-port 0 --prometheus-port 0 --io-backend "$backend" --shards 2 --no-pin >"$dir/lepus.log" 2>&1 &
  LEPUS_PID=$!
  LEPUS_TLS_PORT="$tls"
  LEPUS_DIR="$dir"
  BROKERS+=("$LEPUS_PID")
  local _
  for _ in $(seq 100); do
    kill -0 "$LEPUS_PID" 2>/dev/null || break
    if (echo >"/dev/tcp/127.0.0.1/$plain") 2>/dev/null && (echo >"/dev/tcp/127.0.0.1/$tls") 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  kill "$LEPUS_PID" 2>/dev/null
  wait "$LEPUS_PID" 2>/dev/null
  BROKERS=()
  LEPUS_PID=""
  return 1
}

# stop_lepus NAME: the broker must still be running, stop on SIGTERM with
# exit 0, and have logged no panic.
stop_lepus() {
  local target="$1" log="$LOGDIR/$1/lepus.log" rc
  if ! kill -0 "$LEPUS_PID" 2>/dev/null; then
    wait "$LEPUS_PID"; rc=$?
    BROKERS=()
    LEPUS_PID=""
    result "$target" lepus exit clean FAIL "the broker died during the run (exit $rc): $(tail -n 5 "$log" | tr '\n' ' ')"
    return
  fi
  kill "$LEPUS_PID"
  wait "$LEPUS_PID"; rc=$?
  BROKERS=()  # one broker at a time: nothing left to clean up
  LEPUS_PID=""
  if [ "$rc" != 0 ] || grep -q 'panicked' "$log"; then
    result "$target" lepus exit clean FAIL "exit $rc: $(grep -m1 -A2 'panicked' "$log" | tr '\n' ' ')"
  else
    result "$target" lepus exit clean PASS "alive after every case, no panic logged, exit 0 on SIGTERM"
  fi
}

run_lepus() {
  LEPUS_BIN="${LEPUS_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/lepus}"
  if [ ! -x "$LEPUS_BIN" ]; then
    result lepus - - - FAIL "no broker binary at $LEPUS_BIN (cargo build --bin lepus)"
    return
  fi
  LEPUS_BIN="$(realpath "$LEPUS_BIN")"
  # The reload case's second server certificate comes from the same CA.
  if ! bash "$HERE/tls/gen_certs.sh" "$CERTS" >/dev/null \
      || ! CA_CERT="$CERTS/ca.pem" CA_KEY="$CERTS/ca.key" bash "$HERE/tls/gen_certs.sh" "$CERTS/reload" >/dev/null; then
    result lepus - certificates - FAIL "gen_certs.sh failed"
    return
  fi
  export TLS_HOST=127.0.0.1 TLS_SERVER_NAME=localhost TLS_CA="$CERTS/ca.pem" TLS_USER=tlc-user TLS_PASS=tlc-pass
  local backend profile required versions name
  for backend in $LEPUS_IO_BACKENDS; do
    for profile in strict optional tls13; do
      [ "$profile" = strict ] && required=true || required=false
      [ "$profile" = tls13 ] && versions='"1.3"' || versions='"1.2", "1.3"'
      name="lepus-$profile"
      [ "$backend" != mio ] && name="uring-$profile"
      if ! start_lepus "$name" "$backend" "$required" "$versions"; then
        result "$name" lepus start ok FAIL "did not start: $(tail -n 3 "$LOGDIR/$name/lepus.log" | tr '\n' ' ')"
        continue
      fi
      if grep -q 'falls back to mio' "$LOGDIR/$name/lepus.log"; then
        result "$name" lepus io-uring - SKIP "the kernel refused io_uring: these cases ran on mio"
      fi
      case "$profile" in
        strict) run_matrix "$name" "$profile" "$LEPUS_TLS_PORT" "$LEPUS_HANDSHAKE_MS" ;;
        # What differs when the certificate is optional (or is checked the same).
        optional) run_matrix "$name" "$profile" "$LEPUS_TLS_PORT" "$LEPUS_HANDSHAKE_MS" tls chain no-cert wrong-ca expired ;;
        tls13) run_matrix "$name" "$profile" "$LEPUS_TLS_PORT" "$LEPUS_HANDSHAKE_MS" tls tls1.2 tls1.3 ;;
      esac
      stop_lepus "$name"
    done
  done
}

# ---------------------------------------------------------------- rabbitmq
rabbit_external_user() {
  # The user EXTERNAL maps the client certificate to (ssl_cert_login_from =
  # distinguished_name): created without a password, permissions on /.
  python3 - "$1" <<'EOF'
import base64, json, os, sys, urllib.parse, urllib.request
base = os.environ.get("RABBIT_MGMT", "http://guest:guest@127.0.0.1:15672")
u = urllib.parse.urlsplit(base)
auth = "Basic " + base64.b64encode(("%s:%s" % (u.username, u.password)).encode()).decode()
root = "%s://%s:%d/api" % (u.scheme, u.hostname, u.port)
name = urllib.parse.quote(sys.argv[1], safe="")
def call(method, path, body=None):
    req = urllib.request.Request(root + path, method=method, headers={"Authorization": auth,
        "content-type": "application/json"}, data=None if body is None else json.dumps(body).encode())
    return urllib.request.urlopen(req, timeout=10)
try:
    call("GET", "/users/" + name)
except urllib.error.HTTPError as e:
    if e.code != 404:
        raise
    call("PUT", "/users/" + name, {"password_hash": "", "tags": ""})
call("PUT", "/permissions/%2F/" + name, {"configure": ".*", "write": ".*", "read": ".*"})
EOF
}

run_rabbitmq() {
  local dir="${TLS_RABBIT_DIR:-/etc/rabbitmq/tls}" port="${TLS_RABBIT_PORT:-5671}"
  export TLS_HOST=127.0.0.1 TLS_SERVER_NAME=localhost TLS_CA="$dir/ca.pem"
  export TLS_USER="${TLS_RABBIT_USER:-guest}" TLS_PASS="${TLS_RABBIT_PASS:-guest}"
  if [ -r "$dir/ca.key" ]; then
    CA_CERT="$dir/ca.pem" CA_KEY="$dir/ca.key" bash "$HERE/tls/gen_certs.sh" "$CERTS" >/dev/null \
      || { result rabbitmq - certificates - FAIL "gen_certs.sh failed"; return; }
    if ! rabbit_external_user "CN=tlc-user" 2>"$LOGDIR/rabbit-user.log"; then
      log "could not create the EXTERNAL user CN=tlc-user: $(tail -n 1 "$LOGDIR/rabbit-user.log")"
    fi
  else
    # Only RabbitMQ's own client certificate: the cases needing others are skipped.
    mkdir -p "$CERTS"
    cp "$dir/client.pem" "$dir/client.key" "$CERTS/"
    openssl pkcs12 -export -in "$CERTS/client.pem" -inkey "$CERTS/client.key" \
      -passout "pass:$TLS_P12_PASS" -out "$CERTS/client.p12" 2>/dev/null
    CA_CERT= bash "$HERE/tls/gen_certs.sh" "$LOGDIR/other" >/dev/null \
      && cp "$LOGDIR/other/wrongca-client".* "$CERTS/"
    NO_EXTERNAL="no tlc- certificate without $dir/ca.key (its client.pem's user is not created here)"
  fi
  run_matrix rabbitmq optional "$port" "${TLS_RABBIT_HANDSHAKE_MS:-5000}"
}

# ---------------------------------------------------------------- main
echo "TLS client matrix against $MODE (logs in $LOGDIR)"
setup_clients
printf '%-14s %-8s %-17s %-13s %-5s %s\n' target client case expected result detail
case "$MODE" in
  lepus) run_lepus ;;
  rabbitmq) run_rabbitmq ;;
  *) echo "usage: run_tls.sh [lepus|rabbitmq]" >&2; exit 2 ;;
esac
echo "tls clients: $PASS passed, $FAIL failed, $SKIP skipped"
if [ "$FAIL" = 0 ] && [ "$PASS" != 0 ]; then
  rm -rf "$LOGDIR"
  exit 0
fi
echo "(certificates, broker configs and logs kept in $LOGDIR)"
exit 1
