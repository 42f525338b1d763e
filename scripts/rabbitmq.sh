#!/usr/bin/env bash
# A private RabbitMQ node on loopback for benchmarks (Debian's rabbitmq-server,
# 3.10 on Debian 12). It never touches the system node: its own node name,
# port, data/log directory and Erlang cookie (HOME is the data directory), no
# plugins, and it is started directly (systemd does not run here).
#
#   scripts/rabbitmq.sh install            apt-get install rabbitmq-server (if missing), no service start
#   scripts/rabbitmq.sh start              start the node pinned to $RABBIT_CPUS; prints the beam.smp pid
#   scripts/rabbitmq.sh stop               stop it (and epmd, if this script started it)
#   scripts/rabbitmq.sh kill               SIGKILL beam.smp (a crash; data and epmd kept, for a restart)
#   scripts/rabbitmq.sh pid                print the beam.smp pid
#   scripts/rabbitmq.sh delete-queues      delete every queue of vhost /
#   scripts/rabbitmq.sh ctl ARGS...        rabbitmqctl against this node
#
# Environment (defaults):
#   RABBIT_PORT=5712                 AMQP port on 127.0.0.1 (Erlang distribution: RABBIT_PORT + 20000, loopback)
#   RABBIT_DIR=/tmp/lepus-perf-rabbitmq   data, logs, config, cookie; wiped on start unless RABBIT_KEEP_DATA=1
#   RABBIT_NODE=lepus-perf@localhost
#   RABBIT_CPUS=0                    cores for every process of the node (taskset -c), schedulers follow
#   RABBIT_PERF_MAP=0                1: start beam with +JPperf true (perf map in /tmp/perf-<pid>.map,
#                                    frame pointers in JIT code) for flamegraphs
#   RABBIT_LOG_LEVEL=warning         file log level (info logs every connection)
#   RABBIT_ERL_ARGS=                 more arguments for the Erlang VM, e.g. "+S 1:1"
set -euo pipefail

PORT=${RABBIT_PORT:-5712}
DIR=${RABBIT_DIR:-/tmp/lepus-perf-rabbitmq}
NODE=${RABBIT_NODE:-lepus-perf@localhost}
CPUS=${RABBIT_CPUS:-0}
BIN=/usr/lib/rabbitmq/bin

log() { echo "rabbitmq.sh: $*" >&2; }

ctl() {
  HOME="$DIR" "$BIN/rabbitmqctl" -q -n "$NODE" "$@"
}

install() {
  if [ -x "$BIN/rabbitmq-server" ]; then
    log "rabbitmq-server already installed: $(dpkg-query -W -f '${Version}' rabbitmq-server 2>/dev/null || echo '?')"
    return
  fi
  # Keep the package from starting the system node (listening on 0.0.0.0:5672).
  local policy_added=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    policy_added=1
  fi
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rabbitmq-server
  if [ -n "$policy_added" ]; then rm -f /usr/sbin/policy-rc.d; fi
}

pid() {
  if [ -s "$DIR/pid" ] && kill -0 "$(cat "$DIR/pid")" 2>/dev/null; then
    cat "$DIR/pid"
  else
    return 1
  fi
}

pin_all() {
  local p=$1 c
  taskset -a -p -c "$CPUS" "$p" >/dev/null
  # erl_child_setup, inet_gethost and their children
  for c in $(pgrep -P "$p" || true); do
    pin_all "$c"
  done
}

