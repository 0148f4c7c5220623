#!/usr/bin/env bash
# Runs every benchmark scenario against sse-orders and the references (Nchan with memory and
# Redis storage, a plain axum server, the floor) in one go and writes bench/results/.
#
#   bench/run.sh                     full run (about 20 minutes on an idle machine)
#   BENCH_QUICK=1 bench/run.sh       every scenario briefly at reduced N (a smoke run)
#
# Environment:
#   BENCH_QUICK=1          short runs, N divided by 5
#   BENCH_DURATION=20s     publishing time of the fan-out scenarios (overload: a quarter of it)
#   BENCH_SERVERS="..."    subset of: ours ours-jwt ours-redis-hub ours-redis-poll floor nchan-memory nchan-redis plain-axum
#                          ours-before
#   BENCH_BEFORE_BIN=path  an sse-orders binary of another build (say, the previous commit's),
#                          run as ours-before beside ours: a regression check in one run
#   BENCH_SCENARIOS="..."  subset of the scenarios `target/release/loadgen scenarios` lists with
#                          the servers each runs against (default: all of them, in that order)
#   BENCH_RESULTS=dir      where to write (default bench/results)
#   BENCH_SERVER_CPU=0 BENCH_LOADGEN_CPU=1   cores for taskset
#   BENCH_SKIP_BUILD=1     use the release binaries already built
#   BENCH_KEEP_RESULTS=1   keep the other results (rerun a few scenarios or servers)
#   BENCH_QUIET_WAIT=300   before each run, wait up to this many seconds for an idle machine
#   BENCH_ATTEMPTS=3       runs disturbed by other processes (30% of a core or more) are repeated
#   CARGO_TARGET_DIR       where cargo builds (default target/)
#
# Only loopback addresses are used; every process started here is stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS=${BENCH_RESULTS:-$ROOT/bench/results}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release
QUICK=${BENCH_QUICK:-0}
SERVER_CPU=${BENCH_SERVER_CPU:-0}
LOADGEN_CPU=${BENCH_LOADGEN_CPU:-1}
ALL_SERVERS="ours ours-jwt ours-redis-hub ours-redis-poll floor nchan-memory nchan-redis plain-axum"
BEFORE_BIN=${BENCH_BEFORE_BIN:-}
[[ -n $BEFORE_BIN ]] && ALL_SERVERS="ours ours-before ${ALL_SERVERS#ours }"
# ours-jwt: the combined binary with --auth jwt; loadgen signs its tokens with this secret.
JWT_SECRET=bench-only-secret-bench-only-secret-0123
SERVERS=${BENCH_SERVERS:-$ALL_SERVERS}
# Empty: every scenario of the loadgen's table.
SCENARIOS=${BENCH_SCENARIOS:-}
if [[ $QUICK == 1 ]]; then
    DURATION=${BENCH_DURATION:-3s}; SCALE=5; HOLD=3s; DRAIN=10s; API_RATES="250 1000"; API_DURATION=2s
else
    DURATION=${BENCH_DURATION:-20s}; SCALE=1; HOLD=10s; DRAIN=30s; API_RATES="250 500 1000 2000 4000 8000"; API_DURATION=10s
fi
OVERLOAD_DURATION=$(( (${DURATION%s} + 3) / 4 ))s
# Open-loop publishing in overload: this many POSTs may be in flight.
OVERLOAD_OUTSTANDING=64
# Per-process descriptor limit of this machine is 20,000: at most 10,000 connections a process.
ulimit -n 20000

