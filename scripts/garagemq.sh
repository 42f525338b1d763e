#!/usr/bin/env bash
# garagemq (Debian's Go AMQP 0-9-1 broker) for the benchmark suite.
#
#   scripts/garagemq.sh install     apt-get install garagemq (if missing), no service start
#
# The package ships a systemd unit that would listen on 127.0.0.1:5672 and
# 15672 (RabbitMQ's ports): install blocks service start-up while it runs.
# scripts/perf.py starts its own instance per run (lepusperf/brokers.py:
# `taskset -c 0 garagemq --config <fresh dir>/config.yaml`, port 5714, admin
# port 15714, database in the same fresh directory) and calls this script
# when `garagemq` is missing.
set -euo pipefail

log() { echo "garagemq.sh: $*" >&2; }

install() {
  if command -v garagemq >/dev/null; then
    log "garagemq already installed: $(dpkg-query -W -f '${Version}' garagemq 2>/dev/null || echo '?')"
    return
  fi
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    # Removed again however apt-get ends.
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends garagemq
}

case "${1:-}" in
  install) install ;;
  *) sed -n '2,11p' "$0" >&2; exit 2 ;;
esac