start() {
  [ -x "$BIN/rabbitmq-server" ] || { log "not installed: run $0 install"; exit 1; }
  if pid >/dev/null; then log "already running (pid $(pid))"; exit 1; fi
  if ss -Hltn "sport = :$PORT" | grep -q .; then log "port $PORT is in use"; exit 1; fi
  if [ "${RABBIT_KEEP_DATA:-0}" != 1 ]; then rm -rf "$DIR"; fi
  mkdir -p "$DIR/log" "$DIR/mnesia"
  echo '[].' > "$DIR/enabled_plugins"
  cat > "$DIR/rabbitmq.conf" <<EOF
loopback_users.guest = true
log.console = false
log.file.level = ${RABBIT_LOG_LEVEL:-warning}
EOF
  # After `kill` (data kept) an epmd this script started is still running: keep its marker.
  rm -f "$DIR/pid"
  if ! epmd -names >/dev/null 2>&1; then
    touch "$DIR/epmd-started-here"
  fi
  local erl_args="-kernel inet_dist_use_interface {127,0,0,1} ${RABBIT_ERL_ARGS:-}"
  if [ "${RABBIT_PERF_MAP:-0}" = 1 ]; then erl_args="$erl_args +JPperf true"; fi
  HOME="$DIR" \
    RABBITMQ_NODENAME="$NODE" \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT="$PORT" \
    RABBITMQ_DIST_PORT=$((PORT + 20000)) \
    RABBITMQ_MNESIA_BASE="$DIR/mnesia" \
    RABBITMQ_LOG_BASE="$DIR/log" \
    RABBITMQ_CONFIG_FILE="$DIR/rabbitmq.conf" \
    RABBITMQ_ADVANCED_CONFIG_FILE="$DIR/advanced.config" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/enabled_plugins" \
    RABBITMQ_PID_FILE="$DIR/pid" \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="$erl_args" \
    ERL_EPMD_ADDRESS=127.0.0.1 \
    taskset -c "$CPUS" "$BIN/rabbitmq-server" -detached >"$DIR/log/start.out" 2>&1
  # `wait` waits for the pid file, then for the rabbit application.
  if ! timeout 120 env HOME="$DIR" "$BIN/rabbitmqctl" -q -n "$NODE" wait --timeout 110 "$DIR/pid" >/dev/null 2>&1; then
    log "node did not start; see $DIR/log"
    tail -20 "$DIR/log/start.out" "$DIR"/log/*.log >&2 || true
    stop || true
    exit 1
  fi
  ctl await_startup >/dev/null
  local p
  p=$(pid)
  pin_all "$p"
  if [ -e "$DIR/epmd-started-here" ]; then
    local e
    for e in $(pgrep -x epmd || true); do taskset -a -p -c "$CPUS" "$e" >/dev/null; done
  fi
  log "node $NODE up on 127.0.0.1:$PORT, beam.smp pid $p, cores $CPUS, schedulers $(ctl eval 'erlang:system_info(schedulers_online).' 2>/dev/null || echo '?')"
  echo "$p"
}

# beam.smp of this node, also before it wrote its pid file (its -home is $DIR).
find_beam() {
  pid || pgrep -f -- "beam.smp .*-home $DIR --" | head -1
}

stop() {
  local p
  if p=$(find_beam) && [ -n "$p" ]; then
    if [ -s "$DIR/pid" ]; then
      timeout 60 env HOME="$DIR" "$BIN/rabbitmqctl" -q -n "$NODE" stop "$DIR/pid" >/dev/null 2>&1 || true
    else
      kill -TERM "$p" 2>/dev/null || true
    fi
    local i
    for i in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$p" 2>/dev/null; then log "beam.smp $p still alive: SIGKILL"; kill -KILL "$p" || true; fi
    log "node $NODE stopped"
  fi
  rm -f "$DIR/pid"
  if [ -e "$DIR/epmd-started-here" ]; then
    # Only if no other node registered meanwhile (epmd -kill refuses otherwise).
    if ! epmd -names 2>/dev/null | grep -q '^name '; then epmd -kill >/dev/null 2>&1 || true; fi
    rm -f "$DIR/epmd-started-here"
  fi
}

# A crash: SIGKILL to beam.smp (its erl_child_setup exits with it). Data and epmd stay.
kill_node() {
  local p
  if p=$(find_beam) && [ -n "$p" ]; then
    kill -KILL "$p"
    local i
    for i in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
    log "node $NODE killed (beam.smp $p)"
  else
    log "not running"
    return 1
  fi
  rm -f "$DIR/pid"
}

delete_queues() {
  local q
  ctl list_queues -p / --no-table-headers name 2>/dev/null | while read -r q; do
    [ -n "$q" ] && ctl delete_queue -p / "$q" >/dev/null
  done
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  kill) kill_node ;;
  pid) pid ;;
  delete-queues) delete_queues ;;
  ctl) shift; ctl "$@" ;;
  *) sed -n '2,25p' "$0" >&2; exit 2 ;;
esac