PORT_OURS=18080 PORT_API=18081 PORT_GATEWAY=18082 PORT_AXUM=18090 PORT_FLOOR=18091 PORT_NCHAN=18093
WORK=$(mktemp -d /tmp/sse-bench.XXXXXX)
PIDS=()          # every background process started here
SERVER_PIDS=()   # the server under test (for /proc sampling)
REDIS_PID="" REDIS_PORT=""

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    sleep 0.5
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- prerequisites ---------------------------------------------------------------------------
install_missing() {
    local need=()
    command -v nginx >/dev/null || need+=(nginx)
    [[ -e /usr/lib/nginx/modules/ngx_nchan_module.so ]] || need+=(libnginx-mod-nchan)
    command -v redis-server >/dev/null || need+=(redis-server)
    command -v redis-benchmark >/dev/null && command -v redis-cli >/dev/null || need+=(redis-tools)
    # The plots draw text with a TrueType font read at run time (no font library is linked).
    [[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]] || need+=(fonts-dejavu-core)
    command -v taskset >/dev/null || need+=(util-linux)
    if ((${#need[@]})); then
        log "installing ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
}

build() {
    if [[ ${BENCH_SKIP_BUILD:-0} == 1 ]]; then log "BENCH_SKIP_BUILD=1: using the binaries in $BIN"; return; fi
    log "building loadgen and the reference servers"
    (cd "$ROOT" && cargo build --release -p loadgen)
    log "building sse-orders, order-api, stream-gateway"
    if ! (cd "$ROOT" && cargo build --release -p sse-orders -p order-api -p stream-gateway); then
        log "WARNING: our binaries did not build; their columns stay empty"
    fi
}

have_server() {
    case $1 in
        ours|ours-jwt) [[ -x $BIN/sse-orders ]] ;;
        ours-before) [[ -n $BEFORE_BIN && -x $BEFORE_BIN ]] ;;
        ours-redis-*) [[ -x $BIN/order-api && -x $BIN/stream-gateway ]] ;;
        *) true ;;
    esac
}

# --- processes -------------------------------------------------------------------------------
# Starts a command pinned to the server core in the background; its pid lands in LAST_PID.
start_pinned() {
    local name=$1; shift
    taskset -c "$SERVER_CPU" "$@" >"$WORK/$name.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# wait_port PORT PID NAME: until PORT accepts connections; fails fast when PID exits.
wait_port() {
    local port=$1 pid=$2 name=$3 deadline=$((SECONDS + 20))
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "$name exited: $(tail -n 3 "$WORK/$name.log" | head -c 400)"
            return 1
        fi
        ((SECONDS < deadline)) || { log "$name: port $port did not open"; return 1; }
        sleep 0.1
    done
}

stop_pid() {
    local pid=$1 deadline=$((SECONDS + 10))
    kill "$pid" 2>/dev/null || return 0
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then kill -9 "$pid" 2>/dev/null || true; break; fi
        sleep 0.1
    done
    wait "$pid" 2>/dev/null || true
}

free_port() {
    local port=$1
    while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
    echo "$port"
}

start_redis() {
    REDIS_PORT=$(free_port 16380)
    start_pinned redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$WORK" --maxclients 20000 --protected-mode yes
    REDIS_PID=$LAST_PID
    wait_port "$REDIS_PORT" "$REDIS_PID" redis
    log "redis-server $(redis-server --version | awk '{print $3}') on 127.0.0.1:$REDIS_PORT (pid $REDIS_PID)"
}

flush_redis() { redis-cli -p "$REDIS_PORT" flushall >/dev/null; }

nchan_conf() {
    local storage=$1 dir=$WORK/nginx-$1 redis_pass=""
    mkdir -p "$dir"
    # nchan 1.3.6 does not inherit nchan_redis_pass from the server block: set it per location.
    [[ $storage == redis ]] && redis_pass="nchan_redis_pass bench_redis;"
    cat >"$dir/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
master_process on;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events {
    worker_connections 16384;
    multi_accept on;
}
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    $( [[ $storage == redis ]] && echo "upstream bench_redis { nchan_redis_server redis://127.0.0.1:$REDIS_PORT; }" )
    # Customer-scoped streams and publishes name their channel by ?customerId=; the others share one.
    map \$arg_customerId \$channel {
        "" bench;
        default \$arg_customerId;
    }
    server {
        listen 127.0.0.1:$PORT_NCHAN backlog=4096;
        location = /sub {
            nchan_subscriber eventsource;
            nchan_channel_id \$channel;
            # Default is the oldest buffered message: new subscribers would get a backlog.
            nchan_subscriber_first_message newest;
            nchan_eventsource_ping_interval 15;
            $redis_pass
        }
        location = /pub {
            nchan_publisher;
            nchan_channel_id \$channel;
            nchan_message_buffer_length 20000;
            nchan_message_timeout 10m;
            $redis_pass
        }
    }
}
EOF
    echo "$dir/nginx.conf"
}

