#!/usr/bin/env bash
# Profiles sse-orders (kernel and user stacks, perf) while one publishing scenario runs, from the
# moment every stream is parked in the fan-out until publishing ends: connects and teardown are
# left out of the profile.
#
#   bench/profile.sh NAME CONNECTIONS RATE CUSTOMERS      # e.g. scoped 10000 50 1000
#
# Writes $OUT/NAME.perf (perf report -i ...), NAME.json (the loadgen report) and the logs;
# OUT defaults to /tmp/sse-orders-profile. Needs the release binaries (cargo build --release -p
# sse-orders -p loadgen) and perf; kernel stacks need kernel.perf_event_paranoid <= 1.
set -euo pipefail
(($# == 4)) || { echo "usage: bench/profile.sh NAME CONNECTIONS RATE CUSTOMERS" >&2; exit 2; }
name=$1 connections=$2 rate=$3 customers=$4
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/target/release}
OUT=${OUT:-/tmp/sse-orders-profile}
PORT=${PORT:-18480}
mkdir -p "$OUT"
command -v perf >/dev/null || { echo "bench/profile.sh: perf is not installed (apt install linux-perf)" >&2; exit 1; }
ulimit -n 20000

RUST_LOG=warn taskset -c 0 "$BIN/sse-orders" --listen "127.0.0.1:$PORT" --replay-window 0s \
    --max-connections "$connections" --listen-backlog 4096 --log-capacity 1000000 \
    --drain-delay 0s --shutdown-grace 2s --auth none >"$OUT/$name.server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
deadline=$((SECONDS + 20))
until curl -sf "http://127.0.0.1:$PORT/metrics" >/dev/null; do
    ((SECONDS < deadline)) || { echo "sse-orders did not start (see $OUT/$name.server.log)" >&2; exit 1; }
    sleep 0.2
done

spread=(); ((customers > 0)) && spread=(--customers "$customers")
taskset -c 1 "$BIN/loadgen" run --scenario "$name" --server ours \
    --url "http://127.0.0.1:$PORT/api/order/stream" --connections "$connections" --source-addrs 8 \
    --connect-timeout 15s --settle 1s "${spread[@]}" --publish order \
    --publish-url "http://127.0.0.1:$PORT/api/order" --rate "$rate" --duration 20s --drain-timeout 30s \
    --server-pid "$server" --server-metrics "http://127.0.0.1:$PORT/metrics" --no-plots \
    --out "$OUT/$name.json" >"$OUT/$name.loadgen.log" 2>&1 &
loadgen=$!

deadline=$((SECONDS + 60))
until curl -s "http://127.0.0.1:$PORT/metrics" | grep -q "^sse_orders_fan_out_parked_connections $connections\$"; do
    ((SECONDS < deadline)) || { echo "the streams were not all parked within 60 s" >&2; exit 1; }
    sleep 0.2
done
# The settle second, then most of the publishing time.
sleep 2
perf record -F 2000 -g -p "$server" -o "$OUT/$name.perf" -- sleep 12 2>"$OUT/$name.perf.log"
wait "$loadgen"
cat "$OUT/$name.loadgen.log"
echo "profile: perf report -i $OUT/$name.perf --children -g none --sort sym"
