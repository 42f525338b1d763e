#!/usr/bin/env bash
# The test command: lint, the Rust test suite (unit, property, integration with
# real clients), then the Python/Node client suites against a real broker.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each stage's header carries the minutes since the start, so a slow run
# shows where its time went.
stage() { printf '== [%dm%02ds] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }

stage "spec drift"
python3 scripts/gen_spec.py --check

stage "fmt + clippy"
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings

stage "tools the suites need"
# promtool (Debian's prometheus package) parses /metrics in tests/metrics.rs;
# the rabbitmqadmin v1 script comes out of Debian's rabbitmq-server package
# without installing it (no Erlang, no service): tests/clients/run_admin.sh.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt_opts=(-o DPkg::Lock::Timeout=180 -o Acquire::Retries=3)
  if ! command -v promtool >/dev/null 2>&1; then
    apt-get "${apt_opts[@]}" update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y -qq --no-install-recommends prometheus >/dev/null
  fi
  if [ ! -x /usr/bin/rabbitmqadmin ] && [ ! -x target/tools/bin/rabbitmqadmin-v1 ]; then
    mkdir -p target/tools/bin target/tools/deb
    (cd target/tools/deb && { apt-get download rabbitmq-server >/dev/null 2>&1 \
      || { apt-get "${apt_opts[@]}" update -qq >/dev/null && apt-get download rabbitmq-server >/dev/null; }; } \
      && dpkg-deb -x rabbitmq-server_*.deb root)
    find target/tools/deb/root -path '*/cli/rabbitmqadmin' -exec cp {} target/tools/bin/rabbitmqadmin-v1 \;
    chmod +x target/tools/bin/rabbitmqadmin-v1
  fi
fi
if [ ! -x /usr/bin/rabbitmqadmin ] && [ -x target/tools/bin/rabbitmqadmin-v1 ]; then
  export RABBITMQADMIN_V1="$PWD/target/tools/bin/rabbitmqadmin-v1"
fi

stage "cargo test"
cargo test --all-targets
stage "cargo test: the integration suite again on the io_uring backend"
# Only the integration tests: the unit tests do not read the variable.
LEPUS_TEST_IO_BACKEND=io-uring cargo test --test '*'

stage "fuzz: each cargo-fuzz target for ${LEPUS_FUZZ_SECONDS:-60} s (LEPUS_FUZZ_SECONDS=0 skips)"
# Here only, not in `cargo test`: it needs cargo-fuzz and an ASan build.
# RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its nightly flags to the stable
# toolchain. New corpus entries and any crash go to a temporary directory
# (the committed seeds in fuzz/corpus/ are only read); a crash fails the script.
fuzz_seconds="${LEPUS_FUZZ_SECONDS:-60}"
fuzz_targets=(frame_decode broker_session)
if [ "$fuzz_seconds" != 0 ]; then
  command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
  (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz build)
  fuzz_work=$(mktemp -d)
  mkdir -p "$fuzz_work/tmp"
  # The targets run side by side, one per core. Each runs in its own process
  # group, killed on any exit of this script, so nothing outlives it; TMPDIR
  # keeps broker_session's data directory in fuzz_work.
  fuzzers=()
  trap 'for f in "${fuzzers[@]}"; do kill -- -"$f" 2>/dev/null || true; done; rm -rf "$fuzz_work"' EXIT
  for target in "${fuzz_targets[@]}"; do
    mkdir -p "$fuzz_work/$target" "fuzz/corpus/$target"
    (cd fuzz && exec setsid env RUSTC_BOOTSTRAP=1 TMPDIR="$fuzz_work/tmp" cargo fuzz run "$target" \
      "$fuzz_work/$target" "corpus/$target" -- \
      -max_total_time="$fuzz_seconds" -timeout=60 -print_funcs=0 \
      -artifact_prefix="$fuzz_work/crash-$target-") >"$fuzz_work/$target.log" 2>&1 &
    fuzzers+=($!)
  done
  for i in "${!fuzz_targets[@]}"; do
    target=${fuzz_targets[$i]}
    if ! wait "${fuzzers[$i]}"; then
      echo "fuzz target $target failed:"
      grep -v '^#[0-9]' "$fuzz_work/$target.log" | tail -n 60
      for crash in "$fuzz_work"/crash-"$target"-*; do
        [ -e "$crash" ] && { echo "reproducer (base64): $crash"; base64 -w0 "$crash"; echo; }
      done
      exit 1
    fi
    echo "$target: $(grep -E '^#[0-9]+.*(DONE|pulse)' "$fuzz_work/$target.log" | tail -n 1)"
  done
  trap - EXIT
  rm -rf "$fuzz_work"
fi

stage "client suites (pika, kombu, amqplib) against lepus"
# The binary `cargo test` built above (with the test build's features; a
# `cargo build` here would compile a dozen crates again for nothing).
[ -x "${CARGO_TARGET_DIR:-target}/debug/lepus" ] || cargo build --bin lepus
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
log=$(mktemp)
"${CARGO_TARGET_DIR:-target}/debug/lepus" --listen "127.0.0.1:$port" --management-port 0 --prometheus-port 0 --shards 2 --no-pin \
  --dead-letter-retry-ms 500 >"$log" 2>&1 &
broker=$!
trap 'kill $broker 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
AMQP_URL="amqp://guest:guest@127.0.0.1:$port/%2F" CLIENTS_DEAD_LETTER_RETRY_MS=500 bash tests/clients/run.sh
kill "$broker"
wait "$broker" || { echo "broker exited badly:"; cat "$log"; exit 1; }
rm -f "$log"
trap - EXIT

stage "TLS client matrix (pika, amqplib, Go, Java, openssl s_client, raw sockets) against lepus"
# Starts its own brokers with generated certificates and [tls] configs.
LEPUS_BIN="${CARGO_TARGET_DIR:-target}/debug/lepus" bash tests/clients/run_tls.sh lepus

# Every JVM of the Java clients leaves /tmp/hsperfdata_<user> behind, empty
# once they have exited: removed if so.
rmdir --ignore-fail-on-non-empty "/tmp/hsperfdata_$(id -un)" 2>/dev/null || true

stage "rabbitmqadmin v1 and v2 against lepus"
LEPUS_BIN="${CARGO_TARGET_DIR:-target}/debug/lepus" bash tests/clients/run_admin.sh lepus

stage "the web UI in headless Chromium"
LEPUS_BIN="${CARGO_TARGET_DIR:-target}/debug/lepus" bash tests/browser/run.sh