# Starts server $1; sets SERVER_PIDS, SUB_URL, PUB_URL, PUB_MODE.
start_server() {
    local name=$1
    SERVER_PIDS=()
    METRICS_ARGS=()   # sse-orders: where loadgen reads the fan-out writer's own CPU
    export RUST_LOG=warn
    case $name in
        ours|ours-jwt|ours-before)
            local auth=(--auth none) binary=$BIN/sse-orders
            [[ $name == ours-jwt ]] && auth=(--auth jwt --jwt-secret "$JWT_SECRET")
            [[ $name == ours-before ]] && binary=$BEFORE_BIN
            start_pinned "$name" "$binary" --listen "127.0.0.1:$PORT_OURS" --replay-window 0s \
                --max-connections 10000 --listen-backlog 4096 --log-capacity 1000000 \
                --drain-delay 0s --shutdown-grace 2s "${auth[@]}"
            SERVER_PIDS=("$LAST_PID"); wait_port $PORT_OURS "$LAST_PID" ours || return 1
            SUB_URL="http://127.0.0.1:$PORT_OURS/api/order/stream"
            METRICS_ARGS=(--server-metrics "http://127.0.0.1:$PORT_OURS/metrics")
            PUB_URL="http://127.0.0.1:$PORT_OURS/api/order"; PUB_MODE=order ;;
        ours-redis-hub|ours-redis-poll)
            flush_redis
            start_pinned order-api "$BIN/order-api" --listen "127.0.0.1:$PORT_API" --redis-url "redis://127.0.0.1:$REDIS_PORT" \
                --drain-delay 0s --shutdown-grace 2s --auth none
            SERVER_PIDS=("$LAST_PID")
            wait_port $PORT_API "$LAST_PID" order-api || return 1
            start_pinned gateway "$BIN/stream-gateway" --listen "127.0.0.1:$PORT_GATEWAY" \
                --redis-url "redis://127.0.0.1:$REDIS_PORT" --delivery "${name#ours-redis-}" --replay-window 0s \
                --max-connections 10000 --listen-backlog 4096 --drain-delay 0s --shutdown-grace 2s --auth none
            SERVER_PIDS+=("$LAST_PID" "$REDIS_PID"); wait_port $PORT_GATEWAY "$LAST_PID" gateway || return 1
            SUB_URL="http://127.0.0.1:$PORT_GATEWAY/api/order/stream"
            METRICS_ARGS=(--server-metrics "http://127.0.0.1:$PORT_GATEWAY/metrics")
            PUB_URL="http://127.0.0.1:$PORT_API/api/order"; PUB_MODE=order ;;
        floor)
            start_pinned floor "$BIN/floor" --listen "127.0.0.1:$PORT_FLOOR" --listen-backlog 4096
            SERVER_PIDS=("$LAST_PID"); wait_port $PORT_FLOOR "$LAST_PID" floor || return 1
            SUB_URL="http://127.0.0.1:$PORT_FLOOR/sub"; PUB_URL="http://127.0.0.1:$PORT_FLOOR/publish"; PUB_MODE=raw ;;
        plain-axum)
            # Its own default backlog (tokio's 1024), as a Rust developer would ship it.
            start_pinned plain-axum "$BIN/plain-axum" --listen "127.0.0.1:$PORT_AXUM"
            SERVER_PIDS=("$LAST_PID"); wait_port $PORT_AXUM "$LAST_PID" plain-axum || return 1
            SUB_URL="http://127.0.0.1:$PORT_AXUM/sub"; PUB_URL="http://127.0.0.1:$PORT_AXUM/publish"; PUB_MODE=raw ;;
        nchan-memory|nchan-redis)
            [[ $name == nchan-redis ]] && flush_redis
            local conf; conf=$(nchan_conf "${name#nchan-}")
            start_pinned "$name" nginx -c "$conf" -p "$(dirname "$conf")"
            local master=$LAST_PID
            wait_port $PORT_NCHAN "$master" "$name" || return 1
            local worker="" deadline=$((SECONDS + 10))
            while [[ -z $worker ]] && ((SECONDS < deadline)); do worker=$(pgrep -P "$master" | head -n1 || true); sleep 0.1; done
            SERVER_PIDS=("$worker")
            [[ $name == nchan-redis ]] && SERVER_PIDS+=("$REDIS_PID")
            SUB_URL="http://127.0.0.1:$PORT_NCHAN/sub"; PUB_URL="http://127.0.0.1:$PORT_NCHAN/pub"; PUB_MODE=raw ;;
        *) log "unknown server $name"; return 1 ;;
    esac
}

stop_server() {
    local pid
    for pid in "${PIDS[@]}"; do
        [[ $pid == "$REDIS_PID" ]] && continue
        stop_pid "$pid"
    done
    PIDS=(); [[ -n $REDIS_PID ]] && PIDS=("$REDIS_PID")
}

