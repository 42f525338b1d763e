#!/usr/bin/env bash
# The test command: lint, the Rust test suite (unit, property, integration with
# real clients), then the Python/Node client suites against a real broker.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== spec drift"
python3 scripts/gen_spec.py --check

echo "== fmt + clippy"
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings

echo "== cargo test"
cargo test --all-targets
echo "== cargo test: the integration suite again on the io_uring backend"
LEPUS_TEST_IO_BACKEND=io-uring cargo test --tests

echo "== client suites (pika, kombu, amqplib) against lepus"
cargo build --bin lepus
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
log=$(mktemp)
"${CARGO_TARGET_DIR:-target}/debug/lepus" --listen "127.0.0.1:$port" --shards 2 --no-pin >"$log" 2>&1 &
broker=$!
trap 'kill $broker 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
AMQP_URL="amqp://guest:guest@127.0.0.1:$port/%2F" bash tests/clients/run.sh
kill "$broker"
wait "$broker" || { echo "broker exited badly:"; cat "$log"; exit 1; }
