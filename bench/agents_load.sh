#!/usr/bin/env bash
# Control plane at scale (issue 4): 1,000 simulated agents, each with its own certificate and
# mutual-TLS connection, heartbeating at the default interval (node timeout 30s -> every 5 s)
# against a release-built `hearth up`. Prints the idle server's CPU and RSS, then the same
# under load, and the heartbeat round trip's p50/p99/max as the agents see it.
# Goals: server CPU < 20% of a core, RSS < 200 MB, heartbeat p99 < 50 ms.
#
# Usage (as root, from the repository): bench/agents_load.sh [AGENTS] [SECONDS] [IDLE_SECONDS]
set -euo pipefail
AGENTS=${1:-1000}
SECONDS_MEASURED=${2:-60}
IDLE_SECONDS=${3:-30}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
cd "$ROOT"
cargo build --release -p hearth >&2
cargo build --release -p hearth-agent --example agents_load >&2
BIN=$TARGET/release/hearth
LOAD=$TARGET/release/examples/agents_load

WORK=$(mktemp -d /tmp/hearth-agents-load-XXXXXX)
SERVER=""
cleanup() {
    [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port); CONNECT=$(free_port); CLUSTER=$(free_port)
ulimit -n 65536 2>/dev/null || true
HEARTH_ADMIN_PASSWORD=bench-admin-password "$BIN" up --data-dir "$WORK/data" \
    --listen "127.0.0.1:$PORT" --connect-listen "127.0.0.1:$CONNECT" \
    --cluster-listen "127.0.0.1:$CLUSTER" --runtime /nonexistent >"$WORK/up.log" 2>&1 &
SERVER=$!
for _ in $(seq 300); do
    curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null || { echo "hearth up did not start:" >&2; cat "$WORK/up.log" >&2; exit 1; }
echo bench-admin-password | "$BIN" --config "$WORK/admin.json" login \
    --server "http://127.0.0.1:$PORT" --user admin --password-stdin >/dev/null 2>&1
JOIN=$("$BIN" --config "$WORK/admin.json" node token create --ttl 1h 2>/dev/null)
TOKEN=$(echo "$JOIN" | sed -n 's/.*--token \([^ ]*\).*/\1/p')
PIN=$(echo "$JOIN" | sed -n 's/.*--ca-sha256 \([^ ]*\).*/\1/p')

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$LOAD" --server "127.0.0.1:$CLUSTER" --token "$TOKEN" --ca-sha256 "$PIN" \
    --server-pid "$SERVER" --agents "$AGENTS" --seconds "$SECONDS_MEASURED" \
    --idle-seconds "$IDLE_SECONDS"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