# --- scenarios -------------------------------------------------------------------------------
# Busy CPU ticks (1/100 s) of the whole machine so far.
busy_ticks() { awk 'NR == 1 { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }

# This machine is shared: wait (at most BENCH_QUIET_WAIT seconds) until, over one second,
# less than a tenth of a core is busy, so other work does not disturb the next run.
wait_quiet() {
    local deadline=$((SECONDS + ${BENCH_QUIET_WAIT:-300})) before after
    while ((SECONDS < deadline)); do
        before=$(busy_ticks); sleep 1; after=$(busy_ticks)
        ((after - before < 10)) && return 0
    done
    log "the machine is still busy; running anyway (the report notes the disturbance)"
}

# run_loadgen OUT_JSON ARGS...: one bounded loadgen run on the load generator core; the
# summary goes to stdout and runs.log. Runs in the background so a signal stops it at once.
run_loadgen() {
    local out=$1; shift
    timeout 300 taskset -c "$LOADGEN_CPU" "$BIN/loadgen" run "$@" --out "$out" >"$WORK/loadgen.out" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    local status=0
    wait "$pid" || status=$?
    local kept=() p
    for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || kept+=("$p"); done
    PIDS=("${kept[@]}")
    cat "$WORK/loadgen.out" | tee -a "$RESULTS/runs.log"
    return "$status"
}

# Fraction of a core used by other processes during a run, from its report.
disturbance() {
    awk -F': ' '/"other_cpu_fraction"/ { gsub(/[ ,]/, "", $2); print $2 }' "$1" 2>/dev/null || echo 1
}
# run_scenario SCENARIO SERVER N RATE CUSTOMERS PHASE: one loadgen run (a line of the plan),
# JSON + plots in RESULTS.
run_scenario() {
    local scenario=$1 server=$2 n=$3 rate=$4 customers=$5 phase=$6 publish_args=()
    ((customers > 0)) && publish_args=(--customers "$customers")
    [[ $server == ours-jwt ]] && publish_args+=(--jwt-secret "$JWT_SECRET")
    case $phase in
        hold) publish_args+=(--publish none --duration "$HOLD") ;;
        publish|overload)
            publish_args+=(--publish "$PUB_MODE" --publish-url "$PUB_URL" --rate "$rate" --drain-timeout "$DRAIN")
            if [[ $phase == overload ]]; then
                publish_args+=(--duration "$OVERLOAD_DURATION" --max-outstanding $OVERLOAD_OUTSTANDING)
            else
                publish_args+=(--duration "$DURATION")
            fi ;;
        *) log "run $scenario / $server: unknown phase $phase"; return 1 ;;
    esac
    local pids; pids=$(IFS=,; echo "${SERVER_PIDS[*]}")
    log "$scenario / $server: N=$n rate=$rate"
    run_loadgen "$RESULTS/$scenario--$server.json" --scenario "$scenario" --server "$server" \
        --url "$SUB_URL" --connections "$n" --source-addrs 8 --connect-timeout 15s --settle 1s \
        "${publish_args[@]}" --server-pid "$pids" "${METRICS_ARGS[@]}" --no-plots || log "run $scenario / $server failed"
}

# run_with_retry SCENARIO SERVER N RATE CUSTOMERS PHASE: start the server on a quiet machine,
# run, stop; repeat (up to BENCH_ATTEMPTS times) while other processes took 30% of a core or
# more during the run.
run_with_retry() {
    local scenario=$1 server=$2 attempt other
    for ((attempt = 1; attempt <= ${BENCH_ATTEMPTS:-3}; attempt++)); do
        wait_quiet
        start_server "$server" || { log "$server did not start"; stop_server; return; }
        run_scenario "$@" || true
        stop_server
        other=$(disturbance "$RESULTS/$scenario--$server.json")
        awk -v o="${other:-1}" 'BEGIN { exit !(o < 0.3) }' && return
        if ((attempt < ${BENCH_ATTEMPTS:-3})); then
            log "$scenario / $server was disturbed (other processes: ${other} of a core); again"
        else
            log "$scenario / $server was disturbed (other processes: ${other} of a core); keeping it, the report says so"
        fi
    done
}

