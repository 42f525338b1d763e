#!/bin/bash
# Issue 15's scale runs, each against the release binary with one shard on core 0 and the
# generators on core 1, data under target/ (several GB for the stream):
#
#   stream  — a stream of N messages (default 100 M, 16 B, confirms window 1000): broker RSS
#             while it fills, after a restart (and how long the restart took to its start
#             line), and after a consumer read min(N, 5 M) from `first`.
#   delayed — N persistent delayed messages held (default 9,990,000: a shard holds at most
#             10 M, and the timed ones need room), filled by lepus-perf with x-delay 15 min;
#             RSS and disk, then perf/delayed.py's release lateness (5,000 messages at
#             1,000 msg/s, x-delay 1 s) with them held, idle and under a saturating load,
#             and the same load with x-delay 0 (the delivery path alone) for comparison;
#             after each, the broker's own count of how late it routed the released
#             messages after their due time (its lepus_delayed_release_lateness_seconds
#             histogram on 127.0.0.1:5799, as bucket bounds: ≤ 1, 2, 5, 10, 20 … ms).
#
# Usage: scripts/streams_delayed_scale.sh stream|delayed [N]     (needs pika for delayed)
# Build first: cargo build --release --bins (LEPUS_BIN=path runs another broker binary).
# Prints what it measured.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:?stream or delayed}
PERF=target/release/lepus-perf
rss() { grep -E 'VmRSS|VmHWM' "/proc/$1/status" | tr -s ' \t\n' ' '; }
json() { grep '^{' | tail -1 | python3 -c "import json,sys; d=json.loads(sys.stdin.read()); print(*[d[k] if not isinstance(k, tuple) else d[k[0]][k[1]] for k in $1])"; }
start() { # data dir, port, log, [more broker args]
    local more=("${@:4}"); [ ${#more[@]} -gt 0 ] || more=(--no-prometheus)
    taskset -c 0 "${LEPUS_BIN:-target/release/lepus}" --listen "127.0.0.1:$2" --shards 1 --no-management \
        "${more[@]}" --data-dir "$1" > "$3" 2>&1 &
    BP=$!
    until grep -qs "lepus started" "$3"; do sleep 0.1; done
}

case $what in
stream)
    n=${2:-100000000}; dir=target/bench-stream-scale; port=5713
    rm -rf "$dir"; mkdir -p "$dir"
    start "$dir" $port "$dir.log"
    echo "start: $(rss $BP)"
    ( while kill -0 $BP 2>/dev/null; do echo "$(date +%s) $(rss $BP)"; sleep 5; done ) > "$dir.rss" &
    taskset -c 1 $PERF -h "amqp://guest:guest@127.0.0.1:$port/%2F" -x1 -y0 -s16 --stream-queue -c1000 -u big \
        -C "$n" --json 2>/dev/null | json "['confirmed', 'confirmed_per_s', 'duration_s', ('confirm_latency_us', 'p50'), ('confirm_latency_us', 'p99')]" \
        | sed 's/^/filled: confirmed, per s, s, confirm p50 us, p99 us: /'
    echo "held: $(rss $BP); peak during the fill: $(sort -k3 -n "$dir.rss" | tail -1)"; du -sh "$dir"
    kill -TERM $BP; wait $BP || true
    t0=$(date +%s.%N); start "$dir" $port "$dir.2.log"; t1=$(date +%s.%N)
    echo "restart to its start line: $(python3 -c "print(round($t1 - $t0, 2))") s; $(rss $BP)"
    taskset -c 1 $PERF -h "amqp://guest:guest@127.0.0.1:$port/%2F" -x0 -y1 --stream-queue --stream-consumer-offset first \
        -q1000 -A100 -u big -D "$(( n < 5000000 ? n : 5000000 ))" --json 2>/dev/null | json "['received', 'received_per_s']" | sed 's/^/read from first: received, per s: /'
    echo "after the read: $(rss $BP)"
    kill -TERM $BP; wait $BP || true
    rm -rf "$dir"
    ;;
delayed)
    n=${2:-9990000}; dir=target/bench-delayed-scale; port=5798
    # The broker's own count of how late it routed them after their due time
    # (lepus_delayed_release_lateness_seconds: releases per bucket since the last call).
    metrics=http://127.0.0.1:5799/metrics
    lateness() { sleep 0.5; python3 -c "
import re, sys, urllib.request, json
text = urllib.request.urlopen('$metrics').read().decode()
now = {}
for m in re.finditer(r'^lepus_delayed_release_lateness_seconds_bucket\{[^}]*le=\"([^\"]+)\"[^}]*\} (\S+)', text, re.M):
    now[m.group(1)] = now.get(m.group(1), 0) + float(m.group(2))
try: before = json.load(open('$dir.lateness'))
except OSError: before = {}
json.dump(now, open('$dir.lateness', 'w'))
d = [(le, now[le] - before.get(le, 0)) for le in now]
total = d[-1][1] if d else 0
def q(f):
    return next((le for le, c in d if c >= f * total), '?') if total else '-'
print(f'{int(total)} routed; lateness at most (bucket bound, s): p50 {q(0.5)}, p99 {q(0.99)}, all {q(1.0)};',
      ' '.join(f'le {le}: {int(c)}' for le, c in d))
"; }
    timed() { taskset -c 1 python3 perf/delayed.py $BP --port $port --pending 0 --timed 5000 --rate 1000 --delay-ms "$1" --json | tail -1; echo "  broker: $(lateness)"; }
    load() { taskset -c 1 $PERF -h "amqp://guest:guest@127.0.0.1:$port/%2F" -x1 -y1 -s16 -u load -z 14 --json > "$dir.load.json" 2>/dev/null & LP=$!; sleep 2; }
    rm -rf "$dir" "$dir.lateness"; mkdir -p "$dir"
    start "$dir" $port "$dir.log" --prometheus-listen=127.0.0.1:5799 --stats-interval-ms=100
    echo "start: $(rss $BP)"
    echo "nothing held, idle: $(timed 1000)"
    taskset -c 1 $PERF -h "amqp://guest:guest@127.0.0.1:$port/%2F" -e perf.delayed --predeclared -k perf.delayed.far \
        -x1 -y0 -s16 -f persistent -c1000 -C "$n" --message-properties x-delay=900000 --json 2>/dev/null \
        | json "['confirmed', 'confirmed_per_s', 'duration_s']" | sed 's/^/filled: confirmed, per s, s: /'
    echo "held: $(rss $BP)"; du -sh "$dir"
    echo "held, idle: $(timed 1000)"
    load; echo "held, under load: $(timed 1000)"; wait $LP
    echo "the load: $(json "['sent_per_s', 'received_per_s']" < "$dir.load.json") msg/s sent, received"
    load; echo "held, under load, x-delay 0 (the path alone): $(timed 0)"; wait $LP
    echo "end: $(rss $BP)"
    kill -TERM $BP; wait $BP || true
    rm -rf "$dir" "$dir".*
    ;;
*) echo "stream or delayed" >&2; exit 2 ;;
esac
