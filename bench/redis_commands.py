#!/usr/bin/env python3
"""Redis load and gateway CPU of the two delivery modes, side by side in one run.

For `hub` and `poll`, with 1,000 and 10,000 connections, idle and with 10 orders/s, this
measures over a fixed window (after every connection is open):
  - Redis commands per second, in total and per command (INFO commandstats),
  - gateway CPU seconds per second (user + system, from /proc/<pid>/stat).
The gateway is pinned to core 0, the load generator to core 1.

Usage: bench/redis_commands.py [--window 10] [--out bench/results/redis-commands.md]
Needs release builds of stream-gateway, order-api and loadgen in $CARGO_TARGET_DIR
(default target/): bench/run.sh builds them.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BIN = os.path.join(TARGET, "release")
TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit(f"timed out waiting for {what}")


def http_get(url):
    with urllib.request.urlopen(url, timeout=15) as response:
        return response.status, response.read().decode()


def metric(base, name):
    try:
        _, text = http_get(base + "/metrics")
    except OSError:  # a saturated gateway may answer late: "not yet"
        return 0.0
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def commandstats(port):
    out = subprocess.run(["redis-cli", "-p", str(port), "INFO", "commandstats"],
                         capture_output=True, text=True, check=True).stdout
    calls = {}
    for line in out.splitlines():
        if line.startswith("cmdstat_"):
            name, rest = line[len("cmdstat_"):].split(":", 1)
            stats = dict(kv.split("=") for kv in rest.split(","))
            calls[name] = int(stats["calls"])
    return calls


def start(args, **kw):
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)


def measure(mode, connections, rate, window, results):
    workdir = tempfile.mkdtemp(prefix="redis-commands-")
    redis_port, api_port, gw_port = free_port(), free_port(), free_port()
    procs = []
    try:
        procs.append(start(["taskset", "-c", "1", "redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                            "--save", "", "--appendonly", "no", "--dir", workdir]))
        wait_until(lambda: subprocess.run(["redis-cli", "-p", str(redis_port), "PING"], capture_output=True,
                                          text=True).stdout.strip() == "PONG", "redis")
        url = f"redis://127.0.0.1:{redis_port}"
        procs.append(start(["taskset", "-c", "1", os.path.join(BIN, "order-api"), "--listen", f"127.0.0.1:{api_port}",
                            "--redis-url", url]))
        gateway = start(["taskset", "-c", "0", os.path.join(BIN, "stream-gateway"), "--listen",
                         f"127.0.0.1:{gw_port}", "--redis-url", url, "--delivery", mode, "--replay-window", "0s",
                         "--max-connections", "10000"])
        procs.append(gateway)
        base = f"http://127.0.0.1:{gw_port}"
        wait_until(lambda: http_get(base + "/readyz")[0] == 200, "gateway ready")
        wait_until(lambda: http_get(f"http://127.0.0.1:{api_port}/readyz")[0] == 200, "order-api ready")

        duration = window + 30
        report = os.path.join(workdir, "loadgen.json")
        loadgen = [
            "taskset", "-c", "1", os.path.join(BIN, "loadgen"), "run", "--scenario", f"redis-{mode}",
            "--server", f"ours-redis-{mode}", "--url", base + "/api/order/stream",
            "--connections", str(connections), "--duration", f"{int(duration)}s", "--no-plots", "--out", report,
        ]
        if rate:
            loadgen += ["--publish", "order", "--publish-url", f"http://127.0.0.1:{api_port}/api/order",
                        "--rate", str(rate)]
        else:
            loadgen += ["--publish", "none"]
        runner = start(loadgen)
        procs.append(runner)
        # Poll mode may not get every connection open (each connect reads the stream's end from a
        # Redis its pollers already saturate): measure what is open after a minute, and say so.
        deadline = time.monotonic() + 60
        while metric(base, "sse_orders_sse_connections") < connections and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)  # let the connect burst's reads finish before the window opens
        opened = int(metric(base, "sse_orders_sse_connections"))
        calls_before, cpu_before, t0 = commandstats(redis_port), cpu_seconds(gateway.pid), time.monotonic()
        time.sleep(window)
        calls_after, cpu_after, t1 = commandstats(redis_port), cpu_seconds(gateway.pid), time.monotonic()
        elapsed = t1 - t0
        per_command = {name: (calls_after[name] - calls_before.get(name, 0)) / elapsed
                       for name in calls_after if calls_after[name] != calls_before.get(name, 0)}
        runner.send_signal(signal.SIGINT)
        runner.wait(timeout=120)
        row = {
            "mode": mode, "connections": connections, "open": opened, "rate": rate, "window_s": round(elapsed, 2),
            "redis_commands_per_s": round(sum(per_command.values()), 1),
            "per_command_per_s": {k: round(v, 1) for k, v in sorted(per_command.items())},
            "gateway_cpu_fraction": round((cpu_after - cpu_before) / elapsed, 4),
        }
        results.append(row)
        print(json.dumps(row), flush=True)
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--window", type=float, default=10.0, help="measurement window in seconds (default 10)")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "redis-commands.md"),
                        help="Markdown table to write (a .json beside it holds the raw figures)")
    parser.add_argument("--connections", default="1000,10000", help="comma-separated connection counts")
    parser.add_argument("--rates", default="0,10", help="comma-separated orders/s (0 = idle)")
    args = parser.parse_args()
    try:
        counts = [int(n) for n in args.connections.split(",")]
        rates = [int(r) for r in args.rates.split(",")]
    except ValueError:
        sys.exit("--connections and --rates take comma-separated whole numbers, e.g. 1000,10000")
    if args.window <= 0:
        sys.exit("--window must be greater than 0")
    for tool in ("redis-server", "redis-cli", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing (bench/run.sh installs it)")
    for binary in ("stream-gateway", "order-api", "loadgen"):
        if not os.path.exists(os.path.join(BIN, binary)):
            sys.exit(f"{os.path.join(BIN, binary)} is missing: cargo build --release first")
    results = []
    for rate in rates:
        for connections in counts:
            for mode in ("hub", "poll"):
                measure(mode, connections, rate, args.window, results)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump(results, f, indent=1)
    lines = [
        "| connections (open) | orders/s | mode | Redis commands/s | gateway CPU (share of a core) | commands |",
        "|---:|---:|---|---:|---:|---|",
    ]
    for r in results:
        commands = ", ".join(f"{k} {v:g}" for k, v in r["per_command_per_s"].items())
        lines.append(f"| {r['connections']:,} ({r['open']:,}) | {r['rate']} | {r['mode']} | {r['redis_commands_per_s']:,.1f} | "
                     f"{r['gateway_cpu_fraction'] * 100:.1f}% | {commands} |")
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