# order-api alone through Redis: a ladder of POST rates, and redis-benchmark XADD as the ceiling.
run_api_ladder() {
    have_server ours-redis-hub || { log "order-api not built: skipping the POST ladder"; return; }
    local rate
    for rate in $API_RATES; do
        wait_quiet
        if ! start_server ours-redis-hub; then
            log "order-api did not start: skipping the POST ladder"; stop_server; break
        fi
        local pids; pids=$(IFS=,; echo "${SERVER_PIDS[0]},$REDIS_PID")
        log "order-api alone at $rate POST/s"
        run_loadgen "$RESULTS/order-api-$rate--ours-redis.json" --scenario "order-api-$rate" --server ours-redis \
            --url "$SUB_URL" --connections 0 --publish order --publish-url "$PUB_URL" --rate "$rate" \
            --duration "$API_DURATION" --max-outstanding 64 --server-pid "$pids" --no-plots || log "ladder step $rate failed"
        stop_server
    done
    flush_redis
    log "redis-benchmark XADD (ceiling)"
    wait_quiet
    local clients=64 requests=$((200000 / SCALE))
    taskset -c "$LOADGEN_CPU" redis-benchmark -p "$REDIS_PORT" -c $clients -n $requests --csv \
        XADD bench:xadd MAXLEN '~' 1000000 '*' event "$(head -c 300 /dev/zero | tr '\0' x)" >"$WORK/xadd.csv"
    awk -F'"' -v clients=$clients 'NR==2 { printf "{\"clients\": %s, \"requests_per_s\": %s, \"p50_ms\": %s, \"p99_ms\": %s}\n", clients, $4, $10, $14 }' \
        "$WORK/xadd.csv" >"$RESULTS/redis-benchmark-xadd.json"
    cat "$RESULTS/redis-benchmark-xadd.json"
}

versions() {
    {
        echo "date: $(date -u +%FT%TZ)"
        echo "kernel: $(uname -r)"
        echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') x $(nproc)"
        echo "memory: $(free -h | awk '/Mem:/ {print $2}')"
        echo "rustc: $(rustc --version)"
        echo "nginx: $(nginx -v 2>&1 | cut -d/ -f2)"
        echo "nchan: $(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null)"
        echo "redis: $(redis-server --version | awk '{print $3}')"
        echo "somaxconn: $(cat /proc/sys/net/core/somaxconn)"
        echo "quick: $QUICK duration: $DURATION overload duration: $OVERLOAD_DURATION"
        echo "git: $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$ROOT" && git diff --quiet 2>/dev/null || echo ' (with local changes)')"
    } >"$RESULTS/machine.txt"
}

# The runs of this benchmark, one a line (SCENARIO SERVER N RATE CUSTOMERS PHASE), from the
# loadgen's scenario table; exits naming BENCH_SCENARIOS when it names an unknown scenario.
bench_plan() {
    [[ -x $BIN/loadgen ]] || { log "no $BIN/loadgen: build it (cargo build --release -p loadgen)"; exit 1; }
    if ! "$BIN/loadgen" bench-plan --scenarios "$SCENARIOS" --servers "$SERVERS" --scale "$SCALE"; then
        log "BENCH_SCENARIOS=\"$SCENARIOS\" names a scenario the loadgen does not know ($BIN/loadgen scenarios lists them)"
        exit 2
    fi
}

main() {
    install_missing
    build
    local plan runs=() line
    plan=$(bench_plan)
    # An array, not a loop reading stdin: the commands of a run must not eat the plan.
    mapfile -t runs <<<"$plan"
    mkdir -p "$RESULTS"
    # A partial rerun (BENCH_KEEP_RESULTS=1) replaces only the runs it repeats.
    if [[ ${BENCH_KEEP_RESULTS:-0} != 1 ]]; then
        # Only what this script writes: other files in the folder are left alone.
        rm -f "$RESULTS"/*--*.json "$RESULTS"/compare-*.png "$RESULTS/redis-benchmark-xadd.json" \
            "$RESULTS/machine.txt" "$RESULTS/runs.log" "$RESULTS/summary.md"
    fi
    versions
    start_redis
    local scenario server n rate customers phase
    for line in "${runs[@]}"; do
        read -r scenario server n rate customers phase <<<"$line"
        [[ -n $scenario ]] || continue
        if [[ $phase == post-ladder ]]; then run_api_ladder; continue; fi
        have_server "$server" || { log "skipping $server: not built"; continue; }
        run_with_retry "$scenario" "$server" "$n" "$rate" "$customers" "$phase"
    done
    "$BIN/loadgen" report --results "$RESULTS"
    log "done: $RESULTS/summary.md"
}

main "$@"
