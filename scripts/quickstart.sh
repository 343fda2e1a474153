#!/usr/bin/env bash
# The first command of the README: builds Hearth, installs the Spark runtime, starts
# `hearth up` on embedded defaults, creates a user, runs the example job end to end and
# shows its output. Leaves the platform running (pass --stop to stop it at the end).
set -euo pipefail
cd "$(dirname "$0")/.."

# The data lives beside the checkout, unless a directory above it is closed to other uids
# (root's home is 0700): jobs run as their users' own uids and must pass through, so then
# it goes to /var/lib (`hearth up` refuses a data dir its jobs cannot reach).
if [ -z "${HEARTH_DATA_DIR:-}" ]; then
    HEARTH_DATA_DIR="$PWD/.hearth"
    if [ "$(id -u)" = 0 ]; then
        d="$PWD"
        while [ "$d" != "/" ]; do
            if [ $(( 8#$(stat -c %a "$d") & 1 )) = 0 ]; then
                HEARTH_DATA_DIR=/var/lib/hearth-quickstart
                echo "==> $d is closed to other users: the data goes to $HEARTH_DATA_DIR"
                break
            fi
            d="$(dirname "$d")"
        done
    fi
fi
export HEARTH_DATA_DIR
LISTEN="${HEARTH_LISTEN:-127.0.0.1:8080}"
SERVER="http://$LISTEN"
STOP=0
[ "${1:-}" = "--stop" ] && STOP=1

if [ "$(id -u)" = 0 ] && ! { command -v bwrap && command -v nft && command -v ip; } >/dev/null; then
    echo "==> installing bubblewrap (the sandbox every job runs in), iproute2 and nftables (every job's own network)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap nftables iproute2
fi

echo "==> building hearth"
cargo build --release --quiet -p hearth
HEARTH="$PWD/target/release/hearth"

echo "==> installing the Spark runtime into $HEARTH_DATA_DIR/runtime"
"$HEARTH" runtime install

mkdir -p "$HEARTH_DATA_DIR" && chmod 700 "$HEARTH_DATA_DIR"
secrets="$HEARTH_DATA_DIR/quickstart"
mkdir -p "$secrets" && chmod 700 "$secrets"
[ -f "$secrets/admin.pw" ] || head -c 18 /dev/urandom | base64 > "$secrets/admin.pw"
[ -f "$secrets/demo.pw" ] || head -c 18 /dev/urandom | base64 > "$secrets/demo.pw"
chmod 600 "$secrets"/*.pw

if ! curl -fsS "$SERVER/healthz" >/dev/null 2>&1; then
    echo "==> starting hearth up on $SERVER (log: $HEARTH_DATA_DIR/up.log)"
    nohup "$HEARTH" up --listen "$LISTEN" --admin-password-file "$secrets/admin.pw" \
        >>"$HEARTH_DATA_DIR/up.log" 2>&1 &
    echo $! > "$secrets/up.pid"
    for _ in $(seq 100); do
        curl -fsS "$SERVER/healthz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    curl -fsS "$SERVER/healthz" >/dev/null || { cat "$HEARTH_DATA_DIR/up.log"; exit 1; }
fi

export HEARTH_CONFIG="$secrets/admin.json"
"$HEARTH" login --server "$SERVER" --user admin --password-stdin < "$secrets/admin.pw"
if ! "$HEARTH" user list | grep -q '^demo '; then
    "$HEARTH" user add demo --password-stdin < "$secrets/demo.pw"
fi
export HEARTH_CONFIG="$secrets/demo.json"
"$HEARTH" login --server "$SERVER" --user demo --password-stdin < "$secrets/demo.pw"

echo "==> submitting the example job as user demo"
"$HEARTH" submit --name wordcount --num-executors 1 --driver-memory 1g --executor-memory 1g \
    --files examples/wordcount/hearth.txt --follow --wait \
    examples/wordcount/wordcount.py hearth.txt wordcount

echo "==> its output, from demo's workspace"
"$HEARTH" fs ls wordcount
part=$("$HEARTH" fs ls wordcount | awk '/\.csv$/ {print $2}' | head -n1)
"$HEARTH" fs get "wordcount/$part" - | head -n 6

echo
echo "Hearth is running at $SERVER. Try, as demo:"
echo "  export HEARTH_CONFIG=$secrets/demo.json"
echo "  $HEARTH jobs"
echo "  $HEARTH notebook start        # JupyterLab behind the same login, with spark ready"
echo "  eval \"\$($HEARTH connect)\"     # Spark Connect from your own PySpark"
echo "The console: $SERVER/ (log in as demo; password in $secrets/demo.pw)"
if [ "$STOP" = 1 ] && [ -f "$secrets/up.pid" ]; then
    kill -TERM "$(cat "$secrets/up.pid")" && rm -f "$secrets/up.pid"
    echo "Stopped hearth up."
else
    echo "Stop it with: kill \$(cat $secrets/up.pid)"
fi
