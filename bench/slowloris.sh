#!/usr/bin/env bash
# Slow-loris run: 19,000 sockets trickle a request head one byte a second (reopened when the
# server closes them) while one stream stays open and a new client is probed every second.
# With EXTRA > 0 a second process adds that many trickling sockets, taking the total past the
# server's 20,000 open-file limit.
#
# usage: bench/slowloris.sh NAME SSE_ORDERS_BINARY PORT EXTRA OUT.json
#   e.g. bench/slowloris.sh after target/debug/sse-orders 18081 0 bench/results/slowloris-19k--after.json
set -euo pipefail
name=$1; bin=$2; port=$3; extra=$4; out=$5
loadgen=${LOADGEN:-target/debug/loadgen}
RUST_LOG=warn "$bin" --listen "127.0.0.1:$port" --log-format text >"/tmp/slowloris-$name-server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
if [ "$extra" -gt 0 ]; then
  "$loadgen" slowloris --server "$name-extra" --url "http://127.0.0.1:$port" --sockets "$extra" \
    --duration 50s --source-addrs 5 >"/tmp/slowloris-$name-extra.out" 2>&1 &
fi
"$loadgen" slowloris --server "$name" --url "http://127.0.0.1:$port" --sockets 19000 --duration 30s \
  --server-pid "$server" --out "$out"
